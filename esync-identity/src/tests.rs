//! Unit tests: issuance, parsing, chain validation and sender checks.

use ed25519_dalek::{Signer, Verifier};
use esync_proto::id::{DevicePath, ListenerName, Vin};
use esync_proto::message::Participant;
use rcgen::ExtendedKeyUsagePurpose;

use crate::*;

/// A fixed "now" for validation: 2026-11-21T00:00:00Z.
const NOW: i64 = 1_795_219_200;
const VIN: &str = "WVWZZZ1JZXW000001";

fn vin() -> Vin {
    Vin::new(VIN).unwrap()
}

fn ecm() -> DevicePath {
    DevicePath::new("/powertrain/ecm").unwrap()
}

fn ca() -> FleetCa {
    FleetCa::new(
        "esync test fleet CA",
        Validity::days_from(NOW - 86_400, 3650),
    )
    .unwrap()
}

fn year() -> Validity {
    Validity::days_from(NOW - 3600, 365)
}

fn anchors(ca: &FleetCa) -> TrustAnchors {
    TrustAnchors::from_ca_ders(&[ca.cert_der()]).unwrap()
}

#[test]
fn good_agent_cert_validates_with_device_path_and_vin() {
    let ca = ca();
    let agent = ca.issue_agent(&vin(), &ecm(), year()).unwrap();
    let id = validate_chain(
        &agent.cert_der,
        &agent.chain,
        &anchors(&ca),
        NOW as u64,
        Usage::ClientAuth,
    )
    .unwrap();
    assert_eq!(
        id.role,
        Role::Agent {
            vin: vin(),
            device: ecm()
        }
    );
    assert_eq!(id.vin(), Some(&vin()));
    assert_eq!(id.participant(), Some(Participant::Device(ecm())));
    assert_eq!(id.verifying_key, agent.signing_key.verifying_key());
    assert_eq!(id.not_before_unix, NOW - 3600);
    assert_eq!(id.not_after_unix, NOW - 3600 + 365 * 86_400);
    assert_eq!(id.serial_hex.len(), 32);
    assert_eq!(
        id.role.esync_uri().unwrap(),
        "esync://vehicle/WVWZZZ1JZXW000001/device/powertrain/ecm"
    );
}

#[test]
fn agent_cert_without_intermediates_argument_still_validates() {
    let ca = ca();
    let agent = ca.issue_agent(&vin(), &ecm(), year()).unwrap();
    validate_chain(
        &agent.cert_der,
        &[],
        &anchors(&ca),
        NOW as u64,
        Usage::ClientAuth,
    )
    .unwrap();
}

#[test]
fn vehicle_and_listener_and_server_roles() {
    let ca = ca();
    let a = anchors(&ca);
    let v = ca.issue_vehicle(&vin(), year()).unwrap();
    let id = validate_chain(&v.cert_der, &v.chain, &a, NOW as u64, Usage::ClientAuth).unwrap();
    assert_eq!(id.role, Role::Vehicle { vin: vin() });
    assert_eq!(id.participant(), Some(Participant::Client));
    // The vehicle's Client also serves the in-vehicle broker.
    validate_chain(&v.cert_der, &v.chain, &a, NOW as u64, Usage::ServerAuth).unwrap();

    let hmi = ListenerName::new("hmi").unwrap();
    let l = ca.issue_listener(&vin(), &hmi, year()).unwrap();
    let id = validate_chain(&l.cert_der, &l.chain, &a, NOW as u64, Usage::ClientAuth).unwrap();
    assert_eq!(id.participant(), Some(Participant::Listener(hmi)));

    let names = vec!["ota.example.com".to_owned(), "127.0.0.1".to_owned()];
    let s = ca.issue_server(&names, year()).unwrap();
    let id = validate_chain(&s.cert_der, &s.chain, &a, NOW as u64, Usage::ServerAuth).unwrap();
    assert_eq!(id.role, Role::Server { dns_names: names });
    assert_eq!(id.participant(), None);
    assert_eq!(id.vin(), None);
}

#[test]
fn wrong_usage_is_refused() {
    let ca = ca();
    let a = anchors(&ca);
    let agent = ca.issue_agent(&vin(), &ecm(), year()).unwrap();
    let err = validate_chain(
        &agent.cert_der,
        &agent.chain,
        &a,
        NOW as u64,
        Usage::ServerAuth,
    )
    .unwrap_err();
    assert!(matches!(err, IdentityError::Chain(_)), "{err}");
    let s = ca.issue_server(&["localhost".to_owned()], year()).unwrap();
    let err = validate_chain(&s.cert_der, &s.chain, &a, NOW as u64, Usage::ClientAuth).unwrap_err();
    assert!(matches!(err, IdentityError::Chain(_)), "{err}");
}

#[test]
fn cert_from_another_ca_is_refused() {
    let ours = ca();
    // Same subject name as ours: found by name, refused on the signature.
    let theirs = ca();
    let agent = theirs.issue_agent(&vin(), &ecm(), year()).unwrap();
    let err = validate_chain(
        &agent.cert_der,
        &agent.chain,
        &anchors(&ours),
        NOW as u64,
        Usage::ClientAuth,
    )
    .unwrap_err();
    assert!(matches!(err, IdentityError::Chain(_)), "{err}");
    // Another name altogether: no issuer found.
    let theirs = FleetCa::new("someone else's CA", year()).unwrap();
    let agent = theirs.issue_agent(&vin(), &ecm(), year()).unwrap();
    // Even when the foreign chain is passed along as intermediates.
    let err = validate_chain(
        &agent.cert_der,
        &agent.chain,
        &anchors(&ours),
        NOW as u64,
        Usage::ClientAuth,
    )
    .unwrap_err();
    assert!(
        matches!(err, IdentityError::Chain(webpki::Error::UnknownIssuer)),
        "{err}"
    );
}

#[test]
fn expired_cert_is_refused() {
    let ca = ca();
    let past = Validity::new(NOW - 30 * 86_400, NOW - 86_400).unwrap();
    let agent = ca.issue_agent(&vin(), &ecm(), past).unwrap();
    let err = validate_chain(
        &agent.cert_der,
        &agent.chain,
        &anchors(&ca),
        NOW as u64,
        Usage::ClientAuth,
    )
    .unwrap_err();
    assert!(
        matches!(err, IdentityError::Chain(webpki::Error::CertExpired { .. })),
        "{err}"
    );
    // The same certificate was good while it was valid.
    validate_chain(
        &agent.cert_der,
        &agent.chain,
        &anchors(&ca),
        (NOW - 2 * 86_400) as u64,
        Usage::ClientAuth,
    )
    .unwrap();
}

#[test]
fn not_yet_valid_cert_is_refused() {
    let ca = ca();
    let future = Validity::days_from(NOW + 86_400, 30);
    let agent = ca.issue_agent(&vin(), &ecm(), future).unwrap();
    let err = validate_chain(
        &agent.cert_der,
        &agent.chain,
        &anchors(&ca),
        NOW as u64,
        Usage::ClientAuth,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            IdentityError::Chain(webpki::Error::CertNotValidYet { .. })
        ),
        "{err}"
    );
}

#[test]
fn device_path_not_matching_sender_is_refused() {
    let ca = ca();
    let agent = ca.issue_agent(&vin(), &ecm(), year()).unwrap();
    let id = validate_chain(
        &agent.cert_der,
        &agent.chain,
        &anchors(&ca),
        NOW as u64,
        Usage::ClientAuth,
    )
    .unwrap();
    check_sender(&id, &Participant::Device(ecm()), Some(&vin())).unwrap();
    check_sender(&id, &Participant::Device(ecm()), None).unwrap();

    let brakes = DevicePath::new("/chassis/brakes").unwrap();
    let err = check_sender(&id, &Participant::Device(brakes), Some(&vin())).unwrap_err();
    assert!(matches!(err, IdentityError::SenderMismatch { .. }), "{err}");
    let err = check_sender(&id, &Participant::Client, None).unwrap_err();
    assert!(matches!(err, IdentityError::SenderMismatch { .. }), "{err}");

    let other_vin = Vin::new("WVWZZZ1JZXW000002").unwrap();
    let err = check_sender(&id, &Participant::Device(ecm()), Some(&other_vin)).unwrap_err();
    assert!(matches!(err, IdentityError::VinMismatch { .. }), "{err}");
}

#[test]
fn server_cert_is_never_an_in_vehicle_sender() {
    let ca = ca();
    let s = ca.issue_server(&["localhost".to_owned()], year()).unwrap();
    let id = parse_identity(&s.cert_der).unwrap();
    let err = check_sender(&id, &Participant::Client, None).unwrap_err();
    assert!(matches!(err, IdentityError::SenderMismatch { .. }), "{err}");
    let err = check_sender(&id, &Participant::Client, Some(&vin())).unwrap_err();
    assert!(matches!(err, IdentityError::VinMismatch { .. }), "{err}");
}

#[test]
fn two_esync_uris_are_refused() {
    let ca = ca();
    let bad = ca
        .issue_with_sans(
            vec![
                "esync://vehicle/WVWZZZ1JZXW000001/device/powertrain/ecm".to_owned(),
                "esync://vehicle/WVWZZZ1JZXW000001/device/chassis/brakes".to_owned(),
            ],
            "two",
            &[ExtendedKeyUsagePurpose::ClientAuth],
            year(),
        )
        .unwrap();
    let err = parse_identity(&bad.cert_der).unwrap_err();
    assert!(matches!(err, IdentityError::MultipleEsyncUris(2)), "{err}");
    // Chain validation succeeds at the webpki level but the identity is refused.
    let err = validate_chain(
        &bad.cert_der,
        &bad.chain,
        &anchors(&ca),
        NOW as u64,
        Usage::ClientAuth,
    )
    .unwrap_err();
    assert!(matches!(err, IdentityError::MultipleEsyncUris(2)), "{err}");
}

/// DER of a SubjectAltName extension value holding one URI (short form lengths).
fn san_ext_value(uri: &str) -> Vec<u8> {
    assert!(uri.len() < 120);
    let mut gn = vec![0x86, uri.len() as u8];
    gn.extend_from_slice(uri.as_bytes());
    let mut seq = vec![0x30, gn.len() as u8];
    seq.extend(gn);
    seq
}

#[test]
fn second_san_extension_is_refused() {
    let ca = ca();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "esync://vehicle/WVWZZZ1JZXW000001/device/powertrain/ecm"
            .try_into()
            .unwrap(),
    )];
    // A second, separate SAN extension naming another device.
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(
            &[2, 5, 29, 17],
            san_ext_value("esync://vehicle/WVWZZZ1JZXW000001/device/chassis/brakes"),
        ));
    let c = ca
        .issue_with(
            params,
            "dup",
            &[ExtendedKeyUsagePurpose::ClientAuth],
            year(),
        )
        .unwrap();
    assert!(parse_identity(&c.cert_der).is_err());
    assert!(validate_chain(
        &c.cert_der,
        &c.chain,
        &anchors(&ca),
        NOW as u64,
        Usage::ClientAuth
    )
    .is_err());
}

#[test]
fn scheme_case_does_not_hide_a_second_uri() {
    let ca = ca();
    let bad = ca
        .issue_with_sans(
            vec![
                "esync://vehicle/WVWZZZ1JZXW000001".to_owned(),
                "ESYNC://vehicle/WVWZZZ1JZXW000002".to_owned(),
            ],
            "two",
            &[ExtendedKeyUsagePurpose::ClientAuth],
            year(),
        )
        .unwrap();
    let err = parse_identity(&bad.cert_der).unwrap_err();
    assert!(matches!(err, IdentityError::MultipleEsyncUris(2)), "{err}");
}

#[test]
fn other_uris_are_ignored() {
    let ca = ca();
    let c = ca
        .issue_with_sans(
            vec![
                "https://example.com/x".to_owned(),
                "esync://vehicle/WVWZZZ1JZXW000001/listener/hmi".to_owned(),
            ],
            "ok",
            &[ExtendedKeyUsagePurpose::ClientAuth],
            year(),
        )
        .unwrap();
    let id = parse_identity(&c.cert_der).unwrap();
    assert_eq!(
        id.participant(),
        Some(Participant::Listener(ListenerName::new("hmi").unwrap()))
    );
}

#[test]
fn malformed_esync_uris_are_refused() {
    let ca = ca();
    let cases = [
        // Wrong authority.
        "esync://car/WVWZZZ1JZXW000001",
        // Bad VIN (contains I and O, too short).
        "esync://vehicle/WVWZZZIO",
        // Empty device path.
        "esync://vehicle/WVWZZZ1JZXW000001/device/",
        // Traversal segment.
        "esync://vehicle/WVWZZZ1JZXW000001/device/powertrain/../brakes",
        // Double slash (empty segment).
        "esync://vehicle/WVWZZZ1JZXW000001/device//ecm",
        // Upper case in device path.
        "esync://vehicle/WVWZZZ1JZXW000001/device/ECM",
        // Percent-encoding is not decoded.
        "esync://vehicle/WVWZZZ1JZXW000001/device/a%2Fb",
        // Unknown kind.
        "esync://vehicle/WVWZZZ1JZXW000001/agent/ecm",
        // Listener names have no slash.
        "esync://vehicle/WVWZZZ1JZXW000001/listener/hmi/x",
        // Trailing slash after the VIN.
        "esync://vehicle/WVWZZZ1JZXW000001/",
        // Query or fragment.
        "esync://vehicle/WVWZZZ1JZXW000001?x=1",
    ];
    for uri in cases {
        let c = ca
            .issue_with_sans(
                vec![uri.to_owned()],
                "bad",
                &[ExtendedKeyUsagePurpose::ClientAuth],
                year(),
            )
            .unwrap();
        let err = parse_identity(&c.cert_der).unwrap_err();
        assert!(
            matches!(
                err,
                IdentityError::MalformedUri { .. } | IdentityError::InvalidId { .. }
            ),
            "{uri}: {err}"
        );
    }
}

#[test]
fn end_entity_without_eku_is_refused() {
    let ca = ca();
    let c = ca
        .issue_with_sans(
            vec!["esync://vehicle/WVWZZZ1JZXW000001/device/powertrain/ecm".to_owned()],
            "no eku",
            &[],
            year(),
        )
        .unwrap();
    // Parsing alone is fine ...
    parse_identity(&c.cert_der).unwrap();
    // ... but validation requires the purpose to be listed.
    let err = validate_chain(
        &c.cert_der,
        &c.chain,
        &anchors(&ca),
        NOW as u64,
        Usage::ClientAuth,
    )
    .unwrap_err();
    assert!(
        matches!(err, IdentityError::UsageNotAllowed(Usage::ClientAuth)),
        "{err}"
    );
}

#[test]
fn no_san_at_all_is_refused() {
    let ca = ca();
    let c = ca
        .issue_with_sans(
            vec![],
            "none",
            &[ExtendedKeyUsagePurpose::ClientAuth],
            year(),
        )
        .unwrap();
    let err = parse_identity(&c.cert_der).unwrap_err();
    assert!(matches!(err, IdentityError::NoIdentity), "{err}");
}

#[test]
fn ca_cert_is_not_an_identity() {
    let ca = ca();
    let err = parse_identity(&ca.cert_der()).unwrap_err();
    assert!(matches!(err, IdentityError::IsCa), "{err}");
}

#[test]
fn garbage_and_trailing_bytes_are_refused() {
    assert!(matches!(
        parse_identity(b"not a certificate").unwrap_err(),
        IdentityError::Parse(_)
    ));
    let ca = ca();
    let mut der = ca.issue_agent(&vin(), &ecm(), year()).unwrap().cert_der;
    der.push(0);
    assert!(matches!(
        parse_identity(&der).unwrap_err(),
        IdentityError::TrailingData(1)
    ));
    let huge = vec![0u8; MAX_CERT_DER_LEN + 1];
    assert!(matches!(
        parse_identity(&huge).unwrap_err(),
        IdentityError::CertificateTooLarge { .. }
    ));
}

#[test]
fn cert_key_verifies_signature_of_signing_key() {
    let ca = ca();
    let agent = ca.issue_agent(&vin(), &ecm(), year()).unwrap();
    let id = parse_identity(&agent.cert_der).unwrap();
    let msg = b"envelope bytes";
    let sig = agent.signing_key.sign(msg);
    id.verifying_key.verify(msg, &sig).unwrap();
    assert!(id.verifying_key.verify(b"other bytes", &sig).is_err());
    // Another Agent's key does not verify it.
    let other = ca.issue_agent(&vin(), &ecm(), year()).unwrap();
    let other_id = parse_identity(&other.cert_der).unwrap();
    assert!(other_id.verifying_key.verify(msg, &sig).is_err());
}

#[test]
fn ca_round_trips_through_pem() {
    let ca = ca();
    let loaded = FleetCa::from_pem(&ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(loaded.cert_der(), ca.cert_der());
    let agent = loaded.issue_agent(&vin(), &ecm(), year()).unwrap();
    validate_chain(
        &agent.cert_der,
        &agent.chain,
        &anchors(&ca),
        NOW as u64,
        Usage::ClientAuth,
    )
    .unwrap();
    // A key that is not the certificate's is refused.
    let other = FleetCa::new("other", year()).unwrap();
    let err = FleetCa::from_pem(&ca.cert_pem(), &other.key_pem()).unwrap_err();
    assert!(matches!(err, IdentityError::Key(_)), "{err}");
}

#[test]
fn issued_identity_round_trips_through_pem() {
    let ca = ca();
    let agent = ca.issue_agent(&vin(), &ecm(), year()).unwrap();
    let loaded = IssuedIdentity::from_pem(&agent.chain_pem(), &agent.key_pem()).unwrap();
    assert_eq!(loaded.cert_der, agent.cert_der);
    assert_eq!(loaded.chain, agent.chain);
    assert_eq!(loaded.key_pkcs8_der, agent.key_pkcs8_der);
    assert_eq!(
        loaded.signing_key.verifying_key(),
        agent.signing_key.verifying_key()
    );
    let other = ca.issue_agent(&vin(), &ecm(), year()).unwrap();
    let err = IssuedIdentity::from_pem(&agent.cert_pem(), &other.key_pem()).unwrap_err();
    assert!(matches!(err, IdentityError::Key(_)), "{err}");
    // Debug never prints the key.
    let dbg = format!("{agent:?}");
    assert!(!dbg.contains(&hex::encode(agent.signing_key.to_bytes())));
}

#[test]
fn intermediate_ca_chain_validates_only_with_intermediate() {
    let root = ca();
    let inter = root
        .issue_intermediate("esync test intermediate", year())
        .unwrap();
    let agent = inter.issue_agent(&vin(), &ecm(), year()).unwrap();
    assert_eq!(agent.chain, vec![inter.cert_der(), root.cert_der()]);
    assert_eq!(inter.root_der(), root.cert_der());
    let a = anchors(&root);
    validate_chain(
        &agent.cert_der,
        &agent.chain,
        &a,
        NOW as u64,
        Usage::ClientAuth,
    )
    .unwrap();
    let err = validate_chain(&agent.cert_der, &[], &a, NOW as u64, Usage::ClientAuth).unwrap_err();
    assert!(matches!(err, IdentityError::Chain(_)), "{err}");
    // The intermediate round-trips through PEM with its parent.
    let loaded = FleetCa::from_pem(&inter.cert_pem(), &inter.key_pem()).unwrap();
    let agent2 = loaded.issue_agent(&vin(), &ecm(), year()).unwrap();
    assert_eq!(agent2.chain, agent.chain);
    validate_chain(
        &agent2.cert_der,
        &agent2.chain,
        &a,
        NOW as u64,
        Usage::ClientAuth,
    )
    .unwrap();
}

#[test]
fn validity_is_checked() {
    assert!(Validity::new(10, 5).is_err());
    assert!(Validity::new(5, 5).unwrap().contains(5));
    let v = Validity::days_from(100, 2);
    assert_eq!(v.not_after_unix, 100 + 2 * 86_400);
    assert!(!v.contains(99));
    let ca = ca();
    let bad = Validity {
        not_before_unix: 10,
        not_after_unix: 5,
    };
    assert!(matches!(
        ca.issue_agent(&vin(), &ecm(), bad).unwrap_err(),
        IdentityError::Validity(_)
    ));
}

#[test]
fn trust_anchors_need_at_least_one_ca() {
    assert!(matches!(
        TrustAnchors::from_ca_ders(&[]).unwrap_err(),
        IdentityError::NoTrustAnchor
    ));
    let ca = ca();
    let a = TrustAnchors::from_pem(&ca.cert_pem()).unwrap();
    assert_eq!(a.root_cert_store().roots.len(), 1);
}

#[test]
fn parse_esync_uri_forms() {
    assert_eq!(
        parse_esync_uri("esync://vehicle/WVWZZZ1JZXW000001").unwrap(),
        Role::Vehicle { vin: vin() }
    );
    let role = Role::Agent {
        vin: vin(),
        device: ecm(),
    };
    assert_eq!(parse_esync_uri(&role.esync_uri().unwrap()).unwrap(), role);
    let long = format!("esync://vehicle/{}", "A".repeat(MAX_ESYNC_URI_LEN));
    assert!(matches!(
        parse_esync_uri(&long).unwrap_err(),
        IdentityError::MalformedUri { .. }
    ));
}
