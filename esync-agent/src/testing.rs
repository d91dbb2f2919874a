//! Helpers for tests of the Agent core. **Nothing here verifies anything.**

use esync_proto::id::UpdateId;
use esync_proto::message::{
    ErrorClass, Failure, FailureCode, MetadataRole, RoleBytes, UpdateMetadata, VerificationLevel,
};

use crate::target::{DirectedTarget, EcuIdentity, MetadataVerifier};

/// A [`MetadataVerifier`] that performs **no verification at all**: it
/// decodes a [`DirectedTarget`] (postcard) from the Director `targets` role
/// bytes made by [`dangerous_unsigned_metadata`]. It exists so the Agent's
/// state machine can be tested without a signing repository; a device must
/// use a real Uptane verifier. The Agent core still checks the target's ECU
/// serial, hardware id, release counter and expiry itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct DangerousUnverifiedMetadata;

/// Largest encoded target accepted by [`DangerousUnverifiedMetadata`].
const MAX_TARGET_BYTES: usize = 64 * 1024;

impl MetadataVerifier for DangerousUnverifiedMetadata {
    fn level(&self) -> VerificationLevel {
        VerificationLevel::Partial
    }

    fn verify(
        &mut self,
        metadata: &UpdateMetadata,
        _ecu: &EcuIdentity,
        _now_ms: u64,
    ) -> Result<DirectedTarget, Failure> {
        let bad = |m: &str| Failure {
            class: ErrorClass::UpdateIncapable,
            code: FailureCode::MetadataInvalid,
            message: m.into(),
        };
        let role = metadata
            .director
            .iter()
            .find(|r| r.role == MetadataRole::Targets)
            .ok_or_else(|| bad("no director targets"))?;
        if role.json.len() > MAX_TARGET_BYTES {
            return Err(bad("director targets too large"));
        }
        postcard::from_bytes(&role.json).map_err(|_| bad("director targets malformed"))
    }
}

/// Unsigned metadata that [`DangerousUnverifiedMetadata`] accepts.
pub fn dangerous_unsigned_metadata(update_id: UpdateId, target: &DirectedTarget) -> UpdateMetadata {
    UpdateMetadata {
        update_id,
        director: vec![RoleBytes {
            role: MetadataRole::Targets,
            json: postcard::to_allocvec(target).unwrap_or_default(),
        }],
        image: Vec::new(),
    }
}
