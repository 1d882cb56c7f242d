//! One provider update line (`{"key","version","op","fields"}`) parsed and
//! validated against its dataset in the catalog.

use basedata_store::catalog::Dataset;
use basedata_store::keys::{mask, SubjectKey};
use basedata_store::store::{Update, UpdateOp};
use basedata_store::Value;
use serde::Deserialize;
use std::borrow::Cow;

/// Why one line was rejected. `code` is one of the API's stable codes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    pub code: &'static str,
    pub message: String,
    /// The normalized key when it parsed, else the key as sent (if any).
    pub key: Option<String>,
}

impl LineError {
    fn new(code: &'static str, message: impl Into<String>, key: Option<String>) -> Self {
        LineError { code, message: message.into(), key }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine<'a> {
    #[serde(borrow)]
    key: Option<Cow<'a, str>>,
    version: Option<u64>,
    #[serde(borrow)]
    op: Option<Cow<'a, str>>,
    fields: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Parses one NDJSON line of an update body for `dataset`.
pub fn parse_line(dataset: &Dataset, line: &[u8]) -> Result<Update, LineError> {
    let raw: RawLine = serde_json::from_slice(line).map_err(|e| {
        LineError::new("invalid_body", format!("not a valid update object: {}", json_error_kind(&e)), None)
    })?;
    parse_raw(dataset, raw)
}

/// Parses an update given as an already-decoded JSON value (JSON-array bodies).
pub fn parse_value(dataset: &Dataset, v: &serde_json::Value) -> Result<Update, LineError> {
    let raw = RawLine::deserialize(v).map_err(|e| {
        LineError::new("invalid_body", format!("not a valid update object: {}", json_error_kind(&e)), None)
    })?;
    parse_raw(dataset, raw)
}

fn json_error_kind(e: &serde_json::Error) -> String {
    // serde_json messages may quote input; keep only the category and
    // position, plus unknown-member names which are structure, not data.
    let msg = e.to_string();
    if msg.starts_with("unknown field") {
        return msg.split(", expected").next().unwrap_or("unknown member").to_owned();
    }
    match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            format!("malformed JSON at column {}", e.column())
        }
        _ => "a member has the wrong type".to_owned(),
    }
}

fn parse_raw(dataset: &Dataset, raw: RawLine<'_>) -> Result<Update, LineError> {
    let key_text = raw.key.ok_or_else(|| LineError::new("invalid_body", "missing \"key\"", None))?;
    let key = SubjectKey::parse(dataset.subject, &key_text).map_err(|e| {
        LineError::new("invalid_key", format!("invalid key ({}): {e}", e.reason()), Some(key_text.to_string()))
    })?;
    let shown = Some(key.as_str().to_owned());
    let version = raw
        .version
        .ok_or_else(|| LineError::new("invalid_body", "missing \"version\" (an unsigned 64-bit integer)", shown.clone()))?;
    let op = match raw.op.as_deref() {
        Some("upsert") | None => {
            let fields = raw
                .fields
                .ok_or_else(|| LineError::new("invalid_body", "an upsert needs \"fields\"", shown.clone()))?;
            UpdateOp::Upsert(parse_fields(dataset, &fields).map_err(|(code, m)| LineError::new(code, m, shown.clone()))?)
        }
        Some("delete") => UpdateOp::Delete,
        Some(_) => return Err(LineError::new("invalid_body", "\"op\" must be \"upsert\" or \"delete\"", shown)),
    };
    tracing::trace!(key = %mask(key.as_str()), version, "parsed update");
    Ok(Update { dataset: dataset.id.clone(), key, version, op })
}

/// Validates the fields of an upsert; the result is in catalog order.
fn parse_fields(
    dataset: &Dataset,
    fields: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<(String, Value)>, (&'static str, String)> {
    for name in fields.keys() {
        if dataset.field(name).is_none() {
            return Err(("unknown_field", format!("dataset {} has no field {name}", dataset.id)));
        }
    }
    let mut out = Vec::with_capacity(fields.len());
    for f in &dataset.fields {
        let value = match fields.get(&f.name) {
            Some(json) => Value::from_json(f, json).map_err(|e| ("invalid_value", e.message))?,
            None => None,
        };
        match value {
            Some(v) => out.push((f.name.clone(), v)),
            None if f.required => {
                return Err(("invalid_value", format!("field {}: required", f.name)));
            }
            None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use basedata_store::Catalog;

    fn check(ds: &str, line: &str, expected: Result<(), &str>) {
        let cat = Catalog::builtin();
        let got = parse_line(cat.dataset(ds).unwrap(), line.as_bytes()).map(|_| ()).map_err(|e| e.code);
        assert_eq!(got, expected, "{line}");
    }

    const OK: &str = r#"{"key":"11010519491231002X","version":1,"op":"upsert","fields":{"name":"张三","gender":"2","birth_date":"1949-12-31","status":"normal"}}"#;

    #[test]
    fn line_table() {
        check("hukou", OK, Ok(()));
        check("hukou", r#"{"key":"11010519491231002x","version":2,"op":"delete"}"#, Ok(()));
        check("hukou", r#"{"key":"11010519491231002X","version":2}"#, Err("invalid_body"));
        check("hukou", r#"{"key":"11010519491231002X","op":"delete"}"#, Err("invalid_body"));
        check("hukou", r#"{"version":2,"op":"delete"}"#, Err("invalid_body"));
        check("hukou", r#"{"key":"11010519491231002X","version":-1,"op":"delete"}"#, Err("invalid_body"));
        check("hukou", r#"{"key":"11010519491231002X","version":1,"op":"merge","fields":{}}"#, Err("invalid_body"));
        check("hukou", r#"{"key":"11010519491231002X","version":1,"op":"delete","extra":1}"#, Err("invalid_body"));
        check("hukou", r#"{"key":"110105194912310021","version":1,"op":"delete"}"#, Err("invalid_key"));
        check("hukou", r#"{"key":"91350100M000100Y43","version":1,"op":"delete"}"#, Err("invalid_key"));
        check("market_registration", r#"{"key":"91350100M000100Y43","version":1,"op":"delete"}"#, Ok(()));
        check("hukou", r#"{"key":"11010519491231002X","version":1,"fields":{"name":"a","gender":"2","birth_date":"1949-12-31","status":"normal","nick":"x"}}"#, Err("unknown_field"));
        check("hukou", r#"{"key":"11010519491231002X","version":1,"fields":{"name":"a","gender":"9","birth_date":"1949-12-31","status":"normal"}}"#, Err("invalid_value"));
        check("hukou", r#"{"key":"11010519491231002X","version":1,"fields":{"gender":"2","birth_date":"1949-12-31","status":"normal"}}"#, Err("invalid_value"));
        check("hukou", "not json", Err("invalid_body"));
        check("hukou", "[1,2]", Err("invalid_body"));
    }

    #[test]
    fn messages_do_not_quote_values() {
        let cat = Catalog::builtin();
        let line = r#"{"key":"11010519491231002X","version":1,"fields":{"name":"a","gender":"2","birth_date":"SECRETVALUE","status":"normal"}}"#;
        let e = parse_line(cat.dataset("hukou").unwrap(), line.as_bytes()).unwrap_err();
        assert!(!e.message.contains("SECRETVALUE"), "{}", e.message);
        assert_eq!(e.key.as_deref(), Some("11010519491231002X"));
        let bad = parse_line(cat.dataset("hukou").unwrap(), br#"{"key":"11010519491231002X","version":"SECRETVALUE"}"#).unwrap_err();
        assert!(!bad.message.contains("SECRETVALUE"), "{}", bad.message);
    }

    #[test]
    fn fields_come_out_in_catalog_order_and_normalized() {
        let cat = Catalog::builtin();
        let line = r#"{"key":" 11010519491231002x ","version":1,"fields":{"status":"normal","birth_date":"1949-12-31","gender":2,"name":"张三"}}"#;
        let u = parse_line(cat.dataset("hukou").unwrap(), line.as_bytes()).unwrap();
        assert_eq!(u.key.as_str(), "11010519491231002X");
        let UpdateOp::Upsert(fields) = u.op else { panic!() };
        let names: Vec<_> = fields.iter().map(|(n, _)| n.as_str()).collect();
        let order: Vec<_> = cat.dataset("hukou").unwrap().fields.iter().map(|f| f.name.as_str()).filter(|n| names.contains(n)).collect();
        assert_eq!(names, order);
    }
}
