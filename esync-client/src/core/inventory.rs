//! The vehicle's Agents as the Client knows them: presence (from the
//! broker's presence messages), identity, installed image, delta
//! capabilities, backups and do-not-disturb (from the Agents'
//! [`InventoryReport`] and [`DoNotDisturb`] messages). No I/O.

use std::collections::BTreeMap;

use esync_proto::id::{DevicePath, SoftwareVersion};
use esync_proto::message::{
    BusyReason, DeltaCapability, DoNotDisturb, InstalledImage, InventoryReport, PresenceState,
};

/// Largest number of Agents one vehicle's inventory holds.
pub const MAX_AGENTS: usize = 1024;

/// One Agent of the vehicle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentEntry {
    /// Its device path.
    pub device: DevicePath,
    /// Connected to the broker (last presence message).
    pub present: bool,
    /// Its last inventory report (identity, installed image, delta
    /// capabilities, backups); `None` until it answered one.
    pub report: Option<InventoryReport>,
    /// It said it is busy: why, and until when (monotonic ms).
    pub busy: Option<(BusyReason, u64)>,
    /// Its last signed Uptane ECU version report (canonical JSON, as the
    /// Agent signed it), for the vehicle manifest.
    pub version_report: Option<Vec<u8>>,
}

impl AgentEntry {
    /// The installed image it last reported.
    pub fn installed(&self) -> Option<&InstalledImage> {
        self.report.as_ref().map(|r| &r.installed)
    }

    /// The patch formats it applies (none before its first report).
    pub fn delta(&self) -> Option<&DeltaCapability> {
        self.report.as_ref().map(|r| &r.delta)
    }

    /// Versions it keeps as backups.
    pub fn backups(&self) -> &[SoftwareVersion] {
        self.report
            .as_ref()
            .map(|r| r.rollback_versions.as_slice())
            .unwrap_or(&[])
    }

    /// Whether it asked not to be disturbed at `mono_ms`.
    pub fn busy_at(&self, mono_ms: u64) -> bool {
        self.busy.is_some_and(|(_, until)| mono_ms < until)
    }
}

/// What an inventory update was refused for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InventoryError {
    /// A report names another device than its sender.
    #[error("{sender} reported itself as {reported}")]
    WrongDevice {
        /// The envelope's sender.
        sender: DevicePath,
        /// The report's device.
        reported: DevicePath,
    },
    /// The inventory is full.
    #[error("more than {MAX_AGENTS} Agents")]
    Full,
}

/// The vehicle's Agents, by device path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    agents: BTreeMap<DevicePath, AgentEntry>,
}

impl Inventory {
    /// An empty inventory.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, device: &DevicePath) -> Result<&mut AgentEntry, InventoryError> {
        if !self.agents.contains_key(device) && self.agents.len() >= MAX_AGENTS {
            return Err(InventoryError::Full);
        }
        Ok(self
            .agents
            .entry(device.clone())
            .or_insert_with(|| AgentEntry {
                device: device.clone(),
                present: false,
                report: None,
                busy: None,
                version_report: None,
            }))
    }

    /// The broker said `device` connected or disconnected.
    pub fn presence(
        &mut self,
        device: &DevicePath,
        state: PresenceState,
    ) -> Result<(), InventoryError> {
        self.entry(device)?.present = state == PresenceState::Connected;
        Ok(())
    }

    /// `sender` sent an inventory report (verified envelope).
    pub fn report(
        &mut self,
        sender: &DevicePath,
        report: InventoryReport,
    ) -> Result<(), InventoryError> {
        if &report.device != sender {
            return Err(InventoryError::WrongDevice {
                sender: sender.clone(),
                reported: report.device,
            });
        }
        let e = self.entry(sender)?;
        e.present = true;
        e.busy = None;
        e.report = Some(report);
        Ok(())
    }

    /// `sender` asked not to be disturbed (at `mono_ms`).
    pub fn do_not_disturb(
        &mut self,
        sender: &DevicePath,
        dnd: &DoNotDisturb,
        mono_ms: u64,
    ) -> Result<(), InventoryError> {
        let e = self.entry(sender)?;
        e.present = true;
        e.busy = Some((
            dnd.reason,
            mono_ms.saturating_add(u64::from(dnd.retry_after_ms)),
        ));
        Ok(())
    }

    /// `sender` sent a signed version report (verified envelope; the report's
    /// own signature is the Server's to check).
    pub fn version_report(
        &mut self,
        sender: &DevicePath,
        signed_json: Vec<u8>,
    ) -> Result<(), InventoryError> {
        let e = self.entry(sender)?;
        e.present = true;
        e.version_report = Some(signed_json);
        Ok(())
    }

    /// The installed image of `device` changed (a confirmed install or a
    /// rollback the Agent reported).
    pub fn installed_version(&mut self, device: &DevicePath, version: &SoftwareVersion) {
        if let Some(r) = self.agents.get_mut(device).and_then(|e| e.report.as_mut()) {
            r.installed.version = version.clone();
        }
    }

    /// The entry of `device`.
    pub fn agent(&self, device: &DevicePath) -> Option<&AgentEntry> {
        self.agents.get(device)
    }

    /// Every Agent, by device path.
    pub fn agents(&self) -> impl Iterator<Item = &AgentEntry> {
        self.agents.values()
    }
}
