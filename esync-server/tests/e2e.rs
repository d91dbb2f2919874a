//! End to end through the `esync-server` binary: `init` and `serve` on
//! SQLite in a temporary directory; the CLI (over HTTPS to the admin
//! listener) registers two vehicles, signs their certificates from CSRs,
//! uploads two versions of an image with the streamed upload, builds a
//! package and assigns it; a vehicle (over the device API with mutual TLS,
//! through the Client's `DeviceHttp`) reports the old version, the Server's
//! delta worker generates exactly one delta for that pair, and a second
//! vehicle reporting the same version is directed to the cached delta
//! without a second job; A downloads the patch with a Range resume and
//! rebuilds the new image from it; a certificate revoked through the CLI
//! is refused by the running device listener. `/metrics` counts what
//! happened.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use esync_api::body::{CheckInRequest, CheckInResponse};
use esync_client::http::{DeviceHttp, DownloadLimits};
use esync_identity::{client_tls_config, IssuedIdentity, TrustAnchors};
use esync_package::delta::{ApplyLimits, TargetSpec};
use esync_proto::id::{EcuSerial, ReleaseCounter, Sha256Digest, SoftwareVersion, Vin};
use esync_proto::message::InstalledImage;
use esync_proto::message::PatchFormat;
use esync_uptane::manifest::{EcuVersionReport, ReportedImage, VehicleManifest};
use esync_uptane::{PrivateKey, UnixTime};
use sha2::{Digest as _, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_esync-server");
const T: Duration = Duration::from_secs(20);
const HW: &str = "ecu-hw";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// The running `serve`, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Env {
    dir: tempfile::TempDir,
    token: String,
}

impl Env {
    fn config(&self) -> PathBuf {
        self.dir.path().join("srv").join("server.toml")
    }

    /// Runs an admin subcommand; returns stdout (panics on failure).
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .args(args)
            .env("ESYNC_CONFIG", self.config())
            .env("ESYNC_TOKEN", &self.token)
            // Offline commands take no connection flags.
            .args((args.first() != Some(&"offline")).then_some("--quiet"))
            .output()
            .expect("run cli");
        assert!(
            out.status.success(),
            "esync-server {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    }
}

fn image_v1() -> Vec<u8> {
    (0..300_000u32)
        .map(|i| (i.wrapping_mul(13) % 251) as u8)
        .collect()
}

fn image_v2() -> Vec<u8> {
    let mut b = image_v1();
    for x in b.iter_mut().step_by(1009) {
        *x ^= 0x33;
    }
    b
}

fn sha(b: &[u8]) -> Sha256Digest {
    Sha256Digest(Sha256::digest(b).into())
}

/// One vehicle: its Client's TLS identity (from a CSR the Server signed)
/// and the Uptane keys of its primary and of one ECU.
struct Car {
    vin: Vin,
    primary: PrivateKey,
    ecu: PrivateKey,
    http: DeviceHttp,
    /// Its TLS identity (a fresh connection can be made with it).
    identity: IssuedIdentity,
    device_url: String,
}

fn raw_ed25519_hex(k: &PrivateKey) -> String {
    let v = serde_json::to_value(k.public_key()).expect("key json");
    v["keyval"]["public"]
        .as_str()
        .expect("ed25519 hex")
        .to_owned()
}

fn car(env: &Env, vin: &str, seed: u8, device_url: &str, anchors: &TrustAnchors) -> Car {
    env.cli_json(&[
        "vehicles",
        "add",
        "--vin",
        vin,
        "--model",
        "m1",
        "--region",
        "eu",
        "--hardware-id",
        HW,
    ]);
    let primary = PrivateKey::from_seed(&[seed; 32]);
    let ecu = PrivateKey::from_seed(&[seed + 1; 32]);
    for (serial, key, is_primary, hw) in [
        (format!("GW-{vin}"), &primary, true, "gw-hw"),
        (format!("ECU-{vin}"), &ecu, false, HW),
    ] {
        let mut args = vec![
            "vehicles",
            "add-ecu",
            "--vin",
            vin,
            "--serial",
            &serial,
            "--hardware-id",
            hw,
        ];
        let key = raw_ed25519_hex(key);
        args.extend(["--public-key", &key]);
        if is_primary {
            args.push("--primary");
        }
        env.cli_json(&args);
    }
    // The vehicle's TLS key stays with it; the Server signs its CSR.
    let tls_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .serialize_request(&tls_key)
        .expect("csr")
        .pem()
        .expect("pem");
    let csr_path = env.write(&format!("{vin}.csr"), csr.as_bytes());
    let cert_path = env.dir.path().join(format!("{vin}.pem"));
    env.cli(&[
        "certs",
        "issue",
        "--vin",
        vin,
        "--csr",
        csr_path.to_str().expect("utf-8 path"),
        "--out",
        cert_path.to_str().expect("utf-8 path"),
    ]);
    let chain = std::fs::read_to_string(&cert_path).expect("chain");
    let identity = IssuedIdentity::from_pem(&chain, &tls_key.serialize_pem()).expect("identity");
    let cfg = client_tls_config(&identity, anchors).expect("tls");
    Car {
        vin: Vin::new(vin).expect("vin"),
        primary,
        ecu,
        http: DeviceHttp::new(device_url, cfg).expect("http"),
        identity,
        device_url: device_url.to_owned(),
    }
}

impl Car {
    /// Reports `installed` on the ECU (signed manifest, fresh nonce) and
    /// checks in; returns the manifest's hash and the check-in answer.
    async fn report(&self, installed: &[u8]) -> (Sha256Digest, CheckInResponse) {
        let serial = EcuSerial::new(format!("ECU-{}", self.vin)).expect("serial");
        let report = EcuVersionReport {
            ecu_serial: serial.clone(),
            installed_image: ReportedImage::from_installed(
                &InstalledImage {
                    version: SoftwareVersion::new("1.0.0").expect("v"),
                    release_counter: ReleaseCounter(1),
                    length: installed.len() as u64,
                    sha256: sha(installed),
                },
                "installed".into(),
            ),
            release_counter: 1,
            nonce: format!("{:032x}", rand::random::<u128>()),
            attacks_detected: String::new(),
            timestamp: UnixTime(now_s()),
        };
        let mut reports = BTreeMap::new();
        reports.insert(serial.to_string(), report.sign(&self.ecu).expect("sign"));
        let m = VehicleManifest {
            vin: self.vin.clone(),
            primary_ecu_serial: EcuSerial::new(format!("GW-{}", self.vin)).expect("serial"),
            ecu_version_reports: reports,
        }
        .sign(&self.primary)
        .expect("sign manifest");
        self.http.upload_manifest(&m, T).await.expect("manifest");
        (sha(&m), self.check_in(sha(&m)).await)
    }

    /// Checks in with the hash of the manifest last uploaded.
    async fn check_in(&self, manifest_sha256: Sha256Digest) -> CheckInResponse {
        self.http
            .check_in(&CheckInRequest { manifest_sha256 }, T)
            .await
            .expect("check-in")
    }
}

fn start_server(config: &Path) -> (Server, BTreeMap<String, String>) {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("serve");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let mut urls = BTreeMap::new();
    let mut lines = BufReader::new(stdout).lines();
    while urls.len() < 3 {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .expect("line");
        if let Some((what, url)) = line.split_once(" listening on ") {
            urls.insert(what.to_owned(), url.to_owned());
        }
    }
    (server, urls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_serve_upload_package_assign_and_one_delta_for_two_vehicles() {
    let dir = tempfile::tempdir().expect("dir");
    let srv = dir.path().join("srv");
    let ports = [free_port(), free_port(), free_port()];
    let out = Command::new(BIN)
        .args(["init", "--dir"])
        .arg(&srv)
        .args(["--device-listen", &format!("127.0.0.1:{}", ports[0])])
        .args(["--admin-listen", &format!("127.0.0.1:{}", ports[1])])
        .args(["--metrics-listen", &format!("127.0.0.1:{}", ports[2])])
        .output()
        .expect("init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    assert!(token.starts_with("esat_"), "{token}");
    let env = Env { dir, token };
    let (_server, urls) = start_server(&env.config());
    let anchors = TrustAnchors::from_pem(
        &std::fs::read_to_string(srv.join("keys").join("fleet-ca.pem")).expect("ca"),
    )
    .expect("anchors");

    // A viewer token made through the CLI may read but not change.
    let viewer = env.cli(&["tokens", "create", "--name", "watcher", "--role", "viewer"]);
    let as_viewer = Command::new(BIN)
        .args(["vehicles", "add", "--vin", "1HGCM82633A000001"])
        .args(["--model", "m", "--region", "eu", "--quiet"])
        .env("ESYNC_CONFIG", env.config())
        .env("ESYNC_TOKEN", viewer.trim())
        .output()
        .expect("cli");
    assert!(!as_viewer.status.success());
    assert!(String::from_utf8_lossy(&as_viewer.stderr).contains("403"));

    // Two versions of an image, streamed; a package; two vehicles.
    let (v1, v2) = (image_v1(), image_v2());
    let f1 = env.write("fw-1.bin", &v1);
    let f2 = env.write("fw-2.bin", &v2);
    let i1 = env.cli_json(&[
        "images",
        "upload",
        "--name",
        "ecu-fw",
        "--version",
        "1.0.0",
        "--hardware-id",
        HW,
        f1.to_str().expect("path"),
    ]);
    let i2 = env.cli_json(&[
        "images",
        "upload",
        "--name",
        "ecu-fw",
        "--version",
        "2.0.0",
        "--hardware-id",
        HW,
        f2.to_str().expect("path"),
    ]);
    let (h1, h2) = (hex::encode(sha(&v1).0), hex::encode(sha(&v2).0));
    assert_eq!(i1["sha256"], h1);
    assert_eq!(i2["sha256"], h2);
    assert_eq!(i2["length"], v2.len());
    let req = serde_json::json!({"id": "fw-2", "components": [
        {"device": "/ecu1", "image": h2, "release_counter": 2,
         "precondition": "Vehicle.Speed == 0"}
    ]});
    let req_path = env.write("pkg.json", req.to_string().as_bytes());
    let pkg = env.cli_json(&["packages", "create", req_path.to_str().expect("path")]);
    assert_eq!(pkg["id"], "fw-2", "{pkg}");

    // The Image repository, signed offline with the CLI: root naming the
    // Server's online snapshot and timestamp keys, then targets for the
    // package; the Server re-signs snapshot and timestamp.
    let online = env.cli_json(&["repo", "online-keys"]);
    let snap = env.write(
        "snapshot.pub.json",
        online["snapshot"].to_string().as_bytes(),
    );
    let ts = env.write(
        "timestamp.pub.json",
        online["timestamp"].to_string().as_bytes(),
    );
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
    let root_key = env.dir.path().join("root.pem");
    let targets_key = env.dir.path().join("targets.pem");
    env.cli_json(&["offline", "keygen", "--out", &path(&root_key)]);
    env.cli_json(&["offline", "keygen", "--out", &path(&targets_key)]);
    let root = env.dir.path().join("1.root.json");
    env.cli(&[
        "offline",
        "root",
        "--root-key",
        &path(&root_key),
        "--targets-key",
        &path(&targets_key),
        "--snapshot-key",
        &path(&snap),
        "--timestamp-key",
        &path(&ts),
        "--out",
        &path(&root),
    ]);
    let up = env.cli_json(&["repo", "upload", &path(&root)]);
    assert_eq!(
        (up["role"].as_str(), up["version"].as_u64()),
        (Some("root"), Some(1))
    );
    let model = env.write(
        "fw-2.model.json",
        env.cli(&["packages", "get", "fw-2"]).as_bytes(),
    );
    let targets = env.dir.path().join("targets.json");
    env.cli(&[
        "offline",
        "sign-targets",
        "--key",
        &path(&targets_key),
        "--version",
        "1",
        "--out",
        &path(&targets),
        &path(&model),
    ]);
    let up = env.cli_json(&["repo", "upload", &path(&targets)]);
    assert_eq!(up["role"], "targets");
    assert_eq!(up["online_resigned"], serde_json::json!([1, 1]), "{up}");

    let device = &urls["device"];
    let a = car(&env, "WVWZZZ1JZXW000001", 10, device, &anchors);
    let b = car(&env, "WVWZZZ1JZXW000002", 20, device, &anchors);
    // Before the assignment A is up to date (and the Server remembers it).
    let (a_manifest, answer) = a.report(&v1).await;
    assert_eq!(answer, CheckInResponse::UpToDate);
    let none = env.cli_json(&["deltas", "status", "--from", &h1, "--to", &h2]);
    assert_eq!(none, serde_json::json!([]));
    let assigned = env.cli_json(&[
        "assign",
        "--package",
        "fw-2",
        a.vin.as_str(),
        b.vin.as_str(),
    ]);
    assert_eq!(assigned["assigned"].as_array().map(Vec::len), Some(2));

    // A checks in again with the same manifest (1.0.0): the assignment is
    // seen at once, and one delta job for (1.0.0, 2.0.0) is generated by
    // the Server's worker.
    let answer = a.check_in(a_manifest).await;
    assert!(
        matches!(answer, CheckInResponse::NewDirectorMetadata { .. }),
        "{answer:?}"
    );
    let jobs = env.cli_json(&[
        "deltas",
        "status",
        "--from",
        &h1,
        "--to",
        &h2,
        "--wait",
        "--timeout",
        "120",
    ]);
    let jobs = jobs.as_array().expect("jobs").clone();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["state"], "done", "{jobs:?}");
    assert_eq!(jobs[0]["attempts"], 1);
    let patch = jobs[0]["patch_sha256"].as_str().expect("patch").to_owned();

    // Vehicle B reports the same version: directed to the cached delta, no
    // second job, no second generation.
    let (_, answer) = b.report(&v1).await;
    assert!(
        matches!(answer, CheckInResponse::NewDirectorMetadata { .. }),
        "{answer:?}"
    );
    let shown = env.cli_json(&["vehicles", "get", b.vin.as_str()]);
    assert_eq!(shown["assignments"], serde_json::json!(["fw-2"]));
    let again = env.cli_json(&["deltas", "status", "--from", &h1, "--to", &h2]);
    assert_eq!(again.as_array().map(Vec::len), Some(1));
    assert_eq!(again[0]["attempts"], 1, "generated once: {again}");
    assert_eq!(again[0]["patch_sha256"], patch.as_str());

    // The Director's targets for B name the patch.
    let targets = b
        .http
        .metadata_file(
            esync_client::http::Repo::Director,
            &esync_api::MetadataFileName::new("targets.json").expect("name"),
            1 << 20,
            T,
        )
        .await
        .expect("targets")
        .expect("B has Director targets");
    let text = String::from_utf8_lossy(&targets);
    assert!(text.contains(&patch), "B's targets offer the cached delta");

    // Vehicle A downloads the patch, resuming a cut download with a Range
    // request, and rebuilds 2.0.0 from its installed 1.0.0 with it.
    let blob = esync_api::BlobId::parse_hex(&patch).expect("blob id");
    let patch_len = jobs[0]["patch_length"].as_u64().expect("length");
    let dl = tempfile::tempdir().expect("dl");
    let whole = dl.path().join("whole");
    a.http
        .download_blob(&blob, patch_len, &whole, DownloadLimits::default())
        .await
        .expect("download");
    let patch_bytes = std::fs::read(&whole).expect("patch");
    let dest = dl.path().join("resumed");
    let half = patch_bytes.len() / 2;
    std::fs::write(
        esync_client::http::partial_path(&dest),
        &patch_bytes[..half],
    )
    .expect("partial");
    let d = a
        .http
        .download_blob(&blob, patch_len, &dest, DownloadLimits::default())
        .await
        .expect("resumed download");
    assert_eq!(d.resumed_from, half as u64);
    assert_eq!(d.fetched, patch_len - half as u64);
    let resumed = std::fs::read(&dest).expect("resumed");
    assert_eq!(resumed, patch_bytes);
    let mut installed = Vec::new();
    esync_package::delta::apply_patch(
        PatchFormat::BsdiffZstd,
        &v1,
        &sha(&v1),
        &resumed,
        &TargetSpec {
            length: v2.len() as u64,
            sha256: sha(&v2),
        },
        &mut installed,
        &ApplyLimits::default(),
    )
    .expect("patch applies");
    assert_eq!(installed, v2, "the delta rebuilds 2.0.0");
    assert!(
        (patch_len as usize) < v2.len() / 4,
        "{patch_len} bytes of patch"
    );

    // Revoking B's certificate through the CLI: the running device listener
    // refuses B's next connection (CRL reloaded), A is still served.
    let serial = esync_identity::parse_identity(&b.identity.cert_der)
        .expect("identity")
        .serial_hex;
    let revoked = env.cli_json(&["certs", "revoke", &serial, "--reason", "stolen"]);
    assert!(revoked["revoked_ms"].is_i64(), "{revoked}");
    let fresh = |c: &Car| {
        DeviceHttp::new(
            &c.device_url,
            client_tls_config(&c.identity, &anchors).expect("tls"),
        )
        .expect("http")
    };
    let req = CheckInRequest {
        manifest_sha256: a_manifest,
    };
    assert!(
        fresh(&b).check_in(&req, T).await.is_err(),
        "a revoked certificate is refused"
    );
    fresh(&a)
        .check_in(&req, T)
        .await
        .expect("A is still served");

    // Metrics: uploads counted, one delta done, admin and device requests.
    let metrics = reqwest_metrics(&urls["metrics"]).await;
    assert!(
        metrics.contains("esync_server_delta_jobs_total{outcome=\"done\"} 1"),
        "{metrics}"
    );
    let uploaded: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("esync_server_image_upload_bytes_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("upload counter");
    assert_eq!(uploaded, (v1.len() + v2.len()) as u64);
    assert!(metrics.contains("listener=\"device\""), "{metrics}");
    assert!(
        metrics.contains("route=\"/admin/v1/images\",status=\"201\""),
        "{metrics}"
    );
}

/// GET of the plain-HTTP metrics URL (`http://addr/metrics`).
async fn reqwest_metrics(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http url");
    let (addr, path) = rest.split_once('/').expect("path");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!("GET /{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}
