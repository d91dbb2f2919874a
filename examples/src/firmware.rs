//! Simulated ECU firmware images for the demo.
//!
//! An image is a 64-byte header followed by a pseudo-random body:
//!
//! | offset | field |
//! | --- | --- |
//! | 0 | magic `ESFW` |
//! | 4 | health byte: 1 = the firmware passes its power-on self-test, 0 = it does not |
//! | 8 | version (ASCII, zero padded, 24 bytes) |
//! | 32 | device path (ASCII, zero padded, 32 bytes) |
//!
//! New versions are derived from old ones with local edits (overwritten
//! regions and one insertion), the way a real firmware release changes a
//! few functions and data tables, so a binary delta is much smaller than the
//! image.

/// Length of the firmware header.
pub const HEADER_LEN: usize = 64;
/// Smallest image the demo builds.
pub const MIN_IMAGE_LEN: usize = 16 * 1024;
const MAGIC: &[u8; 4] = b"ESFW";

/// Deterministic pseudo-random bytes (xorshift64).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 24) as u8).collect()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn write_header(img: &mut [u8], device: &str, version: &str, healthy: bool) {
    img[..HEADER_LEN].fill(0);
    img[..4].copy_from_slice(MAGIC);
    img[4] = u8::from(healthy);
    let v = version.as_bytes();
    let n = v.len().min(24);
    img[8..8 + n].copy_from_slice(&v[..n]);
    let d = device.as_bytes();
    let n = d.len().min(32);
    img[32..32 + n].copy_from_slice(&d[..n]);
}

/// A first image of `len` bytes (at least [`MIN_IMAGE_LEN`]) for `device`.
pub fn initial(device: &str, version: &str, seed: u64, len: usize) -> Vec<u8> {
    let len = len.max(MIN_IMAGE_LEN);
    let mut img = Rng::new(seed).bytes(len);
    write_header(&mut img, device, version, true);
    img
}

/// A new version derived from `base` with a few local edits: four
/// overwritten regions of 1 to 2 KiB and a 3 KiB insertion. `healthy`
/// false builds an image whose self-test fails.
pub fn derive(base: &[u8], device: &str, version: &str, seed: u64, healthy: bool) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut img = base.to_vec();
    let body = img.len() - HEADER_LEN;
    for _ in 0..4 {
        let n = 1024 + rng.below(1024);
        let at = HEADER_LEN + rng.below(body - n);
        let patch = rng.bytes(n);
        img[at..at + n].copy_from_slice(&patch);
    }
    let at = HEADER_LEN + rng.below(body);
    let inserted = rng.bytes(3 * 1024);
    img.splice(at..at, inserted);
    write_header(&mut img, device, version, healthy);
    img
}

/// The firmware's power-on self-test, as the simulated ECU runs it on the
/// image it booted.
pub fn self_test(image: &[u8]) -> Result<(), String> {
    if image.len() < HEADER_LEN || &image[..4] != MAGIC {
        return Err("no firmware header".into());
    }
    let version: String = image[8..32]
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| char::from(*b))
        .collect();
    if image[4] != 1 {
        return Err(format!(
            "firmware {version}: power-on self-test failed (CAN wake-up handler does not answer)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_images_differ_locally_and_self_test() {
        let a = initial("/body/bcm", "1.0.0", 1, 40_000);
        let b = derive(&a, "/body/bcm", "2.0.0", 2, true);
        let c = derive(&b, "/body/bcm", "3.0.0", 3, false);
        assert_eq!(b.len(), a.len() + 3 * 1024);
        assert_ne!(a, b);
        assert!(self_test(&a).is_ok());
        assert!(self_test(&b).is_ok());
        assert!(self_test(&c).is_err());
        assert!(self_test(&[0; 10]).is_err());
        // Most of the body is shared.
        let same = a[..1000]
            .iter()
            .zip(&b[..1000])
            .filter(|(x, y)| x == y)
            .count();
        assert!(same > 0);
    }
}
