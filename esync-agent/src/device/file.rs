//! An A/B device backed by files (Linux): `slot-a.img`, `slot-b.img`,
//! `staging.img`, `backups/<sha256>.img` and a small boot-control record
//! `boot.ctl` that is replaced atomically (temporary file, fsync, rename,
//! fsync of the directory). Switching the running image is one such
//! replacement, so a power loss leaves either the old or the new choice.
//!
//! [`FileDevice::boot`] plays the bootloader (trial boot or fall back) and is
//! what a restart calls; [`FileDevice::open`] attaches without a restart.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use esync_proto::id::{ReleaseCounter, SoftwareVersion};
use esync_proto::message::{InstalledImage, Signal};

use super::boot::{BootControl, MAX_BOOT_RECORD};
use super::mem::SelfTestHook;
use super::{hash_with, sha256, Device, DeviceError, SelfTest};
use crate::fsutil;

const BOOT_FILE: &str = "boot.ctl";
const SLOT_FILES: [&str; 2] = ["slot-a.img", "slot-b.img"];
const STAGING_FILE: &str = "staging.img";
const BACKUP_DIR: &str = "backups";
const IO_BUF: usize = 64 * 1024;

fn io(op: &'static str) -> impl Fn(std::io::Error) -> DeviceError {
    move |e| DeviceError::Failed {
        op,
        reason: e.to_string(),
    }
}

/// A file-backed A/B device.
pub struct FileDevice {
    dir: PathBuf,
    boot: BootControl,
    capacity: u64,
    staging_len: u64,
    signals: Vec<Signal>,
    self_test: Option<SelfTestHook>,
}

impl core::fmt::Debug for FileDevice {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FileDevice")
            .field("dir", &self.dir)
            .field("boot", &self.boot)
            .finish_non_exhaustive()
    }
}

impl FileDevice {
    /// Provisions a new device in `dir` running `image` as `version`, with
    /// `capacity` bytes per slot and for staging.
    pub fn create(
        dir: &Path,
        version: SoftwareVersion,
        release_counter: u64,
        image: &[u8],
        capacity: u64,
    ) -> Result<Self, DeviceError> {
        fs::create_dir_all(dir.join(BACKUP_DIR)).map_err(io("create"))?;
        fs::write(dir.join(SLOT_FILES[0]), image).map_err(io("create"))?;
        File::open(dir.join(SLOT_FILES[0]))
            .and_then(|f| f.sync_all())
            .map_err(io("create"))?;
        fs::write(dir.join(SLOT_FILES[1]), []).map_err(io("create"))?;
        fs::write(dir.join(STAGING_FILE), []).map_err(io("create"))?;
        let boot = BootControl::new(InstalledImage {
            version,
            release_counter: ReleaseCounter(release_counter),
            length: image.len() as u64,
            sha256: sha256(image),
        });
        fsutil::atomic_write(dir, BOOT_FILE, &boot.encode()?).map_err(io("create"))?;
        Self::open(dir, capacity)
    }

    /// Attaches to a provisioned device without a restart.
    pub fn open(dir: &Path, capacity: u64) -> Result<Self, DeviceError> {
        let bytes = fsutil::read_bounded(&dir.join(BOOT_FILE), MAX_BOOT_RECORD as u64)
            .map_err(io("open"))?
            .ok_or_else(|| DeviceError::Failed {
                op: "open",
                reason: format!("no {BOOT_FILE} in {}", dir.display()),
            })?;
        let boot = BootControl::decode(&bytes)?;
        let staging_len = fs::metadata(dir.join(STAGING_FILE))
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(FileDevice {
            dir: dir.to_path_buf(),
            boot,
            capacity,
            staging_len,
            signals: Vec::new(),
            self_test: None,
        })
    }

    /// A restart: runs the bootloader's decision (trial boot or fall back),
    /// persists it, and attaches.
    pub fn boot(dir: &Path, capacity: u64) -> Result<Self, DeviceError> {
        let mut dev = Self::open(dir, capacity)?;
        let before = dev.boot.clone();
        dev.boot.on_boot();
        if dev.boot != before {
            dev.write_boot()?;
        }
        Ok(dev)
    }

    /// A restart of an attached device: forgets what is cached in memory,
    /// re-reads the boot control from disk and runs the bootloader's
    /// decision (host configuration such as signals and the self-test hook
    /// is kept).
    pub fn restart(&mut self) -> Result<(), DeviceError> {
        let fresh = Self::boot(&self.dir, self.capacity)?;
        self.boot = fresh.boot;
        self.staging_len = fresh.staging_len;
        Ok(())
    }

    /// The device's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds a backup image.
    pub fn add_backup(
        &mut self,
        version: SoftwareVersion,
        release_counter: u64,
        image: &[u8],
    ) -> Result<(), DeviceError> {
        let desc = InstalledImage {
            version,
            release_counter: ReleaseCounter(release_counter),
            length: image.len() as u64,
            sha256: sha256(image),
        };
        let path = self.backup_path(&desc);
        fs::write(&path, image).map_err(io("add backup"))?;
        File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(io("add backup"))?;
        self.boot.backups.insert(0, desc);
        self.write_boot()
    }

    /// Sets the vehicle signals.
    pub fn set_signals(&mut self, signals: Vec<Signal>) {
        self.signals = signals;
    }

    /// Sets an extra self-test (after the built-in hash check).
    pub fn set_self_test(&mut self, hook: SelfTestHook) {
        self.self_test = Some(hook);
    }

    /// The boot-control record.
    pub fn boot_control(&self) -> &BootControl {
        &self.boot
    }

    /// Path of the running slot's file.
    pub fn running_path(&self) -> PathBuf {
        self.dir.join(SLOT_FILES[usize::from(self.boot.active & 1)])
    }

    fn backup_path(&self, desc: &InstalledImage) -> PathBuf {
        let hex: String = desc.sha256.0.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(BACKUP_DIR).join(format!("{hex}.img"))
    }

    fn write_boot(&mut self) -> Result<(), DeviceError> {
        fsutil::atomic_write(&self.dir, BOOT_FILE, &self.boot.encode()?).map_err(io("boot control"))
    }

    fn slot_path(&self, slot: u8) -> PathBuf {
        self.dir.join(SLOT_FILES[usize::from(slot & 1)])
    }

    fn read_file(
        path: &Path,
        limit: u64,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, DeviceError> {
        if offset >= limit {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(limit - offset).unwrap_or(usize::MAX));
        let f = File::open(path).map_err(io("read"))?;
        let mut done = 0;
        while done < want {
            let n = f
                .read_at(&mut buf[done..want], offset + done as u64)
                .map_err(io("read"))?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    fn write_file(path: &Path, offset: u64, data: &[u8], sync: bool) -> Result<(), DeviceError> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io("write"))?;
        f.write_all_at(data, offset).map_err(io("write"))?;
        if sync {
            f.sync_data().map_err(io("write"))?;
        }
        Ok(())
    }
}

impl Device for FileDevice {
    fn running(&self) -> Result<InstalledImage, DeviceError> {
        self.boot.running()
    }

    fn read_running(&self, offset: u64, buf: &mut [u8]) -> Result<usize, DeviceError> {
        let len = self.boot.running()?.length;
        Self::read_file(&self.running_path(), len, offset, buf)
    }

    fn staging_capacity(&self) -> u64 {
        self.capacity
    }

    fn staging_reset(&mut self, len: u64) -> Result<(), DeviceError> {
        if len > self.capacity {
            return Err(DeviceError::NoSpace {
                what: "staging",
                capacity: self.capacity,
                needed: len,
            });
        }
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.dir.join(STAGING_FILE))
            .map_err(io("staging reset"))?;
        f.set_len(len).map_err(io("staging reset"))?;
        f.sync_all().map_err(io("staging reset"))?;
        self.staging_len = len;
        Ok(())
    }

    fn staging_write(&mut self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        let end = offset.saturating_add(data.len() as u64);
        if end > self.staging_len {
            return Err(DeviceError::NoSpace {
                what: "staging",
                capacity: self.staging_len,
                needed: end,
            });
        }
        Self::write_file(&self.dir.join(STAGING_FILE), offset, data, true)
    }

    fn staging_read(&self, offset: u64, buf: &mut [u8]) -> Result<usize, DeviceError> {
        Self::read_file(&self.dir.join(STAGING_FILE), self.staging_len, offset, buf)
    }

    fn pre_install(&mut self) -> Result<(), DeviceError> {
        Ok(())
    }

    fn slot_begin(&mut self, len: u64) -> Result<(), DeviceError> {
        if len > self.capacity {
            return Err(DeviceError::NoSpace {
                what: "slot",
                capacity: self.capacity,
                needed: len,
            });
        }
        let i = self.boot.inactive_slot();
        if self.boot.slots[usize::from(i)].is_some() {
            self.boot.slots[usize::from(i)] = None;
            self.write_boot()?;
        }
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.slot_path(i))
            .map_err(io("slot begin"))?;
        f.sync_all().map_err(io("slot begin"))
    }

    fn slot_write(&mut self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        let i = self.boot.inactive_slot();
        if self.boot.slots[usize::from(i)].is_some() {
            return Err(DeviceError::Refused {
                op: "slot write",
                reason: "slot_begin was not called".into(),
            });
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > self.capacity {
            return Err(DeviceError::NoSpace {
                what: "slot",
                capacity: self.capacity,
                needed: end,
            });
        }
        Self::write_file(&self.slot_path(i), offset, data, false)
    }

    fn slot_read(&self, offset: u64, buf: &mut [u8]) -> Result<usize, DeviceError> {
        Self::read_file(
            &self.slot_path(self.boot.inactive_slot()),
            u64::MAX,
            offset,
            buf,
        )
    }

    fn slot_finish(&mut self, image: &InstalledImage) -> Result<(), DeviceError> {
        let i = self.boot.inactive_slot();
        let f = OpenOptions::new()
            .write(true)
            .open(self.slot_path(i))
            .map_err(io("slot finish"))?;
        f.set_len(image.length).map_err(io("slot finish"))?;
        f.sync_all().map_err(io("slot finish"))?;
        self.boot.slots[usize::from(i)] = Some(image.clone());
        self.write_boot()
    }

    fn inactive(&self) -> Result<Option<InstalledImage>, DeviceError> {
        Ok(self.boot.slots[usize::from(self.boot.inactive_slot())].clone())
    }

    fn activate(&mut self) -> Result<(), DeviceError> {
        let mut next = self.boot.clone();
        next.activate()?;
        fsutil::atomic_write(&self.dir, BOOT_FILE, &next.encode()?).map_err(io("activate"))?;
        self.boot = next;
        Ok(())
    }

    fn self_test(&mut self) -> Result<SelfTest, DeviceError> {
        let running = self.boot.running()?;
        let path = self.running_path();
        let mut buf = vec![0u8; IO_BUF];
        let got = hash_with(running.length, &mut buf, |o, b| {
            Self::read_file(&path, running.length, o, b)
        })?;
        if got != running.sha256 {
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
        if self.boot.trial.is_some() {
            let mut next = self.boot.clone();
            next.trial = None;
            fsutil::atomic_write(&self.dir, BOOT_FILE, &next.encode()?).map_err(io("commit"))?;
            self.boot = next;
        }
        Ok(())
    }

    fn on_trial(&self) -> Result<bool, DeviceError> {
        Ok(self.boot.trial.is_some())
    }

    fn rollback_previous(&mut self) -> Result<(), DeviceError> {
        let mut next = self.boot.clone();
        next.rollback_previous()?;
        fsutil::atomic_write(&self.dir, BOOT_FILE, &next.encode()?).map_err(io("rollback"))?;
        self.boot = next;
        Ok(())
    }

    fn backups(&self) -> Result<Vec<InstalledImage>, DeviceError> {
        Ok(self.boot.backups.clone())
    }

    fn restore_backup(&mut self, version: &SoftwareVersion) -> Result<(), DeviceError> {
        let desc = self
            .boot
            .backups
            .iter()
            .find(|b| &b.version == version)
            .cloned()
            .ok_or_else(|| DeviceError::Refused {
                op: "restore backup",
                reason: format!("no backup of version {version}"),
            })?;
        let src = self.backup_path(&desc);
        self.slot_begin(desc.length)?;
        let mut buf = vec![0u8; IO_BUF];
        let mut off = 0u64;
        while off < desc.length {
            let n = Self::read_file(&src, desc.length, off, &mut buf)?;
            if n == 0 {
                return Err(DeviceError::Failed {
                    op: "restore backup",
                    reason: format!("backup {version} is truncated"),
                });
            }
            self.slot_write(off, &buf[..n])?;
            off += n as u64;
        }
        let i = self.boot.inactive_slot();
        let path = self.slot_path(i);
        let got = hash_with(desc.length, &mut buf, |o, b| {
            Self::read_file(&path, desc.length, o, b)
        })?;
        if got != desc.sha256 {
            return Err(DeviceError::Failed {
                op: "restore backup",
                reason: format!("backup {version} is corrupt"),
            });
        }
        File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(io("restore backup"))?;
        let mut next = self.boot.clone();
        next.slots[usize::from(i)] = Some(desc);
        next.active = i;
        next.trial = None;
        fsutil::atomic_write(&self.dir, BOOT_FILE, &next.encode()?)
            .map_err(io("restore backup"))?;
        self.boot = next;
        Ok(())
    }

    fn signals(&self) -> Result<Vec<Signal>, DeviceError> {
        Ok(self.signals.clone())
    }
}
