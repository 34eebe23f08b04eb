//! Shared pieces of the verl parity suite: a seeded generator of ragged batches, tensor/JSON
//! conversion, the oracle process, and the comparison with a tolerance.
#![allow(dead_code)]

pub mod cases;
pub mod rlpo;

use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use tch::{Kind, Tensor};

/// Values and gradients must agree within this (relative above magnitude 1).
pub const TOL: f64 = 1e-6;

/// SplitMix64: deterministic, no extra dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
    /// Integer in `lo..=hi`.
    pub fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    pub fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * self.uniform()).cos()
    }
    pub fn sign(&mut self) -> f64 {
        if self.uniform() < 0.5 {
            -1.0
        } else {
            1.0
        }
    }
}

/// A ragged batch: `n = b·g` rows, `t` positions, row lengths in `0..=t` (some empty).
#[derive(Debug, Clone)]
pub struct Shape {
    pub b: usize,
    pub g: usize,
    pub t: usize,
    pub lengths: Vec<usize>,
}

impl Shape {
    pub fn n(&self) -> usize {
        self.b * self.g
    }

    /// Random shape; at least one row has a token, and with `empty_rows` some rows are empty.
    pub fn random(rng: &mut Rng, empty_rows: bool) -> Shape {
        let g = [1, 2, 3, 4, 5][rng.int(0, 4)];
        let b = rng.int(1, 3);
        let t = rng.int(3, 8);
        let mut lengths: Vec<usize> = (0..b * g).map(|_| rng.int(1, t)).collect();
        if empty_rows && lengths.len() > 1 {
            let k = rng.int(0, lengths.len() - 1);
            lengths[k] = 0;
        }
        // At least two valid tokens (verl's token whitening divides by the count minus one).
        if lengths.iter().sum::<usize>() < 2 {
            let k = lengths.iter().position(|&l| l > 0).unwrap_or(0);
            lengths[k] = t;
        }
        Shape { b, g, t, lengths }
    }

    pub fn mask(&self) -> Vec<Vec<f64>> {
        self.lengths.iter().map(|&l| (0..self.t).map(|j| if j < l { 1.0 } else { 0.0 }).collect()).collect()
    }

    pub fn has_empty_row(&self) -> bool {
        self.lengths.contains(&0)
    }

    /// Contiguous micro-batches covering the rows (1 to 3 of them).
    pub fn micro_batches(&self, rng: &mut Rng) -> Vec<(usize, usize)> {
        let n = self.n();
        let k = rng.int(1, n.min(3));
        let mut cuts: Vec<usize> = (1..n).collect();
        let mut chosen = Vec::new();
        for _ in 1..k {
            let i = rng.int(0, cuts.len() - 1);
            chosen.push(cuts.remove(i));
        }
        chosen.sort();
        let mut out = Vec::new();
        let mut s = 0;
        for c in chosen.into_iter().chain([n]) {
            out.push((s, c - s));
            s = c;
        }
        out
    }
}

pub fn matrix(rows: &[Vec<f64>]) -> Tensor {
    let n = rows.len() as i64;
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_slice(&flat).view([n, -1])
}

pub fn to_rows(t: &Tensor) -> Vec<Vec<f64>> {
    let t = t.detach().to_kind(Kind::Double);
    let (n, w) = (t.size()[0], t.size()[1]);
    let flat = Vec::<f64>::try_from(&t.reshape([-1])).unwrap();
    (0..n as usize).map(|i| flat[i * w as usize..(i + 1) * w as usize].to_vec()).collect()
}

pub fn json_rows(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
        .collect()
}

pub fn json_vec(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= TOL * b.abs().max(1.0)
}

/// Panics with `what` and the first differing position when two matrices differ.
pub fn assert_rows_close(got: &[Vec<f64>], want: &[Vec<f64>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: rows");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: row {i} width");
        for (j, (a, b)) in g.iter().zip(w).enumerate() {
            assert!(close(*a, *b), "{what}: [{i}][{j}] rlpo {a} vs verl {b}\n rlpo {got:?}\n verl {want:?}");
        }
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Runs `verl_oracle.py` once on all `cases` with the project's venv Python; one result per case.
pub fn run_oracle(cases: &[Value]) -> Vec<Value> {
    let python = repo_root().join(".venv/bin/python");
    assert!(python.exists(), "{} missing: run scripts/setup.sh (it installs verl 0.9.1)", python.display());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/verl_oracle.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
    let request = serde_json::json!({ "cases": cases }).to_string();
    child.stdin.take().unwrap().write_all(request.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "verl oracle failed ({}); is verl 0.9.1 installed (scripts/setup.sh)?\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("oracle output is JSON");
    let results = v["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), cases.len(), "one result per case");
    results
}
