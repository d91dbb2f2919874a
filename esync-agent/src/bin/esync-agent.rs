//! `esync-agent`: a file-backed A/B Agent.
//!
//! ```text
//! esync-agent provision --dir D --image FILE --version 1.0.0 [--release-counter 1]
//! esync-agent status    --dir D
//! esync-agent run       --dir D --vin VIN --device-path /powertrain/ecm \
//!                       --hardware-id ecm-hw-1 --serial ECM0001 \
//!                       --agent-key SEED_HEX --client-key PUBKEY_HEX \
//!                       --director-root ROOT.json [--mqtt 127.0.0.1:1883] \
//!                       [--key-schemes ed25519]
//! ```
//!
//! `run` restarts the device (bootloader decision: trial boot or fall
//! back), recovers the Agent from `D/agent.journal`, verifies Director
//! targets with Uptane partial verification against the pinned root (trusted
//! state in `D/trust/`), applies deltas, and talks to the Client through MQTT
//! with signed envelopes. The envelope sequence number starts at
//! `1000 × (ms since the Unix epoch)`, so it grows across restarts while the
//! clock does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use ed25519_dalek::{SigningKey, VerifyingKey};
use esync_agent::device::file::FileDevice;
use esync_agent::device::Device as _;
use esync_agent::journal::{decode_state, FileJournal, JournalStore as _};
use esync_agent::policy::AlwaysConsent;
use esync_agent::runtime::{run_agent, AgentHost, Security};
use esync_agent::state::JournalState;
use esync_agent::uptane::{UptanePartial, UptaneReporter};
use esync_agent::AgentConfig;
use esync_proto::envelope::{EnvelopeSigner, ReceiverIdentity, Verifier};
use esync_proto::frame::FrameLimits;
use esync_proto::id::{DevicePath, EcuSerial, HardwareId, SoftwareVersion, Vin};
use esync_proto::message::{Participant, Signal, SignalValue};
use esync_store::trust::DirTrustStore;
use esync_transport::{MqttConfig, MqttPresence, MqttTransport, Transport};
use esync_uptane::crypto::SchemeSet;
use esync_uptane::store::TrustStore as _;

#[derive(Parser)]
#[command(name = "esync-agent", about = "File-backed A/B esync Agent")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Creates a device directory running IMAGE as VERSION in slot A.
    Provision {
        /// Agent directory.
        #[arg(long)]
        dir: PathBuf,
        /// Initial image file.
        #[arg(long)]
        image: PathBuf,
        /// Its version.
        #[arg(long)]
        version: SoftwareVersion,
        /// Its release counter.
        #[arg(long, default_value_t = 0)]
        release_counter: u64,
        /// Slot and staging capacity in bytes.
        #[arg(long, default_value_t = 256 << 20)]
        capacity: u64,
    },
    /// Prints the boot control and the journal.
    Status {
        /// Agent directory.
        #[arg(long)]
        dir: PathBuf,
        /// Slot and staging capacity in bytes.
        #[arg(long, default_value_t = 256 << 20)]
        capacity: u64,
    },
    /// Runs the Agent.
    Run(Box<RunArgs>),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Agent directory.
    #[arg(long)]
    dir: PathBuf,
    /// Slot and staging capacity in bytes.
    #[arg(long, default_value_t = 256 << 20)]
    capacity: u64,
    /// Vehicle identification number.
    #[arg(long)]
    vin: Vin,
    /// Device path of this Agent.
    #[arg(long)]
    device_path: DevicePath,
    /// Hardware id.
    #[arg(long)]
    hardware_id: HardwareId,
    /// ECU serial.
    #[arg(long)]
    serial: EcuSerial,
    /// This Agent's ed25519 signing key (32-byte seed, hex).
    #[arg(long)]
    agent_key: String,
    /// The Client's ed25519 public key (hex).
    #[arg(long)]
    client_key: String,
    /// Director root metadata pinned at provisioning.
    #[arg(long)]
    director_root: PathBuf,
    /// MQTT broker (host:port).
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: String,
    /// Key schemes the Director's keys may use (comma-separated: ed25519,
    /// ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, rsassa-pss-sha256, or
    /// all); keys of other schemes are ignored.
    #[arg(long, default_value_t = SchemeSet::ALL)]
    key_schemes: SchemeSet,
    /// Install precondition; makes the Agent safety-critical.
    #[arg(long)]
    safety_precondition: Option<String>,
    /// Vehicle signal `name=value` the Agent sees (repeatable; numbers,
    /// true/false, or text).
    #[arg(long = "signal")]
    signals: Vec<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hex32(s: &str, what: &str) -> Result<[u8; 32], String> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return Err(format!("{what}: expected 64 hex digits"));
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b =
            u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| format!("{what}: not hex"))?;
    }
    Ok(out)
}

fn parse_signal(s: &str) -> Result<Signal, String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("signal {s:?}: expected name=value"))?;
    let value = if let Ok(i) = value.parse::<i64>() {
        SignalValue::Int(i)
    } else if let Ok(f) = value.parse::<f64>() {
        SignalValue::Float(f)
    } else if let Ok(b) = value.parse::<bool>() {
        SignalValue::Bool(b)
    } else {
        SignalValue::Text(value.to_string())
    };
    Ok(Signal {
        name: name.to_string(),
        value,
    })
}

fn dev_dir(dir: &Path) -> PathBuf {
    dir.join("device")
}

fn status(dir: &Path, capacity: u64) -> Result<(), String> {
    let dev = FileDevice::open(&dev_dir(dir), capacity).map_err(|e| e.to_string())?;
    println!("boot control: {:#?}", dev.boot_control());
    let mut j = FileJournal::new(dir, "agent.journal");
    match j.load().map_err(|e| e.to_string())? {
        None => println!("journal: empty"),
        Some(b) => {
            let st: JournalState = decode_state(&b).map_err(|e| e.to_string())?;
            println!(
                "journal generation {}: {:#?}",
                st.generation,
                st.update.map(|u| (u.update_id, u.stage, u.attempts))
            );
            println!("unsent reports: {}", st.outbox.len());
        }
    }
    Ok(())
}

async fn run(a: RunArgs) -> Result<(), String> {
    let mut config = AgentConfig::new(
        a.device_path.clone(),
        a.hardware_id.clone(),
        a.serial.clone(),
    );
    if let Some(p) = &a.safety_precondition {
        config = config.safety_critical(p).map_err(|e| e.to_string())?;
    }
    config.uptane_schemes = a.key_schemes;
    let mut device = FileDevice::boot(&dev_dir(&a.dir), a.capacity).map_err(|e| e.to_string())?;
    device.set_signals(
        a.signals
            .iter()
            .map(|s| parse_signal(s))
            .collect::<Result<_, _>>()?,
    );
    let running = device.running().map_err(|e| e.to_string())?;
    println!(
        "running {} (release counter {})",
        running.version, running.release_counter
    );

    // The trusted state: unreadable or corrupt state (e.g. a time floor
    // that does not parse) stops the Agent here rather than dropping the
    // rollback and freeze floors.
    let mut trust = DirTrustStore::new(&a.dir.join("trust"));
    if trust
        .load()
        .map_err(|e| format!("uptane trust store: {e}"))?
        .root
        .is_empty()
    {
        let root = std::fs::read(&a.director_root).map_err(|e| format!("director root: {e}"))?;
        trust
            .store_role("root", &root)
            .map_err(|e| format!("uptane trust store: {e}"))?;
    }
    let pv =
        UptanePartial::open(trust, a.vin.clone(), &config).map_err(|e| format!("uptane: {e}"))?;

    let agent_seed = hex32(&a.agent_key, "agent key")?;
    let agent_key = SigningKey::from_bytes(&agent_seed);
    let client_key = VerifyingKey::from_bytes(&hex32(&a.client_key, "client key")?)
        .map_err(|_| "client key: not an ed25519 key".to_string())?;
    let me = Participant::Device(a.device_path.clone());
    let signer = Arc::new(Mutex::new(EnvelopeSigner::new(
        me.clone(),
        agent_key,
        now_ms().saturating_mul(1000),
        FrameLimits::default(),
    )));
    let mut keys = BTreeMap::new();
    keys.insert(Participant::Client, client_key);

    let (host_name, port) = a
        .mqtt
        .rsplit_once(':')
        .ok_or("--mqtt: expected host:port")?;
    let port: u16 = port.parse().map_err(|_| "--mqtt: bad port")?;
    let mqtt = MqttTransport::connect(MqttConfig::new(
        host_name,
        port,
        a.vin.clone(),
        me.clone(),
        MqttPresence::Announce(signer.clone()),
    ))
    .map_err(|e| e.to_string())?;
    let mut transport = Transport::boxed(mqtt);

    let mut host = AgentHost {
        config,
        device: Box::new(device),
        journal: Box::new(FileJournal::new(&a.dir, "agent.journal")),
        verifier: Box::new(pv),
        patcher: Box::new(esync_agent::delta::PackageApplier),
        policy: Box::new(AlwaysConsent),
        reporter: Some(Box::new(UptaneReporter::new(
            esync_uptane::PrivateKey::from_seed(&agent_seed),
            a.serial.clone(),
        ))),
    };
    let mut sec = Security {
        signer,
        verifier: Verifier::new(
            ReceiverIdentity { me, groups: vec![] },
            FrameLimits::default(),
        ),
        keys: Box::new(keys),
    };
    let stats = run_agent(&mut host, &mut sec, &mut transport, now_ms, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .map_err(|e| e.to_string())?;
    println!("stopped: {stats:?}");
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Provision {
            dir,
            image,
            version,
            release_counter,
            capacity,
        } => std::fs::read(&image)
            .map_err(|e| format!("{}: {e}", image.display()))
            .and_then(|img| {
                FileDevice::create(&dev_dir(&dir), version, release_counter, &img, capacity)
                    .map(|_| println!("provisioned {}", dir.display()))
                    .map_err(|e| e.to_string())
            }),
        Cmd::Status { dir, capacity } => status(&dir, capacity),
        Cmd::Run(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(run(*args))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("esync-agent: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
