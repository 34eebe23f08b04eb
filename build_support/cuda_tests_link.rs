// With the `cuda-tests` feature, keep `libtorch_cuda.so` linked into the test binaries: nothing
// calls it directly, so the linker's `--as-needed` would drop it and the tests would see no GPU
// (the same fix as `crates/rlpo-cli/build.rs` applies to the `rlpo` binary).
//
// Shared by the build scripts of rlpo-model and rlpo-rollout through `include!`.

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("CARGO_FEATURE_CUDA_TESTS").is_none() {
        return;
    }
    let Some(root) = std::env::var_os("LIBTORCH").map(std::path::PathBuf::from) else {
        println!("cargo:warning=cuda-tests: LIBTORCH is not set; libtorch_cuda is not force-linked");
        return;
    };
    let lib = root.join("lib");
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg-tests=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg-tests=-ltorch_cuda");
        println!("cargo:rustc-link-arg-tests=-Wl,--as-needed");
    } else {
        println!("cargo:warning=cuda-tests: {} has no libtorch_cuda.so (a CPU-only LibTorch)", lib.display());
    }
}
