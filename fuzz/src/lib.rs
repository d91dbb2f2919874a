//! Fixtures shared by the fuzz targets (`fuzz_targets/`) and the corpus
//! generator (`examples/seeds.rs`). Each target stays a few lines that call
//! one public entry point of the crate it fuzzes; what needs set-up (a
//! signed repository, a source image) lives here.

use std::convert::Infallible;
use std::sync::OnceLock;

use esync_uptane::builder::{RepoFiles, RepositoryBuilder, RoleSetup};
use esync_uptane::repo::{Limits, Need, Repository};
use esync_uptane::store::MemoryStore;
use esync_uptane::{PrivateKey, UnixTime};

/// "Now" of the fixtures: 2030-01-01T00:00:00Z.
pub const NOW: UnixTime = UnixTime(1_893_456_000);

/// Targets the fixture repository lists: one in the top-level `targets`
/// role, one in the delegated role `bcm`.
pub const TARGETS: [&str; 2] = ["ecm/ecm-1.0.bin", "bcm/bcm-2.0.bin"];

/// A signed repository: top-level roles, one delegation, a root rotated
/// once (version 2 changes the timestamp key), consistent snapshots.
pub struct RepoFixture {
    /// The builder, kept for its keys ([`RepositoryBuilder::sign_as`]).
    pub builder: RepositoryBuilder,
    /// The published files.
    pub files: RepoFiles,
    /// `1.root.json`: the root a verifier is provisioned with.
    pub root_v1: Vec<u8>,
}

fn key(n: u8) -> PrivateKey {
    PrivateKey::from_seed(&[n; 32])
}

/// The fixture repository, built once per process (fixed keys, so the
/// committed corpus stays valid).
pub fn repo() -> &'static RepoFixture {
    static REPO: OnceLock<RepoFixture> = OnceLock::new();
    REPO.get_or_init(|| {
        let one = |n| RoleSetup::single(key(n));
        let mut b = RepositoryBuilder::new(
            one(1),
            one(2),
            one(3),
            one(4),
            NOW.plus_seconds(86_400),
            true,
        )
        .expect("fixture repository builds");
        b.add_target(TARGETS[0], b"ecm image", None)
            .expect("fixture target");
        b.add_delegation("targets", "bcm", one(5), vec!["bcm/*".into()], true)
            .expect("fixture delegation");
        b.add_target_to(
            "bcm",
            TARGETS[1],
            b"bcm image",
            Some(serde_json::json!({"hardware": "bcm-hw"})),
        )
        .expect("fixture delegated target");
        b.rotate_keys("timestamp", one(6))
            .expect("fixture key rotation");
        b.publish().expect("fixture publishes");
        let files = b.files().clone();
        let root_v1 = b.root_bytes(1).expect("root version 1").to_vec();
        RepoFixture {
            builder: b,
            files,
            root_v1,
        }
    })
}

/// The bytes answered to `need` in place of the fixture's file: `bytes`
/// themselves, or, when `resign` is set and `bytes` are JSON with a
/// `signed` member, that member signed with the role's real keys (so the
/// fuzzer reaches the checks behind the signatures).
fn answer(need: &Need, resign: bool, bytes: &[u8]) -> Vec<u8> {
    if resign {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) {
            if let Some(signed) = v.get("signed") {
                if let Ok(b) = repo().builder.sign_as(need.role(), signed) {
                    return b;
                }
            }
        }
    }
    bytes.to_vec()
}

/// Runs a refresh and a lookup of each of [`TARGETS`] against the fixture
/// repository, answering fetch number `replace` (counted from 0 over the
/// whole run) with `bytes` and every other fetch with the fixture's file.
///
/// # Panics
///
/// When no fetch was replaced and the fixture does not verify, or when any
/// call into the verifier panics.
pub fn drive_repo(replace: u8, resign: bool, bytes: &[u8]) {
    let fx = repo();
    let mut repo = Repository::open(MemoryStore::new(fx.root_v1.clone()), Limits::default())
        .expect("the fixture root opens");
    let mut n: usize = 0;
    let mut fetch = |need: &Need| -> Result<Option<Vec<u8>>, Infallible> {
        let i = n;
        n += 1;
        if i == usize::from(replace) {
            return Ok(Some(answer(need, resign, bytes)));
        }
        Ok(fx.files.metadata.get(&need.path()).cloned())
    };
    let refreshed = repo.refresh_with(NOW, &mut fetch);
    let found: Vec<_> = TARGETS
        .iter()
        .map(|t| repo.find_target_with(t, &mut fetch))
        .collect();
    if n <= usize::from(replace) {
        // Nothing was replaced: the genuine repository must verify.
        refreshed.expect("the fixture refreshes");
        for f in found {
            assert!(matches!(f, Ok(Some(_))), "fixture target not found: {f:?}");
        }
    }
}

/// A fixed 16 KiB source image for the delta targets (deterministic, partly
/// compressible, so real patches against it are small).
pub fn delta_source() -> &'static [u8] {
    static SOURCE: OnceLock<Vec<u8>> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let mut x: u32 = 0x9e37_79b9;
        (0..16 * 1024)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if i % 512 < 256 {
                    (i / 512) as u8
                } else {
                    x as u8
                }
            })
            .collect()
    })
}
