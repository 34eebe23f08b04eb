//! Compile src/shim.cpp against the same LibTorch torch-sys links (its headers are next to the
//! libraries: `<libtorch>/include`). LIBTORCH (set by .cargo/config.toml) wins; otherwise the lib
//! directory torch-sys reports through its `links = "tch"` metadata.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/shim.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let root = match std::env::var_os("LIBTORCH") {
        Some(p) => PathBuf::from(p),
        None => match std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
            Some(lib) => PathBuf::from(lib).parent().map(PathBuf::from).unwrap_or_default(),
            None => panic!("rlpo-aten: set LIBTORCH to the LibTorch root (scripts/setup.sh links .venv/torch)"),
        },
    };
    let include = root.join("include");
    assert!(
        include.join("ATen/ops/_fused_adamw.h").exists(),
        "rlpo-aten: {} has no ATen/ops/_fused_adamw.h (LibTorch >= 2.1 headers expected)",
        include.display()
    );
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .file("src/shim.cpp")
        .include(&include)
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .warnings(false)
        .compile("rlpo_aten_shim");
}
