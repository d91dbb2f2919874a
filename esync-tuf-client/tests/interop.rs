//! Interoperability with python-tuf, the reference TUF implementation.
//!
//! 1. `tests/interop/tuf_interop.py generate` makes repositories with
//!    python-tuf's Metadata API and securesystemslib's signers: ed25519,
//!    ECDSA P-256 and P-384, RSA-PSS, root rotations from one key type to
//!    another, a targets threshold of 2 over mixed key types, delegations,
//!    expired and rolled-back variants. Each is served over loopback HTTP to
//!    `esync-tuf-client` and to python-tuf's ngclient (the same contract:
//!    init, refresh per phase, download on the last); both verdicts must be
//!    the one the scenario intends.
//! 2. The reverse: repositories made by esync-uptane's signing side with
//!    each key type (and a rotation across types) are read by ngclient.
//!
//! Needs a Python with `tuf` and `securesystemslib[crypto]`: the one named
//! by `ESYNC_TUF_PYTHON` (`.ci/run` installs them in a virtual environment
//! and sets it), else `python3` if it has them. Without one the test prints
//! `SKIPPED` and passes.
#![allow(clippy::unwrap_used, reason = "test code")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use esync_uptane::builder::{RepoFiles, RepositoryBuilder, RoleSetup};
use esync_uptane::crypto::{RawSigned, Scheme};
use esync_uptane::{PrivateKey, UnixTime};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/tuf_interop.py");
const RSA_KEYS: &str = include_str!("../../esync-uptane/tests/data/rsa-2048-test-keys.pem");

fn python() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("ESYNC_TUF_PYTHON") {
        Some(p) => vec![p.into()],
        None => vec!["python3".into()],
    };
    candidates.into_iter().find(|p| {
        Command::new(p)
            .args([
                "-c",
                "import tuf.ngclient, securesystemslib.signer, cryptography",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Serves the files under the current root directory (404 otherwise).
struct Http {
    base: String,
    root: Arc<Mutex<PathBuf>>,
}

impl Http {
    fn start() -> Http {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let root: Arc<Mutex<PathBuf>> = Arc::default();
        let r = root.clone();
        thread::spawn(move || {
            for req in server.incoming_requests() {
                let path = req.url().split('?').next().unwrap_or("").to_string();
                let rel = path.trim_start_matches('/');
                let body = if rel.split('/').any(|s| s == ".." || s.is_empty()) {
                    None
                } else {
                    std::fs::read(r.lock().unwrap().join(rel)).ok()
                };
                let _ = match body {
                    Some(b) => req.respond(tiny_http::Response::from_data(b)),
                    None => req.respond(tiny_http::Response::empty(404)),
                };
            }
        });
        Http {
            base: format!("http://127.0.0.1:{port}"),
            root,
        }
    }

    fn serve(&self, dir: &Path) {
        *self.root.lock().unwrap() = dir.to_path_buf();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    Esync,
    PythonTuf,
}

/// Runs one client command; `true` on exit 0, `false` on exit 1.
fn run(py: &Path, who: Client, http: &Http, work: &Path, cmd: &[&str]) -> bool {
    let (mdir, tdir) = (work.join("metadata"), work.join("targets"));
    let (murl, turl) = (
        format!("{}/metadata", http.base),
        format!("{}/targets", http.base),
    );
    let out = match who {
        Client::Esync => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_esync-tuf-client"));
            c.arg("--metadata-dir")
                .arg(&mdir)
                .arg("--metadata-url")
                .arg(&murl);
            if let ["download", name] = cmd {
                c.args(["--target-name", name, "--target-base-url", &turl])
                    .arg("--target-dir")
                    .arg(&tdir)
                    .arg("download");
            } else {
                c.args(cmd);
            }
            c.output().unwrap()
        }
        Client::PythonTuf => Command::new(py)
            .arg(SCRIPT)
            .arg("client")
            .arg(&mdir)
            .arg(&murl)
            .arg(&turl)
            .arg(&tdir)
            .args(cmd)
            .output()
            .unwrap(),
    };
    match out.status.code() {
        Some(0) => true,
        Some(1) => {
            eprintln!(
                "    {who:?} {cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            false
        }
        other => panic!("{who:?} {cmd:?}: exit status {other:?}"),
    }
}

/// One scenario with one client: init, refresh on every phase but the
/// last, download on the last. `None` if an earlier phase already failed.
fn verdict(
    py: &Path,
    who: Client,
    http: &Http,
    dir: &Path,
    phases: u64,
    target: &str,
) -> Option<bool> {
    let work = tempfile::tempdir().unwrap();
    let root = dir.join("root.json");
    assert!(run(
        py,
        who,
        http,
        work.path(),
        &["init", root.to_str().unwrap()]
    ));
    for k in 1..phases {
        http.serve(&dir.join(format!("phase{k}")));
        if !run(py, who, http, work.path(), &["refresh"]) {
            return None;
        }
    }
    http.serve(&dir.join(format!("phase{phases}")));
    let ok = run(py, who, http, work.path(), &["download", target]);
    if ok {
        let got = std::fs::read_dir(work.path().join("targets"))
            .unwrap()
            .count();
        assert!(
            got >= 1,
            "{who:?} reported success without writing the target"
        );
    }
    Some(ok)
}

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: Vec<String>,
}

impl Tally {
    fn check(&mut self, name: &str, ok: bool) {
        println!("  {} {name}", if ok { "pass" } else { "FAIL" });
        if ok {
            self.passed += 1;
        } else {
            self.failed.push(name.to_string());
        }
    }
}

#[test]
fn python_tuf_interoperability() {
    let Some(py) = python() else {
        println!(
            "SKIPPED: no Python with tuf and securesystemslib[crypto] \
             (set ESYNC_TUF_PYTHON; .ci/run installs them in a virtual environment)"
        );
        return;
    };
    let http = Http::start();
    let mut tally = Tally::default();

    // 1. python-tuf's repositories, read by both clients.
    let gen = tempfile::tempdir().unwrap();
    let out = Command::new(&py)
        .arg(SCRIPT)
        .arg("generate")
        .arg(gen.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut scenarios: Vec<PathBuf> = std::fs::read_dir(gen.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    scenarios.sort();
    assert!(scenarios.len() >= 30, "{} scenarios", scenarios.len());
    println!("python-tuf repositories read by esync-tuf-client and python-tuf:");
    for dir in &scenarios {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("scenario.json")).unwrap()).unwrap();
        let accept = s["expect"] == "accept";
        let phases = s["phases"].as_u64().unwrap();
        let target = s["target"].as_str().unwrap();
        let ours = verdict(&py, Client::Esync, &http, dir, phases, target);
        let theirs = verdict(&py, Client::PythonTuf, &http, dir, phases, target);
        println!(
            "  {name}: expect {}, esync {ours:?}, python-tuf {theirs:?}",
            s["expect"]
        );
        tally.check(&name, ours == Some(accept) && theirs == Some(accept));
    }

    // 2. esync-uptane's repositories, read by python-tuf (and by us).
    println!("esync-uptane repositories read by python-tuf and esync-tuf-client:");
    let made = tempfile::tempdir().unwrap();
    let mut rsa = RSA_KEYS
        .split_inclusive("-----END PRIVATE KEY-----\n")
        .map(|pem| PrivateKey::from_pem(pem).unwrap());
    let mut key = |s: Scheme| match s {
        Scheme::RsaPssSha256 => rsa.next().unwrap(),
        s => PrivateKey::generate_for(s).unwrap(),
    };
    for scheme in Scheme::ALL {
        let setup = |k: PrivateKey| RoleSetup::single(k);
        let mut b = RepositoryBuilder::new(
            setup(key(scheme)),
            setup(key(scheme)),
            setup(key(scheme)),
            setup(key(scheme)),
            year(),
            true,
        )
        .unwrap();
        b.add_target("file.txt", b"made by esync-uptane\n", None)
            .unwrap();
        b.add_delegation(
            "targets",
            "team",
            setup(key(scheme)),
            vec!["team/*".into()],
            true,
        )
        .unwrap();
        b.add_target_to("team", "team/file.txt", b"delegated\n", None)
            .unwrap();
        b.publish().unwrap();
        let good = write_repo(
            made.path(),
            &format!("{scheme}-good"),
            b.files(),
            b.root_bytes(1).unwrap(),
        );
        for target in ["file.txt", "team/file.txt"] {
            let both = [Client::PythonTuf, Client::Esync]
                .map(|c| verdict(&py, c, &http, &good, 1, target));
            tally.check(
                &format!("{scheme} {target}: {both:?}"),
                both == [Some(true); 2],
            );
        }
        // Timestamp signed by a key nobody trusts: both refuse.
        let mut files = b.files().clone();
        let ts: serde_json::Value =
            serde_json::from_slice(&files.metadata["timestamp.json"]).unwrap();
        let forged = RawSigned::sign(ts["signed"].clone(), &[&key(scheme)]).unwrap();
        files
            .metadata
            .insert("timestamp.json".into(), forged.to_bytes().unwrap());
        let bad = write_repo(
            made.path(),
            &format!("{scheme}-forged"),
            &files,
            b.root_bytes(1).unwrap(),
        );
        let both =
            [Client::PythonTuf, Client::Esync].map(|c| verdict(&py, c, &http, &bad, 1, "file.txt"));
        tally.check(
            &format!("{scheme} forged timestamp: {both:?}"),
            both == [Some(false); 2],
        );
    }
    // Root rotation across key types, made by the signing side.
    for (from, to) in [
        (Scheme::Ed25519, Scheme::EcdsaP256Sha256),
        (Scheme::EcdsaP256Sha256, Scheme::RsaPssSha256),
        (Scheme::RsaPssSha256, Scheme::EcdsaP384Sha384),
    ] {
        let mut b = RepositoryBuilder::new(
            RoleSetup::single(key(from)),
            RoleSetup::single(key(from)),
            RoleSetup::single(key(from)),
            RoleSetup::single(key(from)),
            year(),
            true,
        )
        .unwrap();
        b.add_target("file.txt", b"rotated\n", None).unwrap();
        b.publish().unwrap();
        b.rotate_keys("root", RoleSetup::keys(vec![key(to), key(from)], 2))
            .unwrap();
        for role in ["timestamp", "snapshot", "targets"] {
            b.rotate_keys(role, RoleSetup::single(key(to))).unwrap();
        }
        b.publish().unwrap();
        let dir = write_repo(
            made.path(),
            &format!("rotate-{from}-{to}"),
            b.files(),
            b.root_bytes(1).unwrap(),
        );
        let both =
            [Client::PythonTuf, Client::Esync].map(|c| verdict(&py, c, &http, &dir, 1, "file.txt"));
        tally.check(
            &format!("rotation {from} -> {to}: {both:?}"),
            both == [Some(true); 2],
        );
    }

    println!(
        "interop: {} passed, {} failed {:?}",
        tally.passed,
        tally.failed.len(),
        tally.failed
    );
    assert!(tally.failed.is_empty(), "failed: {:?}", tally.failed);
}

fn year() -> UnixTime {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    UnixTime(now as i64).plus_seconds(365 * 86_400)
}

/// Writes a published repository as `DIR/NAME/phase1/{metadata,targets}`
/// with root version 1 as `DIR/NAME/root.json`.
fn write_repo(dir: &Path, name: &str, files: &RepoFiles, root: &[u8]) -> PathBuf {
    let d = dir.join(name);
    for (sub, map) in [("metadata", &files.metadata), ("targets", &files.targets)] {
        for (path, bytes) in map {
            let p = d.join("phase1").join(sub).join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
    }
    std::fs::write(d.join("root.json"), root).unwrap();
    d
}
