//! Validated path parameters: metadata file names, blob ids, report ids.

use std::fmt;
use std::str::FromStr;

use esync_proto::id::Sha256Digest;

/// Longest metadata file name accepted in a path segment.
pub const MAX_METADATA_FILE_NAME: usize = 200;
/// Longest report id accepted.
pub const MAX_REPORT_ID: usize = 64;
/// Shortest report id accepted (enough entropy for a vehicle-chosen id).
pub const MIN_REPORT_ID: usize = 8;

/// A path parameter that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Too short or too long.
    #[error("{kind}: length {got} outside {min}..={max}")]
    Length {
        /// What was parsed.
        kind: &'static str,
        /// Shortest allowed.
        min: usize,
        /// Longest allowed.
        max: usize,
        /// Length received.
        got: usize,
    },
    /// A character outside the allowed set.
    #[error("{kind}: character not allowed at byte {position}")]
    Character {
        /// What was parsed.
        kind: &'static str,
        /// Byte offset of the first bad character.
        position: usize,
    },
    /// The value has the wrong shape.
    #[error("{kind}: {reason}")]
    Shape {
        /// What was parsed.
        kind: &'static str,
        /// Why.
        reason: &'static str,
    },
}

fn check(
    kind: &'static str,
    s: &str,
    min: usize,
    max: usize,
    ok: impl Fn(u8) -> bool,
) -> Result<(), NameError> {
    if s.len() < min || s.len() > max {
        return Err(NameError::Length {
            kind,
            min,
            max,
            got: s.len(),
        });
    }
    match s.bytes().position(|b| !ok(b)) {
        Some(position) => Err(NameError::Character { kind, position }),
        None => Ok(()),
    }
}

/// The name of one TUF/Uptane metadata file as a client fetches it
/// (`esync_uptane::repo::Need::path`): `N.root.json`, `timestamp.json`,
/// `[N.]snapshot.json`, `[N.]ROLE.json` (delegated role names
/// percent-encoded).
///
/// Allowed: ASCII letters, digits, `.`, `-`, `_`, `%`; ends in `.json`;
/// does not start with `.`; at most [`MAX_METADATA_FILE_NAME`] bytes. So a
/// name is always one path segment and never `..`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MetadataFileName(String);

impl MetadataFileName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, NameError> {
        const KIND: &str = "metadata file name";
        check(KIND, name, ".json".len() + 1, MAX_METADATA_FILE_NAME, |b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'%')
        })?;
        if name.starts_with('.') {
            return Err(NameError::Shape {
                kind: KIND,
                reason: "starts with '.'",
            });
        }
        if !name.ends_with(".json") {
            return Err(NameError::Shape {
                kind: KIND,
                reason: "does not end in .json",
            });
        }
        Ok(MetadataFileName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for MetadataFileName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        MetadataFileName::new(s)
    }
}

impl fmt::Display for MetadataFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A blob's address: the SHA-256 of its bytes, written as 64 lowercase hex
/// digits in the path (`/v1/blobs/{sha256}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobId(pub Sha256Digest);

impl BlobId {
    /// Parses 64 lowercase hex digits.
    pub fn parse_hex(s: &str) -> Result<Self, NameError> {
        const KIND: &str = "blob sha256";
        check(KIND, s, 64, 64, |b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))?;
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = &s[2 * i..2 * i + 2];
            *byte = u8::from_str_radix(pair, 16).map_err(|_| NameError::Shape {
                kind: KIND,
                reason: "not hex",
            })?;
        }
        Ok(BlobId(Sha256Digest(out)))
    }

    /// The digest.
    pub fn digest(&self) -> Sha256Digest {
        self.0
    }
}

impl FromStr for BlobId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        BlobId::parse_hex(s)
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 .0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl From<Sha256Digest> for BlobId {
    fn from(d: Sha256Digest) -> Self {
        BlobId(d)
    }
}

/// The id a vehicle chooses for one report, so that a retry after a lost
/// answer is recognised and never counted twice.
///
/// [`MIN_REPORT_ID`]..=[`MAX_REPORT_ID`] bytes of ASCII letters, digits,
/// `-` and `_` (a UUID or 32 hex digits fit).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReportId(String);

impl ReportId {
    /// Validates `id`.
    pub fn new(id: &str) -> Result<Self, NameError> {
        check("report id", id, MIN_REPORT_ID, MAX_REPORT_ID, |b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')
        })?;
        Ok(ReportId(id.to_owned()))
    }

    /// A report id made of 32 lowercase hex digits of `bytes` (for example
    /// an `esync_proto::id::Id128` chosen by the Client core).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        let mut s = String::with_capacity(32);
        for b in bytes {
            s.push_str(&format!("{b:02x}"));
        }
        ReportId(s)
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ReportId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        ReportId::new(s)
    }
}

impl fmt::Display for ReportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_names_from_need_paths_are_accepted() {
        for ok in [
            "1.root.json",
            "timestamp.json",
            "snapshot.json",
            "7.snapshot.json",
            "targets.json",
            "3.targets.json",
            "2.role%2Fa.json",
        ] {
            assert_eq!(MetadataFileName::new(ok).map(|n| n.0), Ok(ok.to_string()));
        }
    }

    #[test]
    fn metadata_names_that_escape_or_are_odd_are_refused() {
        for bad in [
            "",
            ".json",
            "..json",
            "../root.json",
            "a/b.json",
            "root.txt",
            "root.json\0",
            ".hidden.json",
            "tímestamp.json",
        ] {
            assert!(MetadataFileName::new(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}.json", "a".repeat(MAX_METADATA_FILE_NAME));
        assert!(matches!(
            MetadataFileName::new(&long),
            Err(NameError::Length { .. })
        ));
    }

    #[test]
    fn blob_id_round_trips_and_refuses_non_canonical_hex() {
        let hex = "00ff10a0b1c2d3e4f5060708090a0b0c0d0e0f101112131415161718191a1b1c";
        let id = BlobId::parse_hex(hex).expect("valid");
        assert_eq!(id.0 .0[1], 0xff);
        assert_eq!(id.to_string(), hex);
        assert!(BlobId::parse_hex(&hex.to_uppercase()).is_err());
        assert!(BlobId::parse_hex(&hex[..63]).is_err());
        assert!(BlobId::parse_hex(&format!("{hex}0")).is_err());
        assert!(BlobId::parse_hex(&hex.replace('f', "g")).is_err());
    }

    #[test]
    fn report_ids_are_bounded() {
        assert!(ReportId::new("abcdefgh").is_ok());
        assert!(ReportId::new("abcdefg").is_err());
        assert!(ReportId::new(&"a".repeat(MAX_REPORT_ID + 1)).is_err());
        assert!(ReportId::new("abcd/efgh").is_err());
        let id = ReportId::from_bytes([0xab; 16]);
        assert_eq!(id.as_str(), "ab".repeat(16));
        assert!(ReportId::new(id.as_str()).is_ok());
    }
}
