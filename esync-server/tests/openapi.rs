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
/// answers 404 too, with another message).
fn unrouted(a: &admin_support::Answer) -> bool {
    a.status == StatusCode::NOT_FOUND && a.json["message"] == "no such route"
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
    let ops = operations(&doc);
    assert!(ops.len() >= 19, "{} operations documented", ops.len());
    let mut paths: Vec<String> = ops.iter().map(|(_, p)| p.clone()).collect();
    paths.dedup();
    for (m, path) in &ops {
        let r = a.op(m.clone(), &fill(path), None).await;
        assert!(!unrouted(&r), "{m} {path} is documented but not mounted");
        assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{m} {path}");
    }
    for path in &paths {
        for m in METHODS {
            if ops.iter().any(|(om, op)| *om == m && op == path) {
                continue;
            }
            let r = a.op(m.clone(), &fill(path), None).await;
            assert_eq!(
                r.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{m} {path} is mounted but not documented"
            );
        }
        let deeper = format!("{}/extra", fill(path));
        let documented = |p: &str| paths.iter().any(|t| matches(t, p));
        if !documented(&deeper) {
            for m in METHODS {
                let r = a.op(m.clone(), &deeper, None).await;
                assert!(unrouted(&r), "{m} {deeper} answers {:?}", r.status);
            }
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            if !documented(&fill(parent)) {
                for m in METHODS {
                    let r = a.op(m.clone(), &fill(parent), None).await;
                    assert!(unrouted(&r), "{m} {parent} answers {:?}", r.status);
                }
            }
        }
    }
}

#[tokio::test]
async fn device_document_is_served_and_is_esync_api_s() {
    let a = admin().await;
    let r = a
        .call(Method::GET, "/admin/v1/device-openapi.json", None, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let expected = serde_json::to_value(esync_api::openapi()).expect("json");
    assert_eq!(r.json, expected);
    let ops = operations(&r.json);
    assert_eq!(ops.len(), esync_api::Route::ALL.len());
}
