//! The `esync-server` binary driven as an operator drives it: `init` in a
//! temporary directory, `serve` as a child process, admin subcommands of
//! the CLI, and vehicles over the device API with mutual TLS through the
//! Client's `DeviceHttp`. Shared by the end-to-end test (`tests/e2e.rs`)
//! and the delta benchmark (`benches/deltas.rs`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use esync_api::body::{CheckInRequest, CheckInResponse};
use esync_client::http::DeviceHttp;
use esync_identity::{client_tls_config, IssuedIdentity, TrustAnchors};
use esync_proto::id::{EcuSerial, ReleaseCounter, Sha256Digest, SoftwareVersion, Vin};
use esync_proto::message::InstalledImage;
use esync_uptane::manifest::{EcuVersionReport, ReportedImage, VehicleManifest};
use esync_uptane::{PrivateKey, UnixTime};
use sha2::{Digest as _, Sha256};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_esync-server");
/// Timeout of one device-API request.
pub const T: Duration = Duration::from_secs(60);

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Wall time in seconds.
pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// SHA-256 of `b`.
pub fn sha(b: &[u8]) -> Sha256Digest {
    Sha256Digest(Sha256::digest(b).into())
}

/// The running `serve`, killed on drop.
pub struct Server(pub Child);

impl Server {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Server directory made by `esync-server init` and the operator token
/// `init` printed.
pub struct Env {
    /// Holds the Server directory (`srv/`) and the operator's files.
    pub dir: tempfile::TempDir,
    /// The operator token.
    pub token: String,
}

impl Env {
    /// `esync-server init` in a new temporary directory, with loopback
    /// listeners on free ports.
    pub fn init() -> Self {
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
        Env { dir, token }
    }

    /// The Server directory.
    pub fn srv(&self) -> PathBuf {
        self.dir.path().join("srv")
    }

    /// The configuration file `init` wrote.
    pub fn config(&self) -> PathBuf {
        self.srv().join("server.toml")
    }

    /// A file of the key directory (`esync_server::config::keys`).
    pub fn key_file(&self, name: &str) -> PathBuf {
        self.srv().join("keys").join(name)
    }

    /// The fleet CA as a trust anchor.
    pub fn anchors(&self) -> TrustAnchors {
        TrustAnchors::from_pem(&std::fs::read_to_string(self.key_file("fleet-ca.pem")).expect("ca"))
            .expect("anchors")
    }

    /// Runs an admin subcommand; returns stdout (panics on failure).
    pub fn cli(&self, args: &[&str]) -> String {
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

    /// [`Env::cli`] whose output is JSON.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// Writes an operator file.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    }

    /// `serve`, returning the running process and its listeners' URLs
    /// (`device`, `admin`, `metrics`) as it printed them.
    pub fn serve(&self) -> (Server, BTreeMap<String, String>) {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(self.config())
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

    /// Uploads an image file with the CLI; returns the Server's answer.
    pub fn upload(
        &self,
        name: &str,
        version: &str,
        hardware_id: &str,
        file: &Path,
    ) -> serde_json::Value {
        self.cli_json(&[
            "images",
            "upload",
            "--name",
            name,
            "--version",
            version,
            "--hardware-id",
            hardware_id,
            file.to_str().expect("utf-8 path"),
        ])
    }
}

/// One vehicle: its Client's TLS identity (from a CSR the Server signed)
/// and the Uptane keys of its primary and of one ECU (`ECU-<VIN>`, of the
/// hardware id given to [`Car::register`]).
pub struct Car {
    /// VIN.
    pub vin: Vin,
    /// The primary's Uptane key.
    pub primary: PrivateKey,
    /// The ECU's Uptane key.
    pub ecu: PrivateKey,
    /// The device-API connection.
    pub http: DeviceHttp,
    /// Its TLS identity (a fresh connection can be made with it).
    pub identity: IssuedIdentity,
    /// The device listener's URL.
    pub device_url: String,
}

/// The hex of an ed25519 public key as the CLI takes it.
pub fn raw_ed25519_hex(k: &PrivateKey) -> String {
    let v = serde_json::to_value(k.public_key()).expect("key json");
    v["keyval"]["public"]
        .as_str()
        .expect("ed25519 hex")
        .to_owned()
}

impl Car {
    /// Registers a vehicle with one ECU of `hardware_id` through the CLI
    /// and has its CSR signed; `seed` derives its Uptane keys.
    pub fn register(
        env: &Env,
        vin: &str,
        hardware_id: &str,
        seed: u8,
        device_url: &str,
        anchors: &TrustAnchors,
    ) -> Car {
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
            hardware_id,
        ]);
        let primary = PrivateKey::from_seed(&[seed; 32]);
        let ecu = PrivateKey::from_seed(&[seed.wrapping_add(1); 32]);
        for (serial, key, is_primary, hw) in [
            (format!("GW-{vin}"), &primary, true, "gw-hw"),
            (format!("ECU-{vin}"), &ecu, false, hardware_id),
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
        let identity =
            IssuedIdentity::from_pem(&chain, &tls_key.serialize_pem()).expect("identity");
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

    /// A new connection with this vehicle's identity.
    pub fn connect(&self, anchors: &TrustAnchors) -> DeviceHttp {
        DeviceHttp::new(
            &self.device_url,
            client_tls_config(&self.identity, anchors).expect("tls"),
        )
        .expect("http")
    }

    /// Reports `installed` (as version `version`) on the ECU (signed
    /// manifest, fresh nonce) and checks in; returns the manifest's hash
    /// and the check-in answer.
    pub async fn report(&self, installed: &[u8], version: &str) -> (Sha256Digest, CheckInResponse) {
        let serial = EcuSerial::new(format!("ECU-{}", self.vin)).expect("serial");
        let report = EcuVersionReport {
            ecu_serial: serial.clone(),
            installed_image: ReportedImage::from_installed(
                &InstalledImage {
                    version: SoftwareVersion::new(version).expect("v"),
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
    pub async fn check_in(&self, manifest_sha256: Sha256Digest) -> CheckInResponse {
        self.http
            .check_in(&CheckInRequest { manifest_sha256 }, T)
            .await
            .expect("check-in")
    }
}

/// Signs the Image repository offline with the CLI and uploads it: a root
/// naming the Server's online snapshot and timestamp keys, then targets
/// for the packages `ids` (the Server re-signs snapshot and timestamp).
/// Returns the answer to the targets upload.
pub fn sign_image_repo(env: &Env, ids: &[&str], targets_version: u64) -> serde_json::Value {
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
    let root_key = env.dir.path().join("root.pem");
    let targets_key = env.dir.path().join("targets.pem");
    if !root_key.exists() {
        let online = env.cli_json(&["repo", "online-keys"]);
        let snap = env.write(
            "snapshot.pub.json",
            online["snapshot"].to_string().as_bytes(),
        );
        let ts = env.write(
            "timestamp.pub.json",
            online["timestamp"].to_string().as_bytes(),
        );
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
    }
    let mut args = vec![
        "offline".to_owned(),
        "sign-targets".to_owned(),
        "--key".to_owned(),
        path(&targets_key),
        "--version".to_owned(),
        targets_version.to_string(),
        "--out".to_owned(),
    ];
    let targets = env.dir.path().join("targets.json");
    args.push(path(&targets));
    for id in ids {
        let model = env.write(
            &format!("{id}.model.json"),
            env.cli(&["packages", "get", id]).as_bytes(),
        );
        args.push(path(&model));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.cli(&args);
    env.cli_json(&["repo", "upload", &path(&targets)])
}

/// GET of the plain-HTTP metrics URL (`http://addr/metrics`).
pub async fn fetch_metrics(url: &str) -> String {
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
