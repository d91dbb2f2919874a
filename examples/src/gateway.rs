//! The vehicle's Client in the demo: the real esync-client. Its
//! Server-facing session core (`esync_client::core::session`: check-in,
//! full Uptane verification, delta-or-full planning, resumable hashed
//! downloads) talks to the demo [`Server`] in-process, the blobs land in
//! a download directory, and the orchestrator's tokio loop
//! (`esync_client::runtime::vehicle`) drives the Agents through the
//! embedded broker with its campaign journal on a file.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use esync_agent::journal::FileJournal;
use esync_api::BlobId;
use esync_client::broker::PeerKeys;
use esync_client::core::orchestrate::PackageReport;
use esync_client::core::plan::ReadyPackage;
use esync_client::core::session::policy::{Conditions, Policy};
use esync_client::core::session::{Answer, Need, Now, Session, SessionConfig, Step};
use esync_client::core::OrchestratorConfig;
use esync_client::runtime::vehicle::{blob_path, InstallAttempt, VehicleHost, VehicleRuntime};
use esync_identity::IssuedIdentity;
use esync_proto::envelope::{EnvelopeSigner, ReceiverIdentity, Verifier};
use esync_proto::frame::FrameLimits;
use esync_proto::id::{DevicePath, EcuSerial, Vin};
use esync_proto::message::{InventoryReport, Participant, Signal};
use esync_transport::{ChannelTransport, Transport, WallClock};
use esync_uptane::{MemoryStore, PrivateKey};
use tokio::sync::watch;

use crate::server::{Served, Server};
use crate::DemoError;

/// How long one campaign may take.
pub const CAMPAIGN_TIMEOUT: Duration = Duration::from_secs(120);
/// Bytes of a blob response handed to the session at a time.
const PIECE: usize = 16 * 1024;

/// What the session fetched for one package.
#[derive(Clone, Debug, Default)]
pub struct Fetched {
    /// Metadata files fetched (Director and Image repositories).
    pub metadata_files: u32,
    /// Blob bytes downloaded.
    pub blob_bytes: u64,
    /// Whether the signed manifest was uploaded (it changed).
    pub manifest_uploaded: bool,
}

/// The demo's Client.
pub struct Gateway {
    rt: VehicleRuntime,
    downloads: PathBuf,
    director_root: Vec<u8>,
    image_root: Vec<u8>,
    vin: Vin,
    manifest_key: PrivateKey,
    accepted_manifest: Option<esync_proto::id::Sha256Digest>,
    signals: watch::Sender<Conditions>,
    started: Instant,
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
        director_root: Vec<u8>,
        image_root: Vec<u8>,
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
            director_root,
            image_root,
            vin,
            manifest_key: PrivateKey::from_seed(&vehicle.signing_key.to_bytes()),
            accepted_manifest: None,
            signals: tx,
            started: Instant::now(),
            primary: EcuSerial::new("GW0001").map_err(vehicle_err)?,
        })
    }

    fn now(&self) -> Now {
        Now {
            mono_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            wall_ms: crate::now_ms(),
        }
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

    /// Check-in, full verification and downloads: the session core against
    /// the demo Server, until a verified, downloaded package (or none).
    pub fn fetch(
        &mut self,
        server: &mut Server,
        inventory: &BTreeMap<DevicePath, InventoryReport>,
        manifest: Vec<u8>,
    ) -> Result<(Option<ReadyPackage>, Fetched), DemoError> {
        let mut session = Session::open(
            MemoryStore::new(self.director_root.clone()),
            MemoryStore::new(self.image_root.clone()),
            self.vin.clone(),
            self.accepted_manifest,
            SessionConfig::default(),
        )
        .map_err(|e| DemoError::Uptane(e.to_string()))?;
        let mut fetched = Fetched::default();
        let session_err = |e: esync_client::core::session::SessionError| match e {
            esync_client::core::session::SessionError::Uptane(u) => {
                DemoError::Uptane(format!("full verification: {u}"))
            }
            other => DemoError::Protocol(format!("session: {other}")),
        };
        let mut step = session
            .check_in(self.now(), manifest, inventory.values().cloned().collect())
            .map_err(session_err)?;
        for _ in 0..100_000 {
            step = match step {
                Step::Need(need @ Need::Blob { .. }) => self
                    .download(server, &mut session, &need, &mut fetched)
                    .map_err(|e| match e {
                        Fail::Session(s) => session_err(s),
                        Fail::Demo(d) => d,
                    })?,
                Step::Need(need) => {
                    let served = server.serve(&need);
                    let now = self.now();
                    match (&need, served) {
                        (Need::UploadManifest { .. }, Served::ManifestAccepted(a)) => {
                            fetched.manifest_uploaded = true;
                            session.provide(now, Answer::ManifestAccepted(&a))
                        }
                        (Need::CheckIn { .. }, Served::CheckIn(r)) => {
                            session.provide(now, Answer::CheckIn(&r))
                        }
                        (Need::DirectorFile { .. } | Need::ImageFile { .. }, Served::File(f)) => {
                            fetched.metadata_files += 1;
                            session.provide(now, Answer::File(f.as_deref()))
                        }
                        (_, Served::Failed(why)) => session.provide(now, Answer::Failed(&why)),
                        (n, other) => {
                            return Err(DemoError::Protocol(format!(
                                "the Server answered {other:?} to {n:?}"
                            )))
                        }
                    }
                    .map_err(session_err)?
                }
                Step::WaitUntil(t) => {
                    let now = self.now().mono_ms;
                    if t > now {
                        std::thread::sleep(Duration::from_millis((t - now).min(5_000)));
                    }
                    session.poll(self.now()).map_err(session_err)?
                }
                Step::Continue => session.poll(self.now()).map_err(session_err)?,
                Step::UpToDate => {
                    self.accepted_manifest = session.accepted_manifest();
                    return Ok((None, fetched));
                }
                Step::Ready(ready) => {
                    self.accepted_manifest = session.accepted_manifest();
                    for c in &ready.components {
                        let blob = BlobId(c.artifact.sha256);
                        let part = self.partial(&blob);
                        if part.exists() {
                            std::fs::rename(&part, blob_path(&self.downloads, &blob))?;
                        }
                    }
                    return Ok((Some(*ready), fetched));
                }
                other => {
                    return Err(DemoError::Protocol(format!(
                        "the session stopped: {other:?}"
                    )))
                }
            };
        }
        Err(DemoError::Protocol("the session does not settle".into()))
    }

    fn partial(&self, blob: &BlobId) -> PathBuf {
        self.downloads.join(format!("{blob}.partial"))
    }

    /// One blob response: written to `DOWNLOADS/SHA.partial` at the offset
    /// the session asked for, and handed to the session, which hashes and
    /// caps it.
    fn download(
        &mut self,
        server: &mut Server,
        session: &mut Session<MemoryStore, MemoryStore>,
        need: &Need,
        fetched: &mut Fetched,
    ) -> Result<Step, Fail> {
        let Need::Blob {
            sha256,
            range_start,
            ..
        } = need
        else {
            return Err(Fail::Demo(DemoError::Protocol("not a blob".into())));
        };
        let blob = BlobId(*sha256);
        let part = self.partial(&blob);
        let io = |e: std::io::Error| Fail::Demo(DemoError::Io(e));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&part)
            .map_err(io)?;
        file.set_len(*range_start).map_err(io)?;
        file.seek(SeekFrom::Start(*range_start)).map_err(io)?;
        let bytes = match server.serve(need) {
            Served::Blob(b) => b,
            Served::Failed(why) => {
                return session
                    .provide(self.now(), Answer::Failed(&why))
                    .map_err(Fail::Session)
            }
            other => {
                return Err(Fail::Demo(DemoError::Protocol(format!(
                    "blob answer {other:?}"
                ))))
            }
        };
        for piece in bytes.chunks(PIECE) {
            file.write_all(piece).map_err(io)?;
            fetched.blob_bytes += piece.len() as u64;
            match session
                .provide(self.now(), Answer::BlobBytes(piece))
                .map_err(Fail::Session)?
            {
                Step::Continue => {}
                other => {
                    file.sync_data().map_err(io)?;
                    return Ok(other);
                }
            }
        }
        file.sync_data().map_err(io)?;
        session
            .provide(self.now(), Answer::BlobEnd)
            .map_err(Fail::Session)
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

enum Fail {
    Session(esync_client::core::session::SessionError),
    Demo(DemoError),
}
