//! Naming the rank at fault when a collective fails.
//!
//! c10d's errors name a socket address, not a rank, and with every rank on one host they cannot
//! be told apart. So every rank runs a heartbeat: a thread with its own TCPStore connection that
//! increments `heartbeat/<rank>` (under the run's key prefix) every [`PERIOD`]. When a collective fails, the rank reads
//! all counters, waits [`WINDOW`] and reads them again: a rank whose counter did not move is dead
//! (or stopped: SIGSTOP, a hung host). A rank merely blocked in a collective keeps beating (its
//! heartbeat runs on its own thread), so it is not blamed. If the store itself is gone, rank 0,
//! which hosts it (unless torchrun's agent does), is the one that died.
//!
//! The first finding goes on a fault board in the store, so that ranks failing later only
//! because the first ones left report the original cause instead of blaming the leavers.

use crate::ffi::RawStore;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

/// Heartbeat interval.
pub const PERIOD: Duration = Duration::from_millis(500);
/// How long a counter must stand still for its rank to be declared dead (several periods, so a
/// briefly descheduled thread on a loaded machine is not blamed).
pub const WINDOW: Duration = Duration::from_millis(3000);

fn key(rank: usize) -> String {
    format!("heartbeat/{rank}")
}

/// The running heartbeat of this rank; stops when dropped.
pub(crate) struct Heartbeat {
    stop: Option<Sender<()>>,
}

impl Heartbeat {
    /// Beat once now (so the counter exists before the first collective), then every PERIOD on
    /// a thread owning `store` (a client of its own). The thread ends on drop, or quietly when
    /// the store goes away (rank 0 exiting at the end of a run).
    pub(crate) fn start(store: RawStore, rank: usize) -> Result<Heartbeat, String> {
        store.add(&key(rank), 1)?;
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name(format!("rlpo-heartbeat-{rank}"))
            .spawn(move || loop {
                match rx.recv_timeout(PERIOD) {
                    Err(RecvTimeoutError::Timeout) => {
                        if store.add(&key(rank), 1).is_err() {
                            return;
                        }
                    }
                    _ => return,
                }
            })
            .map_err(|e| format!("cannot start the heartbeat thread: {e}"))?;
        Ok(Heartbeat { stop: Some(tx) })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        // Not joined: a beat in flight against a vanished store may take a while to fail, and
        // nothing waits for the thread.
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// What the heartbeats say after a failed collective.
pub(crate) struct Diagnosis {
    /// Ranks whose heartbeat stopped (or rank 0 when its store is unreachable).
    pub dead: Vec<usize>,
    /// A sentence for the error message.
    pub text: String,
}

const BOARD_COUNT: &str = "fault/count";
const BOARD_TEXT: &str = "fault/text";
/// Incremented by every rank that has read its diagnosis (rank 0 keeps its store up until then).
pub(crate) const SEEN: &str = "fault/seen";

/// Put a finding on the run's fault board (the first one wins): later failures, caused by ranks
/// leaving because of this one, then report the first cause instead of blaming the leavers.
pub(crate) fn publish(store: &RawStore, dead: &[usize], text: &str) {
    if let Ok(1) = store.add(BOARD_COUNT, 1) {
        let csv = dead.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(",");
        let _ = store.set(BOARD_TEXT, format!("{csv}\n{text}").as_bytes());
    }
}

fn read_board(store: &RawStore) -> Result<Option<Diagnosis>, String> {
    let Some(bytes) = store.try_get(BOARD_TEXT)? else { return Ok(None) };
    let s = String::from_utf8_lossy(&bytes);
    let (csv, text) = s.split_once('\n').unwrap_or(("", &s));
    let dead = csv.split(',').filter_map(|r| r.parse().ok()).collect();
    Ok(Some(Diagnosis { dead, text: text.to_string() }))
}

/// Find the rank(s) at fault after a failed collective, using `store` (this rank's main
/// client): the fault board if another rank already reported, else the heartbeats.
/// `rank0_hosts`: whether rank 0 serves the store (else the launcher does).
pub(crate) fn diagnose(store: &RawStore, rank: usize, world: usize, store_addr: &str, rank0_hosts: bool) -> Diagnosis {
    let store_lost = |e: String| match (rank0_hosts, rank) {
        (true, 0) => Diagnosis { dead: vec![], text: format!("this rank's own TCPStore stopped answering ({e})") },
        (true, _) => Diagnosis { dead: vec![0], text: format!("rank 0 is gone: its TCPStore at {store_addr} does not answer ({e})") },
        (false, _) => Diagnosis { dead: vec![], text: format!("the launcher's TCPStore at {store_addr} does not answer: the launcher is gone ({e})") },
    };
    let read = || -> Result<Vec<i64>, String> { (0..world).map(|r| store.add(&key(r), 0)).collect() };
    let before = match read_board(store).and_then(|b| Ok((b, read()?))) {
        Ok((Some(board), _)) => return board,
        Ok((None, counts)) => counts,
        Err(e) => return store_lost(e),
    };
    std::thread::sleep(WINDOW);
    // A rank that found the cause meanwhile wins: the ranks it made leave are not the cause.
    let after = match read_board(store).and_then(|b| Ok((b, read()?))) {
        Ok((Some(board), _)) => return board,
        Ok((None, counts)) => counts,
        Err(e) => return store_lost(e),
    };
    let dead: Vec<usize> = (0..world).filter(|&r| r != rank && before[r] == after[r]).collect();
    let secs = WINDOW.as_secs_f64();
    let text = match dead.as_slice() {
        [] => return Diagnosis { dead, text: "every other rank is alive (heartbeats moving): a peer failed on its side, or the ranks issued different collectives".into() },
        [r] => format!("rank {r} stopped responding (no heartbeat for {secs:.0} s: dead or hung; found by rank {rank})"),
        rs => format!(
            "ranks {} stopped responding (no heartbeat for {secs:.0} s: dead or hung; found by rank {rank})",
            rs.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
        ),
    };
    publish(store, &dead, &text);
    Diagnosis { dead, text }
}
