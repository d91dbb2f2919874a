//! Delta patches: formats and the application interface (always), device-side
//! application (features `apply` = `apply-zstd` + `apply-xz` + `apply-bzip2`), and (feature `generate`) server-side
//! generation and caching.
//!
//! See the crate documentation for the container format and the memory bound.

#[cfg(feature = "applier")]
mod apply;
#[cfg(feature = "generate")]
pub mod cache;
pub mod format;
#[cfg(feature = "generate")]
pub mod generate;
pub mod zero_run;

use std::io;

use esync_proto::id::Sha256Digest;
use esync_proto::message::{FailureCode, PatchFormat};
use thiserror::Error;

#[cfg(feature = "applier")]
pub use apply::{apply_patch, ApplyStep, PatchApplication, PatchApplicationState};

/// The patch formats this build's applier decodes, in the order an Agent
/// prefers them (zstd is the cheapest to decode): one per enabled codec
/// feature (`apply-zstd`, `apply-xz`, `apply-bzip2`; empty without an
/// applier). An Agent advertises exactly these.
pub const APPLY_FORMATS: &[PatchFormat] = &[
    #[cfg(feature = "apply-zstd")]
    PatchFormat::BsdiffZstd,
    #[cfg(feature = "apply-xz")]
    PatchFormat::BsdiffXz,
    #[cfg(feature = "apply-bzip2")]
    PatchFormat::Bsdiff40,
];

/// Random-access, read-only bytes: the installed (source) image, or a stored
/// patch. Reads are positioned, so the applier never needs the whole image in
/// RAM and never maps it.
pub trait SourceImage {
    /// Total length in bytes.
    fn len(&self) -> u64;

    /// Whether the image is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` with the bytes at `offset..offset + buf.len()`. The range is
    /// always inside `0..len()` when called by this crate; a short read is an
    /// error (`UnexpectedEof`).
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl SourceImage for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .filter(|e| *e <= <[u8]>::len(self))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(&self[start..end]);
        Ok(())
    }
}

impl<T: SourceImage + ?Sized> SourceImage for &T {
    fn len(&self) -> u64 {
        (**self).len()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_exact_at(offset, buf)
    }
}

impl<T: SourceImage + ?Sized> SourceImage for std::sync::Arc<T> {
    fn len(&self) -> u64 {
        (**self).len()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_exact_at(offset, buf)
    }
}

impl SourceImage for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.as_slice().read_exact_at(offset, buf)
    }
}

/// A file read with positioned reads (`pread`): its pages stay in the page
/// cache, not in the process's resident memory.
#[derive(Debug)]
pub struct FileSource {
    file: std::fs::File,
    len: u64,
}

impl FileSource {
    /// Opens `path` for positioned reads.
    pub fn open(path: impl AsRef<std::path::Path>) -> io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Self { file, len })
    }

    /// Wraps an open file (its length is read now; it must not change).
    pub fn new(file: std::fs::File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self { file, len })
    }
}

impl SourceImage for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    #[cfg(unix)]
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }

    #[cfg(windows)]
    fn read_exact_at(&self, mut offset: u64, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = std::os::windows::fs::FileExt::seek_read(&self.file, buf, offset)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            offset += n as u64;
            buf = &mut buf[n..];
        }
        Ok(())
    }
}

/// Where the reconstructed image goes: the Agent's inactive slot. Output is
/// written strictly sequentially, in pieces of at most [`ApplyLimits::block`]
/// bytes, and never past the declared target length.
pub trait SlotWriter {
    /// Appends `data` to the slot.
    fn write_slot(&mut self, data: &[u8]) -> io::Result<()>;
}

impl<W: io::Write> SlotWriter for W {
    fn write_slot(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_all(data)
    }
}

/// What the result of a patch must be (from signed metadata).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetSpec {
    /// Exact length of the resulting image.
    pub length: u64,
    /// SHA-256 of the resulting image.
    pub sha256: Sha256Digest,
}

/// Bounds on what one application may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApplyLimits {
    /// Largest target image accepted.
    pub max_target_length: u64,
    /// Largest zstd window (as log2) accepted in a `BsdiffZstd` stream.
    pub max_window_log: u32,
    /// Memory limit given to each xz (LZMA2) stream decoder, in bytes.
    pub xz_memlimit: u64,
    /// Size of the working blocks (diff, source and output), in bytes.
    pub block: usize,
}

impl Default for ApplyLimits {
    /// 4 GiB targets, 8 MiB zstd windows (log 23), 9 MiB per xz decoder,
    /// 64 KiB blocks.
    fn default() -> Self {
        Self {
            max_target_length: 4 << 30,
            max_window_log: 23,
            xz_memlimit: 9 << 20,
            block: 64 << 10,
        }
    }
}

/// What an application did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApplyReport {
    /// Bytes written to the slot (equal to the target length).
    pub written: u64,
    /// SHA-256 of what was written (equal to the target digest).
    pub sha256: Sha256Digest,
    /// Number of bsdiff control triples processed.
    pub controls: u64,
    /// Bytes of the source image read while patching (not counting the
    /// initial hash check).
    pub source_read: u64,
}

/// Which of the three bsdiff streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Control triples (add, copy, seek).
    Control,
    /// Byte-wise differences against the source.
    Diff,
    /// New bytes.
    Extra,
}

impl std::fmt::Display for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stream::Control => "control",
            Stream::Diff => "diff",
            Stream::Extra => "extra",
        })
    }
}

/// Why a patch could not be applied. Every failure of a patch to produce the
/// exact target is one of these; there is no partial success.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DeltaError {
    /// The installed image is not the patch's source (checked before anything
    /// is written).
    #[error("source image sha256 does not match the patch's source")]
    SourceMismatch,
    /// Reading the source image failed.
    #[error("reading the source image failed: {0}")]
    SourceRead(#[source] io::Error),
    /// Reading the patch failed.
    #[error("reading the patch failed: {0}")]
    PatchRead(#[source] io::Error),
    /// The patch does not start with the magic of the requested format.
    #[error("patch magic does not match format {0:?}")]
    BadMagic(PatchFormat),
    /// The patch header is inconsistent.
    #[error("patch header invalid: {0}")]
    BadHeader(&'static str),
    /// The patch declares a target length other than the signed one.
    #[error("patch declares target length {declared}, metadata says {expected}")]
    TargetLengthMismatch {
        /// In the patch header.
        declared: u64,
        /// In the signed metadata.
        expected: u64,
    },
    /// A limit was exceeded.
    #[error("{what} {got} exceeds the limit {limit}")]
    LimitExceeded {
        /// What was too large.
        what: &'static str,
        /// The limit.
        limit: u64,
        /// The value found.
        got: u64,
    },
    /// A stream ended before the patch was complete.
    #[error("patch {0} stream is truncated")]
    Truncated(Stream),
    /// A compressed stream could not be decoded.
    #[error("patch {stream} stream is corrupt: {source}")]
    Decompress {
        /// Which stream.
        stream: Stream,
        /// The decoder's error.
        #[source]
        source: io::Error,
    },
    /// A control triple or stream accounting is invalid.
    #[error("patch is corrupt: {0}")]
    Corrupt(&'static str),
    /// The patch would write more than the declared target length.
    #[error("patch output exceeds the target length {0}")]
    OutputTooLong(u64),
    /// The result does not hash to the signed digest.
    #[error("reconstructed image sha256 does not match the target")]
    TargetHashMismatch,
    /// Writing the slot failed.
    #[error("writing the slot failed: {0}")]
    Write(#[source] io::Error),
    /// The patch format's codec is not built into this applier (see
    /// [`APPLY_FORMATS`]); refused before anything is read.
    #[error("patch format {0:?} is not built into this applier")]
    UnsupportedFormat(PatchFormat),
    /// A step of a patch application (`PatchApplication`, feature `apply`)
    /// that has already finished or failed.
    #[error("the patch application has already ended")]
    Ended,
}

impl DeltaError {
    /// The protocol failure code to report for this error.
    pub fn failure_code(&self) -> FailureCode {
        match self {
            DeltaError::SourceMismatch => FailureCode::DeltaSourceMismatch,
            DeltaError::SourceRead(_) | DeltaError::Ended => FailureCode::Internal,
            DeltaError::Write(_) => FailureCode::WriteFailed,
            DeltaError::LimitExceeded { .. } => FailureCode::InsufficientResources,
            DeltaError::TargetHashMismatch => FailureCode::HashMismatch,
            DeltaError::TargetLengthMismatch { .. } => FailureCode::LengthMismatch,
            DeltaError::UnsupportedFormat(_) => FailureCode::UnsupportedFormat,
            DeltaError::PatchRead(_)
            | DeltaError::BadMagic(_)
            | DeltaError::BadHeader(_)
            | DeltaError::Truncated(_)
            | DeltaError::Decompress { .. }
            | DeltaError::Corrupt(_)
            | DeltaError::OutputTooLong(_) => FailureCode::DeltaCorrupt,
        }
    }
}
