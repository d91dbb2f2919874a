//! Orchestration with in-process Agents: stages, atomic rollback, A13.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod orchestrate_rig;

use esync_client::core::orchestrate::{ComponentPhase, Outcome};
use esync_client::core::plan::Refusal;
use esync_client::core::ClientError;
use esync_proto::message::{FailureCode, Signal, SignalValue};
use orchestrate_rig::*;

#[test]
fn three_stages_install_and_confirm() {
    let mut veh = Vehicle::new(&[0, 0, 1, 1, 2, 2], &[300, 100, 200, 400, 50, 50], 5_000);
    veh.inventory();
    let spec = veh.package_spec("pkg-ok");
    let ready = veh.ready(spec);
    veh.start(ready).unwrap();
    let report = veh.run_campaign(600_000).expect("a report");
    assert_eq!(report.outcome, Outcome::Installed, "{report:?}");
    veh.check_truthful(&report, "three stages");
    // The journal is empty again: nothing left to resume.
    let st = veh.client.as_ref().unwrap().state();
    assert!(st.campaign.is_none() && st.outbox.is_empty());
}

#[test]
fn agent_failing_in_stage_2_rolls_back_stages_1_and_2_and_never_starts_stage_3() {
    let mut veh = Vehicle::new(&[0, 0, 1, 1, 2, 2], &[10, 10, 10, 200, 10, 10], 5_000);
    veh.inventory();
    veh.fail_self_test(2);
    let spec = veh.package_spec("pkg-fail");
    let ready = veh.ready(spec);
    veh.start(ready).unwrap();
    let report = veh.run_campaign(600_000).expect("a report");
    assert!(
        matches!(report.outcome, Outcome::Failed { .. }),
        "{report:?}"
    );
    veh.check_truthful(&report, "stage 2 failure");
    for c in &report.components {
        let n = veh.nodes.iter().find(|n| n.device == c.device).unwrap();
        match c.stage {
            0 => {
                assert!(matches!(c.end, ComponentPhase::RolledBack { .. }), "{c:?}");
                assert!(n.received.contains(&"rollback"));
            }
            1 => assert!(matches!(c.end, ComponentPhase::RolledBack { .. }), "{c:?}"),
            _ => {
                assert!(
                    !n.received.contains(&"install-start"),
                    "stage 3 started on {}",
                    c.device
                );
                assert_eq!(c.attempts, 0);
            }
        }
    }
    let failing = report
        .components
        .iter()
        .find(|c| c.device == device(2))
        .unwrap();
    // Retried per component (the Agent's retryable failures) until the
    // limit; the cause names the self-test.
    let f = failing.failure.as_ref().expect("its cause");
    assert_eq!(f.code, FailureCode::RetryLimitReached, "{failing:?}");
    assert!(f.message.contains("self-test"), "{failing:?}");
    assert_eq!(failing.attempts, 3);
    // The components that did not fail carry no failure of their own.
    for c in report.components.iter().filter(|c| c.device != device(2)) {
        assert!(c.failure.is_none(), "{c:?}");
    }
}

#[test]
fn a13_withheld_component_is_not_installed() {
    let mut veh = Vehicle::new(&[0, 1, 1], &[10, 10, 10], 3_000);
    veh.inventory();
    let spec = veh.package_spec("pkg-a13");
    let mut ready = veh.ready(spec);
    // The Server withholds one component's blob: the package is refused.
    ready.components.remove(1);
    let sent_before: usize = veh.nodes.iter().map(|n| n.received.len()).sum();
    match veh.start(ready) {
        Err(ClientError::Refused(Refusal::Withheld(d))) => assert_eq!(d, device(1)),
        other => panic!("not refused: {other:?}"),
    }
    veh.run_until(|_| false, 60_000);
    let sent_after: usize = veh.nodes.iter().map(|n| n.received.len()).sum();
    assert_eq!(
        sent_before, sent_after,
        "frames were sent for a refused package"
    );
    assert_eq!(veh.blob_bytes_read, 0);
    assert!(veh.on_new().iter().all(|x| !x));
}

#[test]
fn precondition_holds_back_a_stage_until_the_vehicle_state_allows() {
    let mut veh = Vehicle::new(&[0, 1], &[10, 10], 3_000);
    veh.inventory();
    let mut spec = veh.package_spec("pkg-pre");
    spec.components[1].policy.precondition =
        Some(esync_proto::precondition::Precondition::parse("Vehicle.Speed == 0").unwrap());
    let ready = veh.ready(spec);
    veh.set_signals(vec![Signal {
        name: "Vehicle.Speed".into(),
        value: SignalValue::Int(50),
    }]);
    veh.start(ready).unwrap();
    veh.run_until(|_| false, 60_000);
    assert!(veh.reports.is_empty());
    assert!(!veh.nodes[1].received.contains(&"install-start"));
    veh.set_signals(vec![Signal {
        name: "Vehicle.Speed".into(),
        value: SignalValue::Int(0),
    }]);
    let report = veh.run_campaign(600_000).expect("a report");
    assert_eq!(report.outcome, Outcome::Installed, "{report:?}");
    veh.check_truthful(&report, "precondition");
}

#[test]
fn precondition_never_met_fails_the_package_truthfully() {
    let mut veh = Vehicle::new(&[0, 1], &[10, 10], 3_000);
    veh.config.precondition_wait_ms = 30_000;
    veh.crash_client();
    veh.inventory();
    let mut spec = veh.package_spec("pkg-pre2");
    spec.components[1].policy.precondition =
        Some(esync_proto::precondition::Precondition::parse("Vehicle.Speed == 0").unwrap());
    let ready = veh.ready(spec);
    veh.start(ready).unwrap();
    let report = veh.run_campaign(600_000).expect("a report");
    assert!(matches!(report.outcome, Outcome::Failed { .. }));
    veh.check_truthful(&report, "precondition never met");
    assert_eq!(
        report.components[1].failure.as_ref().map(|f| f.code),
        Some(FailureCode::PreconditionFailed)
    );
}
