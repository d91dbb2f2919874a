//! The Agent with real Uptane verification (esync-uptane) of metadata made
//! by the signing side, carrying esync-package target descriptions, and a
//! real delta (esync-package).
#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

use std::collections::BTreeMap;

use common::*;
use esync_agent::device::sha256;
use esync_agent::uptane::{UptaneFull, UptanePartial};
use esync_agent::AgentConfig;
use esync_package::build::{ComponentInput, PackageBuilder};
use esync_package::delta::generate::{generate_patch, GenerateOptions};
use esync_package::package::{ArtifactRef, ComponentPolicy, PackageId, TargetDescription};
use esync_proto::id::{EcuSerial, HardwareId, ReleaseCounter, Vin};
use esync_proto::message::*;
use esync_uptane::builder::{RepositoryBuilder, RoleSetup};
use esync_uptane::crypto::{Scheme, SchemeSet};
use esync_uptane::repo::Limits;
use esync_uptane::uptane::{
    director_custom, image_custom, EcuInfo, FullVerifier, PartialVerifier, Vehicle,
};
use esync_uptane::{MemoryStore, UnixTime};

// T0 in seconds.
const NOW_S: i64 = (T0 / 1000) as i64;

fn vin() -> Vin {
    Vin::new("WVWZZZ1JZXW000001").unwrap()
}

fn old() -> Vec<u8> {
    image(21, 12_000)
}

fn new_img() -> Vec<u8> {
    let mut n = old();
    n[4000..4400].copy_from_slice(&image(22, 400));
    n.extend_from_slice(&image(23, 700));
    n
}

struct World {
    director: RepositoryBuilder,
    image_repo: RepositoryBuilder,
    full_entry: (String, esync_package::package::TargetEntry),
    patch: Vec<u8>,
}

fn world(hw: &str, ecu: &str, expires_in_s: i64) -> World {
    world_for(&vin(), hw, ecu, expires_in_s)
}

/// A world whose Director directs its target at vehicle `target_vin`.
fn world_for(target_vin: &Vin, hw: &str, ecu: &str, expires_in_s: i64) -> World {
    let (o, n) = (old(), new_img());
    let patch = generate_patch(&o, &n, &GenerateOptions::new(PatchFormat::BsdiffZstd)).unwrap();
    let cfg = config();
    let built = PackageBuilder::new(PackageId::new("pkg-1").unwrap())
        .chunk_size(1024)
        .component_from_image(
            ComponentInput {
                device: cfg.device.clone(),
                hardware_id: cfg.hardware_id.clone(),
                version: v("2.0.0"),
                release_counter: ReleaseCounter(2),
                image: n.clone(),
                depends_on: vec![],
                stage: 0,
                policy: ComponentPolicy::default(),
            },
            vec![(
                PatchFormat::BsdiffZstd,
                v("1.0.0"),
                o.as_slice(),
                patch.clone(),
            )],
        )
        .unwrap()
        .build()
        .unwrap();
    let entries = built.package.target_entries();
    let full = entries
        .into_iter()
        .find(|e| {
            TargetDescription::from_custom_json(&e.custom, None)
                .unwrap()
                .artifact
                == ArtifactRef::Full
        })
        .unwrap();
    let expires = UnixTime(NOW_S + 86_400);
    let mut director = RepositoryBuilder::generate(expires).unwrap();
    director.set_expires("targets", UnixTime(NOW_S + expires_in_s));
    let custom = director_custom(
        target_vin,
        &EcuSerial::new(ecu).unwrap(),
        &HardwareId::new(hw).unwrap(),
        ReleaseCounter(2),
        Some(full.custom.clone()),
    );
    director.add_target(&full.name, &n, Some(custom)).unwrap();
    director.publish().unwrap();
    let mut image_repo = RepositoryBuilder::generate(expires).unwrap();
    let icustom = image_custom(
        &[HardwareId::new(hw).unwrap()],
        ReleaseCounter(2),
        Some(full.custom.clone()),
    );
    image_repo
        .add_target(&full.name, &n, Some(icustom))
        .unwrap();
    image_repo.publish().unwrap();
    World {
        director,
        image_repo,
        full_entry: (full.name.clone(), full),
        patch,
    }
}

fn update(w: &World, id: u8) -> Update {
    let (o, n) = (old(), new_img());
    let mut u = Update::delta(
        id,
        "2.0.0",
        2,
        "1.0.0",
        &o,
        &n,
        PatchFormat::BsdiffZstd,
        w.patch.clone(),
        1024,
    );
    u.target.target_name = w.full_entry.0.clone();
    u.signed = Some(UpdateMetadata {
        update_id: u.id,
        director: w.director.files().top_level_roles(),
        image: w.image_repo.files().top_level_roles(),
    });
    u
}

fn partial_rig(w: &World) -> MemRig {
    let mut rig = mem_rig(&old());
    let cfg = config();
    let pv = PartialVerifier::open(
        MemoryStore::new(w.director.root_bytes(1).unwrap().to_vec()),
        vin(),
        cfg.serial.clone(),
        cfg.hardware_id.clone(),
        Limits::default(),
    )
    .unwrap();
    rig.verifier = Box::new(UptanePartial::new(pv));
    rig
}

fn prepare_outcome(rig: &mut MemRig, u: &Update) -> PrepareOutcome {
    rig.send(u.metadata()).unwrap();
    rig.send(u.offer()).unwrap();
    rig.send(u.transfer_start()).unwrap();
    for i in 0..u.chunks() {
        rig.send(u.chunk(i)).unwrap();
    }
    let r = rig.send(u.prepare()).unwrap();
    find(&r, |p| match p {
        Payload::PrepareResult(x) => Some(x.outcome.clone()),
        _ => None,
    })
    .unwrap()
}

#[test]
fn partial_verification_and_real_delta_install() {
    let w = world("ecm-hw-1", "ECM0001", 3600);
    let mut rig = partial_rig(&w);
    let u = update(&w, 1);
    assert_eq!(drive_install(&mut rig, &u, true), Round::Done);
    assert_eq!(sha256(rig.dev.inner().running_bytes()), sha256(&new_img()));
    // The verified target came from the signed package description.
    let t = rig
        .agent()
        .state()
        .update
        .as_ref()
        .unwrap()
        .target
        .clone()
        .unwrap();
    assert_eq!(t.deltas.len(), 1);
    assert!(t.chunk_list_digest.is_some());
    // Inventory says partial verification.
    let r = rig
        .send(Payload::InventoryQuery(InventoryQuery { nonce: [0; 16] }))
        .unwrap();
    assert!(
        matches!(&r[0], Payload::InventoryReport(i) if i.verification == VerificationLevel::Partial)
    );
}

/// The Director rotates its root and targets keys after the Agent was
/// provisioned: the Agent follows the signed root chain the Client forwards
/// and accepts targets signed by the new keys.
#[test]
fn partial_verification_follows_director_root_rotation() {
    let mut w = world("ecm-hw-1", "ECM0001", 3600);
    let mut rig = partial_rig(&w);
    w.director
        .rotate_keys("root", RoleSetup::generate(1, 1))
        .unwrap();
    w.director
        .rotate_keys("targets", RoleSetup::generate(1, 1))
        .unwrap();
    w.director.publish().unwrap();
    assert!(w.director.root_bytes(3).is_some(), "two rotations: root v3");
    let u = update(&w, 1);
    assert_eq!(drive_install(&mut rig, &u, true), Round::Done);
    assert_eq!(sha256(rig.dev.inner().running_bytes()), sha256(&new_img()));
}

/// A5 on the Agent: a Director root N+1 not signed by root N's keys is
/// refused, and targets signed only by its keys are not accepted.
#[test]
fn partial_verification_refuses_unchained_director_root() {
    let mut w = world("ecm-hw-1", "ECM0001", 3600);
    let mut rig = partial_rig(&w);
    let fresh = RoleSetup::generate(1, 1);
    let signers = fresh.keys.clone();
    w.director
        .rotate_keys_signed_by("targets", fresh, &signers)
        .unwrap();
    w.director.publish().unwrap();
    let u = update(&w, 1);
    match prepare_outcome(&mut rig, &u) {
        PrepareOutcome::Failed(f) => {
            assert_eq!(f.code, FailureCode::MetadataInvalid, "{f:?}");
            assert!(f.message.contains("root"), "{f:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sha256(rig.dev.inner().running_bytes()), sha256(&old()));
}

#[test]
fn metadata_signed_by_other_keys_refused() {
    let w = world("ecm-hw-1", "ECM0001", 3600);
    let other = world("ecm-hw-1", "ECM0001", 3600);
    let mut rig = partial_rig(&w);
    let mut u = update(&other, 1);
    u.signed.as_mut().unwrap().update_id = u.id;
    match prepare_outcome(&mut rig, &u) {
        PrepareOutcome::Failed(f) => assert_eq!(f.code, FailureCode::MetadataInvalid, "{f:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(sha256(rig.dev.inner().running_bytes()), sha256(&old()));
}

#[test]
fn signed_but_wrong_hardware_expired_or_not_directed() {
    for (hw, ecu, exp, code) in [
        ("bcm-hw-2", "ECM0001", 3600, FailureCode::HardwareMismatch),
        ("ecm-hw-1", "ECM0001", -10, FailureCode::MetadataExpired),
        ("ecm-hw-1", "TCU0009", 3600, FailureCode::NotDirected),
    ] {
        let w = world(hw, ecu, exp);
        let mut rig = partial_rig(&w);
        let u = update(&w, 1);
        match prepare_outcome(&mut rig, &u) {
            PrepareOutcome::Failed(f) => assert_eq!(f.code, code, "{hw} {ecu} {exp}: {f:?}"),
            other => panic!("{other:?}"),
        }
    }
}

/// Director metadata signed by the right keys but directed at another
/// vehicle is "not directed" at this ECU, not "metadata invalid".
#[test]
fn signed_for_another_vehicle_is_not_directed() {
    let other = Vin::new("WVWZZZ1JZXW000002").unwrap();
    let w = world_for(&other, "ecm-hw-1", "ECM0001", 3600);
    let mut rig = partial_rig(&w);
    let u = update(&w, 1);
    match prepare_outcome(&mut rig, &u) {
        PrepareOutcome::Failed(f) => {
            assert_eq!(f.code, FailureCode::NotDirected, "{f:?}");
            assert!(f.message.contains("WVWZZZ1JZXW000002"), "{f:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sha256(rig.dev.inner().running_bytes()), sha256(&old()));
}

#[test]
fn full_verification_installs() {
    let w = world("ecm-hw-1", "ECM0001", 3600);
    let mut rig = mem_rig(&old());
    let cfg = config();
    let mut ecus = BTreeMap::new();
    ecus.insert(
        cfg.serial.clone(),
        EcuInfo {
            hardware_id: cfg.hardware_id.clone(),
            installed_release_counter: ReleaseCounter(1),
        },
    );
    let fv = FullVerifier::open(
        MemoryStore::new(w.director.root_bytes(1).unwrap().to_vec()),
        MemoryStore::new(w.image_repo.root_bytes(1).unwrap().to_vec()),
        Vehicle { vin: vin(), ecus },
        Limits::default(),
    )
    .unwrap();
    rig.verifier = Box::new(UptaneFull::new(fv));
    let u = update(&w, 1);
    assert_eq!(drive_install(&mut rig, &u, false), Round::Done);
    assert_eq!(sha256(rig.dev.inner().running_bytes()), sha256(&new_img()));
    // Image repository metadata withheld: refused.
    let w2 = world("ecm-hw-1", "ECM0001", 3600);
    let mut u2 = update(&w2, 2);
    u2.signed.as_mut().unwrap().image.clear();
    let mut rig2 = mem_rig(&old());
    let mut ecus = BTreeMap::new();
    ecus.insert(
        cfg.serial.clone(),
        EcuInfo {
            hardware_id: cfg.hardware_id.clone(),
            installed_release_counter: ReleaseCounter(1),
        },
    );
    rig2.verifier = Box::new(UptaneFull::new(
        FullVerifier::open(
            MemoryStore::new(w2.director.root_bytes(1).unwrap().to_vec()),
            MemoryStore::new(w2.image_repo.root_bytes(1).unwrap().to_vec()),
            Vehicle { vin: vin(), ecus },
            Limits::default(),
        )
        .unwrap(),
    ));
    assert!(
        matches!(prepare_outcome(&mut rig2, &u2), PrepareOutcome::Failed(f) if f.code == FailureCode::MetadataInvalid)
    );
}

#[test]
fn signed_version_report_with_nonce_and_attack_indicator() {
    use esync_agent::uptane::UptaneReporter;
    use esync_uptane::crypto::RawSigned;
    let key = esync_uptane::PrivateKey::from_seed(&[9; 32]);
    let public = key.public_key();
    let w = world("ecm-hw-1", "ECM0001", 3600);
    let mut rig = partial_rig(&w);
    rig.reporter = Some(Box::new(UptaneReporter::new(key, config().serial)));
    let report = |rig: &mut MemRig, nonce: [u8; 16]| {
        let r = rig
            .send(Payload::VersionReportRequest(VersionReportRequest {
                nonce,
            }))
            .unwrap();
        let Some(Payload::VersionReport(v)) = r.first() else {
            panic!("{r:?}")
        };
        let raw = RawSigned::from_slice("report", &v.signed_json).unwrap();
        let canon = esync_uptane::canonical::to_canonical(&raw.signed).unwrap();
        let sig: Vec<u8> = (0..64)
            .map(|i| u8::from_str_radix(&raw.signatures[0].sig[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        assert!(public.verify(&canon, &sig), "report signature");
        raw.signed
    };
    let s = report(&mut rig, [0xab; 16]);
    assert_eq!(s["nonce"], "ab".repeat(16));
    assert_eq!(s["ecu_serial"], "ECM0001");
    assert_eq!(s["release_counter"], 1);
    assert_eq!(s["attacks_detected"], "");
    // Metadata signed by other keys: the next report carries the indicator.
    let other = world("ecm-hw-1", "ECM0001", 3600);
    let u = update(&other, 5);
    rig.send(u.metadata()).unwrap();
    let s = report(&mut rig, [0xcd; 16]);
    assert_ne!(s["attacks_detected"], "");
    // After an install the report names the installed target.
    let u = update(&w, 6);
    assert_eq!(drive_install(&mut rig, &u, false), Round::Done);
    let s = report(&mut rig, [0xef; 16]);
    assert_eq!(s["installed_image"]["filename"], w.full_entry.0.as_str());
    assert_eq!(s["release_counter"], 2);
}

/// Partial verification opened from an Agent configuration (its serial,
/// hardware id and key schemes).
fn configured_rig(w: &World, cfg: &AgentConfig) -> MemRig {
    let mut rig = mem_rig(&old());
    let store = MemoryStore::new(w.director.root_bytes(1).unwrap().to_vec());
    rig.verifier = Box::new(UptanePartial::open(store, vin(), cfg).unwrap());
    rig
}

fn ed25519_only_config() -> AgentConfig {
    let mut cfg = config();
    cfg.uptane_schemes = SchemeSet::only(Scheme::Ed25519);
    cfg
}

fn refused_for_threshold(rig: &mut MemRig, u: &Update, counted: &str) {
    match prepare_outcome(rig, u) {
        PrepareOutcome::Failed(f) => {
            assert_eq!(f.code, FailureCode::MetadataInvalid, "{f:?}");
            assert!(f.message.contains(counted), "{f:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sha256(rig.dev.inner().running_bytes()), sha256(&old()));
}

#[test]
fn agent_key_schemes_default_to_all_and_refuse_an_empty_set() {
    let mut cfg = config();
    assert_eq!(cfg.uptane_schemes, SchemeSet::ALL);
    assert_eq!(cfg.uptane_limits().schemes, SchemeSet::ALL);
    cfg.uptane_schemes = SchemeSet::only(Scheme::Ed25519);
    assert_eq!(
        cfg.uptane_limits().schemes,
        SchemeSet::only(Scheme::Ed25519)
    );
    assert!(cfg.validate().is_ok());
    cfg.uptane_schemes = SchemeSet::EMPTY;
    assert_eq!(
        cfg.validate(),
        Err(esync_agent::config::ConfigError::Limit("uptane_schemes"))
    );
}

/// An ed25519-only Agent installs ed25519-signed Director metadata.
#[test]
fn ed25519_only_agent_accepts_ed25519_director_metadata() {
    let w = world("ecm-hw-1", "ECM0001", 3600);
    let mut rig = configured_rig(&w, &ed25519_only_config());
    let u = update(&w, 1);
    assert_eq!(drive_install(&mut rig, &u, true), Round::Done);
    assert_eq!(sha256(rig.dev.inner().running_bytes()), sha256(&new_img()));
}

/// The Director signs its targets with a P-256 key only: an ed25519-only
/// Agent counts no valid signature and refuses; the default Agent installs.
#[test]
fn ed25519_only_agent_refuses_p256_only_director_targets() {
    let mut w = world("ecm-hw-1", "ECM0001", 3600);
    w.director
        .rotate_keys(
            "targets",
            RoleSetup::generate_for(Scheme::EcdsaP256Sha256, 1, 1).unwrap(),
        )
        .unwrap();
    w.director.publish().unwrap();
    let u = update(&w, 1);
    let mut rig = configured_rig(&w, &ed25519_only_config());
    refused_for_threshold(&mut rig, &u, "targets: 0 valid signature(s)");
    let mut rig = configured_rig(&w, &config());
    assert_eq!(drive_install(&mut rig, &u, true), Round::Done);
    assert_eq!(sha256(rig.dev.inner().running_bytes()), sha256(&new_img()));
}

/// A mixed threshold of 2 (one ed25519 and one P-256 key, both signing):
/// an ed25519-only Agent counts 1 and refuses; the default Agent installs.
#[test]
fn ed25519_only_agent_counts_one_of_a_mixed_threshold_of_two() {
    let mut w = world("ecm-hw-1", "ECM0001", 3600);
    let mixed = RoleSetup::keys(
        vec![
            esync_uptane::PrivateKey::generate_for(Scheme::Ed25519).unwrap(),
            esync_uptane::PrivateKey::generate_for(Scheme::EcdsaP256Sha256).unwrap(),
        ],
        2,
    );
    w.director.rotate_keys("targets", mixed).unwrap();
    w.director.publish().unwrap();
    let u = update(&w, 1);
    let mut rig = configured_rig(&w, &ed25519_only_config());
    refused_for_threshold(&mut rig, &u, "targets: 1 valid signature(s)");
    let mut rig = configured_rig(&w, &config());
    assert_eq!(drive_install(&mut rig, &u, true), Round::Done);
    assert_eq!(sha256(rig.dev.inner().running_bytes()), sha256(&new_img()));
}
