//! Signed TUF metadata as the Server's two repositories handle it: parsing
//! a role file, checking its signatures against a root, building and
//! signing root, snapshot and timestamp files. Shared by the Director
//! ([`crate::director`]) and the Image repository ([`crate::repo`]); the
//! signing itself is `esync_uptane::builder`'s and `esync_uptane::crypto`'s.

use std::collections::BTreeMap;

use esync_uptane::builder::sign_metadata;
use esync_uptane::crypto::{hashes_of, RawSigned, SchemeSet};
use esync_uptane::metadata::{MetaFile, RoleKeys, Root, Snapshot, Timestamp, SPEC_VERSION};
use esync_uptane::{PrivateKey, PublicKey, UnixTime};
use serde::de::DeserializeOwned;

/// The four top-level roles, in root order.
pub const TOP_ROLES: [&str; 4] = ["root", "targets", "snapshot", "timestamp"];

/// Largest metadata file accepted on upload or read back (bytes).
pub const MAX_METADATA_LEN: usize = 16 * 1024 * 1024;

/// A metadata file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    /// Not a signed TUF document of the expected role.
    #[error("{role}: {reason}")]
    Malformed {
        /// Role expected.
        role: String,
        /// Why.
        reason: String,
    },
    /// Signatures do not meet the threshold.
    #[error(transparent)]
    Signature(#[from] esync_uptane::Error),
    /// The version does not follow the stored one.
    #[error("{role}: version {got} does not follow the stored version {stored}")]
    Version {
        /// Role.
        role: String,
        /// Stored version.
        stored: u64,
        /// Version received.
        got: u64,
    },
    /// The file is already expired.
    #[error("{role}: expired at {expires}")]
    Expired {
        /// Role.
        role: String,
        /// Its expiry (RFC 3339).
        expires: String,
    },
}

/// Parses a signed file of `role` (`_type` must be `role`), bounding its
/// length first.
pub fn parse_role<T: DeserializeOwned>(
    role: &str,
    bytes: &[u8],
) -> Result<(RawSigned, T), MetaError> {
    let bad = |reason: String| MetaError::Malformed {
        role: role.to_owned(),
        reason,
    };
    if bytes.len() > MAX_METADATA_LEN {
        return Err(bad(format!(
            "{} bytes exceed {MAX_METADATA_LEN}",
            bytes.len()
        )));
    }
    let raw = RawSigned::from_slice(role, bytes).map_err(|e| bad(e.to_string()))?;
    let ty = raw.signed.get("_type").and_then(|v| v.as_str());
    if ty != Some(role) {
        return Err(bad(format!("_type is {ty:?}")));
    }
    let signed: T = serde_json::from_value(raw.signed.clone()).map_err(|e| bad(e.to_string()))?;
    Ok((raw, signed))
}

/// Checks that `raw` is signed by the threshold of `role` in `root`.
pub fn verify_role(raw: &RawSigned, root: &Root, role: &str) -> Result<(), MetaError> {
    let keys = root.roles.get(role).ok_or_else(|| MetaError::Malformed {
        role: role.to_owned(),
        reason: "the root names no such role".into(),
    })?;
    raw.verify_threshold(
        role,
        &root.keys,
        &keys.keyids,
        keys.threshold,
        SchemeSet::default(),
    )?;
    Ok(())
}

/// Seconds since the epoch of a time in milliseconds (TUF times are
/// seconds).
pub fn unix_s(now_ms: i64) -> UnixTime {
    UnixTime(now_ms.div_euclid(1000))
}

/// Checks that `expires` is after `now`.
pub fn check_fresh(role: &str, expires: UnixTime, now: UnixTime) -> Result<(), MetaError> {
    if expires <= now {
        return Err(MetaError::Expired {
            role: role.to_owned(),
            expires: expires.to_rfc3339(),
        });
    }
    Ok(())
}

/// A root naming `keys` for each top-level role (all of a role's keys must
/// sign: threshold = number of keys), consistent snapshots on.
pub fn build_root(
    version: u64,
    expires: UnixTime,
    keys: &BTreeMap<String, Vec<PrivateKey>>,
) -> Root {
    let public = keys
        .iter()
        .map(|(role, ks)| {
            let pubs: Vec<PublicKey> = ks.iter().map(PrivateKey::public_key).collect();
            let threshold = ks.len().max(1) as u64;
            (role.clone(), (pubs, threshold))
        })
        .collect();
    build_root_public(version, expires, &public)
}

/// A root naming, for each role, its public keys and threshold;
/// consistent snapshots on.
pub fn build_root_public(
    version: u64,
    expires: UnixTime,
    roles: &BTreeMap<String, (Vec<PublicKey>, u64)>,
) -> Root {
    let mut root = Root {
        type_: "root".into(),
        spec_version: SPEC_VERSION.into(),
        consistent_snapshot: true,
        version,
        expires,
        keys: BTreeMap::new(),
        roles: BTreeMap::new(),
    };
    for (role, (ks, threshold)) in roles {
        for k in ks {
            root.keys.insert(k.key_id(), k.clone());
        }
        root.roles.insert(
            role.clone(),
            RoleKeys {
                keyids: ks.iter().map(PublicKey::key_id).collect(),
                threshold: *threshold,
            },
        );
    }
    root
}

/// Signs `signed` with every key of `keys`.
pub fn sign<T: serde::Serialize>(signed: &T, keys: &[PrivateKey]) -> Result<Vec<u8>, MetaError> {
    Ok(sign_metadata(signed, &keys.iter().collect::<Vec<_>>())?)
}

/// A snapshot listing `targets.json` at `targets_version`.
pub fn snapshot(version: u64, expires: UnixTime, targets_version: u64) -> Snapshot {
    let mut meta = BTreeMap::new();
    meta.insert(
        "targets.json".to_string(),
        MetaFile {
            version: targets_version,
            length: None,
            hashes: None,
        },
    );
    Snapshot {
        type_: "snapshot".into(),
        spec_version: SPEC_VERSION.into(),
        version,
        expires,
        meta,
    }
}

/// A timestamp over the snapshot file `snapshot_bytes` of `snapshot_version`.
pub fn timestamp(
    version: u64,
    expires: UnixTime,
    snapshot_version: u64,
    snapshot_bytes: &[u8],
) -> Timestamp {
    let mut meta = BTreeMap::new();
    meta.insert(
        "snapshot.json".to_string(),
        MetaFile {
            version: snapshot_version,
            length: Some(snapshot_bytes.len() as u64),
            hashes: Some(hashes_of(snapshot_bytes)),
        },
    );
    Timestamp {
        type_: "timestamp".into(),
        spec_version: SPEC_VERSION.into(),
        version,
        expires,
        meta,
    }
}

/// The key ids that signed `bytes` (empty when it does not parse).
pub fn signer_ids(bytes: &[u8]) -> Vec<String> {
    let mut ids: Vec<String> = RawSigned::from_slice("metadata", bytes)
        .map(|r| r.signatures.into_iter().map(|s| s.keyid).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

/// The sorted key ids of `keys`.
pub fn key_ids(keys: &[PrivateKey]) -> Vec<String> {
    let mut ids: Vec<String> = keys.iter().map(PrivateKey::key_id).collect();
    ids.sort();
    ids
}
