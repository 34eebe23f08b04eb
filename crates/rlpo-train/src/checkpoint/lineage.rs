//! Which checkpoints a run descends from.
//!
//! Every process that trains appends a [`Segment`] to the lineage it started from (empty for a
//! fresh run, the checkpoint's for a resume): a unique id, the wall-clock time it started and
//! the step it started at. Each checkpoint records the lineage of the process that wrote it.
//! Checkpoint X is an ancestor of (or equal to) the state at step `s` with lineage `L` when X's
//! last segment appears in `L` at index `i` and X's step is at most the step where `L` left that
//! segment (`L[i + 1].from_step`, or `s` when it is the last one).
//!
//! Pruning counts only ancestors, so a checkpoint left by an abandoned branch (after
//! `--resume <older>`) or by another run is never counted against `keep_last`; `--resume auto`
//! prefers the branch that started last, so it continues the branch the user was last on.
//! Checkpoints written before lineages existed read as one shared segment with the id `""`.

use serde::{Deserialize, Serialize};

/// One process's part of a lineage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Unique id: start time in hex nanoseconds and the process id.
    pub id: String,
    /// Unix time in milliseconds when the process started training.
    pub started_ms: u64,
    /// Completed steps when the segment started (the resumed step; 0 for a fresh run).
    pub from_step: u64,
}

impl Segment {
    /// A new segment starting at `from_step` now.
    pub fn start(from_step: u64) -> Segment {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        // Two trainers in one process (tests) must not share an id: add a per-process counter.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Segment { id: format!("{:x}-{}-{n}", now.as_nanos(), std::process::id()), started_ms: now.as_millis() as u64, from_step }
    }

    /// The segment of checkpoints written before lineages were recorded.
    pub fn legacy() -> Segment {
        Segment { id: String::new(), started_ms: 0, from_step: 0 }
    }
}

/// The lineage a checkpoint records, with the legacy segment for old checkpoints (empty list).
pub fn or_legacy(l: &[Segment]) -> Vec<Segment> {
    if l.is_empty() {
        vec![Segment::legacy()]
    } else {
        l.to_vec()
    }
}

/// Whether the checkpoint at `x_step` with lineage `x` is an ancestor of (or the same state as)
/// step `step` of lineage `current` (see the module docs).
pub fn is_ancestor(x: &[Segment], x_step: u64, current: &[Segment], step: u64) -> bool {
    let x = or_legacy(x);
    let current = or_legacy(current);
    let last = x.last().expect("non-empty");
    let Some(i) = current.iter().position(|s| s.id == last.id) else { return false };
    let until = current.get(i + 1).map_or(step, |next| next.from_step);
    x_step <= until && x_step >= current[i].from_step
}

/// When the branch that wrote a checkpoint with lineage `l` started (0 for legacy ones): later
/// branches are preferred by `--resume auto`.
pub fn started_ms(l: &[Segment]) -> u64 {
    l.last().map_or(0, |s| s.started_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(id: &str, from_step: u64) -> Segment {
        Segment { id: id.into(), started_ms: 0, from_step }
    }

    #[test]
    fn ancestors_follow_the_branch_points() {
        // Run A wrote steps 2, 4, 6; run B resumed from 6 (wrote 8); run C branched from 4.
        let a = vec![seg("a", 0)];
        let b = vec![seg("a", 0), seg("b", 6)];
        let c = vec![seg("a", 0), seg("c", 4)];
        for s in [2, 4, 6] {
            assert!(is_ancestor(&a, s, &b, 8), "A's step {s} is B's history");
        }
        assert!(is_ancestor(&a, 2, &c, 5) && is_ancestor(&a, 4, &c, 5));
        assert!(!is_ancestor(&a, 6, &c, 5), "A's step 6 is after C's branch point");
        assert!(!is_ancestor(&b, 8, &c, 5), "B is another branch");
        assert!(is_ancestor(&c, 5, &c, 5), "the state itself");
        assert!(!is_ancestor(&c, 7, &c, 5), "not yet written by this state");
        // Another run's checkpoint, and legacy ones (no lineage recorded).
        assert!(!is_ancestor(&[seg("z", 0)], 2, &c, 5));
        let from_legacy = vec![Segment::legacy(), seg("d", 3)];
        assert!(is_ancestor(&[], 3, &from_legacy, 9) && !is_ancestor(&[], 4, &from_legacy, 9));
        assert!(!is_ancestor(&[], 3, &c, 5));
    }

    #[test]
    fn segments_are_unique() {
        let (x, y) = (Segment::start(0), Segment::start(0));
        assert_ne!(x.id, y.id);
        assert!(y.started_ms >= x.started_ms);
    }
}
