//! # esync-transport
//!
//! How esync-proto frames travel between the Client and its Agents and
//! listeners. Every frame a transport carries is an esync-proto frame holding
//! a [`SignedEnvelope`](esync_proto::SignedEnvelope) signed by its sender; a
//! transport never signs, re-signs or alters one. Receivers verify end to end
//! with [`esync_proto::envelope::Verifier`], which they own outside the
//! transport, so its replay state survives reconnections.
//!
//! [`Transport`] is what the Client and Agent runtimes use: a wrapper around
//! any [`FrameTransport`] (the plug-in trait, in [`transport`]) that runs the
//! checks shared by every transport in one place (every frame in and out is
//! one esync-proto frame within the [`FrameLimits`](esync_proto::frame::FrameLimits),
//! at most [`MAX_GROUPS`] groups). Built-in implementations:
//!
//! | type | what | where |
//! | --- | --- | --- |
//! | [`BrokerTransport`] | link to the broker embedded in the Client: TCP with mutual TLS, automatic reconnection with backoff that re-subscribes | [`broker_link`] |
//! | [`MqttTransport`] | through an existing MQTT broker (Mosquitto), QoS 1; topics and presence in [`mqtt`] | [`mqtt`] |
//! | [`ChannelTransport`] | in-process, bounded tokio channels, for tests and for the Client's own endpoint on its embedded broker | [`channel`] |
//!
//! For example `Transport::boxed(BrokerTransport::connect(config))`.
//!
//! Common operations: [`Transport::send`] a frame (routed by the recipient in
//! its header), [`Transport::recv`] the next [`Incoming`] (a frame, a
//! presence change, or a notice that the link reconnected), and
//! [`Transport::subscribe`] to groups (`Recipient::Group`).
//!
//! What a transport signs itself (MQTT presence markers) is stamped with the
//! [`WallClock`] of its configuration ([`clock`]).
//!
//! The routing rules shared by the in-process hub and the embedded broker are
//! sans-I/O, in [`routing`]. The link framing of the built-in broker protocol
//! is in [`link`].
//!
//! ## Host transports (CAN-TP, DoIP, SOME/IP)
//!
//! An Agent whose host already has a transport does not need any of the
//! above: the Agent core consumes esync-proto frames, and [`host`] turns a
//! byte stream (CAN-TP reassembled payloads, a DoIP diagnostic message
//! stream, a SOME/IP byte field) into complete frames with
//! [`esync_proto::frame::FrameDecoder`], bounded by the frame limits before
//! any body byte is buffered. See [`host::FrameReassembler`].

#![forbid(unsafe_code)]

pub mod broker_link;
pub mod channel;
pub mod clock;
pub mod host;
pub mod link;
pub mod mqtt;
pub mod routing;
pub mod transport;

use std::sync::{Arc, Mutex};

use esync_proto::envelope::EnvelopeSigner;
use esync_proto::message::{Participant, PresenceState};
use esync_proto::FrameError;

pub use broker_link::{BrokerLinkConfig, BrokerTransport};
pub use channel::{ChannelHub, ChannelPeer, ChannelTransport, Outbound};
pub use clock::WallClock;
pub use mqtt::{MqttConfig, MqttPresence, MqttTransport};
pub use transport::{
    BoxFuture, CheckStats, CheckedFrame, FrameSender, FrameSink, FrameTransport, Transport,
};

/// A participant's envelope signer shared between its runtime and the parts
/// of a transport or broker that sign on its behalf (presence markers), so
/// that there is one sequence-number space per participant.
pub type SharedSigner = Arc<Mutex<EnvelopeSigner>>;

/// Something a transport received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// An esync-proto frame holding a signed envelope; not yet verified:
    /// hand it to the receiver's `Verifier`.
    Frame(Vec<u8>),
    /// A participant connected or disconnected. Delivered to the Client only,
    /// and only by sources it trusts: its own embedded broker (in-process),
    /// or, over MQTT, a presence marker whose signature and sequence number
    /// were verified (see [`mqtt`]).
    Presence(PresenceEvent),
    /// The link was re-established and subscriptions were restored. Messages
    /// sent while it was down may have been lost; sequence numbers and the
    /// receiver's replay state are unaffected.
    Reconnected,
}

/// A presence change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceEvent {
    /// Whose presence changed.
    pub participant: Participant,
    /// New state.
    pub state: PresenceState,
}

/// A transport failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The transport was closed (its background task ended).
    #[error("transport closed")]
    Closed,
    /// The frame to send is not one esync-proto frame within the limits
    /// (or, where the transport routes by its header, not an envelope).
    #[error("invalid frame to send: {0}")]
    Frame(#[from] FrameError),
    /// The MQTT client refused a request.
    #[error("mqtt request failed: {0}")]
    Mqtt(String),
    /// A configuration value is invalid.
    #[error("invalid transport configuration: {0}")]
    Config(&'static str),
    /// Too many groups were subscribed.
    #[error("too many groups: {got} (at most {max})")]
    TooManyGroups {
        /// Groups requested.
        got: usize,
        /// Maximum allowed.
        max: usize,
    },
}

/// Maximum number of groups one connection may subscribe to.
pub const MAX_GROUPS: usize = 32;
