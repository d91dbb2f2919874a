//! Server load: simulated vehicles' check-ins against the real device
//! listener (mutual TLS, HTTP/1.1 keep-alive, one connection per vehicle,
//! a check-in that changes nothing) with a registered fleet of
//! `--fleet` vehicles (1,000,000 by default), on SQLite and on PostgreSQL,
//! beside nginx serving a static answer of the same size over mutual TLS
//! (the practical ceiling on this machine).
//!
//! The load generator is the Client's own device-API client
//! (`esync_client::http::DeviceHttp`), one per simulated vehicle with its
//! own certificate; the same code and concurrency load nginx, so the client
//! cost is the same on both sides. Client, Server (or nginx) and database
//! share the machine's cores: the Server runs on its own tokio runtime of
//! `--server-threads` workers, nginx with as many worker processes, the
//! client on `--client-threads` workers.
//!
//! ```text
//! cargo bench -p esync-server --bench load -- [--fleet N] [--vehicles N]
//!     [--secs S] [--backend sqlite|postgres|both]
//! ```
//!
//! The imported fleet is kept between runs (SQLite under Cargo's target
//! temporary directory, PostgreSQL in schema `esync_loadbench` of database
//! `test`) and imported again only where it is missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod nginx;

use clap::{Parser, ValueEnum};
use esync_api::body::{CheckInRequest, CheckInResponse};
use esync_client::http::DeviceHttp;
use esync_identity::{client_tls_config, FleetCa, IssuedIdentity, TrustAnchors, Validity};
use esync_proto::id::{EcuSerial, ReleaseCounter, Sha256Digest, SoftwareVersion, Vin};
use esync_proto::message::InstalledImage;
use esync_server::blob::BlobStore;
use esync_server::device::{device_router, serve_device, DeviceState};
use esync_server::director::{Director, DirectorConfig};
use esync_server::provision::Provisioner;
use esync_server::repo::{ImageRepo, ImageRepoConfig};
use esync_server::store::{Ecu, PgStore, SqliteStore, Store, VehicleRecord};
use esync_server::tls::DeviceTls;
use esync_uptane::manifest::{EcuVersionReport, ReportedImage, VehicleManifest};
use esync_uptane::{PrivateKey, UnixTime};
use nginx::{Nginx, NginxTls};
use sha2::{Digest as _, Sha256};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _};

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const PG_SCHEMA: &str = "esync_loadbench";
/// Vehicles imported per `import_fleet` call (one transaction each), so an
/// interrupted import resumes where it stopped.
const IMPORT_CHUNK: usize = 50_000;
/// The first vehicles of the fleet have their own ECU keys (the ones that
/// can be simulated); the others share one key (rows only).
const KEYED: usize = 10_000;
const T: Duration = Duration::from_secs(30);

#[derive(Parser, Debug)]
#[command(about = "Server check-in load beside nginx")]
struct Args {
    /// Registered vehicles.
    #[arg(long, default_value_t = 1_000_000)]
    fleet: usize,
    /// Simulated vehicles checking in concurrently (each its own
    /// certificate and keep-alive connection); at most 10,000.
    #[arg(long, default_value_t = 1_000)]
    vehicles: usize,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Which database backends.
    #[arg(long, value_enum, default_value_t = Backend::Both)]
    backend: Backend,
    /// Server tokio workers (and nginx worker processes).
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Load generator tokio workers.
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

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn vin(i: usize) -> Vin {
    Vin::new(format!("LB{i:015}")).expect("vin")
}

fn seed(i: usize, role: u8) -> [u8; 32] {
    let mut s = [role; 32];
    s[..8].copy_from_slice(&(i as u64).to_le_bytes());
    s
}

fn key_json(k: &PrivateKey) -> Vec<u8> {
    serde_json::to_vec(&k.public_key()).expect("key json")
}

fn rt(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Imports the vehicles `0..fleet` that are not stored yet, by chunks.
async fn import(store: &dyn Store, fleet: usize) {
    let shared = key_json(&PrivateKey::from_seed(&[7; 32]));
    let started = Instant::now();
    let mut imported = 0usize;
    for start in (0..fleet).step_by(IMPORT_CHUNK) {
        let end = (start + IMPORT_CHUNK).min(fleet);
        if store
            .vehicle(vin(end - 1).as_str())
            .await
            .expect("read")
            .is_some()
        {
            continue;
        }
        let mut vehicles = Vec::with_capacity(end - start);
        let mut ecus = Vec::with_capacity(2 * (end - start));
        for i in start..end {
            let v = vin(i).to_string();
            let (p, e) = if i < KEYED {
                (
                    key_json(&PrivateKey::from_seed(&seed(i, 1))),
                    key_json(&PrivateKey::from_seed(&seed(i, 2))),
                )
            } else {
                (shared.clone(), shared.clone())
            };
            ecus.push(Ecu {
                serial: format!("GW-{v}"),
                vin: v.clone(),
                hardware_id: "gw".into(),
                primary: true,
                public_key: p,
            });
            ecus.push(Ecu {
                serial: format!("ECM-{v}"),
                vin: v.clone(),
                hardware_id: "ecm".into(),
                primary: false,
                public_key: e,
            });
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

async fn open_sqlite(path: &Path) -> Arc<dyn Store> {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
    Arc::new(SqliteStore::open(path).await.expect("open sqlite"))
}

async fn open_postgres() -> Option<Arc<dyn Store>> {
    let base: PgConnectOptions = PG_URL.parse().expect("url");
    let mut admin = match base.connect().await {
        Ok(c) => c,
        Err(e) => {
            println!("SKIPPED: PostgreSQL at {PG_URL} unreachable: {e}");
            return None;
        }
    };
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}"))
        .execute(&mut admin)
        .await
        .expect("create schema");
    admin.close().await.expect("close");
    let opts = base.options([("search_path", PG_SCHEMA)]);
    Some(Arc::new(
        PgStore::connect_with(opts).await.expect("connect pg store"),
    ))
}

/// One simulated vehicle: its certificate and the manifest it reported.
struct SimVehicle {
    identity: IssuedIdentity,
    manifest: Vec<u8>,
}

fn sim_vehicle(ca: &FleetCa, i: usize) -> SimVehicle {
    let vin = vin(i);
    let identity = ca
        .issue_vehicle(&vin, Validity::days_from(now_s() - 60, 30))
        .expect("vehicle cert");
    let image = format!("firmware of {vin}");
    let serial = EcuSerial::new(format!("ECM-{vin}")).expect("serial");
    let report = EcuVersionReport {
        ecu_serial: serial.clone(),
        installed_image: ReportedImage::from_installed(
            &InstalledImage {
                version: SoftwareVersion::new("1.0.0").expect("v"),
                release_counter: ReleaseCounter(1),
                length: image.len() as u64,
                sha256: Sha256Digest(Sha256::digest(image.as_bytes()).into()),
            },
            "installed".into(),
        ),
        release_counter: 1,
        nonce: format!("{:032x}", rand::random::<u128>()),
        attacks_detected: String::new(),
        timestamp: UnixTime(now_s()),
    };
    let mut reports = BTreeMap::new();
    reports.insert(
        serial.to_string(),
        report
            .sign(&PrivateKey::from_seed(&seed(i, 2)))
            .expect("sign report"),
    );
    let manifest = VehicleManifest {
        vin: vin.clone(),
        primary_ecu_serial: EcuSerial::new(format!("GW-{vin}")).expect("serial"),
        ecu_version_reports: reports,
    }
    .sign(&PrivateKey::from_seed(&seed(i, 1)))
    .expect("sign manifest");
    SimVehicle { identity, manifest }
}

/// What one load run measured.
struct Measured {
    checkins: u64,
    errors: u64,
    secs: f64,
    /// Latencies in microseconds, sorted.
    lat_us: Vec<u32>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.checkins as f64 / self.secs
    }

    fn pct(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.lat_us.len() as f64 * p) as usize).min(self.lat_us.len() - 1);
        f64::from(self.lat_us[i]) / 1000.0
    }

    fn line(&self, what: &str) -> String {
        format!(
            "{what:<28} {:>9.0} check-ins/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} ok, {} errors, {:.1} s)",
            self.rate(),
            self.pct(0.50),
            self.pct(0.99),
            self.checkins,
            self.errors,
            self.secs
        )
    }
}

/// Every client checks in back to back for `secs` (closed loop, one
/// request in flight per vehicle); `expect` is the answer each must get.
async fn load(clients: &[(DeviceHttp, CheckInRequest)], secs: u64) -> Measured {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients.len());
    for (http, req) in clients {
        let (http, req, stop) = (http.clone(), req.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(4096);
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match http.check_in(&req, T).await {
                    Ok(CheckInResponse::UpToDate) => {
                        lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32)
                    }
                    Ok(other) => {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("unexpected answer {other:?}");
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("check-in failed: {e}");
                        }
                    }
                }
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat_us = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("join");
        lat_us.extend(l);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    lat_us.sort_unstable();
    Measured {
        checkins: lat_us.len() as u64,
        errors,
        secs,
        lat_us,
    }
}

/// The fleet's CA, the Server's TLS identity and the CRL, fresh per run.
struct Pki {
    prov: Provisioner,
    anchors: TrustAnchors,
    server_id: IssuedIdentity,
    crl: Vec<u8>,
}

fn pki() -> Pki {
    let ca = FleetCa::new("loadbench fleet", Validity::days_from(now_s() - 60, 365)).expect("ca");
    let anchors = TrustAnchors::from_ca_ders(&[ca.root_der()]).expect("anchors");
    let server_id = ca
        .issue_server(&["127.0.0.1".into()], Validity::days_from(now_s() - 60, 30))
        .expect("server cert");
    let mut prov = Provisioner::new(ca).expect("provisioner");
    let crl = prov.crl_der(now_s() - 1, 86_400).expect("crl");
    Pki {
        prov,
        anchors,
        server_id,
        crl,
    }
}

/// Starts the device listener for `store` on the server runtime; returns
/// its URL.
fn start_server(
    server_rt: &tokio::runtime::Runtime,
    store: Arc<dyn Store>,
    pki: &Pki,
    blob_dir: PathBuf,
) -> String {
    let tls = Arc::new(
        DeviceTls::new(
            pki.server_id.clone(),
            pki.anchors.clone(),
            std::slice::from_ref(&pki.crl),
        )
        .expect("device tls"),
    );
    server_rt.block_on(async move {
        let blobs = BlobStore::open(blob_dir, 1 << 30).await.expect("blobs");
        let director = Arc::new(Director::new(
            store.clone(),
            blobs.clone(),
            DirectorConfig::default(),
        ));
        director.init(now_s() * 1000).await.expect("director init");
        let images = Arc::new(ImageRepo::new(store.clone(), ImageRepoConfig::default()));
        let router = device_router(DeviceState::new(store, blobs, director, images));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("https://{}", listener.local_addr().expect("addr"));
        tokio::spawn(serve_device(listener, tls, router, std::future::pending()));
        url
    })
}

fn clients(
    pki: &Pki,
    sims: &[SimVehicle],
    url: &str,
) -> Vec<(DeviceHttp, CheckInRequest, Vec<u8>)> {
    sims.iter()
        .map(|s| {
            let cfg = client_tls_config(&s.identity, &pki.anchors).expect("client tls");
            let req = CheckInRequest {
                manifest_sha256: Sha256Digest(Sha256::digest(&s.manifest).into()),
            };
            (
                DeviceHttp::new(url, cfg).expect("http"),
                req,
                s.manifest.clone(),
            )
        })
        .collect()
}

/// Uploads each vehicle's manifest and checks in once (opening its
/// keep-alive connection), concurrently.
async fn warm_up(cs: &[(DeviceHttp, CheckInRequest, Vec<u8>)], upload: bool) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (http, req, manifest) in cs {
        let (http, req, manifest) = (http.clone(), req.clone(), manifest.clone());
        tasks.push(tokio::spawn(async move {
            if upload {
                http.upload_manifest(&manifest, T).await.expect("manifest");
            }
            let a = http.check_in(&req, T).await.expect("check-in");
            assert_eq!(a, CheckInResponse::UpToDate, "first check-in");
        }));
    }
    for t in tasks {
        t.await.expect("warm-up");
    }
    println!(
        "warm-up: {} vehicles connected{} in {:.1} s",
        cs.len(),
        if upload { ", manifests uploaded" } else { "" },
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    let args = Args::parse();
    assert!(
        args.vehicles <= KEYED && args.vehicles <= args.fleet,
        "--vehicles at most {KEYED} and at most --fleet"
    );
    let body = serde_json::to_string(&CheckInResponse::UpToDate).expect("json");
    println!(
        "Server load: fleet {} registered, {} simulated vehicles (mutual TLS, keep-alive, HTTP/1.1), \
         {} s per run, server {} workers, client {} workers, same machine; answer {} bytes {body}",
        args.fleet, args.vehicles, args.secs, args.server_threads, args.client_threads, body.len()
    );
    let client_rt = rt(args.client_threads);
    let pki = pki();
    println!(
        "issuing {} vehicle certificates and manifests",
        args.vehicles
    );
    let sims: Vec<SimVehicle> = (0..args.vehicles)
        .map(|i| sim_vehicle(pki.prov.ca(), i))
        .collect();

    // nginx first: the ceiling, with the same client code and concurrency.
    let chain = pki.server_id.chain_pem();
    let key = pki.server_id.key_pem();
    let ca = pki.prov.ca().cert_pem();
    let tls = NginxTls {
        chain_pem: &chain,
        key_pem: &key,
        ca_pem: &ca,
        crl_der: Some(&pki.crl),
    };
    let location =
        format!("location = /v1/checkin {{ default_type application/json; return 200 '{body}'; }}");
    let ceiling = Nginx::start(&tls, args.server_threads, &location).map(|n| {
        let cs = clients(&pki, &sims, &n.url);
        client_rt.block_on(warm_up(&cs, false));
        let plain: Vec<_> = cs.into_iter().map(|(h, r, _)| (h, r)).collect();
        let m = client_rt.block_on(load(&plain, args.secs));
        println!("{}", m.line("nginx (static, mTLS)"));
        m.rate()
    });

    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("loadbench");
    let mut backends = Vec::new();
    if matches!(args.backend, Backend::Sqlite | Backend::Both) {
        backends.push("sqlite");
    }
    if matches!(args.backend, Backend::Postgres | Backend::Both) {
        backends.push("postgres");
    }
    for name in backends {
        // Each backend gets its own server runtime (dropped at the end).
        let server_rt = rt(args.server_threads);
        let store = match name {
            "sqlite" => {
                Some(server_rt.block_on(open_sqlite(&tmp.join(format!("fleet-{}.db", args.fleet)))))
            }
            _ => server_rt.block_on(open_postgres()),
        };
        let Some(store) = store else { continue };
        server_rt.block_on(import(store.as_ref(), args.fleet));
        let blob_dir = tmp.join(format!("blobs-{name}"));
        let url = start_server(&server_rt, store, &pki, blob_dir);
        let cs = clients(&pki, &sims, &url);
        client_rt.block_on(warm_up(&cs, true));
        let plain: Vec<_> = cs.into_iter().map(|(h, r, _)| (h, r)).collect();
        let m = client_rt.block_on(load(&plain, args.secs));
        let what = format!("esync-server ({name})");
        match ceiling {
            Some(c) => println!("{}  = {:.2} x nginx", m.line(&what), m.rate() / c),
            None => println!("{}", m.line(&what)),
        }
        drop(plain);
        server_rt.shutdown_timeout(Duration::from_secs(1));
    }
}
