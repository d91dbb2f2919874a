//! `demo`: the esync-rs end-to-end demo (Server, Client with its embedded
//! broker, three Agents with file-backed A/B devices; two campaigns, the second
//! rolled back). Exits non-zero if anything deviates from the expected story.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use esync_examples::{run_demo, DemoOptions};

#[derive(Parser)]
#[command(
    name = "demo",
    about = "esync-rs end-to-end demo (no external service)"
)]
struct Cli {
    /// Size of each ECU's first firmware image in bytes (at least 16384).
    #[arg(long, default_value_t = 384 * 1024)]
    image_size: usize,
    /// Directory for the devices and journals (kept afterwards); a
    /// temporary directory by default.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Transfer chunk size in bytes (1 KiB to 256 KiB).
    #[arg(long, default_value_t = 16 * 1024)]
    chunk_size: u32,
    /// Show progress reports and presence events.
    #[arg(long)]
    verbose: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let opts = DemoOptions {
        image_size: cli.image_size,
        work_dir: cli.work_dir,
        verbose: cli.verbose,
        chunk_size: cli.chunk_size,
    };
    match run_demo(opts).await {
        Ok(_) => {
            println!("demo: OK");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("demo: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
