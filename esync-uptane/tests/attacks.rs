//! The attacks of security.md (A1-A11, A16, A18, A19), each against
//! repositories built with the signing side and served over loopback HTTP,
//! fetched by a test-side loop driving the sans-I/O verifiers.
#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

use std::io::Read;

use common::*;
use esync_proto::id::ReleaseCounter;
use esync_uptane::builder::{hash_prefixed_path, RepositoryBuilder};
use esync_uptane::crypto::{RawSigned, Scheme};
use esync_uptane::metadata::TargetInfo;
use esync_uptane::repo::Repository;
use esync_uptane::store::MemoryStore;
use esync_uptane::target::TargetVerifier;
use esync_uptane::uptane::{director_custom, image_custom, PartialVerifier};
use esync_uptane::{Error, Limits, UnixTime};
use serde_json::json;

/// A repository with one top-level target, a 2-of-2 targets role and a
/// delegation `team` for `team/*`, served under `/r/`.
fn simple(consistent: bool) -> (Http, RepositoryBuilder) {
    let http = Http::start();
    let mut b = RepositoryBuilder::new(
        keys(1, 1),
        keys(2, 2),
        keys(1, 1),
        keys(1, 1),
        expires(),
        consistent,
    )
    .unwrap();
    b.add_target("a.bin", b"aaaa", None).unwrap();
    b.add_delegation("targets", "team", keys(1, 1), vec!["team/*".into()], false)
        .unwrap();
    b.add_target_to("team", "team/b.bin", b"bbbb", None)
        .unwrap();
    b.publish().unwrap();
    http.publish("r", b.files());
    (http, b)
}

fn refresh(
    repo: &mut Repository<MemoryStore>,
    http: &Http,
    now: UnixTime,
) -> esync_uptane::Result<()> {
    repo.refresh_with(now, fetcher(http.metadata_url("r")))
}

fn lookup(
    repo: &mut Repository<MemoryStore>,
    http: &Http,
    name: &str,
) -> esync_uptane::Result<Option<TargetInfo>> {
    repo.find_target_with(name, fetcher(http.metadata_url("r")))
}

/// Downloads a target over HTTP, verifying while streaming (cut at the
/// declared length), the way an installer would.
fn download(
    http: &Http,
    prefix: &str,
    name: &str,
    info: &TargetInfo,
) -> esync_uptane::Result<Vec<u8>> {
    let path = hash_prefixed_path(name, &info.hashes["sha256"]);
    let resp = ureq::get(&format!("{}/{prefix}/targets/{path}", http.base))
        .call()
        .unwrap();
    let mut reader = resp.into_reader();
    let mut v = TargetVerifier::new(name, info)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 7];
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        v.update(&buf[..n])?;
        out.extend_from_slice(&buf[..n]);
    }
    v.finish()?;
    Ok(out)
}

// ---------------------------------------------------------------- A1

#[test]
fn a1_threshold_not_met() {
    let (http, b) = simple(true);
    let p = "/r/metadata/1.targets.json";
    http.put(p, keep_signatures(&http.get(p), 1));
    let mut repo = open_repo(&b);
    let err = refresh(&mut repo, &http, NOW).unwrap_err();
    assert!(
        matches!(&err, Error::Threshold { role, valid: 1, threshold: 2 } if role == "targets"),
        "{err}"
    );
}

#[test]
fn a1_duplicate_key_signature() {
    // The same signature twice is one keyid twice in the array: malformed
    // (TUF: the keyid MUST be unique), refused before any counting.
    let (http, b) = simple(true);
    let p = "/r/metadata/1.targets.json";
    let dup = edit_json(&http.get(p), |v| {
        let sigs = v["signatures"].as_array_mut().unwrap();
        let first = sigs[0].clone();
        sigs[1] = first;
    });
    http.put(p, dup);
    let mut repo = open_repo(&b);
    let err = refresh(&mut repo, &http, NOW).unwrap_err();
    assert!(
        matches!(&err, Error::Field { what, field: "signatures", .. } if what == "targets"),
        "{err}"
    );
}

#[test]
fn a1_duplicate_keyid_refused_even_when_threshold_met() {
    // A third entry repeating a valid signature: two distinct keys signed
    // (the threshold is met), yet the array is malformed.
    let (http, b) = simple(true);
    let p = "/r/metadata/1.targets.json";
    let dup = edit_json(&http.get(p), |v| {
        let sigs = v["signatures"].as_array_mut().unwrap();
        let first = sigs[0].clone();
        sigs.push(first);
    });
    http.put(p, dup);
    let mut repo = open_repo(&b);
    let err = refresh(&mut repo, &http, NOW).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Field {
                field: "signatures",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a1_signed_by_wrong_keys() {
    let (http, b) = simple(true);
    let p = "/r/metadata/timestamp.json";
    let v: serde_json::Value = serde_json::from_slice(&http.get(p)).unwrap();
    let forged = RawSigned::sign(v["signed"].clone(), &[&stranger()]).unwrap();
    http.put(p, forged.to_bytes().unwrap());
    let mut repo = open_repo(&b);
    let err = refresh(&mut repo, &http, NOW).unwrap_err();
    assert!(
        matches!(&err, Error::Threshold { role, valid: 0, .. } if role == "timestamp"),
        "{err}"
    );
}

#[test]
fn a1_delegated_role_signed_by_wrong_key() {
    let (http, b) = simple(true);
    let p = "/r/metadata/1.team.json";
    let v: serde_json::Value = serde_json::from_slice(&http.get(p)).unwrap();
    http.put(
        p,
        RawSigned::sign(v["signed"].clone(), &[&stranger()])
            .unwrap()
            .to_bytes()
            .unwrap(),
    );
    let mut repo = open_repo(&b);
    refresh(&mut repo, &http, NOW).unwrap();
    assert!(lookup(&mut repo, &http, "a.bin").unwrap().is_some());
    let err = lookup(&mut repo, &http, "team/b.bin").unwrap_err();
    assert!(
        matches!(&err, Error::Threshold { role, .. } if role == "team"),
        "{err}"
    );
}

// ---------------------------------------------------------------- A2

#[test]
fn a2_image_hash_mismatch_keeps_old_state() {
    let (http, b) = simple(true);
    let mut repo = open_repo(&b);
    refresh(&mut repo, &http, NOW).unwrap();
    let info = lookup(&mut repo, &http, "a.bin").unwrap().unwrap();
    let path = format!(
        "/r/targets/{}",
        hash_prefixed_path("a.bin", &info.hashes["sha256"])
    );
    http.put(&path, b"aaab".to_vec()); // same length, other bytes
    let mut installed = b"old image".to_vec();
    match download(&http, "r", "a.bin", &info) {
        Ok(new) => installed = new,
        Err(e) => assert!(matches!(e, Error::HashMismatch { .. }), "{e}"),
    }
    assert_eq!(installed, b"old image");
    // The right bytes install.
    http.put(&path, b"aaaa".to_vec());
    assert_eq!(download(&http, "r", "a.bin", &info).unwrap(), b"aaaa");
}

// ---------------------------------------------------------------- A3

#[test]
fn a3_director_target_missing_from_image() {
    let mut w = World::new();
    w.image.remove_target("targets", "ecm-fw-2.0.bin");
    w.image.publish().unwrap();
    w.serve();
    let err = w.verify(&mut w.full_verifier(), NOW).unwrap_err();
    assert!(
        err.to_string().contains("not in the Image repository"),
        "{err}"
    );
}

fn redirect_ecm(w: &mut World, data: &[u8]) {
    w.director
        .add_target(
            "ecm-fw-2.0.bin",
            data,
            Some(director_custom(
                &vin(),
                &ecu("ecm-1"),
                &hw("ecm-hw-a"),
                ReleaseCounter(2),
                None,
            )),
        )
        .unwrap();
    w.director.publish().unwrap();
    w.serve();
}

#[test]
fn a3_director_length_differs_from_image() {
    let mut w = World::new();
    redirect_ecm(
        &mut w,
        b"a different, longer image than the Image repository lists",
    );
    let err = w.verify(&mut w.full_verifier(), NOW).unwrap_err();
    assert!(err.to_string().contains("length"), "{err}");
}

#[test]
fn a3_director_hash_differs_from_image() {
    let mut w = World::new();
    let mut evil = ECM_IMAGE.to_vec();
    *evil.last_mut().unwrap() ^= 1;
    redirect_ecm(&mut w, &evil);
    let err = w.verify(&mut w.full_verifier(), NOW).unwrap_err();
    assert!(
        err.to_string()
            .contains("differs between Director and Image"),
        "{err}"
    );
}

#[test]
fn a3_director_hardware_id_differs_from_image() {
    let mut w = World::new();
    w.image
        .add_target(
            "ecm-fw-2.0.bin",
            ECM_IMAGE,
            Some(image_custom(&[hw("other-hw")], ReleaseCounter(2), None)),
        )
        .unwrap();
    w.image.publish().unwrap();
    w.serve();
    let err = w.verify(&mut w.full_verifier(), NOW).unwrap_err();
    assert!(err.to_string().contains("not among the Image"), "{err}");
}

// ---------------------------------------------------------------- A4

#[test]
fn a4_image_changed_without_director_not_installed() {
    let mut w = World::new();
    let mut fv = w.full_verifier();
    assert_eq!(w.verify(&mut fv, NOW).unwrap().len(), 2);
    // The Image repository (compromised) swaps the ECM image.
    w.image
        .add_target(
            "ecm-fw-2.0.bin",
            b"ECM firmware 2.0 -- with a backdoor, same length exactly!!!",
            Some(image_custom(&[hw("ecm-hw-a")], ReleaseCounter(2), None)),
        )
        .unwrap();
    w.image.publish().unwrap();
    w.serve();
    let err = w.verify(&mut fv, NOW).unwrap_err();
    assert!(matches!(err, Error::ImageMismatch { .. }), "{err}");
}

#[test]
fn a4_undirected_image_is_not_installed() {
    let mut w = World::new();
    w.image
        .add_target(
            "ecm-fw-9.9.bin",
            b"an image the Director never asked for",
            Some(image_custom(&[hw("ecm-hw-a")], ReleaseCounter(9), None)),
        )
        .unwrap();
    w.image.publish().unwrap();
    w.serve();
    let got = w.verify(&mut w.full_verifier(), NOW).unwrap();
    let names: Vec<&str> = got.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["ecm-fw-2.0.bin", "tcu-fw-5.1.bin"]);
}

// ---------------------------------------------------------------- A5

#[test]
fn a5_valid_root_rotation_is_followed() {
    let (http, mut b) = simple(true);
    b.rotate_keys("root", keys(3, 2)).unwrap();
    b.rotate_keys("timestamp", keys(1, 1)).unwrap();
    b.publish().unwrap();
    http.publish("r", b.files());
    let mut repo = open_repo(&b);
    refresh(&mut repo, &http, NOW).unwrap();
    assert_eq!(repo.root().meta.version, 3);
}

#[test]
fn a5_new_root_missing_old_threshold() {
    let (http, mut b) = simple(true);
    let new = keys(1, 1);
    let signers = new.keys.clone();
    b.rotate_keys_signed_by("root", new, &signers).unwrap();
    http.publish("r", b.files());
    let mut repo = open_repo(&b);
    let err = refresh(&mut repo, &http, NOW).unwrap_err();
    assert!(
        matches!(&err, Error::Threshold { role, .. } if role == "root"),
        "{err}"
    );
    assert_eq!(repo.root().meta.version, 1);
}

#[test]
fn a5_new_root_missing_new_threshold() {
    let (http, mut b) = simple(true);
    let old = b.keys("root").unwrap().keys.clone();
    b.rotate_keys_signed_by("root", keys(2, 2), &old).unwrap();
    http.publish("r", b.files());
    let mut repo = open_repo(&b);
    let err = refresh(&mut repo, &http, NOW).unwrap_err();
    assert!(
        matches!(&err, Error::Threshold { role, .. } if role == "root"),
        "{err}"
    );
    assert_eq!(repo.root().meta.version, 1);
}

// ---------------------------------------------------------------- A6

#[test]
fn a6_timestamp_version_rollback() {
    let (http, mut b) = simple(true);
    let old_ts = http.get("/r/metadata/timestamp.json");
    b.publish().unwrap();
    http.publish("r", b.files());
    let mut repo = open_repo(&b);
    refresh(&mut repo, &http, NOW).unwrap();
    http.put("/r/metadata/timestamp.json", old_ts);
    let err = refresh(&mut repo, &http, NOW).unwrap_err();
    assert!(
        matches!(&err, Error::Rollback { role, trusted: 2, new: 1 } if role == "timestamp"),
        "{err}"
    );
}

#[test]
fn a6_rollback_refused_across_restart() {
    let (http, mut b) = simple(true);
    let old_ts = http.get("/r/metadata/timestamp.json");
    b.publish().unwrap();
    http.publish("r", b.files());
    let mut repo = open_repo(&b);
    refresh(&mut repo, &http, NOW).unwrap();
    let store = repo.into_store();
    let mut repo = Repository::open(store, Limits::default()).unwrap();
    http.put("/r/metadata/timestamp.json", old_ts);
    let err = refresh(&mut repo, &http, NOW).unwrap_err();
    assert!(matches!(&err, Error::Rollback { .. }), "{err}");
}

#[test]
fn a6_snapshot_version_rollback() {
    let (http, mut b) = simple(true);
    let ts1: serde_json::Value =
        serde_json::from_slice(&http.get("/r/metadata/timestamp.json")).unwrap();
    b.publish().unwrap();
    http.publish("r", b.files());
    let mut repo = open_repo(&b);
    refresh(&mut repo, &http, NOW).unwrap();
    // A timestamp with a higher version pointing at the old snapshot.
    let mut signed = ts1["signed"].clone();
    signed["version"] = json!(3);
    http.put(
        "/r/metadata/timestamp.json",
        b.sign_as("timestamp", &signed).unwrap(),
    );
    let err = refresh(&mut repo, &http, NOW).unwrap_err();
    assert!(
        matches!(&err, Error::Rollback { role, trusted: 2, new: 1 } if role == "snapshot"),
        "{err}"
    );
}

#[test]
fn a6_targets_version_rollback() {
    let (http, mut b) = simple(true);
    b.add_target("c.bin", b"cc", None).unwrap();
    b.publish().unwrap(); // targets v2
    http.publish("r", b.files());
    let mut repo = open_repo(&b);
    refresh(&mut repo, &http, NOW).unwrap();
    b.publish_with(|role, v| {
        if role == "snapshot" {
            v["meta"]["targets.json"]["version"] = json!(1);
        }
    })
    .unwrap();
    http.publish("r", b.files());
    let err = refresh(&mut repo, &http, NOW).unwrap_err();
    assert!(
        matches!(&err, Error::Rollback { role, trusted: 2, new: 1 } if role == "targets"),
        "{err}"
    );
}

#[test]
fn a6_role_dropped_from_snapshot() {
    let (http, mut b) = simple(true);
    let mut repo = open_repo(&b);
    refresh(&mut repo, &http, NOW).unwrap();
    b.publish_with(|role, v| {
        if role == "snapshot" {
            v["meta"].as_object_mut().unwrap().remove("team.json");
        }
    })
    .unwrap();
    http.publish("r", b.files());
    let err = refresh(&mut repo, &http, NOW).unwrap_err();
    assert!(
        matches!(&err, Error::RoleDropped(f) if f == "team.json"),
        "{err}"
    );
}

// ---------------------------------------------------------------- A7

#[test]
fn a7_release_counter_lower_than_installed_full() {
    let mut w = World::new();
    w.vehicle
        .ecus
        .get_mut(&ecu("ecm-1"))
        .unwrap()
        .installed_release_counter = ReleaseCounter(3);
    let err = w.verify(&mut w.full_verifier(), NOW).unwrap_err();
    assert!(matches!(err, Error::ReleaseCounterRollback { .. }), "{err}");
}

#[test]
fn a7_release_counter_lower_than_installed_partial() {
    let w = World::new();
    let mut agent = partial(&w, "ecm-1", "ecm-hw-a");
    let err = agent
        .verify(&w.director_targets_bytes(), NOW, ReleaseCounter(3))
        .unwrap_err();
    assert!(matches!(err, Error::ReleaseCounterRollback { .. }), "{err}");
    assert!(agent
        .verify(&w.director_targets_bytes(), NOW, ReleaseCounter(2))
        .unwrap()
        .is_some());
}

fn partial(w: &World, e: &str, h: &str) -> PartialVerifier<MemoryStore> {
    PartialVerifier::open(
        MemoryStore::new(w.director.root_bytes(1).unwrap().to_vec()),
        vin(),
        ecu(e),
        hw(h),
        Limits::default(),
    )
    .unwrap()
}

// ---------------------------------------------------------------- A8

#[test]
fn a8_expired_timestamp() {
    let (http, mut b) = simple(true);
    b.set_expires("timestamp", NOW.plus_seconds(-1));
    b.publish().unwrap();
    http.publish("r", b.files());
    let mut repo = open_repo(&b);
    let err = refresh(&mut repo, &http, NOW).unwrap_err();
    assert!(
        matches!(&err, Error::Expired { role, .. } if role == "timestamp"),
        "{err}"
    );
}

#[test]
fn a8_expired_targets_under_injected_time() {
    let (http, mut b) = simple(true);
    b.set_expires("targets", NOW.plus_seconds(10 * 86_400));
    b.publish().unwrap();
    http.publish("r", b.files());
    let mut repo = open_repo(&b);
    refresh(&mut repo, &http, NOW).unwrap();
    let err = refresh(&mut repo, &http, NOW.plus_seconds(11 * 86_400)).unwrap_err();
    assert!(
        matches!(&err, Error::Expired { role, .. } if role == "targets"),
        "{err}"
    );
}

#[test]
fn a8_clock_moved_backwards() {
    let (http, b) = simple(true);
    let mut repo = open_repo(&b);
    refresh(&mut repo, &http, NOW).unwrap();
    let err = refresh(&mut repo, &http, NOW.plus_seconds(-60)).unwrap_err();
    assert!(matches!(err, Error::TimeWentBackwards { .. }), "{err}");
    // Also after a restart.
    let mut repo = Repository::open(repo.into_store(), Limits::default()).unwrap();
    let err = refresh(&mut repo, &http, NOW.plus_seconds(-60)).unwrap_err();
    assert!(matches!(err, Error::TimeWentBackwards { .. }), "{err}");
}

#[test]
fn a8_partial_expired_and_clock_backwards() {
    let mut w = World::new();
    w.director.set_expires("targets", NOW.plus_seconds(3600));
    w.director.publish().unwrap();
    w.serve();
    let mut agent = partial(&w, "tcu-1", "tcu-hw");
    let bytes = w.director_targets_bytes();
    assert!(agent
        .verify(&bytes, NOW, ReleaseCounter(7))
        .unwrap()
        .is_some());
    let err = agent
        .verify(&bytes, NOW.plus_seconds(7200), ReleaseCounter(7))
        .unwrap_err();
    assert!(matches!(err, Error::Expired { .. }), "{err}");
    let err = agent.verify(&bytes, NOW, ReleaseCounter(7)).unwrap_err();
    assert!(matches!(err, Error::TimeWentBackwards { .. }), "{err}");
}

// ---------------------------------------------------------------- A9

#[test]
fn a9_snapshot_version_does_not_match_timestamp() {
    let (http, mut b) = simple(false);
    b.publish_with(|role, v| {
        if role == "timestamp" {
            v["meta"]["snapshot.json"]["version"] = json!(7);
        }
    })
    .unwrap();
    http.publish("r", b.files());
    let mut repo = open_repo(&b);
    let err = refresh(&mut repo, &http, NOW).unwrap_err();
    assert!(
        matches!(&err, Error::VersionMismatch { role, expected: 7, got: 2, .. } if role == "snapshot"),
        "{err}"
    );
}

#[test]
fn a9_snapshot_bytes_do_not_match_timestamp_hash() {
    let (http, b) = simple(true);
    let p = "/r/metadata/1.snapshot.json";
    let v: serde_json::Value = serde_json::from_slice(&http.get(p)).unwrap();
    let mut signed = v["signed"].clone();
    signed["meta"]["team.json"]["version"] = json!(9);
    // ECDSA (DER) signatures vary in length: sign again until the file has
    // the declared length, so that only the hash can tell.
    let declared = http.get(p).len();
    let forged = (0..64)
        .map(|_| b.sign_as("snapshot", &signed).unwrap())
        .find(|f| f.len() == declared)
        .unwrap();
    http.put(p, forged);
    let mut repo = open_repo(&b);
    let err = refresh(&mut repo, &http, NOW).unwrap_err();
    assert!(
        matches!(
            err,
            Error::HashMismatch { .. } | Error::LengthMismatch { .. }
        ),
        "{err}"
    );
}

#[test]
fn a9_targets_version_does_not_match_snapshot() {
    let (http, mut b) = simple(false);
    b.publish_with(|role, v| {
        if role == "snapshot" {
            v["meta"]["targets.json"]["version"] = json!(5);
        }
    })
    .unwrap();
    http.publish("r", b.files());
    let mut repo = open_repo(&b);
    let err = refresh(&mut repo, &http, NOW).unwrap_err();
    assert!(
        matches!(&err, Error::VersionMismatch { role, expected: 5, got: 1, .. } if role == "targets"),
        "{err}"
    );
}

#[test]
fn a9_delegated_version_does_not_match_snapshot() {
    let (http, mut b) = simple(false);
    b.publish_with(|role, v| {
        if role == "snapshot" {
            v["meta"]["team.json"]["version"] = json!(4);
        }
    })
    .unwrap();
    http.publish("r", b.files());
    let mut repo = open_repo(&b);
    refresh(&mut repo, &http, NOW).unwrap();
    let err = lookup(&mut repo, &http, "team/b.bin").unwrap_err();
    assert!(
        matches!(&err, Error::VersionMismatch { role, .. } if role == "team"),
        "{err}"
    );
}

// ---------------------------------------------------------------- A10

#[test]
fn a10_duplicate_ecu_in_director_targets() {
    let mut w = World::new();
    w.director
        .add_target(
            "ecm-fw-2.0-copy.bin",
            ECM_IMAGE,
            Some(director_custom(
                &vin(),
                &ecu("ecm-1"),
                &hw("ecm-hw-a"),
                ReleaseCounter(2),
                None,
            )),
        )
        .unwrap();
    w.director.publish().unwrap();
    w.serve();
    let err = w.verify(&mut w.full_verifier(), NOW).unwrap_err();
    assert!(
        err.to_string().contains("more than one Director target"),
        "{err}"
    );
    let err = partial(&w, "tcu-1", "tcu-hw")
        .verify(&w.director_targets_bytes(), NOW, ReleaseCounter(0))
        .unwrap_err();
    assert!(
        err.to_string().contains("more than one Director target"),
        "{err}"
    );
}

#[test]
fn a10_ecu_not_in_vehicle() {
    let mut w = World::new();
    w.director
        .add_target(
            "brake-fw.bin",
            b"brake",
            Some(director_custom(
                &vin(),
                &ecu("brake-9"),
                &hw("brake-hw"),
                ReleaseCounter(1),
                None,
            )),
        )
        .unwrap();
    w.director.publish().unwrap();
    w.serve();
    let err = w.verify(&mut w.full_verifier(), NOW).unwrap_err();
    assert!(err.to_string().contains("not in the vehicle"), "{err}");
}

#[test]
fn a10_director_targets_replayed_to_another_vehicle() {
    let w = World::new();
    // Metadata signed for vehicle 1, replayed to vehicle 2 (same ECU names).
    let mut other = w.vehicle.clone();
    other.vin = other_vin();
    let mut fv = w.full_verifier();
    *fv.vehicle_mut() = other;
    let err = w.verify(&mut fv, NOW).unwrap_err();
    assert!(err.to_string().contains("is for vehicle"), "{err}");
    let mut agent = PartialVerifier::open(
        MemoryStore::new(w.director.root_bytes(1).unwrap().to_vec()),
        other_vin(),
        ecu("tcu-1"),
        hw("tcu-hw"),
        Limits::default(),
    )
    .unwrap();
    let err = agent
        .verify(&w.director_targets_bytes(), NOW, ReleaseCounter(0))
        .unwrap_err();
    assert!(err.to_string().contains("is for vehicle"), "{err}");
}

// ---------------------------------------------------------------- A11

#[test]
fn a11_metadata_over_its_cap() {
    let (http, mut b) = simple(true);
    b.publish_with(|role, v| {
        if role == "timestamp" {
            v["padding"] = json!("x".repeat(64 * 1024));
        }
    })
    .unwrap();
    http.publish("r", b.files());
    let mut repo = open_repo(&b);
    let err = refresh(&mut repo, &http, NOW).unwrap_err();
    assert!(
        matches!(&err, Error::TooLong { limit, .. } if *limit == Limits::default().max_timestamp_size),
        "{err}"
    );
}

#[test]
fn a11_snapshot_longer_than_timestamp_declares() {
    let (http, b) = simple(true);
    let p = "/r/metadata/1.snapshot.json";
    let mut long = http.get(p);
    long.extend(std::iter::repeat_n(b' ', 10_000));
    http.put(p, long);
    let mut repo = open_repo(&b);
    let err = refresh(&mut repo, &http, NOW).unwrap_err();
    assert!(matches!(err, Error::TooLong { .. }), "{err}");
}

#[test]
fn a11_image_longer_than_declared() {
    let (http, b) = simple(true);
    let mut repo = open_repo(&b);
    refresh(&mut repo, &http, NOW).unwrap();
    let info = lookup(&mut repo, &http, "a.bin").unwrap().unwrap();
    let path = format!(
        "/r/targets/{}",
        hash_prefixed_path("a.bin", &info.hashes["sha256"])
    );
    http.put(&path, vec![b'a'; 1 << 20]);
    let err = download(&http, "r", "a.bin", &info).unwrap_err();
    assert!(matches!(err, Error::TooLong { limit: 4, .. }), "{err}");
}

// ---------------------------------------------------------------- A16

#[test]
fn a16_hardware_id_mismatch_full() {
    let mut w = World::new();
    w.vehicle.ecus.get_mut(&ecu("ecm-1")).unwrap().hardware_id = hw("ecm-hw-b");
    let err = w.verify(&mut w.full_verifier(), NOW).unwrap_err();
    assert!(matches!(err, Error::HardwareMismatch { .. }), "{err}");
}

#[test]
fn a16_hardware_id_mismatch_partial() {
    let w = World::new();
    let err = partial(&w, "ecm-1", "ecm-hw-b")
        .verify(&w.director_targets_bytes(), NOW, ReleaseCounter(0))
        .unwrap_err();
    assert!(matches!(err, Error::HardwareMismatch { .. }), "{err}");
}

// ---------------------------------------------------------------- A18

#[test]
fn a18_timestamp_key_rotation_recovers_from_fast_forward() {
    let (http, mut b) = simple(true);
    let mut repo = open_repo(&b);
    refresh(&mut repo, &http, NOW).unwrap();
    // The attacker holds the timestamp key and fast-forwards it.
    let v: serde_json::Value =
        serde_json::from_slice(&http.get("/r/metadata/timestamp.json")).unwrap();
    let mut signed = v["signed"].clone();
    signed["version"] = json!(1000);
    http.put(
        "/r/metadata/timestamp.json",
        b.sign_as("timestamp", &signed).unwrap(),
    );
    refresh(&mut repo, &http, NOW).unwrap();
    assert_eq!(repo.timestamp().unwrap().meta.version, 1000);
    // The legitimate timestamp v2 is now a "rollback"...
    b.publish().unwrap();
    http.publish("r", b.files());
    assert!(matches!(
        refresh(&mut repo, &http, NOW),
        Err(Error::Rollback { .. })
    ));
    // ...until the timestamp key is rotated.
    b.rotate_keys("timestamp", keys(1, 1)).unwrap();
    b.publish().unwrap();
    http.publish("r", b.files());
    refresh(&mut repo, &http, NOW).unwrap();
    assert_eq!(repo.timestamp().unwrap().meta.version, 3);
    assert_eq!(repo.root().meta.version, 2);
}

#[test]
fn a18_snapshot_key_rotation_recovers_from_fast_forward() {
    let (http, mut b) = simple(true);
    let mut repo = open_repo(&b);
    refresh(&mut repo, &http, NOW).unwrap();
    // The attacker holds snapshot and timestamp keys: snapshot v1000.
    let snap: serde_json::Value =
        serde_json::from_slice(&http.get("/r/metadata/1.snapshot.json")).unwrap();
    let mut s = snap["signed"].clone();
    s["version"] = json!(1000);
    let snap_bytes = b.sign_as("snapshot", &s).unwrap();
    http.put("/r/metadata/1000.snapshot.json", snap_bytes.clone());
    let ts: serde_json::Value =
        serde_json::from_slice(&http.get("/r/metadata/timestamp.json")).unwrap();
    let mut t = ts["signed"].clone();
    t["version"] = json!(1000);
    t["meta"]["snapshot.json"] = json!({
        "version": 1000,
        "length": snap_bytes.len(),
        "hashes": esync_uptane::crypto::hashes_of(&snap_bytes),
    });
    http.put(
        "/r/metadata/timestamp.json",
        b.sign_as("timestamp", &t).unwrap(),
    );
    refresh(&mut repo, &http, NOW).unwrap();
    assert_eq!(repo.snapshot().unwrap().meta.version, 1000);
    // Recovery: both keys rotated by root, new snapshot/timestamp published.
    b.rotate_keys("snapshot", keys(1, 1)).unwrap();
    b.rotate_keys("timestamp", keys(1, 1)).unwrap();
    b.publish().unwrap();
    http.publish("r", b.files());
    refresh(&mut repo, &http, NOW).unwrap();
    assert_eq!(repo.snapshot().unwrap().meta.version, 2);
    assert!(lookup(&mut repo, &http, "team/b.bin").unwrap().is_some());
}

// ---------------------------------------------------------------- A19

#[test]
fn a19_target_name_traversal_refused() {
    let (http, b) = simple(true);
    let mut repo = open_repo(&b);
    refresh(&mut repo, &http, NOW).unwrap();
    for bad in [
        "../x",
        "team/../../etc/passwd",
        "/etc/passwd",
        "team\\b.bin",
        "team//b.bin",
        "",
    ] {
        let err = lookup(&mut repo, &http, bad).unwrap_err();
        assert!(matches!(err, Error::BadTargetName(..)), "{bad:?}: {err}");
    }
}

#[test]
fn a19_director_target_with_traversal_refused() {
    let mut w = World::new();
    w.director.set_expires("targets", expires()); // re-sign targets
    w.director
        .publish_with(|role, v| {
            if role == "targets" {
                let entry = v["targets"]["ecm-fw-2.0.bin"].clone();
                let targets = v["targets"].as_object_mut().unwrap();
                targets.remove("ecm-fw-2.0.bin");
                targets.insert("../../boot/ecm-fw-2.0.bin".into(), entry);
            }
        })
        .unwrap();
    w.serve();
    let err = w.verify(&mut w.full_verifier(), NOW).unwrap_err();
    assert!(matches!(err, Error::BadTargetName(..)), "{err}");
}

// ---------------------------------------------------------------- positive paths

#[test]
fn full_verification_of_a_vehicle() {
    let w = World::new();
    let got = w.verify(&mut w.full_verifier(), NOW).unwrap();
    assert_eq!(got.len(), 2);
    let tcu = got.iter().find(|t| t.ecu == ecu("tcu-1")).unwrap();
    assert_eq!(tcu.release_counter, ReleaseCounter(7));
    assert_eq!(
        tcu.image_custom.as_ref().unwrap()["hardwareIds"][0],
        "tcu-hw"
    );
    // The delegated role was fetched through the Image repository.
    assert!(w
        .http
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|p| p == "/image/metadata/1.tcu-team.json"));
    let ecm = got.iter().find(|t| t.ecu == ecu("ecm-1")).unwrap();
    assert_eq!(
        download(&w.http, "image", &ecm.name, &ecm.info).unwrap(),
        ECM_IMAGE
    );
}

#[test]
fn partial_verification_of_an_agent() {
    let w = World::new();
    let mut agent = partial(&w, "tcu-1", "tcu-hw");
    let t = agent
        .verify(&w.director_targets_bytes(), NOW, ReleaseCounter(7))
        .unwrap()
        .unwrap();
    assert_eq!(t.name, "tcu-fw-5.1.bin");
    assert_eq!(agent.last_version(), Some(1));
    // An ECU with no target gets nothing.
    let mut other = partial(&w, "gateway-1", "gw-hw");
    assert!(other
        .verify(&w.director_targets_bytes(), NOW, ReleaseCounter(0))
        .unwrap()
        .is_none());
}

#[test]
fn partial_verification_refuses_older_director_targets() {
    let mut w = World::new();
    let v1 = w.director_targets_bytes();
    w.director.publish().unwrap();
    w.director
        .add_target(
            "tcu-fw-5.1.bin",
            TCU_IMAGE,
            Some(director_custom(
                &vin(),
                &ecu("tcu-1"),
                &hw("tcu-hw"),
                ReleaseCounter(8),
                None,
            )),
        )
        .unwrap();
    w.director.publish().unwrap();
    w.serve();
    let mut agent = partial(&w, "tcu-1", "tcu-hw");
    agent
        .verify(&w.director_targets_bytes(), NOW, ReleaseCounter(7))
        .unwrap();
    let store = agent.into_store();
    let mut agent =
        PartialVerifier::open(store, vin(), ecu("tcu-1"), hw("tcu-hw"), Limits::default()).unwrap();
    let err = agent.verify(&v1, NOW, ReleaseCounter(7)).unwrap_err();
    assert!(matches!(err, Error::Rollback { .. }), "{err}");
}

#[test]
fn delegations_are_prioritised_and_terminating() {
    let http = Http::start();
    let mut b = generate_repo(expires());
    b.add_delegation("targets", "first", keys(1, 1), vec!["x/*".into()], false)
        .unwrap();
    b.add_delegation("targets", "second", keys(1, 1), vec!["x/*".into()], false)
        .unwrap();
    b.add_delegation("targets", "stop", keys(1, 1), vec!["y/*".into()], true)
        .unwrap();
    b.add_delegation("targets", "after", keys(1, 1), vec!["y/*".into()], false)
        .unwrap();
    b.add_target_to("first", "x/f", b"from first", None)
        .unwrap();
    b.add_target_to("second", "x/f", b"from second", None)
        .unwrap();
    b.add_target_to("second", "x/g", b"only second", None)
        .unwrap();
    b.add_target_to("after", "y/f", b"behind a terminating delegation", None)
        .unwrap();
    b.publish().unwrap();
    http.publish("r", b.files());
    let mut repo = open_repo(&b);
    refresh(&mut repo, &http, NOW).unwrap();
    let f = lookup(&mut repo, &http, "x/f").unwrap().unwrap();
    assert_eq!(f.length, b"from first".len() as u64);
    assert!(lookup(&mut repo, &http, "x/g").unwrap().is_some());
    assert!(lookup(&mut repo, &http, "y/f").unwrap().is_none());
    assert!(lookup(&mut repo, &http, "z/f").unwrap().is_none());
}

#[test]
fn a5_partial_verifier_follows_director_root_rotation_only_when_signed() {
    let mut w = World::new();
    let mut agent = partial(&w, "tcu-1", "tcu-hw");
    // A root v2 signed only by its own new keys is refused.
    let rogue = keys(1, 1);
    let mut rogue_builder = generate_repo(expires());
    let signers = rogue.keys.clone();
    rogue_builder
        .rotate_keys_signed_by("root", rogue, &signers)
        .unwrap();
    let err = agent
        .update_root(rogue_builder.root_bytes(2).unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::Threshold { .. }), "{err}");
    // The Director rotates its targets key properly: the Agent follows.
    w.director.rotate_keys("targets", keys(1, 1)).unwrap();
    w.director.publish().unwrap();
    w.serve();
    let bytes = w.director_targets_bytes();
    assert!(matches!(
        agent.verify(&bytes, NOW, ReleaseCounter(7)),
        Err(Error::Threshold { .. })
    ));
    assert_eq!(
        agent
            .update_root(w.director.root_bytes(2).unwrap())
            .unwrap(),
        2
    );
    assert!(agent
        .verify(&bytes, NOW, ReleaseCounter(7))
        .unwrap()
        .is_some());
}

#[test]
fn timestamp_only_refresh_reuses_snapshot_and_targets() {
    let (http, mut b) = simple(true);
    let mut repo = open_repo(&b);
    refresh(&mut repo, &http, NOW).unwrap();
    b.publish_timestamp().unwrap();
    http.publish("r", b.files());
    let before = http.log.lock().unwrap().len();
    refresh(&mut repo, &http, NOW).unwrap();
    let log = http.log.lock().unwrap();
    assert_eq!(
        &log[before..],
        ["/r/metadata/2.root.json", "/r/metadata/timestamp.json"]
    );
    assert_eq!(repo.timestamp().unwrap().meta.version, 2);
}

// ------------------------------------------------- every key type

/// Runs each listed test again with every key of the suite (all roles,
/// delegations, strangers) of another scheme: the `#[test]` functions above
/// run with ed25519, these modules with ECDSA P-256, ECDSA P-384 and
/// RSA-PSS.
macro_rules! with_each_key_type {
    ($($name:ident),* $(,)?) => {
        mod ecdsa_p256 {
            $(#[test] fn $name() { super::with_scheme(super::Scheme::EcdsaP256Sha256, super::$name) })*
        }
        mod ecdsa_p384 {
            $(#[test] fn $name() { super::with_scheme(super::Scheme::EcdsaP384Sha384, super::$name) })*
        }
        mod rsa_pss {
            $(#[test] fn $name() { super::with_scheme(super::Scheme::RsaPssSha256, super::$name) })*
        }
        /// Fails when a `#[test]` of this file is missing from the list.
        #[test]
        fn every_attack_test_runs_with_each_key_type() {
            let listed = [$(stringify!($name)),*];
            let src = include_str!("attacks.rs");
            let defined = src.matches("#[test]\nfn ").count();
            assert_eq!(listed.len(), defined, "update the with_each_key_type! list");
        }
    };
}

with_each_key_type!(
    a1_threshold_not_met,
    a1_duplicate_key_signature,
    a1_duplicate_keyid_refused_even_when_threshold_met,
    a1_signed_by_wrong_keys,
    a1_delegated_role_signed_by_wrong_key,
    a2_image_hash_mismatch_keeps_old_state,
    a3_director_target_missing_from_image,
    a3_director_length_differs_from_image,
    a3_director_hash_differs_from_image,
    a3_director_hardware_id_differs_from_image,
    a4_image_changed_without_director_not_installed,
    a4_undirected_image_is_not_installed,
    a5_valid_root_rotation_is_followed,
    a5_new_root_missing_old_threshold,
    a5_new_root_missing_new_threshold,
    a6_timestamp_version_rollback,
    a6_rollback_refused_across_restart,
    a6_snapshot_version_rollback,
    a6_targets_version_rollback,
    a6_role_dropped_from_snapshot,
    a7_release_counter_lower_than_installed_full,
    a7_release_counter_lower_than_installed_partial,
    a8_expired_timestamp,
    a8_expired_targets_under_injected_time,
    a8_clock_moved_backwards,
    a8_partial_expired_and_clock_backwards,
    a9_snapshot_version_does_not_match_timestamp,
    a9_snapshot_bytes_do_not_match_timestamp_hash,
    a9_targets_version_does_not_match_snapshot,
    a9_delegated_version_does_not_match_snapshot,
    a10_duplicate_ecu_in_director_targets,
    a10_ecu_not_in_vehicle,
    a10_director_targets_replayed_to_another_vehicle,
    a11_metadata_over_its_cap,
    a11_snapshot_longer_than_timestamp_declares,
    a11_image_longer_than_declared,
    a16_hardware_id_mismatch_full,
    a16_hardware_id_mismatch_partial,
    a18_timestamp_key_rotation_recovers_from_fast_forward,
    a18_snapshot_key_rotation_recovers_from_fast_forward,
    a19_target_name_traversal_refused,
    a19_director_target_with_traversal_refused,
    full_verification_of_a_vehicle,
    partial_verification_of_an_agent,
    partial_verification_refuses_older_director_targets,
    delegations_are_prioritised_and_terminating,
    a5_partial_verifier_follows_director_root_rotation_only_when_signed,
    timestamp_only_refresh_reuses_snapshot_and_targets,
);
