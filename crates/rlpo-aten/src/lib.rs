//! rlpo-aten: LibTorch ops that tch 0.24 does not bind, called through a small C++ shim
//! (`src/shim.cpp`, compiled by `build.rs` against the LibTorch headers torch-sys links):
//!
//! - [`fused_adamw_`]: LibTorch's fused multi-tensor AdamW (`at::_fused_adamw_`): one kernel
//!   per launch over all tensors on CUDA, a vectorised loop per tensor on the CPU;
//! - [`foreach_copy_`], [`foreach_mul_scalar_`], [`foreach_norm`]: multi-tensor copy, scaling and
//!   L2 norms (`at::_foreach_*`), one launch for many tensors on CUDA.
//!
//! Tensors cross the boundary as tch's own `at::Tensor*` handles; C++ exceptions come back as
//! [`AtenError`]s naming the op. The FFI calls are this crate's only `unsafe` (see `ffi`).

use tch::Tensor;

/// A LibTorch error raised inside one of the shim's ops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtenError {
    /// The ATen op.
    pub op: &'static str,
    /// LibTorch's message.
    pub message: String,
}

impl std::fmt::Display for AtenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.op, self.message)
    }
}

impl std::error::Error for AtenError {}

/// Result of a shim op.
pub type Result<T> = std::result::Result<T, AtenError>;

/// Hyper-parameters of one AdamW step (decoupled weight decay, bias-corrected moments).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    /// Learning rate.
    pub lr: f64,
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// Weight decay (multiplies the parameter by `1 − lr·weight_decay`).
    pub weight_decay: f64,
    /// ε.
    pub eps: f64,
}

#[allow(unsafe_code)]
mod ffi {
    use std::ffi::{c_char, c_void, CStr};
    use tch::Tensor;

    type T = *const c_void;
    extern "C" {
        fn rlpo_aten_fused_adamw(p: *const T, g: *const T, m: *const T, v: *const T, s: *const T, n: usize, lr: f64, b1: f64, b2: f64, wd: f64, eps: f64) -> *mut c_char;
        fn rlpo_aten_foreach_copy(dst: *const T, src: *const T, n: usize) -> *mut c_char;
        fn rlpo_aten_foreach_mul_scalar(ts: *const T, n: usize, scalar: f64) -> *mut c_char;
        fn rlpo_aten_foreach_norm(ts: *const T, n: usize, out: *mut *mut c_void) -> *mut c_char;
        fn rlpo_aten_free(p: *mut c_char);
    }

    /// The handles of `ts` (valid while `ts` is borrowed).
    pub fn handles(ts: &[Tensor]) -> Vec<T> {
        ts.iter().map(|t| t.as_ptr() as T).collect()
    }

    /// Turn the shim's return value into a Result (freeing the message).
    fn check(op: &'static str, err: *mut c_char) -> super::Result<()> {
        if err.is_null() {
            return Ok(());
        }
        // SAFETY: a non-null return is a NUL-terminated string malloc'd by the shim; it is read
        // once and freed by the shim's own `free`.
        let message = unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned();
        unsafe { rlpo_aten_free(err) };
        Err(super::AtenError { op, message })
    }

    pub fn fused_adamw(p: &[T], g: &[T], m: &[T], v: &[T], s: &[T], h: &super::AdamWStep) -> super::Result<()> {
        // SAFETY: every slice holds `p.len()` live tensor handles (checked by the caller), borrowed
        // for the duration of the call; the shim only reads the arrays and catches C++ exceptions.
        let err = unsafe { rlpo_aten_fused_adamw(p.as_ptr(), g.as_ptr(), m.as_ptr(), v.as_ptr(), s.as_ptr(), p.len(), h.lr, h.beta1, h.beta2, h.weight_decay, h.eps) };
        check("_fused_adamw_", err)
    }

    pub fn foreach_copy(dst: &[T], src: &[T]) -> super::Result<()> {
        // SAFETY: as above; both slices have `dst.len()` handles.
        let err = unsafe { rlpo_aten_foreach_copy(dst.as_ptr(), src.as_ptr(), dst.len()) };
        check("_foreach_copy_", err)
    }

    pub fn foreach_mul_scalar(ts: &[T], scalar: f64) -> super::Result<()> {
        // SAFETY: as above.
        let err = unsafe { rlpo_aten_foreach_mul_scalar(ts.as_ptr(), ts.len(), scalar) };
        check("_foreach_mul_", err)
    }

    pub fn foreach_norm(ts: &[T]) -> super::Result<Vec<Tensor>> {
        let mut out: Vec<*mut c_void> = vec![std::ptr::null_mut(); ts.len()];
        // SAFETY: as above; the shim writes one new `at::Tensor*` per input into `out` (only on
        // success), whose ownership passes to the `Tensor`s built below.
        let err = unsafe { rlpo_aten_foreach_norm(ts.as_ptr(), ts.len(), out.as_mut_ptr()) };
        check("_foreach_norm", err)?;
        Ok(out.into_iter().map(|p| unsafe { Tensor::from_ptr(p as *mut torch_sys::C_tensor) }).collect())
    }
}

fn same_len(op: &'static str, lens: &[usize]) -> Result<()> {
    if lens.windows(2).any(|w| w[0] != w[1]) {
        return Err(AtenError { op, message: format!("tensor lists of different lengths {lens:?}") });
    }
    Ok(())
}

/// `at::_fused_adamw_`: one AdamW step on every `params[i]` in place, with gradients `grads[i]`,
/// moments `exp_avgs[i]` / `exp_avg_sqs[i]` (updated in place) and step counts `state_steps[i]`
/// (one-element f32 tensors holding the step number, already incremented; on the parameters'
/// device). All tensors of a position share dtype and device; the kernel computes in fp32
/// (`opmath`) for fp32, bf16 and f16 tensors.
pub fn fused_adamw_(params: &[Tensor], grads: &[Tensor], exp_avgs: &[Tensor], exp_avg_sqs: &[Tensor], state_steps: &[Tensor], h: &AdamWStep) -> Result<()> {
    same_len("_fused_adamw_", &[params.len(), grads.len(), exp_avgs.len(), exp_avg_sqs.len(), state_steps.len()])?;
    if params.is_empty() {
        return Ok(());
    }
    let (p, g, m, v, s) = (ffi::handles(params), ffi::handles(grads), ffi::handles(exp_avgs), ffi::handles(exp_avg_sqs), ffi::handles(state_steps));
    ffi::fused_adamw(&p, &g, &m, &v, &s, h)
}

/// `at::_foreach_copy_`: `dst[i].copy_(src[i])` for every i (dtype conversion included).
pub fn foreach_copy_(dst: &[Tensor], src: &[Tensor]) -> Result<()> {
    same_len("_foreach_copy_", &[dst.len(), src.len()])?;
    if dst.is_empty() {
        return Ok(());
    }
    ffi::foreach_copy(&ffi::handles(dst), &ffi::handles(src))
}

/// `at::_foreach_mul_`: `ts[i] *= scalar` in place.
pub fn foreach_mul_scalar_(ts: &[Tensor], scalar: f64) -> Result<()> {
    if ts.is_empty() {
        return Ok(());
    }
    ffi::foreach_mul_scalar(&ffi::handles(ts), scalar)
}

/// `at::_foreach_norm(ts, 2)`: the L2 norm of each tensor (0-dim tensors, each in its input's
/// dtype and device).
pub fn foreach_norm(ts: &[Tensor]) -> Result<Vec<Tensor>> {
    if ts.is_empty() {
        return Ok(Vec::new());
    }
    ffi::foreach_norm(&ffi::handles(ts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn foreach_ops_match_per_tensor_ops_and_errors_are_reported() {
        // Fixed, irregular values (no draw from LibTorch's process-global generator).
        let ts: Vec<Tensor> = [[5i64, 3], [7, 1], [2, 2]]
            .iter()
            .enumerate()
            .map(|(i, s)| ((Tensor::arange(s[0] * s[1], (Kind::Float, tch::Device::Cpu)) * 0.737 + i as f64).sin() * 2.0).reshape(s))
            .collect();
        let norms = foreach_norm(&ts).unwrap();
        for (t, n) in ts.iter().zip(&norms) {
            let want = t.square().sum(Kind::Double).sqrt().double_value(&[]);
            assert!((n.double_value(&[]) - want).abs() < 1e-5 * want, "{} vs {want}", n.double_value(&[]));
        }
        let copies: Vec<Tensor> = ts.iter().map(|t| t.zeros_like().to_kind(Kind::BFloat16)).collect();
        foreach_copy_(&copies, &ts).unwrap();
        for (c, t) in copies.iter().zip(&ts) {
            assert!(c.equal(&t.to_kind(Kind::BFloat16)));
        }
        let before: Vec<Tensor> = ts.iter().map(Tensor::copy).collect();
        foreach_mul_scalar_(&ts, 0.5).unwrap();
        for (a, b) in ts.iter().zip(&before) {
            assert!(a.equal(&(b * 0.5)));
        }
        // A shape mismatch inside LibTorch comes back as an error naming the op.
        let bad = vec![Tensor::zeros([3], (Kind::Float, tch::Device::Cpu))];
        let err = foreach_copy_(&bad, &ts[..1]).unwrap_err();
        assert_eq!(err.op, "_foreach_copy_");
        assert!(!err.message.is_empty());
        assert!(foreach_copy_(&bad, &ts).is_err(), "lists of different lengths");
    }
}
