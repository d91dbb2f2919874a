//! `esync-server`: set up a Server directory (`init`), run the Server
//! (`serve`), and administer a running Server through its admin API over
//! HTTPS (`vehicles`, `certs`, `images`, `packages`, `assign`, `deltas`,
//! `tokens`).
//!
//! The admin subcommands find the Server and its CA from `--config` (the
//! Server directory's `server.toml`) or from `--server` and `--ca`; the
//! bearer token comes from `--token` or `ESYNC_TOKEN`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http::Method;
use http_body_util::{BodyExt, StreamBody};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;

use esync_server::admin_client::{enc, AdminBody, AdminClient};
use esync_server::config::{keys, ServerConfig};
use esync_server::node;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Upload chunk size.
const UPLOAD_CHUNK: usize = 256 * 1024;

#[derive(Parser, Debug)]
#[command(name = "esync-server", version, about = "The esync fleet Server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Creates a Server directory: fleet CA, Server certificate,
    /// configuration, database; prints the first operator token once.
    Init(InitArgs),
    /// Runs the Server: admin listener, metrics listener, delta workers,
    /// CRL refresh.
    Serve {
        /// The configuration file (`<dir>/server.toml`).
        #[arg(long)]
        config: PathBuf,
    },
    /// Vehicles and their ECUs.
    Vehicles {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: VehiclesCmd,
    },
    /// Vehicle and Agent certificates.
    Certs {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: CertsCmd,
    },
    /// Images.
    Images {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: ImagesCmd,
    },
    /// Packages.
    Packages {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: PackagesCmd,
    },
    /// Assigns a package to vehicles.
    Assign {
        #[command(flatten)]
        conn: Conn,
        /// Package id.
        #[arg(long)]
        package: String,
        /// VINs.
        #[arg(required = true)]
        vins: Vec<String>,
    },
    /// Delta jobs.
    Deltas {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: DeltasCmd,
    },
    /// Director keys.
    Keys {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// The Image repository: upload offline-signed metadata, online keys.
    Repo {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: RepoCmd,
    },
    /// Offline Image repository signing (no Server contact: run it where
    /// the root and targets keys live).
    Offline {
        #[command(subcommand)]
        cmd: OfflineCmd,
    },
    /// Admin tokens.
    Tokens {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: TokensCmd,
    },
    /// Campaigns: waves of offers of one package to matching vehicles.
    Campaign {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: CampaignCmd,
    },
    /// Rollback blocks: packages not offered again to a vehicle that did
    /// not install them, until cleared.
    RollbackBlocks {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: BlocksCmd,
    },
}

#[derive(Subcommand, Debug)]
enum CampaignCmd {
    /// Creates a draft campaign from a JSON spec file (`CampaignSpec`).
    Create {
        /// The spec, JSON.
        #[arg(long)]
        spec: PathBuf,
    },
    /// Counts the vehicles a spec matches now and its wave sizes.
    DryRun {
        /// The spec, JSON.
        #[arg(long)]
        spec: PathBuf,
    },
    /// Starts a draft campaign (members taken now, wave 1 opens).
    Start {
        /// Campaign id.
        id: i64,
    },
    /// Pauses a campaign.
    Pause {
        /// Campaign id.
        id: i64,
    },
    /// Resumes a paused campaign.
    Resume {
        /// Campaign id.
        id: i64,
    },
    /// Aborts a campaign.
    Abort {
        /// Campaign id.
        id: i64,
    },
    /// Opens the next wave of a campaign waiting for approval.
    Approve {
        /// Campaign id.
        id: i64,
    },
    /// Shows every campaign, or one with its per-wave counts; `--watch`
    /// shows progress bars per wave until it completes, aborts, pauses or
    /// waits for approval.
    Status {
        /// Campaign id.
        id: Option<i64>,
        /// Follow with progress bars (needs an id).
        #[arg(long, requires = "id")]
        watch: bool,
        /// Give up watching after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// Lists a campaign's vehicles with state and history.
    Vehicles {
        /// Campaign id.
        id: i64,
        /// After this VIN.
        #[arg(long)]
        after: Option<String>,
        /// At most this many (at most 1000).
        #[arg(long)]
        limit: Option<u32>,
    },
}

#[derive(Subcommand, Debug)]
enum BlocksCmd {
    /// Lists blocks.
    List {
        /// Only this vehicle's.
        #[arg(long)]
        vin: Option<String>,
        /// Only this package's.
        #[arg(long)]
        package: Option<String>,
    },
    /// Clears a block: the package may be directed to the vehicle again.
    Clear {
        /// VIN.
        vin: String,
        /// Package id.
        package: String,
    },
}

#[derive(Args, Debug)]
struct InitArgs {
    /// The directory to create (must not exist or be empty).
    #[arg(long)]
    dir: PathBuf,
    /// Device API listener.
    #[arg(long, default_value = "0.0.0.0:8443")]
    device_listen: SocketAddr,
    /// Admin API listener.
    #[arg(long, default_value = "127.0.0.1:9443")]
    admin_listen: SocketAddr,
    /// Prometheus listener (plain HTTP).
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics_listen: SocketAddr,
    /// Names the Server certificate is issued for (repeat).
    #[arg(long = "server-name", default_values = ["localhost", "127.0.0.1"])]
    server_names: Vec<String>,
    /// Database (default: SQLite in the directory).
    #[arg(long)]
    database_url: Option<String>,
    /// Fleet CA validity, days.
    #[arg(long, default_value_t = 3650)]
    ca_days: u32,
}

#[derive(Args, Debug)]
struct Conn {
    /// A Server directory's configuration: gives the admin address and CA.
    #[arg(long, env = "ESYNC_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Admin API base URL (`https://host:port`), overrides `--config`.
    #[arg(long, env = "ESYNC_SERVER", global = true)]
    server: Option<String>,
    /// CA certificate (PEM) the admin listener's certificate chains to.
    #[arg(long, env = "ESYNC_CA", global = true)]
    ca: Option<PathBuf>,
    /// Bearer token (required).
    #[arg(long, env = "ESYNC_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// No progress bars.
    #[arg(long, global = true)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum VehiclesCmd {
    /// Lists vehicles.
    List {
        /// After this VIN.
        #[arg(long)]
        after: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Shows a vehicle with its ECUs and assignments.
    Get {
        /// VIN.
        vin: String,
    },
    /// Registers (or updates) a vehicle.
    Add {
        /// VIN.
        #[arg(long)]
        vin: String,
        /// Model.
        #[arg(long)]
        model: String,
        /// Region.
        #[arg(long)]
        region: String,
        /// Hardware ids (repeat).
        #[arg(long = "hardware-id")]
        hardware_ids: Vec<String>,
    },
    /// Registers (or updates) an ECU of a vehicle.
    AddEcu {
        /// VIN.
        #[arg(long)]
        vin: String,
        /// ECU serial.
        #[arg(long)]
        serial: String,
        /// Hardware id.
        #[arg(long)]
        hardware_id: String,
        /// The primary ECU.
        #[arg(long)]
        primary: bool,
        /// Public key, hex.
        #[arg(long)]
        public_key: String,
    },
}

#[derive(Subcommand, Debug)]
enum CertsCmd {
    /// Signs a CSR (PEM file) for a vehicle's Client or one of its Agents.
    Issue {
        /// VIN.
        #[arg(long)]
        vin: String,
        /// Agent device path (omit for the vehicle's Client).
        #[arg(long)]
        device: Option<String>,
        /// CSR, PEM.
        #[arg(long)]
        csr: PathBuf,
        /// Where to write the certificate chain (PEM); stdout otherwise.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Shows a certificate.
    Get {
        /// Serial, hex.
        serial: String,
    },
    /// Revokes a certificate (the device listener refuses it from then on).
    Revoke {
        /// Serial, hex.
        serial: String,
        /// Reason.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ImagesCmd {
    /// Uploads an image file (hashed locally, streamed, checked by the Server).
    Upload {
        /// Image name.
        #[arg(long)]
        name: String,
        /// Version.
        #[arg(long)]
        version: String,
        /// Hardware id.
        #[arg(long)]
        hardware_id: String,
        /// The file.
        file: PathBuf,
    },
    /// Shows an image.
    Get {
        /// SHA-256, hex.
        sha256: String,
    },
}

#[derive(Subcommand, Debug)]
enum PackagesCmd {
    /// Builds a package from a JSON request file (`PackageRequest`).
    Create {
        /// The request, JSON.
        file: PathBuf,
    },
    /// Shows a package.
    Get {
        /// Package id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum DeltasCmd {
    /// Shows the delta jobs between two images; `--wait` follows them until
    /// every one is done or failed.
    Status {
        /// Source SHA-256.
        #[arg(long)]
        from: String,
        /// Target SHA-256.
        #[arg(long)]
        to: String,
        /// Follow until finished.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Queues a delta job.
    Request {
        /// Source SHA-256.
        #[arg(long)]
        from: String,
        /// Target SHA-256.
        #[arg(long)]
        to: String,
        /// Patch format.
        #[arg(long)]
        format: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCmd {
    /// Shows the Director's current root.
    Root,
    /// Rotates the Director key of a role (`root`, `targets`, `snapshot`,
    /// `timestamp`).
    Rotate {
        /// Role.
        role: String,
    },
}

#[derive(Subcommand, Debug)]
enum RepoCmd {
    /// Uploads signed metadata files (in the order given: root first).
    Upload {
        /// Signed TUF JSON files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Creates the Server's online snapshot and timestamp keys and prints
    /// their public keys (name them in the next offline-signed root).
    OnlineKeys,
}

#[derive(Subcommand, Debug)]
enum OfflineCmd {
    /// Writes a new ed25519 private key (PKCS#8 PEM, mode 0600) and prints
    /// its public key (TUF key JSON).
    Keygen {
        /// Key file to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Signs root version 1 of the Image repository. Each role key is a
    /// private key file (PEM) or a public key file (TUF key JSON, e.g. the
    /// Server's online keys from `repo online-keys`).
    Root {
        /// Root key (private: it signs).
        #[arg(long)]
        root_key: PathBuf,
        /// Targets key.
        #[arg(long)]
        targets_key: PathBuf,
        /// Snapshot key.
        #[arg(long)]
        snapshot_key: PathBuf,
        /// Timestamp key.
        #[arg(long)]
        timestamp_key: PathBuf,
        /// Validity, days.
        #[arg(long, default_value_t = 365)]
        expires_days: u32,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Signs targets for package models (the JSON `packages get` prints).
    SignTargets {
        /// Targets key (private, PEM).
        #[arg(long)]
        key: PathBuf,
        /// Targets version (higher than the one the Server holds).
        #[arg(long)]
        version: u64,
        /// Validity, days.
        #[arg(long, default_value_t = 90)]
        expires_days: u32,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Package model files.
        #[arg(required = true)]
        packages: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum TokensCmd {
    /// Creates a token and prints its secret (shown once).
    Create {
        /// Name.
        #[arg(long)]
        name: String,
        /// `operator` or `viewer`.
        #[arg(long, default_value = "viewer")]
        role: String,
    },
    /// Revokes a token.
    Revoke {
        /// Name.
        name: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("esync-server: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("esync-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Init(a) => init(a).await,
        Command::Serve { config } => serve(&config).await,
        Command::Vehicles { conn, cmd } => {
            let c = connect(&conn)?;
            let v = match cmd {
                VehiclesCmd::List { after, limit } => {
                    let mut q = Vec::new();
                    if let Some(a) = after {
                        q.push(format!("after={a}"));
                    }
                    if let Some(l) = limit {
                        q.push(format!("limit={l}"));
                    }
                    c.json(Method::GET, &format!("/vehicles?{}", q.join("&")), None)
                        .await?
                }
                VehiclesCmd::Get { vin } => {
                    c.json(Method::GET, &format!("/vehicles/{vin}"), None)
                        .await?
                }
                VehiclesCmd::Add {
                    vin,
                    model,
                    region,
                    hardware_ids,
                } => {
                    let body = json!({"vin": vin, "model": model, "region": region,
                        "hardware_ids": hardware_ids});
                    c.json(Method::POST, "/vehicles", Some(body)).await?
                }
                VehiclesCmd::AddEcu {
                    vin,
                    serial,
                    hardware_id,
                    primary,
                    public_key,
                } => {
                    let body = json!({"serial": serial, "hardware_id": hardware_id,
                        "primary": primary, "public_key": public_key});
                    c.json(Method::POST, &format!("/vehicles/{vin}/ecus"), Some(body))
                        .await?
                }
            };
            print_json(&v)
        }
        Command::Certs { conn, cmd } => {
            let c = connect(&conn)?;
            match cmd {
                CertsCmd::Issue {
                    vin,
                    device,
                    csr,
                    out,
                } => {
                    let csr_pem = read_small(&csr, 64 * 1024)?;
                    let v = c
                        .json(
                            Method::POST,
                            &format!("/vehicles/{vin}/certificates"),
                            Some(json!({"csr_pem": csr_pem, "device": device})),
                        )
                        .await?;
                    let chain = format!(
                        "{}{}",
                        v["cert_pem"].as_str().unwrap_or_default(),
                        v["chain_pem"].as_str().unwrap_or_default()
                    );
                    match out {
                        Some(p) => {
                            std::fs::write(&p, chain)?;
                            eprintln!(
                                "certificate {} for {} written to {}",
                                v["serial"].as_str().unwrap_or_default(),
                                v["subject"].as_str().unwrap_or_default(),
                                p.display()
                            );
                            Ok(())
                        }
                        None => {
                            print!("{chain}");
                            Ok(())
                        }
                    }
                }
                CertsCmd::Get { serial } => print_json(
                    &c.json(Method::GET, &format!("/certificates/{serial}"), None)
                        .await?,
                ),
                CertsCmd::Revoke { serial, reason } => print_json(
                    &c.json(
                        Method::POST,
                        &format!("/certificates/{serial}/revoke"),
                        Some(json!({"reason": reason})),
                    )
                    .await?,
                ),
            }
        }
        Command::Images { conn, cmd } => {
            let c = connect(&conn)?;
            match cmd {
                ImagesCmd::Upload {
                    name,
                    version,
                    hardware_id,
                    file,
                } => {
                    let v = upload(&c, &name, &version, &hardware_id, &file, conn.quiet).await?;
                    print_json(&v)
                }
                ImagesCmd::Get { sha256 } => print_json(
                    &c.json(Method::GET, &format!("/images/{sha256}"), None)
                        .await?,
                ),
            }
        }
        Command::Packages { conn, cmd } => {
            let c = connect(&conn)?;
            match cmd {
                PackagesCmd::Create { file } => {
                    let text = read_small(&file, 16 * 1024 * 1024)?;
                    let body: Value = serde_json::from_str(&text)
                        .map_err(|e| format!("{}: {e}", file.display()))?;
                    print_json(&c.json(Method::POST, "/packages", Some(body)).await?)
                }
                PackagesCmd::Get { id } => print_json(
                    &c.json(Method::GET, &format!("/packages/{id}"), None)
                        .await?,
                ),
            }
        }
        Command::Assign {
            conn,
            package,
            vins,
        } => {
            let c = connect(&conn)?;
            print_json(
                &c.json(
                    Method::POST,
                    "/assignments",
                    Some(json!({"package": package, "vins": vins})),
                )
                .await?,
            )
        }
        Command::Campaign { conn, cmd } => {
            let c = connect(&conn)?;
            let spec = |path: &Path| -> Result<Value, Error> {
                let text = read_small(path, 4 * 1024 * 1024)?;
                Ok(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?)
            };
            let act = |id: i64, what: &str| format!("/campaigns/{id}/{what}");
            let v = match cmd {
                CampaignCmd::Create { spec: f } => {
                    c.json(Method::POST, "/campaigns", Some(spec(&f)?)).await?
                }
                CampaignCmd::DryRun { spec: f } => {
                    c.json(Method::POST, "/campaigns/dry-run", Some(spec(&f)?))
                        .await?
                }
                CampaignCmd::Start { id } => c.json(Method::POST, &act(id, "start"), None).await?,
                CampaignCmd::Pause { id } => c.json(Method::POST, &act(id, "pause"), None).await?,
                CampaignCmd::Resume { id } => {
                    c.json(Method::POST, &act(id, "resume"), None).await?
                }
                CampaignCmd::Abort { id } => c.json(Method::POST, &act(id, "abort"), None).await?,
                CampaignCmd::Approve { id } => {
                    c.json(Method::POST, &act(id, "approve"), None).await?
                }
                CampaignCmd::Status {
                    id: None,
                    watch: _,
                    timeout: _,
                } => c.json(Method::GET, "/campaigns", None).await?,
                CampaignCmd::Status {
                    id: Some(id),
                    watch,
                    timeout,
                } => {
                    let path = format!("/campaigns/{id}");
                    if watch {
                        watch_campaign(&c, &path, Duration::from_secs(timeout), conn.quiet).await?
                    } else {
                        c.json(Method::GET, &path, None).await?
                    }
                }
                CampaignCmd::Vehicles { id, after, limit } => {
                    let mut q = Vec::new();
                    if let Some(a) = after {
                        q.push(format!("after={}", enc(&a)));
                    }
                    if let Some(l) = limit {
                        q.push(format!("limit={l}"));
                    }
                    let path = format!("/campaigns/{id}/vehicles?{}", q.join("&"));
                    c.json(Method::GET, &path, None).await?
                }
            };
            print_json(&v)
        }
        Command::RollbackBlocks { conn, cmd } => {
            let c = connect(&conn)?;
            let v = match cmd {
                BlocksCmd::List { vin, package } => {
                    let mut q = Vec::new();
                    if let Some(v) = vin {
                        q.push(format!("vin={}", enc(&v)));
                    }
                    if let Some(p) = package {
                        q.push(format!("package={}", enc(&p)));
                    }
                    let path = format!("/rollback-blocks?{}", q.join("&"));
                    c.json(Method::GET, &path, None).await?
                }
                BlocksCmd::Clear { vin, package } => {
                    let path = format!("/rollback-blocks/{}/{}", enc(&vin), enc(&package));
                    c.json(Method::DELETE, &path, None).await?
                }
            };
            print_json(&v)
        }
        Command::Deltas { conn, cmd } => {
            let c = connect(&conn)?;
            match cmd {
                DeltasCmd::Status {
                    from,
                    to,
                    wait,
                    timeout,
                } => {
                    let path = format!("/deltas?from={from}&to={to}");
                    if !wait {
                        return print_json(&c.json(Method::GET, &path, None).await?);
                    }
                    let v =
                        follow_deltas(&c, &path, Duration::from_secs(timeout), conn.quiet).await?;
                    print_json(&v)
                }
                DeltasCmd::Request { from, to, format } => print_json(
                    &c.json(
                        Method::POST,
                        "/deltas",
                        Some(json!({"from": from, "to": to, "format": format})),
                    )
                    .await?,
                ),
            }
        }
        Command::Keys { conn, cmd } => {
            let c = connect(&conn)?;
            let v = match cmd {
                KeysCmd::Root => c.json(Method::GET, "/director/root", None).await?,
                KeysCmd::Rotate { role } => {
                    c.json(
                        Method::POST,
                        &format!("/director/keys/{}/rotate", enc(&role)),
                        None,
                    )
                    .await?
                }
            };
            print_json(&v)
        }
        Command::Repo { conn, cmd } => {
            let c = connect(&conn)?;
            match cmd {
                RepoCmd::Upload { files } => {
                    for f in files {
                        let text = read_small(&f, 16 * 1024 * 1024)?;
                        // Checked locally, sent byte for byte.
                        serde_json::from_str::<Value>(&text)
                            .map_err(|e| format!("{}: {e}", f.display()))?;
                        let v = c
                            .raw_json(Method::POST, "/image-repo/metadata", text.into_bytes())
                            .await
                            .map_err(|e| format!("{}: {e}", f.display()))?;
                        print_json(&v)?;
                    }
                    Ok(())
                }
                RepoCmd::OnlineKeys => print_json(
                    &c.json(Method::POST, "/image-repo/online-keys", None)
                        .await?,
                ),
            }
        }
        Command::Offline { cmd } => offline_cmd(cmd),
        Command::Tokens { conn, cmd } => {
            let c = connect(&conn)?;
            match cmd {
                TokensCmd::Create { name, role } => {
                    let v = c
                        .json(
                            Method::POST,
                            "/tokens",
                            Some(json!({"name": name, "role": role})),
                        )
                        .await?;
                    println!("{}", v["token"].as_str().unwrap_or_default());
                    Ok(())
                }
                TokensCmd::Revoke { name } => {
                    c.json(Method::DELETE, &format!("/tokens/{name}"), None)
                        .await?;
                    eprintln!("token {name} revoked");
                    Ok(())
                }
            }
        }
    }
}

fn print_json(v: &Value) -> Result<(), Error> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn read_small(path: &Path, max: u64) -> Result<String, Error> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len > max {
        return Err(format!("{}: larger than {max} bytes", path.display()).into());
    }
    Ok(std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

// ---------------------------------------------------------------- init

async fn init(a: InitArgs) -> Result<(), Error> {
    let done = node::init(&node::InitOptions {
        dir: a.dir.clone(),
        device_listen: a.device_listen,
        admin_listen: a.admin_listen,
        metrics_listen: Some(a.metrics_listen),
        server_names: a.server_names,
        database_url: a.database_url,
        ca_days: a.ca_days,
    })
    .await?;
    eprintln!("Director keys created (root version {})", done.root_version);
    eprintln!(
        "initialised {} (config {}, CA {})",
        a.dir.display(),
        done.config_path.display(),
        done.ca_cert.display()
    );
    eprintln!("operator token (shown once, store it now):");
    println!("{}", done.token);
    Ok(())
}

// ---------------------------------------------------------------- serve

async fn serve(config_path: &Path) -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = ServerConfig::load(config_path)?;
    let mut running = node::Node::start(&config).await?;
    println!("admin listening on https://{}", running.admin_addr);
    println!("device listening on https://{}", running.device_addr);
    if let Some(addr) = running.metrics_addr {
        println!("metrics listening on http://{addr}/metrics");
    }
    tracing::info!(admin_addr = %running.admin_addr, "esync-server running");
    tokio::select! {
        r = running.wait() => r,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted, stopping");
            Ok(())
        }
    }
}

// ---------------------------------------------------------------- client

/// The admin API client of `conn`: the URL and CA from `--server` and
/// `--ca`, or from the Server directory's configuration.
fn connect(conn: &Conn) -> Result<AdminClient, Error> {
    let config = conn.config.as_deref().map(ServerConfig::load).transpose()?;
    let base = match (&conn.server, &config) {
        (Some(s), _) => s.trim_end_matches('/').to_owned(),
        (None, Some(c)) => {
            let mut a = c.admin_listen;
            if a.ip().is_unspecified() {
                a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("https://{a}")
        }
        (None, None) => return Err("give --server (or --config)".into()),
    };
    let ca_path = match (&conn.ca, &config) {
        (Some(p), _) => p.clone(),
        (None, Some(c)) => c.key_dir.join(keys::CA_CERT),
        (None, None) => return Err("give --ca (or --config)".into()),
    };
    let token = conn
        .token
        .clone()
        .filter(|t| !t.is_empty())
        .ok_or("give --token (or ESYNC_TOKEN)")?;
    Ok(AdminClient::new(
        &base,
        &read_small(&ca_path, 1024 * 1024)?,
        &token,
    )?)
}

/// Uploads an image file: hashed locally (pass 1), then streamed (pass 2),
/// with progress bars unless `quiet`.
async fn upload(
    c: &AdminClient,
    name: &str,
    version: &str,
    hardware_id: &str,
    file: &Path,
    quiet: bool,
) -> Result<Value, Error> {
    let len = tokio::fs::metadata(file).await?.len();
    let bar = |msg: &'static str| {
        if quiet {
            return ProgressBar::hidden();
        }
        let b = ProgressBar::new(len);
        if let Ok(style) = ProgressStyle::with_template(
            "{msg:9} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ) {
            b.set_style(style.progress_chars("=> "));
        }
        b.set_message(msg);
        b
    };
    // Pass 1: the digest the Server must find.
    let hashing = bar("hashing");
    let mut f = tokio::fs::File::open(file).await?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; UPLOAD_CHUNK];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        hashing.inc(n as u64);
    }
    hashing.finish_and_clear();
    let sha256 = hex::encode(h.finalize());
    // Pass 2: stream it.
    let uploading = bar("uploading");
    let f = tokio::fs::File::open(file).await?;
    let pb = uploading.clone();
    let stream = futures::stream::unfold((f, vec![0u8; UPLOAD_CHUNK]), move |(mut f, mut buf)| {
        let pb = pb.clone();
        async move {
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    pb.inc(n as u64);
                    let frame = hyper::body::Frame::data(Bytes::copy_from_slice(&buf[..n]));
                    Some((Ok(frame), (f, buf)))
                }
                Err(e) => Some((Err(e), (f, buf))),
            }
        }
    });
    let body: AdminBody = BodyExt::boxed(StreamBody::new(stream));
    let r = c
        .upload_image(name, version, hardware_id, &sha256, len, body)
        .await;
    uploading.finish_and_clear();
    Ok(r?)
}

async fn follow_deltas(
    c: &AdminClient,
    path: &str,
    timeout: Duration,
    quiet: bool,
) -> Result<Value, Error> {
    let spinner = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    spinner.enable_steady_tick(Duration::from_millis(200));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let v = c.json(Method::GET, path, None).await?;
        let jobs = v.as_array().cloned().unwrap_or_default();
        let states: Vec<String> = jobs
            .iter()
            .map(|j| {
                format!(
                    "{} {}",
                    j["format"].as_str().unwrap_or("?"),
                    j["state"].as_str().unwrap_or("?")
                )
            })
            .collect();
        spinner.set_message(if states.is_empty() {
            "no delta job yet".to_owned()
        } else {
            states.join(", ")
        });
        let finished = !jobs.is_empty()
            && jobs
                .iter()
                .all(|j| matches!(j["state"].as_str(), Some("done" | "failed")));
        if finished {
            spinner.finish_and_clear();
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            spinner.finish_and_clear();
            return Err(format!("delta jobs not finished after {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Follows a campaign with one progress bar per wave (finished vehicles of
/// its size) until it is completed, aborted, paused or waiting for
/// approval; returns its last view.
async fn watch_campaign(
    c: &AdminClient,
    path: &str,
    timeout: Duration,
    quiet: bool,
) -> Result<Value, Error> {
    let multi = indicatif::MultiProgress::new();
    if quiet {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("wave {prefix:>3} [{bar:40}] {pos}/{len} {msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let mut bars: Vec<ProgressBar> = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let v = c.json(Method::GET, path, None).await?;
        let waves = v["waves"].as_array().cloned().unwrap_or_default();
        let n = |w: &Value, k: &str| w[k].as_u64().unwrap_or(0);
        for (i, w) in waves.iter().enumerate() {
            if bars.len() <= i {
                let b = multi.add(ProgressBar::new(n(w, "size")));
                b.set_style(style.clone());
                b.set_prefix(format!("{}", i + 1));
                bars.push(b);
            }
            let finished =
                n(w, "succeeded") + n(w, "failed") + n(w, "rolled_back") + n(w, "aborted");
            bars[i].set_length(n(w, "size"));
            bars[i].set_position(finished);
            bars[i].set_message(format!(
                "ok {} failed {} rolled back {} offered {}",
                n(w, "succeeded"),
                n(w, "failed"),
                n(w, "rolled_back"),
                n(w, "offered")
            ));
        }
        let state = v["state"].as_str().unwrap_or("?").to_owned();
        if matches!(
            state.as_str(),
            "completed" | "aborted" | "paused" | "waiting_approval"
        ) {
            for b in &bars {
                b.finish();
            }
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("campaign still {state} after {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------- offline

/// A role key given as a file: a private key (PEM) or a public key (JSON).
fn public_key_of(path: &Path) -> Result<esync_uptane::PublicKey, Error> {
    let text = read_small(path, 64 * 1024)?;
    if text.trim_start().starts_with("-----BEGIN") {
        Ok(esync_server::repo::offline::load_key(path)?.public_key())
    } else {
        Ok(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?)
    }
}

fn offline_cmd(cmd: OfflineCmd) -> Result<(), Error> {
    use esync_server::repo::offline;
    let expires = |days: u32| {
        esync_uptane::UnixTime(now_unix().saturating_add(i64::from(days).saturating_mul(86_400)))
    };
    match cmd {
        OfflineCmd::Keygen { out } => {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
            node::write_secret(&out, &key.serialize_pem())?;
            print_json(&serde_json::to_value(
                offline::load_key(&out)?.public_key(),
            )?)
        }
        OfflineCmd::Root {
            root_key,
            targets_key,
            snapshot_key,
            timestamp_key,
            expires_days,
            out,
        } => {
            let signer = offline::load_key(&root_key)?;
            let mut roles = offline::RoleSpec::new();
            roles.insert("root".into(), (vec![signer.public_key()], 1));
            for (role, p) in [
                ("targets", &targets_key),
                ("snapshot", &snapshot_key),
                ("timestamp", &timestamp_key),
            ] {
                roles.insert(role.into(), (vec![public_key_of(p)?], 1));
            }
            let bytes = offline::initial_root(&roles, expires(expires_days), &[signer])?;
            std::fs::write(&out, bytes)?;
            eprintln!("root version 1 written to {}", out.display());
            Ok(())
        }
        OfflineCmd::SignTargets {
            key,
            version,
            expires_days,
            out,
            packages,
        } => {
            let key = offline::load_key(&key)?;
            let models = packages
                .iter()
                .map(|p| {
                    let text = read_small(p, 64 * 1024 * 1024)?;
                    serde_json::from_str::<esync_package::package::Package>(&text)
                        .map_err(|e| Error::from(format!("{}: {e}", p.display())))
                })
                .collect::<Result<Vec<_>, Error>>()?;
            let bytes = offline::sign_targets(&models, version, expires(expires_days), &[key])?;
            std::fs::write(&out, bytes)?;
            eprintln!("targets version {version} written to {}", out.display());
            Ok(())
        }
    }
}
