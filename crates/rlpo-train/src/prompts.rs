//! Stage 0: dataset samples to prompt token ids (chat template for chat prompts, plain encoding
//! for text prompts), with the optional system message of `[model] system_prompt`.
//!
//! [`fill`] applies `data.too_long`: a prompt with at least as many tokens as the model's context
//! cannot be rolled out, so it stops the run naming the row (`"error"`) or is skipped, counted and
//! replaced by the next one (`"skip"`).

use crate::error::{Result, TrainError};
use rlpo_data::{Prompt, Sample, TooLong};
use rlpo_model::{ChatMessage, TextTokenizer};

/// The prompts of one generation batch.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PromptBatch {
    /// The dataset rows.
    pub samples: Vec<Sample>,
    /// Token ids per prompt.
    pub ids: Vec<Vec<i64>>,
    /// The prompt text the model saw (for reward functions and logs).
    pub texts: Vec<String>,
    /// RMT: the teacher-forced NTP sequence of each prompt, if it has one.
    #[serde(default)]
    pub ntp: Vec<Option<crate::rmt::NtpSeq>>,
}

/// Render and tokenize `samples`.
pub fn build(tok: &TextTokenizer, samples: Vec<Sample>, system_prompt: Option<&str>) -> Result<PromptBatch> {
    let mut ids = Vec::with_capacity(samples.len());
    let mut texts = Vec::with_capacity(samples.len());
    for s in &samples {
        let text = match &s.prompt {
            Prompt::Chat(msgs) => {
                let mut chat: Vec<ChatMessage> = Vec::with_capacity(msgs.len() + 1);
                if let Some(sys) = system_prompt {
                    if msgs.first().is_none_or(|m| m.role != "system") {
                        chat.push(ChatMessage::new("system", sys));
                    }
                }
                chat.extend(msgs.iter().map(|m| ChatMessage::new(&m.role, &m.content)));
                tok.apply_chat_template(&chat, true)?
            }
            Prompt::Text(t) => t.clone(),
        };
        ids.push(tok.encode(&text, false)?);
        texts.push(text);
    }
    let ntp = vec![None; samples.len()];
    Ok(PromptBatch { samples, ids, texts, ntp })
}

/// The error for a prompt that does not fit the model's context.
pub fn too_long_error(sample: &Sample, tokens: usize, context: usize) -> TrainError {
    TrainError::Aborted(format!(
        "prompt of sample `{}` has {tokens} tokens (chat template included), the model's context is {context} \
         (data.too_long = \"error\"; `rlpo check` lists every such row; data.too_long = \"skip\" skips them)",
        sample.id
    ))
}

/// `n` prompts that fit a `context`-token model: drawn with `draw(k)` (k prompts at a time) and
/// filtered under `policy`; skipped prompts are added to `skipped`. `dataset_len` bounds the
/// search: that many skips in a row without a prompt that fits means none fits.
pub fn fill(
    n: usize,
    context: usize,
    policy: TooLong,
    dataset_len: usize,
    skipped: &mut u64,
    mut draw: impl FnMut(usize) -> Result<PromptBatch>,
) -> Result<PromptBatch> {
    let mut out: Option<PromptBatch> = None;
    let mut streak = 0usize;
    loop {
        let have = out.as_ref().map_or(0, PromptBatch::len);
        if have >= n {
            return Ok(out.unwrap_or_else(|| PromptBatch { samples: vec![], ids: vec![], texts: vec![], ntp: vec![] }));
        }
        let mut batch = draw(n - have)?;
        let keep: Vec<bool> = batch.ids.iter().map(|ids| ids.len() < context).collect();
        if let Some(i) = keep.iter().position(|k| !k) {
            if policy == TooLong::Error {
                return Err(too_long_error(&batch.samples[i], batch.ids[i].len(), context));
            }
        }
        for k in &keep {
            if *k {
                streak = 0;
            } else {
                *skipped += 1;
                streak += 1;
                if streak >= dataset_len.max(1) {
                    return Err(TrainError::Aborted(format!(
                        "{streak} prompts in a row are longer than the model's context ({context} tokens): none of the dataset fits"
                    )));
                }
            }
        }
        batch.retain(&keep);
        match out.as_mut() {
            None => out = Some(batch),
            Some(o) => o.extend(batch),
        }
    }
}

impl PromptBatch {
    /// Append another batch (DAPO refill).
    pub fn extend(&mut self, other: PromptBatch) {
        self.samples.extend(other.samples);
        self.ids.extend(other.ids);
        self.texts.extend(other.texts);
        self.ntp.extend(other.ntp);
    }

    /// Keep only the prompts whose `keep` flag is set.
    pub fn retain(&mut self, keep: &[bool]) {
        fn filter<T>(v: &mut Vec<T>, keep: &[bool]) {
            let old = std::mem::take(v);
            v.extend(old.into_iter().zip(keep).filter(|(_, k)| **k).map(|(x, _)| x));
        }
        filter(&mut self.samples, keep);
        filter(&mut self.ids, keep);
        filter(&mut self.texts, keep);
        filter(&mut self.ntp, keep);
    }

    /// Number of prompts.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}
