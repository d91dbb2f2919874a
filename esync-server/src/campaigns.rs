//! Campaigns: one package offered to a snapshot of matching vehicles in
//! waves, with success and failure thresholds, pause, resume, abort,
//! approval and a maintenance window (the contract is
//! `_notes/campaign-api.md`; the admin routes are in [`crate::admin`]).
//!
//! All campaign state lives in the database ([`Store`]); a node keeps none
//! in memory, so several nodes on one PostgreSQL are one Server:
//!
//! * **Offers happen at check-in** ([`offer`]): one indexed query
//!   ([`Store::due_offers`]) finds pending members of the vehicle in an open
//!   wave of an offering campaign; [`Store::claim_offer`] moves one
//!   pending→offered by a conditional update and assigns the package in the
//!   same transaction (of concurrent nodes at most one wins), so the
//!   Director serves it unchanged. A pause or abort committed on any node
//!   stops every node's new offers at once (an offer statement already
//!   running when it commits may still complete).
//! * **Results** ([`on_result`]): the vehicle's `ReportEvent::Result` moves
//!   the offered member to its final state once (conditional update), then
//!   [`evaluate`] decides, under the campaign's row lock, whether the
//!   campaign pauses by itself, opens the next wave, waits for approval or
//!   completes.
//! * **Rollback truth**: a package a vehicle did not install is blocked for
//!   it ([`Store::record_result`], [`Store::block_package`]): the Director's
//!   [`Store::assignments`] leave it out and campaigns do not offer it until
//!   an operator clears the block ([`Store::clear_rollback_block`]) or a
//!   campaign says `reoffer_rolled_back`.
//!
//! # Several nodes on one PostgreSQL
//!
//! The invariants and bounds that make two or more `esync-server serve`
//! processes on one database one Server (tested with real processes and
//! the fleet simulator in `esync-sim/tests/two_nodes.rs`):
//!
//! * **Offered once**: a member goes pending→offered only through
//!   [`Store::claim_offer`]'s conditional update; whichever node a vehicle
//!   checks in with (or fails over to), it is offered once per campaign.
//! * **Counted once**: a result moves the offered member to its final
//!   state by a conditional update, and [`evaluate`] runs in the same
//!   transaction under the campaign's row lock, so every result is
//!   evaluated once, in commit order, on whichever node it arrived. A node
//!   killed after storing a report but before counting it loses nothing:
//!   the vehicle's retry (same report id and body, any node) counts it.
//! * **Pause and abort: immediate**. A check-in that starts after the pause
//!   (or abort) committed, on any node, makes no offer: the claim re-reads
//!   the campaign's state. An offer whose claim statement was already
//!   running may still complete; its `offered_ms` precedes the end of the
//!   pause request.
//! * **Resume, start, approve: within [`OFFER_GATE_RECHECK_MS`]** (1 s) on
//!   the other nodes. A node that last read "no campaign is offering"
//!   ([`OfferGate`]) trusts it that long, so the first check-in at least
//!   that long after the commit makes the offers; on the node that took the
//!   action, at once. While some campaign offers, wave openings are read at
//!   the next check-in.
//! * **Crash**: every change is one transaction (claim, count and evaluate,
//!   transitions, a manifest with its installed images), so a node killed
//!   with SIGKILL leaves no half-made offer or result; its vehicles carry on
//!   through another node.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;

use crate::store::{
    CampaignRecord, CampaignState, DbError, MemberState, ResultCounted, Store, VehicleRecord,
    WaveCounts,
};

/// Most waves in a campaign.
pub const MAX_WAVES: usize = 100;
/// Most explicit VINs in a target.
pub const MAX_TARGET_VINS: usize = 10_000;
/// Most entries in each other target list.
pub const MAX_TARGET_LIST: usize = 1000;
/// Vehicles read per page while matching.
const MATCH_PAGE: u32 = 1000;

// ---------------------------------------------------------------- spec

/// Which vehicles a campaign targets. Empty lists are no constraint; the
/// given constraints are AND-ed; inside one list any entry matches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Vehicle models.
    #[serde(default)]
    pub models: Vec<String>,
    /// Regions.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Hardware ids: the vehicle lists one of them.
    #[serde(default)]
    pub hardware_ids: Vec<String>,
    /// Installed versions: one of the vehicle's ECUs of that hardware id
    /// runs that version, by its last verified manifest.
    #[serde(default)]
    pub installed: Vec<InstalledVersion>,
    /// Explicit VINs.
    #[serde(default)]
    pub vins: Vec<String>,
}

/// A hardware id and the version its ECU runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstalledVersion {
    /// Hardware id.
    pub hardware_id: String,
    /// Version (the Image repository's `version` of the running image).
    pub version: String,
}

/// The size of one wave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaveSpec {
    /// A percentage (1..=100) of the matched vehicles, rounded up.
    Percent(u32),
    /// A number of vehicles (at least 1).
    Count(u64),
}

/// How the next wave opens once the current one is successful.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    /// By itself.
    #[default]
    Auto,
    /// On an operator's `approve`.
    Manual,
}

/// Daily UTC window in which offers are made (`HH:MM`, end exclusive; a
/// start after the end wraps past midnight; equal means all day).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    /// Start, `HH:MM` UTC.
    pub start_utc: String,
    /// End, `HH:MM` UTC.
    pub end_utc: String,
}

fn minutes(field: &str, s: &str) -> Result<u32, CampaignError> {
    let bad = || CampaignError::Invalid(format!("{field}: {s:?} is not HH:MM (00:00..23:59)"));
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl MaintenanceWindow {
    /// Whether wall time `now_ms` (Unix milliseconds) is inside.
    pub fn contains(&self, now_ms: i64) -> Result<bool, CampaignError> {
        let start = minutes("maintenance_window.start_utc", &self.start_utc)?;
        let end = minutes("maintenance_window.end_utc", &self.end_utc)?;
        let m = u32::try_from((now_ms / 60_000).rem_euclid(1440)).unwrap_or(0);
        Ok(match start.cmp(&end) {
            std::cmp::Ordering::Less => start <= m && m < end,
            std::cmp::Ordering::Greater => m >= start || m < end,
            std::cmp::Ordering::Equal => true,
        })
    }
}

fn default_success() -> u32 {
    100
}

/// A campaign as an operator defines it (`POST /admin/v1/campaigns`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    /// Name (free text).
    pub name: String,
    /// Package id offered.
    pub package: String,
    /// Which vehicles.
    #[serde(default)]
    pub target: Target,
    /// Wave sizes, in order; vehicles left after the last join it.
    pub waves: Vec<WaveSpec>,
    /// A wave is successful when at least this percentage (1..=100) of it
    /// succeeded (rounded up); default 100.
    #[serde(default = "default_success")]
    pub success_threshold_percent: u32,
    /// Pause by itself when the current wave's failures reach this
    /// percentage (1..=100) of the wave.
    #[serde(default)]
    pub failure_threshold_percent: Option<u32>,
    /// Pause by itself when the current wave's failures reach this count.
    #[serde(default)]
    pub failure_threshold_count: Option<u64>,
    /// How the next wave opens.
    #[serde(default)]
    pub approval: Approval,
    /// When offers are made (none: any time).
    #[serde(default)]
    pub maintenance_window: Option<MaintenanceWindow>,
    /// Offer to vehicles that did not install this package before (their
    /// block is cleared by the offer).
    #[serde(default)]
    pub reoffer_rolled_back: bool,
}

fn text(field: &str, s: &str, empty_ok: bool) -> Result<(), CampaignError> {
    if (!empty_ok && s.is_empty()) || s.len() > 128 || s.chars().any(char::is_control) {
        return Err(CampaignError::Invalid(format!(
            "{field}: 1 to 128 bytes, no control characters"
        )));
    }
    Ok(())
}

impl CampaignSpec {
    /// Checks every field (before anything is stored).
    pub fn validate(&self) -> Result<(), CampaignError> {
        let bad = |m: String| Err(CampaignError::Invalid(m));
        text("name", &self.name, false)?;
        text("package", &self.package, false)?;
        if self.waves.is_empty() || self.waves.len() > MAX_WAVES {
            return bad(format!("waves: 1 to {MAX_WAVES} entries"));
        }
        for w in &self.waves {
            match *w {
                WaveSpec::Percent(p) if !(1..=100).contains(&p) => {
                    return bad(format!("waves: percent {p} not in 1..=100"))
                }
                WaveSpec::Count(0) => return bad("waves: count 0".into()),
                _ => {}
            }
        }
        if !(1..=100).contains(&self.success_threshold_percent) {
            return bad("success_threshold_percent: not in 1..=100".into());
        }
        if self
            .failure_threshold_percent
            .is_some_and(|p| !(1..=100).contains(&p))
        {
            return bad("failure_threshold_percent: not in 1..=100".into());
        }
        if self.failure_threshold_count == Some(0) {
            return bad("failure_threshold_count: 0".into());
        }
        let t = &self.target;
        if t.vins.len() > MAX_TARGET_VINS {
            return bad(format!("target.vins: at most {MAX_TARGET_VINS}"));
        }
        for (field, list) in [
            ("target.models", &t.models),
            ("target.regions", &t.regions),
            ("target.hardware_ids", &t.hardware_ids),
        ] {
            if list.len() > MAX_TARGET_LIST {
                return bad(format!("{field}: at most {MAX_TARGET_LIST}"));
            }
            for s in list {
                text(field, s, false)?;
            }
        }
        if t.installed.len() > MAX_TARGET_LIST {
            return bad(format!("target.installed: at most {MAX_TARGET_LIST}"));
        }
        for i in &t.installed {
            text("target.installed.hardware_id", &i.hardware_id, false)?;
            text("target.installed.version", &i.version, false)?;
        }
        for v in &t.vins {
            esync_proto::id::Vin::new(v.clone())
                .map_err(|e| CampaignError::Invalid(format!("target.vins: {e}")))?;
        }
        if let Some(w) = &self.maintenance_window {
            w.contains(0)?;
        }
        Ok(())
    }

    /// Parses a stored spec.
    pub fn from_stored(json: &str) -> Result<Self, DbError> {
        serde_json::from_str(json).map_err(|e| DbError::Corrupt {
            column: "campaigns.spec",
            reason: e.to_string(),
        })
    }

    /// Whether `v` (running `installed`: `(hardware id, version)`) matches
    /// the target (explicit VINs are checked by the caller).
    pub fn matches(&self, v: &VehicleRecord, installed: &[(&str, &str)]) -> bool {
        let t = &self.target;
        let any = |list: &[String], x: &str| list.is_empty() || list.iter().any(|s| s == x);
        any(&t.models, &v.model)
            && any(&t.regions, &v.region)
            && (t.hardware_ids.is_empty()
                || v.hardware_ids.iter().any(|h| t.hardware_ids.contains(h)))
            && (t.installed.is_empty()
                || t.installed.iter().any(|want| {
                    installed
                        .iter()
                        .any(|(h, ver)| *h == want.hardware_id && *ver == want.version)
                }))
    }
}

/// Wave sizes for `matched` vehicles (empty waves dropped).
pub fn wave_sizes(waves: &[WaveSpec], matched: u64) -> Vec<u64> {
    let mut left = matched;
    let mut out = Vec::with_capacity(waves.len());
    for w in waves {
        let want = match *w {
            WaveSpec::Percent(p) => (matched * u64::from(p)).div_ceil(100),
            WaveSpec::Count(n) => n,
        };
        let size = want.min(left);
        left -= size;
        out.push(size);
    }
    if let Some(last) = out.last_mut() {
        *last += left;
    }
    out.retain(|&n| n > 0);
    out
}

/// The members of a campaign named `name` with `sizes`: `vins` ordered by
/// SHA-256 of name and VIN (deterministic, spread over the fleet), cut
/// into waves 1, 2, ...
pub fn assign_waves(name: &str, mut vins: Vec<String>, sizes: &[u64]) -> Vec<(String, u32)> {
    let key = |v: &str| -> [u8; 32] {
        Sha256::digest([name.as_bytes(), b"\0", v.as_bytes()].concat()).into()
    };
    vins.sort_by_cached_key(|v| key(v));
    let mut out = Vec::with_capacity(vins.len());
    let mut it = vins.into_iter();
    for (i, &n) in sizes.iter().enumerate() {
        let wave = u32::try_from(i + 1).unwrap_or(u32::MAX);
        for v in it.by_ref().take(usize::try_from(n).unwrap_or(usize::MAX)) {
            out.push((v, wave));
        }
    }
    out
}

/// The VINs matching `spec` now, by VIN, leaving out vehicles blocked for
/// its package unless it re-offers. Reads the fleet a page at a time.
pub async fn matching(store: &dyn Store, spec: &CampaignSpec) -> Result<Vec<String>, DbError> {
    let blocked: std::collections::BTreeSet<String> = if spec.reoffer_rolled_back {
        Default::default()
    } else {
        store
            .rollback_blocks(None, Some(&spec.package), u32::MAX)
            .await?
            .into_iter()
            .map(|b| b.vin)
            .collect()
    };
    let needs_installed = !spec.target.installed.is_empty();
    let mut out = Vec::new();
    if !spec.target.vins.is_empty() {
        let mut vins = spec.target.vins.clone();
        vins.sort();
        vins.dedup();
        for vin in vins {
            let Some(v) = store.vehicle(&vin).await? else {
                continue;
            };
            let installed = if needs_installed {
                store.installed(&vin).await?
            } else {
                Vec::new()
            };
            let pairs: Vec<(&str, &str)> = installed
                .iter()
                .map(|i| (i.hardware_id.as_str(), i.version.as_str()))
                .collect();
            if !blocked.contains(&vin) && spec.matches(&v, &pairs) {
                out.push(vin);
            }
        }
        return Ok(out);
    }
    let mut after = String::new();
    loop {
        let page = store.vehicles(Some(&after), MATCH_PAGE).await?;
        let Some(last) = page.last().map(|v| v.vin.clone()) else {
            break;
        };
        let installed = if needs_installed {
            store.installed_range(&after, &last).await?
        } else {
            Vec::new()
        };
        for v in &page {
            let pairs: Vec<(&str, &str)> = installed
                .iter()
                .filter(|(vin, _)| *vin == v.vin)
                .map(|(_, i)| (i.hardware_id.as_str(), i.version.as_str()))
                .collect();
            if !blocked.contains(&v.vin) && spec.matches(v, &pairs) {
                out.push(v.vin.clone());
            }
        }
        after = last;
        if page.len() < MATCH_PAGE as usize {
            break;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- engine

/// A change of a campaign decided by [`evaluate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// New state.
    pub state: CampaignState,
    /// New highest open wave.
    pub current_wave: u32,
    /// Why (paused, waiting).
    pub reason: Option<String>,
    /// History event name.
    pub event: &'static str,
}

fn is_failure(s: MemberState) -> bool {
    matches!(s, MemberState::Failed | MemberState::RolledBack)
}

/// Decides what campaign `rec` does now that its current wave counts
/// `current` (and some member of any wave is pending or offered when
/// `unfinished`); `result` is the member result just counted (wave and
/// state), if any. Called by the store under the campaign's row lock, so
/// every result is evaluated once, in order, whichever node counted it.
///
/// * a failure in the current wave that makes its failures reach the
///   failure threshold pauses the campaign by itself;
/// * a current wave whose successes reach the success threshold opens the
///   next wave (auto) or waits for approval (manual);
/// * the last wave open and nothing unfinished: completed;
/// * the current wave finished below the success threshold: paused.
pub fn evaluate(
    rec: &CampaignRecord,
    current: &WaveCounts,
    unfinished: bool,
    result: Option<(u32, MemberState)>,
) -> Result<Option<Transition>, DbError> {
    if !rec.state.offers() {
        return Ok(None);
    }
    let spec = CampaignSpec::from_stored(&rec.spec_json)?;
    let wave = rec.current_wave;
    let size = current.size;
    let failures = current.failed + current.rolled_back;
    let paused = |reason: String| Transition {
        state: CampaignState::Paused,
        current_wave: wave,
        reason: Some(reason),
        event: "paused",
    };
    if let Some((w, s)) = result {
        let crossed = spec.failure_threshold_count.is_some_and(|c| failures >= c)
            || spec
                .failure_threshold_percent
                .is_some_and(|p| failures * 100 >= u64::from(p) * size);
        if w == wave && is_failure(s) && crossed {
            return Ok(Some(paused(format!(
                "wave {wave}: {failures} of {size} vehicles failed, reaching the failure threshold"
            ))));
        }
    }
    let needed = (size * u64::from(spec.success_threshold_percent)).div_ceil(100);
    let successful = size > 0 && current.succeeded >= needed;
    if wave < rec.wave_count && successful {
        if rec.state == CampaignState::WaitingApproval {
            return Ok(None);
        }
        return Ok(Some(match spec.approval {
            Approval::Auto => Transition {
                state: CampaignState::Running,
                current_wave: wave + 1,
                reason: None,
                event: "wave_opened",
            },
            Approval::Manual => Transition {
                state: CampaignState::WaitingApproval,
                current_wave: wave,
                reason: Some(format!(
                    "wave {wave} reached its success threshold; wave {} waits for approval",
                    wave + 1
                )),
                event: "waiting_approval",
            },
        }));
    }
    if wave >= rec.wave_count && !unfinished {
        return Ok(Some(Transition {
            state: CampaignState::Completed,
            current_wave: wave,
            reason: None,
            event: "completed",
        }));
    }
    if current.unfinished() == 0 && !successful {
        return Ok(Some(paused(format!(
            "wave {wave} finished below the success threshold: {} of {size} succeeded, {needed} needed",
            current.succeeded
        ))));
    }
    Ok(None)
}

/// How long a node trusts "no campaign is offering" before asking the
/// database again (ms): a campaign started through another node makes its
/// first offers here within this bound; one started through this node at
/// once ([`OfferGate::changed`]). Pause, abort and every state of a running
/// campaign are read from the database at each check-in, never from here.
pub const OFFER_GATE_RECHECK_MS: i64 = 1000;

/// A node's cache of whether any campaign is offering (running or waiting
/// for approval), so that a check-in while no campaign runs costs no
/// database read. Held by the [`crate::director::Director`], which every
/// listener of a node shares.
#[derive(Debug, Default)]
pub struct OfferGate {
    /// When it was last read and what it said.
    last: std::sync::Mutex<Option<(i64, bool)>>,
}

impl OfferGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(i64, bool)>> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets what was read (call after a campaign changed on this node).
    pub fn changed(&self) {
        *self.lock() = None;
    }

    /// Whether some campaign may offer at `now_ms`: the cached answer if it
    /// is younger than [`OFFER_GATE_RECHECK_MS`], else the database's.
    pub async fn open(&self, store: &dyn Store, now_ms: i64) -> Result<bool, DbError> {
        if let Some((at, any)) = *self.lock() {
            if (at..at + OFFER_GATE_RECHECK_MS).contains(&now_ms) {
                return Ok(any);
            }
        }
        let any = store.offering_campaign_exists().await?;
        *self.lock() = Some((now_ms, any));
        Ok(any)
    }
}

/// Makes the offers due to `vin` at its check-in (at most one per
/// campaign); returns the campaigns that offered. Nothing due costs one
/// indexed query.
pub async fn offer(store: &dyn Store, vin: &str, now_ms: i64) -> Result<Vec<i64>, DbError> {
    let mut out = Vec::new();
    for c in store.due_offers(vin).await? {
        let spec = CampaignSpec::from_stored(&c.spec_json)?;
        if let Some(w) = &spec.maintenance_window {
            let inside = w.contains(now_ms).map_err(|e| DbError::Corrupt {
                column: "campaigns.spec",
                reason: e.to_string(),
            })?;
            if !inside {
                continue;
            }
        }
        if c.blocked && !spec.reoffer_rolled_back {
            continue;
        }
        if store
            .claim_offer(c.campaign_id, vin, &c.package_id, c.blocked, now_ms)
            .await?
        {
            out.push(c.campaign_id);
        }
    }
    Ok(out)
}

/// The member state a package outcome gives.
pub fn member_state(outcome: esync_api::body::PackageOutcome) -> MemberState {
    use esync_api::body::PackageOutcome;
    match outcome {
        PackageOutcome::Installed => MemberState::Succeeded,
        PackageOutcome::RolledBack => MemberState::RolledBack,
        _ => MemberState::Failed,
    }
}

fn outcome_name(outcome: esync_api::body::PackageOutcome) -> String {
    serde_json::to_value(outcome)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// Records the final result of `package` on `vin` (from its report;
/// `new_report` when the report was stored now, not a retry): counted in
/// its campaigns once, and a package not installed is blocked for the
/// vehicle.
pub async fn on_result(
    store: &dyn Store,
    vin: &str,
    package: &str,
    outcome: esync_api::body::PackageOutcome,
    new_report: bool,
    now_ms: i64,
) -> Result<Vec<ResultCounted>, DbError> {
    let state = member_state(outcome);
    let name = outcome_name(outcome);
    let counted = store
        .record_result(vin, package, state, &name, now_ms)
        .await?;
    if state != MemberState::Succeeded && counted.is_empty() && new_report {
        // A plain assignment (no campaign): blocked all the same.
        store.block_package(vin, package, &name, now_ms).await?;
    }
    Ok(counted)
}

// ---------------------------------------------------------------- operator actions

/// Why a campaign request was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CampaignError {
    /// The spec or a parameter is invalid.
    #[error("{0}")]
    Invalid(String),
    /// No such campaign (or package).
    #[error("{0} not found")]
    NotFound(String),
    /// Not allowed in the campaign's state.
    #[error("{0}")]
    Conflict(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// An operator's action on a campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Snapshot the members, open wave 1.
    Start,
    /// Stop new offers.
    Pause,
    /// Offer again.
    Resume,
    /// Stop for good.
    Abort,
    /// Open the next wave (manual approval).
    Approve,
}

impl Action {
    /// Parses the route's action name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "start" => Self::Start,
            "pause" => Self::Pause,
            "resume" => Self::Resume,
            "abort" => Self::Abort,
            "approve" => Self::Approve,
            _ => return None,
        })
    }

    /// The route's action name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Abort => "abort",
            Self::Approve => "approve",
        }
    }
}

/// Result of a dry run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DryRun {
    /// Vehicles matching now.
    pub matched: u64,
    /// Wave sizes they would get.
    pub wave_sizes: Vec<u64>,
}

/// A created campaign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Created {
    /// Id.
    pub id: i64,
    /// State (`draft`).
    pub state: String,
    /// Vehicles matching now (the members are taken at start).
    pub matched: u64,
}

/// Counts what `spec` would target now; stores nothing.
pub async fn dry_run(store: &dyn Store, spec: &CampaignSpec) -> Result<DryRun, CampaignError> {
    spec.validate()?;
    if store.package(&spec.package).await?.is_none() {
        return Err(CampaignError::NotFound(format!("package {}", spec.package)));
    }
    let matched = matching(store, spec).await?.len() as u64;
    Ok(DryRun {
        matched,
        wave_sizes: wave_sizes(&spec.waves, matched),
    })
}

/// Stores `spec` as a draft campaign.
pub async fn create(
    store: &dyn Store,
    spec: &CampaignSpec,
    now_ms: i64,
) -> Result<Created, CampaignError> {
    let dry = dry_run(store, spec).await?;
    let json = serde_json::to_string(spec).map_err(|e| CampaignError::Invalid(e.to_string()))?;
    let id = store
        .insert_campaign(&spec.name, &spec.package, &json, dry.matched, now_ms)
        .await?;
    Ok(Created {
        id,
        state: CampaignState::Draft.as_str().into(),
        matched: dry.matched,
    })
}

/// Applies `action` to campaign `id`.
pub async fn act(
    store: &dyn Store,
    id: i64,
    action: Action,
    now_ms: i64,
) -> Result<(), CampaignError> {
    let rec = store
        .campaign(id)
        .await?
        .ok_or_else(|| CampaignError::NotFound(format!("campaign {id}")))?;
    use CampaignState as S;
    let done = match action {
        Action::Start => {
            if rec.state != S::Draft {
                false
            } else {
                let spec = CampaignSpec::from_stored(&rec.spec_json)?;
                let vins = matching(store, &spec).await?;
                if vins.is_empty() {
                    return Err(CampaignError::Conflict(format!(
                        "campaign {id}: no vehicle matches now"
                    )));
                }
                let sizes = wave_sizes(&spec.waves, vins.len() as u64);
                let members = assign_waves(&spec.name, vins, &sizes);
                let waves = u32::try_from(sizes.len()).unwrap_or(u32::MAX);
                store.start_campaign(id, &members, waves, now_ms).await?
            }
        }
        Action::Pause => {
            store
                .transition_campaign(
                    id,
                    &[S::Running, S::WaitingApproval],
                    S::Paused,
                    Some("paused by an operator"),
                    false,
                    now_ms,
                )
                .await?
        }
        Action::Resume => {
            store
                .transition_campaign(id, &[S::Paused], S::Running, None, false, now_ms)
                .await?
        }
        Action::Abort => {
            store
                .transition_campaign(
                    id,
                    &[S::Draft, S::Running, S::WaitingApproval, S::Paused],
                    S::Aborted,
                    Some("aborted by an operator"),
                    false,
                    now_ms,
                )
                .await?
        }
        Action::Approve => {
            store
                .transition_campaign(id, &[S::WaitingApproval], S::Running, None, true, now_ms)
                .await?
        }
    };
    if done {
        Ok(())
    } else {
        let now = store.campaign(id).await?.map_or(rec.state, |r| r.state);
        Err(CampaignError::Conflict(format!(
            "campaign {id} is {}: {} is not possible",
            now.as_str(),
            action.as_str()
        )))
    }
}

// ---------------------------------------------------------------- views

/// Member counts of one wave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WaveView {
    /// Wave (1-based).
    pub wave: u32,
    /// Members.
    pub size: u64,
    /// Not offered yet.
    pub pending: u64,
    /// Offered, no result yet.
    pub offered: u64,
    /// Installed.
    pub succeeded: u64,
    /// Failed or refused.
    pub failed: u64,
    /// Rolled back.
    pub rolled_back: u64,
    /// Aborted before an offer.
    pub aborted: u64,
}

impl From<WaveCounts> for WaveView {
    fn from(c: WaveCounts) -> Self {
        Self {
            wave: c.wave,
            size: c.size,
            pending: c.pending,
            offered: c.offered,
            succeeded: c.succeeded,
            failed: c.failed,
            rolled_back: c.rolled_back,
            aborted: c.aborted,
        }
    }
}

/// A campaign as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CampaignView {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Package offered.
    pub package: String,
    /// `draft`, `running`, `waiting_approval`, `paused`, `aborted` or `completed`.
    pub state: String,
    /// Why it is paused or waiting (or was last paused).
    pub reason: Option<String>,
    /// Highest open wave (0 before start).
    pub current_wave: u32,
    /// Number of waves (0 before start).
    pub wave_count: u32,
    /// Vehicles matched (members once started).
    pub matched: u64,
    /// The spec it was created with.
    pub spec: CampaignSpec,
    /// Creation time (Unix ms).
    pub created_ms: i64,
    /// Last change (Unix ms).
    pub updated_ms: i64,
    /// Per-wave counts.
    pub waves: Vec<WaveView>,
    /// The campaign's own history (created, started, paused, wave opened, ...).
    pub history: Vec<HistoryView>,
}

/// One history entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HistoryView {
    /// When (Unix ms).
    pub at_ms: i64,
    /// What.
    pub event: String,
    /// Details.
    pub detail: Option<String>,
}

/// A vehicle in a campaign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    /// VIN.
    pub vin: String,
    /// Its wave.
    pub wave: u32,
    /// `pending`, `offered`, `succeeded`, `failed`, `rolled_back` or `aborted`.
    pub state: String,
    /// When it was offered.
    pub offered_ms: Option<i64>,
    /// When its result arrived.
    pub finished_ms: Option<i64>,
    /// Its history in this campaign, oldest first.
    pub history: Vec<HistoryView>,
}

/// A page of a campaign's vehicles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MembersPage {
    /// Vehicles, by VIN.
    pub vehicles: Vec<MemberView>,
    /// Pass as `after` for the next page (none: this was the last).
    pub next_after: Option<String>,
}

fn history(e: crate::store::CampaignEvent) -> HistoryView {
    HistoryView {
        at_ms: e.at_ms,
        event: e.event,
        detail: e.detail,
    }
}

/// The view of campaign `rec`.
pub async fn view_of(store: &dyn Store, rec: CampaignRecord) -> Result<CampaignView, DbError> {
    let counts = store.wave_counts(rec.id).await?;
    let waves = (1..=rec.wave_count)
        .map(|w| {
            counts
                .iter()
                .find(|c| c.wave == w)
                .copied()
                .unwrap_or(WaveCounts {
                    wave: w,
                    ..Default::default()
                })
                .into()
        })
        .collect();
    let hist = store
        .campaign_history(rec.id, None)
        .await?
        .into_iter()
        .map(history)
        .collect();
    Ok(CampaignView {
        id: rec.id,
        package: rec.package_id,
        state: rec.state.as_str().into(),
        reason: rec.reason,
        current_wave: rec.current_wave,
        wave_count: rec.wave_count,
        matched: rec.matched,
        spec: CampaignSpec::from_stored(&rec.spec_json)?,
        name: rec.name,
        created_ms: rec.created_ms,
        updated_ms: rec.updated_ms,
        waves,
        history: hist,
    })
}

/// The view of campaign `id`.
pub async fn view(store: &dyn Store, id: i64) -> Result<CampaignView, CampaignError> {
    let rec = store
        .campaign(id)
        .await?
        .ok_or_else(|| CampaignError::NotFound(format!("campaign {id}")))?;
    Ok(view_of(store, rec).await?)
}

/// A page of campaign `id`'s vehicles after `after`, with their history.
pub async fn members(
    store: &dyn Store,
    id: i64,
    after: Option<&str>,
    limit: u32,
) -> Result<MembersPage, CampaignError> {
    if store.campaign(id).await?.is_none() {
        return Err(CampaignError::NotFound(format!("campaign {id}")));
    }
    let ms = store.campaign_members(id, after, limit).await?;
    let mut events = match ms.last() {
        Some(last) => {
            store
                .campaign_history(id, Some((after.unwrap_or(""), &last.vin)))
                .await?
        }
        None => Vec::new(),
    }
    .into_iter()
    .peekable();
    let next_after = (ms.len() == limit as usize)
        .then(|| ms.last().map(|m| m.vin.clone()))
        .flatten();
    let mut vehicles = Vec::with_capacity(ms.len());
    for m in ms {
        let mut h = Vec::new();
        while let Some(e) = events.next_if(|e| e.vin.as_deref() <= Some(m.vin.as_str())) {
            if e.vin.as_deref() == Some(m.vin.as_str()) {
                h.push(history(e));
            }
        }
        vehicles.push(MemberView {
            vin: m.vin,
            wave: m.wave,
            state: m.state.as_str().into(),
            offered_ms: m.offered_ms,
            finished_ms: m.finished_ms,
            history: h,
        });
    }
    Ok(MembersPage {
        vehicles,
        next_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wave_sizes_take_percentages_and_counts_in_order_and_keep_the_rest_in_the_last() {
        let w = [
            WaveSpec::Percent(10),
            WaveSpec::Count(5),
            WaveSpec::Percent(50),
        ];
        assert_eq!(wave_sizes(&w, 100), vec![10, 5, 85]);
        assert_eq!(wave_sizes(&w, 3), vec![1, 2]);
        assert_eq!(wave_sizes(&w, 0), Vec::<u64>::new());
        assert_eq!(wave_sizes(&[WaveSpec::Percent(34)], 7), vec![7]);
    }

    #[test]
    fn windows_wrap_midnight() {
        let w = MaintenanceWindow {
            start_utc: "22:00".into(),
            end_utc: "04:00".into(),
        };
        let at = |h: i64, m: i64| (h * 60 + m) * 60_000 + 86_400_000 * 10;
        assert!(w.contains(at(23, 0)).unwrap());
        assert!(w.contains(at(3, 59)).unwrap());
        assert!(!w.contains(at(4, 0)).unwrap());
        assert!(!w.contains(at(12, 0)).unwrap());
        let bad = MaintenanceWindow {
            start_utc: "24:00".into(),
            end_utc: "1:00".into(),
        };
        assert!(bad.contains(0).is_err());
    }

    #[test]
    fn waves_are_assigned_deterministically() {
        let vins: Vec<String> = (0..10).map(|i| format!("VIN{i}")).collect();
        let a = assign_waves("c", vins.clone(), &[3, 7]);
        let mut rev = vins;
        rev.reverse();
        assert_eq!(a, assign_waves("c", rev, &[3, 7]));
        assert_eq!(a.iter().filter(|(_, w)| *w == 1).count(), 3);
    }
}
