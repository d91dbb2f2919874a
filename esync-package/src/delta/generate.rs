//! Server-side patch generation (feature `generate`).
//!
//! The bsdiff match search is qbsdiff's (suffix array built by the C
//! `divsufsort`, search parallelised with rayon over one equal target chunk
//! per core, at least 2 MiB each).
//! qbsdiff always writes `BSDIFF40` (asked for bzip2 level 1 when its
//! output is not the result); for the esync container formats only its small
//! control stream is decoded, the diff and extra streams are rebuilt from the
//! controls and the two images (cheaper than decoding them), the diff stream
//! is zero-run coded (see [`zero_run`](super::zero_run)), and the three
//! streams are compressed each on its own thread; with xz the coded diff
//! stream is further split into one independent xz block per core (at least
//! 256 KiB each) compressed in parallel, which costs about 0.3 % in size.
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

use super::format::{
    container_header, container_header_v2, decode_control, encode_control, encode_int,
    parse_header, CONTROL_LEN, FLAG_ZERO_RUN_DIFF,
};

/// Smallest target chunk searched by one parallel qbsdiff job.
const MIN_SEARCH_CHUNK: usize = 2 << 20;

/// Target bytes searched by one parallel qbsdiff job: one chunk per core,
/// but at least [`MIN_SEARCH_CHUNK`]. qbsdiff's `Auto` searches 512 KiB
/// chunks independently, which cost 30 % in patch size on the libpython pair
/// (1 MiB chunks: 2.5 %); chunks of 2 MiB and more lose under 0.1 %. Equal
/// chunks keep both cores busy (4 MiB chunks left one core idle for most of
/// the libcrypto search).
fn search_chunk(target_len: usize) -> usize {
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    target_len.div_ceil(cores).max(MIN_SEARCH_CHUNK)
}

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
    /// Zero-run code the diff stream (esync container version 2). Off
    /// writes version 1 containers, which every esync applier reads.
    pub zero_run_diff: bool,
}

impl GenerateOptions {
    /// Defaults for `format`: 256 MiB windows, zstd level 19, xz preset 6
    /// (with the dictionary set to the window, presets 6 to 9 give the same
    /// output), 4 MiB (log 22) decoder windows, zero-run coded diff stream.
    pub fn new(format: PatchFormat) -> Self {
        Self {
            format,
            max_window: 256 << 20,
            zstd_level: 19,
            window_log: 22,
            xz_preset: 6,
            zero_run_diff: true,
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
        let ctrl = control_stream(&qbsdiff_run(source, target, 1)?)?;
        let raw = rebuild_streams(ctrl, source, target)?;
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
        let win = &source[s0..s0 + window];
        let part = rebuild_streams(control_stream(&qbsdiff_run(win, piece, 1)?)?, win, piece)?;
        let start = s0 as i64;
        raw.ctrl
            .extend_from_slice(&encode_control([0, 0, start - old_pos]));
        old_pos = start;
        for c in part.ctrl.chunks_exact(CONTROL_LEN as usize) {
            if let Some([add, _, seek]) = decode_control(c) {
                old_pos += add + seek;
            }
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
        .parallel_scheme(ParallelScheme::ChunkSize(search_chunk(target.len())))
        .compression_level(level)
        .buffer_size(64 << 10)
        .compare(io::Cursor::new(&mut out))?;
    Ok(out)
}

/// The decompressed control stream of a `BSDIFF40` patch.
fn control_stream(patch: &[u8]) -> Result<Vec<u8>, GenerateError> {
    let h = parse_header(PatchFormat::Bsdiff40, patch, patch.len() as u64)
        .map_err(|e| GenerateError::Internal(e.to_string()))?;
    let (off, len) = h.sections[0];
    let s = &patch[off as usize..(off + len) as usize];
    let mut out = Vec::new();
    bzip2::read::BzDecoder::new(s).read_to_end(&mut out)?;
    if out.len() % CONTROL_LEN as usize != 0 {
        return Err(GenerateError::Internal("control stream length".into()));
    }
    Ok(out)
}

/// Rebuilds the diff and extra streams that `ctrl` implies, exactly as the
/// applier will read them (source bytes outside the source count as 0).
fn rebuild_streams(
    ctrl: Vec<u8>,
    source: &[u8],
    target: &[u8],
) -> Result<RawStreams, GenerateError> {
    let bad = |what: &str| GenerateError::Internal(format!("qbsdiff control {what}"));
    let mut diff = Vec::with_capacity(target.len());
    let mut extra = Vec::new();
    let (mut old_pos, mut new_pos) = (0i64, 0usize);
    let n = source.len() as i64;
    for c in ctrl.chunks_exact(CONTROL_LEN as usize) {
        let [add, copy, seek] = decode_control(c).ok_or_else(|| bad("cut"))?;
        let add = usize::try_from(add).map_err(|_| bad("negative add"))?;
        let copy = usize::try_from(copy).map_err(|_| bad("negative copy"))?;
        let new_add = target
            .get(new_pos..new_pos.checked_add(add).ok_or_else(|| bad("overflow"))?)
            .ok_or_else(|| bad("add past the target"))?;
        if old_pos >= 0 && old_pos + add as i64 <= n {
            // The common case: the whole add lies inside the source.
            let old = &source[old_pos as usize..old_pos as usize + add];
            diff.extend(new_add.iter().zip(old).map(|(t, s)| t.wrapping_sub(*s)));
        } else {
            diff.extend(new_add.iter().enumerate().map(|(i, t)| {
                let p = old_pos + i as i64;
                let s = if (0..n).contains(&p) {
                    source[p as usize]
                } else {
                    0
                };
                t.wrapping_sub(s)
            }));
        }
        new_pos += add;
        old_pos += add as i64;
        extra.extend_from_slice(
            target
                .get(new_pos..new_pos.checked_add(copy).ok_or_else(|| bad("overflow"))?)
                .ok_or_else(|| bad("copy past the target"))?,
        );
        new_pos += copy;
        old_pos = old_pos
            .checked_add(seek)
            .ok_or_else(|| bad("seek overflow"))?;
    }
    if new_pos != target.len() {
        return Err(bad("lengths do not cover the target"));
    }
    Ok(RawStreams { ctrl, diff, extra })
}

fn ceil_log2(n: usize) -> u32 {
    usize::BITS - n.saturating_sub(1).leading_zeros()
}

/// Threads (= independent xz blocks) for the coded diff stream.
fn xz_threads(len: usize) -> u32 {
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    // At most 8 blocks: each costs a dictionary reset (about 0.3 % on the
    // corpus with 2 blocks).
    cores.min(len / XZ_MIN_BLOCK).clamp(1, 8) as u32
}

/// Smallest xz block worth a thread of its own.
const XZ_MIN_BLOCK: usize = 256 << 10;

/// Compresses one stream; `sparse` marks the (zero-run coded) diff stream.
fn compress(opts: &GenerateOptions, data: &[u8], sparse: bool) -> io::Result<Vec<u8>> {
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
            if sparse {
                // Measured on the corpus' coded diff streams: no position
                // context saves about 1 %. `nice_len` 273 would save about
                // 1 % more for 60 % more LZMA time; presets 3 and below
                // (fast mode) halve the time but cost 8 to 11 % in size.
                o.position_bits(0);
            }
            let mut f = xz2::stream::Filters::new();
            f.lzma2(&o);
            let threads = if sparse { xz_threads(data.len()) } else { 1 };
            let s = if threads > 1 {
                // Independent xz blocks compressed side by side: one stream
                // that the ordinary (single-threaded) decoder reads with the
                // same dictionary bound.
                xz2::stream::MtStreamBuilder::new()
                    .threads(threads)
                    .block_size(data.len().div_ceil(threads as usize) as u64)
                    .filters(f)
                    .check(xz2::stream::Check::Crc32)
                    .encoder()
            } else {
                xz2::stream::Stream::new_stream_encoder(&f, xz2::stream::Check::Crc32)
            }
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
    // BSDIFF40 (segmented generation) keeps bsdiff's plain streams.
    let zero_run = opts.zero_run_diff && opts.format != PatchFormat::Bsdiff40;
    let (c, d, e) = thread::scope(|s| {
        let d = s.spawn(|| {
            if zero_run {
                compress(opts, &super::zero_run::encode(&raw.diff), true)
            } else {
                compress(opts, &raw.diff, false)
            }
        });
        let e = s.spawn(|| compress(opts, &raw.extra, false));
        let c = compress(opts, &raw.ctrl, false);
        (c, d.join(), e.join())
    });
    let joined = |r: thread::Result<io::Result<Vec<u8>>>| -> Result<Vec<u8>, GenerateError> {
        r.map_err(|_| GenerateError::Internal("compression thread panicked".into()))?
            .map_err(GenerateError::Io)
    };
    let (c, d, e) = (c?, joined(d)?, joined(e)?);
    let mut out = Vec::with_capacity(72 + c.len() + d.len() + e.len());
    if opts.format == PatchFormat::Bsdiff40 {
        out.extend_from_slice(&super::format::BSDIFF40_MAGIC);
        out.extend_from_slice(&encode_int(c.len() as i64));
        out.extend_from_slice(&encode_int(d.len() as i64));
        out.extend_from_slice(&encode_int(target_len as i64));
    } else {
        let comp = [c.len() as u64, d.len() as u64, e.len() as u64];
        let lens = [
            raw.ctrl.len() as u64,
            raw.diff.len() as u64,
            raw.extra.len() as u64,
        ];
        if zero_run {
            out.extend_from_slice(&container_header_v2(
                opts.format,
                target_len,
                comp,
                lens,
                FLAG_ZERO_RUN_DIFF,
            ));
        } else {
            out.extend_from_slice(&container_header(opts.format, target_len, comp, lens));
        }
    }
    out.extend_from_slice(&c);
    out.extend_from_slice(&d);
    out.extend_from_slice(&e);
    Ok(out)
}
