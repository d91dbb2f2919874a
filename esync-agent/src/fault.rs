//! Fault injection for tests: a shared [`PowerSwitch`] that counts every
//! persistence point (each mutating device operation and each journal
//! store) and, at a chosen one, makes it fail or cuts the power; and
//! wrappers that put any [`Device`] and any [`JournalStore`] behind it.
//!
//! After a power cut every later operation fails with a power-loss error, so
//! the Agent halts; the test then drops the Agent (all in-memory state),
//! restarts the device (bootloader decision) and recovers from the journal.

use std::sync::{Arc, Mutex, MutexGuard};

use esync_proto::id::SoftwareVersion;
use esync_proto::message::{InstalledImage, Signal};

use crate::device::{Device, DeviceError, SelfTest};
use crate::journal::{JournalStore, StoreError};

/// What happens at the armed persistence point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The operation fails with an error and has no effect; power stays on.
    Fail,
    /// Power is cut before the operation has any effect.
    CutBefore,
    /// Power is cut halfway: a write stores only its first half (other
    /// operations behave as [`FaultKind::CutBefore`]).
    CutTorn,
    /// Power is cut right after the operation took effect, before the caller
    /// learns it succeeded.
    CutAfter,
}

#[derive(Debug, Default)]
struct SwitchState {
    count: u64,
    armed: Vec<(u64, FaultKind)>,
    fail_named: Vec<(&'static str, u32)>,
    dead: bool,
    log: Vec<&'static str>,
}

/// Counts persistence points and injects one fault. Clones share state.
#[derive(Clone, Debug, Default)]
pub struct PowerSwitch(Arc<Mutex<SwitchState>>);

/// Decision for one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    Go,
    Fail,
    CutBefore,
    CutTorn,
    CutAfter,
}

impl PowerSwitch {
    /// A switch with nothing armed.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, SwitchState> {
        // A poisoned lock only means a test panicked; the counters are still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arms a fault at the persistence point with index `at` (0-based,
    /// counted from now on). Several faults may be armed.
    pub fn arm(&self, at: u64, kind: FaultKind) {
        let mut s = self.state();
        let base = s.count;
        s.armed.push((base + at, kind));
    }

    /// Makes the next `times` operations named `op` fail (power stays on).
    pub fn fail_next(&self, op: &'static str, times: u32) {
        self.state().fail_named.push((op, times));
    }

    /// Power comes back (after the test restarted the device): later
    /// operations work again (faults armed for later points stay armed).
    pub fn power_on(&self) {
        self.state().dead = false;
    }

    /// Persistence points passed so far.
    pub fn count(&self) -> u64 {
        self.state().count
    }

    /// Whether the power was cut.
    pub fn is_dead(&self) -> bool {
        self.state().dead
    }

    /// Names of the persistence points passed, in order.
    pub fn log(&self) -> Vec<&'static str> {
        self.state().log.clone()
    }

    fn alive(&self, op: &'static str) -> Result<(), &'static str> {
        if self.state().dead {
            Err(op)
        } else {
            Ok(())
        }
    }

    /// Consumes one named failure of `op` if armed (reads are not
    /// persistence points, but can fail too).
    fn named_fail(&self, op: &'static str) -> bool {
        let mut s = self.state();
        if let Some(e) = s.fail_named.iter_mut().find(|(n, t)| *n == op && *t > 0) {
            e.1 -= 1;
            true
        } else {
            false
        }
    }

    fn gate(&self, op: &'static str) -> Gate {
        let mut s = self.state();
        if s.dead {
            return Gate::CutBefore;
        }
        if let Some(e) = s.fail_named.iter_mut().find(|(n, t)| *n == op && *t > 0) {
            e.1 -= 1;
            return Gate::Fail;
        }
        let idx = s.count;
        s.count += 1;
        s.log.push(op);
        match s.armed.iter().position(|(at, _)| *at == idx) {
            Some(i) => {
                let (_, kind) = s.armed.swap_remove(i);
                match kind {
                    FaultKind::Fail => Gate::Fail,
                    FaultKind::CutBefore => {
                        s.dead = true;
                        Gate::CutBefore
                    }
                    FaultKind::CutTorn => {
                        s.dead = true;
                        Gate::CutTorn
                    }
                    FaultKind::CutAfter => {
                        s.dead = true;
                        Gate::CutAfter
                    }
                }
            }
            None => Gate::Go,
        }
    }
}

/// A [`Device`] behind a [`PowerSwitch`].
#[derive(Debug)]
pub struct FaultyDevice<D> {
    inner: D,
    switch: PowerSwitch,
}

impl<D: Device> FaultyDevice<D> {
    /// Wraps `inner`.
    pub fn new(inner: D, switch: PowerSwitch) -> Self {
        FaultyDevice { inner, switch }
    }

    /// The wrapped device.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// The wrapped device, mutably.
    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    /// Unwraps.
    pub fn into_inner(self) -> D {
        self.inner
    }

    fn read<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&D) -> Result<T, DeviceError>,
    ) -> Result<T, DeviceError> {
        self.switch.alive(op).map_err(DeviceError::PowerLoss)?;
        if self.switch.named_fail(op) {
            return Err(DeviceError::Failed {
                op,
                reason: "injected fault".into(),
            });
        }
        f(&self.inner)
    }

    fn op<T>(
        &mut self,
        op: &'static str,
        f: impl FnOnce(&mut D) -> Result<T, DeviceError>,
    ) -> Result<T, DeviceError> {
        match self.switch.gate(op) {
            Gate::Go => f(&mut self.inner),
            Gate::Fail => Err(DeviceError::Failed {
                op,
                reason: "injected fault".into(),
            }),
            Gate::CutBefore | Gate::CutTorn => Err(DeviceError::PowerLoss(op)),
            Gate::CutAfter => {
                let _ = f(&mut self.inner);
                Err(DeviceError::PowerLoss(op))
            }
        }
    }

    fn write_op(
        &mut self,
        op: &'static str,
        data: &[u8],
        f: impl Fn(&mut D, &[u8]) -> Result<(), DeviceError>,
    ) -> Result<(), DeviceError> {
        match self.switch.gate(op) {
            Gate::Go => f(&mut self.inner, data),
            Gate::Fail => Err(DeviceError::Failed {
                op,
                reason: "injected fault".into(),
            }),
            Gate::CutBefore => Err(DeviceError::PowerLoss(op)),
            Gate::CutTorn => {
                let _ = f(&mut self.inner, &data[..data.len() / 2]);
                Err(DeviceError::PowerLoss(op))
            }
            Gate::CutAfter => {
                let _ = f(&mut self.inner, data);
                Err(DeviceError::PowerLoss(op))
            }
        }
    }
}

impl<D: Device> Device for FaultyDevice<D> {
    fn running(&self) -> Result<InstalledImage, DeviceError> {
        self.read("running", |d| d.running())
    }
    fn read_running(&self, offset: u64, buf: &mut [u8]) -> Result<usize, DeviceError> {
        self.read("read running", |d| d.read_running(offset, buf))
    }
    fn staging_capacity(&self) -> u64 {
        self.inner.staging_capacity()
    }
    fn staging_reset(&mut self, len: u64) -> Result<(), DeviceError> {
        self.op("staging reset", |d| d.staging_reset(len))
    }
    fn staging_write(&mut self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        self.write_op("staging write", data, |d, b| d.staging_write(offset, b))
    }
    fn staging_read(&self, offset: u64, buf: &mut [u8]) -> Result<usize, DeviceError> {
        self.read("staging read", |d| d.staging_read(offset, buf))
    }
    fn pre_install(&mut self) -> Result<(), DeviceError> {
        self.op("pre-install", |d| d.pre_install())
    }
    fn slot_begin(&mut self, len: u64) -> Result<(), DeviceError> {
        self.op("slot begin", |d| d.slot_begin(len))
    }
    fn slot_write(&mut self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        self.write_op("slot write", data, |d, b| d.slot_write(offset, b))
    }
    fn slot_read(&self, offset: u64, buf: &mut [u8]) -> Result<usize, DeviceError> {
        self.read("slot read", |d| d.slot_read(offset, buf))
    }
    fn slot_finish(&mut self, image: &InstalledImage) -> Result<(), DeviceError> {
        self.op("slot finish", |d| d.slot_finish(image))
    }
    fn inactive(&self) -> Result<Option<InstalledImage>, DeviceError> {
        self.read("inactive", |d| d.inactive())
    }
    fn activate(&mut self) -> Result<(), DeviceError> {
        self.op("activate", |d| d.activate())
    }
    fn self_test(&mut self) -> Result<SelfTest, DeviceError> {
        self.op("self-test", |d| d.self_test())
    }
    fn commit(&mut self) -> Result<(), DeviceError> {
        self.op("commit", |d| d.commit())
    }
    fn on_trial(&self) -> Result<bool, DeviceError> {
        self.read("on trial", |d| d.on_trial())
    }
    fn rollback_previous(&mut self) -> Result<(), DeviceError> {
        self.op("rollback", |d| d.rollback_previous())
    }
    fn backups(&self) -> Result<Vec<InstalledImage>, DeviceError> {
        self.read("backups", |d| d.backups())
    }
    fn restore_backup(&mut self, version: &SoftwareVersion) -> Result<(), DeviceError> {
        self.op("restore backup", |d| d.restore_backup(version))
    }
    fn signals(&self) -> Result<Vec<Signal>, DeviceError> {
        self.read("signals", |d| d.signals())
    }
}

/// A [`JournalStore`] behind a [`PowerSwitch`]. A torn store keeps the old
/// record (the store is atomic by contract).
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    switch: PowerSwitch,
}

impl<S: JournalStore> FaultyStore<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, switch: PowerSwitch) -> Self {
        FaultyStore { inner, switch }
    }

    /// Unwraps.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: JournalStore> JournalStore for FaultyStore<S> {
    fn load(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        self.switch
            .alive("journal load")
            .map_err(|_| StoreError::PowerLoss)?;
        self.inner.load()
    }

    fn store(&mut self, record: &[u8]) -> Result<(), StoreError> {
        match self.switch.gate("journal") {
            Gate::Go => self.inner.store(record),
            Gate::Fail => Err(StoreError::unwritable(
                "journal",
                &std::io::Error::other("injected fault"),
            )),
            Gate::CutBefore | Gate::CutTorn => Err(StoreError::PowerLoss),
            Gate::CutAfter => {
                let _ = self.inner.store(record);
                Err(StoreError::PowerLoss)
            }
        }
    }
}
