//! `esync-tuf-client`: a TUF client command line following the contract of
//! the TUF conformance tests, over esync-uptane's sans-I/O verifier.
//!
//! ```text
//! esync-tuf-client --metadata-dir DIR init ROOT_FILE
//! esync-tuf-client --metadata-dir DIR --metadata-url URL refresh
//! esync-tuf-client --metadata-dir DIR --metadata-url URL --target-name NAME [--target-name NAME ...] \
//!     --target-base-url URL --target-dir TDIR download
//! ```
//!
//! - `init` stores the root it is given as `DIR/root.json` without checking
//!   it and without any request (the contract: "no checks are expected");
//!   `refresh` and `download` verify it before trusting anything, and exit
//!   1 on a root that is not signed by a threshold of its own keys.
//! - `DIR` holds the trusted metadata, one file per role, `ROLE.json`
//!   (`root.json`, `timestamp.json`, `snapshot.json`, `targets.json`, and
//!   delegated roles with their name percent-encoded), each holding exactly
//!   the bytes served.
//! - Downloaded targets are written to `TDIR/NAME` where NAME is the target
//!   name percent-encoded (every byte outside `[A-Za-z0-9._~-]`, so `/`
//!   becomes `%2F`), as Python's `urllib.parse.quote(name, "")` does.
//! - The time is the system clock; the last time seen is not persisted by
//!   this program (the conformance contract allows only role files in DIR).
//!
//! Exit status 0 on success, 1 on any failure (the reason goes to stderr).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use esync_store::trust::DirTrustStore;
use esync_uptane::builder::hash_prefixed_path;
use esync_uptane::metadata::{percent_encode, TargetInfo};
use esync_uptane::target::{verify_target, TargetVerifier};
use esync_uptane::{Limits, Need, Repository, UnixTime};

#[derive(Parser)]
#[command(
    name = "esync-tuf-client",
    version,
    about = "TUF client (conformance-test command line)"
)]
struct Cli {
    /// Directory of the trusted metadata.
    #[arg(long)]
    metadata_dir: PathBuf,
    /// Base URL of the repository metadata.
    #[arg(long)]
    metadata_url: Option<String>,
    /// Target to download (repeatable, downloaded in order).
    #[arg(long = "target-name")]
    target_names: Vec<String>,
    /// Base URL of the target files.
    #[arg(long)]
    target_base_url: Option<String>,
    /// Directory to write targets into.
    #[arg(long)]
    target_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Store ROOT_FILE as DIR/root.json (no checks, no network; the next
    /// refresh verifies it).
    Init {
        /// The initial trusted root metadata.
        root_file: PathBuf,
    },
    /// Update the top-level metadata from --metadata-url.
    Refresh,
    /// Refresh, then download each --target-name into --target-dir.
    Download,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("esync-tuf-client: {e}");
            ExitCode::FAILURE
        }
    }
}

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

fn run(cli: &Cli) -> AnyResult<()> {
    match &cli.command {
        Command::Init { root_file } => init(&cli.metadata_dir, root_file),
        Command::Refresh => {
            let url = cli
                .metadata_url
                .as_deref()
                .ok_or("--metadata-url is required")?;
            refresh(&cli.metadata_dir, url).map(|_| ())
        }
        Command::Download => {
            let url = cli
                .metadata_url
                .as_deref()
                .ok_or("--metadata-url is required")?;
            let base = cli
                .target_base_url
                .as_deref()
                .ok_or("--target-base-url is required")?;
            let tdir = cli
                .target_dir
                .as_deref()
                .ok_or("--target-dir is required")?;
            let (mut repo, agent) = refresh(&cli.metadata_dir, url)?;
            for name in &cli.target_names {
                download(&mut repo, &agent, url, base, tdir, name)?;
            }
            Ok(())
        }
    }
}

/// Stores `root_file` as `DIR/root.json`, as the conformance contract
/// says: "no checks are expected" and no request is made. The root is
/// verified (signed by a threshold of its own keys, not expired...) by the
/// next `refresh` or `download`, which refuse a bad one.
fn init(dir: &Path, root_file: &Path) -> AnyResult<()> {
    let bytes = fs::read(root_file).map_err(|e| format!("reading {}: {e}", root_file.display()))?;
    fs::create_dir_all(dir)?;
    write_atomic(&dir.join("root.json"), &bytes)?;
    Ok(())
}

fn now() -> AnyResult<UnixTime> {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    Ok(UnixTime(i64::try_from(secs)?))
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(Duration::from_secs(30))
        .build()
}

fn join(base: &str, path: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), path)
}

/// GET with a size cap: reads at most `max + 1` bytes so the verifier sees
/// an over-long answer without the client buffering it all. 403 and 404 are
/// "not found" (as TUF clients treat them for the next root).
fn fetch(agent: &ureq::Agent, url: &str, max: u64) -> Result<Option<Vec<u8>>, String> {
    match agent.get(url).call() {
        Ok(resp) => {
            let mut buf = Vec::new();
            resp.into_reader()
                .take(max.saturating_add(1))
                .read_to_end(&mut buf)
                .map_err(|e| format!("reading {url}: {e}"))?;
            Ok(Some(buf))
        }
        Err(ureq::Error::Status(403 | 404, _)) => Ok(None),
        Err(e) => Err(format!("{url}: {e}")),
    }
}

/// The trusted metadata in DIR (`esync_store::trust::DirTrustStore`: role
/// names percent-encoded, atomic writes, unreadable files refused). Without
/// its time floor: the contract allows only role files in DIR.
fn trust_store(dir: &Path) -> DirTrustStore {
    DirTrustStore::new(dir).without_time_floor()
}

fn refresh(dir: &Path, url: &str) -> AnyResult<(Repository<DirTrustStore>, ureq::Agent)> {
    let mut repo = Repository::open(trust_store(dir), Limits::default())?;
    let agent = agent();
    repo.refresh_with(now()?, |need: &Need| {
        fetch(&agent, &join(url, &need.path()), need.max_length())
    })?;
    Ok((repo, agent))
}

fn download(
    repo: &mut Repository<DirTrustStore>,
    agent: &ureq::Agent,
    metadata_url: &str,
    base: &str,
    tdir: &Path,
    name: &str,
) -> AnyResult<()> {
    let info = repo
        .find_target_with(name, |need: &Need| {
            fetch(agent, &join(metadata_url, &need.path()), need.max_length())
        })?
        .ok_or_else(|| format!("target {name:?} not found"))?;
    let local = tdir.join(percent_encode(name));
    if let Ok(existing) = fs::read(&local) {
        if verify_target(name, &info, &existing).is_ok() {
            return Ok(());
        }
    }
    let path = if repo.root().meta.consistent_snapshot {
        let hash = info
            .hashes
            .get("sha256")
            .or_else(|| info.hashes.values().next())
            .ok_or_else(|| format!("target {name:?} has no hash"))?;
        hash_prefixed_path(name, hash)
    } else {
        name.to_string()
    };
    let data = fetch_target(agent, &join(base, &path), name, &info)?;
    fs::create_dir_all(tdir)?;
    write_atomic(&local, &data)?;
    Ok(())
}

/// Streams a target, refusing it as soon as it passes its declared length,
/// and checks its hashes before returning it.
fn fetch_target(
    agent: &ureq::Agent,
    url: &str,
    name: &str,
    info: &TargetInfo,
) -> AnyResult<Vec<u8>> {
    let resp = agent.get(url).call().map_err(|e| format!("{url}: {e}"))?;
    let mut reader = resp.into_reader();
    let mut verifier = TargetVerifier::new(name, info)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).ok_or("reader returned more than the buffer")?;
        verifier.update(chunk)?;
        out.extend_from_slice(chunk);
    }
    verifier.finish()?;
    Ok(out)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp"));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}
