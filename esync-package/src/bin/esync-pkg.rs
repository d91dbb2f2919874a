//! `esync-pkg`: builds an update package from images on disk.
//!
//! ```text
//! esync-pkg build --out DIR --id PKG [--format xz --format zstd] [--cache DIR] \
//!   [--window 22:00-06:00] [--network wifi] \
//!   --component device=/powertrain/ecm,hw=ecm-v2,version=2.0.0,counter=5,image=new.bin,delta-from=1.0.0:old.bin \
//!   --component device=/powertrain/tcm,hw=tcm-v1,version=3.1.0,counter=2,image=tcm.bin,depends=/powertrain/ecm,stage=1
//! esync-pkg inspect DIR/package.json
//! ```
//!
//! `build` writes `DIR/package.json` (the validated package), `DIR/targets.json`
//! (the Uptane targets entries: name, length, sha256, `custom`) and
//! `DIR/blobs/<sha256>` for every image and generated patch.
//!
//! Component keys (comma-separated, values without commas): `device`, `hw`,
//! `version`, `counter`, `image`, `delta-from=VERSION:PATH` (repeatable),
//! `depends=/a;/b`, `stage`, `precondition` (an `esync_proto::precondition`
//! expression, text quoted: `gear == "P"`), `consent=true|false`,
//! `rollback=switch-slot|restore-backup|none`, `retries`.

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Parser, Subcommand, ValueEnum};
use esync_package::build::{blob_name, ComponentInput, PackageBuilder};
use esync_package::delta::cache::FsDeltaCache;
use esync_package::package::{
    ComponentPolicy, DownloadPolicy, NetworkKind, Package, PackageId, Precondition,
    RollbackBehaviour, TimeWindow,
};
use esync_proto::id::{DevicePath, HardwareId, ReleaseCounter, SoftwareVersion};
use esync_proto::message::PatchFormat;

#[derive(Parser)]
#[command(name = "esync-pkg", about = "Build and inspect esync update packages")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a package (images, patches, package.json, targets.json).
    Build {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Package id.
        #[arg(long)]
        id: String,
        /// Patch formats to generate for every delta source.
        #[arg(long = "format", value_enum, default_values_t = [Format::Xz])]
        formats: Vec<Format>,
        /// Transfer chunk size in bytes.
        #[arg(long, default_value_t = esync_package::chunk::DEFAULT_CHUNK_SIZE)]
        chunk_size: u32,
        /// Delta cache directory.
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Download time window, UTC `HH:MM-HH:MM`.
        #[arg(long)]
        window: Option<String>,
        /// Allowed download networks (none: any).
        #[arg(long = "network", value_enum)]
        networks: Vec<Network>,
        /// A component (see the command's documentation).
        #[arg(long = "component", required = true)]
        components: Vec<ComponentArg>,
    },
    /// Validate a package.json and print its targets entries.
    Inspect {
        /// The package.json.
        path: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Bsdiff40,
    Zstd,
    Xz,
}

impl From<Format> for PatchFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Bsdiff40 => PatchFormat::Bsdiff40,
            Format::Zstd => PatchFormat::BsdiffZstd,
            Format::Xz => PatchFormat::BsdiffXz,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Network {
    Wifi,
    Ethernet,
    Cellular,
}

#[derive(Clone, Debug)]
struct ComponentArg {
    device: DevicePath,
    hw: HardwareId,
    version: SoftwareVersion,
    counter: u64,
    image: PathBuf,
    deltas: Vec<(SoftwareVersion, PathBuf)>,
    depends: Vec<DevicePath>,
    stage: u16,
    policy: ComponentPolicy,
}

impl FromStr for ComponentArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (mut device, mut hw, mut version, mut counter, mut image) =
            (None, None, None, None, None);
        let mut deltas = Vec::new();
        let mut depends = Vec::new();
        let mut stage = 0u16;
        let mut policy = ComponentPolicy::default();
        for kv in s.split(',') {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("`{kv}` is not key=value"))?;
            let e = |x: &dyn std::fmt::Display| format!("{k}: {x}");
            match k {
                "device" => device = Some(DevicePath::new(v).map_err(|x| e(&x))?),
                "hw" => hw = Some(HardwareId::new(v).map_err(|x| e(&x))?),
                "version" => version = Some(SoftwareVersion::new(v).map_err(|x| e(&x))?),
                "counter" => counter = Some(v.parse::<u64>().map_err(|x| e(&x))?),
                "image" => image = Some(PathBuf::from(v)),
                "delta-from" => {
                    let (ver, path) = v
                        .split_once(':')
                        .ok_or_else(|| e(&"expected VERSION:PATH"))?;
                    deltas.push((
                        SoftwareVersion::new(ver).map_err(|x| e(&x))?,
                        PathBuf::from(path),
                    ));
                }
                "depends" => {
                    for d in v.split(';').filter(|d| !d.is_empty()) {
                        depends.push(DevicePath::new(d).map_err(|x| e(&x))?);
                    }
                }
                "stage" => stage = v.parse().map_err(|x| e(&x))?,
                "precondition" => {
                    policy.precondition = Some(Precondition::parse(v).map_err(|x| e(&x))?)
                }
                "consent" => policy.consent_required = v.parse().map_err(|x| e(&x))?,
                "retries" => policy.retry_limit = v.parse().map_err(|x| e(&x))?,
                "rollback" => {
                    policy.rollback = match v {
                        "switch-slot" => RollbackBehaviour::SwitchSlot,
                        "restore-backup" => RollbackBehaviour::RestoreBackup,
                        "none" => RollbackBehaviour::None,
                        _ => return Err(e(&"expected switch-slot, restore-backup or none")),
                    }
                }
                _ => return Err(format!("unknown component key `{k}`")),
            }
        }
        let need = |k: &str| format!("component needs `{k}=`");
        Ok(Self {
            device: device.ok_or_else(|| need("device"))?,
            hw: hw.ok_or_else(|| need("hw"))?,
            version: version.ok_or_else(|| need("version"))?,
            counter: counter.ok_or_else(|| need("counter"))?,
            image: image.ok_or_else(|| need("image"))?,
            deltas,
            depends,
            stage,
            policy,
        })
    }
}

fn parse_window(s: &str) -> Result<TimeWindow, String> {
    let minute = |t: &str| -> Result<u16, String> {
        let (h, m) = t.split_once(':').ok_or("expected HH:MM")?;
        let (h, m): (u16, u16) = (
            h.parse().map_err(|_| "bad hour")?,
            m.parse().map_err(|_| "bad minute")?,
        );
        if h > 24 || m > 59 || (h == 24 && m != 0) {
            return Err("time out of range".into());
        }
        Ok(h * 60 + m)
    };
    let (a, b) = s.split_once('-').ok_or("expected HH:MM-HH:MM")?;
    Ok(TimeWindow {
        start_minute: minute(a)?,
        end_minute: minute(b)?,
    })
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("esync-pkg: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.cmd {
        Cmd::Inspect { path } => {
            let p = Package::from_json(&std::fs::read(path)?)?;
            println!("{}", serde_json::to_string_pretty(&targets_json(&p))?);
        }
        Cmd::Build {
            out,
            id,
            formats,
            chunk_size,
            cache,
            window,
            networks,
            components,
        } => {
            let download = DownloadPolicy {
                window: window.as_deref().map(parse_window).transpose()?,
                networks: networks
                    .into_iter()
                    .map(|n| match n {
                        Network::Wifi => NetworkKind::Wifi,
                        Network::Ethernet => NetworkKind::Ethernet,
                        Network::Cellular => NetworkKind::Cellular,
                    })
                    .collect(),
            };
            let cache = cache.map(FsDeltaCache::new).transpose()?;
            let formats: Vec<PatchFormat> = formats.into_iter().map(Into::into).collect();
            let mut b = PackageBuilder::new(PackageId::new(id)?)
                .download_policy(download)
                .chunk_size(chunk_size);
            for c in components {
                let image =
                    std::fs::read(&c.image).map_err(|e| format!("{}: {e}", c.image.display()))?;
                let mut sources = Vec::new();
                for (v, path) in &c.deltas {
                    sources.push((
                        v.clone(),
                        std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?,
                    ));
                }
                let input = ComponentInput {
                    device: c.device,
                    hardware_id: c.hw,
                    version: c.version,
                    release_counter: ReleaseCounter(c.counter),
                    image,
                    depends_on: c.depends,
                    stage: c.stage,
                    policy: c.policy,
                };
                b = b.component_with_deltas(
                    input,
                    &sources,
                    &formats,
                    cache
                        .as_ref()
                        .map(|c| c as &dyn esync_package::delta::cache::DeltaCache),
                )?;
            }
            let built = b.build()?;
            let blobs = out.join("blobs");
            std::fs::create_dir_all(&blobs)?;
            for (d, bytes) in &built.blobs {
                std::fs::write(blobs.join(blob_name(d)), bytes)?;
            }
            std::fs::write(out.join("package.json"), built.package.to_json())?;
            std::fs::write(
                out.join("targets.json"),
                serde_json::to_vec_pretty(&targets_json(&built.package))?,
            )?;
            for e in built.package.target_entries() {
                println!(
                    "{}\t{}\t{}",
                    e.name,
                    e.length,
                    esync_package::digest::to_hex(&e.sha256)
                );
            }
        }
    }
    Ok(())
}

/// The targets entries as they appear in Uptane targets metadata.
fn targets_json(p: &Package) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for e in p.target_entries() {
        m.insert(
            e.name,
            serde_json::json!({
                "length": e.length,
                "hashes": { "sha256": esync_package::digest::to_hex(&e.sha256) },
                "custom": e.custom,
            }),
        );
    }
    serde_json::Value::Object(m)
}
