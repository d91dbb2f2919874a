//! # esync-examples
//!
//! The end-to-end demo of esync-rs, in one process and with no external
//! service: `cargo run --release -p esync-examples --bin demo`.
//!
//! - **Server** ([`server`]): a fleet CA, an Image repository and a
//!   Director repository (esync-uptane's signing side), packages with
//!   deltas (esync-package).
//! - **Vehicle** ([`vehicle`]): the Client's embedded broker (mutual TLS on
//!   127.0.0.1) and three esync-agent runtimes with file-backed A/B devices
//!   in a temporary directory, each connected with its own certificate:
//!   `/powertrain/ecm` (stage 0; safety-critical: install precondition,
//!   full Uptane verification, delta support), `/adas/camera` (stage 1;
//!   partial verification, delta support) and `/body/bcm` (stage 1;
//!   partial verification, no delta support).
//! - **Client** ([`gateway`]): the real esync-client. Its session core
//!   checks in with the Server (signed manifest), verifies the Director and
//!   Image metadata in full, plans delta or full image per Agent from its
//!   inventory and downloads and hashes the blobs into a download
//!   directory; its orchestrator loop (`esync_client::runtime::vehicle`)
//!   then offers, transfers, prepares and installs stage by stage through
//!   the broker, and commits or rolls back every component, journaling the
//!   campaign in a file.
//!
//! Campaign 1 installs version 2.0.0 on every ECU (the ECM by delta in
//! stage 0, then the camera by delta and the BCM by full image in parallel
//! in stage 1) and commits; campaign 2 offers 3.0.0 whose BCM image fails
//! its power-on self-test, so every component of the package is rolled
//! back (the ECM, installed in stage 0, and the camera too) and every ECU
//! ends on 2.0.0. After each campaign the demo
//! proves what runs by hashing the running slot files. [`run_demo`]
//! returns an error on any deviation.

#![forbid(unsafe_code)]

pub mod backend;
pub mod firmware;
pub mod fleet;
pub mod gateway;
pub mod server;
pub mod vehicle;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use esync_agent::device::sha256;
use esync_client::broker::BrokerStats;
use esync_client::core::orchestrate::{Outcome, Phase};
use esync_proto::id::{DevicePath, EcuSerial, HardwareId, Sha256Digest, SoftwareVersion, Vin};
use esync_proto::message::{ImageEncoding, Participant, Signal, SignalValue};
use esync_uptane::PublicKey;

use gateway::Gateway;
use server::{EcuSpec, Release, Server};
use vehicle::{AgentSetup, RunningAgent};

/// How one component travelled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// The full image.
    Full,
    /// A patch from `from`.
    Delta {
        /// Source version.
        from: String,
    },
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Encoding::Full => f.write_str("full image"),
            Encoding::Delta { from } => write!(f, "delta from {from}"),
        }
    }
}

/// What became of one component of a campaign (from the Client's report).
#[derive(Clone, Debug)]
pub struct ComponentLine {
    /// Device.
    pub device: DevicePath,
    /// Install stage.
    pub stage: u16,
    /// How it travelled.
    pub encoding: Encoding,
    /// Bytes of the blob sent to the Agent.
    pub bytes_sent: u64,
    /// Length of the full image.
    pub image_len: u64,
    /// Where it ended, e.g. "confirmed 2.0.0" or "rolled back, runs 2.0.0".
    pub result: String,
}

/// Outcome of a campaign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CampaignOutcome {
    /// Every component installed and was committed.
    Installed,
    /// A component failed; every component of the package was rolled back.
    RolledBack {
        /// The Client's cause.
        reason: String,
    },
}

/// Report of one campaign.
#[derive(Clone, Debug)]
pub struct CampaignReport {
    /// Package id.
    pub package: String,
    /// Outcome.
    pub outcome: CampaignOutcome,
    /// Per component, in (stage, device) order.
    pub components: Vec<ComponentLine>,
    /// Blob bytes the Client downloaded for it.
    pub downloaded: u64,
}

/// First 8 bytes of a digest in hex.
pub fn short(d: &Sha256Digest) -> String {
    hex(&d.0[..8])
}

/// The demo failed: what failed, in which part.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// Setting up the Server side (CA, repositories, packages).
    #[error("server: {0}")]
    Server(String),
    /// Setting up or running the vehicle (broker, Agents, devices).
    #[error("vehicle: {0}")]
    Vehicle(String),
    /// Uptane verification or reports.
    #[error("uptane: {0}")]
    Uptane(String),
    /// A protocol exchange went wrong.
    #[error("protocol: {0}")]
    Protocol(String),
    /// No answer in time.
    #[error("timeout: {0}")]
    Timeout(String),
    /// An end-state check failed (versions, hashes, counters).
    #[error("check failed: {0}")]
    Check(String),
    /// File-system work.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Options of [`run_demo`].
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Size of each ECU's first firmware image in bytes.
    pub image_size: usize,
    /// Where the devices live (a temporary directory when `None`; kept
    /// after the run when given).
    pub work_dir: Option<PathBuf>,
    /// Print progress reports, presence events and other details.
    pub verbose: bool,
    /// Transfer chunk size (in the signed package descriptions).
    pub chunk_size: u32,
}

impl Default for DemoOptions {
    /// 384 KiB images, temporary directory, 16 KiB chunks, quiet.
    fn default() -> Self {
        DemoOptions {
            image_size: 384 * 1024,
            work_dir: None,
            verbose: false,
            chunk_size: 16 * 1024,
        }
    }
}

/// What an ECU runs at the end, read from its device files.
#[derive(Clone, Debug)]
pub struct EcuFinal {
    /// Device path.
    pub device: DevicePath,
    /// Version the Agent reports in the inventory.
    pub reported_version: SoftwareVersion,
    /// Version in the device's boot-control record.
    pub slot_version: SoftwareVersion,
    /// Running slot.
    pub slot: char,
    /// SHA-256 of the running slot file's image bytes.
    pub slot_sha256: Sha256Digest,
    /// SHA-256 of the Server's image of that version.
    pub expected_sha256: Sha256Digest,
}

/// What the demo did.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Both campaigns.
    pub campaigns: Vec<CampaignReport>,
    /// Final state of each ECU.
    pub final_ecus: Vec<EcuFinal>,
    /// Signed vehicle manifests the Server verified and accepted.
    pub manifests_accepted: u32,
    /// Agent-signed version reports in the last manifest accepted.
    pub manifest_reports: usize,
    /// Broker counters at the end.
    pub broker: BrokerStats,
    /// Envelopes the Agents dropped (bad signature, replay): must be 0.
    pub agent_dropped: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Prints `line` when `show`.
pub fn say(show: bool, line: &str) {
    if show {
        println!("{line}");
    }
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), DemoError> {
    if cond {
        Ok(())
    } else {
        Err(DemoError::Check(what()))
    }
}

fn parse<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> Result<T, DemoError> {
    r.map_err(|e| DemoError::Server(format!("{what}: {e}")))
}

/// Firmware of one ECU, per version.
struct Images {
    ecu: EcuSpec,
    v1: Vec<u8>,
    v2: Vec<u8>,
    v3: Vec<u8>,
}

/// Runs the whole demo; see the crate docs.
pub async fn run_demo(opts: DemoOptions) -> Result<Summary, DemoError> {
    let started = Instant::now();
    let now_s = i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX);
    let (_tmp, work) = match &opts.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            (None, d.clone())
        }
        None => {
            let t = tempfile::tempdir()?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let v = |s: &str| parse(SoftwareVersion::new(s), "version");
    let (v1, v2, v3) = (v("1.0.0")?, v("2.0.0")?, v("3.0.0")?);
    let vin = parse(Vin::new("WVWZZZ1JZXW000001"), "VIN")?;

    println!("== esync-rs end-to-end demo: one vehicle, three ECUs, two campaigns ==");
    println!("work directory: {}", work.display());

    // ---------------------------------------------------------------- Server
    println!("\n[1/5] Server: fleet CA, Image and Director repositories, firmware");
    let mut server = Server::new(vin.clone(), now_s, opts.chunk_size)?;
    let ecm = EcuSpec {
        device: parse(DevicePath::new("/powertrain/ecm"), "device")?,
        hardware_id: parse(HardwareId::new("ecm-hw-1"), "hardware id")?,
        serial: parse(EcuSerial::new("ECM0001"), "serial")?,
        stage: 0,
    };
    let bcm = EcuSpec {
        device: parse(DevicePath::new("/body/bcm"), "device")?,
        hardware_id: parse(HardwareId::new("bcm-hw-2"), "hardware id")?,
        serial: parse(EcuSerial::new("BCM0001"), "serial")?,
        stage: 1,
    };
    let cam = EcuSpec {
        device: parse(DevicePath::new("/adas/camera"), "device")?,
        hardware_id: parse(HardwareId::new("cam-hw-3"), "hardware id")?,
        serial: parse(EcuSerial::new("CAM0001"), "serial")?,
        stage: 1,
    };
    let mk = |ecu: &EcuSpec, seed: u64, v3_healthy: bool| {
        let d = ecu.device.as_str();
        let a = firmware::initial(d, "1.0.0", seed, opts.image_size);
        let b = firmware::derive(&a, d, "2.0.0", seed + 1, true);
        let c = firmware::derive(&b, d, "3.0.0", seed + 2, v3_healthy);
        Images {
            ecu: ecu.clone(),
            v1: a,
            v2: b,
            v3: c,
        }
    };
    let images = [mk(&ecm, 11, true), mk(&cam, 31, true), mk(&bcm, 21, false)];
    for im in &images {
        println!(
            "  {}: 1.0.0 {} bytes sha256 {}..., 2.0.0 {} bytes {}..., 3.0.0 {} bytes {}...",
            im.ecu.device,
            im.v1.len(),
            short(&sha256(&im.v1)),
            im.v2.len(),
            short(&sha256(&im.v2)),
            im.v3.len(),
            short(&sha256(&im.v3)),
        );
    }
    println!("  (the BCM's 3.0.0 carries a defect: its power-on self-test fails)");
    let vehicle_id = server.issue_vehicle(now_s)?;
    let agent_ids = [
        server.issue_agent(&ecm.device, now_s)?,
        server.issue_agent(&cam.device, now_s)?,
        server.issue_agent(&bcm.device, now_s)?,
    ];
    println!(
        "  issued certificates: vehicle {vin}, agents {}, {}, {}",
        ecm.device, cam.device, bcm.device
    );

    // --------------------------------------------------------------- Vehicle
    println!("\n[2/5] Vehicle: embedded broker and three Agents");
    let (broker, endpoint) = vehicle::start_broker(&vehicle_id, &server.anchors, &vin).await?;
    println!(
        "  broker listening on {} (mutual TLS, fleet CA, VIN {vin})",
        broker.local_addr()
    );
    let client_key = vehicle_id.signing_key.verifying_key();
    let director_root = server.director_root()?;
    let image_root = server.image_root()?;
    let capacity = vehicle::capacity_for(opts.image_size + 64 * 1024);
    let all_ecus = [ecm.clone(), cam.clone(), bcm.clone()];
    let mut agents: Vec<RunningAgent> = Vec::new();
    for (i, (im, id)) in images.iter().zip(agent_ids.iter()).enumerate() {
        // The broker admits each Agent by its certificate; the Client
        // verifies its envelopes with that certificate's key.
        let peer = esync_identity::parse_identity(&id.cert_der)
            .map_err(|e| DemoError::Vehicle(format!("agent certificate: {e}")))?;
        let who = peer
            .participant()
            .ok_or_else(|| DemoError::Vehicle("agent certificate names no participant".into()))?;
        check(who == Participant::Device(im.ecu.device.clone()), || {
            format!("certificate of {} names {who}", im.ecu.device)
        })?;
        server.add_ecu_key(
            im.ecu.serial.clone(),
            PublicKey::from_verifying_key(peer.verifying_key),
        );
        let safety =
            (i == 0).then(|| "speed == 0 && gear == \"P\" && battery_soc >= 40".to_string());
        let setup = AgentSetup {
            ecu: im.ecu.clone(),
            identity: id.clone(),
            image: im.v1.clone(),
            version: v1.clone(),
            release_counter: 1,
            safety_precondition: safety.clone(),
            deltas: i < 2,
            fault_version: None,
        };
        let dir = work.join(format!(
            "agent-{}",
            &im.ecu.device.as_str()[1..].replace('/', "-")
        ));
        agents.push(vehicle::start_agent(
            setup,
            &dir,
            capacity,
            broker.local_addr(),
            &server.anchors,
            &vin,
            client_key,
            &director_root,
            &image_root,
            &all_ecus,
        )?);
        println!(
            "  agent {} ({}, serial {}): device {} running 1.0.0; {}",
            im.ecu.device,
            im.ecu.hardware_id,
            im.ecu.serial,
            dir.display(),
            match (&safety, i < 2) {
                (Some(p), _) =>
                    format!("stage {}, safety-critical, precondition `{p}`, full Uptane verification, deltas", im.ecu.stage),
                (None, true) => format!("stage {}, partial Uptane verification, deltas", im.ecu.stage),
                (None, false) => format!("stage {}, partial Uptane verification, no delta support", im.ecu.stage),
            }
        );
    }
    let devs = [ecm.device.clone(), cam.device.clone(), bcm.device.clone()];
    server.set_vehicle_key(PublicKey::from_verifying_key(client_key));
    let mut gw = Gateway::start(
        endpoint,
        broker.peer_keys(),
        &vehicle_id,
        vin.clone(),
        director_root.clone(),
        image_root.clone(),
        &work.join("client"),
        parked(),
    )
    .await?;
    gw.wait_connected(&devs).await?;
    println!(
        "  Client: esync-client's orchestrator loop on the broker, campaign journal in {}",
        work.join("client").display()
    );
    println!("  every Agent connected to the broker (presence)");

    let result = campaigns(
        &mut server,
        &mut gw,
        &images,
        &devs,
        &agents,
        capacity,
        [&v1, &v2, &v3],
    )
    .await;

    // Stop the Agents whatever happened; the first error wins.
    let mut agent_dropped = 0;
    let mut stop_err = None;
    for a in agents {
        match a.stop().await {
            Ok(s) => agent_dropped += s.dropped,
            Err(e) => {
                stop_err.get_or_insert(e);
            }
        }
    }
    let broker_stats = broker.stats();
    broker.shutdown();
    let (campaign_reports, final_ecus) = result?;
    if let Some(e) = stop_err {
        return Err(e);
    }
    check(agent_dropped == 0, || {
        format!("Agents dropped {agent_dropped} envelopes")
    })?;
    check(
        broker_stats.dropped_bad_signature == 0
            && broker_stats.dropped_sender_mismatch == 0
            && broker_stats.dropped_malformed == 0
            && broker_stats.dropped_queue_full == 0,
        || format!("broker dropped frames: {broker_stats:?}"),
    )?;

    let summary = Summary {
        campaigns: campaign_reports,
        final_ecus,
        manifests_accepted: server.manifests_accepted,
        manifest_reports: server.last_manifest_reports,
        broker: broker_stats,
        agent_dropped,
        elapsed: started.elapsed(),
    };
    print_summary(&summary);
    Ok(summary)
}

type CampaignsResult = (Vec<CampaignReport>, Vec<EcuFinal>);

/// The vehicle state the Agents and the Client read: parked.
fn parked() -> Vec<Signal> {
    let sig = |name: &str, value| Signal {
        name: name.into(),
        value,
    };
    vec![
        sig("speed", SignalValue::Int(0)),
        sig("gear", SignalValue::Text("P".into())),
        sig("battery_soc", SignalValue::Int(82)),
    ]
}

async fn campaigns(
    server: &mut Server,
    gw: &mut Gateway,
    images: &[Images],
    devs: &[DevicePath],
    agents: &[RunningAgent],
    capacity: u64,
    [v1, v2, v3]: [&SoftwareVersion; 3],
) -> Result<CampaignsResult, DemoError> {
    let mut reports = Vec::new();

    // ------------------------------------------------------------ Campaign 1
    println!("\n[3/5] Campaign 1: 2.0.0 for every ECU");
    let releases = images
        .iter()
        .map(|im| Release {
            ecu: im.ecu.clone(),
            version: v2.clone(),
            release_counter: 2,
            image: im.v2.clone(),
            delta_sources: vec![(v1.clone(), im.v1.clone())],
        })
        .collect();
    let c1 = server.publish_campaign("campaign-2026-11-v2", releases)?;
    println!(
        "  Server: package {} with {} components, delta from 1.0.0 ({}); Director signed targets for {} ECUs",
        c1.package.id(),
        c1.package.components().len(),
        esync_package::package::format_name(esync_package::DEFAULT_FORMAT),
        c1.directed.len()
    );
    let r1 = campaign(server, gw, devs).await?;
    check(r1.outcome == CampaignOutcome::Installed, || {
        format!("campaign 1 did not install: {:?}", r1.outcome)
    })?;
    let _finals1 = end_state(gw, images, devs, agents, capacity, v2, |im| &im.v2).await?;
    reports.push(r1);

    // ------------------------------------------------------------ Campaign 2
    println!("\n[4/5] Campaign 2: 3.0.0 for every ECU (the BCM image is defective)");
    let releases = images
        .iter()
        .map(|im| Release {
            ecu: im.ecu.clone(),
            version: v3.clone(),
            release_counter: 3,
            image: im.v3.clone(),
            delta_sources: vec![(v2.clone(), im.v2.clone())],
        })
        .collect();
    let c2 = server.publish_campaign("campaign-2026-11-v3", releases)?;
    println!(
        "  Server: package {} with {} components, delta from 2.0.0; Director targets replaced",
        c2.package.id(),
        c2.package.components().len()
    );
    let r2 = campaign(server, gw, devs).await?;
    check(
        matches!(r2.outcome, CampaignOutcome::RolledBack { .. }),
        || format!("campaign 2 should have been rolled back: {:?}", r2.outcome),
    )?;
    let finals2 = end_state(gw, images, devs, agents, capacity, v2, |im| &im.v2).await?;
    reports.push(r2);

    println!("\n[5/5] Done");
    Ok((reports, finals2))
}

/// Inventory, check-in, full verification, downloads, then the
/// orchestrated install: all by the real Client.
async fn campaign(
    server: &mut Server,
    gw: &mut Gateway,
    devs: &[DevicePath],
) -> Result<CampaignReport, DemoError> {
    let inv = gw.inventory(devs).await?;
    for r in inv.values() {
        println!(
            "  inventory {}: {} (rc {}), {:?} verification, {:?}, delta formats {:?}",
            r.device,
            r.installed.version,
            r.installed.release_counter.0,
            r.verification,
            r.criticality,
            r.delta.formats
        );
    }
    let manifest = gw.manifest(devs).await?;
    let (ready, fetched) = gw.fetch(server, &inv, manifest)?;
    let ready = ready.ok_or_else(|| DemoError::Protocol("the Server had no update".into()))?;
    println!(
        "  Client: checked in{}; Uptane full verification of the Director and Image repositories passed ({} metadata files)",
        if fetched.manifest_uploaded { format!(" (signed vehicle manifest with {} Agent-signed version reports uploaded; the Server verified every signature)", server.last_manifest_reports) } else { String::new() },
        fetched.metadata_files
    );
    let mut encodings = BTreeMap::new();
    for c in &ready.components {
        let enc = match &c.encoding {
            ImageEncoding::Full => Encoding::Full,
            ImageEncoding::Delta { from_version, .. } => Encoding::Delta {
                from: from_version.to_string(),
            },
        };
        println!(
            "    {} -> {} ({enc}, {} bytes downloaded and hashed)",
            c.device, c.target_name, c.artifact.length
        );
        encodings.insert(c.device.clone(), (enc, c.artifact.length));
    }
    let package = ready.package.id().to_string();
    let image_lens: BTreeMap<DevicePath, u64> = ready
        .package
        .components()
        .iter()
        .map(|c| (c.device.clone(), c.image.length))
        .collect();
    println!("  Client: installing (offer, chunked transfer, prepare, stage by stage, then commit or roll back every component)");
    let report = gw.install(ready).await?;
    let mut components = Vec::new();
    for c in &report.components {
        let result = match &c.end {
            Phase::Confirmed { version } => format!("confirmed {version}"),
            Phase::RolledBack { running } => match &c.failure {
                Some(f) => format!("failed ({:?}), rolled back, runs {running}", f.code),
                None => format!("rolled back, runs {running}"),
            },
            Phase::NotInstalled => "not installed".to_string(),
            other => format!("{other:?}"),
        };
        println!(
            "    stage {} {}: {result} ({} install attempt(s))",
            c.stage, c.device, c.attempts
        );
        let (encoding, bytes_sent) = encodings
            .get(&c.device)
            .cloned()
            .unwrap_or((Encoding::Full, 0));
        components.push(ComponentLine {
            device: c.device.clone(),
            stage: c.stage,
            encoding,
            bytes_sent,
            image_len: image_lens.get(&c.device).copied().unwrap_or(0),
            result,
        });
    }
    let outcome = match report.outcome {
        Outcome::Installed => CampaignOutcome::Installed,
        Outcome::Failed { cause } => CampaignOutcome::RolledBack { reason: cause },
    };
    match &outcome {
        CampaignOutcome::Installed => println!("  package {package}: every component committed"),
        CampaignOutcome::RolledBack { reason } => {
            println!("  package {package} failed ({reason}): every component rolled back")
        }
    }
    Ok(CampaignReport {
        package,
        outcome,
        components,
        downloaded: fetched.blob_bytes,
    })
}

/// Inventory again and proof from the device files.
async fn end_state(
    gw: &mut Gateway,
    images: &[Images],
    devs: &[DevicePath],
    agents: &[RunningAgent],
    capacity: u64,
    want_v: &SoftwareVersion,
    expected: impl Fn(&Images) -> &Vec<u8>,
) -> Result<Vec<EcuFinal>, DemoError> {
    let inv = gw.inventory(devs).await?;
    let mut out = Vec::new();
    println!("  end state (inventory, and the running slot file hashed on disk):");
    for (im, agent) in images.iter().zip(agents) {
        check(!agent.is_finished(), || {
            format!("the Agent of {} stopped", im.ecu.device)
        })?;
        let want_img = expected(im);
        let want_sha = sha256(want_img);
        let r = inv
            .get(&im.ecu.device)
            .ok_or_else(|| DemoError::Check(format!("no inventory for {}", im.ecu.device)))?;
        let slot = vehicle::read_slot(&agent.device_dir, capacity)?;
        println!(
            "    {:<16} reports {}  slot {} holds {}  sha256 {}  expected {}  {}",
            im.ecu.device.as_str(),
            r.installed.version,
            slot.slot,
            slot.version,
            short(&slot.file_sha256),
            short(&want_sha),
            if slot.file_sha256 == want_sha {
                "OK"
            } else {
                "MISMATCH"
            }
        );
        check(&r.installed.version == want_v, || {
            format!(
                "{} reports {}, expected {want_v}",
                im.ecu.device, r.installed.version
            )
        })?;
        check(r.installed.sha256 == want_sha, || {
            format!("{} reports another image hash", im.ecu.device)
        })?;
        check(
            &slot.version == want_v && slot.file_sha256 == want_sha,
            || {
                format!(
                    "{}: running slot holds {} with sha256 {}, expected {want_v} {}",
                    im.ecu.device,
                    slot.version,
                    hex(&slot.file_sha256.0),
                    hex(&want_sha.0)
                )
            },
        )?;
        check(!slot.on_trial, || {
            format!("{} is still on trial", im.ecu.device)
        })?;
        out.push(EcuFinal {
            device: im.ecu.device.clone(),
            reported_version: r.installed.version.clone(),
            slot_version: slot.version,
            slot: slot.slot,
            slot_sha256: slot.file_sha256,
            expected_sha256: want_sha,
        });
    }
    Ok(out)
}

fn print_summary(s: &Summary) {
    println!("\n== Summary ==");
    println!(
        "{:<22} {:>5} {:<16} {:<20} {:>10} {:>10}  result",
        "campaign", "stage", "device", "transfer", "bytes", "image"
    );
    for c in &s.campaigns {
        for comp in &c.components {
            println!(
                "{:<22} {:>5} {:<16} {:<20} {:>10} {:>10}  {}",
                c.package,
                comp.stage,
                comp.device.as_str(),
                comp.encoding.to_string(),
                comp.bytes_sent,
                comp.image_len,
                comp.result
            );
        }
        match &c.outcome {
            CampaignOutcome::Installed => println!("{:<22} => installed and confirmed", ""),
            CampaignOutcome::RolledBack { reason } => {
                println!("{:<22} => rolled back: {reason}", "")
            }
        }
    }
    println!("final state:");
    for e in &s.final_ecus {
        println!(
            "  {:<16} {} (slot {}), sha256 {} == Server's {}: {}",
            e.device.as_str(),
            e.slot_version,
            e.slot,
            short(&e.slot_sha256),
            short(&e.expected_sha256),
            if e.slot_sha256 == e.expected_sha256 {
                "yes"
            } else {
                "NO"
            }
        );
    }
    println!(
        "broker: {} connections admitted, {} frames in, {} deliveries, 0 dropped; Agents dropped {} envelopes",
        s.broker.connections_admitted, s.broker.frames_in, s.broker.deliveries, s.agent_dropped
    );
    println!(
        "Server: {} signed vehicle manifest(s) verified and accepted, the last with {} Agent-signed version reports",
        s.manifests_accepted, s.manifest_reports
    );
    println!("elapsed: {:.2} s", s.elapsed.as_secs_f64());
}
