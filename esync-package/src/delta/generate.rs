//! Server-side patch generation (feature `generate`).
//!
//! The bsdiff match search is qbsdiff's (suffix array built by the C
//! `divsufsort`, search parallelised with rayon over 4 MiB target chunks).
//! qbsdiff always writes `BSDIFF40`; for the esync container formats its
//! bzip2 streams are decoded again and recompressed, each of the three
//! streams on its own thread.
//!
//! # Bounded memory and segmentation
//!
//! The suffix array takes 4 bytes per source byte (plus bucket tables), so a
//! whole-image diff of an `n`-byte source needs about `n + m + 4n` bytes plus
//! the raw streams (`≈ m`). When the source is larger than
//! [`GenerateOptions::max_window`] (`W`), the target is cut into segments of
//! `W / 2` bytes and each segment is diffed against a `W`-byte window of the
//! source placed at the same relative position (a quarter of the window
//! before it). A pure seek control `(0, 0, window_start - position)` joins the
//! segments, so the result is still one ordinary bsdiff stream that any
//! applier (including `bspatch`) accepts. Peak memory is then about
//! `n + m + 5W + m` whatever the image size. The cost: matches that lie
//! outside a segment's window are missed; the benchmark measures it on the
//! corpus (`--segment` runs).

use std::io::{self, Read, Write};
use std::thread;

use esync_proto::message::PatchFormat;
use qbsdiff::{Bsdiff, ParallelScheme};
use thiserror::Error;

use super::format::{container_header, encode_int, parse_header, CONTROL_LEN};

/// Target bytes searched by one parallel qbsdiff job.
const SEARCH_CHUNK: usize = 4 << 20;

/// How to generate a patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenerateOptions {
    /// Output format.
    pub format: PatchFormat,
    /// Largest source window indexed at once (see the module docs).
    pub max_window: usize,
    /// zstd level for [`PatchFormat::BsdiffZstd`] (1..=22).
    pub zstd_level: i32,
    /// log2 of the zstd window / xz dictionary. The device needs about
    /// `2^window_log` bytes per large stream to decode (see
    /// [`ApplyLimits`](super::ApplyLimits)).
    pub window_log: u32,
    /// xz preset for [`PatchFormat::BsdiffXz`] (0..=9; `| 0x8000_0000` (extreme) allowed).
    pub xz_preset: u32,
}

impl GenerateOptions {
    /// Defaults for `format`: 256 MiB windows, zstd level 19, xz preset 6
    /// (with the dictionary set to the window, presets 6 to 9 give the same
    /// output), 4 MiB (log 22) decoder windows.
    pub fn new(format: PatchFormat) -> Self {
        Self {
            format,
            max_window: 256 << 20,
            zstd_level: 19,
            window_log: 22,
            xz_preset: 6,
        }
    }
}

/// Patch generation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GenerateError {
    /// An image is larger than the generator accepts.
    #[error("{what} of {len} bytes is too large")]
    TooLarge {
        /// Which input.
        what: &'static str,
        /// Its length.
        len: u64,
    },
    /// Encoding failed.
    #[error("patch encoding failed: {0}")]
    Io(#[from] io::Error),
    /// The package built from the generated patches is invalid.
    #[error(transparent)]
    Package(#[from] crate::package::PackageError),
    /// qbsdiff's output could not be read back (a bug).
    #[error("internal bsdiff output invalid: {0}")]
    Internal(String),
}

/// The three raw bsdiff streams and the target length.
#[derive(Debug, Default)]
struct RawStreams {
    ctrl: Vec<u8>,
    diff: Vec<u8>,
    extra: Vec<u8>,
}

/// Generates a patch from `source` to `target`.
pub fn generate_patch(
    source: &[u8],
    target: &[u8],
    opts: &GenerateOptions,
) -> Result<Vec<u8>, GenerateError> {
    if source.len() > qbsdiff::bsdiff::MAX_LENGTH {
        return Err(GenerateError::TooLarge {
            what: "source",
            len: source.len() as u64,
        });
    }
    let window = opts.max_window.max(1 << 20);
    if source.len() <= window {
        if opts.format == PatchFormat::Bsdiff40 {
            return qbsdiff_run(source, target, 9);
        }
        let raw = decode_bsdiff40(&qbsdiff_run(source, target, 1)?)?;
        return encode(opts, target.len() as u64, raw);
    }

    // Segmented: each target segment against a window of the source.
    let seg = window / 2;
    let mut raw = RawStreams::default();
    let mut old_pos: i64 = 0;
    let n = source.len();
    let m = target.len().max(1);
    for (i, piece) in target.chunks(seg).enumerate() {
        let t0 = i * seg;
        let center = (t0 as u128 * n as u128 / m as u128) as usize;
        let s0 = center.saturating_sub(window / 4).min(n - window);
        let part = decode_bsdiff40(&qbsdiff_run(&source[s0..s0 + window], piece, 1)?)?;
        let start = s0 as i64;
        raw.ctrl.extend_from_slice(&encode_int(0));
        raw.ctrl.extend_from_slice(&encode_int(0));
        raw.ctrl.extend_from_slice(&encode_int(start - old_pos));
        old_pos = start;
        for c in part.ctrl.chunks_exact(CONTROL_LEN as usize) {
            let f = |k: usize| {
                let mut a = [0u8; 8];
                a.copy_from_slice(&c[8 * k..8 * k + 8]);
                super::format::decode_int(&a)
            };
            old_pos += f(0) + f(2);
        }
        raw.ctrl.extend_from_slice(&part.ctrl);
        raw.diff.extend_from_slice(&part.diff);
        raw.extra.extend_from_slice(&part.extra);
    }
    encode(opts, target.len() as u64, raw)
}

fn qbsdiff_run(source: &[u8], target: &[u8], level: u32) -> Result<Vec<u8>, GenerateError> {
    let mut out = Vec::with_capacity(target.len() / 8 + 64);
    Bsdiff::new(source, target)
        // qbsdiff's `Auto` searches 512 KiB target chunks independently,
        // which cost 30 % in patch size on the libpython pair; 4 MiB chunks
        // lose < 0.1 % and still use both cores on images over 4 MiB.
        .parallel_scheme(ParallelScheme::ChunkSize(SEARCH_CHUNK))
        .compression_level(level)
        .buffer_size(64 << 10)
        .compare(io::Cursor::new(&mut out))?;
    Ok(out)
}

/// Splits a `BSDIFF40` patch into its three decompressed streams.
fn decode_bsdiff40(patch: &[u8]) -> Result<RawStreams, GenerateError> {
    let h = parse_header(PatchFormat::Bsdiff40, patch, patch.len() as u64)
        .map_err(|e| GenerateError::Internal(e.to_string()))?;
    let take = |(off, len): (u64, u64)| -> Result<Vec<u8>, GenerateError> {
        let s = &patch[off as usize..(off + len) as usize];
        let mut out = Vec::new();
        bzip2::read::BzDecoder::new(s).read_to_end(&mut out)?;
        Ok(out)
    };
    Ok(RawStreams {
        ctrl: take(h.sections[0])?,
        diff: take(h.sections[1])?,
        extra: take(h.sections[2])?,
    })
}

fn ceil_log2(n: usize) -> u32 {
    usize::BITS - n.saturating_sub(1).leading_zeros()
}

fn compress(opts: &GenerateOptions, data: &[u8]) -> io::Result<Vec<u8>> {
    let wlog = ceil_log2(data.len()).clamp(10, opts.window_log.max(10));
    match opts.format {
        PatchFormat::BsdiffZstd => {
            let mut e =
                zstd::stream::Encoder::new(Vec::with_capacity(data.len() / 4), opts.zstd_level)?;
            e.long_distance_matching(true)?;
            e.window_log(wlog)?;
            e.include_checksum(true)?;
            e.set_pledged_src_size(Some(data.len() as u64))?;
            e.write_all(data)?;
            e.finish()
        }
        PatchFormat::BsdiffXz => {
            let mut o =
                xz2::stream::LzmaOptions::new_preset(opts.xz_preset).map_err(io::Error::from)?;
            o.dict_size(1u32 << wlog.max(12));
            let mut f = xz2::stream::Filters::new();
            f.lzma2(&o);
            let s = xz2::stream::Stream::new_stream_encoder(&f, xz2::stream::Check::Crc32)
                .map_err(io::Error::from)?;
            let mut e = xz2::write::XzEncoder::new_stream(Vec::with_capacity(data.len() / 4), s);
            e.write_all(data)?;
            e.finish()
        }
        PatchFormat::Bsdiff40 => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
            e.write_all(data)?;
            e.finish()
        }
    }
}

fn encode(
    opts: &GenerateOptions,
    target_len: u64,
    raw: RawStreams,
) -> Result<Vec<u8>, GenerateError> {
    let (c, d, e) = thread::scope(|s| {
        let d = s.spawn(|| compress(opts, &raw.diff));
        let e = s.spawn(|| compress(opts, &raw.extra));
        let c = compress(opts, &raw.ctrl);
        (c, d.join(), e.join())
    });
    let joined = |r: thread::Result<io::Result<Vec<u8>>>| -> Result<Vec<u8>, GenerateError> {
        r.map_err(|_| GenerateError::Internal("compression thread panicked".into()))?
            .map_err(GenerateError::Io)
    };
    let (c, d, e) = (c?, joined(d)?, joined(e)?);
    let mut out = Vec::with_capacity(64 + c.len() + d.len() + e.len());
    if opts.format == PatchFormat::Bsdiff40 {
        out.extend_from_slice(&super::format::BSDIFF40_MAGIC);
        out.extend_from_slice(&encode_int(c.len() as i64));
        out.extend_from_slice(&encode_int(d.len() as i64));
        out.extend_from_slice(&encode_int(target_len as i64));
    } else {
        out.extend_from_slice(&container_header(
            opts.format,
            target_len,
            [c.len() as u64, d.len() as u64, e.len() as u64],
            [
                raw.ctrl.len() as u64,
                raw.diff.len() as u64,
                raw.extra.len() as u64,
            ],
        ));
    }
    out.extend_from_slice(&c);
    out.extend_from_slice(&d);
    out.extend_from_slice(&e);
    Ok(out)
}
