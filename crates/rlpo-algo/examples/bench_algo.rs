//! Micro-benchmark of the per-step algorithm math on CPU: advantages + selection + loss for
//! B = 64 prompts, G = 16 rollouts, T = 2048 positions (N = 1024 rows, 2M token slots) with
//! random inputs. The vocabulary is not involved: entropies are given.
//!
//!     CARGO_TARGET_DIR=target/algo cargo run --release -p rlpo-algo --example bench_algo
//!
//! Prints the minimum over `ITERS` runs (after one warm-up) of: advantages alone, D³S selection
//! alone, the whole step plan (advantages + HAPO statistics + selection + h̃/clip widths), and
//! the policy loss forward + backward over the whole batch as one micro-batch; the last timing
//! column also gives the median of plan + loss.

use std::time::Instant;

use rlpo_algo::compose::compute_advantages;
use rlpo_algo::config::{AdvantageKind, BaseLoss, D3sConfig, HapoConfig};
use rlpo_algo::d3s::{select_rows, select_tokens};
use rlpo_algo::{
    compute_step_plan, policy_loss, AlgoState, AlgorithmConfig, LossConfig, PolicyInputs,
    StepInputs,
};
use tch::{Device, Kind, Tensor};

const B: i64 = 64;
const G: i64 = 16;
const T: i64 = 2048;
const ITERS: usize = 9;

struct Inputs {
    rewards: Tensor,
    mask: Tensor,
    entropy: Tensor,
    old: Tensor,
    logp: Tensor,
    reference: Tensor,
}

fn inputs() -> Inputs {
    tch::manual_seed(0);
    let n = B * G;
    let f = (Kind::Float, Device::Cpu);
    let rewards =
        Tensor::randint(2, [n], (Kind::Int64, Device::Cpu)).to_kind(Kind::Float) * 2.0 - 1.0;
    let lens = Tensor::randint(T, [n, 1], (Kind::Int64, Device::Cpu)) + 1;
    let mask = Tensor::arange(T, (Kind::Int64, Device::Cpu))
        .unsqueeze(0)
        .lt_tensor(&lens)
        .to_kind(Kind::Float);
    let entropy = Tensor::rand([n, T], f) * 3.0;
    let old = -(Tensor::rand([n, T], f) * 4.0);
    let logp = &old + Tensor::randn([n, T], f) * 0.1;
    let reference = &old + Tensor::randn([n, T], f) * 0.1;
    Inputs {
        rewards,
        mask,
        entropy,
        old,
        logp,
        reference,
    }
}

/// (min, median) wall time in ms over `ITERS` runs after one warm-up. The minimum is the
/// least disturbed by other processes on a shared machine.
fn time_ms(mut f: impl FnMut()) -> (f64, f64) {
    f(); // warm-up
    let mut v: Vec<f64> = (0..ITERS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    (v[0], v[ITERS / 2])
}

fn run(name: &str, alg: &AlgorithmConfig, loss: &LossConfig, x: &Inputs) {
    let state = AlgoState {
        step: 50,
        ..AlgoState::new(100)
    };
    let step_inputs = StepInputs {
        rewards: &x.rewards,
        response_mask: &x.mask,
        group_size: G,
        entropy: Some(&x.entropy),
        truncated: None,
    };
    let lengths = x.mask.sum_dim_intlist(-1, false, Kind::Float);
    let adv_ms = time_ms(|| {
        let _ = compute_advantages(alg, &x.rewards, &lengths, G).unwrap();
    });
    let (adv, _) = compute_advantages(alg, &x.rewards, &lengths, G).unwrap();
    let sel_ms = match &alg.d3s {
        Some(d) => {
            let tg = state.d3s_targets(d, G as usize);
            time_ms(|| {
                let rows =
                    select_rows(&adv, G, d.level, tg.samples_per_group, None, false).unwrap();
                let m = &x.mask * rows.to_kind(Kind::Float).unsqueeze(-1);
                let _ = select_tokens(&adv, &x.entropy, &m, tg.token_keep).unwrap();
            })
        }
        None => (0.0, 0.0),
    };
    let plan_ms = time_ms(|| {
        let _ = compute_step_plan(alg, loss, &state, &step_inputs).unwrap();
    });
    let plan = compute_step_plan(alg, loss, &state, &step_inputs).unwrap();
    let n = plan.rows();
    let norm = plan.normaliser(0, n);
    let mb = plan.micro_batch(0, n);
    let loss_ms = time_ms(|| {
        let leaf = x.logp.copy().set_requires_grad(true);
        let pi = PolicyInputs {
            logp: &leaf,
            old_logp: &x.old,
            ref_logp: Some(&x.reference),
            entropy: None,
        };
        let out = policy_loss(alg, loss, &mb, &pi, &norm).unwrap();
        out.loss.backward();
        let _ = leaf.grad().sum(Kind::Float).double_value(&[]);
    });
    let s = plan.summary();
    println!(
        "| {name:<34} | {:>6.1} | {:>6.1} | {:>6.1} | {:>6.1} | {:>6.1} ({:.1}) | {:>5.1} % |",
        adv_ms.0,
        sel_ms.0,
        plan_ms.0,
        loss_ms.0,
        plan_ms.0 + loss_ms.0,
        plan_ms.1 + loss_ms.1,
        100.0 * s.kept_tokens / s.valid_tokens
    );
}

fn main() {
    let x = inputs();
    println!(
        "rlpo-algo bench: B = {B}, G = {G}, T = {T} (N = {} rows, {:.0} valid tokens), CPU threads = {}, ms, min of {ITERS} runs",
        B * G,
        x.mask.sum(Kind::Double).double_value(&[]),
        tch::get_num_threads()
    );
    println!("| configuration | advantages | D3S selection | plan | loss fwd+bwd | step = plan + loss (median) | kept tokens |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let grpo = AlgorithmConfig::default();
    let tok = LossConfig::default();
    run("GRPO, token-mean", &grpo, &tok, &x);
    let dapo_loss = LossConfig {
        clip_high: Some(0.28),
        ..Default::default()
    };
    let kl = LossConfig {
        kl_coef: 0.04,
        ..Default::default()
    };
    run("GRPO + k3 KL", &grpo, &kl, &x);
    let d3s = AlgorithmConfig {
        d3s: Some(D3sConfig::default()),
        ..Default::default()
    };
    run("D3S cross-group (GRPO base)", &d3s, &dapo_loss, &x);
    let gspo = LossConfig {
        base: BaseLoss::GspoToken,
        ..Default::default()
    };
    run("D3S cross-group (GSPO-token base)", &d3s, &gspo, &x);
    let hapo = AlgorithmConfig {
        advantage: AdvantageKind::Hapo,
        hapo: Some(HapoConfig::default()),
        ..Default::default()
    };
    let hapo_loss = LossConfig {
        dual_clip: 10.0,
        clip_high: Some(0.28),
        ..Default::default()
    };
    run("HAPO (step stats)", &hapo, &hapo_loss, &x);
    let all = AlgorithmConfig {
        d3s: Some(D3sConfig::default()),
        ..hapo.clone()
    };
    run("HAPO + D3S", &all, &hapo_loss, &x);
}
