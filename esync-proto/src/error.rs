//! Errors of the protocol crate. None of them carries key material.

use alloc::string::String;
use thiserror::Error;

/// A value is not a valid identity or name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum IdError {
    /// The value's length is outside the allowed range.
    #[error("{kind}: length {got} outside {min}..={max}")]
    Length {
        /// What was being validated.
        kind: &'static str,
        /// Minimum length in bytes.
        min: usize,
        /// Maximum length in bytes.
        max: usize,
        /// Length received.
        got: usize,
    },
    /// A byte is not allowed.
    #[error("{kind}: character not allowed at byte {position}")]
    Character {
        /// What was being validated.
        kind: &'static str,
        /// Byte offset of the first bad character.
        position: usize,
    },
    /// The value is malformed.
    #[error("{kind}: {reason}")]
    Format {
        /// What was being validated.
        kind: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// A frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame's version byte is not one this implementation speaks.
    #[error("unsupported frame version {0}")]
    UnsupportedVersion(u8),
    /// The declared length exceeds the configured maximum.
    #[error("frame length {declared} exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Length declared by the frame header (or of the value to encode).
        declared: u64,
        /// Configured maximum.
        max: u32,
    },
    /// More bytes are needed to complete the frame.
    #[error("incomplete frame: need {needed} more bytes")]
    Incomplete {
        /// Bytes still missing (at least).
        needed: usize,
    },
    /// Bytes remain after a complete frame where none were expected.
    #[error("{0} trailing bytes after the frame")]
    Trailing(usize),
    /// The body is not a valid postcard encoding of the expected type.
    #[error("malformed frame body: {0}")]
    Body(#[from] postcard::Error),
}

/// An envelope failed verification. Each variant names the check that failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The envelope speaks a protocol version this implementation does not.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// No key is known for the sender named in the envelope.
    #[error("unknown sender {0}")]
    UnknownSender(String),
    /// The signature does not verify with the sender's key (wrong signer or
    /// tampered content).
    #[error("bad signature from {0}")]
    BadSignature(String),
    /// The sequence number is not above the last one accepted from this sender.
    #[error("replayed or stale sequence number {seq} from {sender} (last accepted {last})")]
    Replay {
        /// Sender named in the envelope.
        sender: String,
        /// Sequence number received.
        seq: u64,
        /// Highest sequence number accepted so far.
        last: u64,
    },
    /// The envelope is addressed to someone else.
    #[error("envelope addressed to {0}, not to this receiver")]
    WrongRecipient(String),
    /// The timestamp is outside the accepted window around the receiver's clock.
    #[error("timestamp {timestamp_ms} ms is outside the window around now ({now_ms} ms)")]
    Stale {
        /// Timestamp in the envelope.
        timestamp_ms: u64,
        /// The receiver's injected current time.
        now_ms: u64,
    },
    /// The sender may not send this kind of message (e.g. an Agent issuing a
    /// command only the Client may issue).
    #[error("{sender} is not allowed to send {kind}")]
    NotAllowed {
        /// Sender named in the envelope.
        sender: String,
        /// Message kind.
        kind: &'static str,
    },
    /// The envelope could not be decoded.
    #[error(transparent)]
    Frame(#[from] FrameError),
}
