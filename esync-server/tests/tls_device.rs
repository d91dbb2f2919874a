//! The device listener over real mutual TLS on loopback: a vehicle of the
//! fleet is accepted and named by its certificate; a certificate from another
//! CA is refused; a revoked certificate is refused once the CRL is reloaded;
//! an Agent certificate of the fleet is refused on the device listener.

use std::sync::Arc;

use rcgen::{CertificateParams, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use esync_identity::{client_tls_config, FleetCa, IssuedIdentity, TrustAnchors, Validity};
use esync_proto::id::{DevicePath, Vin};
use esync_server::provision::{IssuedCert, Provisioner};
use esync_server::tls::{device_peer, DeviceTls};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A vehicle-held key and the certificate the Server issued for its CSR.
fn vehicle_from_csr(p: &Provisioner, vin: &Vin) -> IssuedIdentity {
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    let csr = CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .serialize_request(&key)
        .expect("csr");
    let IssuedCert {
        cert_der, chain, ..
    } = p
        .issue_vehicle(csr.der(), vin, Validity::days_from(now() - 60, 30))
        .expect("issue");
    held(cert_der, chain, &key)
}

fn held(cert_der: Vec<u8>, chain: Vec<Vec<u8>>, key: &KeyPair) -> IssuedIdentity {
    let chain_pem: String = std::iter::once(&cert_der)
        .chain(chain.iter())
        .map(|d| pem(d))
        .collect();
    IssuedIdentity::from_pem(&chain_pem, &key.serialize_pem()).expect("identity")
}

fn pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

struct Fixture {
    prov: Provisioner,
    dev: Arc<DeviceTls>,
    addr: std::net::SocketAddr,
    anchors: TrustAnchors,
}

/// Serves: after the handshake, writes the VIN read from the certificate
/// (or `ERR <why>`), then closes.
async fn start() -> Fixture {
    let ca = FleetCa::new("fleet", Validity::days_from(now() - 60, 365)).expect("ca");
    let anchors = TrustAnchors::from_ca_ders(&[ca.root_der()]).expect("anchors");
    let server_id = ca
        .issue_server(&["127.0.0.1".into()], Validity::days_from(now() - 60, 30))
        .expect("server cert");
    let mut prov = Provisioner::new(ca).expect("prov");
    let crl = prov.crl_der(now() - 1, 3600).expect("crl");
    let dev = Arc::new(DeviceTls::new(server_id, anchors.clone(), &[crl]).expect("device tls"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let d = Arc::clone(&dev);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = TlsAcceptor::from(d.config());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let reply = match device_peer(tls.get_ref().1.peer_certificates()) {
                    Ok(vin) => vin.to_string(),
                    Err(e) => format!("ERR {e}"),
                };
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Fixture {
        prov,
        dev,
        addr,
        anchors,
    }
}

/// Connects as `id`; returns what the server wrote, or `Err` when the TLS
/// session failed (TLS 1.3: a refused client certificate shows at first read).
async fn talk(f: &Fixture, id: &IssuedIdentity) -> Result<String, String> {
    let cfg = client_tls_config(id, &f.anchors).expect("client cfg");
    let tcp = TcpStream::connect(f.addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = String::new();
    tls.read_to_string(&mut buf)
        .await
        .map_err(|e| e.to_string())?;
    Ok(buf)
}

#[tokio::test]
async fn fleet_vehicle_is_named_by_its_certificate() {
    let f = start().await;
    let vin = Vin::new("1HGCM82633A004352").expect("vin");
    let id = vehicle_from_csr(&f.prov, &vin);
    assert_eq!(talk(&f, &id).await, Ok(vin.to_string()));
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let f = start().await;
    let other = FleetCa::new("other fleet", Validity::days_from(now() - 60, 365)).expect("ca");
    let vin = Vin::new("1HGCM82633A004352").expect("vin");
    let id = other
        .issue_vehicle(&vin, Validity::days_from(now() - 60, 30))
        .expect("issue");
    // The client must still trust the Server: give it the fleet anchors.
    let r = talk(&f, &id).await;
    assert!(r.is_err(), "foreign certificate accepted: {r:?}");
}

#[tokio::test]
async fn revoked_certificate_is_refused_after_crl_reload() {
    let mut f = start().await;
    let vin = Vin::new("1HGCM82633A004352").expect("vin");
    let keep = Vin::new("1HGCM82633A004353").expect("vin");
    let id = vehicle_from_csr(&f.prov, &vin);
    let other = vehicle_from_csr(&f.prov, &keep);
    assert_eq!(talk(&f, &id).await, Ok(vin.to_string()));

    let serial = esync_identity::parse_identity(&id.cert_der)
        .expect("parse")
        .serial_hex;
    assert!(f.prov.revoke(&serial, now() - 1).expect("revoke"));
    let crl = f.prov.crl_der(now() - 1, 3600).expect("crl");
    f.dev.reload_crls(&[crl]).expect("reload");

    let r = talk(&f, &id).await;
    assert!(r.is_err(), "revoked certificate accepted: {r:?}");
    assert_eq!(talk(&f, &other).await, Ok(keep.to_string()));
}

#[tokio::test]
async fn agent_certificate_is_not_a_vehicle() {
    let f = start().await;
    let vin = Vin::new("1HGCM82633A004352").expect("vin");
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    let csr = CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .serialize_request(&key)
        .expect("csr");
    let dev = DevicePath::new("/ecu/brake").expect("path");
    let c = f
        .prov
        .issue_agent(csr.der(), &vin, &dev, Validity::days_from(now() - 60, 30))
        .expect("issue");
    let id = held(c.cert_der, c.chain, &key);
    let r = talk(&f, &id).await.expect("TLS itself succeeds");
    assert!(r.starts_with("ERR "), "agent accepted as vehicle: {r}");
}

#[tokio::test]
async fn expired_crl_fails_closed() {
    let mut f = start().await;
    let vin = Vin::new("1HGCM82633A004352").expect("vin");
    let id = vehicle_from_csr(&f.prov, &vin);
    // A CRL whose nextUpdate has passed: the Server stopped refreshing it.
    let stale = f.prov.crl_der(now() - 7200, 3600).expect("crl");
    f.dev.reload_crls(&[stale]).expect("reload");
    let r = talk(&f, &id).await;
    assert!(r.is_err(), "accepted with an expired CRL: {r:?}");
}

#[tokio::test]
async fn admin_listener_needs_no_client_certificate_but_device_does() {
    let ca = FleetCa::new("fleet", Validity::days_from(now() - 60, 365)).expect("ca");
    let anchors = TrustAnchors::from_ca_ders(&[ca.root_der()]).expect("anchors");
    let server_id = ca
        .issue_server(&["127.0.0.1".into()], Validity::days_from(now() - 60, 30))
        .expect("server cert");
    let mut prov = Provisioner::new(ca).expect("prov");
    let crl = prov.crl_der(now() - 1, 3600).expect("crl");
    let admin = esync_server::tls::admin_tls_config(&server_id).expect("admin tls");
    let device = DeviceTls::new(server_id, anchors.clone(), &[crl]).expect("device tls");
    let no_cert = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(anchors.root_cert_store())
        .with_no_client_auth(),
    );
    for (config, want_ok) in [(admin, true), (device.config(), false)] {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            if let Ok(mut tls) = TlsAcceptor::from(config).accept(tcp).await {
                let _ = tls.write_all(b"hello").await;
                let _ = tls.shutdown().await;
            }
        });
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let r = async {
            let mut tls = TlsConnector::from(Arc::clone(&no_cert))
                .connect(name, tcp)
                .await?;
            let mut buf = String::new();
            tls.read_to_string(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        }
        .await;
        if want_ok {
            assert_eq!(r.expect("admin accepts"), "hello");
        } else {
            assert!(r.is_err(), "device listener accepted no certificate");
        }
    }
}
