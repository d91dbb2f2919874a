//! `esync-client`: the vehicle Client's command line.
//!
//! ```text
//! esync-client provision --dir D --server https://HOST:PORT \
//!                        --cert VEHICLE_CHAIN.pem --key VEHICLE.key --ca FLEET_CA.pem \
//!                        --director-root 1.root.json --image-root 1.root.json
//! esync-client status    --dir D
//! esync-client run       --dir D [--interval-secs 60] [--once] \
//!                        [--broker 127.0.0.1:8883] --agent /powertrain/ecm [--agent ...] [--hmi NAME]
//! ```
//!
//! `provision` checks the vehicle certificate against the fleet CA and the
//! two Uptane roots, then writes the state directory
//! (`esync_client::runtime::state`). `run` starts the embedded broker
//! (mutual TLS with the vehicle certificate; Agents' envelopes are verified
//! with the keys of the certificates it admitted) and the orchestrator loop
//! (`runtime::vehicle`, campaign journal `D/client.journal`). It first
//! finishes a campaign the journal holds (confirm after a journaled
//! verdict, roll back before it); then, at every interval, it asks the
//! `--agent`s for their inventory and, when what they run changed, for
//! signed version reports (the vehicle manifest, signed with the vehicle
//! key; without `--agent`, `D/manifest.json`), checks in with the Server
//! over mutual TLS (manifest hash; the manifest uploaded when the Server
//! asks), verifies
//! the Director and Image metadata in full into `D/trust/`, downloads the
//! planned blobs (resumable) into `D/downloads/`, installs the package
//! through the broker (download and install consent through the `--hmi`
//! listener when the policy asks), and queues the final report in `D/reports.journal`,
//! sent when the link to the Server works (`PUT /v1/reports/{id}`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Parser, Subcommand};
use esync_client::broker::{Broker, BrokerConfig};
use esync_client::core::session::download::TransferLimits;
use esync_client::core::session::policy::{Conditions, Policy};
use esync_client::core::session::reports::ReportOutbox;
use esync_client::core::session::{Answer, Session, SessionConfig, SessionStep};
use esync_client::core::OrchestratorConfig;
use esync_client::runtime::session::{drive, DriveError, SessionHost};
use esync_client::runtime::vehicle::{
    api_report, report_id, send_reports, InstallAttempt, VehicleHost, VehicleRuntime,
};
use esync_client::runtime::{ConfigFile, StateDir};
use esync_identity::parse_identity;
use esync_proto::envelope::{EnvelopeSigner, ReceiverIdentity, Verifier};
use esync_proto::frame::FrameLimits;
use esync_proto::id::{DevicePath, EcuSerial, ListenerName, Sha256Digest};
use esync_proto::message::{InstalledImage, InventoryReport, Participant};
use esync_store::file::FileJournal;
use esync_transport::{Transport, WallClock};
use esync_uptane::UnixTime;

#[derive(Parser)]
#[command(name = "esync-client", about = "esync vehicle Client")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Writes a state directory from the factory-issued identity and roots.
    Provision {
        /// State directory.
        #[arg(long)]
        dir: PathBuf,
        /// Server device API, `https://host[:port]`.
        #[arg(long)]
        server: String,
        /// Vehicle certificate chain (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// Vehicle private key (PKCS#8 PEM).
        #[arg(long)]
        key: PathBuf,
        /// Fleet CA certificate(s) (PEM).
        #[arg(long)]
        ca: PathBuf,
        /// Pinned Director root metadata (`1.root.json`).
        #[arg(long)]
        director_root: PathBuf,
        /// Pinned Image repository root metadata.
        #[arg(long)]
        image_root: PathBuf,
    },
    /// Prints the identity, the server and the trusted metadata versions.
    Status {
        /// State directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Checks in and keeps the Uptane metadata current.
    Run {
        /// State directory.
        #[arg(long)]
        dir: PathBuf,
        /// Seconds between check-ins.
        #[arg(long, default_value_t = 60)]
        interval_secs: u64,
        /// Most seconds per request.
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
        /// One check-in (and install), then exit; failure exits non-zero.
        #[arg(long)]
        once: bool,
        /// Address of the embedded broker (loopback by default).
        #[arg(long, default_value = "127.0.0.1:8883")]
        broker: std::net::SocketAddr,
        /// Device path of an Agent of this vehicle (repeat for each).
        #[arg(long = "agent")]
        agents: Vec<String>,
        /// Listener name of the HMI that answers install consent.
        #[arg(long)]
        hmi: Option<String>,
        /// The Client's ECU serial in the vehicle manifest.
        #[arg(long, default_value = "primary")]
        primary_serial: String,
    },
}

const MAX_INPUT: u64 = 1024 * 1024;

fn read(path: &Path) -> Result<Vec<u8>, String> {
    match esync_store::file::read_bounded(path, MAX_INPUT) {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err(format!("{}: not found", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn read_text(path: &Path) -> Result<String, String> {
    String::from_utf8(read(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

fn status(dir: &Path) -> Result<(), String> {
    let state = StateDir::new(dir);
    let cfg = state.config().map_err(|e| e.to_string())?;
    let (id, _) = state.identity().map_err(|e| e.to_string())?;
    let peer = parse_identity(&id.cert_der).map_err(|e| e.to_string())?;
    println!("identity {:?}", peer.role);
    println!(
        "certificate valid {}..{} (serial {})",
        UnixTime(peer.not_before_unix).to_rfc3339(),
        UnixTime(peer.not_after_unix).to_rfc3339(),
        peer.serial_hex
    );
    println!("server {}", cfg.server_url);
    for (name, repo) in [("director", state.director()), ("image", state.image())] {
        let repo = repo.map_err(|e| e.to_string())?;
        let v = |o: Option<u64>| o.map_or_else(|| "-".to_owned(), |v| v.to_string());
        println!(
            "{name}: root {} timestamp {} snapshot {} targets {}",
            repo.root().meta.version,
            v(repo.timestamp().map(|t| t.meta.version)),
            v(repo.snapshot().map(|t| t.meta.version)),
            v(repo.targets("targets").map(|t| t.meta.version)),
        );
    }
    let manifest = state.manifest().map_err(|e| e.to_string())?;
    println!(
        "manifest {}",
        manifest.map_or_else(|| "none".to_owned(), |m| format!("{} bytes", m.len()))
    );
    let mut partial = 0;
    if let Ok(entries) = std::fs::read_dir(state.downloads_dir()) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(".partial") {
                partial += 1;
            }
        }
    }
    println!("partial downloads {partial}");
    Ok(())
}

/// What one `run` loop holds across check-ins.
struct Vehicle {
    state: StateDir,
    rt: VehicleRuntime,
    outbox: ReportOutbox<FileJournal>,
    agents: Vec<DevicePath>,
    accepted: Option<Sha256Digest>,
    primary: EcuSerial,
    /// The last manifest built from the Agents' reports and the installed
    /// images it describes: rebuilt (fresh nonces) only when they change,
    /// so an unchanged vehicle checks in with the hash alone.
    manifest: Option<(Vec<InstalledImage>, Vec<u8>)>,
    started: std::time::Instant,
    timeout: Duration,
    _broker: esync_client::broker::BrokerHandle,
}

/// Most time a campaign may take once started.
const CAMPAIGN_TIMEOUT: Duration = Duration::from_secs(3600);

impl Vehicle {
    async fn start(
        dir: &Path,
        broker: std::net::SocketAddr,
        agents: &[String],
        hmi: Option<&str>,
        primary: &str,
        timeout: Duration,
    ) -> Result<Vehicle, String> {
        let primary = EcuSerial::new(primary).map_err(|e| format!("--primary-serial: {e}"))?;
        let state = StateDir::new(dir);
        state.config().map_err(|e| e.to_string())?;
        let (id, anchors) = state.identity().map_err(|e| e.to_string())?;
        let vin = esync_client::runtime::state::vin_of(&id).map_err(|e| e.to_string())?;
        let agents = agents
            .iter()
            .map(|a| DevicePath::new(a.as_str()).map_err(|e| format!("--agent {a}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let hmi = hmi
            .map(|h| ListenerName::new(h).map_err(|e| format!("--hmi {h}: {e}")))
            .transpose()?;
        let signer = Arc::new(Mutex::new(EnvelopeSigner::new(
            Participant::Client,
            id.signing_key.clone(),
            1,
            FrameLimits::default(),
        )));
        let tls = esync_identity::server_tls_config(&id, &anchors).map_err(|e| e.to_string())?;
        let mut cfg = BrokerConfig::new(tls, vin);
        cfg.listen = broker;
        cfg.presence_signer = Some(Arc::clone(&signer));
        let (handle, endpoint) = Broker::start(cfg)
            .await
            .map_err(|e| format!("broker on {broker}: {e}"))?;
        // The vehicle state comes from a provider not wired here: no
        // signals (preconditions that need them stay unmet).
        let (_tx, conditions) = tokio::sync::watch::channel(Conditions::default());
        let host = VehicleHost {
            config: OrchestratorConfig::default(),
            journal: Box::new(FileJournal::new(dir, "client.journal")),
            downloads: state.downloads_dir(),
            signer,
            verifier: Verifier::new(
                ReceiverIdentity {
                    me: Participant::Client,
                    groups: vec![],
                },
                FrameLimits::default(),
            ),
            keys: Box::new(handle.peer_keys()),
            policy: Policy::default(),
            hmi,
            conditions,
            clock: WallClock::system(),
        };
        let rt = VehicleRuntime::recover(host, Transport::boxed(endpoint))
            .await
            .map_err(|e| e.to_string())?;
        let outbox = ReportOutbox::open(
            FileJournal::new(dir, "reports.journal"),
            &TransferLimits::default(),
        )
        .map_err(|e| e.to_string())?;
        let mut v = Vehicle {
            state,
            rt,
            outbox,
            agents,
            accepted: None,
            primary,
            manifest: None,
            started: std::time::Instant::now(),
            timeout,
            _broker: handle,
        };
        // A campaign the journal holds is finished first.
        if let Some(r) =
            v.rt.finish(CAMPAIGN_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?
        {
            println!("resumed campaign {}: {:?}", r.package, r.outcome);
        }
        v.queue_reports()?;
        Ok(v)
    }

    /// Moves the orchestrator's final reports into the report outbox.
    fn queue_reports(&mut self) -> Result<(), String> {
        for r in self.rt.take_reports() {
            let wall = WallClock::system().now_ms();
            let (Some(body), Some(id)) = (
                api_report(&r, self.rt.client().inventory(), wall),
                report_id(&r.package),
            ) else {
                // An Agent of the package never reported its identity: the
                // report stays in the orchestrator's journal.
                eprintln!(
                    "esync-client: report of {} kept: an ECU is unknown",
                    r.package
                );
                continue;
            };
            self.outbox.queue(id, &body).map_err(|e| e.to_string())?;
            self.rt
                .report_delivered(&r.package)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// One check-in: inventory, session (verification, downloads), install,
    /// reports. `Err((retryable, why))`.
    async fn run_once(&mut self) -> Result<(), (bool, String)> {
        let fatal = |e: String| (false, e);
        let http = self.state.http().map_err(|e| fatal(e.to_string()))?;
        let inventory: Vec<InventoryReport> = if self.agents.is_empty() {
            Vec::new()
        } else {
            let inv = self
                .rt
                .inventory(&self.agents, self.timeout)
                .await
                .map_err(|e| (true, e.to_string()))?;
            self.agents
                .iter()
                .filter_map(|d| inv.agent(d)?.report.clone())
                .collect()
        };
        let (identity, _) = self.state.identity().map_err(|e| fatal(e.to_string()))?;
        let vin =
            esync_client::runtime::state::vin_of(&identity).map_err(|e| fatal(e.to_string()))?;
        let manifest = if self.agents.is_empty() {
            // No Agents named: the manifest the factory left, if any.
            self.state
                .manifest()
                .map_err(|e| fatal(e.to_string()))?
                .unwrap_or_default()
        } else {
            let installed: Vec<InstalledImage> =
                inventory.iter().map(|r| r.installed.clone()).collect();
            match &self.manifest {
                Some((images, bytes)) if *images == installed => bytes.clone(),
                _ => {
                    let key = esync_uptane::PrivateKey::from_seed(&identity.signing_key.to_bytes());
                    let bytes = self
                        .rt
                        .vehicle_manifest(
                            &self.agents,
                            vin.clone(),
                            self.primary.clone(),
                            &key,
                            self.timeout,
                        )
                        .await
                        .map_err(|e| (true, e.to_string()))?;
                    self.manifest = Some((installed, bytes.clone()));
                    bytes
                }
            }
        };
        let mut session = Session::open(
            esync_store::trust::DirTrustStore::new(&self.state.director_dir()),
            esync_store::trust::DirTrustStore::new(&self.state.image_dir()),
            vin,
            self.accepted,
            SessionConfig::default(),
        )
        .map_err(|e| fatal(e.to_string()))?;
        let host = SessionHost {
            http: &http,
            downloads: self.state.downloads_dir(),
            request_timeout: self.timeout,
            idle_timeout: self.timeout,
            started: self.started,
        };
        let step = session
            .check_in(host.now(), manifest, inventory)
            .map_err(|e| fatal(e.to_string()))?;
        // Download consent, when the policy asks for it, through the HMI
        // listener on the broker.
        let mut step = step;
        let end = loop {
            match drive(&mut session, &host, step, |_| None).await {
                Err(DriveError::NoConsent(req)) => {
                    let wall = WallClock::system().now_ms();
                    let wait = Duration::from_millis(req.deadline_ms.saturating_sub(wall))
                        .min(self.timeout);
                    let until_wall_ms = req.deadline_ms;
                    match self
                        .rt
                        .ask_consent(*req, wait)
                        .await
                        .map_err(|e| (true, e.to_string()))?
                    {
                        Some(answer) => {
                            step = session
                                .provide(host.now(), Answer::Consent(&answer))
                                .map_err(|e| fatal(e.to_string()))?;
                        }
                        None => break Ok(SessionStep::Postponed { until_wall_ms }),
                    }
                }
                other => break other.map_err(|e| (true, e.to_string())),
            }
        };
        self.accepted = session.accepted_manifest();
        match end? {
            SessionStep::Ready(ready) => {
                println!(
                    "package {}: verified and downloaded, installing",
                    ready.package.id()
                );
                match self
                    .rt
                    .install(*ready, self.timeout, CAMPAIGN_TIMEOUT)
                    .await
                    .map_err(|e| (true, e.to_string()))?
                {
                    InstallAttempt::Report(r) => println!("package {}: {:?}", r.package, r.outcome),
                    other => println!("install not started: {other:?}"),
                }
            }
            other => println!("check-in: {other:?}"),
        }
        self.queue_reports().map_err(fatal)?;
        let started = self.started;
        let mono = move || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let sent = send_reports(&mut self.outbox, &http, mono, self.timeout)
            .await
            .map_err(|e| fatal(e.to_string()))?;
        if sent > 0 || !self.outbox.is_empty() {
            println!("reports: {sent} sent, {} waiting", self.outbox.len());
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments, reason = "the command line's options")]
async fn run(
    dir: &Path,
    interval: Duration,
    timeout: Duration,
    once: bool,
    broker: std::net::SocketAddr,
    agents: &[String],
    hmi: Option<&str>,
    primary: &str,
) -> Result<(), String> {
    let mut vehicle = Vehicle::start(dir, broker, agents, hmi, primary, timeout).await?;
    if !agents.is_empty() {
        let who: Vec<Participant> = vehicle
            .agents
            .iter()
            .cloned()
            .map(Participant::Device)
            .collect();
        if let Err(e) = vehicle.rt.wait_present(&who, timeout).await {
            eprintln!("esync-client: {e} (continuing)");
        }
    }
    if once {
        return vehicle.run_once().await.map_err(|e| e.1);
    }
    let mut failures: u32 = 0;
    loop {
        let wait = match vehicle.run_once().await {
            Ok(()) => {
                failures = 0;
                interval
            }
            Err((retryable, e)) => {
                eprintln!("esync-client: {e}");
                failures = failures.saturating_add(1);
                if retryable {
                    // 2, 4, 8 ... seconds, at most the interval (A14).
                    Duration::from_secs(1u64 << failures.min(16)).min(interval)
                } else {
                    interval
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Provision {
            dir,
            server,
            cert,
            key,
            ca,
            director_root,
            image_root,
        } => (|| {
            let vin = StateDir::new(&dir)
                .provision(
                    &ConfigFile { server_url: server },
                    &read_text(&cert)?,
                    &read_text(&key)?,
                    &read_text(&ca)?,
                    &read(&director_root)?,
                    &read(&image_root)?,
                )
                .map_err(|e| e.to_string())?;
            println!("provisioned {} for {vin}", dir.display());
            Ok(())
        })(),
        Cmd::Status { dir } => status(&dir),
        Cmd::Run {
            dir,
            interval_secs,
            timeout_secs,
            once,
            broker,
            agents,
            hmi,
            primary_serial,
        } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                rt.block_on(run(
                    &dir,
                    Duration::from_secs(interval_secs.max(1)),
                    Duration::from_secs(timeout_secs.max(1)),
                    once,
                    broker,
                    &agents,
                    hmi.as_deref(),
                    &primary_serial,
                ))
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("esync-client: {e}");
            ExitCode::FAILURE
        }
    }
}
