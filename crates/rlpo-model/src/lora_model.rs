//! LoRA on a [`CausalLm`]: attach adapters to the targeted projections of every layer, freeze
//! the base, merge after updates, and read/write adapters as PEFT does
//! (`adapter_config.json` + `adapter_model.safetensors` with `base_model.model.` keys).
//! The adapter math is in [`crate::lora`].

use crate::error::{ModelError, Result};
use crate::layers::Linear;
use crate::lora::{self, LoraConfig};
use crate::model::CausalLm;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tch::nn::VarStore;
use tch::{Kind, Tensor};

/// The adapters of a model.
#[derive(Debug)]
pub struct LoraState {
    /// Adapter variables (fp32) under `<layer HF name>.lora_{A,B}.weight`.
    pub vs: VarStore,
    /// The recipe's `[model.lora]`.
    pub cfg: LoraConfig,
    training: Arc<AtomicBool>,
}

impl CausalLm {
    /// Attach LoRA adapters per `cfg`, freeze every base parameter, and keep the base weights of
    /// the adapted layers frozen inside the adapters. A is drawn from a generator of `seed` and the
    /// layer's name (not LibTorch's process-global one, which parallel threads share), so the
    /// same seed gives the same adapters whatever else runs.
    pub fn enable_lora(&mut self, cfg: &LoraConfig, seed: u64) -> Result<()> {
        cfg.validate().map_err(|(k, e)| ModelError::Invalid(format!("model.lora.{k}: {e}")))?;
        if self.lora.is_some() {
            return Err(ModelError::Invalid("LoRA is already enabled on this model".into()));
        }
        let names = cfg.module_names().map_err(ModelError::Invalid)?;
        let mut vs = VarStore::new(self.device());
        vs.set_kind(Kind::Float);
        let training = Arc::new(AtomicBool::new(false));
        let root = vs.root();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let base = &root / "model" / "layers" / i;
            for (n, lin) in layer.self_attn.linears_mut() {
                if names.contains(&n) {
                    lora::attach(lin, &(&base / "self_attn" / n), cfg, seed, &training)?;
                }
            }
            for (n, lin) in layer.mlp.linears_mut() {
                if names.contains(&n) {
                    lora::attach(lin, &(&base / "mlp" / n), cfg, seed, &training)?;
                }
            }
        }
        self.var_store_mut().freeze();
        self.lora = Some(LoraState { vs, cfg: cfg.clone(), training });
        Ok(())
    }

    /// The adapters, when LoRA is on.
    pub fn lora(&self) -> Option<&LoraState> {
        self.lora.as_ref()
    }

    /// The variables the optimizer trains: the adapters with LoRA, else every parameter that
    /// requires grad.
    pub fn trainable_variables(&self) -> Vec<(String, Tensor)> {
        match &self.lora {
            Some(l) => l.vs.variables().into_iter().collect(),
            None => self.var_store().variables().into_iter().filter(|(_, t)| t.requires_grad()).collect(),
        }
    }

    /// Apply LoRA dropout in the following forwards (the learner's update), or not.
    pub fn set_lora_training(&self, on: bool) {
        if let Some(l) = &self.lora {
            l.training.store(on, Ordering::Relaxed);
        }
    }

    /// Whether a forward now would record gradients through adapters (LoRA on and grad mode on).
    pub(crate) fn has_trainable_adapters(&self) -> bool {
        let Some(l) = &self.lora else { return false };
        // A view made under no_grad does not require grad: a one-element probe of grad mode.
        l.vs.trainable_variables().first().is_some_and(|v| v.view([-1]).narrow(0, 0, 1).requires_grad())
    }

    fn adapted(&self) -> Vec<(String, &Linear)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for (n, lin) in layer.self_attn.linears() {
                out.push((format!("model.layers.{i}.self_attn.{n}"), lin));
            }
            for (n, lin) in layer.mlp.linears() {
                out.push((format!("model.layers.{i}.mlp.{n}"), lin));
            }
        }
        out.retain(|(_, l)| l.lora.is_some());
        out
    }

    /// Write `W0 + s·B·A` into every adapted layer's weight (what the rollout, the export and
    /// scoring by other kernels read). Call after every update of the adapters.
    pub fn merge_lora(&self) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for (_, lin) in self.adapted() {
                let l = lin.lora.as_ref().expect("adapted");
                lin.weight.shallow_clone().f_copy_(&l.merged())?;
            }
            Ok(())
        })
    }

    /// `(in, out)` of every adapted layer.
    pub fn lora_shapes(&self) -> Vec<(i64, i64)> {
        self.adapted().iter().map(|(_, l)| (l.weight.size()[1], l.weight.size()[0])).collect()
    }

    /// Adapter tensors by PEFT key (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`).
    pub fn adapter_tensors(&self) -> BTreeMap<String, Tensor> {
        let Some(l) = &self.lora else { return BTreeMap::new() };
        l.vs.variables().into_iter().map(|(n, t)| (lora::peft_key(&n), t.detach())).collect()
    }

    /// Load adapters from `adapter_model.safetensors` tensors keyed as PEFT writes them (every
    /// adapter must be present with its shape), then merge.
    pub fn load_adapter_tensors(&self, saved: &HashMap<String, Tensor>, what: &Path) -> Result<()> {
        let Some(l) = &self.lora else { return Err(ModelError::Invalid("loading adapters into a model without LoRA".into())) };
        for (name, var) in l.vs.variables() {
            let key = lora::peft_key(&name);
            let src = saved
                .get(&key)
                .ok_or_else(|| ModelError::Weights(format!("adapter tensor {key} missing from {}", what.display())))?;
            if src.size() != var.size() {
                return Err(ModelError::Weights(format!("adapter tensor {key} in {} has shape {:?}, expected {:?}", what.display(), src.size(), var.size())));
            }
            tch::no_grad(|| var.shallow_clone().f_copy_(src))?;
        }
        if saved.len() != l.vs.variables().len() {
            return Err(ModelError::Weights(format!(
                "{} holds {} tensors, the recipe's [model.lora] has {} adapters",
                what.display(),
                saved.len(),
                l.vs.variables().len()
            )));
        }
        self.merge_lora()
    }

    /// Write a PEFT adapter directory `out` (`adapter_config.json`, `adapter_model.safetensors`),
    /// `base` naming the base model (`base_model_name_or_path`).
    pub fn save_adapter_dir(&self, out: &Path, base: &str) -> Result<()> {
        let Some(l) = &self.lora else { return Err(ModelError::Invalid("the model has no LoRA adapters".into())) };
        std::fs::create_dir_all(out).map_err(|e| ModelError::io(out, e))?;
        let tensors: Vec<(String, Tensor)> = self.adapter_tensors().into_iter().map(|(k, t)| (k, t.to_device(tch::Device::Cpu).contiguous())).collect();
        let weights = out.join("adapter_model.safetensors");
        Tensor::write_safetensors(&tensors, &weights)?;
        let cfg = &l.cfg;
        let targets = cfg.module_names().map_err(ModelError::Invalid)?;
        let init = match cfg.init {
            lora::LoraInit::Default => serde_json::Value::Bool(true),
            lora::LoraInit::Gaussian => serde_json::Value::String("gaussian".into()),
        };
        let config = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base,
            "r": cfg.rank,
            "lora_alpha": cfg.alpha,
            "lora_dropout": cfg.dropout,
            "target_modules": targets,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": init,
            "modules_to_save": null,
            "use_rslora": false,
            "use_dora": false,
            "layers_to_transform": null,
            "rank_pattern": {},
            "alpha_pattern": {},
        });
        let path = out.join("adapter_config.json");
        let text = serde_json::to_string_pretty(&config).map_err(|e| ModelError::Invalid(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| ModelError::io(&path, e))?;
        Ok(())
    }
}
