//! Self-checking encoding of small persistent records (journal, boot
//! control): `MAGIC (4 bytes) || format version (1) || postcard body ||
//! SHA-256(body)`. A torn or corrupted record is detected, never half-read.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::device::sha256;

/// Format version of sealed records.
pub const SEAL_VERSION: u8 = 1;

/// A sealed record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Wrong magic or version.
    #[error("not a {0} record (bad magic or version)")]
    Magic(&'static str),
    /// Checksum mismatch (torn or corrupted write).
    #[error("{0} record checksum mismatch")]
    Checksum(&'static str),
    /// Longer than the allowed maximum.
    #[error("{what} record of {len} bytes exceeds {max}")]
    TooLarge {
        /// Which record.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The body does not decode.
    #[error("{0} record body malformed")]
    Body(&'static str),
}

/// Encodes `value` as a sealed record.
pub fn seal<T: Serialize>(magic: &[u8; 4], value: &T) -> Result<Vec<u8>, postcard::Error> {
    let body = postcard::to_allocvec(value)?;
    let mut out = Vec::with_capacity(4 + 1 + body.len() + 32);
    out.extend_from_slice(magic);
    out.push(SEAL_VERSION);
    out.extend_from_slice(&body);
    out.extend_from_slice(&sha256(&body).0);
    Ok(out)
}

/// Decodes a sealed record of at most `max` bytes.
pub fn open<T: DeserializeOwned>(
    what: &'static str,
    magic: &[u8; 4],
    bytes: &[u8],
    max: usize,
) -> Result<T, SealError> {
    if bytes.len() > max {
        return Err(SealError::TooLarge {
            what,
            len: bytes.len(),
            max,
        });
    }
    if bytes.len() < 4 + 1 + 32 || &bytes[..4] != magic || bytes[4] != SEAL_VERSION {
        return Err(SealError::Magic(what));
    }
    let (body, sum) = bytes[5..].split_at(bytes.len() - 5 - 32);
    if sha256(body).0 != sum {
        return Err(SealError::Checksum(what));
    }
    postcard::from_bytes(body).map_err(|_| SealError::Body(what))
}
