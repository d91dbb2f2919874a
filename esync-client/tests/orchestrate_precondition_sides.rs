//! The Client as one more side of `esync-agent/tests/precondition_sides.rs`:
//! the rows of that table (copied here: the two test crates cannot share a
//! private table), each run through the real Client core with in-process
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
use esync_proto::message::{FailureCode, Signal, SignalValue};
use orchestrate_rig::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Met,
    NotMet,
    Refused,
}
use Verdict::*;

fn sig(name: &str, value: SignalValue) -> Signal {
    Signal {
        name: name.into(),
        value,
    }
}

fn parked() -> Vec<Signal> {
    vec![
        sig("speed", SignalValue::Int(0)),
        sig("gear", SignalValue::Text("P".into())),
        sig("battery_soc", SignalValue::Float(55.5)),
        sig("ignition", SignalValue::Bool(false)),
        sig("P", SignalValue::Text("P".into())),
        sig("Vehicle.Speed", SignalValue::Float(0.0)),
        sig(
            "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current",
            SignalValue::Float(72.0),
        ),
        sig("Vehicle.IsMoving", SignalValue::Bool(false)),
    ]
}

fn moving() -> Vec<Signal> {
    vec![
        sig("speed", SignalValue::Float(32.5)),
        sig("gear", SignalValue::Text("D".into())),
        sig("battery_soc", SignalValue::Int(80)),
        sig("ignition", SignalValue::Bool(true)),
        sig("Vehicle.Speed", SignalValue::Float(32.5)),
        sig("Vehicle.IsMoving", SignalValue::Bool(true)),
    ]
}

fn without(name: &str, mut s: Vec<Signal>) -> Vec<Signal> {
    s.retain(|x| x.name != name);
    s
}

fn with(name: &str, value: SignalValue, s: Vec<Signal>) -> Vec<Signal> {
    let mut s = without(name, s);
    s.insert(0, sig(name, value));
    s
}

type Row = (&'static str, fn() -> Vec<Signal>, Verdict);

const PARKED: &str = r#"speed == 0 && gear == "P" && battery_soc >= 40"#;

const TABLE: &[Row] = &[
    (PARKED, parked, Met),
    (PARKED, moving, NotMet),
    (PARKED, || without("battery_soc", parked()), NotMet),
    (
        PARKED,
        || with("battery_soc", SignalValue::Int(39), parked()),
        NotMet,
    ),
    (
        PARKED,
        || with("battery_soc", SignalValue::Float(f64::NAN), parked()),
        NotMet,
    ),
    (
        PARKED,
        || with("gear", SignalValue::Int(0), parked()),
        NotMet,
    ),
    (PARKED, Vec::new, NotMet),
    ("gear == P", parked, Refused),
    (r#"gear == "P""#, parked, Met),
    (
        "Vehicle.Speed == 0 && Vehicle.Powertrain.TractionBattery.StateOfCharge.Current >= 40",
        parked,
        Met,
    ),
    ("Vehicle.speed == 0", parked, NotMet),
    ("!Vehicle.IsMoving", parked, Met),
    ("!Vehicle.IsMoving", moving, NotMet),
    ("!ignition || speed < 1.5", parked, Met),
    ("!ignition || speed < 1.5", moving, NotMet),
    ("speed == 1 && speed == 2 || speed == 0", parked, Met),
    ("speed == 1 && (speed == 2 || speed == 0)", parked, NotMet),
    ("!speed == 0", parked, Refused),
    ("!(speed == 0)", moving, Met),
    ("speed", parked, NotMet),
    ("-5 < speed", parked, Met),
    ("ignition == false", parked, Met),
    ("speed == 0 || odometer > 5", parked, NotMet),
    (r#"gear < "P""#, parked, Refused),
    (r#"speed == "0""#, parked, NotMet),
    ("((((((((((((((((speed == 0))))))))))))))))", parked, Met),
    (
        "(((((((((((((((((speed == 0)))))))))))))))))",
        parked,
        Refused,
    ),
    ("", parked, Refused),
    ("speed == 0 &&", parked, Refused),
    ("speed == 1e999", parked, Refused),
];

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
