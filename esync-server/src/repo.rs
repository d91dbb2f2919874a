//! The Image repository: the same signed metadata for every vehicle, whose
//! root and targets keys can stay offline.
//!
//! The Server never holds the root or targets keys. An operator signs on an
//! offline machine (the library functions of [`offline`], which the CLI
//! calls) and uploads the files; [`ImageRepo::upload`] verifies each one
//! before it is stored:
//! * a root: version 1 only when there is no root yet (the operator
//!   installs the first root at `init`), afterwards exactly the next version,
//!   signed by a threshold of the current root's root keys *and* of its own
//!   (a correctly signed rotation chain, one link per upload);
//! * targets, snapshot, timestamp: signed by a threshold of the current
//!   root's keys for the role, not expired, a version above the stored one
//!   (versions never go backwards; the database enforces it too), and for
//!   snapshot and timestamp consistent with what is stored (the snapshot
//!   lists the stored targets version, the timestamp the stored snapshot's
//!   version, length and hashes).
//!
//! Optionally the snapshot and timestamp keys are online
//! ([`ImageRepo::create_online_keys`]: the Server keeps them in the
//! database, the operator names their public keys in the next root); the
//! Server then re-signs snapshot and timestamp after each targets upload
//! and [`ImageRepo::refresh_timestamp`] keeps the timestamp fresh.
//! Files are served by name ([`ImageRepo::file`]) as a TUF client fetches
//! them, so they can also be copied to any static file server or CDN.

use std::collections::BTreeMap;
use std::sync::Arc;

use esync_package::package::Package;
use esync_uptane::crypto::hashes_of;
use esync_uptane::metadata::{Root, Snapshot, Targets, Timestamp};
use esync_uptane::{PrivateKey, PublicKey, UnixTime};

use crate::meta::{self, MetaError};
use crate::store::{DbError, MetadataRecord, RepoKind, SigningKeyRecord, Store};

/// An Image repository operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// The database failed (Server side).
    #[error(transparent)]
    Db(#[from] DbError),
    /// The uploaded file is refused (client side: 4xx).
    #[error(transparent)]
    Refused(#[from] MetaError),
    /// There is no root yet (upload version 1 first).
    #[error("the Image repository has no root yet")]
    NoRoot,
    /// The file is of a role this repository does not take.
    #[error("unsupported role {0:?}")]
    UnknownRole(String),
    /// Stored state is inconsistent, or an online key is unusable.
    #[error("Image repository state: {0}")]
    State(String),
}

impl RepoError {
    /// Whether the uploader is at fault (4xx) rather than the Server.
    pub fn is_client_error(&self) -> bool {
        matches!(self, Self::Refused(_) | Self::NoRoot | Self::UnknownRole(_))
    }
}

/// What an accepted upload stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// Role of the file.
    pub role: String,
    /// Its version.
    pub version: u64,
    /// Snapshot and timestamp versions the Server re-signed with its online
    /// keys after a targets upload, if it holds them.
    pub online_resigned: Option<(u64, u64)>,
}

/// Lifetimes of the metadata the Server signs with online keys.
#[derive(Debug, Clone)]
pub struct ImageRepoConfig {
    /// Lifetime of a re-signed snapshot (seconds).
    pub snapshot_lifetime_s: i64,
    /// Lifetime of a re-signed timestamp (seconds); refreshed when less
    /// than half is left.
    pub timestamp_lifetime_s: i64,
}

impl Default for ImageRepoConfig {
    fn default() -> Self {
        Self {
            snapshot_lifetime_s: 7 * 86_400,
            timestamp_lifetime_s: 86_400,
        }
    }
}

fn refused(role: &str, reason: impl Into<String>) -> RepoError {
    RepoError::Refused(MetaError::Malformed {
        role: role.to_owned(),
        reason: reason.into(),
    })
}

/// The Image repository on the Server.
#[derive(Debug)]
pub struct ImageRepo {
    store: Arc<dyn Store>,
    config: ImageRepoConfig,
}

impl ImageRepo {
    /// The repository over `store`.
    pub fn new(store: Arc<dyn Store>, config: ImageRepoConfig) -> Self {
        Self { store, config }
    }

    /// A metadata file by the name a TUF client fetches (`N.root.json`,
    /// `timestamp.json`, `N.snapshot.json`, `N.targets.json`, ...).
    pub async fn file(&self, name: &str) -> Result<Option<Vec<u8>>, RepoError> {
        Ok(self
            .store
            .metadata(RepoKind::Image, "", name)
            .await?
            .map(|m| m.body))
    }

    async fn stored(&self, name: &str) -> Result<Option<MetadataRecord>, RepoError> {
        Ok(self.store.metadata(RepoKind::Image, "", name).await?)
    }

    /// The current root, if any.
    pub async fn current_root(&self) -> Result<Option<Root>, RepoError> {
        match self.stored("root.json").await? {
            None => Ok(None),
            Some(r) => Ok(Some(meta::parse_role::<Root>("root", &r.body)?.1)),
        }
    }

    async fn put(&self, files: &[(String, u64, &[u8])], now_ms: i64) -> Result<(), RepoError> {
        for (name, version, body) in files {
            let written = self
                .store
                .put_metadata(&MetadataRecord {
                    repo: RepoKind::Image,
                    scope: String::new(),
                    name: name.clone(),
                    version: *version,
                    body: body.to_vec(),
                    created_ms: now_ms,
                })
                .await?;
            if !written && !name.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(RepoError::Refused(MetaError::Version {
                    role: name.trim_end_matches(".json").to_owned(),
                    stored: *version,
                    got: *version,
                }));
            }
        }
        Ok(())
    }

    /// Verifies and stores one signed metadata file (its role is read from
    /// its `_type`). See the module documentation for the rules.
    pub async fn upload(&self, bytes: &[u8], now_ms: i64) -> Result<Uploaded, RepoError> {
        if bytes.len() > meta::MAX_METADATA_LEN {
            return Err(refused(
                "metadata",
                format!("{} bytes exceed {}", bytes.len(), meta::MAX_METADATA_LEN),
            ));
        }
        let raw = esync_uptane::crypto::RawSigned::from_slice("metadata", bytes)
            .map_err(|e| refused("metadata", e.to_string()))?;
        let value = raw.signed.clone();
        let role = value
            .get("_type")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned();
        let now = meta::unix_s(now_ms);
        match role.as_str() {
            "root" => {
                let (_, root) = meta::parse_role::<Root>("root", bytes)?;
                meta::check_fresh("root", root.expires, now)?;
                // Signed by its own root keys (always) ...
                meta::verify_role(&raw, &root, "root")?;
                match self.current_root().await? {
                    None if root.version == 1 => {}
                    None => {
                        return Err(RepoError::Refused(MetaError::Version {
                            role: "root".into(),
                            stored: 0,
                            got: root.version,
                        }))
                    }
                    Some(cur) => {
                        if root.version != cur.version + 1 {
                            return Err(RepoError::Refused(MetaError::Version {
                                role: "root".into(),
                                stored: cur.version,
                                got: root.version,
                            }));
                        }
                        // ... and by the current root's.
                        meta::verify_role(&raw, &cur, "root")?;
                    }
                }
                let v = root.version;
                self.put(
                    &[
                        (format!("{v}.root.json"), v, bytes),
                        ("root.json".into(), v, bytes),
                    ],
                    now_ms,
                )
                .await?;
                Ok(Uploaded {
                    role,
                    version: v,
                    online_resigned: None,
                })
            }
            "targets" => {
                let root = self.current_root().await?.ok_or(RepoError::NoRoot)?;
                let (_, t) = meta::parse_role::<Targets>("targets", bytes)?;
                meta::verify_role(&raw, &root, "targets")?;
                meta::check_fresh("targets", t.expires, now)?;
                self.check_newer("targets.json", "targets", t.version)
                    .await?;
                let v = t.version;
                self.put(
                    &[
                        (format!("{v}.targets.json"), v, bytes),
                        ("targets.json".into(), v, bytes),
                    ],
                    now_ms,
                )
                .await?;
                let online_resigned = self.resign_online(&root, v, now_ms).await?;
                Ok(Uploaded {
                    role,
                    version: v,
                    online_resigned,
                })
            }
            "snapshot" => {
                let root = self.current_root().await?.ok_or(RepoError::NoRoot)?;
                let (_, s) = meta::parse_role::<Snapshot>("snapshot", bytes)?;
                meta::verify_role(&raw, &root, "snapshot")?;
                meta::check_fresh("snapshot", s.expires, now)?;
                self.check_newer("snapshot.json", "snapshot", s.version)
                    .await?;
                let targets = self
                    .stored("targets.json")
                    .await?
                    .ok_or_else(|| refused("snapshot", "upload targets first"))?;
                let listed = s.meta.get("targets.json").map(|m| m.version);
                if listed != Some(targets.version) {
                    return Err(refused(
                        "snapshot",
                        format!(
                            "lists targets version {listed:?}, stored is {}",
                            targets.version
                        ),
                    ));
                }
                let v = s.version;
                self.put(
                    &[
                        (format!("{v}.snapshot.json"), v, bytes),
                        ("snapshot.json".into(), v, bytes),
                    ],
                    now_ms,
                )
                .await?;
                Ok(Uploaded {
                    role,
                    version: v,
                    online_resigned: None,
                })
            }
            "timestamp" => {
                let root = self.current_root().await?.ok_or(RepoError::NoRoot)?;
                let (_, ts) = meta::parse_role::<Timestamp>("timestamp", bytes)?;
                meta::verify_role(&raw, &root, "timestamp")?;
                meta::check_fresh("timestamp", ts.expires, now)?;
                self.check_newer("timestamp.json", "timestamp", ts.version)
                    .await?;
                let snap = self
                    .stored("snapshot.json")
                    .await?
                    .ok_or_else(|| refused("timestamp", "upload a snapshot first"))?;
                let m = ts
                    .meta
                    .get("snapshot.json")
                    .ok_or_else(|| refused("timestamp", "names no snapshot.json"))?;
                let hashes_ok = m.hashes.as_ref().is_none_or(|h| {
                    let actual = hashes_of(&snap.body);
                    !h.is_empty()
                        && h.iter().all(|(alg, v)| {
                            actual.get(alg).is_some_and(|a| a.eq_ignore_ascii_case(v))
                        })
                });
                if m.version != snap.version
                    || m.length.is_some_and(|l| l != snap.body.len() as u64)
                    || !hashes_ok
                {
                    return Err(refused(
                        "timestamp",
                        "does not describe the stored snapshot",
                    ));
                }
                let v = ts.version;
                self.put(&[("timestamp.json".into(), v, bytes)], now_ms)
                    .await?;
                Ok(Uploaded {
                    role,
                    version: v,
                    online_resigned: None,
                })
            }
            other => Err(RepoError::UnknownRole(other.to_owned())),
        }
    }

    async fn check_newer(&self, name: &str, role: &str, version: u64) -> Result<(), RepoError> {
        if let Some(cur) = self.stored(name).await? {
            if version <= cur.version {
                return Err(RepoError::Refused(MetaError::Version {
                    role: role.to_owned(),
                    stored: cur.version,
                    got: version,
                }));
            }
        }
        Ok(())
    }

    /// Creates online snapshot and timestamp keys (ed25519, kept in the
    /// database), replacing earlier ones, and returns their public keys for
    /// the operator to name in the next root (offline:
    /// [`offline::rotate_root`]). Until a root names them, the Server does
    /// not sign with them.
    pub async fn create_online_keys(&self, now_ms: i64) -> Result<OnlinePublicKeys, RepoError> {
        let mut out = Vec::new();
        for role in ["snapshot", "timestamp"] {
            let k = PrivateKey::generate();
            let seed = k
                .to_seed()
                .ok_or_else(|| RepoError::State("ed25519 key without seed".into()))?;
            self.store
                .replace_signing_keys(
                    RepoKind::Image,
                    role,
                    &[SigningKeyRecord {
                        repo: RepoKind::Image,
                        role: role.to_owned(),
                        key_id: k.key_id(),
                        secret: seed.to_vec(),
                        created_ms: now_ms,
                    }],
                    &[],
                    now_ms,
                )
                .await?;
            out.push(k.public_key());
        }
        let timestamp = out.pop().ok_or_else(|| RepoError::State("no key".into()))?;
        let snapshot = out.pop().ok_or_else(|| RepoError::State("no key".into()))?;
        Ok(OnlinePublicKeys {
            snapshot,
            timestamp,
        })
    }

    /// The online key of `role` when the current root authorises it alone
    /// (threshold 1).
    async fn online_key(&self, root: &Root, role: &str) -> Result<Option<PrivateKey>, RepoError> {
        let Some(keys) = root.roles.get(role) else {
            return Ok(None);
        };
        for rec in self.store.signing_keys(RepoKind::Image, role).await? {
            let seed: [u8; 32] = rec.secret.as_slice().try_into().map_err(|_| {
                RepoError::State(format!("online key {} is not a seed", rec.key_id))
            })?;
            let k = PrivateKey::from_seed(&seed);
            if keys.threshold == 1 && keys.keyids.contains(&k.key_id()) {
                return Ok(Some(k));
            }
        }
        Ok(None)
    }

    async fn resign_online(
        &self,
        root: &Root,
        targets_version: u64,
        now_ms: i64,
    ) -> Result<Option<(u64, u64)>, RepoError> {
        let (Some(sk), Some(tk)) = (
            self.online_key(root, "snapshot").await?,
            self.online_key(root, "timestamp").await?,
        ) else {
            return Ok(None);
        };
        let now = meta::unix_s(now_ms);
        let sv = self.stored("snapshot.json").await?.map_or(0, |r| r.version) + 1;
        let snap = meta::snapshot(
            sv,
            now.plus_seconds(self.config.snapshot_lifetime_s),
            targets_version,
        );
        let snap_bytes = meta::sign(&snap, std::slice::from_ref(&sk))?;
        self.put(
            &[
                (format!("{sv}.snapshot.json"), sv, &snap_bytes),
                ("snapshot.json".into(), sv, &snap_bytes),
            ],
            now_ms,
        )
        .await?;
        let tv = self.sign_timestamp(&tk, sv, &snap_bytes, now_ms).await?;
        Ok(Some((sv, tv)))
    }

    async fn sign_timestamp(
        &self,
        key: &PrivateKey,
        snapshot_version: u64,
        snapshot_bytes: &[u8],
        now_ms: i64,
    ) -> Result<u64, RepoError> {
        let tv = self
            .stored("timestamp.json")
            .await?
            .map_or(0, |r| r.version)
            + 1;
        let ts = meta::timestamp(
            tv,
            meta::unix_s(now_ms).plus_seconds(self.config.timestamp_lifetime_s),
            snapshot_version,
            snapshot_bytes,
        );
        let bytes = meta::sign(&ts, std::slice::from_ref(key))?;
        self.put(&[("timestamp.json".into(), tv, &bytes)], now_ms)
            .await?;
        Ok(tv)
    }

    /// With an online timestamp key: signs a new timestamp over the stored
    /// snapshot when the stored timestamp has less than half its lifetime
    /// left. Returns the new version, `None` when nothing was signed.
    pub async fn refresh_timestamp(&self, now_ms: i64) -> Result<Option<u64>, RepoError> {
        let Some(root) = self.current_root().await? else {
            return Ok(None);
        };
        let Some(tk) = self.online_key(&root, "timestamp").await? else {
            return Ok(None);
        };
        let Some(snap) = self.stored("snapshot.json").await? else {
            return Ok(None);
        };
        if let Some(cur) = self.stored("timestamp.json").await? {
            let (_, ts) = meta::parse_role::<Timestamp>("timestamp", &cur.body)?;
            let half = meta::unix_s(now_ms).plus_seconds(self.config.timestamp_lifetime_s / 2);
            if ts.expires > half
                && meta::signer_ids(&cur.body) == meta::key_ids(std::slice::from_ref(&tk))
            {
                return Ok(None);
            }
        }
        Ok(Some(
            self.sign_timestamp(&tk, snap.version, &snap.body, now_ms)
                .await?,
        ))
    }
}

/// Public halves of the Server's online Image repository keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlinePublicKeys {
    /// The snapshot key.
    pub snapshot: PublicKey,
    /// The timestamp key.
    pub timestamp: PublicKey,
}

/// The offline side, for the CLI on the operator's machine: load keys,
/// create and rotate roots, sign targets. No HTTP, no database.
pub mod offline {
    use super::*;

    /// An offline signing failed.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum OfflineError {
        /// Reading a key file failed.
        #[error("key file {path}: {reason}")]
        KeyFile {
            /// Path.
            path: String,
            /// Why.
            reason: String,
        },
        /// Signing or a metadata file failed.
        #[error(transparent)]
        Meta(#[from] MetaError),
        /// A key does not belong to the role it is meant to sign for.
        #[error("{0}")]
        Keys(String),
    }

    /// Largest key file read (bytes).
    pub const MAX_KEY_FILE: u64 = 64 * 1024;

    /// Loads a private key from a PEM file (PKCS#8 `PRIVATE KEY`: ed25519,
    /// ECDSA P-256/P-384, RSA; or PKCS#1 `RSA PRIVATE KEY`).
    pub fn load_key(path: &std::path::Path) -> Result<PrivateKey, OfflineError> {
        let err = |reason: String| OfflineError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let len = std::fs::metadata(path)
            .map_err(|e| err(e.to_string()))?
            .len();
        if len > MAX_KEY_FILE {
            return Err(err(format!("{len} bytes exceed {MAX_KEY_FILE}")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        PrivateKey::from_pem(&text).map_err(|e| err(e.to_string()))
    }

    /// Each role's public keys and threshold.
    pub type RoleSpec = BTreeMap<String, (Vec<PublicKey>, u64)>;

    /// Root version 1 for `roles` (all four top-level roles), signed by
    /// `root_keys` (which must meet the root role's threshold).
    pub fn initial_root(
        roles: &RoleSpec,
        expires: UnixTime,
        root_keys: &[PrivateKey],
    ) -> Result<Vec<u8>, OfflineError> {
        check_roles(roles)?;
        let root = meta::build_root_public(1, expires, roles);
        let bytes = meta::sign(&root, root_keys)?;
        self_check(&bytes, None)?;
        Ok(bytes)
    }

    /// The root after `current` (its bytes) with `changes` applied (roles
    /// not named keep their keys), signed by `old_root_keys` (a threshold
    /// of the current root's root keys) and `new_root_keys` (a threshold of
    /// the new root's): the next link of a rotation chain.
    pub fn rotate_root(
        current: &[u8],
        changes: &RoleSpec,
        expires: UnixTime,
        old_root_keys: &[PrivateKey],
        new_root_keys: &[PrivateKey],
    ) -> Result<Vec<u8>, OfflineError> {
        let (_, cur) = meta::parse_role::<Root>("root", current)?;
        let mut roles: RoleSpec = BTreeMap::new();
        for (role, rk) in &cur.roles {
            let keys = rk
                .keyids
                .iter()
                .filter_map(|id| cur.keys.get(id).cloned())
                .collect();
            roles.insert(role.clone(), (keys, rk.threshold));
        }
        for (role, spec) in changes {
            roles.insert(role.clone(), spec.clone());
        }
        check_roles(&roles)?;
        let root = meta::build_root_public(cur.version + 1, expires, &roles);
        let mut signers: Vec<PrivateKey> = Vec::new();
        for k in old_root_keys.iter().chain(new_root_keys) {
            if !signers.iter().any(|s| s.key_id() == k.key_id()) {
                signers.push(k.clone());
            }
        }
        let bytes = meta::sign(&root, &signers)?;
        self_check(&bytes, Some(&cur))?;
        Ok(bytes)
    }

    fn check_roles(roles: &RoleSpec) -> Result<(), OfflineError> {
        for role in meta::TOP_ROLES {
            match roles.get(role) {
                Some((keys, t)) if *t >= 1 && keys.len() as u64 >= *t => {}
                _ => {
                    return Err(OfflineError::Keys(format!(
                        "role {role} needs at least threshold (>= 1) keys"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Checks a signed root the way [`ImageRepo::upload`] will.
    fn self_check(bytes: &[u8], previous: Option<&Root>) -> Result<(), OfflineError> {
        let (raw, root) = meta::parse_role::<Root>("root", bytes)?;
        meta::verify_role(&raw, &root, "root")
            .map_err(|e| OfflineError::Keys(format!("new root keys do not sign it: {e}")))?;
        if let Some(p) = previous {
            meta::verify_role(&raw, p, "root").map_err(|e| {
                OfflineError::Keys(format!("current root keys do not sign it: {e}"))
            })?;
        }
        Ok(())
    }

    /// Image repository targets (version `version`) listing every target
    /// entry of `packages` (full images and deltas, with `custom.esync`
    /// and the Image repository's `hardwareIds` and release counter), signed
    /// by `keys`.
    pub fn sign_targets(
        packages: &[Package],
        version: u64,
        expires: UnixTime,
        keys: &[PrivateKey],
    ) -> Result<Vec<u8>, OfflineError> {
        if keys.is_empty() {
            return Err(OfflineError::Keys("no targets key".into()));
        }
        let mut targets = BTreeMap::new();
        for p in packages {
            for (entry, desc) in p.target_entries().into_iter().zip(p.target_descriptions()) {
                let c = &desc.component;
                let mut hashes = BTreeMap::new();
                hashes.insert("sha256".to_string(), hex::encode(entry.sha256.0));
                targets.insert(
                    entry.name.clone(),
                    esync_uptane::metadata::TargetInfo {
                        length: entry.length,
                        hashes,
                        custom: Some(esync_uptane::uptane::image_custom(
                            std::slice::from_ref(&c.hardware_id),
                            c.release_counter,
                            Some(entry.custom.clone()),
                        )),
                    },
                );
            }
        }
        let t = Targets {
            type_: "targets".into(),
            spec_version: esync_uptane::metadata::SPEC_VERSION.into(),
            version,
            expires,
            targets,
            delegations: None,
        };
        Ok(meta::sign(&t, keys)?)
    }

    /// Snapshot `version` listing targets `targets_version`, signed by
    /// `keys` (for a repository whose snapshot key is offline too).
    pub fn sign_snapshot(
        version: u64,
        expires: UnixTime,
        targets_version: u64,
        keys: &[PrivateKey],
    ) -> Result<Vec<u8>, OfflineError> {
        Ok(meta::sign(
            &meta::snapshot(version, expires, targets_version),
            keys,
        )?)
    }

    /// Timestamp `version` over the snapshot file `snapshot` (its bytes),
    /// signed by `keys`.
    pub fn sign_timestamp(
        version: u64,
        expires: UnixTime,
        snapshot: &[u8],
        keys: &[PrivateKey],
    ) -> Result<Vec<u8>, OfflineError> {
        let (_, s) = meta::parse_role::<Snapshot>("snapshot", snapshot)?;
        Ok(meta::sign(
            &meta::timestamp(version, expires, s.version, snapshot),
            keys,
        )?)
    }
}
