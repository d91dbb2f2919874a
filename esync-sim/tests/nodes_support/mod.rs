//! Two real `esync-server serve` processes on one PostgreSQL database: the
//! harness of `two_nodes.rs`.
//!
//! * [`Pg::fresh`]: a new schema in the database `test` of the PostgreSQL at
//!   127.0.0.1:5432, dropped at the end, so tests never see each other's
//!   rows and re-runs start clean. When the server is unreachable it prints
//!   "SKIPPED: ..." and returns `None`, except under `CI=true`, where it
//!   panics.
//! * [`ServerDir::init`]: `esync-server init` with that database: one
//!   Server directory (fleet CA, Server certificate, Director keys, the
//!   operator token, blob directory, `server.toml`) that both nodes share.
//!   Its listeners are `127.0.0.1:0`, so each node binds its own ports.
//! * [`Node::start`]: one `esync-server serve` process on that directory; it
//!   is ready when it has printed the three "... listening on ..." lines
//!   (each printed after its listener is bound), from which the ports are
//!   read. [`Node::kill`] sends SIGKILL; dropping a node kills it too.
//!
//! The binary is `esync-server` in this test's own target directory
//! (`cargo test --workspace` builds it); when it is missing or older than
//! the sources of `esync-server` (a run of `cargo test -p esync-sim` alone
//! does not rebuild it) it is built with `cargo build -p esync-server
//! --bin esync-server` (honouring `CARGO_TARGET_DIR`, which cargo passes
//! on).

#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use esync_proto::id::{HardwareId, SoftwareVersion};
use esync_server::admin::VehicleView;
use esync_server::admin_client::AdminClient;
use esync_sim::rehearsal::Operator;
use esync_sim::{provision_with, EcuType, Fleet, FleetConfig, FleetHandle, FleetSpec, SimVehicle};
use http::Method;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _};

/// The database the tests use (trust authentication).
pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// How long a node may take to start (migrations, key loading).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A fresh schema of [`PG_URL`], dropped when this is dropped.
#[derive(Debug)]
pub struct Pg {
    schema: String,
}

impl Pg {
    /// Creates schema `esync_nodes_<tag>_<pid>_<random>`. `None` (after
    /// printing "SKIPPED: ...") when PostgreSQL is unreachable; under
    /// `CI=true` that is a failure.
    pub async fn fresh(tag: &str) -> Option<Self> {
        let base: PgConnectOptions = PG_URL.parse().expect("PG_URL parses");
        let mut c = match base.connect().await {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    !ci(),
                    "PostgreSQL at {PG_URL} is unreachable and CI=true: {e}"
                );
                println!("SKIPPED: PostgreSQL at {PG_URL} unreachable: {e}");
                return None;
            }
        };
        let schema = format!(
            "esync_nodes_{tag}_{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut c)
            .await
            .expect("create schema");
        c.close().await.expect("close");
        Some(Self { schema })
    }

    /// The URL every node uses: [`PG_URL`] with the schema as search path.
    pub fn url(&self) -> String {
        format!("{PG_URL}?options=-c%20search_path%3D{}", self.schema)
    }

    /// A connection to the schema, for assertions on the stored rows.
    pub async fn connect(&self) -> sqlx::PgConnection {
        let opts: PgConnectOptions = PG_URL.parse().expect("PG_URL parses");
        opts.options([("search_path", self.schema.as_str())])
            .connect()
            .await
            .expect("connect to the test schema")
    }
}

/// One row of `campaign_events` with the member's wave.
#[derive(Debug)]
pub struct LoggedEvent {
    /// Its id (one sequence: the order of insertion).
    pub id: i64,
    /// The vehicle (`None`: the campaign's own event).
    pub vin: Option<String>,
    /// The member's wave.
    pub wave: Option<u32>,
    /// `offered`, `succeeded`, `wave_opened`, ...
    pub event: String,
    /// When (the request's clock).
    pub at_ms: i64,
}

impl Pg {
    /// Every event of campaign `id`, by id.
    pub async fn campaign_log(&self, id: i64) -> Vec<LoggedEvent> {
        let mut c = self.connect().await;
        /// id, vin, wave, event, at_ms.
        type Row = (i64, Option<String>, Option<i64>, String, i64);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT e.id, e.vin, m.wave, e.event, e.at_ms FROM campaign_events e \
             LEFT JOIN campaign_members m ON m.campaign_id = e.campaign_id AND m.vin = e.vin \
             WHERE e.campaign_id = $1 ORDER BY e.id",
        )
        .bind(id)
        .fetch_all(&mut c)
        .await
        .expect("campaign events");
        rows.into_iter()
            .map(|(id, vin, wave, event, at_ms)| LoggedEvent {
                id,
                vin,
                wave: wave.map(|w| u32::try_from(w).expect("wave")),
                event,
                at_ms,
            })
            .collect()
    }

    /// The members of campaign `id` among `vins` in state `state`.
    pub async fn members_in(&self, id: i64, state: &str, vins: &[String]) -> Vec<String> {
        let mut c = self.connect().await;
        sqlx::query_scalar(
            "SELECT vin FROM campaign_members WHERE campaign_id = $1 AND state = $2 \
             AND vin = ANY($3) ORDER BY vin",
        )
        .bind(id)
        .bind(state)
        .bind(vins)
        .fetch_all(&mut c)
        .await
        .expect("members")
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let schema = self.schema.clone();
        // Dropped inside the test's runtime: a thread of its own runs the
        // statement on a runtime of its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let base: PgConnectOptions = PG_URL.parse().expect("PG_URL parses");
                let mut c = base.connect().await?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .execute(&mut c)
                    .await?;
                c.close().await
            })
        })
        .join();
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: schema {} not dropped: {e}", self.schema),
            Err(_) => eprintln!("warning: schema {} not dropped (panic)", self.schema),
        }
    }
}

/// The `esync-server` binary of this build (built when missing, once per
/// test process).
pub fn server_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(find_or_build_server).clone()
}

fn find_or_build_server() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // <target>/<profile>/deps/two_nodes-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable in <target>/<profile>/deps");
    let bin = profile_dir.join(format!("esync-server{}", std::env::consts::EXE_SUFFIX));
    let server_crate = Path::new(env!("CARGO_MANIFEST_DIR")).join("../esync-server");
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    match built {
        Some(t) if newest_source(&server_crate).is_none_or(|s| s <= t) => return bin,
        Some(_) => eprintln!("{} is older than its sources", bin.display()),
        None => eprintln!("{} missing", bin.display()),
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "esync-server", "--bin", "esync-server"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    eprintln!("building it: {cmd:?}");
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "cargo build of esync-server failed");
    assert!(
        bin.exists(),
        "{} still missing after the build",
        bin.display()
    );
    bin
}

/// The newest modification time of the files under `dir`'s `src/` and
/// `migrations/` and its `Cargo.toml`.
fn newest_source(dir: &Path) -> Option<std::time::SystemTime> {
    fn walk(p: &Path, newest: &mut Option<std::time::SystemTime>) {
        let Ok(m) = std::fs::metadata(p) else { return };
        if m.is_dir() {
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                walk(&e.path(), newest);
            }
        } else if let Ok(t) = m.modified() {
            *newest = Some(newest.map_or(t, |n| n.max(t)));
        }
    }
    let mut newest = None;
    for sub in ["src", "migrations", "Cargo.toml"] {
        walk(&dir.join(sub), &mut newest);
    }
    newest
}

/// A Server directory made by `esync-server init` on the test's database.
#[derive(Debug)]
pub struct ServerDir {
    /// Keeps the directory.
    pub dir: tempfile::TempDir,
    /// `server.toml`.
    pub config: PathBuf,
    /// The fleet CA certificate (PEM).
    pub ca_pem: String,
    /// The operator token `init` printed.
    pub token: String,
    bin: PathBuf,
}

impl ServerDir {
    /// Runs `esync-server init` with `database_url`, every listener on
    /// `127.0.0.1:0`.
    pub fn init(database_url: &str) -> Self {
        let bin = server_binary();
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("server");
        let out = Command::new(&bin)
            .arg("init")
            .arg("--dir")
            .arg(&root)
            .args([
                "--device-listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--database-url",
                database_url,
            ])
            .output()
            .expect("run esync-server init");
        assert!(
            out.status.success(),
            "esync-server init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout)
            .expect("token is text")
            .trim()
            .to_owned();
        assert!(!token.is_empty(), "init printed no token");
        let ca_pem =
            std::fs::read_to_string(root.join("keys").join("fleet-ca.pem")).expect("fleet CA");
        Self {
            config: root.join("server.toml"),
            dir,
            ca_pem,
            token,
            bin,
        }
    }
}

/// One running `esync-server serve`.
#[derive(Debug)]
pub struct Node {
    /// A name for messages (`node-1`).
    pub name: String,
    /// Admin listener.
    pub admin: SocketAddr,
    /// Device listener.
    pub device: SocketAddr,
    /// Metrics listener.
    pub metrics: SocketAddr,
    /// Its log (stderr).
    pub log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Starts `serve` on `dir` and waits until its three listeners are
    /// bound (or panics, with its log, after [`START_TIMEOUT`]).
    pub fn start(dir: &ServerDir, name: &str) -> Self {
        let log = dir.dir.path().join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(&dir.bin)
            .arg("serve")
            .arg("--config")
            .arg(&dir.config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn esync-server serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = Self {
            name: name.to_owned(),
            admin: unbound(),
            device: unbound(),
            metrics: unbound(),
            log,
            child: Some(child),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let (mut admin, mut device, mut metrics) = (None, None, None);
        while admin.is_none() || device.is_none() || metrics.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(e) => panic!(
                    "{name} not ready ({e:?}; exit: {:?}); its log:\n{}",
                    node.child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten()),
                    node.log_tail()
                ),
            };
            let addr = |prefix: &str| {
                line.strip_prefix(prefix).map(|rest| {
                    rest.trim_end_matches("/metrics")
                        .parse::<SocketAddr>()
                        .unwrap_or_else(|e| panic!("{name}: bad address in {line:?}: {e}"))
                })
            };
            if let Some(a) = addr("admin listening on https://") {
                admin = Some(a);
            } else if let Some(a) = addr("device listening on https://") {
                device = Some(a);
            } else if let Some(a) = addr("metrics listening on http://") {
                metrics = Some(a);
            }
        }
        node.admin = admin.expect("admin");
        node.device = device.expect("device");
        node.metrics = metrics.expect("metrics");
        node
    }

    /// `https://127.0.0.1:<port>` of the admin API.
    pub fn admin_url(&self) -> String {
        format!("https://{}", self.admin)
    }

    /// `https://127.0.0.1:<port>` of the device API.
    pub fn device_url(&self) -> String {
        format!("https://{}", self.device)
    }

    /// SIGKILL, then reaps it. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `Child::kill` is SIGKILL on Unix.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The last 4 KiB of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut from = text.len().saturating_sub(4096);
        while !text.is_char_boundary(from) {
            from += 1;
        }
        text[from..].to_owned()
    }

    /// Its Prometheus text (`GET /metrics`, plain HTTP on loopback).
    pub fn metrics_text(&self) -> String {
        let mut s = std::net::TcpStream::connect(self.metrics).expect("metrics listener");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.metrics
        )
        .expect("request");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("metrics answer");
        let (head, body) = out.split_once("\r\n\r\n").expect("HTTP answer");
        assert!(head.starts_with("HTTP/1.1 200"), "{}: {head}", self.name);
        body.to_owned()
    }

    /// The sum of the samples of metric `name` whose labels contain every
    /// `labels` entry (`key="value"`).
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        sum_metric(&self.metrics_text(), name, labels)
    }
}

/// Sums the samples of `name` in Prometheus text `text` whose labels
/// contain every entry of `labels`.
pub fn sum_metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (metric, rest) = key.split_once('{').unwrap_or((key, ""));
            (metric == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

fn unbound() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` every 20 ms until it returns `Some`, or panics with `what`
/// after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn metrics_are_summed_by_name_and_labels() {
    let text = "# HELP x\nesync_server_campaign_offers_total 3\n\
                esync_server_http_requests_total{listener=\"device\",route=\"/v1/checkin\",status=\"200\"} 5\n\
                esync_server_http_requests_total{listener=\"device\",route=\"/v1/checkin\",status=\"503\"} 2\n\
                esync_server_http_requests_total{listener=\"admin\",route=\"/x\",status=\"200\"} 7\n";
    assert_eq!(
        sum_metric(text, "esync_server_campaign_offers_total", &[]),
        3.0
    );
    assert_eq!(
        sum_metric(
            text,
            "esync_server_http_requests_total",
            &["route=\"/v1/checkin\""]
        ),
        7.0
    );
    assert_eq!(sum_metric(text, "nothing", &[]), 0.0);
}

// ---------------------------------------------------------------- the rig

/// Package offered by the campaigns of the tests.
pub const PKG: &str = "pkg-nodes";
/// Hardware id of the component the package updates.
pub const ENGINE: &str = "nodes-engine";

/// A small image of the engine ECU at `version` (8 KiB, distinct per
/// version).
pub fn engine_image(version: u8) -> Vec<u8> {
    (0..8192u32)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8 ^ version.wrapping_mul(37))
        .collect()
}

/// Two nodes on one fresh schema, the operator on one of them, a package
/// and a provisioned fleet. Fields drop in order: the nodes stop before the
/// schema is dropped.
pub struct TwoNodes {
    /// `nodes[0]` is node 1, `nodes[1]` node 2.
    pub nodes: [Node; 2],
    /// The operator (admin API of the node chosen at setup).
    pub op: Operator,
    /// The admin API of each node.
    pub admins: [AdminClient; 2],
    /// The provisioned vehicles.
    pub vehicles: Vec<SimVehicle>,
    /// Their spec.
    pub spec: FleetSpec,
    /// The Server directory both nodes run on.
    pub dir: ServerDir,
    /// The schema (last: dropped after the nodes stopped).
    pub pg: Pg,
}

impl TwoNodes {
    /// `esync-server init` on a fresh schema, two `serve` processes, the
    /// engine images 1.0.0 and 2.0.0 and package [`PKG`] (engine to 2.0.0)
    /// through node `op_node`'s admin API with the Image repository signed
    /// offline, and `count` vehicles (VINs `vin_prefix…`, each a gateway,
    /// an engine ECU on 1.0.0 and a body ECU) provisioned through it. `None`
    /// when PostgreSQL is unreachable (see [`Pg::fresh`]).
    pub async fn start(tag: &str, vin_prefix: &str, count: usize, op_node: usize) -> Option<Self> {
        let pg = Pg::fresh(tag).await?;
        let dir = ServerDir::init(&pg.url());
        let nodes = [Node::start(&dir, "node-1"), Node::start(&dir, "node-2")];
        let admins = [0, 1].map(|i| {
            AdminClient::new(&nodes[i].admin_url(), &dir.ca_pem, &dir.token).expect("admin client")
        });
        let mut op = Operator::new(admins[op_node].clone());
        let hw = |s: &str| HardwareId::new(s).expect("hardware id");
        let old = engine_image(1);
        op.upload_image(ENGINE, "1.0.0", ENGINE, &old)
            .await
            .expect("image 1.0.0");
        let sha = op
            .upload_image(ENGINE, "2.0.0", ENGINE, &engine_image(2))
            .await
            .expect("image 2.0.0");
        op.create_package(&serde_json::json!({
            "id": PKG,
            "components": [{"device": "/engine", "image": sha, "release_counter": 2}],
        }))
        .await
        .expect("package");
        op.sign_image_targets(&[PKG])
            .await
            .expect("Image repository");
        let spec = FleetSpec {
            count,
            vin_prefix: vin_prefix.into(),
            model: "nodes-model".into(),
            region: "eu".into(),
            primary: EcuType::synthetic(hw("nodes-gateway")).expect("type"),
            ecu_types: vec![
                EcuType::with_image(
                    hw(ENGINE),
                    SoftwareVersion::new("1.0.0").expect("version"),
                    1,
                    &old,
                ),
                EcuType::synthetic(hw("nodes-body")).expect("type"),
            ],
            min_ecus: 3,
            max_ecus: 3,
            seed: 7,
        };
        let p = provision_with(op.admin(), &spec, None, 8)
            .await
            .expect("provision");
        assert_eq!(p.vehicles.len(), count);
        Some(Self {
            nodes,
            op,
            admins,
            vehicles: p.vehicles,
            spec,
            dir,
            pg,
        })
    }

    /// The fleet on both nodes: vehicle `i` starts on node `i % 2 + 1` and
    /// fails over to the other one.
    pub fn fleet(
        &self,
        interval: Duration,
        jitter: Duration,
        failure_rate: f64,
        seed: u64,
    ) -> FleetHandle {
        let mut cfg = FleetConfig::new(
            vec![self.nodes[0].device_url(), self.nodes[1].device_url()],
            self.dir.ca_pem.clone(),
        );
        cfg.interval = interval;
        cfg.jitter = jitter;
        cfg.failure_rate = failure_rate;
        cfg.seed = seed;
        cfg.request_timeout = Duration::from_secs(10);
        cfg.backoff_initial = Duration::from_millis(100);
        cfg.backoff_max = Duration::from_secs(1);
        cfg.max_attempts = 20;
        Fleet::spawn(cfg, &self.vehicles).expect("fleet")
    }

    /// The node (0 or 1) vehicle `vin` starts on.
    pub fn home(&self, vin: &str) -> usize {
        self.vehicles
            .iter()
            .position(|v| v.vin.as_str() == vin)
            .expect("a vehicle of the fleet")
            % 2
    }

    /// The Server's record of vehicle `vin`, through node `node`.
    pub async fn vehicle(&self, node: usize, vin: &str) -> VehicleView {
        let v = self.admins[node]
            .json(Method::GET, &format!("/vehicles/{vin}"), None)
            .await
            .expect("vehicle");
        serde_json::from_value(v).expect("vehicle view")
    }

    /// Campaign action `action` (`pause`, `resume`, ...) through node `node`.
    pub async fn act(&self, node: usize, id: i64, action: &str) {
        self.admins[node]
            .json(Method::POST, &format!("/campaigns/{id}/{action}"), None)
            .await
            .unwrap_or_else(|e| panic!("{action} campaign {id} on node {}: {e}", node + 1));
    }
}

/// Wall time in Unix milliseconds (the nodes' clock: same machine).
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(d.as_millis()).expect("ms fit")
}
