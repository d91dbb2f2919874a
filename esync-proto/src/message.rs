//! The in-vehicle message set, for the whole update and data-gathering
//! lifecycle.
//!
//! Messages are plain data; an [`Envelope`](crate::envelope::Envelope) carries
//! one [`Payload`] between a sender and a recipient and is signed by the sender.
//! The lifecycle, in order:
//!
//! | stage | Client → Agent | Agent → Client |
//! | --- | --- | --- |
//! | inventory | [`InventoryQuery`] | [`InventoryReport`] or [`DoNotDisturb`] |
//! | version report | [`VersionReportRequest`] | [`VersionReport`] |
//! | verify | [`UpdateMetadata`] | (errors come back in [`PrepareResult`]) |
//! | download consent | [`DownloadOffer`] | [`DownloadDecision`] |
//! | transfer | [`TransferStart`], [`TransferChunk`], [`TransferQuery`], [`TransferAbort`] | [`TransferAck`] |
//! | prepare | [`Prepare`] | [`PrepareResult`] |
//! | install | [`InstallStart`] | [`Progress`], [`InstallResult`] |
//! | commit / roll back | [`Confirm`], [`Rollback`] | [`Confirmed`], [`RollbackResult`] |
//! | reports | | [`LogReport`], [`EventReport`] |
//! | data | [`DataBatchAck`], [`BulkUploadAck`], [`StreamCredit`] | [`DataBatch`], [`BulkUploadStart`], [`BulkUploadChunk`], [`StreamOpen`], [`StreamData`], [`StreamClose`] |
//! | diagnostics | [`DiagJobDeploy`], [`DiagJobCommand`] | [`DiagJobStatus`] |
//!
//! Listeners (HMI, policy engine, vehicle-state provider) answer
//! [`ConsentRequest`] with [`ConsentResponse`] and [`VehicleStateQuery`] with
//! [`VehicleState`], and receive [`UserNotice`]s. The Client (which embeds the
//! broker) announces [`Presence`] changes.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::id::{
    CorrelationId, DevicePath, EcuSerial, HardwareId, JobId, ReleaseCounter, Sha256Digest,
    SignatureBytes, SoftwareVersion, TransferId, UpdateId,
};

#[cfg(feature = "arbitrary")]
use arbitrary::Arbitrary;

/// Who sends or receives a message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum Participant {
    /// The vehicle's Client (one per vehicle).
    Client,
    /// An Agent, named by its device path.
    Device(DevicePath),
    /// A listener such as an HMI or a policy engine.
    Listener(crate::id::ListenerName),
}

impl core::fmt::Display for Participant {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Participant::Client => f.write_str("client"),
            Participant::Device(p) => write!(f, "device:{p}"),
            Participant::Listener(l) => write!(f, "listener:{l}"),
        }
    }
}

/// A patch format an Agent can apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum PatchFormat {
    /// Classic `BSDIFF40` (bzip2-compressed control, diff and extra streams),
    /// as written by the standard `bsdiff` tool.
    Bsdiff40,
    /// bsdiff streams compressed with zstd (long-distance matching).
    BsdiffZstd,
    /// bsdiff streams compressed with xz (LZMA2).
    BsdiffXz,
}

/// What an Agent can do with deltas.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct DeltaCapability {
    /// Patch formats the Agent applies, most preferred first. Empty: full
    /// images only.
    pub formats: Vec<PatchFormat>,
    /// Memory in bytes the Agent can give to patching (decompression windows
    /// and buffers, not counting the source image, which is read in place).
    pub max_patch_memory: u64,
}

/// How much of the Uptane metadata an Agent verifies itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum VerificationLevel {
    /// Director targets only, with keys pinned at provisioning.
    Partial,
    /// Director and Image repositories, cross-checked.
    Full,
}

/// How critical an Agent's function is; stricter domains apply stricter
/// local policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum Criticality {
    /// Comfort, infotainment.
    Normal,
    /// Safety-relevant (brakes, steering, powertrain).
    SafetyCritical,
}

/// The image an Agent runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct InstalledImage {
    /// Installed software version.
    pub version: SoftwareVersion,
    /// Release counter of the installed image.
    pub release_counter: ReleaseCounter,
    /// Length of the installed image in bytes.
    pub length: u64,
    /// SHA-256 of the installed image.
    pub sha256: Sha256Digest,
}

/// What an Agent is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum AgentState {
    /// Nothing in progress.
    Idle,
    /// Receiving an image.
    Receiving,
    /// An image is verified and ready to install.
    Prepared,
    /// Installing.
    Installing,
    /// Installed and activated; waiting for the Client's confirm or rollback.
    AwaitingConfirm,
    /// Rolling back.
    RollingBack,
    /// Failed terminally; needs service.
    Failed,
}

/// Asks an Agent for its inventory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct InventoryQuery {
    /// Echoed in the report so the Client can match answers to this round.
    pub nonce: [u8; 16],
}

/// An Agent's identity, installed image and capabilities.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct InventoryReport {
    /// The nonce of the query this answers.
    pub nonce: [u8; 16],
    /// Device path of the Agent.
    pub device: DevicePath,
    /// Hardware id of the device.
    pub hardware_id: HardwareId,
    /// ECU serial (Uptane ECU identifier).
    pub serial: EcuSerial,
    /// What is installed now.
    pub installed: InstalledImage,
    /// Delta formats and patch memory.
    pub delta: DeltaCapability,
    /// Versions the Agent can roll back to, most recent first.
    pub rollback_versions: Vec<SoftwareVersion>,
    /// Metadata verification the Agent performs.
    pub verification: VerificationLevel,
    /// Criticality of the Agent's function.
    pub criticality: Criticality,
    /// Current state.
    pub state: AgentState,
}

/// Why an Agent asks not to be disturbed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum BusyReason {
    /// Installing an image.
    Installing,
    /// Rolling back.
    RollingBack,
    /// Reconstructing or verifying an image.
    Preparing,
    /// The device itself is busy (e.g. a safety function is running).
    DeviceBusy,
}

/// "Do not disturb": the Agent cannot handle the request now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct DoNotDisturb {
    /// Why.
    pub reason: BusyReason,
    /// Suggested delay before asking again, in milliseconds.
    pub retry_after_ms: u32,
}

/// Asks an Agent for a signed Uptane ECU version report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct VersionReportRequest {
    /// Nonce the Agent must include in its signed report (Server-side replay
    /// protection).
    pub nonce: [u8; 16],
}

/// A signed Uptane ECU version report (canonical-JSON bytes, as produced by
/// `esync-uptane`). The Client embeds it unchanged in the vehicle manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct VersionReport {
    /// The signed report as JSON bytes.
    pub signed_json: Vec<u8>,
}

/// A TUF/Uptane metadata role.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum MetadataRole {
    /// `root`.
    Root,
    /// `timestamp`.
    Timestamp,
    /// `snapshot`.
    Snapshot,
    /// `targets`.
    Targets,
    /// A delegated targets role, by name.
    Delegated(String),
}

/// One metadata file, exactly as the repository served it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct RoleBytes {
    /// Which role.
    pub role: MetadataRole,
    /// The signed JSON bytes.
    pub json: Vec<u8>,
}

/// Signed update metadata forwarded by the Client, for the Agent to verify
/// itself (it does not trust the Client).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct UpdateMetadata {
    /// The update this metadata authorises.
    pub update_id: UpdateId,
    /// Director repository roles (at least `targets`; `root` files when the
    /// Director root rotated, in version order).
    pub director: Vec<RoleBytes>,
    /// Image repository roles, for Agents that do full verification.
    pub image: Vec<RoleBytes>,
}

/// How an image travels: whole, or as a patch against an installed version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum ImageEncoding {
    /// The full image.
    Full,
    /// A patch to apply to the installed image.
    Delta {
        /// Patch format.
        format: PatchFormat,
        /// Version the patch applies to.
        from_version: SoftwareVersion,
        /// SHA-256 the installed (source) image must have.
        source_sha256: Sha256Digest,
        /// Length of the patch in bytes.
        patch_length: u64,
        /// SHA-256 of the patch.
        patch_sha256: Sha256Digest,
    },
}

/// Offers an update to an Agent and asks for download consent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct DownloadOffer {
    /// The update.
    pub update_id: UpdateId,
    /// Target name in the Uptane metadata.
    pub target_name: String,
    /// Version offered.
    pub version: SoftwareVersion,
    /// Its release counter.
    pub release_counter: ReleaseCounter,
    /// Length of the resulting image.
    pub length: u64,
    /// SHA-256 of the resulting image.
    pub sha256: Sha256Digest,
    /// How it will travel.
    pub encoding: ImageEncoding,
    /// Whether the package policy requires user consent.
    pub consent_required: bool,
}

/// Consent, denial or postponement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum Decision {
    /// Go ahead.
    Consent,
    /// Refused, with a reason for the report.
    Deny {
        /// Human-readable reason.
        reason: String,
    },
    /// Ask again later.
    Postpone {
        /// Do not ask again before this time (ms since the Unix epoch).
        until_ms: u64,
    },
}

/// An Agent's (or its policy hook's) answer to a [`DownloadOffer`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct DownloadDecision {
    /// The update.
    pub update_id: UpdateId,
    /// The decision.
    pub decision: Decision,
}

/// Starts (or restarts) an image transfer to an Agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct TransferStart {
    /// The transfer.
    pub transfer_id: TransferId,
    /// The update it belongs to.
    pub update_id: UpdateId,
    /// Total bytes to transfer (image or patch).
    pub total_length: u64,
    /// Chunk size in bytes (the last chunk may be shorter).
    pub chunk_size: u32,
    /// SHA-256 of every chunk in order. Their concatenation hashes to the
    /// chunk-list digest in the signed metadata, so each chunk is verified on
    /// arrival and a transfer resumes at the first unverified chunk.
    pub chunk_hashes: Vec<Sha256Digest>,
}

/// One chunk of an image transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct TransferChunk {
    /// The transfer.
    pub transfer_id: TransferId,
    /// Chunk index.
    pub index: u32,
    /// Byte offset (`index * chunk_size`).
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

/// Asks the Agent where a transfer stands (after a reconnect).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct TransferQuery {
    /// The transfer.
    pub transfer_id: TransferId,
}

/// Acknowledges chunks and tells the sender where to resume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct TransferAck {
    /// The transfer.
    pub transfer_id: TransferId,
    /// Index of the first chunk not yet received and verified; equal to the
    /// chunk count when the transfer is complete.
    pub next_chunk: u32,
    /// Chunks that arrived but failed their hash, to send again.
    pub rejected: Vec<u32>,
}

/// Abandons a transfer; the Agent discards what it received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct TransferAbort {
    /// The transfer.
    pub transfer_id: TransferId,
    /// Why.
    pub reason: String,
}

/// Asks the Agent to verify the received image (and reconstruct a delta).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Prepare {
    /// The update.
    pub update_id: UpdateId,
    /// The transfer holding its image or patch.
    pub transfer_id: TransferId,
}

/// How serious a failure is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum ErrorClass {
    /// Transient; the same step may succeed if tried again.
    Retryable,
    /// This update cannot be applied to this device (wrong hardware, bad
    /// metadata, unsupported format); trying again will not help.
    UpdateIncapable,
    /// The device is in trouble and needs service.
    Terminal,
}

/// What failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum FailureCode {
    /// Metadata signatures, thresholds or structure failed verification.
    MetadataInvalid,
    /// Metadata has expired.
    MetadataExpired,
    /// The metadata does not direct this device to this image.
    NotDirected,
    /// Hardware id mismatch.
    HardwareMismatch,
    /// Release counter lower than the installed one.
    ReleaseCounterRollback,
    /// Image (or chunk, or patch) hash mismatch.
    HashMismatch,
    /// Image longer or shorter than declared.
    LengthMismatch,
    /// The installed image is not the patch's source.
    DeltaSourceMismatch,
    /// The patch is malformed.
    DeltaCorrupt,
    /// Patch format not supported.
    UnsupportedFormat,
    /// Not enough storage or memory.
    InsufficientResources,
    /// Writing the inactive slot failed.
    WriteFailed,
    /// Activation failed.
    ActivationFailed,
    /// The new image failed its self-test.
    SelfTestFailed,
    /// A vehicle-state precondition did not hold.
    PreconditionFailed,
    /// Consent was denied.
    ConsentDenied,
    /// A step did not finish in time.
    Timeout,
    /// The retry limit was reached.
    RetryLimitReached,
    /// Rollback failed.
    RollbackFailed,
    /// A transfer or update id is unknown.
    UnknownUpdate,
    /// Anything else.
    Internal,
}

/// A failure, classified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Failure {
    /// How serious.
    pub class: ErrorClass,
    /// What failed.
    pub code: FailureCode,
    /// Detail for humans and logs.
    pub message: String,
}

/// Result of [`Prepare`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum PrepareOutcome {
    /// Verified and reconstructed: ready to install.
    Ready {
        /// Version that will be installed.
        version: SoftwareVersion,
        /// SHA-256 of the reconstructed image.
        sha256: Sha256Digest,
    },
    /// Not ready.
    Failed(Failure),
}

/// The Agent's answer to [`Prepare`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct PrepareResult {
    /// The update.
    pub update_id: UpdateId,
    /// READY or FAILED.
    pub outcome: PrepareOutcome,
}

/// Tells an Agent to install a prepared update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct InstallStart {
    /// The update.
    pub update_id: UpdateId,
    /// Install stage of the package this belongs to (for reports).
    pub stage: u16,
    /// Whether the Client will confirm (commit) separately; when false the
    /// Agent commits on a successful self-test.
    pub await_confirm: bool,
}

/// Phase of the work a [`Progress`] report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum Phase {
    /// Receiving the image.
    Transfer,
    /// Verifying metadata and hashes.
    Verify,
    /// Reconstructing a delta.
    Patch,
    /// Pre-install steps.
    PreInstall,
    /// Writing the inactive slot.
    Write,
    /// Activating.
    Activate,
    /// Self-test of the new image.
    SelfTest,
    /// Rolling back.
    Rollback,
}

/// Progress of a long step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Progress {
    /// The update.
    pub update_id: UpdateId,
    /// Phase.
    pub phase: Phase,
    /// Work done (bytes or steps).
    pub done: u64,
    /// Total work (same unit).
    pub total: u64,
}

/// Outcome of an install.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum InstallOutcome {
    /// Installed, activated and self-tested.
    Installed {
        /// Version now running.
        version: SoftwareVersion,
        /// Whether the Agent waits for [`Confirm`] before committing.
        awaiting_confirm: bool,
    },
    /// Failed.
    Failed {
        /// What failed.
        failure: Failure,
        /// Version the device runs after the failure (its old version after
        /// an automatic rollback).
        running: SoftwareVersion,
    },
}

/// The Agent's report at the end of an install.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct InstallResult {
    /// The update.
    pub update_id: UpdateId,
    /// The outcome.
    pub outcome: InstallOutcome,
}

/// Commits an installed update (every component of its package succeeded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Confirm {
    /// The update.
    pub update_id: UpdateId,
}

/// The Agent committed the update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Confirmed {
    /// The update.
    pub update_id: UpdateId,
    /// Version now committed.
    pub version: SoftwareVersion,
}

/// Where to roll back to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum RollbackTarget {
    /// The previously active slot (A/B switch-back).
    PreviousSlot,
    /// The first valid version in the Agent's ordered rollback list.
    Backup,
    /// A specific version from the rollback list.
    Version(SoftwareVersion),
}

/// Rolls an update back (some component of its package failed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Rollback {
    /// The update being undone.
    pub update_id: UpdateId,
    /// Where to go.
    pub target: RollbackTarget,
}

/// Outcome of a rollback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum RollbackOutcome {
    /// The device runs this version.
    RolledBack {
        /// Version now running.
        version: SoftwareVersion,
    },
    /// Rollback failed.
    Failed(Failure),
}

/// The Agent's answer to [`Rollback`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct RollbackResult {
    /// The update.
    pub update_id: UpdateId,
    /// The outcome.
    pub outcome: RollbackOutcome,
}

/// Connection state of a participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum PresenceState {
    /// Connected.
    Connected,
    /// Disconnected (cleanly or not).
    Disconnected,
}

/// Presence notification, announced by the Client's broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Presence {
    /// Whose presence changed.
    pub subject: Participant,
    /// New state.
    pub state: PresenceState,
}

/// Severity of a log record or event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum Severity {
    /// Debug detail.
    Debug,
    /// Information.
    Info,
    /// Warning.
    Warning,
    /// Error.
    Error,
    /// Critical.
    Critical,
}

/// One log record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct LogRecord {
    /// Time (ms since the Unix epoch).
    pub time_ms: u64,
    /// Severity.
    pub severity: Severity,
    /// Component that logged.
    pub source: String,
    /// Text.
    pub message: String,
}

/// A batch of log records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct LogReport {
    /// Records, oldest first.
    pub records: Vec<LogRecord>,
}

/// Value of a vehicle signal or event datum.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum SignalValue {
    /// Boolean.
    Bool(bool),
    /// Signed integer.
    Int(i64),
    /// Floating point.
    Float(f64),
    /// Text (enumerations such as gear `P`).
    Text(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

/// A named value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Signal {
    /// Signal name, e.g. `speed`, `gear`, `battery_soc`.
    pub name: String,
    /// Value.
    pub value: SignalValue,
}

/// An event, such as a diagnostic trouble code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Event {
    /// Time (ms since the Unix epoch).
    pub time_ms: u64,
    /// Event or trouble code, e.g. `P0301`.
    pub code: String,
    /// Severity.
    pub severity: Severity,
    /// Associated data (freeze frame).
    pub data: Vec<Signal>,
}

/// A batch of events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct EventReport {
    /// Events, oldest first.
    pub events: Vec<Event>,
}

/// One sample of a signal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Sample {
    /// Time (ms since the Unix epoch).
    pub time_ms: u64,
    /// The signal.
    pub signal: Signal,
}

/// Short messages (signal samples), batched for store-and-forward.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct DataBatch {
    /// Job that collected them, if any.
    pub job_id: Option<JobId>,
    /// Sender's batch sequence number; acknowledged batches are deleted from
    /// the sender's store.
    pub batch_seq: u64,
    /// Samples, oldest first.
    pub samples: Vec<Sample>,
}

/// Acknowledges every batch up to and including `batch_seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct DataBatchAck {
    /// Highest batch sequence number stored durably by the receiver.
    pub batch_seq: u64,
}

/// Compression of bulk data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum Compression {
    /// Uncompressed.
    None,
    /// zstd.
    Zstd,
}

/// Starts (or resumes) a bulk upload of diagnostic data (logs, dumps).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct BulkUploadStart {
    /// The upload.
    pub upload_id: TransferId,
    /// Job that produced it, if any.
    pub job_id: Option<JobId>,
    /// Name of the artifact, e.g. `ecm-crash-2026-11-21.dump`.
    pub name: String,
    /// Length in bytes after compression.
    pub total_length: u64,
    /// Compression used.
    pub compression: Compression,
    /// SHA-256 of the (compressed) content.
    pub sha256: Sha256Digest,
}

/// One chunk of a bulk upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct BulkUploadChunk {
    /// The upload.
    pub upload_id: TransferId,
    /// Byte offset.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

/// Acknowledges a bulk upload's progress; also the answer to a resumed start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct BulkUploadAck {
    /// The upload.
    pub upload_id: TransferId,
    /// Bytes received contiguously from the start; resume here.
    pub received: u64,
    /// Whether the whole upload arrived and its hash matched.
    pub complete: bool,
}

/// Opens a streaming-data session (camera- or lidar-like data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct StreamOpen {
    /// The stream.
    pub stream_id: TransferId,
    /// Job that asked for it, if any.
    pub job_id: Option<JobId>,
    /// Stream name, e.g. `front-camera`.
    pub name: String,
    /// Content type, e.g. `video/h264`.
    pub content_type: String,
}

/// Data on an open stream. The sender may only send as many bytes as it has
/// been granted by [`StreamCredit`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct StreamData {
    /// The stream.
    pub stream_id: TransferId,
    /// Sequence number within the stream.
    pub seq: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

/// Grants the stream's sender more bytes (credit-based backpressure) and
/// caps its rate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct StreamCredit {
    /// The stream.
    pub stream_id: TransferId,
    /// Additional bytes the sender may send.
    pub credit_bytes: u64,
    /// Maximum rate in bytes per second.
    pub max_rate_bytes_per_s: u64,
}

/// Closes a stream (either side).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct StreamClose {
    /// The stream.
    pub stream_id: TransferId,
    /// Why (empty for a normal end).
    pub reason: String,
}

/// What a diagnostic job collects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum CollectItem {
    /// Samples of a named signal.
    Signal(String),
    /// Diagnostic trouble codes.
    TroubleCodes,
    /// Log records at or above a severity.
    Logs(Severity),
    /// A named artifact (a dump, a log file) uploaded in bulk.
    Artifact(String),
    /// A named stream.
    Stream(String),
}

/// When a diagnostic job collects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum Trigger {
    /// As soon as started.
    Immediate,
    /// When an event with this code occurs.
    OnEvent(String),
    /// When a signal expression becomes true (e.g. `speed > 120`), in the
    /// language of [`crate::precondition`].
    Expression(String),
}

/// Description of a diagnostic job, as signed by the Server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct DiagJobSpec {
    /// The job.
    pub job_id: JobId,
    /// Device the job runs on.
    pub device: DevicePath,
    /// What to collect.
    pub collect: Vec<CollectItem>,
    /// Sampling period in milliseconds (0: on change).
    pub sampling_ms: u32,
    /// When to collect.
    pub trigger: Trigger,
    /// How long the job runs once triggered, in milliseconds.
    pub duration_ms: u64,
    /// Stop after this many bytes.
    pub max_bytes: u64,
    /// Stop after this many samples.
    pub max_samples: u64,
    /// The job is refused after this time (ms since the Unix epoch).
    pub expires_ms: u64,
}

/// Deploys a diagnostic job, signed end to end by the Server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct DiagJobDeploy {
    /// The job description.
    pub spec: DiagJobSpec,
    /// Key id (SHA-256 of the public key) of the Server key that signed it.
    pub server_key_id: Sha256Digest,
    /// ed25519 signature of the Server over
    /// `b"esync-diag-job-v1\0" || postcard(spec)`.
    pub server_signature: SignatureBytes,
}

/// Controls a deployed diagnostic job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum JobCommand {
    /// Start (arm the trigger).
    Start,
    /// Stop and flush what was collected.
    Stop,
    /// Report status.
    Query,
    /// Stop and delete the job.
    Remove,
}

/// A command for a diagnostic job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct DiagJobCommand {
    /// The job.
    pub job_id: JobId,
    /// The command.
    pub command: JobCommand,
}

/// State of a diagnostic job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum JobState {
    /// Deployed, not started.
    Deployed,
    /// Waiting for its trigger.
    Armed,
    /// Collecting.
    Running,
    /// Stopped by command.
    Stopped,
    /// Finished (duration or a limit reached).
    Completed,
    /// Refused or failed.
    Failed(Failure),
}

/// Status of a diagnostic job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct DiagJobStatus {
    /// The job.
    pub job_id: JobId,
    /// Its state.
    pub state: JobState,
    /// Samples collected so far.
    pub samples: u64,
    /// Bytes collected so far.
    pub bytes: u64,
}

/// What a consent request is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum ConsentKind {
    /// Downloading an update.
    Download,
    /// Installing an update (the vehicle may be unavailable meanwhile).
    Install,
}

/// Asks an HMI or policy listener for the user's consent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct ConsentRequest {
    /// Matches the response to the request.
    pub request_id: CorrelationId,
    /// Download or install.
    pub kind: ConsentKind,
    /// Short title for the user.
    pub title: String,
    /// Release notes or description for the user.
    pub description: String,
    /// Download size in bytes (for download consent).
    pub size_bytes: u64,
    /// Expected duration in seconds during which the vehicle is unavailable
    /// (for install consent).
    pub estimated_duration_s: u32,
    /// The request lapses (counts as postponed) after this time (ms since the
    /// Unix epoch).
    pub deadline_ms: u64,
}

/// The user's (or policy's) answer to a [`ConsentRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct ConsentResponse {
    /// The request answered.
    pub request_id: CorrelationId,
    /// The decision.
    pub decision: Decision,
}

/// Asks the vehicle-state provider for signal values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct VehicleStateQuery {
    /// Signal names; empty for all the provider knows.
    pub signals: Vec<String>,
}

/// Vehicle signal values, for precondition checks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct VehicleState {
    /// When the values were read (ms since the Unix epoch).
    pub time_ms: u64,
    /// The values.
    pub signals: Vec<Signal>,
}

/// What a [`UserNotice`] tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum NoticeKind {
    /// An update is available.
    UpdateAvailable,
    /// An install is about to start.
    InstallStarting,
    /// An install succeeded.
    InstallSucceeded,
    /// An install failed; the previous version runs.
    InstallFailed,
}

/// Informs the user before and after an update (UN R156).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct UserNotice {
    /// The update, if the notice is about one.
    pub update_id: Option<UpdateId>,
    /// What happened.
    pub kind: NoticeKind,
    /// Text for the user.
    pub text: String,
}

macro_rules! payloads {
    ($( $(#[$m:meta])* $variant:ident ($ty:ty) => $kind:literal, $from:ident; )*) => {
        /// Every message that can travel in an envelope.
        ///
        /// The variant order is part of the wire format: new variants are
        /// only ever appended.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
        #[non_exhaustive]
        pub enum Payload {
            $( $(#[$m])* $variant($ty), )*
        }

        impl Payload {
            /// The message kind's stable name.
            pub fn kind(&self) -> &'static str {
                match self { $( Payload::$variant(_) => $kind, )* }
            }

            /// Which class of participant may send this message.
            pub fn allowed_senders(&self) -> SenderClass {
                match self { $( Payload::$variant(_) => SenderClass::$from, )* }
            }

            /// Names of every kind, in wire order.
            pub const KINDS: &'static [&'static str] = &[$($kind),*];
        }

        $(
            impl From<$ty> for Payload {
                fn from(v: $ty) -> Self { Payload::$variant(v) }
            }
        )*
    };
}

/// Which participants may send a message kind. Commands come only from the
/// Client; reports only from Agents; consent and vehicle state from
/// listeners (or the Client, which may answer from its own policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SenderClass {
    /// Only the Client.
    Client,
    /// Only an Agent (a `Device` participant).
    Device,
    /// A listener or the Client.
    Listener,
    /// The Client or an Agent (messages both sides send, such as stream
    /// control).
    ClientOrDevice,
}

impl SenderClass {
    /// Whether `sender` belongs to this class.
    pub fn admits(self, sender: &Participant) -> bool {
        matches!(
            (self, sender),
            (SenderClass::Client, Participant::Client)
                | (SenderClass::Device, Participant::Device(_))
                | (
                    SenderClass::Listener,
                    Participant::Listener(_) | Participant::Client
                )
                | (
                    SenderClass::ClientOrDevice,
                    Participant::Client | Participant::Device(_)
                )
        )
    }
}

payloads! {
    /// See [`InventoryQuery`].
    InventoryQuery(InventoryQuery) => "inventory-query", Client;
    /// See [`InventoryReport`].
    InventoryReport(InventoryReport) => "inventory-report", Device;
    /// See [`DoNotDisturb`].
    DoNotDisturb(DoNotDisturb) => "do-not-disturb", Device;
    /// See [`VersionReportRequest`].
    VersionReportRequest(VersionReportRequest) => "version-report-request", Client;
    /// See [`VersionReport`].
    VersionReport(VersionReport) => "version-report", Device;
    /// See [`UpdateMetadata`].
    UpdateMetadata(UpdateMetadata) => "update-metadata", Client;
    /// See [`DownloadOffer`].
    DownloadOffer(DownloadOffer) => "download-offer", Client;
    /// See [`DownloadDecision`].
    DownloadDecision(DownloadDecision) => "download-decision", Device;
    /// See [`TransferStart`].
    TransferStart(TransferStart) => "transfer-start", Client;
    /// See [`TransferChunk`].
    TransferChunk(TransferChunk) => "transfer-chunk", Client;
    /// See [`TransferQuery`].
    TransferQuery(TransferQuery) => "transfer-query", Client;
    /// See [`TransferAck`].
    TransferAck(TransferAck) => "transfer-ack", Device;
    /// See [`TransferAbort`].
    TransferAbort(TransferAbort) => "transfer-abort", Client;
    /// See [`Prepare`].
    Prepare(Prepare) => "prepare", Client;
    /// See [`PrepareResult`].
    PrepareResult(PrepareResult) => "prepare-result", Device;
    /// See [`InstallStart`].
    InstallStart(InstallStart) => "install-start", Client;
    /// See [`Progress`].
    Progress(Progress) => "progress", Device;
    /// See [`InstallResult`].
    InstallResult(InstallResult) => "install-result", Device;
    /// See [`Confirm`].
    Confirm(Confirm) => "confirm", Client;
    /// See [`Confirmed`].
    Confirmed(Confirmed) => "confirmed", Device;
    /// See [`Rollback`].
    Rollback(Rollback) => "rollback", Client;
    /// See [`RollbackResult`].
    RollbackResult(RollbackResult) => "rollback-result", Device;
    /// See [`Presence`].
    Presence(Presence) => "presence", Client;
    /// See [`LogReport`].
    LogReport(LogReport) => "log-report", ClientOrDevice;
    /// See [`EventReport`].
    EventReport(EventReport) => "event-report", ClientOrDevice;
    /// See [`DataBatch`].
    DataBatch(DataBatch) => "data-batch", Device;
    /// See [`DataBatchAck`].
    DataBatchAck(DataBatchAck) => "data-batch-ack", Client;
    /// See [`BulkUploadStart`].
    BulkUploadStart(BulkUploadStart) => "bulk-upload-start", Device;
    /// See [`BulkUploadChunk`].
    BulkUploadChunk(BulkUploadChunk) => "bulk-upload-chunk", Device;
    /// See [`BulkUploadAck`].
    BulkUploadAck(BulkUploadAck) => "bulk-upload-ack", Client;
    /// See [`StreamOpen`].
    StreamOpen(StreamOpen) => "stream-open", Device;
    /// See [`StreamData`].
    StreamData(StreamData) => "stream-data", Device;
    /// See [`StreamCredit`].
    StreamCredit(StreamCredit) => "stream-credit", Client;
    /// See [`StreamClose`].
    StreamClose(StreamClose) => "stream-close", ClientOrDevice;
    /// See [`DiagJobDeploy`].
    DiagJobDeploy(DiagJobDeploy) => "diag-job-deploy", Client;
    /// See [`DiagJobCommand`].
    DiagJobCommand(DiagJobCommand) => "diag-job-command", Client;
    /// See [`DiagJobStatus`].
    DiagJobStatus(DiagJobStatus) => "diag-job-status", Device;
    /// See [`ConsentRequest`].
    ConsentRequest(ConsentRequest) => "consent-request", Client;
    /// See [`ConsentResponse`].
    ConsentResponse(ConsentResponse) => "consent-response", Listener;
    /// See [`VehicleStateQuery`].
    VehicleStateQuery(VehicleStateQuery) => "vehicle-state-query", ClientOrDevice;
    /// See [`VehicleState`].
    VehicleState(VehicleState) => "vehicle-state", Listener;
    /// See [`UserNotice`].
    UserNotice(UserNotice) => "user-notice", Client;
}
