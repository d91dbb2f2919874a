//! [`PatchApplier`] backed by `esync-package`'s bounded-memory bsdiff-family
//! applier (classic `BSDIFF40`, bsdiff with zstd streams, bsdiff with xz
//! streams). Feature `delta` (on by default).

use std::io;

use esync_package::delta::{
    ApplyLimits, ApplyStep, DeltaError, PatchApplicationState, SlotWriter, SourceImage, TargetSpec,
};
use esync_proto::id::Sha256Digest;
use esync_proto::message::PatchFormat;

use crate::patch::{
    ExpectedImage, ImageRead, ImageSink, PatchApplier, PatchError, PatchJob, PatchProgress,
};

/// Applies patches with [`esync_package::delta::PatchApplicationState`],
/// one bounded step at a time.
#[derive(Clone, Copy, Debug, Default)]
pub struct PackageApplier;

struct Src<'a>(&'a dyn ImageRead);

impl SourceImage for Src<'_> {
    fn len(&self) -> u64 {
        self.0.len()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self
                .0
                .read_at(offset + done as u64, &mut buf[done..])
                .map_err(io::Error::other)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
        Ok(())
    }
}

struct Sink<'a>(&'a mut dyn ImageSink);

impl SlotWriter for Sink<'_> {
    fn write_slot(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write(data).map_err(io::Error::other)
    }
}

/// A [`PatchJob`] over esync-package's reader-free application state.
#[derive(Debug)]
struct PackageJob(PatchApplicationState);

impl PatchJob for PackageJob {
    fn step(
        &mut self,
        source: &dyn ImageRead,
        patch: &dyn ImageRead,
        out: &mut dyn ImageSink,
        budget: u64,
    ) -> Result<PatchProgress, PatchError> {
        match self
            .0
            .step(&Src(source), &Src(patch), &mut Sink(out), budget)
            .map_err(map)?
        {
            ApplyStep::Pending { written, total } => Ok(PatchProgress::Pending { written, total }),
            ApplyStep::Done(_) => Ok(PatchProgress::Done),
        }
    }
}

/// The applier limits for `max_memory` bytes of patch memory: the zstd
/// window is at most half of it (as log2, 10..=27), each xz decoder's memory
/// limit is half of it, blocks are 16 KiB (two are resident: the source
/// block and the output block; larger blocks only save read calls). (Only
/// one large stream window is resident at a time in practice; see
/// esync-package's memory bound.)
pub fn limits_for(max_memory: u64, max_target: u64) -> ApplyLimits {
    let half = (max_memory / 2).max(1024);
    let window_log = (63 - half.leading_zeros()).clamp(10, 27);
    ApplyLimits {
        max_target_length: max_target,
        max_window_log: window_log,
        xz_memlimit: half,
        block: 16 << 10,
    }
}

fn map(e: DeltaError) -> PatchError {
    match e {
        DeltaError::SourceMismatch => PatchError::SourceMismatch,
        DeltaError::LimitExceeded { limit, .. } => PatchError::Memory(limit),
        DeltaError::OutputTooLong(n) => PatchError::TooLong(n),
        DeltaError::TargetHashMismatch => PatchError::OutputMismatch,
        DeltaError::SourceRead(e) | DeltaError::Write(e) => PatchError::Io(e.to_string()),
        other => PatchError::Corrupt(other.to_string()),
    }
}

impl PatchApplier for PackageApplier {
    fn formats(&self) -> Vec<PatchFormat> {
        esync_package::delta::APPLY_FORMATS.to_vec()
    }

    fn begin(
        &self,
        format: PatchFormat,
        source_sha256: &Sha256Digest,
        expected: ExpectedImage,
        max_memory: u64,
    ) -> Result<Box<dyn PatchJob>, PatchError> {
        let target = TargetSpec {
            length: expected.len,
            sha256: expected.sha256,
        };
        let limits = limits_for(max_memory, expected.len);
        Ok(Box::new(PackageJob(PatchApplicationState::new(
            format,
            *source_sha256,
            target,
            limits,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatches_map_to_typed_variants() {
        assert_eq!(map(DeltaError::SourceMismatch), PatchError::SourceMismatch);
        assert_eq!(
            map(DeltaError::TargetHashMismatch),
            PatchError::OutputMismatch
        );
    }
}
