//! Shared fixtures for esync-proto's integration tests.
#![allow(dead_code, reason = "each test binary uses a subset")]
#![allow(clippy::unwrap_used, reason = "test fixtures")]

use std::collections::BTreeMap;

use ed25519_dalek::{SigningKey, VerifyingKey};
use esync_proto::envelope::{EnvelopeSigner, ReceiverIdentity, Recipient, Verifier};
use esync_proto::frame::FrameLimits;
use esync_proto::id::*;
use esync_proto::message::*;

pub const NOW: u64 = 1_795_000_000_000;

pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn ecm() -> DevicePath {
    DevicePath::new("/powertrain/ecm").unwrap()
}

pub fn bcm() -> DevicePath {
    DevicePath::new("/body/bcm").unwrap()
}

pub fn v(s: &str) -> SoftwareVersion {
    SoftwareVersion::new(s).unwrap()
}

pub fn keys() -> BTreeMap<Participant, VerifyingKey> {
    let mut m = BTreeMap::new();
    m.insert(Participant::Client, key(1).verifying_key());
    m.insert(Participant::Device(ecm()), key(2).verifying_key());
    m.insert(Participant::Device(bcm()), key(3).verifying_key());
    m
}

pub fn client_signer() -> EnvelopeSigner {
    EnvelopeSigner::new(Participant::Client, key(1), 1, FrameLimits::default())
}

pub fn ecm_signer() -> EnvelopeSigner {
    EnvelopeSigner::new(
        Participant::Device(ecm()),
        key(2),
        1,
        FrameLimits::default(),
    )
}

pub fn ecm_verifier() -> Verifier {
    Verifier::new(
        ReceiverIdentity {
            me: Participant::Device(ecm()),
            groups: vec![GroupName::new("update-agents").unwrap()],
        },
        FrameLimits::default(),
    )
}

pub fn client_verifier() -> Verifier {
    Verifier::new(
        ReceiverIdentity {
            me: Participant::Client,
            groups: vec![],
        },
        FrameLimits::default(),
    )
}

pub fn to_ecm() -> Recipient {
    Recipient::Device(ecm())
}

/// A representative set of messages, one per lifecycle stage, with fixed contents.
pub fn representative() -> Vec<(&'static str, Participant, Recipient, Payload)> {
    let upd = Id128([0x11; 16]);
    let xfer = Id128([0x22; 16]);
    let digest = Sha256Digest([0xab; 32]);
    let installed = InstalledImage {
        version: v("1.4.2"),
        release_counter: ReleaseCounter(7),
        length: 1_048_576,
        sha256: digest,
    };
    let client = Participant::Client;
    let agent = Participant::Device(ecm());
    vec![
        (
            "inventory-query",
            client.clone(),
            Recipient::Group(GroupName::new("update-agents").unwrap()),
            InventoryQuery { nonce: [9; 16] }.into(),
        ),
        (
            "inventory-report",
            agent.clone(),
            Recipient::Client,
            InventoryReport {
                nonce: [9; 16],
                device: ecm(),
                hardware_id: HardwareId::new("ecm-hw-v2").unwrap(),
                serial: EcuSerial::new("ECM-000123").unwrap(),
                installed: installed.clone(),
                delta: DeltaCapability {
                    formats: vec![PatchFormat::BsdiffZstd, PatchFormat::Bsdiff40],
                    max_patch_memory: 8 << 20,
                },
                rollback_versions: vec![v("1.4.1"), v("1.3.0")],
                verification: VerificationLevel::Partial,
                criticality: Criticality::SafetyCritical,
                state: AgentState::Idle,
            }
            .into(),
        ),
        (
            "do-not-disturb",
            agent.clone(),
            Recipient::Client,
            DoNotDisturb {
                reason: BusyReason::Installing,
                retry_after_ms: 30_000,
            }
            .into(),
        ),
        (
            "update-metadata",
            client.clone(),
            to_ecm(),
            UpdateMetadata {
                update_id: upd,
                director: vec![RoleBytes {
                    role: MetadataRole::Targets,
                    json: br#"{"signed":{"_type":"targets"},"signatures":[]}"#.to_vec(),
                }],
                image: vec![],
            }
            .into(),
        ),
        (
            "download-offer",
            client.clone(),
            to_ecm(),
            DownloadOffer {
                update_id: upd,
                target_name: "ecm/ecm-2.0.0.bin".into(),
                version: v("2.0.0"),
                release_counter: ReleaseCounter(8),
                length: 1_050_000,
                sha256: Sha256Digest([0xcd; 32]),
                encoding: ImageEncoding::Delta {
                    format: PatchFormat::BsdiffZstd,
                    from_version: v("1.4.2"),
                    source_sha256: digest,
                    patch_length: 40_000,
                    patch_sha256: Sha256Digest([0xef; 32]),
                },
                consent_required: true,
            }
            .into(),
        ),
        (
            "download-decision",
            agent.clone(),
            Recipient::Client,
            DownloadDecision {
                update_id: upd,
                decision: Decision::Postpone {
                    until_ms: NOW + 3_600_000,
                },
            }
            .into(),
        ),
        (
            "transfer-chunk",
            client.clone(),
            to_ecm(),
            TransferChunk {
                transfer_id: xfer,
                index: 3,
                offset: 3 * 65_536,
                data: (0u8..=63).collect(),
            }
            .into(),
        ),
        (
            "transfer-ack",
            agent.clone(),
            Recipient::Client,
            TransferAck {
                transfer_id: xfer,
                next_chunk: 4,
                rejected: vec![2],
            }
            .into(),
        ),
        (
            "prepare-result",
            agent.clone(),
            Recipient::Client,
            PrepareResult {
                update_id: upd,
                outcome: PrepareOutcome::Failed(Failure {
                    class: ErrorClass::UpdateIncapable,
                    code: FailureCode::DeltaSourceMismatch,
                    message: "installed image differs from the patch source".into(),
                }),
            }
            .into(),
        ),
        (
            "install-result",
            agent.clone(),
            Recipient::Client,
            InstallResult {
                update_id: upd,
                outcome: InstallOutcome::Installed {
                    version: v("2.0.0"),
                    awaiting_confirm: true,
                },
            }
            .into(),
        ),
        (
            "rollback",
            client.clone(),
            to_ecm(),
            Rollback {
                update_id: upd,
                target: RollbackTarget::Version(v("1.3.0")),
            }
            .into(),
        ),
        (
            "event-report",
            agent.clone(),
            Recipient::Client,
            EventReport {
                events: vec![Event {
                    time_ms: NOW,
                    code: "P0301".into(),
                    severity: Severity::Warning,
                    data: vec![
                        Signal {
                            name: "rpm".into(),
                            value: SignalValue::Int(2400),
                        },
                        Signal {
                            name: "coolant_c".into(),
                            value: SignalValue::Float(92.5),
                        },
                    ],
                }],
            }
            .into(),
        ),
        (
            "diag-job-deploy",
            client.clone(),
            to_ecm(),
            DiagJobDeploy {
                spec: DiagJobSpec {
                    job_id: Id128([0x33; 16]),
                    device: ecm(),
                    collect: vec![
                        CollectItem::Signal("rpm".into()),
                        CollectItem::Logs(Severity::Warning),
                    ],
                    sampling_ms: 100,
                    trigger: Trigger::Expression("speed > 120".into()),
                    duration_ms: 60_000,
                    max_bytes: 1 << 20,
                    max_samples: 10_000,
                    expires_ms: NOW + 86_400_000,
                },
                server_key_id: Sha256Digest([0x44; 32]),
                server_signature: SignatureBytes([0x55; 64]),
            }
            .into(),
        ),
        (
            "consent-request",
            client.clone(),
            Recipient::Listener(ListenerName::new("hmi").unwrap()),
            ConsentRequest {
                request_id: Id128([0x66; 16]),
                kind: ConsentKind::Install,
                title: "Engine software 2.0.0".into(),
                description: "Improves cold-start behaviour.".into(),
                size_bytes: 40_000,
                estimated_duration_s: 300,
                deadline_ms: NOW + 600_000,
            }
            .into(),
        ),
        (
            "vehicle-state",
            Participant::Listener(ListenerName::new("vehicle-state").unwrap()),
            Recipient::Client,
            VehicleState {
                time_ms: NOW,
                signals: vec![
                    Signal {
                        name: "speed".into(),
                        value: SignalValue::Int(0),
                    },
                    Signal {
                        name: "gear".into(),
                        value: SignalValue::Text("P".into()),
                    },
                    Signal {
                        name: "battery_soc".into(),
                        value: SignalValue::Float(81.0),
                    },
                ],
            }
            .into(),
        ),
    ]
}
