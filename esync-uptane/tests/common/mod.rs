//! Test support: a loopback HTTP server for repositories and a fetch loop
//! that drives the sans-I/O verifiers.
#![allow(dead_code, clippy::unwrap_used, reason = "test code")]

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::thread;

use esync_proto::id::{EcuSerial, HardwareId, ReleaseCounter, Vin};
use esync_uptane::builder::{RepoFiles, RepositoryBuilder, RoleSetup};
use esync_uptane::crypto::Scheme;
use esync_uptane::repo::{Limits, Need, Repository};
use esync_uptane::store::MemoryStore;
use esync_uptane::uptane::{
    director_custom, image_custom, EcuInfo, FullVerifier, RepoKind, Vehicle,
};
use esync_uptane::{PrivateKey, UnixTime};

thread_local! {
    /// Key scheme of the test running on this thread (libtest runs each
    /// test on its own thread).
    static SCHEME: Cell<Scheme> = const { Cell::new(Scheme::Ed25519) };
    /// Next fixture RSA key to hand out on this thread.
    static NEXT_RSA: Cell<usize> = const { Cell::new(0) };
}

/// Test-only RSA-2048 keys (`openssl genpkey -algorithm RSA`): ring cannot
/// generate RSA keys, so the suite draws distinct ones from this file.
const RSA_KEYS: &str = include_str!("../data/rsa-2048-test-keys.pem");

/// Runs `test` with every key the suite makes being of `scheme`.
pub fn with_scheme(scheme: Scheme, test: fn()) {
    SCHEME.with(|s| s.set(scheme));
    NEXT_RSA.with(|n| n.set(0));
    test();
}

/// The scheme of the running test.
pub fn scheme() -> Scheme {
    SCHEME.with(Cell::get)
}

fn rsa_ders() -> &'static [Vec<u8>] {
    static DERS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    DERS.get_or_init(|| {
        pem::parse_many(RSA_KEYS)
            .unwrap()
            .into_iter()
            .map(pem::Pem::into_contents)
            .collect()
    })
}

fn rsa_key(i: usize) -> PrivateKey {
    PrivateKey::from_pkcs8_der(&rsa_ders()[i]).unwrap()
}

/// A fresh key of the running test's scheme (RSA: the next fixture key;
/// the last one is kept for [`stranger`]).
pub fn key() -> PrivateKey {
    match scheme() {
        Scheme::RsaPssSha256 => {
            let i = NEXT_RSA.with(|n| {
                let i = n.get();
                n.set(i + 1);
                i
            });
            let count = rsa_ders().len();
            assert!(i + 1 < count, "the test needs more than {count} RSA keys");
            rsa_key(i)
        }
        s => PrivateKey::generate_for(s).unwrap(),
    }
}

/// `n` fresh keys of the running test's scheme, threshold `threshold`.
pub fn keys(n: usize, threshold: u64) -> RoleSetup {
    RoleSetup::keys((0..n).map(|_| key()).collect(), threshold)
}

/// A repository with one fresh key per role (the running test's scheme).
pub fn generate_repo(expires: UnixTime) -> RepositoryBuilder {
    RepositoryBuilder::new(
        keys(1, 1),
        keys(1, 1),
        keys(1, 1),
        keys(1, 1),
        expires,
        true,
    )
    .unwrap()
}

/// "Now" of the tests: 2030-01-01T00:00:00Z.
pub const NOW: UnixTime = UnixTime(1_893_456_000);
/// One year later: expiry of every role unless a test changes it.
pub fn expires() -> UnixTime {
    NOW.plus_seconds(365 * 86_400)
}

/// Files served by the test server, by absolute path.
type Files = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

/// A tiny HTTP server on 127.0.0.1:0 serving a map of files (404 otherwise).
pub struct Http {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    files: Files,
    /// Paths requested, in order.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Http {
    /// Starts the server thread (it lives until the test process ends).
    pub fn start() -> Http {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let files: Files = Arc::default();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (f, l) = (files.clone(), log.clone());
        thread::spawn(move || {
            for req in server.incoming_requests() {
                let path = req.url().split('?').next().unwrap_or("").to_string();
                l.lock().unwrap().push(path.clone());
                let body = f.lock().unwrap().get(&path).cloned();
                let _ = match body {
                    Some(b) => req.respond(tiny_http::Response::from_data(b)),
                    None => req.respond(tiny_http::Response::empty(404)),
                };
            }
        });
        Http {
            base: format!("http://127.0.0.1:{port}"),
            files,
            log,
        }
    }

    /// Replaces everything under `/{prefix}/` by a published repository:
    /// metadata under `/{prefix}/metadata/`, targets under `/{prefix}/targets/`.
    pub fn publish(&self, prefix: &str, files: &RepoFiles) {
        let mut m = self.files.lock().unwrap();
        m.retain(|k, _| !k.starts_with(&format!("/{prefix}/")));
        for (k, v) in &files.metadata {
            m.insert(format!("/{prefix}/metadata/{k}"), v.clone());
        }
        for (k, v) in &files.targets {
            m.insert(format!("/{prefix}/targets/{k}"), v.clone());
        }
    }

    /// Serves `bytes` at `path`.
    pub fn put(&self, path: &str, bytes: Vec<u8>) {
        self.files.lock().unwrap().insert(path.to_string(), bytes);
    }

    /// Stops serving `path`.
    pub fn remove(&self, path: &str) {
        self.files.lock().unwrap().remove(path);
    }

    /// Bytes served at `path`.
    pub fn get(&self, path: &str) -> Vec<u8> {
        self.files.lock().unwrap().get(path).cloned().unwrap()
    }

    /// URL of the metadata directory of `prefix`.
    pub fn metadata_url(&self, prefix: &str) -> String {
        format!("{}/{prefix}/metadata", self.base)
    }
}

/// GETs `url`, reading at most `max + 1` bytes (so an endless answer is cut
/// at the cap and the verifier sees it is too long). 404 is `Ok(None)`.
pub fn http_get(url: &str, max: u64) -> Result<Option<Vec<u8>>, String> {
    match ureq::get(url).call() {
        Ok(resp) => {
            let mut buf = Vec::new();
            resp.into_reader()
                .take(max + 1)
                .read_to_end(&mut buf)
                .map_err(|e| e.to_string())?;
            Ok(Some(buf))
        }
        Err(ureq::Error::Status(404, _)) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The fetch loop of the tests: maps a [`Need`] to a URL under `base`.
pub fn fetcher(base: String) -> impl FnMut(&Need) -> Result<Option<Vec<u8>>, String> {
    move |need: &Need| http_get(&format!("{base}/{}", need.path()), need.max_length())
}

/// Opens a verifier trusting root version 1 of `b`.
pub fn open_repo(b: &RepositoryBuilder) -> Repository<MemoryStore> {
    Repository::open(
        MemoryStore::new(b.root_bytes(1).unwrap().to_vec()),
        Limits::default(),
    )
    .unwrap()
}

/// Rewrites a served metadata file: `edit` gets the whole JSON document.
pub fn edit_json(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

pub fn vin() -> Vin {
    Vin::new("WVWZZZ1JZXW000001").unwrap()
}
pub fn other_vin() -> Vin {
    Vin::new("WVWZZZ1JZXW000002").unwrap()
}
pub fn ecu(s: &str) -> EcuSerial {
    EcuSerial::new(s).unwrap()
}
pub fn hw(s: &str) -> HardwareId {
    HardwareId::new(s).unwrap()
}

/// Image bytes of the ECM update.
pub const ECM_IMAGE: &[u8] = b"ECM firmware 2.0 -- pretend this is a large flash image";
/// Image bytes of the TCU update (delegated to role `tcu-team`).
pub const TCU_IMAGE: &[u8] = b"TCU firmware 5.1";

/// A vehicle with an ECM and a TCU, an Image repository (the TCU image is
/// delegated to `tcu-team`) and a Director repository directing both.
pub struct World {
    pub http: Http,
    pub image: RepositoryBuilder,
    pub director: RepositoryBuilder,
    pub vehicle: Vehicle,
}

impl World {
    pub fn new() -> World {
        let http = Http::start();
        let mut image = RepositoryBuilder::new(
            keys(2, 2),
            keys(1, 1),
            keys(1, 1),
            keys(1, 1),
            expires(),
            true,
        )
        .unwrap();
        image
            .add_target(
                "ecm-fw-2.0.bin",
                ECM_IMAGE,
                Some(image_custom(
                    &[hw("ecm-hw-a"), hw("ecm-hw-b")],
                    ReleaseCounter(2),
                    None,
                )),
            )
            .unwrap();
        image
            .add_delegation(
                "targets",
                "tcu-team",
                keys(1, 1),
                vec!["tcu-*".into()],
                true,
            )
            .unwrap();
        image
            .add_target_to(
                "tcu-team",
                "tcu-fw-5.1.bin",
                TCU_IMAGE,
                Some(image_custom(&[hw("tcu-hw")], ReleaseCounter(7), None)),
            )
            .unwrap();
        image.publish().unwrap();
        let mut director = generate_repo(expires());
        director
            .add_target(
                "ecm-fw-2.0.bin",
                ECM_IMAGE,
                Some(director_custom(
                    &vin(),
                    &ecu("ecm-1"),
                    &hw("ecm-hw-a"),
                    ReleaseCounter(2),
                    None,
                )),
            )
            .unwrap();
        director
            .add_target(
                "tcu-fw-5.1.bin",
                TCU_IMAGE,
                Some(director_custom(
                    &vin(),
                    &ecu("tcu-1"),
                    &hw("tcu-hw"),
                    ReleaseCounter(7),
                    None,
                )),
            )
            .unwrap();
        director.publish().unwrap();
        http.publish("image", image.files());
        http.publish("director", director.files());
        let mut ecus = BTreeMap::new();
        ecus.insert(
            ecu("ecm-1"),
            EcuInfo {
                hardware_id: hw("ecm-hw-a"),
                installed_release_counter: ReleaseCounter(1),
            },
        );
        ecus.insert(
            ecu("tcu-1"),
            EcuInfo {
                hardware_id: hw("tcu-hw"),
                installed_release_counter: ReleaseCounter(7),
            },
        );
        World {
            http,
            image,
            director,
            vehicle: Vehicle { vin: vin(), ecus },
        }
    }

    /// Publishes both repositories again to the server.
    pub fn serve(&self) {
        self.http.publish("image", self.image.files());
        self.http.publish("director", self.director.files());
    }

    /// A Client's full verifier trusting root v1 of both repositories.
    pub fn full_verifier(&self) -> FullVerifier<MemoryStore, MemoryStore> {
        FullVerifier::open(
            MemoryStore::new(self.director.root_bytes(1).unwrap().to_vec()),
            MemoryStore::new(self.image.root_bytes(1).unwrap().to_vec()),
            self.vehicle.clone(),
            Limits::default(),
        )
        .unwrap()
    }

    /// Runs a full verification over HTTP.
    pub fn verify(
        &self,
        fv: &mut FullVerifier<MemoryStore, MemoryStore>,
        now: UnixTime,
    ) -> esync_uptane::Result<Vec<esync_uptane::uptane::DirectorTarget>> {
        let base = self.http.base.clone();
        fv.verify_with(now, |kind, need| {
            let prefix = match kind {
                RepoKind::Director => "director",
                RepoKind::Image => "image",
            };
            http_get(
                &format!("{base}/{prefix}/metadata/{}", need.path()),
                need.max_length(),
            )
        })
    }

    /// Director targets bytes as served (what the Client forwards to Agents).
    pub fn director_targets_bytes(&self) -> Vec<u8> {
        self.http.get("/director/metadata/targets.json")
    }
}

/// Keeps only the first `keep` signatures of a metadata file.
pub fn keep_signatures(bytes: &[u8], keep: usize) -> Vec<u8> {
    edit_json(bytes, |v| {
        let sigs = v["signatures"].as_array_mut().unwrap();
        sigs.truncate(keep);
    })
}

/// A key nobody trusts (of the running test's scheme).
pub fn stranger() -> PrivateKey {
    match scheme() {
        Scheme::Ed25519 => PrivateKey::from_seed(&[0xAB; 32]),
        Scheme::RsaPssSha256 => rsa_key(rsa_ders().len() - 1),
        s => PrivateKey::generate_for(s).unwrap(),
    }
}
