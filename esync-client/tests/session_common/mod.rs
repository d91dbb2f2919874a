//! An in-process fake Server for the session tests: Director and Image
//! repositories on esync_uptane's signing side, blobs served with Range, and
//! counters. No sockets.
#![allow(dead_code)]

use std::collections::BTreeMap;

use esync_api::body::{CheckInResponse, ManifestAccepted};
use esync_client::core::session::{
    Answer, Now, ServerRequest, Session, SessionConfig, SessionStep,
};
use esync_package::package::{
    Artifact, ArtifactRef, Component, ComponentPolicy, Delta, DownloadPolicy, Package, PackageId,
    PackageSpec, TargetDescription,
};
use esync_proto::id::{
    DevicePath, EcuSerial, HardwareId, ReleaseCounter, Sha256Digest, SoftwareVersion, Vin,
};
use esync_proto::message::{
    AgentState, Criticality, DeltaCapability, InstalledImage, InventoryReport, PatchFormat,
    VerificationLevel,
};
use esync_uptane::builder::RepositoryBuilder;
use esync_uptane::manifest::VehicleManifest;
use esync_uptane::uptane::{director_custom, image_custom};
use esync_uptane::{MemoryStore, PrivateKey, UnixTime};
use sha2::{Digest, Sha256};

pub const NOW_S: i64 = 1_800_000_000;

pub fn sha(b: &[u8]) -> Sha256Digest {
    Sha256Digest(Sha256::digest(b).into())
}

pub fn vin() -> Vin {
    Vin::new("WVWZZZ1JZXW000001").expect("vin")
}

/// One ECU of the test vehicle.
pub struct Ecu {
    pub device: DevicePath,
    pub serial: EcuSerial,
    pub hw: HardwareId,
    pub old_image: Vec<u8>,
    pub new_image: Vec<u8>,
    pub formats: Vec<PatchFormat>,
}

pub fn ecu(n: u8, size: usize, formats: Vec<PatchFormat>) -> Ecu {
    let old: Vec<u8> = (0..size).map(|i| (i as u8).wrapping_mul(n)).collect();
    let mut new = old.clone();
    for b in new.iter_mut().step_by(97) {
        *b ^= 0x5a;
    }
    Ecu {
        device: DevicePath::new(format!("/ecu{n}")).expect("device"),
        serial: EcuSerial::new(format!("SER{n}")).expect("serial"),
        hw: HardwareId::new(format!("hw-{n}")).expect("hw"),
        old_image: old,
        new_image: new,
        formats,
    }
}

pub fn inventory(e: &Ecu) -> InventoryReport {
    InventoryReport {
        nonce: [0; 16],
        device: e.device.clone(),
        hardware_id: e.hw.clone(),
        serial: e.serial.clone(),
        installed: InstalledImage {
            version: SoftwareVersion::new("1.0.0").expect("v"),
            release_counter: ReleaseCounter(1),
            length: e.old_image.len() as u64,
            sha256: sha(&e.old_image),
        },
        delta: DeltaCapability {
            formats: e.formats.clone(),
            max_patch_memory: 1 << 20,
        },
        rollback_versions: vec![],
        verification: VerificationLevel::Partial,
        criticality: Criticality::Normal,
        state: AgentState::Idle,
    }
}

/// How blob responses misbehave.
#[derive(Default, Clone)]
pub struct Faults {
    /// Drop the connection once when the absolute offset reaches this.
    pub drop_at: Option<u64>,
    /// Every blob request fails.
    pub always_fail: bool,
    /// Serve `n` bytes per `ms` (advancing the clock).
    pub trickle: Option<(usize, u64)>,
    /// Serve extra bytes past the end.
    pub overlong: bool,
    /// Alter every Director targets file after signing (one byte of the
    /// first ECU serial).
    pub tamper_director_targets: bool,
}

pub struct FakeServer {
    pub director: RepositoryBuilder,
    pub image: RepositoryBuilder,
    pub blobs: BTreeMap<Sha256Digest, Vec<u8>>,
    pub accepted: Option<Sha256Digest>,
    pub faults: Faults,
    pub blob_bytes_served: u64,
    pub blob_requests: Vec<(Sha256Digest, u64)>,
    pub checkin_bodies: Vec<usize>,
    pub manifest_uploads: Vec<usize>,
    pub metadata_gets: u32,
    pub pending_update: bool,
}

impl FakeServer {
    pub fn new() -> Self {
        let expires = UnixTime(NOW_S + 7 * 86_400);
        let mut director = RepositoryBuilder::generate(expires).expect("director");
        director.publish().expect("publish");
        let mut image = RepositoryBuilder::generate(expires).expect("image");
        image.publish().expect("publish");
        FakeServer {
            director,
            image,
            blobs: BTreeMap::new(),
            accepted: None,
            faults: Faults::default(),
            blob_bytes_served: 0,
            blob_requests: vec![],
            checkin_bodies: vec![],
            manifest_uploads: vec![],
            metadata_gets: 0,
            pending_update: false,
        }
    }

    pub fn session(&self) -> Session<MemoryStore, MemoryStore> {
        self.session_with(SessionConfig::default())
    }

    pub fn session_with(&self, cfg: SessionConfig) -> Session<MemoryStore, MemoryStore> {
        Session::open(
            MemoryStore::new(self.director.root_bytes(1).expect("root").to_vec()),
            MemoryStore::new(self.image.root_bytes(1).expect("root").to_vec()),
            vin(),
            None,
            cfg,
        )
        .expect("session")
    }

    /// Publishes a package updating `ecus` (deltas from 1.0.0 for every
    /// ECU, in BsdiffZstd; the patch bytes are opaque to the Client). The
    /// Director directs every component except those in `withhold`.
    pub fn publish(
        &mut self,
        ecus: &[Ecu],
        withhold: &[&DevicePath],
        policy: ComponentPolicy,
    ) -> Package {
        let mut comps = Vec::new();
        for e in ecus {
            let patch: Vec<u8> = e.new_image.iter().step_by(16).copied().collect();
            let chunk = 4096;
            comps.push(Component {
                device: e.device.clone(),
                hardware_id: e.hw.clone(),
                version: SoftwareVersion::new("2.0.0").expect("v"),
                release_counter: ReleaseCounter(2),
                image: Artifact::describe(&e.new_image, chunk).expect("describe"),
                deltas: vec![Delta {
                    format: PatchFormat::BsdiffZstd,
                    from_version: SoftwareVersion::new("1.0.0").expect("v"),
                    source_length: e.old_image.len() as u64,
                    source_sha256: sha(&e.old_image),
                    patch: Artifact::describe(&patch, chunk).expect("describe"),
                }],
                depends_on: vec![],
                stage: 0,
                policy: policy.clone(),
            });
            self.blobs.insert(sha(&e.new_image), e.new_image.clone());
            self.blobs.insert(sha(&patch), patch);
        }
        let pkg = Package::new(PackageSpec {
            id: PackageId::new("pkg-1").expect("id"),
            download: DownloadPolicy::default(),
            components: comps,
        })
        .expect("package");
        for entry in pkg.target_entries() {
            let desc = TargetDescription::from_custom_json(
                &entry.custom,
                Some((&entry.name, entry.length, &entry.sha256)),
            )
            .expect("desc");
            let c = &desc.component;
            let bytes = self.blobs.get(&entry.sha256).expect("blob").clone();
            self.image
                .add_target(
                    &entry.name,
                    &bytes,
                    Some(image_custom(
                        std::slice::from_ref(&c.hardware_id),
                        c.release_counter,
                        Some(entry.custom.clone()),
                    )),
                )
                .expect("image target");
            if desc.artifact == ArtifactRef::Full && !withhold.contains(&&c.device) {
                let e = ecus.iter().find(|e| e.device == c.device).expect("ecu");
                self.director
                    .add_target(
                        &entry.name,
                        &bytes,
                        Some(director_custom(
                            &vin(),
                            &e.serial,
                            &c.hardware_id,
                            c.release_counter,
                            Some(entry.custom.clone()),
                        )),
                    )
                    .expect("director target");
            }
        }
        self.image.publish().expect("publish");
        self.director.publish().expect("publish");
        self.pending_update = true;
        pkg
    }
}

pub fn manifest() -> Vec<u8> {
    VehicleManifest {
        vin: vin(),
        primary_ecu_serial: EcuSerial::new("GW0001").expect("serial"),
        ecu_version_reports: BTreeMap::new(),
    }
    .sign(&PrivateKey::from_seed(&[7; 32]))
    .expect("sign")
}

/// A test clock.
pub struct Clock {
    pub mono_ms: u64,
}

impl Clock {
    pub fn new() -> Self {
        Clock { mono_ms: 1_000 }
    }
    pub fn now(&self) -> Now {
        Now {
            mono_ms: self.mono_ms,
            wall_ms: NOW_S as u64 * 1000 + self.mono_ms,
        }
    }
}

/// What happened while driving.
#[derive(Default, Debug)]
pub struct Trace {
    pub waits: Vec<u64>,
    pub needs: u32,
}

/// Performs one need against the fake server, returning the next step.
pub fn serve(
    s: &mut Session<MemoryStore, MemoryStore>,
    srv: &mut FakeServer,
    clock: &mut Clock,
    need: ServerRequest,
) -> Result<SessionStep, esync_client::core::session::SessionError> {
    match need {
        ServerRequest::UploadManifest { body } => {
            srv.manifest_uploads.push(body.len());
            let a = ManifestAccepted {
                manifest_sha256: sha(&body),
            };
            srv.accepted = Some(a.manifest_sha256);
            s.provide(clock.now(), Answer::ManifestAccepted(&a))
        }
        ServerRequest::CheckIn { body } => {
            srv.checkin_bodies.push(body.len());
            let req: esync_api::body::CheckInRequest =
                serde_json::from_slice(&body).expect("check-in body");
            let r = if Some(req.manifest_sha256) != srv.accepted {
                CheckInResponse::ManifestWanted
            } else if srv.pending_update {
                CheckInResponse::NewDirectorMetadata {
                    timestamp_version: 1,
                }
            } else {
                CheckInResponse::UpToDate
            };
            s.provide(clock.now(), Answer::CheckIn(&r))
        }
        ServerRequest::DirectorFile { name, max_len } => {
            srv.metadata_gets += 1;
            let mut f = srv.director.files().metadata.get(name.as_str()).cloned();
            if srv.faults.tamper_director_targets && name.as_str().ends_with("targets.json") {
                if let Some(b) = f.as_mut() {
                    if let Some(pos) = b.windows(4).position(|w| w == b"SER1") {
                        b[pos + 3] = b'9';
                    }
                }
            }
            let f = f.filter(|b| b.len() as u64 <= max_len);
            s.provide(clock.now(), Answer::File(f.as_deref()))
        }
        ServerRequest::ImageFile { name, max_len } => {
            srv.metadata_gets += 1;
            let f = srv.image.files().metadata.get(name.as_str()).cloned();
            let f = f.filter(|b| b.len() as u64 <= max_len);
            s.provide(clock.now(), Answer::File(f.as_deref()))
        }
        ServerRequest::Blob {
            sha256,
            range_start,
            max_len,
            ..
        } => {
            srv.blob_requests.push((sha256, range_start));
            if srv.faults.always_fail {
                return s.provide(clock.now(), Answer::Failed("503"));
            }
            let blob = srv.blobs.get(&sha256).expect("known blob").clone();
            let mut body = blob[range_start as usize..].to_vec();
            if srv.faults.overlong {
                body.extend_from_slice(&[0; 100]);
            }
            assert!(body.len() as u64 <= max_len + 100);
            let piece = srv.faults.trickle.map_or(1000, |t| t.0);
            let mut off = range_start;
            for p in body.chunks(piece) {
                if let Some(at) = srv.faults.drop_at {
                    if off + p.len() as u64 > at {
                        let keep = (at - off) as usize;
                        srv.blob_bytes_served += keep as u64;
                        srv.faults.drop_at = None;
                        if keep > 0 {
                            s.provide(clock.now(), Answer::BlobBytes(&p[..keep]))?;
                        }
                        return s.provide(clock.now(), Answer::Failed("connection reset"));
                    }
                }
                if let Some((_, ms)) = srv.faults.trickle {
                    clock.mono_ms += ms;
                }
                srv.blob_bytes_served += p.len() as u64;
                off += p.len() as u64;
                match s.provide(clock.now(), Answer::BlobBytes(p))? {
                    SessionStep::Continue => {}
                    other => return Ok(other),
                }
            }
            s.provide(clock.now(), Answer::BlobEnd)
        }
        other => panic!("unexpected need {other:?}"),
    }
}

/// Drives the session until a step that is not a request or a wait.
pub fn drive(
    s: &mut Session<MemoryStore, MemoryStore>,
    srv: &mut FakeServer,
    clock: &mut Clock,
    mut step: SessionStep,
    trace: &mut Trace,
) -> Result<SessionStep, esync_client::core::session::SessionError> {
    for _ in 0..100_000 {
        step = match step {
            SessionStep::Need(n @ ServerRequest::Consent(_)) => return Ok(SessionStep::Need(n)),
            SessionStep::Need(n) => {
                trace.needs += 1;
                serve(s, srv, clock, n)?
            }
            SessionStep::WaitUntil(t) => {
                if t > clock.mono_ms {
                    trace.waits.push(t - clock.mono_ms);
                    clock.mono_ms = t;
                }
                s.poll(clock.now())?
            }
            other => return Ok(other),
        };
    }
    panic!("session does not settle");
}
