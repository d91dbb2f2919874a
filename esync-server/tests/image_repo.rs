//! The Image repository refuses every upload that a client would refuse:
//! bad signatures, broken rotation chains, versions going backwards,
//! expired files, snapshot and timestamp that do not describe what is
//! stored. What it accepts verifies with the Client's own verifier.

use std::collections::BTreeMap;
use std::sync::Arc;

use esync_server::meta::MetaError;
use esync_server::repo::{offline, ImageRepo, ImageRepoConfig, RepoError};
use esync_server::store::{SqliteStore, Store};
use esync_uptane::{PrivateKey, UnixTime};

const NOW_MS: i64 = 1_800_000_000_000;

fn expires() -> UnixTime {
    UnixTime(NOW_MS / 1000 + 30 * 86_400)
}

struct Keys {
    root: PrivateKey,
    targets: PrivateKey,
    snapshot: PrivateKey,
    timestamp: PrivateKey,
}

impl Keys {
    fn new() -> Self {
        Keys {
            root: PrivateKey::generate(),
            targets: PrivateKey::generate(),
            snapshot: PrivateKey::generate(),
            timestamp: PrivateKey::generate(),
        }
    }

    fn spec(&self) -> offline::RoleSpec {
        [
            ("root", &self.root),
            ("targets", &self.targets),
            ("snapshot", &self.snapshot),
            ("timestamp", &self.timestamp),
        ]
        .into_iter()
        .map(|(r, k)| (r.to_string(), (vec![k.public_key()], 1)))
        .collect()
    }
}

async fn repo() -> (ImageRepo, Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("s.db"))
            .await
            .expect("db"),
    );
    (
        ImageRepo::new(store.clone(), ImageRepoConfig::default()),
        store,
        dir,
    )
}

fn one(k: &PrivateKey) -> &[PrivateKey] {
    std::slice::from_ref(k)
}

fn is_refused(r: &Result<esync_server::repo::Uploaded, RepoError>) -> bool {
    matches!(r, Err(e) if e.is_client_error())
}

#[tokio::test]
async fn root_chain_needs_old_and_new_keys_and_goes_one_version_at_a_time() {
    let (repo, _s, _d) = repo().await;
    let k = Keys::new();
    // Targets before any root.
    let t = offline::sign_targets(&[], 1, expires(), one(&k.targets)).expect("t");
    assert!(matches!(
        repo.upload(&t, NOW_MS).await,
        Err(RepoError::NoRoot)
    ));
    let r1 = offline::initial_root(&k.spec(), expires(), one(&k.root)).expect("root 1");
    // A first root of version 2 is not a start.
    let new_root = PrivateKey::generate();
    let mut changes = BTreeMap::new();
    changes.insert("root".to_string(), (vec![new_root.public_key()], 1));
    let r2 = offline::rotate_root(&r1, &changes, expires(), one(&k.root), one(&new_root))
        .expect("root 2");
    assert!(is_refused(&repo.upload(&r2, NOW_MS).await));
    repo.upload(&r1, NOW_MS).await.expect("root 1");
    // The same root again, or one skipping a version: refused.
    assert!(is_refused(&repo.upload(&r1, NOW_MS).await));
    let r3 = offline::rotate_root(&r2, &BTreeMap::new(), expires(), one(&new_root), &[])
        .expect("root 3");
    assert!(is_refused(&repo.upload(&r3, NOW_MS).await));
    // A rotation signed only by the new key (not by the current root's).
    let rogue = PrivateKey::generate();
    let mut rogue_changes = BTreeMap::new();
    rogue_changes.insert("root".to_string(), (vec![rogue.public_key()], 1));
    let r2_rogue = offline::rotate_root(&r1, &rogue_changes, expires(), one(&rogue), &[]);
    assert!(
        r2_rogue.is_err(),
        "the offline helper checks its own output"
    );
    // Built by hand: version 2 naming the rogue key, signed by it alone
    // (valid for its own keys, not for the current root's).
    let mut spec = k.spec();
    spec.insert("root".to_string(), (vec![rogue.public_key()], 1));
    let forged = esync_server::meta::sign(
        &esync_server::meta::build_root_public(2, expires(), &spec),
        one(&rogue),
    )
    .expect("sign");
    let r = repo.upload(&forged, NOW_MS).await;
    assert!(
        matches!(&r, Err(RepoError::Refused(MetaError::Signature(_)))),
        "{r:?}"
    );
    // The correct chain: 2 then 3.
    repo.upload(&r2, NOW_MS).await.expect("root 2");
    repo.upload(&r3, NOW_MS).await.expect("root 3");
    assert_eq!(
        repo.current_root().await.expect("root").map(|r| r.version),
        Some(3)
    );
    for n in 1..=3 {
        assert!(repo
            .file(&format!("{n}.root.json"))
            .await
            .expect("get")
            .is_some());
    }
    // An expired root.
    let old = offline::rotate_root(&r3, &BTreeMap::new(), UnixTime(1), one(&new_root), &[])
        .expect("root 4");
    let r = repo.upload(&old, NOW_MS).await;
    assert!(
        matches!(&r, Err(RepoError::Refused(MetaError::Expired { .. }))),
        "{r:?}"
    );
}

#[tokio::test]
async fn targets_snapshot_timestamp_are_verified_and_never_go_backwards() {
    let (repo, _s, _d) = repo().await;
    let k = Keys::new();
    let r1 = offline::initial_root(&k.spec(), expires(), one(&k.root)).expect("root");
    repo.upload(&r1, NOW_MS).await.expect("root");

    // Targets signed by the wrong key: refused, nothing stored.
    let bad = offline::sign_targets(&[], 1, expires(), one(&k.snapshot)).expect("t");
    let r = repo.upload(&bad, NOW_MS).await;
    assert!(
        matches!(&r, Err(RepoError::Refused(MetaError::Signature(_)))),
        "{r:?}"
    );
    assert_eq!(repo.file("targets.json").await.expect("get"), None);

    let t2 = offline::sign_targets(&[], 2, expires(), one(&k.targets)).expect("t");
    let up = repo.upload(&t2, NOW_MS).await.expect("targets 2");
    assert_eq!(
        (up.role.as_str(), up.version, up.online_resigned),
        ("targets", 2, None)
    );
    // Rollback and replay of a version: refused.
    let t1 = offline::sign_targets(&[], 1, expires(), one(&k.targets)).expect("t");
    let r = repo.upload(&t1, NOW_MS).await;
    assert!(
        matches!(
            &r,
            Err(RepoError::Refused(MetaError::Version {
                stored: 2,
                got: 1,
                ..
            }))
        ),
        "{r:?}"
    );
    assert!(is_refused(&repo.upload(&t2, NOW_MS).await));
    // Expired targets.
    let t3_old =
        offline::sign_targets(&[], 3, UnixTime(NOW_MS / 1000 - 1), one(&k.targets)).expect("t");
    assert!(is_refused(&repo.upload(&t3_old, NOW_MS).await));
    assert_eq!(
        repo.file("targets.json").await.expect("get"),
        Some(t2.clone())
    );

    // A snapshot must list the stored targets version.
    let s_wrong = offline::sign_snapshot(1, expires(), 1, one(&k.snapshot)).expect("s");
    assert!(is_refused(&repo.upload(&s_wrong, NOW_MS).await));
    let s1 = offline::sign_snapshot(1, expires(), 2, one(&k.snapshot)).expect("s");
    repo.upload(&s1, NOW_MS).await.expect("snapshot");
    // A timestamp must describe the stored snapshot.
    let other_snap = offline::sign_snapshot(2, expires(), 2, one(&k.snapshot)).expect("s");
    let ts_wrong =
        offline::sign_timestamp(1, expires(), &other_snap, one(&k.timestamp)).expect("ts");
    assert!(is_refused(&repo.upload(&ts_wrong, NOW_MS).await));
    let ts_bad_key = offline::sign_timestamp(1, expires(), &s1, one(&k.targets)).expect("ts");
    assert!(is_refused(&repo.upload(&ts_bad_key, NOW_MS).await));
    let ts1 = offline::sign_timestamp(1, expires(), &s1, one(&k.timestamp)).expect("ts");
    repo.upload(&ts1, NOW_MS).await.expect("timestamp");

    // The result verifies with the Client's verifier, from root 1.
    let mut v = esync_uptane::Repository::open(
        esync_uptane::MemoryStore::new(r1.clone()),
        esync_uptane::Limits::default(),
    )
    .expect("verifier");
    let mut step = v.begin_refresh(UnixTime(NOW_MS / 1000)).expect("start");
    for _ in 0..20 {
        match step {
            esync_uptane::RepoProgress::Need(need) => {
                let body = repo.file(&need.path()).await.expect("get");
                let resp = match body.as_deref() {
                    Some(b) => esync_uptane::Response::Bytes(b),
                    None => esync_uptane::Response::NotFound,
                };
                step = v.provide(resp).expect("verifies");
            }
            esync_uptane::RepoProgress::RefreshDone => {
                assert_eq!(v.top_targets().map(|t| t.version), Some(2));
                return;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("verification did not finish");
}

#[tokio::test]
async fn garbage_and_unknown_roles_are_refused() {
    let (repo, _s, _d) = repo().await;
    assert!(is_refused(&repo.upload(b"not json", NOW_MS).await));
    let odd = esync_uptane::builder::sign_metadata(
        &serde_json::json!({"_type": "mirrors", "version": 1}),
        &[&PrivateKey::generate()],
    )
    .expect("sign");
    assert!(matches!(
        repo.upload(&odd, NOW_MS).await,
        Err(RepoError::UnknownRole(_))
    ));
    let huge = vec![b' '; esync_server::meta::MAX_METADATA_LEN + 1];
    assert!(is_refused(&repo.upload(&huge, NOW_MS).await));
}

#[tokio::test]
async fn online_snapshot_and_timestamp_keys_sign_once_a_root_names_them() {
    let (repo, _s, _d) = repo().await;
    let k = Keys::new();
    let r1 = offline::initial_root(&k.spec(), expires(), one(&k.root)).expect("root");
    repo.upload(&r1, NOW_MS).await.expect("root");
    let online = repo.create_online_keys(NOW_MS).await.expect("keys");
    // Not named by the root yet: the Server does not sign.
    let t1 = offline::sign_targets(&[], 1, expires(), one(&k.targets)).expect("t");
    assert_eq!(
        repo.upload(&t1, NOW_MS).await.expect("t1").online_resigned,
        None
    );
    assert_eq!(repo.refresh_timestamp(NOW_MS).await.expect("refresh"), None);
    let mut changes = BTreeMap::new();
    changes.insert("snapshot".to_string(), (vec![online.snapshot], 1));
    changes.insert("timestamp".to_string(), (vec![online.timestamp], 1));
    let r2 =
        offline::rotate_root(&r1, &changes, expires(), one(&k.root), one(&k.root)).expect("root 2");
    repo.upload(&r2, NOW_MS).await.expect("root 2");
    let t2 = offline::sign_targets(&[], 2, expires(), one(&k.targets)).expect("t");
    assert_eq!(
        repo.upload(&t2, NOW_MS).await.expect("t2").online_resigned,
        Some((1, 1))
    );
    // Fresh: no new timestamp; past half its lifetime: a new one.
    assert_eq!(repo.refresh_timestamp(NOW_MS).await.expect("refresh"), None);
    let later = NOW_MS + 13 * 3600 * 1000;
    assert_eq!(
        repo.refresh_timestamp(later).await.expect("refresh"),
        Some(2)
    );
    assert!(repo.file("2.root.json").await.expect("get").is_some());
    assert!(repo.file("1.snapshot.json").await.expect("get").is_some());
}

#[tokio::test]
async fn key_files_load_and_a_rotated_targets_key_retires_the_old_one() {
    let dir = tempfile::tempdir().expect("dir");
    let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .expect("key")
        .serialize_pem();
    let path = dir.path().join("targets.pem");
    std::fs::write(&path, &pem).expect("write");
    let new_targets = offline::load_key(&path).expect("load");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a key").expect("write");
    assert!(offline::load_key(&junk).is_err());
    let huge = dir.path().join("huge.pem");
    std::fs::write(&huge, vec![b'a'; offline::MAX_KEY_FILE as usize + 1]).expect("write");
    assert!(offline::load_key(&huge).is_err());

    let (repo, _s, _d) = repo().await;
    let k = Keys::new();
    let r1 = offline::initial_root(&k.spec(), expires(), one(&k.root)).expect("root");
    repo.upload(&r1, NOW_MS).await.expect("root");
    let mut changes = BTreeMap::new();
    changes.insert("targets".to_string(), (vec![new_targets.public_key()], 1));
    let r2 =
        offline::rotate_root(&r1, &changes, expires(), one(&k.root), one(&k.root)).expect("root 2");
    repo.upload(&r2, NOW_MS).await.expect("root 2");
    let old = offline::sign_targets(&[], 1, expires(), one(&k.targets)).expect("t");
    assert!(is_refused(&repo.upload(&old, NOW_MS).await));
    let new = offline::sign_targets(&[], 1, expires(), one(&new_targets)).expect("t");
    repo.upload(&new, NOW_MS).await.expect("new targets key");
}
