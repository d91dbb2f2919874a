//! What verified metadata directs this Agent to install, and the trait that
//! turns signed [`UpdateMetadata`] into it.
//!
//! The Agent never trusts the Client: it hands the signed metadata the Client
//! forwarded to a [`MetadataVerifier`] (Uptane partial or full verification,
//! with keys pinned at provisioning) and acts only on the [`DirectedTarget`]
//! that comes back. The core re-checks the target's ECU serial, hardware id,
//! release counter and expiry itself, so a verifier bug in one of those
//! checks is caught twice.
//!
//! # One model
//!
//! The signed description of an image and its patches is
//! [`esync_package::package`]'s: a [`Component`] with its [`Artifact`] and
//! [`Delta`]s. The types here are not a second copy of it but a different
//! concept: what *verified metadata directs this ECU* to install, as the
//! Agent journals it. [`DirectedTarget`] adds what only the Director's
//! entry says (target name, ECU serial, the expiry of the metadata that
//! vouches for it) and keeps only the parts of the component the Agent acts
//! on (no device path, policy or dependencies, which are the Client's); the
//! chunk-list digests are optional because a verifier need not pin the
//! chunking (the Agent then relies on the image or patch hash alone).
//! [`DirectedTarget::from_component`] and `From<&Delta> for DeltaEntry`
//! are the one mapping from the model; every verifier builds targets with
//! them. The postcard layout of both types is part of the journal format
//! (pinned by a golden test): a change needs a new journal record version.
//!
//! `esync_uptane::uptane::DirectorTarget` is a third concept, the raw
//! Director targets entry (name, ECU, `TargetInfo` with its `custom` JSON)
//! before it is decoded into a package description.

use esync_package::package::{Artifact, Component, Delta};
use esync_proto::id::{EcuSerial, HardwareId, ReleaseCounter, Sha256Digest, SoftwareVersion};
use esync_proto::message::{Failure, PatchFormat, UpdateMetadata, VerificationLevel};
use serde::{Deserialize, Serialize};

/// A delta the signed metadata lists for the target: the journaled
/// projection of a package [`Delta`] (see the module docs).
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

impl From<&Delta> for DeltaEntry {
    fn from(d: &Delta) -> Self {
        DeltaEntry {
            format: d.format,
            from_version: d.from_version.clone(),
            source_sha256: d.source_sha256,
            patch_length: d.patch.length,
            patch_sha256: d.patch.sha256,
            chunk_list_digest: Some(d.patch.chunk_list_sha256),
        }
    }
}

/// The image verified metadata directs this ECU to install (see the module
/// docs for how it relates to a package [`Component`]).
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

impl DirectedTarget {
    /// The target for `component` that the Director's entry `target_name`
    /// directs to the ECU `ecu_serial` (with `hardware_id`), vouched for
    /// until `expires_ms`. The caller has checked that the entry and the
    /// component agree (hardware id, release counter, hashes).
    pub fn from_component(
        target_name: String,
        ecu_serial: EcuSerial,
        hardware_id: HardwareId,
        component: &Component,
        expires_ms: u64,
    ) -> Self {
        let Artifact {
            length,
            sha256,
            chunk_list_sha256,
            ..
        } = component.image;
        DirectedTarget {
            target_name,
            version: component.version.clone(),
            release_counter: component.release_counter,
            length,
            sha256,
            hardware_id,
            ecu_serial,
            chunk_list_digest: Some(chunk_list_sha256),
            deltas: component.deltas.iter().map(DeltaEntry::from).collect(),
            expires_ms,
        }
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;
    use esync_package::package::ComponentPolicy;
    use esync_proto::id::DevicePath;

    fn d(b: u8) -> Sha256Digest {
        Sha256Digest([b; 32])
    }

    fn component() -> Component {
        Component {
            device: DevicePath::new("/powertrain/ecm").unwrap(),
            hardware_id: HardwareId::new("ecm-hw-1").unwrap(),
            version: SoftwareVersion::new("2.0.0").unwrap(),
            release_counter: ReleaseCounter(2),
            image: Artifact {
                length: 4096,
                sha256: d(1),
                chunk_size: 1024,
                chunk_list_sha256: d(2),
            },
            deltas: vec![Delta {
                format: PatchFormat::BsdiffZstd,
                from_version: SoftwareVersion::new("1.0.0").unwrap(),
                source_length: 4000,
                source_sha256: d(3),
                patch: Artifact {
                    length: 300,
                    sha256: d(4),
                    chunk_size: 1024,
                    chunk_list_sha256: d(5),
                },
            }],
            depends_on: vec![],
            stage: 0,
            policy: ComponentPolicy::default(),
        }
    }

    fn target() -> DirectedTarget {
        DirectedTarget::from_component(
            "ecm-2.0.0.bin".into(),
            EcuSerial::new("ECM0001").unwrap(),
            HardwareId::new("ecm-hw-1").unwrap(),
            &component(),
            1_800_000_000_000,
        )
    }

    #[test]
    fn from_component_maps_every_field() {
        let t = target();
        assert_eq!(
            t,
            DirectedTarget {
                target_name: "ecm-2.0.0.bin".into(),
                version: SoftwareVersion::new("2.0.0").unwrap(),
                release_counter: ReleaseCounter(2),
                length: 4096,
                sha256: d(1),
                hardware_id: HardwareId::new("ecm-hw-1").unwrap(),
                ecu_serial: EcuSerial::new("ECM0001").unwrap(),
                chunk_list_digest: Some(d(2)),
                deltas: vec![DeltaEntry {
                    format: PatchFormat::BsdiffZstd,
                    from_version: SoftwareVersion::new("1.0.0").unwrap(),
                    source_sha256: d(3),
                    patch_length: 300,
                    patch_sha256: d(4),
                    chunk_list_digest: Some(d(5)),
                }],
                expires_ms: 1_800_000_000_000,
            }
        );
    }

    /// The journal embeds `DirectedTarget` with postcard: these are the
    /// bytes of today's journal format, which must keep decoding.
    #[test]
    fn journaled_layout_is_pinned() {
        let bytes = postcard::to_allocvec(&target()).unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, GOLDEN);
        let back: DirectedTarget = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, target());
    }

    const GOLDEN: &str = concat!(
        "0d65636d2d322e302e302e62696e05322e302e30028020010101010101010101",
        "01010101010101010101010101010101010101010101010865636d2d68772d31",
        "0745434d30303031010202020202020202020202020202020202020202020202",
        "020202020202020202010105312e302e30030303030303030303030303030303",
        "0303030303030303030303030303030303ac0204040404040404040404040404",
        "0404040404040404040404040404040404040401050505050505050505050505",
        "050505050505050505050505050505050505050580a0f1c2b134"
    );
}
