//! Boot control shared by the reference devices: which slot runs, what each
//! slot holds, whether the running slot is on trial, and the backups.
//!
//! It is one small sealed record written atomically, so every switch of the
//! running image is a single atomic step.

use esync_proto::message::InstalledImage;
use serde::{Deserialize, Serialize};

use super::DeviceError;
use crate::seal;

/// Magic of the boot-control record.
pub const BOOT_MAGIC: &[u8; 4] = b"ESBC";
/// Largest boot-control record accepted.
pub const MAX_BOOT_RECORD: usize = 64 * 1024;
/// Restarts a trial image survives before the bootloader falls back: the
/// first restart after activation boots the trial again, the second falls
/// back to the previous slot.
pub const TRIAL_BOOTS: u8 = 1;

/// A trial boot in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    /// Slot to fall back to.
    pub previous: u8,
    /// Restarts left before falling back.
    pub boots_left: u8,
}

/// The boot-control record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootControl {
    /// Running slot (0 = A, 1 = B).
    pub active: u8,
    /// What each slot holds; `None` while it is being written or invalid.
    pub slots: [Option<InstalledImage>; 2],
    /// Set while the running slot is on trial.
    pub trial: Option<Trial>,
    /// Backup images, most recent first.
    pub backups: Vec<InstalledImage>,
}

impl BootControl {
    /// A device running `image` in slot A, slot B empty.
    pub fn new(image: InstalledImage) -> Self {
        BootControl {
            active: 0,
            slots: [Some(image), None],
            trial: None,
            backups: Vec::new(),
        }
    }

    /// The inactive slot.
    pub fn inactive_slot(&self) -> u8 {
        1 - (self.active & 1)
    }

    /// The running image.
    pub fn running(&self) -> Result<InstalledImage, DeviceError> {
        self.slots[usize::from(self.active & 1)]
            .clone()
            .ok_or_else(|| DeviceError::Failed {
                op: "running",
                reason: "active slot has no valid image".into(),
            })
    }

    /// The bootloader's decision at power-on: a trial image boots again
    /// while it has boots left, then the previous slot runs.
    pub fn on_boot(&mut self) {
        if let Some(t) = &mut self.trial {
            if t.boots_left > 0 {
                t.boots_left -= 1;
            } else {
                self.active = t.previous & 1;
                self.trial = None;
            }
        }
    }

    /// Activates the inactive slot on trial.
    pub fn activate(&mut self) -> Result<(), DeviceError> {
        let inactive = self.inactive_slot();
        if self.slots[usize::from(inactive)].is_none() {
            return Err(DeviceError::Refused {
                op: "activate",
                reason: "inactive slot holds no complete image".into(),
            });
        }
        self.trial = Some(Trial {
            previous: self.active,
            boots_left: TRIAL_BOOTS,
        });
        self.active = inactive;
        Ok(())
    }

    /// Switches to the other slot, committed.
    pub fn rollback_previous(&mut self) -> Result<(), DeviceError> {
        let other = self.inactive_slot();
        if self.slots[usize::from(other)].is_none() {
            return Err(DeviceError::Refused {
                op: "rollback",
                reason: "previous slot holds no complete image".into(),
            });
        }
        self.active = other;
        self.trial = None;
        Ok(())
    }

    /// Encodes the record.
    pub fn encode(&self) -> Result<Vec<u8>, DeviceError> {
        seal::seal(BOOT_MAGIC, self).map_err(|e| DeviceError::Failed {
            op: "boot control",
            reason: e.to_string(),
        })
    }

    /// Decodes the record.
    pub fn decode(bytes: &[u8]) -> Result<Self, DeviceError> {
        seal::open("boot control", BOOT_MAGIC, bytes, MAX_BOOT_RECORD).map_err(|e| {
            DeviceError::Failed {
                op: "boot control",
                reason: e.to_string(),
            }
        })
    }
}
