//! What verified metadata directs this Agent to install, and the trait that
//! turns signed [`UpdateMetadata`] into it.
//!
//! The Agent never trusts the Client: it hands the signed metadata the Client
//! forwarded to a [`MetadataVerifier`] (Uptane partial or full verification,
//! with keys pinned at provisioning) and acts only on the [`DirectedTarget`]
//! that comes back. The core re-checks the target's ECU serial, hardware id,
//! release counter and expiry itself, so a verifier bug in one of those
//! checks is caught twice.

use esync_proto::id::{EcuSerial, HardwareId, ReleaseCounter, Sha256Digest, SoftwareVersion};
use esync_proto::message::{Failure, PatchFormat, UpdateMetadata, VerificationLevel};
use serde::{Deserialize, Serialize};

/// A delta the signed metadata lists for the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaEntry {
    /// Patch format.
    pub format: PatchFormat,
    /// Version the patch applies to.
    pub from_version: SoftwareVersion,
    /// SHA-256 of the source image.
    pub source_sha256: Sha256Digest,
    /// Length of the patch.
    pub patch_length: u64,
    /// SHA-256 of the patch.
    pub patch_sha256: Sha256Digest,
    /// SHA-256 of the concatenated chunk hashes of the patch transfer, if
    /// the metadata pins the chunking.
    pub chunk_list_digest: Option<Sha256Digest>,
}

/// The image verified metadata directs this ECU to install.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectedTarget {
    /// Target name in the metadata.
    pub target_name: String,
    /// Version.
    pub version: SoftwareVersion,
    /// Anti-rollback release counter.
    pub release_counter: ReleaseCounter,
    /// Image length in bytes.
    pub length: u64,
    /// SHA-256 of the image.
    pub sha256: Sha256Digest,
    /// Hardware id the image is built for.
    pub hardware_id: HardwareId,
    /// ECU serial the Director addressed.
    pub ecu_serial: EcuSerial,
    /// SHA-256 of the concatenated chunk hashes of the full-image transfer,
    /// if the metadata pins the chunking.
    pub chunk_list_digest: Option<Sha256Digest>,
    /// Deltas listed for this target.
    pub deltas: Vec<DeltaEntry>,
    /// The earliest expiry of the metadata that vouches for it (ms since the
    /// Unix epoch).
    pub expires_ms: u64,
}

/// Who this Agent is, for the verifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcuIdentity {
    /// This ECU's serial (Uptane ECU id).
    pub serial: EcuSerial,
    /// This ECU's hardware id.
    pub hardware_id: HardwareId,
    /// Release counter of the installed image.
    pub installed_release_counter: ReleaseCounter,
}

/// Turns signed update metadata into a verified [`DirectedTarget`].
///
/// Implementations keep their trusted state (pinned root keys, last seen
/// versions) themselves and must never let versions or time go backwards.
pub trait MetadataVerifier {
    /// The verification this implementation performs (reported in the
    /// inventory).
    fn level(&self) -> VerificationLevel;

    /// Verifies `metadata` for `ecu` at `now_ms` and returns the target it
    /// directs this ECU to install. A refusal is a classified [`Failure`]
    /// (`MetadataInvalid`, `MetadataExpired`, `NotDirected`,
    /// `HardwareMismatch`, `ReleaseCounterRollback`, ...).
    fn verify(
        &mut self,
        metadata: &UpdateMetadata,
        ecu: &EcuIdentity,
        now_ms: u64,
    ) -> Result<DirectedTarget, Failure>;
}
