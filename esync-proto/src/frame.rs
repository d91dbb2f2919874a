//! The frame format: how any protocol value travels as bytes.
//!
//! ```text
//! +---------+----------------------+-------------------------+
//! | version | length (u32, big-end)| body (postcard, length) |
//! | 1 byte  | 4 bytes              | `length` bytes          |
//! +---------+----------------------+-------------------------+
//! ```
//!
//! The version byte is [`FRAME_VERSION`]. The length is checked against a
//! configured maximum ([`FrameLimits`]) *before* any byte of the body is
//! buffered or decoded, so a hostile peer cannot make a receiver allocate
//! more than the limit. Decoding is total: every byte string yields a value
//! or a [`FrameError`], never a panic.

use alloc::vec::Vec;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::FrameError;

/// Version byte of the frame format this crate writes and reads.
pub const FRAME_VERSION: u8 = 1;
/// Bytes of frame header (version byte and length).
pub const HEADER_LEN: usize = 5;
/// Default maximum body length: 1 MiB, enough for a 256 KiB transfer chunk
/// with generous room for the envelope.
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;

/// Size limits for frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// Maximum body length in bytes.
    pub max_body: u32,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_body: DEFAULT_MAX_FRAME,
        }
    }
}

impl FrameLimits {
    /// Limits with the given maximum body length.
    pub const fn new(max_body: u32) -> Self {
        FrameLimits { max_body }
    }
}

/// Encodes `value` with postcard and wraps it in a frame.
pub fn encode<T: Serialize + ?Sized>(
    value: &T,
    limits: FrameLimits,
) -> Result<Vec<u8>, FrameError> {
    let mut out = alloc::vec![0u8; HEADER_LEN];
    let mut out = postcard::to_extend(value, core::mem::take(&mut out))?;
    let body_len = out.len() - HEADER_LEN;
    if body_len as u64 > limits.max_body as u64 {
        return Err(FrameError::TooLarge {
            declared: body_len as u64,
            max: limits.max_body,
        });
    }
    out[0] = FRAME_VERSION;
    // body_len <= max_body: u32, so the cast is lossless.
    out[1..HEADER_LEN].copy_from_slice(&(body_len as u32).to_be_bytes());
    Ok(out)
}

/// Wraps already-encoded body bytes in a frame.
pub fn wrap(body: &[u8], limits: FrameLimits) -> Result<Vec<u8>, FrameError> {
    if body.len() as u64 > limits.max_body as u64 {
        return Err(FrameError::TooLarge {
            declared: body.len() as u64,
            max: limits.max_body,
        });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(FRAME_VERSION);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// Reads a frame header: returns the body length once the header is valid.
fn header(bytes: &[u8], limits: FrameLimits) -> Result<usize, FrameError> {
    let Some(&version) = bytes.first() else {
        return Err(FrameError::Incomplete { needed: HEADER_LEN });
    };
    if version != FRAME_VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    let Some(len_bytes) = bytes.get(1..HEADER_LEN) else {
        return Err(FrameError::Incomplete {
            needed: HEADER_LEN - bytes.len(),
        });
    };
    let mut be = [0u8; 4];
    be.copy_from_slice(len_bytes);
    let len = u32::from_be_bytes(be);
    if len > limits.max_body {
        return Err(FrameError::TooLarge {
            declared: len as u64,
            max: limits.max_body,
        });
    }
    Ok(len as usize)
}

/// Splits one frame off the front of `bytes`: returns its body and the bytes
/// after it.
pub fn split(bytes: &[u8], limits: FrameLimits) -> Result<(&[u8], &[u8]), FrameError> {
    let len = header(bytes, limits)?;
    let rest = &bytes[HEADER_LEN..];
    if rest.len() < len {
        return Err(FrameError::Incomplete {
            needed: len - rest.len(),
        });
    }
    Ok(rest.split_at(len))
}

/// Decodes exactly one frame holding a `T`; trailing bytes, inside the body
/// or after the frame, are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limits: FrameLimits) -> Result<T, FrameError> {
    let (body, rest) = split(bytes, limits)?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing(rest.len()));
    }
    decode_body(body)
}

/// Decodes a frame body holding a `T`, refusing trailing bytes.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let (value, rest) = postcard::take_from_bytes(body)?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing(rest.len()));
    }
    Ok(value)
}

/// Reassembles frames from a byte stream (TCP, a serial link, CAN-TP).
///
/// Bytes are pushed as they arrive; complete frame bodies are popped. The
/// internal buffer never holds more than one header plus the maximum body
/// plus whatever [`push`](Self::push) is handed beyond that in one call, and
/// a header declaring too large a body is refused before its body arrives.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    limits: FrameLimits,
    buf: Vec<u8>,
    failed: bool,
}

impl FrameDecoder {
    /// A decoder with the given limits.
    pub fn new(limits: FrameLimits) -> Self {
        FrameDecoder {
            limits,
            buf: Vec::new(),
            failed: false,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Pops the next complete frame body, `Ok(None)` if more bytes are
    /// needed. After an error the stream is out of sync and every later call
    /// returns the same kind of error: the connection should be closed.
    pub fn next_body(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.failed {
            return Err(FrameError::UnsupportedVersion(
                self.buf.first().copied().unwrap_or(0),
            ));
        }
        match split(&self.buf, self.limits) {
            Ok((body, _)) => {
                let body = body.to_vec();
                self.buf.drain(..HEADER_LEN + body.len());
                Ok(Some(body))
            }
            Err(FrameError::Incomplete { .. }) => Ok(None),
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_limits() {
        let limits = FrameLimits::new(16);
        let f = encode(&(7u32, 9u8), limits).expect("fits");
        assert_eq!(f[0], FRAME_VERSION);
        assert_eq!(decode::<(u32, u8)>(&f, limits), Ok((7, 9)));
        let big = alloc::vec![0u8; 32];
        assert!(matches!(
            encode(&big, limits),
            Err(FrameError::TooLarge { .. })
        ));
        // A header declaring 4 GiB is refused before anything else.
        let hostile = [FRAME_VERSION, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode::<u8>(&hostile, limits),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            decode::<u8>(&[2, 0, 0, 0, 0], limits),
            Err(FrameError::UnsupportedVersion(2))
        ));
        assert!(matches!(
            decode::<u8>(&[1, 0, 0], limits),
            Err(FrameError::Incomplete { .. })
        ));
        let mut t = f.clone();
        t.push(0);
        assert!(matches!(
            decode::<(u32, u8)>(&t, limits),
            Err(FrameError::Trailing(1))
        ));
    }

    #[test]
    fn stream_decoder_reassembles() {
        let limits = FrameLimits::default();
        let a = encode(&1u64, limits).expect("fits");
        let b = encode(&"hello", limits).expect("fits");
        let all: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        let mut d = FrameDecoder::new(limits);
        let mut bodies = Vec::new();
        for byte in all {
            d.push(&[byte]);
            while let Some(body) = d.next_body().expect("valid stream") {
                bodies.push(body);
            }
        }
        assert_eq!(bodies.len(), 2);
        assert_eq!(decode_body::<u64>(&bodies[0]), Ok(1));
        assert_eq!(d.buffered(), 0);
    }
}
