//! `demo`: the esync-rs fleet demo on the real pipeline: the real
//! `esync-server` in process (SQLite in a temporary directory, device API
//! over mutual TLS, Director, Image repository, delta worker, campaigns),
//! a fleet of real Clients with 3 to 8 Agents each on file-backed A/B
//! devices, a campaign in two waves, one vehicle with an injected self-test
//! failure rolled back. Exits non-zero if any vehicle ends other than
//! expected or the Server's campaign record disagrees. `--short` is the
//! mode CI runs (`.ci/run`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use esync_examples::fleet::{print_summary, run_fleet, FleetOptions};

#[derive(Parser)]
#[command(
    name = "demo",
    about = "esync-rs fleet demo on the real Server (no external service)"
)]
struct Cli {
    /// The short mode CI runs: 4 vehicles, 48 KiB images, at most 60 s for
    /// the campaign (`--vehicles`, `--image-size` and `--timeout-secs`
    /// still override it).
    #[arg(long)]
    short: bool,
    /// Vehicles in the fleet (at least 2) [default: 20, 4 with --short].
    #[arg(long)]
    vehicles: Option<usize>,
    /// Size of each first firmware image in bytes [default: 262144, 49152
    /// with --short].
    #[arg(long)]
    image_size: Option<usize>,
    /// Directory for the Server, devices and journals (kept afterwards);
    /// a temporary directory by default.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Most seconds for the campaign [default: 170, 60 with --short].
    #[arg(long)]
    timeout_secs: Option<u64>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let base = if cli.short {
        FleetOptions::short()
    } else {
        FleetOptions::full()
    };
    let opts = FleetOptions {
        vehicles: cli.vehicles.unwrap_or(base.vehicles),
        image_size: cli.image_size.unwrap_or(base.image_size),
        work_dir: cli.work_dir,
        progress: !cli.quiet,
        timeout: cli.timeout_secs.map_or(base.timeout, Duration::from_secs),
    };
    match run_fleet(opts).await {
        Ok(s) => {
            print_summary(&s);
            println!("demo: OK");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("demo: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
