//! The device an Agent updates, as a trait the host implements, and two
//! reference implementations: an A/B device backed by files (`file`, feature
//! `file-device`) and an in-memory one for tests ([`mem`]), plus fault
//! injection for both (`crate::fault`, feature `fault`).
//!
//! # Contract
//!
//! The device has a **running** image (the active slot), an **inactive
//! slot** the Agent writes the new image into, and a **staging area** that
//! holds the transferred bytes (a full image, or a patch followed by the
//! image Prepare reconstructs from it, sized from the signed target length,
//! so a delta is reconstructed once and Install only copies). Every mutating
//! operation must be safe to repeat after a power loss:
//!
//! - [`Device::slot_begin`] durably invalidates the inactive slot *before*
//!   anything is written to it, and [`Device::slot_finish`] durably records
//!   its image description only after its data is synced. A slot whose
//!   description is missing is never activated, so a half-written image is
//!   never run.
//! - [`Device::activate`] switches the boot target to the inactive slot **on
//!   trial**: until [`Device::commit`], a restart that finds the trial
//!   exhausted boots the previous slot again (the bootloader's fallback).
//! - [`Device::rollback_previous`] and [`Device::restore_backup`] switch the
//!   running image with one atomic boot-control write after the slot data is
//!   in place.
//!
//! `activate`, `rollback_previous` and `restore_backup` return once the
//! selected image runs. On a real ECU that means a reboot: the host restarts
//! the Agent with [`crate::Agent::recover`] from its journal, which resumes
//! at the right step whether the call returned or not.

pub mod boot;
#[cfg(feature = "file-device")]
pub mod file;
pub mod mem;

use esync_proto::id::{Sha256Digest, SoftwareVersion};
use esync_proto::message::{InstalledImage, Signal};
use thiserror::Error;

/// A device operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// Power was lost during the operation: the Agent must stop at once and
    /// recover from its journal after the restart.
    #[error("power lost during {0}")]
    PowerLoss(&'static str),
    /// The operation failed (I/O error, flash error); it may succeed later.
    #[error("{op} failed: {reason}")]
    Failed {
        /// Which operation.
        op: &'static str,
        /// Why.
        reason: String,
    },
    /// The request is not valid for the device's state (no valid image in
    /// the inactive slot, unknown backup, out-of-range offset).
    #[error("{op} refused: {reason}")]
    Refused {
        /// Which operation.
        op: &'static str,
        /// Why.
        reason: String,
    },
    /// The staging area or slot is too small.
    #[error("{what} holds at most {capacity} bytes, {needed} needed")]
    NoSpace {
        /// Which storage.
        what: &'static str,
        /// Its capacity.
        capacity: u64,
        /// What was asked.
        needed: u64,
    },
}

impl DeviceError {
    /// Whether this is a power loss (the Agent must halt).
    pub fn is_power_loss(&self) -> bool {
        matches!(self, DeviceError::PowerLoss(_))
    }
}

/// Result of a self-test of the running image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelfTest {
    /// The image works.
    Passed,
    /// The image does not work, with a reason for the report.
    Failed(String),
}

/// The device as the Agent sees it. See the module docs for the contract.
pub trait Device {
    /// Description of the running image.
    fn running(&self) -> Result<InstalledImage, DeviceError>;
    /// Reads the running image at `offset`; returns the bytes read (0 at the end).
    fn read_running(&self, offset: u64, buf: &mut [u8]) -> Result<usize, DeviceError>;

    /// Capacity of the staging area in bytes.
    fn staging_capacity(&self) -> u64;
    /// Empties the staging area and sizes it for `len` bytes. For a full
    /// image `len` is the image's length; for a delta it is the patch's
    /// length plus the signed target length, because Prepare reconstructs
    /// the image into staging right after the patch (writes up to `len`
    /// must succeed).
    fn staging_reset(&mut self, len: u64) -> Result<(), DeviceError>;
    /// Writes staged bytes at `offset` (durable when it returns).
    fn staging_write(&mut self, offset: u64, data: &[u8]) -> Result<(), DeviceError>;
    /// Reads staged bytes at `offset`.
    fn staging_read(&self, offset: u64, buf: &mut [u8]) -> Result<usize, DeviceError>;

    /// Pre-install steps (e.g. stop the function, unlock flash).
    fn pre_install(&mut self) -> Result<(), DeviceError>;
    /// Durably invalidates the inactive slot and prepares it for `len` bytes.
    fn slot_begin(&mut self, len: u64) -> Result<(), DeviceError>;
    /// Writes the inactive slot at `offset`.
    fn slot_write(&mut self, offset: u64, data: &[u8]) -> Result<(), DeviceError>;
    /// Reads the inactive slot at `offset`.
    fn slot_read(&self, offset: u64, buf: &mut [u8]) -> Result<usize, DeviceError>;
    /// Syncs the inactive slot and durably records what it now holds.
    fn slot_finish(&mut self, image: &InstalledImage) -> Result<(), DeviceError>;
    /// Description of the inactive slot's image, if it holds a complete one.
    fn inactive(&self) -> Result<Option<InstalledImage>, DeviceError>;

    /// Boots the inactive slot on trial (see the module docs).
    fn activate(&mut self) -> Result<(), DeviceError>;
    /// Self-tests the running image.
    fn self_test(&mut self) -> Result<SelfTest, DeviceError>;
    /// Makes the running trial image permanent. Idempotent.
    fn commit(&mut self) -> Result<(), DeviceError>;
    /// Whether the running image is on trial (activated, not committed).
    fn on_trial(&self) -> Result<bool, DeviceError>;
    /// Switches back to the other slot, if it holds a complete image.
    fn rollback_previous(&mut self) -> Result<(), DeviceError>;
    /// Backup versions available, most recent first.
    fn backups(&self) -> Result<Vec<InstalledImage>, DeviceError>;
    /// Restores a backup into the inactive slot and boots it (committed).
    fn restore_backup(&mut self, version: &SoftwareVersion) -> Result<(), DeviceError>;

    /// Vehicle signals the Agent may check itself (speed, gear, battery...).
    fn signals(&self) -> Result<Vec<Signal>, DeviceError>;
}

/// SHA-256 of `len` bytes read through `read`, in `buf`-sized pieces.
pub fn hash_with(
    len: u64,
    buf: &mut [u8],
    mut read: impl FnMut(u64, &mut [u8]) -> Result<usize, DeviceError>,
) -> Result<Sha256Digest, DeviceError> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    let mut off = 0u64;
    while off < len {
        let want = usize::try_from((len - off).min(buf.len() as u64)).unwrap_or(buf.len());
        let n = read(off, &mut buf[..want])?;
        if n == 0 {
            return Err(DeviceError::Failed {
                op: "read",
                reason: format!("short read at {off} of {len}"),
            });
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(Sha256Digest(h.finalize().into()))
}

/// SHA-256 of a byte slice.
pub fn sha256(data: &[u8]) -> Sha256Digest {
    use sha2::Digest as _;
    Sha256Digest(sha2::Sha256::digest(data).into())
}
