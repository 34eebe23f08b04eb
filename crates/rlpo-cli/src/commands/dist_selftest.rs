//! `rlpo debug dist-selftest [--nproc-per-node N]`: every operation of the training step's
//! distributed seam (`rlpo_train::dist::Dist`) across real processes, each result checked
//! against a value computed here from the rank numbers alone. Run under a launcher (its own
//! `--nproc-per-node`, torchrun, srun); prints `dist-selftest rank R of W: ok ...` per rank.
//!
//! `--cuda`: the gradient buckets live on `cuda:LOCAL_RANK` and go through NCCL (a build with
//! the `nccl` feature; scripts/gpu_check.sh runs this); host values keep going through Gloo.
//!
//! For the fault tests, `--park-rank R` makes rank R stop taking part after the checks (it
//! sleeps; the test kills or stops it) while the others enter one more all-reduce, which must
//! fail with an error naming rank R.

use anyhow::{bail, ensure, Context, Result};
use rlpo_dist::LaunchEnv;
use rlpo_train::dist::{Dist, GradReduce};
use std::time::Duration;
use tch::{Device, Kind, Tensor};

/// Arguments of `rlpo debug dist-selftest`.
#[derive(clap::Args)]
pub struct Args {
    /// Start N local ranks of this command (the launcher of `rlpo train --nproc-per-node`).
    #[arg(long, value_name = "N")]
    nproc_per_node: Option<usize>,
    /// After the checks, rank R sleeps instead of joining the last all-reduce.
    #[arg(long, value_name = "R")]
    park_rank: Option<usize>,
    /// Gradients on cuda:LOCAL_RANK, reduced through NCCL.
    #[arg(long)]
    cuda: bool,
}

/// Dispatch: launch, or be one rank.
pub fn run(a: Args) -> Result<()> {
    if let Some(n) = a.nproc_per_node {
        let code = crate::launch::launch(n)?;
        if code != 0 {
            std::process::exit(code);
        }
        return Ok(());
    }
    let env = LaunchEnv::from_env()?;
    ensure!(env.is_distributed(), "dist-selftest needs several ranks: run it with --nproc-per-node N, torchrun or srun");
    let device = if a.cuda { Device::Cuda(env.local_rank) } else { Device::Cpu };
    let dist = Dist::connect(env.clone(), a.cuda.then_some(env.local_rank))?;
    let (r, w) = (dist.rank(), dist.world());
    checks(&dist, device).with_context(|| format!("dist-selftest rank {r} of {w}"))?;
    let s = dist.stats();
    println!("dist-selftest rank {r} of {w}: ok ({} collectives, {} bytes, {:.3} s in collectives)", s.calls, s.bytes, s.seconds);
    if let Some(p) = a.park_rank {
        if p == r {
            eprintln!("rank {r} parked (pid {})", std::process::id());
            std::thread::sleep(Duration::from_secs(600));
            return Ok(());
        }
        eprintln!("rank {r}: entering an all-reduce without rank {p}");
        let mut v = [1.0];
        dist.sum_f64("probe with a parked rank", &mut v)?;
        bail!("the all-reduce completed without rank {p}");
    }
    Ok(())
}

fn checks(d: &Dist, device: Device) -> Result<()> {
    let (r, w) = (d.rank() as f64, d.world() as f64);
    let ranks: Vec<f64> = (0..d.world()).map(|i| i as f64).collect();
    // sums and maxima of f64 slices
    let mut v = [r + 1.0, -r, 0.25];
    d.sum_f64("sum check", &mut v)?;
    ensure!(v == [ranks.iter().map(|i| i + 1.0).sum(), -ranks.iter().sum::<f64>(), 0.25 * w], "sum_f64 gave {v:?}");
    let mut v = [r, -r, 3.0];
    d.max_f64("max check", &mut v)?;
    ensure!(v == [w - 1.0, 0.0, 3.0], "max_f64 gave {v:?}");
    d.sum_f64("empty", &mut [])?;
    // variable-length gathers: rank i sends i + 1 values i*10 + j (rank 1 sends none in f64)
    let mine: Vec<f32> = (0..=d.rank()).map(|j| (d.rank() * 10 + j) as f32).collect();
    let all = d.all_gather_f32("varlen f32", &mine)?;
    for (i, got) in all.iter().enumerate() {
        let want: Vec<f32> = (0..=i).map(|j| (i * 10 + j) as f32).collect();
        ensure!(*got == want, "all_gather_f32: rank {i}'s part is {got:?}, expected {want:?}");
    }
    let mine: Vec<f64> = if d.rank() == 1 { vec![] } else { vec![r + 0.5; 3] };
    let all = d.all_gather_f64("varlen f64", &mine)?;
    for (i, got) in all.iter().enumerate() {
        let want: Vec<f64> = if i == 1 { vec![] } else { vec![i as f64 + 0.5; 3] };
        ensure!(*got == want, "all_gather_f64: rank {i}'s part is {got:?}, expected {want:?}");
    }
    // broadcasts from the last rank
    let root = d.world() - 1;
    let mut bytes = if d.rank() == root { format!("decision of rank {root}").into_bytes() } else { b"stale".to_vec() };
    d.broadcast_bytes("decision", &mut bytes, root)?;
    ensure!(bytes == format!("decision of rank {root}").into_bytes(), "broadcast_bytes gave {:?}", String::from_utf8_lossy(&bytes));
    let mut t = Tensor::from_slice(&[r as f32, 2.0 * r as f32]).reshape([1, 2]);
    d.broadcast_tensor("tensor", &mut t, root)?;
    ensure!(Vec::<f32>::try_from(&t.reshape([-1]))? == [root as f32, 2.0 * root as f32], "broadcast_tensor gave {t:?}");
    // gradients in buckets: several shapes and dtypes, one non-contiguous, small buckets
    for (mode, bucket) in [(GradReduce::Sum, 64usize), (GradReduce::Mean, 1 << 20)] {
        let grads: Vec<Tensor> = grads(r).iter().map(|g| g.to_device(device)).collect();
        d.all_reduce_grads(&grads, bucket, mode)?;
        let mut want = grads_sum(&ranks);
        if mode == GradReduce::Mean {
            want.iter_mut().for_each(|t| *t = &*t / w);
        }
        for (i, (g, e)) in grads.iter().zip(&want).enumerate() {
            ensure!(g.device() == device, "gradient {i} moved to {:?}", g.device());
            let diff = (g.to_device(Device::Cpu).to_kind(Kind::Double) - e.to_kind(Kind::Double)).abs().max().double_value(&[]);
            ensure!(diff < 1e-6, "all_reduce_grads {mode:?}: gradient {i} off by {diff}");
        }
    }
    d.barrier("end of checks")?;
    Ok(())
}

/// Rank r's "gradients": values depending on r only, in a few dtypes and layouts.
fn grads(r: f64) -> Vec<Tensor> {
    let o = (Kind::Float, Device::Cpu);
    vec![
        Tensor::arange(7, o) * (r + 1.0),
        Tensor::ones([3, 4], o) * r,
        (Tensor::arange(6, (Kind::Double, Device::Cpu)).reshape([2, 3]) - r).transpose(0, 1),
        Tensor::full([40], r * 0.5 + 1.0, o),
        Tensor::arange(5, o) - r,
    ]
}

/// Σ over ranks of [`grads`], computed locally.
fn grads_sum(ranks: &[f64]) -> Vec<Tensor> {
    let mut acc = grads(ranks[0]);
    for &r in &ranks[1..] {
        for (a, g) in acc.iter_mut().zip(grads(r)) {
            *a = &*a + g;
        }
    }
    acc
}
