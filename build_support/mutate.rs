//! Input mutation for the parser property tests (fuzzers) of several crates, included with
//! `#[path = "../../../build_support/mutate.rs"] mod mutate;`: proptest draws a list of
//! [`Op`]s and [`apply`] turns a valid seed input (a recipe, a JSONL line, a safetensors file, a
//! chat template) into a damaged one: flipped bits, overwritten, inserted and deleted bytes,
//! duplicated or truncated spans, splices of interesting tokens. Each test then asserts that the
//! parser returns (`Ok` or a clear `Err`) and never panics.
#![allow(dead_code)]

use proptest::prelude::*;

/// One mutation; positions are taken modulo the current length.
#[derive(Debug, Clone)]
pub enum Op {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Truncate(usize),
    Splice(usize, usize),
}

/// Fragments that parsers treat specially.
const TOKENS: &[&[u8]] = &[
    b"\"", b"{", b"}", b"[", b"]", b"\n", b"\\", b"\\u0000", b"nan", b"inf", b"-1", b"1e999", b"18446744073709551616",
    b"=", b"[[", b"]]", b"{{", b"}}", b"{%", b"%}", b"\xff\xfe", b"\x00", b"null", b"true", b",", b":", b"#",
];

/// A strategy for up to `max` mutations.
pub fn ops(max: usize) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Op::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Op::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Op::Insert(i, b)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Op::Delete(i, n)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Op::Duplicate(i, n)),
        any::<usize>().prop_map(Op::Truncate),
        (any::<usize>(), any::<usize>()).prop_map(|(i, t)| Op::Splice(i, t)),
    ];
    proptest::collection::vec(op, 1..=max)
}

/// `seed` with `ops` applied in order.
pub fn apply(seed: &[u8], ops: &[Op]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for op in ops {
        let n = v.len();
        let at = |i: usize| if n == 0 { 0 } else { i % n };
        match *op {
            Op::Flip(i, b) if n > 0 => v[at(i)] ^= 1 << b,
            Op::Set(i, b) if n > 0 => v[at(i)] = b,
            Op::Insert(i, b) => v.insert(if n == 0 { 0 } else { i % (n + 1) }, b),
            Op::Delete(i, k) if n > 0 => {
                let s = at(i);
                v.drain(s..(s + k).min(n));
            }
            Op::Duplicate(i, k) if n > 0 => {
                let s = at(i);
                let chunk: Vec<u8> = v[s..(s + k).min(n)].to_vec();
                v.splice(s..s, chunk);
            }
            Op::Truncate(i) => v.truncate(if n == 0 { 0 } else { i % n }),
            Op::Splice(i, t) => {
                let tok = TOKENS[t % TOKENS.len()];
                let s = if n == 0 { 0 } else { i % (n + 1) };
                v.splice(s..s, tok.iter().copied());
            }
            _ => {}
        }
    }
    v
}
