//! Framing of the built-in broker link, sans-I/O.
//!
//! The link carries esync-proto frames whose body starts with a one-byte tag:
//!
//! ```text
//! +---------+-------------+-----+----------------------------------------+
//! | version | length (BE) | tag | rest                                   |
//! +---------+-------------+-----+----------------------------------------+
//!  tag 0: rest is the body of an envelope frame (postcard SignedEnvelope)
//!  tag 1: rest is postcard Vec<GroupName>: replace my group subscriptions
//! ```
//!
//! An envelope frame becomes a link frame by inserting the tag after the
//! header, and back by removing it: the signed bytes are never touched, so
//! the broker forwards exactly what the sender signed. The link's frame limit
//! is the envelope limit plus one byte.

use esync_proto::frame::{self, FrameLimits, HEADER_LEN};
use esync_proto::id::GroupName;
use esync_proto::FrameError;

/// Tag of a link frame carrying an envelope.
pub const TAG_ENVELOPE: u8 = 0;
/// Tag of a link frame replacing the sender's group subscriptions.
pub const TAG_SUBSCRIBE: u8 = 1;

/// One message of the broker link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkMessage {
    /// An envelope frame (esync-proto frame of a `SignedEnvelope`).
    Envelope(Vec<u8>),
    /// New group subscriptions.
    Subscribe(Vec<GroupName>),
}

/// Limits of the link for envelopes up to `limits`.
pub fn link_limits(limits: FrameLimits) -> FrameLimits {
    FrameLimits::new(limits.max_body.saturating_add(1))
}

/// Link frame for an envelope frame.
pub fn envelope_to_link(envelope_frame: &[u8], limits: FrameLimits) -> Result<Vec<u8>, FrameError> {
    let (body, rest) = frame::split(envelope_frame, limits)?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing(rest.len()));
    }
    let mut out = Vec::with_capacity(envelope_frame.len() + 1);
    out.push(frame::FRAME_VERSION);
    // body.len() <= max_body < u32::MAX, so + 1 fits.
    out.extend_from_slice(&((body.len() as u32) + 1).to_be_bytes());
    out.push(TAG_ENVELOPE);
    out.extend_from_slice(body);
    Ok(out)
}

/// Link frame for a subscription change.
pub fn subscribe_to_link(groups: &[GroupName], limits: FrameLimits) -> Result<Vec<u8>, FrameError> {
    let mut body = vec![TAG_SUBSCRIBE];
    body = postcard::to_extend(groups, body)?;
    frame::wrap(&body, link_limits(limits))
}

/// Envelope frame for a link-frame body whose tag is [`TAG_ENVELOPE`]
/// (the body as returned by a `FrameDecoder` with [`link_limits`]).
pub fn link_body_to_envelope_frame(body: &[u8]) -> Option<Vec<u8>> {
    let (&tag, rest) = body.split_first()?;
    if tag != TAG_ENVELOPE {
        return None;
    }
    let mut out = Vec::with_capacity(HEADER_LEN + rest.len());
    out.push(frame::FRAME_VERSION);
    out.extend_from_slice(&(rest.len() as u32).to_be_bytes());
    out.extend_from_slice(rest);
    Some(out)
}

/// Parses a link-frame body (as returned by a `FrameDecoder` configured with
/// [`link_limits`]).
pub fn parse_link_body(body: &[u8]) -> Result<LinkMessage, FrameError> {
    match body.first() {
        Some(&TAG_ENVELOPE) => Ok(LinkMessage::Envelope(
            link_body_to_envelope_frame(body)
                .ok_or(FrameError::UnsupportedVersion(TAG_ENVELOPE))?,
        )),
        Some(&TAG_SUBSCRIBE) => {
            let groups: Vec<GroupName> = frame::decode_body(&body[1..])?;
            Ok(LinkMessage::Subscribe(groups))
        }
        // An unknown tag is reported like an unknown version: the stream is
        // not one this implementation speaks.
        Some(&t) => Err(FrameError::UnsupportedVersion(t)),
        None => Err(FrameError::Incomplete { needed: 1 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use esync_proto::frame::FrameDecoder;

    #[test]
    fn envelope_round_trips_through_link_unchanged() {
        let limits = FrameLimits::new(64);
        let env = frame::wrap(b"signed-bytes", limits).unwrap();
        let link = envelope_to_link(&env, limits).unwrap();
        let sub = subscribe_to_link(&[GroupName::new("presence").unwrap()], limits).unwrap();
        let mut d = FrameDecoder::new(link_limits(limits));
        d.push(&link);
        d.push(&sub);
        let b1 = d.next_body().unwrap().unwrap();
        assert_eq!(parse_link_body(&b1).unwrap(), LinkMessage::Envelope(env));
        let b2 = d.next_body().unwrap().unwrap();
        assert_eq!(
            parse_link_body(&b2).unwrap(),
            LinkMessage::Subscribe(vec![GroupName::new("presence").unwrap()])
        );
        assert!(parse_link_body(&[9, 1, 2]).is_err());
        assert!(parse_link_body(&[]).is_err());
        // An envelope larger than the limit cannot be linked.
        let big = frame::wrap(&[0u8; 65], FrameLimits::new(100)).unwrap();
        assert!(envelope_to_link(&big, limits).is_err());
    }
}
