//! Compile `csrc/shim.cpp` (c10d's TCPStore, ProcessGroupGloo and, with the `nccl` feature,
//! ProcessGroupNCCL behind a C ABI) against the LibTorch that tch links (`LIBTORCH`, set by
//! `.cargo/config.toml` to the venv's torch), and link the LibTorch libraries that export c10d.
//!
//! - Gloo's own headers are not in the torch wheel: Debian's `libgloo-dev` provides them
//!   (`/usr/include/gloo`, or `GLOO_INCLUDE`); `scripts/setup.sh` installs it.
//! - `nccl` feature: also `ProcessGroupNCCL`, with `nccl.h` from the venv's `nvidia/nccl/include`
//!   (or `NCCL_INCLUDE`) and the CUDA headers from `nvidia/cu13/include` (or `CUDA_INCLUDE`),
//!   linking `libtorch_cuda`. Without the feature a CPU-only LibTorch is enough.
//! - The static library's path is exported to the crate's tests as `RLPO_DIST_SHIM_LIB` (the
//!   ABI test inspects its symbols).

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    for v in ["LIBTORCH", "GLOO_INCLUDE", "NCCL_INCLUDE", "CUDA_INCLUDE"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        panic!("rlpo-dist: LIBTORCH is not set (the workspace's .cargo/config.toml points it at .venv/torch; run scripts/setup.sh)");
    };
    let include = libtorch.join("include");
    let c10d = include.join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp");
    if !c10d.exists() {
        panic!("rlpo-dist: {} not found: LIBTORCH ({}) has no c10d headers", c10d.display(), libtorch.display());
    }
    let gloo = std::env::var_os("GLOO_INCLUDE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/include"));
    if !gloo.join("gloo/context.h").exists() {
        panic!(
            "rlpo-dist: gloo headers not found under {} (install Debian's libgloo-dev: `apt-get install -y libgloo-dev`, \
             which scripts/setup.sh does; or set GLOO_INCLUDE to a directory holding gloo/)",
            gloo.display()
        );
    }
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("csrc/shim.cpp")
        .std("c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        // Without it ProcessGroupGloo.hpp compiles to nothing.
        .define("USE_C10D_GLOO", None)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(&gloo)
        // The torch headers are not warning-clean; the shim's own code is small and reviewed.
        .warnings(false)
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations");
    let lib = libtorch.join("lib");
    println!("cargo:rustc-link-search=native={}", lib.display());
    if std::env::var_os("CARGO_FEATURE_NCCL").is_some() {
        // `.venv/torch` is a symlink: the nvidia wheels sit next to the real site-packages/torch.
        let real = std::fs::canonicalize(&libtorch).unwrap_or_else(|_| libtorch.clone());
        let nvidia = real.parent().map(|p| p.join("nvidia")).unwrap_or_default();
        let nccl = env_dir("NCCL_INCLUDE").unwrap_or_else(|| nvidia.join("nccl/include"));
        let cuda = env_dir("CUDA_INCLUDE").unwrap_or_else(|| nvidia.join("cu13/include"));
        require(&nccl.join("nccl.h"), "nccl.h (the nvidia-nccl wheel torch depends on; or set NCCL_INCLUDE)");
        require(&cuda.join("cuda_runtime_api.h"), "the CUDA headers (nvidia/cu13/include; or set CUDA_INCLUDE)");
        require(&lib.join("libtorch_cuda.so"), "libtorch_cuda.so (a CUDA build of LibTorch)");
        build.define("USE_C10D_NCCL", None).define("RLPO_WITH_NCCL", None).include(nccl).include(cuda);
    }
    build.compile("rlpo_dist_shim");
    if std::env::var_os("CARGO_FEATURE_NCCL").is_some() {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
    // c10d (TCPStore, ProcessGroupGloo) lives in libtorch_cpu; libtorch and libc10 for the rest.
    for l in ["torch", "torch_cpu", "c10"] {
        println!("cargo:rustc-link-lib=dylib={l}");
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rustc-env=RLPO_DIST_SHIM_LIB={}", out.join("librlpo_dist_shim.a").display());
    println!("cargo:rustc-env=RLPO_DIST_LIBTORCH_LIB={}", lib.display());
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).map(PathBuf::from)
}

fn require(path: &Path, what: &str) {
    if !path.exists() {
        panic!("rlpo-dist (feature `nccl`): {} not found: {what}", path.display());
    }
}
