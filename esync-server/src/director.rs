//! The Director: the Uptane repository with online keys that signs, per
//! vehicle and on demand, the targets that vehicle must install.
//!
//! * **Keys** (ed25519, one per top-level role) live in the database
//!   ([`Store::signing_keys`]), so every Server node signs with the same
//!   keys. [`Director::rotate_keys`] replaces a role's keys and signs the
//!   next root with the old root keys (and, for a root rotation, the new
//!   ones too), in one transaction with the key change. Roots are shared by
//!   every vehicle (`N.root.json`, scope `""`).
//! * **Per-vehicle targets** are computed from the packages assigned to the
//!   vehicle ([`Store::assignments`]) and its last verified manifest
//!   ([`Store::manifest`]): the first assigned package with a component
//!   not yet installed is directed, each component to the vehicle's ECU of
//!   its hardware id, as the full image's target entry of
//!   `esync_package` (name, length, SHA-256, `custom.esync`
//!   `TargetDescription`) with the Uptane Director fields. For an ECU that
//!   reports an installed image the Server knows, a delta job for (installed
//!   SHA-256, target SHA-256) is queued once ([`Store::enqueue_delta`]); when
//!   it is done the patch is added to the component's `deltas` in the
//!   signed description, so the Client may fetch it instead of the image.
//!   Targets, snapshot and timestamp are re-signed only when the targets
//!   changed, a role's keys changed or the timestamp is past half its
//!   lifetime; versions come from [`Store::next_director_versions`].
//! * **Manifests** (A15): the primary's signature against the registered
//!   primary ECU key, every ECU report against its ECU's key, every ECU
//!   known to the vehicle, every report's nonce new
//!   ([`Store::use_nonce`]); any failure drops the whole manifest and
//!   nothing is stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use esync_api::body::{CheckInResponse, ManifestAccepted};
use esync_package::package::{Artifact, ArtifactRef, Component, Delta, Package, TargetDescription};
use esync_proto::id::{EcuSerial, HardwareId, Sha256Digest, SoftwareVersion, Vin};
use esync_proto::message::PatchFormat;
use esync_uptane::crypto::RawSigned;
use esync_uptane::manifest::{
    verify_vehicle_manifest, EcuVersionReport, NonceTracker, VehicleManifest,
};
use esync_uptane::metadata::{Root, TargetInfo, Targets, SPEC_VERSION};
use esync_uptane::uptane::director_custom;
use esync_uptane::{PrivateKey, PublicKey};
use sha2::{Digest as _, Sha256};

use crate::blob::{BlobError, BlobStore};
use crate::deltas::format_name;
use crate::meta::{self, MetaError, TOP_ROLES};
use crate::packages::{load_package, PackageBuildError, DEFAULT_CHUNK_SIZE};
use crate::store::{
    DbError, DeltaState, Ecu, EcuInstalledRecord, ManifestRecord, MetadataRecord, RepoKind,
    SigningKeyRecord, Store,
};

/// Lifetimes and choices of the Director.
#[derive(Clone, Debug)]
pub struct DirectorConfig {
    /// Lifetime of a new root (seconds).
    pub root_lifetime_s: i64,
    /// Lifetime of per-vehicle targets and snapshot (seconds).
    pub targets_lifetime_s: i64,
    /// Lifetime of a per-vehicle timestamp (seconds); re-signed when less
    /// than half of it is left.
    pub timestamp_lifetime_s: i64,
    /// Patch format of the deltas the Server generates.
    pub delta_format: PatchFormat,
    /// Largest signed vehicle manifest accepted (bytes).
    pub max_manifest_len: usize,
    /// How long an "up to date" check-in answer is reused for the same
    /// vehicle and manifest hash without reading the database (ms; 0:
    /// never). An assignment made through this node takes effect at once
    /// ([`Director::forget`]); one made through another node within this
    /// time.
    pub up_to_date_cache_ms: i64,
}

impl Default for DirectorConfig {
    fn default() -> Self {
        Self {
            root_lifetime_s: 365 * 86_400,
            targets_lifetime_s: 7 * 86_400,
            timestamp_lifetime_s: 86_400,
            delta_format: PatchFormat::BsdiffZstd,
            max_manifest_len: esync_api::Route::Manifest.max_request_body() as usize,
            up_to_date_cache_ms: 30_000,
        }
    }
}

/// A Director operation failed (Server side: 5xx).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectorError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The blob store failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// Signing or metadata failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// A stored package does not load.
    #[error(transparent)]
    Package(#[from] PackageBuildError),
    /// The Director has no keys or root yet ([`Director::init`]).
    #[error("the Director is not initialised")]
    NotInitialised,
    /// Stored state is inconsistent.
    #[error("corrupt Director state: {0}")]
    Corrupt(String),
    /// A role name that is not a top-level role.
    #[error("unknown role {0:?}")]
    UnknownRole(String),
}

/// Why a vehicle manifest was dropped (422; nothing stored).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The manifest fails A15.
    #[error("manifest rejected: {0}")]
    Rejected(String),
    /// The Server failed while checking it.
    #[error(transparent)]
    Server(#[from] DirectorError),
}

impl From<DbError> for ManifestError {
    fn from(e: DbError) -> Self {
        ManifestError::Server(DirectorError::Db(e))
    }
}

fn seed_of(k: &PrivateKey) -> Result<Vec<u8>, DirectorError> {
    k.to_seed()
        .map(|s| s.to_vec())
        .ok_or_else(|| DirectorError::Corrupt("online keys are ed25519".into()))
}

fn key_from_record(r: &SigningKeyRecord) -> Result<PrivateKey, DirectorError> {
    let seed: [u8; 32] =
        r.secret.as_slice().try_into().map_err(|_| {
            DirectorError::Corrupt(format!("key {} is not a 32-byte seed", r.key_id))
        })?;
    let k = PrivateKey::from_seed(&seed);
    if k.key_id() != r.key_id {
        return Err(DirectorError::Corrupt(format!(
            "key {} does not match its id",
            r.key_id
        )));
    }
    Ok(k)
}

/// Decodes an ECU public key as registered ([`Ecu::public_key`]): a TUF
/// key object in JSON (`{"keytype": .., "scheme": .., "keyval": ..}`, any
/// scheme `esync_uptane` verifies) or 32 raw ed25519 bytes.
pub fn ecu_public_key(raw: &[u8]) -> Result<PublicKey, String> {
    if raw.len() == 32 {
        let v = serde_json::json!({
            "keytype": "ed25519",
            "scheme": "ed25519",
            "keyval": { "public": hex::encode(raw) },
        });
        return serde_json::from_value(v).map_err(|e| e.to_string());
    }
    serde_json::from_slice(raw).map_err(|e| e.to_string())
}

/// What the Director directs one vehicle to install.
#[derive(Debug, Clone, PartialEq)]
pub struct VehiclePlan {
    /// Target entries by name.
    pub targets: BTreeMap<String, TargetInfo>,
    /// Whether some directed component is not installed yet.
    pub pending: bool,
}

/// The Director. Cheap to share (`Arc`); holds no state but caches.
#[derive(Debug)]
pub struct Director {
    store: Arc<dyn Store>,
    blobs: BlobStore,
    config: DirectorConfig,
    /// Patch descriptions by patch SHA-256 (immutable, so safe to cache).
    patches: Mutex<HashMap<Sha256Digest, Artifact>>,
    /// Vehicles last answered "up to date": manifest hash and when.
    up_to_date: Mutex<HashMap<Vin, (Sha256Digest, i64)>>,
    /// Whether any campaign is offering (the node's cache, shared by its
    /// admin and device listeners).
    offer_gate: crate::campaigns::OfferGate,
}

/// Nonces the in-manifest tracker remembers.
const NONCES_PER_MANIFEST: usize = 1024;

/// Most vehicles remembered by the check-in cache (then it starts over).
pub const MAX_CACHED_VEHICLES: usize = 1 << 20;

impl Director {
    /// The Director over `store` and `blobs` (keys and root must exist:
    /// [`Director::init`]).
    pub fn new(store: Arc<dyn Store>, blobs: BlobStore, config: DirectorConfig) -> Self {
        Self {
            store,
            blobs,
            config,
            patches: Mutex::new(HashMap::new()),
            up_to_date: Mutex::new(HashMap::new()),
            offer_gate: crate::campaigns::OfferGate::default(),
        }
    }

    /// Forgets the cached check-in answer of `vin` (call after changing
    /// its assignments).
    pub fn forget(&self, vin: &Vin) {
        self.cache().remove(vin);
    }

    /// This node's cache of whether any campaign is offering.
    pub fn offer_gate(&self) -> &crate::campaigns::OfferGate {
        &self.offer_gate
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<Vin, (Sha256Digest, i64)>> {
        self.up_to_date
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The configuration.
    pub fn config(&self) -> &DirectorConfig {
        &self.config
    }

    /// Creates the Director's keys (one ed25519 key per role) and root
    /// version 1 if there is no root yet; returns the root's version.
    /// Idempotent: an initialised Director is left as it is.
    pub async fn init(&self, now_ms: i64) -> Result<u64, DirectorError> {
        if let Some(r) = self.current_root().await? {
            return Ok(r.version);
        }
        let mut keys = BTreeMap::new();
        for role in TOP_ROLES {
            keys.insert(role.to_string(), vec![PrivateKey::generate()]);
        }
        let root = meta::build_root(
            1,
            meta::unix_s(now_ms).plus_seconds(self.config.root_lifetime_s),
            &keys,
        );
        let bytes = meta::sign(&root, &keys["root"])?;
        let files = root_files(1, &bytes, now_ms);
        for role in TOP_ROLES {
            let recs = keys[role]
                .iter()
                .map(|k| {
                    Ok(SigningKeyRecord {
                        repo: RepoKind::Director,
                        role: role.to_string(),
                        key_id: k.key_id(),
                        secret: seed_of(k)?,
                        created_ms: now_ms,
                    })
                })
                .collect::<Result<Vec<_>, DirectorError>>()?;
            let files: &[MetadataRecord] = if role == "root" { &files } else { &[] };
            self.store
                .replace_signing_keys(RepoKind::Director, role, &recs, files, now_ms)
                .await?;
        }
        Ok(1)
    }

    /// The current root (`root.json`), if initialised.
    pub async fn current_root(&self) -> Result<Option<Root>, DirectorError> {
        let Some(rec) = self
            .store
            .metadata(RepoKind::Director, "", "root.json")
            .await?
        else {
            return Ok(None);
        };
        let (_, root) = meta::parse_role::<Root>("root", &rec.body)?;
        Ok(Some(root))
    }

    async fn keys(&self, role: &str) -> Result<Vec<PrivateKey>, DirectorError> {
        let recs = self.store.signing_keys(RepoKind::Director, role).await?;
        if recs.is_empty() {
            return Err(DirectorError::NotInitialised);
        }
        recs.iter().map(key_from_record).collect()
    }

    /// Replaces the keys of top-level `role` with one fresh ed25519 key and
    /// signs the next root (by the old root keys, and by the new ones when
    /// `role` is `root`). Per-vehicle metadata is re-signed with the new
    /// keys at each vehicle's next check-in. Returns the new root version.
    pub async fn rotate_keys(&self, role: &str, now_ms: i64) -> Result<u64, DirectorError> {
        if !TOP_ROLES.contains(&role) {
            return Err(DirectorError::UnknownRole(role.to_owned()));
        }
        let root = self
            .current_root()
            .await?
            .ok_or(DirectorError::NotInitialised)?;
        let mut keys = BTreeMap::new();
        for r in TOP_ROLES {
            keys.insert(r.to_string(), self.keys(r).await?);
        }
        let old_root_keys = keys["root"].clone();
        let fresh = PrivateKey::generate();
        keys.insert(role.to_string(), vec![fresh.clone()]);
        let version = root.version + 1;
        let new_root = meta::build_root(
            version,
            meta::unix_s(now_ms).plus_seconds(self.config.root_lifetime_s),
            &keys,
        );
        let mut signers = old_root_keys;
        if role == "root" {
            signers.push(fresh.clone());
        }
        let bytes = meta::sign(&new_root, &signers)?;
        let rec = SigningKeyRecord {
            repo: RepoKind::Director,
            role: role.to_string(),
            key_id: fresh.key_id(),
            secret: seed_of(&fresh)?,
            created_ms: now_ms,
        };
        self.store
            .replace_signing_keys(
                RepoKind::Director,
                role,
                &[rec],
                &root_files(version, &bytes, now_ms),
                now_ms,
            )
            .await?;
        Ok(version)
    }

    /// A Director file for `vin`: roots are shared, the others per vehicle.
    /// `timestamp.json` is brought up to date first (a vehicle that never
    /// checked in still gets signed metadata).
    pub async fn file(
        &self,
        vin: &Vin,
        name: &str,
        now_ms: i64,
    ) -> Result<Option<Vec<u8>>, DirectorError> {
        if name == "root.json" || name.ends_with(".root.json") {
            return Ok(self
                .store
                .metadata(RepoKind::Director, "", name)
                .await?
                .map(|m| m.body));
        }
        if name == "timestamp.json" {
            let plan = self.plan(vin, now_ms).await?;
            self.publish(vin, &plan, now_ms).await?;
        }
        Ok(self
            .store
            .metadata(RepoKind::Director, vin.as_str(), name)
            .await?
            .map(|m| m.body))
    }

    /// `POST /v1/checkin`: compares `manifest_sha256` with the stored
    /// manifest's hash; when equal, brings the vehicle's metadata up to
    /// date (writing only if something changed) and says whether there is
    /// something to install.
    pub async fn check_in(
        &self,
        vin: &Vin,
        manifest_sha256: &Sha256Digest,
        now_ms: i64,
    ) -> Result<CheckInResponse, DirectorError> {
        if let Some((hash, at)) = self.cache().get(vin) {
            if hash == manifest_sha256
                && now_ms.saturating_sub(*at) < self.config.up_to_date_cache_ms
            {
                return Ok(CheckInResponse::UpToDate);
            }
        }
        let Some(m) = self.store.manifest(vin.as_str()).await? else {
            return Ok(CheckInResponse::ManifestWanted);
        };
        if m.hash.as_slice() != manifest_sha256.0.as_slice() {
            return Ok(CheckInResponse::ManifestWanted);
        }
        let plan = self.plan(vin, now_ms).await?;
        if !plan.pending {
            // Nothing to install: no signature, and a write only to
            // withdraw targets that were directed before.
            let stored = self.stored_targets(vin).await?;
            if stored.is_some_and(|t| !t.targets.is_empty()) {
                self.publish(vin, &plan, now_ms).await?;
            }
            let mut cache = self.cache();
            if cache.len() >= MAX_CACHED_VEHICLES {
                cache.clear();
            }
            cache.insert(vin.clone(), (*manifest_sha256, now_ms));
            return Ok(CheckInResponse::UpToDate);
        }
        self.forget(vin);
        let timestamp_version = self.publish(vin, &plan, now_ms).await?;
        Ok(CheckInResponse::NewDirectorMetadata { timestamp_version })
    }

    async fn stored_targets(&self, vin: &Vin) -> Result<Option<Targets>, DirectorError> {
        match self
            .store
            .metadata(RepoKind::Director, vin.as_str(), "targets.json")
            .await?
        {
            None => Ok(None),
            Some(rec) => Ok(Some(meta::parse_role::<Targets>("targets", &rec.body)?.1)),
        }
    }

    /// Signs new targets, snapshot and timestamp for `vin` when the plan's
    /// targets differ from the stored ones, when a role's keys changed, or
    /// when the timestamp is past half its lifetime. Returns the current
    /// timestamp version.
    pub async fn publish(
        &self,
        vin: &Vin,
        plan: &VehiclePlan,
        now_ms: i64,
    ) -> Result<u64, DirectorError> {
        let scope = vin.as_str();
        let now = meta::unix_s(now_ms);
        let get = |name: &'static str| self.store.metadata(RepoKind::Director, scope, name);
        let targets_keys = self.keys("targets").await?;
        let snapshot_keys = self.keys("snapshot").await?;
        let timestamp_keys = self.keys("timestamp").await?;
        let stored_targets = get("targets.json").await?;
        let stored_snapshot = get("snapshot.json").await?;
        let stored_ts = get("timestamp.json").await?;
        let targets_current = match &stored_targets {
            Some(rec) => {
                let (_, t) = meta::parse_role::<Targets>("targets", &rec.body)?;
                t.targets == plan.targets
                    && t.expires > now.plus_seconds(self.config.timestamp_lifetime_s)
                    && meta::signer_ids(&rec.body) == meta::key_ids(&targets_keys)
            }
            None => false,
        };
        let snapshot_current = targets_current
            && stored_snapshot
                .as_ref()
                .is_some_and(|s| meta::signer_ids(&s.body) == meta::key_ids(&snapshot_keys));
        let ts_current = snapshot_current
            && match &stored_ts {
                Some(rec) => {
                    let (_, ts) = meta::parse_role::<esync_uptane::metadata::Timestamp>(
                        "timestamp",
                        &rec.body,
                    )?;
                    // The timestamp must name the stored snapshot: two nodes
                    // publishing at once may leave the highest timestamp
                    // naming the lower snapshot; the next publish (every
                    // `timestamp.json` fetch runs one) re-signs it.
                    let names_stored = ts.meta.get("snapshot.json").map(|m| m.version)
                        == stored_snapshot.as_ref().map(|s| s.version);
                    names_stored
                        && ts.expires > now.plus_seconds(self.config.timestamp_lifetime_s / 2)
                        && meta::signer_ids(&rec.body) == meta::key_ids(&timestamp_keys)
                }
                None => false,
            };
        if ts_current {
            return Ok(stored_ts.map_or(0, |r| r.version));
        }
        // The versions this publish needs, allocated in one transaction:
        // targets (unless current), snapshot (unless current), timestamp.
        let mut roles = Vec::with_capacity(3);
        if !targets_current {
            roles.push("targets");
        }
        if !snapshot_current {
            roles.push("snapshot");
        }
        roles.push("timestamp");
        let versions = self.store.next_director_versions(scope, &roles).await?;
        let version_of = |role: &str| {
            roles
                .iter()
                .position(|r| *r == role)
                .and_then(|i| versions.get(i).copied())
                .ok_or_else(|| DirectorError::Corrupt(format!("no {role} version allocated")))
        };
        let mut files = Vec::new();
        let (snap_version, snap_bytes) = if snapshot_current {
            let s = stored_snapshot.ok_or(DirectorError::Corrupt("snapshot vanished".into()))?;
            (s.version, s.body)
        } else {
            let targets_version = if targets_current {
                stored_targets.map_or(0, |r| r.version)
            } else {
                let v = version_of("targets")?;
                let t = Targets {
                    type_: "targets".into(),
                    spec_version: SPEC_VERSION.into(),
                    version: v,
                    expires: now.plus_seconds(self.config.targets_lifetime_s),
                    targets: plan.targets.clone(),
                    delegations: None,
                };
                let bytes = meta::sign(&t, &targets_keys)?;
                files.push((format!("{v}.targets.json"), v, bytes.clone()));
                files.push(("targets.json".into(), v, bytes));
                v
            };
            let v = version_of("snapshot")?;
            let s = meta::snapshot(
                v,
                now.plus_seconds(self.config.targets_lifetime_s),
                targets_version,
            );
            let bytes = meta::sign(&s, &snapshot_keys)?;
            files.push((format!("{v}.snapshot.json"), v, bytes.clone()));
            files.push(("snapshot.json".into(), v, bytes.clone()));
            (v, bytes)
        };
        let v = version_of("timestamp")?;
        let ts = meta::timestamp(
            v,
            now.plus_seconds(self.config.timestamp_lifetime_s),
            snap_version,
            &snap_bytes,
        );
        files.push((
            "timestamp.json".into(),
            v,
            meta::sign(&ts, &timestamp_keys)?,
        ));
        // Versioned files first, timestamp last, in one transaction: a
        // client that sees the new timestamp finds everything it names.
        let records: Vec<MetadataRecord> = files
            .into_iter()
            .map(|(name, version, body)| MetadataRecord {
                repo: RepoKind::Director,
                scope: scope.to_owned(),
                name,
                version,
                body,
                created_ms: now_ms,
            })
            .collect();
        let written = self.store.put_metadata_all(&records).await?;
        let timestamp_written = records
            .iter()
            .zip(&written)
            .any(|(r, w)| *w && r.name == "timestamp.json");
        if timestamp_written {
            return Ok(v);
        }
        // Another node signed a newer timestamp meanwhile: that one stands.
        Ok(get("timestamp.json").await?.map_or(v, |r| r.version))
    }

    /// What `vin` is directed to install now, from its assignments and last
    /// manifest. Queues the delta jobs for the (installed, target) pairs it
    /// reports.
    pub async fn plan(&self, vin: &Vin, now_ms: i64) -> Result<VehiclePlan, DirectorError> {
        let store = self.store.as_ref();
        let ecus = store.ecus(vin.as_str()).await?;
        let installed = match store.manifest(vin.as_str()).await? {
            Some(m) => reported_images(&m)?,
            None => BTreeMap::new(),
        };
        for id in store.assignments(vin.as_str()).await? {
            let Some(pkg) = load_package(store, &id).await? else {
                continue;
            };
            let mut targets = BTreeMap::new();
            let mut pending = false;
            for c in pkg.components() {
                let Some(ecu) = ecu_for(&ecus, &c.hardware_id) else {
                    tracing::warn!(%vin, package = %id, hardware_id = %c.hardware_id,
                        "no single ECU of this hardware id: component not directed");
                    continue;
                };
                let serial = EcuSerial::new(ecu.serial.as_str())
                    .map_err(|e| DirectorError::Corrupt(format!("ECU serial: {e}")))?;
                let reported = installed.get(&serial);
                if reported != Some(&c.image.sha256) {
                    pending = true;
                }
                let component = match reported {
                    Some(from) if *from != c.image.sha256 => {
                        self.with_delta(c, from, now_ms).await?
                    }
                    _ => c.clone(),
                };
                let (name, info) = director_entry(&pkg, component, vin, &serial)?;
                targets.insert(name, info);
            }
            if pending {
                return Ok(VehiclePlan {
                    targets,
                    pending: true,
                });
            }
        }
        Ok(VehiclePlan {
            targets: BTreeMap::new(),
            pending: false,
        })
    }

    /// `c` with the Server's delta from `from` added when its job is done;
    /// queues the job otherwise (once per pair and format).
    async fn with_delta(
        &self,
        c: &Component,
        from: &Sha256Digest,
        now_ms: i64,
    ) -> Result<Component, DirectorError> {
        let Some(source) = self.store.image(&from.0).await? else {
            // An image the Server never had: no delta can be made from it.
            return Ok(c.clone());
        };
        let Ok(from_version) = SoftwareVersion::new(source.version.as_str()) else {
            return Ok(c.clone());
        };
        let format = self.config.delta_format;
        if c.deltas
            .iter()
            .any(|d| d.format == format && d.from_version == from_version)
            || from_version == c.version
        {
            return Ok(c.clone());
        }
        // Read first: every check-in of an offered vehicle plans, and the
        // job is queued once per pair, so the write (a turn at SQLite's
        // single write lock) is only for a pair not seen yet.
        let name = format_name(format);
        let job = match self
            .store
            .delta_job(&from.0, &c.image.sha256.0, name)
            .await?
        {
            Some(job) => job,
            None => {
                self.store
                    .enqueue_delta(&from.0, &c.image.sha256.0, name, now_ms)
                    .await?
                    .0
            }
        };
        let (DeltaState::Done, Some(result)) = (job.state, job.result_sha256) else {
            return Ok(c.clone());
        };
        let patch = self.describe_patch(Sha256Digest(result)).await?;
        let mut c = c.clone();
        if c.deltas.len() < esync_package::package::MAX_DELTAS {
            c.deltas.push(Delta {
                format,
                from_version,
                source_length: source.length,
                source_sha256: *from,
                patch,
            });
        }
        Ok(c)
    }

    async fn describe_patch(&self, sha: Sha256Digest) -> Result<Artifact, DirectorError> {
        if let Some(a) = self
            .patches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&sha)
        {
            return Ok(a.clone());
        }
        let bytes = self.blobs.read(&sha.0).await?;
        let a = Artifact::describe(&bytes, DEFAULT_CHUNK_SIZE)
            .map_err(|e| DirectorError::Corrupt(format!("patch {}: {e}", hex::encode(sha.0))))?;
        if a.sha256 != sha {
            return Err(DirectorError::Corrupt(format!(
                "patch blob {} does not hash to its name",
                hex::encode(sha.0)
            )));
        }
        self.patches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(sha, a.clone());
        Ok(a)
    }

    /// `POST /v1/manifest` (A15): verifies the signed manifest of `vin` and
    /// stores it as the vehicle's last manifest; any failure drops it
    /// whole and stores nothing.
    pub async fn receive_manifest(
        &self,
        vin: &Vin,
        bytes: &[u8],
        now_ms: i64,
    ) -> Result<ManifestAccepted, ManifestError> {
        let reject = |s: String| Err(ManifestError::Rejected(s));
        let ecus = self.store.ecus(vin.as_str()).await?;
        let Some(primary) = ecus.iter().find(|e| e.primary) else {
            return reject("the vehicle has no registered primary ECU".into());
        };
        let primary_key = ecu_public_key(&primary.public_key).map_err(|e| {
            DirectorError::Corrupt(format!("primary key of {}: {e}", primary.serial))
        })?;
        let mut keys = BTreeMap::new();
        for e in &ecus {
            let serial = EcuSerial::new(e.serial.as_str())
                .map_err(|err| DirectorError::Corrupt(format!("ECU serial: {err}")))?;
            let key = ecu_public_key(&e.public_key)
                .map_err(|err| DirectorError::Corrupt(format!("key of {}: {err}", e.serial)))?;
            keys.insert(serial, key);
        }
        // Within one manifest the tracker catches a nonce used twice; across
        // manifests (and nodes) the database does, below, for every report
        // (so a tracker that forgot one still cannot let a replay through).
        let mut tracker = NonceTracker::new(NONCES_PER_MANIFEST);
        let verified = match verify_vehicle_manifest(
            bytes,
            self.config.max_manifest_len,
            vin,
            &primary_key,
            &keys,
            &mut tracker,
        ) {
            Ok(v) => v,
            Err(e) => return reject(e.to_string()),
        };
        if verified.primary_ecu_serial.as_str() != primary.serial {
            return reject(format!(
                "primary ECU {} is not the registered {}",
                verified.primary_ecu_serial, primary.serial
            ));
        }
        if let Some((serial, why)) = verified.dropped.first() {
            return reject(format!("ECU report {serial}: {why:?}"));
        }
        if verified.reports.is_empty() {
            return reject("no ECU version report (nothing fresh to check)".into());
        }
        // Every signature verified. A replayed report rejects the manifest;
        // the fresh nonces recorded before it stay used, which only stops
        // their reuse.
        for r in &verified.reports {
            let key = nonce_key(&r.ecu_serial, &r.nonce);
            if self.store.use_nonce(vin.as_str(), &key, now_ms).await?
                == crate::store::Inserted::Existing
            {
                return reject(format!("ECU {}: nonce reused (replay)", r.ecu_serial));
            }
        }
        let hash: [u8; 32] = Sha256::digest(bytes).into();
        self.forget(vin);
        let record = ManifestRecord {
            vin: vin.to_string(),
            hash: hash.to_vec(),
            body: bytes.to_vec(),
            received_ms: now_ms,
        };
        // What the vehicle runs now, queryable (campaign targeting): the
        // verified manifest is the Server's only record of it, so after a
        // rollback on the vehicle it says the old version again. Stored
        // with the manifest in one transaction.
        let mut installed = Vec::new();
        for (serial, sha) in reported_images(&record)? {
            let Some(ecu) = ecus.iter().find(|e| e.serial == serial.as_str()) else {
                continue;
            };
            let version = self
                .store
                .image(&sha.0)
                .await?
                .map(|i| i.version)
                .unwrap_or_default();
            installed.push(EcuInstalledRecord {
                ecu_serial: ecu.serial.clone(),
                hardware_id: ecu.hardware_id.clone(),
                sha256: sha.0,
                version,
            });
        }
        self.store.put_manifest(&record, &installed).await?;
        // Queue the deltas for what the vehicle now reports.
        self.plan(vin, now_ms).await?;
        Ok(ManifestAccepted {
            manifest_sha256: Sha256Digest(hash),
        })
    }
}

fn nonce_key(ecu: &EcuSerial, nonce: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(ecu.as_str().len() + 1 + nonce.len());
    k.extend_from_slice(ecu.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(nonce.as_bytes());
    k
}

fn root_files(version: u64, bytes: &[u8], now_ms: i64) -> Vec<MetadataRecord> {
    [format!("{version}.root.json"), "root.json".to_string()]
        .into_iter()
        .map(|name| MetadataRecord {
            repo: RepoKind::Director,
            scope: String::new(),
            name,
            version,
            body: bytes.to_vec(),
            created_ms: now_ms,
        })
        .collect()
}

/// The ECU of `hardware_id` when the vehicle has exactly one.
fn ecu_for<'a>(ecus: &'a [Ecu], hardware_id: &HardwareId) -> Option<&'a Ecu> {
    let mut it = ecus
        .iter()
        .filter(|e| e.hardware_id == hardware_id.as_str());
    let first = it.next()?;
    it.next().is_none().then_some(first)
}

/// The installed image SHA-256 of every ECU of a stored (verified) manifest.
fn reported_images(m: &ManifestRecord) -> Result<BTreeMap<EcuSerial, Sha256Digest>, DirectorError> {
    let corrupt = |e: String| DirectorError::Corrupt(format!("stored manifest of {}: {e}", m.vin));
    let raw =
        RawSigned::from_slice("vehicle manifest", &m.body).map_err(|e| corrupt(e.to_string()))?;
    let vm: VehicleManifest =
        serde_json::from_value(raw.signed).map_err(|e| corrupt(e.to_string()))?;
    let mut out = BTreeMap::new();
    for signed in vm.ecu_version_reports.values() {
        let r: EcuVersionReport =
            serde_json::from_value(signed.signed.clone()).map_err(|e| corrupt(e.to_string()))?;
        if let Some(sha) = r
            .installed_image
            .hashes
            .get("sha256")
            .and_then(|h| esync_package::digest::from_hex(h))
        {
            out.insert(r.ecu_serial, sha);
        }
    }
    Ok(out)
}

/// The Director target entry of component `c` of `pkg` for ECU `serial`.
fn director_entry(
    pkg: &Package,
    c: Component,
    vin: &Vin,
    serial: &EcuSerial,
) -> Result<(String, TargetInfo), DirectorError> {
    let desc = TargetDescription {
        package: pkg.id().clone(),
        download: pkg.download().clone(),
        component_count: pkg.components().len() as u32,
        component: c,
        artifact: ArtifactRef::Full,
    };
    let c = &desc.component;
    let mut hashes = BTreeMap::new();
    hashes.insert("sha256".to_string(), hex::encode(c.image.sha256.0));
    let info = TargetInfo {
        length: c.image.length,
        hashes,
        custom: Some(director_custom(
            vin,
            serial,
            &c.hardware_id,
            c.release_counter,
            Some(desc.to_custom_json()),
        )),
    };
    Ok((desc.target_name(), info))
}
