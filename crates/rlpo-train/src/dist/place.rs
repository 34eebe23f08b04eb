//! Where a rank runs: its devices and CPU threads, from its local rank.
//!
//! - CUDA: a recipe names the devices of *one* rank (`model.device = "cuda"`, maybe
//!   `model.rollout_device = "cuda:1"`); with `D` = the highest CUDA index it names + 1, local
//!   rank `k` uses `cuda:(k·D + i)` for each `cuda:i`. One device per rank gives `cuda:k`; a
//!   learner on `cuda:0` and a rollout on `cuda:1` give rank `k` the pair `cuda:2k`, `cuda:2k+1`.
//!   The recipe as written is what the run directory records; only the devices the rank opens
//!   change. When the launcher already gave each rank its own GPUs (`CUDA_VISIBLE_DEVICES`
//!   listing exactly `D` devices, as Slurm's `--gpus-per-task` does), the indices stay as written.
//! - CPU: with `run.threads = 0` (all cores) each of the `L` local ranks gets `cores / L`
//!   LibTorch intra-op threads and as many rayon threads (the host decode kernels), so the ranks
//!   of one node do not oversubscribe it; an explicit `run.threads` is taken per rank as given.

use crate::error::{invalid, Result};
use crate::recipe::Recipe;
use rlpo_dist::LaunchEnv;

/// `recipe` with this rank's devices (unchanged for a single process).
pub fn place(recipe: &Recipe, env: &LaunchEnv) -> Result<Recipe> {
    let visible = tch::Cuda::device_count().max(0) as usize;
    let isolated = std::env::var("CUDA_VISIBLE_DEVICES").ok().map(|v| v.split(',').filter(|d| !d.trim().is_empty()).count());
    place_on(recipe, env, visible, isolated)
}

/// [`place`] for `visible` CUDA devices, of which `isolated` are listed in
/// `CUDA_VISIBLE_DEVICES` (None: unset).
pub fn place_on(recipe: &Recipe, env: &LaunchEnv, visible: usize, isolated: Option<usize>) -> Result<Recipe> {
    let mut r = recipe.clone();
    if !env.is_distributed() {
        return Ok(r);
    }
    let idx = |key: &str, s: &str| -> Result<Option<usize>> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cuda" => Ok(Some(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map(Some).map_err(|_| invalid(key, format!("{s:?} is not cpu, cuda or cuda:N"))),
                None => Ok(None),
            },
        }
    };
    let learner = idx("model.device", &recipe.model.device)?;
    let rollout = match &recipe.model.rollout_device {
        Some(d) => idx("model.rollout_device", d)?,
        None => None,
    };
    let per_rank = learner.into_iter().chain(rollout).max().map_or(0, |m| m + 1);
    if per_rank == 0 || isolated == Some(per_rank) {
        return Ok(r);
    }
    let shift = |key: &str, i: usize| -> Result<String> {
        let n = env.local_rank * per_rank + i;
        if n >= visible {
            return Err(invalid(
                key,
                format!(
                    "local rank {} of {} needs cuda:{n} ({per_rank} device(s) per rank) but {visible} CUDA device(s) are visible",
                    env.local_rank, env.local_world
                ),
            ));
        }
        Ok(format!("cuda:{n}"))
    };
    if let Some(i) = learner {
        r.model.device = shift("model.device", i)?;
    }
    if let Some(i) = rollout {
        r.model.rollout_device = Some(shift("model.rollout_device", i)?);
    }
    Ok(r)
}

/// The learner's CUDA index after [`place`] (the device of the rank's NCCL group), if any.
pub fn cuda_index(placed: &Recipe) -> Option<usize> {
    placed.model.device.trim().to_ascii_lowercase().strip_prefix("cuda:").and_then(|n| n.parse().ok())
}

/// Threads per rank for `run.threads` (0 = all cores) with `local_world` ranks on this node;
/// None = leave LibTorch's default (a single process using every core).
pub fn threads_per_rank(run_threads: usize, local_world: usize, cores: usize) -> Option<usize> {
    match (run_threads, local_world) {
        (0, 0 | 1) => None,
        (0, l) => Some((cores / l).max(1)),
        (n, _) => Some(n),
    }
}

/// Apply [`threads_per_rank`] to LibTorch's intra-op pool and rayon's global pool (the latter
/// only when several ranks share the node and rayon has not started yet).
pub fn bind_threads(run_threads: usize, env: &LaunchEnv) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let Some(n) = threads_per_rank(run_threads, env.local_world, cores) else { return };
    tch::set_num_threads(n as i32);
    if env.local_world > 1 {
        // Err when the pool already exists (a library user built it): theirs stands.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(sets: &[&str]) -> Recipe {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Recipe::load(None, &sets).unwrap()
    }

    fn env(local_rank: usize, local_world: usize) -> LaunchEnv {
        LaunchEnv { rank: local_rank, world: local_world, local_rank, local_world, master_addr: "h".into(), master_port: 1, source: rlpo_dist::LaunchSource::Torchrun, external_store: false, attempt: 0 }
    }

    #[test]
    fn a_single_process_and_cpu_ranks_keep_their_devices() {
        let r = recipe(&["model.device=cuda:1"]);
        assert_eq!(place(&r, &LaunchEnv::single()).unwrap(), r);
        let r = recipe(&["model.device=cpu"]);
        assert_eq!(place(&r, &env(1, 2)).unwrap().model.device, "cpu");
    }

    #[test]
    fn cuda_ranks_are_shifted_by_their_local_rank() {
        let r = recipe(&["model.device=cuda"]);
        assert_eq!(place_on(&r, &env(3, 8), 8, None).unwrap().model.device, "cuda:3");
        let r = recipe(&["model.device=cuda:0", "model.rollout_device=cuda:1"]);
        let p = place_on(&r, &env(3, 4), 8, None).unwrap();
        assert_eq!((p.model.device.as_str(), p.model.rollout_device.as_deref()), ("cuda:6", Some("cuda:7")));
        // Each rank already sees only its own devices (Slurm --gpus-per-task): indices as written.
        let p = place_on(&r, &env(3, 4), 2, Some(2)).unwrap();
        assert_eq!((p.model.device.as_str(), p.model.rollout_device.as_deref()), ("cuda:0", Some("cuda:1")));
        // A CPU rollout beside a CUDA learner keeps its CPU.
        let r = recipe(&["model.device=cuda", "model.rollout_device=cpu"]);
        let p = place_on(&r, &env(1, 2), 2, None).unwrap();
        assert_eq!((p.model.device.as_str(), p.model.rollout_device.as_deref()), ("cuda:1", Some("cpu")));
    }

    #[test]
    fn too_few_devices_or_a_bad_name_is_an_error_naming_the_key() {
        let e = place_on(&recipe(&["model.device=cuda"]), &env(1, 2), 1, None).unwrap_err().to_string();
        assert!(e.contains("model.device") && e.contains("local rank 1 of 2 needs cuda:1") && e.contains("1 CUDA device(s) are visible"), "{e}");
        let r = recipe(&["model.device=cuda:0", "model.rollout_device=cuda:1"]);
        let e = place_on(&r, &env(1, 2), 3, None).unwrap_err().to_string();
        assert!(e.contains("model.rollout_device") && e.contains("needs cuda:3 (2 device(s) per rank)"), "{e}");
        let e = place_on(&recipe(&["model.device=cuda:x"]), &env(0, 2), 8, None).unwrap_err().to_string();
        assert!(e.contains("model.device"), "{e}");
    }

    #[test]
    fn threads_split_across_local_ranks() {
        assert_eq!(threads_per_rank(0, 1, 16), None);
        assert_eq!(threads_per_rank(0, 8, 16), Some(2));
        assert_eq!(threads_per_rank(0, 3, 2), Some(1));
        assert_eq!(threads_per_rank(4, 8, 16), Some(4));
    }
}
