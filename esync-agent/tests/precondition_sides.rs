//! One precondition text, one verdict on every side.
//!
//! Each row of `precondition_table::TABLE` is an expression as an operator writes it, the
//! vehicle signals, and the verdict every side must reach: the package
//! builder (the precondition is parsed when the package is built, written
//! into the signed target description, and parsed again when the description
//! is received), the Agent's own install precondition ([`AgentConfig`]) and
//! the Agent's consent policy ([`PreconditionConsent`]). The Client's
//! orchestrator is one more side in
//! `esync-client/tests/orchestrate_precondition_sides.rs`, which reads the
//! same table (`precondition_table/mod.rs`).
#![allow(clippy::unwrap_used, reason = "test code")]

use esync_agent::config::AgentConfig;
use esync_agent::policy::{ConsentPolicy, PreconditionConsent};
use esync_agent::target::DirectedTarget;
use esync_package::build::{ComponentInput, PackageBuilder};
use esync_package::package::{ComponentPolicy, PackageId, Precondition, TargetDescription};
use esync_proto::id::{
    DevicePath, EcuSerial, HardwareId, Id128, ReleaseCounter, Sha256Digest, SoftwareVersion,
};
use esync_proto::message::{Decision, DownloadOffer, ImageEncoding, Signal};

mod precondition_table;

use precondition_table::*;

/// A component that parses and evaluates preconditions.
trait Side {
    fn name(&self) -> &'static str;
    /// The verdict on `expr` for a vehicle whose signals are `signals`.
    fn verdict(&self, expr: &str, signals: &[Signal]) -> Verdict;
}

fn sides() -> Vec<Box<dyn Side>> {
    vec![
        Box::new(PackageSide),
        Box::new(AgentInstallSide),
        Box::new(AgentConsentSide),
    ]
}

fn met(p: &Precondition, signals: &[Signal]) -> Verdict {
    // Every side: an evaluation error counts as "not met".
    if p.eval(signals) == Ok(true) {
        Met
    } else {
        NotMet
    }
}

/// Built into a package, serialised into the signed target description,
/// received and parsed back, then evaluated.
struct PackageSide;

impl PackageSide {
    fn build(precondition: Precondition) -> esync_package::package::TargetEntry {
        let input = ComponentInput {
            device: DevicePath::new("/powertrain/ecm").unwrap(),
            hardware_id: HardwareId::new("ecm-hw-1").unwrap(),
            version: SoftwareVersion::new("2.0.0").unwrap(),
            release_counter: ReleaseCounter(1),
            image: vec![7; 4096],
            depends_on: vec![],
            stage: 0,
            policy: ComponentPolicy {
                precondition: Some(precondition),
                ..ComponentPolicy::default()
            },
        };
        let built = PackageBuilder::new(PackageId::new("prec-sides").unwrap())
            .component_from_image(input, vec![])
            .unwrap()
            .build()
            .unwrap();
        built.package.target_entries().remove(0)
    }
}

impl Side for PackageSide {
    fn name(&self) -> &'static str {
        "package builder"
    }

    fn verdict(&self, expr: &str, signals: &[Signal]) -> Verdict {
        let (entry, built) = match Precondition::parse(expr) {
            Ok(p) => (Self::build(p), true),
            // Refused at build. The receipt side must refuse the same text
            // when a description carries it: put it into a valid one.
            Err(_) => {
                let mut entry = Self::build(Precondition::parse("true").unwrap());
                entry.custom["esync"]["component"]["policy"]["precondition"] = expr.into();
                (entry, false)
            }
        };
        let wire = entry.custom.to_string();
        let received = wire.parse().expect("the description is JSON");
        let desc = match TargetDescription::from_custom_json(
            &received,
            Some((&entry.name, entry.length, &entry.sha256)),
        ) {
            Ok(d) => d,
            Err(_) => return Refused,
        };
        let p = desc.component.policy.precondition.expect("it was set");
        assert!(
            built,
            "{expr:?} refused at package build but accepted at receipt as {p}"
        );
        met(&p, signals)
    }
}

/// A safety-critical Agent's own install precondition.
struct AgentInstallSide;

impl Side for AgentInstallSide {
    fn name(&self) -> &'static str {
        "agent install precondition"
    }

    fn verdict(&self, expr: &str, signals: &[Signal]) -> Verdict {
        let config = AgentConfig::new(
            DevicePath::new("/powertrain/ecm").unwrap(),
            HardwareId::new("ecm-hw-1").unwrap(),
            EcuSerial::new("ecm-0001").unwrap(),
        );
        let Ok(config) = config.safety_critical(expr) else {
            return Refused;
        };
        config.validate().unwrap();
        met(config.install_precondition.as_ref().unwrap(), signals)
    }
}

/// The Agent's consent policy: consent when the condition holds, postpone
/// otherwise.
struct AgentConsentSide;

impl Side for AgentConsentSide {
    fn name(&self) -> &'static str {
        "agent consent policy"
    }

    fn verdict(&self, expr: &str, signals: &[Signal]) -> Verdict {
        let Ok(condition) = expr.parse() else {
            return Refused;
        };
        let mut policy = PreconditionConsent {
            condition,
            postpone_ms: 60_000,
            max_bytes: 1 << 20,
        };
        let version = SoftwareVersion::new("2.0.0").unwrap();
        let sha256 = Sha256Digest([3; 32]);
        let offer = DownloadOffer {
            update_id: Id128([1; 16]),
            target_name: "prec-sides/powertrain/ecm/2.0.0/full".into(),
            version: version.clone(),
            release_counter: ReleaseCounter(1),
            length: 4096,
            sha256,
            encoding: ImageEncoding::Full,
            consent_required: false,
        };
        let target = DirectedTarget {
            target_name: offer.target_name.clone(),
            version,
            release_counter: ReleaseCounter(1),
            length: 4096,
            sha256,
            hardware_id: HardwareId::new("ecm-hw-1").unwrap(),
            ecu_serial: EcuSerial::new("ecm-0001").unwrap(),
            chunk_list_digest: None,
            deltas: vec![],
            expires_ms: u64::MAX,
        };
        match policy.decide(&offer, &target, signals, 1_000) {
            Decision::Consent => Met,
            Decision::Postpone { until_ms: 61_000 } => NotMet,
            other => panic!("{expr:?}: unexpected decision {other:?}"),
        }
    }
}

#[test]
fn the_same_text_gives_the_same_verdict_on_every_side() {
    let sides = sides();
    let mut failures = Vec::new();
    for (expr, signals, expected) in TABLE {
        for side in &sides {
            let got = side.verdict(expr, &signals());
            if got != *expected {
                failures.push(format!(
                    "{}: {expr:?} gave {got:?}, expected {expected:?}",
                    side.name()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn too_long_is_refused_on_every_side() {
    let long = vec!["speed == 0"; 100].join(" && ");
    let nested = format!("{}speed == 0{}", "!(".repeat(600), ")".repeat(600));
    for side in sides() {
        assert_eq!(side.verdict(&long, &parked()), Refused, "{}", side.name());
        assert_eq!(side.verdict(&nested, &parked()), Refused, "{}", side.name());
    }
}

#[test]
fn the_package_carries_the_canonical_text() {
    let entry = PackageSide::build(Precondition::parse("-5<speed&&(gear==\"P\")").unwrap());
    assert_eq!(
        entry.custom["esync"]["component"]["policy"]["precondition"],
        "speed > -5 && gear == \"P\""
    );
}
