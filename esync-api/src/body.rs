//! Request and response bodies (serde JSON), with their OpenAPI schemas.
//!
//! No device request body carries a VIN, an ECU owner or any other name of
//! the vehicle: the Server takes the vehicle from the TLS certificate.
//! Unknown fields are ignored (a `vin` field added by a client is never
//! read), so older Servers accept newer Clients.

use esync_proto::id::{EcuSerial, Sha256Digest, SoftwareVersion};
use esync_proto::message::Failure;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// serde of a [`Sha256Digest`] as 64 lowercase hex digits.
pub mod sha256_hex {
    use super::Sha256Digest;
    use crate::names::BlobId;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises as hex.
    pub fn serialize<S: Serializer>(d: &Sha256Digest, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&BlobId(*d))
    }

    /// Deserialises 64 lowercase hex digits.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Sha256Digest, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        BlobId::parse_hex(&s)
            .map(|b| b.0)
            .map_err(serde::de::Error::custom)
    }
}

/// `POST /v1/checkin` request: only the SHA-256 of the exact bytes of the
/// last signed vehicle manifest the Client uploaded (or would upload). The
/// Server compares it with the hash it keeps; no signature check, no
/// database write when they match and nothing is assigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CheckInRequest {
    /// SHA-256 of the signed manifest bytes, 64 lowercase hex digits.
    #[serde(with = "sha256_hex")]
    #[schema(value_type = String, pattern = "^[0-9a-f]{64}$")]
    pub manifest_sha256: Sha256Digest,
}

/// `POST /v1/checkin` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CheckInResponse {
    /// Nothing new for this vehicle.
    UpToDate,
    /// The Director has metadata for this vehicle the Client has not seen:
    /// fetch `timestamp.json` (and what it names) from `/v1/director/`.
    NewDirectorMetadata {
        /// Version of the Director's `timestamp.json` for this vehicle.
        timestamp_version: u64,
    },
    /// The Server does not know the manifest with this hash: upload it
    /// (`POST /v1/manifest`), then check in again.
    ManifestWanted,
}

/// `POST /v1/manifest` answer: the manifest verified and is now the
/// Server's record of what the vehicle runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ManifestAccepted {
    /// SHA-256 of the bytes received: the hash the next check-ins carry.
    #[serde(with = "sha256_hex")]
    #[schema(value_type = String, pattern = "^[0-9a-f]{64}$")]
    pub manifest_sha256: Sha256Digest,
}

/// The signed vehicle manifest as uploaded (schema only): the TUF envelope
/// `{"signatures": [...], "signed": {...}}` produced by
/// `esync_uptane::manifest::VehicleManifest::sign`. Its VIN is signed by
/// the vehicle and must equal the certificate's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SignedVehicleManifest {
    /// Signatures over the canonical JSON of `signed`.
    #[schema(value_type = Vec<Object>)]
    pub signatures: Vec<serde_json::Value>,
    /// The manifest.
    #[schema(value_type = Object)]
    pub signed: serde_json::Value,
}

/// `PUT /v1/reports/{report_id}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Report {
    /// Vehicle wall-clock time the report was made (Unix ms; informative:
    /// the Server does not trust vehicle clocks).
    pub created_wall_ms: u64,
    /// What is reported.
    pub event: ReportEvent,
}

/// What a report says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReportEvent {
    /// Progress of a package on this vehicle.
    Progress {
        /// Package (Director targets `custom.package`).
        package: String,
        /// Component, when the progress is one ECU's.
        #[schema(value_type = Option<String>)]
        ecu: Option<EcuSerial>,
        /// Phase.
        phase: ReportPhase,
        /// Work done (bytes for downloads, steps otherwise).
        done: u64,
        /// Total work, same unit.
        total: u64,
    },
    /// Final result of a package on this vehicle.
    Result {
        /// Package.
        package: String,
        /// Outcome of the package as a whole.
        outcome: PackageOutcome,
        /// Each component's outcome and cause.
        components: Vec<ComponentResult>,
    },
}

/// Phase of a package on the vehicle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReportPhase {
    /// Waiting for consent, a precondition or a time window.
    Waiting,
    /// Downloading images and deltas.
    Download,
    /// Agents installing (stage by stage).
    Install,
    /// Rolling back installed components.
    Rollback,
}

/// Outcome of a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PackageOutcome {
    /// Every component installed and committed.
    Installed,
    /// A component failed; every installed component was rolled back.
    RolledBack,
    /// Refused before anything was downloaded (dependency cycle, unknown
    /// device, malformed precondition, a component withheld).
    Refused,
    /// Failed and not every component could be rolled back (needs service).
    Failed,
}

/// One component's outcome inside a [`ReportEvent::Result`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ComponentResult {
    /// ECU.
    #[schema(value_type = String)]
    pub ecu: EcuSerial,
    /// Outcome.
    pub outcome: ComponentOutcome,
    /// Version the ECU runs now.
    #[schema(value_type = String)]
    pub running: SoftwareVersion,
    /// Cause, when the component failed (the Agent's failure as the esync
    /// protocol classifies it).
    #[schema(value_type = Option<Object>)]
    pub failure: Option<Failure>,
}

/// Outcome of one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ComponentOutcome {
    /// Installed and committed.
    Installed,
    /// Installed, then rolled back because another component failed.
    RolledBack,
    /// This component failed.
    Failed,
    /// Not started (a later stage, or refused up front).
    NotStarted,
}

/// `PUT /v1/reports/{report_id}` answer (201 the first time, 200 for a
/// retry with the same body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReportStored {
    /// The id, as in the path.
    pub report_id: String,
    /// True when this id was already stored with this body (not counted
    /// again).
    pub duplicate: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_in_is_the_hash_only_and_a_vin_in_the_body_is_ignored() {
        let req = CheckInRequest {
            manifest_sha256: Sha256Digest([0xa5; 32]),
        };
        let json = serde_json::to_value(&req).expect("json");
        assert_eq!(
            json,
            serde_json::json!({ "manifest_sha256": "a5".repeat(32) })
        );
        let with_vin = serde_json::json!({
            "manifest_sha256": "a5".repeat(32),
            "vin": "WVWZZZ1JZXW000001",
        });
        let back: CheckInRequest = serde_json::from_value(with_vin).expect("parses");
        assert_eq!(back, req);
        let upper = serde_json::json!({ "manifest_sha256": "A5".repeat(32) });
        assert!(serde_json::from_value::<CheckInRequest>(upper).is_err());
    }

    #[test]
    fn check_in_answers_are_small_tagged_objects() {
        let cases = [
            (CheckInResponse::UpToDate, r#"{"status":"up_to_date"}"#),
            (
                CheckInResponse::NewDirectorMetadata {
                    timestamp_version: 7,
                },
                r#"{"status":"new_director_metadata","timestamp_version":7}"#,
            ),
            (
                CheckInResponse::ManifestWanted,
                r#"{"status":"manifest_wanted"}"#,
            ),
        ];
        for (value, text) in cases {
            assert_eq!(serde_json::to_string(&value).expect("json"), text);
            let back: CheckInResponse = serde_json::from_str(text).expect("parses");
            assert_eq!(back, value);
            assert!(text.len() as u64 <= crate::Route::CheckIn.max_response_body().unwrap_or(0));
        }
    }

    #[test]
    fn a_result_report_round_trips() {
        let r = Report {
            created_wall_ms: 1_700_000_000_000,
            event: ReportEvent::Result {
                package: "pkg-1".into(),
                outcome: PackageOutcome::RolledBack,
                components: vec![ComponentResult {
                    ecu: EcuSerial::new("ecu-1").expect("valid"),
                    outcome: ComponentOutcome::Failed,
                    running: SoftwareVersion::new("1.0.0").expect("valid"),
                    failure: Some(Failure {
                        class: esync_proto::message::ErrorClass::Retryable,
                        code: esync_proto::message::FailureCode::WriteFailed,
                        message: "flash".into(),
                    }),
                }],
            },
        };
        let json = serde_json::to_vec(&r).expect("json");
        assert!(!String::from_utf8_lossy(&json).contains("vin"));
        let back: Report = serde_json::from_slice(&json).expect("parses");
        assert_eq!(back, r);
        assert!(json.len() as u64 <= crate::Route::Report.max_request_body());
    }
}
