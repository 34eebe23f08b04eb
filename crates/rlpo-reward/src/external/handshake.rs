//! The start-up handshake of a new plugin instance: before any sample is sent, rlpo writes one
//! request with empty texts and a `handshake` object ([`handshake_line`]) and waits up to
//! `startup_timeout` for the answer. Any answer with its id means the plugin is up; a protocol-2
//! plugin answers `{"id": N, "ready": true, "workers": W}` and so declares how many requests it
//! works on at once (default 1), which is when request clocks start (see the session).
//!
//! Why a request and not a line the plugin volunteers: a plugin written for protocol 1, which
//! answers every request, passes it unchanged; and the answer proves the plugin reads stdin and
//! writes stdout, which a banner would not.

use std::time::Instant;

use crossbeam::channel::Receiver;

use super::process::{Event, PluginProcess};
use super::protocol::{handshake_line, ReplyLine};
use super::ExternalOptions;
use crate::log::RewardLog;

/// Performs the handshake with `proc` under request id `id`. `Ok(workers)` (within
/// `1..=concurrency`) or `Err(why)`; the caller kills the instance on an error.
pub(super) fn run(
    proc: &mut PluginProcess,
    opts: &ExternalOptions,
    id: u64,
    events: &Receiver<Event>,
    log: &RewardLog,
) -> Result<usize, String> {
    let generation = proc.generation;
    if !proc.send(handshake_line(id, &opts.name, opts.concurrency)) {
        return Err("its stdin closed before the start-up handshake".into());
    }
    let deadline = Instant::now() + opts.startup_timeout;
    loop {
        match events.recv_deadline(deadline) {
            Ok(Event::Reply { generation: g, line }) if g == generation => match line {
                ReplyLine::Ready { id: got, workers } if got == id => {
                    return Ok(workers.unwrap_or(1).clamp(1, opts.concurrency));
                }
                // A protocol-1 plugin scored (or refused) the empty handshake request: it is up.
                ReplyLine::Answer { id: got, .. } if got == id => return Ok(1),
                ReplyLine::Blank => {}
                other => log.push(format!(
                    "[{}] protocol error during the start-up handshake (stdout is for answers only), ignored: {other:?}",
                    opts.name
                )),
            },
            Ok(Event::Exited { generation: g }) if g == generation => {
                return Err(format!("it exited during the start-up handshake ({})", proc.status_text()));
            }
            // Output of an instance that has been replaced.
            Ok(_) => {}
            Err(_) => {
                return Err(format!(
                    "it did not answer the start-up handshake within {:?} (startup_timeout_s)",
                    opts.startup_timeout
                ))
            }
        }
    }
}
