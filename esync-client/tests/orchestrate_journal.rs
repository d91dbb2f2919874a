//! Golden vector of the Client's campaign journal (format 1): the bytes of
//! a fixed state must not change without a new format number, and the
//! stored bytes must decode to the same state. `ESYNC_WRITE_VECTORS=1`
//! writes the file (only when the format number is bumped).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod orchestrate_rig;

use esync_client::core::journal::{decode, encode, ClientJournal, JOURNAL_FORMAT};
use esync_client::core::orchestrate::{
    Campaign, ComponentPhase, ComponentReport, ComponentState, Outcome, PackageReport,
    PackageVerdict,
};
use esync_proto::id::Id128;
use esync_proto::message::{ErrorClass, Failure, FailureCode};
use orchestrate_rig::*;

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/vectors/client_journal_v1.hex"
);

fn state() -> ClientJournal {
    let mut veh = Vehicle::new(&[0, 1], &[0, 0], 1_500);
    let spec = veh.package_spec("golden");
    let ready = veh.ready(spec);
    let failure = Failure {
        class: ErrorClass::Terminal,
        code: FailureCode::SelfTestFailed,
        message: "self-test".into(),
    };
    ClientJournal {
        generation: 42,
        campaign: Some(Campaign {
            ready,
            started_wall_ms: T0,
            components: vec![
                ComponentState {
                    device: device(0),
                    stage: 0,
                    version: v("2.0.0"),
                    update_id: Id128([1; 16]),
                    transfer_id: Id128([2; 16]),
                    phase: ComponentPhase::RollingBack,
                    attempts: 1,
                    failure: None,
                },
                ComponentState {
                    device: device(1),
                    stage: 1,
                    version: v("2.0.0"),
                    update_id: Id128([3; 16]),
                    transfer_id: Id128([4; 16]),
                    phase: ComponentPhase::RolledBack {
                        running: v("1.0.0"),
                    },
                    attempts: 2,
                    failure: Some(failure.clone()),
                },
            ],
            verdict: PackageVerdict::Abort {
                cause: "ecu01 failed".into(),
            },
        }),
        outbox: vec![PackageReport {
            package: esync_package::package::PackageId::new("earlier").unwrap(),
            outcome: Outcome::Installed,
            components: vec![ComponentReport {
                device: device(0),
                stage: 0,
                target: v("1.0.0"),
                end: ComponentPhase::Confirmed {
                    version: v("1.0.0"),
                },
                attempts: 1,
                failure: None,
            }],
        }],
    }
}

#[test]
fn format_1_golden_vector() {
    assert_eq!(JOURNAL_FORMAT, 1);
    let st = state();
    let bytes = encode(&st).unwrap();
    if std::env::var_os("ESYNC_WRITE_VECTORS").is_some() {
        std::fs::write(PATH, hex::encode(&bytes)).unwrap();
    }
    let golden = hex::decode(std::fs::read_to_string(PATH).unwrap().trim()).unwrap();
    assert_eq!(
        bytes, golden,
        "the journal encoding changed: bump JOURNAL_FORMAT"
    );
    assert_eq!(decode(&golden).unwrap(), st);
    // A flipped byte anywhere is refused, never read as another state.
    let mut bad = golden.clone();
    bad[golden.len() / 2] ^= 1;
    assert!(decode(&bad).is_err());
}
