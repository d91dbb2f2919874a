//! Streaming verification of a target image (length and hashes).

use crate::crypto::MultiHasher;
use crate::error::{Error, Result};
use crate::metadata::TargetInfo;

/// Hashes an image while it streams in and refuses it as soon as it passes
/// its declared length (endless data attack); [`TargetVerifier::finish`]
/// checks the exact length and every declared hash.
pub struct TargetVerifier {
    name: String,
    length: u64,
    received: u64,
    hasher: MultiHasher,
}

impl TargetVerifier {
    /// Prepares to verify `name` against `info`. Refuses entries with no
    /// hash, or with a hash algorithm this crate does not support.
    pub fn new(name: &str, info: &TargetInfo) -> Result<Self> {
        Ok(TargetVerifier {
            name: name.to_string(),
            length: info.length,
            received: 0,
            hasher: MultiHasher::new(name, &info.hashes)?,
        })
    }

    /// Bytes still allowed.
    pub fn remaining(&self) -> u64 {
        self.length - self.received
    }

    /// Feeds the next chunk. Refuses (and hashes nothing of) a chunk that
    /// would pass the declared length.
    pub fn update(&mut self, chunk: &[u8]) -> Result<()> {
        let n = chunk.len() as u64;
        if n > self.remaining() {
            return Err(Error::TooLong {
                what: format!("target {}", self.name),
                limit: self.length,
            });
        }
        self.received += n;
        self.hasher.update(chunk);
        Ok(())
    }

    /// Checks the length is exactly the declared one and every hash matches.
    pub fn finish(self) -> Result<()> {
        if self.received != self.length {
            return Err(Error::LengthMismatch {
                what: format!("target {}", self.name),
                expected: self.length,
                got: self.received,
            });
        }
        self.hasher.finish(&format!("target {}", self.name))
    }
}

/// Verifies a whole image in memory.
pub fn verify_target(name: &str, info: &TargetInfo, data: &[u8]) -> Result<()> {
    let mut v = TargetVerifier::new(name, info)?;
    v.update(data)?;
    v.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::hashes_of;

    fn info(data: &[u8]) -> TargetInfo {
        TargetInfo {
            length: data.len() as u64,
            hashes: hashes_of(data),
            custom: None,
        }
    }

    #[test]
    fn streaming() {
        let data = b"hello world";
        let mut v = TargetVerifier::new("t", &info(data)).unwrap();
        v.update(&data[..5]).unwrap();
        v.update(&data[5..]).unwrap();
        v.finish().unwrap();
    }

    #[test]
    fn too_long_refused_at_the_cap() {
        let mut v = TargetVerifier::new("t", &info(b"abc")).unwrap();
        v.update(b"ab").unwrap();
        assert!(matches!(v.update(b"cd"), Err(Error::TooLong { .. })));
    }

    #[test]
    fn short_and_wrong_refused() {
        let mut v = TargetVerifier::new("t", &info(b"abc")).unwrap();
        v.update(b"ab").unwrap();
        assert!(v.finish().is_err());
        assert!(verify_target("t", &info(b"abc"), b"abd").is_err());
        let mut no_hash = info(b"abc");
        no_hash.hashes.clear();
        assert!(TargetVerifier::new("t", &no_hash).is_err());
    }
}
