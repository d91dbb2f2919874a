//! TUF metadata: the four top-level roles, delegations, target entries.
//!
//! Field names follow the TUF specification 1.0. Each role type is
//! serializable (the signing side builds them) and decoded from a
//! [`RawSigned`] whose signatures were checked over the bytes received.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::crypto::{PublicKey, RawSigned, SchemeSet};
use crate::error::{Error, Result};
use crate::time::UnixTime;

/// `spec_version` written by the signing side.
pub const SPEC_VERSION: &str = "1.0.31";

/// Key ids and threshold of one role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleKeys {
    /// Authorised key ids.
    pub keyids: Vec<String>,
    /// Number of distinct keys that must sign.
    pub threshold: u64,
}

/// The root role.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Root {
    /// Always `"root"`.
    #[serde(rename = "_type")]
    pub type_: String,
    /// TUF specification version (major 1).
    pub spec_version: String,
    /// Whether snapshot, targets and target files use version/hash-prefixed names.
    #[serde(default)]
    pub consistent_snapshot: bool,
    /// Version, from 1.
    pub version: u64,
    /// Expiry.
    pub expires: UnixTime,
    /// Keys by key id.
    #[serde(deserialize_with = "lenient_keys")]
    pub keys: BTreeMap<String, PublicKey>,
    /// `root`, `targets`, `snapshot`, `timestamp`.
    pub roles: BTreeMap<String, RoleKeys>,
}

/// Version (and optionally length and hashes) of a metadata file, as the
/// timestamp lists the snapshot and the snapshot lists targets roles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaFile {
    /// Version of the file.
    pub version: u64,
    /// Length in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// Hashes (algorithm -> hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashes: Option<BTreeMap<String, String>>,
}

/// The timestamp role.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timestamp {
    /// Always `"timestamp"`.
    #[serde(rename = "_type")]
    pub type_: String,
    /// TUF specification version.
    pub spec_version: String,
    /// Version.
    pub version: u64,
    /// Expiry.
    pub expires: UnixTime,
    /// Exactly `snapshot.json`.
    pub meta: BTreeMap<String, MetaFile>,
}

/// The snapshot role.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Always `"snapshot"`.
    #[serde(rename = "_type")]
    pub type_: String,
    /// TUF specification version.
    pub spec_version: String,
    /// Version.
    pub version: u64,
    /// Expiry.
    pub expires: UnixTime,
    /// `targets.json` and every delegated `ROLE.json`.
    pub meta: BTreeMap<String, MetaFile>,
}

/// One target entry.
///
/// `custom` is kept verbatim. Field names this project uses inside it are
/// listed in [`crate::uptane`] (Uptane fields) and `custom.esync` belongs to
/// esync-package.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// Length in bytes.
    pub length: u64,
    /// Hashes (algorithm -> hex); `sha256` and `sha512` from the signing side.
    pub hashes: BTreeMap<String, String>,
    /// Free-form metadata, preserved verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Value>,
}

/// A delegation from a targets role to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegatedRole {
    /// Delegated role name.
    pub name: String,
    /// Authorised key ids (in the delegating role's `keys`).
    pub keyids: Vec<String>,
    /// Signature threshold.
    pub threshold: u64,
    /// If true and the target matches `paths`, no later delegation is searched.
    #[serde(default)]
    pub terminating: bool,
    /// Shell-style path patterns (`*` and `?` within one `/` segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// Hex prefixes of the SHA-256 of the target name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hash_prefixes: Option<Vec<String>>,
}

impl DelegatedRole {
    /// Whether this delegation covers `target`.
    pub fn matches(&self, target: &str) -> bool {
        if let Some(paths) = &self.paths {
            return paths.iter().any(|p| path_matches(p, target));
        }
        if let Some(prefixes) = &self.path_hash_prefixes {
            let h = hex::encode(Sha256::digest(target.as_bytes()));
            return prefixes.iter().any(|p| h.starts_with(p.as_str()));
        }
        false
    }
}

/// Delegations of a targets role, in priority order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delegations {
    /// Keys by key id.
    #[serde(deserialize_with = "lenient_keys")]
    pub keys: BTreeMap<String, PublicKey>,
    /// Delegated roles, highest priority first.
    pub roles: Vec<DelegatedRole>,
}

/// A targets role (top-level or delegated).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Targets {
    /// Always `"targets"`.
    #[serde(rename = "_type")]
    pub type_: String,
    /// TUF specification version.
    pub spec_version: String,
    /// Version.
    pub version: u64,
    /// Expiry.
    pub expires: UnixTime,
    /// Targets by name.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetInfo>,
    /// Delegations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegations: Option<Delegations>,
}

/// Decodes a `keys` object, leaving out keys this crate cannot use (key
/// types or schemes outside [`crate::crypto::Scheme`], invalid points or
/// PEM): they can never count towards a threshold, and the other keys stay
/// usable. The TUF specification requires unknown key types to be ignored.
pub(crate) fn lenient_keys<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, PublicKey>, D::Error> {
    let raw = BTreeMap::<String, Value>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .filter_map(|(id, v)| serde_json::from_value::<PublicKey>(v).ok().map(|k| (id, k)))
        .collect())
}

/// Common accessors of the four roles.
pub trait RoleMetadata: DeserializeOwned + Serialize {
    /// The `_type` value.
    const TYPE: &'static str;
    /// Version.
    fn version(&self) -> u64;
    /// Expiry.
    fn expires(&self) -> UnixTime;
    /// `_type` field as decoded.
    fn type_field(&self) -> &str;
    /// `spec_version` as decoded.
    fn spec_version(&self) -> &str;
}

macro_rules! role {
    ($t:ty, $name:literal) => {
        impl RoleMetadata for $t {
            const TYPE: &'static str = $name;
            fn version(&self) -> u64 {
                self.version
            }
            fn expires(&self) -> UnixTime {
                self.expires
            }
            fn type_field(&self) -> &str {
                &self.type_
            }
            fn spec_version(&self) -> &str {
                &self.spec_version
            }
        }
    };
}
role!(Root, "root");
role!(Timestamp, "timestamp");
role!(Snapshot, "snapshot");
role!(Targets, "targets");

/// Decodes the `signed` part of `raw` as role `R`, checking `_type`,
/// `spec_version` (major 1) and `version >= 1`. Signatures are NOT checked
/// here.
pub fn decode_signed<R: RoleMetadata>(what: &str, raw: &RawSigned) -> Result<R> {
    let got = raw
        .signed
        .get("_type")
        .and_then(Value::as_str)
        .unwrap_or("");
    if got != R::TYPE {
        return Err(Error::WrongType {
            expected: R::TYPE.into(),
            got: got.into(),
        });
    }
    let role: R = serde_json::from_value(raw.signed.clone()).map_err(|e| Error::json(what, e))?;
    let major = role.spec_version().split('.').next().unwrap_or("");
    if major != "1" {
        return Err(Error::Field {
            what: what.into(),
            field: "spec_version",
            reason: format!("{:?} is not a 1.x version", role.spec_version()),
        });
    }
    if role.version() == 0 {
        return Err(Error::Field {
            what: what.into(),
            field: "version",
            reason: "must be at least 1".into(),
        });
    }
    Ok(role)
}

impl Root {
    /// Keys and threshold of a top-level role.
    pub fn role(&self, name: &str) -> Result<&RoleKeys> {
        self.roles.get(name).ok_or_else(|| Error::Field {
            what: "root".into(),
            field: "roles",
            reason: format!("no {name} role"),
        })
    }

    /// Checks `raw` is signed by a threshold of this root's keys for `role`,
    /// counting only keys of a scheme in `schemes`.
    pub fn verify_role(&self, role: &str, raw: &RawSigned, schemes: SchemeSet) -> Result<()> {
        let keys = self.role(role)?;
        raw.verify_threshold(role, &self.keys, &keys.keyids, keys.threshold, schemes)
    }

    /// Whether `role`'s key set or threshold differs between `self` and `other`.
    pub fn role_keys_changed(&self, other: &Root, role: &str) -> bool {
        type KeySet = Vec<(crate::crypto::Scheme, Vec<u8>)>;
        let ids = |r: &Root| -> Option<(KeySet, u64)> {
            let rk = r.roles.get(role)?;
            let mut ks: KeySet = rk
                .keyids
                .iter()
                .filter_map(|id| r.keys.get(id).map(|k| (k.scheme(), k.material().to_vec())))
                .collect();
            ks.sort_unstable();
            Some((ks, rk.threshold))
        };
        ids(self) != ids(other)
    }
}

/// Checks a target name cannot escape a target directory: refuses empty
/// names, absolute paths, backslashes, NUL, and empty, `.` or `..` segments.
pub fn check_target_name(name: &str) -> Result<()> {
    let bad = |r| Err(Error::BadTargetName(name.to_string(), r));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 1024 {
        return bad("longer than 1024 bytes");
    }
    if name.starts_with('/') {
        return bad("absolute path");
    }
    if name.contains('\\') {
        return bad("backslash");
    }
    if name.contains('\0') {
        return bad("NUL byte");
    }
    if name.len() >= 2 && name.as_bytes()[1] == b':' {
        return bad("drive letter");
    }
    for seg in name.split('/') {
        match seg {
            "" => return bad("empty segment"),
            "." | ".." => return bad("'.' or '..' segment"),
            _ => {}
        }
    }
    Ok(())
}

/// TUF delegation path matching: pattern and target must have the same
/// number of `/`-separated segments, and each segment matches shell-style
/// with `*` (any run of characters) and `?` (one character).
pub fn path_matches(pattern: &str, target: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').collect();
    let t: Vec<&str> = target.split('/').collect();
    p.len() == t.len()
        && p.iter()
            .zip(&t)
            .all(|(p, t)| glob(p.as_bytes(), t.as_bytes()))
}

fn glob(p: &[u8], t: &[u8]) -> bool {
    // Iterative wildcard match with single backtrack point (linear-ish).
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// Percent-encodes every byte outside `[A-Za-z0-9._~-]` (role and target
/// names used as one file-name or URL segment).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names() {
        for ok in ["a", "dir/file.bin", "a..b", ".hidden/x"] {
            assert!(check_target_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a/../b",
            "/etc/passwd",
            "a\\b",
            "a//b",
            "a/",
            "./a",
            "..",
            "C:x",
            "a\0",
        ] {
            assert!(check_target_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn patterns() {
        assert!(path_matches("*", "file.bin"));
        assert!(!path_matches("*", "dir/file.bin"));
        assert!(path_matches("dir/*", "dir/file.bin"));
        assert!(path_matches("dir/*.bin", "dir/file.bin"));
        assert!(!path_matches("dir/*.bin", "dir/file.txt"));
        assert!(path_matches("d?r/f*e*", "dir/file.bin"));
        assert!(!path_matches("dir/*", "other/file"));
        assert!(path_matches("**", "x"));
    }

    #[test]
    fn unsupported_keys_are_left_out() {
        let k = crate::PrivateKey::from_seed(&[3; 32]).public_key();
        let v = serde_json::json!({
            "_type": "root", "spec_version": "1.0.31", "version": 1,
            "expires": "2030-01-01T00:00:00Z", "consistent_snapshot": true,
            "keys": {
                "a": serde_json::to_value(&k).unwrap(),
                "b": {"keytype": "rsa", "scheme": "rsassa-pss-sha256", "keyval": {"public": "PEM"}}
            },
            "roles": {}
        });
        let r: Root = serde_json::from_value(v).unwrap();
        assert_eq!(r.keys.len(), 1);
        assert!(r.keys.contains_key("a"));
    }

    #[test]
    fn encode() {
        assert_eq!(percent_encode("a/b c"), "a%2Fb%20c");
        assert_eq!(percent_encode("role-1_x.y~"), "role-1_x.y~");
    }
}
