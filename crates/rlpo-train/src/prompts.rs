//! Stage 0: dataset samples to prompt token ids (chat template for chat prompts, plain encoding
//! for text prompts), with the optional system message of `[model] system_prompt`.

use crate::error::Result;
use rlpo_data::{Prompt, Sample};
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
