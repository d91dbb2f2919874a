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

fn up_to_prepare<D: TestDev, J: esync_agent::journal::JournalStore>(
    rig: &mut Rig<D, J>,
    u: &Update,
) {
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

/// A patch applier that counts the reconstructions it begins.
struct Counting {
    begun: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl esync_agent::patch::PatchApplier for Counting {
    fn formats(&self) -> Vec<PatchFormat> {
        esync_agent::delta::PackageApplier.formats()
    }

    fn begin(
        &self,
        format: PatchFormat,
        source_sha256: &esync_proto::id::Sha256Digest,
        expected: esync_agent::patch::ExpectedImage,
        max_memory: u64,
    ) -> Result<Box<dyn esync_agent::patch::PatchJob>, esync_agent::patch::PatchError> {
        self.begun.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        esync_agent::delta::PackageApplier.begin(format, source_sha256, expected, max_memory)
    }
}

fn is_prepare_result(p: &Payload) -> bool {
    matches!(p, Payload::PrepareResult(_))
}

/// Prepare reconstructs the delta into staging in bounded polls, and the
/// PrepareResult comes from the poll that finishes (a one-call Prepare
/// answers in the `handle` of the command and fails here).
#[test]
fn a_delta_prepare_does_at_most_one_quantum_and_a_block_per_poll() {
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
        rig.send(u.metadata()).unwrap();
        rig.send(u.offer()).unwrap();
        rig.send(u.transfer_start()).unwrap();
        for i in 0..u.chunks() {
            rig.send(u.chunk(i)).unwrap();
        }
        let (first, mut more) = rig.send_only(u.prepare()).unwrap();
        assert!(
            !first.iter().any(is_prepare_result),
            "{format:?}: Prepare answered in one call: {first:?}"
        );
        let mut per_poll = vec![];
        let mut answered_in = None;
        let mut guard = 0;
        while more {
            guard += 1;
            assert!(guard < 100_000, "the prepare never finished");
            let before = rig.dev.inner().stats.staging_bytes_written.get();
            let (m, next) = rig.poll_once().unwrap();
            per_poll.push(rig.dev.inner().stats.staging_bytes_written.get() - before);
            if let Some(r) = m.iter().find(|p| is_prepare_result(p)) {
                assert!(answered_in.is_none(), "{format:?}: answered twice");
                answered_in = Some((per_poll.len(), r.clone()));
            }
            more = next;
        }
        let (poll, result) = answered_in.expect("a PrepareResult");
        assert_eq!(poll, per_poll.len(), "{format:?}: sent by the last poll");
        assert!(
            matches!(
                &result,
                Payload::PrepareResult(PrepareResult {
                    outcome: PrepareOutcome::Ready { sha256, .. },
                    ..
                }) if *sha256 == sha256_of(&n)
            ),
            "{format:?}: {result:?}"
        );
        let total: u64 = per_poll.iter().sum();
        assert_eq!(total, n.len() as u64, "{format:?}: reconstructed once");
        let max = per_poll.iter().copied().max().unwrap();
        assert!(
            max <= quantum + BLOCK,
            "{format:?}: a poll reconstructed {max} bytes (quantum {quantum}, block {BLOCK})"
        );
        assert!(
            per_poll.len() as u64 >= n.len() as u64 / (quantum + BLOCK),
            "{format:?}: reconstructed in {} polls",
            per_poll.len()
        );
    }
}

fn sha256_of(b: &[u8]) -> esync_proto::id::Sha256Digest {
    sha256(b)
}

/// A delta is reconstructed exactly once, by Prepare: the install copies the
/// image Prepare left in staging (the old code reconstructed in a dry run at
/// Prepare and again at install: two reconstructions).
#[test]
fn a_delta_is_reconstructed_once_per_update() {
    let (o, n) = (old(), new_img());
    let format = PatchFormat::BsdiffZstd;
    let patch = generate_patch(&o, &n, &GenerateOptions::new(format)).unwrap();
    let patch_len = patch.len() as u64;
    let u = Update::delta(1, "2.0.0", 2, "1.0.0", &o, &n, format, patch, 4096);
    let mut rig = mem_rig(&o);
    let begun = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    rig.patcher = Box::new(Counting {
        begun: begun.clone(),
    });
    up_to_prepare(&mut rig, &u);
    let msgs = rig.send(u.install(false)).unwrap();
    let outcome = find(&msgs, |p| match p {
        Payload::InstallResult(r) => Some(r.outcome.clone()),
        _ => None,
    });
    assert_eq!(
        outcome,
        Some(InstallOutcome::Installed {
            version: v("2.0.0"),
            awaiting_confirm: false
        })
    );
    assert_eq!(sha256(rig.dev.inner().running_bytes()), sha256(&n));
    assert_eq!(
        begun.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "reconstructions"
    );
    let stats = &rig.dev.inner().stats;
    assert_eq!(
        stats.staging_bytes_written.get(),
        patch_len + n.len() as u64,
        "the patch, then the image once"
    );
    assert_eq!(stats.slot_bytes_written.get(), n.len() as u64);
}

/// The file device holds the reconstructed image after the patch: staging
/// is sized from the signed target length, not the patch's.
#[test]
fn a_file_device_delta_is_reconstructed_into_staging_once() {
    let dir = tempfile::tempdir().unwrap();
    let (o, n) = (old(), new_img());
    let format = PatchFormat::BsdiffZstd;
    let patch = generate_patch(&o, &n, &GenerateOptions::new(format)).unwrap();
    let u = Update::delta(1, "2.0.0", 2, "1.0.0", &o, &n, format, patch, 4096);
    let mut rig = file_rig(dir.path(), &o);
    let begun = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    rig.patcher = Box::new(Counting {
        begun: begun.clone(),
    });
    up_to_prepare(&mut rig, &u);
    let msgs = rig.send(u.install(false)).unwrap();
    assert!(
        msgs.iter().any(|p| matches!(
            p,
            Payload::InstallResult(InstallResult {
                outcome: InstallOutcome::Installed { .. },
                ..
            })
        )),
        "{msgs:?}"
    );
    assert_eq!(begun.load(std::sync::atomic::Ordering::SeqCst), 1);
}
