//! Agent configuration: identity, capabilities, limits and local policy.

use esync_proto::id::{DevicePath, EcuSerial, HardwareId};
use esync_proto::message::Criticality;
use esync_proto::precondition::{Precondition, PreconditionError};
use thiserror::Error;

use esync_package::chunk::ChunkLimits;

/// The configuration is not usable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A safety-critical Agent must have an install precondition.
    #[error("a safety-critical Agent needs an install precondition")]
    MissingPrecondition,
    /// The precondition does not parse.
    #[error("install precondition: {0}")]
    Precondition(#[from] PreconditionError),
    /// A limit is zero or out of range.
    #[error("configuration limit {0} is out of range")]
    Limit(&'static str),
}

/// Agent configuration.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// This Agent's device path.
    pub device: DevicePath,
    /// Hardware id of the device.
    pub hardware_id: HardwareId,
    /// ECU serial (Uptane ECU id).
    pub serial: EcuSerial,
    /// Criticality of the device's function.
    pub criticality: Criticality,
    /// Vehicle-state precondition the Agent checks itself before installing,
    /// whatever the Client says. Mandatory for safety-critical Agents.
    /// Evaluated against the device's signals; an evaluation error counts
    /// as "not met".
    pub install_precondition: Option<Precondition>,
    /// Memory the Agent gives to patching (advertised, and passed to the
    /// patch applier).
    pub max_patch_memory: u64,
    /// Install attempts per update; the last failed attempt is reported as a
    /// terminal failure.
    pub max_install_attempts: u32,
    /// Largest image (or patch) accepted.
    pub max_image_len: u64,
    /// Largest transfer chunk accepted (at most
    /// [`esync_package::chunk::MAX_CHUNK_SIZE`], at least
    /// [`esync_package::chunk::MIN_CHUNK_SIZE`], the smallest chunk accepted).
    pub max_chunk_size: u32,
    /// Most chunks in one transfer (bounds the journaled chunk list; at most
    /// [`esync_package::chunk::MAX_CHUNKS`]).
    pub max_chunks: u32,
    /// The transfer position is journaled at least every this many chunks
    /// (chunks after it are re-verified from staging on recovery).
    pub journal_every_chunks: u32,
    /// A progress report is sent every this many chunks.
    pub progress_every_chunks: u32,
    /// Bytes copied into the inactive slot per [`crate::Agent::poll`].
    pub write_quantum: usize,
    /// Rolls back automatically if the Client does not confirm an activated
    /// image within this time.
    pub confirm_timeout_ms: Option<u64>,
    /// Suggested delay in "do not disturb" answers.
    pub busy_retry_after_ms: u32,
    /// Key schemes the Agent's Uptane verifiers accept (default: all of
    /// [`esync_uptane::crypto::Scheme::ALL`]). Keys of other schemes are
    /// ignored like unknown key types, so they never count toward a
    /// Director (or Image) threshold and their verification cost is never
    /// paid. An ed25519-only Agent:
    /// `config.uptane_schemes = SchemeSet::only(Scheme::Ed25519);`.
    #[cfg(feature = "uptane")]
    pub uptane_schemes: esync_uptane::crypto::SchemeSet,
}

impl AgentConfig {
    /// A configuration with safe defaults for a normal-criticality Agent.
    pub fn new(device: DevicePath, hardware_id: HardwareId, serial: EcuSerial) -> Self {
        AgentConfig {
            device,
            hardware_id,
            serial,
            criticality: Criticality::Normal,
            install_precondition: None,
            max_patch_memory: 8 * 1024 * 1024,
            max_install_attempts: 3,
            max_image_len: 1 << 32,
            max_chunk_size: 256 * 1024,
            max_chunks: 65_536,
            journal_every_chunks: 16,
            progress_every_chunks: 16,
            write_quantum: 64 * 1024,
            confirm_timeout_ms: Some(15 * 60 * 1000),
            busy_retry_after_ms: 5_000,
            #[cfg(feature = "uptane")]
            uptane_schemes: esync_uptane::crypto::SchemeSet::ALL,
        }
    }

    /// The limits of the Uptane verifiers this Agent builds: the defaults of
    /// [`esync_uptane::repo::Limits`] with [`AgentConfig::uptane_schemes`].
    #[cfg(feature = "uptane")]
    pub fn uptane_limits(&self) -> esync_uptane::repo::Limits {
        esync_uptane::repo::Limits {
            schemes: self.uptane_schemes,
            ..esync_uptane::repo::Limits::default()
        }
    }

    /// Makes the Agent safety-critical with `precondition`, in the language
    /// of [`esync_proto::precondition`] (e.g.
    /// `speed == 0 && gear == "P" && battery_soc >= 40`).
    pub fn safety_critical(mut self, precondition: &str) -> Result<Self, ConfigError> {
        self.criticality = Criticality::SafetyCritical;
        self.install_precondition = Some(Precondition::parse(precondition)?);
        Ok(self)
    }

    /// The transfer limits: [`AgentConfig::max_chunk_size`] and
    /// [`AgentConfig::max_chunks`] narrow the protocol's bounds
    /// ([`esync_package::chunk`]; chunks are at least
    /// [`esync_package::chunk::MIN_CHUNK_SIZE`]) and may not widen them.
    pub fn chunk_limits(&self) -> Result<ChunkLimits, ConfigError> {
        ChunkLimits::new(self.max_chunk_size, u64::from(self.max_chunks))
            .map_err(|_| ConfigError::Limit("max_chunk_size/max_chunks"))
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.criticality == Criticality::SafetyCritical && self.install_precondition.is_none() {
            return Err(ConfigError::MissingPrecondition);
        }
        if self.max_install_attempts == 0 {
            return Err(ConfigError::Limit("max_install_attempts"));
        }
        self.chunk_limits()?;
        if self.journal_every_chunks == 0 || self.progress_every_chunks == 0 {
            return Err(ConfigError::Limit(
                "journal_every_chunks/progress_every_chunks",
            ));
        }
        if self.write_quantum == 0 || self.write_quantum > 16 * 1024 * 1024 {
            return Err(ConfigError::Limit("write_quantum"));
        }
        #[cfg(feature = "uptane")]
        if self.uptane_schemes.is_empty() {
            return Err(ConfigError::Limit("uptane_schemes"));
        }
        Ok(())
    }
}
