//! An in-memory A/B device for tests and benchmarks.
//!
//! Its fields play the part of flash: they survive when the Agent (all its
//! in-memory state) is dropped, and [`MemDevice::power_cycle`] runs the
//! bootloader's decision as a restart would. Wrap it in `FaultyDevice`
//! (`crate::fault`, feature `fault`) to inject failures and power cuts at
//! every operation.

use core::cell::Cell;

use esync_proto::id::SoftwareVersion;
use esync_proto::message::{InstalledImage, Signal};

use super::boot::BootControl;
use super::{sha256, Device, DeviceError, SelfTest};

/// Decides whether a self-test passes.
pub type SelfTestHook = Box<dyn FnMut(&InstalledImage) -> SelfTest + Send>;

/// Counters of the work done, for tests that check work is not redone.
#[derive(Debug, Default)]
pub struct MemStats {
    /// Bytes read from the running image.
    pub running_bytes_read: Cell<u64>,
    /// Bytes read from the staging area.
    pub staging_bytes_read: Cell<u64>,
    /// Bytes written to the staging area.
    pub staging_bytes_written: Cell<u64>,
    /// Self-tests run.
    pub self_tests: Cell<u64>,
    /// Activations.
    pub activations: Cell<u64>,
    /// Bytes written to the inactive slot.
    pub slot_bytes_written: Cell<u64>,
}

/// An in-memory A/B device.
pub struct MemDevice {
    slots: [Vec<u8>; 2],
    staging: Vec<u8>,
    staging_capacity: u64,
    slot_capacity: u64,
    boot: BootControl,
    backup_data: Vec<Vec<u8>>,
    signals: Vec<Signal>,
    self_test: Option<SelfTestHook>,
    /// Work counters.
    pub stats: MemStats,
}

impl core::fmt::Debug for MemDevice {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MemDevice")
            .field("boot", &self.boot)
            .field("staging_len", &self.staging.len())
            .finish_non_exhaustive()
    }
}

fn read_from(data: &[u8], offset: u64, buf: &mut [u8]) -> usize {
    let Ok(off) = usize::try_from(offset) else {
        return 0;
    };
    if off >= data.len() {
        return 0;
    }
    let n = buf.len().min(data.len() - off);
    buf[..n].copy_from_slice(&data[off..off + n]);
    n
}

fn write_into(
    data: &mut Vec<u8>,
    cap: u64,
    what: &'static str,
    offset: u64,
    bytes: &[u8],
) -> Result<(), DeviceError> {
    let end = offset.saturating_add(bytes.len() as u64);
    if end > cap {
        return Err(DeviceError::NoSpace {
            what,
            capacity: cap,
            needed: end,
        });
    }
    let (off, end) = (offset as usize, end as usize);
    if data.len() < end {
        data.resize(end, 0xff);
    }
    data[off..end].copy_from_slice(bytes);
    Ok(())
}

impl MemDevice {
    /// A device running `version` (with `release_counter`) whose image is
    /// `image`, with room for `capacity` bytes per slot and in staging.
    pub fn new(
        version: SoftwareVersion,
        release_counter: u64,
        image: Vec<u8>,
        capacity: u64,
    ) -> Self {
        let desc = InstalledImage {
            version,
            release_counter: esync_proto::id::ReleaseCounter(release_counter),
            length: image.len() as u64,
            sha256: sha256(&image),
        };
        MemDevice {
            slots: [image, Vec::new()],
            staging: Vec::new(),
            staging_capacity: capacity,
            slot_capacity: capacity,
            boot: BootControl::new(desc),
            backup_data: Vec::new(),
            signals: Vec::new(),
            self_test: None,
            stats: MemStats::default(),
        }
    }

    /// Adds a backup image (most recent first order is kept by insertion at the front).
    pub fn add_backup(&mut self, version: SoftwareVersion, release_counter: u64, image: Vec<u8>) {
        let desc = InstalledImage {
            version,
            release_counter: esync_proto::id::ReleaseCounter(release_counter),
            length: image.len() as u64,
            sha256: sha256(&image),
        };
        self.boot.backups.insert(0, desc);
        self.backup_data.insert(0, image);
    }

    /// Flips a byte of backup `index` (simulates a corrupted backup).
    pub fn corrupt_backup(&mut self, index: usize) {
        if let Some(b) = self.backup_data.get_mut(index).and_then(|d| d.first_mut()) {
            *b ^= 0x5a;
        }
    }

    /// Sets the vehicle signals.
    pub fn set_signals(&mut self, signals: Vec<Signal>) {
        self.signals = signals;
    }

    /// Sets the self-test (default: the running image passes when its bytes
    /// hash to its recorded SHA-256).
    pub fn set_self_test(&mut self, hook: SelfTestHook) {
        self.self_test = Some(hook);
    }

    /// A restart: the bootloader's decision (trial boot or fall back).
    pub fn power_cycle(&mut self) {
        self.boot.on_boot();
    }

    /// The boot-control record.
    pub fn boot_control(&self) -> &BootControl {
        &self.boot
    }

    /// The bytes of the running image.
    pub fn running_bytes(&self) -> &[u8] {
        &self.slots[usize::from(self.boot.active & 1)]
    }

    /// Overwrites a byte of the running image without updating its
    /// description (simulates a modified installed image).
    pub fn corrupt_running(&mut self, offset: usize) {
        let a = usize::from(self.boot.active & 1);
        if let Some(b) = self.slots[a].get_mut(offset) {
            *b ^= 0x5a;
        }
    }
}

impl Device for MemDevice {
    fn running(&self) -> Result<InstalledImage, DeviceError> {
        self.boot.running()
    }

    fn read_running(&self, offset: u64, buf: &mut [u8]) -> Result<usize, DeviceError> {
        let running = self.boot.running()?;
        let data = &self.slots[usize::from(self.boot.active & 1)];
        let len = (running.length as usize).min(data.len());
        let n = read_from(&data[..len], offset, buf);
        self.stats
            .running_bytes_read
            .set(self.stats.running_bytes_read.get() + n as u64);
        Ok(n)
    }

    fn staging_capacity(&self) -> u64 {
        self.staging_capacity
    }

    fn staging_reset(&mut self, len: u64) -> Result<(), DeviceError> {
        if len > self.staging_capacity {
            return Err(DeviceError::NoSpace {
                what: "staging",
                capacity: self.staging_capacity,
                needed: len,
            });
        }
        self.staging.clear();
        self.staging.resize(len as usize, 0xff);
        Ok(())
    }

    fn staging_write(&mut self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        let cap = self.staging.len() as u64;
        write_into(&mut self.staging, cap, "staging", offset, data)?;
        let n = self.stats.staging_bytes_written.get() + data.len() as u64;
        self.stats.staging_bytes_written.set(n);
        Ok(())
    }

    fn staging_read(&self, offset: u64, buf: &mut [u8]) -> Result<usize, DeviceError> {
        let n = read_from(&self.staging, offset, buf);
        self.stats
            .staging_bytes_read
            .set(self.stats.staging_bytes_read.get() + n as u64);
        Ok(n)
    }

    fn pre_install(&mut self) -> Result<(), DeviceError> {
        Ok(())
    }

    fn slot_begin(&mut self, len: u64) -> Result<(), DeviceError> {
        if len > self.slot_capacity {
            return Err(DeviceError::NoSpace {
                what: "slot",
                capacity: self.slot_capacity,
                needed: len,
            });
        }
        let i = usize::from(self.boot.inactive_slot());
        self.boot.slots[i] = None;
        self.slots[i].clear();
        Ok(())
    }

    fn slot_write(&mut self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        let i = usize::from(self.boot.inactive_slot());
        if self.boot.slots[i].is_some() {
            return Err(DeviceError::Refused {
                op: "slot write",
                reason: "slot_begin was not called".into(),
            });
        }
        let cap = self.slot_capacity;
        write_into(&mut self.slots[i], cap, "slot", offset, data)?;
        let n = self.stats.slot_bytes_written.get() + data.len() as u64;
        self.stats.slot_bytes_written.set(n);
        Ok(())
    }

    fn slot_read(&self, offset: u64, buf: &mut [u8]) -> Result<usize, DeviceError> {
        let i = usize::from(self.boot.inactive_slot());
        Ok(read_from(&self.slots[i], offset, buf))
    }

    fn slot_finish(&mut self, image: &InstalledImage) -> Result<(), DeviceError> {
        let i = usize::from(self.boot.inactive_slot());
        let data = &mut self.slots[i];
        if (data.len() as u64) < image.length {
            return Err(DeviceError::Refused {
                op: "slot finish",
                reason: "slot shorter than the image".into(),
            });
        }
        data.truncate(image.length as usize);
        self.boot.slots[i] = Some(image.clone());
        Ok(())
    }

    fn inactive(&self) -> Result<Option<InstalledImage>, DeviceError> {
        Ok(self.boot.slots[usize::from(self.boot.inactive_slot())].clone())
    }

    fn activate(&mut self) -> Result<(), DeviceError> {
        self.stats.activations.set(self.stats.activations.get() + 1);
        self.boot.activate()
    }

    fn self_test(&mut self) -> Result<SelfTest, DeviceError> {
        self.stats.self_tests.set(self.stats.self_tests.get() + 1);
        let running = self.boot.running()?;
        if sha256(self.running_bytes()) != running.sha256 {
            return Ok(SelfTest::Failed(
                "running image does not match its hash".into(),
            ));
        }
        Ok(match &mut self.self_test {
            Some(hook) => hook(&running),
            None => SelfTest::Passed,
        })
    }

    fn commit(&mut self) -> Result<(), DeviceError> {
        self.boot.trial = None;
        Ok(())
    }

    fn on_trial(&self) -> Result<bool, DeviceError> {
        Ok(self.boot.trial.is_some())
    }

    fn rollback_previous(&mut self) -> Result<(), DeviceError> {
        self.boot.rollback_previous()
    }

    fn backups(&self) -> Result<Vec<InstalledImage>, DeviceError> {
        Ok(self.boot.backups.clone())
    }

    fn restore_backup(&mut self, version: &SoftwareVersion) -> Result<(), DeviceError> {
        let idx = self
            .boot
            .backups
            .iter()
            .position(|b| &b.version == version)
            .ok_or_else(|| DeviceError::Refused {
                op: "restore backup",
                reason: format!("no backup of version {version}"),
            })?;
        let desc = self.boot.backups[idx].clone();
        let data = self.backup_data[idx].clone();
        if sha256(&data) != desc.sha256 {
            return Err(DeviceError::Failed {
                op: "restore backup",
                reason: format!("backup {version} is corrupt"),
            });
        }
        let i = usize::from(self.boot.inactive_slot());
        self.boot.slots[i] = None;
        self.slots[i] = data;
        self.boot.slots[i] = Some(desc);
        self.boot.active = i as u8;
        self.boot.trial = None;
        Ok(())
    }

    fn signals(&self) -> Result<Vec<Signal>, DeviceError> {
        Ok(self.signals.clone())
    }
}
