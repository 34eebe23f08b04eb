//! Hugging Face `config.json` for the Llama, Qwen2 and Qwen3 families, parsed into one
//! [`ModelConfig`]. Differences between families are flags (qkv bias, q/k norm), not types.
//!
//! RoPE may be given the old way (`rope_theta` + `rope_scaling`) or the new way
//! (`rope_parameters`, written by transformers >= 5). Supported RoPE types: `default`, `llama3`.

use crate::error::{ModelError, Result};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// The architecture family, from `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `llama` (Llama 2/3, SmolLM2, ...).
    Llama,
    /// `qwen2` (Qwen2, Qwen2.5): bias on q/k/v projections.
    Qwen2,
    /// `qwen3`: RMSNorm on q and k per head, no qkv bias by default.
    Qwen3,
}

/// RoPE frequency scaling.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Llama 3.1 frequency-dependent scaling.
    Llama3 {
        /// `factor`.
        factor: f64,
        /// `low_freq_factor`.
        low_freq_factor: f64,
        /// `high_freq_factor`.
        high_freq_factor: f64,
        /// `original_max_position_embeddings`.
        original_max_position_embeddings: f64,
    },
}

/// Everything the model needs from `config.json`.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// Architecture family.
    pub family: Family,
    /// Vocabulary size V.
    pub vocab_size: i64,
    /// Model width D.
    pub hidden_size: i64,
    /// MLP width.
    pub intermediate_size: i64,
    /// Number of decoder layers.
    pub num_hidden_layers: i64,
    /// Query heads H.
    pub num_attention_heads: i64,
    /// Key/value heads H_kv (GQA when < H).
    pub num_key_value_heads: i64,
    /// Per-head width.
    pub head_dim: i64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE scaling.
    pub rope_scaling: RopeScaling,
    /// Longest position the model was trained for.
    pub max_position_embeddings: i64,
    /// `lm_head` shares `embed_tokens.weight`.
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections (Qwen2 always; Llama/Qwen3 via `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the attention output projection (Llama `attention_bias`).
    pub o_bias: bool,
    /// Bias on MLP projections (`mlp_bias`).
    pub mlp_bias: bool,
    /// RMSNorm on q and k per head (Qwen3).
    pub qk_norm: bool,
    /// End-of-sequence ids listed in config.json.
    pub eos_token_ids: Vec<i64>,
    /// Padding id, if any.
    pub pad_token_id: Option<i64>,
    /// The raw JSON, kept so a saved model writes back what it read.
    pub raw: Value,
}

#[derive(Deserialize)]
struct Raw {
    model_type: Option<String>,
    vocab_size: i64,
    hidden_size: i64,
    intermediate_size: i64,
    num_hidden_layers: i64,
    num_attention_heads: i64,
    num_key_value_heads: Option<i64>,
    head_dim: Option<i64>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    max_position_embeddings: Option<i64>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
    use_sliding_window: Option<bool>,
    eos_token_id: Option<Value>,
    pad_token_id: Option<i64>,
}

impl ModelConfig {
    /// Read `DIR/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        if !path.exists() {
            return Err(ModelError::MissingFile { path, what: "model config" });
        }
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
        Self::from_json_str(&text, &path)
    }

    /// Parse config JSON text; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let raw_value: Value = serde_json::from_str(text).map_err(|e| ModelError::config(path, e.to_string()))?;
        let raw: Raw = serde_json::from_value(raw_value.clone()).map_err(|e| ModelError::config(path, e.to_string()))?;
        let unsupported = |what: String| ModelError::Unsupported { path: path.to_path_buf(), what };
        let family = match raw.model_type.as_deref() {
            Some("llama") => Family::Llama,
            Some("qwen2") => Family::Qwen2,
            Some("qwen3") => Family::Qwen3,
            Some(other) => {
                return Err(unsupported(format!("model_type \"{other}\" (supported: llama, qwen2, qwen3)")))
            }
            None => return Err(ModelError::config(path, "missing key model_type")),
        };
        if let Some(act) = raw.hidden_act.as_deref() {
            if act != "silu" {
                return Err(unsupported(format!("hidden_act \"{act}\" (only silu)")));
            }
        }
        if raw.use_sliding_window == Some(true) {
            return Err(unsupported("use_sliding_window = true".into()));
        }
        let positive = |key: &str, v: i64| {
            if v > 0 {
                Ok(v)
            } else {
                Err(ModelError::config(path, format!("{key} must be positive, got {v}")))
            }
        };
        let heads = positive("num_attention_heads", raw.num_attention_heads)?;
        let hidden = positive("hidden_size", raw.hidden_size)?;
        let kv_heads = positive("num_key_value_heads", raw.num_key_value_heads.unwrap_or(heads))?;
        if heads % kv_heads != 0 {
            return Err(ModelError::config(
                path,
                format!("num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})"),
            ));
        }
        let head_dim = match raw.head_dim {
            Some(d) => positive("head_dim", d)?,
            None if hidden % heads == 0 => hidden / heads,
            None => return Err(ModelError::config(path, "hidden_size not divisible by num_attention_heads and no head_dim")),
        };
        if head_dim % 2 != 0 {
            return Err(ModelError::config(path, format!("head_dim must be even for RoPE, got {head_dim}")));
        }
        let (rope_theta, rope_scaling) = parse_rope(&raw, path)?;
        let attention_bias = raw.attention_bias.unwrap_or(false);
        Ok(ModelConfig {
            family,
            vocab_size: positive("vocab_size", raw.vocab_size)?,
            hidden_size: hidden,
            intermediate_size: positive("intermediate_size", raw.intermediate_size)?,
            num_hidden_layers: positive("num_hidden_layers", raw.num_hidden_layers)?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            qkv_bias: family == Family::Qwen2 || attention_bias,
            o_bias: family != Family::Qwen2 && attention_bias,
            mlp_bias: raw.mlp_bias.unwrap_or(false),
            qk_norm: family == Family::Qwen3,
            eos_token_ids: ids_of(raw.eos_token_id.as_ref()),
            pad_token_id: raw.pad_token_id,
            raw: raw_value,
        })
    }

    /// Parameter count, exactly the elements of the model's tensors: projections, their biases
    /// (q/k/v for Qwen2 or `attention_bias`, o for `attention_bias`, MLP for `mlp_bias`), Qwen3's
    /// q/k norms, the layer norms, and the embeddings (counted once when tied).
    pub fn num_parameters(&self) -> i64 {
        let (d, f, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let (h, kv, hd) = (self.num_attention_heads, self.num_key_value_heads, self.head_dim);
        let mut attn = d * h * hd + 2 * d * kv * hd + h * hd * d;
        if self.qkv_bias {
            attn += h * hd + 2 * kv * hd;
        }
        if self.o_bias {
            attn += d;
        }
        if self.qk_norm {
            attn += 2 * hd;
        }
        let mlp = 3 * d * f + if self.mlp_bias { 2 * f + d } else { 0 };
        let layer = attn + mlp + 2 * d;
        v * d * if self.tie_word_embeddings { 1 } else { 2 } + self.num_hidden_layers * layer + d
    }
}

/// `eos_token_id` may be an int or a list of ints.
pub(crate) fn ids_of(v: Option<&Value>) -> Vec<i64> {
    match v {
        Some(Value::Number(n)) => n.as_i64().into_iter().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_i64).collect(),
        _ => vec![],
    }
}

fn parse_rope(raw: &Raw, path: &Path) -> Result<(f64, RopeScaling)> {
    // transformers >= 5 writes `rope_parameters` (with rope_theta inside); older files use
    // `rope_theta` plus an optional `rope_scaling` object.
    let params = raw.rope_parameters.as_ref().or(raw.rope_scaling.as_ref()).filter(|v| !v.is_null());
    let theta = params
        .and_then(|p| p.get("rope_theta"))
        .and_then(Value::as_f64)
        .or(raw.rope_theta)
        .unwrap_or(10000.0);
    let Some(p) = params else { return Ok((theta, RopeScaling::Default)) };
    let key = if raw.rope_parameters.is_some() { "rope_parameters" } else { "rope_scaling" };
    let kind = p.get("rope_type").or_else(|| p.get("type")).and_then(Value::as_str).unwrap_or("default");
    let num = |name: &str| {
        p.get(name)
            .and_then(Value::as_f64)
            .ok_or_else(|| ModelError::config(path, format!("{key}.{name} missing or not a number (rope_type {kind})")))
    };
    match kind {
        "default" => Ok((theta, RopeScaling::Default)),
        "llama3" => Ok((
            theta,
            RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")?,
            },
        )),
        other => Err(ModelError::Unsupported {
            path: path.to_path_buf(),
            what: format!("{key}.rope_type \"{other}\" (supported: default, llama3)"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ModelConfig> {
        ModelConfig::from_json_str(json, Path::new("config.json"))
    }
    const BASE: &str = r#""vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2"#;

    #[test]
    fn qwen2_has_qkv_bias_and_default_rope() {
        let c = parse(&format!(r#"{{"model_type": "qwen2", {BASE}, "rope_theta": 1000000.0}}"#)).unwrap();
        assert!(c.qkv_bias && !c.o_bias && !c.qk_norm);
        assert_eq!(c.rope_theta, 1e6);
        assert_eq!(c.head_dim, 4);
        assert_eq!(c.num_key_value_heads, 2);
    }

    #[test]
    fn rope_parameters_llama3() {
        let c = parse(&format!(
            r#"{{"model_type": "llama", {BASE}, "rope_parameters": {{"rope_type": "llama3", "rope_theta": 500000.0,
            "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}}}"#
        ))
        .unwrap();
        assert_eq!(c.rope_theta, 500000.0);
        assert!(matches!(c.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
    }

    #[test]
    fn unknown_model_type_is_named() {
        let e = parse(&format!(r#"{{"model_type": "gpt2", {BASE}}}"#)).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("model_type \"gpt2\""), "{e}");
    }

    #[test]
    fn unsupported_rope_type_is_named() {
        let e = parse(&format!(r#"{{"model_type": "llama", {BASE}, "rope_scaling": {{"rope_type": "yarn", "factor": 4.0}}}}"#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rope_scaling.rope_type \"yarn\""), "{e}");
    }

    #[test]
    fn bad_gqa_ratio_is_rejected() {
        let e = parse(&format!(r#"{{"model_type": "llama", {BASE}, "num_key_value_heads": 3}}"#)).unwrap_err().to_string();
        assert!(e.contains("multiple of num_key_value_heads"), "{e}");
    }

    #[test]
    fn missing_key_is_named() {
        let e = parse(r#"{"model_type": "llama", "vocab_size": 3}"#).unwrap_err().to_string();
        assert!(e.contains("hidden_size"), "{e}");
    }
}
