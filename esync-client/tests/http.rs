//! The Client's HTTPS side against an in-process device-API server over real
//! loopback mutual TLS, serving `esync_uptane::builder` output.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use esync_api::body::{
    CheckInRequest, CheckInResponse, ManifestAccepted, Report, ReportEvent, ReportPhase,
    ReportStored,
};
use esync_api::{range, ApiError, BlobId, ErrorCode, MetadataFileName, ReportId, RouteMatch};
use esync_client::http::{partial_path, DeviceHttp, DownloadLimits, HttpError, Repo};
use esync_client::runtime::{check_in, refresh, CheckInOutcome, ConfigFile, StateDir, StateError};
use esync_identity::{
    client_tls_config, peer_identity_from_certs, server_tls_config, FleetCa, IssuedIdentity, Role,
    TrustAnchors, Validity,
};
use esync_proto::id::{Sha256Digest, Vin};
use esync_uptane::builder::RepositoryBuilder;
use esync_uptane::{Limits, MemoryStore, RepoProgress, Repository, Response, UnixTime};
use http::{Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, std::io::Error>;

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn validity() -> Validity {
    Validity::days_from(now_unix() - 3600, 2)
}

fn vin() -> Vin {
    "WVWZZZ1JZXW000001".parse().expect("vin")
}

/// What the blob handler does with the next blob request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Send this many bytes, then drop the connection.
    CutAfter(u64),
    /// Send this many bytes, then send nothing for a long time.
    StallAfter(u64),
}

#[derive(Debug)]
struct Served {
    path: String,
    range: Option<String>,
    sent: Arc<AtomicU64>,
}

#[derive(Default)]
struct State {
    director: BTreeMap<String, Vec<u8>>,
    image: BTreeMap<String, Vec<u8>>,
    blobs: BTreeMap<String, Vec<u8>>,
    manifest: Mutex<Option<Sha256Digest>>,
    reports: Mutex<BTreeMap<String, Vec<u8>>>,
    fault: Mutex<Option<Fault>>,
    log: Mutex<Vec<Served>>,
    peers: Mutex<Vec<Vin>>,
    director_timestamp: Option<u64>,
    metadata_gets: AtomicU64,
}

fn json(status: StatusCode, v: &impl serde::Serialize) -> hyper::Response<Body> {
    let bytes = serde_json::to_vec(v).expect("json");
    hyper::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, esync_api::JSON)
        .body(
            Full::new(Bytes::from(bytes))
                .map_err(|n| match n {})
                .boxed(),
        )
        .expect("response")
}

fn error(e: ApiError) -> hyper::Response<Body> {
    json(e.status(), &e.body())
}

fn bytes(status: StatusCode, b: Vec<u8>) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(b)).map_err(|n| match n {}).boxed())
        .expect("response")
}

async fn read_body(req: Request<Incoming>, cap: u64) -> Result<Bytes, ApiError> {
    match Limited::new(req.into_body(), cap as usize).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(_) => Err(ApiError::new(ErrorCode::BodyTooLarge, "body over cap")),
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> hyper::Response<Body> {
    let m = match esync_api::match_route(req.method(), req.uri().path()) {
        Ok(m) => m,
        Err(e) => return error(e),
    };
    let cap = m.route().max_request_body();
    match m {
        RouteMatch::CheckIn => {
            let body = match read_body(req, cap).await {
                Ok(b) => b,
                Err(e) => return error(e),
            };
            let Ok(ci) = serde_json::from_slice::<CheckInRequest>(&body) else {
                return error(ApiError::new(ErrorCode::MalformedBody, "check-in"));
            };
            let known = *state.manifest.lock().expect("lock");
            let answer = match state.director_timestamp {
                _ if known != Some(ci.manifest_sha256) => CheckInResponse::ManifestWanted,
                Some(timestamp_version) => {
                    CheckInResponse::NewDirectorMetadata { timestamp_version }
                }
                None => CheckInResponse::UpToDate,
            };
            json(StatusCode::OK, &answer)
        }
        RouteMatch::Manifest => {
            let body = match read_body(req, cap).await {
                Ok(b) => b,
                Err(e) => return error(e),
            };
            let digest = Sha256Digest(Sha256::digest(&body).into());
            *state.manifest.lock().expect("lock") = Some(digest);
            json(
                StatusCode::OK,
                &ManifestAccepted {
                    manifest_sha256: digest,
                },
            )
        }
        RouteMatch::DirectorFile(f) | RouteMatch::ImageFile(f) => {
            state.metadata_gets.fetch_add(1, Ordering::SeqCst);
            let repo = if req.uri().path().starts_with("/v1/director/") {
                &state.director
            } else {
                &state.image
            };
            match repo.get(f.as_str()) {
                Some(b) => bytes(StatusCode::OK, b.clone()),
                None => error(ApiError::new(ErrorCode::NotFound, "no such file")),
            }
        }
        RouteMatch::Report(id) => {
            let body = match read_body(req, cap).await {
                Ok(b) => b,
                Err(e) => return error(e),
            };
            if serde_json::from_slice::<Report>(&body).is_err() {
                return error(ApiError::new(ErrorCode::MalformedBody, "report"));
            }
            let mut reports = state.reports.lock().expect("lock");
            let stored = ReportStored {
                report_id: id.to_string(),
                duplicate: reports.contains_key(id.as_str()),
            };
            match reports.get(id.as_str()) {
                Some(prev) if prev[..] != body[..] => {
                    error(ApiError::new(ErrorCode::ReportConflict, "other body"))
                }
                Some(_) => json(StatusCode::OK, &stored),
                None => {
                    reports.insert(id.to_string(), body.to_vec());
                    json(StatusCode::CREATED, &stored)
                }
            }
        }
        RouteMatch::Blob(id) => serve_blob(state, &req, id),
        _ => error(ApiError::new(ErrorCode::NotFound, "route not served")),
    }
}

fn serve_blob(state: Arc<State>, req: &Request<Incoming>, id: BlobId) -> hyper::Response<Body> {
    let Some(data) = state.blobs.get(&id.to_string()).cloned() else {
        return error(ApiError::new(ErrorCode::NotFound, "no such blob"));
    };
    let len = data.len() as u64;
    let range_hdr = req.headers().get(http::header::RANGE);
    let (status, first, last) = match range::serve_range(range_hdr, len) {
        Ok(None) => (StatusCode::OK, 0, len - 1),
        Ok(Some((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b),
        Err(_) => {
            let mut r = error(ApiError::new(ErrorCode::RangeNotSatisfiable, "range"));
            r.headers_mut()
                .insert(http::header::CONTENT_RANGE, range::unsatisfied(len));
            return r;
        }
    };
    let sent = Arc::new(AtomicU64::new(0));
    state.log.lock().expect("lock").push(Served {
        path: req.uri().path().to_owned(),
        range: range_hdr.map(|v| v.to_str().unwrap_or("?").to_owned()),
        sent: Arc::clone(&sent),
    });
    let fault = state.fault.lock().expect("lock").take();
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
    let slice = Bytes::from(data).slice(first as usize..=last as usize);
    tokio::spawn(async move {
        let mut off = 0usize;
        while off < slice.len() {
            let end = (off + 16 * 1024).min(slice.len());
            let limit = match fault {
                Some(Fault::CutAfter(n)) | Some(Fault::StallAfter(n)) => n as usize,
                None => usize::MAX,
            };
            if off >= limit {
                match fault {
                    Some(Fault::CutAfter(_)) => {
                        tx.abort(std::io::Error::other("cut"));
                        return;
                    }
                    _ => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                }
            }
            let end = end.min(limit.max(off + 1));
            if tx.send_data(slice.slice(off..end)).await.is_err() {
                return;
            }
            sent.fetch_add((end - off) as u64, Ordering::SeqCst);
            off = end;
        }
    });
    let mut b = hyper::Response::builder()
        .status(status)
        .header(http::header::CONTENT_LENGTH, last - first + 1)
        .header(http::header::CACHE_CONTROL, esync_api::BLOB_CACHE_CONTROL);
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header(
            http::header::CONTENT_RANGE,
            range::content_range(first, last, len).expect("range"),
        );
    }
    b.body(body.boxed()).expect("response")
}

struct TestServer {
    addr: SocketAddr,
    state: Arc<State>,
}

async fn start(ca: &FleetCa, state: State) -> TestServer {
    let server_id = ca
        .issue_server(&["127.0.0.1".to_owned()], validity())
        .expect("server cert");
    let anchors = TrustAnchors::from_ca_ders(&[ca.root_der()]).expect("anchors");
    let mut cfg = (*server_tls_config(&server_id, &anchors).expect("tls")).clone();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = Arc::new(state);
    let st = Arc::clone(&state);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let st = Arc::clone(&st);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let certs = tls.get_ref().1.peer_certificates().unwrap_or_default();
                let Ok(peer) = peer_identity_from_certs(certs) else {
                    return;
                };
                let Role::Vehicle { vin } = peer.role else {
                    return;
                };
                st.peers.lock().expect("lock").push(vin);
                let svc = hyper::service::service_fn(move |req| {
                    let st = Arc::clone(&st);
                    async move { Ok::<_, Infallible>(handle(st, req).await) }
                });
                let io = hyper_util::rt::TokioIo::new(tls);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    TestServer { addr, state }
}

struct Fleet {
    ca: FleetCa,
    vehicle: IssuedIdentity,
    anchors: TrustAnchors,
}

fn fleet() -> Fleet {
    let ca = FleetCa::new("esync test fleet", validity()).expect("CA");
    let vehicle = ca.issue_vehicle(&vin(), validity()).expect("vehicle");
    let anchors = TrustAnchors::from_ca_ders(&[ca.root_der()]).expect("anchors");
    Fleet {
        ca,
        vehicle,
        anchors,
    }
}

fn client(server: &TestServer, id: &IssuedIdentity, anchors: &TrustAnchors) -> DeviceHttp {
    let tls = client_tls_config(id, anchors).expect("client tls");
    DeviceHttp::new(&format!("https://{}", server.addr), tls).expect("client")
}

const T: Duration = Duration::from_secs(10);

fn blob_state(data: &[u8]) -> (State, BlobId) {
    let id = BlobId(Sha256Digest(Sha256::digest(data).into()));
    let mut st = State::default();
    st.blobs.insert(id.to_string(), data.to_vec());
    (st, id)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test]
async fn mutual_tls_is_required_and_a_certificate_from_another_ca_is_refused() {
    let f = fleet();
    let server = start(&f.ca, State::default()).await;
    let http = client(&server, &f.vehicle, &f.anchors);
    let req = CheckInRequest {
        manifest_sha256: Sha256Digest([7; 32]),
    };
    let answer = http.check_in(&req, T).await.expect("check-in");
    assert_eq!(answer, CheckInResponse::ManifestWanted);
    assert_eq!(
        server.state.peers.lock().expect("lock").as_slice(),
        &[vin()]
    );

    // A vehicle certificate from another CA, trusting the right server CA.
    let other = FleetCa::new("other fleet", validity()).expect("CA");
    let foreign = other.issue_vehicle(&vin(), validity()).expect("vehicle");
    let http = client(&server, &foreign, &f.anchors);
    let err = http.check_in(&req, T).await.expect_err("refused");
    assert!(matches!(err, HttpError::Transport(_)), "{err:?}");
    assert_eq!(server.state.peers.lock().expect("lock").len(), 1);

    // The Client refuses a server whose certificate is from another CA.
    let impostor = start(&other, State::default()).await;
    let http = client(&impostor, &f.vehicle, &f.anchors);
    let err = http.check_in(&req, T).await.expect_err("refused");
    assert!(matches!(err, HttpError::Transport(_)), "{err:?}");
    assert!(impostor.state.peers.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn check_in_manifest_and_idempotent_reports() {
    let f = fleet();
    let server = start(&f.ca, State::default()).await;
    let http = client(&server, &f.vehicle, &f.anchors);
    let manifest = br#"{"signatures":[],"signed":{"vin":"WVWZZZ1JZXW000001"}}"#;
    let digest = Sha256Digest(Sha256::digest(manifest).into());
    let req = CheckInRequest {
        manifest_sha256: digest,
    };
    assert_eq!(
        http.check_in(&req, T).await.expect("check-in"),
        CheckInResponse::ManifestWanted
    );
    let accepted = http.upload_manifest(manifest, T).await.expect("manifest");
    assert_eq!(accepted.manifest_sha256, digest);
    assert_eq!(
        http.check_in(&req, T).await.expect("check-in"),
        CheckInResponse::UpToDate
    );

    let id = ReportId::new("report-0001").expect("id");
    let report = Report {
        created_wall_ms: 1,
        event: ReportEvent::Progress {
            package: "p".into(),
            ecu: None,
            phase: ReportPhase::Download,
            done: 1,
            total: 2,
        },
    };
    let first = http.put_report(&id, &report, T).await.expect("report");
    assert!(!first.duplicate);
    let again = http.put_report(&id, &report, T).await.expect("retry");
    assert!(again.duplicate);
    let mut other = report.clone();
    other.created_wall_ms = 2;
    match http.put_report(&id, &other, T).await {
        Err(HttpError::Status {
            status: StatusCode::CONFLICT,
            api: Some(a),
            ..
        }) => assert_eq!(a.code, ErrorCode::ReportConflict),
        other => panic!("expected 409, got {other:?}"),
    }
    assert_eq!(server.state.reports.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn uptane_refresh_fetches_each_need_with_one_get() {
    let f = fleet();
    let expires = UnixTime(now_unix() + 86_400);
    let mut director = RepositoryBuilder::generate(expires).expect("director");
    director
        .add_target("ecu-1.img", b"image one", None)
        .expect("target");
    let mut image = RepositoryBuilder::generate(expires).expect("image");
    image
        .add_target("ecu-1.img", b"image one", None)
        .expect("target");
    let st = State {
        director: director.publish().expect("publish").metadata.clone(),
        image: image.publish().expect("publish").metadata.clone(),
        ..Default::default()
    };
    let server = start(&f.ca, st).await;
    let http = client(&server, &f.vehicle, &f.anchors);
    for (repo, builder) in [(Repo::Director, &director), (Repo::Image, &image)] {
        let root = builder.root_bytes(1).expect("root").to_vec();
        let mut r = Repository::open(MemoryStore::new(root), Limits::default()).expect("open");
        let mut progress = r.begin_refresh(UnixTime(now_unix())).expect("refresh");
        let mut gets = 0;
        while let RepoProgress::Need(need) = progress {
            gets += 1;
            let got = http.fetch_need(repo, &need, T).await.expect("fetch");
            progress = r
                .provide(match &got {
                    Some(b) => Response::Bytes(b),
                    None => Response::NotFound,
                })
                .expect("verifies");
        }
        assert_eq!(progress, RepoProgress::RefreshDone);
        // 2.root.json (404), timestamp, snapshot, targets.
        assert_eq!(gets, 4, "{repo:?}");
    }
    // A file longer than the Need's cap is refused, not truncated.
    let ts = MetadataFileName::new("timestamp.json").expect("name");
    let err = http
        .metadata_file(Repo::Director, &ts, 10, T)
        .await
        .expect_err("cap");
    assert!(
        matches!(err, HttpError::TooLarge { limit: 10, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_download_cut_mid_body_resumes_without_fetching_verified_bytes_again() {
    let f = fleet();
    let data = pattern(1024 * 1024 + 123);
    let (st, id) = blob_state(&data);
    *st.fault.lock().expect("lock") = Some(Fault::CutAfter(300 * 1024));
    let server = start(&f.ca, st).await;
    let http = client(&server, &f.vehicle, &f.anchors);
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("blob.img");
    let len = data.len() as u64;

    let err = http
        .download_blob(&id, len, &dest, DownloadLimits::default())
        .await
        .expect_err("cut");
    assert!(err.retryable(), "{err:?}");
    assert!(!dest.exists());
    let kept = std::fs::metadata(partial_path(&dest))
        .expect("partial")
        .len();
    assert!(kept > 0 && kept <= 300 * 1024, "kept {kept}");

    let done = http
        .download_blob(&id, len, &dest, DownloadLimits::default())
        .await
        .expect("resumed");
    assert_eq!(done.resumed_from, kept);
    assert_eq!(done.fetched, len - kept);
    assert_eq!(std::fs::read(&dest).expect("dest"), data);
    assert!(!partial_path(&dest).exists());
    let log = server.state.log.lock().expect("lock");
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].range, None);
    assert_eq!(
        log[1].range.as_deref(),
        Some(format!("bytes={kept}-").as_str())
    );
    assert_eq!(log[1].sent.load(Ordering::SeqCst), len - kept);
    assert!(log.iter().all(|s| s.path == format!("/v1/blobs/{id}")));
}

#[tokio::test]
async fn a_stalled_download_times_out_and_keeps_its_bytes() {
    let f = fleet();
    let data = pattern(200 * 1024);
    let (st, id) = blob_state(&data);
    *st.fault.lock().expect("lock") = Some(Fault::StallAfter(64 * 1024));
    let server = start(&f.ca, st).await;
    let http = client(&server, &f.vehicle, &f.anchors);
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("b");
    let limits = DownloadLimits {
        idle_timeout: Duration::from_millis(300),
        total_timeout: None,
    };
    let err = http
        .download_blob(&id, data.len() as u64, &dest, limits)
        .await
        .expect_err("stalled");
    assert!(
        matches!(
            err,
            HttpError::Timeout {
                what: "blob body",
                ..
            }
        ),
        "{err:?}"
    );
    let kept = std::fs::metadata(partial_path(&dest))
        .expect("partial")
        .len();
    assert!(kept > 0 && kept <= 64 * 1024, "kept {kept}");
    let done = http
        .download_blob(&id, data.len() as u64, &dest, DownloadLimits::default())
        .await
        .expect("resumed");
    assert_eq!(done.resumed_from, kept);
    assert_eq!(std::fs::read(&dest).expect("dest"), data);
}

#[tokio::test]
async fn a_blob_that_does_not_hash_to_its_address_is_refused_and_removed() {
    let f = fleet();
    let data = pattern(50_000);
    let (mut st, id) = blob_state(&data);
    let mut wrong = data.clone();
    wrong[49_999] ^= 1;
    st.blobs.insert(id.to_string(), wrong);
    let server = start(&f.ca, st).await;
    let http = client(&server, &f.vehicle, &f.anchors);
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("b");
    let err = http
        .download_blob(&id, data.len() as u64, &dest, DownloadLimits::default())
        .await
        .expect_err("hash");
    assert!(matches!(err, HttpError::HashMismatch { .. }), "{err:?}");
    assert!(!dest.exists());
    assert!(!partial_path(&dest).exists());

    // Longer than the verified length: stopped at the length, removed.
    let (st, id) = blob_state(&data);
    let server = start(&f.ca, st).await;
    let http = client(&server, &f.vehicle, &f.anchors);
    let err = http
        .download_blob(&id, 1000, &dest, DownloadLimits::default())
        .await
        .expect_err("length");
    assert!(matches!(err, HttpError::LengthMismatch { .. }), "{err:?}");
    assert!(!partial_path(&dest).exists());
}

#[tokio::test]
async fn runtime_provisions_checks_in_and_refreshes_into_the_trust_stores() {
    let f = fleet();
    let expires = UnixTime(now_unix() + 86_400);
    let mut director = RepositoryBuilder::generate(expires).expect("director");
    director
        .add_target("ecu-1.img", b"image one", None)
        .expect("target");
    let mut image = RepositoryBuilder::generate(expires).expect("image");
    image
        .add_target("ecu-1.img", b"image one", None)
        .expect("target");
    let st = State {
        director: director.publish().expect("publish").metadata.clone(),
        image: image.publish().expect("publish").metadata.clone(),
        director_timestamp: Some(1),
        ..Default::default()
    };
    let server = start(&f.ca, st).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::new(dir.path());
    let config = ConfigFile {
        server_url: format!("https://{}", server.addr),
    };
    let director_root = director.root_bytes(1).expect("root").to_vec();
    let image_root = image.root_bytes(1).expect("root").to_vec();

    // A certificate from another CA is refused at provisioning.
    let other = FleetCa::new("other fleet", validity()).expect("CA");
    let foreign = other.issue_vehicle(&vin(), validity()).expect("vehicle");
    let err = state
        .provision(
            &config,
            &foreign.chain_pem(),
            &foreign.key_pem(),
            &f.ca.cert_pem(),
            &director_root,
            &image_root,
        )
        .expect_err("foreign");
    assert!(matches!(err, StateError::Invalid { .. }), "{err:?}");
    assert!(state.config().is_err());

    let got = state
        .provision(
            &config,
            &f.vehicle.chain_pem(),
            &f.vehicle.key_pem(),
            &f.ca.cert_pem(),
            &director_root,
            &image_root,
        )
        .expect("provision");
    assert_eq!(got, vin());

    let http = state.http().expect("http");
    let mut dir_repo = state.director().expect("director");
    let manifest = br#"{"signatures":[],"signed":{}}"#;
    let now = UnixTime(now_unix());
    let first = check_in(&http, Some(manifest), &mut dir_repo, now, T)
        .await
        .expect("check-in");
    match first {
        CheckInOutcome::ManifestUploaded(inner) => match *inner {
            CheckInOutcome::DirectorRefreshed(r) => {
                assert_eq!(r.fetched, 4);
                assert_eq!(r.timestamp_version, Some(1));
            }
            other => panic!("expected a Director refresh, got {other:?}"),
        },
        other => panic!("expected a manifest upload, got {other:?}"),
    }
    let gets = server.state.metadata_gets.load(Ordering::SeqCst);
    // The trusted Director state is on disk: a fresh open sees version 1,
    // and the next check-in fetches nothing.
    let mut reopened = state.director().expect("reopen");
    assert_eq!(reopened.timestamp().map(|t| t.meta.version), Some(1));
    let second = check_in(&http, Some(manifest), &mut reopened, now, T)
        .await
        .expect("check-in");
    assert_eq!(second, CheckInOutcome::UpToDate);
    assert_eq!(server.state.metadata_gets.load(Ordering::SeqCst), gets);

    let mut img = state.image().expect("image");
    let r = refresh(&http, Repo::Image, &mut img, now, T)
        .await
        .expect("image refresh");
    assert_eq!(r.targets_version, Some(1));
    let reopened = state.image().expect("image");
    assert_eq!(
        reopened.targets("targets").map(|t| t.meta.version),
        Some(1),
        "targets persisted in the Image trust store"
    );
}

fn cli(args: Vec<String>) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_esync-client"))
        .args(args)
        .output()
        .expect("esync-client runs")
}

async fn cli_async(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || cli(args))
        .await
        .expect("join")
}

#[tokio::test]
async fn binary_provisions_runs_once_and_reports_status() {
    let f = fleet();
    let expires = UnixTime(now_unix() + 86_400);
    // Nothing directed to this vehicle yet.
    let mut director = RepositoryBuilder::generate(expires).expect("director");
    let mut image = RepositoryBuilder::generate(expires).expect("image");
    let st = State {
        director: director.publish().expect("publish").metadata.clone(),
        image: image.publish().expect("publish").metadata.clone(),
        director_timestamp: Some(1),
        ..Default::default()
    };
    let server = start(&f.ca, st).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = |n: &str| tmp.path().join(n).to_string_lossy().into_owned();
    std::fs::write(p("v.pem"), f.vehicle.chain_pem()).expect("write");
    std::fs::write(p("v.key"), f.vehicle.key_pem()).expect("write");
    std::fs::write(p("ca.pem"), f.ca.cert_pem()).expect("write");
    std::fs::write(p("d.json"), director.root_bytes(1).expect("root")).expect("write");
    std::fs::write(p("i.json"), image.root_bytes(1).expect("root")).expect("write");
    let dir = p("state");
    let url = format!("https://{}", server.addr);
    let out = cli_async(&[
        "provision",
        "--dir",
        &dir,
        "--server",
        &url,
        "--cert",
        &p("v.pem"),
        "--key",
        &p("v.key"),
        "--ca",
        &p("ca.pem"),
        "--director-root",
        &p("d.json"),
        "--image-root",
        &p("i.json"),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(tmp.path().join("state/manifest.json"), b"{}").expect("manifest");

    // The session core checks in, verifies both repositories in full into
    // the trust stores, and finds nothing directed to this vehicle's (no)
    // Agents; the embedded broker listens on a free loopback port.
    let out = cli_async(&["run", "--dir", &dir, "--once", "--broker", "127.0.0.1:0"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("check-in: UpToDate"), "{stdout}");

    let out = cli_async(&["status", "--dir", &dir]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("WVWZZZ1JZXW000001"), "{stdout}");
    assert!(
        stdout.contains("director: root 1 timestamp 1 snapshot 1 targets 1"),
        "{stdout}"
    );
    // Nothing directed: the Image repository is not needed yet.
    assert!(stdout.contains("image: root 1 timestamp -"), "{stdout}");

    // Not provisioned: a clear failure.
    let out = cli_async(&["status", "--dir", &p("nothing")]).await;
    assert!(!out.status.success());
}

#[tokio::test]
async fn runtime_drives_the_session_core_over_https() {
    use esync_client::core::session::{Session, SessionConfig, SessionStep};
    use esync_client::runtime::session::{drive, SessionHost};
    let f = fleet();
    let expires = UnixTime(now_unix() + 86_400);
    let mut director = RepositoryBuilder::generate(expires).expect("director");
    let mut image = RepositoryBuilder::generate(expires).expect("image");
    let st = State {
        director: director.publish().expect("publish").metadata.clone(),
        image: image.publish().expect("publish").metadata.clone(),
        director_timestamp: Some(1),
        ..Default::default()
    };
    let server = start(&f.ca, st).await;
    let http = client(&server, &f.vehicle, &f.anchors);
    let dir = tempfile::tempdir().expect("tempdir");
    let host = SessionHost {
        http: &http,
        downloads: dir.path().to_owned(),
        request_timeout: T,
        idle_timeout: T,
        started: std::time::Instant::now(),
    };
    let mut session = Session::open(
        MemoryStore::new(director.root_bytes(1).expect("root").to_vec()),
        MemoryStore::new(image.root_bytes(1).expect("root").to_vec()),
        vin(),
        None,
        SessionConfig::default(),
    )
    .expect("session");
    let first = session
        .check_in(host.now(), b"{\"signed\":{}}".to_vec(), Vec::new())
        .expect("check-in");
    let end = drive(&mut session, &host, first, |_| None)
        .await
        .expect("drive");
    // Manifest uploaded, Director and Image metadata fetched and verified
    // over mTLS, nothing directed to this vehicle.
    assert_eq!(end, SessionStep::UpToDate);
    assert!(session.accepted_manifest().is_some());
    assert!(server.state.manifest.lock().expect("lock").is_some());
    // At least the Director: 2.root.json (404), timestamp, snapshot, targets.
    assert!(server.state.metadata_gets.load(Ordering::SeqCst) >= 4);
}

/// Offline operation: a final report queued while the Server cannot be
/// reached stays in the outbox's file journal (across a reopen) and goes out
/// once the link returns.
#[tokio::test]
async fn queued_reports_are_sent_when_the_link_returns() {
    use esync_api::body::{ComponentOutcome, ComponentResult, PackageOutcome};
    use esync_client::core::session::download::TransferLimits;
    use esync_client::core::session::reports::ReportOutbox;
    use esync_client::runtime::vehicle::{report_id, send_reports};
    use esync_store::file::FileJournal;

    let f = fleet();
    let server = start(&f.ca, State::default()).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let package = esync_package::package::PackageId::new("pkg-offline").expect("id");
    let id = report_id(&package).expect("report id");
    let report = Report {
        created_wall_ms: 5,
        event: ReportEvent::Result {
            package: package.to_string(),
            outcome: PackageOutcome::Installed,
            components: vec![ComponentResult {
                ecu: "ECU1".parse().expect("serial"),
                outcome: ComponentOutcome::Installed,
                running: "2.0.0".parse().expect("version"),
                failure: None,
            }],
        },
    };
    let limits = TransferLimits::default();
    let mut outbox =
        ReportOutbox::open(FileJournal::new(tmp.path(), "reports.journal"), &limits).expect("open");
    outbox.queue(id.clone(), &report).expect("queue");
    // The link is down: nothing listens on this port.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead_addr = closed.local_addr().expect("addr");
    drop(closed);
    let tls = client_tls_config(&f.vehicle, &f.anchors).expect("tls");
    let offline = DeviceHttp::new(&format!("https://{dead_addr}"), tls).expect("client");
    let sent = send_reports(&mut outbox, &offline, || 0, Duration::from_secs(2))
        .await
        .expect("send");
    assert_eq!(sent, 0);
    assert_eq!(outbox.len(), 1);
    drop(outbox);
    // A restart: the queue is read back from the file.
    let mut outbox =
        ReportOutbox::open(FileJournal::new(tmp.path(), "reports.journal"), &limits).expect("open");
    assert_eq!(outbox.len(), 1);
    // The link is back.
    let http = client(&server, &f.vehicle, &f.anchors);
    let sent = send_reports(&mut outbox, &http, || 10 * 60_000, T)
        .await
        .expect("send");
    assert_eq!(sent, 1);
    assert!(outbox.is_empty());
    let stored = server.state.reports.lock().expect("lock");
    assert_eq!(stored.len(), 1);
    assert!(stored.contains_key(id.as_str()));
}
