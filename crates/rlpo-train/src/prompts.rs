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
/// filtered under `policy`; skipped prompts are added to `skipped`. When every one of the
/// `dataset_len` samples has been seen too long (by id) without a prompt that fits, none fits:
/// an error instead of an endless search (a generous skip bound covers datasets with duplicate
/// ids).
pub fn fill(
    n: usize,
    context: usize,
    policy: TooLong,
    dataset_len: usize,
    skipped: &mut u64,
    mut draw: impl FnMut(usize) -> Result<PromptBatch>,
) -> Result<PromptBatch> {
    let mut out: Option<PromptBatch> = None;
    let mut too_long_ids = std::collections::HashSet::new();
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
        for (k, s) in keep.iter().zip(&batch.samples) {
            if *k {
                streak = 0;
                too_long_ids.clear();
                continue;
            }
            *skipped += 1;
            streak += 1;
            too_long_ids.insert(s.id.clone());
            if too_long_ids.len() >= dataset_len.max(1) || streak >= 100 * dataset_len.max(1) {
                return Err(TrainError::Aborted(format!(
                    "all {} prompts of the dataset are longer than the model's context ({context} tokens): none fits",
                    too_long_ids.len()
                )));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of prompts with the given token counts, ids `s<len>-<k>`.
    fn batch(lens: &[usize], k: &mut usize) -> PromptBatch {
        let samples: Vec<Sample> = lens
            .iter()
            .map(|&l| {
                *k += 1;
                Sample { id: format!("s{l}-{}", *k % 3), prompt: Prompt::Text(String::new()), answer: None, data_source: None, difficulty: None, metadata: serde_json::Value::Null }
            })
            .collect();
        PromptBatch { ids: lens.iter().map(|&l| vec![1; l]).collect(), texts: vec![String::new(); lens.len()], ntp: vec![None; lens.len()], samples }
    }

    #[test]
    fn skip_draws_until_enough_fit_and_counts() {
        // A stream of lengths: 9 does not fit a context of 8.
        let stream = [9, 3, 9, 9, 4, 5, 9];
        let (mut pos, mut k, mut skipped) = (0, 0, 0);
        let out = fill(3, 8, TooLong::Skip, 7, &mut skipped, |n| {
            let lens: Vec<usize> = (0..n).map(|i| stream[(pos + i) % stream.len()]).collect();
            pos += n;
            Ok(batch(&lens, &mut k))
        })
        .expect("three fit");
        assert_eq!(out.ids.iter().map(Vec::len).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(skipped, 3);
    }

    #[test]
    fn error_names_the_sample_and_all_too_long_is_an_error() {
        let mut k = 0;
        let err = fill(2, 8, TooLong::Error, 5, &mut 0, |n| Ok(batch(&vec![8; n], &mut k))).expect_err("8 >= 8");
        assert!(err.to_string().contains("prompt of sample `s8-1` has 8 tokens") && err.to_string().contains("context is 8"), "{err}");
        // Three distinct ids (k % 3), all too long: none fits.
        let err = fill(2, 8, TooLong::Skip, 3, &mut 0, |n| Ok(batch(&vec![8; n], &mut k))).expect_err("none fits");
        assert!(err.to_string().contains("all 3 prompts"), "{err}");
    }
}
