//! Benchmarks of esync-uptane (a plain bench binary, `harness = false`):
//!
//! 1. signature verifications per second for each key scheme (ed25519
//!    `verify_strict`, ECDSA P-256 and P-384 with DER signatures, RSA-PSS
//!    2048 with SHA-256), beside `openssl speed -seconds 3` for the same
//!    algorithms on the same machine (skipped with a message if `openssl` is
//!    missing; its RSA figure is PKCS#1 v1.5, the same public-key operation);
//! 2. the time of a full Uptane verification (Director and Image
//!    repositories, all roles, 50 targets of which 25 through a delegation),
//!    from the provisioned roots, files served from memory, with ed25519
//!    keys and with ECDSA P-256 keys.
//!
//! Run: `cargo bench -p esync-uptane --bench verify`. Without `--bench`
//! (as `cargo test --all-targets` runs it) it does one short smoke pass.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use esync_proto::id::{EcuSerial, HardwareId, ReleaseCounter, Vin};
use esync_uptane::builder::{RepositoryBuilder, RoleSetup};
use esync_uptane::crypto::Scheme;
use esync_uptane::uptane::{
    director_custom, image_custom, EcuInfo, FullVerifier, RepoKind, Vehicle,
};
use esync_uptane::{Limits, MemoryStore, PrivateKey, UnixTime};

const NOW: UnixTime = UnixTime(1_893_456_000);
const TARGETS: usize = 50;
const RSA_KEY: &str = include_str!("../tests/data/rsa-2048-test-keys.pem");

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let secs = if full { 3.0 } else { 0.05 };
    for scheme in Scheme::ALL {
        let ours = verifies_per_second(scheme, secs);
        print!("{scheme}: {ours:.0} verifications/s (64-byte message)");
        if full {
            match openssl_verifies_per_second(scheme) {
                Some((what, o)) => print!(
                    "; openssl speed -seconds 3 {what}: {o:.0} verify/s; ratio {:.2}",
                    ours / o
                ),
                None => print!("; openssl: not available or output not understood"),
            }
        }
        println!();
    }
    let iters = if full { 30 } else { 1 };
    full_verification(Scheme::Ed25519, iters);
    full_verification(Scheme::EcdsaP256Sha256, iters);
}

fn key(scheme: Scheme) -> PrivateKey {
    match scheme {
        Scheme::RsaPssSha256 => {
            let first = RSA_KEY
                .split_inclusive("-----END PRIVATE KEY-----\n")
                .next()
                .expect("a test RSA key");
            PrivateKey::from_pem(first).expect("test RSA key")
        }
        Scheme::Ed25519 => PrivateKey::from_seed(&[7; 32]),
        s => PrivateKey::generate_for(s).expect("key generation"),
    }
}

fn verifies_per_second(scheme: Scheme, secs: f64) -> f64 {
    let key = key(scheme);
    let public = key.public_key();
    let msg = [0x5a_u8; 64];
    let sig = key.sign(&msg).expect("sign");
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..20 {
            assert!(black_box(&public).verify(black_box(&msg), black_box(&sig)));
        }
        n += 20;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Runs `openssl speed` for the algorithm of `scheme` and parses the last
/// (verify/s) column of its result line.
fn openssl_verifies_per_second(scheme: Scheme) -> Option<(&'static str, f64)> {
    let (alg, marker) = match scheme {
        Scheme::Ed25519 => ("ed25519", "Ed25519"),
        Scheme::EcdsaP256Sha256 => ("ecdsap256", "nistp256"),
        Scheme::EcdsaP384Sha384 => ("ecdsap384", "nistp384"),
        Scheme::RsaPssSha256 => ("rsa2048", "rsa 2048 bits"),
        _ => return None,
    };
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "3", alg])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains(marker) && !l.contains("Doing"))?;
    Some((alg, line.split_whitespace().last()?.parse().ok()?))
}

fn ids() -> (Vin, Vec<(EcuSerial, HardwareId)>) {
    let vin = Vin::new("WVWZZZ1JZXW000001").expect("valid VIN");
    let ecus = (0..TARGETS)
        .map(|i| {
            (
                EcuSerial::new(format!("ecu-{i}")).expect("valid serial"),
                HardwareId::new(format!("hw-{i}")).expect("valid hardware id"),
            )
        })
        .collect();
    (vin, ecus)
}

fn full_verification(scheme: Scheme, iters: u32) {
    let expires = NOW.plus_seconds(365 * 86_400);
    let (vin, ecus) = ids();
    let keys = |n, t| RoleSetup::generate_for(scheme, n, t).expect("keys");
    let mut image = RepositoryBuilder::new(
        keys(2, 2),
        keys(2, 2),
        keys(1, 1),
        keys(1, 1),
        expires,
        true,
    )
    .expect("image repository");
    image
        .add_delegation(
            "targets",
            "suppliers",
            keys(1, 1),
            vec!["supplier/*".into()],
            false,
        )
        .expect("delegation");
    let mut director = RepositoryBuilder::new(
        keys(1, 1),
        keys(1, 1),
        keys(1, 1),
        keys(1, 1),
        expires,
        true,
    )
    .expect("director repository");
    let mut vehicle_ecus = BTreeMap::new();
    for (i, (ecu, hw)) in ecus.iter().enumerate() {
        let name = if i % 2 == 0 {
            format!("fw-{i}.bin")
        } else {
            format!("supplier/fw-{i}.bin")
        };
        let data = vec![i as u8; 4096];
        let role = if i % 2 == 0 { "targets" } else { "suppliers" };
        image
            .add_target_to(
                role,
                &name,
                &data,
                Some(image_custom(
                    std::slice::from_ref(hw),
                    ReleaseCounter(3),
                    None,
                )),
            )
            .expect("image target");
        director
            .add_target(
                &name,
                &data,
                Some(director_custom(&vin, ecu, hw, ReleaseCounter(3), None)),
            )
            .expect("director target");
        vehicle_ecus.insert(
            ecu.clone(),
            EcuInfo {
                hardware_id: hw.clone(),
                installed_release_counter: ReleaseCounter(2),
            },
        );
    }
    image.publish().expect("publish image");
    director.publish().expect("publish director");
    let vehicle = Vehicle {
        vin,
        ecus: vehicle_ecus,
    };
    let (image_files, director_files) = (image.files().clone(), director.files().clone());
    let mut times = Vec::new();
    for _ in 0..iters {
        let start = Instant::now();
        let mut fv = FullVerifier::open(
            MemoryStore::new(director.root_bytes(1).expect("root v1").to_vec()),
            MemoryStore::new(image.root_bytes(1).expect("root v1").to_vec()),
            vehicle.clone(),
            Limits::default(),
        )
        .expect("open");
        let got = fv
            .verify_with(NOW, |kind, need| {
                let files = match kind {
                    RepoKind::Director => &director_files,
                    RepoKind::Image => &image_files,
                };
                Ok::<_, Infallible>(files.metadata.get(&need.path()).cloned())
            })
            .expect("full verification");
        assert_eq!(got.len(), TARGETS);
        times.push(start.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    let mean: Duration = times.iter().sum::<Duration>() / iters;
    println!(
        "full Uptane verification, {scheme} keys, {TARGETS} targets (25 delegated), \
         both repositories from root v1: median {:.2} ms, mean {:.2} ms over {iters} runs",
        median.as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3
    );
}
