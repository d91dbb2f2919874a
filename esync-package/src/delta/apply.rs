//! Device-side patch application with bounded memory.

use std::io::{self, BufReader, Read};

use esync_proto::id::Sha256Digest;
use esync_proto::message::PatchFormat;
use sha2::{Digest, Sha256};

use super::format::{decode_int, parse_header, CONTROL_LEN, MAX_HEADER_LEN};
use super::zero_run::ZeroRunDecoder;
use super::{ApplyLimits, ApplyReport, DeltaError, SlotWriter, SourceImage, Stream, TargetSpec};

/// Pure-seek controls a `BSDIFF40` patch may carry after its output is
/// complete (qbsdiff ends each parallel chunk with one).
const MAX_TRAILING_CONTROLS: u64 = 4096;

/// Input buffer of each compressed stream.
const STREAM_BUF: usize = 32 << 10;

/// Buffer between the diff stream's decompressor and its zero-run decoder.
const ZERO_RUN_BUF: usize = 16 << 10;

/// Reads `offset..offset + len` of a [`SourceImage`] sequentially.
struct Section<'a> {
    src: &'a dyn SourceImage,
    pos: u64,
    end: u64,
}

impl Read for Section<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.pos;
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.src.read_exact_at(self.pos, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn open_stream<'a>(
    format: PatchFormat,
    patch: &'a dyn SourceImage,
    (offset, len): (u64, u64),
    limits: &ApplyLimits,
    stream: Stream,
) -> Result<Box<dyn Read + 'a>, DeltaError> {
    let section = Section {
        src: patch,
        pos: offset,
        end: offset + len,
    };
    Ok(match format {
        PatchFormat::Bsdiff40 => Box::new(bzip2::read::BzDecoder::new(section)),
        PatchFormat::BsdiffZstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(
                STREAM_BUF, section,
            ))
            .map_err(|source| DeltaError::Decompress { stream, source })?
            .single_frame();
            d.window_log_max(limits.max_window_log)
                .map_err(|source| DeltaError::Decompress { stream, source })?;
            Box::new(d)
        }
        PatchFormat::BsdiffXz => {
            let s =
                xz2::stream::Stream::new_stream_decoder(limits.xz_memlimit, 0).map_err(|e| {
                    DeltaError::Decompress {
                        stream,
                        source: e.into(),
                    }
                })?;
            Box::new(xz2::bufread::XzDecoder::new_stream(
                BufReader::with_capacity(STREAM_BUF, section),
                s,
            ))
        }
    })
}

/// Reads exactly `buf.len()` bytes of a decompressed stream.
fn fill(r: &mut dyn Read, buf: &mut [u8], stream: Stream) -> Result<(), DeltaError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => DeltaError::Truncated(stream),
        _ => DeltaError::Decompress { stream, source: e },
    })
}

/// Hashes the whole source with positioned reads of `block` bytes.
fn hash_source(source: &dyn SourceImage, buf: &mut [u8]) -> Result<Sha256Digest, DeltaError> {
    let mut h = Sha256::new();
    let len = source.len();
    let mut pos = 0u64;
    while pos < len {
        let n = usize::try_from(len - pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        source
            .read_exact_at(pos, &mut buf[..n])
            .map_err(DeltaError::SourceRead)?;
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(Sha256Digest(h.finalize().into()))
}

struct Output<'a> {
    out: &'a mut dyn SlotWriter,
    hash: Sha256,
    written: u64,
    limit: u64,
}

impl Output<'_> {
    fn write(&mut self, data: &[u8]) -> Result<(), DeltaError> {
        let end = self.written + data.len() as u64;
        if end > self.limit {
            return Err(DeltaError::OutputTooLong(self.limit));
        }
        self.out.write_slot(data).map_err(DeltaError::Write)?;
        self.hash.update(data);
        self.written = end;
        Ok(())
    }
}

/// Applies a patch to the installed image and streams the result to `out`.
///
/// In order, and before anything is written to `out`:
/// 1. `source` is hashed and must match `source_sha256`
///    ([`DeltaError::SourceMismatch`]);
/// 2. the patch header is parsed for `format` and must declare exactly
///    `target.length` (bounded by `limits.max_target_length`).
///
/// Then the bsdiff streams are decoded and the output is written sequentially,
/// never beyond `target.length` ([`DeltaError::OutputTooLong`]). At the end the
/// result's SHA-256 must equal `target.sha256`
/// ([`DeltaError::TargetHashMismatch`]); on any error the slot holds a prefix
/// of garbage that the caller must not activate.
///
/// `patch` is read with positioned reads because the three bsdiff streams are
/// consumed concurrently; store the received patch (e.g. in the transfer's
/// chunk store) and pass it here, or pass a `&[u8]`.
///
/// Peak memory: see the crate documentation ("Memory bound of application").
pub fn apply_patch(
    format: PatchFormat,
    source: &dyn SourceImage,
    source_sha256: &Sha256Digest,
    patch: &dyn SourceImage,
    target: &TargetSpec,
    out: &mut dyn SlotWriter,
    limits: &ApplyLimits,
) -> Result<ApplyReport, DeltaError> {
    let block = limits.block.max(512);
    let mut src_buf = vec![0u8; block];

    // 1. The source must be the patch's source.
    if hash_source(source, &mut src_buf)? != *source_sha256 {
        return Err(DeltaError::SourceMismatch);
    }

    // 2. Header.
    let mut head = [0u8; MAX_HEADER_LEN];
    let plen = patch.len();
    let hlen = usize::try_from(plen.min(MAX_HEADER_LEN as u64)).unwrap_or(MAX_HEADER_LEN);
    patch
        .read_exact_at(0, &mut head[..hlen])
        .map_err(DeltaError::PatchRead)?;
    let header = parse_header(format, &head[..hlen], plen)?;
    if header.target_length > limits.max_target_length {
        return Err(DeltaError::LimitExceeded {
            what: "target length",
            limit: limits.max_target_length,
            got: header.target_length,
        });
    }
    if header.target_length != target.length {
        return Err(DeltaError::TargetLengthMismatch {
            declared: header.target_length,
            expected: target.length,
        });
    }

    let mut ctrl = open_stream(format, patch, header.sections[0], limits, Stream::Control)?;
    let mut diff = open_stream(format, patch, header.sections[1], limits, Stream::Diff)?;
    if header.zero_run_diff {
        // Varints are read byte by byte: buffer the decompressed stream.
        diff = Box::new(ZeroRunDecoder::new(BufReader::with_capacity(
            ZERO_RUN_BUF,
            diff,
        )));
    }
    let mut extra = open_stream(format, patch, header.sections[2], limits, Stream::Extra)?;

    let mut data = vec![0u8; block];
    let mut output = Output {
        out,
        hash: Sha256::new(),
        written: 0,
        limit: target.length,
    };
    let old_len =
        i64::try_from(source.len()).map_err(|_| DeltaError::Corrupt("source too large"))?;
    let new_len = target.length;
    let mut old_pos: i64 = 0;
    let mut controls = 0u64;
    let mut source_read = 0u64;
    let mut diff_total = 0u64;
    let mut extra_total = 0u64;
    let mut triple = [0u8; CONTROL_LEN as usize];

    while output.written < new_len {
        fill(&mut *ctrl, &mut triple, Stream::Control)?;
        controls += 1;
        let field = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&triple[8 * i..8 * i + 8]);
            decode_int(&a)
        };
        let (add, copy, seek) = (field(0), field(1), field(2));
        let add = u64::try_from(add).map_err(|_| DeltaError::Corrupt("negative add length"))?;
        let copy = u64::try_from(copy).map_err(|_| DeltaError::Corrupt("negative copy length"))?;
        if output.written + add > new_len || output.written + add + copy > new_len {
            return Err(DeltaError::OutputTooLong(new_len));
        }

        // Diff: new[i] = diff[i] + old[old_pos + i] (old bytes outside the
        // source count as 0, as in bspatch).
        let mut left = add;
        while left > 0 {
            let k = usize::try_from(left).unwrap_or(usize::MAX).min(block);
            fill(&mut *diff, &mut data[..k], Stream::Diff)?;
            let start = old_pos;
            let end = old_pos
                .checked_add(k as i64)
                .ok_or(DeltaError::Corrupt("source position overflow"))?;
            let lo = start.clamp(0, old_len);
            let hi = end.clamp(0, old_len);
            if lo < hi {
                // Both differences are within 0..=k, checked by the clamps.
                let a = (lo - start) as usize;
                let b = (hi - start) as usize;
                source
                    .read_exact_at(lo as u64, &mut src_buf[a..b])
                    .map_err(DeltaError::SourceRead)?;
                source_read += (b - a) as u64;
                for (d, s) in data[a..b].iter_mut().zip(&src_buf[a..b]) {
                    *d = d.wrapping_add(*s);
                }
            }
            output.write(&data[..k])?;
            old_pos = end;
            left -= k as u64;
        }
        diff_total += add;

        // Extra: new bytes copied verbatim.
        let mut left = copy;
        while left > 0 {
            let k = usize::try_from(left).unwrap_or(usize::MAX).min(block);
            fill(&mut *extra, &mut data[..k], Stream::Extra)?;
            output.write(&data[..k])?;
            left -= k as u64;
        }
        extra_total += copy;

        old_pos = old_pos
            .checked_add(seek)
            .ok_or(DeltaError::Corrupt("source position overflow"))?;
    }

    // Every stream must end exactly here: a patch whose tail is missing or
    // damaged is refused even when the bytes produced so far are right.
    let ctrl_left = match header.raw_lengths {
        Some(raw) => {
            // The container declares its stream lengths: they must match.
            if diff_total != raw[1] || extra_total != raw[2] {
                return Err(DeltaError::Corrupt("stream lengths differ from the header"));
            }
            raw[0]
                .checked_sub(controls * CONTROL_LEN)
                .ok_or(DeltaError::Corrupt(
                    "more controls than the header declares",
                ))?
        }
        // BSDIFF40 (qbsdiff) may end with pure seek controls; allow a bounded
        // number of them.
        None => MAX_TRAILING_CONTROLS * CONTROL_LEN,
    };
    let mut left = ctrl_left;
    while left > 0 {
        let k = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
        match ctrl.read(&mut data[..k]) {
            Ok(0) if header.raw_lengths.is_none() => break,
            Ok(0) => return Err(DeltaError::Truncated(Stream::Control)),
            Ok(n) => left -= n as u64,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(DeltaError::Truncated(Stream::Control))
            }
            Err(source) => {
                return Err(DeltaError::Decompress {
                    stream: Stream::Control,
                    source,
                })
            }
        }
    }
    for (r, s) in [
        (&mut ctrl, Stream::Control),
        (&mut diff, Stream::Diff),
        (&mut extra, Stream::Extra),
    ] {
        let mut one = [0u8; 1];
        match r.read(&mut one) {
            Ok(0) => {}
            Ok(_) => return Err(DeltaError::Corrupt("trailing data in a stream")),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(DeltaError::Truncated(s))
            }
            Err(source) => return Err(DeltaError::Decompress { stream: s, source }),
        }
    }

    let digest = Sha256Digest(output.hash.finalize().into());
    if digest != target.sha256 {
        return Err(DeltaError::TargetHashMismatch);
    }
    Ok(ApplyReport {
        written: output.written,
        sha256: digest,
        controls,
        source_read,
    })
}
