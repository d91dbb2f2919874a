//! The self-checking record layout of journals. No I/O.
//!
//! A versioned record (layout 2) is
//!
//! ```text
//! MAGIC (4 bytes) || 0x02 || format version (u16, little endian) || body || SHA-256(all before)
//! ```
//!
//! The format version is the record owner's (e.g. the Agent's journal
//! format), independent of the wire protocol's version; the checksum covers
//! the header too, so a flipped version byte reads as corrupt, not as
//! another format.
//!
//! Layout 1 is the unversioned record written before formats were versioned:
//! `MAGIC || 0x01 || body || SHA-256(body)`. [`open`] still reads it and
//! reports [`Record::format`] `None`; what its body means is for the owner to
//! say (the Agent treats it as its journal format 1).

use sha2::{Digest, Sha256};

use crate::error::Corruption;

/// Layout byte of unversioned records (read only).
pub const LAYOUT_UNVERSIONED: u8 = 1;
/// Layout byte of versioned records.
pub const LAYOUT_VERSIONED: u8 = 2;

const SUM: usize = 32;

/// An opened record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The format version; `None` for an unversioned (layout 1) record.
    pub format: Option<u16>,
    /// The body.
    pub body: &'a [u8],
}

fn sha256(parts: &[&[u8]]) -> [u8; SUM] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Encodes `body` as a versioned record of format `format`.
pub fn seal(magic: &[u8; 4], format: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 1 + 2 + body.len() + SUM);
    out.extend_from_slice(magic);
    out.push(LAYOUT_VERSIONED);
    out.extend_from_slice(&format.to_le_bytes());
    out.extend_from_slice(body);
    let sum = sha256(&[&out]);
    out.extend_from_slice(&sum);
    out
}

/// Checks a record of at most `max` bytes and returns its format and body.
pub fn open<'a>(magic: &[u8; 4], bytes: &'a [u8], max: usize) -> Result<Record<'a>, Corruption> {
    if bytes.len() > max {
        return Err(Corruption::TooLong { max: max as u64 });
    }
    let (Some(head), Some(&layout)) = (bytes.get(..4), bytes.get(4)) else {
        return Err(Corruption::BadMagic);
    };
    if head != magic {
        return Err(Corruption::BadMagic);
    }
    match layout {
        LAYOUT_UNVERSIONED => {
            let (body, sum) = split_sum(bytes, 5)?;
            if sha256(&[body]) != sum {
                return Err(Corruption::Checksum);
            }
            Ok(Record { format: None, body })
        }
        LAYOUT_VERSIONED => {
            let (rest, sum) = split_sum(bytes, 7)?;
            if sha256(&[&bytes[..bytes.len() - SUM]]) != sum {
                return Err(Corruption::Checksum);
            }
            let format = u16::from_le_bytes([bytes[5], bytes[6]]);
            Ok(Record {
                format: Some(format),
                body: rest,
            })
        }
        other => Err(Corruption::UnknownLayout(other)),
    }
}

/// Splits `bytes[header..]` into body and trailing checksum.
fn split_sum(bytes: &[u8], header: usize) -> Result<(&[u8], &[u8]), Corruption> {
    if bytes.len() < header + SUM {
        return Err(Corruption::Checksum);
    }
    Ok(bytes[header..].split_at(bytes.len() - header - SUM))
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &[u8; 4] = b"TEST";

    #[test]
    fn versioned_round_trip() {
        let r = seal(M, 7, b"body");
        assert_eq!(&r[..7], b"TEST\x02\x07\x00");
        assert_eq!(
            open(M, &r, 1024),
            Ok(Record {
                format: Some(7),
                body: b"body"
            })
        );
    }

    #[test]
    fn unversioned_records_still_open() {
        let mut r = b"TEST\x01body".to_vec();
        r.extend_from_slice(&sha256(&[b"body"]));
        assert_eq!(
            open(M, &r, 1024),
            Ok(Record {
                format: None,
                body: b"body"
            })
        );
    }

    #[test]
    fn corruption_is_typed() {
        let r = seal(M, 1, b"body");
        assert_eq!(open(b"NOPE", &r, 1024), Err(Corruption::BadMagic));
        assert_eq!(
            open(M, &r, r.len() - 1),
            Err(Corruption::TooLong {
                max: r.len() as u64 - 1
            })
        );
        assert_eq!(open(M, &r[..r.len() - 1], 1024), Err(Corruption::Checksum));
        assert_eq!(open(M, b"TE", 1024), Err(Corruption::BadMagic));
        assert_eq!(open(M, b"TEST\x02", 1024), Err(Corruption::Checksum));
        // A flipped format version is a checksum error, not another format.
        let mut flipped = r.clone();
        flipped[5] ^= 1;
        assert_eq!(open(M, &flipped, 1024), Err(Corruption::Checksum));
        let mut layout = r;
        layout[4] = 9;
        assert_eq!(open(M, &layout, 1024), Err(Corruption::UnknownLayout(9)));
    }
}
