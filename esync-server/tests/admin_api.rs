//! The admin API: authentication and roles, streamed image uploads that
//! keep nothing unless complete and matching, packages refused with 4xx,
//! provisioning and revocation, assignment, tokens.

mod admin_support;
mod store_support;

use axum::body::Body;
use http::{Method, StatusCode};
use serde_json::json;
use utoipa::OpenApi as _;

use admin_support::{admin, fill, Admin, BLOB_CAP, JSON_CAP, VIN, VIN2};
use esync_server::admin::AdminDoc;

/// Every documented (method, path) with a body that would be accepted by an
/// operator where one is needed.
fn documented() -> Vec<(Method, String)> {
    let doc = AdminDoc::openapi();
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (m, op) in [
            (Method::GET, &item.get),
            (Method::POST, &item.post),
            (Method::PUT, &item.put),
            (Method::DELETE, &item.delete),
            (Method::PATCH, &item.patch),
        ] {
            if op.is_some() {
                out.push((m, path.clone()));
            }
        }
    }
    out
}

fn is_public(path: &str) -> bool {
    path.ends_with("openapi.json")
}

/// What the store holds that a change could touch, as a comparable summary.
async fn snapshot(a: &Admin) -> String {
    let s = a.state.store.as_ref();
    format!(
        "{:?} {:?} {:?} {:?}",
        s.vehicles(None, 1000).await.expect("vehicles"),
        s.ecus(VIN).await.expect("ecus"),
        s.assignments(VIN).await.expect("assignments"),
        a.blob_files(),
    )
}

#[tokio::test]
async fn a_viewer_is_refused_every_change_and_may_read() {
    let a = admin().await;
    // Something to read.
    let r = a
        .op(
            Method::POST,
            "/admin/v1/vehicles",
            Some(json!({"vin": VIN, "model": "m", "region": "eu"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    let before = snapshot(&a).await;
    let mut mutating = 0;
    for (m, path) in documented() {
        if is_public(&path) {
            continue;
        }
        let p = fill(&path);
        if m == Method::GET {
            let r = a.call(m.clone(), &p, Some(&a.viewer), None).await;
            assert_ne!(r.status, StatusCode::FORBIDDEN, "viewer may read {p}");
            assert_ne!(r.status, StatusCode::UNAUTHORIZED, "viewer may read {p}");
            continue;
        }
        mutating += 1;
        let body = Some(json!({"vin": VIN2, "model": "m", "region": "eu"}));
        let r = if path.ends_with("/images") {
            a.upload(
                &a.viewer,
                &format!(
                    "name=x&version=1.0.0&hardware_id=hw&sha256={}",
                    "00".repeat(32)
                ),
                Body::from(vec![1u8; 100]),
            )
            .await
        } else {
            a.call(m.clone(), &p, Some(&a.viewer), body).await
        };
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{m} {p}: {:?}", r.json);
        assert_eq!(r.code(), "forbidden");
    }
    assert!(
        mutating >= 10,
        "walked {mutating} mutating routes: the walk must cover the API"
    );
    assert_eq!(snapshot(&a).await, before, "a viewer changed nothing");
    // The viewer cannot mint itself an operator token either.
    let r = a
        .call(
            Method::POST,
            "/admin/v1/tokens",
            Some(&a.viewer),
            Some(json!({"name": "mine", "role": "operator"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn missing_bad_and_revoked_tokens_are_401() {
    let a = admin().await;
    for (m, path) in documented() {
        if is_public(&path) {
            continue;
        }
        let p = fill(&path);
        for token in [None, Some("esat_00"), Some("")] {
            let r = a.call(m.clone(), &p, token, None).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{m} {p} with {token:?}");
            assert_eq!(r.code(), "unauthorized");
        }
    }
    // Create, use, revoke, refused.
    let r = a
        .op(
            Method::POST,
            "/admin/v1/tokens",
            Some(json!({"name": "ci", "role": "viewer"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    let secret = r.json["token"].as_str().expect("token").to_owned();
    let ok = a
        .call(Method::GET, "/admin/v1/vehicles", Some(&secret), None)
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let r = a.op(Method::DELETE, "/admin/v1/tokens/ci", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = a.op(Method::DELETE, "/admin/v1/tokens/ci", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "revoked once");
    let r = a
        .call(Method::GET, "/admin/v1/vehicles", Some(&secret), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A duplicate name is a conflict.
    let r = a
        .op(
            Method::POST,
            "/admin/v1/tokens",
            Some(json!({"name": "op", "role": "viewer"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.json);
}

fn image(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn sha(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

#[tokio::test]
async fn uploads_keep_nothing_unless_complete_and_matching() {
    let a = admin().await;
    let op = a.operator.clone();
    let bytes = image(1, 100_000);
    let good = sha(&bytes);
    let q = |d: &str| format!("name=ecm&version=1.0.0&hardware_id=ecm-hw&sha256={d}");

    // Wrong hash.
    let r = a
        .upload(&op, &q(&"11".repeat(32)), Body::from(bytes.clone()))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.json);
    assert_eq!(r.code(), "rejected");
    assert_eq!(a.blob_files(), (0, 0), "nothing kept, no temporary file");

    // Truncated: the body stream fails half-way (a client that disconnects).
    let half = bytes[..50_000].to_vec();
    let stream = futures::stream::iter(vec![
        Ok::<_, std::io::Error>(bytes::Bytes::from(half)),
        Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        )),
    ]);
    let r = a.upload(&op, &q(&good), Body::from_stream(stream)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.json);
    assert_eq!(a.blob_files(), (0, 0));

    // A prefix with the right declared length but ending early.
    let r = a
        .upload(
            &op,
            &format!("{}&length={}", q(&good), bytes.len()),
            Body::from(bytes[..1000].to_vec()),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.json);
    assert_eq!(a.blob_files(), (0, 0));

    // Over the cap, streamed without a declared length.
    let big = image(2, BLOB_CAP as usize + 1);
    let r = a.upload(&op, &q(&sha(&big)), Body::from(big.clone())).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", r.json);
    assert_eq!(a.blob_files(), (0, 0));
    // Over the cap, declared: refused before reading.
    let r = a
        .upload(
            &op,
            &format!("{}&length={}", q(&sha(&big)), big.len()),
            Body::from(big),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);

    assert!(a
        .state
        .store
        .image_by_name("ecm", "1.0.0", "ecm-hw")
        .await
        .expect("db")
        .is_none());

    // The real one, twice (idempotent), then the same name with other bytes.
    let r = a.upload(&op, &q(&good), Body::from(bytes.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    assert_eq!(r.json["length"], 100_000);
    let r = a.upload(&op, &q(&good), Body::from(bytes.clone())).await;
    assert_eq!(r.status, StatusCode::OK);
    let other = image(3, 1000);
    let r = a.upload(&op, &q(&sha(&other)), Body::from(other)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.json);
    assert_eq!(a.blob_files(), (1, 0), "only the one good image is kept");
    // The same bytes under another name: a conflict that keeps the bytes
    // of the image already recorded.
    let r = a
        .upload(
            &op,
            &format!("name=other&version=1.0.0&hardware_id=ecm-hw&sha256={good}"),
            Body::from(bytes.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.json);
    assert_eq!(a.blob_files(), (1, 0));
    let d = esync_api::BlobId::parse_hex(&good)
        .expect("digest")
        .digest()
        .0;
    assert_eq!(a.state.blobs.read(&d).await.expect("bytes kept"), bytes);
    let r = a
        .op(Method::GET, &format!("/admin/v1/images/{good}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["name"], "ecm");
    assert!(a.state.metrics.upload_bytes() >= 200_000);

    // Malformed query values.
    for bad in [
        "name=ecm&version=1.0.0&hardware_id=ecm-hw&sha256=xyz",
        "name=ecm&version=1.0.0&sha256=00",
        "name=ecm&version=&hardware_id=ecm-hw&sha256=00",
    ] {
        let r = a.upload(&op, bad, Body::from(vec![0u8; 10])).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", r.json);
    }
}

fn component(device: &str, image: &str, deps: &[&str]) -> serde_json::Value {
    json!({"device": device, "image": image, "release_counter": 1, "depends_on": deps})
}

#[tokio::test]
async fn packages_with_a_cycle_or_a_bad_precondition_are_4xx_and_not_stored() {
    let a = admin().await;
    let ecm = a
        .upload_ok("ecm", "2.0.0", "ecm-hw", &image(5, 20_000))
        .await;
    let tcu = a
        .upload_ok("tcu", "3.0.0", "tcu-hw", &image(6, 20_000))
        .await;

    let cycle = json!({"id": "cyc", "components": [
        component("/powertrain/ecm", &ecm, &["/telematics/tcu"]),
        component("/telematics/tcu", &tcu, &["/powertrain/ecm"]),
    ]});
    let r = a.op(Method::POST, "/admin/v1/packages", Some(cycle)).await;
    assert!(r.status.is_client_error(), "{:?}", r.status);
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.json);
    assert!(
        r.json["message"].as_str().unwrap_or("").contains("cycle"),
        "{:?}",
        r.json
    );

    let mut c = component("/powertrain/ecm", &ecm, &[]);
    c["precondition"] = json!("Vehicle.Speed == ");
    let r = a
        .op(
            Method::POST,
            "/admin/v1/packages",
            Some(json!({"id": "badpre", "components": [c]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.json);
    assert!(r.json["message"]
        .as_str()
        .unwrap_or("")
        .contains("precondition"));

    let unknown =
        json!({"id": "unk", "components": [component("/powertrain/ecm", &"cd".repeat(32), &[])]});
    let r = a
        .op(Method::POST, "/admin/v1/packages", Some(unknown))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    let unknown_field = json!({"id": "uf", "surprise": 1, "components": []});
    let r = a
        .op(Method::POST, "/admin/v1/packages", Some(unknown_field))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.json);

    for id in ["cyc", "badpre", "unk", "uf"] {
        assert!(a.state.store.package(id).await.expect("db").is_none());
    }

    // A good one: dependencies, a stage, a precondition.
    let mut tcu_c = component("/telematics/tcu", &tcu, &["/powertrain/ecm"]);
    tcu_c["stage"] = json!(1);
    tcu_c["precondition"] = json!("Vehicle.Speed == 0");
    let ok = json!({"id": "pkg-1", "components": [component("/powertrain/ecm", &ecm, &[]), tcu_c]});
    let r = a
        .op(Method::POST, "/admin/v1/packages", Some(ok.clone()))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    let r = a.op(Method::POST, "/admin/v1/packages", Some(ok)).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = a.op(Method::GET, "/admin/v1/packages/pkg-1", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.raw.windows(14).any(|w| w == b"Vehicle.Speed "),
        "{:?}",
        r.json
    );
}

#[tokio::test]
async fn malformed_oversized_and_mistyped_json_are_4xx_and_store_nothing() {
    let a = admin().await;
    let before = snapshot(&a).await;
    let path = "/admin/v1/vehicles";
    let send = |body: Vec<u8>, ct: &'static str| {
        http::Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("authorization", format!("Bearer {}", a.operator))
            .header("content-type", ct)
            .body(Body::from(body))
            .expect("request")
    };
    let r = a
        .send(send(b"{\"vin\": ".to_vec(), "application/json"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "bad_request");
    let r = a
        .send(send(
            br#"{"vin": 17, "model": "m", "region": "r"}"#.to_vec(),
            "application/json",
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let mut big = br#"{"vin": "1HGCM82633A004352", "model": ""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', JSON_CAP));
    big.extend(br#"", "region": "r"}"#);
    let r = a.send(send(big, "application/json")).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", r.json);
    assert_eq!(r.code(), "body_too_large");
    let r = a
        .send(send(
            br#"{"vin": "1HGCM82633A004352", "model": "m", "region": "r"}"#.to_vec(),
            "text/plain",
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = a
        .op(
            Method::POST,
            path,
            Some(json!({"vin": "SHORT", "model": "m", "region": "r"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.json);
    assert_eq!(snapshot(&a).await, before);
    // Unknown route and wrong method answer the admin error body.
    let r = a.op(Method::GET, "/admin/v1/nothing", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "not_found");
    let r = a.op(Method::PUT, "/admin/v1/vehicles", None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.code(), "method_not_allowed");
}

#[tokio::test]
async fn vehicles_ecus_and_assignments() {
    vehicles_ecus_and_assignments_on(&admin().await).await;
}

#[tokio::test]
async fn vehicles_ecus_assignments_and_roles_on_postgres() {
    let Some((store, schema)) = store_support::postgres("admin").await else {
        return;
    };
    let a = admin_support::admin_on(store, tempfile::tempdir().expect("dir")).await;
    vehicles_ecus_and_assignments_on(&a).await;
    let r = a
        .call(
            Method::POST,
            "/admin/v1/vehicles",
            Some(&a.viewer),
            Some(json!({"vin": VIN, "model": "x", "region": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = a
        .call(Method::GET, "/admin/v1/vehicles", Some("esat_00"), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    schema.drop_schema().await;
}

async fn vehicles_ecus_and_assignments_on(a: &Admin) {
    for v in [VIN, VIN2] {
        let r = a
            .op(
                Method::POST,
                "/admin/v1/vehicles",
                Some(json!({"vin": v, "model": "m1", "region": "eu", "hardware_ids": ["ecm-hw"]})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    }
    let ecu = json!({"serial": "ECM-1", "hardware_id": "ecm-hw", "primary": true, "public_key": "ab".repeat(32)});
    let r = a
        .op(
            Method::POST,
            &format!("/admin/v1/vehicles/{VIN}/ecus"),
            Some(ecu),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    let r = a
        .op(
            Method::POST,
            "/admin/v1/vehicles/1HGCM82633A009999/ecus",
            Some(json!({"serial": "X-1", "hardware_id": "h", "public_key": "00"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.json);

    let ecm = a.upload_ok("ecm", "2.0.0", "ecm-hw", &image(7, 5000)).await;
    let r = a
        .op(
            Method::POST,
            "/admin/v1/packages",
            Some(json!({"id": "pkg-1", "components": [component("/powertrain/ecm", &ecm, &[])]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);

    // One unknown VIN in the list: nothing is assigned.
    let r = a
        .op(
            Method::POST,
            "/admin/v1/assignments",
            Some(json!({"package": "pkg-1", "vins": [VIN, "1HGCM82633A009999"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.json);
    assert!(a.state.store.assignments(VIN).await.expect("db").is_empty());

    let r = a
        .op(
            Method::POST,
            "/admin/v1/assignments",
            Some(json!({"package": "pkg-1", "vins": [VIN, VIN2, VIN]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    assert_eq!(r.json["assigned"].as_array().map(Vec::len), Some(2));
    assert_eq!(r.json["assigned"][0]["new"], true);
    let r = a
        .op(
            Method::POST,
            "/admin/v1/assignments",
            Some(json!({"package": "pkg-1", "vins": [VIN]})),
        )
        .await;
    assert_eq!(r.json["assigned"][0]["new"], false);

    let r = a
        .call(
            Method::GET,
            &format!("/admin/v1/vehicles/{VIN}"),
            Some(&a.viewer),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["assignments"], json!(["pkg-1"]));
    assert_eq!(r.json["ecus"][0]["serial"], "ECM-1");
    let r = a
        .call(
            Method::GET,
            "/admin/v1/vehicles?limit=1",
            Some(&a.viewer),
            None,
        )
        .await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(1));

    let r = a
        .op(
            Method::DELETE,
            &format!("/admin/v1/assignments/pkg-1/{VIN2}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(a
        .state
        .store
        .assignments(VIN2)
        .await
        .expect("db")
        .is_empty());
}

#[tokio::test]
async fn csr_is_signed_and_revocation_lands_in_the_crl() {
    let a = admin().await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let path = format!("/admin/v1/vehicles/{VIN}/certificates");
    let r = a
        .op(Method::POST, &path, Some(json!({"csr_pem": csr})))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "unregistered vehicle");
    a.op(
        Method::POST,
        "/admin/v1/vehicles",
        Some(json!({"vin": VIN, "model": "m", "region": "eu"})),
    )
    .await;
    let r = a
        .op(Method::POST, &path, Some(json!({"csr_pem": "garbage"})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = a
        .op(Method::POST, &path, Some(json!({"csr_pem": csr})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    assert_eq!(r.json["subject"], format!("esync://vehicle/{VIN}"));
    let serial = r.json["serial"].as_str().expect("serial").to_owned();
    let cert_pem = r.json["cert_pem"].as_str().expect("pem");
    let der = pem::parse(cert_pem).expect("pem").into_contents();
    let id = esync_identity::parse_identity(&der).expect("identity");
    assert_eq!(id.verifying_key.as_bytes().as_slice(), key.public_key_raw());

    let r = a
        .op(
            Method::POST,
            &path,
            Some(json!({"csr_pem": csr, "device": "/powertrain/ecm"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    assert_eq!(
        r.json["subject"],
        format!("esync://vehicle/{VIN}/device/powertrain/ecm")
    );

    let r = a
        .op(
            Method::POST,
            &format!("/admin/v1/certificates/{serial}/revoke"),
            Some(json!({"reason": "stolen"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    assert!(r.json["revoked_ms"].is_i64());
    assert_eq!(r.json["revocation_reason"], "stolen");
    let crl = a.state.refresh_crl().await.expect("crl");
    let (_, parsed) = x509_parser::parse_x509_crl(&crl).expect("crl parses");
    let serials: Vec<String> = parsed
        .iter_revoked_certificates()
        .map(|c| hex::encode(c.raw_serial()))
        .collect();
    assert_eq!(serials, vec![serial]);
    let r = a
        .op(
            Method::POST,
            &format!("/admin/v1/certificates/{}/revoke", "77".repeat(8)),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn delta_jobs_are_requested_once_and_reported() {
    let a = admin().await;
    let old = a
        .upload_ok("ecm", "1.0.0", "ecm-hw", &image(8, 30_000))
        .await;
    let mut nb = image(8, 30_000);
    nb[100..200].fill(9);
    let new = a.upload_ok("ecm", "1.1.0", "ecm-hw", &nb).await;
    let body = json!({"from": old, "to": new});
    let r = a
        .op(Method::POST, "/admin/v1/deltas", Some(body.clone()))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.json);
    assert_eq!(r.json["state"], "queued");
    let r = a.op(Method::POST, "/admin/v1/deltas", Some(body)).await;
    assert_eq!(r.status, StatusCode::OK);
    let worker = esync_server::deltas::DeltaWorker::new(
        a.state.store.clone(),
        a.state.blobs.clone(),
        "w1",
        60_000,
    );
    let outcomes = worker.drain(|| 1).await.expect("drain");
    assert_eq!(outcomes.len(), 1);
    let r = a
        .call(
            Method::GET,
            &format!("/admin/v1/deltas?from={old}&to={new}"),
            Some(&a.viewer),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json.as_array().map(Vec::len), Some(1), "{:?}", r.json);
    assert_eq!(r.json[0]["state"], "done");
    assert!(r.json[0]["patch_length"].as_u64().unwrap_or(0) > 0);
    let r = a
        .op(
            Method::POST,
            "/admin/v1/deltas",
            Some(json!({"from": old, "to": "ee".repeat(32)})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn offline_signed_image_metadata_is_verified_and_director_keys_rotate() {
    use esync_server::repo::offline;
    use esync_uptane::crypto::PrivateKey;
    use esync_uptane::UnixTime;

    let a = admin().await;
    let upload = |body: Vec<u8>| {
        http::Request::builder()
            .method(Method::POST)
            .uri("/admin/v1/image-repo/metadata")
            .header("authorization", format!("Bearer {}", a.operator))
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("request")
    };
    let r = a.send(upload(b"{\"signed\": {}}".to_vec())).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.json);
    assert!(a
        .state
        .images
        .file("1.root.json")
        .await
        .expect("db")
        .is_none());

    let keys: Vec<PrivateKey> = (0..4).map(|_| PrivateKey::generate()).collect();
    let mut roles = offline::RoleSpec::new();
    for (k, role) in keys
        .iter()
        .zip(["root", "targets", "snapshot", "timestamp"])
    {
        roles.insert(role.to_owned(), (vec![k.public_key()], 1));
    }
    let expires = UnixTime(admin_support::now_s() + 86_400);
    let root_v1 = offline::initial_root(&roles, expires, &[keys[0].clone()]).expect("root");
    // Altered after signing: the signature no longer verifies.
    let mut tampered = root_v1.clone();
    let at = tampered
        .windows(9)
        .position(|w| w == b"\"version\"")
        .expect("version field");
    tampered[at + 10] = b'7';
    let r = a.send(upload(tampered)).await;
    assert!(r.status.is_client_error(), "{:?} {:?}", r.status, r.json);
    assert!(a
        .state
        .images
        .file("1.root.json")
        .await
        .expect("db")
        .is_none());
    let r = a.send(upload(root_v1)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    assert_eq!(r.json["role"], "root");
    assert_eq!(r.json["version"], 1);
    assert!(a
        .state
        .images
        .file("1.root.json")
        .await
        .expect("db")
        .is_some());

    // Oversized metadata is refused before it is parsed.
    let big = vec![b' '; esync_server::admin::DEFAULT_MAX_METADATA_BODY + 1];
    let r = a.send(upload(big)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", r.json);

    let r = a
        .op(Method::POST, "/admin/v1/image-repo/online-keys", None)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    assert!(r.json["timestamp"]["keyval"].is_object(), "{:?}", r.json);

    let r = a.op(Method::GET, "/admin/v1/director/root", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["version"], 1);
    for (role, version) in [("timestamp", 2), ("root", 3)] {
        let r = a
            .op(
                Method::POST,
                &format!("/admin/v1/director/keys/{role}/rotate"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
        assert_eq!(r.json["root_version"], version);
    }
    let r = a
        .op(Method::POST, "/admin/v1/director/keys/nobody/rotate", None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = a.op(Method::GET, "/admin/v1/director/root", None).await;
    assert_eq!(r.json["version"], 3);
}
