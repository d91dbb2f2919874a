//! `esync-client`: the vehicle Client's command line.
//!
//! ```text
//! esync-client provision --dir D --server https://HOST:PORT \
//!                        --cert VEHICLE_CHAIN.pem --key VEHICLE.key --ca FLEET_CA.pem \
//!                        --director-root 1.root.json --image-root 1.root.json
//! esync-client status    --dir D
//! esync-client run       --dir D [--interval-secs 60] [--once]
//! ```
//!
//! `provision` checks the vehicle certificate against the fleet CA and the
//! two Uptane roots, then writes the state directory
//! (`esync_client::runtime::state`). `run` checks in with the Server over
//! mutual TLS (manifest hash; the manifest in `D/manifest.json` is
//! uploaded when the Server asks), refreshes and verifies the Director
//! metadata when the Server has newer, and the Image repository metadata
//! after that, into the trust stores in `D/trust/`; transient failures are
//! retried with exponential backoff. Orchestrating installs through the
//! embedded broker is not part of `run` yet.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use esync_client::http::Repo;
use esync_client::runtime::{check_in, refresh, CheckInOutcome, ConfigFile, StateDir};
use esync_identity::parse_identity;
use esync_uptane::UnixTime;

#[derive(Parser)]
#[command(name = "esync-client", about = "esync vehicle Client")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Writes a state directory from the factory-issued identity and roots.
    Provision {
        /// State directory.
        #[arg(long)]
        dir: PathBuf,
        /// Server device API, `https://host[:port]`.
        #[arg(long)]
        server: String,
        /// Vehicle certificate chain (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// Vehicle private key (PKCS#8 PEM).
        #[arg(long)]
        key: PathBuf,
        /// Fleet CA certificate(s) (PEM).
        #[arg(long)]
        ca: PathBuf,
        /// Pinned Director root metadata (`1.root.json`).
        #[arg(long)]
        director_root: PathBuf,
        /// Pinned Image repository root metadata.
        #[arg(long)]
        image_root: PathBuf,
    },
    /// Prints the identity, the server and the trusted metadata versions.
    Status {
        /// State directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Checks in and keeps the Uptane metadata current.
    Run {
        /// State directory.
        #[arg(long)]
        dir: PathBuf,
        /// Seconds between check-ins.
        #[arg(long, default_value_t = 60)]
        interval_secs: u64,
        /// Most seconds per request.
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
        /// One check-in (and refresh), then exit; failure exits non-zero.
        #[arg(long)]
        once: bool,
    },
}

const MAX_INPUT: u64 = 1024 * 1024;

fn read(path: &Path) -> Result<Vec<u8>, String> {
    match esync_store::file::read_bounded(path, MAX_INPUT) {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err(format!("{}: not found", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn read_text(path: &Path) -> Result<String, String> {
    String::from_utf8(read(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

fn now() -> UnixTime {
    UnixTime(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    )
}

fn status(dir: &Path) -> Result<(), String> {
    let state = StateDir::new(dir);
    let cfg = state.config().map_err(|e| e.to_string())?;
    let (id, _) = state.identity().map_err(|e| e.to_string())?;
    let peer = parse_identity(&id.cert_der).map_err(|e| e.to_string())?;
    println!("identity {:?}", peer.role);
    println!(
        "certificate valid {}..{} (serial {})",
        UnixTime(peer.not_before_unix).to_rfc3339(),
        UnixTime(peer.not_after_unix).to_rfc3339(),
        peer.serial_hex
    );
    println!("server {}", cfg.server_url);
    for (name, repo) in [("director", state.director()), ("image", state.image())] {
        let repo = repo.map_err(|e| e.to_string())?;
        let v = |o: Option<u64>| o.map_or_else(|| "-".to_owned(), |v| v.to_string());
        println!(
            "{name}: root {} timestamp {} snapshot {} targets {}",
            repo.root().meta.version,
            v(repo.timestamp().map(|t| t.meta.version)),
            v(repo.snapshot().map(|t| t.meta.version)),
            v(repo.targets("targets").map(|t| t.meta.version)),
        );
    }
    let manifest = state.manifest().map_err(|e| e.to_string())?;
    println!(
        "manifest {}",
        manifest.map_or_else(|| "none".to_owned(), |m| format!("{} bytes", m.len()))
    );
    let mut partial = 0;
    if let Ok(entries) = std::fs::read_dir(state.downloads_dir()) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(".partial") {
                partial += 1;
            }
        }
    }
    println!("partial downloads {partial}");
    Ok(())
}

async fn run_once(state: &StateDir, timeout: Duration) -> Result<bool, (bool, String)> {
    let fatal = |e: String| (false, e);
    let http = state.http().map_err(|e| fatal(e.to_string()))?;
    let mut director = state.director().map_err(|e| fatal(e.to_string()))?;
    let manifest = state.manifest().map_err(|e| fatal(e.to_string()))?;
    let now = now();
    let outcome = check_in(&http, manifest.as_deref(), &mut director, now, timeout)
        .await
        .map_err(|e| (is_retryable(&e), e.to_string()))?;
    println!("check-in: {outcome:?}");
    let refreshed = match &outcome {
        CheckInOutcome::DirectorRefreshed(_) => true,
        CheckInOutcome::ManifestUploaded(inner) => {
            matches!(**inner, CheckInOutcome::DirectorRefreshed(_))
        }
        _ => false,
    };
    if refreshed {
        let mut image = state.image().map_err(|e| fatal(e.to_string()))?;
        let r = refresh(&http, Repo::Image, &mut image, now, timeout)
            .await
            .map_err(|e| (is_retryable(&e), e.to_string()))?;
        println!("image refresh: {r:?}");
    }
    Ok(refreshed)
}

fn is_retryable(e: &esync_client::runtime::ClientRuntimeError) -> bool {
    match e {
        esync_client::runtime::ClientRuntimeError::Http(h) => h.retryable(),
        _ => false,
    }
}

async fn run(dir: &Path, interval: Duration, timeout: Duration, once: bool) -> Result<(), String> {
    let state = StateDir::new(dir);
    state.config().map_err(|e| e.to_string())?;
    if once {
        return run_once(&state, timeout).await.map(|_| ()).map_err(|e| e.1);
    }
    let mut failures: u32 = 0;
    loop {
        let wait = match run_once(&state, timeout).await {
            Ok(_) => {
                failures = 0;
                interval
            }
            Err((retryable, e)) => {
                eprintln!("esync-client: {e}");
                failures = failures.saturating_add(1);
                if retryable {
                    // 2, 4, 8 ... seconds, at most the interval (A14).
                    Duration::from_secs(1u64 << failures.min(16)).min(interval)
                } else {
                    interval
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Provision {
            dir,
            server,
            cert,
            key,
            ca,
            director_root,
            image_root,
        } => (|| {
            let vin = StateDir::new(&dir)
                .provision(
                    &ConfigFile { server_url: server },
                    &read_text(&cert)?,
                    &read_text(&key)?,
                    &read_text(&ca)?,
                    &read(&director_root)?,
                    &read(&image_root)?,
                )
                .map_err(|e| e.to_string())?;
            println!("provisioned {} for {vin}", dir.display());
            Ok(())
        })(),
        Cmd::Status { dir } => status(&dir),
        Cmd::Run {
            dir,
            interval_secs,
            timeout_secs,
            once,
        } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                rt.block_on(run(
                    &dir,
                    Duration::from_secs(interval_secs.max(1)),
                    Duration::from_secs(timeout_secs.max(1)),
                    once,
                ))
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("esync-client: {e}");
            ExitCode::FAILURE
        }
    }
}
