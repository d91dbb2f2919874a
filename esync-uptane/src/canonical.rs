//! OLPC canonical JSON, as TUF and securesystemslib sign it.
//!
//! Rules: objects with keys sorted by their UTF-8 bytes, no insignificant
//! whitespace, integers only (floats are refused), strings written as their
//! raw UTF-8 bytes with only `"` and `\` escaped (by a backslash).

use serde_json::Value;

use crate::error::{Error, Result};

/// Writes `value` as canonical JSON.
pub fn to_canonical(value: &Value) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write(value, &mut out)?;
    Ok(out)
}

/// Serializes any `Serialize` value to canonical JSON.
pub fn to_canonical_of<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    let v = serde_json::to_value(value).map_err(|e| Error::Canonical(e.to_string()))?;
    to_canonical(&v)
}

fn write(value: &Value, out: &mut Vec<u8>) -> Result<()> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else {
                return Err(Error::Canonical(format!("float {n} is not allowed")));
            }
        }
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k, out);
                out.push(b':');
                write(v, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in s.as_bytes() {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: Value) -> String {
        String::from_utf8(to_canonical(&v).unwrap()).unwrap()
    }

    #[test]
    fn sorts_keys_and_strips_whitespace() {
        assert_eq!(
            canon(json!({"b": 1, "a": [true, null, "x"], "A": {"z": -3, "y": 0}})),
            r#"{"A":{"y":0,"z":-3},"a":[true,null,"x"],"b":1}"#
        );
    }

    #[test]
    fn escapes_only_quote_and_backslash() {
        assert_eq!(canon(json!("a\"b\\c\nd\té")), "\"a\\\"b\\\\c\nd\té\"");
    }

    #[test]
    fn keys_sorted_by_bytes_not_chars() {
        // 'é' (0xC3 0xA9) sorts after 'z' by bytes.
        assert_eq!(
            canon(json!({"é": 1, "z": 2, "Z": 3})),
            "{\"Z\":3,\"z\":2,\"é\":1}"
        );
    }

    #[test]
    fn refuses_floats() {
        assert!(to_canonical(&json!({"a": 1.5})).is_err());
    }

    #[test]
    fn large_integers() {
        assert_eq!(canon(json!(u64::MAX)), u64::MAX.to_string());
        assert_eq!(canon(json!(i64::MIN)), i64::MIN.to_string());
    }

    #[test]
    fn empty_containers() {
        assert_eq!(canon(json!({"a": {}, "b": []})), r#"{"a":{},"b":[]}"#);
    }
}
