//! SHA-256 helpers and the hex encoding of digests in JSON.

use esync_proto::id::Sha256Digest;
use sha2::{Digest, Sha256};

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Sha256Digest {
    Sha256Digest(Sha256::digest(data).into())
}

/// Lower-case hex of a digest (64 characters).
pub fn to_hex(d: &Sha256Digest) -> String {
    hex::encode(d.0)
}

/// Parses 64 hex characters into a digest.
pub fn from_hex(s: &str) -> Option<Sha256Digest> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(Sha256Digest(out))
}

/// `#[serde(with = "crate::digest::hex_digest")]`: a digest as a 64-character
/// lower-case hex string.
pub(crate) mod hex_digest {
    use esync_proto::id::Sha256Digest;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Sha256Digest, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::to_hex(d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Sha256Digest, D::Error> {
        let s = String::deserialize(d)?;
        super::from_hex(&s).ok_or_else(|| {
            serde::de::Error::custom("expected a sha256 digest as 64 hex characters")
        })
    }
}
