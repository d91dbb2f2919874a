//! Signed per-ECU version reports and the signed vehicle version manifest
//! (Uptane 2.1.0 section 5.4.2), and their verification on the Server.
//!
//! Both use the TUF envelope (`{"signatures": [...], "signed": {...}}`,
//! canonical-JSON signing with ed25519).

use std::collections::{BTreeMap, HashSet, VecDeque};

use esync_proto::id::{EcuSerial, Vin};
use serde::{Deserialize, Serialize};

use crate::crypto::{PrivateKey, PublicKey, RawSigned};
use crate::error::{Error, Result};
use crate::time::UnixTime;

/// Longest nonce accepted, in characters.
pub const MAX_NONCE_LEN: usize = 128;
/// Longest attack-indicator string accepted.
pub const MAX_ATTACK_LEN: usize = 1024;

/// The image an ECU version report names, in the Uptane standard's form:
/// target file name, length and hashes (the report's signed
/// `installed_image` JSON object).
///
/// A different concept from `esync_proto::message::InstalledImage`, the
/// running image as the esync wire protocol names it (software version,
/// release counter, SHA-256): this one is keyed by the Uptane target file
/// name and open to any hash algorithm, as the Director compares it with its
/// targets. [`ReportedImage::from_installed`] maps one to the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedImage {
    /// Target name of the image.
    pub filename: String,
    /// Length in bytes.
    pub length: u64,
    /// Hashes (algorithm -> hex).
    pub hashes: BTreeMap<String, String>,
}

impl ReportedImage {
    /// The report's view of `installed`, known by the target file name
    /// `filename`: its length and its SHA-256 (as lowercase hex under
    /// `sha256`).
    pub fn from_installed(
        installed: &esync_proto::message::InstalledImage,
        filename: String,
    ) -> Self {
        let mut hashes = BTreeMap::new();
        hashes.insert("sha256".to_string(), hex::encode(installed.sha256.0));
        ReportedImage {
            filename,
            length: installed.length,
            hashes,
        }
    }
}

/// What one ECU reports, signed by its own key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EcuVersionReport {
    /// ECU serial (Uptane ECU identifier).
    pub ecu_serial: EcuSerial,
    /// Installed image.
    pub installed_image: ReportedImage,
    /// Release counter of the installed image.
    pub release_counter: u64,
    /// Fresh nonce (never reused for this ECU).
    pub nonce: String,
    /// Attack indicator: empty when nothing was detected, otherwise what was.
    pub attacks_detected: String,
    /// When the report was made.
    pub timestamp: UnixTime,
}

impl EcuVersionReport {
    /// Signs the report with the ECU's key.
    pub fn sign(&self, key: &PrivateKey) -> Result<RawSigned> {
        let v = serde_json::to_value(self).map_err(|e| Error::Build(e.to_string()))?;
        RawSigned::sign(v, &[key])
    }
}

/// The vehicle version manifest, signed by the Client (primary).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VehicleManifest {
    /// Vehicle.
    pub vin: Vin,
    /// Serial of the primary ECU (the Client).
    pub primary_ecu_serial: EcuSerial,
    /// Signed ECU reports by ECU serial.
    pub ecu_version_reports: BTreeMap<String, RawSigned>,
}

impl VehicleManifest {
    /// Signs the manifest with the Client's key; returns the JSON file.
    pub fn sign(&self, key: &PrivateKey) -> Result<Vec<u8>> {
        let v = serde_json::to_value(self).map_err(|e| Error::Build(e.to_string()))?;
        RawSigned::sign(v, &[key])?.to_bytes()
    }
}

/// Remembers the nonces already used by each ECU (bounded; the oldest are
/// forgotten first).
#[derive(Debug, Clone)]
pub struct NonceTracker {
    seen: HashSet<(String, String)>,
    order: VecDeque<(String, String)>,
    capacity: usize,
}

impl NonceTracker {
    /// Tracks up to `capacity` nonces.
    pub fn new(capacity: usize) -> Self {
        NonceTracker {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `nonce` for `ecu`; false if it was already used.
    pub fn check_and_record(&mut self, ecu: &EcuSerial, nonce: &str) -> bool {
        let k = (ecu.as_str().to_string(), nonce.to_string());
        if self.seen.contains(&k) {
            return false;
        }
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(k.clone());
        self.order.push_back(k);
        true
    }
}

/// Why a report was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// No key registered for that ECU.
    UnknownEcu,
    /// Not signed by the ECU's registered key.
    WrongKey,
    /// Nonce already used by this ECU.
    ReusedNonce,
    /// The report names another ECU than its key in the manifest.
    SerialMismatch,
    /// Undecodable or out-of-bounds fields.
    Malformed(String),
}

/// A manifest whose signature verified, with the reports kept and dropped.
#[derive(Debug, Clone)]
pub struct VerifiedManifest {
    /// Vehicle.
    pub vin: Vin,
    /// Primary ECU serial.
    pub primary_ecu_serial: EcuSerial,
    /// Reports that verified.
    pub reports: Vec<EcuVersionReport>,
    /// Reports dropped, by manifest key, with the reason.
    pub dropped: Vec<(String, DropReason)>,
}

fn verify_single(what: &str, raw: &RawSigned, key: &PublicKey) -> Result<()> {
    // Any keyid label: only the key itself matters here.
    raw.verify_with_key(what, key)
}

/// Server side: verifies a vehicle manifest signed by `primary_key` for
/// `vin`, then each ECU report against `ecu_keys`; reports signed by
/// another key, for an unknown ECU, or with a nonce already used are
/// dropped (listed in [`VerifiedManifest::dropped`]).
pub fn verify_vehicle_manifest(
    bytes: &[u8],
    max_len: usize,
    vin: &Vin,
    primary_key: &PublicKey,
    ecu_keys: &BTreeMap<EcuSerial, PublicKey>,
    nonces: &mut NonceTracker,
) -> Result<VerifiedManifest> {
    if bytes.len() > max_len {
        return Err(Error::TooLong {
            what: "vehicle manifest".into(),
            limit: max_len as u64,
        });
    }
    let raw = RawSigned::from_slice("vehicle manifest", bytes)?;
    verify_single("vehicle manifest", &raw, primary_key)
        .map_err(|e| Error::ManifestSignature(Box::new(e)))?;
    let m: VehicleManifest =
        serde_json::from_value(raw.signed).map_err(|e| Error::json("vehicle manifest", e))?;
    if &m.vin != vin {
        return Err(Error::ManifestForOtherVehicle {
            vin: m.vin.to_string(),
            expected: vin.to_string(),
        });
    }
    let mut reports = Vec::new();
    let mut dropped = Vec::new();
    for (serial, signed) in m.ecu_version_reports {
        let reason = (|| {
            let ecu = EcuSerial::new(serial.as_str())
                .map_err(|e| DropReason::Malformed(e.to_string()))?;
            let key = ecu_keys.get(&ecu).ok_or(DropReason::UnknownEcu)?;
            verify_single("ecu report", &signed, key).map_err(|_| DropReason::WrongKey)?;
            let report: EcuVersionReport = serde_json::from_value(signed.signed.clone())
                .map_err(|e| DropReason::Malformed(e.to_string()))?;
            if report.ecu_serial != ecu {
                return Err(DropReason::SerialMismatch);
            }
            if report.nonce.is_empty() || report.nonce.len() > MAX_NONCE_LEN {
                return Err(DropReason::Malformed("nonce length".into()));
            }
            if report.attacks_detected.len() > MAX_ATTACK_LEN {
                return Err(DropReason::Malformed("attack indicator too long".into()));
            }
            if !nonces.check_and_record(&ecu, &report.nonce) {
                return Err(DropReason::ReusedNonce);
            }
            Ok(report)
        })();
        match reason {
            Ok(r) => reports.push(r),
            Err(why) => dropped.push((serial, why)),
        }
    }
    Ok(VerifiedManifest {
        vin: m.vin,
        primary_ecu_serial: m.primary_ecu_serial,
        reports,
        dropped,
    })
}

#[cfg(test)]
mod tests {
    use esync_proto::id::{ReleaseCounter, Sha256Digest, SoftwareVersion};

    use super::*;

    #[test]
    fn reported_image_from_the_running_image() {
        let installed = esync_proto::message::InstalledImage {
            version: SoftwareVersion::new("2.1.0").expect("version"),
            release_counter: ReleaseCounter(4),
            length: 1234,
            sha256: Sha256Digest([0xab; 32]),
        };
        let r = ReportedImage::from_installed(&installed, "ecm-2.1.0.bin".into());
        assert_eq!(r.filename, "ecm-2.1.0.bin");
        assert_eq!(r.length, 1234);
        assert_eq!(r.hashes.len(), 1);
        assert_eq!(r.hashes["sha256"], "ab".repeat(32));
        // The signed JSON keeps the Uptane field names.
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(
            v,
            serde_json::json!({
                "filename": "ecm-2.1.0.bin",
                "length": 1234,
                "hashes": { "sha256": "ab".repeat(32) },
            })
        );
    }
}
