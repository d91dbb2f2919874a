//! Two clocks: deadlines run on the monotonic clock, expiry on wall time.
//! A jump of the wall clock (either way) neither fires nor stalls the
//! confirm timeout; a bogus future wall time does not stay in the journal;
//! a restart re-arms a pending confirm deadline with the full timeout.
#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

use common::*;
use esync_agent::device::sha256;
use esync_proto::message::*;

const DAY: u64 = 86_400_000;

fn install_result(msgs: &[Payload]) -> Option<InstallOutcome> {
    find(msgs, |p| match p {
        Payload::InstallResult(r) => Some(r.outcome.clone()),
        _ => None,
    })
}

fn prepared(rig: &mut MemRig, u: &Update) {
    rig.send(u.metadata()).unwrap();
    rig.send(u.offer()).unwrap();
    rig.send(u.transfer_start()).unwrap();
    for i in 0..u.chunks() {
        rig.send(u.chunk(i)).unwrap();
    }
    let r = rig.send(u.prepare()).unwrap();
    assert!(
        r.iter().any(|p| matches!(p, Payload::PrepareResult(r) if matches!(r.outcome, PrepareOutcome::Ready { .. }))),
        "{r:?}"
    );
}

/// An installed update waiting for its confirm.
fn awaiting_confirm(rig: &mut MemRig, u: &Update) {
    prepared(rig, u);
    let r = rig.send(u.install(true)).unwrap();
    assert!(
        matches!(
            install_result(&r),
            Some(InstallOutcome::Installed {
                awaiting_confirm: true,
                ..
            })
        ),
        "{r:?}"
    );
}

fn timeout(rig: &MemRig) -> u64 {
    rig.config.confirm_timeout_ms.unwrap()
}

fn timed_out(msgs: &[Payload]) -> bool {
    matches!(install_result(msgs), Some(InstallOutcome::Failed { failure, .. }) if failure.code == FailureCode::Timeout)
}

#[test]
fn a_forward_wall_jump_does_not_roll_back_a_good_update() {
    let (o, n) = (image(1, 9_000), image(2, 11_000));
    let mut rig = mem_rig(&o);
    let u = Update::full(1, "2.0.0", 2, &n, 1024);
    awaiting_confirm(&mut rig, &u);
    // The real-time clock is corrected by half a day; a second passes.
    rig.now += DAY / 2;
    rig.mono += 1_000;
    let r = rig.poll_all().unwrap();
    assert!(!timed_out(&r), "{r:?}");
    let r = rig.send(u.confirm()).unwrap();
    assert!(
        r.iter().any(|p| matches!(p, Payload::Confirmed(_))),
        "{r:?}"
    );
    assert_eq!(sha256(rig.dev.inner().running_bytes()), sha256(&n));
}

#[test]
fn a_backward_wall_jump_does_not_stall_the_confirm_timeout() {
    let (o, n) = (image(1, 9_000), image(2, 11_000));
    let mut rig = mem_rig(&o);
    let u = Update::full(1, "2.0.0", 2, &n, 1024);
    rig.now = T0 + 3_600_000;
    awaiting_confirm(&mut rig, &u);
    // The real-time clock is set back a day; the timeout passes.
    rig.now = T0 - DAY;
    rig.mono += timeout(&rig);
    let r = rig.poll_all().unwrap();
    assert!(timed_out(&r), "{r:?}");
    assert_eq!(sha256(rig.dev.inner().running_bytes()), sha256(&o));
}

#[test]
fn a_bogus_future_wall_time_does_not_stay_in_the_journal() {
    let (o, n) = (image(1, 9_000), image(2, 11_000));
    let mut rig = mem_rig(&o);
    // One message at a wall time ten years ahead (metadata that does not
    // verify; the refusal is journaled).
    rig.now = T0 + 3_650 * DAY;
    rig.send(Payload::UpdateMetadata(UpdateMetadata {
        update_id: esync_proto::id::Id128([9; 16]),
        director: vec![],
        image: vec![],
    }))
    .unwrap();
    assert!(rig.agent().state().clock_ms <= T0);
    rig.crash();
    rig.now = T0;
    rig.boot().unwrap();
    assert!(rig.agent().state().clock_ms <= T0);
    // Metadata valid now still verifies and installs.
    let u = Update::full(1, "2.0.0", 2, &n, 1024);
    prepared(&mut rig, &u);
    let r = rig.send(u.install(false)).unwrap();
    assert!(
        matches!(install_result(&r), Some(InstallOutcome::Installed { .. })),
        "{r:?}"
    );

    // With metadata held, the floor rises at most to its signed expiry.
    let u2 = Update::full(2, "3.0.0", 3, &image(3, 10_000), 1024);
    rig.send(u2.metadata()).unwrap();
    rig.now = T0 + 3_650 * DAY;
    rig.send(Payload::InventoryQuery(InventoryQuery { nonce: [2; 16] }))
        .unwrap();
    assert_eq!(rig.agent().state().clock_ms, u2.target.expires_ms);
}

#[test]
fn a_restart_rearms_the_confirm_deadline_on_the_new_monotonic_clock() {
    let (o, n) = (image(1, 9_000), image(2, 11_000));
    let mut rig = mem_rig(&o);
    let u = Update::full(1, "2.0.0", 2, &n, 1024);
    rig.mono = 5_000_000;
    awaiting_confirm(&mut rig, &u);
    rig.advance(timeout(&rig) / 2);
    // A restart: the monotonic clock starts again at 0.
    rig.crash();
    let r = rig.boot().unwrap();
    assert!(!timed_out(&r), "{r:?}");
    let rec = rig.agent().state().update.clone().unwrap();
    assert_eq!(rec.confirm_deadline_ms, Some(timeout(&rig)));
    // The full timeout runs again from the restart.
    rig.advance(timeout(&rig) - 1);
    let r = rig.poll_all().unwrap();
    assert!(!timed_out(&r), "{r:?}");
    rig.advance(1);
    let r = rig.poll_all().unwrap();
    assert!(timed_out(&r), "{r:?}");
    assert_eq!(sha256(rig.dev.inner().running_bytes()), sha256(&o));
}
