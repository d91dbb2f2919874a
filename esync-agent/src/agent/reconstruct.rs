//! Delta reconstruction through the host's patch applier, reading the running
//! image and the staged patch from the device, one bounded step at a time.
//!
//! A [`DeltaRun`] is an application in progress (the applier's
//! [`PatchJob`], the running hash and length of the output); it lives in
//! the Agent's memory between polls and is lent the device for each step.
//! It is never journaled: after a restart the reconstruction begins again
//! (at the next Prepare; or, for a journal of format 1, in the Writing stage
//! with `slot_begin`).

use core::cell::{Cell, RefCell};

use esync_proto::id::Sha256Digest;
use esync_proto::message::{ErrorClass, Failure, FailureCode};
use sha2::Digest as _;

use crate::device::Device;
use crate::error::AgentError;
use crate::patch::{ExpectedImage, ImageRead, ImageSink, PatchError, PatchJob, PatchProgress};
use crate::target::DirectedTarget;

use super::{failure, Agent, Context, StepError};

struct DevRead<'d, 'a> {
    dev: &'d RefCell<&'a mut dyn Device>,
    len: u64,
    staging: bool,
    power_lost: &'d Cell<bool>,
}

impl ImageRead for DevRead<'_, '_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, PatchError> {
        if offset >= self.len {
            return Ok(0);
        }
        let max = usize::try_from(self.len - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let d = self.dev.borrow();
        let r = if self.staging {
            d.staging_read(offset, &mut buf[..max])
        } else {
            d.read_running(offset, &mut buf[..max])
        };
        r.map_err(|e| {
            if e.is_power_loss() {
                self.power_lost.set(true);
                PatchError::PowerLoss
            } else {
                PatchError::Io(e.to_string())
            }
        })
    }
}

/// One delta reconstruction in progress.
#[derive(Debug)]
pub(super) struct DeltaRun {
    job: Box<dyn PatchJob>,
    hasher: sha2::Sha256,
    written: u64,
}

impl DeltaRun {
    /// Bytes of output so far.
    pub(super) fn written(&self) -> u64 {
        self.written
    }
}

/// Where a reconstruction writes the image.
#[derive(Clone, Copy, Debug)]
pub(super) enum Dest {
    /// Into staging from this offset (after the patch): Prepare.
    Staging {
        /// Staging offset of the image's first byte.
        offset: u64,
    },
    /// Into the inactive slot (an Install from a format-1 journal, whose
    /// Prepare did not keep the image).
    Slot,
}

/// Writes what the applier produces to its destination and hashes it,
/// refusing output past the expected length.
struct CheckedSink<'d, 'a> {
    dev: &'d RefCell<&'a mut dyn Device>,
    dest: Dest,
    hasher: sha2::Sha256,
    written: u64,
    max: u64,
    power_lost: &'d Cell<bool>,
}

impl ImageSink for CheckedSink<'_, '_> {
    fn write(&mut self, data: &[u8]) -> Result<(), PatchError> {
        let end = self.written.saturating_add(data.len() as u64);
        if end > self.max {
            return Err(PatchError::TooLong(self.max));
        }
        {
            let mut d = self.dev.borrow_mut();
            match self.dest {
                Dest::Staging { offset } => {
                    d.staging_write(offset.saturating_add(self.written), data)
                }
                Dest::Slot => d.slot_write(self.written, data),
            }
            .map_err(|e| {
                if e.is_power_loss() {
                    self.power_lost.set(true);
                    PatchError::PowerLoss
                } else {
                    PatchError::Io(e.to_string())
                }
            })?;
        }
        self.hasher.update(data);
        self.written = end;
        Ok(())
    }
}

fn patch_failure(e: &PatchError) -> Failure {
    match e {
        PatchError::UnsupportedFormat(_) => failure(
            ErrorClass::UpdateIncapable,
            FailureCode::UnsupportedFormat,
            e.to_string(),
        ),
        PatchError::Corrupt(_) => failure(
            ErrorClass::UpdateIncapable,
            FailureCode::DeltaCorrupt,
            e.to_string(),
        ),
        PatchError::Memory(_) => failure(
            ErrorClass::UpdateIncapable,
            FailureCode::InsufficientResources,
            e.to_string(),
        ),
        PatchError::TooLong(_) => failure(
            ErrorClass::UpdateIncapable,
            FailureCode::LengthMismatch,
            e.to_string(),
        ),
        PatchError::SourceMismatch => failure(
            ErrorClass::UpdateIncapable,
            FailureCode::DeltaSourceMismatch,
            e.to_string(),
        ),
        PatchError::OutputMismatch => failure(
            ErrorClass::UpdateIncapable,
            FailureCode::HashMismatch,
            e.to_string(),
        ),
        _ => failure(
            ErrorClass::Retryable,
            FailureCode::WriteFailed,
            e.to_string(),
        ),
    }
}

impl Agent {
    /// Begins a reconstruction of `target` with the host's applier.
    pub(super) fn begin_delta(
        &self,
        format: esync_proto::message::PatchFormat,
        source_sha256: Sha256Digest,
        target: &DirectedTarget,
        ctx: &Context<'_>,
    ) -> Result<DeltaRun, StepError> {
        let expected = ExpectedImage {
            len: target.length,
            sha256: target.sha256,
        };
        let job = ctx
            .patcher
            .begin(
                format,
                &source_sha256,
                expected,
                self.config.max_patch_memory,
            )
            .map_err(|e| patch_failure(&e))?;
        Ok(DeltaRun {
            job,
            hasher: sha2::Sha256::new(),
            written: 0,
        })
    }

    /// Runs one step of `run` (at most `budget` bytes of work plus one block
    /// of the applier) from the running image and the staged patch, into the
    /// destination `dest`. `Ok(true)` when the
    /// output is complete and has the target's length and SHA-256.
    #[allow(
        clippy::too_many_arguments,
        reason = "internal helper; the pieces of one delta step"
    )]
    pub(super) fn step_delta(
        &self,
        run: &mut DeltaRun,
        source_len: u64,
        patch_len: u64,
        target: &DirectedTarget,
        dest: Dest,
        budget: u64,
        ctx: &mut Context<'_>,
    ) -> Result<bool, StepError> {
        let power_lost = Cell::new(false);
        let cell: RefCell<&mut dyn Device> = RefCell::new(&mut *ctx.device);
        let source = DevRead {
            dev: &cell,
            len: source_len,
            staging: false,
            power_lost: &power_lost,
        };
        let patch = DevRead {
            dev: &cell,
            len: patch_len,
            staging: true,
            power_lost: &power_lost,
        };
        let mut sink = CheckedSink {
            dev: &cell,
            dest,
            hasher: core::mem::take(&mut run.hasher),
            written: run.written,
            max: target.length,
            power_lost: &power_lost,
        };
        let r = run.job.step(&source, &patch, &mut sink, budget);
        run.hasher = sink.hasher;
        run.written = sink.written;
        if power_lost.get() || matches!(r, Err(PatchError::PowerLoss)) {
            return Err(AgentError::PowerLoss("patch").into());
        }
        match r.map_err(|e| patch_failure(&e))? {
            PatchProgress::Pending { .. } => Ok(false),
            PatchProgress::Done => {
                let got = Sha256Digest(core::mem::take(&mut run.hasher).finalize().into());
                if run.written != target.length || got != target.sha256 {
                    return Err(failure(
                        ErrorClass::UpdateIncapable,
                        FailureCode::HashMismatch,
                        "reconstructed image does not match the verified metadata",
                    )
                    .into());
                }
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_source_is_reported_as_such_not_as_a_bad_hash() {
        let f = patch_failure(&PatchError::SourceMismatch);
        assert_eq!(f.code, FailureCode::DeltaSourceMismatch);
        assert_eq!(f.class, ErrorClass::UpdateIncapable);
        let f = patch_failure(&PatchError::OutputMismatch);
        assert_eq!(f.code, FailureCode::HashMismatch);
        assert_eq!(f.class, ErrorClass::UpdateIncapable);
    }
}
