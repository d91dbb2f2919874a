//! Mutual TLS over loopback TCP between the configurations of this crate.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use esync_identity::{
    client_tls_config, peer_identity_from_certs, server_tls_config, vehicle_client_tls_config,
    FleetCa, IdentityError, IssuedIdentity, PeerIdentity, Role, TrustAnchors, Validity,
};
use esync_proto::id::{DevicePath, Vin};
use esync_proto::message::Participant;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const VIN: &str = "WVWZZZ1JZXW000001";

fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("time fits i64")
}

fn validity() -> Validity {
    Validity::days_from(now() - 3600, 2)
}

fn vin() -> Vin {
    Vin::new(VIN).expect("valid VIN")
}

fn ecm() -> DevicePath {
    DevicePath::new("/powertrain/ecm").expect("valid path")
}

fn fleet(name: &str) -> (FleetCa, TrustAnchors) {
    let ca = FleetCa::new(name, Validity::days_from(now() - 86_400, 30)).expect("CA");
    let anchors = TrustAnchors::from_ca_ders(&[ca.cert_der()]).expect("anchors");
    (ca, anchors)
}

fn server_identity(ca: &FleetCa) -> IssuedIdentity {
    ca.issue_server(
        &["localhost".to_owned(), "127.0.0.1".to_owned()],
        validity(),
    )
    .expect("server cert")
}

/// What one side saw: the peer's identity, and the bytes it read.
type Outcome = Result<(PeerIdentity, Vec<u8>), String>;

/// Runs one connection: the server reads 5 bytes and answers "world"; the
/// client sends "hello" and reads 5 bytes. Returns (server side, client side).
async fn run(
    server_cfg: Arc<rustls::ServerConfig>,
    client_cfg: Arc<rustls::ClientConfig>,
    name: &'static str,
) -> (Outcome, Outcome) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(server_cfg);
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let peer = peer_identity_from_certs(tls.get_ref().1.peer_certificates().unwrap_or(&[]))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(b"world").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((peer, buf.to_vec()))
    });
    let connector = TlsConnector::from(client_cfg);
    let client = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let server_name = ServerName::try_from(name).map_err(|e| e.to_string())?;
        let mut tls = connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let peer = peer_identity_from_certs(tls.get_ref().1.peer_certificates().unwrap_or(&[]))
            .map_err(|e| e.to_string())?;
        tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        Ok::<_, String>((peer, buf.to_vec()))
    };
    let client_out = client.await;
    let server_out = server.await.expect("server task");
    (server_out, client_out)
}

#[tokio::test]
async fn mutual_tls_handshake_yields_participant() {
    let (ca, anchors) = fleet("esync fleet");
    let server = server_identity(&ca);
    let agent = ca.issue_agent(&vin(), &ecm(), validity()).expect("agent");
    let (s, c) = run(
        server_tls_config(&server, &anchors).expect("server cfg"),
        client_tls_config(&agent, &anchors).expect("client cfg"),
        "localhost",
    )
    .await;
    let (client_seen_by_server, got) = s.expect("server side succeeds");
    assert_eq!(got, b"hello");
    assert_eq!(
        client_seen_by_server.participant(),
        Some(Participant::Device(ecm()))
    );
    assert_eq!(client_seen_by_server.vin(), Some(&vin()));
    assert_eq!(
        client_seen_by_server.verifying_key,
        agent.signing_key.verifying_key()
    );
    let (server_seen_by_client, got) = c.expect("client side succeeds");
    assert_eq!(got, b"world");
    assert!(matches!(server_seen_by_client.role, Role::Server { .. }));
}

#[tokio::test]
async fn server_reachable_by_ip_san() {
    let (ca, anchors) = fleet("esync fleet");
    let server = server_identity(&ca);
    let vehicle = ca.issue_vehicle(&vin(), validity()).expect("vehicle");
    let (s, c) = run(
        server_tls_config(&server, &anchors).expect("server cfg"),
        client_tls_config(&vehicle, &anchors).expect("client cfg"),
        "127.0.0.1",
    )
    .await;
    let (peer, _) = s.expect("server side succeeds");
    assert_eq!(peer.participant(), Some(Participant::Client));
    c.expect("client side succeeds");
}

#[tokio::test]
async fn client_from_another_ca_is_refused_by_server() {
    let (ca, anchors) = fleet("esync fleet");
    let (rogue_ca, rogue_anchors) = fleet("rogue fleet");
    let server = server_identity(&ca);
    // The rogue client trusts our CA (so it accepts the server) but its own
    // certificate comes from another CA.
    let both = TrustAnchors::from_ca_ders(&[ca.cert_der(), rogue_ca.cert_der()]).expect("anchors");
    let rogue = rogue_ca
        .issue_agent(&vin(), &ecm(), validity())
        .expect("rogue agent");
    let (s, c) = run(
        server_tls_config(&server, &anchors).expect("server cfg"),
        client_tls_config(&rogue, &both).expect("client cfg"),
        "localhost",
    )
    .await;
    let err = s.expect_err("server must refuse the client");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(c.is_err(), "client must not complete an exchange");
    drop(rogue_anchors);
}

#[tokio::test]
async fn expired_client_is_refused_by_server() {
    let (ca, anchors) = fleet("esync fleet");
    let server = server_identity(&ca);
    let past = Validity::new(now() - 10 * 86_400, now() - 86_400).expect("validity");
    let agent = ca.issue_agent(&vin(), &ecm(), past).expect("agent");
    let (s, c) = run(
        server_tls_config(&server, &anchors).expect("server cfg"),
        client_tls_config(&agent, &anchors).expect("client cfg"),
        "localhost",
    )
    .await;
    let err = s.expect_err("server must refuse the expired client");
    assert!(err.to_lowercase().contains("expired"), "{err}");
    assert!(c.is_err());
}

#[tokio::test]
async fn server_from_another_ca_is_refused_by_client() {
    let (ca, anchors) = fleet("esync fleet");
    let (rogue_ca, _) = fleet("rogue fleet");
    let rogue_server = server_identity(&rogue_ca);
    let agent = ca.issue_agent(&vin(), &ecm(), validity()).expect("agent");
    let both = TrustAnchors::from_ca_ders(&[ca.cert_der(), rogue_ca.cert_der()]).expect("anchors");
    let (s, c) = run(
        server_tls_config(&rogue_server, &both).expect("server cfg"),
        client_tls_config(&agent, &anchors).expect("client cfg"),
        "localhost",
    )
    .await;
    let err = c.expect_err("client must refuse the server");
    assert!(
        err.contains("UnknownIssuer") || err.contains("issuer"),
        "{err}"
    );
    assert!(s.is_err());
}

#[tokio::test]
async fn in_vehicle_broker_link_checks_the_vehicle() {
    let (ca, anchors) = fleet("esync fleet");
    let broker = ca.issue_vehicle(&vin(), validity()).expect("vehicle");
    let agent = ca.issue_agent(&vin(), &ecm(), validity()).expect("agent");
    let (s, c) = run(
        server_tls_config(&broker, &anchors).expect("server cfg"),
        vehicle_client_tls_config(&agent, &anchors, &vin()).expect("client cfg"),
        "vehicle.invalid",
    )
    .await;
    let (peer, _) = s.expect("broker side succeeds");
    assert_eq!(peer.participant(), Some(Participant::Device(ecm())));
    let (broker_seen, _) = c.expect("agent side succeeds");
    assert_eq!(broker_seen.role, Role::Vehicle { vin: vin() });

    // The same broker is refused by an Agent of another vehicle.
    let other_vin = Vin::new("WVWZZZ1JZXW000002").expect("valid VIN");
    let other_agent = ca
        .issue_agent(&other_vin, &ecm(), validity())
        .expect("agent");
    let (s, c) = run(
        server_tls_config(&broker, &anchors).expect("server cfg"),
        vehicle_client_tls_config(&other_agent, &anchors, &other_vin).expect("client cfg"),
        "vehicle.invalid",
    )
    .await;
    let err = c.expect_err("agent must refuse another vehicle's broker");
    assert!(err.contains("NotValidForName"), "{err}");
    assert!(s.is_err());

    // An Agent certificate cannot pose as the broker (no serverAuth, not a vehicle).
    let (s, c) = run(
        server_tls_config(&other_agent, &anchors).expect("server cfg"),
        vehicle_client_tls_config(&agent, &anchors, &vin()).expect("client cfg"),
        "vehicle.invalid",
    )
    .await;
    let err = c.expect_err("an Agent certificate is not a broker");
    assert!(err.contains("InvalidPurpose"), "{err}");
    assert!(s.is_err());
}

#[test]
fn no_peer_certificate_is_an_error() {
    assert!(matches!(
        peer_identity_from_certs(&[]),
        Err(IdentityError::NoPeerCertificate)
    ));
}
