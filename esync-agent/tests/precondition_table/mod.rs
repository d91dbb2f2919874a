//! The one table of precondition texts, vehicle signals and verdicts that
//! every side must reach: shared by `esync-agent/tests/precondition_sides.rs`
//! (package builder, Agent install precondition, Agent consent policy) and
//! `esync-client/tests/orchestrate_precondition_sides.rs` (the Client core
//! with in-process Agents), so the two cannot drift apart.
#![allow(dead_code, reason = "each test uses a subset")]

use esync_proto::message::{Signal, SignalValue};

/// What a side concludes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The expression holds: install (or consent).
    Met,
    /// It does not hold or cannot be evaluated (missing or mistyped signal).
    NotMet,
    /// The expression is refused before any evaluation.
    Refused,
}
pub use Verdict::*;

pub fn sig(name: &str, value: SignalValue) -> Signal {
    Signal {
        name: name.into(),
        value,
    }
}

pub fn parked() -> Vec<Signal> {
    vec![
        sig("speed", SignalValue::Int(0)),
        sig("gear", SignalValue::Text("P".into())),
        sig("battery_soc", SignalValue::Float(55.5)),
        sig("ignition", SignalValue::Bool(false)),
        // A signal named `P`, so that `gear == P` could compare two signals.
        sig("P", SignalValue::Text("P".into())),
        sig("Vehicle.Speed", SignalValue::Float(0.0)),
        sig(
            "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current",
            SignalValue::Float(72.0),
        ),
        sig("Vehicle.IsMoving", SignalValue::Bool(false)),
    ]
}

pub fn moving() -> Vec<Signal> {
    vec![
        sig("speed", SignalValue::Float(32.5)),
        sig("gear", SignalValue::Text("D".into())),
        sig("battery_soc", SignalValue::Int(80)),
        sig("ignition", SignalValue::Bool(true)),
        sig("Vehicle.Speed", SignalValue::Float(32.5)),
        sig("Vehicle.IsMoving", SignalValue::Bool(true)),
    ]
}

pub fn without(name: &str, mut s: Vec<Signal>) -> Vec<Signal> {
    s.retain(|x| x.name != name);
    s
}

pub fn with(name: &str, value: SignalValue, s: Vec<Signal>) -> Vec<Signal> {
    let mut s = without(name, s);
    s.insert(0, sig(name, value));
    s
}

pub type Row = (&'static str, fn() -> Vec<Signal>, Verdict);

pub const PARKED: &str = r#"speed == 0 && gear == "P" && battery_soc >= 40"#;

pub const TABLE: &[Row] = &[
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
    // The former drift: text must be quoted; a bare word is a signal, and two
    // signals do not compare (the package side took `P` as text, the Agent
    // as a signal).
    ("gear == P", parked, Refused),
    (r#"gear == "P""#, parked, Met),
    // VSS paths, case-sensitive.
    (
        "Vehicle.Speed == 0 && Vehicle.Powertrain.TractionBattery.StateOfCharge.Current >= 40",
        parked,
        Met,
    ),
    ("Vehicle.speed == 0", parked, NotMet),
    ("!Vehicle.IsMoving", parked, Met),
    ("!Vehicle.IsMoving", moving, NotMet),
    // Negation, precedence, bare booleans.
    ("!ignition || speed < 1.5", parked, Met),
    ("!ignition || speed < 1.5", moving, NotMet),
    ("speed == 1 && speed == 2 || speed == 0", parked, Met),
    ("speed == 1 && (speed == 2 || speed == 0)", parked, NotMet),
    ("!speed == 0", parked, Refused),
    ("!(speed == 0)", moving, Met),
    ("speed", parked, NotMet),
    ("-5 < speed", parked, Met),
    ("ignition == false", parked, Met),
    // An error on one side of `||` is not hidden by the other.
    ("speed == 0 || odometer > 5", parked, NotMet),
    // Text compares with == and != only.
    (r#"gear < "P""#, parked, Refused),
    (r#"speed == "0""#, parked, NotMet),
    // Limits.
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
