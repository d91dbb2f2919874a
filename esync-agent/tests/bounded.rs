//! Bounded sans-I/O steps of a delta install: every `poll` of the Writing
//! stage does at most one write quantum of patch work (plus one applier
//! block), and the reconstruction resumes across polls.
#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

use common::*;
use esync_agent::device::sha256;
use esync_package::delta::generate::{generate_patch, GenerateOptions};
use esync_proto::message::*;

/// The applier block of `esync_agent::delta::limits_for`.
const BLOCK: u64 = 64 << 10;

fn old() -> Vec<u8> {
    image(1, 150_000)
}

/// A target mostly new bytes, so the patch writes much more per control than
/// one quantum.
fn new_img() -> Vec<u8> {
    let mut n = old();
    n[1_000..60_000].copy_from_slice(&image(5, 59_000));
    n.extend_from_slice(&image(7, 250_000));
    n
}

fn up_to_prepare(rig: &mut MemRig, u: &Update) {
    rig.send(u.metadata()).unwrap();
    rig.send(u.offer()).unwrap();
    rig.send(u.transfer_start()).unwrap();
    for i in 0..u.chunks() {
        rig.send(u.chunk(i)).unwrap();
    }
    let msgs = rig.send(u.prepare()).unwrap();
    let ready = find(&msgs, |p| match p {
        Payload::PrepareResult(r) => Some(matches!(r.outcome, PrepareOutcome::Ready { .. })),
        _ => None,
    });
    assert_eq!(ready, Some(true), "{msgs:?}");
}

#[test]
fn a_delta_install_writes_at_most_one_quantum_and_a_block_per_poll() {
    let (o, n) = (old(), new_img());
    for format in [
        PatchFormat::BsdiffZstd,
        PatchFormat::Bsdiff40,
        PatchFormat::BsdiffXz,
    ] {
        let patch = generate_patch(&o, &n, &GenerateOptions::new(format)).unwrap();
        let u = Update::delta(1, "2.0.0", 2, "1.0.0", &o, &n, format, patch, 4096);
        let mut rig = mem_rig(&o);
        let quantum = rig.config.write_quantum as u64;
        up_to_prepare(&mut rig, &u);
        let (mut msgs, mut more) = rig.send_only(u.install(false)).unwrap();
        let mut per_poll = vec![];
        let mut guard = 0;
        while more {
            guard += 1;
            assert!(guard < 100_000, "the install never finished");
            let before = rig.dev.inner().stats.slot_bytes_written.get();
            let (m, next) = rig.poll_once().unwrap();
            per_poll.push(rig.dev.inner().stats.slot_bytes_written.get() - before);
            msgs.extend(m);
            more = next;
        }
        let outcome = find(&msgs, |p| match p {
            Payload::InstallResult(r) => Some(r.outcome.clone()),
            _ => None,
        });
        assert_eq!(
            outcome,
            Some(InstallOutcome::Installed {
                version: v("2.0.0"),
                awaiting_confirm: false
            }),
            "{format:?}"
        );
        assert_eq!(sha256(rig.dev.inner().running_bytes()), sha256(&n));
        let total: u64 = per_poll.iter().sum();
        assert_eq!(total, n.len() as u64, "{format:?}: written once");
        let max = per_poll.iter().copied().max().unwrap();
        assert!(
            max <= quantum + BLOCK,
            "{format:?}: a poll wrote {max} bytes (quantum {quantum}, block {BLOCK})"
        );
        let writing = per_poll.iter().filter(|w| **w > 0).count() as u64;
        assert!(
            writing >= n.len() as u64 / (quantum + BLOCK),
            "{format:?}: written in {writing} polls"
        );
    }
}
