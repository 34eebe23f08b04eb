//! The only `unsafe` of rlpo-dist: declarations of `csrc/shim.cpp`'s C ABI and safe wrappers
//! over them. Everything above this module is safe Rust.
//!
//! Invariants the wrappers keep (the shim's contract):
//! - a handle (`RawStore`, `RawGroup`) is a non-null pointer returned by the shim and freed
//!   exactly once, by `Drop`;
//! - tensors are passed as tch's `at::Tensor*` (`Tensor::as_ptr`), borrowed for the call only;
//!   the caller holds `&mut Tensor` for the ones written in place;
//! - the shim never throws across the boundary: a failure is a non-zero status plus a malloc'd
//!   message, which is copied and freed here.
//!
//! (`unsafe_code` is allowed for this module alone, at its declaration in lib.rs.)

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use tch::Tensor;

extern "C" {
    fn rlpo_dist_free_string(s: *mut c_char);
    fn rlpo_dist_has_nccl() -> c_int;
    fn rlpo_store_new(
        host: *const c_char,
        port: u16,
        is_server: c_int,
        world: c_int,
        timeout_ms: i64,
        prefix: *const c_char,
        out: *mut *mut c_void,
        err: *mut *mut c_char,
    ) -> c_int;
    fn rlpo_store_clone(store: *mut c_void, out: *mut *mut c_void, err: *mut *mut c_char) -> c_int;
    fn rlpo_store_add(store: *mut c_void, key: *const c_char, delta: i64, out: *mut i64, err: *mut *mut c_char) -> c_int;
    fn rlpo_store_set(store: *mut c_void, key: *const c_char, data: *const u8, len: usize, err: *mut *mut c_char) -> c_int;
    fn rlpo_store_try_get(store: *mut c_void, key: *const c_char, out: *mut *mut c_char, len: *mut usize, found: *mut c_int, err: *mut *mut c_char) -> c_int;
    fn rlpo_store_free(store: *mut c_void);
    fn rlpo_group_new_gloo(store: *mut c_void, prefix: *const c_char, rank: c_int, world: c_int, timeout_ms: i64, out: *mut *mut c_void, err: *mut *mut c_char) -> c_int;
    fn rlpo_group_new_nccl(
        store: *mut c_void,
        prefix: *const c_char,
        rank: c_int,
        world: c_int,
        device: c_int,
        timeout_ms: i64,
        out: *mut *mut c_void,
        err: *mut *mut c_char,
    ) -> c_int;
    fn rlpo_group_all_reduce(group: *mut c_void, tensor: *mut c_void, op: c_int, err: *mut *mut c_char) -> c_int;
    fn rlpo_group_all_gather(group: *mut c_void, input: *mut c_void, outputs: *const *mut c_void, n: usize, err: *mut *mut c_char) -> c_int;
    fn rlpo_group_broadcast(group: *mut c_void, tensor: *mut c_void, root: c_int, err: *mut *mut c_char) -> c_int;
    fn rlpo_group_barrier(group: *mut c_void, err: *mut *mut c_char) -> c_int;
    fn rlpo_group_free(group: *mut c_void);
}

/// A failed shim call: the C++ exception's text.
pub(crate) type ShimResult<T> = std::result::Result<T, String>;

/// Turn a status and error pointer into a result, taking ownership of the message.
fn check(status: c_int, err: *mut c_char) -> ShimResult<()> {
    if status == 0 {
        return Ok(());
    }
    if err.is_null() {
        return Err("c10d call failed (no message)".into());
    }
    // SAFETY: a non-null `err` is a NUL-terminated string malloc'd by the shim; it is read once
    // and freed once, here.
    let msg = unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned();
    unsafe { rlpo_dist_free_string(err) };
    Err(msg)
}

fn cstring(s: &str) -> ShimResult<CString> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

fn tensor_ptr(t: &Tensor) -> *mut c_void {
    t.as_ptr() as *mut c_void
}

/// Whether the shim was compiled with `ProcessGroupNCCL`.
pub(crate) fn has_nccl() -> bool {
    // SAFETY: no arguments, no state.
    unsafe { rlpo_dist_has_nccl() != 0 }
}

/// A c10d `TCPStore` client (on rank 0 also the server).
pub(crate) struct RawStore(*mut c_void);

// SAFETY: a TCPStore client serialises its own requests (c10d holds a lock per client), and the
// handle is only ever used through `&self` methods that make one call each.
unsafe impl Send for RawStore {}
unsafe impl Sync for RawStore {}

impl RawStore {
    /// A client of the TCPStore at host:port (hosting it when `is_server`), its keys under `prefix`.
    pub(crate) fn new(host: &str, port: u16, is_server: bool, world: usize, timeout_ms: i64, prefix: &str) -> ShimResult<RawStore> {
        let (host, prefix) = (cstring(host)?, cstring(prefix)?);
        let (mut out, mut err) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: valid C strings, out-pointers to locals; `out` is set when the status is 0.
        let status =
            unsafe { rlpo_store_new(host.as_ptr(), port, is_server as c_int, world as c_int, timeout_ms, prefix.as_ptr(), &mut out, &mut err) };
        check(status, err).map(|()| RawStore(out))
    }

    /// A second connection to the same server.
    pub(crate) fn clone_client(&self) -> ShimResult<RawStore> {
        let (mut out, mut err) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: `self.0` is a live store handle.
        let status = unsafe { rlpo_store_clone(self.0, &mut out, &mut err) };
        check(status, err).map(|()| RawStore(out))
    }

    /// Atomically add `delta` to the integer at `key` (created as 0) and return the new value.
    pub(crate) fn add(&self, key: &str, delta: i64) -> ShimResult<i64> {
        let key = cstring(key)?;
        let (mut out, mut err) = (0i64, std::ptr::null_mut());
        // SAFETY: live handle, valid C string, out-pointers to locals.
        let status = unsafe { rlpo_store_add(self.0, key.as_ptr(), delta, &mut out, &mut err) };
        check(status, err).map(|()| out)
    }

    /// Set `key` to `value`.
    pub(crate) fn set(&self, key: &str, value: &[u8]) -> ShimResult<()> {
        let key = cstring(key)?;
        let mut err = std::ptr::null_mut();
        // SAFETY: live handle, valid C string, `value` readable for its length during the call.
        let status = unsafe { rlpo_store_set(self.0, key.as_ptr(), value.as_ptr(), value.len(), &mut err) };
        check(status, err)
    }

    /// The value at `key`, or None when it is not set (does not wait).
    pub(crate) fn try_get(&self, key: &str) -> ShimResult<Option<Vec<u8>>> {
        let key = cstring(key)?;
        let (mut out, mut len, mut found, mut err) = (std::ptr::null_mut(), 0usize, 0, std::ptr::null_mut());
        // SAFETY: live handle, valid C string, out-pointers to locals.
        let status = unsafe { rlpo_store_try_get(self.0, key.as_ptr(), &mut out, &mut len, &mut found, &mut err) };
        check(status, err)?;
        if found == 0 || out.is_null() {
            return Ok(None);
        }
        // SAFETY: `out` holds `len` bytes (plus a NUL) malloc'd by the shim; copied, then freed once.
        let bytes = unsafe { std::slice::from_raw_parts(out as *const u8, len) }.to_vec();
        unsafe { rlpo_dist_free_string(out) };
        Ok(Some(bytes))
    }
}

impl Drop for RawStore {
    fn drop(&mut self) {
        // SAFETY: the handle came from the shim and is freed once.
        unsafe { rlpo_store_free(self.0) }
    }
}

/// A c10d process group (`ProcessGroupGloo` or `ProcessGroupNCCL`).
pub(crate) struct RawGroup(*mut c_void);

// SAFETY: c10d backends accept calls from any thread; rlpo-dist's `ProcessGroup` is not `Sync`,
// so calls on one group never run concurrently.
unsafe impl Send for RawGroup {}

impl RawGroup {
    pub(crate) fn new_gloo(store: &RawStore, prefix: &str, rank: usize, world: usize, timeout_ms: i64) -> ShimResult<RawGroup> {
        let prefix = cstring(prefix)?;
        let (mut out, mut err) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: live store handle (the group keeps its own reference to the store), valid C
        // string, out-pointers to locals.
        let status = unsafe { rlpo_group_new_gloo(store.0, prefix.as_ptr(), rank as c_int, world as c_int, timeout_ms, &mut out, &mut err) };
        check(status, err).map(|()| RawGroup(out))
    }

    pub(crate) fn new_nccl(store: &RawStore, prefix: &str, rank: usize, world: usize, device: usize, timeout_ms: i64) -> ShimResult<RawGroup> {
        let prefix = cstring(prefix)?;
        let (mut out, mut err) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: as in `new_gloo`.
        let status = unsafe {
            rlpo_group_new_nccl(store.0, prefix.as_ptr(), rank as c_int, world as c_int, device as c_int, timeout_ms, &mut out, &mut err)
        };
        check(status, err).map(|()| RawGroup(out))
    }

    /// In-place all-reduce; `op`: 0 = sum, 1 = max.
    pub(crate) fn all_reduce(&self, t: &mut Tensor, op: i32) -> ShimResult<()> {
        let mut err = std::ptr::null_mut();
        // SAFETY: live group handle; `t` is a live tensor borrowed mutably for the call.
        let status = unsafe { rlpo_group_all_reduce(self.0, tensor_ptr(t), op, &mut err) };
        check(status, err)
    }

    /// `outputs[i]` receives rank i's `input` (all the same shape and dtype).
    pub(crate) fn all_gather(&self, input: &Tensor, outputs: &mut [Tensor]) -> ShimResult<()> {
        let ptrs: Vec<*mut c_void> = outputs.iter().map(tensor_ptr).collect();
        let mut err = std::ptr::null_mut();
        // SAFETY: live group; `input` and every output are live tensors for the call; `ptrs`
        // has `outputs.len()` entries.
        let status = unsafe { rlpo_group_all_gather(self.0, tensor_ptr(input), ptrs.as_ptr(), ptrs.len(), &mut err) };
        check(status, err)
    }

    /// In-place broadcast from `root`.
    pub(crate) fn broadcast(&self, t: &mut Tensor, root: usize) -> ShimResult<()> {
        let mut err = std::ptr::null_mut();
        // SAFETY: live group handle and tensor.
        let status = unsafe { rlpo_group_broadcast(self.0, tensor_ptr(t), root as c_int, &mut err) };
        check(status, err)
    }

    pub(crate) fn barrier(&self) -> ShimResult<()> {
        let mut err = std::ptr::null_mut();
        // SAFETY: live group handle.
        let status = unsafe { rlpo_group_barrier(self.0, &mut err) };
        check(status, err)
    }
}

impl Drop for RawGroup {
    fn drop(&mut self) {
        // SAFETY: the handle came from the shim and is freed once.
        unsafe { rlpo_group_free(self.0) }
    }
}
