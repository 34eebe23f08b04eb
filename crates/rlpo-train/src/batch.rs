//! The learner's view of one step's rollouts: prompt + response rows as tensors.
//!
//! Layout (N rows, P = longest prompt, T = longest response):
//! - `ids [N, P + T]`: prompt left-padded to P, then the response right-padded to T;
//! - `attention_mask [N, P + T]`: 1 on real tokens;
//! - `targets [N, T]` (response tokens), `response_mask [N, T]` f32 (1 for generated tokens incl.
//!   EOS), `rollout_logp [N, T]` / `rollout_entropy [N, T]` as recorded by the rollout at the base
//!   temperature, `truncated [N]` bool, `versions` (policy version that generated each row).
//!
//! The logits that predict response token `t` sit at column `P - 1 + t`.

use rlpo_rollout::{Completion, FinishReason};
use tch::{Device, Tensor};

/// Tensors of one step's rows (see module docs for shapes).
#[derive(Debug)]
pub struct LearnerBatch {
    /// `[N, P + T]` i64.
    pub ids: Tensor,
    /// `[N, P + T]` i64.
    pub attention_mask: Tensor,
    /// P.
    pub prompt_width: i64,
    /// `[N, T]` i64.
    pub targets: Tensor,
    /// `[N, T]` f32.
    pub response_mask: Tensor,
    /// `[N, T]` f32.
    pub rollout_logp: Tensor,
    /// `[N, T]` f32.
    pub rollout_entropy: Tensor,
    /// `[N]` bool.
    pub truncated: Tensor,
    /// Prompt length per row.
    pub prompt_lens: Vec<i64>,
    /// Response length per row.
    pub response_lens: Vec<i64>,
    /// Generating policy version per row.
    pub versions: Vec<u64>,
    /// Prompt group per row: rows with the same value have identical prompt tokens (consecutive
    /// rows with equal prompts share one; the packed learner forwards each group's prompt once).
    pub prompt_group: Vec<usize>,
}

/// Group ids of consecutive equal prompts: `[a, a, b, b, a]` -> `[0, 0, 1, 1, 2]`.
pub fn prompt_groups<'a>(prompts: impl Iterator<Item = &'a [i64]>) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    let mut prev: Option<&[i64]> = None;
    for p in prompts {
        let g = match (prev, out.last()) {
            (Some(q), Some(&g)) if q == p => g,
            (_, Some(&g)) => g + 1,
            _ => 0,
        };
        out.push(g);
        prev = Some(p);
    }
    out
}

impl LearnerBatch {
    /// Build from `(prompt ids, completion)` pairs in row order.
    pub fn new(rows: &[(&[i64], &Completion)], pad_id: i64, device: Device) -> LearnerBatch {
        let n = rows.len();
        let p = rows.iter().map(|(pr, _)| pr.len()).max().unwrap_or(1).max(1);
        let t = rows.iter().map(|(_, c)| c.tokens.len()).max().unwrap_or(1).max(1);
        let w = p + t;
        let mut ids = vec![pad_id; n * w];
        let mut attn = vec![0i64; n * w];
        let mut targets = vec![pad_id; n * t];
        let mut rmask = vec![0f32; n * t];
        let mut logp = vec![0f32; n * t];
        let mut ent = vec![0f32; n * t];
        let mut truncated = vec![false; n];
        for (r, (prompt, c)) in rows.iter().enumerate() {
            let off = r * w + p - prompt.len();
            ids[off..off + prompt.len()].copy_from_slice(prompt);
            attn[off..off + prompt.len()].fill(1);
            let (k, ro) = (c.tokens.len(), r * w + p);
            ids[ro..ro + k].copy_from_slice(&c.tokens);
            attn[ro..ro + k].fill(1);
            targets[r * t..r * t + k].copy_from_slice(&c.tokens);
            rmask[r * t..r * t + k].fill(1.0);
            logp[r * t..r * t + k].copy_from_slice(&c.base_logprobs);
            ent[r * t..r * t + k].copy_from_slice(&c.entropies);
            truncated[r] = matches!(c.finish_reason, FinishReason::MaxLength | FinishReason::Budget);
        }
        let (n, t, w) = (n as i64, t as i64, w as i64);
        let dev = |x: Tensor| x.to_device(device);
        LearnerBatch {
            ids: dev(Tensor::from_slice(&ids).view([n, w])),
            attention_mask: dev(Tensor::from_slice(&attn).view([n, w])),
            prompt_width: p as i64,
            targets: dev(Tensor::from_slice(&targets).view([n, t])),
            response_mask: dev(Tensor::from_slice(&rmask).view([n, t])),
            rollout_logp: dev(Tensor::from_slice(&logp).view([n, t])),
            rollout_entropy: dev(Tensor::from_slice(&ent).view([n, t])),
            truncated: dev(Tensor::from_slice(&truncated).view([n])),
            prompt_lens: rows.iter().map(|(pr, _)| pr.len() as i64).collect(),
            response_lens: rows.iter().map(|(_, c)| c.tokens.len() as i64).collect(),
            versions: rows.iter().map(|(_, c)| c.policy_version).collect(),
            prompt_group: prompt_groups(rows.iter().map(|(pr, _)| *pr)),
        }
    }

    /// Number of rows N.
    pub fn rows(&self) -> i64 {
        self.targets.size()[0]
    }

    /// Response width T.
    pub fn response_width(&self) -> i64 {
        self.targets.size()[1]
    }
}
