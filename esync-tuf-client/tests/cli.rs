//! End-to-end test of the `esync-tuf-client` binary against repositories
//! made by esync-uptane's signing side and served over loopback HTTP: init,
//! refresh, root rotation, delegation, download (and no re-download), an
//! expired role, a rollback attempt, a corrupted target.
#![allow(clippy::unwrap_used, reason = "test code")]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use esync_uptane::builder::{hash_prefixed_path, RepoFiles, RepositoryBuilder, RoleSetup};
use esync_uptane::UnixTime;

type Files = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

struct Http {
    base: String,
    files: Files,
    log: Arc<Mutex<Vec<String>>>,
}

impl Http {
    fn start() -> Http {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let files: Files = Arc::default();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (f, l) = (files.clone(), log.clone());
        std::thread::spawn(move || {
            for req in server.incoming_requests() {
                let path = req.url().to_string();
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

    fn publish(&self, files: &RepoFiles) {
        let mut m = self.files.lock().unwrap();
        m.clear();
        for (k, v) in &files.metadata {
            m.insert(format!("/metadata/{k}"), v.clone());
        }
        for (k, v) in &files.targets {
            m.insert(format!("/targets/{k}"), v.clone());
        }
    }

    fn put(&self, path: &str, bytes: Vec<u8>) {
        self.files.lock().unwrap().insert(path.into(), bytes);
    }

    fn get(&self, path: &str) -> Vec<u8> {
        self.files.lock().unwrap()[path].clone()
    }

    fn count(&self, path: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }
}

fn client(dir: &Path, http: &Http, args: &[&str]) -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_esync-tuf-client"))
        .arg("--metadata-dir")
        .arg(dir)
        .arg("--metadata-url")
        .arg(format!("{}/metadata", http.base))
        .args(args)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!("client {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!("unexpected exit status {other:?}"),
    }
}

fn download(dir: &Path, tdir: &Path, http: &Http, names: &[&str]) -> bool {
    let mut args = Vec::new();
    for n in names {
        args.push("--target-name".to_string());
        args.push(n.to_string());
    }
    args.push("--target-base-url".into());
    args.push(format!("{}/targets", http.base));
    args.push("--target-dir".into());
    args.push(tdir.display().to_string());
    args.push("download".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    client(dir, http, &args)
}

fn now() -> UnixTime {
    UnixTime(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    )
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).unwrap()
}

#[test]
fn init_stores_the_root_and_refresh_refuses_a_bad_one() {
    // The contract: init stores the trusted root it is given ("no checks are
    // expected", no request); verification happens at refresh.
    let http = Http::start();
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.json");
    let bytes = b"{\"signatures\":[],\"signed\":{}}";
    std::fs::write(&bad, bytes).unwrap();
    let dir = tmp.path().join("m");
    let out = Command::new(env!("CARGO_BIN_EXE_esync-tuf-client"))
        .arg("--metadata-dir")
        .arg(&dir)
        .arg("init")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(read(&dir, "root.json"), bytes);
    assert!(http.log.lock().unwrap().is_empty());
    // refresh refuses the root before fetching anything and trusts nothing.
    assert!(!client(&dir, &http, &["refresh"]));
    assert!(http.log.lock().unwrap().is_empty());
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert_eq!(files.len(), 1);
    // A missing root file is still a failure of init.
    let out = Command::new(env!("CARGO_BIN_EXE_esync-tuf-client"))
        .arg("--metadata-dir")
        .arg(tmp.path().join("n"))
        .arg("init")
        .arg(tmp.path().join("missing.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn end_to_end() {
    let http = Http::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("metadata");
    let tdir = tmp.path().join("targets");
    let year = now().plus_seconds(365 * 86_400);
    let mut b = RepositoryBuilder::new(
        RoleSetup::generate(1, 1),
        RoleSetup::generate(1, 1),
        RoleSetup::generate(1, 1),
        RoleSetup::generate(1, 1),
        year,
        true,
    )
    .unwrap();
    b.add_target("top.txt", b"top-level target", None).unwrap();
    b.add_delegation(
        "targets",
        "team a",
        RoleSetup::generate(1, 1),
        vec!["team/*".into()],
        true,
    )
    .unwrap();
    b.add_target_to("team a", "team/file.txt", b"delegated target", None)
        .unwrap();
    b.publish().unwrap();
    http.publish(b.files());

    // init (no network) and refresh.
    let root1 = tmp.path().join("root1.json");
    std::fs::write(&root1, b.root_bytes(1).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_esync-tuf-client"))
        .arg("--metadata-dir")
        .arg(&dir)
        .arg("init")
        .arg(&root1)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(read(&dir, "root.json"), b.root_bytes(1).unwrap());
    assert!(http.log.lock().unwrap().is_empty());
    assert!(client(&dir, &http, &["refresh"]));
    assert_eq!(
        read(&dir, "timestamp.json"),
        http.get("/metadata/timestamp.json")
    );
    assert_eq!(
        read(&dir, "snapshot.json"),
        http.get("/metadata/1.snapshot.json")
    );
    assert_eq!(
        read(&dir, "targets.json"),
        http.get("/metadata/1.targets.json")
    );
    assert_eq!(http.count("/metadata/2.root.json"), 1);

    // Root rotation (new root keys, new timestamp key).
    b.rotate_keys("root", RoleSetup::generate(2, 2)).unwrap();
    b.rotate_keys("timestamp", RoleSetup::generate(1, 1))
        .unwrap();
    b.publish().unwrap();
    http.publish(b.files());
    assert!(client(&dir, &http, &["refresh"]));
    assert_eq!(read(&dir, "root.json"), b.root_bytes(3).unwrap());
    assert_eq!(
        read(&dir, "timestamp.json"),
        http.get("/metadata/timestamp.json")
    );

    // Download through the delegation; stored name is percent-encoded.
    assert!(download(&dir, &tdir, &http, &["team/file.txt", "top.txt"]));
    assert_eq!(read(&tdir, "team%2Ffile.txt"), b"delegated target");
    assert_eq!(read(&tdir, "top.txt"), b"top-level target");
    assert_eq!(
        read(&dir, "team%20a.json"),
        http.get("/metadata/1.team%20a.json")
    );
    let info = b.targets_meta("team a").unwrap().targets["team/file.txt"].clone();
    let target_path = format!(
        "/targets/{}",
        hash_prefixed_path("team/file.txt", &info.hashes["sha256"])
    );
    assert_eq!(http.count(&target_path), 1);
    // Already present and valid: not fetched again.
    assert!(download(&dir, &tdir, &http, &["team/file.txt"]));
    assert_eq!(http.count(&target_path), 1);
    // Unknown target and traversal names fail.
    assert!(!download(&dir, &tdir, &http, &["nope.txt"]));
    assert!(!download(&dir, &tdir, &http, &["../escape.txt"]));

    // A corrupted target is refused and not written.
    b.add_target("new.bin", b"new image", None).unwrap();
    b.publish().unwrap();
    http.publish(b.files());
    let info = b.targets_meta("targets").unwrap().targets["new.bin"].clone();
    http.put(
        &format!(
            "/targets/{}",
            hash_prefixed_path("new.bin", &info.hashes["sha256"])
        ),
        b"new imagE".to_vec(),
    );
    assert!(!download(&dir, &tdir, &http, &["new.bin"]));
    assert!(!tdir.join("new.bin").exists());

    // Rollback attempt: an older timestamp is refused, the trusted one kept.
    let trusted_ts = read(&dir, "timestamp.json");
    b.publish().unwrap();
    let good = b.files().clone();
    http.put("/metadata/timestamp.json", trusted_ts.clone());
    assert!(client(&dir, &http, &["refresh"]));
    http.publish(&good);
    assert!(client(&dir, &http, &["refresh"]));
    let newer_ts = read(&dir, "timestamp.json");
    assert_ne!(newer_ts, trusted_ts);
    http.put("/metadata/timestamp.json", trusted_ts);
    assert!(!client(&dir, &http, &["refresh"]));
    assert_eq!(read(&dir, "timestamp.json"), newer_ts);

    // Expired role: a freshly signed but expired snapshot is refused.
    http.publish(&good);
    b.set_expires("snapshot", now().plus_seconds(-60));
    b.publish().unwrap();
    http.publish(b.files());
    assert!(!client(&dir, &http, &["refresh"]));
    assert_eq!(
        read(&dir, "timestamp.json"),
        http.get("/metadata/timestamp.json")
    );
    assert_ne!(
        read(&dir, "snapshot.json"),
        http.get("/metadata/snapshot.json")
    );
}
