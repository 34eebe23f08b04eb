//! Parsing of user-facing device and dtype strings (`cpu`, `cuda`, `cuda:1`; `f32`, `bf16`, `f16`).

use crate::error::{ModelError, Result};
use tch::{Device, Kind};

/// Where and in which precision to load a model.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Target device.
    pub device: Device,
    /// Parameter dtype.
    pub kind: Kind,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { device: Device::Cpu, kind: Kind::Float }
    }
}

/// `cpu`, `cuda` (= `cuda:0`) or `cuda:N`. A CUDA device that is not present is an error.
pub fn parse_device(s: &str) -> Result<Device> {
    let s = s.trim().to_ascii_lowercase();
    let device = match s.as_str() {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Device::Cuda(n),
            _ => return Err(ModelError::Invalid(format!("unknown device \"{s}\" (expected cpu, cuda or cuda:N)"))),
        },
    };
    if let Device::Cuda(n) = device {
        let count = tch::Cuda::device_count();
        if (n as i64) >= count {
            return Err(ModelError::Invalid(format!("device \"{s}\" requested but {count} CUDA device(s) are available")));
        }
    }
    Ok(device)
}

/// `f32`/`float32`, `bf16`/`bfloat16`, `f16`/`float16`.
pub fn parse_dtype(s: &str) -> Result<Kind> {
    match s.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" | "float" | "fp32" => Ok(Kind::Float),
        "bf16" | "bfloat16" => Ok(Kind::BFloat16),
        "f16" | "float16" | "half" | "fp16" => Ok(Kind::Half),
        other => Err(ModelError::Invalid(format!("unknown dtype \"{other}\" (expected f32, bf16 or f16)"))),
    }
}

/// The HF `torch_dtype` spelling of a kind.
pub fn hf_dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        Kind::Double => "float64",
        _ => "float32",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(parse_device("CPU").unwrap(), Device::Cpu);
        assert!(parse_device("tpu").unwrap_err().to_string().contains("tpu"));
        assert_eq!(parse_dtype("bf16").unwrap(), Kind::BFloat16);
        assert!(parse_dtype("int8").unwrap_err().to_string().contains("int8"));
    }
}
