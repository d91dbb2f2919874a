//! Server load: the fleet simulator's vehicles (`esync_sim`: each its own
//! certificate, mutual TLS, HTTP/1.1 keep-alive through the Client's
//! `DeviceHttp`) against a real Server node in process
//! (`esync_server::node`, as `esync-server init` and `serve` make it) with
//! `--fleet` vehicles registered besides them (1,000,000 by default), on
//! SQLite and on PostgreSQL, beside nginx serving a static check-in answer
//! of the same size over mutual TLS with the same certificates (the
//! practical ceiling on this machine).
//!
//! Two modes, one after the other on the same Server and vehicles:
//!
//! * **idle**: every vehicle checks in back to back (`--interval-ms`
//!   between check-ins) with the hash of the manifest the Server holds: the
//!   check-in that changes nothing (`{"status":"up_to_date"}`);
//! * **campaign**: the same while a campaign runs over the simulated
//!   vehicles and `--offline` registered vehicles that never check in (so it
//!   stays active for the whole window): each simulated vehicle is offered
//!   the package once, verifies the Director's and Image repository's
//!   metadata, downloads small blobs (`--blob-size` images, or their
//!   deltas), reports the result (`--failure-rate` roll back) and uploads its
//!   new manifest; every check-in runs the campaign offer query. (Vehicles
//!   whose ECUs are all of the body type are members too: the package has
//!   no component for them, so they stay offered.)
//!
//! Client, Server (or nginx) and database share the machine's cores: the
//! Server runs on its own tokio runtime of `--server-threads` workers, nginx
//! with as many worker processes, the simulator on `--client-threads`
//! workers.
//!
//! ```text
//! cargo bench -p esync-sim --bench load -- [--fleet N] [--vehicles N]
//!     [--secs S] [--backend sqlite|postgres|both] [--mode idle|campaign|both]
//! ```
//!
//! The registered fleet is imported once with `Store::import_fleet` and kept
//! pristine between runs (SQLite: a file under Cargo's target temporary
//! directory, copied for each run; PostgreSQL: database
//! `esync_loadbench_fleet_N`, the template of each run's database
//! `esync_loadbench_run`); every run initialises a fresh Server directory
//! (fleet CA, keys, token) on its copy.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "../../esync-server/benches/nginx/mod.rs"]
mod nginx;

use clap::{Parser, ValueEnum};
use esync_api::body::CheckInResponse;
use esync_identity::FleetCa;
use esync_proto::id::{HardwareId, SoftwareVersion};
use esync_server::config::{keys, open_store, ServerConfig};
use esync_server::node::{self, InitOptions};
use esync_server::provision::Provisioner;
use esync_server::store::{Ecu, Store, VehicleRecord};
use esync_sim::rehearsal::{LocalServer, Operator};
use esync_sim::{provision_with, EcuType, Fleet, FleetConfig, FleetHandle, FleetSpec, SimVehicle};
use esync_sim::{FleetSnapshot, Window};
use nginx::{Nginx, NginxTls};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _};

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432";
const PG_RUN_DB: &str = "esync_loadbench_run";
/// Vehicles imported per `import_fleet` call (one transaction each), so an
/// interrupted import resumes where it stopped.
const IMPORT_CHUNK: usize = 50_000;
const PACKAGE: &str = "lb-fw-2";
/// How long the vehicles may take to connect and upload their manifests.
const WARM_UP: Duration = Duration::from_secs(120);

#[derive(Parser, Debug)]
#[command(about = "Server check-in load (idle and during a campaign) beside nginx")]
struct Args {
    /// Vehicles registered besides the simulated ones.
    #[arg(long, default_value_t = 1_000_000)]
    fleet: usize,
    /// Simulated vehicles checking in concurrently (each its own
    /// certificate and keep-alive connection).
    #[arg(long, default_value_t = 1_000)]
    vehicles: usize,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Which database backends.
    #[arg(long, value_enum, default_value_t = Backend::Both)]
    backend: Backend,
    /// Which modes.
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    mode: Mode,
    /// Pause of each vehicle between its check-ins (ms; the simulator's
    /// interval, no jitter).
    #[arg(long, default_value_t = 1)]
    interval_ms: u64,
    /// Registered vehicles in the campaign that never check in.
    #[arg(long, default_value_t = 1_000)]
    offline: usize,
    /// Size of each image of the campaign's package (bytes).
    #[arg(long, default_value_t = 4096)]
    blob_size: usize,
    /// Share of simulated vehicles that roll the package back.
    #[arg(long, default_value_t = 0.02)]
    failure_rate: f64,
    /// Server tokio workers (and nginx worker processes).
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Simulator tokio workers.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    // `cargo bench` passes `--bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Idle,
    Campaign,
    Both,
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// VIN of registered (not simulated) vehicle `i`.
fn vin(i: usize) -> String {
    format!("LB{i:015}")
}

fn rt(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Imports the vehicles `0..fleet` not stored yet, by chunks (a gateway and
/// an engine ECU each, one shared public key: rows only).
async fn import(store: &dyn Store, fleet: usize) {
    let key = serde_json::to_vec(&esync_uptane::PrivateKey::from_seed(&[7; 32]).public_key())
        .expect("key json");
    let started = Instant::now();
    let mut imported = 0usize;
    for start in (0..fleet).step_by(IMPORT_CHUNK) {
        let end = (start + IMPORT_CHUNK).min(fleet);
        if store.vehicle(&vin(end - 1)).await.expect("read").is_some() {
            continue;
        }
        let mut vehicles = Vec::with_capacity(end - start);
        let mut ecus = Vec::with_capacity(2 * (end - start));
        for i in start..end {
            let v = vin(i);
            for (serial, hw, primary) in [("GW", "gw", true), ("ECM", "ecm", false)] {
                ecus.push(Ecu {
                    serial: format!("{serial}-{v}"),
                    vin: v.clone(),
                    hardware_id: hw.into(),
                    primary,
                    public_key: key.clone(),
                });
            }
            vehicles.push(VehicleRecord {
                vin: v,
                model: "LB1".into(),
                region: if i % 2 == 0 { "eu" } else { "us" }.into(),
                hardware_ids: vec!["gw".into(), "ecm".into()],
            });
        }
        store
            .import_fleet(&vehicles, &ecus, now_s() * 1000)
            .await
            .expect("import fleet");
        imported += end - start;
    }
    if imported > 0 {
        let s = started.elapsed().as_secs_f64();
        println!(
            "imported {imported} vehicles (+{} ECUs) in {s:.1} s ({:.0} vehicles/s)",
            2 * imported,
            imported as f64 / s
        );
    } else {
        println!("fleet of {fleet} vehicles already imported (cached)");
    }
}

/// The database URL of a fresh copy of the pristine fleet for one run
/// (imported first where missing); `None` when PostgreSQL is unreachable.
async fn fleet_copy(backend: &str, fleet: usize, tmp: &Path) -> Option<String> {
    if backend == "sqlite" {
        let pristine = tmp.join(format!("fleet-{fleet}.db"));
        {
            let store = open_store(&format!("sqlite://{}", pristine.display()))
                .await
                .expect("open pristine sqlite");
            import(store.as_ref(), fleet).await;
        }
        let copy = tmp.join("run-sqlite.db");
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", copy.display()));
        }
        let t = Instant::now();
        std::fs::copy(&pristine, &copy).expect("copy fleet db");
        println!(
            "fleet copied for this run in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        return Some(format!("sqlite://{}", copy.display()));
    }
    let base: PgConnectOptions = PG_URL.parse().expect("url");
    let mut admin = match base.connect().await {
        Ok(c) => c,
        Err(e) => {
            println!("SKIPPED: PostgreSQL at {PG_URL} unreachable: {e}");
            return None;
        }
    };
    let template = format!("esync_loadbench_fleet_{fleet}");
    let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&template)
        .fetch_optional(&mut admin)
        .await
        .expect("pg_database");
    if exists.is_none() {
        sqlx::query(&format!("CREATE DATABASE {template}"))
            .execute(&mut admin)
            .await
            .expect("create fleet database");
    }
    {
        let store = open_store(&format!("{PG_BASE}/{template}"))
            .await
            .expect("open pristine postgres");
        import(store.as_ref(), fleet).await;
    }
    sqlx::query(&format!("DROP DATABASE IF EXISTS {PG_RUN_DB}"))
        .execute(&mut admin)
        .await
        .expect("drop run database");
    let t = Instant::now();
    // The template's pool is closed; a copy is made at file level.
    let mut tries = 0;
    loop {
        match sqlx::query(&format!("CREATE DATABASE {PG_RUN_DB} TEMPLATE {template}"))
            .execute(&mut admin)
            .await
        {
            Ok(_) => break,
            // "source database is being accessed by other users" while the
            // closed pool's sessions end.
            Err(e) if tries < 20 => {
                tries += 1;
                if tries == 1 {
                    println!("waiting for the template to be free: {e}");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("create run database: {e}"),
        }
    }
    println!(
        "fleet copied for this run in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    admin.close().await.expect("close");
    Some(format!("{PG_BASE}/{PG_RUN_DB}"))
}

/// Starts a fresh Server node on `database_url` (its directory `dir`,
/// listeners on loopback, metrics listener on), on the current runtime.
async fn start_node(dir: &Path, database_url: String) -> (LocalServer, SocketAddr) {
    let _ = std::fs::remove_dir_all(dir);
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let init = node::init(&InitOptions {
        dir: dir.to_owned(),
        device_listen: any,
        admin_listen: any,
        metrics_listen: Some(any),
        server_names: vec!["localhost".into(), "127.0.0.1".into()],
        database_url: Some(database_url),
        ca_days: 30,
    })
    .await
    .expect("init server");
    let config = ServerConfig::load(&init.config_path).expect("config");
    let server = LocalServer::serve(&config, &init.ca_cert, &init.token, dir)
        .await
        .expect("serve");
    let metrics = server.node.metrics_addr.expect("metrics listener");
    (server, metrics)
}

/// A deterministic small image of hardware type `k` at `version`.
fn image(k: u8, version: u8, size: usize) -> Vec<u8> {
    let mut b: Vec<u8> = (0..size as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ k)
        .collect();
    for x in b.iter_mut().step_by(97) {
        *x = x.wrapping_add(version);
    }
    b
}

fn hw(s: &str) -> HardwareId {
    HardwareId::new(s).expect("hardware id")
}

/// Uploads images 1.0.0 (the vehicles' factory images) and 2.0.0 of two
/// hardware types, builds the package of both at 2.0.0, signs the Image
/// repository; the fleet spec of the simulated vehicles (a gateway and 1 to
/// 3 of engine, brake and body ECUs).
async fn package_and_spec(op: &mut Operator, count: usize, size: usize) -> FleetSpec {
    let mut types = Vec::new();
    let mut components = Vec::new();
    for (k, (name, device)) in [("lb-engine", "/engine"), ("lb-brake", "/brake")]
        .into_iter()
        .enumerate()
    {
        let old = image(k as u8, 1, size);
        let new = image(k as u8, 2, size);
        op.upload_image(name, "1.0.0", name, &old)
            .await
            .expect("image 1.0.0");
        let sha = op
            .upload_image(name, "2.0.0", name, &new)
            .await
            .expect("image 2.0.0");
        components.push(json!({"device": device, "image": sha, "release_counter": 2}));
        types.push(EcuType::with_image(
            hw(name),
            SoftwareVersion::new("1.0.0").expect("version"),
            1,
            &old,
        ));
    }
    types.push(EcuType::synthetic(hw("lb-body")).expect("type"));
    op.create_package(&json!({"id": PACKAGE, "components": components}))
        .await
        .expect("package");
    op.sign_image_targets(&[PACKAGE]).await.expect("image repo");
    FleetSpec {
        count,
        vin_prefix: "LBSMV".into(),
        model: "LB-SIM".into(),
        region: "eu".into(),
        primary: EcuType::synthetic(hw("lb-gateway")).expect("type"),
        ecu_types: types,
        min_ecus: 2,
        max_ecus: 4,
        seed: 11,
    }
}

/// Counters of the Server's `/metrics` (HTTP requests by route and
/// status, campaign offers and results).
fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let mut s = std::net::TcpStream::connect(addr).expect("metrics connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("metrics request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("metrics read");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || !line.starts_with("esync_server_") {
            continue;
        }
        if let Some((name, value)) = line.rsplit_once(' ') {
            if let Ok(v) = value.parse::<f64>() {
                out.insert(name.to_owned(), v);
            }
        }
    }
    out
}

/// `after - before` per series of the device listener and the campaign
/// counters (series that did not move left out).
fn moved(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Vec<(String, f64)> {
    after
        .iter()
        .filter(|(k, _)| {
            k.contains("listener=\"device\"") || k.starts_with("esync_server_campaign")
        })
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect()
}

/// Spawns the simulated fleet against `url` on `client_rt`.
fn spawn_fleet(
    client_rt: &tokio::runtime::Runtime,
    url: &str,
    ca_pem: &str,
    vehicles: &[SimVehicle],
    args: &Args,
    seed: u64,
) -> FleetHandle {
    let mut cfg = FleetConfig::new(vec![url.to_owned()], ca_pem.to_owned());
    cfg.interval = Duration::from_millis(args.interval_ms.max(1));
    cfg.jitter = Duration::ZERO;
    cfg.failure_rate = args.failure_rate;
    cfg.seed = seed;
    let _guard = client_rt.enter();
    Fleet::spawn(cfg, vehicles).expect("fleet")
}

/// Waits until every vehicle has uploaded its manifest (`uploads`: the
/// Server asks each for it once) and the fleet has made `check_ins`
/// check-ins, then a second more.
fn warm_up(fleet: &FleetHandle, uploads: u64, check_ins: u64, what: &str) {
    let started = Instant::now();
    loop {
        let s = fleet.snapshot();
        if s.manifests_uploaded >= uploads && s.check_ins >= check_ins {
            println!(
                "warm-up ({what}): {} check-ins, {} manifests uploaded, {} errors in {:.1} s",
                s.check_ins,
                s.manifests_uploaded,
                s.errors_total,
                started.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            started.elapsed() < WARM_UP,
            "warm-up ({what}) not done after {WARM_UP:?}: {}",
            s.line()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
}

/// Measures `secs` seconds of `fleet`: the check-in window and the
/// counters before and after.
fn measure(fleet: &FleetHandle, secs: u64) -> (Window, FleetSnapshot, FleetSnapshot) {
    let before = fleet.snapshot();
    let mark = fleet.mark();
    std::thread::sleep(Duration::from_secs(secs));
    let w = fleet.since(&mark);
    (w, before, fleet.snapshot())
}

fn line(what: &str, w: &Window, ceiling: Option<f64>) -> String {
    let ratio = ceiling.map_or_else(String::new, |c| {
        format!("  = {:.2} x nginx", w.check_ins_per_s / c)
    });
    format!(
        "{what:<34} {:>8.0} check-ins/s  p50 {:>6.2} ms  p99 {:>7.2} ms  ({} check-ins, {} errors, {:.1} s){ratio}",
        w.check_ins_per_s, w.latency_p50_ms, w.latency_p99_ms, w.check_ins, w.errors, w.secs
    )
}

fn main() {
    let args = Args::parse();
    assert!(args.offline <= args.fleet, "--offline at most --fleet");
    let body = serde_json::to_string(&CheckInResponse::UpToDate).expect("json");
    println!(
        "Server load: fleet {} registered + {} simulated vehicles (esync-sim: mutual TLS, keep-alive, \
         HTTP/1.1, {} ms between check-ins), {} s per run, server {} workers, simulator {} workers, \
         same machine; idle answer {} bytes {body}",
        args.fleet,
        args.vehicles,
        args.interval_ms,
        args.secs,
        args.server_threads,
        args.client_threads,
        body.len()
    );
    let client_rt = rt(args.client_threads);
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("loadbench");
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    let mut backends = Vec::new();
    if matches!(args.backend, Backend::Sqlite | Backend::Both) {
        backends.push("sqlite");
    }
    if matches!(args.backend, Backend::Postgres | Backend::Both) {
        backends.push("postgres");
    }
    for name in backends {
        println!("--- {name}");
        // Each backend gets its own server runtime (dropped at the end).
        let server_rt = rt(args.server_threads);
        let Some(url) = server_rt.block_on(fleet_copy(name, args.fleet, &tmp)) else {
            continue;
        };
        let dir = tmp.join(format!("server-{name}"));
        let (server, metrics) = server_rt.block_on(start_node(&dir, url));
        let mut op = Operator::new(server.admin.clone());
        let t = Instant::now();
        let (spec, vehicles) = client_rt.block_on(async {
            let spec = package_and_spec(&mut op, args.vehicles, args.blob_size).await;
            let p = provision_with(&server.admin, &spec, None, 32)
                .await
                .expect("provision");
            (spec, p.vehicles)
        });
        println!(
            "{} simulated vehicles provisioned through the admin API, package {PACKAGE} \
             ({} B images) signed, in {:.1} s",
            vehicles.len(),
            args.blob_size,
            t.elapsed().as_secs_f64()
        );

        // nginx: the ceiling, with the Server's certificate, the fleet CA
        // and its CRL, loaded by the same simulated vehicles.
        let config = ServerConfig::load(&dir.join(node::CONFIG_FILE)).expect("config");
        let read = |n: &str| std::fs::read_to_string(config.key_dir.join(n)).expect("key file");
        let ca = FleetCa::from_pem(&read(keys::CA_CERT), &read(keys::CA_KEY)).expect("ca");
        let crl = Provisioner::new(ca)
            .expect("provisioner")
            .crl_der(now_s() - 60, 86_400)
            .expect("crl");
        let (chain, key) = (read(keys::SERVER_CERT), read(keys::SERVER_KEY));
        let tls = NginxTls {
            chain_pem: &chain,
            key_pem: &key,
            ca_pem: &server.ca_pem,
            crl_der: Some(&crl),
        };
        let location = format!(
            "location = /v1/checkin {{ default_type application/json; return 200 '{body}'; }}"
        );
        let ceiling = Nginx::start(&tls, args.server_threads, &location).map(|n| {
            let fleet = spawn_fleet(&client_rt, &n.url, &server.ca_pem, &vehicles, &args, 1);
            warm_up(&fleet, 0, 3 * vehicles.len() as u64, "nginx");
            let (w, _, _) = measure(&fleet, args.secs);
            client_rt.block_on(fleet.stop());
            println!("{}", line("nginx (static, mTLS)", &w, None));
            w.check_ins_per_s
        });

        let fleet = spawn_fleet(
            &client_rt,
            &server.device_url(),
            &server.ca_pem,
            &vehicles,
            &args,
            spec.seed,
        );
        warm_up(
            &fleet,
            vehicles.len() as u64,
            3 * vehicles.len() as u64,
            "server",
        );
        if matches!(args.mode, Mode::Idle | Mode::Both) {
            let (w, _, _) = measure(&fleet, args.secs);
            println!(
                "{}",
                line(&format!("esync-server ({name}), idle"), &w, ceiling)
            );
        }
        if matches!(args.mode, Mode::Campaign | Mode::Both) {
            let mut target: Vec<String> = vehicles.iter().map(|v| v.vin.to_string()).collect();
            target.extend((0..args.offline).map(vin));
            let campaign = json!({
                "name": format!("load-{name}"),
                "package": PACKAGE,
                "target": {"vins": target},
                "waves": [{"percent": 100}],
                "success_threshold_percent": 50,
            });
            // The window opens as the start returns: the first offers are
            // made at the next check-ins.
            let t = Instant::now();
            let id = client_rt
                .block_on(op.start_campaign(&campaign))
                .expect("campaign");
            let started_in = t.elapsed().as_secs_f64();
            let m0 = scrape(metrics);
            let (w, before, after) = measure(&fleet, args.secs);
            let m1 = scrape(metrics);
            let view = client_rt.block_on(op.campaign(id)).expect("campaign view");
            println!(
                "{}",
                line(&format!("esync-server ({name}), campaign"), &w, ceiling)
            );
            let d = |f: fn(&FleetSnapshot) -> u64| f(&after) - f(&before);
            let offers: u64 =
                after.offers.values().sum::<u64>() - before.offers.values().sum::<u64>();
            println!(
                "  campaign {id} over {} vehicles ({} simulated, {} offline), started in {started_in:.2} s \
                 (before the window); in the window: {offers} offers taken ({:.0}/s), {} reports ({} installed, {} rolled back), \
                 {} manifests uploaded, {} bytes downloaded, {} errors; campaign {}: {}",
                target.len(),
                vehicles.len(),
                args.offline,
                offers as f64 / w.secs,
                d(|s| s.reports),
                d(|s| s.installed),
                d(|s| s.rolled_back),
                d(|s| s.manifests_uploaded),
                d(|s| s.bytes_downloaded),
                d(|s| s.errors_total),
                view.state,
                json!(view.waves)
            );
            let mut total = 0.0;
            println!("  Server requests in the window (device listener, /metrics):");
            for (series, n) in moved(&m0, &m1) {
                if series.contains("listener=\"device\"") {
                    total += n;
                }
                println!("    {n:>9.0}  {:>8.1}/s  {series}", n / w.secs);
            }
            println!(
                "    {total:>9.0}  {:>8.1}/s  all device API requests",
                total / w.secs
            );
        }
        let report = client_rt.block_on(fleet.stop());
        println!(
            "fleet stopped: {} check-ins, {} errors in all",
            report.totals.check_ins, report.totals.errors_total
        );
        drop(server);
        server_rt.shutdown_timeout(Duration::from_secs(1));
        client_rt.block_on(drop_copy(name, &tmp));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Removes the run's copy of the fleet (the pristine one stays).
async fn drop_copy(backend: &str, tmp: &Path) {
    if backend == "sqlite" {
        let copy = tmp.join("run-sqlite.db");
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", copy.display()));
        }
        return;
    }
    let base: PgConnectOptions = PG_URL.parse().expect("url");
    match base.connect().await {
        Ok(mut admin) => {
            if let Err(e) =
                sqlx::query(&format!("DROP DATABASE IF EXISTS {PG_RUN_DB} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
            {
                println!("run database {PG_RUN_DB} not dropped: {e}");
            }
            let _ = admin.close().await;
        }
        Err(e) => println!("run database {PG_RUN_DB} not dropped: {e}"),
    }
}
