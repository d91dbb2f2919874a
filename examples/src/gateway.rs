//! The vehicle side of the demo's Client: the real esync-client's
//! orchestrator loop (`esync_client::runtime::vehicle`) on the embedded
//! broker, with its campaign journal on a file: inventory, Agent-signed
//! vehicle manifests, and the install of a package the session core
//! (driven by [`crate::fleet`] over the HTTPS device API) verified and
//! downloaded into [`Gateway::downloads`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use esync_agent::journal::FileJournal;
use esync_client::broker::PeerKeys;
use esync_client::core::orchestrate::PackageReport;
use esync_client::core::plan::ReadyPackage;
use esync_client::core::session::policy::{Conditions, Policy};

use esync_client::core::OrchestratorConfig;
use esync_client::runtime::vehicle::{InstallAttempt, VehicleHost, VehicleRuntime};
use esync_identity::IssuedIdentity;
use esync_proto::envelope::{EnvelopeSigner, ReceiverIdentity, Verifier};
use esync_proto::frame::FrameLimits;
use esync_proto::id::{DevicePath, EcuSerial, Vin};
use esync_proto::message::{InventoryReport, Participant, Signal};
use esync_transport::{ChannelTransport, Transport, WallClock};
use esync_uptane::PrivateKey;
use tokio::sync::watch;

use crate::DemoError;

/// How long one campaign may take.
pub const CAMPAIGN_TIMEOUT: Duration = Duration::from_secs(120);

/// The demo's Client.
pub struct Gateway {
    rt: VehicleRuntime,
    downloads: PathBuf,
    vin: Vin,
    manifest_key: PrivateKey,
    signals: watch::Sender<Conditions>,
    primary: EcuSerial,
}

fn vehicle_err(e: impl std::fmt::Display) -> DemoError {
    DemoError::Vehicle(e.to_string())
}

impl Gateway {
    /// The Client on the broker's in-process `endpoint`, verifying Agents
    /// with the keys of the certificates the broker admitted, its state in
    /// `dir` (campaign journal, downloads; created afresh).
    #[allow(clippy::too_many_arguments, reason = "provisioning inputs")]
    pub async fn start(
        endpoint: ChannelTransport,
        keys: PeerKeys,
        vehicle: &IssuedIdentity,
        vin: Vin,
        dir: &Path,
        signals: Vec<Signal>,
    ) -> Result<Gateway, DemoError> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        let downloads = dir.join("downloads");
        std::fs::create_dir_all(&downloads)?;
        let (tx, rx) = watch::channel(Conditions {
            signals,
            ..Conditions::default()
        });
        let host = VehicleHost {
            config: OrchestratorConfig::default(),
            journal: Box::new(FileJournal::new(dir, "client.journal")),
            downloads: downloads.clone(),
            signer: Arc::new(Mutex::new(EnvelopeSigner::new(
                Participant::Client,
                vehicle.signing_key.clone(),
                1,
                FrameLimits::default(),
            ))),
            verifier: Verifier::new(
                ReceiverIdentity {
                    me: Participant::Client,
                    groups: vec![],
                },
                FrameLimits::default(),
            ),
            keys: Box::new(keys),
            policy: Policy::default(),
            hmi: None,
            conditions: rx,
            clock: WallClock::system(),
        };
        let rt = VehicleRuntime::recover(host, Transport::boxed(endpoint))
            .await
            .map_err(vehicle_err)?;
        Ok(Gateway {
            rt,
            downloads,
            vin,
            manifest_key: PrivateKey::from_seed(&vehicle.signing_key.to_bytes()),
            signals: tx,
            primary: EcuSerial::new("GW0001").map_err(vehicle_err)?,
        })
    }

    /// The Client's own ECU serial in the manifests (ECU serials are
    /// unique in the fleet; `GW0001` by default).
    pub fn set_primary_serial(&mut self, serial: EcuSerial) {
        self.primary = serial;
    }

    /// The vehicle state the orchestrator evaluates preconditions on.
    pub fn set_signals(&self, signals: Vec<Signal>) {
        self.signals.send_modify(|c| c.signals = signals);
    }

    /// Waits until every Agent of `devs` is connected to the broker.
    pub async fn wait_connected(&mut self, devs: &[DevicePath]) -> Result<(), DemoError> {
        let who: Vec<Participant> = devs.iter().cloned().map(Participant::Device).collect();
        self.rt
            .wait_present(&who, Duration::from_secs(30))
            .await
            .map_err(vehicle_err)
    }

    /// Asks every Agent for its inventory.
    pub async fn inventory(
        &mut self,
        devs: &[DevicePath],
    ) -> Result<BTreeMap<DevicePath, InventoryReport>, DemoError> {
        let inv = self
            .rt
            .inventory(devs, Duration::from_secs(30))
            .await
            .map_err(vehicle_err)?;
        Ok(devs
            .iter()
            .filter_map(|d| {
                let r = inv.agent(d)?.report.clone()?;
                Some((d.clone(), r))
            })
            .collect())
    }

    /// The signed vehicle manifest: a fresh, Agent-signed version report of
    /// each of `devs`, signed by the Client.
    pub async fn manifest(&mut self, devs: &[DevicePath]) -> Result<Vec<u8>, DemoError> {
        let primary = self.primary.clone();
        self.rt
            .vehicle_manifest(
                devs,
                self.vin.clone(),
                primary,
                &self.manifest_key,
                Duration::from_secs(30),
            )
            .await
            .map_err(vehicle_err)
    }

    /// Installs a verified, downloaded package on the Agents (stages,
    /// atomic commit or rollback) and returns its report.
    pub async fn install(&mut self, ready: ReadyPackage) -> Result<PackageReport, DemoError> {
        let package = ready.package.id().clone();
        match self
            .rt
            .install(ready, Duration::from_secs(10), CAMPAIGN_TIMEOUT)
            .await
            .map_err(vehicle_err)?
        {
            InstallAttempt::Report(r) => {
                // The demo keeps no Server report queue: delivered here.
                self.rt.report_delivered(&package).map_err(vehicle_err)?;
                Ok(r)
            }
            other => Err(DemoError::Protocol(format!("install: {other:?}"))),
        }
    }

    /// Where the Client keeps downloaded blobs (the orchestrator reads
    /// them from here).
    pub fn downloads(&self) -> &Path {
        &self.downloads
    }

    /// What the Client knows of its Agents (for the final reports).
    pub fn client_inventory(&self) -> &esync_client::core::inventory::Inventory {
        self.rt.client().inventory()
    }

    /// Counters of the orchestrator's loop.
    pub fn stats(&self) -> esync_client::runtime::vehicle::VehicleStats {
        self.rt.stats()
    }
}
