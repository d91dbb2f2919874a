//! Crash consistency: power is cut (all in-memory state of the Agent is
//! dropped, the device restarts) at every persistence point (each journal
//! write and each mutating device operation) of an install and of a
//! rollback, on both reference devices, in three ways (before the step,
//! torn halfway, right after it). Every run must end on the old or the new
//! image, checked by hashing what the device runs, with a final report that
//! says so.
//!
//! The default run covers every point once per cut kind, plus two
//! consecutive cuts (several hundred runs, a few seconds). `cargo test -p esync-agent --test crash -- --ignored`
//! adds delta installs on the file device, installs without a separate
//! confirm, injected (non-power) failures at every point, and two cuts per run.
#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

use common::*;
use esync_agent::device::sha256;
use esync_agent::fault::FaultKind;
use esync_agent::journal::JournalStore;
use esync_agent::state::Stage;
use esync_package::delta::generate::{generate_patch, GenerateOptions};
use esync_proto::id::Sha256Digest;
use esync_proto::message::*;

const KINDS: [FaultKind; 3] = [
    FaultKind::CutBefore,
    FaultKind::CutTorn,
    FaultKind::CutAfter,
];

fn old() -> Vec<u8> {
    image(3, 6_000)
}

fn new_img() -> Vec<u8> {
    let mut n = old();
    n[1000..1500].copy_from_slice(&image(4, 500));
    n.extend_from_slice(&image(5, 1_500));
    n
}

fn backup() -> Vec<u8> {
    image(6, 4_000)
}

/// Checks the end state against the last final report.
fn check_truthful<D: TestDev, J: JournalStore>(
    rig: &Rig<D, J>,
    u: &Update,
    old_sha: Sha256Digest,
    new_sha: Sha256Digest,
    what: &str,
) {
    let actual = rig.dev.inner().actual_running_sha();
    assert!(
        actual == old_sha || actual == new_sha,
        "{what}: device runs neither image"
    );
    let desc = rig.dev.inner().running().unwrap();
    assert_eq!(
        desc.sha256, actual,
        "{what}: boot control describes another image than it runs"
    );
    match rig.last_final(u.id) {
        Some(Payload::Confirmed(c)) => {
            assert_eq!(actual, new_sha, "{what}: confirmed but old image runs");
            assert_eq!(c.version, u.target.version);
            assert!(
                !rig.dev.inner().on_trial().unwrap(),
                "{what}: confirmed but still on trial"
            );
        }
        Some(Payload::InstallResult(InstallResult {
            outcome:
                InstallOutcome::Installed {
                    version,
                    awaiting_confirm,
                },
            ..
        })) => {
            assert_eq!(actual, new_sha, "{what}: installed but old image runs");
            assert_eq!(version, u.target.version);
            assert!(
                !awaiting_confirm,
                "{what}: last report awaits a confirm that was given"
            );
        }
        Some(Payload::InstallResult(InstallResult {
            outcome: InstallOutcome::Failed { running, .. },
            ..
        })) => {
            assert_eq!(
                actual, old_sha,
                "{what}: failure reported but new image runs"
            );
            assert_eq!(running, v("1.0.0"));
        }
        other => panic!("{what}: no truthful final report: {other:?}"),
    }
}

/// One install run with a fault at persistence point `cut`. Returns false
/// when the run had fewer points than `cut` (nothing was injected).
fn install_run<D: TestDev, J: JournalStore>(
    mut rig: Rig<D, J>,
    u: &Update,
    old_sha: Sha256Digest,
    new_sha: Sha256Digest,
    cuts: &[(u64, FaultKind)],
    await_confirm: bool,
    what: &str,
) -> bool {
    let base = rig.switch.count();
    let (first, kind) = cuts[0];
    rig.switch.arm(first, kind);
    if let Some(&(second, kind2)) = cuts.get(1) {
        // Second cut: armed now too, so it lands `second` points after the
        // first one, typically during the recovery or the Client's retry.
        rig.switch.arm(first + 1 + second, kind2);
    }
    let outcome = drive_install(&mut rig, u, await_confirm);
    let injected = rig.switch.count() > base + first;
    assert_eq!(
        outcome,
        Round::Done,
        "{what}: install did not complete after the fault(s)"
    );
    check_truthful(&rig, u, old_sha, new_sha, what);
    let st = rig.agent().state();
    assert!(st.outbox.is_empty(), "{what}: unsent reports left");
    assert_eq!(
        st.update.as_ref().map(|x| x.stage.clone()),
        Some(Stage::Settled),
        "{what}"
    );
    injected
}

fn rollback_run<D: TestDev, J: JournalStore>(
    mut rig: Rig<D, J>,
    u: &Update,
    target: RollbackTarget,
    expect: (&str, Sha256Digest),
    cut: u64,
    kind: FaultKind,
    what: &str,
) -> bool {
    assert_eq!(
        drive_install(&mut rig, u, false),
        Round::Done,
        "{what}: setup install"
    );
    let base = rig.switch.count();
    rig.switch.arm(cut, kind);
    let mut result = None;
    for _ in 0..10 {
        match rig.send(u.rollback(target.clone())) {
            Ok(msgs) => {
                result = msgs.into_iter().find_map(|p| match p {
                    Payload::RollbackResult(r) => Some(r.outcome),
                    _ => None,
                });
                if result.is_some() {
                    break;
                }
            }
            Err(_) => {
                rig.crash();
                while rig.boot().is_err() {
                    rig.crash();
                }
            }
        }
    }
    let injected = rig.switch.count() > base + cut;
    let actual = rig.dev.inner().actual_running_sha();
    assert_eq!(
        result,
        Some(RollbackOutcome::RolledBack {
            version: v(expect.0)
        }),
        "{what}"
    );
    assert_eq!(
        actual, expect.1,
        "{what}: device does not run the rollback image"
    );
    assert!(
        !rig.dev.inner().on_trial().unwrap(),
        "{what}: left on trial"
    );
    // The last final report in the log says the same.
    assert!(
        matches!(rig.last_final(u.id), Some(Payload::RollbackResult(RollbackResult { outcome: RollbackOutcome::RolledBack { version }, .. })) if version == v(expect.0)),
        "{what}"
    );
    assert!(
        rig.agent().state().outbox.is_empty(),
        "{what}: unsent reports left"
    );
    injected
}

/// Runs `run(cut)` for cut = 0, 1, ... until a run had no fault injected.
fn every_point(mut run: impl FnMut(u64) -> bool) -> u64 {
    let mut n = 0;
    while run(n) {
        n += 1;
        assert!(n < 10_000);
    }
    n
}

/// A scratch directory, in memory-backed /dev/shm when there is one: the
/// power cuts are simulated at the device and journal operations, so real
/// fsync latency adds nothing but time (the file code paths, fsyncs
/// included, are the same).
fn scratch() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

fn full_update() -> Update {
    Update::full(1, "2.0.0", 2, &new_img(), 1024)
}

fn delta_update() -> Update {
    let (o, n) = (old(), new_img());
    let patch = generate_patch(&o, &n, &GenerateOptions::new(PatchFormat::BsdiffZstd)).unwrap();
    Update::delta(
        1,
        "2.0.0",
        2,
        "1.0.0",
        &o,
        &n,
        PatchFormat::BsdiffZstd,
        patch,
        1024,
    )
}

fn mem_with_backup() -> MemRig {
    let mut rig = mem_rig(&old());
    rig.dev.inner_mut().add_backup(v("0.9.0"), 1, backup());
    rig
}

fn file_with_backup(dir: &std::path::Path) -> FileRig {
    let mut rig = file_rig(dir, &old());
    rig.dev
        .inner_mut()
        .add_backup(v("0.9.0"), 1, &backup())
        .unwrap();
    rig
}

#[test]
fn power_cut_at_every_step_of_install_and_rollback() {
    let (os, ns, bs) = (sha256(&old()), sha256(&new_img()), sha256(&backup()));
    let full = full_update();
    let delta = delta_update();
    let mut runs = 0u64;
    for kind in KINDS {
        // Install (full image, Client confirms), in-memory device.
        runs += every_point(|cut| {
            install_run(
                mem_rig(&old()),
                &full,
                os,
                ns,
                &[(cut, kind)],
                true,
                &format!("mem full {kind:?} @{cut}"),
            )
        });
        // Install (delta), in-memory device.
        runs += every_point(|cut| {
            install_run(
                mem_rig(&old()),
                &delta,
                os,
                ns,
                &[(cut, kind)],
                true,
                &format!("mem delta {kind:?} @{cut}"),
            )
        });
        // Install (full image), file-backed A/B device.
        runs += every_point(|cut| {
            let dir = scratch();
            install_run(
                file_rig(dir.path(), &old()),
                &full,
                os,
                ns,
                &[(cut, kind)],
                true,
                &format!("file full {kind:?} @{cut}"),
            )
        });
        // Rollbacks: previous slot and backup, both devices. A rollback
        // writes no chunked data (the device restores a backup in one
        // operation), so a torn cut is the same as a cut before the step.
        if kind == FaultKind::CutTorn {
            continue;
        }
        for (target, expect) in [
            (RollbackTarget::PreviousSlot, ("1.0.0", os)),
            (RollbackTarget::Backup, ("0.9.0", bs)),
        ] {
            runs += every_point(|cut| {
                rollback_run(
                    mem_with_backup(),
                    &full,
                    target.clone(),
                    expect,
                    cut,
                    kind,
                    &format!("mem rollback {target:?} {kind:?} @{cut}"),
                )
            });
            runs += every_point(|cut| {
                let dir = scratch();
                rollback_run(
                    file_with_backup(dir.path()),
                    &full,
                    target.clone(),
                    expect,
                    cut,
                    kind,
                    &format!("file rollback {target:?} {kind:?} @{cut}"),
                )
            });
        }
    }
    // Two cuts in a row (the second one during the recovery or the retry):
    // a trial image survives one restart, not two.
    for kind in [FaultKind::CutBefore, FaultKind::CutAfter] {
        for second in 0..3 {
            runs += every_point(|cut| {
                install_run(
                    mem_rig(&old()),
                    &full,
                    os,
                    ns,
                    &[(cut, kind), (second, kind)],
                    true,
                    &format!("mem double {kind:?} @{cut}+{second}"),
                )
            });
        }
    }
    println!("crash-consistency runs with a power cut: {runs}");
    assert!(runs >= 300, "only {runs} runs");
}

/// A delta whose reconstruction spans several polls (its target is far
/// larger than one write quantum plus one applier block), so power is also
/// cut between two steps of the patch application held in memory.
#[test]
fn power_cut_at_every_step_of_a_multi_poll_delta_install() {
    let o = old();
    let mut n = new_img();
    n.extend_from_slice(&image(11, 150_000));
    let patch = generate_patch(&o, &n, &GenerateOptions::new(PatchFormat::BsdiffZstd)).unwrap();
    let u = Update::delta(
        1,
        "2.0.0",
        2,
        "1.0.0",
        &o,
        &n,
        PatchFormat::BsdiffZstd,
        patch,
        16 * 1024,
    );
    let (os, ns) = (sha256(&o), sha256(&n));
    let mut runs = 0u64;
    for kind in KINDS {
        runs += every_point(|cut| {
            install_run(
                mem_rig(&o),
                &u,
                os,
                ns,
                &[(cut, kind)],
                true,
                &format!("mem multi-poll delta {kind:?} @{cut}"),
            )
        });
    }
    assert!(runs > 30, "{runs} runs");
}

/// Power is cut at every persistence point of Prepare's reconstruction of a
/// delta into staging (which spans several polls): each run still ends on
/// the old or the new image with a truthful report, READY comes only after
/// the reconstructed image was verified, and the install that follows uses
/// that image.
#[test]
fn power_cut_at_every_step_of_a_multi_poll_delta_prepare() {
    let o = old();
    let mut n = new_img();
    n.extend_from_slice(&image(11, 150_000));
    let patch = generate_patch(&o, &n, &GenerateOptions::new(PatchFormat::BsdiffZstd)).unwrap();
    let u = Update::delta(
        1,
        "2.0.0",
        2,
        "1.0.0",
        &o,
        &n,
        PatchFormat::BsdiffZstd,
        patch,
        16 * 1024,
    );
    // Where Prepare's points lie in a run without faults.
    let mut rig = mem_rig(&o);
    let base = rig.switch.count();
    rig.send(u.metadata()).unwrap();
    rig.send(u.offer()).unwrap();
    rig.send(u.transfer_start()).unwrap();
    for i in 0..u.chunks() {
        rig.send(u.chunk(i)).unwrap();
    }
    let start = rig.switch.count() - base;
    let r = rig.send(u.prepare()).unwrap();
    assert!(
        r.iter().any(|p| matches!(
            p,
            Payload::PrepareResult(PrepareResult {
                outcome: PrepareOutcome::Ready { .. },
                ..
            })
        )),
        "{r:?}"
    );
    let end = rig.switch.count() - base;
    assert!(
        end - start >= 3,
        "Prepare's reconstruction has {} points",
        end - start
    );
    let (os, ns) = (sha256(&o), sha256(&n));
    let mut runs = 0u64;
    for kind in KINDS {
        for cut in start..end {
            assert!(install_run(
                mem_rig(&o),
                &u,
                os,
                ns,
                &[(cut, kind)],
                true,
                &format!("mem delta prepare {kind:?} @{cut}"),
            ));
            runs += 1;
        }
    }
    println!("power cuts during Prepare's reconstruction: {runs}");
}

#[test]
fn injected_failures_at_every_step_end_consistent() {
    let (os, ns) = (sha256(&old()), sha256(&new_img()));
    let full = full_update();
    let runs = every_point(|cut| {
        install_run(
            mem_rig(&old()),
            &full,
            os,
            ns,
            &[(cut, FaultKind::Fail)],
            true,
            &format!("mem fail @{cut}"),
        )
    });
    assert!(runs > 20);
}

#[test]
#[ignore = "long: cargo test -p esync-agent --test crash -- --ignored"]
fn long_power_cut_matrix() {
    let (os, ns) = (sha256(&old()), sha256(&new_img()));
    let full = full_update();
    let delta = delta_update();
    let mut runs = 0u64;
    for kind in KINDS {
        for await_confirm in [false, true] {
            runs += every_point(|cut| {
                let dir = scratch();
                install_run(
                    file_rig(dir.path(), &old()),
                    &delta,
                    os,
                    ns,
                    &[(cut, kind)],
                    await_confirm,
                    &format!("file delta {kind:?} {await_confirm} @{cut}"),
                )
            });
            runs += every_point(|cut| {
                install_run(
                    mem_rig(&old()),
                    &full,
                    os,
                    ns,
                    &[(cut, kind)],
                    await_confirm,
                    &format!("mem full {kind:?} {await_confirm} @{cut}"),
                )
            });
        }
        runs += every_point(|cut| {
            let dir = scratch();
            install_run(
                file_rig(dir.path(), &old()),
                &full,
                os,
                ns,
                &[(cut, FaultKind::Fail)],
                true,
                &format!("file fail @{cut}"),
            )
        });
        // Two cuts per run: the second lands during the recovery and retry.
        for second in 0..40 {
            runs += every_point(|cut| {
                install_run(
                    mem_rig(&old()),
                    &full,
                    os,
                    ns,
                    &[(cut, kind), (second, kind)],
                    true,
                    &format!("mem double {kind:?} @{cut}+{second}"),
                )
            });
        }
    }
    println!("long crash matrix runs: {runs}");
}
