//! The Server's storage: one interface, [`Store`], with two
//! implementations over sqlx: [`SqliteStore`] (embedded default, one file)
//! and [`PgStore`] (PostgreSQL, for several stateless nodes on one
//! database).
//!
//! Every uniqueness and "once only" rule is enforced by the database
//! (primary keys, unique constraints, `INSERT .. ON CONFLICT`, single
//! statement claims with `FOR UPDATE SKIP LOCKED` on PostgreSQL), never by
//! process memory, so two nodes on one PostgreSQL see one truth.
//!
//! Times are milliseconds since the Unix epoch, passed in by the caller
//! (the store reads no clock).

use async_trait::async_trait;

pub use crate::error::DbError;

mod migrations;
mod postgres;
mod sql;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// A SHA-256 digest as stored (32 bytes).
pub type Digest = [u8; 32];

/// A vehicle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VehicleRecord {
    /// Vehicle identification number (the key).
    pub vin: String,
    /// Model name.
    pub model: String,
    /// Region (campaign targeting).
    pub region: String,
    /// Hardware ids present in the vehicle.
    pub hardware_ids: Vec<String>,
}

/// An ECU of a vehicle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ecu {
    /// ECU serial (the key, unique in the fleet).
    pub serial: String,
    /// Vehicle it belongs to.
    pub vin: String,
    /// Hardware id.
    pub hardware_id: String,
    /// Whether this is the vehicle's primary (at most one per vehicle).
    pub primary: bool,
    /// Its public key (raw bytes as provisioned).
    pub public_key: Vec<u8>,
}

/// An issued certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// Serial number (hex, the key).
    pub serial: String,
    /// Subject (vehicle or ECU name).
    pub subject: String,
    /// DER bytes.
    pub der: Vec<u8>,
    /// Issue time.
    pub issued_ms: i64,
    /// End of validity.
    pub not_after_ms: i64,
    /// Revocation time, if revoked.
    pub revoked_ms: Option<i64>,
    /// Revocation reason, if revoked.
    pub revocation_reason: Option<String>,
}

/// A revoked certificate, as a CRL lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// Serial number (hex).
    pub serial: String,
    /// Revocation time.
    pub revoked_ms: i64,
    /// Reason.
    pub reason: Option<String>,
}

/// An uploaded image (its bytes live in the blob store under `sha256`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Image name.
    pub name: String,
    /// Version.
    pub version: String,
    /// SHA-256 of the bytes (the key).
    pub sha256: Digest,
    /// Length in bytes.
    pub length: u64,
    /// Hardware id it is built for.
    pub hardware_id: String,
}

/// A stored package: `esync_package::Package` as its JSON model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageRecord {
    /// Package id (the key).
    pub id: String,
    /// The model as JSON.
    pub model_json: String,
    /// Creation time.
    pub created_ms: i64,
}

/// The last manifest a vehicle reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestRecord {
    /// Vehicle.
    pub vin: String,
    /// Hash of the manifest (as the Director computes it).
    pub hash: Vec<u8>,
    /// The manifest bytes.
    pub body: Vec<u8>,
    /// Reception time.
    pub received_ms: i64,
}

/// State of a delta job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeltaState {
    /// Waiting for a worker.
    Queued,
    /// Claimed by a worker.
    Running,
    /// Result stored.
    Done,
    /// Generation failed.
    Failed,
}

impl DeltaState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Result<Self, DbError> {
        Ok(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "done" => Self::Done,
            "failed" => Self::Failed,
            _ => {
                return Err(DbError::Corrupt {
                    column: "delta_jobs.state",
                    reason: format!("unknown state {s:?}"),
                })
            }
        })
    }
}

/// A delta generation job, unique per (from, to, format).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaJob {
    /// Job id.
    pub id: i64,
    /// Source image digest.
    pub from_sha256: Digest,
    /// Target image digest.
    pub to_sha256: Digest,
    /// Patch format name (`esync_proto::message::PatchFormat`, as in the package JSON).
    pub format: String,
    /// State.
    pub state: DeltaState,
    /// Worker holding the claim.
    pub claimed_by: Option<String>,
    /// How many times it was claimed.
    pub attempts: i64,
    /// Result blob digest (state `Done`).
    pub result_sha256: Option<Digest>,
    /// Result length (state `Done`).
    pub result_length: Option<u64>,
    /// Error text (state `Failed`).
    pub error: Option<String>,
}

/// Which Uptane repository a metadata file or signing key belongs to (the
/// verifier's own type; [`RepoKind::as_str`] is the stored name).
pub use esync_uptane::uptane::RepoKind;

/// One signed metadata file of a repository, as served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataRecord {
    /// Repository.
    pub repo: RepoKind,
    /// The VIN for a per-vehicle Director file, `""` for a shared file.
    pub scope: String,
    /// File name as fetched (`N.root.json`, `timestamp.json`, ...).
    pub name: String,
    /// Signed version of the file.
    pub version: u64,
    /// The file.
    pub body: Vec<u8>,
    /// When it was stored.
    pub created_ms: i64,
}

/// An online signing key of a repository role.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    /// Repository.
    pub repo: RepoKind,
    /// Role (`root`, `targets`, `snapshot`, `timestamp`).
    pub role: String,
    /// TUF key id.
    pub key_id: String,
    /// ed25519 seed.
    pub secret: Vec<u8>,
    /// Creation time.
    pub created_ms: i64,
}

impl std::fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("repo", &self.repo)
            .field("role", &self.role)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Role of an admin token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdminRole {
    /// May change things.
    Operator,
    /// May only read.
    Viewer,
}

impl AdminRole {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Viewer => "viewer",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Result<Self, DbError> {
        match s {
            "operator" => Ok(Self::Operator),
            "viewer" => Ok(Self::Viewer),
            _ => Err(DbError::Corrupt {
                column: "admin_tokens.role",
                reason: format!("unknown role {s:?}"),
            }),
        }
    }
}

/// State of a campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CampaignState {
    /// Created, not started: no members yet.
    Draft,
    /// Offering the open waves.
    Running,
    /// The current wave reached its success threshold; the next one opens on
    /// an operator's approval (offers of open waves go on).
    WaitingApproval,
    /// No new offers (by an operator or by itself: see the reason).
    Paused,
    /// Stopped for good: no further offers, pending members aborted.
    Aborted,
    /// Every wave open and no member pending or offered.
    Completed,
}

impl CampaignState {
    /// Every state.
    pub const ALL: [Self; 6] = [
        Self::Draft,
        Self::Running,
        Self::WaitingApproval,
        Self::Paused,
        Self::Aborted,
        Self::Completed,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Running => "running",
            Self::WaitingApproval => "waiting_approval",
            Self::Paused => "paused",
            Self::Aborted => "aborted",
            Self::Completed => "completed",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Result<Self, DbError> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| DbError::Corrupt {
                column: "campaigns.state",
                reason: format!("unknown state {s:?}"),
            })
    }

    /// Whether members of open waves may be offered in this state.
    pub fn offers(self) -> bool {
        matches!(self, Self::Running | Self::WaitingApproval)
    }
}

/// State of a vehicle in a campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemberState {
    /// Not offered yet.
    Pending,
    /// The package is assigned; no final result yet.
    Offered,
    /// Reported installed.
    Succeeded,
    /// Reported failed or refused.
    Failed,
    /// Reported rolled back.
    RolledBack,
    /// The campaign was aborted before it was offered.
    Aborted,
}

impl MemberState {
    /// Every state.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Offered,
        Self::Succeeded,
        Self::Failed,
        Self::RolledBack,
        Self::Aborted,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Offered => "offered",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::RolledBack => "rolled_back",
            Self::Aborted => "aborted",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Result<Self, DbError> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| DbError::Corrupt {
                column: "campaign_members.state",
                reason: format!("unknown state {s:?}"),
            })
    }
}

/// A stored campaign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CampaignRecord {
    /// Id (assigned by the database).
    pub id: i64,
    /// Name.
    pub name: String,
    /// Package offered.
    pub package_id: String,
    /// The `CampaignSpec` as JSON.
    pub spec_json: String,
    /// State.
    pub state: CampaignState,
    /// Why it is paused (or was last paused), when it is.
    pub reason: Option<String>,
    /// The highest open wave (1-based; 0 before start).
    pub current_wave: u32,
    /// Number of waves (set at start).
    pub wave_count: u32,
    /// Vehicles matched (at creation; at start, the members).
    pub matched: u64,
    /// Creation time.
    pub created_ms: i64,
    /// Last change.
    pub updated_ms: i64,
}

/// A vehicle's membership in a campaign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRecord {
    /// Campaign.
    pub campaign_id: i64,
    /// Vehicle.
    pub vin: String,
    /// Its wave (1-based).
    pub wave: u32,
    /// State.
    pub state: MemberState,
    /// When it was offered.
    pub offered_ms: Option<i64>,
    /// When its final result arrived.
    pub finished_ms: Option<i64>,
}

/// One entry of a campaign's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CampaignEvent {
    /// The vehicle, or `None` for an event of the campaign itself.
    pub vin: Option<String>,
    /// When.
    pub at_ms: i64,
    /// What (`offered`, `succeeded`, `paused`, `wave_opened`, ...).
    pub event: String,
    /// Details.
    pub detail: Option<String>,
}

/// Member counts of one wave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaveCounts {
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

impl WaveCounts {
    /// Adds one member in `state` (`n` times).
    pub fn add(&mut self, state: MemberState, n: u64) {
        self.size += n;
        match state {
            MemberState::Pending => self.pending += n,
            MemberState::Offered => self.offered += n,
            MemberState::Succeeded => self.succeeded += n,
            MemberState::Failed => self.failed += n,
            MemberState::RolledBack => self.rolled_back += n,
            MemberState::Aborted => self.aborted += n,
        }
    }

    /// Members without a final state (pending or offered).
    pub fn unfinished(&self) -> u64 {
        self.pending + self.offered
    }
}

/// A campaign with a pending member for a vehicle in an open wave, as the
/// check-in sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferCandidate {
    /// Campaign.
    pub campaign_id: i64,
    /// Its package.
    pub package_id: String,
    /// Its spec (maintenance window, re-offer rule).
    pub spec_json: String,
    /// Whether the vehicle is rollback-blocked for the package.
    pub blocked: bool,
}

/// A campaign whose state a result changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultCounted {
    /// Campaign.
    pub campaign_id: i64,
    /// The member's new state.
    pub member: MemberState,
    /// The campaign's state after the thresholds were evaluated.
    pub campaign: CampaignState,
}

/// A package blocked for a vehicle after it did not install it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RollbackBlock {
    /// Vehicle.
    pub vin: String,
    /// Package.
    pub package_id: String,
    /// The reported outcome (`rolled_back`, `failed`, `refused`).
    pub outcome: String,
    /// When.
    pub created_ms: i64,
}

/// What one ECU runs, from the vehicle's last verified manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcuInstalledRecord {
    /// ECU serial.
    pub ecu_serial: String,
    /// Its hardware id.
    pub hardware_id: String,
    /// The reported image SHA-256.
    pub sha256: Digest,
    /// The Image repository's version of that image (`""` if unknown).
    pub version: String,
}

/// Rows per INSERT statement of [`Store::import_fleet`] (5 parameters a
/// row: well under SQLite's 32766 and PostgreSQL's 65535 bound parameters).
pub const IMPORT_BATCH: usize = 1000;

/// Outcome of an idempotent insert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The row is new.
    New,
    /// An identical key was already there; nothing changed.
    Existing,
}

/// The Server's storage interface. Object safe: use `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    // --- vehicles and ECUs
    /// Inserts or updates a vehicle (by VIN).
    async fn upsert_vehicle(&self, v: &VehicleRecord, now_ms: i64) -> Result<(), DbError>;
    /// A vehicle by VIN.
    async fn vehicle(&self, vin: &str) -> Result<Option<VehicleRecord>, DbError>;
    /// All vehicles, by VIN, at most `limit` after `after` (exclusive).
    async fn vehicles(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<VehicleRecord>, DbError>;
    /// Inserts or updates an ECU (by serial). The vehicle must exist; a
    /// second primary in one vehicle is a [`DbError::Conflict`].
    async fn upsert_ecu(&self, e: &Ecu) -> Result<(), DbError>;
    /// The ECUs of a vehicle, by serial.
    async fn ecus(&self, vin: &str) -> Result<Vec<Ecu>, DbError>;

    // --- certificates
    /// Records an issued certificate (serial must be new).
    async fn insert_certificate(&self, c: &Certificate) -> Result<(), DbError>;
    /// A certificate by serial.
    async fn certificate(&self, serial: &str) -> Result<Option<Certificate>, DbError>;
    /// Revokes a certificate; revoking twice keeps the first time and
    /// returns `Existing`.
    async fn revoke_certificate(
        &self,
        serial: &str,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<Inserted, DbError>;
    /// Revoked certificates still within validity at `now_ms` (CRL data), by serial.
    async fn revocations(&self, now_ms: i64) -> Result<Vec<Revocation>, DbError>;

    // --- images and packages
    /// Records an image; the same digest with the same fields is `Existing`,
    /// with other fields (or the same name/version/hardware id with another
    /// digest) a [`DbError::Conflict`].
    async fn insert_image(&self, i: &Image, now_ms: i64) -> Result<Inserted, DbError>;
    /// An image by digest.
    async fn image(&self, sha256: &Digest) -> Result<Option<Image>, DbError>;
    /// An image by name, version and hardware id.
    async fn image_by_name(
        &self,
        name: &str,
        version: &str,
        hardware_id: &str,
    ) -> Result<Option<Image>, DbError>;
    /// Records a package (id must be new).
    async fn insert_package(&self, p: &PackageRecord) -> Result<(), DbError>;
    /// A package by id.
    async fn package(&self, id: &str) -> Result<Option<PackageRecord>, DbError>;
    /// Assigns a package to a vehicle (idempotent).
    async fn assign(&self, package_id: &str, vin: &str, now_ms: i64) -> Result<Inserted, DbError>;
    /// Removes an assignment; `true` if one was removed.
    async fn unassign(&self, package_id: &str, vin: &str) -> Result<bool, DbError>;
    /// Package ids assigned to a vehicle and not rollback-blocked for it
    /// ([`Store::rollback_blocks`]), oldest first: what the Director directs.
    async fn assignments(&self, vin: &str) -> Result<Vec<String>, DbError>;

    // --- manifests, nonces, Director versions
    /// Stores the vehicle's last verified manifest and what it says each
    /// ECU runs (replacing both), in one transaction: a node that dies
    /// midway leaves the previous pair, never a manifest whose installed
    /// images are not recorded (a retry of the same manifest is a nonce
    /// replay, and a check-in with its hash asks for nothing, so such a
    /// half-write would never be repaired).
    async fn put_manifest(
        &self,
        m: &ManifestRecord,
        installed: &[EcuInstalledRecord],
    ) -> Result<(), DbError>;
    /// The vehicle's last manifest.
    async fn manifest(&self, vin: &str) -> Result<Option<ManifestRecord>, DbError>;
    /// Marks a nonce used: `New` the first time, `Existing` on a replay.
    async fn use_nonce(&self, vin: &str, nonce: &[u8], now_ms: i64) -> Result<Inserted, DbError>;
    /// Forgets nonces seen before `before_ms`; returns how many.
    async fn prune_nonces(&self, before_ms: i64) -> Result<u64, DbError>;
    /// Atomically increments and returns the Director metadata version of
    /// each of `roles` for `vin` (1 the first time), in `roles`' order, in
    /// one transaction (one commit for all of them).
    async fn next_director_versions(&self, vin: &str, roles: &[&str]) -> Result<Vec<u64>, DbError>;
    /// The current Director metadata version (0 if none).
    async fn director_version(&self, vin: &str, role: &str) -> Result<u64, DbError>;

    // --- delta jobs
    /// Queues a delta job; an existing job for the same (from, to, format)
    /// is returned unchanged (`Existing`).
    async fn enqueue_delta(
        &self,
        from: &Digest,
        to: &Digest,
        format: &str,
        now_ms: i64,
    ) -> Result<(DeltaJob, Inserted), DbError>;
    /// Claims one job: a queued one, or a running one whose claim is older
    /// than `lease_ms` (its worker is presumed dead). At most one caller
    /// gets a given job per claim.
    async fn claim_delta(
        &self,
        worker: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<DeltaJob>, DbError>;
    /// Marks a job done with its result; `false` if `worker` no longer
    /// holds the claim (nothing changed).
    async fn finish_delta(
        &self,
        id: i64,
        worker: &str,
        result: &Digest,
        length: u64,
    ) -> Result<bool, DbError>;
    /// Marks a job failed; `false` if `worker` no longer holds the claim.
    async fn fail_delta(&self, id: i64, worker: &str, error: &str) -> Result<bool, DbError>;
    /// The job for (from, to, format).
    async fn delta_job(
        &self,
        from: &Digest,
        to: &Digest,
        format: &str,
    ) -> Result<Option<DeltaJob>, DbError>;

    // --- reports
    /// Stores a report; the same (vin, report id) again is `Existing` and
    /// changes nothing.
    async fn insert_report(
        &self,
        vin: &str,
        report_id: &str,
        body: &[u8],
        now_ms: i64,
    ) -> Result<Inserted, DbError>;
    /// The reports of a vehicle, oldest first: (report id, body, received).
    async fn reports(&self, vin: &str) -> Result<Vec<(String, Vec<u8>, i64)>, DbError>;

    /// The body of report `report_id` of `vin`, if stored.
    async fn report(&self, vin: &str, report_id: &str) -> Result<Option<Vec<u8>>, DbError>;

    // --- Uptane repositories
    /// Stores a metadata file unless one with the same (repo, scope, name)
    /// and a version at least as high is stored: `true` if written. Versions
    /// of a file never go backwards, whichever node writes.
    async fn put_metadata(&self, m: &MetadataRecord) -> Result<bool, DbError>;
    /// [`Store::put_metadata`] of each of `files`, in order, in one
    /// transaction (one commit): whether each was written.
    async fn put_metadata_all(&self, files: &[MetadataRecord]) -> Result<Vec<bool>, DbError>;
    /// A metadata file.
    async fn metadata(
        &self,
        repo: RepoKind,
        scope: &str,
        name: &str,
    ) -> Result<Option<MetadataRecord>, DbError>;
    /// The live (not retired) signing keys of `role`, oldest first.
    async fn signing_keys(
        &self,
        repo: RepoKind,
        role: &str,
    ) -> Result<Vec<SigningKeyRecord>, DbError>;
    /// In one transaction: retires every live key of `role` in `repo`,
    /// stores `keys` as its live keys and writes `files` (the new root,
    /// under the version rule of [`Store::put_metadata`]). A file that is
    /// not written (a newer one exists) aborts it all with
    /// [`DbError::Conflict`].
    async fn replace_signing_keys(
        &self,
        repo: RepoKind,
        role: &str,
        keys: &[SigningKeyRecord],
        files: &[MetadataRecord],
        now_ms: i64,
    ) -> Result<(), DbError>;

    // --- campaigns
    /// Stores a new campaign in state draft; returns its id. An unknown
    /// package is [`DbError::NotFound`].
    async fn insert_campaign(
        &self,
        name: &str,
        package_id: &str,
        spec_json: &str,
        matched: u64,
        now_ms: i64,
    ) -> Result<i64, DbError>;
    /// A campaign by id.
    async fn campaign(&self, id: i64) -> Result<Option<CampaignRecord>, DbError>;
    /// Campaigns, newest first, at most `limit`.
    async fn campaigns(&self, limit: u32) -> Result<Vec<CampaignRecord>, DbError>;
    /// Whether some campaign may make offers (running or waiting for
    /// approval).
    async fn offering_campaign_exists(&self) -> Result<bool, DbError>;
    /// In one transaction: moves a draft campaign to running with wave 1
    /// open and stores its members `(vin, wave)`. `false` (nothing stored)
    /// if it is not a draft any more.
    async fn start_campaign(
        &self,
        id: i64,
        members: &[(String, u32)],
        wave_count: u32,
        now_ms: i64,
    ) -> Result<bool, DbError>;
    /// Moves a campaign from one of `from` to `to` (with `reason`, and the
    /// next wave opened if `open_next_wave`), recording `event`; `false` if
    /// it was in none of `from`. Aborting also marks its pending members
    /// aborted, in the same transaction.
    async fn transition_campaign(
        &self,
        id: i64,
        from: &[CampaignState],
        to: CampaignState,
        reason: Option<&str>,
        open_next_wave: bool,
        now_ms: i64,
    ) -> Result<bool, DbError>;
    /// Member counts of every wave, by wave.
    async fn wave_counts(&self, id: i64) -> Result<Vec<WaveCounts>, DbError>;
    /// Members by VIN, at most `limit` after `after` (exclusive).
    async fn campaign_members(
        &self,
        id: i64,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<MemberRecord>, DbError>;
    /// History of members with `after < vin <= last` (or of the campaign
    /// itself when both are `None`), oldest first.
    async fn campaign_history(
        &self,
        id: i64,
        range: Option<(&str, &str)>,
    ) -> Result<Vec<CampaignEvent>, DbError>;
    /// The one check-in query: campaigns in an offering state with a
    /// pending member `vin` in an open wave.
    async fn due_offers(&self, vin: &str) -> Result<Vec<OfferCandidate>, DbError>;
    /// In one transaction: moves member `vin` of campaign `id` pending →
    /// offered if the campaign still offers and its wave is open (one
    /// conditional update: of concurrent callers on any node at most one
    /// wins), assigns the package and records the event (clearing the
    /// vehicle's rollback block for it when `clear_block`). `false` if
    /// another caller won or the campaign stopped offering.
    async fn claim_offer(
        &self,
        id: i64,
        vin: &str,
        package_id: &str,
        clear_block: bool,
        now_ms: i64,
    ) -> Result<bool, DbError>;
    /// Records the final result of `package_id` on `vin`: a result other
    /// than succeeded blocks the package for the vehicle (`outcome` is the
    /// reported outcome); every offered member of a campaign for the package
    /// moves to `state` once (conditional update), then that campaign's
    /// thresholds are evaluated ([`crate::campaigns::evaluate`]) under its
    /// row lock. Repeating it changes nothing. Returns the campaigns it
    /// counted in.
    async fn record_result(
        &self,
        vin: &str,
        package_id: &str,
        state: MemberState,
        outcome: &str,
        now_ms: i64,
    ) -> Result<Vec<ResultCounted>, DbError>;
    /// Blocks `package_id` for `vin` (outside a campaign: a plain
    /// assignment's non-installed result); an existing block is kept.
    async fn block_package(
        &self,
        vin: &str,
        package_id: &str,
        outcome: &str,
        now_ms: i64,
    ) -> Result<(), DbError>;
    /// Rollback blocks, of one vehicle and/or one package or all (by VIN,
    /// package), at most `limit`.
    async fn rollback_blocks(
        &self,
        vin: Option<&str>,
        package_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RollbackBlock>, DbError>;
    /// Clears a block (the operator's "offer again"): the assignment, if
    /// still present, is directed again, and a rolled-back or failed member
    /// of a campaign for the package goes back to offered. `false` if there
    /// was no block.
    async fn clear_rollback_block(
        &self,
        vin: &str,
        package_id: &str,
        now_ms: i64,
    ) -> Result<bool, DbError>;
    /// What vehicle `vin` runs, by ECU (from its last verified manifest,
    /// [`Store::put_manifest`]).
    async fn installed(&self, vin: &str) -> Result<Vec<EcuInstalledRecord>, DbError>;
    /// What the vehicles with `after < vin <= last` run, by VIN and ECU.
    async fn installed_range(
        &self,
        after: &str,
        last: &str,
    ) -> Result<Vec<(String, EcuInstalledRecord)>, DbError>;

    // --- admin tokens
    /// Stores an admin token by the SHA-256 of its secret (name unique).
    async fn insert_admin_token(
        &self,
        name: &str,
        token_sha256: &Digest,
        role: AdminRole,
        now_ms: i64,
    ) -> Result<(), DbError>;
    /// The role of a live (not revoked) token, by the SHA-256 of its secret.
    async fn admin_token_role(&self, token_sha256: &Digest) -> Result<Option<AdminRole>, DbError>;
    /// Revokes a token by name; `true` if a live one was revoked.
    async fn revoke_admin_token(&self, name: &str, now_ms: i64) -> Result<bool, DbError>;

    // --- bulk import
    /// Registers a fleet at once: every vehicle, then every ECU, in one
    /// transaction, in multi-row INSERT batches ([`IMPORT_BATCH`] rows per
    /// statement). Unlike the upserts, existing rows are not replaced: a VIN
    /// or ECU serial already stored (or repeated in the input), a second
    /// primary in one vehicle, or an ECU of an unknown vehicle fails the
    /// whole import ([`DbError::Conflict`] / [`DbError::NotFound`]) and
    /// nothing is written. Returns the number of vehicles inserted.
    async fn import_fleet(
        &self,
        vehicles: &[VehicleRecord],
        ecus: &[Ecu],
        now_ms: i64,
    ) -> Result<u64, DbError>;
}
