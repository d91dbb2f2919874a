//! Delta generation and serving by the real Server, on the corpus pairs of
//! `../shared/corpus/delta/` (real binaries, two versions each).
//!
//! ```sh
//! cargo bench -p esync-server --bench deltas [-- --corpus DIR --downloads N]
//! ```
//!
//! The program runs `esync-server init` and `serve` (release build, SQLite,
//! the default delta workers) as a child process and drives it as an
//! operator and a fleet would: the CLI uploads both versions of every pair
//! and builds a package per pair, a vehicle per pair reports the old
//! version, is assigned the package and checks in, and the Server's
//! background worker generates the one delta of that pair. Reported:
//!
//! - generation: the worker's own time per job (the Server's
//!   `esync_server_delta_generation_seconds` histogram: reading both images,
//!   generating, storing the patch) and the time from the check-in until the
//!   job is done as the admin API shows it (that includes the worker's
//!   pickup delay, at most its 0.5 s idle poll); beside it the standard
//!   `bsdiff` tool on the same pair (time, patch size, peak RSS);
//! - serving: the vehicle downloads the patch over the device API (mutual
//!   TLS, through the Client's `DeviceHttp`): five in a row on one
//!   connection, then five in a row on each of `--downloads` concurrent
//!   connections, then a Range resume from the middle; beside it nginx (Debian's package, started by this program)
//!   serving the same blob files over mutual TLS with the same certificates,
//!   fetched by the same client code;
//! - the Server process's peak resident memory (`VmHWM` of
//!   `/proc/PID/status`): idle after start, after every generation and
//!   after all serving.
//!
//! bsdiff and nginx are installed with apt-get when missing (as root);
//! without them their columns say `n/a`. bsdiff's peak RSS is sampled every
//! 5 ms from `/proc`.

#[path = "../tests/e2e_support/mod.rs"]
mod e2e_support;
mod nginx;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use esync_api::body::CheckInResponse;
use esync_api::BlobId;
use esync_client::http::{partial_path, DeviceHttp, DownloadLimits};
use esync_identity::client_tls_config;

use e2e_support::{fetch_metrics, sha, sign_image_repo, Car, Env};
use nginx::{Nginx, NginxTls};

/// The corpus pairs (name, old file, new file).
const PAIRS: &[(&str, &str, &str)] = &[
    ("libcrypto", "libcrypto-3.0.17.bin", "libcrypto-3.0.20.bin"),
    (
        "libpython",
        "libpython-3.11.2-u8.bin",
        "libpython-3.11.2-u9.bin",
    ),
    ("postgres", "postgres-15.18.bin", "postgres-15.20.bin"),
];

struct Args {
    corpus: PathBuf,
    downloads: usize,
}

fn args() -> Args {
    let mut a = Args {
        corpus: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/delta"),
        downloads: 8,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--corpus" => a.corpus = it.next().expect("--corpus DIR").into(),
            "--downloads" => {
                a.downloads = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--downloads N")
            }
            // cargo bench passes --bench.
            "--bench" => {}
            other => panic!("unknown argument {other:?} (--corpus DIR, --downloads N)"),
        }
    }
    a
}

/// A field of `/proc/PID/status` in KiB (`VmHWM`, `VmRSS`).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Installs Debian package `pkg` for `tool` when missing and possible.
fn ensure(tool: &str, pkg: &str) -> bool {
    if have(tool) {
        return true;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if root && have("apt-get") {
        eprintln!("installing {pkg} (for {tool})");
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", pkg])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status();
    }
    have(tool)
}

struct Bsdiff {
    secs: f64,
    patch: u64,
    peak_kib: u64,
}

fn bsdiff(from: &Path, to: &Path, out: &Path) -> Option<Bsdiff> {
    let start = Instant::now();
    let mut child = Command::new("bsdiff")
        .arg(from)
        .arg(to)
        .arg(out)
        .spawn()
        .ok()?;
    let mut peak = 0;
    let status = loop {
        if let Some(s) = child.try_wait().ok()? {
            break s;
        }
        if let Some(k) = status_kib(child.id(), "VmHWM") {
            peak = peak.max(k);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let secs = start.elapsed().as_secs_f64();
    status.success().then(|| Bsdiff {
        secs,
        patch: std::fs::metadata(out).map(|m| m.len()).unwrap_or(0),
        peak_kib: peak,
    })
}

/// The sum and count of the Server's generation-time histogram.
async fn generation_seconds(metrics_url: &str) -> (f64, u64) {
    let text = fetch_metrics(metrics_url).await;
    let get = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        get("esync_server_delta_generation_seconds_sum"),
        get("esync_server_delta_generation_seconds_count") as u64,
    )
}

/// nginx serving the Server's blob directory at the device API's blob
/// paths, over mutual TLS with the Server's certificate and the fleet CA.
fn nginx(env: &Env, blob_dir: &Path) -> Option<Nginx> {
    let read = |name: &str| std::fs::read_to_string(env.key_file(name)).expect("key file");
    let (chain, key, ca) = (read("server.pem"), read("server.key"), read("fleet-ca.pem"));
    let tls = NginxTls {
        chain_pem: &chain,
        key_pem: &key,
        ca_pem: &ca,
        crl_der: None,
    };
    let location = format!(
        "location ~ \"^/v1/blobs/([0-9a-f]{{2}})([0-9a-f]{{62}})$\" {{ alias {}/$1/$1$2; }}",
        blob_dir.display()
    );
    Nginx::start(&tls, 2, &location)
}

/// How many times each connection downloads the blob in a row.
const ROUNDS: usize = 5;

/// Downloads `blob` [`ROUNDS`] times on each connection, the connections
/// at the same time; returns the elapsed time (every copy checked against
/// its hash by `DeviceHttp`).
async fn downloads(conns: &[DeviceHttp], blob: &BlobId, len: u64, dir: &Path) -> Duration {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (i, c) in conns.iter().enumerate() {
        let c = c.clone();
        let blob = *blob;
        let dest = dir.join(format!("dl-{i}"));
        set.spawn(async move {
            for _ in 0..ROUNDS {
                let _ = std::fs::remove_file(&dest);
                c.download_blob(&blob, len, &dest, DownloadLimits::default())
                    .await
                    .expect("download");
                std::fs::remove_file(&dest).expect("remove");
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("download task");
    }
    start.elapsed()
}

/// Throughput of [`downloads`] of `bytes` per copy, per connection.
fn mb_s(bytes: u64, d: Duration) -> f64 {
    (bytes * ROUNDS as u64) as f64 / 1e6 / d.as_secs_f64()
}

struct Row {
    name: &'static str,
    old_len: u64,
    new_len: u64,
    patch: u64,
    gen_s: f64,
    ready_s: f64,
    hwm_kib: u64,
    bsdiff: Option<Bsdiff>,
    one: Duration,
    many: Duration,
    nginx: Option<(Duration, Duration)>,
    resumed: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    if !a.corpus.join(PAIRS[0].1).exists() {
        println!(
            "SKIPPED: corpus not found at {} (pass --corpus DIR)",
            a.corpus.display()
        );
        return;
    }
    let have_bsdiff = ensure("bsdiff", "bsdiff");
    let env = Env::init();
    let (server, urls) = env.serve();
    let pid = server.pid();
    let anchors = env.anchors();
    let device = urls["device"].clone();
    let metrics = urls["metrics"].clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = status_kib(pid, "VmRSS").unwrap_or(0);
    let idle_hwm = status_kib(pid, "VmHWM").unwrap_or(0);

    // Images and packages of every pair, one signed Image repository.
    let mut images = Vec::new();
    for (i, (name, old, new)) in PAIRS.iter().enumerate() {
        let hw = format!("hw-{name}");
        let (fo, fnew) = (a.corpus.join(old), a.corpus.join(new));
        let (bo, bn) = (
            std::fs::read(&fo).expect("old"),
            std::fs::read(&fnew).expect("new"),
        );
        env.upload(name, "1.0.0", &hw, &fo);
        env.upload(name, "2.0.0", &hw, &fnew);
        let req = serde_json::json!({"id": name, "components": [
            {"device": "/ecu1", "image": hex::encode(sha(&bn).0), "release_counter": 2}
        ]});
        let req_path = env.write(&format!("{name}.pkg.json"), req.to_string().as_bytes());
        env.cli_json(&["packages", "create", req_path.to_str().expect("path")]);
        let car = Car::register(
            &env,
            &format!("WVWZZZ1JZXW{:06}", i + 1),
            &hw,
            10 * (i as u8 + 1),
            &device,
            &anchors,
        );
        images.push((name, fo, fnew, bo, bn, car));
    }
    let ids: Vec<&str> = PAIRS.iter().map(|p| p.0).collect();
    sign_image_repo(&env, &ids, 1);

    let work = tempfile::tempdir().expect("work");
    let blob_dir = env.srv().join("blobs");
    let ngx = nginx(&env, &blob_dir);
    let mut rows = Vec::new();
    for (name, fo, fnew, bo, bn, car) in &images {
        // The vehicle reports the old version, is assigned, checks in: the
        // Server queues the pair's delta job; its worker generates it.
        let (manifest, answer) = car.report(bo, "1.0.0").await;
        assert_eq!(answer, CheckInResponse::UpToDate);
        env.cli_json(&["assign", "--package", name, car.vin.as_str()]);
        let (sum0, n0) = generation_seconds(&metrics).await;
        let t0 = Instant::now();
        let answer = car.check_in(manifest).await;
        assert!(
            matches!(answer, CheckInResponse::NewDirectorMetadata { .. }),
            "{answer:?}"
        );
        let (h1, h2) = (hex::encode(sha(bo).0), hex::encode(sha(bn).0));
        let job = loop {
            let jobs = env.cli_json(&["deltas", "status", "--from", &h1, "--to", &h2]);
            if let Some(j) = jobs.as_array().and_then(|a| a.first()) {
                match j["state"].as_str() {
                    Some("done") => break j.clone(),
                    Some("failed") => panic!("delta job failed: {j}"),
                    _ => {}
                }
            }
            assert!(t0.elapsed() < Duration::from_secs(900), "delta not done");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let ready_s = t0.elapsed().as_secs_f64();
        let (sum1, n1) = generation_seconds(&metrics).await;
        assert_eq!(n1, n0 + 1, "one generation for {name}");
        let hwm_kib = status_kib(pid, "VmHWM").unwrap_or(0);
        let patch_hex = job["patch_sha256"].as_str().expect("patch").to_owned();
        let patch_len = job["patch_length"].as_u64().expect("length");
        let blob = BlobId::parse_hex(&patch_hex).expect("blob id");

        let bs = if have_bsdiff {
            bsdiff(fo, fnew, &work.path().join(format!("{name}.bsdiff")))
        } else {
            None
        };

        // Serving: one download, then concurrent ones, then a resume.
        let one = downloads(
            std::slice::from_ref(&car.http),
            &blob,
            patch_len,
            work.path(),
        )
        .await;
        let conns: Vec<DeviceHttp> = (0..a.downloads).map(|_| car.connect(&anchors)).collect();
        let many = downloads(&conns, &blob, patch_len, work.path()).await;
        let dest = work.path().join("resumed");
        let whole = std::fs::read(
            env.srv()
                .join("blobs")
                .join(&patch_hex[..2])
                .join(&patch_hex),
        )
        .expect("patch blob");
        let half = whole.len() / 2;
        std::fs::write(partial_path(&dest), &whole[..half]).expect("partial");
        let d = car
            .http
            .download_blob(&blob, patch_len, &dest, DownloadLimits::default())
            .await
            .expect("resumed download");
        assert_eq!(d.resumed_from, half as u64);
        let nginx = match &ngx {
            Some(n) => {
                let cfg = || client_tls_config(&car.identity, &anchors).expect("tls");
                let c1 = DeviceHttp::new(&n.url, cfg()).expect("http");
                let one = downloads(std::slice::from_ref(&c1), &blob, patch_len, work.path()).await;
                let conns: Vec<DeviceHttp> = (0..a.downloads)
                    .map(|_| DeviceHttp::new(&n.url, cfg()).expect("http"))
                    .collect();
                let many = downloads(&conns, &blob, patch_len, work.path()).await;
                Some((one, many))
            }
            None => None,
        };
        rows.push(Row {
            name,
            old_len: bo.len() as u64,
            new_len: bn.len() as u64,
            patch: patch_len,
            gen_s: sum1 - sum0,
            ready_s,
            hwm_kib,
            bsdiff: bs,
            one,
            many,
            nginx,
            resumed: d.fetched,
        });
    }
    let final_hwm = status_kib(pid, "VmHWM").unwrap_or(0);
    drop(server);

    println!("\nServer delta generation (worker time; check-in to ready) vs bsdiff 4.3 CLI");
    println!(
        "{:<10} {:>10} {:>10} | {:>10} {:>8} {:>8} {:>9} | {:>10} {:>8} {:>9} | {:>7} {:>7}",
        "pair",
        "old B",
        "new B",
        "patch B",
        "gen s",
        "ready s",
        "srv peak",
        "bsdiff B",
        "bsd s",
        "bsd peak",
        "size x",
        "time x"
    );
    for r in &rows {
        let (bb, bt, bp, sx, tx) = match &r.bsdiff {
            Some(b) => (
                b.patch.to_string(),
                format!("{:.2}", b.secs),
                format!("{:.0}MiB", mib(b.peak_kib)),
                format!("{:.2}", r.patch as f64 / b.patch as f64),
                format!("{:.2}", r.gen_s / b.secs),
            ),
            None => (
                "n/a".into(),
                "n/a".into(),
                "n/a".into(),
                "n/a".into(),
                "n/a".into(),
            ),
        };
        println!(
            "{:<10} {:>10} {:>10} | {:>10} {:>8.2} {:>8.2} {:>6.0}MiB | {:>10} {:>8} {:>9} | {:>7} {:>7}",
            r.name, r.old_len, r.new_len, r.patch, r.gen_s, r.ready_s, mib(r.hwm_kib), bb, bt, bp, sx, tx
        );
    }
    println!(
        "\nServing the patch over the device API (mutual TLS, DeviceHttp) vs nginx (same files, same TLS identities, same client); {} concurrent",
        a.downloads
    );
    println!(
        "{:<10} {:>10} | {:>9} {:>11} | {:>9} {:>11} | {:>7} {:>7} | {:>10}",
        "pair",
        "patch B",
        "1x MB/s",
        "Nx agg MB/s",
        "ngx 1x",
        "ngx Nx",
        "1x x",
        "Nx x",
        "resumed B"
    );
    for r in &rows {
        let n = a.downloads as u64;
        let (g1, gn, x1, xn) = match r.nginx {
            Some((o, m)) => (
                format!("{:.0}", mb_s(r.patch, o)),
                format!("{:.0}", mb_s(r.patch * n, m)),
                format!("{:.2}", o.as_secs_f64() / r.one.as_secs_f64()),
                format!("{:.2}", m.as_secs_f64() / r.many.as_secs_f64()),
            ),
            None => ("n/a".into(), "n/a".into(), "n/a".into(), "n/a".into()),
        };
        println!(
            "{:<10} {:>10} | {:>9.0} {:>11.0} | {:>9} {:>11} | {:>7} {:>7} | {:>10}",
            r.name,
            r.patch,
            mb_s(r.patch, r.one),
            mb_s(r.patch * n, r.many),
            g1,
            gn,
            x1,
            xn,
            r.resumed
        );
    }
    println!(
        "\nServer process memory: idle RSS {:.1} MiB (peak {:.1} MiB); peak over the whole run {:.1} MiB",
        mib(idle_rss),
        mib(idle_hwm),
        mib(final_hwm)
    );
    println!("(size x, time x: ours / bsdiff; 1x x, Nx x: our throughput / nginx's)");
}
