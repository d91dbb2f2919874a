//! `esync-sim`: provision a simulated fleet on a Server through its admin
//! API (`provision`), then run it against the Server's device API (`run`),
//! printing periodic progress and a final summary.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use esync_server::admin_client::AdminClient;
use esync_sim::{provision_with, Fleet, FleetConfig, FleetSpec, SimVehicle};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser, Debug)]
#[command(name = "esync-sim", version, about = "The esync fleet simulator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Registers the fleet on the Server (vehicles, ECUs and their keys,
    /// certificates) through the admin API; identities are cached in
    /// `--cache-dir` and reused when the Server still knows them.
    Provision {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Provisions (as `provision`, from the cache when possible) and runs
    /// the fleet against the device API.
    Run(RunArgs),
}

#[derive(Args, Debug)]
struct AdminArgs {
    /// Admin API URL (`https://host:port`).
    #[arg(long, env = "ESYNC_ADMIN")]
    admin: String,
    /// Bearer token of an operator.
    #[arg(long, env = "ESYNC_TOKEN", hide_env_values = true)]
    token: String,
    /// The fleet CA certificate (PEM).
    #[arg(long, env = "ESYNC_CA")]
    ca: PathBuf,
    /// Admin requests in flight at once.
    #[arg(long, default_value_t = esync_sim::provision::DEFAULT_CONCURRENCY)]
    concurrency: usize,
}

#[derive(Args, Debug)]
struct FleetArgs {
    /// How many vehicles.
    #[arg(long, default_value_t = 100)]
    vehicles: usize,
    /// VIN prefix (VIN characters, at most 16).
    #[arg(long, default_value = "SMV")]
    vin_prefix: String,
    /// Seed of every derived key and choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where identities are cached.
    #[arg(long, default_value = "esync-sim-cache")]
    cache_dir: PathBuf,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    admin: AdminArgs,
    #[command(flatten)]
    fleet: FleetArgs,
    /// Device API URL (repeat: vehicles are spread over them and fail over
    /// to the next on connection errors).
    #[arg(long = "server", required = true)]
    servers: Vec<String>,
    /// Seconds between a vehicle's check-ins.
    #[arg(long, default_value_t = 30.0)]
    interval: f64,
    /// Seconds of uniform jitter around the interval (default: a tenth).
    #[arg(long)]
    jitter: Option<f64>,
    /// Share of offers failed and rolled back (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    failure_rate: f64,
    /// Seconds to run (0: until interrupted).
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Seconds of warm-up (first check-ins, manifest uploads) before the
    /// steady-state window the summary also reports.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5.0)]
    progress: f64,
    /// Seconds of each request's timeout.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Print every error.
    #[arg(long)]
    log_errors: bool,
    /// Write the full report (JSON) here.
    #[arg(long)]
    report: Option<PathBuf>,
}

fn secs(what: &str, s: f64) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(s).map_err(|e| format!("{what}: {e}").into())
}

async fn provision_fleet(a: &AdminArgs, f: &FleetArgs) -> Result<(Vec<SimVehicle>, String), Error> {
    let ca_pem = std::fs::read_to_string(&a.ca).map_err(|e| format!("{}: {e}", a.ca.display()))?;
    let admin = AdminClient::new(&a.admin, &ca_pem, &a.token)?;
    let spec = FleetSpec::demo(f.vehicles, &f.vin_prefix, f.seed)?;
    let started = std::time::Instant::now();
    let p = provision_with(&admin, &spec, Some(&f.cache_dir), a.concurrency).await?;
    eprintln!(
        "provisioned {} vehicles in {:.1} s ({} registered, {} reused from {})",
        p.vehicles.len(),
        started.elapsed().as_secs_f64(),
        p.registered,
        p.reused,
        p.cache_file
            .as_ref()
            .map_or_else(|| "-".into(), |c| c.display().to_string())
    );
    Ok((p.vehicles, ca_pem))
}

async fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Provision { admin, fleet } => {
            provision_fleet(&admin, &fleet).await?;
            Ok(())
        }
        Command::Run(r) => {
            let (vehicles, ca_pem) = provision_fleet(&r.admin, &r.fleet).await?;
            let mut cfg = FleetConfig::new(r.servers.clone(), ca_pem);
            cfg.interval = secs("interval", r.interval)?;
            cfg.jitter = secs("jitter", r.jitter.unwrap_or(r.interval / 10.0))?;
            cfg.failure_rate = r.failure_rate;
            cfg.seed = r.fleet.seed;
            cfg.request_timeout = secs("timeout", r.timeout)?;
            cfg.log_errors = r.log_errors;
            let fleet = Fleet::spawn(cfg, &vehicles)?;
            let every = secs("progress", r.progress.max(0.1))?;
            let end = (r.duration > 0.0)
                .then(|| secs("duration", r.duration))
                .transpose()?
                .map(|d| tokio::time::Instant::now() + d);
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            let warm_end = tokio::time::Instant::now() + secs("warmup", r.warmup)?;
            let mut mark = None;
            loop {
                if mark.is_none() && r.warmup > 0.0 && tokio::time::Instant::now() >= warm_end {
                    mark = Some(fleet.mark());
                    println!("warm-up over: steady-state window starts");
                }
                let until_end = async {
                    match end {
                        Some(e) => tokio::time::sleep_until(e).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tick.tick() => println!("{}", fleet.snapshot().line()),
                    () = until_end => break,
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
            eprintln!("stopping…");
            let window = mark.as_ref().map(|m| fleet.since(m));
            let report = fleet.stop().await;
            println!("{}", report.summary());
            if let Some(w) = window {
                println!("steady state (after {} s warm-up): {}", r.warmup, w.line());
            }
            // Linux: the simulator's own peak resident set.
            if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
                if let Some(l) = status.lines().find(|l| l.starts_with("VmHWM:")) {
                    println!(
                        "simulator peak RSS {}",
                        l.trim_start_matches("VmHWM:").trim()
                    );
                }
            }
            if let Some(p) = r.report {
                std::fs::write(&p, serde_json::to_vec_pretty(&report)?)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
            }
            Ok(())
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("esync-sim: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("esync-sim: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
