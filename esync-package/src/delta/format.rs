//! Patch headers: classic `BSDIFF40` and the esync container used by
//! [`PatchFormat::BsdiffZstd`] and [`PatchFormat::BsdiffXz`].
//!
//! Both carry the same three bsdiff streams (control, diff, extra); they
//! differ in how those streams are compressed and in how much the header
//! declares. The layouts are described in the crate documentation.

use esync_proto::message::PatchFormat;

use super::DeltaError;

/// Magic of classic bsdiff 4.x patches.
pub const BSDIFF40_MAGIC: [u8; 8] = *b"BSDIFF40";
/// Magic of the esync zstd container, version 1 (no flags word).
pub const ZSTD_MAGIC: [u8; 8] = *b"ESBDZST1";
/// Magic of the esync xz container, version 1 (no flags word).
pub const XZ_MAGIC: [u8; 8] = *b"ESBDXZ01";
/// Magic of the esync zstd container, version 2 (with a flags word).
pub const ZSTD_MAGIC_V2: [u8; 8] = *b"ESBDZST2";
/// Magic of the esync xz container, version 2 (with a flags word).
pub const XZ_MAGIC_V2: [u8; 8] = *b"ESBDXZ02";
/// Length of a `BSDIFF40` header.
pub const BSDIFF40_HEADER_LEN: u64 = 32;
/// Length of a version 1 esync container header.
pub const CONTAINER_HEADER_LEN: u64 = 64;
/// Length of a version 2 esync container header (version 1 plus a flags word).
pub const CONTAINER_V2_HEADER_LEN: u64 = 72;
/// Longest header of any format.
pub const MAX_HEADER_LEN: usize = 72;
/// Version 2 flag: the diff stream is zero-run coded (see [`zero_run`](super::zero_run)).
pub const FLAG_ZERO_RUN_DIFF: u64 = 1;
/// Bytes of one control triple.
pub const CONTROL_LEN: u64 = 24;

/// A parsed, consistency-checked patch header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchHeader {
    /// The format.
    pub format: PatchFormat,
    /// Length of the image the patch produces.
    pub target_length: u64,
    /// Offsets and compressed lengths of the control, diff and extra streams
    /// within the patch.
    pub sections: [(u64, u64); 3],
    /// Uncompressed lengths of the control, diff and extra streams (only the
    /// esync container declares them). For a zero-run coded diff stream this
    /// is the length after zero-run decoding.
    pub raw_lengths: Option<[u64; 3]>,
    /// The diff stream is zero-run coded (version 2 flag
    /// [`FLAG_ZERO_RUN_DIFF`]).
    pub zero_run_diff: bool,
}

/// Decodes bsdiff's sign-magnitude 64-bit little-endian integer.
pub fn decode_int(b: &[u8; 8]) -> i64 {
    let mag = u64::from_le_bytes(*b) & !(1u64 << 63);
    // `mag < 2^63`, so it fits an i64.
    let v = mag as i64;
    if b[7] & 0x80 != 0 {
        -v
    } else {
        v
    }
}

/// Encodes bsdiff's sign-magnitude 64-bit little-endian integer.
pub fn encode_int(v: i64) -> [u8; 8] {
    let mut b = v.unsigned_abs().to_le_bytes();
    if v < 0 {
        b[7] |= 0x80;
    }
    b
}

/// Decodes one control triple `[add, copy, seek]` from the first
/// [`CONTROL_LEN`] bytes of `triple` (`None` if it is shorter).
pub fn decode_control(triple: &[u8]) -> Option<[i64; 3]> {
    let t = triple.get(..CONTROL_LEN as usize)?;
    Some(std::array::from_fn(|i| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&t[8 * i..8 * i + 8]);
        decode_int(&a)
    }))
}

/// Encodes one control triple `[add, copy, seek]`.
pub fn encode_control(control: [i64; 3]) -> [u8; CONTROL_LEN as usize] {
    let mut t = [0u8; CONTROL_LEN as usize];
    for (out, v) in t.chunks_exact_mut(8).zip(control) {
        out.copy_from_slice(&encode_int(v));
    }
    t
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Parses a header. `header` must hold at least the format's header length
/// ([`MAX_HEADER_LEN`] bytes always suffice); `patch_len` is the whole patch's length.
pub fn parse_header(
    format: PatchFormat,
    header: &[u8],
    patch_len: u64,
) -> Result<PatchHeader, DeltaError> {
    match format {
        PatchFormat::Bsdiff40 => {
            if patch_len < BSDIFF40_HEADER_LEN || header.len() < 32 {
                return Err(DeltaError::Truncated(super::Stream::Control));
            }
            if header[..8] != BSDIFF40_MAGIC {
                return Err(DeltaError::BadMagic(format));
            }
            let field = |at: usize| {
                let mut a = [0u8; 8];
                a.copy_from_slice(&header[at..at + 8]);
                u64::try_from(decode_int(&a)).map_err(|_| DeltaError::BadHeader("negative length"))
            };
            let (clen, dlen, tlen) = (field(8)?, field(16)?, field(24)?);
            let c_off = BSDIFF40_HEADER_LEN;
            let d_off = c_off
                .checked_add(clen)
                .ok_or(DeltaError::BadHeader("length overflow"))?;
            let e_off = d_off
                .checked_add(dlen)
                .ok_or(DeltaError::BadHeader("length overflow"))?;
            if e_off > patch_len {
                return Err(DeltaError::Truncated(if d_off > patch_len {
                    super::Stream::Control
                } else {
                    super::Stream::Diff
                }));
            }
            Ok(PatchHeader {
                format,
                target_length: tlen,
                sections: [(c_off, clen), (d_off, dlen), (e_off, patch_len - e_off)],
                raw_lengths: None,
                zero_run_diff: false,
            })
        }
        PatchFormat::BsdiffZstd | PatchFormat::BsdiffXz => {
            if patch_len < CONTAINER_HEADER_LEN || header.len() < 64 {
                return Err(DeltaError::Truncated(super::Stream::Control));
            }
            let (v1, v2) = if format == PatchFormat::BsdiffZstd {
                (ZSTD_MAGIC, ZSTD_MAGIC_V2)
            } else {
                (XZ_MAGIC, XZ_MAGIC_V2)
            };
            let (head_len, flags) = if header[..8] == v1 {
                (CONTAINER_HEADER_LEN, 0)
            } else if header[..8] == v2 {
                if patch_len < CONTAINER_V2_HEADER_LEN || header.len() < 72 {
                    return Err(DeltaError::Truncated(super::Stream::Control));
                }
                let flags = u64_at(header, 64);
                if flags & !FLAG_ZERO_RUN_DIFF != 0 {
                    return Err(DeltaError::BadHeader("unknown container flags"));
                }
                (CONTAINER_V2_HEADER_LEN, flags)
            } else {
                return Err(DeltaError::BadMagic(format));
            };
            let tlen = u64_at(header, 8);
            let comp = [u64_at(header, 16), u64_at(header, 24), u64_at(header, 32)];
            let raw = [u64_at(header, 40), u64_at(header, 48), u64_at(header, 56)];
            let mut off = head_len;
            let mut sections = [(0u64, 0u64); 3];
            for (s, c) in sections.iter_mut().zip(comp) {
                *s = (off, c);
                off = off
                    .checked_add(c)
                    .ok_or(DeltaError::BadHeader("length overflow"))?;
            }
            if off > patch_len {
                return Err(DeltaError::Truncated(super::Stream::Extra));
            }
            if off < patch_len {
                return Err(DeltaError::BadHeader(
                    "trailing bytes after the extra stream",
                ));
            }
            if raw[0] % CONTROL_LEN != 0 {
                return Err(DeltaError::BadHeader(
                    "control stream length not a multiple of 24",
                ));
            }
            if raw[1].checked_add(raw[2]) != Some(tlen) {
                return Err(DeltaError::BadHeader(
                    "diff + extra lengths differ from the target length",
                ));
            }
            Ok(PatchHeader {
                format,
                target_length: tlen,
                sections,
                raw_lengths: Some(raw),
                zero_run_diff: flags & FLAG_ZERO_RUN_DIFF != 0,
            })
        }
    }
}

/// Writes a version 1 esync container header.
pub fn container_header(
    format: PatchFormat,
    target_length: u64,
    compressed: [u64; 3],
    raw: [u64; 3],
) -> [u8; 64] {
    let mut h = [0u8; 64];
    h[..8].copy_from_slice(if format == PatchFormat::BsdiffXz {
        &XZ_MAGIC
    } else {
        &ZSTD_MAGIC
    });
    h[8..16].copy_from_slice(&target_length.to_le_bytes());
    for i in 0..3 {
        h[16 + 8 * i..24 + 8 * i].copy_from_slice(&compressed[i].to_le_bytes());
        h[40 + 8 * i..48 + 8 * i].copy_from_slice(&raw[i].to_le_bytes());
    }
    h
}

/// Writes a version 2 esync container header (version 1 fields, then the
/// flags word).
pub fn container_header_v2(
    format: PatchFormat,
    target_length: u64,
    compressed: [u64; 3],
    raw: [u64; 3],
    flags: u64,
) -> [u8; 72] {
    let mut h = [0u8; 72];
    h[..64].copy_from_slice(&container_header(format, target_length, compressed, raw));
    h[..8].copy_from_slice(if format == PatchFormat::BsdiffXz {
        &XZ_MAGIC_V2
    } else {
        &ZSTD_MAGIC_V2
    });
    h[64..].copy_from_slice(&flags.to_le_bytes());
    h
}

/// The format a patch's magic names, if any.
pub fn sniff(patch_start: &[u8]) -> Option<PatchFormat> {
    let m = patch_start.get(..8)?;
    if m == BSDIFF40_MAGIC {
        Some(PatchFormat::Bsdiff40)
    } else if m == ZSTD_MAGIC || m == ZSTD_MAGIC_V2 {
        Some(PatchFormat::BsdiffZstd)
    } else if m == XZ_MAGIC || m == XZ_MAGIC_V2 {
        Some(PatchFormat::BsdiffXz)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_roundtrip() {
        for v in [0i64, 1, -1, 255, -256, i64::MAX, -i64::MAX, 1 << 40] {
            assert_eq!(decode_int(&encode_int(v)), v);
        }
        // Negative zero decodes to 0.
        let mut nz = [0u8; 8];
        nz[7] = 0x80;
        assert_eq!(decode_int(&nz), 0);
    }

    #[test]
    fn control_roundtrip() {
        let c = [5i64, 0, -77];
        let t = encode_control(c);
        assert_eq!(&t[..8], &encode_int(5));
        assert_eq!(&t[16..], &encode_int(-77));
        assert_eq!(decode_control(&t), Some(c));
        assert_eq!(decode_control(&t[..23]), None);
    }

    #[test]
    fn container_header_roundtrip_and_checks() {
        let h = container_header(PatchFormat::BsdiffZstd, 10, [1, 2, 3], [24, 4, 6]);
        let p = parse_header(PatchFormat::BsdiffZstd, &h, 70).unwrap();
        assert_eq!(p.target_length, 10);
        assert_eq!(p.sections, [(64, 1), (65, 2), (67, 3)]);
        assert!(matches!(
            parse_header(PatchFormat::BsdiffXz, &h, 70),
            Err(DeltaError::BadMagic(_))
        ));
        assert!(matches!(
            parse_header(PatchFormat::BsdiffZstd, &h, 69),
            Err(DeltaError::Truncated(_))
        ));
        assert!(matches!(
            parse_header(PatchFormat::BsdiffZstd, &h, 71),
            Err(DeltaError::BadHeader(_))
        ));
        let bad = container_header(PatchFormat::BsdiffZstd, 11, [1, 2, 3], [24, 4, 6]);
        assert!(parse_header(PatchFormat::BsdiffZstd, &bad, 70).is_err());
        let huge = container_header(PatchFormat::BsdiffZstd, 10, [u64::MAX, 2, 3], [24, 4, 6]);
        assert!(parse_header(PatchFormat::BsdiffZstd, &huge, 70).is_err());
        assert_eq!(sniff(&h), Some(PatchFormat::BsdiffZstd));
    }

    #[test]
    fn v2_header_flags() {
        let h = container_header_v2(PatchFormat::BsdiffXz, 10, [1, 2, 3], [24, 4, 6], 1);
        let p = parse_header(PatchFormat::BsdiffXz, &h, 78).unwrap();
        assert!(p.zero_run_diff);
        assert_eq!(p.sections, [(72, 1), (73, 2), (75, 3)]);
        assert_eq!(sniff(&h), Some(PatchFormat::BsdiffXz));
        assert!(matches!(
            parse_header(PatchFormat::BsdiffZstd, &h, 78),
            Err(DeltaError::BadMagic(_))
        ));
        // Truncated inside the flags word.
        assert!(matches!(
            parse_header(PatchFormat::BsdiffXz, &h[..70], 70),
            Err(DeltaError::Truncated(_))
        ));
        let plain = container_header_v2(PatchFormat::BsdiffXz, 10, [1, 2, 3], [24, 4, 6], 0);
        assert!(
            !parse_header(PatchFormat::BsdiffXz, &plain, 78)
                .unwrap()
                .zero_run_diff
        );
        let unknown = container_header_v2(PatchFormat::BsdiffXz, 10, [1, 2, 3], [24, 4, 6], 2);
        assert!(matches!(
            parse_header(PatchFormat::BsdiffXz, &unknown, 78),
            Err(DeltaError::BadHeader(_))
        ));
    }
}
