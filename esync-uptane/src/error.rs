//! The error type of this crate.

use thiserror::Error;

/// Everything that can make metadata, an image or a report be refused.
///
/// Messages name the role, file or field that failed; they never carry key
/// material.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not valid JSON of the expected shape.
    #[error("{what}: malformed JSON: {reason}")]
    Json {
        /// What was being decoded.
        what: String,
        /// The decoder's message.
        reason: String,
    },
    /// A value cannot be written as canonical JSON (floats are not allowed).
    #[error("canonical JSON: {0}")]
    Canonical(String),
    /// A field holds a value outside what this crate accepts.
    #[error("{what}: invalid field {field}: {reason}")]
    Field {
        /// The role or object.
        what: String,
        /// The field name.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// `_type` is not the expected role type.
    #[error("expected metadata of type {expected}, got {got}")]
    WrongType {
        /// Expected `_type`.
        expected: String,
        /// Received `_type`.
        got: String,
    },
    /// A key or signature could not be decoded.
    #[error("{0}")]
    Key(String),
    /// Fewer distinct authorised keys signed the role than its threshold.
    #[error("{role}: {valid} valid signature(s) from distinct authorised keys, threshold is {threshold}")]
    Threshold {
        /// Role whose signatures were checked.
        role: String,
        /// Distinct valid signatures counted.
        valid: u64,
        /// Threshold required.
        threshold: u64,
    },
    /// A version went backwards (rollback attack).
    #[error("{role}: version {new} is lower than trusted version {trusted}")]
    Rollback {
        /// Role concerned.
        role: String,
        /// Version trusted before.
        trusted: u64,
        /// Version offered.
        new: u64,
    },
    /// A version differs from the one another role says (mix-and-match attack).
    #[error("{role}: version {got} does not match version {expected} listed by {listed_by}")]
    VersionMismatch {
        /// Role concerned.
        role: String,
        /// Role that lists the expected version.
        listed_by: &'static str,
        /// Expected version.
        expected: u64,
        /// Received version.
        got: u64,
    },
    /// A role listed by the trusted snapshot is missing from the new one.
    #[error("snapshot: role file {0} was dropped")]
    RoleDropped(String),
    /// A role file is not listed where it must be.
    #[error("{listed_in}: no entry for {file}")]
    NotListed {
        /// File looked for.
        file: String,
        /// Metadata that should list it.
        listed_in: &'static str,
    },
    /// Metadata is past its expiry (freeze attack).
    #[error("{role}: expired at {expires} (now {now})")]
    Expired {
        /// Role concerned.
        role: String,
        /// Its expiry, RFC 3339.
        expires: String,
        /// The injected time, RFC 3339.
        now: String,
    },
    /// The injected time is before the last time seen.
    #[error("time went backwards: {now} is before last time seen {last}")]
    TimeWentBackwards {
        /// The injected time, RFC 3339.
        now: String,
        /// The last time seen, RFC 3339.
        last: String,
    },
    /// Data is longer than its cap or declared length (endless data attack).
    #[error("{what}: more than {limit} bytes")]
    TooLong {
        /// What was being received.
        what: String,
        /// The cap.
        limit: u64,
    },
    /// Data length differs from the declared one.
    #[error("{what}: length {got} differs from declared {expected}")]
    LengthMismatch {
        /// What was checked.
        what: String,
        /// Declared length.
        expected: u64,
        /// Received length.
        got: u64,
    },
    /// A hash differs from the declared one.
    #[error("{what}: {algorithm} hash differs from the declared one")]
    HashMismatch {
        /// What was checked.
        what: String,
        /// Hash algorithm.
        algorithm: String,
    },
    /// A hash algorithm is not supported, or no supported hash is declared.
    #[error("{what}: {reason}")]
    UnsupportedHash {
        /// What was checked.
        what: String,
        /// Details.
        reason: String,
    },
    /// A required file was not found on the repository.
    #[error("{0} not found on the repository")]
    NotFound(String),
    /// A target name could escape the target directory (path traversal).
    #[error("target name {0:?} refused: {1}")]
    BadTargetName(String, &'static str),
    /// The repository does not list the target.
    #[error("target {0:?} is not listed by the repository")]
    UnknownTarget(String),
    /// Delegation search exceeded its bound.
    #[error("delegation search visited more than {0} roles")]
    TooManyDelegations(usize),
    /// A target is for other hardware than the ECU's (attack A16).
    #[error("target {target} is for hardware {target_hardware}, ECU {ecu} is {ecu_hardware}")]
    HardwareMismatch {
        /// Target name.
        target: String,
        /// Hardware id the target is for.
        target_hardware: String,
        /// ECU serial.
        ecu: String,
        /// The ECU's hardware id.
        ecu_hardware: String,
    },
    /// A target's release counter is lower than the installed one (attack A7).
    #[error("target {target}: release counter {offered} is lower than installed {installed}")]
    ReleaseCounterRollback {
        /// Target name.
        target: String,
        /// Release counter of the target.
        offered: u64,
        /// Release counter of the installed image.
        installed: u64,
    },
    /// The Director's targets role delegates (it must not).
    #[error("uptane: Director targets must not delegate")]
    DirectorDelegates,
    /// A Director target's `custom` lacks a field or holds an invalid one.
    #[error("uptane: target {target}: {reason}")]
    TargetCustom {
        /// Target name.
        target: String,
        /// What is missing or invalid.
        reason: String,
    },
    /// A Director target is for another vehicle (the whole Director
    /// metadata is not directed at this one).
    #[error("uptane: target {target} is for vehicle {vin}, not {expected}")]
    NotForVehicle {
        /// Target name.
        target: String,
        /// The VIN the target is for.
        vin: String,
        /// This vehicle's VIN.
        expected: String,
    },
    /// A Director target is for an ECU the vehicle does not have.
    #[error("uptane: target {target}: ECU {ecu} is not in the vehicle")]
    UnknownEcu {
        /// Target name.
        target: String,
        /// The ECU serial it is for.
        ecu: String,
    },
    /// The Director lists more than one target for one ECU.
    #[error("uptane: ECU {ecu} has more than one Director target")]
    DuplicateEcuTarget {
        /// The ECU serial.
        ecu: String,
    },
    /// A Director target is not listed by the Image repository.
    #[error("uptane: Director target {target} is not in the Image repository")]
    NotInImageRepository {
        /// Target name.
        target: String,
    },
    /// A Director target differs from the Image repository's entry of the
    /// same name (length, hashes, hardware ids, release counter).
    #[error("uptane: target {target}: {reason}")]
    ImageMismatch {
        /// Target name.
        target: String,
        /// What differs.
        reason: String,
    },
    /// A vehicle manifest's signature by the Primary does not verify.
    #[error("manifest: signature: {0}")]
    ManifestSignature(Box<Error>),
    /// A vehicle manifest is for another vehicle.
    #[error("manifest: manifest is for vehicle {vin}, expected {expected}")]
    ManifestForOtherVehicle {
        /// The VIN in the manifest.
        vin: String,
        /// The VIN expected.
        expected: String,
    },
    /// The verifier was driven out of order.
    #[error("verifier misuse: {0}")]
    State(&'static str),
    /// The trust store failed.
    #[error("trust store: {0}")]
    Store(#[from] crate::store::TrustStoreError),
    /// The trust store holds no root (not provisioned).
    #[error("trust store: no trusted root provisioned")]
    NotProvisioned,
    /// The caller's fetch failed.
    #[error("fetching {file}: {reason}")]
    Fetch {
        /// File being fetched.
        file: String,
        /// The caller's error message.
        reason: String,
    },
    /// Building or signing metadata failed.
    #[error("signing side: {0}")]
    Build(String),
}

impl Error {
    pub(crate) fn json(what: impl Into<String>, e: impl core::fmt::Display) -> Self {
        Error::Json {
            what: what.into(),
            reason: e.to_string(),
        }
    }
}

/// Result alias.
pub type Result<T, E = Error> = core::result::Result<T, E>;
