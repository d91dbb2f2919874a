//! The served OpenAPI documents match the routes actually mounted: every
//! documented path and method answers (not the router's 404 or 405), every
//! other method on a documented path is 405, and paths next to documented
//! ones (a segment more, a parent) are not mounted.

mod admin_support;

use http::{Method, StatusCode};

use admin_support::{admin, fill};

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
];

/// Whether `path` matches the documented `template` (`{param}` is one segment).
fn matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}') && !p.is_empty()))
}

fn operations(doc: &serde_json::Value) -> Vec<(Method, String)> {
    let mut out = Vec::new();
    let paths = doc["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for m in METHODS {
            if item.get(m.as_str().to_ascii_lowercase()).is_some() {
                out.push((m, path.clone()));
            }
        }
    }
    out
}

/// The router's own "no such route" answer (an entity that is not found
/// answers 404 too, with another message). Both APIs answer it so.
fn unrouted(status: StatusCode, json: &serde_json::Value) -> bool {
    status == StatusCode::NOT_FOUND && json["message"] == "no such route"
}

async fn ask(
    router: &axum::Router,
    token: Option<&str>,
    m: Method,
    path: &str,
) -> (StatusCode, serde_json::Value) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut b = http::Request::builder().method(m).uri(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let resp = router
        .clone()
        .oneshot(b.body(axum::body::Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = resp.status();
    let raw = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null),
    )
}

/// Walks `doc` against `router`: every documented operation is mounted,
/// every other method on a documented path is 405, and neighbouring paths
/// (a segment more, an undocumented parent) are not mounted.
async fn walk(router: &axum::Router, token: Option<&str>, doc: &serde_json::Value) -> usize {
    let ops = operations(doc);
    let mut paths: Vec<String> = ops.iter().map(|(_, p)| p.clone()).collect();
    paths.dedup();
    for (m, path) in &ops {
        let (status, json) = ask(router, token, m.clone(), &fill(path)).await;
        assert!(
            !unrouted(status, &json),
            "{m} {path} is documented but not mounted"
        );
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{m} {path}");
    }
    let documented = |p: &str| paths.iter().any(|t| matches(t, p));
    for path in &paths {
        for m in METHODS {
            if ops.iter().any(|(om, op)| *om == m && op == path) {
                continue;
            }
            let (status, _) = ask(router, token, m.clone(), &fill(path)).await;
            assert_eq!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{m} {path} is mounted but not documented"
            );
        }
        let deeper = format!("{}/extra", fill(path));
        if !documented(&deeper) {
            for m in METHODS {
                let (status, json) = ask(router, token, m.clone(), &deeper).await;
                assert!(unrouted(status, &json), "{m} {deeper} answers {status}");
            }
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            if !documented(&fill(parent)) {
                for m in METHODS {
                    let (status, json) = ask(router, token, m.clone(), &fill(parent)).await;
                    assert!(unrouted(status, &json), "{m} {parent} answers {status}");
                }
            }
        }
    }
    ops.len()
}

#[tokio::test]
async fn admin_document_matches_the_mounted_routes() {
    let a = admin().await;
    let r = a
        .call(Method::GET, "/admin/v1/openapi.json", None, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json;
    assert_eq!(doc["openapi"].as_str().map(|s| &s[..2]), Some("3."));
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let n = walk(&a.router, Some(&a.operator), &doc).await;
    assert!(n >= 23, "{n} operations documented");
}

#[tokio::test]
async fn device_document_is_served_and_matches_the_device_router() {
    let a = admin().await;
    let r = a
        .call(Method::GET, "/admin/v1/device-openapi.json", None, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let expected = serde_json::to_value(esync_api::openapi()).expect("json");
    assert_eq!(r.json, expected);
    let st = &a.state;
    let device = esync_server::device::device_router(esync_server::device::DeviceState::new(
        st.store.clone(),
        st.blobs.clone(),
        st.director.clone(),
        st.images.clone(),
    ));
    let n = walk(&device, None, &r.json).await;
    assert_eq!(n, esync_api::Route::ALL.len());
}
