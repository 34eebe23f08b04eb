//! Where this process sits in a multi-process run, read from the environment a launcher sets.
//!
//! Precedence (first match wins):
//! 1. torchrun / `rlpo train --nproc-per-node` / by hand: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//!    `LOCAL_WORLD_SIZE` (optional), `MASTER_ADDR`, `MASTER_PORT`;
//! 2. Slurm (`srun`): `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, tasks on this node from
//!    `SLURM_NTASKS_PER_NODE` / `SLURM_TASKS_PER_NODE` + `SLURM_NODEID`, the master address
//!    from `MASTER_ADDR` or else the first host of `SLURM_JOB_NODELIST` (`SLURM_NODELIST`), the
//!    port from `MASTER_PORT` or else `20000 + SLURM_JOB_ID % 20000` (distinct jobs sharing a
//!    node get distinct ports);
//! 3. nothing set (or a world size of 1): a single process.
//!
//! Under torchrun, `TORCHELASTIC_USE_AGENT_STORE=True` says the agent already serves a TCPStore
//! at `MASTER_ADDR:MASTER_PORT`: rank 0 then connects to it instead of hosting one, and keys are
//! scoped by `TORCHELASTIC_RESTART_COUNT` so a restarted attempt never reads the last one's.

use crate::error::{DistError, Result};
use crate::slurm;

/// Which launcher's variables described this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchSource {
    /// No launcher: one process.
    Single,
    /// `RANK`/`WORLD_SIZE` (torchrun, `rlpo train --nproc-per-node`, or set by hand).
    Torchrun,
    /// `SLURM_PROCID`/`SLURM_NTASKS` (srun).
    Slurm,
}

/// This process's place in the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchEnv {
    /// Global rank, `0..world`.
    pub rank: usize,
    /// Number of processes in the run.
    pub world: usize,
    /// Index among the processes on this node (binds the device: `cuda:local_rank`).
    pub local_rank: usize,
    /// Processes on this node (splits the CPU threads).
    pub local_world: usize,
    /// Host of rank 0's TCPStore.
    pub master_addr: String,
    /// Its port.
    pub master_port: u16,
    /// Where the values came from.
    pub source: LaunchSource,
    /// The TCPStore at the master address is served by the launcher (torchrun's agent), not by
    /// rank 0.
    pub external_store: bool,
    /// Launch attempt (torchrun's restart count; 0 otherwise): scopes the store's keys.
    pub attempt: u32,
}

impl LaunchEnv {
    /// One process, no rendezvous.
    pub fn single() -> LaunchEnv {
        LaunchEnv {
            rank: 0,
            world: 1,
            local_rank: 0,
            local_world: 1,
            master_addr: String::new(),
            master_port: 0,
            source: LaunchSource::Single,
            external_store: false,
            attempt: 0,
        }
    }

    /// From the process environment.
    pub fn from_env() -> Result<LaunchEnv> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// From a variable lookup (tests pass a map).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<LaunchEnv> {
        let get = |k: &str| get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let env = if get("RANK").is_some() || get("WORLD_SIZE").is_some() {
            torchrun(&get)?
        } else if get("SLURM_PROCID").is_some() && get("SLURM_NTASKS").is_some() {
            slurm_env(&get)?
        } else {
            return Ok(LaunchEnv::single());
        };
        if env.world == 1 {
            return Ok(LaunchEnv::single());
        }
        env.validate()?;
        Ok(env)
    }

    /// Whether this is a multi-process run.
    pub fn is_distributed(&self) -> bool {
        self.world > 1
    }

    fn validate(&self) -> Result<()> {
        let (src_rank, src_local) = match self.source {
            LaunchSource::Slurm => ("SLURM_PROCID", "SLURM_LOCALID"),
            _ => ("RANK", "LOCAL_RANK"),
        };
        if self.rank >= self.world {
            return Err(env_err(src_rank, format!("{} is not below the world size {}", self.rank, self.world)));
        }
        if self.local_rank >= self.local_world {
            return Err(env_err(src_local, format!("{} is not below the number of processes on this node ({})", self.local_rank, self.local_world)));
        }
        if self.local_world > self.world {
            return Err(env_err("LOCAL_WORLD_SIZE", format!("{} processes on this node but {} in the run", self.local_world, self.world)));
        }
        Ok(())
    }
}

fn env_err(var: &str, msg: impl Into<String>) -> DistError {
    DistError::Env { var: var.to_string(), msg: msg.into() }
}

fn required(get: &impl Fn(&str) -> Option<String>, var: &str, why: &str) -> Result<String> {
    get(var).ok_or_else(|| env_err(var, format!("not set ({why})")))
}

fn number<T: std::str::FromStr>(var: &str, v: &str) -> Result<T> {
    v.parse().map_err(|_| env_err(var, format!("{v:?} is not a valid number")))
}

fn port(var: &str, v: &str) -> Result<u16> {
    match v.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(env_err(var, format!("{v:?} is not a TCP port (1..65535)"))),
    }
}

fn torchrun(get: &impl Fn(&str) -> Option<String>) -> Result<LaunchEnv> {
    let why = "RANK and WORLD_SIZE describe a multi-process run";
    let world: usize = number("WORLD_SIZE", &required(get, "WORLD_SIZE", why)?)?;
    if world == 0 {
        return Err(env_err("WORLD_SIZE", "must be at least 1"));
    }
    let rank: usize = number("RANK", &required(get, "RANK", why)?)?;
    if world == 1 {
        return Ok(LaunchEnv { rank, ..LaunchEnv::single() });
    }
    let local_rank: usize = number("LOCAL_RANK", &required(get, "LOCAL_RANK", "this process's index on its node; torchrun sets it")?)?;
    let local_world = match get("LOCAL_WORLD_SIZE") {
        Some(v) => number("LOCAL_WORLD_SIZE", &v)?,
        // Without it, assume one node: only the CPU thread split depends on it.
        None => world,
    };
    Ok(LaunchEnv {
        rank,
        world,
        local_rank,
        local_world,
        master_addr: required(get, "MASTER_ADDR", "the host of rank 0")?,
        master_port: port("MASTER_PORT", &required(get, "MASTER_PORT", "the rendezvous port on MASTER_ADDR")?)?,
        source: LaunchSource::Torchrun,
        external_store: get("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1"),
        attempt: get("TORCHELASTIC_RESTART_COUNT").map(|v| number("TORCHELASTIC_RESTART_COUNT", &v)).transpose()?.unwrap_or(0),
    })
}

fn slurm_env(get: &impl Fn(&str) -> Option<String>) -> Result<LaunchEnv> {
    let rank: usize = number("SLURM_PROCID", &required(get, "SLURM_PROCID", "srun sets it")?)?;
    let world: usize = number("SLURM_NTASKS", &required(get, "SLURM_NTASKS", "srun sets it")?)?;
    if world <= 1 {
        return Ok(LaunchEnv::single());
    }
    let local_rank: usize = number("SLURM_LOCALID", &required(get, "SLURM_LOCALID", "srun sets it")?)?;
    let local_world = match (get("SLURM_NTASKS_PER_NODE"), get("SLURM_TASKS_PER_NODE")) {
        (Some(v), _) if v.parse::<usize>().is_ok() => number("SLURM_NTASKS_PER_NODE", &v)?,
        (_, Some(v)) => {
            let per_node = slurm::expand_tasks_per_node(&v).map_err(|e| env_err("SLURM_TASKS_PER_NODE", e))?;
            let node: usize = get("SLURM_NODEID").map(|n| number("SLURM_NODEID", &n)).transpose()?.unwrap_or(0);
            *per_node.get(node).ok_or_else(|| env_err("SLURM_NODEID", format!("node {node} but SLURM_TASKS_PER_NODE={v} lists {} node(s)", per_node.len())))?
        }
        _ => world,
    };
    let master_addr = match get("MASTER_ADDR") {
        Some(a) => a,
        None => {
            let (var, list) = match (get("SLURM_JOB_NODELIST"), get("SLURM_NODELIST")) {
                (Some(l), _) => ("SLURM_JOB_NODELIST", l),
                (None, Some(l)) => ("SLURM_NODELIST", l),
                _ => return Err(env_err("SLURM_JOB_NODELIST", "not set, and neither are SLURM_NODELIST and MASTER_ADDR: no host for rank 0")),
            };
            slurm::expand_nodelist(&list).map_err(|e| env_err(var, e))?.swap_remove(0)
        }
    };
    let master_port = match (get("MASTER_PORT"), get("SLURM_JOB_ID")) {
        (Some(p), _) => port("MASTER_PORT", &p)?,
        (None, Some(job)) => 20000 + (number::<u64>("SLURM_JOB_ID", &job)? % 20000) as u16,
        (None, None) => return Err(env_err("MASTER_PORT", "not set, and no SLURM_JOB_ID to derive it from")),
    };
    Ok(LaunchEnv { rank, world, local_rank, local_world, master_addr, master_port, source: LaunchSource::Slurm, external_store: false, attempt: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<LaunchEnv> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        LaunchEnv::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn nothing_set_is_a_single_process() {
        assert_eq!(env(&[]).unwrap(), LaunchEnv::single());
        assert_eq!(env(&[("RANK", "0"), ("WORLD_SIZE", "1")]).unwrap().world, 1);
        assert_eq!(env(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")]).unwrap().world, 1);
    }

    #[test]
    fn torchrun_variables() {
        let e = env(&[("RANK", "3"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "1"), ("LOCAL_WORLD_SIZE", "2"), ("MASTER_ADDR", "h0"), ("MASTER_PORT", "29501")]).unwrap();
        assert_eq!((e.rank, e.world, e.local_rank, e.local_world), (3, 4, 1, 2));
        assert_eq!((e.master_addr.as_str(), e.master_port, e.source), ("h0", 29501, LaunchSource::Torchrun));
        assert!(!e.external_store && e.attempt == 0);
        // torchrun's agent serves the store; a restarted attempt gets its own keys.
        let e = env(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "h0"),
            ("MASTER_PORT", "29501"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ])
        .unwrap();
        assert!(e.external_store && e.attempt == 2);
    }

    #[test]
    fn torchrun_wins_over_slurm() {
        let e = env(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1234"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
        ])
        .unwrap();
        assert_eq!((e.rank, e.world, e.local_world, e.source), (1, 2, 2, LaunchSource::Torchrun));
    }

    #[test]
    fn missing_or_bad_variables_name_themselves() {
        let base = [("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "29500")];
        for drop in ["WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"] {
            let pairs: Vec<_> = base.iter().copied().filter(|(k, _)| *k != drop).collect();
            let e = env(&pairs).unwrap_err().to_string();
            assert!(e.starts_with(drop), "dropping {drop}: {e}");
        }
        let mut bad = base.to_vec();
        bad[0] = ("RANK", "2");
        assert!(env(&bad).unwrap_err().to_string().starts_with("RANK"));
        bad[0] = ("RANK", "x");
        assert!(env(&bad).unwrap_err().to_string().starts_with("RANK"));
        let mut bad = base.to_vec();
        bad[4] = ("MASTER_PORT", "70000");
        assert!(env(&bad).unwrap_err().to_string().starts_with("MASTER_PORT"));
    }

    #[test]
    fn slurm_variables_and_nodelist() {
        let e = env(&[
            ("SLURM_PROCID", "9"),
            ("SLURM_NTASKS", "16"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NODEID", "1"),
            ("SLURM_TASKS_PER_NODE", "8(x2)"),
            ("SLURM_JOB_NODELIST", "gpu[07-08]"),
            ("SLURM_JOB_ID", "123456"),
        ])
        .unwrap();
        assert_eq!((e.rank, e.world, e.local_rank, e.local_world), (9, 16, 1, 8));
        assert_eq!((e.master_addr.as_str(), e.master_port, e.source), ("gpu07", 23456, LaunchSource::Slurm));
        // MASTER_ADDR / MASTER_PORT override; SLURM_NODELIST is the older name.
        let e = env(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_LOCALID", "0"),
            ("SLURM_NTASKS_PER_NODE", "1"),
            ("SLURM_NODELIST", "n[3,5]"),
            ("MASTER_PORT", "4000"),
        ])
        .unwrap();
        assert_eq!((e.master_addr.as_str(), e.master_port, e.local_world), ("n3", 4000, 1));
        let e = env(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2"), ("SLURM_LOCALID", "0"), ("SLURM_JOB_NODELIST", "n[3-"), ("SLURM_JOB_ID", "1")]);
        assert!(e.unwrap_err().to_string().starts_with("SLURM_JOB_NODELIST"));
    }
}
