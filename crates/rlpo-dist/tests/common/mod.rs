//! Run a test body as several ranks: the test re-executes its own binary once per rank (the
//! same test, `--exact`), with the launcher variables set, and collects the children's output.
#![allow(dead_code)]

use rlpo_dist::{Comm, CommOptions, LaunchEnv};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CHILD: &str = "RLPO_DIST_TEST_CHILD";

/// In a child: this rank's communicator (timeout `RLPO_DIST_TEST_TIMEOUT_MS`); in the parent: None.
pub fn as_rank() -> Option<(LaunchEnv, Comm)> {
    as_rank_on(false)
}

/// [`as_rank`], with an NCCL group on `cuda:LOCAL_RANK` when `cuda`.
pub fn as_rank_on(cuda: bool) -> Option<(LaunchEnv, Comm)> {
    std::env::var_os(CHILD)?;
    let mut env = LaunchEnv::from_env().expect("launcher variables");
    if env.world == 1 {
        // A group of one (the NCCL check on a single GPU): from_env treats it as no launch.
        env.master_addr = std::env::var("MASTER_ADDR").unwrap();
        env.master_port = std::env::var("MASTER_PORT").unwrap().parse().unwrap();
    }
    let ms: u64 = std::env::var("RLPO_DIST_TEST_TIMEOUT_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(30_000);
    let opts = CommOptions { timeout: Duration::from_millis(ms), cuda_device: cuda.then_some(env.local_rank) };
    let comm = Comm::init(&env, &opts).expect("init");
    Some((env, comm))
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One line of a child's output.
pub struct Line {
    pub rank: usize,
    pub at: Instant,
    pub text: String,
}

/// The running ranks of one test.
pub struct Ranks {
    pub children: Vec<Child>,
    pub lines: mpsc::Receiver<Line>,
    pub seen: Vec<Line>,
}

/// Start `world` ranks of test `name` (extra environment: `env`).
pub fn spawn(name: &str, world: usize, env: &[(&str, String)]) -> Ranks {
    let port = free_port().to_string();
    let (tx, rx) = mpsc::channel();
    let children = (0..world)
        .map(|r| {
            let mut cmd = Command::new(std::env::current_exe().unwrap());
            cmd.args([name, "--exact", "--nocapture", "--test-threads", "1"])
                .env(CHILD, "1")
                .env("RANK", r.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("LOCAL_RANK", r.to_string())
                .env("LOCAL_WORLD_SIZE", world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().unwrap();
            for pipe in [Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>, Box::new(child.stderr.take().unwrap())] {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for text in BufReader::new(pipe).lines().map_while(|l| l.ok()) {
                        let _ = tx.send(Line { rank: r, at: Instant::now(), text });
                    }
                });
            }
            child
        })
        .collect();
    Ranks { children, lines: rx, seen: Vec::new() }
}

impl Ranks {
    /// Wait for a line of `rank` containing `pat` (panics after `limit`).
    pub fn wait_line(&mut self, rank: usize, pat: &str, limit: Duration) -> Instant {
        let end = Instant::now() + limit;
        if let Some(l) = self.seen.iter().find(|l| l.rank == rank && l.text.contains(pat)) {
            return l.at;
        }
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.rank == rank && l.text.contains(pat);
                    let at = l.at;
                    self.seen.push(l);
                    if hit {
                        return at;
                    }
                }
                Err(_) => {
                    self.kill_all();
                    panic!("no line {pat:?} from rank {rank} within {limit:?}; output so far:\n{}", self.transcript());
                }
            }
        }
    }

    /// Wait for every child (killing all of them after `limit`); exit codes in rank order
    /// (None: killed by a signal).
    pub fn wait_all(&mut self, limit: Duration) -> Vec<Option<i32>> {
        let end = Instant::now() + limit;
        let mut codes = vec![None; self.children.len()];
        let mut done = vec![false; self.children.len()];
        while done.iter().any(|d| !d) {
            for (i, c) in self.children.iter_mut().enumerate() {
                if !done[i] {
                    if let Some(st) = c.try_wait().unwrap() {
                        codes[i] = st.code();
                        done[i] = true;
                    }
                }
            }
            if Instant::now() > end {
                self.kill_all();
                self.drain();
                panic!("ranks still running after {limit:?} (a hang); output:\n{}", self.transcript());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.drain();
        codes
    }

    pub fn kill_all(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn drain(&mut self) {
        std::thread::sleep(Duration::from_millis(50));
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }

    /// Everything the children printed, prefixed by rank.
    pub fn transcript(&self) -> String {
        self.seen.iter().map(|l| format!("[rank {}] {}\n", l.rank, l.text)).collect()
    }

    /// Lines of `rank`.
    pub fn of(&self, rank: usize) -> Vec<&str> {
        self.seen.iter().filter(|l| l.rank == rank).map(|l| l.text.as_str()).collect()
    }
}
