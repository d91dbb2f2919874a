//! `demo`: the esync-rs fleet demo on the real pipeline: the real
//! `esync-server` in process (SQLite in a temporary directory, device API
//! over mutual TLS, Director, Image repository, delta worker, campaigns),
//! a fleet of real Clients with 3 to 8 Agents each on file-backed A/B
//! devices, a campaign in two waves, one vehicle with an injected self-test
//! failure rolled back. Exits non-zero if any vehicle ends other than
//! expected or the Server's campaign record disagrees.

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
    /// Vehicles in the fleet (at least 2).
    #[arg(long, default_value_t = 20)]
    vehicles: usize,
    /// Size of each first firmware image in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    image_size: usize,
    /// Directory for the Server, devices and journals (kept afterwards);
    /// a temporary directory by default.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Most seconds for the campaign.
    #[arg(long, default_value_t = 170)]
    timeout_secs: u64,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let opts = FleetOptions {
        vehicles: cli.vehicles,
        image_size: cli.image_size,
        work_dir: cli.work_dir,
        progress: !cli.quiet,
        timeout: Duration::from_secs(cli.timeout_secs),
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
