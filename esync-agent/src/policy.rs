//! The download-consent hook.

use esync_proto::message::{Decision, DownloadOffer, Signal};
use esync_proto::precondition::Precondition;

use crate::target::DirectedTarget;

/// Decides whether this Agent consents to download an offered update.
pub trait ConsentPolicy {
    /// Consent, deny or postpone `offer` for the verified `target`, given
    /// the vehicle `signals` at `now_ms`.
    fn decide(
        &mut self,
        offer: &DownloadOffer,
        target: &DirectedTarget,
        signals: &[Signal],
        now_ms: u64,
    ) -> Decision;
}

/// Consents to every offer that matches verified metadata.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysConsent;

impl ConsentPolicy for AlwaysConsent {
    fn decide(&mut self, _: &DownloadOffer, _: &DirectedTarget, _: &[Signal], _: u64) -> Decision {
        Decision::Consent
    }
}

/// Consents while a precondition over the vehicle signals holds (e.g.
/// `battery_soc >= 30`), postpones by `postpone_ms` otherwise (also when it
/// cannot be evaluated: a missing or mistyped signal), and denies offers
/// larger than `max_bytes`.
#[derive(Clone, Debug)]
pub struct PreconditionConsent {
    /// Condition for consent.
    pub condition: Precondition,
    /// How long to postpone when it does not hold.
    pub postpone_ms: u64,
    /// Largest download consented to.
    pub max_bytes: u64,
}

impl ConsentPolicy for PreconditionConsent {
    fn decide(
        &mut self,
        offer: &DownloadOffer,
        _: &DirectedTarget,
        signals: &[Signal],
        now_ms: u64,
    ) -> Decision {
        let size = match &offer.encoding {
            esync_proto::message::ImageEncoding::Full => offer.length,
            esync_proto::message::ImageEncoding::Delta { patch_length, .. } => *patch_length,
        };
        if size > self.max_bytes {
            return Decision::Deny {
                reason: format!(
                    "download of {size} bytes exceeds the local limit of {}",
                    self.max_bytes
                ),
            };
        }
        match self.condition.eval(signals) {
            Ok(true) => Decision::Consent,
            _ => Decision::Postpone {
                until_ms: now_ms.saturating_add(self.postpone_ms),
            },
        }
    }
}
