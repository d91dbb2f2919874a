//! Verifiers configured for a subset of key schemes (`Limits::schemes`): a
//! key of a scheme outside the set is ignored like a key of an unknown
//! type, so it never counts toward a threshold.
#![allow(clippy::unwrap_used, reason = "test code")]

use esync_proto::id::{EcuSerial, HardwareId, ReleaseCounter, Vin};
use esync_uptane::builder::{RepositoryBuilder, RoleSetup};
use esync_uptane::crypto::{PrivateKey, Scheme, SchemeSet};
use esync_uptane::repo::{Limits, RepoProgress, Repository, Response};
use esync_uptane::store::MemoryStore;
use esync_uptane::uptane::{director_custom, PartialVerifier};
use esync_uptane::{Error, UnixTime};

const NOW: UnixTime = UnixTime(1_893_456_000);
const IMAGE: &[u8] = b"TCU firmware 5.1";
const ED: Scheme = Scheme::Ed25519;
const P256: Scheme = Scheme::EcdsaP256Sha256;

fn vin() -> Vin {
    Vin::new("WVWZZZ1JZXW000001").unwrap()
}
fn ecu() -> EcuSerial {
    EcuSerial::new("tcu-1").unwrap()
}
fn hw() -> HardwareId {
    HardwareId::new("tcu-hw").unwrap()
}

fn ed25519_only() -> Limits {
    Limits {
        schemes: SchemeSet::only(ED),
        ..Limits::default()
    }
}

fn one(scheme: Scheme) -> RoleSetup {
    RoleSetup::generate_for(scheme, 1, 1).unwrap()
}

/// One key of each scheme, threshold 2 (both sign).
fn mixed() -> RoleSetup {
    RoleSetup::keys(
        vec![
            PrivateKey::generate_for(ED).unwrap(),
            PrivateKey::generate_for(P256).unwrap(),
        ],
        2,
    )
}

/// A Director repository with the given root and targets keys, directing
/// `tcu-1` of [`vin`] to one image.
fn director(root: RoleSetup, targets: RoleSetup) -> RepositoryBuilder {
    let mut b = RepositoryBuilder::new(
        root,
        targets,
        one(ED),
        one(ED),
        NOW.plus_seconds(365 * 86_400),
        true,
    )
    .unwrap();
    b.add_target(
        "tcu-fw-5.1.bin",
        IMAGE,
        Some(director_custom(
            &vin(),
            &ecu(),
            &hw(),
            ReleaseCounter(7),
            None,
        )),
    )
    .unwrap();
    b.publish().unwrap();
    b
}

fn open_partial(
    b: &RepositoryBuilder,
    limits: Limits,
) -> esync_uptane::Result<PartialVerifier<MemoryStore>> {
    PartialVerifier::open(
        MemoryStore::new(b.root_bytes(1).unwrap().to_vec()),
        vin(),
        ecu(),
        hw(),
        limits,
    )
}

/// Partial verification of the Director targets of `b` under `limits`.
fn partial(b: &RepositoryBuilder, limits: Limits) -> esync_uptane::Result<()> {
    let targets = b.files().metadata["targets.json"].clone();
    let t = open_partial(b, limits)?.verify(&targets, NOW, ReleaseCounter(7))?;
    assert_eq!(t.unwrap().name, "tcu-fw-5.1.bin");
    Ok(())
}

fn assert_threshold(r: esync_uptane::Result<()>, role: &str, valid: u64, threshold: u64) {
    match r {
        Err(Error::Threshold {
            role: r,
            valid: v,
            threshold: t,
        }) => assert_eq!((r.as_str(), v, t), (role, valid, threshold)),
        other => panic!("expected a threshold error, got {other:?}"),
    }
}

#[test]
fn ed25519_only_partial_verifier_refuses_p256_director_targets() {
    // Root key ed25519, targets key P-256.
    let b = director(one(ED), one(P256));
    assert_threshold(partial(&b, ed25519_only()), "targets", 0, 1);
    partial(&b, Limits::default()).unwrap();
}

#[test]
fn ed25519_only_partial_verifier_refuses_a_p256_root() {
    let b = director(one(P256), one(P256));
    assert_threshold(open_partial(&b, ed25519_only()).map(drop), "root", 0, 1);
    partial(&b, Limits::default()).unwrap();
}

#[test]
fn ed25519_only_partial_verifier_accepts_ed25519_metadata() {
    let b = director(one(ED), one(ED));
    partial(&b, ed25519_only()).unwrap();
    partial(&b, Limits::default()).unwrap();
}

#[test]
fn ed25519_only_counts_one_of_a_mixed_threshold_of_two() {
    // Mixed targets role under an ed25519 root.
    let b = director(one(ED), mixed());
    assert_threshold(partial(&b, ed25519_only()), "targets", 1, 2);
    partial(&b, Limits::default()).unwrap();
    // Mixed root.
    let b = director(mixed(), one(ED));
    assert_threshold(open_partial(&b, ed25519_only()).map(drop), "root", 1, 2);
    partial(&b, Limits::default()).unwrap();
    // Adding P-256 to the set makes both count.
    let both = Limits {
        schemes: SchemeSet::only(ED).with(P256),
        ..Limits::default()
    };
    partial(&b, both).unwrap();
}

#[test]
fn ed25519_only_partial_verifier_refuses_a_root_rotation_to_p256() {
    let mut b = director(one(ED), one(ED));
    b.rotate_keys("root", one(P256)).unwrap();
    let v2 = b.root_bytes(2).unwrap().to_vec();
    let mut pv = open_partial(&b, ed25519_only()).unwrap();
    assert_threshold(pv.update_root(&v2).map(drop), "root", 0, 1);
    assert_eq!(pv.root_version(), 1);
    let mut pv = open_partial(&b, Limits::default()).unwrap();
    assert_eq!(pv.update_root(&v2).unwrap(), 2);
}

/// Refreshes a repository verifier from the builder's files.
fn refresh(b: &RepositoryBuilder, limits: Limits) -> esync_uptane::Result<()> {
    let mut repo = Repository::open(MemoryStore::new(b.root_bytes(1).unwrap().to_vec()), limits)?;
    let mut progress = repo.begin_refresh(NOW)?;
    while let RepoProgress::Need(need) = progress {
        progress = match b.files().metadata.get(&need.path()) {
            Some(bytes) => repo.provide(Response::Bytes(bytes))?,
            None => repo.provide(Response::NotFound)?,
        };
    }
    assert_eq!(progress, RepoProgress::RefreshDone);
    Ok(())
}

#[test]
fn ed25519_only_repository_verifier_ignores_p256_keys() {
    // Image-repository path (also the FullVerifier's): a P-256 timestamp
    // key in an otherwise ed25519 repository.
    let b = RepositoryBuilder::new(
        one(ED),
        one(ED),
        one(ED),
        one(P256),
        NOW.plus_seconds(86_400),
        true,
    )
    .unwrap();
    let mut b = b;
    b.publish().unwrap();
    assert_threshold(refresh(&b, ed25519_only()), "timestamp", 0, 1);
    refresh(&b, Limits::default()).unwrap();
    // A mixed threshold-2 root.
    let mut b = RepositoryBuilder::new(
        mixed(),
        one(ED),
        one(ED),
        one(ED),
        NOW.plus_seconds(86_400),
        true,
    )
    .unwrap();
    b.publish().unwrap();
    assert_threshold(refresh(&b, ed25519_only()), "root", 1, 2);
    refresh(&b, Limits::default()).unwrap();
}

#[test]
fn ed25519_only_repository_verifier_ignores_p256_delegation_keys() {
    let mut b = RepositoryBuilder::new(
        one(ED),
        one(ED),
        one(ED),
        one(ED),
        NOW.plus_seconds(86_400),
        true,
    )
    .unwrap();
    b.add_delegation("targets", "team", mixed(), vec!["x/*".into()], true)
        .unwrap();
    b.add_target_to("team", "x/f", b"delegated", None).unwrap();
    b.publish().unwrap();
    let lookup = |limits: Limits| -> esync_uptane::Result<RepoProgress> {
        let mut repo =
            Repository::open(MemoryStore::new(b.root_bytes(1).unwrap().to_vec()), limits)?;
        let answer = |repo: &mut Repository<MemoryStore>, p: RepoProgress| {
            let mut p = p;
            while let RepoProgress::Need(need) = p {
                p = match b.files().metadata.get(&need.path()) {
                    Some(bytes) => repo.provide(Response::Bytes(bytes))?,
                    None => repo.provide(Response::NotFound)?,
                };
            }
            Ok::<_, Error>(p)
        };
        let p = repo.begin_refresh(NOW)?;
        answer(&mut repo, p)?;
        let p = repo.begin_lookup("x/f")?;
        answer(&mut repo, p)
    };
    assert!(matches!(
        lookup(Limits::default()).unwrap(),
        RepoProgress::Found(_)
    ));
    let r = lookup(ed25519_only()).map(drop);
    assert_threshold(r, "team", 1, 2);
}
