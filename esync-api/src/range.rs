//! HTTP `Range` / `Content-Range` for resumable blob downloads, on the
//! `headers` crate's parsers.
//!
//! The device API uses one range form: `Range: bytes=N-` (resume from byte
//! N). A Server answers 206 with `Content-Range: bytes N-LAST/LEN`, 200
//! without `Range`, 416 with `Content-Range: bytes */LEN` when N is not
//! below LEN.

use std::ops::Bound;

use headers::{ContentRange, Header, Range};
use http::HeaderValue;

/// A range header that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// Not a `bytes=` range, or unparsable.
    #[error("malformed Range or Content-Range header")]
    Malformed,
    /// More than one range asked for (the device API serves one).
    #[error("multiple ranges are not served")]
    MultipleRanges,
    /// No byte of the range exists in a blob of this length.
    #[error("range not satisfiable for length {length}")]
    NotSatisfiable {
        /// Length of the blob.
        length: u64,
    },
    /// A `Content-Range` that does not answer the request.
    #[error("Content-Range {got} does not answer the request from {start} (length {length:?})")]
    Mismatch {
        /// Start asked for.
        start: u64,
        /// Header received.
        got: String,
        /// Expected total length, if known.
        length: Option<u64>,
    },
}

/// Client side: the `Range` header value to resume from byte `start`
/// (`bytes=START-`).
pub fn resume_from(start: u64) -> HeaderValue {
    let mut out = Vec::with_capacity(1);
    // `start..` always makes a valid header.
    Range::bytes(start..)
        .expect("an open range from a start is a valid Range")
        .encode(&mut out);
    out.pop().expect("encode writes one value")
}

/// Server side: the bytes to serve for a blob of `length` bytes, given the
/// request's `Range` header (if any). `Ok(None)`: serve everything (200).
/// `Ok(Some((first, last)))`, inclusive: serve 206 with
/// [`content_range`]. `Err(NotSatisfiable)`: answer 416 with
/// [`unsatisfied`].
pub fn serve_range(
    header: Option<&HeaderValue>,
    length: u64,
) -> Result<Option<(u64, u64)>, RangeError> {
    let Some(value) = header else {
        return Ok(None);
    };
    let range = Range::decode(&mut std::iter::once(value)).map_err(|_| RangeError::Malformed)?;
    let mut ranges = range.satisfiable_ranges(u64::MAX);
    let first = ranges.next().ok_or(RangeError::Malformed)?;
    if ranges.next().is_some() {
        return Err(RangeError::MultipleRanges);
    }
    let start = match first.0 {
        Bound::Included(s) => s,
        Bound::Excluded(s) => s.checked_add(1).ok_or(RangeError::Malformed)?,
        Bound::Unbounded => 0,
    };
    let end = match first.1 {
        Bound::Included(e) => e,
        Bound::Excluded(e) => e.checked_sub(1).ok_or(RangeError::Malformed)?,
        Bound::Unbounded => u64::MAX,
    };
    if end < start {
        return Err(RangeError::Malformed);
    }
    if start >= length {
        return Err(RangeError::NotSatisfiable { length });
    }
    Ok(Some((start, end.min(length - 1))))
}

/// `Content-Range: bytes FIRST-LAST/LENGTH` for a 206 answer.
pub fn content_range(first: u64, last: u64, length: u64) -> Result<HeaderValue, RangeError> {
    let cr = ContentRange::bytes(first..=last, length).map_err(|_| RangeError::Malformed)?;
    Ok(encode(&cr))
}

/// `Content-Range: bytes */LENGTH` for a 416 answer.
pub fn unsatisfied(length: u64) -> HeaderValue {
    encode(&ContentRange::unsatisfied_bytes(length))
}

fn encode(cr: &ContentRange) -> HeaderValue {
    let mut out = Vec::with_capacity(1);
    cr.encode(&mut out);
    out.pop().expect("encode writes one value")
}

/// Client side: checks a 206 answer's `Content-Range` against a request
/// from byte `start` for a blob expected to be `length` bytes long (when
/// the verified metadata says so). Returns the total length.
pub fn check_partial(
    header: Option<&HeaderValue>,
    start: u64,
    length: Option<u64>,
) -> Result<u64, RangeError> {
    let value = header.ok_or(RangeError::Malformed)?;
    let mismatch = || RangeError::Mismatch {
        start,
        got: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        length,
    };
    let cr =
        ContentRange::decode(&mut std::iter::once(value)).map_err(|_| RangeError::Malformed)?;
    let (first, last) = cr.bytes_range().ok_or_else(mismatch)?;
    let total = cr.bytes_len().ok_or_else(mismatch)?;
    if first != start || last.checked_add(1) != Some(total) {
        return Err(mismatch());
    }
    if length.is_some_and(|l| l != total) {
        return Err(mismatch());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).expect("header")
    }

    #[test]
    fn resume_header_is_bytes_n_dash() {
        assert_eq!(resume_from(0), hv("bytes=0-"));
        assert_eq!(resume_from(12345), hv("bytes=12345-"));
    }

    #[test]
    fn server_resolves_open_closed_and_suffixless_ranges() {
        assert_eq!(serve_range(None, 10), Ok(None));
        assert_eq!(serve_range(Some(&resume_from(4)), 10), Ok(Some((4, 9))));
        assert_eq!(serve_range(Some(&hv("bytes=2-5")), 10), Ok(Some((2, 5))));
        assert_eq!(serve_range(Some(&hv("bytes=2-50")), 10), Ok(Some((2, 9))));
        assert_eq!(
            serve_range(Some(&hv("bytes=10-")), 10),
            Err(RangeError::NotSatisfiable { length: 10 })
        );
        assert_eq!(
            serve_range(Some(&hv("bytes=0-1,4-5")), 10),
            Err(RangeError::MultipleRanges)
        );
        assert_eq!(
            serve_range(Some(&hv("items=0-")), 10),
            Err(RangeError::Malformed)
        );
        assert_eq!(
            serve_range(Some(&hv("bytes=5-2")), 10),
            Err(RangeError::Malformed)
        );
    }

    #[test]
    fn content_range_formats_and_is_checked_by_the_client() {
        let v = content_range(4, 9, 10).expect("valid");
        assert_eq!(v, hv("bytes 4-9/10"));
        assert_eq!(check_partial(Some(&v), 4, Some(10)), Ok(10));
        assert_eq!(check_partial(Some(&v), 4, None), Ok(10));
        assert!(check_partial(Some(&v), 3, Some(10)).is_err());
        assert!(check_partial(Some(&v), 4, Some(11)).is_err());
        assert!(check_partial(Some(&hv("bytes 4-8/10")), 4, Some(10)).is_err());
        assert!(check_partial(Some(&hv("bytes 4-9/*")), 4, None).is_err());
        assert!(check_partial(None, 4, None).is_err());
        assert_eq!(unsatisfied(10), hv("bytes */10"));
    }
}
