//! The signing side: keys, metadata creation, signing, root rotation,
//! targets, delegations, snapshot and timestamp, and the files of a
//! repository with consistent-snapshot names.
//!
//! [`RepositoryBuilder::publish`] produces every file a client fetches:
//! `N.root.json` (and `root.json`), `timestamp.json`, `snapshot.json` and
//! `VERSION.snapshot.json`, `ROLE.json` and `VERSION.ROLE.json` for
//! `targets` and each delegated role (name percent-encoded), and the
//! target files as `NAME` and `DIR/HASH.BASENAME` for each of their hashes.

use std::collections::{BTreeMap, BTreeSet};

use esync_proto::message::{MetadataRole, RoleBytes};
use serde_json::Value;

use crate::crypto::{hashes_of, PrivateKey, RawSigned, Scheme};
use crate::error::{Error, Result};
use crate::metadata::{
    check_target_name, percent_encode, DelegatedRole, Delegations, MetaFile, RoleKeys, Root,
    Snapshot, TargetInfo, Targets, Timestamp, SPEC_VERSION,
};
use crate::time::UnixTime;

/// Signing keys and threshold of one role.
#[derive(Debug, Clone)]
pub struct RoleSetup {
    /// The private keys (all of them sign).
    pub keys: Vec<PrivateKey>,
    /// Threshold written into the metadata.
    pub threshold: u64,
}

impl RoleSetup {
    /// `n` fresh keys with threshold `threshold`.
    pub fn generate(n: usize, threshold: u64) -> Self {
        RoleSetup {
            keys: (0..n).map(|_| PrivateKey::generate()).collect(),
            threshold,
        }
    }

    /// `n` fresh keys of `scheme` with threshold `threshold` (ed25519 and
    /// ECDSA; RSA keys are loaded, see [`PrivateKey::from_pem`], and given
    /// with [`RoleSetup::keys`]).
    pub fn generate_for(scheme: Scheme, n: usize, threshold: u64) -> Result<Self> {
        Ok(RoleSetup {
            keys: (0..n)
                .map(|_| PrivateKey::generate_for(scheme))
                .collect::<Result<_>>()?,
            threshold,
        })
    }

    /// The given keys with threshold `threshold` (keys may be of different
    /// schemes: a threshold counts distinct keys of any type).
    pub fn keys(keys: Vec<PrivateKey>, threshold: u64) -> Self {
        RoleSetup { keys, threshold }
    }

    /// One key, threshold 1.
    pub fn single(key: PrivateKey) -> Self {
        RoleSetup {
            keys: vec![key],
            threshold: 1,
        }
    }

    fn role_keys(&self) -> RoleKeys {
        RoleKeys {
            keyids: self.keys.iter().map(PrivateKey::key_id).collect(),
            threshold: self.threshold,
        }
    }
}

/// Signs a serializable `signed` object with `keys`; returns the JSON file.
pub fn sign_metadata<T: serde::Serialize>(signed: &T, keys: &[&PrivateKey]) -> Result<Vec<u8>> {
    let v = serde_json::to_value(signed).map_err(|e| Error::Build(e.to_string()))?;
    RawSigned::sign(v, keys)?.to_bytes()
}

/// Files of a published repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoFiles {
    /// Metadata files by path relative to the metadata base URL.
    pub metadata: BTreeMap<String, Vec<u8>>,
    /// Target files by path relative to the targets base URL.
    pub targets: BTreeMap<String, Vec<u8>>,
}

impl RepoFiles {
    /// The top-level role files as `esync-proto` [`RoleBytes`], the form in
    /// which a Client forwards metadata to Agents (`UpdateMetadata`): every
    /// root version (`N.root.json`) and the current `timestamp.json`,
    /// `snapshot.json` and `targets.json`. Root files come in name order;
    /// receivers order them by their signed version.
    pub fn top_level_roles(&self) -> Vec<RoleBytes> {
        self.metadata
            .iter()
            .filter_map(|(name, bytes)| {
                let role = match name.as_str() {
                    n if n.ends_with(".root.json") => MetadataRole::Root,
                    "timestamp.json" => MetadataRole::Timestamp,
                    "snapshot.json" => MetadataRole::Snapshot,
                    "targets.json" => MetadataRole::Targets,
                    _ => return None,
                };
                Some(RoleBytes {
                    role,
                    json: bytes.clone(),
                })
            })
            .collect()
    }
}

/// Target file path with a hash prefix on its last segment (`dir/HASH.base`).
pub fn hash_prefixed_path(name: &str, hash_hex: &str) -> String {
    match name.rsplit_once('/') {
        Some((dir, base)) => format!("{dir}/{hash_hex}.{base}"),
        None => format!("{hash_hex}.{name}"),
    }
}

struct RoleState {
    meta: Targets,
    keys: RoleSetup,
}

/// Builds and signs a whole repository.
pub struct RepositoryBuilder {
    consistent_snapshot: bool,
    default_expires: UnixTime,
    expires: BTreeMap<String, UnixTime>,
    top: BTreeMap<String, RoleSetup>,
    root: Root,
    targets: BTreeMap<String, RoleState>,
    data: BTreeMap<String, Vec<u8>>,
    dirty: BTreeSet<String>,
    snapshot_version: u64,
    timestamp_version: u64,
    files: RepoFiles,
}

fn empty_targets(expires: UnixTime) -> Targets {
    Targets {
        type_: "targets".into(),
        spec_version: SPEC_VERSION.into(),
        version: 0,
        expires,
        targets: BTreeMap::new(),
        delegations: None,
    }
}

impl RepositoryBuilder {
    /// A repository with the given keys for the four top-level roles, every
    /// role expiring at `expires`. Root version 1 is signed at once.
    pub fn new(
        root: RoleSetup,
        targets: RoleSetup,
        snapshot: RoleSetup,
        timestamp: RoleSetup,
        expires: UnixTime,
        consistent_snapshot: bool,
    ) -> Result<Self> {
        let mut top = BTreeMap::new();
        top.insert("root".to_string(), root);
        top.insert("targets".to_string(), targets.clone());
        top.insert("snapshot".to_string(), snapshot);
        top.insert("timestamp".to_string(), timestamp);
        let mut b = RepositoryBuilder {
            consistent_snapshot,
            default_expires: expires,
            expires: BTreeMap::new(),
            root: Root {
                type_: "root".into(),
                spec_version: SPEC_VERSION.into(),
                consistent_snapshot,
                version: 0,
                expires,
                keys: BTreeMap::new(),
                roles: BTreeMap::new(),
            },
            top,
            targets: BTreeMap::new(),
            data: BTreeMap::new(),
            dirty: BTreeSet::new(),
            snapshot_version: 0,
            timestamp_version: 0,
            files: RepoFiles::default(),
        };
        b.targets.insert(
            "targets".into(),
            RoleState {
                meta: empty_targets(expires),
                keys: targets,
            },
        );
        b.dirty.insert("targets".into());
        let signers = b.top["root"].keys.clone();
        b.next_root(&signers.iter().collect::<Vec<_>>())?;
        Ok(b)
    }

    /// A repository with one fresh key per role and consistent snapshots.
    pub fn generate(expires: UnixTime) -> Result<Self> {
        Self::new(
            RoleSetup::generate(1, 1),
            RoleSetup::generate(1, 1),
            RoleSetup::generate(1, 1),
            RoleSetup::generate(1, 1),
            expires,
            true,
        )
    }

    fn expires_of(&self, role: &str) -> UnixTime {
        self.expires
            .get(role)
            .copied()
            .unwrap_or(self.default_expires)
    }

    /// Signing keys of a top-level role.
    pub fn keys(&self, role: &str) -> Option<&RoleSetup> {
        self.top.get(role)
    }

    /// Signing keys of a delegated role.
    pub fn delegated_keys(&self, role: &str) -> Option<&RoleSetup> {
        self.targets.get(role).map(|r| &r.keys)
    }

    /// The current root metadata.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// Bytes of root version `version`.
    pub fn root_bytes(&self, version: u64) -> Option<&[u8]> {
        self.files
            .metadata
            .get(&format!("{version}.root.json"))
            .map(Vec::as_slice)
    }

    /// The files published so far.
    pub fn files(&self) -> &RepoFiles {
        &self.files
    }

    /// Current metadata of a targets role.
    pub fn targets_meta(&self, role: &str) -> Option<&Targets> {
        self.targets.get(role).map(|r| &r.meta)
    }

    /// Sets the expiry of `role` for its next version (for `root`, call
    /// [`RepositoryBuilder::bump_root`] to sign a new root).
    pub fn set_expires(&mut self, role: &str, expires: UnixTime) {
        self.expires.insert(role.to_string(), expires);
        if self.targets.contains_key(role) {
            self.dirty.insert(role.to_string());
        }
    }

    fn next_root(&mut self, signers: &[&PrivateKey]) -> Result<()> {
        let mut root = self.root.clone();
        root.version += 1;
        root.expires = self.expires_of("root");
        root.keys.clear();
        root.roles.clear();
        for (name, setup) in &self.top {
            for k in &setup.keys {
                root.keys.insert(k.key_id(), k.public_key());
            }
            root.roles.insert(name.clone(), setup.role_keys());
        }
        let bytes = sign_metadata(&root, signers)?;
        self.files
            .metadata
            .insert(format!("{}.root.json", root.version), bytes.clone());
        self.files.metadata.insert("root.json".into(), bytes);
        self.root = root;
        Ok(())
    }

    /// Signs a new root version with the same keys (e.g. a new expiry).
    pub fn bump_root(&mut self) -> Result<()> {
        let signers = self.top["root"].keys.clone();
        self.next_root(&signers.iter().collect::<Vec<_>>())
    }

    /// Replaces the keys of top-level `role` and signs a new root version,
    /// signed by the old root keys and (for a root rotation) the new ones,
    /// as TUF requires.
    pub fn rotate_keys(&mut self, role: &str, setup: RoleSetup) -> Result<()> {
        let old_root = self.top["root"].keys.clone();
        let mut signers: Vec<PrivateKey> = old_root;
        if role == "root" {
            signers.extend(setup.keys.iter().cloned());
        }
        self.rotate_keys_signed_by(role, setup, &signers)
    }

    /// Like [`RepositoryBuilder::rotate_keys`] but the new root is signed by
    /// exactly `signers` (to build invalid rotations in tests).
    pub fn rotate_keys_signed_by(
        &mut self,
        role: &str,
        setup: RoleSetup,
        signers: &[PrivateKey],
    ) -> Result<()> {
        if !self.top.contains_key(role) {
            return Err(Error::Build(format!("{role} is not a top-level role")));
        }
        if role == "targets" {
            if let Some(t) = self.targets.get_mut("targets") {
                t.keys = setup.clone();
            }
            self.dirty.insert("targets".into());
        }
        self.top.insert(role.to_string(), setup);
        let mut seen = BTreeSet::new();
        let signers: Vec<&PrivateKey> =
            signers.iter().filter(|k| seen.insert(k.key_id())).collect();
        self.next_root(&signers)
    }

    /// Adds (or replaces) target `name` in `role` with the hashes and length
    /// of `data`, and `custom` kept verbatim.
    pub fn add_target_to(
        &mut self,
        role: &str,
        name: &str,
        data: &[u8],
        custom: Option<Value>,
    ) -> Result<TargetInfo> {
        check_target_name(name)?;
        let info = TargetInfo {
            length: data.len() as u64,
            hashes: hashes_of(data),
            custom,
        };
        let r = self
            .targets
            .get_mut(role)
            .ok_or_else(|| Error::Build(format!("no targets role {role}")))?;
        r.meta.targets.insert(name.to_string(), info.clone());
        self.data.insert(name.to_string(), data.to_vec());
        self.dirty.insert(role.to_string());
        Ok(info)
    }

    /// Adds target `name` to the top-level targets role.
    pub fn add_target(
        &mut self,
        name: &str,
        data: &[u8],
        custom: Option<Value>,
    ) -> Result<TargetInfo> {
        self.add_target_to("targets", name, data, custom)
    }

    /// Removes target `name` from `role`.
    pub fn remove_target(&mut self, role: &str, name: &str) {
        if let Some(r) = self.targets.get_mut(role) {
            if r.meta.targets.remove(name).is_some() {
                self.dirty.insert(role.to_string());
            }
        }
    }

    /// Delegates `paths` from `parent` to a new role `name` signed by
    /// `setup`; appended after the parent's existing delegations (lower
    /// priority).
    pub fn add_delegation(
        &mut self,
        parent: &str,
        name: &str,
        setup: RoleSetup,
        paths: Vec<String>,
        terminating: bool,
    ) -> Result<()> {
        if ["root", "timestamp", "snapshot", "targets"].contains(&name)
            || self.targets.contains_key(name)
        {
            return Err(Error::Build(format!("role name {name} already used")));
        }
        let expires = self.expires_of(name);
        let p = self
            .targets
            .get_mut(parent)
            .ok_or_else(|| Error::Build(format!("no targets role {parent}")))?;
        let d = p.meta.delegations.get_or_insert_with(|| Delegations {
            keys: BTreeMap::new(),
            roles: Vec::new(),
        });
        for k in &setup.keys {
            d.keys.insert(k.key_id(), k.public_key());
        }
        d.roles.push(DelegatedRole {
            name: name.to_string(),
            keyids: setup.keys.iter().map(PrivateKey::key_id).collect(),
            threshold: setup.threshold,
            terminating,
            paths: Some(paths),
            path_hash_prefixes: None,
        });
        self.dirty.insert(parent.to_string());
        self.targets.insert(
            name.to_string(),
            RoleState {
                meta: empty_targets(expires),
                keys: setup,
            },
        );
        self.dirty.insert(name.to_string());
        Ok(())
    }

    /// Signs `signed` with the current keys of `role` (top-level or delegated).
    pub fn sign_as(&self, role: &str, signed: &Value) -> Result<Vec<u8>> {
        let setup = self
            .top
            .get(role)
            .or_else(|| self.targets.get(role).map(|r| &r.keys))
            .ok_or_else(|| Error::Build(format!("no role {role}")))?;
        RawSigned::sign(signed.clone(), &setup.keys.iter().collect::<Vec<_>>())?.to_bytes()
    }

    /// Re-signs every changed targets role with a new version, then a new
    /// snapshot and timestamp.
    pub fn publish(&mut self) -> Result<&RepoFiles> {
        self.publish_with(|_, _| {})
    }

    /// Like [`RepositoryBuilder::publish`], passing each role's `signed`
    /// object to `edit` just before it is signed (tests use this to build
    /// malicious metadata that is still correctly signed and chained).
    pub fn publish_with(&mut self, mut edit: impl FnMut(&str, &mut Value)) -> Result<&RepoFiles> {
        let dirty: Vec<String> = std::mem::take(&mut self.dirty).into_iter().collect();
        for role in dirty {
            let expires = self.expires_of(&role);
            let Some(r) = self.targets.get_mut(&role) else {
                continue;
            };
            r.meta.version += 1;
            r.meta.expires = expires;
            let mut v = serde_json::to_value(&r.meta).map_err(|e| Error::Build(e.to_string()))?;
            edit(&role, &mut v);
            let bytes = RawSigned::sign(v, &r.keys.keys.iter().collect::<Vec<_>>())?.to_bytes()?;
            let enc = percent_encode(&role);
            self.files
                .metadata
                .insert(format!("{}.{enc}.json", r.meta.version), bytes.clone());
            self.files.metadata.insert(format!("{enc}.json"), bytes);
        }
        self.snapshot_version += 1;
        let snapshot = Snapshot {
            type_: "snapshot".into(),
            spec_version: SPEC_VERSION.into(),
            version: self.snapshot_version,
            expires: self.expires_of("snapshot"),
            meta: self
                .targets
                .iter()
                .map(|(name, r)| {
                    let m = MetaFile {
                        version: r.meta.version,
                        length: None,
                        hashes: None,
                    };
                    (format!("{name}.json"), m)
                })
                .collect(),
        };
        let snap_bytes = self.sign_top("snapshot", &snapshot, &mut edit)?;
        self.files.metadata.insert(
            format!("{}.snapshot.json", self.snapshot_version),
            snap_bytes.clone(),
        );
        self.files
            .metadata
            .insert("snapshot.json".into(), snap_bytes.clone());
        self.timestamp_version += 1;
        let mut meta = BTreeMap::new();
        meta.insert(
            "snapshot.json".to_string(),
            MetaFile {
                version: self.snapshot_version,
                length: Some(snap_bytes.len() as u64),
                hashes: Some(hashes_of(&snap_bytes)),
            },
        );
        let ts = Timestamp {
            type_: "timestamp".into(),
            spec_version: SPEC_VERSION.into(),
            version: self.timestamp_version,
            expires: self.expires_of("timestamp"),
            meta,
        };
        let ts_bytes = self.sign_top("timestamp", &ts, &mut edit)?;
        self.files
            .metadata
            .insert("timestamp.json".into(), ts_bytes);
        for r in self.targets.values() {
            for (name, info) in &r.meta.targets {
                let Some(data) = self.data.get(name) else {
                    continue;
                };
                self.files.targets.insert(name.clone(), data.clone());
                for h in info.hashes.values() {
                    self.files
                        .targets
                        .insert(hash_prefixed_path(name, h), data.clone());
                }
            }
        }
        Ok(&self.files)
    }

    /// Signs a new timestamp version over the current snapshot (what the
    /// online timestamp role does regularly to keep clients fresh).
    pub fn publish_timestamp(&mut self) -> Result<&RepoFiles> {
        let snap_bytes = self
            .files
            .metadata
            .get("snapshot.json")
            .cloned()
            .ok_or_else(|| Error::Build("publish a snapshot first".into()))?;
        self.timestamp_version += 1;
        let mut meta = BTreeMap::new();
        meta.insert(
            "snapshot.json".to_string(),
            MetaFile {
                version: self.snapshot_version,
                length: Some(snap_bytes.len() as u64),
                hashes: Some(hashes_of(&snap_bytes)),
            },
        );
        let ts = Timestamp {
            type_: "timestamp".into(),
            spec_version: SPEC_VERSION.into(),
            version: self.timestamp_version,
            expires: self.expires_of("timestamp"),
            meta,
        };
        let ts_bytes = self.sign_top("timestamp", &ts, &mut |_: &str, _: &mut Value| {})?;
        self.files
            .metadata
            .insert("timestamp.json".into(), ts_bytes);
        Ok(&self.files)
    }

    fn sign_top<T: serde::Serialize>(
        &self,
        role: &str,
        meta: &T,
        edit: &mut impl FnMut(&str, &mut Value),
    ) -> Result<Vec<u8>> {
        let mut v = serde_json::to_value(meta).map_err(|e| Error::Build(e.to_string()))?;
        edit(role, &mut v);
        self.sign_as(role, &v)
    }

    /// Whether the root says snapshots are consistent.
    pub fn consistent_snapshot(&self) -> bool {
        self.consistent_snapshot
    }
}
