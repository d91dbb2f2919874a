//! The demo's "Server": fleet CA, Image and Director repositories
//! (esync-uptane's signing side), packages with deltas (esync-package), and
//! verification of vehicle manifests. Everything is in memory. It answers
//! the device API (`esync_api`: check-in, manifest upload, Director and
//! Image metadata files, blobs by SHA-256 with a range) in-process
//! ([`Server::serve`]): the Client's session core asks for exactly what it
//! would ask an HTTPS Server, with no socket in between. The real Server is
//! `esync-server`.

use std::collections::BTreeMap;

use esync_api::body::{CheckInRequest, CheckInResponse, ManifestAccepted};
use esync_client::core::session::Need;
use esync_identity::{FleetCa, IssuedIdentity, TrustAnchors, Validity};
use esync_package::build::{ComponentInput, PackageBuilder};
use esync_package::package::{ArtifactRef, Package, PackageId, TargetDescription};
use esync_package::DEFAULT_FORMAT;
use esync_proto::id::{
    DevicePath, EcuSerial, HardwareId, ReleaseCounter, Sha256Digest, SoftwareVersion, Vin,
};
use esync_proto::message::RoleBytes;
use esync_uptane::builder::RepositoryBuilder;
use esync_uptane::manifest::{verify_vehicle_manifest, NonceTracker, VerifiedManifest};
use esync_uptane::uptane::{director_custom, image_custom};
use esync_uptane::{PublicKey, UnixTime};

use crate::DemoError;

/// Largest vehicle manifest the Server accepts.
pub const MAX_MANIFEST_LEN: usize = 256 * 1024;

/// One component of a release: an ECU's new image and the older images the
/// Server generates deltas from.
pub struct Release {
    /// Target ECU.
    pub ecu: EcuSpec,
    /// New version.
    pub version: SoftwareVersion,
    /// Its release counter.
    pub release_counter: u64,
    /// New image.
    pub image: Vec<u8>,
    /// Older versions to generate deltas from.
    pub delta_sources: Vec<(SoftwareVersion, Vec<u8>)>,
}

/// An ECU as the Server knows it.
#[derive(Clone, Debug)]
pub struct EcuSpec {
    /// Device path.
    pub device: DevicePath,
    /// Hardware id.
    pub hardware_id: HardwareId,
    /// ECU serial (Uptane ECU id).
    pub serial: EcuSerial,
    /// Install stage in packages.
    pub stage: u16,
}

/// A published campaign (its package and Director targets; the Client's
/// journaled campaign is `esync_client::core::orchestrate::Campaign`).
pub struct Published {
    /// The package.
    pub package: Package,
    /// Director target name per ECU serial.
    pub directed: BTreeMap<EcuSerial, String>,
}

/// The demo's Server.
pub struct Server {
    ca: FleetCa,
    /// Trust anchors of the fleet CA.
    pub anchors: TrustAnchors,
    /// The vehicle.
    pub vin: Vin,
    director: RepositoryBuilder,
    image_repo: RepositoryBuilder,
    directed: BTreeMap<EcuSerial, String>,
    nonces: NonceTracker,
    chunk_size: u32,
    blobs: BTreeMap<Sha256Digest, Vec<u8>>,
    primary: Option<PublicKey>,
    ecu_keys: BTreeMap<EcuSerial, PublicKey>,
    /// ECU version reports in the last manifest accepted.
    pub last_manifest_reports: usize,
    accepted_manifest: Option<Sha256Digest>,
    /// The Director `timestamp.json` version the vehicle last fetched.
    fetched_timestamp: Option<u64>,
    /// Blob bytes served.
    pub blob_bytes_served: u64,
    /// Manifests uploaded and verified.
    pub manifests_accepted: u32,
}

/// The in-process answer to one device-API request ([`Server::serve`]).
#[derive(Debug)]
pub enum Served {
    /// `POST /v1/checkin`.
    CheckIn(CheckInResponse),
    /// `POST /v1/manifest` (verified).
    ManifestAccepted(ManifestAccepted),
    /// A metadata file, `None` for 404.
    File(Option<Vec<u8>>),
    /// A blob's bytes from the requested offset.
    Blob(Vec<u8>),
    /// The request failed (status and reason).
    Failed(String),
}

fn err(what: &str) -> impl Fn(&dyn std::fmt::Display) -> DemoError + '_ {
    move |e| DemoError::Server(format!("{what}: {e}"))
}

impl Server {
    /// A fleet CA and empty, signed Director and Image repositories whose
    /// metadata expires a week after `now_s`.
    pub fn new(vin: Vin, now_s: i64, chunk_size: u32) -> Result<Self, DemoError> {
        let validity = Validity::days_from(now_s - 3600, 30);
        let ca = FleetCa::new("esync demo fleet", validity).map_err(|e| err("fleet CA")(&e))?;
        let anchors =
            TrustAnchors::from_ca_ders(&[ca.root_der()]).map_err(|e| err("trust anchors")(&e))?;
        let expires = UnixTime(now_s + 7 * 86_400);
        let mut director =
            RepositoryBuilder::generate(expires).map_err(|e| err("Director repository")(&e))?;
        director
            .publish()
            .map_err(|e| err("Director publish")(&e))?;
        let mut image_repo =
            RepositoryBuilder::generate(expires).map_err(|e| err("Image repository")(&e))?;
        image_repo.publish().map_err(|e| err("Image publish")(&e))?;
        Ok(Server {
            ca,
            anchors,
            vin,
            director,
            image_repo,
            directed: BTreeMap::new(),
            nonces: NonceTracker::new(4096),
            chunk_size,
            blobs: BTreeMap::new(),
            primary: None,
            ecu_keys: BTreeMap::new(),
            last_manifest_reports: 0,
            accepted_manifest: None,
            fetched_timestamp: None,
            blob_bytes_served: 0,
            manifests_accepted: 0,
        })
    }

    fn validity(now_s: i64) -> Validity {
        Validity::days_from(now_s - 3600, 30)
    }

    /// Issues the vehicle's (Client's) certificate.
    pub fn issue_vehicle(&self, now_s: i64) -> Result<IssuedIdentity, DemoError> {
        self.ca
            .issue_vehicle(&self.vin, Self::validity(now_s))
            .map_err(|e| err("vehicle certificate")(&e))
    }

    /// Issues an Agent's certificate.
    pub fn issue_agent(
        &self,
        device: &DevicePath,
        now_s: i64,
    ) -> Result<IssuedIdentity, DemoError> {
        self.ca
            .issue_agent(&self.vin, device, Self::validity(now_s))
            .map_err(|e| err("agent certificate")(&e))
    }

    /// Director root version 1 (pinned in the Client and the Agents at
    /// provisioning).
    pub fn director_root(&self) -> Result<Vec<u8>, DemoError> {
        self.director
            .root_bytes(1)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| DemoError::Server("no Director root".into()))
    }

    /// Image repository root version 1.
    pub fn image_root(&self) -> Result<Vec<u8>, DemoError> {
        self.image_repo
            .root_bytes(1)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| DemoError::Server("no Image root".into()))
    }

    /// A Director metadata file by path (what a Client fetches).
    pub fn director_file(&self, path: &str) -> Option<Vec<u8>> {
        self.director.files().metadata.get(path).cloned()
    }

    /// An Image repository metadata file by path.
    pub fn image_file(&self, path: &str) -> Option<Vec<u8>> {
        self.image_repo.files().metadata.get(path).cloned()
    }

    /// A target file (image or patch) by target name.
    pub fn target_file(&self, name: &str) -> Option<&[u8]> {
        self.image_repo.files().targets.get(name).map(Vec::as_slice)
    }

    /// The metadata the Client forwards to Agents: every root version, the
    /// current timestamp, snapshot and top-level targets of each repository.
    pub fn forwarded_metadata(&self) -> (Vec<RoleBytes>, Vec<RoleBytes>) {
        (
            self.director.files().top_level_roles(),
            self.image_repo.files().top_level_roles(),
        )
    }

    /// Builds package `id` from `releases` (deltas from every listed older
    /// version in the default format), adds every artifact to the Image
    /// repository and signs Director targets (the full image's entry, whose
    /// `custom.esync` lists the deltas) for this vehicle's ECUs.
    pub fn publish_campaign(
        &mut self,
        id: &str,
        releases: Vec<Release>,
    ) -> Result<Published, DemoError> {
        let pkg_id = PackageId::new(id).map_err(|e| err("package id")(&e))?;
        let mut builder = PackageBuilder::new(pkg_id).chunk_size(self.chunk_size);
        let mut ecus = BTreeMap::new();
        for r in releases {
            let input = ComponentInput {
                device: r.ecu.device.clone(),
                hardware_id: r.ecu.hardware_id.clone(),
                version: r.version,
                release_counter: ReleaseCounter(r.release_counter),
                image: r.image,
                depends_on: vec![],
                stage: r.ecu.stage,
                policy: Default::default(),
            };
            builder = builder
                .component_with_deltas(input, &r.delta_sources, &[DEFAULT_FORMAT], None)
                .map_err(|e| err("delta generation")(&e))?;
            ecus.insert(r.ecu.device.clone(), r.ecu);
        }
        let built = builder.build().map_err(|e| err("package")(&e))?;
        for (sha, b) in &built.blobs {
            self.blobs.insert(*sha, b.clone());
        }
        let mut directed = BTreeMap::new();
        for entry in built.package.target_entries() {
            let desc = TargetDescription::from_custom_json(
                &entry.custom,
                Some((&entry.name, entry.length, &entry.sha256)),
            )
            .map_err(|e| err("target description")(&e))?;
            let c = &desc.component;
            let bytes = built
                .blobs
                .get(&entry.sha256)
                .ok_or_else(|| DemoError::Server(format!("no bytes for {}", entry.name)))?;
            let icustom = image_custom(
                std::slice::from_ref(&c.hardware_id),
                c.release_counter,
                Some(entry.custom.clone()),
            );
            self.image_repo
                .add_target(&entry.name, bytes, Some(icustom))
                .map_err(|e| err("Image target")(&e))?;
            if desc.artifact == ArtifactRef::Full {
                let ecu = ecus
                    .get(&c.device)
                    .ok_or_else(|| DemoError::Server(format!("no ECU for {}", c.device)))?;
                if let Some(old) = self.directed.remove(&ecu.serial) {
                    self.director.remove_target("targets", &old);
                }
                let dcustom = director_custom(
                    &self.vin,
                    &ecu.serial,
                    &c.hardware_id,
                    c.release_counter,
                    Some(entry.custom.clone()),
                );
                self.director
                    .add_target(&entry.name, bytes, Some(dcustom))
                    .map_err(|e| err("Director target")(&e))?;
                self.directed.insert(ecu.serial.clone(), entry.name.clone());
                directed.insert(ecu.serial.clone(), entry.name.clone());
            }
        }
        self.image_repo
            .publish()
            .map_err(|e| err("Image publish")(&e))?;
        self.director
            .publish()
            .map_err(|e| err("Director publish")(&e))?;
        Ok(Published {
            package: built.package,
            directed,
        })
    }

    /// Registers the vehicle's manifest key (from its certificate).
    pub fn set_vehicle_key(&mut self, primary: PublicKey) {
        self.primary = Some(primary);
    }

    /// Registers an ECU's report key (from its Agent's certificate).
    pub fn add_ecu_key(&mut self, serial: EcuSerial, key: PublicKey) {
        self.ecu_keys.insert(serial, key);
    }

    fn director_timestamp(&self) -> Option<u64> {
        let t = self.director.files().metadata.get("timestamp.json")?;
        let v: serde_json::Value = serde_json::from_slice(t).ok()?;
        v.get("signed")?.get("version")?.as_u64()
    }

    /// Answers one device-API request of the Client's session, as the
    /// routes of `esync_api` do.
    pub fn serve(&mut self, need: &Need) -> Served {
        match need {
            Need::CheckIn { body } => {
                let Ok(req) = serde_json::from_slice::<CheckInRequest>(body) else {
                    return Served::Failed("400 malformed check-in".into());
                };
                let current = self.director_timestamp();
                Served::CheckIn(if Some(req.manifest_sha256) != self.accepted_manifest {
                    CheckInResponse::ManifestWanted
                } else if current.is_some() && current != self.fetched_timestamp {
                    CheckInResponse::NewDirectorMetadata {
                        timestamp_version: current.unwrap_or(0),
                    }
                } else {
                    CheckInResponse::UpToDate
                })
            }
            Need::UploadManifest { body } => {
                let Some(primary) = self.primary.clone() else {
                    return Served::Failed("403 unknown vehicle".into());
                };
                let keys = self.ecu_keys.clone();
                match self.verify_manifest(body, &primary, &keys) {
                    Ok(m) if !m.dropped.is_empty() => {
                        Served::Failed(format!("422 reports dropped: {:?}", m.dropped))
                    }
                    Ok(m) => {
                        self.last_manifest_reports = m.reports.len();
                        let sha = esync_package::digest::sha256(body);
                        self.accepted_manifest = Some(sha);
                        self.manifests_accepted += 1;
                        Served::ManifestAccepted(ManifestAccepted {
                            manifest_sha256: sha,
                        })
                    }
                    Err(e) => Served::Failed(format!("422 {e}")),
                }
            }
            Need::DirectorFile { name, max_len } => {
                if name.as_str() == "timestamp.json" {
                    self.fetched_timestamp = self.director_timestamp();
                }
                Served::File(
                    self.director_file(name.as_str())
                        .filter(|b| b.len() as u64 <= *max_len),
                )
            }
            Need::ImageFile { name, max_len } => Served::File(
                self.image_file(name.as_str())
                    .filter(|b| b.len() as u64 <= *max_len),
            ),
            Need::Blob {
                sha256,
                range_start,
                max_len,
                ..
            } => match self.blobs.get(sha256) {
                Some(b) => {
                    let from = usize::try_from(*range_start)
                        .unwrap_or(usize::MAX)
                        .min(b.len());
                    let to = b
                        .len()
                        .min(from.saturating_add(usize::try_from(*max_len).unwrap_or(usize::MAX)));
                    self.blob_bytes_served += (to - from) as u64;
                    Served::Blob(b[from..to].to_vec())
                }
                None => Served::Failed("404 no such blob".into()),
            },
            Need::Consent(_) => Served::Failed("not a Server request".into()),
            Need::Report { .. } => Served::Failed("501 reports are not kept by the demo".into()),
        }
    }

    /// Verifies a vehicle manifest signed by the Client (key of the vehicle
    /// certificate) holding ECU reports signed by the Agents' keys.
    pub fn verify_manifest(
        &mut self,
        bytes: &[u8],
        primary: &PublicKey,
        ecu_keys: &BTreeMap<EcuSerial, PublicKey>,
    ) -> Result<VerifiedManifest, DemoError> {
        verify_vehicle_manifest(
            bytes,
            MAX_MANIFEST_LEN,
            &self.vin,
            primary,
            ecu_keys,
            &mut self.nonces,
        )
        .map_err(|e| err("vehicle manifest")(&e))
    }
}
