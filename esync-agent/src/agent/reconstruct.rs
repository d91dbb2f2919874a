//! Delta reconstruction through the host's patch applier, reading the running
//! image and the staged patch from the device.

use core::cell::{Cell, RefCell};

use esync_proto::id::Sha256Digest;
use esync_proto::message::{ErrorClass, Failure, FailureCode};
use sha2::Digest as _;

use crate::device::Device;
use crate::error::AgentError;
use crate::patch::{ExpectedImage, ImageRead, ImageSink, PatchError};
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

/// Hashes (and optionally writes to the inactive slot) what the applier
/// produces, refusing output past the expected length.
struct CheckedSink<'d, 'a> {
    dev: Option<&'d RefCell<&'a mut dyn Device>>,
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
        if let Some(dev) = self.dev {
            dev.borrow_mut()
                .slot_write(self.written, data)
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
    /// Runs the patch applier from the running image and the staged patch,
    /// into the inactive slot (`write`) or into a hash only.
    #[allow(
        clippy::too_many_arguments,
        reason = "internal helper; the pieces of one delta"
    )]
    pub(super) fn apply_delta(
        &self,
        format: esync_proto::message::PatchFormat,
        source_len: u64,
        source_sha256: Sha256Digest,
        patch_len: u64,
        target: &DirectedTarget,
        write: bool,
        ctx: &mut Context<'_>,
    ) -> Result<(), StepError> {
        let power_lost = Cell::new(false);
        let patcher = ctx.patcher;
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
            dev: write.then_some(&cell),
            hasher: sha2::Sha256::new(),
            written: 0,
            max: target.length,
            power_lost: &power_lost,
        };
        let expected = ExpectedImage {
            len: target.length,
            sha256: target.sha256,
        };
        let r = patcher.apply(
            format,
            &source,
            &source_sha256,
            &patch,
            expected,
            &mut sink,
            self.config.max_patch_memory,
        );
        if power_lost.get() || matches!(r, Err(PatchError::PowerLoss)) {
            return Err(AgentError::PowerLoss("patch").into());
        }
        r.map_err(|e| patch_failure(&e))?;
        let got = Sha256Digest(sink.hasher.finalize().into());
        if sink.written != target.length || got != target.sha256 {
            return Err(failure(
                ErrorClass::UpdateIncapable,
                FailureCode::HashMismatch,
                "reconstructed image does not match the verified metadata",
            )
            .into());
        }
        Ok(())
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
