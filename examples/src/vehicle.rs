//! The demo's "vehicle": the Client's embedded broker (mutual TLS on
//! loopback) and one esync-agent runtime per ECU, each with a file-backed
//! A/B device in a directory of its own, connected to the broker with its
//! own certificate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use esync_agent::device::file::FileDevice;
use esync_agent::device::{sha256, Device as _, SelfTest};
use esync_agent::journal::FileJournal;
use esync_agent::patch::{NoDeltas, PatchApplier};
use esync_agent::policy::AlwaysConsent;
use esync_agent::runtime::{run_agent, AgentHost, RuntimeStats, Security};
use esync_agent::uptane::{UptaneFull, UptanePartial, UptaneReporter};
use esync_agent::AgentConfig;
use esync_client::broker::{Broker, BrokerConfig, BrokerHandle};
use esync_identity::{IssuedIdentity, TrustAnchors};
use esync_proto::envelope::{EnvelopeSigner, ReceiverIdentity, Verifier};
use esync_proto::frame::FrameLimits;
use esync_proto::id::{ReleaseCounter, Sha256Digest, SoftwareVersion, Vin};
use esync_proto::message::{Participant, Signal, SignalValue};
use esync_transport::{BrokerLinkConfig, BrokerTransport, ChannelTransport, Transport};
use esync_uptane::repo::Limits;
use esync_uptane::uptane::{EcuInfo, FullVerifier, PartialVerifier, Vehicle};
use esync_uptane::MemoryStore;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::firmware;
use crate::{now_ms, DemoError};

/// An ECU as the Server knows it.
#[derive(Clone, Debug)]
pub struct EcuSpec {
    /// Device path.
    pub device: esync_proto::id::DevicePath,
    /// Hardware id.
    pub hardware_id: esync_proto::id::HardwareId,
    /// ECU serial (Uptane ECU id).
    pub serial: esync_proto::id::EcuSerial,
    /// Install stage in packages.
    pub stage: u16,
}

/// How one Agent is set up.
pub struct AgentSetup {
    /// The ECU.
    pub ecu: EcuSpec,
    /// Its certificate and key.
    pub identity: IssuedIdentity,
    /// Installed image at provisioning.
    pub image: Vec<u8>,
    /// Its version.
    pub version: SoftwareVersion,
    /// Its release counter.
    pub release_counter: u64,
    /// Safety-critical: the Agent checks this precondition itself, does full
    /// Uptane verification, and gets vehicle signals.
    pub safety_precondition: Option<String>,
    /// Whether the Agent can apply deltas.
    pub deltas: bool,
    /// Fault injection: the ECU's self-test fails when it boots this
    /// version (whatever the image holds).
    pub fault_version: Option<SoftwareVersion>,
}

/// A running Agent.
pub struct RunningAgent {
    /// Its device directory.
    pub device_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<RuntimeStats, String>>,
}

/// Slot/staging capacity of each device for images of `image_size` bytes.
pub fn capacity_for(image_size: usize) -> u64 {
    (image_size as u64) * 2 + (1 << 20)
}

/// Starts the embedded broker with the vehicle's certificate.
pub async fn start_broker(
    vehicle: &IssuedIdentity,
    anchors: &TrustAnchors,
    vin: &Vin,
) -> Result<(BrokerHandle, ChannelTransport), DemoError> {
    let tls = esync_identity::server_tls_config(vehicle, anchors)
        .map_err(|e| DemoError::Vehicle(format!("broker TLS config: {e}")))?;
    let cfg = BrokerConfig::new(tls, vin.clone());
    Broker::start(cfg)
        .await
        .map_err(|e| DemoError::Vehicle(format!("broker start: {e}")))
}

/// Provisions the device of `setup` in `dir` and starts its Agent runtime,
/// connected to the broker at `broker`.
#[allow(
    clippy::too_many_arguments,
    reason = "provisioning inputs: setup, paths, keys, roots"
)]
pub fn start_agent(
    setup: AgentSetup,
    dir: &Path,
    capacity: u64,
    broker: std::net::SocketAddr,
    anchors: &TrustAnchors,
    vin: &Vin,
    client_key: ed25519_dalek::VerifyingKey,
    director_root: &[u8],
    image_root: &[u8],
    all_ecus: &[EcuSpec],
) -> Result<RunningAgent, DemoError> {
    let e = |what: &str| {
        let what = what.to_string();
        move |x: &dyn std::fmt::Display| DemoError::Vehicle(format!("{what}: {x}"))
    };
    let ecu = setup.ecu.clone();
    let device_dir = dir.join("device");
    std::fs::create_dir_all(dir).map_err(|x| e("agent dir")(&x))?;
    let mut device = FileDevice::create(
        &device_dir,
        setup.version.clone(),
        setup.release_counter,
        &setup.image,
        capacity,
    )
    .map_err(|x| e("provision device")(&x))?;
    // The simulated ECU runs its firmware's power-on self-test on the image
    // it booted (read back from the running slot file).
    let hook_dir = device_dir.clone();
    let fault = setup.fault_version.clone();
    device.set_self_test(Box::new(move |running| {
        if fault.as_ref() == Some(&running.version) {
            return SelfTest::Failed(format!("injected fault on {}", running.version));
        }
        let bytes = FileDevice::open(&hook_dir, capacity)
            .map_err(|x| x.to_string())
            .and_then(|d| std::fs::read(d.running_path()).map_err(|x| x.to_string()));
        match bytes {
            Err(why) => SelfTest::Failed(format!("cannot read the running slot: {why}")),
            Ok(b) => {
                let len = usize::try_from(running.length).unwrap_or(usize::MAX);
                match b.get(..len) {
                    Some(img) if sha256(img) == running.sha256 => match firmware::self_test(img) {
                        Ok(()) => SelfTest::Passed,
                        Err(why) => SelfTest::Failed(why),
                    },
                    _ => SelfTest::Failed("running slot does not hold the booted image".into()),
                }
            }
        }
    }));

    let mut config = AgentConfig::new(
        ecu.device.clone(),
        ecu.hardware_id.clone(),
        ecu.serial.clone(),
    );
    config.progress_every_chunks = 4;
    let seed = setup.identity.signing_key.to_bytes();
    let verifier: Box<dyn esync_agent::target::MetadataVerifier + Send> =
        if let Some(p) = &setup.safety_precondition {
            config = config
                .safety_critical(p)
                .map_err(|x| e("agent config")(&x))?;
            device.set_signals(vec![
                signal("speed", SignalValue::Int(0)),
                signal("gear", SignalValue::Text("P".into())),
                signal("battery_soc", SignalValue::Int(82)),
            ]);
            let mut ecus = BTreeMap::new();
            for other in all_ecus {
                ecus.insert(
                    other.serial.clone(),
                    EcuInfo {
                        hardware_id: other.hardware_id.clone(),
                        installed_release_counter: ReleaseCounter(0),
                    },
                );
            }
            let fv = FullVerifier::open(
                MemoryStore::new(director_root.to_vec()),
                MemoryStore::new(image_root.to_vec()),
                Vehicle {
                    vin: vin.clone(),
                    ecus,
                },
                Limits::default(),
            )
            .map_err(|x| e("agent full verifier")(&x))?;
            Box::new(UptaneFull::new(fv))
        } else {
            let pv = PartialVerifier::open(
                MemoryStore::new(director_root.to_vec()),
                vin.clone(),
                ecu.serial.clone(),
                ecu.hardware_id.clone(),
                Limits::default(),
            )
            .map_err(|x| e("agent partial verifier")(&x))?;
            Box::new(UptanePartial::new(pv))
        };
    config.validate().map_err(|x| e("agent config")(&x))?;
    let patcher: Box<dyn PatchApplier + Send + Sync> = if setup.deltas {
        Box::new(esync_agent::delta::PackageApplier)
    } else {
        Box::new(NoDeltas)
    };
    let mut host = AgentHost {
        config,
        device: Box::new(device),
        journal: Box::new(FileJournal::new(dir, "agent.journal")),
        verifier,
        patcher,
        policy: Box::new(AlwaysConsent),
        reporter: Some(Box::new(UptaneReporter::new(
            esync_uptane::PrivateKey::from_seed(&seed),
            ecu.serial.clone(),
        ))),
    };

    let me = Participant::Device(ecu.device.clone());
    let signer = Arc::new(Mutex::new(EnvelopeSigner::new(
        me.clone(),
        setup.identity.signing_key.clone(),
        1,
        FrameLimits::default(),
    )));
    let mut keys = BTreeMap::new();
    keys.insert(Participant::Client, client_key);
    let mut sec = Security {
        signer,
        verifier: Verifier::new(
            ReceiverIdentity {
                me: me.clone(),
                groups: vec![],
            },
            FrameLimits::default(),
        ),
        keys: Box::new(keys),
    };
    let tls = esync_identity::vehicle_client_tls_config(&setup.identity, anchors, vin)
        .map_err(|x| e("agent TLS config")(&x))?;
    let mut link = BrokerLinkConfig::new(broker, "vehicle.invalid", tls, me);
    link.backoff_initial = Duration::from_millis(20);
    link.backoff_max = Duration::from_millis(500);
    let mut transport = Transport::boxed(BrokerTransport::connect(link));

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        run_agent(&mut host, &mut sec, &mut transport, now_ms, async {
            let _ = stop_rx.await;
        })
        .await
        .map_err(|x| x.to_string())
    });
    Ok(RunningAgent {
        device_dir,
        stop: Some(stop_tx),
        task,
    })
}

fn signal(name: &str, value: SignalValue) -> Signal {
    Signal {
        name: name.into(),
        value,
    }
}

impl RunningAgent {
    /// Stops the Agent and returns its counters.
    pub async fn stop(mut self) -> Result<RuntimeStats, DemoError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.task.await {
            Ok(Ok(stats)) => Ok(stats),
            Ok(Err(e)) => Err(DemoError::Vehicle(format!("agent runtime stopped: {e}"))),
            Err(e) => Err(DemoError::Vehicle(format!("agent task: {e}"))),
        }
    }

    /// Whether the runtime task ended (it should run until stopped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// What a device's files say it runs: the boot-control record's running
/// image, and the SHA-256 of the bytes in the running slot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotState {
    /// Version recorded for the running slot.
    pub version: SoftwareVersion,
    /// Running slot ("A" or "B").
    pub slot: char,
    /// Length recorded for the running image.
    pub length: u64,
    /// SHA-256 of the first `length` bytes of the running slot file.
    pub file_sha256: Sha256Digest,
    /// Whether the running image is still on trial (not committed).
    pub on_trial: bool,
}

/// Reads the running image of the device in `dir` from its files (a
/// separate read-only handle; the Agent keeps its own).
pub fn read_slot(dir: &Path, capacity: u64) -> Result<SlotState, DemoError> {
    let e = |x: &dyn std::fmt::Display| DemoError::Check(format!("{}: {x}", dir.display()));
    let dev = FileDevice::open(dir, capacity).map_err(|x| e(&x))?;
    let running = dev.running().map_err(|x| e(&x))?;
    let bytes = std::fs::read(dev.running_path()).map_err(|x| e(&x))?;
    let len = usize::try_from(running.length).map_err(|x| e(&x))?;
    let img = bytes
        .get(..len)
        .ok_or_else(|| DemoError::Check(format!("{}: slot file too short", dir.display())))?;
    Ok(SlotState {
        version: running.version,
        slot: if dev.boot_control().active & 1 == 0 {
            'A'
        } else {
            'B'
        },
        length: running.length,
        file_sha256: sha256(img),
        on_trial: dev.on_trial().map_err(|x| e(&x))?,
    })
}
