//! Uptane on top of TUF: Director and Image repositories, full verification
//! (the Client, Uptane 2.1.0 section 5.4.4.2) and partial verification (the
//! Agents, section 5.4.4.1).
//!
//! # Field names in `custom`
//!
//! Director targets entries (one per ECU to update, in the per-vehicle
//! Director targets role):
//!
//! | field | type | meaning |
//! | --- | --- | --- |
//! | `custom.ecu_identifier` | string ([`EcuSerial`]) | the ECU that must install this image |
//! | `custom.hardware_id` | string ([`HardwareId`]) | hardware id of that ECU |
//! | `custom.release_counter` | integer | anti-rollback counter of the image |
//! | `custom.vin` | string ([`Vin`]) | the vehicle these targets are for (stops replay to another vehicle) |
//!
//! Image repository targets entries:
//!
//! | field | type | meaning |
//! | --- | --- | --- |
//! | `custom.hardwareIds` | array of strings | hardware ids the image is built for |
//! | `custom.release_counter` | integer (absent = 0) | anti-rollback counter; must equal the Director's |
//!
//! Any other `custom` field (e.g. `custom.esync`, owned by esync-package) is
//! kept verbatim and handed back in [`DirectorTarget`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;

use esync_proto::id::{EcuSerial, HardwareId, ReleaseCounter, Vin};
use serde_json::{Map, Value};

use crate::crypto::{RawSigned, SchemeSet};
use crate::error::{Error, Result};
use crate::metadata::{check_target_name, decode_signed, Root, TargetInfo, Targets};
use crate::repo::{Limits, Need, RepoProgress, Repository, Response};
use crate::store::TrustStore;
use crate::time::UnixTime;

/// `custom` field of a Director target naming the ECU.
pub const ECU_IDENTIFIER: &str = "ecu_identifier";
/// `custom` field of a Director target naming the hardware id.
pub const HARDWARE_ID: &str = "hardware_id";
/// `custom` field holding the release counter (Director and Image).
pub const RELEASE_COUNTER: &str = "release_counter";
/// `custom` field of a Director target naming the vehicle.
pub const VIN: &str = "vin";
/// `custom` field of an Image target listing compatible hardware ids.
pub const HARDWARE_IDS: &str = "hardwareIds";

fn merge(extra: Option<Value>, fields: Vec<(&str, Value)>) -> Value {
    let mut m = match extra {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for (k, v) in fields {
        m.insert(k.to_string(), v);
    }
    Value::Object(m)
}

/// `custom` of a Director target; fields of `extra` (an object) are kept.
pub fn director_custom(
    vin: &Vin,
    ecu: &EcuSerial,
    hardware_id: &HardwareId,
    release_counter: ReleaseCounter,
    extra: Option<Value>,
) -> Value {
    merge(
        extra,
        vec![
            (VIN, Value::from(vin.as_str())),
            (ECU_IDENTIFIER, Value::from(ecu.as_str())),
            (HARDWARE_ID, Value::from(hardware_id.as_str())),
            (RELEASE_COUNTER, Value::from(release_counter.0)),
        ],
    )
}

/// `custom` of an Image repository target; fields of `extra` are kept.
pub fn image_custom(
    hardware_ids: &[HardwareId],
    release_counter: ReleaseCounter,
    extra: Option<Value>,
) -> Value {
    let ids: Vec<Value> = hardware_ids
        .iter()
        .map(|h| Value::from(h.as_str()))
        .collect();
    merge(
        extra,
        vec![
            (HARDWARE_IDS, Value::Array(ids)),
            (RELEASE_COUNTER, Value::from(release_counter.0)),
        ],
    )
}

/// One ECU of the vehicle, as the Client knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcuInfo {
    /// Its hardware id.
    pub hardware_id: HardwareId,
    /// Release counter of the installed image.
    pub installed_release_counter: ReleaseCounter,
}

/// The vehicle a Client verifies for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vehicle {
    /// Its VIN.
    pub vin: Vin,
    /// Its ECUs.
    pub ecus: BTreeMap<EcuSerial, EcuInfo>,
}

/// A Director target that passed verification.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectorTarget {
    /// Target (image) name.
    pub name: String,
    /// ECU that installs it.
    pub ecu: EcuSerial,
    /// Hardware id.
    pub hardware_id: HardwareId,
    /// Release counter.
    pub release_counter: ReleaseCounter,
    /// The Director's entry (length, hashes, custom).
    pub info: TargetInfo,
    /// `custom` of the Image repository's entry (after full verification).
    pub image_custom: Option<Value>,
}

fn bad_custom(target: &str, reason: impl Display) -> Error {
    Error::TargetCustom {
        target: target.to_string(),
        reason: reason.to_string(),
    }
}

fn image_mismatch(target: &str, reason: String) -> Error {
    Error::ImageMismatch {
        target: target.to_string(),
        reason,
    }
}

fn str_field<'a>(name: &str, custom: &'a Value, field: &str) -> Result<&'a str> {
    custom
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| bad_custom(name, format!("custom.{field} missing or not a string")))
}

/// Decodes and checks the Director targets role for `vin`: no delegations,
/// names safe, every entry for this vehicle, at most one entry per ECU.
/// Returns the entries, unchecked against the vehicle's ECUs.
pub fn director_entries(targets: &Targets, vin: &Vin) -> Result<Vec<DirectorTarget>> {
    if targets
        .delegations
        .as_ref()
        .is_some_and(|d| !d.roles.is_empty())
    {
        return Err(Error::DirectorDelegates);
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (name, info) in &targets.targets {
        check_target_name(name)?;
        let custom = info
            .custom
            .as_ref()
            .ok_or_else(|| bad_custom(name, "no custom"))?;
        let target_vin =
            Vin::new(str_field(name, custom, VIN)?).map_err(|e| bad_custom(name, e))?;
        if &target_vin != vin {
            return Err(Error::NotForVehicle {
                target: name.clone(),
                vin: target_vin.to_string(),
                expected: vin.to_string(),
            });
        }
        let ecu = EcuSerial::new(str_field(name, custom, ECU_IDENTIFIER)?)
            .map_err(|e| bad_custom(name, e))?;
        let hardware_id = HardwareId::new(str_field(name, custom, HARDWARE_ID)?)
            .map_err(|e| bad_custom(name, e))?;
        let rc = custom
            .get(RELEASE_COUNTER)
            .and_then(Value::as_u64)
            .ok_or_else(|| bad_custom(name, format!("custom.{RELEASE_COUNTER} missing")))?;
        if !seen.insert(ecu.clone()) {
            return Err(Error::DuplicateEcuTarget {
                ecu: ecu.to_string(),
            });
        }
        out.push(DirectorTarget {
            name: name.clone(),
            ecu,
            hardware_id,
            release_counter: ReleaseCounter(rc),
            info: info.clone(),
            image_custom: None,
        });
    }
    Ok(out)
}

fn check_for_ecu(
    t: &DirectorTarget,
    hardware_id: &HardwareId,
    installed: ReleaseCounter,
) -> Result<()> {
    if &t.hardware_id != hardware_id {
        return Err(Error::HardwareMismatch {
            target: t.name.clone(),
            target_hardware: t.hardware_id.to_string(),
            ecu: t.ecu.to_string(),
            ecu_hardware: hardware_id.to_string(),
        });
    }
    if t.release_counter < installed {
        return Err(Error::ReleaseCounterRollback {
            target: t.name.clone(),
            offered: t.release_counter.0,
            installed: installed.0,
        });
    }
    Ok(())
}

/// Director checks of full verification: [`director_entries`], every ECU in
/// the vehicle, hardware id equal to the ECU's, release counter not lower
/// than the installed one.
pub fn check_director_targets(targets: &Targets, vehicle: &Vehicle) -> Result<Vec<DirectorTarget>> {
    let entries = director_entries(targets, &vehicle.vin)?;
    for t in &entries {
        let ecu = vehicle.ecus.get(&t.ecu).ok_or_else(|| Error::UnknownEcu {
            target: t.name.clone(),
            ecu: t.ecu.to_string(),
        })?;
        check_for_ecu(t, &ecu.hardware_id, ecu.installed_release_counter)?;
    }
    Ok(entries)
}

/// Checks a Director target against the Image repository's entry of the same
/// name: same length, every Director hash present and equal, hardware id in
/// `custom.hardwareIds`, release counter equal.
pub fn match_image(directed: &DirectorTarget, image: &TargetInfo) -> Result<()> {
    let n = &directed.name;
    if directed.info.length != image.length {
        return Err(image_mismatch(
            n,
            format!(
                "Director length {} differs from Image length {}",
                directed.info.length, image.length
            ),
        ));
    }
    if directed.info.hashes.is_empty() {
        return Err(image_mismatch(n, "Director lists no hash".into()));
    }
    for (alg, h) in &directed.info.hashes {
        match image.hashes.get(alg) {
            Some(ih) if ih.eq_ignore_ascii_case(h) => {}
            Some(_) => {
                return Err(image_mismatch(
                    n,
                    format!("{alg} differs between Director and Image"),
                ))
            }
            None => return Err(image_mismatch(n, format!("Image lists no {alg} hash"))),
        }
    }
    let custom = image.custom.as_ref();
    let ids = custom
        .and_then(|c| c.get(HARDWARE_IDS))
        .and_then(Value::as_array)
        .ok_or_else(|| image_mismatch(n, format!("Image entry has no custom.{HARDWARE_IDS}")))?;
    if !ids
        .iter()
        .any(|v| v.as_str() == Some(directed.hardware_id.as_str()))
    {
        return Err(image_mismatch(
            n,
            format!("hardware id {} not among the Image's", directed.hardware_id),
        ));
    }
    let image_rc = custom
        .and_then(|c| c.get(RELEASE_COUNTER))
        .map(|v| {
            v.as_u64()
                .ok_or_else(|| image_mismatch(n, "bad Image release counter".into()))
        })
        .transpose()?
        .unwrap_or(0);
    if image_rc != directed.release_counter.0 {
        return Err(image_mismatch(
            n,
            format!(
                "Director release counter {} differs from Image's {image_rc}",
                directed.release_counter
            ),
        ));
    }
    Ok(())
}

/// Which repository a [`FullProgress::Need`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RepoKind {
    /// The per-vehicle Director repository.
    Director,
    /// The Image repository.
    Image,
}

impl RepoKind {
    /// The repository's name: `"director"` or `"image"` (also the name
    /// the Server stores).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Director => "director",
            Self::Image => "image",
        }
    }
}

/// Where a full verification stands.
#[derive(Debug, Clone, PartialEq)]
pub enum FullProgress {
    /// Fetch this file from that repository and call [`FullVerifier::provide`].
    Need(RepoKind, Need),
    /// Verified: what each ECU must install (empty: nothing to do).
    Done(Vec<DirectorTarget>),
}

enum Stage {
    Idle,
    Director,
    Image(Vec<DirectorTarget>),
    Lookup(Vec<DirectorTarget>, usize),
}

/// Full verification for the Client: both repositories, every Director
/// target matched against the Image repository.
pub struct FullVerifier<SD: TrustStore, SI: TrustStore> {
    director: Repository<SD>,
    image: Repository<SI>,
    vehicle: Vehicle,
    now: UnixTime,
    stage: Stage,
}

impl<SD: TrustStore, SI: TrustStore> FullVerifier<SD, SI> {
    /// Opens both repositories on their stores.
    pub fn open(director: SD, image: SI, vehicle: Vehicle, limits: Limits) -> Result<Self> {
        Ok(FullVerifier {
            director: Repository::open(director, limits)?,
            image: Repository::open(image, limits)?,
            vehicle,
            now: UnixTime(0),
            stage: Stage::Idle,
        })
    }

    /// The vehicle description (update installed release counters here).
    pub fn vehicle_mut(&mut self) -> &mut Vehicle {
        &mut self.vehicle
    }

    /// The Director repository verifier.
    pub fn director(&self) -> &Repository<SD> {
        &self.director
    }

    /// The Image repository verifier.
    pub fn image(&self) -> &Repository<SI> {
        &self.image
    }

    /// Gives both stores back.
    pub fn into_stores(self) -> (SD, SI) {
        (self.director.into_store(), self.image.into_store())
    }

    /// Starts a full verification at time `now`.
    pub fn begin(&mut self, now: UnixTime) -> Result<FullProgress> {
        self.now = now;
        self.stage = Stage::Director;
        let p = self.director.begin_refresh(now);
        self.guard(p)
    }

    /// Hands in the answer to the last need.
    pub fn provide(&mut self, response: Response<'_>) -> Result<FullProgress> {
        let p = match self.stage {
            Stage::Idle => Err(Error::State("no verification in progress")),
            Stage::Director => self.director.provide(response),
            Stage::Image(_) | Stage::Lookup(..) => self.image.provide(response),
        };
        self.guard(p)
    }

    /// Runs a full verification with `fetch`.
    pub fn verify_with<E: Display>(
        &mut self,
        now: UnixTime,
        mut fetch: impl FnMut(RepoKind, &Need) -> Result<Option<Vec<u8>>, E>,
    ) -> Result<Vec<DirectorTarget>> {
        let mut p = self.begin(now)?;
        loop {
            match p {
                FullProgress::Done(t) => return Ok(t),
                FullProgress::Need(kind, need) => {
                    let got = fetch(kind, &need).map_err(|e| {
                        self.stage = Stage::Idle;
                        Error::Fetch {
                            file: need.path(),
                            reason: e.to_string(),
                        }
                    })?;
                    p = self.provide(match &got {
                        Some(b) => Response::Bytes(b),
                        None => Response::NotFound,
                    })?;
                }
            }
        }
    }

    fn guard(&mut self, p: Result<RepoProgress>) -> Result<FullProgress> {
        let r = p.and_then(|p| self.handle(p));
        if r.is_err() {
            self.stage = Stage::Idle;
        }
        r
    }

    fn handle(&mut self, mut p: RepoProgress) -> Result<FullProgress> {
        loop {
            let stage = std::mem::replace(&mut self.stage, Stage::Idle);
            match (stage, p) {
                (s @ Stage::Director, RepoProgress::Need(n)) => {
                    self.stage = s;
                    return Ok(FullProgress::Need(RepoKind::Director, n));
                }
                (s @ (Stage::Image(_) | Stage::Lookup(..)), RepoProgress::Need(n)) => {
                    self.stage = s;
                    return Ok(FullProgress::Need(RepoKind::Image, n));
                }
                (Stage::Director, RepoProgress::RefreshDone) => {
                    let top = self
                        .director
                        .top_targets()
                        .ok_or(Error::State("director targets missing"))?;
                    let directed = check_director_targets(top, &self.vehicle)?;
                    if directed.is_empty() {
                        return Ok(FullProgress::Done(directed));
                    }
                    self.stage = Stage::Image(directed);
                    p = self.image.begin_refresh(self.now)?;
                }
                (Stage::Image(directed), RepoProgress::RefreshDone) => {
                    p = self.image.begin_lookup(&directed[0].name)?;
                    self.stage = Stage::Lookup(directed, 0);
                }
                (Stage::Lookup(mut directed, i), RepoProgress::Found(info)) => {
                    match_image(&directed[i], &info)?;
                    directed[i].image_custom = info.custom;
                    let next = i + 1;
                    if next == directed.len() {
                        return Ok(FullProgress::Done(directed));
                    }
                    p = self.image.begin_lookup(&directed[next].name)?;
                    self.stage = Stage::Lookup(directed, next);
                }
                (Stage::Lookup(directed, i), RepoProgress::NotFound) => {
                    return Err(Error::NotInImageRepository {
                        target: directed[i].name.clone(),
                    });
                }
                _ => return Err(Error::State("unexpected verifier progress")),
            }
        }
    }
}

/// Partial verification for an Agent: the Director targets role only,
/// checked against the Director root pinned at provisioning (stored as
/// `root` in the trust store).
pub struct PartialVerifier<S: TrustStore> {
    store: S,
    root: Root,
    last_version: Option<u64>,
    last_time: Option<UnixTime>,
    vin: Vin,
    ecu: EcuSerial,
    hardware_id: HardwareId,
    max_size: u64,
    schemes: SchemeSet,
}

impl<S: TrustStore> PartialVerifier<S> {
    /// Opens on `store` (pinned Director root, last accepted targets, last
    /// time) for the Agent `ecu` of hardware `hardware_id` in vehicle `vin`.
    /// Only keys of a scheme in `limits.schemes` count toward the Director's
    /// thresholds (an Agent with little CPU may be ed25519-only).
    pub fn open(
        mut store: S,
        vin: Vin,
        ecu: EcuSerial,
        hardware_id: HardwareId,
        limits: Limits,
    ) -> Result<Self> {
        let state = store.load().map_err(Error::Store)?;
        let raw = RawSigned::from_slice("root", &state.root)?;
        let root: Root = decode_signed("root", &raw)?;
        root.verify_role("root", &raw, limits.schemes)?;
        let last_version = state
            .roles
            .get("targets")
            .and_then(|b| RawSigned::from_slice("targets", b).ok())
            .filter(|raw| root.verify_role("targets", raw, limits.schemes).is_ok())
            .and_then(|raw| decode_signed::<Targets>("targets", &raw).ok())
            .map(|t| t.version);
        Ok(PartialVerifier {
            store,
            root,
            last_version,
            last_time: state.last_time,
            vin,
            ecu,
            hardware_id,
            max_size: limits.max_targets_size,
            schemes: limits.schemes,
        })
    }

    /// Rotates the pinned Director root to the next version: `bytes` must be
    /// root version N+1 signed by a threshold of root N's keys and of its
    /// own. Returns the new version.
    pub fn update_root(&mut self, bytes: &[u8]) -> Result<u64> {
        if bytes.len() as u64 > self.max_size {
            return Err(Error::TooLong {
                what: "director root".into(),
                limit: self.max_size,
            });
        }
        let raw = RawSigned::from_slice("root", bytes)?;
        let new: Root = decode_signed("root", &raw)?;
        self.root.verify_role("root", &raw, self.schemes)?;
        new.verify_role("root", &raw, self.schemes)?;
        let expected = self.root.version.saturating_add(1);
        if new.version != expected {
            return Err(Error::VersionMismatch {
                role: "root".into(),
                listed_by: "root rotation chain",
                expected,
                got: new.version,
            });
        }
        self.store.store_role("root", bytes).map_err(Error::Store)?;
        self.root = new;
        Ok(self.root.version)
    }

    /// Version of the pinned (trusted) Director root.
    pub fn root_version(&self) -> u64 {
        self.root.version
    }

    /// Version of the last accepted Director targets.
    pub fn last_version(&self) -> Option<u64> {
        self.last_version
    }

    /// Gives the store back.
    pub fn into_store(self) -> S {
        self.store
    }

    /// Verifies Director targets bytes at time `now` for this Agent whose
    /// installed image has release counter `installed`. Returns this ECU's
    /// target, or `None` if the Director has nothing for it. Accepted
    /// metadata is persisted, so its version can never go back.
    pub fn verify(
        &mut self,
        bytes: &[u8],
        now: UnixTime,
        installed: ReleaseCounter,
    ) -> Result<Option<DirectorTarget>> {
        if let Some(last) = self.last_time {
            if now < last {
                return Err(Error::TimeWentBackwards {
                    now: now.to_rfc3339(),
                    last: last.to_rfc3339(),
                });
            }
        }
        self.store.store_time(now).map_err(Error::Store)?;
        self.last_time = Some(now);
        if bytes.len() as u64 > self.max_size {
            return Err(Error::TooLong {
                what: "director targets".into(),
                limit: self.max_size,
            });
        }
        let raw = RawSigned::from_slice("targets", bytes)?;
        let targets: Targets = decode_signed("targets", &raw)?;
        self.root.verify_role("targets", &raw, self.schemes)?;
        if let Some(last) = self.last_version {
            if targets.version < last {
                return Err(Error::Rollback {
                    role: "director targets".into(),
                    trusted: last,
                    new: targets.version,
                });
            }
        }
        if now >= targets.expires {
            return Err(Error::Expired {
                role: "director targets".into(),
                expires: targets.expires.to_rfc3339(),
                now: now.to_rfc3339(),
            });
        }
        let entries = director_entries(&targets, &self.vin)?;
        let mine = entries.into_iter().find(|t| t.ecu == self.ecu);
        if let Some(t) = &mine {
            check_for_ecu(t, &self.hardware_id, installed)?;
        }
        self.store
            .store_role("targets", bytes)
            .map_err(Error::Store)?;
        self.last_version = Some(targets.version);
        Ok(mine)
    }
}
