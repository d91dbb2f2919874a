//! nginx (Debian's package) as the baseline of the Server benchmarks
//! (`deltas.rs` here, `esync-sim/benches/load.rs` through `#[path]`):
//! started on a free loopback port with mutual TLS 1.3 (the Server's own
//! certificate and key, the fleet CA, optionally its CRL), answering the
//! `location` blocks a benchmark gives, stopped on drop. Installed with apt-get when missing; `None` (with `SKIPPED: ...`
//! printed) when it cannot be had or does not start.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The TLS material nginx serves with (PEM text; the CRL as DER).
pub struct NginxTls<'a> {
    /// The Server's certificate chain.
    pub chain_pem: &'a str,
    /// The Server's private key (as the Server stores it).
    pub key_pem: &'a str,
    /// The fleet CA client certificates must chain to.
    pub ca_pem: &'a str,
    /// The fleet CA's CRL, if any.
    pub crl_der: Option<&'a [u8]>,
}

/// A running nginx.
pub struct Nginx {
    child: Child,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // The master process ends its workers on SIGTERM.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// The nginx binary, installed with apt-get when missing.
pub fn binary() -> Option<PathBuf> {
    let found = || {
        ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    };
    if let Some(p) = found() {
        return Some(p);
    }
    println!("nginx missing: apt-get install -y nginx");
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq", "nginx"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("SKIPPED: nginx: apt-get install -y nginx failed");
        return None;
    }
    found()
}

/// OpenSSL 3.0 reads only PKCS#8 v1 ed25519 keys; ours are v2 (with the
/// public key). The seed follows `04 22 04 20` in both: re-wrapped as v1,
/// the same key.
pub fn openssl_key_pem(v2_pem: &str) -> String {
    let der = pem::parse(v2_pem).expect("key pem").into_contents();
    const SEED_TAG: [u8; 4] = [0x04, 0x22, 0x04, 0x20];
    let at = der
        .windows(4)
        .position(|w| w == SEED_TAG)
        .expect("ed25519 PKCS#8 key")
        + 4;
    let mut v1 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    v1.extend_from_slice(&der[at..at + 32]);
    pem::encode(&pem::Pem::new("PRIVATE KEY", v1))
}

impl Nginx {
    /// Starts nginx with `workers` worker processes serving `locations`
    /// (nginx `location` blocks) over mutual TLS.
    pub fn start(tls: &NginxTls<'_>, workers: usize, locations: &str) -> Option<Nginx> {
        let bin = binary()?;
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        std::fs::write(d.join("server.pem"), tls.chain_pem).expect("write");
        std::fs::write(d.join("server.key"), openssl_key_pem(tls.key_pem)).expect("write");
        std::fs::write(d.join("ca.pem"), tls.ca_pem).expect("write");
        let crl = match tls.crl_der {
            Some(der) => {
                std::fs::write(
                    d.join("crl.pem"),
                    pem::encode(&pem::Pem::new("X509 CRL", der.to_vec())),
                )
                .expect("write");
                format!("ssl_crl {}/crl.pem;", d.display())
            }
            None => String::new(),
        };
        let conf = format!(
            r#"worker_processes {workers};
user root;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 20000; }}
worker_rlimit_nofile 40000;
http {{
    access_log off;
    sendfile on;
    client_body_temp_path {d}/body;
    keepalive_requests 100000000;
    keepalive_timeout 90s;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {d}/server.pem;
        ssl_certificate_key {d}/server.key;
        ssl_client_certificate {d}/ca.pem;
        {crl}
        ssl_verify_client on;
        ssl_protocols TLSv1.3;
        {locations}
    }}
}}
"#,
            d = d.display()
        );
        std::fs::write(d.join("nginx.conf"), conf).expect("write");
        let child = Command::new(bin)
            .arg("-e")
            .arg(d.join("error.log"))
            .arg("-p")
            .arg(d)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let mut n = Nginx {
            child,
            url: format!("https://127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = n.child.try_wait() {
                let log =
                    std::fs::read_to_string(n.dir.path().join("error.log")).unwrap_or_default();
                println!("SKIPPED: nginx exited with {status}: {log}");
                return None;
            }
            assert!(Instant::now() < deadline, "nginx did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(n)
    }
}
