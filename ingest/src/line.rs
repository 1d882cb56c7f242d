//! One provider update line (`{"key","version","op","fields"}`) parsed and
//! validated against its dataset in the catalog.

use basedata_store::catalog::{Dataset, Division, Provider};
use basedata_store::keys::{mask, DocType, SubjectKey};
use basedata_store::store::{Update, UpdateOp};
use basedata_store::value::JsonScalar;
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
    /// The document type of `key` (default: the subject's own, citizen ID
    /// number or credit code).
    #[serde(borrow)]
    id_type: Option<Cow<'a, str>>,
    /// The business-licence registration number of the entity that the
    /// credit code `key` was assigned to: links the two (see
    /// `basedata_store::link`).
    #[serde(borrow)]
    registration_number: Option<Cow<'a, str>>,
    version: Option<u64>,
    #[serde(borrow)]
    op: Option<Cow<'a, str>>,
    #[serde(borrow)]
    fields: Option<RawFields<'a>>,
}

/// The members of `"fields"` in the order sent, values untyped until they
/// meet their catalog fields; strings borrow from the line.
struct RawFields<'a>(Vec<(Cow<'a, str>, JsonScalar<'a>)>);

impl<'de: 'a, 'a> Deserialize<'de> for RawFields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(transparent)]
        struct Name<'a>(#[serde(borrow)] Cow<'a, str>);
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawFields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of fields")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<RawFields<'de>, A::Error> {
                let mut out = Vec::with_capacity(a.size_hint().unwrap_or(8).min(64));
                while let Some((Name(n), v)) = a.next_entry::<Name<'de>, JsonScalar<'de>>()? {
                    out.push((n, v));
                }
                Ok(RawFields(out))
            }
        }
        // Covariant: fields borrowed for the input's lifetime serve for any shorter one.
        Ok(d.deserialize_map(V)?)
    }
}

/// Parses one NDJSON line of an update body for `dataset`.
pub fn parse_line(dataset: &Dataset, line: &[u8]) -> Result<Update, LineError> {
    let raw: RawLine = serde_json::from_slice(line).map_err(|e| {
        // Off the hot path: the line is read again, untyped, to name the
        // member at fault.
        let untyped = serde_json::from_slice::<serde_json::Value>(line).ok();
        LineError::new("invalid_body", format!("not a valid update object: {}", json_error_kind(&e, untyped.as_ref())), None)
    })?;
    parse_raw(dataset, raw)
}

/// Parses an update given as an already-decoded JSON value (JSON-array bodies).
pub fn parse_value(dataset: &Dataset, v: &serde_json::Value) -> Result<Update, LineError> {
    let raw = RawLine::deserialize(v).map_err(|e| {
        LineError::new("invalid_body", format!("not a valid update object: {}", json_error_kind(&e, Some(v))), None)
    })?;
    parse_raw(dataset, raw)
}

/// Writes the update line that [`parse_line`] reads back as `u`: keys
/// normalized, fields in catalog order and canonical form. Cluster mode
/// puts these lines on its replicated log, so every node applies an update
/// through the same validation as the node that took it.
pub fn write_line(u: &Update, out: &mut Vec<u8>) {
    // Writing JSON strings into a Vec cannot fail.
    let text = |out: &mut Vec<u8>, s: &str| serde_json::to_writer(&mut *out, s).expect("JSON into a Vec");
    out.extend_from_slice(b"{\"key\":");
    text(out, u.key.as_str());
    if let Some(doc) = u.key.other_doc_type() {
        out.extend_from_slice(b",\"id_type\":");
        text(out, doc.as_str());
    }
    if let Some(licence) = &u.link {
        out.extend_from_slice(b",\"registration_number\":");
        text(out, licence.as_str());
    }
    out.extend_from_slice(b",\"version\":");
    out.extend_from_slice(u.version.to_string().as_bytes());
    match &u.op {
        UpdateOp::Delete => out.extend_from_slice(b",\"op\":\"delete\"}"),
        UpdateOp::Upsert(fields) => {
            out.extend_from_slice(b",\"op\":\"upsert\",\"fields\":{");
            for (i, (name, v)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                text(out, name);
                out.push(b':');
                serde_json::to_writer(&mut *out, &v.to_json()).expect("JSON into a Vec");
            }
            out.extend_from_slice(b"}}");
        }
    }
}

fn json_error_kind(e: &serde_json::Error, untyped: Option<&serde_json::Value>) -> String {
    // serde_json messages may quote input; keep only the category and
    // position, plus member names, which are structure, not data.
    let msg = e.to_string();
    if msg.starts_with("unknown field") {
        return msg.split(", expected").next().unwrap_or("unknown member").to_owned();
    }
    if let Some(rest) = msg.strip_prefix("duplicate field `") {
        return format!("member \"{}\" appears twice", rest.split('`').next().unwrap_or_default());
    }
    match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            format!("malformed JSON at column {}", e.column())
        }
        _ => untyped.and_then(wrong_member).unwrap_or_else(|| "a member has the wrong type".to_owned()),
    }
}

/// The member of an update line (as untyped JSON) that does not have its
/// type, said with the type it needs; no value is quoted.
fn wrong_member(line: &serde_json::Value) -> Option<String> {
    let Some(members) = line.as_object() else {
        return Some("a line is one JSON object (an update), not an array, string or number".into());
    };
    const STRING: &str = "a string";
    let expected = [
        ("key", STRING),
        ("id_type", STRING),
        ("registration_number", STRING),
        ("version", "an unsigned 64-bit integer"),
        ("op", STRING),
        ("fields", "an object of fields"),
    ];
    expected.iter().find_map(|&(name, what)| {
        let v = members.get(name)?;
        let fits = match name {
            "version" => v.is_u64(),
            "fields" => v.is_object(),
            _ => v.is_string(),
        };
        (!fits).then(|| format!("member \"{name}\" must be {what}"))
    })
}

/// Client text quoted back in a rejection, cut to a few dozen characters:
/// a line's bad key or field name may be as long as the body.
fn echo(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

fn parse_raw(dataset: &Dataset, raw: RawLine<'_>) -> Result<Update, LineError> {
    let key_text = raw.key.ok_or_else(|| LineError::new("invalid_body", "missing \"key\"", None))?;
    let doc = match raw.id_type.as_deref() {
        None => dataset.subject.doc_type(),
        Some(name) => DocType::for_subject(dataset.subject, name).ok_or_else(|| {
            LineError::new(
                "invalid_value",
                format!("\"id_type\" of a {} is one of {}", dataset.subject, DocType::names(dataset.subject).join(", ")),
                Some(echo(&key_text)),
            )
        })?,
    };
    let key = SubjectKey::parse_doc(doc, &key_text).map_err(|e| {
        LineError::new("invalid_key", format!("invalid key ({}): {e}", e.reason()), Some(echo(&key_text)))
    })?;
    let shown = Some(key.as_str().to_owned());
    let link = match raw.registration_number.as_deref() {
        None => None,
        Some(_) if key.doc_type() != DocType::UnifiedCreditCode => {
            let msg = "\"registration_number\" links a credit code to the registration number it replaces: \
                       it needs an entity key that is a credit code";
            return Err(LineError::new("invalid_value", msg, shown));
        }
        Some(number) => Some(SubjectKey::parse_doc(DocType::BusinessLicence, number).map_err(|e| {
            LineError::new("invalid_key", format!("invalid registration_number ({}): {e}", e.reason()), shown.clone())
        })?),
    };
    let version = raw
        .version
        .ok_or_else(|| LineError::new("invalid_body", "missing \"version\" (an unsigned 64-bit integer)", shown.clone()))?;
    let op = match raw.op.as_deref() {
        Some("upsert") | None => {
            let fields = raw
                .fields
                .ok_or_else(|| LineError::new("invalid_body", "an upsert needs \"fields\"", shown.clone()))?;
            let fields = parse_fields(dataset, &fields).map_err(|(code, m)| LineError::new(code, m, shown.clone()))?;
            agrees_with_key(&key, &fields).map_err(|m| LineError::new("invalid_value", m, shown.clone()))?;
            UpdateOp::Upsert(fields)
        }
        Some("delete") => UpdateOp::Delete,
        Some(_) => return Err(LineError::new("invalid_body", "\"op\" must be \"upsert\" or \"delete\"", shown)),
    };
    tracing::trace!(key = %mask(key.as_str()), version, "parsed update");
    Ok(Update { link, dataset: dataset.id.clone(), key, version, op, provider: None })
}

/// Refuses a person's `birth_date` or `gender` that contradicts the
/// citizen ID number the record is keyed by, which encodes both (GB
/// 11643-1999: the birth date, and the sex in the sequence number's
/// parity). Such a line is a data error at its source — the wrong person's
/// number, or a mistyped value — and base data shared with every counter
/// must not hold it (the measures ask providers to check what they supply,
/// State Council No. 51 Art. 5). Other documents encode neither.
/// (The messages, like every other, quote no value.)
fn agrees_with_key(key: &SubjectKey, fields: &[(String, Value)]) -> Result<(), &'static str> {
    let SubjectKey::Person(person) = key else { return Ok(()) };
    for (name, value) in fields {
        match (name.as_str(), value) {
            ("birth_date", Value::Date(d)) if *d != person.birth_date() => {
                return Err("field birth_date: not the birth date the ID number encodes");
            }
            ("gender", Value::Code(c)) if matches!(c.as_str(), "1" | "2") && c != person.gender().code() => {
                return Err("field gender: not the sex the ID number encodes (its 17th digit: odd male, even female)");
            }
            _ => {}
        }
    }
    Ok(())
}

/// Gives a parsed update of a dataset of several providers to `by`, its
/// writer, refusing it as `forbidden` at once when it is outside `by`'s
/// part whatever the stored record holds (a field of another part, a new
/// area no provider holds); the writer judges the rest against the record
/// ([`basedata_store::providers`]). A dataset of one provider passes as
/// it is.
pub fn for_provider(dataset: &Dataset, by: Option<&Provider>, mut u: Update) -> Result<Update, LineError> {
    let (Some(division), Some(by)) = (&dataset.division, by) else { return Ok(u) };
    let refused = |m: String| LineError::new(basedata_store::providers::REFUSED, m, Some(u.key.as_str().to_owned()));
    division.precheck(&dataset.providers, by, &u.key, u.op.change()).map_err(|r| refused(r.0))?;
    if let (Division::Fields, UpdateOp::Upsert(fields)) = (division, &u.op) {
        let missing = dataset.fields.iter().find(|f| f.required && by.fields.contains(&f.name) && !fields.iter().any(|(n, _)| *n == f.name));
        if let Some(f) = missing {
            return Err(LineError::new("invalid_value", format!("field {}: required", f.name), Some(u.key.as_str().to_owned())));
        }
    }
    u.provider = Some(by.id.clone());
    Ok(u)
}

/// Validates the fields of an upsert; the result is in catalog order. A
/// name sent twice counts once, with its last value (as a JSON object
/// read into a map would have it), and of several unknown names the
/// first in byte order is reported.
fn parse_fields(dataset: &Dataset, fields: &RawFields<'_>) -> Result<Vec<(String, Value)>, (&'static str, String)> {
    let unknown = fields.0.iter().map(|(n, _)| n).filter(|n| dataset.field(n).is_none()).min();
    if let Some(name) = unknown {
        return Err(("unknown_field", format!("dataset {} has no field {}", dataset.id, echo(name))));
    }
    let mut out = Vec::with_capacity(fields.0.len());
    for f in &dataset.fields {
        let value = match fields.0.iter().rev().find(|(n, _)| *n == f.name) {
            Some((_, json)) => Value::from_scalar(f, json).map_err(|e| ("invalid_value", e.message))?,
            None => None,
        };
        match value {
            Some(v) => out.push((f.name.clone(), v)),
            // A dataset divided by fields requires a field of its
            // provider only ([`for_provider`]).
            None if f.required && dataset.division != Some(Division::Fields) => {
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
        // Other documents by "id_type"; one of another subject or unknown is refused.
        check("hukou", r#"{"key":"E12345678","id_type":"passport","version":1,"op":"delete"}"#, Ok(()));
        check("hukou", r#"{"key":"E1234-678","id_type":"passport","version":1,"op":"delete"}"#, Err("invalid_key"));
        check("hukou", r#"{"key":"11010519491231002X","id_type":"citizen_id","version":1,"op":"delete"}"#, Ok(()));
        check("hukou", r#"{"key":"E12345678","id_type":"business_licence","version":1,"op":"delete"}"#, Err("invalid_value"));
        check("hukou", r#"{"key":"E12345678","id_type":"Passport","version":1,"op":"delete"}"#, Err("invalid_value"));
        check("market_registration", r#"{"key":"440300100001233","id_type":"business_licence","version":1,"op":"delete"}"#, Err("invalid_key"));
        // A link names a valid registration number beside a credit code.
        check("market_registration", r#"{"key":"91350100M000100Y43","registration_number":"440300100001233","version":1,"op":"delete"}"#, Err("invalid_key"));
        check("hukou", r#"{"key":"11010519491231002X","registration_number":"440300100001233","version":1,"op":"delete"}"#, Err("invalid_value"));
    }

    #[test]
    fn id_type_keys_the_document() {
        let cat = Catalog::builtin();
        let licence = basedata_store::keys::DocKey::complete(DocType::BusinessLicence, "44030010000123").unwrap();
        let line = format!(r#"{{"key":"{licence}","id_type":"business_licence","version":1,"op":"delete"}}"#);
        let u = parse_line(cat.dataset("market_registration").unwrap(), line.as_bytes()).unwrap();
        assert_eq!((u.key.doc_type(), u.key.as_str()), (DocType::BusinessLicence, licence.as_str()));
        let linked = format!(r#"{{"key":"91350100M000100Y43","registration_number":" {licence} ","version":1,"op":"delete"}}"#);
        let u = parse_line(cat.dataset("market_registration").unwrap(), linked.as_bytes()).unwrap();
        assert_eq!(u.link, Some(SubjectKey::Document(licence)));
        let mut out = Vec::new();
        write_line(&u, &mut out);
        assert_eq!(parse_line(cat.dataset("market_registration").unwrap(), &out).unwrap(), u);
        let by_licence = format!(r#"{{"key":"{licence}","id_type":"business_licence","registration_number":"{licence}","version":1,"op":"delete"}}"#);
        let e = parse_line(cat.dataset("market_registration").unwrap(), by_licence.as_bytes()).unwrap_err();
        assert_eq!(e.code, "invalid_value");
        let u = parse_line(cat.dataset("hukou").unwrap(), br#"{"key":" h12345678 ","id_type":"hk_macao_taiwan_permit","version":1,"op":"delete"}"#).unwrap();
        assert_eq!((u.key.doc_type(), u.key.as_str()), (DocType::HkMacaoTaiwanPermit, "H12345678"));
    }

    #[test]
    fn written_lines_read_back_as_the_same_update() {
        let cat = Catalog::builtin();
        let lines = [
            ("hukou", OK),
            ("hukou", r#"{"key":"11010519491231002x","version":18446744073709551615,"op":"delete"}"#),
            ("hukou", r#"{"key":"g12345678","id_type":"passport","version":2,"op":"delete"}"#),
            ("hukou", r#"{"key":"USA310085012340","id_type":"foreign_permanent_residence","version":2,"op":"delete"}"#),
            ("hukou", r#"{"key":"11010519491231002X","version":3,"fields":{"name":"\"引号\"\n\\","gender":2,"birth_date":"1949-12-31","status":"cancelled","cancel_date":"2020-02-29","cancel_reason":"deceased","photo":"aGVsbG8="}}"#),
            ("market_registration", r#"{"key":"91350100M000100Y43","version":7,"fields":{"name":"某某有限公司","legal_representative":"张三","legal_representative_id":"11010519491231002x","type":"limited_liability","address":"福州市","registered_capital":"0100.50","established_on":"2001-01-01","status":"active"}}"#),
        ];
        for (ds, line) in lines {
            let d = cat.dataset(ds).unwrap();
            let u = match parse_line(d, line.as_bytes()) {
                Ok(u) => u,
                Err(e) => panic!("{line}: {e:?}"),
            };
            let mut out = Vec::new();
            write_line(&u, &mut out);
            assert_eq!(parse_line(d, &out).unwrap(), u, "{}", String::from_utf8_lossy(&out));
        }
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
    fn a_member_of_the_wrong_type_is_named_and_its_value_not_quoted() {
        let cat = Catalog::builtin();
        let ds = cat.dataset("hukou").unwrap();
        let message = |line: &str| parse_line(ds, line.as_bytes()).unwrap_err().message;
        let k = r#""key":"11010519491231002X""#;
        for (line, said) in [
            (format!(r#"{{{k},"version":-1,"fields":{{}}}}"#), r#"member "version" must be an unsigned 64-bit integer"#),
            (format!(r#"{{{k},"version":1.5,"fields":{{}}}}"#), r#"member "version" must be an unsigned 64-bit integer"#),
            (format!(r#"{{{k},"version":"30","fields":{{}}}}"#), r#"member "version" must be an unsigned 64-bit integer"#),
            (format!(r#"{{{k},"version":1,"fields":["SECRETVALUE"]}}"#), r#"member "fields" must be an object of fields"#),
            (r#"{"key":440305,"version":1}"#.to_owned(), r#"member "key" must be a string"#),
            (format!(r#"{{{k},"version":1,"op":true}}"#), r#"member "op" must be a string"#),
            (format!(r#"{{{k},{k},"version":1}}"#), r#"member "key" appears twice"#),
            (r#"["SECRETVALUE"]"#.to_owned(), "a line is one JSON object"),
        ] {
            let m = message(&line);
            assert!(m.starts_with("not a valid update object: ") && m.contains(said), "{line}: {m}");
            assert!(!m.contains("SECRETVALUE") && !m.contains("30\""), "{m}");
        }
        // A JSON array body's element is told the same way.
        let v: serde_json::Value = serde_json::from_str(&format!(r#"{{{k},"version":"1"}}"#)).unwrap();
        assert!(parse_value(ds, &v).unwrap_err().message.contains(r#"member "version" must be"#));
    }

    #[test]
    fn a_birth_date_or_sex_the_id_number_contradicts_is_refused() {
        let cat = Catalog::builtin();
        let line = |gender: &str, born: &str| {
            format!(r#"{{"key":"11010519491231002X","version":1,"fields":{{"name":"a","gender":"{gender}","birth_date":"{born}","status":"normal"}}}}"#)
        };
        for ds in ["hukou"] {
            let ds = cat.dataset(ds).unwrap();
            assert!(parse_line(ds, line("2", "1949-12-31").as_bytes()).is_ok(), "{}", ds.id);
            let e = parse_line(ds, line("2", "1949-12-30").as_bytes()).unwrap_err();
            assert_eq!((e.code, e.message.as_str()), ("invalid_value", "field birth_date: not the birth date the ID number encodes"));
            assert!(!e.message.contains("1949"), "{}", e.message);
            let e = parse_line(ds, line("1", "1949-12-31").as_bytes()).unwrap_err();
            assert_eq!(e.code, "invalid_value");
            assert!(e.message.starts_with("field gender: not the sex the ID number encodes"), "{}", e.message);
        }
        // A foreign document encodes neither.
        let passport = r#"{"key":"E12345678","id_type":"passport","version":1,"fields":{"name":"a","gender":"1","birth_date":"1990-05-05","status":"normal"}}"#;
        assert!(parse_line(cat.dataset("hukou").unwrap(), passport.as_bytes()).is_ok());
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

    /// The field validation as first written, over a `serde_json::Map`
    /// (members in name order, a repeated name keeping its last value).
    fn fields_through_a_map(ds: &Dataset, line: &str) -> Result<Vec<(String, Value)>, String> {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let map = v["fields"].as_object().unwrap();
        if let Some(name) = map.keys().find(|n| ds.field(n).is_none()) {
            return Err(format!("unknown_field: dataset {} has no field {name}", ds.id));
        }
        let mut out = Vec::new();
        for f in &ds.fields {
            match map.get(&f.name).map(|j| Value::from_json(f, j)) {
                Some(Err(e)) => return Err(format!("invalid_value: {}", e.message)),
                Some(Ok(Some(v))) => out.push((f.name.clone(), v)),
                _ if f.required => return Err(format!("invalid_value: field {}: required", f.name)),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Reading fields straight from the line gives what the map gave, for
    /// every kind of value, escapes, repeats and mistakes.
    #[test]
    fn fields_parse_as_through_a_map() {
        let cat = Catalog::builtin();
        let hukou = cat.dataset("hukou").unwrap();
        let base = r#""name":"张三","gender":"2","birth_date":"1949-12-31","status":"normal""#;
        let cases = [
            base.to_string(),
            format!(r#"{base},"name":"李四""#),
            format!(r#"{base},"name":"\u5f20\u4e09 \"x\"""#),
            format!(r#"{base},"gender":2"#),
            format!(r#"{base},"gender":2.0"#),
            format!(r#"{base},"gender":null"#),
            format!(r#"{base},"name":null"#),
            format!(r#"{base},"name":["a"]"#),
            format!(r#"{base},"name":{{"a":1}}"#),
            format!(r#"{base},"name":7"#),
            format!(r#"{base},"zz":1,"aa":2"#),
            format!(r#"{base},"birth_date":" 1949-12-31 ""#),
            format!(r#"{base},"birth_date":true"#),
            format!(r#"{base},"name":"a\u0001b""#),
            r#""gender":"2""#.to_string(),
        ];
        let mut datasets: Vec<(&Dataset, String)> = cases.iter().map(|c| (hukou, c.clone())).collect();
        // Every type of the catalog, each as a string, a number, a boolean and null.
        for ds in cat.datasets() {
            for f in &ds.fields {
                for v in [r#""1""#, "1", "-1", "1.5", "18446744073709551615", "true", "null", r#""2024-01-01""#, r#""2024-01-01T00:00:00Z""#, r#""aGVsbG8=""#, r#""11010519491231002X""#, r#""91350100M000100Y43""#] {
                    datasets.push((ds, format!(r#""{}":{v}"#, f.name)));
                }
            }
        }
        for (ds, fields) in datasets {
            let key = if ds.subject == basedata_store::Subject::Person { "11010519491231002X" } else { "91350100M000100Y43" };
            let line = format!(r#"{{"key":"{key}","version":1,"fields":{{{fields}}}}}"#);
            let expected = fields_through_a_map(ds, &line);
            let got = match parse_line(ds, line.as_bytes()) {
                Ok(Update { op: UpdateOp::Upsert(f), .. }) => Ok(f),
                Ok(_) => panic!("not an upsert"),
                Err(e) => Err(format!("{}: {}", e.code, e.message)),
            };
            assert_eq!(got, expected, "{}: {line}", ds.id);
        }
    }

    /// Names and string values without escapes borrow from the line; an
    /// escaped one is unescaped into its own string.
    #[test]
    fn fields_borrow_from_the_line() {
        let line = r#"{"key":"11010519491231002X","version":1,"fields":{"name":"张三","n\u0061me":"a\"b"}}"#;
        let raw: RawLine = serde_json::from_str(line).unwrap();
        let f = raw.fields.unwrap().0;
        assert!(matches!(f[0], (Cow::Borrowed("name"), JsonScalar::Str(Cow::Borrowed("张三")))), "{f:?}");
        assert!(matches!(&f[1], (Cow::Owned(n), JsonScalar::Str(Cow::Owned(v))) if n == "name" && v == "a\"b"), "{f:?}");
    }
}
