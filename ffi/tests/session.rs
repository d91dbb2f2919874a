//! The Client's Server-facing session over the C ABI (`esync_session_*`,
//! feature `client`), driven by a host written in Rust against the REAL
//! Server: esync-server in process on SQLite (`esync_examples::backend`,
//! the demo's Server), its device API over mutual TLS on loopback. The
//! host's HTTPS is `esync_client::http::DeviceHttp`; every request the
//! session describes is performed with it and its answer handed back as an
//! HTTP status and body bytes, blobs in chunks (the host keeps the bytes).
//!
//! - `session_checks_in_verifies_downloads_and_hands_the_package_to_the_client`:
//!   the manifest is uploaded at check-in, the Director and Image metadata
//!   are verified in full, the user is asked (the component wants consent)
//!   and consents, the package assigned to the vehicle is downloaded, the session ends Ready, and its `ReadyPackage` JSON is
//!   accepted by `esync_client_start` (the Client sends its first command
//!   to the Agent); the blob response is cut once mid-body (a transport
//!   failure) and resumed with a Range request after the back-off. A
//!   second session whose Director `targets.json` answer
//!   is tampered with ends in `ESYNC_RESULT_VERIFICATION` and asks for no
//!   blob; a third, whose user refuses, ends Denied with the reason.
//! - `session_handle_follows_the_conventions`: `_free(NULL)`, NULL and bad
//!   arguments, outputs untouched on failure, an answer with no request.
#![cfg(feature = "client")]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
#![allow(unsafe_code, reason = "a C host written in Rust calls the C ABI")]

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::ptr;
use std::time::{Duration, Instant};

use ::esync_client::http::{DeviceHttp, Repo};
use ::esync_client::runtime::{ConfigFile, StateDir};
use ed25519_dalek::SigningKey;
use esync_agent::device::sha256;
use esync_api::{BlobId, MetadataFileName};
use esync_examples::backend::Backend;
use esync_examples::firmware;
use esync_ffi::client::*;
use esync_ffi::esync_result as R;
use esync_ffi::host::{
    esync_decision, esync_host_status, esync_trust_callbacks, esync_trust_loader,
    esync_trust_loader_add_role, ESYNC_DECISION_CONSENT, ESYNC_DECISION_DENY, ESYNC_HOST_OK,
    ESYNC_REASON_MAX,
};
use esync_ffi::session::*;
use esync_proto::envelope::{EnvelopeSigner, ReceiverIdentity, Recipient, Verifier};
use esync_proto::frame::FrameLimits;
use esync_proto::id::{
    DevicePath, EcuSerial, HardwareId, Id128, ReleaseCounter, SoftwareVersion, Vin,
};
use esync_proto::message::{
    AgentState, Criticality, DeltaCapability, ImageEncoding, InstalledImage, InventoryReport,
    Participant, PatchFormat, Payload, VerificationLevel,
};
use esync_uptane::manifest::{EcuVersionReport, ReportedImage, VehicleManifest};
use esync_uptane::{PrivateKey, UnixTime};

const VIN: &str = "WVWZZZ1JZXW000042";
const ECM: &str = "/powertrain/ecm";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// An in-memory Uptane trust store behind the trust callbacks.
#[derive(Default)]
struct Trust {
    roles: BTreeMap<String, Vec<u8>>,
}

unsafe extern "C" fn t_load(ud: *mut c_void, l: *mut esync_trust_loader) -> esync_host_status {
    let t = unsafe { &*(ud as *const Trust) };
    for (name, bytes) in &t.roles {
        unsafe {
            esync_trust_loader_add_role(l, name.as_ptr(), name.len(), bytes.as_ptr(), bytes.len())
        };
    }
    ESYNC_HOST_OK
}

unsafe extern "C" fn t_store(
    ud: *mut c_void,
    n: *const u8,
    nl: usize,
    b: *const u8,
    bl: usize,
) -> esync_host_status {
    let t = unsafe { &mut *(ud as *mut Trust) };
    let name = String::from_utf8(unsafe { std::slice::from_raw_parts(n, nl) }.to_vec()).unwrap();
    t.roles
        .insert(name, unsafe { std::slice::from_raw_parts(b, bl) }.to_vec());
    ESYNC_HOST_OK
}

unsafe extern "C" fn t_remove(ud: *mut c_void, n: *const u8, nl: usize) -> esync_host_status {
    let t = unsafe { &mut *(ud as *mut Trust) };
    let name = String::from_utf8(unsafe { std::slice::from_raw_parts(n, nl) }.to_vec()).unwrap();
    t.roles.remove(&name);
    ESYNC_HOST_OK
}

unsafe extern "C" fn t_time(_: *mut c_void, _: i64) -> esync_host_status {
    ESYNC_HOST_OK
}

fn trust_callbacks(t: &mut Trust) -> esync_trust_callbacks {
    esync_trust_callbacks {
        userdata: (t as *mut Trust).cast(),
        trust_load: Some(t_load),
        trust_store_role: Some(t_store),
        trust_remove_role: Some(t_remove),
        trust_store_time: Some(t_time),
    }
}

struct Stores {
    director: Box<Trust>,
    image: Box<Trust>,
    director_root: Vec<u8>,
    image_root: Vec<u8>,
}

impl Stores {
    fn config(&mut self) -> esync_session_config {
        esync_session_config {
            vin: VIN.as_ptr(),
            vin_len: VIN.len(),
            director_root: self.director_root.as_ptr(),
            director_root_len: self.director_root.len(),
            image_root: self.image_root.as_ptr(),
            image_root_len: self.image_root.len(),
            director: trust_callbacks(&mut self.director),
            image: trust_callbacks(&mut self.image),
            accepted_manifest: ptr::null(),
            accepted_manifest_len: 0,
            log: None,
            log_userdata: ptr::null_mut(),
        }
    }
}

fn last_error(s: *mut esync_session) -> String {
    let mut b = [0u8; 1024];
    let mut n = 0;
    assert_eq!(
        unsafe { esync_session_last_error(s, b.as_mut_ptr(), b.len(), &mut n) },
        R::ESYNC_RESULT_OK
    );
    String::from_utf8(b[..n].to_vec()).unwrap()
}

unsafe fn text(p: *const u8, n: usize) -> String {
    String::from_utf8(unsafe { std::slice::from_raw_parts(p, n) }.to_vec()).unwrap()
}

/// How a run of the host loop ended.
#[derive(Debug)]
enum End {
    /// A terminal step (`ESYNC_SESSION_*`).
    Step(u32),
    /// A call failed with this result.
    Failed(R),
}

/// What the host saw during a run.
#[derive(Default)]
struct Seen {
    kinds: Vec<u32>,
    blobs: BTreeMap<u64, Vec<u8>>,
    /// `range_start` of every blob request.
    ranges: Vec<u64>,
    /// Cut the first blob response after half its first chunk (a
    /// transport failure), once.
    cut_once: bool,
    /// Deny a consent request with this reason (else consent).
    deny: Option<&'static str>,
    /// The consent requests asked: title, size.
    consents: Vec<(String, u64)>,
}

/// The host: performs each request with `http`, hands its answer back;
/// `tamper` may rewrite a metadata body (name, bytes).
async fn run(
    s: *mut esync_session,
    http: &DeviceHttp,
    first: esync_session_step,
    started: Instant,
    tamper: &dyn Fn(&str, &mut Vec<u8>),
    seen: &mut Seen,
) -> End {
    let t = Duration::from_secs(20);
    let mono = || started.elapsed().as_millis() as u64;
    let mut step = first;
    loop {
        match step.kind {
            ESYNC_SESSION_REQUEST => {}
            ESYNC_SESSION_WAIT => {
                let now = mono();
                if step.deadline_ms > now {
                    tokio::time::sleep(Duration::from_millis(step.deadline_ms - now)).await;
                }
                let rc = unsafe { esync_session_poll(s, mono(), now_ms(), &mut step) };
                if rc != R::ESYNC_RESULT_OK {
                    return End::Failed(rc);
                }
                continue;
            }
            k => return End::Step(k),
        }
        let mut req: esync_session_request = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { esync_session_next_request(s, &mut req) },
            R::ESYNC_RESULT_OK
        );
        seen.kinds.push(req.kind);
        let (method, path) = unsafe {
            (
                text(req.method, req.method_len),
                text(req.path, req.path_len),
            )
        };
        let body = unsafe { std::slice::from_raw_parts(req.body, req.body_len) }.to_vec();
        let (status, answer): (u16, Vec<u8>) = match req.kind {
            ESYNC_REQUEST_UPLOAD_MANIFEST => {
                assert_eq!((method.as_str(), path.as_str()), ("POST", "/v1/manifest"));
                let a = http.upload_manifest(&body, t).await.unwrap();
                (200, serde_json::to_vec(&a).unwrap())
            }
            ESYNC_REQUEST_CHECK_IN => {
                assert_eq!((method.as_str(), path.as_str()), ("POST", "/v1/checkin"));
                let r = http.check_in_raw(body, t).await.unwrap();
                (200, serde_json::to_vec(&r).unwrap())
            }
            ESYNC_REQUEST_DIRECTOR_FILE | ESYNC_REQUEST_IMAGE_FILE => {
                assert_eq!(method, "GET");
                let (repo, prefix) = if req.kind == ESYNC_REQUEST_DIRECTOR_FILE {
                    (Repo::Director, "/v1/director/")
                } else {
                    (Repo::Image, "/v1/image/")
                };
                let name = path.strip_prefix(prefix).unwrap();
                let file = MetadataFileName::new(name).unwrap();
                match http
                    .metadata_file(repo, &file, req.max_len, t)
                    .await
                    .unwrap()
                {
                    Some(mut b) => {
                        if repo == Repo::Director {
                            tamper(name, &mut b);
                        }
                        (200, b)
                    }
                    None => (404, Vec::new()),
                }
            }
            ESYNC_REQUEST_BLOB => {
                assert_eq!(method, "GET");
                let blob: BlobId = path.strip_prefix("/v1/blobs/").unwrap().parse().unwrap();
                seen.ranges.push(req.range_start);
                let held = seen.blobs.entry(req.blob).or_default();
                held.truncate(req.range_start as usize);
                let mut stream = http.open_blob(&blob, req.range_start, t).await.unwrap();
                let status = if req.range_start > 0 { 206 } else { 200 };
                loop {
                    let chunk = stream.next_chunk().await.unwrap();
                    let (mut bytes, end) = match &chunk {
                        Some(c) => (&c[..], false),
                        None => (&[][..], true),
                    };
                    let cut = seen.cut_once && bytes.len() > 1;
                    if cut {
                        seen.cut_once = false;
                        bytes = &bytes[..bytes.len() / 2];
                    }
                    seen.blobs
                        .get_mut(&req.blob)
                        .unwrap()
                        .extend_from_slice(bytes);
                    let rc = unsafe {
                        esync_session_provide_answer(
                            s,
                            status,
                            bytes.as_ptr(),
                            bytes.len(),
                            end,
                            mono(),
                            now_ms(),
                            &mut step,
                        )
                    };
                    if rc != R::ESYNC_RESULT_OK {
                        return End::Failed(rc);
                    }
                    if cut && step.kind == ESYNC_SESSION_CONTINUE {
                        let why = "connection reset";
                        let rc = unsafe {
                            esync_session_provide_failure(
                                s,
                                why.as_ptr(),
                                why.len(),
                                mono(),
                                now_ms(),
                                &mut step,
                            )
                        };
                        if rc != R::ESYNC_RESULT_OK {
                            return End::Failed(rc);
                        }
                        assert_eq!(step.kind, ESYNC_SESSION_WAIT, "a back-off first");
                        break;
                    }
                    if end || step.kind != ESYNC_SESSION_CONTINUE {
                        break;
                    }
                }
                if step.kind == ESYNC_SESSION_CONTINUE {
                    let rc = unsafe { esync_session_poll(s, mono(), now_ms(), &mut step) };
                    if rc != R::ESYNC_RESULT_OK {
                        return End::Failed(rc);
                    }
                }
                continue;
            }
            ESYNC_REQUEST_CONSENT => {
                let c = &req.consent;
                let title = unsafe { text(c.title, c.title_len) };
                seen.consents.push((title, c.size_bytes));
                let mut d = esync_decision {
                    kind: ESYNC_DECISION_CONSENT,
                    postpone_until_ms: 0,
                    reason: [0; ESYNC_REASON_MAX],
                    reason_len: 0,
                };
                if let Some(why) = seen.deny {
                    d.kind = ESYNC_DECISION_DENY;
                    d.reason[..why.len()].copy_from_slice(why.as_bytes());
                    d.reason_len = why.len();
                }
                let rc = unsafe { esync_session_consent(s, &d, mono(), now_ms(), &mut step) };
                if rc != R::ESYNC_RESULT_OK {
                    return End::Failed(rc);
                }
                continue;
            }
            k => panic!("unknown request kind {k}"),
        };
        let rc = unsafe {
            esync_session_provide_answer(
                s,
                status,
                answer.as_ptr(),
                answer.len(),
                true,
                mono(),
                now_ms(),
                &mut step,
            )
        };
        if rc != R::ESYNC_RESULT_OK {
            return End::Failed(rc);
        }
    }
}

struct Fx {
    _work: tempfile::TempDir,
    _srv: Backend,
    http: DeviceHttp,
    manifest: Vec<u8>,
    inventory: InventoryReport,
    stores: Stores,
    v2: Vec<u8>,
}

async fn fixture() -> Fx {
    let work = tempfile::tempdir().unwrap();
    let srv = Backend::start(&work.path().join("server"), 0)
        .await
        .unwrap();
    let primary = PrivateKey::from_seed(&[7; 32]);
    let ecu = PrivateKey::from_seed(&[8; 32]);
    srv.register_vehicle(VIN, "M1", "eu", &["gw-hw", "ecm-hw"])
        .await
        .unwrap();
    srv.add_ecu(VIN, "GW-1", "gw-hw", true, &primary.public_key())
        .await
        .unwrap();
    srv.add_ecu(VIN, "ECM-1", "ecm-hw", false, &ecu.public_key())
        .await
        .unwrap();
    let id = srv.issue_identity(VIN, None).await.unwrap();
    let v1 = firmware::initial(ECM, "1.0.0", 1, 48 * 1024);
    let v2 = firmware::derive(&v1, ECM, "2.0.0", 2, true);
    srv.upload_image("ecm", "1.0.0", "ecm-hw", &v1)
        .await
        .unwrap();
    let h2 = srv
        .upload_image("ecm", "2.0.0", "ecm-hw", &v2)
        .await
        .unwrap();
    srv.create_package(&serde_json::json!({"id": "ecm-2", "components": [
        {"device": ECM, "image": h2, "release_counter": 2, "consent_required": true}]}))
        .await
        .unwrap();
    srv.sign_image_targets(&["ecm-2"]).await.unwrap();
    let director_root = srv.director_root().await.unwrap();
    let image_root = srv.image_root().await.unwrap();
    let state = StateDir::new(&work.path().join("client"));
    state
        .provision(
            &ConfigFile {
                server_url: srv.device_url.clone(),
            },
            &id.chain_pem(),
            &id.key_pem(),
            &srv.ca_pem,
            &director_root,
            &image_root,
        )
        .unwrap();
    let http = state.http().unwrap();
    srv.assign("ecm-2", &[VIN.to_owned()]).await.unwrap();

    let serial = EcuSerial::new("ECM-1").unwrap();
    let installed = InstalledImage {
        version: SoftwareVersion::new("1.0.0").unwrap(),
        release_counter: ReleaseCounter(1),
        length: v1.len() as u64,
        sha256: sha256(&v1),
    };
    let report = EcuVersionReport {
        ecu_serial: serial.clone(),
        installed_image: ReportedImage::from_installed(&installed, "installed".into()),
        release_counter: 1,
        nonce: format!("{:032x}", 42u128),
        attacks_detected: String::new(),
        timestamp: UnixTime(now_ms() as i64 / 1000),
    };
    let mut reports = BTreeMap::new();
    reports.insert(serial.to_string(), report.sign(&ecu).unwrap());
    let manifest = VehicleManifest {
        vin: Vin::new(VIN).unwrap(),
        primary_ecu_serial: EcuSerial::new("GW-1").unwrap(),
        ecu_version_reports: reports,
    }
    .sign(&primary)
    .unwrap();
    let inventory = InventoryReport {
        nonce: [0; 16],
        device: DevicePath::new(ECM).unwrap(),
        hardware_id: HardwareId::new("ecm-hw").unwrap(),
        serial,
        installed,
        delta: DeltaCapability {
            formats: vec![PatchFormat::BsdiffZstd],
            max_patch_memory: 64 * 1024 * 1024,
        },
        rollback_versions: vec![],
        verification: VerificationLevel::Full,
        criticality: Criticality::Normal,
        state: AgentState::Idle,
    };
    Fx {
        _work: work,
        _srv: srv,
        http,
        manifest,
        inventory,
        stores: Stores {
            director: Box::default(),
            image: Box::default(),
            director_root,
            image_root,
        },
        v2,
    }
}

fn new_session(stores: &mut Stores) -> *mut esync_session {
    let config = stores.config();
    let mut s = ptr::null_mut();
    assert_eq!(
        unsafe { esync_session_new(&config, &mut s) },
        R::ESYNC_RESULT_OK
    );
    assert!(!s.is_null());
    s
}

fn check_in(s: *mut esync_session, fx: &Fx, started: Instant) -> esync_session_step {
    let inv = serde_json::to_vec(&vec![fx.inventory.clone()]).unwrap();
    let mut step = esync_session_step::default();
    let mono = started.elapsed().as_millis() as u64;
    assert_eq!(
        unsafe {
            esync_session_check_in(
                s,
                fx.manifest.as_ptr(),
                fx.manifest.len(),
                inv.as_ptr(),
                inv.len(),
                mono,
                now_ms(),
                &mut step,
            )
        },
        R::ESYNC_RESULT_OK
    );
    step
}

unsafe extern "C" fn j_load(
    ud: *mut c_void,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
    found: *mut bool,
) -> esync_host_status {
    let j = unsafe { &*(ud as *const Option<Vec<u8>>) };
    match j {
        Some(b) if b.len() <= cap => unsafe {
            ptr::copy_nonoverlapping(b.as_ptr(), buf, b.len());
            len.write(b.len());
            found.write(true);
        },
        Some(_) => return esync_ffi::host::ESYNC_HOST_FAILED,
        None => unsafe { found.write(false) },
    }
    ESYNC_HOST_OK
}

unsafe extern "C" fn j_store(ud: *mut c_void, b: *const u8, n: usize) -> esync_host_status {
    let j = unsafe { &mut *(ud as *mut Option<Vec<u8>>) };
    *j = Some(unsafe { std::slice::from_raw_parts(b, n) }.to_vec());
    ESYNC_HOST_OK
}

/// The Client handle with the ECM Agent, its inventory answered by a
/// report the test signs as the Agent; then `package` started.
fn start_on_client(inventory: &InventoryReport, package: &[u8]) -> esync_client_step {
    let agent_key = SigningKey::from_bytes(&[5; 32]);
    let client_seed = [6u8; 32];
    let agent_pub = agent_key.verifying_key().to_bytes();
    let agent = esync_client_agent {
        device_path: ECM.as_ptr(),
        device_path_len: ECM.len(),
        key: agent_pub.as_ptr(),
        key_len: 32,
    };
    let config = esync_client_config {
        client_key: client_seed.as_ptr(),
        client_key_len: 32,
        envelope_sequence: 1,
        agents: &agent,
        agents_len: 1,
        answer_timeout_ms: 0,
        install_timeout_ms: 0,
        max_resends: 0,
        window: 0,
        precondition_wait_ms: 0,
    };
    let mut journal: Option<Vec<u8>> = None;
    let cbs = esync_client_callbacks {
        userdata: (&mut journal as *mut Option<Vec<u8>>).cast(),
        journal_load: Some(j_load),
        journal_store: Some(j_store),
        log: None,
    };
    let mut c = ptr::null_mut();
    let mut step = esync_client_step::default();
    let t0 = now_ms();
    assert_eq!(
        unsafe { esync_client_new(&config, &cbs, 1, t0, &mut c, &mut step) },
        R::ESYNC_RESULT_OK
    );
    assert_eq!(
        unsafe { esync_client_presence(c, ECM.as_ptr(), ECM.len(), true) },
        R::ESYNC_RESULT_OK
    );
    let nonce = [9u8; 16];
    let mut agent_signer = EnvelopeSigner::new(
        Participant::Device(DevicePath::new(ECM).unwrap()),
        agent_key,
        1,
        FrameLimits::default(),
    );
    let report = InventoryReport {
        nonce,
        ..inventory.clone()
    };
    let frame = agent_signer
        .seal(
            Recipient::Client,
            Id128([4; 16]),
            Payload::InventoryReport(report),
            t0,
        )
        .unwrap();
    assert_eq!(
        unsafe { esync_client_receive(c, frame.as_ptr(), frame.len(), 2, t0, &mut step) },
        R::ESYNC_RESULT_OK
    );
    assert_eq!(step.input, esync_ffi::agent::ESYNC_INPUT_HANDLED);
    let mut started = esync_client_step::default();
    let rc = unsafe { esync_client_start(c, package.as_ptr(), package.len(), 3, t0, &mut started) };
    let mut b = [0u8; 512];
    let mut n = 0;
    unsafe { esync_client_last_error(c, b.as_mut_ptr(), b.len(), &mut n) };
    assert_eq!(
        rc,
        R::ESYNC_RESULT_OK,
        "{}",
        String::from_utf8_lossy(&b[..n])
    );
    // Its first command goes to the ECM, signed by the Client.
    let (mut to, mut to_len, mut f, mut f_len) = (ptr::null(), 0usize, ptr::null(), 0usize);
    assert_eq!(
        unsafe { esync_client_next_frame(c, &mut to, &mut to_len, &mut f, &mut f_len) },
        R::ESYNC_RESULT_OK
    );
    assert_eq!(unsafe { text(to, to_len) }, ECM);
    let bytes = unsafe { std::slice::from_raw_parts(f, f_len) }.to_vec();
    let mut v = Verifier::new(
        ReceiverIdentity {
            me: Participant::Device(DevicePath::new(ECM).unwrap()),
            groups: vec![],
        },
        FrameLimits::default(),
    );
    let keys = BTreeMap::from([(
        Participant::Client,
        SigningKey::from_bytes(&client_seed).verifying_key(),
    )]);
    v.open(&bytes, &keys, t0).unwrap();
    unsafe { esync_client_free(c) };
    started
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_checks_in_verifies_downloads_and_hands_the_package_to_the_client() {
    let mut fx = fixture().await;
    let started = Instant::now();
    let s = new_session(&mut fx.stores);
    assert!(
        fx.stores.director.roles.contains_key("root"),
        "pinned root stored"
    );
    let first = check_in(s, &fx, started);
    assert_eq!(first.kind, ESYNC_SESSION_REQUEST);
    // A manifest answer passed in pieces is the host's misuse: refused,
    // the step untouched, the request still waiting.
    let mut step = esync_session_step {
        kind: 99,
        ..Default::default()
    };
    let half = b"{";
    assert_eq!(
        unsafe {
            esync_session_provide_answer(s, 200, half.as_ptr(), 1, false, 1, now_ms(), &mut step)
        },
        R::ESYNC_RESULT_INVALID_ARGUMENT
    );
    assert_eq!(step.kind, 99);
    let mut req: esync_session_request = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { esync_session_next_request(s, &mut req) },
        R::ESYNC_RESULT_OK
    );
    assert_eq!(req.kind, ESYNC_REQUEST_UPLOAD_MANIFEST);
    assert_eq!(
        unsafe { std::slice::from_raw_parts(req.body, req.body_len) },
        &fx.manifest[..]
    );
    let mut seen = Seen {
        cut_once: true,
        ..Seen::default()
    };
    let end = run(s, &fx.http, first, started, &|_, _| {}, &mut seen).await;
    assert!(
        matches!(end, End::Step(ESYNC_SESSION_READY)),
        "{end:?}: {}",
        last_error(s)
    );
    // Manifest upload first (never accepted before), then the check-in,
    // the metadata of both repositories, the blob.
    assert_eq!(seen.kinds[0], ESYNC_REQUEST_UPLOAD_MANIFEST);
    assert_eq!(seen.kinds[1], ESYNC_REQUEST_CHECK_IN);
    assert!(seen.kinds.contains(&ESYNC_REQUEST_DIRECTOR_FILE));
    assert!(seen.kinds.contains(&ESYNC_REQUEST_IMAGE_FILE));
    assert_eq!(seen.kinds.last(), Some(&ESYNC_REQUEST_BLOB));
    // The user was asked before the download (the component wants
    // consent) and consented.
    assert_eq!(
        seen.consents,
        vec![("Update ecm-2".to_string(), fx.v2.len() as u64)]
    );
    let consent_at = seen.kinds.iter().position(|k| *k == ESYNC_REQUEST_CONSENT);
    let blob_at = seen.kinds.iter().position(|k| *k == ESYNC_REQUEST_BLOB);
    assert!(consent_at < blob_at, "{:?}", seen.kinds);
    // The cut blob response was resumed where the session's bytes ended
    // (a Range request), not started again.
    assert_eq!(seen.ranges.first(), Some(&0));
    assert!(
        seen.ranges.len() >= 2 && seen.ranges[1] > 0,
        "{:?}",
        seen.ranges
    );
    let (mut acc, mut has) = ([0u8; 32], false);
    assert_eq!(
        unsafe { esync_session_accepted_manifest(s, acc.as_mut_ptr(), &mut has) },
        R::ESYNC_RESULT_OK
    );
    assert!(has);
    assert_eq!(acc, sha256(&fx.manifest).0);
    assert!(fx.stores.director.roles.contains_key("targets"));
    assert!(fx.stores.image.roles.contains_key("snapshot"));

    let (mut p, mut n) = (ptr::null(), 0usize);
    assert_eq!(
        unsafe { esync_session_outcome(s, &mut p, &mut n) },
        R::ESYNC_RESULT_OK
    );
    let json = unsafe { std::slice::from_raw_parts(p, n) }.to_vec();
    let ready: ::esync_client::core::plan::ReadyPackage = serde_json::from_slice(&json).unwrap();
    assert_eq!(ready.package.id().as_str(), "ecm-2");
    assert_eq!(ready.components.len(), 1);
    let c = &ready.components[0];
    assert!(
        matches!(c.encoding, ImageEncoding::Full),
        "{:?}",
        c.encoding
    );
    // The blob the host kept is the Server's 2.0.0 image, verified.
    let held = &seen.blobs[&c.blob.0];
    assert_eq!(held, &fx.v2);
    assert_eq!(sha256(held), c.artifact.sha256);
    assert!(!c.metadata.director.is_empty() && !c.metadata.image.is_empty());
    unsafe { esync_session_free(s) };

    let step = start_on_client(&fx.inventory, &json);
    assert!(step.frames >= 1);

    // A second vehicle session on fresh stores, the Director's targets
    // tampered with on the way: refused, nothing downloaded.
    let mut stores = Stores {
        director: Box::default(),
        image: Box::default(),
        director_root: fx.stores.director_root.clone(),
        image_root: fx.stores.image_root.clone(),
    };
    // The accepted hash persisted by the host: only the check-in is sent
    // (an upload again would be a replayed ECU nonce).
    let mut config = stores.config();
    config.accepted_manifest = acc.as_ptr();
    config.accepted_manifest_len = acc.len();
    let mut s = ptr::null_mut();
    assert_eq!(
        unsafe { esync_session_new(&config, &mut s) },
        R::ESYNC_RESULT_OK
    );
    let first = check_in(s, &fx, started);
    let tamper = |name: &str, b: &mut Vec<u8>| {
        if name.ends_with(".targets.json") {
            let text = String::from_utf8(b.clone()).unwrap();
            *b = text
                .replacen("\"length\": ", "\"length\": 1", 1)
                .into_bytes();
            assert_ne!(&text.as_bytes(), &b.as_slice(), "tampered");
        }
    };
    let mut seen = Seen::default();
    let end = run(s, &fx.http, first, started, &tamper, &mut seen).await;
    assert!(
        matches!(end, End::Failed(R::ESYNC_RESULT_VERIFICATION)),
        "{end:?}"
    );
    let why = last_error(s);
    assert!(why.starts_with("uptane:"), "{why}");
    assert_eq!(seen.kinds[0], ESYNC_REQUEST_CHECK_IN);
    assert!(!seen.kinds.contains(&ESYNC_REQUEST_UPLOAD_MANIFEST));
    assert!(!seen.kinds.contains(&ESYNC_REQUEST_BLOB));
    assert!(
        !stores.director.roles.contains_key("targets"),
        "nothing trusted"
    );
    // After the failure no request waits; outputs untouched.
    let mut req: esync_session_request = unsafe { std::mem::zeroed() };
    req.kind = 77;
    assert_eq!(
        unsafe { esync_session_next_request(s, &mut req) },
        R::ESYNC_RESULT_NO_FRAME
    );
    assert_eq!(req.kind, 77);
    // An answer with no request waiting: refused, the step untouched.
    let mut step = esync_session_step {
        kind: 99,
        ..Default::default()
    };
    assert_eq!(
        unsafe {
            esync_session_provide_answer(s, 200, ptr::null(), 0, true, 1, now_ms(), &mut step)
        },
        R::ESYNC_RESULT_SESSION
    );
    assert_eq!(step.kind, 99);
    assert!(last_error(s).contains("no request"), "{}", last_error(s));
    unsafe { esync_session_free(s) };

    // A third session whose user refuses: Denied with the reason, no blob.
    let mut stores = Stores {
        director: Box::default(),
        image: Box::default(),
        director_root: fx.stores.director_root.clone(),
        image_root: fx.stores.image_root.clone(),
    };
    let mut config = stores.config();
    config.accepted_manifest = acc.as_ptr();
    config.accepted_manifest_len = acc.len();
    let mut s = ptr::null_mut();
    assert_eq!(
        unsafe { esync_session_new(&config, &mut s) },
        R::ESYNC_RESULT_OK
    );
    let first = check_in(s, &fx, started);
    let mut seen = Seen {
        deny: Some("not now, driving"),
        ..Seen::default()
    };
    let end = run(s, &fx.http, first, started, &|_, _| {}, &mut seen).await;
    assert!(
        matches!(end, End::Step(ESYNC_SESSION_DENIED)),
        "{end:?}: {}",
        last_error(s)
    );
    assert_eq!(seen.consents.len(), 1);
    assert!(!seen.kinds.contains(&ESYNC_REQUEST_BLOB));
    let (mut p, mut n) = (ptr::null(), 0usize);
    assert_eq!(
        unsafe { esync_session_outcome(s, &mut p, &mut n) },
        R::ESYNC_RESULT_OK
    );
    assert_eq!(unsafe { text(p, n) }, "not now, driving");
    unsafe { esync_session_free(s) };
}

#[test]
fn session_handle_follows_the_conventions() {
    unsafe { esync_session_free(ptr::null_mut()) };
    let mut stores = Stores {
        director: Box::default(),
        image: Box::default(),
        director_root: Vec::new(),
        image_root: Vec::new(),
    };
    let sentinel = 0x5a5a as *mut esync_session;
    let mut s = sentinel;
    assert_eq!(
        unsafe { esync_session_new(ptr::null(), &mut s) },
        R::ESYNC_RESULT_NULL_ARGUMENT
    );
    // No root stored and none configured.
    let config = stores.config();
    assert_eq!(
        unsafe { esync_session_new(&config, &mut s) },
        R::ESYNC_RESULT_INVALID_CONFIG
    );
    // A missing trust callback.
    let mut config = stores.config();
    config.image.trust_store_time = None;
    assert_eq!(
        unsafe { esync_session_new(&config, &mut s) },
        R::ESYNC_RESULT_INVALID_CONFIG
    );
    // A bad VIN and a 31-byte accepted hash.
    let mut config = stores.config();
    config.vin_len = 3;
    assert_eq!(
        unsafe { esync_session_new(&config, &mut s) },
        R::ESYNC_RESULT_INVALID_ARGUMENT
    );
    let mut config = stores.config();
    let acc = [1u8; 31];
    config.accepted_manifest = acc.as_ptr();
    config.accepted_manifest_len = acc.len();
    assert_eq!(
        unsafe { esync_session_new(&config, &mut s) },
        R::ESYNC_RESULT_INVALID_ARGUMENT
    );
    assert_eq!(s, sentinel, "outputs untouched");
    // A root that is not a root: the trust store does not open.
    stores.director_root = b"{}".to_vec();
    stores.image_root = b"{}".to_vec();
    let config = stores.config();
    assert_eq!(
        unsafe { esync_session_new(&config, &mut s) },
        R::ESYNC_RESULT_TRUST_STORE
    );
    assert_eq!(s, sentinel, "outputs untouched");
    // NULL handles.
    let mut step = esync_session_step {
        kind: 99,
        ..Default::default()
    };
    assert_eq!(
        unsafe { esync_session_poll(ptr::null_mut(), 0, 0, &mut step) },
        R::ESYNC_RESULT_NULL_ARGUMENT
    );
    assert_eq!(step.kind, 99);
}
