//! **The demo's orchestrator**: a minimal, scripted stand-in for the
//! Client's update orchestrator (the real one, a sans-I/O state machine in
//! esync-client, is a later issue). It talks to the Agents through the
//! embedded broker's in-process endpoint with signed envelopes and walks
//! one campaign through the lifecycle of `mission.md`: inventory, Uptane
//! full verification, delta-or-full choice, download offer, chunked
//! transfer, prepare, staged install, confirm, or rollback of every
//! component of the package when one fails; then signed version reports and
//! the vehicle manifest.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use esync_package::chunk::{ChunkPlan, ChunkSender};
use esync_package::package::{Artifact, ArtifactRef, Component, TargetDescription};
use esync_proto::envelope::{EnvelopeSigner, ReceiverIdentity, Recipient, Verifier};
use esync_proto::frame::FrameLimits;
use esync_proto::id::{DevicePath, EcuSerial, Id128, Sha256Digest, Vin};
use esync_proto::message::*;
use esync_transport::{ChannelTransport, Incoming, Transport};
use esync_uptane::crypto::RawSigned;
use esync_uptane::manifest::VehicleManifest;
use esync_uptane::repo::Limits;
use esync_uptane::uptane::{
    DirectorTarget as UptaneTarget, EcuInfo, FullVerifier, RepoKind, Vehicle,
};
use esync_uptane::{MemoryStore, PrivateKey, UnixTime};

use crate::server::Server;
use crate::{hex, now_ms, say, DemoError};

/// How long the orchestrator waits for one answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Chunks in flight per transfer.
pub const WINDOW: u32 = 8;

/// How a component travelled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// The full image.
    Full,
    /// A patch from `from` in `format`.
    Delta {
        /// Patch format.
        format: PatchFormat,
        /// Source version.
        from: String,
    },
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Encoding::Full => f.write_str("full image"),
            Encoding::Delta { format, from } => write!(
                f,
                "delta from {from} ({})",
                esync_package::package::format_name(*format)
            ),
        }
    }
}

/// What happened to one component of a campaign.
#[derive(Clone, Debug)]
pub struct ComponentReport {
    /// Device.
    pub device: DevicePath,
    /// Version offered.
    pub version: String,
    /// How it travelled.
    pub encoding: Encoding,
    /// Bytes transferred to the Agent.
    pub bytes_sent: u64,
    /// Length of the full image.
    pub image_len: u64,
    /// Chunks transferred (including chunks sent again).
    pub chunks: u32,
    /// Chunks the Agent rejected (hash mismatch) and that were sent again.
    pub rejected_chunks: u32,
    /// Final state, e.g. "confirmed 2.0.0" or "rolled back to 2.0.0".
    pub result: String,
}

/// Outcome of a campaign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CampaignOutcome {
    /// Every component installed and was confirmed.
    Installed,
    /// A component failed; every component of the package was rolled back.
    RolledBack {
        /// The component that failed and why.
        reason: String,
    },
}

/// Report of one campaign.
#[derive(Clone, Debug)]
pub struct CampaignReport {
    /// Package id.
    pub package: String,
    /// Outcome.
    pub outcome: CampaignOutcome,
    /// Per component.
    pub components: Vec<ComponentReport>,
}

/// One component's plan.
struct Plan {
    component: Component,
    target_name: String,
    update_id: Id128,
    transfer_id: Id128,
    encoding: ImageEncoding,
    shown: Encoding,
    payload: Vec<u8>,
    artifact: Artifact,
    installed: bool,
    failed: bool,
    settled: bool,
    report: ComponentReport,
}

/// The scripted orchestrator.
pub struct Orchestrator {
    transport: Transport,
    signer: EnvelopeSigner,
    verifier: Verifier,
    keys: BTreeMap<Participant, VerifyingKey>,
    inbox: VecDeque<(DevicePath, Payload)>,
    connected: BTreeSet<DevicePath>,
    uptane: FullVerifier<MemoryStore, MemoryStore>,
    manifest_key: PrivateKey,
    primary_serial: EcuSerial,
    vin: Vin,
    verbose: bool,
    next_id: u64,
    link_fault: Option<(DevicePath, u32)>,
    /// Agents by device path, with their ECU serial (from the inventory).
    pub ecus: BTreeMap<DevicePath, InventoryReport>,
}

fn proto(m: impl Into<String>) -> DemoError {
    DemoError::Protocol(m.into())
}

fn id128(prefix: u8, n: u64) -> Id128 {
    let mut b = [0u8; 16];
    b[0] = prefix;
    b[8..].copy_from_slice(&n.to_be_bytes());
    let r: [u8; 7] = rand::random();
    b[1..8].copy_from_slice(&r);
    Id128(b)
}

impl Orchestrator {
    /// An orchestrator on the broker's in-process endpoint, signing with the
    /// vehicle's key, knowing each Agent's key (from its certificate), with
    /// the Director and Image roots pinned at provisioning.
    #[allow(clippy::too_many_arguments, reason = "provisioning inputs")]
    pub fn new(
        endpoint: ChannelTransport,
        vehicle_key: SigningKey,
        agent_keys: BTreeMap<Participant, VerifyingKey>,
        director_root: Vec<u8>,
        image_root: Vec<u8>,
        vin: Vin,
        verbose: bool,
    ) -> Result<Self, DemoError> {
        let uptane = FullVerifier::open(
            MemoryStore::new(director_root),
            MemoryStore::new(image_root),
            Vehicle {
                vin: vin.clone(),
                ecus: BTreeMap::new(),
            },
            Limits::default(),
        )
        .map_err(|e| DemoError::Uptane(format!("client verifier: {e}")))?;
        let manifest_key = PrivateKey::from_seed(&vehicle_key.to_bytes());
        Ok(Orchestrator {
            transport: Transport::boxed(endpoint),
            signer: EnvelopeSigner::new(
                Participant::Client,
                vehicle_key,
                1,
                FrameLimits::default(),
            ),
            verifier: Verifier::new(
                ReceiverIdentity {
                    me: Participant::Client,
                    groups: vec![],
                },
                FrameLimits::default(),
            ),
            keys: agent_keys,
            inbox: VecDeque::new(),
            connected: BTreeSet::new(),
            uptane,
            manifest_key,
            primary_serial: EcuSerial::new("GW0001").map_err(|e| proto(format!("serial: {e}")))?,
            vin,
            verbose,
            next_id: 0,
            link_fault: None,
            ecus: BTreeMap::new(),
        })
    }

    /// Corrupts one byte of chunk `index` the next time it is sent to
    /// `dev` (a simulated bit flip on the in-vehicle link): the Agent must
    /// reject the chunk against its hash and the orchestrator send it again.
    pub fn inject_link_fault(&mut self, dev: DevicePath, index: u32) {
        self.link_fault = Some((dev, index));
    }

    fn fresh_id(&mut self, prefix: u8) -> Id128 {
        self.next_id += 1;
        id128(prefix, self.next_id)
    }

    /// Signs `payload` for `dev` and sends it through the broker.
    async fn send(&mut self, dev: &DevicePath, payload: Payload) -> Result<(), DemoError> {
        let corr = self.fresh_id(0xC0);
        let frame = self
            .signer
            .seal(Recipient::Device(dev.clone()), corr, payload, now_ms())
            .map_err(|e| proto(format!("sealing for {dev}: {e}")))?;
        self.transport
            .send(frame)
            .await
            .map_err(|e| proto(format!("sending to {dev}: {e}")))
    }

    /// Receives one verified message (or a presence event).
    async fn recv_one(&mut self, what: &str) -> Result<Option<(DevicePath, Payload)>, DemoError> {
        let inc = tokio::time::timeout(ANSWER_TIMEOUT, self.transport.recv())
            .await
            .map_err(|_| {
                DemoError::Timeout(format!(
                    "no answer within {ANSWER_TIMEOUT:?} while waiting for {what}"
                ))
            })?
            .ok_or_else(|| proto("broker endpoint closed"))?;
        match inc {
            Incoming::Frame(f) => {
                let m = match self.verifier.open(&f, &self.keys, now_ms()) {
                    Ok(m) => m,
                    Err(e) => {
                        say(self.verbose, &format!("      (dropped an envelope: {e})"));
                        return Ok(None);
                    }
                };
                match m.header.sender {
                    Participant::Device(d) => Ok(Some((d, m.payload))),
                    other => {
                        say(
                            self.verbose,
                            &format!("      (ignored a message from {other})"),
                        );
                        Ok(None)
                    }
                }
            }
            Incoming::Presence(p) => {
                say(
                    self.verbose,
                    &format!("      presence: {} {:?}", p.participant, p.state),
                );
                if let Participant::Device(d) = &p.participant {
                    match p.state {
                        PresenceState::Connected => {
                            self.connected.insert(d.clone());
                        }
                        PresenceState::Disconnected => {
                            self.connected.remove(d);
                        }
                    }
                }
                Ok(None)
            }
            Incoming::Reconnected => Ok(None),
        }
    }

    /// Waits for a message from `dev` matching `want`; other messages are
    /// kept for later (progress reports are shown and dropped).
    async fn wait_for(
        &mut self,
        dev: &DevicePath,
        what: &str,
        want: impl Fn(&Payload) -> bool,
    ) -> Result<Payload, DemoError> {
        if let Some(i) = self.inbox.iter().position(|(d, p)| d == dev && want(p)) {
            return self
                .inbox
                .remove(i)
                .map(|(_, p)| p)
                .ok_or_else(|| proto("inbox"));
        }
        loop {
            let Some((d, p)) = self.recv_one(what).await? else {
                continue;
            };
            if &d == dev && want(&p) {
                return Ok(p);
            }
            if let Payload::Progress(pr) = &p {
                say(
                    self.verbose,
                    &format!("      {d}: {:?} {}/{}", pr.phase, pr.done, pr.total),
                );
                continue;
            }
            if self.inbox.len() >= 1024 {
                self.inbox.pop_front();
            }
            self.inbox.push_back((d, p));
        }
    }

    /// Waits until every device in `devs` is connected to the broker.
    pub async fn wait_connected(&mut self, devs: &[DevicePath]) -> Result<(), DemoError> {
        while !devs.iter().all(|d| self.connected.contains(d)) {
            if let Some(m) = self.recv_one("the Agents to connect").await? {
                self.inbox.push_back(m);
            }
        }
        Ok(())
    }

    /// Inventory: asks every Agent for its identity, installed image,
    /// capabilities; retries when an Agent answers "do not disturb".
    pub async fn inventory(
        &mut self,
        devs: &[DevicePath],
    ) -> Result<BTreeMap<DevicePath, InventoryReport>, DemoError> {
        let mut out = BTreeMap::new();
        for d in devs {
            let mut tries = 0;
            loop {
                let nonce: [u8; 16] = rand::random();
                self.send(d, Payload::InventoryQuery(InventoryQuery { nonce }))
                    .await?;
                let p = self
                    .wait_for(d, "an inventory report", |p| {
                        matches!(p, Payload::InventoryReport(r) if r.nonce == nonce)
                            || matches!(p, Payload::DoNotDisturb(_))
                    })
                    .await?;
                match p {
                    Payload::InventoryReport(r) => {
                        if &r.device != d {
                            return Err(proto(format!("{d} reported as {}", r.device)));
                        }
                        out.insert(d.clone(), r);
                        break;
                    }
                    Payload::DoNotDisturb(x) => {
                        tries += 1;
                        if tries > 20 {
                            return Err(proto(format!("{d} stays busy ({:?})", x.reason)));
                        }
                        let wait = u64::from(x.retry_after_ms).clamp(50, 500);
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                    }
                    _ => return Err(proto("unexpected inventory answer")),
                }
            }
        }
        self.ecus = out.clone();
        Ok(out)
    }

    /// Uptane full verification of both repositories (fetching from the
    /// Server) for the ECUs of the last inventory.
    pub fn verify_metadata(&mut self, server: &Server) -> Result<Vec<UptaneTarget>, DemoError> {
        let vehicle = self.uptane.vehicle_mut();
        vehicle.ecus.clear();
        for r in self.ecus.values() {
            vehicle.ecus.insert(
                r.serial.clone(),
                EcuInfo {
                    hardware_id: r.hardware_id.clone(),
                    installed_release_counter: r.installed.release_counter,
                },
            );
        }
        let now = UnixTime(i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX));
        self.uptane
            .verify_with(now, |kind, need| {
                let path = need.path();
                let got = match kind {
                    RepoKind::Director => server.director_file(&path),
                    RepoKind::Image => server.image_file(&path),
                };
                Ok::<_, std::convert::Infallible>(
                    got.filter(|b| b.len() as u64 <= need.max_length()),
                )
            })
            .map_err(|e| DemoError::Uptane(format!("full verification: {e}")))
    }

    /// Runs one campaign: the Director targets (already verified) are
    /// turned into per-Agent plans, transferred, prepared, installed stage by
    /// stage and confirmed, or every component is rolled back.
    pub async fn run_campaign(
        &mut self,
        server: &Server,
        targets: &[UptaneTarget],
    ) -> Result<CampaignReport, DemoError> {
        // Plans from the verified targets.
        let mut plans = Vec::new();
        let mut package = None;
        for t in targets {
            let sha = t
                .info
                .hashes
                .get("sha256")
                .and_then(|h| esync_package::digest::from_hex(h))
                .ok_or_else(|| DemoError::Uptane(format!("{}: no sha256", t.name)))?;
            let custom = t
                .info
                .custom
                .as_ref()
                .ok_or_else(|| DemoError::Uptane(format!("{}: no custom", t.name)))?;
            let desc =
                TargetDescription::from_custom_json(custom, Some((&t.name, t.info.length, &sha)))
                    .map_err(|e| DemoError::Uptane(format!("{}: {e}", t.name)))?;
            if desc.component.release_counter != t.release_counter {
                return Err(DemoError::Uptane(format!(
                    "{}: release counter differs",
                    t.name
                )));
            }
            package.get_or_insert_with(|| desc.package.to_string());
            let inv = self
                .ecus
                .values()
                .find(|r| r.serial == t.ecu)
                .cloned()
                .ok_or_else(|| DemoError::Uptane(format!("target for unknown ECU {}", t.ecu)))?;
            plans.push(self.plan(server, &desc, &inv)?);
        }
        let package = package.ok_or_else(|| proto("the Director directs no update"))?;
        let count = plans.len();
        // Install order: stages, then device path.
        plans.sort_by(|a, b| {
            (a.component.stage, &a.component.device).cmp(&(b.component.stage, &b.component.device))
        });
        say(
            true,
            &format!("  package {package}: {count} component(s) directed to this vehicle"),
        );

        let (director, image) = server.forwarded_metadata();
        let mut failure: Option<String> = None;
        // Metadata, offer, transfer, prepare: one Agent after the other.
        for p in &mut plans {
            let dev = p.component.device.clone();
            say(
                true,
                &format!(
                    "  {dev}: offer {} -> {} as {} ({} bytes, {} chunk(s))",
                    self.ecus
                        .get(&dev)
                        .map(|r| r.installed.version.to_string())
                        .unwrap_or_default(),
                    p.component.version,
                    p.shown,
                    p.payload.len(),
                    p.artifact.length.div_ceil(u64::from(p.artifact.chunk_size)),
                ),
            );
            self.send(
                &dev,
                Payload::UpdateMetadata(UpdateMetadata {
                    update_id: p.update_id,
                    director: director.clone(),
                    image: image.clone(),
                }),
            )
            .await?;
            if let Err(why) = self.download_and_prepare(p).await? {
                failure = Some(format!("{dev}: {why}"));
                break;
            }
        }
        // Install, stage by stage, Agents of one stage in parallel.
        if failure.is_none() {
            let mut stages: Vec<u16> = plans.iter().map(|p| p.component.stage).collect();
            stages.sort_unstable();
            stages.dedup();
            'stages: for stage in stages {
                let idx: Vec<usize> = (0..plans.len())
                    .filter(|i| plans[*i].component.stage == stage)
                    .collect();
                for &i in &idx {
                    let (dev, uid) = (plans[i].component.device.clone(), plans[i].update_id);
                    say(true, &format!("  stage {stage}: install on {dev}"));
                    self.send(
                        &dev,
                        Payload::InstallStart(InstallStart {
                            update_id: uid,
                            stage,
                            await_confirm: true,
                        }),
                    )
                    .await?;
                    plans[i].installed = true;
                }
                for &i in &idx {
                    let (dev, uid) = (plans[i].component.device.clone(), plans[i].update_id);
                    let r = self
                        .wait_for(
                            &dev,
                            "an install result",
                            |p| matches!(p, Payload::InstallResult(r) if r.update_id == uid),
                        )
                        .await?;
                    let Payload::InstallResult(r) = r else {
                        return Err(proto("unexpected install answer"));
                    };
                    match r.outcome {
                        InstallOutcome::Installed {
                            version,
                            awaiting_confirm,
                        } => {
                            say(
                                true,
                                &format!(
                                    "    {dev}: installed, activated, self-test passed: runs {version}{}",
                                    if awaiting_confirm { " on trial (awaiting confirm)" } else { "" }
                                ),
                            );
                        }
                        InstallOutcome::Failed {
                            failure: f,
                            running,
                        } => {
                            say(
                                true,
                                &format!(
                                    "    {dev}: INSTALL FAILED ({:?}: {}); the Agent switched back and runs {running}",
                                    f.code, f.message
                                ),
                            );
                            plans[i].failed = true;
                            // Workaround: after a *terminal* failure the Agent
                            // already switched back, and a Rollback to the
                            // previous slot would boot the failed image (see
                            // the report of this example), so none is sent.
                            let before = self.ecus.get(&dev).map(|r| r.installed.version.clone());
                            plans[i].settled = f.class == ErrorClass::Terminal
                                && before.as_ref() == Some(&running);
                            plans[i].report.result =
                                format!("{:?}, Agent switched back to {running}", f.code);
                            failure.get_or_insert(format!("{dev}: {:?}: {}", f.code, f.message));
                        }
                    }
                }
                if failure.is_some() {
                    break 'stages;
                }
            }
        }

        let outcome = match failure {
            None => {
                say(true, "  every component succeeded: confirm all");
                for p in &mut plans {
                    let dev = p.component.device.clone();
                    let uid = p.update_id;
                    self.send(&dev, Payload::Confirm(Confirm { update_id: uid }))
                        .await?;
                    let c = self
                        .wait_for(
                            &dev,
                            "a confirmation",
                            |x| matches!(x, Payload::Confirmed(c) if c.update_id == uid),
                        )
                        .await?;
                    let Payload::Confirmed(c) = c else {
                        return Err(proto("unexpected confirm answer"));
                    };
                    if c.version != p.component.version {
                        return Err(proto(format!(
                            "{dev} confirmed {} instead of {}",
                            c.version, p.component.version
                        )));
                    }
                    say(true, &format!("    {dev}: committed {}", c.version));
                    p.report.result = format!("confirmed {}", c.version);
                }
                CampaignOutcome::Installed
            }
            Some(reason) => {
                say(
                    true,
                    &format!("  package failed ({reason}): roll back EVERY component of {package}"),
                );
                for p in plans.iter_mut().rev() {
                    let dev = p.component.device.clone();
                    let uid = p.update_id;
                    if p.settled {
                        say(true, &format!("    {dev}: already back on its previous version (terminal failure): nothing to roll back"));
                        continue;
                    }
                    self.send(
                        &dev,
                        Payload::Rollback(Rollback {
                            update_id: uid,
                            target: RollbackTarget::PreviousSlot,
                        }),
                    )
                    .await?;
                    let r = self
                        .wait_for(
                            &dev,
                            "a rollback result",
                            |x| matches!(x, Payload::RollbackResult(r) if r.update_id == uid),
                        )
                        .await?;
                    let Payload::RollbackResult(r) = r else {
                        return Err(proto("unexpected rollback answer"));
                    };
                    match r.outcome {
                        RollbackOutcome::RolledBack { version } => {
                            let what = if p.installed && !p.failed {
                                "rolled back"
                            } else {
                                "staged update dropped"
                            };
                            say(true, &format!("    {dev}: {what}, runs {version}"));
                            let prev = std::mem::take(&mut p.report.result);
                            p.report.result = if prev.is_empty() {
                                format!("{what}, runs {version}")
                            } else {
                                format!("{prev}; {what}")
                            };
                        }
                        RollbackOutcome::Failed(f) => {
                            return Err(proto(format!("{dev}: rollback failed: {f:?}")));
                        }
                    }
                }
                CampaignOutcome::RolledBack { reason }
            }
        };
        Ok(CampaignReport {
            package,
            outcome,
            components: plans.into_iter().map(|p| p.report).collect(),
        })
    }

    /// Chooses delta or full for one Agent and fetches the bytes.
    fn plan(
        &mut self,
        server: &Server,
        desc: &TargetDescription,
        inv: &InventoryReport,
    ) -> Result<Plan, DemoError> {
        let c = &desc.component;
        // The Agent's preference order; a delta must start from exactly
        // what the Agent runs.
        let delta = inv.delta.formats.iter().find_map(|f| {
            c.deltas.iter().find(|d| {
                d.format == *f
                    && d.from_version == inv.installed.version
                    && d.source_sha256 == inv.installed.sha256
            })
        });
        let (encoding, shown, artifact, name) = match delta {
            Some(d) => {
                let ddesc = TargetDescription {
                    artifact: ArtifactRef::Delta {
                        format: d.format,
                        from_version: d.from_version.clone(),
                    },
                    ..desc.clone()
                };
                (
                    ImageEncoding::Delta {
                        format: d.format,
                        from_version: d.from_version.clone(),
                        source_sha256: d.source_sha256,
                        patch_length: d.patch.length,
                        patch_sha256: d.patch.sha256,
                    },
                    Encoding::Delta {
                        format: d.format,
                        from: d.from_version.to_string(),
                    },
                    d.patch.clone(),
                    ddesc.target_name(),
                )
            }
            None => (
                ImageEncoding::Full,
                Encoding::Full,
                c.image.clone(),
                desc.target_name(),
            ),
        };
        // "Download" from the Server, checked against the signed description.
        let payload = server
            .target_file(&name)
            .ok_or_else(|| proto(format!("the Server has no {name}")))?
            .to_vec();
        if payload.len() as u64 != artifact.length
            || esync_agent::device::sha256(&payload) != artifact.sha256
        {
            return Err(DemoError::Uptane(format!(
                "downloaded {name} does not match its signed hash"
            )));
        }
        let update_id = self.fresh_id(0x01);
        let transfer_id = self.fresh_id(0x02);
        Ok(Plan {
            component: c.clone(),
            target_name: desc.target_name(),
            update_id,
            transfer_id,
            encoding,
            report: ComponentReport {
                device: c.device.clone(),
                version: c.version.to_string(),
                encoding: shown.clone(),
                bytes_sent: 0,
                image_len: c.image.length,
                chunks: 0,
                rejected_chunks: 0,
                result: String::new(),
            },
            shown,
            payload,
            artifact,
            installed: false,
            failed: false,
            settled: false,
        })
    }

    /// Offer, chunked transfer and prepare. `Ok(Err(why))`: the Agent
    /// refused (the package fails).
    async fn download_and_prepare(
        &mut self,
        p: &mut Plan,
    ) -> Result<Result<(), String>, DemoError> {
        let dev = p.component.device.clone();
        let uid = p.update_id;
        self.send(
            &dev,
            Payload::DownloadOffer(DownloadOffer {
                update_id: uid,
                target_name: p.target_name.clone(),
                version: p.component.version.clone(),
                release_counter: p.component.release_counter,
                length: p.component.image.length,
                sha256: p.component.image.sha256,
                encoding: p.encoding.clone(),
                consent_required: p.component.policy.consent_required,
            }),
        )
        .await?;
        let d = self
            .wait_for(
                &dev,
                "a download decision",
                |x| matches!(x, Payload::DownloadDecision(d) if d.update_id == uid),
            )
            .await?;
        match d {
            Payload::DownloadDecision(DownloadDecision {
                decision: Decision::Consent,
                ..
            }) => {}
            Payload::DownloadDecision(d) => {
                return Ok(Err(format!("download refused: {:?}", d.decision)))
            }
            _ => return Err(proto("unexpected decision")),
        }
        let plan = ChunkPlan::compute(&p.payload, p.artifact.chunk_size)
            .map_err(|e| proto(format!("chunk plan: {e}")))?;
        if plan.list_digest() != p.artifact.chunk_list_sha256 {
            return Err(DemoError::Uptane(
                "chunk list differs from the signed digest".into(),
            ));
        }
        let tid = p.transfer_id;
        self.send(&dev, Payload::TransferStart(plan.transfer_start(tid, uid)))
            .await?;
        let is_ack = |x: &Payload| {
            matches!(x, Payload::TransferAck(a) if a.transfer_id == tid)
                || matches!(x, Payload::PrepareResult(r) if r.update_id == uid)
                || matches!(x, Payload::DownloadDecision(d) if d.update_id == uid)
        };
        let first = match self
            .wait_for(&dev, "the transfer start ack", is_ack)
            .await?
        {
            Payload::TransferAck(a) => a.next_chunk,
            other => return Ok(Err(format!("transfer refused: {other:?}"))),
        };
        let count = plan.count();
        let mut sender = ChunkSender::new(&plan, first);
        let mut in_flight = 0u32;
        let mut next_needed = first;
        let mut sent = 0u64;
        let mut chunks = 0u32;
        let mut stalls = 0;
        while next_needed < count {
            while in_flight < WINDOW {
                let Some(i) = sender.next_index() else { break };
                let mut chunk = plan
                    .chunk(tid, i, &p.payload.as_slice())
                    .map_err(|e| proto(format!("chunk {i}: {e}")))?;
                if self.link_fault.as_ref() == Some(&(dev.clone(), i)) {
                    self.link_fault = None;
                    if let Some(b) = chunk.data.last_mut() {
                        *b ^= 0x01;
                    }
                    say(
                        true,
                        &format!("    (simulated bit flip on the link in chunk {i} to {dev})"),
                    );
                }
                sent += chunk.data.len() as u64;
                chunks += 1;
                self.send(&dev, Payload::TransferChunk(chunk)).await?;
                in_flight += 1;
            }
            if in_flight == 0 {
                // Everything sent but the Agent still misses chunks: ask
                // where it stands.
                stalls += 1;
                if stalls > 3 {
                    return Ok(Err(format!(
                        "transfer stalled at chunk {next_needed} of {count}"
                    )));
                }
                self.send(
                    &dev,
                    Payload::TransferQuery(TransferQuery { transfer_id: tid }),
                )
                .await?;
                in_flight = 1;
            }
            match self.wait_for(&dev, "a transfer ack", is_ack).await? {
                Payload::TransferAck(a) => {
                    in_flight = in_flight.saturating_sub(1);
                    if !a.rejected.is_empty() {
                        p.report.rejected_chunks += a.rejected.len() as u32;
                        say(
                            true,
                            &format!(
                                "    {dev}: Agent rejected chunk(s) {:?} (hash mismatch); sending again",
                                a.rejected
                            ),
                        );
                    }
                    sender.on_ack(&a);
                    next_needed = next_needed.max(a.next_chunk);
                }
                other => return Ok(Err(format!("transfer aborted: {other:?}"))),
            }
        }
        p.report.bytes_sent = sent;
        p.report.chunks = chunks;
        say(
            true,
            &format!("    {dev}: {chunks} chunk(s) ({sent} bytes) sent and acknowledged"),
        );
        self.send(
            &dev,
            Payload::Prepare(Prepare {
                update_id: uid,
                transfer_id: tid,
            }),
        )
        .await?;
        let r = self
            .wait_for(
                &dev,
                "a prepare result",
                |x| matches!(x, Payload::PrepareResult(r) if r.update_id == uid),
            )
            .await?;
        let Payload::PrepareResult(r) = r else {
            return Err(proto("unexpected prepare answer"));
        };
        match r.outcome {
            PrepareOutcome::Ready { version, sha256 } => {
                if sha256 != p.component.image.sha256 {
                    return Ok(Err("READY with an unexpected image hash".into()));
                }
                say(
                    true,
                    &format!(
                        "    {dev}: READY {version} (Agent verified the metadata itself{}, image sha256 {})",
                        if matches!(p.encoding, ImageEncoding::Delta { .. }) { ", rebuilt the image from the delta" } else { "" },
                        short(&sha256)
                    ),
                );
                Ok(Ok(()))
            }
            PrepareOutcome::Failed(f) => {
                say(
                    true,
                    &format!("    {dev}: prepare FAILED: {:?}: {}", f.code, f.message),
                );
                p.report.result = format!("prepare failed ({:?})", f.code);
                Ok(Err(format!("prepare failed: {:?}: {}", f.code, f.message)))
            }
        }
    }

    /// Asks every Agent for a signed version report (fresh nonce each) and
    /// signs the vehicle manifest holding them.
    pub async fn vehicle_manifest(&mut self, devs: &[DevicePath]) -> Result<Vec<u8>, DemoError> {
        let mut reports = BTreeMap::new();
        for d in devs {
            let nonce: [u8; 16] = rand::random();
            self.send(
                d,
                Payload::VersionReportRequest(VersionReportRequest { nonce }),
            )
            .await?;
            let r = self
                .wait_for(d, "a version report", |x| {
                    matches!(x, Payload::VersionReport(_))
                })
                .await?;
            let Payload::VersionReport(v) = r else {
                return Err(proto("unexpected version report answer"));
            };
            let raw = RawSigned::from_slice("ecu version report", &v.signed_json)
                .map_err(|e| DemoError::Uptane(format!("{d}: report: {e}")))?;
            let serial = raw
                .signed
                .get("ecu_serial")
                .and_then(|s| s.as_str())
                .ok_or_else(|| DemoError::Uptane(format!("{d}: report without ecu_serial")))?
                .to_string();
            if raw.signed.get("nonce").and_then(|s| s.as_str()) != Some(hex(&nonce).as_str()) {
                return Err(DemoError::Uptane(format!(
                    "{d}: report carries another nonce"
                )));
            }
            reports.insert(serial, raw);
        }
        VehicleManifest {
            vin: self.vin.clone(),
            primary_ecu_serial: self.primary_serial.clone(),
            ecu_version_reports: reports,
        }
        .sign(&self.manifest_key)
        .map_err(|e| DemoError::Uptane(format!("signing the manifest: {e}")))
    }
}

/// First 8 bytes of a digest in hex.
pub fn short(d: &Sha256Digest) -> String {
    hex(&d.0[..8])
}
