//! ed25519 keys in TUF form, key ids, signatures, thresholds and hashes.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

use crate::canonical::{to_canonical, to_canonical_of};
use crate::error::{Error, Result};

/// `keytype` and `scheme` of every key this crate handles.
pub const ED25519: &str = "ed25519";

/// `keyval` of a TUF key: the public part, hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVal {
    /// Public key, lower-case hex of the 32 bytes.
    pub public: String,
}

/// A TUF public key (`{"keytype":"ed25519","scheme":"ed25519","keyval":{"public":HEX}}`).
///
/// Decoding checks the key type, scheme and that the public key is a valid
/// ed25519 point, so a `PublicKey` always verifies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawKey", into = "RawKey")]
pub struct PublicKey {
    key: VerifyingKey,
}

#[derive(Clone, Serialize, Deserialize)]
struct RawKey {
    keytype: String,
    scheme: String,
    keyval: KeyVal,
}

impl TryFrom<RawKey> for PublicKey {
    type Error = Error;
    fn try_from(raw: RawKey) -> Result<Self> {
        if raw.keytype != ED25519 || raw.scheme != ED25519 {
            return Err(Error::Key(format!(
                "unsupported key type {:?} / scheme {:?}",
                raw.keytype, raw.scheme
            )));
        }
        let bytes = decode_hex_array::<32>(&raw.keyval.public, "public key")?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| Error::Key("public key is not a valid ed25519 point".into()))?;
        Ok(PublicKey { key })
    }
}

impl From<PublicKey> for RawKey {
    fn from(k: PublicKey) -> RawKey {
        RawKey {
            keytype: ED25519.into(),
            scheme: ED25519.into(),
            keyval: KeyVal {
                public: hex::encode(k.key.as_bytes()),
            },
        }
    }
}

impl PublicKey {
    /// Wraps a dalek verifying key.
    pub fn from_verifying_key(key: VerifyingKey) -> Self {
        PublicKey { key }
    }

    /// The dalek verifying key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    /// TUF key id: lower-case hex SHA-256 of the canonical JSON of the key
    /// object (`keytype`, `scheme`, `keyval`).
    pub fn key_id(&self) -> String {
        // A key object always serializes (strings only).
        let canon = to_canonical_of(&RawKey::from(self.clone())).unwrap_or_default();
        hex::encode(Sha256::digest(canon))
    }

    /// Verifies `sig` over `msg` with `verify_strict` (no malleable
    /// signatures, no small-order keys).
    pub fn verify(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(sig);
        self.key.verify_strict(msg, &sig).is_ok()
    }
}

/// An ed25519 private key (signing side). Its `Debug` never prints the secret.
#[derive(Clone)]
pub struct PrivateKey {
    key: SigningKey,
}

impl core::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PrivateKey(keyid {})", self.public_key().key_id())
    }
}

impl PrivateKey {
    /// A fresh key from the operating system's random generator.
    pub fn generate() -> Self {
        PrivateKey {
            key: SigningKey::generate(&mut rand_core::OsRng),
        }
    }

    /// A key from its 32-byte seed (deterministic; for tests and for keys
    /// kept in a vault).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        PrivateKey {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The 32-byte seed, for storing the key.
    pub fn to_seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            key: self.key.verifying_key(),
        }
    }

    /// Key id of the public half.
    pub fn key_id(&self) -> String {
        self.public_key().key_id()
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }
}

/// One entry of a `signatures` array.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureEntry {
    /// Key id of the signing key.
    pub keyid: String,
    /// Signature, hex.
    pub sig: String,
}

/// A signed document as it arrives: signatures and the `signed` object kept
/// as a JSON value so that the canonical bytes signed are exactly those
/// received, unknown fields included.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RawSigned {
    /// Signatures over the canonical JSON of `signed`.
    pub signatures: Vec<SignatureEntry>,
    /// The signed object.
    pub signed: Value,
}

impl RawSigned {
    /// Parses `{"signatures": [...], "signed": {...}}`.
    pub fn from_slice(what: &str, bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::json(what, e))
    }

    /// Signs the canonical form of `signed` with each key.
    pub fn sign(signed: Value, keys: &[&PrivateKey]) -> Result<Self> {
        let canon = to_canonical(&signed)?;
        let signatures = keys
            .iter()
            .map(|k| SignatureEntry {
                keyid: k.key_id(),
                sig: hex::encode(k.sign(&canon)),
            })
            .collect();
        Ok(RawSigned { signatures, signed })
    }

    /// Serialized JSON (pretty, as TUF tools write it).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|e| Error::Build(e.to_string()))
    }

    /// Checks that at least `threshold` distinct keys among `authorised`
    /// (resolved through `keys`) produced a valid signature over the
    /// canonical JSON of `signed`. Duplicate signatures by one key count
    /// once, also when the same public key is listed under two key ids; a
    /// threshold of 0 is refused.
    pub fn verify_threshold(
        &self,
        role: &str,
        keys: &BTreeMap<String, PublicKey>,
        authorised: &[String],
        threshold: u64,
    ) -> Result<()> {
        if threshold == 0 {
            return Err(Error::Field {
                what: role.into(),
                field: "threshold",
                reason: "must be at least 1".into(),
            });
        }
        let canon = to_canonical(&self.signed)?;
        let mut seen: BTreeSet<[u8; 32]> = BTreeSet::new();
        for entry in &self.signatures {
            if !authorised.iter().any(|k| k == &entry.keyid) {
                continue;
            }
            let Some(key) = keys.get(&entry.keyid) else {
                continue;
            };
            if seen.contains(key.as_bytes()) {
                continue;
            }
            let Ok(sig) = decode_hex_array::<64>(&entry.sig, "signature") else {
                continue;
            };
            if key.verify(&canon, &sig) {
                seen.insert(*key.as_bytes());
            }
        }
        let valid = seen.len() as u64;
        if valid < threshold {
            return Err(Error::Threshold {
                role: role.into(),
                valid,
                threshold,
            });
        }
        Ok(())
    }
}

pub(crate) fn decode_hex_array<const N: usize>(s: &str, what: &str) -> Result<[u8; N]> {
    let mut out = [0u8; N];
    if s.len() != 2 * N {
        return Err(Error::Key(format!(
            "{what}: expected {} hex characters",
            2 * N
        )));
    }
    hex::decode_to_slice(s, &mut out).map_err(|_| Error::Key(format!("{what}: invalid hex")))?;
    Ok(out)
}

/// Hash algorithms accepted in `hashes` objects.
pub const SUPPORTED_HASHES: [&str; 4] = ["sha224", "sha256", "sha384", "sha512"];

/// Incremental hasher over every supported algorithm listed in a `hashes`
/// object.
#[derive(Clone)]
pub(crate) struct MultiHasher {
    hashers: Vec<(String, HasherKind, Vec<u8>)>,
}

#[derive(Clone)]
enum HasherKind {
    Sha224(Sha224),
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl MultiHasher {
    /// Prepares to check `expected` (algorithm -> hex). Refuses an empty set,
    /// an unsupported algorithm, and invalid hex.
    pub(crate) fn new(what: &str, expected: &BTreeMap<String, String>) -> Result<Self> {
        if expected.is_empty() {
            return Err(Error::UnsupportedHash {
                what: what.into(),
                reason: "no hash declared".into(),
            });
        }
        let mut hashers = Vec::new();
        for (alg, hex_value) in expected {
            let kind = match alg.as_str() {
                "sha224" => HasherKind::Sha224(Sha224::new()),
                "sha256" => HasherKind::Sha256(Sha256::new()),
                "sha384" => HasherKind::Sha384(Sha384::new()),
                "sha512" => HasherKind::Sha512(Sha512::new()),
                other => {
                    return Err(Error::UnsupportedHash {
                        what: what.into(),
                        reason: format!("hash algorithm {other:?} not supported"),
                    })
                }
            };
            let want = hex::decode(hex_value).map_err(|_| Error::UnsupportedHash {
                what: what.into(),
                reason: format!("{alg} value is not hex"),
            })?;
            hashers.push((alg.clone(), kind, want));
        }
        Ok(MultiHasher { hashers })
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        for (_, h, _) in &mut self.hashers {
            match h {
                HasherKind::Sha224(h) => h.update(data),
                HasherKind::Sha256(h) => h.update(data),
                HasherKind::Sha384(h) => h.update(data),
                HasherKind::Sha512(h) => h.update(data),
            }
        }
    }

    pub(crate) fn finish(self, what: &str) -> Result<()> {
        for (alg, h, want) in self.hashers {
            let got: Vec<u8> = match h {
                HasherKind::Sha224(h) => h.finalize().to_vec(),
                HasherKind::Sha256(h) => h.finalize().to_vec(),
                HasherKind::Sha384(h) => h.finalize().to_vec(),
                HasherKind::Sha512(h) => h.finalize().to_vec(),
            };
            if got != want {
                return Err(Error::HashMismatch {
                    what: what.into(),
                    algorithm: alg,
                });
            }
        }
        Ok(())
    }
}

/// sha256 and sha512 of `data`, hex, as a TUF `hashes` object.
pub fn hashes_of(data: &[u8]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("sha256".to_string(), hex::encode(Sha256::digest(data)));
    m.insert("sha512".to_string(), hex::encode(Sha512::digest(data)));
    m
}

/// Checks `data` against a declared length and hashes.
pub(crate) fn check_length_and_hashes(
    what: &str,
    data: &[u8],
    length: Option<u64>,
    hashes: Option<&BTreeMap<String, String>>,
) -> Result<()> {
    if let Some(len) = length {
        if data.len() as u64 != len {
            return Err(Error::LengthMismatch {
                what: what.into(),
                expected: len,
                got: data.len() as u64,
            });
        }
    }
    if let Some(h) = hashes {
        let mut hasher = MultiHasher::new(what, h)?;
        hasher.update(data);
        hasher.finish(what)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_json_round_trip_and_key_id() {
        let k = PrivateKey::from_seed(&[1; 32]).public_key();
        let v = serde_json::to_value(&k).unwrap();
        assert_eq!(v["keytype"], "ed25519");
        assert_eq!(v["scheme"], "ed25519");
        let back: PublicKey = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, k);
        let expected = hex::encode(Sha256::digest(to_canonical(&v).unwrap()));
        assert_eq!(k.key_id(), expected);
    }

    #[test]
    fn refuses_other_key_types() {
        let v =
            json!({"keytype": "rsa", "scheme": "rsassa-pss-sha256", "keyval": {"public": "00"}});
        assert!(serde_json::from_value::<PublicKey>(v).is_err());
    }

    #[test]
    fn threshold_counts_distinct_keys() {
        let a = PrivateKey::from_seed(&[1; 32]);
        let b = PrivateKey::from_seed(&[2; 32]);
        let mut keys = BTreeMap::new();
        keys.insert(a.key_id(), a.public_key());
        keys.insert(b.key_id(), b.public_key());
        // Same key listed under a second id.
        keys.insert("alias".into(), a.public_key());
        let ids = vec![a.key_id(), b.key_id(), "alias".to_string()];
        let mut s = RawSigned::sign(json!({"x": 1}), &[&a]).unwrap();
        s.signatures.push(s.signatures[0].clone());
        let mut alias = s.signatures[0].clone();
        alias.keyid = "alias".into();
        s.signatures.push(alias);
        assert!(s.verify_threshold("r", &keys, &ids, 2).is_err());
        assert!(s.verify_threshold("r", &keys, &ids, 1).is_ok());
        let s2 = RawSigned::sign(json!({"x": 1}), &[&a, &b]).unwrap();
        assert!(s2.verify_threshold("r", &keys, &ids, 2).is_ok());
        assert!(s2.verify_threshold("r", &keys, &ids, 0).is_err());
    }

    #[test]
    fn hash_check() {
        let h = hashes_of(b"abc");
        assert!(check_length_and_hashes("x", b"abc", Some(3), Some(&h)).is_ok());
        assert!(check_length_and_hashes("x", b"abd", Some(3), Some(&h)).is_err());
        assert!(check_length_and_hashes("x", b"abcd", Some(3), Some(&h)).is_err());
    }
}
