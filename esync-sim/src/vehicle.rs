//! One simulated vehicle's task: check in, upload the signed manifest when
//! asked, and when the Director has new metadata, verify it, download the
//! images (or deltas) of its ECUs, decide the outcome (the configured
//! failure rate, deterministic per vehicle and package), report the result
//! and upload the manifest that tells the truth afterwards.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use esync_api::body::{
    CheckInRequest, CheckInResponse, ComponentOutcome, ComponentResult, PackageOutcome, Report,
    ReportEvent,
};
use esync_api::{BlobId, ReportId};
use esync_client::http::{DeviceHttp, HttpError, Repo};
use esync_identity::{client_tls_config, TrustAnchors};
use esync_package::package::TargetDescription;
use esync_proto::id::{EcuSerial, ReleaseCounter, Sha256Digest, Vin};
use esync_proto::message::{ErrorClass, Failure, FailureCode, InstalledImage};
use esync_uptane::manifest::{EcuVersionReport, ReportedImage, VehicleManifest};
use esync_uptane::uptane::{EcuInfo, FullProgress, FullVerifier, RepoKind, Vehicle};
use esync_uptane::{Limits, MemoryStore, Response, UnixTime};
use futures::future::BoxFuture;
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use crate::provision::SimVehicle;
use crate::spec::u64_of;
use crate::stats::{Counters, ErrorKind};
use crate::FleetConfig;

/// What one ECU runs, as the simulator's truth.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EcuState {
    /// Hardware id.
    pub hardware_id: String,
    /// Installed version.
    pub version: String,
    /// Its release counter.
    pub release_counter: u64,
    /// Its length.
    pub length: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// One vehicle at the end of a run ([`crate::FleetReport::vehicles`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VehicleReport {
    /// VIN.
    pub vin: String,
    /// How many distinct offers of each package the vehicle took (a retry
    /// after a transport error is the same offer).
    pub offers: BTreeMap<String, u32>,
    /// The last reported outcome of each package.
    pub outcomes: BTreeMap<String, PackageOutcome>,
    /// A package whose offer was taken but not finished (no result stored,
    /// or the manifest after it not accepted yet) when the run stopped.
    pub unfinished: Option<String>,
    /// What each ECU runs now, by serial (the manifest it last uploaded
    /// says the same once it was accepted).
    pub ecus: BTreeMap<String, EcuState>,
    /// Whether the Server accepted the manifest describing `ecus`.
    pub manifest_accepted: bool,
    /// Errors met.
    pub errors: u64,
    /// The device API URL it used last.
    pub server: String,
}

/// Why a step stopped.
enum Abort {
    /// The fleet is stopping.
    Stop,
    /// Gave up on this step (counted); try again at the next check-in.
    Failed,
}

struct Ecu {
    serial: EcuSerial,
    hardware_id: esync_proto::id::HardwareId,
    key: esync_uptane::PrivateKey,
    installed: InstalledImage,
    filename: String,
}

pub(crate) struct SimTask {
    vin: Vin,
    cfg: Arc<FleetConfig>,
    counters: Arc<Counters>,
    stop: watch::Receiver<bool>,
    tls: Arc<rustls::ClientConfig>,
    servers: Vec<String>,
    clients: Vec<Option<DeviceHttp>>,
    current: usize,
    primary_key: esync_uptane::PrivateKey,
    primary_serial: EcuSerial,
    ecus: Vec<Ecu>,
    manifest_hash: Option<Sha256Digest>,
    manifest_accepted: bool,
    verifier: Option<FullVerifier<MemoryStore, MemoryStore>>,
    roots: Arc<crate::fleet::Roots>,
    offers: BTreeMap<String, u32>,
    outcomes: BTreeMap<String, PackageOutcome>,
    in_flight: Option<String>,
    /// The result of `in_flight` is stored; its manifest is not accepted
    /// yet (uploaded before the next check-in).
    reported: bool,
    errors: u64,
    rng: rand::rngs::StdRng,
}

fn http_kind(e: &HttpError) -> ErrorKind {
    match e {
        HttpError::Transport(_) => ErrorKind::Transport,
        HttpError::Timeout { .. } => ErrorKind::Timeout,
        HttpError::Status { status, .. } if status.is_server_error() => ErrorKind::Server,
        HttpError::Status { .. } => ErrorKind::Refused,
        HttpError::HashMismatch { .. } | HttpError::LengthMismatch { .. } => ErrorKind::Blob,
        _ => ErrorKind::Other,
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whether vehicle `vin` fails (and rolls back) `package` at `failure_rate`
/// with `seed`: the decision every simulated vehicle makes, for tests and
/// rehearsals to predict.
pub fn fails(seed: u64, vin: &Vin, package: &str, failure_rate: f64) -> bool {
    let h = crate::spec::derive(
        seed,
        &[b"failure", vin.as_str().as_bytes(), package.as_bytes()],
    );
    (u64_of(&h) as f64 / u64::MAX as f64) < failure_rate
}

/// One target of a verified update for one of this vehicle's ECUs.
struct Planned {
    ecu: usize,
    name: String,
    desc: TargetDescription,
    /// The blob to fetch and its length (image or delta), `None` when the
    /// ECU already runs the image.
    fetch: Option<(BlobId, u64)>,
}

impl SimTask {
    pub(crate) fn new(
        v: &SimVehicle,
        index: usize,
        cfg: Arc<FleetConfig>,
        counters: Arc<Counters>,
        stop: watch::Receiver<bool>,
        anchors: &TrustAnchors,
        roots: Arc<crate::fleet::Roots>,
    ) -> Result<Self, crate::SimError> {
        let identity = v.identity()?;
        let tls = client_tls_config(&identity, anchors)
            .map_err(|e| crate::SimError::Identity(format!("{}: {e}", v.vin)))?;
        let n = cfg.servers.len();
        // Vehicle i starts on server i mod n and fails over in order.
        let servers: Vec<String> = (0..n)
            .map(|k| cfg.servers[(index + k) % n].clone())
            .collect();
        let ecus = v
            .ecus
            .iter()
            .map(|e| Ecu {
                serial: e.serial.clone(),
                hardware_id: e.hardware_id.clone(),
                key: e.key(),
                installed: e.factory.clone(),
                filename: format!("factory/{}/{}", e.hardware_id, e.factory.version),
            })
            .collect();
        let seed = crate::spec::derive(cfg.seed, &[b"vehicle rng", v.vin.as_str().as_bytes()]);
        Ok(Self {
            vin: v.vin.clone(),
            counters,
            stop,
            tls,
            clients: vec![None; servers.len()],
            servers,
            current: 0,
            primary_key: v.primary().key(),
            primary_serial: v.primary().serial.clone(),
            ecus,
            manifest_hash: None,
            manifest_accepted: false,
            verifier: None,
            roots,
            offers: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            in_flight: None,
            reported: false,
            errors: 0,
            rng: rand::rngs::StdRng::from_seed(seed),
            cfg,
        })
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps `d` unless the fleet stops first (then `Err(Abort::Stop)`).
    async fn sleep(&mut self, d: Duration) -> Result<(), Abort> {
        if self.stopping() {
            return Err(Abort::Stop);
        }
        tokio::select! {
            () = tokio::time::sleep(d) => Ok(()),
            _ = self.stop.changed() => Err(Abort::Stop),
        }
    }

    fn http(&mut self) -> Result<DeviceHttp, Abort> {
        let i = self.current;
        if let Some(c) = &self.clients[i] {
            return Ok(c.clone());
        }
        match DeviceHttp::new(&self.servers[i], Arc::clone(&self.tls)) {
            Ok(c) => {
                self.clients[i] = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                self.fail(ErrorKind::Other, &e.to_string());
                Err(Abort::Failed)
            }
        }
    }

    fn fail(&mut self, kind: ErrorKind, what: &str) {
        self.errors += 1;
        self.counters.error(kind);
        if self.cfg.log_errors {
            eprintln!("esync-sim: {} {}: {what}", self.vin, kind.name());
        }
    }

    /// Runs `op` on the current Server, retrying what may succeed later
    /// (transport, timeout, 5xx) with exponential backoff up to
    /// `cfg.max_attempts` attempts; a connection error moves to the next
    /// Server URL first.
    async fn call<T>(
        &mut self,
        what: &str,
        mut op: impl FnMut(DeviceHttp) -> BoxFuture<'static, Result<T, HttpError>>,
    ) -> Result<T, Abort> {
        let mut delay = self.cfg.backoff_initial;
        let mut attempt = 1u32;
        loop {
            let http = self.http()?;
            match op(http).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let kind = http_kind(&e);
                    self.fail(kind, &format!("{what}: {e}"));
                    if !e.retryable() || attempt >= self.cfg.max_attempts {
                        return Err(Abort::Failed);
                    }
                    if matches!(kind, ErrorKind::Transport | ErrorKind::Timeout)
                        && self.servers.len() > 1
                    {
                        self.current = (self.current + 1) % self.servers.len();
                        self.counters
                            .failovers
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    let jitter = self.rng.gen_range(0.5..1.0);
                    self.sleep(delay.mul_f64(jitter)).await?;
                    delay = (delay * 2).min(self.cfg.backoff_max);
                    attempt += 1;
                }
            }
        }
    }

    /// Signs the manifest of what the ECUs run now (fresh nonces).
    fn sign_manifest(&self) -> Result<Vec<u8>, String> {
        let ts = UnixTime(now_unix());
        let mut reports = BTreeMap::new();
        for e in &self.ecus {
            let r = EcuVersionReport {
                ecu_serial: e.serial.clone(),
                installed_image: ReportedImage::from_installed(&e.installed, e.filename.clone()),
                release_counter: e.installed.release_counter.0,
                // Random, never from the seed: the Server remembers every
                // nonce, also across runs of the simulator.
                nonce: format!("{:032x}", rand::random::<u128>()),
                attacks_detected: String::new(),
                timestamp: ts,
            };
            let signed = r.sign(&e.key).map_err(|x| x.to_string())?;
            reports.insert(e.serial.to_string(), signed);
        }
        VehicleManifest {
            vin: self.vin.clone(),
            primary_ecu_serial: self.primary_serial.clone(),
            ecu_version_reports: reports,
        }
        .sign(&self.primary_key)
        .map_err(|x| x.to_string())
    }

    /// Signs and uploads the manifest; the hash the next check-ins carry.
    async fn upload_manifest(&mut self) -> Result<(), Abort> {
        let bytes = match self.sign_manifest() {
            Ok(b) => Arc::new(b),
            Err(e) => {
                self.fail(ErrorKind::Other, &format!("sign manifest: {e}"));
                return Err(Abort::Failed);
            }
        };
        self.manifest_hash = Some(Sha256Digest(Sha256::digest(bytes.as_slice()).into()));
        self.manifest_accepted = false;
        let t = self.cfg.request_timeout;
        let accepted = self
            .call("manifest", |h| {
                let b = Arc::clone(&bytes);
                Box::pin(async move { h.upload_manifest(&b, t).await })
            })
            .await?;
        self.manifest_accepted = true;
        self.manifest_hash = Some(accepted.manifest_sha256);
        self.counters
            .manifests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// One check-in (and what it asks for).
    async fn check_in_once(&mut self) -> Result<(), Abort> {
        if self.reported {
            // A result stored whose manifest did not reach the Server.
            self.finish_offer().await?;
        }
        if self.manifest_hash.is_none() {
            // The first manifest: its hash is what the first check-in asks
            // about (the Server then wants it, or already has it).
            match self.sign_manifest() {
                Ok(b) => {
                    self.manifest_hash = Some(Sha256Digest(Sha256::digest(&b).into()));
                }
                Err(e) => {
                    self.fail(ErrorKind::Other, &format!("sign manifest: {e}"));
                    return Err(Abort::Failed);
                }
            }
        }
        for _ in 0..3 {
            let req = CheckInRequest {
                manifest_sha256: self.manifest_hash.unwrap_or(Sha256Digest([0; 32])),
            };
            let t = self.cfg.request_timeout;
            let counters = Arc::clone(&self.counters);
            let answer = self
                .call("check-in", |h| {
                    let req = req.clone();
                    let counters = Arc::clone(&counters);
                    Box::pin(async move {
                        let start = Instant::now();
                        let r = h.check_in(&req, t).await;
                        if r.is_ok() {
                            counters.latency.record(start.elapsed());
                        }
                        r
                    })
                })
                .await?;
            self.counters
                .check_ins
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match answer {
                CheckInResponse::UpToDate => {
                    self.counters
                        .up_to_date
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.manifest_accepted = true;
                    return Ok(());
                }
                CheckInResponse::ManifestWanted => {
                    self.counters
                        .manifest_wanted
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.upload_manifest().await?;
                }
                CheckInResponse::NewDirectorMetadata { .. } => {
                    self.counters
                        .new_metadata
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.manifest_accepted = true;
                    return self.update().await;
                }
                _ => {
                    self.fail(ErrorKind::Other, "check-in: unknown answer");
                    return Err(Abort::Failed);
                }
            }
        }
        Ok(())
    }

    fn vehicle_info(&self) -> Vehicle {
        Vehicle {
            vin: self.vin.clone(),
            ecus: self
                .ecus
                .iter()
                .map(|e| {
                    (
                        e.serial.clone(),
                        EcuInfo {
                            hardware_id: e.hardware_id.clone(),
                            installed_release_counter: e.installed.release_counter,
                        },
                    )
                })
                .collect(),
        }
    }

    /// Full verification of the Director's and the Image repository's
    /// metadata; the verified targets.
    async fn verify(&mut self) -> Result<Vec<esync_uptane::uptane::DirectorTarget>, Abort> {
        let mut v = match self.verifier.take() {
            Some(v) => v,
            None => {
                let http = self.http()?;
                let roots = match self.roots.get(&http, self.cfg.request_timeout).await {
                    Ok(r) => r,
                    Err(e) => {
                        self.fail(http_kind(&e), &format!("roots: {e}"));
                        return Err(Abort::Failed);
                    }
                };
                match FullVerifier::open(
                    MemoryStore::new(roots.0.clone()),
                    MemoryStore::new(roots.1.clone()),
                    self.vehicle_info(),
                    Limits::default(),
                ) {
                    Ok(v) => v,
                    Err(e) => {
                        self.fail(ErrorKind::Verify, &format!("roots: {e}"));
                        return Err(Abort::Failed);
                    }
                }
            }
        };
        *v.vehicle_mut() = self.vehicle_info();
        let r = self.drive(&mut v).await;
        self.verifier = Some(v);
        r
    }

    async fn drive(
        &mut self,
        v: &mut FullVerifier<MemoryStore, MemoryStore>,
    ) -> Result<Vec<esync_uptane::uptane::DirectorTarget>, Abort> {
        let mut p = match v.begin(UnixTime(now_unix())) {
            Ok(p) => p,
            Err(e) => {
                self.fail(ErrorKind::Verify, &e.to_string());
                return Err(Abort::Failed);
            }
        };
        loop {
            match p {
                FullProgress::Done(t) => return Ok(t),
                FullProgress::Need(kind, need) => {
                    let repo = match kind {
                        RepoKind::Director => Repo::Director,
                        RepoKind::Image => Repo::Image,
                    };
                    let t = self.cfg.request_timeout;
                    let got = self
                        .call("metadata", |h| {
                            let need = need.clone();
                            Box::pin(async move { h.fetch_need(repo, &need, t).await })
                        })
                        .await?;
                    let resp = match &got {
                        Some(b) => Response::Bytes(b),
                        None => Response::NotFound,
                    };
                    p = match v.provide(resp) {
                        Ok(p) => p,
                        Err(e) => {
                            self.fail(ErrorKind::Verify, &e.to_string());
                            return Err(Abort::Failed);
                        }
                    };
                }
            }
        }
    }

    /// What the verified targets ask of this vehicle: one package's
    /// components for its ECUs, with the blob each needs.
    fn plan(
        &mut self,
        targets: Vec<esync_uptane::uptane::DirectorTarget>,
    ) -> Result<Option<(String, Vec<Planned>)>, Abort> {
        let mut package: Option<String> = None;
        let mut out = Vec::new();
        for t in targets {
            let Some(sha) = t
                .info
                .hashes
                .get("sha256")
                .and_then(|h| esync_package::digest::from_hex(h))
            else {
                self.fail(ErrorKind::Verify, &format!("{}: no sha256", t.name));
                return Err(Abort::Failed);
            };
            let custom = t.info.custom.clone().unwrap_or_default();
            let desc = match TargetDescription::from_custom_json(
                &custom,
                Some((&t.name, t.info.length, &sha)),
            ) {
                Ok(d) => d,
                Err(e) => {
                    self.fail(ErrorKind::Verify, &format!("{}: {e}", t.name));
                    return Err(Abort::Failed);
                }
            };
            let name = desc.package.to_string();
            match &package {
                None => package = Some(name.clone()),
                // The Director directs one package at a time; another one
                // waits for the next round.
                Some(p) if *p != name => continue,
                Some(_) => {}
            }
            let Some(ecu) = self.ecus.iter().position(|e| e.serial == t.ecu) else {
                self.fail(
                    ErrorKind::Verify,
                    &format!("{}: not one of my ECUs", t.name),
                );
                return Err(Abort::Failed);
            };
            let installed = &self.ecus[ecu].installed;
            let fetch = if installed.sha256 == sha {
                None
            } else if let Some(d) = desc
                .component
                .deltas
                .iter()
                .find(|d| d.source_sha256 == installed.sha256)
            {
                Some((BlobId(d.patch.sha256), d.patch.length))
            } else {
                Some((BlobId(sha), t.info.length))
            };
            out.push(Planned {
                ecu,
                name: t.name,
                desc,
                fetch,
            });
        }
        Ok(package.map(|p| (p, out)))
    }

    /// Downloads `blob` (streamed, hashed, length-checked; not stored).
    async fn download(&mut self, blob: BlobId, length: u64) -> Result<(), Abort> {
        let t = self.cfg.request_timeout;
        let counters = Arc::clone(&self.counters);
        self.call("blob", |h| {
            let counters = Arc::clone(&counters);
            Box::pin(async move {
                let mut s = h.open_blob(&blob, 0, t).await?;
                let mut hasher = Sha256::new();
                let mut got = 0u64;
                while let Some(chunk) = s.next_chunk().await? {
                    got += chunk.len() as u64;
                    if got > length {
                        return Err(HttpError::LengthMismatch {
                            blob,
                            got,
                            expected: length,
                        });
                    }
                    hasher.update(&chunk);
                }
                if got != length {
                    return Err(HttpError::LengthMismatch {
                        blob,
                        got,
                        expected: length,
                    });
                }
                if <[u8; 32]>::from(hasher.finalize()) != blob.digest().0 {
                    return Err(HttpError::HashMismatch { blob });
                }
                counters
                    .bytes
                    .fetch_add(got, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            })
        })
        .await
    }

    /// Whether this vehicle fails `package` (the configured rate,
    /// deterministic from the seed, the VIN and the package).
    fn fails(&self, package: &str) -> bool {
        fails(self.cfg.seed, &self.vin, package, self.cfg.failure_rate)
    }

    /// The update the Director announced, end to end.
    async fn update(&mut self) -> Result<(), Abort> {
        let targets = self.verify().await?;
        let Some((package, planned)) = self.plan(targets)? else {
            return Ok(());
        };
        if self.in_flight.as_deref() != Some(package.as_str()) {
            *self.offers.entry(package.clone()).or_default() += 1;
            self.counters.offered(&package);
            self.in_flight = Some(package.clone());
        }
        for p in &planned {
            if let Some((blob, len)) = p.fetch {
                self.download(blob, len).await?;
            }
        }
        let fail = self.fails(&package);
        let failed_idx = if fail && !planned.is_empty() {
            let h = crate::spec::derive(
                self.cfg.seed,
                &[
                    b"failed component",
                    self.vin.as_str().as_bytes(),
                    package.as_bytes(),
                ],
            );
            Some((u64_of(&h) % planned.len() as u64) as usize)
        } else {
            None
        };
        let outcome = if failed_idx.is_some() {
            PackageOutcome::RolledBack
        } else {
            PackageOutcome::Installed
        };
        let components = planned
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let e = &self.ecus[p.ecu];
                match failed_idx {
                    None => ComponentResult {
                        ecu: e.serial.clone(),
                        outcome: ComponentOutcome::Installed,
                        running: p.desc.component.version.clone(),
                        failure: None,
                    },
                    Some(f) => ComponentResult {
                        ecu: e.serial.clone(),
                        outcome: if i == f {
                            ComponentOutcome::Failed
                        } else {
                            ComponentOutcome::RolledBack
                        },
                        running: e.installed.version.clone(),
                        failure: (i == f).then(|| Failure {
                            class: ErrorClass::UpdateIncapable,
                            code: FailureCode::SelfTestFailed,
                            message: "simulated self-test failure (esync-sim failure rate)".into(),
                        }),
                    },
                }
            })
            .collect();
        let report = Arc::new(Report {
            created_wall_ms: now_ms(),
            event: ReportEvent::Result {
                package: package.clone(),
                outcome,
                components,
            },
        });
        // One id for every retry of this report: the Server counts it once.
        let id = Arc::new(ReportId::from_bytes(rand::random::<[u8; 16]>()));
        let t = self.cfg.request_timeout;
        self.call("report", |h| {
            let (id, report) = (Arc::clone(&id), Arc::clone(&report));
            Box::pin(async move { h.put_report(&id, &report, t).await })
        })
        .await?;
        self.counters
            .reports
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let counter = match outcome {
            PackageOutcome::Installed => &self.counters.installed,
            _ => &self.counters.rolled_back,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.outcomes.insert(package.clone(), outcome);
        self.reported = true;
        if outcome == PackageOutcome::Installed {
            for p in &planned {
                let c = &p.desc.component;
                let e = &mut self.ecus[p.ecu];
                e.installed = InstalledImage {
                    version: c.version.clone(),
                    release_counter: ReleaseCounter(c.release_counter.0),
                    length: c.image.length,
                    sha256: c.image.sha256,
                };
                e.filename.clone_from(&p.name);
            }
        }
        // The manifest that tells the truth: new versions after success,
        // the old ones after the rollback.
        self.finish_offer().await
    }

    /// Uploads the manifest after a stored result; the offer is finished
    /// once the Server accepted it.
    async fn finish_offer(&mut self) -> Result<(), Abort> {
        self.upload_manifest().await?;
        self.reported = false;
        self.in_flight = None;
        Ok(())
    }

    /// The vehicle's loop until the fleet stops.
    pub(crate) async fn run(mut self) -> VehicleReport {
        // Spread the first check-ins over one interval.
        let first = self.cfg.interval.mul_f64(self.rng.gen_range(0.0..1.0));
        if self.sleep(first).await.is_ok() {
            loop {
                match self.check_in_once().await {
                    Ok(()) | Err(Abort::Failed) => {}
                    Err(Abort::Stop) => break,
                }
                let j = self.cfg.jitter.as_secs_f64();
                let wait = (self.cfg.interval.as_secs_f64() + self.rng.gen_range(-j..=j)).max(0.0);
                if self.sleep(Duration::from_secs_f64(wait)).await.is_err() {
                    break;
                }
            }
        }
        self.report()
    }

    fn report(&self) -> VehicleReport {
        VehicleReport {
            vin: self.vin.to_string(),
            offers: self.offers.clone(),
            outcomes: self.outcomes.clone(),
            unfinished: self.in_flight.clone(),
            ecus: self
                .ecus
                .iter()
                .map(|e| {
                    (
                        e.serial.to_string(),
                        EcuState {
                            hardware_id: e.hardware_id.to_string(),
                            version: e.installed.version.to_string(),
                            release_counter: e.installed.release_counter.0,
                            length: e.installed.length,
                            sha256: hex::encode(e.installed.sha256.0),
                        },
                    )
                })
                .collect(),
            manifest_accepted: self.manifest_accepted,
            errors: self.errors,
            server: self.servers[self.current].clone(),
        }
    }
}
