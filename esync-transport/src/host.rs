//! Sans-I/O helpers for host transports (CAN-TP, DoIP, SOME/IP, a serial
//! line): the host receives bytes however it does and pushes them here; out
//! come complete esync-proto envelope frames for the Agent core, which
//! verifies them with its `Verifier` exactly as if they had come over the
//! broker.
//!
//! ```
//! use esync_proto::frame::{self, FrameLimits};
//! use esync_transport::host::FrameReassembler;
//!
//! let limits = FrameLimits::default();
//! let frame = frame::wrap(b"an envelope body", limits).unwrap();
//! let mut r = FrameReassembler::new(limits);
//! // e.g. two CAN-TP segments
//! let (a, b) = frame.split_at(3);
//! assert!(r.push(a).unwrap().is_empty());
//! let frames = r.push(b).unwrap();
//! assert_eq!(frames, vec![frame]);
//! // then: verifier.open(&frames[0], &keys, now_ms)
//! ```
//!
//! A host that runs the Agent's tokio runtime over its bus implements
//! [`FrameTransport`](crate::FrameTransport) instead (its `recv_raw` can use
//! a reassembler like this one) and gets the same frame checks as the
//! built-in transports through [`Transport`](crate::Transport).
//!
//! Outgoing frames from the Agent core (`EnvelopeSigner::seal`) are already
//! complete frames: the host writes them as they are (segmenting as its
//! transport requires). Memory stays bounded: a header declaring a body
//! larger than the limits is refused before its body is buffered, and the
//! stream must then be reset (the reassembler keeps failing until
//! [`FrameReassembler::reset`]).

use esync_proto::frame::{self, FrameDecoder, FrameLimits};
use esync_proto::FrameError;

/// Reassembles envelope frames from a byte stream.
#[derive(Debug)]
pub struct FrameReassembler {
    limits: FrameLimits,
    decoder: FrameDecoder,
    max_frames_per_push: usize,
}

impl FrameReassembler {
    /// A reassembler for frames within `limits`.
    pub fn new(limits: FrameLimits) -> Self {
        FrameReassembler {
            limits,
            decoder: FrameDecoder::new(limits),
            max_frames_per_push: 1024,
        }
    }

    /// Pushes received bytes and returns the frames they complete (at most
    /// 1024 per call; the rest stay buffered for the next call).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
        self.decoder.push(bytes);
        let mut out = Vec::new();
        while out.len() < self.max_frames_per_push {
            match self.decoder.next_body()? {
                Some(body) => out.push(frame::wrap(&body, self.limits)?),
                None => break,
            }
        }
        Ok(out)
    }

    /// Bytes buffered and not yet part of a complete frame.
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }

    /// Drops buffered bytes and any error state (after the host transport
    /// re-established its stream).
    pub fn reset(&mut self) {
        self.decoder = FrameDecoder::new(self.limits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_header_fails_until_reset() {
        let limits = FrameLimits::new(8);
        let mut r = FrameReassembler::new(limits);
        assert!(r.push(&[1, 0, 0, 1, 0]).is_err());
        assert!(r.push(&[]).is_err());
        r.reset();
        let f = frame::wrap(b"ok", limits).unwrap();
        assert_eq!(r.push(&f).unwrap(), vec![f]);
        assert_eq!(r.buffered(), 0);
    }
}
