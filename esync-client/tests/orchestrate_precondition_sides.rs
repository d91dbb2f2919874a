//! The Client as one more side of `esync-agent/tests/precondition_sides.rs`:
//! the rows of the one table both read (`esync-agent/tests/precondition_table/mod.rs`), each run through the real Client core with in-process
//! Agents. The Client refuses a malformed expression up front (from the
//! target entries), evaluates a well-formed one itself before `InstallStart`
//! (the package installs, or fails with `PreconditionFailed` without any
//! install starting), and the Agent, configured with the same expression,
//! evaluates it again: both must reach the verdict of the table.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod orchestrate_rig;

use esync_client::core::orchestrate::Outcome;
use esync_client::core::plan::{admit, Refusal, TargetEntryRef};
use esync_package::package::{Package, Precondition};
use esync_proto::message::{FailureCode, Signal};
use orchestrate_rig::*;

#[path = "../../esync-agent/tests/precondition_table/mod.rs"]
mod precondition_table;

use precondition_table::*;

/// The Client's verdict on `expr` with `signals` (and the Agent's, which
/// evaluates the same expression again).
fn client_verdict(expr: &str, signals: Vec<Signal>) -> Verdict {
    let mut veh = Vehicle::new(&[0], &[0], 1_500);
    veh.config.precondition_wait_ms = 1_000;
    veh.crash_client();
    veh.inventory();
    // The expression as the Director lists it in the target entry.
    let mut spec = veh.package_spec("sides");
    let entries = Package::new(spec.clone()).unwrap().target_entries();
    let mut custom = entries[0].custom.clone();
    custom["esync"]["component"]["policy"]["precondition"] = serde_json::Value::String(expr.into());
    let entry = TargetEntryRef {
        name: &entries[0].name,
        length: entries[0].length,
        sha256: &entries[0].sha256,
        custom: &custom,
    };
    match admit(&[entry], veh.client.as_ref().unwrap().inventory()) {
        Err(Refusal::Description { .. }) => return Refused,
        Err(other) => panic!("{expr:?}: refused for another reason: {other}"),
        Ok(p) => {
            let pre = p.components()[0].policy.precondition.clone();
            assert_eq!(pre, Some(Precondition::parse(expr).unwrap()));
            spec.components[0].policy.precondition = pre.clone();
            // The Agent is configured with the same expression and reads
            // the same vehicle state from its device.
            veh.nodes[0].config.install_precondition = pre;
            veh.nodes[0].dev.inner_mut().set_signals(signals.clone());
            veh.crash_agent(0);
        }
    }
    let ready = veh.ready(spec);
    veh.set_signals(signals);
    veh.start(ready).unwrap();
    let report = veh.run_campaign(600_000).expect("a report");
    veh.check_truthful(&report, expr);
    match report.outcome {
        Outcome::Installed => Met,
        Outcome::Failed { .. } => {
            let f = report.components[0].failure.as_ref().expect("a cause");
            assert_eq!(f.code, FailureCode::PreconditionFailed, "{expr:?}: {f:?}");
            assert!(
                !veh.nodes[0].received.contains(&"install-start"),
                "{expr:?}: install started although the Client found the precondition unmet"
            );
            NotMet
        }
    }
}

#[test]
fn the_client_reaches_the_verdict_of_every_side() {
    for (expr, signals, expected) in TABLE {
        assert_eq!(
            client_verdict(expr, signals()),
            *expected,
            "{expr:?} with {:?}",
            signals()
        );
    }
}
