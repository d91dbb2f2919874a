//! Device-side patch application with bounded memory and bounded work per
//! step.
//!
//! [`PatchApplicationState`] is the state of one application, holding no
//! reader: each [`PatchApplicationState::step`] is given the source and the
//! patch, does at most a byte budget of work (plus one internal block) and
//! returns. [`PatchApplication`] is that state together with its readers, and
//! [`apply_patch`] is a loop over it.
//!
//! The three bsdiff streams are decoded by bzip2's and xz's buffer-in /
//! buffer-out decoders (`bzip2::Decompress`, `xz2::stream::Stream`), fed
//! from positioned reads of the patch at an offset tracked here, and by
//! ruzstd's `FrameDecoder` (pure Rust), which reads a block at a time from
//! the patch lent to it for one call; so nothing between two steps refers
//! to a reader.

use std::io::{self, Read};

use esync_proto::id::Sha256Digest;
use esync_proto::message::PatchFormat;
use sha2::{Digest, Sha256};

use super::format::{decode_control, parse_header, PatchHeader, CONTROL_LEN, MAX_HEADER_LEN};
use super::zero_run::{ZeroRunDecoder, ZeroRunState};
use super::{
    ApplyLimits, ApplyReport, DeltaError, SlotWriter, SourceImage, Stream, TargetSpec,
    APPLY_FORMATS,
};

/// Pure-seek controls a `BSDIFF40` patch may carry after its output is
/// complete (qbsdiff ends each parallel chunk with one).
const MAX_TRAILING_CONTROLS: u64 = 4096;

/// Input buffer of each bzip2 or xz stream (zstd streams have none: ruzstd
/// reads whole blocks from the patch itself).
#[cfg(any(feature = "apply-bzip2", feature = "apply-xz"))]
const STREAM_BUF: usize = 16 << 10;

/// Buffer between the diff stream's decompressor and its zero-run decoder.
const ZERO_RUN_BUF: usize = 8 << 10;

/// Smallest working block, whatever [`ApplyLimits::block`] says.
const MIN_BLOCK: usize = 512;

/// A buffer-in / buffer-out decoder (bzip2, xz).
#[cfg(any(feature = "apply-bzip2", feature = "apply-xz"))]
enum Raw {
    #[cfg(feature = "apply-bzip2")]
    Bzip2(bzip2::Decompress),
    #[cfg(feature = "apply-xz")]
    Xz(xz2::stream::Stream),
}

#[cfg(any(feature = "apply-bzip2", feature = "apply-xz"))]
impl Raw {
    /// Decodes from `input` into `out`: (input consumed, output produced,
    /// stream ended).
    #[cfg_attr(
        not(feature = "apply-xz"),
        allow(unused_variables, reason = "only xz is told the end of its input")
    )]
    fn run(&mut self, input: &[u8], out: &mut [u8], eof: bool) -> io::Result<(usize, usize, bool)> {
        let bad =
            |e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
        match self {
            #[cfg(feature = "apply-bzip2")]
            Raw::Bzip2(d) => {
                let (i, o) = (d.total_in(), d.total_out());
                let st = d.decompress(input, out).map_err(|e| bad(&e))?;
                Ok((
                    delta(d.total_in(), i),
                    delta(d.total_out(), o),
                    st == bzip2::Status::StreamEnd,
                ))
            }
            #[cfg(feature = "apply-xz")]
            Raw::Xz(d) => {
                let (i, o) = (d.total_in(), d.total_out());
                let action = if eof {
                    xz2::stream::Action::Finish
                } else {
                    xz2::stream::Action::Run
                };
                let st = d.process(input, out, action).map_err(|e| bad(&e))?;
                Ok((
                    delta(d.total_in(), i),
                    delta(d.total_out(), o),
                    st == xz2::stream::Status::StreamEnd,
                ))
            }
        }
    }
}

/// Bytes a decoder's running total grew by in one call (at most the length
/// of a buffer it was given, so it fits in `usize`).
#[cfg(any(feature = "apply-bzip2", feature = "apply-xz"))]
fn delta(after: u64, before: u64) -> usize {
    usize::try_from(after - before).expect("a decoder moves at most one buffer per call")
}

/// A zstd stream, decoded by ruzstd (pure Rust): a few KiB of tables plus
/// the frame's window (bounded by [`ApplyLimits::max_window_log`], checked
/// from the frame header before decoding) and one block (at most 128 KiB,
/// as the frame's content allows). It reads the patch through [`Section`],
/// so it has no input buffer of its own.
#[cfg(feature = "apply-zstd")]
struct Zstd {
    dec: ruzstd::decoding::FrameDecoder,
    started: bool,
    max_window_log: u32,
}

/// The part of a stream's section of the patch not read yet, as `Read`.
#[cfg(feature = "apply-zstd")]
struct Section<'a> {
    patch: &'a dyn SourceImage,
    pos: &'a mut u64,
    end: u64,
}

#[cfg(feature = "apply-zstd")]
impl Read for Section<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = usize::try_from(self.end - *self.pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        self.patch.read_exact_at(*self.pos, &mut buf[..n])?;
        *self.pos += n as u64;
        Ok(n)
    }
}

/// Window size of a zstd frame from its header (RFC 8878 3.1.1.1), read
/// from the first bytes of its section; `None` if they are no frame header.
#[cfg(feature = "apply-zstd")]
fn zstd_window(head: &[u8]) -> Option<u64> {
    const MAGIC: [u8; 4] = 0xFD2F_B528u32.to_le_bytes();
    if head.get(..4)? != MAGIC {
        return None;
    }
    let desc = *head.get(4)?;
    let single_segment = desc & 0x20 != 0;
    if !single_segment {
        let wd = *head.get(5)?;
        let log = 10 + u32::from(wd >> 3);
        let base = 1u64 << log;
        return Some(base + (base / 8) * u64::from(wd & 7));
    }
    // Single segment: the window is the frame content size.
    let dict_len = [0usize, 1, 2, 4][usize::from(desc & 3)];
    let at = 5 + dict_len;
    let fcs = match desc >> 6 {
        0 => u64::from(*head.get(at)?),
        1 => u64::from(u16::from_le_bytes(head.get(at..at + 2)?.try_into().ok()?)) + 256,
        2 => u64::from(u32::from_le_bytes(head.get(at..at + 4)?.try_into().ok()?)),
        _ => u64::from_le_bytes(head.get(at..at + 8)?.try_into().ok()?),
    };
    Some(fcs)
}

#[cfg(feature = "apply-zstd")]
impl Zstd {
    /// Reads decoded bytes (`Ok(0)` only at the end of the frame).
    fn read(
        &mut self,
        patch: &dyn SourceImage,
        pos: &mut u64,
        end: u64,
        out: &mut [u8],
    ) -> io::Result<usize> {
        use ruzstd::decoding::BlockDecodingStrategy;
        let corrupt = |e: &dyn std::fmt::Display, at_end: bool| {
            if at_end {
                io::Error::new(io::ErrorKind::UnexpectedEof, "compressed stream ends early")
            } else {
                io::Error::new(io::ErrorKind::InvalidData, e.to_string())
            }
        };
        if !self.started {
            // Longest frame header: magic, descriptor, window, dictionary
            // id (4), content size (8).
            let mut head = [0u8; 18];
            let n = usize::try_from(end - *pos)
                .unwrap_or(usize::MAX)
                .min(head.len());
            patch.read_exact_at(*pos, &mut head[..n])?;
            let window = zstd_window(&head[..n])
                .ok_or_else(|| corrupt(&"no zstd frame header", n < head.len() && n < 6))?;
            let limit = 1u64 << self.max_window_log;
            if window > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("zstd window of {window} bytes exceeds the limit of {limit}"),
                ));
            }
            let mut src = Section { patch, pos, end };
            self.dec
                .init(&mut src)
                .map_err(|e| corrupt(&e, *src.pos == end))?;
            self.started = true;
        }
        loop {
            let n = self.dec.read(out)?;
            if n > 0 || self.dec.is_finished() {
                return Ok(n);
            }
            let mut src = Section { patch, pos, end };
            self.dec
                .decode_blocks(&mut src, BlockDecodingStrategy::UptoBlocks(1))
                .map_err(|e| corrupt(&e, *src.pos == end))?;
        }
    }
}

/// One stream's decoder (only the codecs of the enabled features
/// `apply-zstd`, `apply-xz`, `apply-bzip2` are compiled).
enum Codec {
    /// bzip2 or xz with the compressed input read from the patch and not yet
    /// decoded.
    #[cfg(any(feature = "apply-bzip2", feature = "apply-xz"))]
    Buffered {
        raw: Raw,
        input: Box<[u8]>,
        lo: usize,
        hi: usize,
    },
    #[cfg(feature = "apply-zstd")]
    Zstd(Box<Zstd>),
}

/// One bsdiff stream: its decoder and its section of the patch. Reads take
/// the patch as an argument.
struct RawStream {
    codec: Codec,
    /// Next patch offset to read.
    pos: u64,
    /// End of the section in the patch.
    end: u64,
    done: bool,
}

impl RawStream {
    /// Reads decoded bytes (`Ok(0)` only at the end of the compressed
    /// stream; the end of the section before it is `UnexpectedEof`).
    fn read(&mut self, patch: &dyn SourceImage, out: &mut [u8]) -> io::Result<usize> {
        if self.done || out.is_empty() {
            return Ok(0);
        }
        match &mut self.codec {
            #[cfg(feature = "apply-zstd")]
            Codec::Zstd(z) => {
                let n = z.read(patch, &mut self.pos, self.end, out)?;
                self.done = n == 0;
                Ok(n)
            }
            #[cfg(any(feature = "apply-bzip2", feature = "apply-xz"))]
            Codec::Buffered { raw, input, lo, hi } => loop {
                if *lo == *hi && self.pos < self.end {
                    let n = usize::try_from(self.end - self.pos)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    patch.read_exact_at(self.pos, &mut input[..n])?;
                    self.pos += n as u64;
                    *lo = 0;
                    *hi = n;
                }
                let eof = *lo == *hi;
                let (used, made, ended) = raw.run(&input[*lo..*hi], out, eof)?;
                *lo += used;
                if ended {
                    self.done = true;
                }
                if made > 0 || ended {
                    return Ok(made);
                }
                if eof {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "compressed stream ends early",
                    ));
                }
                if used == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "decoder makes no progress",
                    ));
                }
            },
        }
    }
}

fn open_stream(
    format: PatchFormat,
    (offset, len): (u64, u64),
    limits: &ApplyLimits,
    stream: Stream,
) -> Result<RawStream, DeltaError> {
    #[cfg(any(feature = "apply-bzip2", feature = "apply-xz"))]
    let buffered = |raw| Codec::Buffered {
        raw,
        input: vec![0u8; STREAM_BUF].into_boxed_slice(),
        lo: 0,
        hi: 0,
    };
    let codec = match format {
        #[cfg(feature = "apply-bzip2")]
        PatchFormat::Bsdiff40 => buffered(Raw::Bzip2(bzip2::Decompress::new(false))),
        #[cfg(feature = "apply-zstd")]
        PatchFormat::BsdiffZstd => Codec::Zstd(Box::new(Zstd {
            dec: ruzstd::decoding::FrameDecoder::new(),
            started: false,
            max_window_log: limits.max_window_log.min(31),
        })),
        #[cfg(feature = "apply-xz")]
        PatchFormat::BsdiffXz => buffered(Raw::Xz(
            xz2::stream::Stream::new_stream_decoder(limits.xz_memlimit, 0).map_err(|e| {
                DeltaError::Decompress {
                    stream,
                    source: e.into(),
                }
            })?,
        )),
        #[allow(unreachable_patterns, reason = "reached when a codec feature is off")]
        other => return Err(DeltaError::UnsupportedFormat(other)),
    };
    #[cfg(not(feature = "apply-xz"))]
    let _ = (limits, stream);
    Ok(RawStream {
        codec,
        pos: offset,
        end: offset + len,
        done: false,
    })
}

/// A stream lent the patch for one call, readable as `Read`.
struct Lent<'s, 'p> {
    s: &'s mut RawStream,
    patch: &'p dyn SourceImage,
}

impl Read for Lent<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.s.read(self.patch, buf)
    }
}

/// The decompressed diff stream buffered for the zero-run decoder, which
/// reads varints byte by byte.
struct Buffered {
    s: RawStream,
    buf: Box<[u8]>,
    lo: usize,
    hi: usize,
}

/// A buffered stream lent the patch for one call.
struct LentBuffered<'s, 'p> {
    b: &'s mut Buffered,
    patch: &'p dyn SourceImage,
}

impl Read for LentBuffered<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let b = &mut *self.b;
        if b.lo == b.hi {
            b.hi = b.s.read(self.patch, &mut b.buf)?;
            b.lo = 0;
        }
        let n = (b.hi - b.lo).min(out.len());
        out[..n].copy_from_slice(&b.buf[b.lo..b.lo + n]);
        b.lo += n;
        Ok(n)
    }
}

/// The diff stream: decompressed, and zero-run decoded when the container
/// says so.
enum DiffStream {
    Plain(RawStream),
    ZeroRun(Box<Buffered>, ZeroRunState),
}

impl DiffStream {
    fn read(&mut self, patch: &dyn SourceImage, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            DiffStream::Plain(s) => s.read(patch, buf),
            DiffStream::ZeroRun(b, state) => {
                let mut d = ZeroRunDecoder::resume(LentBuffered { b, patch }, *state);
                let r = d.read(buf);
                *state = d.suspend();
                r
            }
        }
    }
}

/// The diff stream lent the patch for one call.
struct LentDiff<'s, 'p> {
    s: &'s mut DiffStream,
    patch: &'p dyn SourceImage,
}

impl Read for LentDiff<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.s.read(self.patch, buf)
    }
}

/// Reads exactly `buf.len()` bytes of a decompressed stream.
fn fill(r: &mut dyn Read, buf: &mut [u8], stream: Stream) -> Result<(), DeltaError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => DeltaError::Truncated(stream),
        _ => DeltaError::Decompress { stream, source: e },
    })
}

/// The three open streams and the position in the control sequence.
struct Streams {
    header: PatchHeader,
    ctrl: RawStream,
    diff: DiffStream,
    extra: RawStream,
    /// Position in the source (may be outside it, as in bspatch).
    old_pos: i64,
    /// Length of the source as a signed position.
    old_len: i64,
    /// Diff bytes of the current control still to write.
    add_left: u64,
    /// Extra bytes of the current control still to write.
    copy_left: u64,
    /// Seek of the current control, applied after its add and copy.
    seek: Option<i64>,
    controls: u64,
    source_read: u64,
    diff_total: u64,
    extra_total: u64,
}

/// Where an application is.
enum Phase {
    /// Hashing the source: `pos` bytes hashed so far.
    HashSource { pos: u64, hash: Sha256 },
    /// Source verified; the header is parsed and the streams opened next.
    Open,
    /// Writing the output.
    Patch(Box<Streams>),
    /// Output complete; `left` bytes of the control stream may still follow.
    Drain { streams: Box<Streams>, left: u64 },
    /// Finished (successfully or not): further steps are refused.
    Ended,
}

/// Progress after one [`PatchApplication::step`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum ApplyStep {
    /// More steps are needed.
    Pending {
        /// Bytes written to the slot so far (0 while the source is being
        /// hashed).
        written: u64,
        /// Bytes the complete output will have (the signed target length).
        total: u64,
    },
    /// The output is complete and hashes to the target digest.
    Done(ApplyReport),
}

/// The state of one patch application, done a bounded quantum at a time,
/// holding no reader: every [`step`](Self::step) is given the source and the
/// patch (the same bytes each time), so a caller that can only borrow them
/// for one call (an Agent borrowing its device for one `poll`) can keep the
/// state between calls.
///
/// Created from the source's expected digest, the patch format, the signed
/// target and the limits; nothing is read until the first step. Each step
/// does at most `budget` bytes of work plus one internal block
/// ([`ApplyLimits::block`], at least 512 bytes), where work is a byte of the
/// source hashed, a byte written to the slot, or a byte of control triples or
/// trailing control stream decoded. So a step never writes more than
/// `budget + block` bytes, and a patch of empty controls cannot keep one step
/// busy either.
///
/// The guarantees of [`apply_patch`] hold step by step: the whole source is
/// hashed and compared before the first byte is written (the first steps
/// only hash), output never goes past the signed length, every stream must
/// end exactly where the output does, and the last step checks the result's
/// digest. Any error ends the application: later steps return
/// [`DeltaError::Ended`], and the slot holds a prefix the caller must not
/// activate.
///
/// Resumable only in memory: the state (decompressor windows, stream
/// positions, running hash) lives in this value and cannot be persisted.
/// After a power cut the caller restarts the reconstruction from the
/// beginning (the Agent does so from its journal).
///
/// Peak memory: see the crate documentation ("Memory bound of
/// application"); it is the same as [`apply_patch`]'s.
pub struct PatchApplicationState {
    format: PatchFormat,
    source_sha256: Sha256Digest,
    target: TargetSpec,
    limits: ApplyLimits,
    block: usize,
    src_buf: Vec<u8>,
    data: Vec<u8>,
    hash: Sha256,
    written: u64,
    phase: Phase,
}

/// One patch application with its readers: a [`PatchApplicationState`] that
/// owns the source and the patch.
///
/// The source and the patch are read by positioned reads: pass references
/// (`&[u8]`, `&FileSource`, `&dyn SourceImage`) or an owning handle such as
/// `Arc<FileSource>`. Every guarantee and bound of
/// [`PatchApplicationState`] holds.
pub struct PatchApplication<S, P> {
    source: S,
    patch: P,
    state: PatchApplicationState,
}

impl<S, P> std::fmt::Debug for PatchApplication<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.state.fmt(f)
    }
}

impl<S: SourceImage, P: SourceImage> PatchApplication<S, P> {
    /// Prepares applying `patch` (in `format`) to `source`, whose SHA-256
    /// must be `source_sha256`, to produce `target`. Allocates the two
    /// working blocks; reads nothing.
    pub fn new(
        format: PatchFormat,
        source: S,
        source_sha256: Sha256Digest,
        patch: P,
        target: TargetSpec,
        limits: ApplyLimits,
    ) -> Self {
        Self {
            source,
            patch,
            state: PatchApplicationState::new(format, source_sha256, target, limits),
        }
    }

    /// Size of the working block: the most one unit of work inside a step
    /// may exceed its budget by.
    pub fn block(&self) -> usize {
        self.state.block()
    }

    /// Does at most `budget` bytes of work (at least one unit; see
    /// [`PatchApplicationState`]) and says whether the output is complete.
    /// On `Err` the application has ended.
    pub fn step(&mut self, out: &mut dyn SlotWriter, budget: u64) -> Result<ApplyStep, DeltaError> {
        self.state.step(&self.source, &self.patch, out, budget)
    }
}

impl std::fmt::Debug for PatchApplicationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = match &self.phase {
            Phase::HashSource { pos, .. } => format!("hashing source ({pos} bytes)"),
            Phase::Open => "opening streams".into(),
            Phase::Patch(_) => "patching".into(),
            Phase::Drain { left, .. } => format!("draining ({left} control bytes)"),
            Phase::Ended => "ended".into(),
        };
        f.debug_struct("PatchApplicationState")
            .field("format", &self.format)
            .field("target", &self.target)
            .field("written", &self.written)
            .field("phase", &phase)
            .finish_non_exhaustive()
    }
}

impl PatchApplicationState {
    /// Prepares applying a patch (in `format`) to a source whose SHA-256
    /// must be `source_sha256`, to produce `target`. Allocates the two
    /// working blocks; reads nothing.
    pub fn new(
        format: PatchFormat,
        source_sha256: Sha256Digest,
        target: TargetSpec,
        limits: ApplyLimits,
    ) -> Self {
        let block = limits.block.max(MIN_BLOCK);
        Self {
            format,
            source_sha256,
            target,
            limits,
            block,
            src_buf: vec![0u8; block],
            data: vec![0u8; block],
            hash: Sha256::new(),
            written: 0,
            phase: Phase::HashSource {
                pos: 0,
                hash: Sha256::new(),
            },
        }
    }

    /// Size of the working block: the most one unit of work inside a step
    /// may exceed its budget by.
    pub fn block(&self) -> usize {
        self.block
    }

    /// Bytes written to the slot so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Does at most `budget` bytes of work (at least one unit; see the type
    /// docs) reading `source` and `patch`, which must be the same bytes at
    /// every step, and says whether the output is complete. On `Err` the
    /// application has ended.
    pub fn step(
        &mut self,
        source: &dyn SourceImage,
        patch: &dyn SourceImage,
        out: &mut dyn SlotWriter,
        budget: u64,
    ) -> Result<ApplyStep, DeltaError> {
        if !APPLY_FORMATS.contains(&self.format) && !matches!(self.phase, Phase::Ended) {
            // Refused before the source is hashed.
            self.phase = Phase::Ended;
            return Err(DeltaError::UnsupportedFormat(self.format));
        }
        let budget = budget.max(1);
        let mut work = 0u64;
        while work < budget {
            match self.unit(source, patch, out) {
                Ok(Some(n)) => work = work.saturating_add(n),
                // `finish` ends the application whatever its verdict.
                Ok(None) => return self.finish(patch),
                Err(e) => {
                    self.phase = Phase::Ended;
                    return Err(e);
                }
            }
        }
        Ok(ApplyStep::Pending {
            written: self.written,
            total: self.target.length,
        })
    }

    /// Writes `data` to the slot, never past the target length.
    fn write(&mut self, out: &mut dyn SlotWriter, k: usize) -> Result<(), DeltaError> {
        let end = self.written + k as u64;
        if end > self.target.length {
            return Err(DeltaError::OutputTooLong(self.target.length));
        }
        out.write_slot(&self.data[..k]).map_err(DeltaError::Write)?;
        self.hash.update(&self.data[..k]);
        self.written = end;
        Ok(())
    }

    /// One unit of work: returns the bytes of work done, or `None` when only
    /// the final checks are left.
    fn unit(
        &mut self,
        source: &dyn SourceImage,
        patch: &dyn SourceImage,
        out: &mut dyn SlotWriter,
    ) -> Result<Option<u64>, DeltaError> {
        match std::mem::replace(&mut self.phase, Phase::Ended) {
            Phase::HashSource { mut pos, mut hash } => {
                let len = source.len();
                if pos < len {
                    let n = usize::try_from(len - pos)
                        .unwrap_or(usize::MAX)
                        .min(self.block);
                    source
                        .read_exact_at(pos, &mut self.src_buf[..n])
                        .map_err(DeltaError::SourceRead)?;
                    hash.update(&self.src_buf[..n]);
                    pos += n as u64;
                    self.phase = Phase::HashSource { pos, hash };
                    return Ok(Some(n as u64));
                }
                // 1. The source must be the patch's source.
                if Sha256Digest(hash.finalize().into()) != self.source_sha256 {
                    return Err(DeltaError::SourceMismatch);
                }
                self.phase = Phase::Open;
                Ok(Some(0))
            }
            Phase::Open => {
                self.phase = Phase::Patch(Box::new(self.open(source, patch)?));
                Ok(Some(0))
            }
            Phase::Patch(mut st) => {
                let n = self.patch_unit(&mut st, source, patch, out)?;
                self.phase = match n {
                    Some(_) => Phase::Patch(st),
                    None => {
                        let left = drain_length(&st)?;
                        Phase::Drain { streams: st, left }
                    }
                };
                Ok(Some(n.unwrap_or(0)))
            }
            Phase::Drain { mut streams, left } => {
                if left == 0 {
                    self.phase = Phase::Drain { streams, left };
                    return Ok(None);
                }
                let k = usize::try_from(left).unwrap_or(usize::MAX).min(self.block);
                let bsdiff40 = streams.header.raw_lengths.is_none();
                let left = match streams.ctrl.read(patch, &mut self.data[..k]) {
                    Ok(0) if bsdiff40 => 0,
                    Ok(0) => return Err(DeltaError::Truncated(Stream::Control)),
                    Ok(n) => left - n as u64,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        return Err(DeltaError::Truncated(Stream::Control))
                    }
                    Err(source) => {
                        return Err(DeltaError::Decompress {
                            stream: Stream::Control,
                            source,
                        })
                    }
                };
                self.phase = Phase::Drain { streams, left };
                Ok(Some(k as u64))
            }
            Phase::Ended => Err(DeltaError::Ended),
        }
    }

    /// 2. Parses the header and opens the three streams.
    fn open(
        &mut self,
        source: &dyn SourceImage,
        patch: &dyn SourceImage,
    ) -> Result<Streams, DeltaError> {
        let (format, limits) = (self.format, &self.limits);
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
        if header.target_length != self.target.length {
            return Err(DeltaError::TargetLengthMismatch {
                declared: header.target_length,
                expected: self.target.length,
            });
        }
        let ctrl = open_stream(format, header.sections[0], limits, Stream::Control)?;
        let diff = open_stream(format, header.sections[1], limits, Stream::Diff)?;
        let diff = if header.zero_run_diff {
            DiffStream::ZeroRun(
                Box::new(Buffered {
                    s: diff,
                    buf: vec![0u8; ZERO_RUN_BUF].into_boxed_slice(),
                    lo: 0,
                    hi: 0,
                }),
                ZeroRunState::default(),
            )
        } else {
            DiffStream::Plain(diff)
        };
        let extra = open_stream(format, header.sections[2], limits, Stream::Extra)?;
        let old_len =
            i64::try_from(source.len()).map_err(|_| DeltaError::Corrupt("source too large"))?;
        Ok(Streams {
            header,
            ctrl,
            diff,
            extra,
            old_pos: 0,
            old_len,
            add_left: 0,
            copy_left: 0,
            seek: None,
            controls: 0,
            source_read: 0,
            diff_total: 0,
            extra_total: 0,
        })
    }

    /// One block of diff or extra output, or one control triple. `None` when
    /// the output is complete.
    fn patch_unit(
        &mut self,
        st: &mut Streams,
        source: &dyn SourceImage,
        patch: &dyn SourceImage,
        out: &mut dyn SlotWriter,
    ) -> Result<Option<u64>, DeltaError> {
        if st.add_left > 0 {
            // Diff: new[i] = diff[i] + old[old_pos + i] (old bytes outside the
            // source count as 0, as in bspatch).
            let k = usize::try_from(st.add_left)
                .unwrap_or(usize::MAX)
                .min(self.block);
            let mut diff = LentDiff {
                s: &mut st.diff,
                patch,
            };
            fill(&mut diff, &mut self.data[..k], Stream::Diff)?;
            let start = st.old_pos;
            let end = start
                .checked_add(k as i64)
                .ok_or(DeltaError::Corrupt("source position overflow"))?;
            let lo = start.clamp(0, st.old_len);
            let hi = end.clamp(0, st.old_len);
            if lo < hi {
                // Both differences are within 0..=k, checked by the clamps.
                let a = (lo - start) as usize;
                let b = (hi - start) as usize;
                source
                    .read_exact_at(lo as u64, &mut self.src_buf[a..b])
                    .map_err(DeltaError::SourceRead)?;
                st.source_read += (b - a) as u64;
                for (d, s) in self.data[a..b].iter_mut().zip(&self.src_buf[a..b]) {
                    *d = d.wrapping_add(*s);
                }
            }
            self.write(out, k)?;
            st.old_pos = end;
            st.add_left -= k as u64;
            return Ok(Some(k as u64));
        }
        if st.copy_left > 0 {
            // Extra: new bytes copied verbatim.
            let k = usize::try_from(st.copy_left)
                .unwrap_or(usize::MAX)
                .min(self.block);
            let mut extra = Lent {
                s: &mut st.extra,
                patch,
            };
            fill(&mut extra, &mut self.data[..k], Stream::Extra)?;
            self.write(out, k)?;
            st.copy_left -= k as u64;
            return Ok(Some(k as u64));
        }
        if let Some(seek) = st.seek.take() {
            st.old_pos = st
                .old_pos
                .checked_add(seek)
                .ok_or(DeltaError::Corrupt("source position overflow"))?;
        }
        let new_len = self.target.length;
        if self.written >= new_len {
            return Ok(None);
        }
        let mut triple = [0u8; CONTROL_LEN as usize];
        let mut ctrl = Lent {
            s: &mut st.ctrl,
            patch,
        };
        fill(&mut ctrl, &mut triple, Stream::Control)?;
        st.controls += 1;
        let [add, copy, seek] =
            decode_control(&triple).ok_or(DeltaError::Truncated(Stream::Control))?;
        let add = u64::try_from(add).map_err(|_| DeltaError::Corrupt("negative add length"))?;
        let copy = u64::try_from(copy).map_err(|_| DeltaError::Corrupt("negative copy length"))?;
        if self.written + add > new_len || self.written + add + copy > new_len {
            return Err(DeltaError::OutputTooLong(new_len));
        }
        st.add_left = add;
        st.copy_left = copy;
        st.seek = Some(seek);
        st.diff_total += add;
        st.extra_total += copy;
        Ok(Some(CONTROL_LEN))
    }

    /// The final checks: every stream ends exactly here, and the output has
    /// the target digest.
    fn finish(&mut self, patch: &dyn SourceImage) -> Result<ApplyStep, DeltaError> {
        let Phase::Drain { mut streams, .. } = std::mem::replace(&mut self.phase, Phase::Ended)
        else {
            return Err(DeltaError::Ended);
        };
        let st = &mut *streams;
        let mut ctrl = Lent {
            s: &mut st.ctrl,
            patch,
        };
        let mut diff = LentDiff {
            s: &mut st.diff,
            patch,
        };
        let mut extra = Lent {
            s: &mut st.extra,
            patch,
        };
        let readers: [(&mut dyn Read, Stream); 3] = [
            (&mut ctrl, Stream::Control),
            (&mut diff, Stream::Diff),
            (&mut extra, Stream::Extra),
        ];
        for (r, s) in readers {
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
        let digest = Sha256Digest(std::mem::take(&mut self.hash).finalize().into());
        if digest != self.target.sha256 {
            return Err(DeltaError::TargetHashMismatch);
        }
        Ok(ApplyStep::Done(ApplyReport {
            written: self.written,
            sha256: digest,
            controls: st.controls,
            source_read: st.source_read,
        }))
    }
}

/// Bytes of control stream that may follow the last control once the output
/// is complete (after checking the container's declared stream lengths).
fn drain_length(st: &Streams) -> Result<u64, DeltaError> {
    // Every stream must end exactly here: a patch whose tail is missing or
    // damaged is refused even when the bytes produced so far are right.
    match st.header.raw_lengths {
        Some(raw) => {
            // The container declares its stream lengths: they must match.
            if st.diff_total != raw[1] || st.extra_total != raw[2] {
                return Err(DeltaError::Corrupt("stream lengths differ from the header"));
            }
            raw[0]
                .checked_sub(st.controls * CONTROL_LEN)
                .ok_or(DeltaError::Corrupt(
                    "more controls than the header declares",
                ))
        }
        // BSDIFF40 (qbsdiff) may end with pure seek controls; allow a bounded
        // number of them.
        None => Ok(MAX_TRAILING_CONTROLS * CONTROL_LEN),
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
/// This is [`PatchApplication`] stepped to the end in one call; use that type
/// to spread the work over several calls.
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
    let mut app = PatchApplication::new(format, source, *source_sha256, patch, *target, *limits);
    loop {
        if let ApplyStep::Done(report) = app.step(out, u64::MAX)? {
            return Ok(report);
        }
    }
}

#[cfg(test)]
mod tests {
    use esync_proto::message::FailureCode;

    use super::*;

    /// An image whose every read fails: a step that reads it fails with
    /// `SourceRead`.
    struct Unreadable;

    impl SourceImage for Unreadable {
        fn len(&self) -> u64 {
            16
        }
        fn read_exact_at(&self, _: u64, _: &mut [u8]) -> io::Result<()> {
            Err(io::Error::other("must not be read"))
        }
    }

    /// A format whose codec is not built (features `apply-zstd`,
    /// `apply-xz`, `apply-bzip2`) is refused by the first step, before the
    /// source is read; a built one starts by reading the source.
    #[test]
    fn formats_not_built_are_refused_before_reading() {
        let all = [
            PatchFormat::BsdiffZstd,
            PatchFormat::BsdiffXz,
            PatchFormat::Bsdiff40,
        ];
        for format in all {
            let target = TargetSpec {
                length: 1,
                sha256: Sha256Digest([0; 32]),
            };
            let mut st = PatchApplicationState::new(
                format,
                Sha256Digest([0; 32]),
                target,
                ApplyLimits::default(),
            );
            let r = st.step(&Unreadable, &Unreadable, &mut Vec::new(), 1024);
            if APPLY_FORMATS.contains(&format) {
                assert!(
                    matches!(r, Err(DeltaError::SourceRead(_))),
                    "{format:?}: {r:?}"
                );
            } else {
                let e = r.unwrap_err();
                assert!(
                    matches!(e, DeltaError::UnsupportedFormat(f) if f == format),
                    "{format:?}: {e:?}"
                );
                assert_eq!(e.failure_code(), FailureCode::UnsupportedFormat);
            }
            // Whatever the verdict, the application has ended.
            assert!(matches!(
                st.step(&Unreadable, &Unreadable, &mut Vec::new(), 1024),
                Err(DeltaError::Ended)
            ));
        }
        let every = cfg!(all(
            feature = "apply-zstd",
            feature = "apply-xz",
            feature = "apply-bzip2"
        ));
        assert_eq!(APPLY_FORMATS.len() == all.len(), every);
        assert_eq!(
            APPLY_FORMATS.contains(&PatchFormat::BsdiffZstd),
            cfg!(feature = "apply-zstd")
        );
    }
}
