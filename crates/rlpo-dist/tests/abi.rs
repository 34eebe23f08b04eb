//! Static check that Debian's gloo headers (libgloo-dev, used to compile the shim) cannot
//! disagree with the gloo that LibTorch was built with in any way that reaches the process:
//!
//! 1. the shim *defines* no code that works on a gloo type: every defined symbol that mentions
//!    `gloo::` only moves `std::shared_ptr<gloo::transport::Device>` handles around (pointer
//!    and control block; the layout of `Device` itself never matters);
//! 2. everything it *calls* in c10d or gloo is exported by the wheel's `libtorch_cpu.so`, so the
//!    code that does touch gloo objects is LibTorch's own, compiled with LibTorch's gloo.
//!
//! The dynamic half (the declarations are good enough to drive real collectives) is
//! tests/gloo.rs: 2 and 3 processes with known results.

use std::collections::HashSet;
use std::process::Command;

fn nm(args: &[&str], file: &str) -> Vec<String> {
    let out = Command::new("nm").args(args).arg(file).output().expect("`nm` (binutils) runs");
    assert!(out.status.success(), "nm {args:?} {file}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// (type letter, name) of each symbol line; archive member headers and blanks are skipped.
fn symbols(lines: &[String]) -> Vec<(char, String)> {
    lines
        .iter()
        .filter_map(|l| {
            let l = l.trim_start();
            let (kind, name) = if let Some(rest) = l.strip_prefix("U ") {
                ('U', rest)
            } else {
                let mut it = l.splitn(3, ' ');
                let (_, k, n) = (it.next()?, it.next()?, it.next()?);
                (k.chars().next()?, n)
            };
            Some((kind, name.to_string()))
        })
        .collect()
}

#[test]
fn the_shim_compiles_no_gloo_code_of_its_own() {
    let lib = env!("RLPO_DIST_SHIM_LIB");
    let syms = symbols(&nm(&["-C"], lib));
    assert!(syms.iter().any(|(_, n)| n == "rlpo_group_new_gloo"), "{lib} does not look like the shim");
    let mut offending = Vec::new();
    for (kind, name) in &syms {
        if *kind == 'U' || !name.contains("gloo::") {
            continue;
        }
        let rest = name.replace("std::shared_ptr<gloo::transport::Device>", "");
        if rest.contains("gloo::") {
            offending.push(name.clone());
        }
    }
    assert!(offending.is_empty(), "the shim defines code on gloo types (compiled with Debian's gloo headers):\n{}", offending.join("\n"));
}

#[test]
fn every_c10d_and_gloo_symbol_the_shim_calls_is_exported_by_libtorch() {
    let lib = env!("RLPO_DIST_SHIM_LIB");
    let torch = format!("{}/libtorch_cpu.so", env!("RLPO_DIST_LIBTORCH_LIB"));
    let exported: HashSet<String> = symbols(&nm(&["-D", "--defined-only"], &torch)).into_iter().map(|(_, n)| n).collect();
    let needed: Vec<String> = symbols(&nm(&[], lib))
        .into_iter()
        .filter(|(k, n)| *k == 'U' && (n.contains("c10d") || n.contains("4gloo")))
        .map(|(_, n)| n)
        .collect();
    assert!(needed.iter().any(|n| n.contains("ProcessGroupGloo")), "expected the shim to call ProcessGroupGloo: {needed:?}");
    let missing: Vec<&String> = needed.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(missing.is_empty(), "not exported by {torch}:\n{missing:#?}");
}
