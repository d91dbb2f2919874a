//! Signed envelopes: every in-vehicle message is signed by its sender.
//!
//! # Wire form
//!
//! A frame (see [`crate::frame`]) whose body is the postcard encoding of
//! [`SignedEnvelope`]: the *signed bytes* (the postcard encoding of
//! [`Envelope`]: header and payload) and an ed25519 signature over
//!
//! ```text
//! b"esync-envelope-v1\0" || signed bytes
//! ```
//!
//! The signature covers the exact bytes received, so no re-encoding is
//! needed to verify it, and the domain-separation prefix keeps envelope
//! signatures from being valid for anything else signed with the same key.
//!
//! # Verification
//!
//! [`Verifier::open`] checks, in order: frame and body decode within limits;
//! protocol version; recipient (this receiver, a device prefix covering it, a
//! group it belongs to); sender's key known; signature
//! ([`ed25519_dalek::VerifyingKey::verify_strict`]); the sender may send this
//! message kind (only the Client commands Agents); timestamp within the
//! configured window around the injected current time; sequence number above
//! the last one accepted from this sender. Only a message that passes every
//! check updates the replay state.

use alloc::collections::BTreeMap;
use alloc::string::ToString;
use alloc::vec::Vec;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::{EnvelopeError, FrameError};
use crate::frame::{self, FrameLimits};
use crate::id::{CorrelationId, DevicePath, GroupName, ListenerName, SignatureBytes};
use crate::message::{Participant, Payload};

/// Version of the envelope protocol this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Domain-separation prefix of the envelope signature.
pub const SIGNING_CONTEXT: &[u8] = b"esync-envelope-v1\0";

/// Where an envelope goes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Recipient {
    /// The vehicle's Client.
    Client,
    /// Exactly one Agent.
    Device(DevicePath),
    /// Every Agent at or below this path (segment-wise prefix).
    DevicePrefix(DevicePath),
    /// Every member of a group (e.g. `update-listeners`).
    Group(GroupName),
    /// One listener.
    Listener(ListenerName),
}

impl core::fmt::Display for Recipient {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Recipient::Client => f.write_str("client"),
            Recipient::Device(p) => write!(f, "device:{p}"),
            Recipient::DevicePrefix(p) => write!(f, "devices:{p}/*"),
            Recipient::Group(g) => write!(f, "group:{g}"),
            Recipient::Listener(l) => write!(f, "listener:{l}"),
        }
    }
}

/// Routing and anti-replay information of an envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Header {
    /// Protocol version ([`PROTOCOL_VERSION`]).
    pub version: u8,
    /// Who sent it (and signed it).
    pub sender: Participant,
    /// Who it is for.
    pub recipient: Recipient,
    /// Sender's sequence number: strictly increasing per sender, across
    /// restarts (the sender persists its high-water mark).
    pub seq: u64,
    /// Sender's time (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// Correlates replies with requests.
    pub correlation: CorrelationId,
}

/// Header and payload: what the sender signs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Envelope {
    /// Routing and anti-replay data.
    pub header: Header,
    /// The message.
    pub payload: Payload,
}

/// The signed bytes of an [`Envelope`] and their signature: what travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct SignedEnvelope {
    /// postcard encoding of the [`Envelope`].
    pub signed: Vec<u8>,
    /// ed25519 signature over [`SIGNING_CONTEXT`] `||` `signed`.
    pub signature: SignatureBytes,
}

impl SignedEnvelope {
    /// Decodes a frame into a signed envelope, without verifying anything.
    pub fn from_frame(bytes: &[u8], limits: FrameLimits) -> Result<Self, FrameError> {
        frame::decode(bytes, limits)
    }

    /// Encodes into a frame.
    pub fn to_frame(&self, limits: FrameLimits) -> Result<Vec<u8>, FrameError> {
        frame::encode(self, limits)
    }

    /// Decodes the header **without verifying the signature**, for routing
    /// by a broker that checks the sender against the connection's identity.
    /// Never act on an unverified header beyond routing.
    pub fn unverified_header(&self) -> Result<Header, FrameError> {
        // Header is a prefix of the Envelope encoding.
        let (header, _) = postcard::take_from_bytes::<Header>(&self.signed)?;
        Ok(header)
    }

    /// Checks the signature with `key` and decodes the envelope. This is the
    /// signature check alone: recipient, permissions and replay are
    /// [`Verifier`]'s job.
    pub fn verify_signature(&self, key: &VerifyingKey) -> Result<Envelope, EnvelopeError> {
        let envelope: Envelope = frame::decode_body(&self.signed)?;
        let sig = ed25519_dalek::Signature::from_bytes(&self.signature.0);
        let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + self.signed.len());
        msg.extend_from_slice(SIGNING_CONTEXT);
        msg.extend_from_slice(&self.signed);
        key.verify_strict(&msg, &sig)
            .map_err(|_| EnvelopeError::BadSignature(envelope.header.sender.to_string()))?;
        Ok(envelope)
    }
}

/// Signs outgoing envelopes for one participant and numbers them.
pub struct EnvelopeSigner {
    me: Participant,
    key: SigningKey,
    next_seq: u64,
    limits: FrameLimits,
}

impl core::fmt::Debug for EnvelopeSigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EnvelopeSigner")
            .field("me", &self.me)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl EnvelopeSigner {
    /// A signer for `me` whose next sequence number is `next_seq`. The host
    /// must persist [`next_seq`](Self::next_seq) (or a value above it) and
    /// start again from there after a restart, or receivers drop its
    /// messages as replays.
    pub fn new(me: Participant, key: SigningKey, next_seq: u64, limits: FrameLimits) -> Self {
        EnvelopeSigner {
            me,
            key,
            next_seq,
            limits,
        }
    }

    /// The participant this signer speaks for.
    pub fn participant(&self) -> &Participant {
        &self.me
    }

    /// The public key receivers verify with.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Sequence number the next envelope will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Builds, signs and frames an envelope. `now_ms` is the host's clock.
    pub fn seal(
        &mut self,
        recipient: Recipient,
        correlation: CorrelationId,
        payload: Payload,
        now_ms: u64,
    ) -> Result<Vec<u8>, FrameError> {
        let signed = self.sign(recipient, correlation, payload, now_ms)?;
        signed.to_frame(self.limits)
    }

    /// Builds and signs an envelope without framing it.
    pub fn sign(
        &mut self,
        recipient: Recipient,
        correlation: CorrelationId,
        payload: Payload,
        now_ms: u64,
    ) -> Result<SignedEnvelope, FrameError> {
        let envelope = Envelope {
            header: Header {
                version: PROTOCOL_VERSION,
                sender: self.me.clone(),
                recipient,
                seq: self.next_seq,
                timestamp_ms: now_ms,
                correlation,
            },
            payload,
        };
        let signed = postcard::to_allocvec(&envelope)?;
        let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + signed.len());
        msg.extend_from_slice(SIGNING_CONTEXT);
        msg.extend_from_slice(&signed);
        let signature = SignatureBytes(self.key.sign(&msg).to_bytes());
        let out = SignedEnvelope { signed, signature };
        // Refuse to consume a sequence number for an envelope that cannot travel.
        let framed_len = postcard::experimental::serialized_size(&out)? as u64;
        if framed_len > self.limits.max_body as u64 {
            return Err(FrameError::TooLarge {
                declared: framed_len,
                max: self.limits.max_body,
            });
        }
        self.next_seq += 1;
        Ok(out)
    }
}

/// Looks up the verifying key of a participant (from provisioning, or from
/// the certificate of the connection it speaks on).
pub trait KeyResolver {
    /// The key `sender` signs with, if known.
    fn key_for(&self, sender: &Participant) -> Option<VerifyingKey>;
}

impl KeyResolver for BTreeMap<Participant, VerifyingKey> {
    fn key_for(&self, sender: &Participant) -> Option<VerifyingKey> {
        self.get(sender).copied()
    }
}

/// Who the receiver is, for recipient checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverIdentity {
    /// This receiver.
    pub me: Participant,
    /// Groups it belongs to.
    pub groups: Vec<GroupName>,
}

impl ReceiverIdentity {
    /// Whether an envelope to `recipient` is for this receiver.
    pub fn accepts(&self, recipient: &Recipient) -> bool {
        match (recipient, &self.me) {
            (Recipient::Client, Participant::Client) => true,
            (Recipient::Device(p), Participant::Device(me)) => p == me,
            (Recipient::DevicePrefix(p), Participant::Device(me)) => me.starts_with(p),
            (Recipient::Listener(l), Participant::Listener(me)) => l == me,
            (Recipient::Group(g), _) => self.groups.contains(g),
            _ => false,
        }
    }
}

/// Per-sender highest accepted sequence number. Persist it with
/// [`ReplayGuard::entries`] and restore with [`ReplayGuard::restore`] to keep
/// replay protection across restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayGuard {
    last: BTreeMap<Participant, u64>,
}

impl ReplayGuard {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores persisted state.
    pub fn restore(entries: impl IntoIterator<Item = (Participant, u64)>) -> Self {
        ReplayGuard {
            last: entries.into_iter().collect(),
        }
    }

    /// The persisted form.
    pub fn entries(&self) -> impl Iterator<Item = (&Participant, u64)> {
        self.last.iter().map(|(p, s)| (p, *s))
    }

    /// Highest sequence number accepted from `sender`.
    pub fn last(&self, sender: &Participant) -> Option<u64> {
        self.last.get(sender).copied()
    }

    /// Fails if `seq` is not above the last accepted from `sender`.
    pub fn check(&self, sender: &Participant, seq: u64) -> Result<(), EnvelopeError> {
        match self.last.get(sender) {
            Some(&last) if seq <= last => Err(EnvelopeError::Replay {
                sender: sender.to_string(),
                seq,
                last,
            }),
            _ => Ok(()),
        }
    }

    /// Records `seq` as accepted (call only after every other check passed).
    pub fn accept(&mut self, sender: &Participant, seq: u64) {
        let e = self.last.entry(sender.clone()).or_insert(seq);
        if seq > *e {
            *e = seq;
        }
    }
}

/// A verified, decoded envelope.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    /// Its header (sender authenticated).
    pub header: Header,
    /// Its payload.
    pub payload: Payload,
}

/// Verifies incoming envelopes for one receiver.
#[derive(Clone, Debug)]
pub struct Verifier {
    identity: ReceiverIdentity,
    replay: ReplayGuard,
    limits: FrameLimits,
    /// Accepted distance between the sender's timestamp and `now`, in ms.
    max_skew_ms: Option<u64>,
}

impl Verifier {
    /// A verifier for `identity`, with no timestamp window (sequence numbers
    /// alone stop replays; see [`with_max_skew`](Self::with_max_skew)).
    pub fn new(identity: ReceiverIdentity, limits: FrameLimits) -> Self {
        Verifier {
            identity,
            replay: ReplayGuard::new(),
            limits,
            max_skew_ms: None,
        }
    }

    /// Also refuses envelopes whose timestamp is more than `ms` away from the
    /// receiver's injected time.
    pub fn with_max_skew(mut self, ms: u64) -> Self {
        self.max_skew_ms = Some(ms);
        self
    }

    /// Starts from persisted replay state.
    pub fn with_replay_state(mut self, replay: ReplayGuard) -> Self {
        self.replay = replay;
        self
    }

    /// Replay state, to persist.
    pub fn replay_state(&self) -> &ReplayGuard {
        &self.replay
    }

    /// The receiver's identity.
    pub fn identity(&self) -> &ReceiverIdentity {
        &self.identity
    }

    /// Decodes and verifies a frame. See the module docs for the checks.
    pub fn open(
        &mut self,
        frame_bytes: &[u8],
        keys: &dyn KeyResolver,
        now_ms: u64,
    ) -> Result<Verified, EnvelopeError> {
        let signed = SignedEnvelope::from_frame(frame_bytes, self.limits)?;
        self.open_signed(&signed, keys, now_ms)
    }

    /// Verifies an already-decoded [`SignedEnvelope`].
    pub fn open_signed(
        &mut self,
        signed: &SignedEnvelope,
        keys: &dyn KeyResolver,
        now_ms: u64,
    ) -> Result<Verified, EnvelopeError> {
        if let Some(&v) = signed.signed.first() {
            if v != PROTOCOL_VERSION {
                return Err(EnvelopeError::UnsupportedVersion(v));
            }
        }
        let header = signed.unverified_header()?;
        if !self.identity.accepts(&header.recipient) {
            return Err(EnvelopeError::WrongRecipient(header.recipient.to_string()));
        }
        let key = keys
            .key_for(&header.sender)
            .ok_or_else(|| EnvelopeError::UnknownSender(header.sender.to_string()))?;
        let envelope = signed.verify_signature(&key)?;
        let header = envelope.header;
        let payload = envelope.payload;
        if !payload.allowed_senders().admits(&header.sender) {
            return Err(EnvelopeError::NotAllowed {
                sender: header.sender.to_string(),
                kind: payload.kind(),
            });
        }
        if let Some(skew) = self.max_skew_ms {
            if header.timestamp_ms.abs_diff(now_ms) > skew {
                return Err(EnvelopeError::Stale {
                    timestamp_ms: header.timestamp_ms,
                    now_ms,
                });
            }
        }
        self.replay.check(&header.sender, header.seq)?;
        self.replay.accept(&header.sender, header.seq);
        Ok(Verified { header, payload })
    }
}
