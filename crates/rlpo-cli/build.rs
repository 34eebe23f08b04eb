//! Keep `libtorch_cuda.so` in the `rlpo` binary's dependencies when the LibTorch we link against
//! has it. Nothing in rlpo calls a symbol of that library directly (CUDA kernels register
//! themselves from its static initialisers), so the linker's default `--as-needed` drops it and
//! the binary then sees no GPU (`tch::Cuda::device_count() == 0`) even on a GPU machine. tch's
//! README gives the same fix: `-Wl,--no-as-needed` before `-ltorch_cuda`.
//!
//! Only binaries get the flag (tests stay as they are); `RLPO_NO_CUDA_LINK=1` turns it off.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=RLPO_NO_CUDA_LINK");
    if std::env::var_os("RLPO_NO_CUDA_LINK").is_some_and(|v| v == "1") {
        return;
    }
    let Some(root) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        println!("cargo:warning=LIBTORCH is not set: rlpo will not force-link libtorch_cuda (CUDA may be invisible)");
        return;
    };
    let lib = root.join("lib");
    if lib.join("libtorch_cuda.so").exists() && std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg-bins=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg-bins=-ltorch_cuda");
        println!("cargo:rustc-link-arg-bins=-Wl,--as-needed");
    }
}
