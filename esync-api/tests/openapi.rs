//! The OpenAPI document and the route table agree, both ways.

use std::collections::BTreeSet;

use esync_api::{openapi, ErrorCode, Route};

fn document() -> serde_json::Value {
    serde_json::to_value(openapi()).expect("document serialises")
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

#[test]
fn every_route_is_in_the_document_and_every_operation_is_a_route() {
    let doc = document();
    let paths = doc["paths"].as_object().expect("paths");
    let mut in_doc = BTreeSet::new();
    for (path, item) in paths {
        for m in METHODS {
            if item.get(m).is_some() {
                in_doc.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    let in_table: BTreeSet<(String, String)> = Route::ALL
        .iter()
        .map(|r| (r.method().to_string(), r.template().to_owned()))
        .collect();
    assert_eq!(in_doc, in_table);
    assert_eq!(in_table.len(), Route::ALL.len());
}

#[test]
fn every_operation_lists_its_statuses_and_parameters() {
    let doc = document();
    for &r in Route::ALL {
        let op = &doc["paths"][r.template()][r.method().as_str().to_lowercase()];
        assert_eq!(op["operationId"], r.operation_id());
        let responses = op["responses"].as_object().expect("responses");
        let listed: BTreeSet<u16> = responses
            .keys()
            .map(|k| k.parse().expect("numeric status"))
            .collect();
        let mut expected: BTreeSet<u16> = r.success_statuses().iter().map(|s| s.as_u16()).collect();
        expected.extend(r.all_errors().map(|c: ErrorCode| c.status().as_u16()));
        assert_eq!(listed, expected, "{r:?}");
        let params: Vec<&str> = op["parameters"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        if let Some(p) = r.param() {
            assert!(params.contains(&p), "{r:?} lacks {p}");
        }
        assert_eq!(
            op.get("requestBody").is_some(),
            r.max_request_body() > 0,
            "{r:?}"
        );
    }
}

#[test]
fn every_schema_reference_resolves() {
    let doc = document();
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let mut refs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| walk(x, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected ref {r}"));
        assert!(schemas.contains_key(name), "dangling {r}");
    }
}

#[test]
fn no_request_schema_has_a_vin() {
    let doc = document();
    let text = doc["components"]["schemas"].to_string().to_lowercase();
    assert!(!text.contains("\"vin\""), "a schema names a VIN field");
}
