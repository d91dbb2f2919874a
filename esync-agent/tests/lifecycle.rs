//! Lifecycle tests of the Agent on the in-memory device: consent, verification
//! failures, install, self-test rollback, retry limit, delta, prepare
//! idempotency, do-not-disturb, local preconditions, rollbacks, resume.
#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

use common::*;
use esync_agent::device::mem::MemDevice;
use esync_agent::device::{sha256, SelfTest};
use esync_agent::journal::MemJournal;
use esync_agent::policy::PreconditionConsent;
use esync_package::delta::generate::{generate_patch, GenerateOptions};
use esync_proto::id::HardwareId;
use esync_proto::message::*;
use esync_proto::precondition::Precondition;

fn old() -> Vec<u8> {
    image(1, 20_000)
}

fn new_img() -> Vec<u8> {
    let mut n = old();
    n[100..300].copy_from_slice(&image(9, 200));
    n.extend_from_slice(&image(7, 3_000));
    n
}

fn prepare_result(msgs: &[Payload]) -> PrepareOutcome {
    find(msgs, |p| match p {
        Payload::PrepareResult(r) => Some(r.outcome.clone()),
        _ => None,
    })
    .expect("a prepare result")
}

fn install_result(msgs: &[Payload]) -> InstallOutcome {
    find(msgs, |p| match p {
        Payload::InstallResult(r) => Some(r.outcome.clone()),
        _ => None,
    })
    .expect("an install result")
}

fn decision(msgs: &[Payload]) -> Decision {
    find(msgs, |p| match p {
        Payload::DownloadDecision(d) => Some(d.decision.clone()),
        _ => None,
    })
    .expect("a download decision")
}

/// Metadata, offer, transfer, prepare: returns the prepare outcome.
fn up_to_prepare(rig: &mut MemRig, u: &Update) -> PrepareOutcome {
    rig.send(u.metadata()).unwrap();
    assert_eq!(decision(&rig.send(u.offer()).unwrap()), Decision::Consent);
    rig.send(u.transfer_start()).unwrap();
    for i in 0..u.chunks() {
        rig.send(u.chunk(i)).unwrap();
    }
    prepare_result(&rig.send(u.prepare()).unwrap())
}

fn running_sha(rig: &MemRig) -> esync_proto::id::Sha256Digest {
    sha256(rig.dev.inner().running_bytes())
}

#[test]
fn full_install_with_confirm() {
    let (o, n) = (old(), new_img());
    let mut rig = mem_rig(&o);
    let u = Update::full(1, "2.0.0", 2, &n, 1024);
    assert!(matches!(
        up_to_prepare(&mut rig, &u),
        PrepareOutcome::Ready { .. }
    ));
    let r = rig.send(u.install(true)).unwrap();
    assert_eq!(
        install_result(&r),
        InstallOutcome::Installed {
            version: v("2.0.0"),
            awaiting_confirm: true
        }
    );
    assert!(r
        .iter()
        .any(|p| matches!(p, Payload::Progress(x) if x.phase == Phase::Write)));
    assert!(rig.dev.inner().boot_control().trial.is_some());
    let r = rig.send(u.confirm()).unwrap();
    assert!(r
        .iter()
        .any(|p| matches!(p, Payload::Confirmed(c) if c.version == v("2.0.0"))));
    assert_eq!(running_sha(&rig), sha256(&n));
    assert!(rig.dev.inner().boot_control().trial.is_none());
    // Inventory now reports the new version and the previous slot for rollback.
    let r = rig
        .send(Payload::InventoryQuery(InventoryQuery { nonce: [3; 16] }))
        .unwrap();
    let Payload::InventoryReport(inv) = &r[0] else {
        panic!("{r:?}")
    };
    assert_eq!(inv.installed.version, v("2.0.0"));
    assert_eq!(inv.rollback_versions, vec![v("1.0.0")]);
    assert_eq!(inv.state, AgentState::Idle);
    assert_eq!(inv.nonce, [3; 16]);
    assert!(inv.delta.formats.contains(&PatchFormat::BsdiffZstd));
    // Nothing left unsent in the journal.
    assert!(rig.agent().state().outbox.is_empty());
}

#[test]
fn consent_denied() {
    struct Deny;
    impl esync_agent::policy::ConsentPolicy for Deny {
        fn decide(
            &mut self,
            _: &DownloadOffer,
            _: &esync_agent::target::DirectedTarget,
            _: &[Signal],
            _: u64,
        ) -> Decision {
            Decision::Deny {
                reason: "storage reserved".into(),
            }
        }
    }
    let mut rig = mem_rig(&old());
    rig.policy = Box::new(Deny);
    let u = Update::full(1, "2.0.0", 2, &new_img(), 1024);
    rig.send(u.metadata()).unwrap();
    assert_eq!(
        decision(&rig.send(u.offer()).unwrap()),
        Decision::Deny {
            reason: "storage reserved".into()
        }
    );
    // A transfer without consent is refused with the decision, nothing staged.
    let r = rig.send(u.transfer_start()).unwrap();
    assert!(matches!(decision(&r), Decision::Deny { .. }));
    assert!(!r.iter().any(|p| matches!(p, Payload::TransferAck(_))));
    assert!(matches!(
        prepare_result(&rig.send(u.prepare()).unwrap()),
        PrepareOutcome::Failed(_)
    ));
    assert_eq!(running_sha(&rig), sha256(&old()));
}

#[test]
fn consent_postponed_then_given() {
    let mut rig = mem_rig(&old());
    rig.policy = Box::new(PreconditionConsent {
        condition: Precondition::parse("battery_soc >= 30").unwrap(),
        postpone_ms: 60_000,
        max_bytes: 1 << 20,
    });
    rig.dev.inner_mut().set_signals(vec![Signal {
        name: "battery_soc".into(),
        value: SignalValue::Int(12),
    }]);
    let u = Update::full(1, "2.0.0", 2, &new_img(), 1024);
    rig.send(u.metadata()).unwrap();
    assert_eq!(
        decision(&rig.send(u.offer()).unwrap()),
        Decision::Postpone {
            until_ms: T0 + 60_000
        }
    );
    let r = rig.send(u.transfer_start()).unwrap();
    assert!(matches!(decision(&r), Decision::Postpone { .. }));
    rig.advance(60_000);
    rig.dev.inner_mut().set_signals(vec![Signal {
        name: "battery_soc".into(),
        value: SignalValue::Int(80),
    }]);
    assert_eq!(decision(&rig.send(u.offer()).unwrap()), Decision::Consent);
}

#[test]
fn wrong_image_hash_refused() {
    let o = old();
    let mut rig = mem_rig(&o);
    let mut u = Update::full(1, "2.0.0", 2, &new_img(), 1024);
    // The bytes sent differ from the signed hash; the chunk list is not pinned.
    u.payload[5000] ^= 1;
    u.target.chunk_list_digest = None;
    match up_to_prepare(&mut rig, &u) {
        PrepareOutcome::Failed(f) => assert_eq!(f.code, FailureCode::HashMismatch),
        other => panic!("{other:?}"),
    }
    let r = rig.send(u.install(false)).unwrap();
    assert!(matches!(install_result(&r), InstallOutcome::Failed { .. }));
    assert_eq!(running_sha(&rig), sha256(&o));
    assert!(rig.dev.inner().boot_control().slots[1].is_none());
}

#[test]
fn pinned_chunk_list_refuses_tampered_chunks() {
    let mut rig = mem_rig(&old());
    let mut u = Update::full(1, "2.0.0", 2, &new_img(), 1024);
    rig.send(u.metadata()).unwrap();
    rig.send(u.offer()).unwrap();
    rig.send(u.transfer_start()).unwrap();
    u.payload[10] ^= 1;
    let r = rig.send(u.chunk(0)).unwrap();
    let Payload::TransferAck(a) = &r[0] else {
        panic!("{r:?}")
    };
    assert_eq!((a.next_chunk, a.rejected.clone()), (0, vec![0]));
    // A chunk list that does not match the signed digest is refused outright.
    let mut bad = u.clone();
    bad.transfer_id = esync_proto::id::Id128([42; 16]);
    let r = rig.send(bad.transfer_start()).unwrap();
    assert!(
        matches!(prepare_result(&r), PrepareOutcome::Failed(f) if f.code == FailureCode::HashMismatch)
    );
}

#[test]
fn wrong_hardware_id_refused() {
    let mut rig = mem_rig(&old());
    let mut u = Update::full(1, "2.0.0", 2, &new_img(), 1024);
    u.target.hardware_id = HardwareId::new("bcm-hw-9").unwrap();
    rig.send(u.metadata()).unwrap();
    assert!(matches!(
        decision(&rig.send(u.offer()).unwrap()),
        Decision::Deny { .. }
    ));
    match prepare_result(&rig.send(u.prepare()).unwrap()) {
        PrepareOutcome::Failed(f) => {
            assert_eq!(f.code, FailureCode::HardwareMismatch);
            assert_eq!(f.class, ErrorClass::UpdateIncapable);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn release_counter_rollback_refused() {
    let mut rig = mem_rig(&old());
    let u = Update::full(1, "0.9.0", 0, &new_img(), 1024);
    rig.send(u.metadata()).unwrap();
    assert!(
        matches!(prepare_result(&rig.send(u.prepare()).unwrap()), PrepareOutcome::Failed(f) if f.code == FailureCode::ReleaseCounterRollback)
    );
}

#[test]
fn expired_metadata_refused() {
    let mut rig = mem_rig(&old());
    let mut u = Update::full(1, "2.0.0", 2, &new_img(), 1024);
    u.target.expires_ms = T0 - 1;
    rig.send(u.metadata()).unwrap();
    assert!(
        matches!(prepare_result(&rig.send(u.prepare()).unwrap()), PrepareOutcome::Failed(f) if f.code == FailureCode::MetadataExpired)
    );

    // Metadata that expires between prepare and install: the install is refused.
    let mut rig = mem_rig(&old());
    let mut u = Update::full(2, "2.0.0", 2, &new_img(), 1024);
    u.target.expires_ms = T0 + 10_000;
    assert!(matches!(
        up_to_prepare(&mut rig, &u),
        PrepareOutcome::Ready { .. }
    ));
    rig.now = T0 + 20_000;
    match install_result(&rig.send(u.install(false)).unwrap()) {
        InstallOutcome::Failed { failure, running } => {
            assert_eq!(failure.code, FailureCode::MetadataExpired);
            assert_eq!(running, v("1.0.0"));
        }
        other => panic!("{other:?}"),
    }
    // Time never goes backwards: an earlier clock does not revive it.
    rig.now = T0;
    assert!(matches!(
        install_result(&rig.send(u.install(false)).unwrap()),
        InstallOutcome::Failed { .. }
    ));
    assert_eq!(running_sha(&rig), sha256(&old()));
}

fn failing_self_test(rig: &mut MemRig, bad: esync_proto::id::Sha256Digest) {
    rig.dev
        .inner_mut()
        .set_self_test(Box::new(move |img: &InstalledImage| {
            if img.sha256 == bad {
                SelfTest::Failed("watchdog tripped".into())
            } else {
                SelfTest::Passed
            }
        }));
}

#[test]
fn failed_self_test_rolls_back() {
    let (o, n) = (old(), new_img());
    let mut rig = mem_rig(&o);
    failing_self_test(&mut rig, sha256(&n));
    let u = Update::full(1, "2.0.0", 2, &n, 1024);
    assert!(matches!(
        up_to_prepare(&mut rig, &u),
        PrepareOutcome::Ready { .. }
    ));
    let r = rig.send(u.install(false)).unwrap();
    match install_result(&r) {
        InstallOutcome::Failed { failure, running } => {
            assert_eq!(failure.code, FailureCode::SelfTestFailed);
            assert_eq!(failure.class, ErrorClass::Retryable);
            assert_eq!(running, v("1.0.0"));
        }
        other => panic!("{other:?}"),
    }
    assert!(r
        .iter()
        .any(|p| matches!(p, Payload::Progress(x) if x.phase == Phase::Rollback)));
    assert_eq!(running_sha(&rig), sha256(&o));
    assert!(rig.dev.inner().boot_control().trial.is_none());
}

#[test]
fn retry_limit_then_terminal() {
    let (o, n) = (old(), new_img());
    let mut rig = mem_rig(&o);
    failing_self_test(&mut rig, sha256(&n));
    let u = Update::full(1, "2.0.0", 2, &n, 1024);
    assert!(matches!(
        up_to_prepare(&mut rig, &u),
        PrepareOutcome::Ready { .. }
    ));
    for attempt in 1..=3 {
        let r = rig.send(u.install(false)).unwrap();
        let InstallOutcome::Failed { failure, .. } = install_result(&r) else {
            panic!()
        };
        if attempt < 3 {
            assert_eq!(failure.class, ErrorClass::Retryable, "attempt {attempt}");
        } else {
            assert_eq!(failure.class, ErrorClass::Terminal);
            assert_eq!(failure.code, FailureCode::RetryLimitReached);
        }
    }
    let activations = rig.dev.inner().stats.activations.get();
    assert_eq!(activations, 3);
    // Further installs are refused without touching the device.
    let r = rig.send(u.install(false)).unwrap();
    assert!(
        matches!(install_result(&r), InstallOutcome::Failed { failure, .. } if failure.class == ErrorClass::Terminal)
    );
    assert_eq!(rig.dev.inner().stats.activations.get(), activations);
    let r = rig
        .send(Payload::InventoryQuery(InventoryQuery { nonce: [0; 16] }))
        .unwrap();
    assert!(
        matches!(&r[0], Payload::InventoryReport(i) if i.state == AgentState::Failed && i.installed.version == v("1.0.0"))
    );
    assert_eq!(running_sha(&rig), sha256(&o));
}

/// After a terminal install failure the device already runs its old image;
/// the Client's package-wide rollback must not switch to the failed image in
/// the other slot.
#[test]
fn rollback_after_terminal_failure_keeps_the_old_image() {
    let (o, n) = (old(), new_img());
    let mut rig = mem_rig(&o);
    failing_self_test(&mut rig, sha256(&n));
    let u = Update::full(1, "2.0.0", 2, &n, 1024);
    assert!(matches!(
        up_to_prepare(&mut rig, &u),
        PrepareOutcome::Ready { .. }
    ));
    for _ in 1..=3 {
        rig.send(u.install(false)).unwrap();
    }
    let activations = rig.dev.inner().stats.activations.get();
    let r = rig.send(u.rollback(RollbackTarget::PreviousSlot)).unwrap();
    assert!(
        r.iter().any(|p| matches!(
            p,
            Payload::RollbackResult(RollbackResult {
                outcome: RollbackOutcome::RolledBack { version },
                ..
            }) if *version == v("1.0.0")
        )),
        "{r:?}"
    );
    assert_eq!(running_sha(&rig), sha256(&o));
    assert_eq!(rig.dev.inner().stats.activations.get(), activations);
    // A repeated rollback is answered the same way, still without touching the device.
    rig.send(u.rollback(RollbackTarget::PreviousSlot)).unwrap();
    assert_eq!(running_sha(&rig), sha256(&o));
}

/// The Client may only send a patch that the verified metadata lists; a
/// target with no listed deltas takes full images only.
#[test]
fn delta_not_listed_in_verified_metadata_is_denied() {
    let (o, n) = (old(), new_img());
    let patch = generate_patch(&o, &n, &GenerateOptions::new(PatchFormat::BsdiffZstd)).unwrap();
    let mut u = Update::delta(
        1,
        "2.0.0",
        2,
        "1.0.0",
        &o,
        &n,
        PatchFormat::BsdiffZstd,
        patch,
        1024,
    );
    u.target.deltas.clear();
    let mut rig = mem_rig(&o);
    rig.send(u.metadata()).unwrap();
    match decision(&rig.send(u.offer()).unwrap()) {
        Decision::Deny { reason } => assert!(reason.contains("not listed"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(running_sha(&rig), sha256(&o));
}

#[test]
fn delta_install_and_modified_source_refused() {
    let (o, n) = (old(), new_img());
    for format in [
        PatchFormat::BsdiffZstd,
        PatchFormat::Bsdiff40,
        PatchFormat::BsdiffXz,
    ] {
        let patch = generate_patch(&o, &n, &GenerateOptions::new(format)).unwrap();
        let u = Update::delta(1, "2.0.0", 2, "1.0.0", &o, &n, format, patch.clone(), 1024);
        let mut rig = mem_rig(&o);
        assert!(
            matches!(up_to_prepare(&mut rig, &u), PrepareOutcome::Ready { .. }),
            "{format:?}"
        );
        let r = rig.send(u.install(false)).unwrap();
        assert_eq!(
            install_result(&r),
            InstallOutcome::Installed {
                version: v("2.0.0"),
                awaiting_confirm: false
            }
        );
        assert_eq!(running_sha(&rig), sha256(&n));
    }
    // The installed image was modified (its description still says 1.0.0):
    // the delta is refused before anything is written.
    let patch = generate_patch(&o, &n, &GenerateOptions::new(PatchFormat::BsdiffZstd)).unwrap();
    let u = Update::delta(
        2,
        "2.0.0",
        2,
        "1.0.0",
        &o,
        &n,
        PatchFormat::BsdiffZstd,
        patch,
        1024,
    );
    let mut rig = mem_rig(&o);
    rig.dev.inner_mut().corrupt_running(1234);
    match up_to_prepare(&mut rig, &u) {
        PrepareOutcome::Failed(f) => {
            assert_eq!(f.code, FailureCode::DeltaSourceMismatch);
            assert_eq!(f.class, ErrorClass::UpdateIncapable);
        }
        other => panic!("{other:?}"),
    }
    assert!(rig.dev.inner().boot_control().slots[1].is_none());
    // A corrupted patch (hash checked) is refused too.
    let mut rig = mem_rig(&o);
    let mut bad = Update::delta(
        3,
        "2.0.0",
        2,
        "1.0.0",
        &o,
        &n,
        PatchFormat::BsdiffZstd,
        generate_patch(&o, &n, &GenerateOptions::new(PatchFormat::BsdiffZstd)).unwrap(),
        1024,
    );
    bad.payload[20] ^= 0xff;
    bad.target.deltas[0].chunk_list_digest = None;
    if let ImageEncoding::Delta { patch_sha256, .. } = &mut bad.encoding {
        *patch_sha256 = sha256(&bad.payload);
    }
    bad.target.deltas[0].patch_sha256 = sha256(&bad.payload);
    assert!(
        matches!(up_to_prepare(&mut rig, &bad), PrepareOutcome::Failed(f) if matches!(f.code, FailureCode::DeltaCorrupt | FailureCode::HashMismatch))
    );
    assert_eq!(running_sha(&rig), sha256(&o));
}

#[test]
fn resent_prepare_answered_without_rework() {
    let mut rig = mem_rig(&old());
    let u = Update::full(1, "2.0.0", 2, &new_img(), 1024);
    let first = up_to_prepare(&mut rig, &u);
    assert!(matches!(first, PrepareOutcome::Ready { .. }));
    let read_before = rig.dev.inner().stats.staging_bytes_read.get();
    let gen_before = rig.agent().state().generation;
    let again = prepare_result(&rig.send(u.prepare()).unwrap());
    assert_eq!(again, first);
    assert_eq!(rig.dev.inner().stats.staging_bytes_read.get(), read_before);
    assert_eq!(rig.agent().state().generation, gen_before);
}

#[test]
fn busy_agent_answers_do_not_disturb() {
    let mut rig = mem_rig(&old());
    let u = Update::full(1, "2.0.0", 2, &new_img(), 1024);
    assert!(matches!(
        up_to_prepare(&mut rig, &u),
        PrepareOutcome::Ready { .. }
    ));
    let (_, poll) = rig.send_only(u.install(true)).unwrap();
    assert!(poll);
    let (r, _) = rig
        .send_only(Payload::InventoryQuery(InventoryQuery { nonce: [1; 16] }))
        .unwrap();
    assert!(
        matches!(&r[0], Payload::DoNotDisturb(d) if d.reason == BusyReason::Installing && d.retry_after_ms > 0)
    );
    let other = Update::full(2, "3.0.0", 3, &image(5, 100), 1024);
    let (r, _) = rig.send_only(other.metadata()).unwrap();
    assert!(matches!(&r[0], Payload::DoNotDisturb(_)));
    // Finishing the work makes it answer again.
    let r = rig.poll_all().unwrap();
    assert!(matches!(
        install_result(&r),
        InstallOutcome::Installed { .. }
    ));
    let r = rig
        .send(Payload::InventoryQuery(InventoryQuery { nonce: [1; 16] }))
        .unwrap();
    assert!(matches!(&r[0], Payload::InventoryReport(i) if i.state == AgentState::AwaitingConfirm));
}

#[test]
fn safety_critical_agent_checks_its_own_preconditions() {
    let o = old();
    let cfg = config()
        .safety_critical(r#"speed == 0 && gear == "P" && battery_soc >= 40"#)
        .unwrap();
    let mut rig = Rig::new(
        MemDevice::new(v("1.0.0"), 1, o.clone(), CAP),
        MemJournal::new(),
        cfg,
    );
    let moving = vec![
        Signal {
            name: "speed".into(),
            value: SignalValue::Float(32.5),
        },
        Signal {
            name: "gear".into(),
            value: SignalValue::Text("D".into()),
        },
        Signal {
            name: "battery_soc".into(),
            value: SignalValue::Int(80),
        },
    ];
    rig.dev.inner_mut().set_signals(moving);
    let u = Update::full(1, "2.0.0", 2, &new_img(), 1024);
    assert!(matches!(
        up_to_prepare(&mut rig, &u),
        PrepareOutcome::Ready { .. }
    ));
    match install_result(&rig.send(u.install(false)).unwrap()) {
        InstallOutcome::Failed { failure, .. } => {
            assert_eq!(failure.code, FailureCode::PreconditionFailed);
            assert_eq!(failure.class, ErrorClass::Retryable);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.dev.inner().stats.activations.get(), 0);
    // Missing signals fail safe as well.
    rig.dev.inner_mut().set_signals(vec![]);
    assert!(matches!(
        install_result(&rig.send(u.install(false)).unwrap()),
        InstallOutcome::Failed { .. }
    ));
    rig.dev.inner_mut().set_signals(vec![
        Signal {
            name: "speed".into(),
            value: SignalValue::Int(0),
        },
        Signal {
            name: "gear".into(),
            value: SignalValue::Text("P".into()),
        },
        Signal {
            name: "battery_soc".into(),
            value: SignalValue::Int(55),
        },
    ]);
    assert!(matches!(
        install_result(&rig.send(u.install(false)).unwrap()),
        InstallOutcome::Installed { .. }
    ));
    // A safety-critical Agent without a precondition is refused.
    let mut bad = config();
    bad.criticality = Criticality::SafetyCritical;
    assert!(bad.validate().is_err());
}

#[test]
fn client_rollback_to_previous_slot_backup_and_version() {
    let (o, n) = (old(), new_img());
    let b = image(77, 9_000);
    for target in [
        RollbackTarget::PreviousSlot,
        RollbackTarget::Backup,
        RollbackTarget::Version(v("0.9.0")),
    ] {
        let mut rig = mem_rig(&o);
        rig.dev.inner_mut().add_backup(v("0.9.0"), 1, b.clone());
        let u = Update::full(1, "2.0.0", 2, &n, 1024);
        assert_eq!(drive_install(&mut rig, &u, false), Round::Done);
        let r = rig.send(u.rollback(target.clone())).unwrap();
        let expect = if target == RollbackTarget::PreviousSlot {
            ("1.0.0", sha256(&o))
        } else {
            ("0.9.0", sha256(&b))
        };
        assert!(r.iter().any(|p| matches!(p, Payload::RollbackResult(x) if x.outcome == RollbackOutcome::RolledBack { version: v(expect.0) })), "{target:?}: {r:?}");
        assert_eq!(running_sha(&rig), expect.1);
        // Re-sent: same answer, no work.
        let r = rig.send(u.rollback(target.clone())).unwrap();
        assert!(matches!(&r[0], Payload::RollbackResult(_)));
    }
}

#[test]
fn backup_rollback_walks_the_ordered_list() {
    let o = old();
    let mut rig = mem_rig(&o);
    let (b1, b2) = (image(11, 5000), image(12, 6000));
    rig.dev.inner_mut().add_backup(v("0.8.0"), 1, b2.clone());
    rig.dev.inner_mut().add_backup(v("0.9.0"), 1, b1.clone()); // most recent first
    rig.dev.inner_mut().corrupt_backup(0); // 0.9.0 is damaged
    let u = Update::full(1, "2.0.0", 2, &new_img(), 1024);
    assert_eq!(drive_install(&mut rig, &u, false), Round::Done);
    let r = rig.send(u.rollback(RollbackTarget::Backup)).unwrap();
    assert!(r.iter().any(|p| matches!(p, Payload::RollbackResult(x) if x.outcome == RollbackOutcome::RolledBack { version: v("0.8.0") })), "{r:?}");
    assert_eq!(running_sha(&rig), sha256(&b2));
    // Nothing left to roll back to: a truthful failure.
    let mut rig = mem_rig(&o);
    let r = rig.send(u.rollback(RollbackTarget::Backup)).unwrap();
    assert!(r.iter().any(|p| matches!(p, Payload::RollbackResult(x) if matches!(&x.outcome, RollbackOutcome::Failed(f) if f.code == FailureCode::RollbackFailed))), "{r:?}");
    assert_eq!(running_sha(&rig), sha256(&o));
}

#[test]
fn confirm_timeout_rolls_back() {
    let (o, n) = (old(), new_img());
    let mut rig = mem_rig(&o);
    let u = Update::full(1, "2.0.0", 2, &n, 1024);
    assert!(matches!(
        up_to_prepare(&mut rig, &u),
        PrepareOutcome::Ready { .. }
    ));
    let r = rig.send(u.install(true)).unwrap();
    assert!(matches!(
        install_result(&r),
        InstallOutcome::Installed {
            awaiting_confirm: true,
            ..
        }
    ));
    let (_, _) = rig
        .send_only(Payload::InventoryQuery(InventoryQuery { nonce: [0; 16] }))
        .unwrap();
    rig.advance(rig.config.confirm_timeout_ms.unwrap());
    let r = rig.poll_all().unwrap();
    assert!(
        matches!(install_result(&r), InstallOutcome::Failed { failure, running } if failure.code == FailureCode::Timeout && running == v("1.0.0"))
    );
    assert_eq!(running_sha(&rig), sha256(&o));
}

#[test]
fn transfer_resumes_after_restart() {
    let mut rig = mem_rig(&old());
    let u = Update::full(1, "2.0.0", 2, &new_img(), 1024);
    rig.send(u.metadata()).unwrap();
    rig.send(u.offer()).unwrap();
    rig.send(u.transfer_start()).unwrap();
    for i in 0..11 {
        rig.send(u.chunk(i)).unwrap();
    }
    // Journaled every 4 chunks: 8; chunks 8..11 are re-verified from staging.
    rig.crash();
    rig.boot().unwrap();
    let mut again = u.clone();
    again.transfer_id = esync_proto::id::Id128([9; 16]);
    let r = rig.send(again.transfer_start()).unwrap();
    assert!(
        matches!(&r[0], Payload::TransferAck(a) if a.next_chunk == 11),
        "{r:?}"
    );
    let r = rig
        .send(Payload::TransferQuery(TransferQuery {
            transfer_id: again.transfer_id,
        }))
        .unwrap();
    assert!(matches!(&r[0], Payload::TransferAck(a) if a.next_chunk == 11));
    for i in 11..again.chunks() {
        rig.send(again.chunk(i)).unwrap();
    }
    assert!(matches!(
        prepare_result(&rig.send(again.prepare()).unwrap()),
        PrepareOutcome::Ready { .. }
    ));
}

#[test]
fn final_report_survives_a_crash_before_it_was_sent() {
    let (o, n) = (old(), new_img());
    let mut rig = mem_rig(&o);
    let u = Update::full(1, "2.0.0", 2, &n, 1024);
    assert!(matches!(
        up_to_prepare(&mut rig, &u),
        PrepareOutcome::Ready { .. }
    ));
    // Run the install without delivering anything, then lose power.
    let msg_count = rig.log.len();
    let _ = rig.send_only(u.install(false)).unwrap();
    {
        let agent = rig.agent.as_mut().unwrap();
        let mut ctx = esync_agent::Context {
            device: &mut rig.dev,
            journal: &mut rig.journal,
            verifier: &mut *rig.verifier,
            patcher: &*rig.patcher,
            policy: &mut *rig.policy,
            reporter: None,
        };
        let now = esync_agent::Now {
            mono_ms: rig.mono,
            wall_ms: rig.now,
        };
        loop {
            let out = agent.poll(now, &mut ctx).unwrap();
            if !out.poll {
                break;
            }
        }
    }
    assert_eq!(rig.log.len(), msg_count + 1); // only the pre-install progress went out
    rig.crash();
    let r = rig.boot().unwrap();
    assert_eq!(
        install_result(&r),
        InstallOutcome::Installed {
            version: v("2.0.0"),
            awaiting_confirm: false
        }
    );
    assert_eq!(running_sha(&rig), sha256(&n));
}

#[test]
fn read_and_write_faults_are_reported_not_fatal() {
    let (o, n) = (old(), new_img());
    let mut rig = mem_rig(&o);
    let u = Update::full(1, "2.0.0", 2, &n, 1024);
    assert!(matches!(
        up_to_prepare(&mut rig, &u),
        PrepareOutcome::Ready { .. }
    ));
    // A flash write error fails the attempt (retryable), the old image runs.
    rig.switch.fail_next("slot write", 1);
    match install_result(&rig.send(u.install(false)).unwrap()) {
        InstallOutcome::Failed { failure, running } => {
            assert_eq!(
                (failure.code, failure.class),
                (FailureCode::WriteFailed, ErrorClass::Retryable)
            );
            assert_eq!(running, v("1.0.0"));
        }
        other => panic!("{other:?}"),
    }
    // A failing activation, too.
    rig.switch.fail_next("activate", 1);
    assert!(
        matches!(install_result(&rig.send(u.install(false)).unwrap()), InstallOutcome::Failed { failure, .. } if failure.code == FailureCode::ActivationFailed)
    );
    assert_eq!(running_sha(&rig), sha256(&o));
    // A staging read error during a fresh prepare is a retryable failure.
    let mut rig = mem_rig(&o);
    rig.send(u.metadata()).unwrap();
    rig.send(u.offer()).unwrap();
    rig.send(u.transfer_start()).unwrap();
    for i in 0..u.chunks() {
        rig.send(u.chunk(i)).unwrap();
    }
    rig.switch.fail_next("staging read", 1);
    assert!(
        matches!(prepare_result(&rig.send(u.prepare()).unwrap()), PrepareOutcome::Failed(f) if f.class == ErrorClass::Retryable)
    );
    assert!(matches!(
        prepare_result(&rig.send(u.prepare()).unwrap()),
        PrepareOutcome::Ready { .. }
    ));
}
