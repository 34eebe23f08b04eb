//! Sampler correctness, for both the host sampler and the device sampler (tensor ops, here on
//! CPU tensors): 20,000 draws from fixed logits follow softmax(z / T) after top-k, top-p and
//! min-p truncation (chi-square, p > 0.001) for T in {0.5, 1.0, 1.3}; the recorded logprobs and
//! entropy equal an independent f64 reference; HAPO adaptive temperature samples at the
//! temperature the spec's formula gives; and the two samplers agree draw for draw on the same
//! uniforms. The reference distributions are computed here, in f64, from the definitions
//! (transformers' warper order), not by the code under test.

use rlpo_rollout::device_sampler::uniforms;
use rlpo_rollout::sampler::{Sampler, Scratch};
use rlpo_rollout::{DeviceSampler, EntropyStats, RolloutSeed, TokenSample};
use tch::Tensor;

/// Which implementation draws.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    Host,
    Device,
}
const BACKENDS: [Backend; 2] = [Backend::Host, Backend::Device];

/// `n` draws from logits `z`: the host sampler on row (0, 0)'s stream at positions `0..n`, or the
/// device sampler on an `[n, V]` batch of `z`, row `i` on the stream of row (0, i) at position 0.
fn samples(backend: Backend, s: &Sampler, z: &[f32], n: usize, seed: u64) -> Vec<TokenSample> {
    match backend {
        Backend::Host => {
            let rng = RolloutSeed::new(seed, 0).row(0, 0);
            let mut scratch = Scratch::default();
            (0..n).map(|t| s.sample(z, rng.uniform(t as u64), &mut scratch)).collect()
        }
        Backend::Device => {
            let seed = RolloutSeed::new(seed, 0);
            let keys = Tensor::from_slice(&(0..n).map(|i| seed.row(0, i as u64).key as i64).collect::<Vec<_>>());
            let logits = Tensor::from_slice(z).view([1, -1]).expand([n as i64, z.len() as i64], false);
            let out = DeviceSampler::new(*s).sample(&logits, &uniforms(&keys, 0));
            let tokens: Vec<i64> = Vec::try_from(&out.tokens).unwrap();
            let vals: Vec<f32> = Vec::try_from(out.values.flatten(0, -1)).unwrap();
            tokens
                .iter()
                .enumerate()
                .map(|(i, &token)| TokenSample {
                    token,
                    logprob: vals[4 * i],
                    base_logprob: vals[4 * i + 1],
                    entropy: vals[4 * i + 2],
                    temperature: vals[4 * i + 3],
                })
                .collect()
        }
    }
}

const DRAWS: usize = 20_000;

fn logits(v: usize) -> Vec<f32> {
    (0..v).map(|i| (3.0 * ((i as f64) * 1.7).sin() + 0.02 * i as f64 - 1.0) as f32).collect()
}

/// softmax(z / t) in f64.
fn softmax(z: &[f32], t: f64) -> Vec<f64> {
    let m = z.iter().map(|&x| x as f64 / t).fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|&x| (x as f64 / t - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

fn entropy(p: &[f64]) -> f64 {
    -p.iter().filter(|&&x| x > 0.0).map(|x| x * x.ln()).sum::<f64>()
}

/// Reference truncated distribution: temperature, top-k (ties kept), top-p on the renormalised
/// top-k distribution (keep while the mass before a token is < p), min-p, renormalise.
fn reference(z: &[f32], t: f64, top_k: usize, top_p: f64, min_p: f64) -> Vec<f64> {
    let mut p = softmax(z, t);
    let mut order: Vec<usize> = (0..z.len()).collect();
    order.sort_by(|&a, &b| z[b].partial_cmp(&z[a]).unwrap().then(a.cmp(&b)));
    if top_k > 0 && top_k < z.len() {
        let kth = z[order[top_k - 1]];
        for (i, &x) in z.iter().enumerate() {
            if x < kth {
                p[i] = 0.0;
            }
        }
    }
    let s: f64 = p.iter().sum();
    p.iter_mut().for_each(|x| *x /= s);
    if top_p < 1.0 {
        let mut before = 0.0;
        for &i in &order {
            let keep = before < top_p;
            before += p[i];
            if !keep {
                p[i] = 0.0;
            }
        }
    }
    if min_p > 0.0 {
        let pmax = p.iter().cloned().fold(0.0, f64::max);
        p.iter_mut().for_each(|x| if *x < min_p * pmax { *x = 0.0 });
    }
    let s: f64 = p.iter().sum();
    p.iter().map(|x| x / s).collect()
}

/// ln Γ(x) (Lanczos, g = 7).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9, 676.520_368_121_885_1, -1_259.139_216_722_402_8, 771.323_428_777_653_1,
        -176.615_029_162_140_6, 12.507_343_278_686_905, -0.138_571_095_265_720_12, 9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Upper regularised incomplete gamma Q(a, x) (series / continued fraction, Numerical Recipes).
fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x < a + 1.0 {
        let (mut sum, mut del, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..1000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        1.0 - sum * (-x + a * x.ln() - ln_gamma(a)).exp()
    } else {
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / 1e-300;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..1000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            d = 1.0 / if d.abs() < 1e-300 { 1e-300 } else { d };
            c = b + an / c;
            if c.abs() < 1e-300 {
                c = 1e-300;
            }
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < 1e-15 {
                break;
            }
        }
        (-x + a * x.ln() - ln_gamma(a)).exp() * h
    }
}

/// Chi-square p-value of `counts` against probabilities `p` (bins with expectation < 5 merged).
fn chi_square_p(counts: &[usize], p: &[f64]) -> f64 {
    let n: usize = counts.iter().sum();
    let (mut chi2, mut bins) = (0.0, 0usize);
    let (mut small_o, mut small_e) = (0.0, 0.0);
    for (&o, &pi) in counts.iter().zip(p) {
        let e = pi * n as f64;
        if pi == 0.0 {
            assert_eq!(o, 0, "a token with probability 0 was sampled");
            continue;
        }
        if e < 5.0 {
            small_o += o as f64;
            small_e += e;
        } else {
            chi2 += (o as f64 - e).powi(2) / e;
            bins += 1;
        }
    }
    if small_e > 0.0 {
        chi2 += (small_o - small_e).powi(2) / small_e;
        bins += 1;
    }
    gamma_q((bins as f64 - 1.0) / 2.0, chi2 / 2.0)
}

fn sampler(t: f64, top_k: usize, top_p: f64, min_p: f64) -> Sampler {
    Sampler { temperature: t, top_k, top_p, min_p, greedy: false, adaptive: None }
}

/// Draw DRAWS tokens; check each recorded logprob against `p` and return the counts.
fn draw(backend: Backend, s: &Sampler, z: &[f32], p: &[f64], seed: u64) -> Vec<usize> {
    let mut counts = vec![0usize; z.len()];
    for (t, out) in samples(backend, s, z, DRAWS, seed).into_iter().enumerate() {
        let i = out.token as usize;
        counts[i] += 1;
        if t < 50 {
            assert!((out.logprob as f64 - p[i].ln()).abs() < 1e-5, "{backend:?}: logprob {} vs {}", out.logprob, p[i].ln());
        }
    }
    counts
}

#[test]
fn draws_match_truncated_softmax_for_three_temperatures() {
    let z = logits(64);
    let configs: [(usize, f64, f64); 6] = [(0, 1.0, 0.0), (10, 1.0, 0.0), (0, 0.8, 0.0), (0, 1.0, 0.1), (20, 0.9, 0.02), (0, 0.95, 0.0)];
    for backend in BACKENDS {
        let mut seed = 1;
        for t in [0.5, 1.0, 1.3] {
            for &(k, top_p, min_p) in &configs {
                let p = reference(&z, t, k, top_p, min_p);
                let counts = draw(backend, &sampler(t, k, top_p, min_p), &z, &p, seed);
                seed += 1;
                let pv = chi_square_p(&counts, &p);
                let kept = p.iter().filter(|&&x| x > 0.0).count();
                println!("{backend:?} T={t} top_k={k} top_p={top_p} min_p={min_p}: {kept} tokens kept, chi-square p = {pv:.4}");
                assert!(pv > 0.001, "{backend:?} T={t} top_k={k} top_p={top_p} min_p={min_p}: p = {pv}");
            }
        }
    }
}

#[test]
fn the_test_detects_a_wrong_temperature() {
    // Guard against a chi-square helper that always passes: T = 1.3 draws against T = 1.0.
    let z = logits(64);
    for backend in BACKENDS {
        let counts = draw(backend, &sampler(1.3, 0, 1.0, 0.0), &z, &reference(&z, 1.3, 0, 1.0, 0.0), 99);
        assert!(chi_square_p(&counts, &reference(&z, 1.0, 0, 1.0, 0.0)) < 1e-6, "{backend:?}");
    }
}

#[test]
fn base_logprob_and_entropy_match_f64_on_a_qwen_sized_vocabulary() {
    // 151,936 logits (Qwen's vocabulary), spread like a trained LM's.
    let v = 151_936;
    let z: Vec<f32> = (0..v).map(|i| (8.0 * ((i as f64 * 0.618_033_988_7).fract() - 0.5).powi(3) * 8.0) as f32).collect();
    for backend in BACKENDS {
        for t in [0.5, 1.0, 1.3] {
            let p = softmax(&z, t);
            for out in samples(backend, &sampler(t, 0, 1.0, 0.0), &z, 20, 5) {
                let i = out.token as usize;
                assert!((out.base_logprob as f64 - p[i].ln()).abs() < 1e-4, "{backend:?}: {} vs {}", out.base_logprob, p[i].ln());
                assert!((out.logprob - out.base_logprob).abs() < 1e-5, "{backend:?}: {} vs {}", out.logprob, out.base_logprob);
                assert!((out.entropy as f64 - entropy(&p)).abs() < 1e-4, "{backend:?}: {} vs {}", out.entropy, entropy(&p));
            }
        }
    }
}

#[test]
fn greedy_takes_the_first_argmax() {
    let mut z = logits(64);
    z[40] = 10.0;
    z[50] = 10.0;
    let mut s = sampler(1.0, 0, 1.0, 0.0);
    s.greedy = true;
    for backend in BACKENDS {
        let out = samples(backend, &s, &z, 3, 7)[2];
        assert_eq!(out.token, 40, "{backend:?}");
        assert_eq!(out.logprob, 0.0);
        let p = softmax(&z, 1.0);
        assert!((out.base_logprob as f64 - p[40].ln()).abs() < 1e-5);
    }
}

#[test]
fn adaptive_temperature_samples_at_the_spec_temperature() {
    // Statistics of the spec's worked example (§4.6 item 2), typed in: q = ln 0.8, s = 1.575545,
    // h+ = ln 2 / s, h- = -4 ln 2 / s.
    let s_ = 1.575545;
    let st = EntropyStats { q: 0.8f64.ln(), s: s_, inv_h_pos: s_ / 2f64.ln(), scale_neg: s_ / (4.0 * 2f64.ln()) };
    let tau = 0.1;
    for backend in BACKENDS {
        let mut seen = Vec::new();
        for (scale, t_base) in [(0.3f32, 1.0), (3.0, 0.7), (5.0, 1.0), (8.0, 1.0), (16.0, 1.3)] {
            let z: Vec<f32> = logits(64).iter().map(|x| x * scale).collect();
            // The spec's formula, evaluated here: H of softmax(z / T_base), then h, h~, T.
            let h = entropy(&softmax(&z, t_base));
            let hn = (h.max(1e-6).ln() - st.q) / (st.s + 1e-6);
            let ht = (if hn > 0.0 { hn * st.inv_h_pos } else { hn * st.scale_neg }).clamp(-1.0, 1.0);
            let t_tok = t_base * (1.0 + tau * ht);
            let p = softmax(&z, t_tok);
            let s = Sampler { adaptive: Some((tau, st)), ..sampler(t_base, 0, 1.0, 0.0) };
            let first = samples(backend, &s, &z, 1, 3)[0];
            assert!((first.temperature as f64 - t_tok).abs() < 1e-5, "{backend:?}: T {} vs {t_tok}", first.temperature);
            let counts = draw(backend, &s, &z, &p, 1000 + (scale * 10.0) as u64);
            let pv = chi_square_p(&counts, &p);
            println!("{backend:?} scale {scale}: H = {h:.4}, h~ = {ht:.4}, T = {t_tok:.4}, chi-square p = {pv:.4}");
            assert!(pv > 0.001);
            seen.push(ht);
        }
        // The cases cover the clamp, the high-entropy side and the low-entropy side.
        assert!(seen.contains(&1.0) && seen.iter().any(|&h| h > 0.0 && h < 1.0) && seen.iter().any(|&h| h < 0.0), "{seen:?}");
    }
}

#[test]
fn host_and_device_samplers_draw_the_same_tokens_from_the_same_uniforms() {
    // 256 rows of different logits over a 5,000-token vocabulary; each row draws with the uniform
    // of its own stream, once through the host sampler and once through the device sampler.
    let (n, v) = (256usize, 5000usize);
    let z: Vec<f32> = (0..n * v).map(|i| (4.0 * ((i as f64 * 0.754_877_666).fract() - 0.5) + ((i % v) as f64 * 1e-3).sin()) as f32).collect();
    let seed = RolloutSeed::new(3, 9);
    let keys = Tensor::from_slice(&(0..n).map(|i| seed.row(i as u64, 1).key as i64).collect::<Vec<_>>());
    let logits = Tensor::from_slice(&z).view([n as i64, v as i64]);
    let st = EntropyStats { q: 1.0, s: 1.0, inv_h_pos: 0.5, scale_neg: 0.5 };
    for (k, top_p, min_p, adaptive) in [(0, 1.0, 0.0, false), (40, 1.0, 0.0, false), (0, 0.9, 0.0, false), (50, 0.8, 0.05, true), (0, 1.0, 0.02, true)] {
        let s = Sampler { adaptive: adaptive.then_some((0.1, st)), ..sampler(0.8, k, top_p, min_p) };
        let out = DeviceSampler::new(s).sample(&logits, &uniforms(&keys, 4));
        let tokens: Vec<i64> = Vec::try_from(&out.tokens).unwrap();
        let vals: Vec<f32> = Vec::try_from(out.values.flatten(0, -1)).unwrap();
        let mut scratch = Scratch::default();
        let mut same = 0;
        for r in 0..n {
            let host = s.sample(&z[r * v..(r + 1) * v], seed.row(r as u64, 1).uniform(4), &mut scratch);
            assert!((host.entropy - vals[4 * r + 2]).abs() < 1e-4 && (host.temperature - vals[4 * r + 3]).abs() < 1e-5);
            if host.token == tokens[r] {
                same += 1;
                assert!((host.logprob - vals[4 * r]).abs() < 1e-4 && (host.base_logprob - vals[4 * r + 1]).abs() < 1e-4, "row {r}");
            }
        }
        println!("top_k={k} top_p={top_p} min_p={min_p} adaptive={adaptive}: {same}/{n} identical draws");
        // The two sum probabilities in different orders, so a uniform within ~1e-6 of a CDF step
        // may land on either side; anything more than a rare flip is a real difference.
        assert!(same >= n - 1, "only {same}/{n} draws agree");
    }
}
