//! Writes the seed corpus of the fuzz targets under `fuzz/seeds/<target>/`:
//! genuine inputs of each decoder, so fuzzing starts past the first checks.
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds -- fuzz/seeds
//! ```
//!
//! The envelope targets (`frame`, `envelope`, `stream`) are seeded from
//! `esync-proto/tests/vectors/` at run time by `scripts/fuzz` instead.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fs;
use std::path::{Path, PathBuf};

use esync_agent::journal::encode_state;
use esync_agent::state::{JournalState, OutboxEntry, Stage, TransferRecord, UpdateRecord};
use esync_agent::target::{DeltaEntry, DirectedTarget};
use esync_package::build::{ComponentInput, PackageBuilder};
use esync_package::delta::generate::{generate_patch, GenerateOptions};
use esync_package::package::{ComponentPolicy, PackageId, Precondition};
use esync_proto::envelope::{Envelope, SignedEnvelope};
use esync_proto::frame::{self, FrameLimits};
use esync_proto::id::{DevicePath, EcuSerial, HardwareId, Id128, ReleaseCounter, SoftwareVersion};
use esync_proto::message::{
    Decision, ErrorClass, Failure, FailureCode, ImageEncoding, InstalledImage, PatchFormat,
    Payload, RollbackTarget,
};
use esync_uptane::repo::{Limits, Need, Repository};
use esync_uptane::store::MemoryStore;

type Seeds = BTreeMap<String, Vec<u8>>;

fn write(dir: &Path, target: &str, seeds: &Seeds) {
    let d = dir.join(target);
    fs::create_dir_all(&d).expect("create the seed directory");
    for (name, bytes) in seeds {
        fs::write(d.join(name), bytes).expect("write a seed");
    }
    println!("{target}: {} seeds", seeds.len());
}

fn v(s: &str) -> SoftwareVersion {
    SoftwareVersion::new(s).expect("valid version")
}

fn vector_payloads() -> Vec<Payload> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../esync-proto/tests/vectors");
    let mut out = Vec::new();
    let mut names: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("golden vectors")
        .map(|e| e.expect("directory entry").path())
        .collect();
    names.sort();
    for p in names {
        let text = fs::read_to_string(&p).expect("read a vector");
        let bytes = hex::decode(text.split_whitespace().collect::<String>()).expect("hex");
        let signed =
            SignedEnvelope::from_frame(&bytes, FrameLimits::new(64 * 1024)).expect("vector frame");
        let env: Envelope = frame::decode_body(&signed.signed).expect("vector body");
        out.push(env.payload);
    }
    out
}

fn journal_states() -> Vec<JournalState> {
    let digest = |n: u8| esync_proto::id::Sha256Digest([n; 32]);
    let target = DirectedTarget {
        target_name: "pkg/powertrain/ecm/2.0.0/full".into(),
        version: v("2.0.0"),
        release_counter: ReleaseCounter(2),
        length: 20_000,
        sha256: digest(1),
        hardware_id: HardwareId::new("ecm-hw").expect("hardware id"),
        ecu_serial: EcuSerial::new("ECM0001").expect("serial"),
        chunk_list_digest: Some(digest(2)),
        deltas: vec![DeltaEntry {
            format: PatchFormat::BsdiffZstd,
            from_version: v("1.0.0"),
            source_sha256: digest(3),
            patch_length: 900,
            patch_sha256: digest(4),
            chunk_list_digest: None,
        }],
        expires_ms: 1_900_000_000_000,
    };
    let from = InstalledImage {
        version: v("1.0.0"),
        release_counter: ReleaseCounter(1),
        length: 18_000,
        sha256: digest(3),
    };
    let failure = Failure {
        class: ErrorClass::Retryable,
        code: FailureCode::WriteFailed,
        message: "slot write failed".into(),
    };
    let record = |stage: Stage| UpdateRecord {
        update_id: Id128([7; 16]),
        target: Ok(target.clone()),
        encoding: Some(ImageEncoding::Full),
        decision: Some(Decision::Consent),
        transfer: Some(TransferRecord {
            transfer_id: Id128([8; 16]),
            total_length: 20_000,
            chunk_size: 4096,
            chunk_hashes: (0..5).map(digest).collect(),
            next_chunk: 3,
        }),
        stage,
        attempts: 1,
        activations: 1,
        await_confirm: true,
        install_correlation: Id128([9; 16]),
        confirm_correlation: Id128([10; 16]),
        confirm_deadline_ms: Some(1_800_000_000_000),
        from: Some(from.clone()),
        last_report: None,
        staged_image_offset: None,
    };
    let outbox: Vec<OutboxEntry> = vector_payloads()
        .into_iter()
        .enumerate()
        .map(|(i, payload)| OutboxEntry {
            id: i as u64,
            correlation: Id128([i as u8; 16]),
            payload,
        })
        .collect();
    let base = JournalState {
        generation: 12,
        clock_ms: 1_795_000_000_000,
        update: None,
        outbox: Vec::new(),
        next_outbox_id: 0,
    };
    vec![
        base.clone(),
        JournalState {
            update: Some(UpdateRecord {
                target: Err(failure.clone()),
                transfer: None,
                ..record(Stage::Verified)
            }),
            ..base.clone()
        },
        JournalState {
            update: Some(record(Stage::Receiving)),
            ..base.clone()
        },
        JournalState {
            update: Some(record(Stage::AwaitingConfirm)),
            ..base.clone()
        },
        JournalState {
            update: Some(record(Stage::RollingBack {
                target: RollbackTarget::PreviousSlot,
                expect: Some(from.clone()),
                failure: Some(failure),
                correlation: Id128([11; 16]),
            })),
            next_outbox_id: outbox.len() as u64,
            outbox,
            ..base
        },
    ]
}

fn journal() -> Seeds {
    let mut s = Seeds::new();
    for (i, state) in journal_states().iter().enumerate() {
        let record = encode_state(state).expect("encode");
        // The target reads its input both as a whole record and as the
        // body of one; seed both.
        s.insert(format!("record-{i}"), record.clone());
        s.insert(format!("body-{i}"), record[7..record.len() - 32].to_vec());
    }
    s
}

fn delta_patches() -> Seeds {
    let source = esync_fuzz::delta_source();
    let mut target = source.to_vec();
    target[1000..1200].fill(0x5a);
    target.extend_from_slice(&source[..3000]);
    let mut s = Seeds::new();
    for (name, format, zero_run) in [
        ("bsdiff40", PatchFormat::Bsdiff40, false),
        ("zstd-v1", PatchFormat::BsdiffZstd, false),
        ("zstd-v2", PatchFormat::BsdiffZstd, true),
        ("xz-v1", PatchFormat::BsdiffXz, false),
        ("xz-v2", PatchFormat::BsdiffXz, true),
    ] {
        let opts = GenerateOptions {
            zero_run_diff: zero_run,
            ..GenerateOptions::new(format)
        };
        let patch = generate_patch(source, &target, &opts).expect("generate a patch");
        s.insert(name.into(), patch);
    }
    s
}

fn package() -> Seeds {
    let image = esync_fuzz::delta_source().to_vec();
    let mut new = image.clone();
    new[10] ^= 0xff;
    let patch = generate_patch(&image, &new, &GenerateOptions::new(PatchFormat::BsdiffZstd))
        .expect("generate a patch");
    let input = |dev: &str, img: Vec<u8>, deps: Vec<DevicePath>, stage| ComponentInput {
        device: DevicePath::new(dev).expect("device path"),
        hardware_id: HardwareId::new("hw-1").expect("hardware id"),
        version: v("2.0.0"),
        release_counter: ReleaseCounter(2),
        image: img,
        depends_on: deps,
        stage,
        policy: ComponentPolicy {
            precondition: Some(
                Precondition::parse("speed == 0 && gear == \"P\"").expect("precondition"),
            ),
            consent_required: true,
            ..ComponentPolicy::default()
        },
    };
    let built = PackageBuilder::new(PackageId::new("pkg-1").expect("package id"))
        .chunk_size(4096)
        .component_from_image(
            input("/powertrain/ecm", new.clone(), vec![], 0),
            vec![(PatchFormat::BsdiffZstd, v("1.0.0"), &image, patch)],
        )
        .expect("component")
        .component_from_image(
            input(
                "/body/bcm",
                image.clone(),
                vec![DevicePath::new("/powertrain/ecm").expect("device path")],
                1,
            ),
            vec![],
        )
        .expect("component")
        .build()
        .expect("package builds");
    let mut s = Seeds::new();
    s.insert("package.json".into(), built.package.to_json());
    for (i, e) in built.package.target_entries().iter().enumerate() {
        s.insert(
            format!("custom-{i}.json"),
            serde_json::to_vec(&e.custom).expect("custom JSON"),
        );
    }
    s
}

fn uptane_metadata() -> Seeds {
    esync_fuzz::repo()
        .files
        .metadata
        .iter()
        .map(|(name, bytes)| (name.replace('/', "_"), bytes.clone()))
        .collect()
}

/// One seed per fetch of `esync_fuzz::drive_repo`: `[fetch index, resign,
/// the genuine file]` (the `(u8, bool, &[u8])` input of the target).
fn uptane_repo() -> Seeds {
    let fx = esync_fuzz::repo();
    let mut repo = Repository::open(MemoryStore::new(fx.root_v1.clone()), Limits::default())
        .expect("fixture root");
    let mut fetched: Vec<Option<Vec<u8>>> = Vec::new();
    let mut fetch = |need: &Need| -> Result<Option<Vec<u8>>, Infallible> {
        let got = fx.files.metadata.get(&need.path()).cloned();
        fetched.push(got.clone());
        Ok(got)
    };
    repo.refresh_with(esync_fuzz::NOW, &mut fetch)
        .expect("fixture refreshes");
    for t in esync_fuzz::TARGETS {
        repo.find_target_with(t, &mut fetch).expect("lookup");
    }
    let mut s = Seeds::new();
    for (i, file) in fetched.into_iter().enumerate() {
        let mut seed = vec![i as u8, 1];
        seed.extend(file.unwrap_or_default());
        s.insert(format!("fetch-{i}"), seed);
    }
    s
}

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: seeds <output directory>"),
    );
    let delta = delta_patches();
    write(&dir, "journal", &journal());
    write(&dir, "package", &package());
    write(&dir, "uptane_metadata", &uptane_metadata());
    write(&dir, "uptane_repo", &uptane_repo());
    write(&dir, "delta_header", &delta);
    write(&dir, "delta_apply", &delta);
}
