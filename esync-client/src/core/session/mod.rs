//! The Client's Server-facing session, sans-I/O (issue 9).
//!
//! One [`Session`] drives a check-in to a [`ReadyPackage`]:
//!
//! 1. **Check-in**: the signed vehicle manifest is uploaded only when it
//!    changed since the Server last accepted one; otherwise the check-in
//!    body is its SHA-256 alone ([`esync_api::body::CheckInRequest`]).
//! 2. **Full Uptane verification** of the Director and Image repositories
//!    ([`FullVerifier`]) before any blob is fetched; the role files are kept
//!    to forward to Agents, which verify again.
//! 3. **A13**: a package whose Director targets name fewer components than
//!    the package has is refused ([`SessionError::ComponentWithheld`]).
//! 4. **Planning** per Agent: a delta the Agent can apply to exactly what it
//!    runs, else the full image ([`plan_component`]).
//! 5. **Policy and consent** ([`policy`]).
//! 6. **Downloads** ([`download`]): resumable, capped, hashed, A12 and A14.
//!
//! Reports are sent through [`reports::ReportOutbox`], independent of a
//! session. Nothing here does I/O: every request is a [`ServerRequest`] and every
//! answer an [`Answer`]; time is [`Now`].

pub mod download;
pub mod policy;
pub mod reports;

use std::collections::BTreeMap;

use esync_api::body::{CheckInRequest, CheckInResponse, ManifestAccepted};
use esync_api::{MetadataFileName, ReportId};
use esync_package::package::{
    Artifact, ArtifactRef, Component, DownloadPolicy, Package, PackageError, PackageId,
    TargetDescription,
};
use esync_proto::id::{CorrelationId, EcuSerial, Id128, Sha256Digest};
use esync_proto::message::{
    ConsentKind, ConsentRequest, ConsentResponse, ImageEncoding, InventoryReport, MetadataRole,
    RoleBytes, VerificationLevel,
};

use crate::core::plan::{BlobHandle, ForwardedMetadata, ReadyComponent, ReadyPackage};
use esync_uptane::uptane::{DirectorTarget, EcuInfo, FullProgress, FullVerifier, RepoKind};
use esync_uptane::{Limits, TrustStore, UnixTime};
use sha2::{Digest, Sha256};

use download::{AttemptFailure, Backoff, BlobDownload, BlobStep, TransferLimits};
use policy::{Blocked, ConsentOutcome, Policy, RuleVerdict};

/// Both clocks (the Agent's and the orchestrator's type).
pub use super::Now;

/// A request for the host to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerRequest {
    /// `POST /v1/manifest` with these bytes (the signed vehicle manifest).
    UploadManifest {
        /// Body.
        body: Vec<u8>,
    },
    /// `POST /v1/checkin` with this JSON body (the manifest hash only).
    CheckIn {
        /// Body.
        body: Vec<u8>,
    },
    /// `GET /v1/director/{name}`, reading at most `max_len` bytes.
    DirectorFile {
        /// File name.
        name: MetadataFileName,
        /// Cap.
        max_len: u64,
    },
    /// `GET /v1/image/{name}`, reading at most `max_len` bytes.
    ImageFile {
        /// File name.
        name: MetadataFileName,
        /// Cap.
        max_len: u64,
    },
    /// Publish this consent request to the HMI listener on the broker.
    Consent(ConsentRequest),
    /// `GET /v1/blobs/{sha256}` from `range_start`, at most `max_len` bytes;
    /// the host writes the bytes under `blob` at offset `range_start`
    /// (`range_start == 0`: start afresh, dropping what it held).
    Blob {
        /// The session's number for the blob ([`ReadyComponent::blob`]).
        blob: BlobHandle,
        /// Blob.
        sha256: Sha256Digest,
        /// First byte (Range); 0 means no Range header.
        range_start: u64,
        /// Cap.
        max_len: u64,
    },
    /// `PUT /v1/reports/{id}` (from [`reports::ReportOutbox`]).
    Report {
        /// Idempotent id.
        id: ReportId,
        /// JSON body.
        body: Vec<u8>,
    },
}

/// The host's answer to the last [`ServerRequest`].
#[derive(Debug, Clone, Copy)]
pub enum Answer<'a> {
    /// Check-in answer.
    CheckIn(&'a CheckInResponse),
    /// Manifest upload answer.
    ManifestAccepted(&'a ManifestAccepted),
    /// Metadata file bytes, or `None` for 404.
    File(Option<&'a [u8]>),
    /// The listener's consent answer.
    Consent(&'a ConsentResponse),
    /// Bytes of the running blob response.
    BlobBytes(&'a [u8]),
    /// The blob response ended.
    BlobEnd,
    /// The request failed (transport, timeout, HTTP error).
    Failed(&'a str),
}

/// What the session wants now.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionStep {
    /// Perform this request and answer it.
    Need(ServerRequest),
    /// Nothing to do before this monotonic time (or an answer).
    WaitUntil(u64),
    /// Keep streaming the running blob response. Any other step answering
    /// [`Answer::BlobBytes`] means: drop that response.
    Continue,
    /// The Server has nothing for this vehicle.
    UpToDate,
    /// Rules block the download now; poll again later.
    Blocked(Vec<Blocked>),
    /// The user postponed; poll again after this wall time.
    Postponed {
        /// Wall ms.
        until_wall_ms: u64,
    },
    /// The user refused the download.
    Denied(String),
    /// Every blob is verified.
    Ready(Box<ReadyPackage>),
}

/// A session failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Uptane verification failed (nothing was downloaded).
    #[error("uptane: {0}")]
    Uptane(#[from] esync_uptane::Error),
    /// A13: the Director directs fewer components of the package than it has.
    #[error("package {package}: Director lists {directed} of {components} components (withheld)")]
    ComponentWithheld {
        /// Package.
        package: String,
        /// Targets directed to this vehicle.
        directed: usize,
        /// Components the signed package has.
        components: u32,
    },
    /// A Director target does not describe an esync component.
    #[error("target {target}: {reason}")]
    BadTarget {
        /// Target.
        target: String,
        /// Why.
        reason: String,
    },
    /// Targets of several packages at once.
    #[error("targets of more than one package ({0} and {1})")]
    MixedPackages(String, String),
    /// A14: a request failed too often.
    #[error("{what}: gave up after {attempts} attempts: {last}")]
    GaveUp {
        /// Which request.
        what: String,
        /// Attempts.
        attempts: u32,
        /// Last failure.
        last: String,
    },
    /// The answer does not fit the request.
    #[error("unexpected answer: {0}")]
    Unexpected(&'static str),
    /// The verified targets do not form a valid package.
    #[error("package: {0}")]
    Package(#[from] PackageError),
    /// A body could not be encoded or a name validated.
    #[error("encoding: {0}")]
    Encoding(String),
}

type Result<T> = std::result::Result<T, SessionError>;

/// Limits and policy of a session.
#[derive(Debug, Clone, Default)]
pub struct SessionConfig {
    /// Transfer limits (A12, A14), also used for check-in and metadata retries.
    pub transfer: TransferLimits,
    /// Download policy.
    pub policy: Policy,
    /// Uptane limits.
    pub uptane: Limits,
}

/// Delta or full for one Agent: the first format in the Agent's preference
/// order for which the package has a delta from exactly the version and
/// image the Agent runs; otherwise the full image.
pub fn plan_component(
    desc: &TargetDescription,
    agent: &InventoryReport,
) -> (ArtifactRef, Artifact, ImageEncoding) {
    let c = &desc.component;
    let delta = agent.delta.formats.iter().find_map(|f| {
        c.deltas.iter().find(|d| {
            d.format == *f
                && d.from_version == agent.installed.version
                && d.source_sha256 == agent.installed.sha256
                && d.source_length == agent.installed.length
        })
    });
    match delta {
        Some(d) => (
            ArtifactRef::Delta {
                format: d.format,
                from_version: d.from_version.clone(),
            },
            d.patch.clone(),
            ImageEncoding::Delta {
                format: d.format,
                from_version: d.from_version.clone(),
                source_sha256: d.source_sha256,
                patch_length: d.patch.length,
                patch_sha256: d.patch.sha256,
            },
        ),
        None => (ArtifactRef::Full, c.image.clone(), ImageEncoding::Full),
    }
}

struct Planned {
    device: esync_proto::id::DevicePath,
    description: TargetDescription,
    target_name: String,
    encoding: ImageEncoding,
    artifact: Artifact,
    verification: VerificationLevel,
    download: BlobDownload,
}

struct Plan {
    package: PackageId,
    download: DownloadPolicy,
    items: Vec<Planned>,
}

enum State {
    Idle,
    Uploading,
    CheckingIn,
    Verifying(RepoKind, esync_uptane::Need),
    Gate(Plan),
    Consent {
        plan: Plan,
        request_id: CorrelationId,
        deadline_wall_ms: u64,
    },
    Postponed {
        plan: Plan,
        until_wall_ms: u64,
    },
    Downloading(Plan, usize),
    Done,
}

/// The Client's Server-facing session.
pub struct Session<SD: TrustStore, SI: TrustStore> {
    verifier: FullVerifier<SD, SI>,
    config: SessionConfig,
    manifest: Vec<u8>,
    manifest_sha256: Sha256Digest,
    accepted: Option<Sha256Digest>,
    agents: BTreeMap<EcuSerial, InventoryReport>,
    conditions: policy::Conditions,
    state: State,
    /// A request to send again after a back-off.
    retry: Option<(u64, ServerRequest)>,
    backoff: Backoff,
    forwarded: [BTreeMap<String, RoleBytes>; 2],
    consent_seq: u64,
}

fn sha256(b: &[u8]) -> Sha256Digest {
    Sha256Digest(Sha256::digest(b).into())
}

fn enc(e: impl std::fmt::Display) -> SessionError {
    SessionError::Encoding(e.to_string())
}

fn role_of(need: &esync_uptane::Need) -> Option<MetadataRole> {
    match need {
        esync_uptane::Need::Root { .. } => Some(MetadataRole::Root),
        esync_uptane::Need::Timestamp { .. } => Some(MetadataRole::Timestamp),
        esync_uptane::Need::Snapshot { .. } => Some(MetadataRole::Snapshot),
        esync_uptane::Need::Targets { role, .. } if role == "targets" => {
            Some(MetadataRole::Targets)
        }
        esync_uptane::Need::Targets { .. } => None,
    }
}

impl<SD: TrustStore, SI: TrustStore> Session<SD, SI> {
    /// A session on the pinned/trusted stores of both repositories for
    /// vehicle `vin`. `accepted_manifest` is the hash the Server last
    /// accepted (persisted by the host), if any.
    pub fn open(
        director: SD,
        image: SI,
        vin: esync_proto::id::Vin,
        accepted_manifest: Option<Sha256Digest>,
        config: SessionConfig,
    ) -> Result<Self> {
        let verifier = FullVerifier::open(
            director,
            image,
            esync_uptane::uptane::Vehicle {
                vin,
                ecus: BTreeMap::new(),
            },
            config.uptane,
        )?;
        Ok(Session {
            verifier,
            backoff: Backoff::new(&config.transfer),
            config,
            manifest: Vec::new(),
            manifest_sha256: Sha256Digest([0; 32]),
            accepted: accepted_manifest,
            agents: BTreeMap::new(),
            conditions: policy::Conditions::default(),
            state: State::Idle,
            retry: None,
            forwarded: [BTreeMap::new(), BTreeMap::new()],
            consent_seq: 0,
        })
    }

    /// The manifest hash the Server last accepted (for the host to persist).
    pub fn accepted_manifest(&self) -> Option<Sha256Digest> {
        self.accepted
    }

    /// Updates what the host reports (network, battery, vehicle state).
    pub fn set_conditions(&mut self, c: policy::Conditions) {
        self.conditions = c;
    }

    /// Starts a check-in with the current signed `manifest` and the Agents'
    /// inventory. Only the manifest hash is sent when the Server already
    /// holds this manifest.
    pub fn check_in(
        &mut self,
        _now: Now,
        manifest: Vec<u8>,
        inventory: Vec<InventoryReport>,
    ) -> Result<SessionStep> {
        self.manifest_sha256 = sha256(&manifest);
        self.manifest = manifest;
        self.agents = inventory
            .into_iter()
            .map(|r| (r.serial.clone(), r))
            .collect();
        let v = self.verifier.vehicle_mut();
        v.ecus = self
            .agents
            .values()
            .map(|r| {
                (
                    r.serial.clone(),
                    EcuInfo {
                        hardware_id: r.hardware_id.clone(),
                        installed_release_counter: r.installed.release_counter,
                    },
                )
            })
            .collect();
        self.retry = None;
        self.backoff.succeed();
        if self.accepted == Some(self.manifest_sha256) {
            self.send_check_in()
        } else {
            self.state = State::Uploading;
            Ok(SessionStep::Need(ServerRequest::UploadManifest {
                body: self.manifest.clone(),
            }))
        }
    }

    fn send_check_in(&mut self) -> Result<SessionStep> {
        let body = serde_json::to_vec(&CheckInRequest {
            manifest_sha256: self.manifest_sha256,
        })
        .map_err(enc)?;
        self.state = State::CheckingIn;
        Ok(SessionStep::Need(ServerRequest::CheckIn { body }))
    }

    fn metadata_need(&mut self, kind: RepoKind, need: esync_uptane::Need) -> Result<SessionStep> {
        let name = MetadataFileName::new(&need.path()).map_err(enc)?;
        let max_len = need.max_length();
        self.state = State::Verifying(kind, need);
        Ok(SessionStep::Need(match kind {
            RepoKind::Director => ServerRequest::DirectorFile { name, max_len },
            RepoKind::Image => ServerRequest::ImageFile { name, max_len },
        }))
    }

    fn verified(&mut self, now: Now, p: FullProgress) -> Result<SessionStep> {
        match p {
            FullProgress::Need(kind, need) => self.metadata_need(kind, need),
            FullProgress::Done(targets) => {
                if targets.is_empty() {
                    self.state = State::Done;
                    return Ok(SessionStep::UpToDate);
                }
                let plan = self.plan(targets)?;
                self.state = State::Gate(plan);
                self.poll(now)
            }
        }
    }

    /// A13 and planning from the verified Director targets.
    fn plan(&self, targets: Vec<DirectorTarget>) -> Result<Plan> {
        let mut package: Option<(PackageId, DownloadPolicy, u32)> = None;
        let mut items = Vec::new();
        for t in targets {
            let bad = |reason: String| SessionError::BadTarget {
                target: t.name.clone(),
                reason,
            };
            let sha = t
                .info
                .hashes
                .get("sha256")
                .and_then(|h| esync_package::digest::from_hex(h))
                .ok_or_else(|| bad("no sha256".into()))?;
            let custom = t
                .info
                .custom
                .as_ref()
                .ok_or_else(|| bad("no custom".into()))?;
            let desc =
                TargetDescription::from_custom_json(custom, Some((&t.name, t.info.length, &sha)))
                    .map_err(|e| bad(e.to_string()))?;
            if desc.artifact != ArtifactRef::Full {
                return Err(bad("the Director directs a delta, not the image".into()));
            }
            if desc.component.release_counter != t.release_counter
                || desc.component.hardware_id != t.hardware_id
            {
                return Err(bad("description differs from the Director entry".into()));
            }
            match &package {
                None => {
                    package = Some((
                        desc.package.clone(),
                        desc.download.clone(),
                        desc.component_count,
                    ))
                }
                Some((p, d, n)) => {
                    if *p != desc.package {
                        return Err(SessionError::MixedPackages(
                            p.to_string(),
                            desc.package.to_string(),
                        ));
                    }
                    if *d != desc.download || *n != desc.component_count {
                        return Err(bad("package fields differ between targets".into()));
                    }
                }
            }
            let agent = self
                .agents
                .get(&t.ecu)
                .ok_or_else(|| bad("no Agent for this ECU".into()))?;
            let (aref, artifact, encoding) = plan_component(&desc, agent);
            let target_name = TargetDescription {
                artifact: aref,
                ..desc.clone()
            }
            .target_name();
            items.push(Planned {
                download: BlobDownload::new(&artifact, self.config.transfer),
                device: desc.component.device.clone(),
                description: desc,
                target_name,
                encoding,
                artifact,
                verification: agent.verification,
            });
        }
        let (package, download, count) = package.ok_or(SessionError::Unexpected("no targets"))?;
        // A13: every component of the signed package must be directed.
        if items.len() != count as usize {
            return Err(SessionError::ComponentWithheld {
                package: package.to_string(),
                directed: items.len(),
                components: count,
            });
        }
        Ok(Plan {
            package,
            download,
            items,
        })
    }

    fn gate(&mut self, now: Now, plan: Plan) -> Result<SessionStep> {
        let comps: Vec<&Component> = plan
            .items
            .iter()
            .map(|p| &p.description.component)
            .collect();
        let verdict = self.config.policy.evaluate(
            ConsentKind::Download,
            &plan.download,
            &comps,
            &self.conditions,
            now.wall_ms,
        );
        match verdict {
            RuleVerdict::Blocked(why) => {
                self.state = State::Gate(plan);
                Ok(SessionStep::Blocked(why))
            }
            RuleVerdict::Allowed => {
                self.state = State::Downloading(plan, 0);
                self.poll(now)
            }
            RuleVerdict::NeedsConsent => {
                self.consent_seq += 1;
                let mut id = [0u8; 16];
                id[0] = 0xc5;
                id[8..].copy_from_slice(&self.consent_seq.to_be_bytes());
                id[1..8].copy_from_slice(&self.manifest_sha256.0[..7]);
                let request_id = Id128(id);
                let deadline_wall_ms = now
                    .wall_ms
                    .saturating_add(self.config.policy.consent_timeout_ms);
                let size_bytes = plan.items.iter().map(|p| p.artifact.length).sum();
                let req = ConsentRequest {
                    request_id,
                    kind: ConsentKind::Download,
                    title: format!("Update {}", plan.package),
                    description: format!("{} component(s)", plan.items.len()),
                    size_bytes,
                    estimated_duration_s: 0,
                    deadline_ms: deadline_wall_ms,
                };
                self.state = State::Consent {
                    plan,
                    request_id,
                    deadline_wall_ms,
                };
                Ok(SessionStep::Need(ServerRequest::Consent(req)))
            }
        }
    }

    /// What to do at `now` (deadlines, back-offs, postponements, rules).
    pub fn poll(&mut self, now: Now) -> Result<SessionStep> {
        if let Some((at, need)) = self.retry.take() {
            if now.mono_ms < at {
                self.retry = Some((at, need));
                return Ok(SessionStep::WaitUntil(at));
            }
            return Ok(SessionStep::Need(need));
        }
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Gate(plan) => self.gate(now, plan),
            State::Consent {
                plan,
                request_id,
                deadline_wall_ms,
            } => {
                if now.wall_ms >= deadline_wall_ms {
                    let until_wall_ms = now
                        .wall_ms
                        .saturating_add(self.config.policy.default_postpone_ms);
                    self.state = State::Postponed {
                        plan,
                        until_wall_ms,
                    };
                    return Ok(SessionStep::Postponed { until_wall_ms });
                }
                self.state = State::Consent {
                    plan,
                    request_id,
                    deadline_wall_ms,
                };
                Ok(SessionStep::Postponed {
                    until_wall_ms: deadline_wall_ms,
                })
            }
            State::Postponed {
                plan,
                until_wall_ms,
            } => {
                if now.wall_ms < until_wall_ms {
                    self.state = State::Postponed {
                        plan,
                        until_wall_ms,
                    };
                    return Ok(SessionStep::Postponed { until_wall_ms });
                }
                self.gate(now, plan)
            }
            State::Downloading(mut plan, mut i) => loop {
                let Some(item) = plan.items.get_mut(i) else {
                    self.state = State::Done;
                    return Ok(SessionStep::Ready(Box::new(self.ready(plan)?)));
                };
                match item.download.poll(now.mono_ms) {
                    BlobStep::Done => i += 1,
                    BlobStep::Request {
                        range_start,
                        max_len,
                    } => {
                        let sha256 = item.download.sha256();
                        self.state = State::Downloading(plan, i);
                        return Ok(SessionStep::Need(ServerRequest::Blob {
                            blob: BlobHandle(i as u64),
                            sha256,
                            range_start,
                            max_len,
                        }));
                    }
                    BlobStep::WaitUntil(t) => {
                        self.state = State::Downloading(plan, i);
                        return Ok(SessionStep::WaitUntil(t));
                    }
                    BlobStep::GaveUp { attempts, last } => {
                        return Err(SessionError::GaveUp {
                            what: format!("blob {}", item.target_name),
                            attempts,
                            last: last.to_string(),
                        })
                    }
                }
            },
            s => {
                self.state = s;
                Err(SessionError::Unexpected("nothing to poll"))
            }
        }
    }

    fn ready(&self, plan: Plan) -> Result<ReadyPackage> {
        let list = |m: &BTreeMap<String, RoleBytes>| m.values().cloned().collect::<Vec<_>>();
        let director = list(&self.forwarded[0]);
        let image = list(&self.forwarded[1]);
        let descs: Vec<TargetDescription> =
            plan.items.iter().map(|p| p.description.clone()).collect();
        let package = Package::from_target_descriptions(&descs)?;
        let components = plan
            .items
            .into_iter()
            .enumerate()
            .map(|(i, p)| ReadyComponent {
                device: p.device,
                target_name: p.target_name,
                encoding: p.encoding,
                chunk_hashes: p.download.chunk_hashes().to_vec(),
                artifact: p.artifact,
                blob: BlobHandle(i as u64),
                metadata: ForwardedMetadata {
                    director: director.clone(),
                    image: match p.verification {
                        VerificationLevel::Full => image.clone(),
                        VerificationLevel::Partial => Vec::new(),
                    },
                },
            })
            .collect();
        Ok(ReadyPackage {
            package,
            components,
        })
    }

    /// Bytes received so far of the blob being downloaded (the host's
    /// write offset).
    pub fn blob_received(&self) -> Option<u64> {
        match &self.state {
            State::Downloading(plan, i) => plan.items.get(*i).map(|p| p.download.received()),
            _ => None,
        }
    }

    fn fail_request(
        &mut self,
        now: Now,
        what: &str,
        need: ServerRequest,
        why: &str,
    ) -> Result<SessionStep> {
        match self.backoff.fail() {
            Some(delay) => {
                let at = now.mono_ms.saturating_add(delay);
                self.retry = Some((at, need));
                Ok(SessionStep::WaitUntil(at))
            }
            None => Err(SessionError::GaveUp {
                what: what.to_string(),
                attempts: self.backoff.failures(),
                last: why.to_string(),
            }),
        }
    }

    /// Hands in the answer to the last [`ServerRequest`].
    pub fn provide(&mut self, now: Now, answer: Answer<'_>) -> Result<SessionStep> {
        let state = std::mem::replace(&mut self.state, State::Idle);
        match (state, answer) {
            (State::Uploading, Answer::ManifestAccepted(a)) => {
                self.backoff.succeed();
                if a.manifest_sha256 != self.manifest_sha256 {
                    return Err(SessionError::Unexpected("accepted another manifest"));
                }
                self.accepted = Some(a.manifest_sha256);
                self.send_check_in()
            }
            (State::Uploading, Answer::Failed(why)) => {
                self.state = State::Uploading;
                let need = ServerRequest::UploadManifest {
                    body: self.manifest.clone(),
                };
                self.fail_request(now, "manifest upload", need, why)
            }
            (State::CheckingIn, Answer::CheckIn(r)) => {
                self.backoff.succeed();
                match r {
                    CheckInResponse::UpToDate => {
                        self.state = State::Done;
                        Ok(SessionStep::UpToDate)
                    }
                    CheckInResponse::ManifestWanted => {
                        self.accepted = None;
                        self.state = State::Uploading;
                        Ok(SessionStep::Need(ServerRequest::UploadManifest {
                            body: self.manifest.clone(),
                        }))
                    }
                    _ => {
                        let unix = i64::try_from(now.wall_ms / 1000).unwrap_or(i64::MAX);
                        let p = self.verifier.begin(UnixTime(unix))?;
                        self.verified(now, p)
                    }
                }
            }
            (State::CheckingIn, Answer::Failed(why)) => {
                self.state = State::CheckingIn;
                let body = serde_json::to_vec(&CheckInRequest {
                    manifest_sha256: self.manifest_sha256,
                })
                .map_err(enc)?;
                self.fail_request(now, "check-in", ServerRequest::CheckIn { body }, why)
            }
            (State::Verifying(kind, need), Answer::File(f)) => {
                self.backoff.succeed();
                if let (Some(bytes), Some(role)) = (f, role_of(&need)) {
                    let slot = match kind {
                        RepoKind::Director => 0,
                        RepoKind::Image => 1,
                    };
                    let key = match role {
                        MetadataRole::Root => need.path(),
                        ref r => role_name(r).to_string(),
                    };
                    self.forwarded[slot].insert(
                        key,
                        RoleBytes {
                            role,
                            json: bytes.to_vec(),
                        },
                    );
                }
                let p = self.verifier.provide(match f {
                    Some(b) => esync_uptane::Response::Bytes(b),
                    None => esync_uptane::Response::NotFound,
                })?;
                self.verified(now, p)
            }
            (State::Verifying(kind, need), Answer::Failed(why)) => {
                let step = self.metadata_need(kind, need)?;
                let SessionStep::Need(n) = step else {
                    return Err(SessionError::Unexpected("metadata need"));
                };
                self.fail_request(now, "metadata", n, why)
            }
            (
                State::Consent {
                    plan,
                    request_id,
                    deadline_wall_ms,
                },
                Answer::Consent(r),
            ) => {
                if r.request_id != request_id {
                    self.state = State::Consent {
                        plan,
                        request_id,
                        deadline_wall_ms,
                    };
                    return Err(SessionError::Unexpected(
                        "answer to another consent request",
                    ));
                }
                let max = self.config.policy.default_postpone_ms.saturating_mul(24);
                match ConsentOutcome::from_decision(&r.decision, now.wall_ms, max) {
                    ConsentOutcome::Granted => {
                        self.state = State::Downloading(plan, 0);
                        self.poll(now)
                    }
                    ConsentOutcome::Denied(why) => {
                        self.state = State::Done;
                        Ok(SessionStep::Denied(why))
                    }
                    ConsentOutcome::PostponedUntil(until_wall_ms) => {
                        self.state = State::Postponed {
                            plan,
                            until_wall_ms,
                        };
                        Ok(SessionStep::Postponed { until_wall_ms })
                    }
                }
            }
            (
                State::Downloading(mut plan, i),
                a @ (Answer::BlobBytes(_) | Answer::BlobEnd | Answer::Failed(_)),
            ) => {
                let item = plan
                    .items
                    .get_mut(i)
                    .ok_or(SessionError::Unexpected("no blob running"))?;
                match a {
                    Answer::BlobBytes(b) => {
                        let r = item.download.on_bytes(now.mono_ms, b);
                        self.state = State::Downloading(plan, i);
                        match r {
                            Ok(_) => Ok(SessionStep::Continue),
                            Err(_) => self.poll(now),
                        }
                    }
                    Answer::BlobEnd => {
                        let r = item.download.on_end(now.mono_ms);
                        self.state = State::Downloading(plan, i);
                        // A hash mismatch restarts at 0: the host drops what
                        // it stored (it sees `range_start == 0`).
                        let _: std::result::Result<bool, AttemptFailure> = r;
                        self.poll(now)
                    }
                    Answer::Failed(why) => {
                        item.download.on_error(now.mono_ms, why);
                        self.state = State::Downloading(plan, i);
                        self.poll(now)
                    }
                    _ => Err(SessionError::Unexpected("blob answer")),
                }
            }
            (s, _) => {
                self.state = s;
                Err(SessionError::Unexpected("answer does not fit the request"))
            }
        }
    }
}

fn role_name(r: &MetadataRole) -> &str {
    match r {
        MetadataRole::Root => "root",
        MetadataRole::Timestamp => "timestamp",
        MetadataRole::Snapshot => "snapshot",
        MetadataRole::Targets => "targets",
        MetadataRole::Delegated(name) => name,
    }
}
