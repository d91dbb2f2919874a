//! The fleet demo on the real pipeline: the real `esync-server` in process
//! ([`crate::backend`]), a fleet of vehicles each with the real Client
//! (`VehicleRuntime` on its embedded broker, the session core over the
//! HTTPS device API) and 3 to 8 Agents of several hardware types on
//! file-backed A/B devices; one multi-component package whose deltas the
//! Server's delta worker builds; a campaign in two waves driven through the
//! admin API; one vehicle with an injected self-test failure that rolls the
//! whole package back.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use esync_client::core::orchestrate::Outcome;
use esync_client::core::session::{Session, SessionConfig, SessionStep};
use esync_client::runtime::session::{drive, SessionHost};
use esync_client::runtime::vehicle::{api_report, report_id};
use esync_client::runtime::{ConfigFile, StateDir};
use esync_proto::id::{DevicePath, EcuSerial, HardwareId, SoftwareVersion, Vin};
use esync_proto::message::ImageEncoding;
use esync_uptane::PublicKey;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::backend::Backend;
use crate::gateway::Gateway;
use crate::vehicle::{self, AgentSetup, EcuSpec};
use crate::{firmware, DemoError};

/// The hardware types of the fleet: device path, hardware id, install
/// stage, whether the Agent applies patches. The first three are the
/// package's components; every vehicle has them, and 0 to 5 of the others.
pub const HARDWARE: [(&str, &str, u16, bool); 8] = [
    ("/powertrain/ecm", "ecm-hw", 0, true),
    ("/adas/camera", "camera-hw", 1, true),
    ("/body/bcm", "bcm-hw", 1, false),
    ("/telematics/tcu", "tcu-hw", 0, true),
    ("/adas/radar", "radar-hw", 0, true),
    ("/body/hvac", "hvac-hw", 0, false),
    ("/body/seats", "seats-hw", 0, false),
    ("/infotainment/head-unit", "hu-hw", 0, true),
];

/// Components of the package (the first entries of [`HARDWARE`]).
pub const PACKAGE_COMPONENTS: usize = 3;

/// The package the campaign rolls out.
pub const PACKAGE: &str = "fleet-fw-2.0.0";

/// Options of [`run_fleet`].
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// Vehicles (at least 2).
    pub vehicles: usize,
    /// Size of each first firmware image in bytes.
    pub image_size: usize,
    /// Where everything lives (a temporary directory when `None`).
    pub work_dir: Option<PathBuf>,
    /// Progress bars on the terminal.
    pub progress: bool,
    /// Most time for the whole campaign.
    pub timeout: Duration,
}

impl FleetOptions {
    /// The full demo: 20 vehicles, 256 KiB first images, 170 s at most
    /// for the campaign (the `demo` binary's defaults).
    pub fn full() -> Self {
        Self {
            vehicles: 20,
            image_size: 256 * 1024,
            work_dir: None,
            progress: true,
            timeout: Duration::from_secs(170),
        }
    }

    /// The short mode CI runs (`demo --short`): 4 vehicles (waves of 2 and
    /// 2, the faulted vehicle in the first), 48 KiB first images, 60 s at
    /// most for the campaign.
    pub fn short() -> Self {
        Self {
            vehicles: 4,
            image_size: 48 * 1024,
            timeout: Duration::from_secs(60),
            ..Self::full()
        }
    }
}

/// How one vehicle ended.
#[derive(Clone, Debug)]
pub struct VehicleEnd {
    /// VIN.
    pub vin: String,
    /// Number of its Agents.
    pub agents: usize,
    /// Whether the self-test fault was injected in it.
    pub faulted: bool,
    /// `installed`, or `rolled back: CAUSE`.
    pub outcome: String,
    /// Version in the running slot of each package component, verified by
    /// hashing the slot file against the image the Server holds.
    pub running: Vec<(String, String)>,
    /// Bytes downloaded for the package.
    pub downloaded: u64,
    /// Bytes the full images of the package would have been.
    pub full_size: u64,
    /// Components sent as deltas.
    pub deltas: usize,
}

/// What [`run_fleet`] did.
#[derive(Clone, Debug)]
pub struct FleetSummary {
    /// Every vehicle, in VIN order.
    pub vehicles: Vec<VehicleEnd>,
    /// The Server's campaign record at the end (`GET /admin/v1/campaigns/{id}`).
    pub campaign: Value,
    /// Delta jobs the Server's worker finished.
    pub deltas_built: usize,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

impl FleetSummary {
    /// Vehicles that installed the package.
    pub fn updated(&self) -> usize {
        self.vehicles
            .iter()
            .filter(|v| v.outcome == "installed")
            .count()
    }

    /// Vehicles that rolled it back.
    pub fn rolled_back(&self) -> usize {
        self.vehicles
            .iter()
            .filter(|v| v.outcome.starts_with("rolled back"))
            .count()
    }

    /// Bytes the deltas saved against full images.
    pub fn bytes_saved(&self) -> u64 {
        self.vehicles
            .iter()
            .map(|v| v.full_size.saturating_sub(v.downloaded))
            .sum()
    }
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), DemoError> {
    if ok {
        Ok(())
    } else {
        Err(DemoError::Check(what()))
    }
}

fn vin_of(i: usize) -> String {
    format!("WVWZZZ1JZXW{:06}", i + 1)
}

/// The images of one hardware type: 1.0.0 (installed at the factory) and
/// 2.0.0 (the package's).
struct Firmware {
    v1: Vec<u8>,
    v2: Vec<u8>,
}

/// Runs the fleet demo; fails if any vehicle ends other than expected
/// (installed everywhere but the faulted vehicle, which runs 1.0.0 on every
/// component) or the Server's campaign record disagrees.
pub async fn run_fleet(opts: FleetOptions) -> Result<FleetSummary, DemoError> {
    check(opts.vehicles >= 2, || "at least 2 vehicles".into())?;
    let started = Instant::now();
    let tmp;
    let work: PathBuf = match &opts.work_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let srv = Arc::new(Backend::start(&work.join("server"), 2).await?);
    println!(
        "Server: esync-server in process, SQLite in {}, device API {} (mutual TLS)",
        work.join("server").display(),
        srv.device_url
    );

    // Firmware per hardware type, uploaded; deltas built by the Server.
    let mut firmware = Vec::new();
    let mut components = Vec::new();
    let mut deltas_built = 0;
    for (i, (dev, hw, stage, _)) in HARDWARE.iter().enumerate() {
        let v1 = firmware::initial(dev, "1.0.0", 100 + i as u64, opts.image_size);
        let v2 = firmware::derive(&v1, dev, "2.0.0", 200 + i as u64, true);
        if i < PACKAGE_COMPONENTS {
            let h1 = srv
                .upload_image(&hw.replace("-hw", ""), "1.0.0", hw, &v1)
                .await?;
            let h2 = srv
                .upload_image(&hw.replace("-hw", ""), "2.0.0", hw, &v2)
                .await?;
            let job = srv.delta(&h1, &h2, Duration::from_secs(60)).await?;
            deltas_built += 1;
            println!(
                "  image {hw} 1.0.0 → 2.0.0: {} bytes, delta {} bytes (built by the Server)",
                v2.len(),
                job["patch_length"]
            );
            components.push(json!({"device": dev, "image": h2, "release_counter": 2,
                                   "stage": stage}));
        }
        firmware.push(Firmware { v1, v2 });
    }
    srv.create_package(&json!({"id": PACKAGE, "components": components}))
        .await?;
    srv.sign_image_targets(&[PACKAGE]).await?;
    println!(
        "  package {PACKAGE}: {PACKAGE_COMPONENTS} components, Image repository signed offline"
    );
    let director_root = Arc::new(srv.director_root().await?);
    let image_root = Arc::new(srv.image_root().await?);
    let firmware = Arc::new(firmware);

    // The fleet: vehicle 1 (index 1) gets the injected fault on its camera.
    let faulted = 1;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut ready = Vec::new();
    for i in 0..opts.vehicles {
        let agents = 3 + i % 6;
        let (tx, rx) = tokio::sync::oneshot::channel();
        ready.push(rx);
        let ctx = VehicleCtx {
            srv: Arc::clone(&srv),
            vin: vin_of(i),
            agents,
            faulted: i == faulted,
            dir: work.join(format!("vehicle-{}", vin_of(i))),
            image_size: opts.image_size,
            firmware: Arc::clone(&firmware),
            director_root: Arc::clone(&director_root),
            image_root: Arc::clone(&image_root),
            stop: stop_rx.clone(),
        };
        tasks.spawn(async move { run_vehicle(ctx, tx).await });
    }
    for r in ready {
        r.await
            .map_err(|_| DemoError::Vehicle("a vehicle failed to start".into()))?;
    }
    println!(
        "Fleet: {} vehicles provisioned through the admin API, each a Client with 3 to 8 Agents",
        opts.vehicles
    );

    // The campaign: two waves.
    let first = (opts.vehicles / 5).max(2);
    let spec = json!({
        "name": "fleet-2.0.0", "package": PACKAGE,
        "target": {"models": ["M1"]},
        "waves": [{"count": first}, {"percent": 100}],
        "success_threshold_percent": 50,
        "approval": "auto"
    });
    let created = srv.post("/campaigns", &spec).await?;
    let id = created["id"]
        .as_i64()
        .ok_or_else(|| DemoError::Server(format!("campaign: {created}")))?;
    srv.post(&format!("/campaigns/{id}/start"), &Value::Null)
        .await?;
    println!(
        "Campaign {id}: {} vehicles matched, waves of {first} and the rest",
        created["matched"]
    );
    let view = follow_campaign(&srv, id, opts.progress, opts.timeout).await;
    let _ = stop_tx.send(true);
    let mut ends = Vec::new();
    while let Some(r) = tasks.join_next().await {
        ends.push(r.map_err(|e| DemoError::Vehicle(format!("vehicle task: {e}")))??);
    }
    let view = view?;
    ends.sort_by(|a, b| a.vin.cmp(&b.vin));
    let summary = FleetSummary {
        vehicles: ends,
        campaign: view,
        deltas_built,
        elapsed: started.elapsed(),
    };
    verify(&summary)?;
    Ok(summary)
}

/// Polls the campaign until it completes, with a progress bar per wave.
async fn follow_campaign(
    srv: &Backend,
    id: i64,
    progress: bool,
    timeout: Duration,
) -> Result<Value, DemoError> {
    let bars = indicatif::MultiProgress::with_draw_target(if progress {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    });
    let style = indicatif::ProgressStyle::with_template("{prefix:8} [{bar:30}] {pos}/{len} {msg}")
        .map_err(|e| DemoError::Server(e.to_string()))?
        .progress_chars("=> ");
    let mut wave_bars: Vec<indicatif::ProgressBar> = Vec::new();
    let until = Instant::now() + timeout;
    loop {
        let v = srv.get(&format!("/campaigns/{id}")).await?;
        let waves = v["waves"].as_array().cloned().unwrap_or_default();
        for (i, w) in waves.iter().enumerate() {
            if wave_bars.len() <= i {
                let b = bars.add(indicatif::ProgressBar::new(w["size"].as_u64().unwrap_or(0)));
                b.set_style(style.clone());
                b.set_prefix(format!("wave {}", i + 1));
                wave_bars.push(b);
            }
            let n = |k: &str| w[k].as_u64().unwrap_or(0);
            let done = n("succeeded") + n("failed") + n("rolled_back") + n("aborted");
            wave_bars[i].set_position(done);
            wave_bars[i].set_message(format!(
                "offered {} succeeded {} rolled back {} failed {}",
                n("offered"),
                n("succeeded"),
                n("rolled_back"),
                n("failed")
            ));
        }
        let state = v["state"].as_str().unwrap_or("");
        if state == "completed" {
            for b in &wave_bars {
                b.finish();
            }
            return Ok(v);
        }
        if matches!(state, "aborted" | "paused") || Instant::now() > until {
            return Err(DemoError::Check(format!("campaign ended {state}: {v}")));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Checks the end of the run: every vehicle but the faulted one runs 2.0.0
/// on every package component, the faulted one rolled the whole package
/// back and runs 1.0.0 everywhere; every vehicle got the delta-capable
/// components as deltas and downloaded less than the full images; the
/// campaign completed and its record counts what the vehicles did.
fn verify(s: &FleetSummary) -> Result<(), DemoError> {
    let delta_components = HARDWARE[..PACKAGE_COMPONENTS]
        .iter()
        .filter(|h| h.3)
        .count();
    check(s.vehicles.iter().filter(|v| v.faulted).count() == 1, || {
        "not exactly one faulted vehicle".into()
    })?;
    for v in &s.vehicles {
        let want = if v.faulted { "1.0.0" } else { "2.0.0" };
        check(v.faulted == v.outcome.starts_with("rolled back"), || {
            format!("{}: {}", v.vin, v.outcome)
        })?;
        check(v.faulted != (v.outcome == "installed"), || {
            format!("{}: {}", v.vin, v.outcome)
        })?;
        check(v.running.len() == PACKAGE_COMPONENTS, || {
            format!(
                "{}: {} running slots read, not {PACKAGE_COMPONENTS}",
                v.vin,
                v.running.len()
            )
        })?;
        for (dev, ver) in &v.running {
            check(ver == want, || {
                format!("{} {dev} runs {ver}, not {want}", v.vin)
            })?;
        }
        check(v.deltas == delta_components, || {
            format!(
                "{}: {} components sent as deltas, not {delta_components}",
                v.vin, v.deltas
            )
        })?;
        check(v.downloaded < v.full_size, || {
            format!(
                "{}: downloaded {} bytes, the full images are {}",
                v.vin, v.downloaded, v.full_size
            )
        })?;
    }
    check(s.campaign["state"] == "completed", || {
        format!("campaign not completed: {}", s.campaign)
    })?;
    let n = |k: &str| -> u64 {
        s.campaign["waves"]
            .as_array()
            .map(|ws| ws.iter().map(|w| w[k].as_u64().unwrap_or(0)).sum())
            .unwrap_or(0)
    };
    check(
        n("succeeded") == s.updated() as u64
            && n("rolled_back") + n("failed") == s.rolled_back() as u64,
        || format!("the Server's campaign record disagrees: {}", s.campaign),
    )?;
    Ok(())
}

struct VehicleCtx {
    srv: Arc<Backend>,
    vin: String,
    agents: usize,
    faulted: bool,
    dir: PathBuf,
    image_size: usize,
    firmware: Arc<Vec<Firmware>>,
    director_root: Arc<Vec<u8>>,
    image_root: Arc<Vec<u8>>,
    stop: watch::Receiver<bool>,
}

/// One vehicle: provisioned through the admin API, then its Client checks
/// in every 200 ms until the campaign is over; installs what it is offered
/// and reports the result to the Server.
async fn run_vehicle(
    ctx: VehicleCtx,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<VehicleEnd, DemoError> {
    let srv = &ctx.srv;
    let vin_s = ctx.vin.as_str();
    let vin = Vin::new(vin_s).map_err(|e| DemoError::Vehicle(e.to_string()))?;
    let hw: Vec<&str> = HARDWARE[..ctx.agents].iter().map(|h| h.1).collect();
    srv.register_vehicle(vin_s, "M1", "eu", &hw).await?;
    let vid = srv.issue_identity(vin_s, None).await?;
    let vkey = PublicKey::from_verifying_key(vid.signing_key.verifying_key());
    let primary = format!("GW-{}", &vin_s[11..]);
    srv.add_ecu(vin_s, &primary, "gw-hw", true, &vkey).await?;
    let verr = |e: &dyn std::fmt::Display| DemoError::Vehicle(format!("{vin_s}: {e}"));
    let ecus: Vec<EcuSpec> = HARDWARE[..ctx.agents]
        .iter()
        .enumerate()
        .map(|(k, (dev, hw, stage, _))| {
            Ok(EcuSpec {
                device: DevicePath::new(*dev).map_err(|e| verr(&e))?,
                hardware_id: HardwareId::new(*hw).map_err(|e| verr(&e))?,
                serial: EcuSerial::new(format!("{}-{k}", &vin_s[11..])).map_err(|e| verr(&e))?,
                stage: *stage,
            })
        })
        .collect::<Result<_, DemoError>>()?;
    let (broker, endpoint) = vehicle::start_broker(&vid, &srv.anchors, &vin).await?;
    let capacity = vehicle::capacity_for(ctx.image_size + 64 * 1024);
    let mut agents = Vec::new();
    let v1 = SoftwareVersion::new("1.0.0").map_err(|e| verr(&e))?;
    let v2 = SoftwareVersion::new("2.0.0").map_err(|e| verr(&e))?;
    for (k, e) in ecus.iter().enumerate() {
        let id = srv.issue_identity(vin_s, Some(e.device.as_str())).await?;
        let key = PublicKey::from_verifying_key(id.signing_key.verifying_key());
        srv.add_ecu(
            vin_s,
            e.serial.as_str(),
            e.hardware_id.as_str(),
            false,
            &key,
        )
        .await?;
        agents.push(vehicle::start_agent(
            AgentSetup {
                ecu: e.clone(),
                identity: id,
                image: ctx.firmware[k].v1.clone(),
                version: v1.clone(),
                release_counter: 1,
                safety_precondition: None,
                deltas: HARDWARE[k].3,
                // The camera of the faulted vehicle fails on 2.0.0.
                fault_version: (ctx.faulted && k == 1).then(|| v2.clone()),
            },
            &ctx.dir.join(format!("agent-{k}")),
            capacity,
            broker.local_addr(),
            &srv.anchors,
            &vin,
            vid.signing_key.verifying_key(),
            &ctx.director_root,
            &ctx.image_root,
            &ecus,
        )?);
    }
    let state = StateDir::new(&ctx.dir.join("client"));
    state
        .provision(
            &ConfigFile {
                server_url: srv.device_url.clone(),
            },
            &vid.chain_pem(),
            &vid.key_pem(),
            &srv.ca_pem,
            &ctx.director_root,
            &ctx.image_root,
        )
        .map_err(|e| verr(&e))?;
    let mut gw = Gateway::start(
        endpoint,
        broker.peer_keys(),
        &vid,
        vin.clone(),
        &ctx.dir.join("gw"),
        vec![],
    )
    .await?;
    gw.set_primary_serial(EcuSerial::new(primary).map_err(|e| verr(&e))?);
    let devs: Vec<DevicePath> = ecus.iter().map(|e| e.device.clone()).collect();
    gw.wait_connected(&devs).await?;
    let _ = ready.send(());

    let http = state.http().map_err(|e| verr(&e))?;
    let t = Duration::from_secs(30);
    let started = Instant::now();
    let mut accepted = None;
    let mut manifest: Option<Vec<u8>> = None;
    let mut end = VehicleEnd {
        vin: ctx.vin.clone(),
        agents: ctx.agents,
        faulted: ctx.faulted,
        outcome: "not offered".into(),
        running: Vec::new(),
        downloaded: 0,
        full_size: 0,
        deltas: 0,
    };
    let mut stop = ctx.stop.clone();
    loop {
        if *stop.borrow() {
            break;
        }
        let inventory: Vec<_> = gw.inventory(&devs).await?.into_values().collect();
        let m = match &manifest {
            Some(m) => m.clone(),
            None => {
                let m = gw.manifest(&devs).await?;
                manifest = Some(m.clone());
                m
            }
        };
        let mut session = Session::open(
            esync_store::trust::DirTrustStore::new(&state.director_dir()),
            esync_store::trust::DirTrustStore::new(&state.image_dir()),
            vin.clone(),
            accepted,
            SessionConfig::default(),
        )
        .map_err(|e| verr(&e))?;
        let host = SessionHost {
            http: &http,
            downloads: gw.downloads().to_path_buf(),
            request_timeout: t,
            idle_timeout: t,
            started,
        };
        let step = session
            .check_in(host.now(), m, inventory)
            .map_err(|e| verr(&e))?;
        let step = drive(&mut session, &host, step, |_| None)
            .await
            .map_err(|e| verr(&e))?;
        accepted = session.accepted_manifest();
        if let SessionStep::Ready(pkg) = step {
            for c in &pkg.components {
                end.downloaded += c.artifact.length;
                if let ImageEncoding::Delta { .. } = c.encoding {
                    end.deltas += 1;
                }
            }
            end.full_size = ctx.firmware[..PACKAGE_COMPONENTS]
                .iter()
                .map(|f| f.v2.len() as u64)
                .sum();
            let package = pkg.package.id().clone();
            let report = gw.install(*pkg).await?;
            end.outcome = match &report.outcome {
                Outcome::Installed => "installed".into(),
                Outcome::Failed { cause } => format!("rolled back: {cause}"),
            };
            let body = api_report(&report, gw.client_inventory(), crate::now_ms())
                .ok_or_else(|| verr(&"report names an unknown ECU"))?;
            let id = report_id(&package).ok_or_else(|| verr(&"report id"))?;
            http.put_report(&id, &body, t).await.map_err(|e| verr(&e))?;
            // What runs changed: a fresh manifest at the next check-in.
            manifest = None;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => {}
        }
    }
    for (k, a) in agents.iter().enumerate().take(PACKAGE_COMPONENTS) {
        let slot = vehicle::read_slot(&a.device_dir, capacity)?;
        let f = &ctx.firmware[k];
        let ver = if slot.file_sha256 == esync_agent::device::sha256(&f.v2) {
            "2.0.0"
        } else if slot.file_sha256 == esync_agent::device::sha256(&f.v1) {
            "1.0.0"
        } else {
            "unknown bytes"
        };
        end.running.push((HARDWARE[k].0.to_owned(), ver.to_owned()));
    }
    for a in agents {
        a.stop().await?;
    }
    broker.shutdown();
    Ok(end)
}

/// The summary as printed by the `demo` binary.
pub fn print_summary(s: &FleetSummary) {
    println!("\nSummary");
    for v in &s.vehicles {
        let running: Vec<String> = v
            .running
            .iter()
            .map(|(d, ver)| format!("{d} {ver}"))
            .collect();
        println!(
            "  {} {} agents{}: {} ({} of {} bytes downloaded, {} deltas); running slots: {}",
            v.vin,
            v.agents,
            if v.faulted { ", fault injected" } else { "" },
            v.outcome,
            v.downloaded,
            v.full_size,
            v.deltas,
            running.join(", ")
        );
    }
    println!(
        "  vehicles updated {}, rolled back {}; bytes saved by deltas {} ({} delta jobs built by the Server); campaign {} ; time {:.1} s",
        s.updated(),
        s.rolled_back(),
        s.bytes_saved(),
        s.deltas_built,
        s.campaign["state"],
        s.elapsed.as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(i: usize, faulted: bool) -> VehicleEnd {
        let ver = if faulted { "1.0.0" } else { "2.0.0" };
        VehicleEnd {
            vin: vin_of(i),
            agents: 3,
            faulted,
            outcome: if faulted {
                "rolled back: self-test failed".into()
            } else {
                "installed".into()
            },
            running: HARDWARE[..PACKAGE_COMPONENTS]
                .iter()
                .map(|h| (h.0.to_owned(), ver.to_owned()))
                .collect(),
            downloaded: 1000,
            full_size: 3000,
            deltas: 2,
        }
    }

    fn summary() -> FleetSummary {
        FleetSummary {
            vehicles: vec![end(0, false), end(1, true), end(2, false)],
            campaign: json!({"state": "completed", "waves": [
                {"succeeded": 1, "rolled_back": 1, "failed": 0},
                {"succeeded": 1, "rolled_back": 0, "failed": 0}]}),
            deltas_built: 3,
            elapsed: Duration::from_secs(1),
        }
    }

    type Spoil = Box<dyn Fn(&mut FleetSummary)>;

    /// The end state the demo expects passes; each way a vehicle or the
    /// Server's record can end otherwise fails the run.
    #[test]
    fn verify_refuses_every_unexpected_end() {
        verify(&summary()).unwrap();
        let bad: Vec<(&str, Spoil)> = vec![
            (
                "not offered",
                Box::new(|s| s.vehicles[0].outcome = "not offered".into()),
            ),
            (
                "faulted installed",
                Box::new(|s| s.vehicles[1].outcome = "installed".into()),
            ),
            (
                "healthy rolled back",
                Box::new(|s| s.vehicles[2].outcome = "rolled back: x".into()),
            ),
            (
                "old version running",
                Box::new(|s| s.vehicles[0].running[1].1 = "1.0.0".into()),
            ),
            (
                "faulted runs new",
                Box::new(|s| s.vehicles[1].running[0].1 = "2.0.0".into()),
            ),
            (
                "unknown bytes",
                Box::new(|s| s.vehicles[2].running[2].1 = "unknown bytes".into()),
            ),
            (
                "slot missing",
                Box::new(|s| {
                    s.vehicles[0].running.pop();
                }),
            ),
            (
                "full image instead of delta",
                Box::new(|s| s.vehicles[0].deltas = 1),
            ),
            (
                "no bytes saved",
                Box::new(|s| s.vehicles[2].downloaded = 3000),
            ),
            (
                "no fault injected",
                Box::new(|s| s.vehicles[1] = end(1, false)),
            ),
            (
                "campaign paused",
                Box::new(|s| s.campaign["state"] = json!("paused")),
            ),
            (
                "record disagrees",
                Box::new(|s| s.campaign["waves"][1]["succeeded"] = json!(2)),
            ),
        ];
        for (what, spoil) in bad {
            let mut s = summary();
            spoil(&mut s);
            assert!(verify(&s).is_err(), "{what} passed verify");
        }
    }
}
