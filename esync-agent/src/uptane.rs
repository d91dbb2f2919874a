//! [`MetadataVerifier`]s backed by `esync-uptane` (feature `uptane`, on by
//! default): Uptane **partial** verification (Director targets only, with
//! the Director root pinned at provisioning) and **full** verification
//! (Director and Image repositories, cross-checked).
//!
//! The Director target for this ECU must carry the package description of
//! `esync-package` in `custom.esync` (see `esync_package::package`): the
//! Agent takes the version, the full image's length, SHA-256 and chunk-list
//! digest, and the listed deltas from it, after checking that it agrees with
//! the signed Uptane entry (name, length, hash, hardware id, release
//! counter).
//!
//! The key schemes the verifiers accept are configuration, not a limit of
//! the code: [`UptanePartial::open`] and [`UptaneFull::open`] take them from
//! [`AgentConfig::uptane_schemes`] (default all; an Agent with little CPU
//! may be configured for ed25519 only, and Director keys of other schemes
//! then never count toward a threshold).

use esync_package::package::TargetDescription;
use esync_proto::id::{Sha256Digest, Vin};
use esync_proto::message::{
    ErrorClass, Failure, FailureCode, MetadataRole, RoleBytes, UpdateMetadata, VerificationLevel,
};
use esync_uptane::crypto::RawSigned;
use esync_uptane::metadata::{decode_signed, Targets};
use esync_uptane::repo::Need;
use esync_uptane::store::TrustStore;
use esync_uptane::uptane::{
    DirectorTarget as UptaneTarget, FullVerifier, PartialVerifier, RepoKind, Vehicle,
};
use esync_uptane::{Error, UnixTime};

use crate::config::AgentConfig;
use crate::target::{DirectedTarget, EcuIdentity, MetadataVerifier};

fn fail(class: ErrorClass, code: FailureCode, message: impl Into<String>) -> Failure {
    Failure {
        class,
        code,
        message: message.into(),
    }
}

/// Classifies a verification error for the report.
fn classify(e: &Error) -> Failure {
    use ErrorClass::UpdateIncapable as U;
    let msg = e.to_string();
    let code = match e {
        Error::Expired { .. } => FailureCode::MetadataExpired,
        Error::TooLong { .. } => FailureCode::InsufficientResources,
        Error::Store(_) | Error::NotProvisioned | Error::State(_) => {
            return fail(ErrorClass::Retryable, FailureCode::Internal, msg);
        }
        Error::HardwareMismatch { .. } => FailureCode::HardwareMismatch,
        Error::ReleaseCounterRollback { .. } => FailureCode::ReleaseCounterRollback,
        // Metadata directed at another vehicle or at an ECU it does not
        // have is not an update for this ECU.
        Error::NotForVehicle { .. } | Error::UnknownEcu { .. } => FailureCode::NotDirected,
        _ => FailureCode::MetadataInvalid,
    };
    fail(U, code, msg)
}

fn role_bytes<'a>(roles: &'a [RoleBytes], role: &MetadataRole) -> Option<&'a [u8]> {
    roles
        .iter()
        .rev()
        .find(|r| &r.role == role)
        .map(|r| r.json.as_slice())
}

fn sha256_of(t: &UptaneTarget) -> Result<Sha256Digest, Failure> {
    let hex = t.info.hashes.get("sha256").ok_or_else(|| {
        fail(
            ErrorClass::UpdateIncapable,
            FailureCode::MetadataInvalid,
            "target lists no sha256",
        )
    })?;
    esync_package::digest::from_hex(hex).ok_or_else(|| {
        fail(
            ErrorClass::UpdateIncapable,
            FailureCode::MetadataInvalid,
            "target sha256 is not 32 hex bytes",
        )
    })
}

fn expires_ms(targets_bytes: &[u8]) -> Result<u64, Failure> {
    let raw = RawSigned::from_slice("targets", targets_bytes).map_err(|e| classify(&e))?;
    let t: Targets = decode_signed("targets", &raw).map_err(|e| classify(&e))?;
    Ok(u64::try_from(t.expires.0).unwrap_or(0).saturating_mul(1000))
}

/// Builds the Agent's target from a verified Uptane target and its
/// `custom.esync` package description.
pub fn directed_from_uptane(t: &UptaneTarget, expires_ms: u64) -> Result<DirectedTarget, Failure> {
    let bad = |m: String| fail(ErrorClass::UpdateIncapable, FailureCode::MetadataInvalid, m);
    let sha = sha256_of(t)?;
    let custom = t
        .info
        .custom
        .as_ref()
        .ok_or_else(|| bad(format!("target {} has no custom", t.name)))?;
    let desc = TargetDescription::from_custom_json(custom, Some((&t.name, t.info.length, &sha)))
        .map_err(|e| bad(format!("target {}: {e}", t.name)))?;
    let c = &desc.component;
    if c.hardware_id != t.hardware_id {
        return Err(fail(
            ErrorClass::UpdateIncapable,
            FailureCode::HardwareMismatch,
            "package hardware id differs from the Director's",
        ));
    }
    if c.release_counter != t.release_counter {
        return Err(bad(
            "package release counter differs from the Director's".into()
        ));
    }
    Ok(DirectedTarget::from_component(
        t.name.clone(),
        t.ecu.clone(),
        t.hardware_id.clone(),
        c,
        expires_ms,
    ))
}

fn unix(now_ms: u64) -> UnixTime {
    UnixTime(i64::try_from(now_ms / 1000).unwrap_or(i64::MAX))
}

/// Uptane partial verification for an Agent: Director targets only, with the
/// Director root pinned at provisioning. Root rotations are followed when the
/// Client forwards the new root files (each signed by the previous root's
/// threshold and its own), so the Director can rotate its keys without
/// re-provisioning Agents.
pub struct UptanePartial<S: TrustStore> {
    inner: PartialVerifier<S>,
}

impl<S: TrustStore> UptanePartial<S> {
    /// Wraps an opened [`PartialVerifier`] (pinned Director root, this
    /// ECU's serial and hardware id, the vehicle's VIN).
    pub fn new(inner: PartialVerifier<S>) -> Self {
        UptanePartial { inner }
    }

    /// Opens partial verification on `store` (holding the pinned Director
    /// root) for the Agent of `config` in vehicle `vin`: its serial, its
    /// hardware id and [`AgentConfig::uptane_limits`] (the key schemes it
    /// is configured for).
    pub fn open(store: S, vin: Vin, config: &AgentConfig) -> Result<Self, Error> {
        PartialVerifier::open(
            store,
            vin,
            config.serial.clone(),
            config.hardware_id.clone(),
            config.uptane_limits(),
        )
        .map(Self::new)
    }

    /// Unwraps.
    pub fn into_inner(self) -> PartialVerifier<S> {
        self.inner
    }

    /// Follows the Director root rotations the Client forwarded: root files
    /// newer than the pinned one are applied in version order, each of which
    /// must be signed by a threshold of the previous root's keys and of its
    /// own (and be exactly one version newer). Any failure refuses the whole
    /// update and keeps the root reached so far (never a root that did not
    /// verify).
    fn follow_root_rotations(&mut self, director: &[RoleBytes]) -> Result<(), Failure> {
        let mut roots: Vec<(u64, &[u8])> = director
            .iter()
            .filter(|r| r.role == MetadataRole::Root)
            .filter_map(|r| {
                RawSigned::from_slice("root", &r.json)
                    .ok()
                    .and_then(|raw| raw.signed.get("version").and_then(|v| v.as_u64()))
                    .map(|v| (v, r.json.as_slice()))
            })
            .collect();
        roots.sort_by_key(|(v, _)| *v);
        let mut rotations = 0;
        for (version, bytes) in roots {
            if version <= self.inner.root_version() {
                continue;
            }
            rotations += 1;
            if rotations > MAX_ROOT_ROTATIONS {
                return Err(fail(
                    ErrorClass::UpdateIncapable,
                    FailureCode::MetadataInvalid,
                    format!("more than {MAX_ROOT_ROTATIONS} Director root rotations at once"),
                ));
            }
            self.inner.update_root(bytes).map_err(|e| {
                fail(
                    ErrorClass::UpdateIncapable,
                    FailureCode::MetadataInvalid,
                    format!("Director root version {version} refused: {e}"),
                )
            })?;
        }
        Ok(())
    }
}

/// Most Director root rotations an Agent follows in one update (as the TUF
/// client workflow bounds root updates per refresh).
const MAX_ROOT_ROTATIONS: usize = 32;

impl<S: TrustStore> MetadataVerifier for UptanePartial<S> {
    fn level(&self) -> VerificationLevel {
        VerificationLevel::Partial
    }

    fn verify(
        &mut self,
        metadata: &UpdateMetadata,
        ecu: &EcuIdentity,
        now_ms: u64,
    ) -> Result<DirectedTarget, Failure> {
        self.follow_root_rotations(&metadata.director)?;
        let bytes = role_bytes(&metadata.director, &MetadataRole::Targets).ok_or_else(|| {
            fail(
                ErrorClass::UpdateIncapable,
                FailureCode::MetadataInvalid,
                "no Director targets in the metadata",
            )
        })?;
        let t = self
            .inner
            .verify(bytes, unix(now_ms), ecu.installed_release_counter)
            .map_err(|e| classify(&e))?
            .ok_or_else(|| {
                fail(
                    ErrorClass::UpdateIncapable,
                    FailureCode::NotDirected,
                    format!("the Director has no target for ECU {}", ecu.serial),
                )
            })?;
        directed_from_uptane(&t, expires_ms(bytes)?)
    }
}

/// Uptane full verification for an Agent with the resources: both
/// repositories, verified from the role files the Client forwarded (root
/// files for rotations, timestamp, snapshot, targets, delegations). The
/// [`FullVerifier`]'s vehicle must list every ECU the Director may address.
pub struct UptaneFull<SD: TrustStore, SI: TrustStore> {
    inner: FullVerifier<SD, SI>,
}

impl<SD: TrustStore, SI: TrustStore> UptaneFull<SD, SI> {
    /// Wraps an opened [`FullVerifier`].
    pub fn new(inner: FullVerifier<SD, SI>) -> Self {
        UptaneFull { inner }
    }

    /// Opens full verification on the Director and Image trust stores for
    /// `vehicle`, with [`AgentConfig::uptane_limits`] (the key schemes the
    /// Agent of `config` is configured for).
    pub fn open(
        director: SD,
        image: SI,
        vehicle: Vehicle,
        config: &AgentConfig,
    ) -> Result<Self, Error> {
        FullVerifier::open(director, image, vehicle, config.uptane_limits()).map(Self::new)
    }
}

fn serve(roles: &[RoleBytes], need: &Need) -> Option<Vec<u8>> {
    let role = match need {
        Need::Root { version, .. } => {
            // Root files are served by version.
            return roles
                .iter()
                .filter(|r| r.role == MetadataRole::Root)
                .find(|r| {
                    RawSigned::from_slice("root", &r.json)
                        .ok()
                        .and_then(|raw| raw.signed.get("version").and_then(|v| v.as_u64()))
                        == Some(*version)
                })
                .map(|r| r.json.clone());
        }
        Need::Timestamp { .. } => MetadataRole::Timestamp,
        Need::Snapshot { .. } => MetadataRole::Snapshot,
        Need::Targets { role, .. } if role == "targets" => MetadataRole::Targets,
        Need::Targets { role, .. } => MetadataRole::Delegated(role.clone()),
    };
    role_bytes(roles, &role)
        .filter(|b| b.len() as u64 <= need.max_length())
        .map(<[u8]>::to_vec)
}

impl<SD: TrustStore, SI: TrustStore> MetadataVerifier for UptaneFull<SD, SI> {
    fn level(&self) -> VerificationLevel {
        VerificationLevel::Full
    }

    fn verify(
        &mut self,
        metadata: &UpdateMetadata,
        ecu: &EcuIdentity,
        now_ms: u64,
    ) -> Result<DirectedTarget, Failure> {
        if let Some(me) = self.inner.vehicle_mut().ecus.get_mut(&ecu.serial) {
            me.installed_release_counter = ecu.installed_release_counter;
        } else {
            return Err(fail(
                ErrorClass::UpdateIncapable,
                FailureCode::NotDirected,
                "this ECU is not in the verifier's vehicle",
            ));
        }
        let targets = self
            .inner
            .verify_with(unix(now_ms), |kind, need| {
                Ok::<_, core::convert::Infallible>(match kind {
                    RepoKind::Director => serve(&metadata.director, need),
                    RepoKind::Image => serve(&metadata.image, need),
                })
            })
            .map_err(|e| classify(&e))?;
        let t = targets
            .into_iter()
            .find(|t| t.ecu == ecu.serial)
            .ok_or_else(|| {
                fail(
                    ErrorClass::UpdateIncapable,
                    FailureCode::NotDirected,
                    format!("the Director has no target for ECU {}", ecu.serial),
                )
            })?;
        let director_targets =
            role_bytes(&metadata.director, &MetadataRole::Targets).ok_or_else(|| {
                fail(
                    ErrorClass::UpdateIncapable,
                    FailureCode::MetadataInvalid,
                    "no Director targets",
                )
            })?;
        directed_from_uptane(&t, expires_ms(director_targets)?)
    }
}

/// Signs Uptane ECU version reports (canonical-JSON signed, as
/// `esync_uptane::manifest::EcuVersionReport`) with the ECU's key.
pub struct UptaneReporter {
    key: esync_uptane::PrivateKey,
    serial: esync_proto::id::EcuSerial,
}

impl UptaneReporter {
    /// A reporter for ECU `serial` signing with `key`.
    pub fn new(key: esync_uptane::PrivateKey, serial: esync_proto::id::EcuSerial) -> Self {
        UptaneReporter { key, serial }
    }
}

impl crate::VersionReporter for UptaneReporter {
    fn sign_report(
        &mut self,
        installed: &esync_proto::message::InstalledImage,
        target_name: Option<&str>,
        nonce: [u8; 16],
        attacks_detected: &str,
        now_ms: u64,
    ) -> Option<Vec<u8>> {
        use esync_uptane::manifest::{EcuVersionReport, ReportedImage};
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let report = EcuVersionReport {
            ecu_serial: self.serial.clone(),
            installed_image: ReportedImage::from_installed(
                installed,
                target_name.map_or_else(|| installed.version.to_string(), str::to_string),
            ),
            release_counter: installed.release_counter.0,
            nonce: hex(&nonce),
            attacks_detected: attacks_detected
                .chars()
                .take(esync_uptane::manifest::MAX_ATTACK_LEN)
                .collect(),
            timestamp: unix(now_ms),
        };
        report.sign(&self.key).ok()?.to_bytes().ok()
    }
}
