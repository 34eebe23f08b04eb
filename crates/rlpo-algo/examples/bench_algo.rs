//! Micro-benchmark of the per-step algorithm math on CPU: advantages + selection + loss for
//! B = 64 prompts, G = 16 rollouts, T = 2048 positions (N = 1024 rows, 2M token slots) with
//! random inputs. The vocabulary is not involved: entropies are given.
//!
//!     CARGO_TARGET_DIR=target/algo cargo run --release -p rlpo-algo --example bench_algo
//!     RLPO_BENCH_THREADS=1 CARGO_TARGET_DIR=target/algo cargo run --release -p rlpo-algo --example bench_algo
//!
//! Prints, in ms, the minimum wall time over `ITERS` runs (after one warm-up) of: advantages
//! alone, D³S selection alone, the whole step plan (advantages + HAPO statistics + selection +
//! h̃/clip widths), and the policy loss forward + backward over the whole batch as one
//! micro-batch; then plan + loss (minimum, and median in parentheses) and the CPU time of all
//! threads for plan + loss (robust to other processes on a shared machine).

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
    let mut rng = rlpo_algo::seeded::SplitMix(0);
    let n = B * G;
    let f = (Kind::Float, Device::Cpu);
    let rewards =
        rng.randint(2, [n], (Kind::Int64, Device::Cpu)).to_kind(Kind::Float) * 2.0 - 1.0;
    let lens = rng.randint(T, [n, 1], (Kind::Int64, Device::Cpu)) + 1;
    let mask = Tensor::arange(T, (Kind::Int64, Device::Cpu))
        .unsqueeze(0)
        .lt_tensor(&lens)
        .to_kind(Kind::Float);
    let entropy = rng.rand([n, T], f) * 3.0;
    let old = -(rng.rand([n, T], f) * 4.0);
    let logp = &old + rng.randn([n, T], f) * 0.1;
    let reference = &old + rng.randn([n, T], f) * 0.1;
    Inputs {
        rewards,
        mask,
        entropy,
        old,
        logp,
        reference,
    }
}

/// CPU time of all threads of this process in ns (Linux `schedstat`; 0 elsewhere). Unlike
/// wall time it barely moves when other processes compete for the cores.
fn cpu_ns() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Timings of one piece in ms over `ITERS` runs after one warm-up: minimum and median wall
/// time (the minimum is the least disturbed on a shared machine) and minimum CPU time.
#[derive(Clone, Copy, Default)]
struct Timing {
    min: f64,
    median: f64,
    cpu: f64,
}

fn time_ms(mut f: impl FnMut()) -> Timing {
    f(); // warm-up
    let mut wall = Vec::with_capacity(ITERS);
    let mut cpu = Vec::with_capacity(ITERS);
    for _ in 0..ITERS {
        let (t, c) = (Instant::now(), cpu_ns());
        f();
        wall.push(t.elapsed().as_secs_f64() * 1e3);
        cpu.push((cpu_ns() - c) as f64 / 1e6);
    }
    wall.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    Timing {
        min: wall[0],
        median: wall[ITERS / 2],
        cpu: cpu[0],
    }
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
        old_logp: None,
        rollout_logp: None,
    };
    let lengths = x.mask.sum_dim_intlist(-1, false, Kind::Float);
    let adv_ms = time_ms(|| {
        let _ = compute_advantages(alg, &x.rewards, &lengths, G, T).unwrap();
    });
    let (adv, _) = compute_advantages(alg, &x.rewards, &lengths, G, T).unwrap();
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
        None => Timing::default(),
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
        "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | **{:.1}** ({:.1}) | {:.1} | {:.1} % |",
        adv_ms.min,
        sel_ms.min,
        plan_ms.min,
        loss_ms.min,
        plan_ms.min + loss_ms.min,
        plan_ms.median + loss_ms.median,
        plan_ms.cpu + loss_ms.cpu,
        100.0 * s.kept_tokens / s.valid_tokens
    );
}

fn main() {
    // `RLPO_BENCH_THREADS=1` gives single-threaded numbers, whose CPU time is the most stable
    // measure on a machine shared with other jobs (no OpenMP spin-waiting).
    if let Some(n) = std::env::var("RLPO_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        tch::set_num_threads(n);
    }
    let x = inputs();
    println!(
        "rlpo-algo bench: B = {B}, G = {G}, T = {T} (N = {} rows, {:.0} valid tokens), torch threads = {}, ms, {ITERS} runs",
        B * G,
        x.mask.sum(Kind::Double).double_value(&[]),
        tch::get_num_threads()
    );
    println!(
        "| configuration | advantages | D3S selection | plan | loss fwd+bwd | plan + loss (median) | CPU time of plan + loss | kept tokens |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
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
        dual_clip: Some(10.0),
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
