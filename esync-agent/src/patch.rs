//! Delta reconstruction, behind a trait.
//!
//! The Agent reads the source (its installed image) and the patch (the
//! staged transfer) through positioned reads and streams the output to a
//! sink, so neither is copied whole into RAM by the core. The core checks the
//! source's SHA-256 before starting an application and the output's length
//! and SHA-256 after; implementations must also refuse output longer than
//! `expected.len`.
//!
//! An application is a [`PatchJob`] ([`PatchApplier::begin`]) stepped a
//! bounded amount of work at a time: the job holds only decoder state, and
//! every [`PatchJob::step`] is lent the source, the patch and the sink for
//! that call, so the Agent keeps the job between two `poll`s while it
//! borrows the device for one call only. [`PatchApplier::apply`] steps a job
//! to the end in one call.

use esync_proto::id::Sha256Digest;
use esync_proto::message::PatchFormat;
use thiserror::Error;

/// Positioned read access to an image (source image or staged patch).
pub trait ImageRead {
    /// Length in bytes.
    fn len(&self) -> u64;

    /// Whether the image is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read
    /// (0 only at or past the end).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, PatchError>;
}

/// Where reconstructed bytes go, in order.
pub trait ImageSink {
    /// Appends `data`.
    fn write(&mut self, data: &[u8]) -> Result<(), PatchError>;
}

/// Applying a patch failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PatchError {
    /// The format is not supported by this applier.
    #[error("patch format {0:?} not supported")]
    UnsupportedFormat(PatchFormat),
    /// The patch is malformed or truncated.
    #[error("corrupt patch: {0}")]
    Corrupt(String),
    /// The patch needs more memory than allowed.
    #[error("patch needs more than {0} bytes of memory")]
    Memory(u64),
    /// The output would exceed the expected length.
    #[error("patch output exceeds the expected {0} bytes")]
    TooLong(u64),
    /// The source image is not the patch's source (the applier checked
    /// it against the patch's own record of its source).
    #[error("source image is not the patch's source")]
    SourceMismatch,
    /// The output does not match the expected length or hash.
    #[error("patch output does not match the expected image")]
    OutputMismatch,
    /// Reading the source or patch, or writing the output, failed.
    #[error("patch I/O: {0}")]
    Io(String),
    /// Power was lost while patching (fault injection or a host signal).
    #[error("power lost during patching")]
    PowerLoss,
}

/// What the expected output is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectedImage {
    /// Length in bytes.
    pub len: u64,
    /// SHA-256.
    pub sha256: Sha256Digest,
}

/// Progress of a [`PatchJob`] after one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum PatchProgress {
    /// More steps are needed.
    Pending {
        /// Bytes written to the sink so far.
        written: u64,
        /// Bytes the complete output will have.
        total: u64,
    },
    /// The output is complete (and was checked by the job).
    Done,
}

/// One patch application in progress. It holds no reader: every step is
/// given the source, the patch (the same bytes at every step) and the sink,
/// and continues writing where the previous step stopped. An error ends the
/// job. It cannot be persisted; after a restart the Agent begins a new one.
pub trait PatchJob: Send + core::fmt::Debug {
    /// Does at most `budget` bytes of work (source bytes hashed or read,
    /// bytes written, control bytes decoded) plus one internal block of the
    /// implementation, and says whether the output is complete.
    fn step(
        &mut self,
        source: &dyn ImageRead,
        patch: &dyn ImageRead,
        out: &mut dyn ImageSink,
        budget: u64,
    ) -> Result<PatchProgress, PatchError>;
}

/// Reconstructs an image from a source image and a patch.
pub trait PatchApplier {
    /// Formats this applier supports, most preferred first (advertised in
    /// the inventory).
    fn formats(&self) -> Vec<PatchFormat>;

    /// Begins applying a patch in `format` to a source whose SHA-256 the
    /// Agent checked to be `source_sha256`, to produce `expected`, using at
    /// most `max_memory` bytes of working memory. Reads nothing; the
    /// returned job must refuse output longer than `expected.len` and should
    /// check `expected.sha256`.
    fn begin(
        &self,
        format: PatchFormat,
        source_sha256: &Sha256Digest,
        expected: ExpectedImage,
        max_memory: u64,
    ) -> Result<Box<dyn PatchJob>, PatchError>;

    /// Applies `patch` (in `format`) to `source` (whose SHA-256 the Agent
    /// checked to be `source_sha256`), streaming the result to `out`, using
    /// at most `max_memory` bytes of working memory. Must refuse output
    /// longer than `expected.len`; should check `expected.sha256`. A job
    /// from [`begin`](Self::begin) stepped to the end in one call.
    #[allow(
        clippy::too_many_arguments,
        reason = "mirrors the applier's inputs one to one"
    )]
    fn apply(
        &self,
        format: PatchFormat,
        source: &dyn ImageRead,
        source_sha256: &Sha256Digest,
        patch: &dyn ImageRead,
        expected: ExpectedImage,
        out: &mut dyn ImageSink,
        max_memory: u64,
    ) -> Result<(), PatchError> {
        let mut job = self.begin(format, source_sha256, expected, max_memory)?;
        loop {
            if job.step(source, patch, out, u64::MAX)? == PatchProgress::Done {
                return Ok(());
            }
        }
    }
}

/// An applier for Agents without delta support: every format is refused,
/// and the Agent advertises no patch formats (the Server then sends full
/// images).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDeltas;

impl PatchApplier for NoDeltas {
    fn formats(&self) -> Vec<PatchFormat> {
        Vec::new()
    }

    fn begin(
        &self,
        format: PatchFormat,
        _source_sha256: &Sha256Digest,
        _expected: ExpectedImage,
        _max_memory: u64,
    ) -> Result<Box<dyn PatchJob>, PatchError> {
        Err(PatchError::UnsupportedFormat(format))
    }
}
