//! Signed ECU version reports and vehicle manifests (A15: reused nonce or
//! report signed by the wrong key is dropped by the Server).
#![allow(clippy::unwrap_used, reason = "test code")]

use std::collections::BTreeMap;

use esync_proto::id::{EcuSerial, Vin};
use esync_uptane::crypto::hashes_of;
use esync_uptane::manifest::{
    verify_vehicle_manifest, DropReason, EcuVersionReport, NonceTracker, ReportedImage,
    VehicleManifest,
};
use esync_uptane::{PrivateKey, UnixTime};

fn report(ecu: &str, nonce: &str) -> EcuVersionReport {
    EcuVersionReport {
        ecu_serial: EcuSerial::new(ecu).unwrap(),
        installed_image: ReportedImage {
            filename: "fw.bin".into(),
            length: 3,
            hashes: hashes_of(b"abc"),
        },
        release_counter: 4,
        nonce: nonce.into(),
        attacks_detected: String::new(),
        timestamp: UnixTime(1_893_456_000),
    }
}

struct Fleet {
    vin: Vin,
    client: PrivateKey,
    ecm: PrivateKey,
    tcu: PrivateKey,
    keys: BTreeMap<EcuSerial, esync_uptane::PublicKey>,
}

fn fleet() -> Fleet {
    let (client, ecm, tcu) = (
        PrivateKey::generate(),
        PrivateKey::generate(),
        PrivateKey::generate(),
    );
    let mut keys = BTreeMap::new();
    keys.insert(EcuSerial::new("ecm-1").unwrap(), ecm.public_key());
    keys.insert(EcuSerial::new("tcu-1").unwrap(), tcu.public_key());
    Fleet {
        vin: Vin::new("WVWZZZ1JZXW000001").unwrap(),
        client,
        ecm,
        tcu,
        keys,
    }
}

fn manifest(f: &Fleet, reports: Vec<(&str, esync_uptane::crypto::RawSigned)>) -> Vec<u8> {
    VehicleManifest {
        vin: f.vin.clone(),
        primary_ecu_serial: EcuSerial::new("gw-1").unwrap(),
        ecu_version_reports: reports
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    }
    .sign(&f.client)
    .unwrap()
}

#[test]
fn a15_valid_manifest_accepted() {
    let f = fleet();
    let m = manifest(
        &f,
        vec![
            ("ecm-1", report("ecm-1", "n1").sign(&f.ecm).unwrap()),
            ("tcu-1", report("tcu-1", "n2").sign(&f.tcu).unwrap()),
        ],
    );
    let mut nonces = NonceTracker::new(100);
    let v = verify_vehicle_manifest(
        &m,
        1 << 20,
        &f.vin,
        &f.client.public_key(),
        &f.keys,
        &mut nonces,
    )
    .unwrap();
    assert_eq!(v.reports.len(), 2);
    assert!(v.dropped.is_empty());
}

#[test]
fn a15_reused_nonce_dropped() {
    let f = fleet();
    let mut nonces = NonceTracker::new(100);
    let m = manifest(
        &f,
        vec![("ecm-1", report("ecm-1", "n1").sign(&f.ecm).unwrap())],
    );
    let pk = f.client.public_key();
    assert_eq!(
        verify_vehicle_manifest(&m, 1 << 20, &f.vin, &pk, &f.keys, &mut nonces)
            .unwrap()
            .reports
            .len(),
        1
    );
    let again = verify_vehicle_manifest(&m, 1 << 20, &f.vin, &pk, &f.keys, &mut nonces).unwrap();
    assert!(again.reports.is_empty());
    assert_eq!(
        again.dropped,
        vec![("ecm-1".to_string(), DropReason::ReusedNonce)]
    );
}

#[test]
fn a15_report_signed_by_wrong_agent_dropped() {
    let f = fleet();
    let mut nonces = NonceTracker::new(100);
    // The TCU signs a report claiming to be the ECM.
    let m = manifest(
        &f,
        vec![
            ("ecm-1", report("ecm-1", "n1").sign(&f.tcu).unwrap()),
            ("tcu-1", report("ecm-1", "n2").sign(&f.tcu).unwrap()),
            ("brake-1", report("brake-1", "n3").sign(&f.tcu).unwrap()),
        ],
    );
    let v = verify_vehicle_manifest(
        &m,
        1 << 20,
        &f.vin,
        &f.client.public_key(),
        &f.keys,
        &mut nonces,
    )
    .unwrap();
    assert!(v.reports.is_empty());
    let reasons: BTreeMap<String, DropReason> = v.dropped.into_iter().collect();
    assert_eq!(reasons["ecm-1"], DropReason::WrongKey);
    assert_eq!(reasons["tcu-1"], DropReason::SerialMismatch);
    assert_eq!(reasons["brake-1"], DropReason::UnknownEcu);
}

#[test]
fn a15_manifest_signed_by_wrong_client_refused() {
    let f = fleet();
    let m = manifest(&f, vec![]);
    let mut nonces = NonceTracker::new(100);
    let other = PrivateKey::generate().public_key();
    assert!(verify_vehicle_manifest(&m, 1 << 20, &f.vin, &other, &f.keys, &mut nonces).is_err());
    let wrong_vin = Vin::new("WVWZZZ1JZXW000002").unwrap();
    assert!(verify_vehicle_manifest(
        &m,
        1 << 20,
        &wrong_vin,
        &f.client.public_key(),
        &f.keys,
        &mut nonces
    )
    .is_err());
    assert!(
        verify_vehicle_manifest(&m, 10, &f.vin, &f.client.public_key(), &f.keys, &mut nonces)
            .is_err()
    );
}

#[test]
fn nonce_tracker_is_bounded() {
    let mut t = NonceTracker::new(2);
    let e = EcuSerial::new("e").unwrap();
    assert!(t.check_and_record(&e, "a"));
    assert!(!t.check_and_record(&e, "a"));
    assert!(t.check_and_record(&e, "b"));
    assert!(t.check_and_record(&e, "c"));
    assert!(t.check_and_record(&e, "a")); // evicted
}
