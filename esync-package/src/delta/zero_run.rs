//! Zero-run coding of the bsdiff diff stream (esync container version 2).
//!
//! bsdiff's diff stream is as long as the matched part of the target and
//! mostly zero: on the corpus pairs 4 to 8 % of its bytes are non-zero
//! (changed displacements and constants). Compressing it raw makes the
//! compressor spend most of its time on zero runs, and LZMA's default match
//! search codes them less well than their lengths can be coded. Version 2
//! containers may therefore carry the diff stream as a sequence of records
//!
//! ```text
//! record := varint(zeros) varint(literal_len) literal_bytes[literal_len]
//! ```
//!
//! where `varint` is unsigned LEB128 (at most 10 bytes, value < 2^64) and the
//! record stands for `zeros` zero bytes followed by the literal bytes. The
//! encoder ends a literal run at the first pair of zero bytes. A record with
//! both lengths zero is invalid (it would let a tiny compressed stream keep
//! the decoder busy without output). The coded stream is then compressed
//! with zstd or xz like the other streams. The decoder ([`ZeroRunDecoder`])
//! is a streaming `Read` adapter with constant state.

use std::io::{self, Read};

/// Zero-run codes a diff stream.
pub fn encode(diff: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(diff.len() / 8 + 16);
    let n = diff.len();
    let mut i = 0;
    while i < n {
        let z0 = i;
        while i < n && diff[i] == 0 {
            i += 1;
        }
        let l0 = i;
        while i < n && !(diff[i] == 0 && i + 1 < n && diff[i + 1] == 0) {
            i += 1;
        }
        put_varint(&mut out, (l0 - z0) as u64);
        put_varint(&mut out, (i - l0) as u64);
        out.extend_from_slice(&diff[l0..i]);
    }
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Streaming decoder of a zero-run coded diff stream. It yields end of
/// stream (`Ok(0)`) only at a record boundary where the inner stream ends; an
/// inner end inside a record is `UnexpectedEof`, and an invalid varint or an
/// empty record is `InvalidData`.
#[derive(Debug)]
pub struct ZeroRunDecoder<R> {
    inner: R,
    zeros: u64,
    literals: u64,
}

/// Where a [`ZeroRunDecoder`] is inside its current record: what
/// [`ZeroRunDecoder::suspend`] keeps so that decoding can go on later over
/// another handle to the same coded stream ([`ZeroRunDecoder::resume`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZeroRunState {
    zeros: u64,
    literals: u64,
}

impl<R: Read> ZeroRunDecoder<R> {
    /// Wraps the (decompressed) coded stream.
    pub fn new(inner: R) -> Self {
        Self::resume(inner, ZeroRunState::default())
    }

    /// Goes on decoding from `state` (taken from an earlier decoder by
    /// [`suspend`](Self::suspend)), reading the rest of the coded stream
    /// from `inner`.
    pub fn resume(inner: R, state: ZeroRunState) -> Self {
        Self {
            inner,
            zeros: state.zeros,
            literals: state.literals,
        }
    }

    /// Ends this decoder, keeping where it is inside its record; the inner
    /// reader must not have been read other than through this decoder.
    pub fn suspend(self) -> ZeroRunState {
        ZeroRunState {
            zeros: self.zeros,
            literals: self.literals,
        }
    }

    /// Reads one byte; `None` at the end of the inner stream.
    fn byte(&mut self) -> io::Result<Option<u8>> {
        let mut b = [0u8; 1];
        loop {
            match self.inner.read(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => return Ok(Some(b[0])),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads a varint; `None` if the inner stream ends before its first byte.
    fn varint(&mut self) -> io::Result<Option<u64>> {
        let mut v: u64 = 0;
        for k in 0..10 {
            let Some(b) = self.byte()? else {
                return if k == 0 {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            };
            let bits = u64::from(b & 0x7f);
            if k == 9 && bits > 1 {
                return Err(invalid("zero-run varint overflows 64 bits"));
            }
            v |= bits << (7 * k);
            if b & 0x80 == 0 {
                return Ok(Some(v));
            }
        }
        Err(invalid("zero-run varint longer than 10 bytes"))
    }
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<R: Read> Read for ZeroRunDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.zeros == 0 && self.literals == 0 {
            let Some(zeros) = self.varint()? else {
                return Ok(0);
            };
            let literals = self
                .varint()?
                .ok_or(io::Error::from(io::ErrorKind::UnexpectedEof))?;
            if zeros == 0 && literals == 0 {
                return Err(invalid("empty zero-run record"));
            }
            self.zeros = zeros;
            self.literals = literals;
        }
        if self.zeros > 0 {
            let n = usize::try_from(self.zeros)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            buf[..n].fill(0);
            self.zeros -= n as u64;
            return Ok(n);
        }
        let n = usize::try_from(self.literals)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let got = self.inner.read(&mut buf[..n])?;
        if got == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.literals -= got as u64;
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(coded: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        ZeroRunDecoder::new(coded).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn known_vectors() {
        assert_eq!(encode(&[]), Vec::<u8>::new());
        assert_eq!(encode(&[0, 0, 0]), [3, 0]);
        assert_eq!(encode(&[5, 0, 6, 0, 0, 7]), [0, 3, 5, 0, 6, 2, 1, 7]);
        // 200 zeros: varint 200 = c8 01.
        let mut d = vec![0u8; 200];
        d.push(9);
        assert_eq!(encode(&d), [0xc8, 0x01, 1, 9]);
        assert_eq!(decode(&encode(&d)).unwrap(), d);
    }

    #[test]
    fn malformed_streams_are_errors() {
        // Empty record.
        assert_eq!(
            decode(&[0, 0]).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // Ends inside a varint, between the two varints, inside literals.
        for bad in [&[0x80u8][..], &[3], &[0, 3, 1]] {
            assert_eq!(
                decode(bad).unwrap_err().kind(),
                io::ErrorKind::UnexpectedEof,
                "{bad:?}"
            );
        }
        // Overlong and overflowing varints.
        assert_eq!(
            decode(&[0xff; 11]).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let mut over = vec![0xffu8; 9];
        over.push(0x02);
        assert_eq!(
            decode(&over).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // The largest value is accepted (and decodes lazily).
        let mut max = vec![0xffu8; 9];
        max.extend_from_slice(&[0x01, 0x00]);
        let mut r = ZeroRunDecoder::new(&max[..]);
        let mut b = [1u8; 16];
        assert_eq!(r.read(&mut b).unwrap(), 16);
        assert_eq!(b, [0; 16]);
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(prop_oneof![3 => Just(0u8), 1 => any::<u8>()], 0..4000)) {
            let coded = encode(&data);
            prop_assert_eq!(decode(&coded).unwrap(), data);
        }

        #[test]
        fn arbitrary_input_never_panics(coded in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = ZeroRunDecoder::new(&coded[..]);
            let mut buf = [0u8; 64];
            // Bounded: stop after 1 MiB of output (a huge run is valid).
            let mut total = 0usize;
            while total < 1 << 20 {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        }
    }
}
