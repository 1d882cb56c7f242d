//! Typed field values: parsing from the JSON of provider updates (checked
//! against the catalog field type and code list) and rendering back to
//! JSON. The stored form lives in `record`; this is the form the rest of
//! the program sees, with subject keys in the clear.

use crate::catalog::{Field, FieldType};
use crate::keys::{EntityKey, PersonKey, SubjectKey};
use base64::Engine as _;
use serde_json::Value as Json;
use std::borrow::Cow;
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};

/// Largest accepted string value, in bytes.
pub const MAX_STRING_BYTES: usize = 4096;
/// Largest accepted bytes value (a photo), decoded.
pub const MAX_BYTES: usize = 2 << 20;

/// A field value of one of the catalog types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Date(Date),
    /// Unix time in microseconds, UTC.
    DateTime(i64),
    Int(i64),
    /// Canonical decimal text: no leading zeros, no trailing fractional zeros.
    Decimal(String),
    Bool(bool),
    Code(String),
    Key(SubjectKey),
    Bytes(Vec<u8>),
}

/// Why a JSON value does not fit its field; the message never quotes the
/// offending value, which may be personal data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueError {
    pub message: String,
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn err(field: &Field, what: &str) -> ValueError {
    ValueError { message: format!("field {}: {what}", field.name) }
}

/// One JSON value of an update field as the parser met it: scalars kept
/// (strings borrowed from the input where they hold no escapes), arrays
/// and objects only noted, since no field type takes them. The update
/// parser reads fields into these directly instead of into a
/// `serde_json::Map` of owned trees, which was a third of its time.
#[derive(Clone, Debug, PartialEq)]
pub enum JsonScalar<'a> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    Str(Cow<'a, str>),
    Array,
    Object,
}

impl<'a> From<&'a Json> for JsonScalar<'a> {
    fn from(j: &'a Json) -> Self {
        match j {
            Json::Null => JsonScalar::Null,
            Json::Bool(b) => JsonScalar::Bool(*b),
            Json::Number(n) => JsonScalar::Number(n.clone()),
            Json::String(s) => JsonScalar::Str(Cow::Borrowed(s)),
            Json::Array(_) => JsonScalar::Array,
            Json::Object(_) => JsonScalar::Object,
        }
    }
}

impl<'de> serde::Deserialize<'de> for JsonScalar<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = JsonScalar<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(JsonScalar::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(JsonScalar::Null)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                <JsonScalar<'de> as serde::Deserialize<'de>>::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
                Ok(JsonScalar::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Self::Value, E> {
                Ok(JsonScalar::Number(i.into()))
            }
            fn visit_u64<E>(self, u: u64) -> Result<Self::Value, E> {
                Ok(JsonScalar::Number(u.into()))
            }
            // As serde_json's own `Value` does: a non-finite float is null.
            fn visit_f64<E>(self, f: f64) -> Result<Self::Value, E> {
                Ok(serde_json::Number::from_f64(f).map_or(JsonScalar::Null, JsonScalar::Number))
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(JsonScalar::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(JsonScalar::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(JsonScalar::Str(Cow::Owned(s)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(JsonScalar::Array)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(JsonScalar::Object)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// Parses `YYYY-MM-DD` strictly.
pub fn parse_date(s: &str) -> Option<Date> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as u32))
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let month = time::Month::try_from(u8::try_from(m).ok()?).ok()?;
    Date::from_calendar_date(y as i32, month, u8::try_from(d).ok()?).ok()
}

pub fn format_date(d: Date) -> String {
    match date_bytes(d) {
        Some(b) => b.iter().map(|&c| c as char).collect(),
        None => format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()),
    }
}

/// `YYYY-MM-DD` of a date in years 0–9999 as bytes, without the
/// formatting machinery: dates are formatted for every verification of a
/// date field and every date in a lookup answer.
pub fn date_bytes(d: Date) -> Option<[u8; 10]> {
    let y = u32::try_from(d.year()).ok().filter(|y| *y <= 9999)?;
    let (m, day) = (u8::from(d.month()) as u32, d.day() as u32);
    let digit = |n: u32| b'0' + (n % 10) as u8;
    Some([
        digit(y / 1000),
        digit(y / 100),
        digit(y / 10),
        digit(y),
        b'-',
        digit(m / 10),
        digit(m),
        b'-',
        digit(day / 10),
        digit(day),
    ])
}

/// Parses an RFC 3339 time into Unix microseconds.
/// Only times whose UTC form RFC 3339 can write (years 0000–9999) are
/// accepted, so that every stored time reads back as what was sent (an
/// offset can carry a local 0000 or 9999 across the year boundary).
pub fn parse_datetime(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s.trim(), &Rfc3339).ok()?;
    // `checked_to_offset` is None where the UTC year leaves `time`'s range.
    if !(0..=9999).contains(&t.checked_to_offset(time::UtcOffset::UTC)?.year()) {
        return None;
    }
    i64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

/// Renders Unix microseconds as RFC 3339 UTC (`2026-11-22T08:00:00Z`, with
/// fractional seconds only when there are any).
pub fn format_datetime(micros: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(micros as i128 * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(&Rfc3339).unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Canonical decimal text, or `None` if `s` is not a plain decimal number.
pub fn canonical_decimal(s: &str) -> Option<String> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|c| c.is_ascii_digit()) || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    if int.len() > 28 || frac.len() > 10 {
        return None;
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let mut out = String::with_capacity(s.len() + 1);
    if neg && !(int.is_empty() && frac.is_empty()) {
        out.push('-');
    }
    out.push_str(if int.is_empty() { "0" } else { int });
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    Some(out)
}

impl Value {
    /// Parses the JSON of one field of an update. `Ok(None)` for JSON
    /// `null`, which means "no value".
    pub fn from_json(field: &Field, json: &Json) -> Result<Option<Value>, ValueError> {
        Value::from_scalar(field, &JsonScalar::from(json))
    }

    /// [`Value::from_json`] of a value as the update parser met it, so
    /// that update lines need not be built into JSON trees first.
    pub fn from_scalar(field: &Field, json: &JsonScalar<'_>) -> Result<Option<Value>, ValueError> {
        if matches!(json, JsonScalar::Null) {
            return Ok(None);
        }
        let as_str = || match json {
            JsonScalar::Str(s) => Ok(&**s),
            _ => Err(err(field, "expected a string")),
        };
        let v = match field.ty {
            FieldType::String => {
                let s = as_str()?;
                if s.len() > MAX_STRING_BYTES {
                    return Err(err(field, "string too long"));
                }
                if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
                    return Err(err(field, "control characters are not allowed"));
                }
                Value::Str(s.to_owned())
            }
            FieldType::Code => {
                let s = match json {
                    JsonScalar::Number(n) => n.to_string(),
                    _ => as_str()?.trim().to_owned(),
                };
                if field.code(&s).is_none() {
                    return Err(err(field, "not a value of its code list"));
                }
                Value::Code(s)
            }
            FieldType::Date => {
                Value::Date(parse_date(as_str()?.trim()).ok_or_else(|| err(field, "not a date (YYYY-MM-DD)"))?)
            }
            FieldType::Datetime => Value::DateTime(
                parse_datetime(as_str()?).ok_or_else(|| err(field, "not an RFC 3339 time"))?,
            ),
            FieldType::Integer => match json {
                JsonScalar::Number(n) => Value::Int(n.as_i64().ok_or_else(|| err(field, "not a 64-bit integer"))?),
                JsonScalar::Str(s) => Value::Int(s.trim().parse().map_err(|_| err(field, "not an integer"))?),
                _ => return Err(err(field, "expected an integer")),
            },
            FieldType::Decimal => {
                let text = match json {
                    JsonScalar::Number(n) => n.to_string(),
                    JsonScalar::Str(s) => s.to_string(),
                    _ => return Err(err(field, "expected a decimal number")),
                };
                Value::Decimal(canonical_decimal(&text).ok_or_else(|| err(field, "not a decimal number"))?)
            }
            FieldType::Bool => match json {
                JsonScalar::Bool(b) => Value::Bool(*b),
                _ => return Err(err(field, "expected true or false")),
            },
            FieldType::PersonKey => Value::Key(SubjectKey::Person(
                PersonKey::parse(as_str()?).map_err(|e| err(field, &format!("invalid citizen ID number ({})", e.reason())))?,
            )),
            FieldType::EntityKey => Value::Key(SubjectKey::Entity(
                EntityKey::parse(as_str()?).map_err(|e| err(field, &format!("invalid credit code ({})", e.reason())))?,
            )),
            FieldType::Bytes => {
                let b = base64::engine::general_purpose::STANDARD
                    .decode(as_str()?)
                    .map_err(|_| err(field, "not base64"))?;
                if b.len() > MAX_BYTES {
                    return Err(err(field, "value too large"));
                }
                Value::Bytes(b)
            }
        };
        Ok(Some(v))
    }

    /// The JSON form that API responses show.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Str(s) | Value::Code(s) | Value::Decimal(s) => Json::String(s.clone()),
            Value::Date(d) => Json::String(format_date(*d)),
            Value::DateTime(t) => Json::String(format_datetime(*t)),
            Value::Int(i) => Json::from(*i),
            Value::Bool(b) => Json::Bool(*b),
            Value::Key(k) => Json::String(k.as_str().to_owned()),
            Value::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        }
    }
}

/// Folds full-width ASCII variants (U+FF01–FF5E) and the ideographic space
/// to ASCII and trims surrounding white space (Unicode included),
/// borrowing when nothing needs folding (nearly every stored value), so that a verification does not copy what it compares.
/// Trimming before folding gives the same result as after: folding never
/// yields a character that trimming removes, except U+3000 → space, and
/// U+3000 is white space itself.
pub fn fold_text_cow(s: &str) -> Cow<'_, str> {
    let trimmed = s.trim_matches(|c: char| c.is_whitespace() || c == '\u{200B}' || c == '\u{FEFF}');
    let folds = |c: char| matches!(c, '\u{FF01}'..='\u{FF5E}' | '\u{3000}');
    // Full-width forms are three UTF-8 bytes starting 0xE3 or 0xEF.
    if !trimmed.bytes().any(|b| b == 0xE3 || b == 0xEF) || !trimmed.chars().any(folds) {
        return Cow::Borrowed(trimmed);
    }
    Cow::Owned(
        trimmed
            .chars()
            .map(|c| match c {
                '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFF01 + 0x21).unwrap_or(c),
                '\u{3000}' => ' ',
                _ => c,
            })
            .collect(),
    )
}

/// Canonical form of a stored value: what verification compares a claimed
/// value with, once the claim is made canonical by the same rules.
/// Borrowed from the value where it already is one.
pub fn canonical_stored(v: &Value) -> Cow<'_, [u8]> {
    match v {
        Value::Str(s) | Value::Code(s) => match fold_text_cow(s) {
            Cow::Borrowed(t) => Cow::Borrowed(t.as_bytes()),
            Cow::Owned(t) => Cow::Owned(t.into_bytes()),
        },
        Value::Decimal(s) => Cow::Borrowed(s.as_bytes()),
        Value::Date(d) => Cow::Owned(format_date(*d).into_bytes()),
        Value::DateTime(t) => Cow::Owned(t.to_be_bytes().to_vec()),
        Value::Int(i) => Cow::Owned(i.to_be_bytes().to_vec()),
        Value::Bool(b) => Cow::Borrowed(if *b { b"true" } else { b"false" }),
        Value::Key(k) => Cow::Borrowed(k.as_str().as_bytes()),
        Value::Bytes(b) => Cow::Borrowed(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use serde_json::json;

    fn field(ds: &str, name: &str) -> Field {
        Catalog::builtin().dataset(ds).unwrap().field(name).unwrap().clone()
    }

    fn check(ds: &str, name: &str, input: Json, expected: Result<Option<Json>, ()>) {
        let f = field(ds, name);
        let got = Value::from_json(&f, &input).map(|v| v.map(|v| v.to_json())).map_err(|_| ());
        assert_eq!(got, expected, "{ds}.{name} <- {input}");
    }

    #[test]
    fn parse_table() {
        check("hukou", "name", json!("张三"), Ok(Some(json!("张三"))));
        check("hukou", "name", json!(12), Err(()));
        check("hukou", "name", json!("a\u{0}b"), Err(()));
        check("hukou", "name", json!(null), Ok(None));
        check("hukou", "gender", json!("2"), Ok(Some(json!("2"))));
        check("hukou", "gender", json!(1), Ok(Some(json!("1"))));
        check("hukou", "gender", json!("3"), Err(()));
        check("hukou", "status", json!("cancelled"), Ok(Some(json!("cancelled"))));
        check("hukou", "birth_date", json!("1949-12-31"), Ok(Some(json!("1949-12-31"))));
        check("hukou", "birth_date", json!("1949-02-30"), Err(()));
        check("hukou", "birth_date", json!("19491231"), Err(()));
        check("market_registration", "registered_capital", json!("00100.500"), Ok(Some(json!("100.5"))));
        check("market_registration", "registered_capital", json!(2500), Ok(Some(json!("2500"))));
        check("market_registration", "registered_capital", json!("1e5"), Err(()));
        check("market_registration", "legal_representative_id", json!("11010519491231002x"), Ok(Some(json!("11010519491231002X"))));
        check("market_registration", "legal_representative_id", json!("110105194912310021"), Err(()));
        check("hukou", "photo", json!("aGVsbG8="), Ok(Some(json!("aGVsbG8="))));
        check("hukou", "photo", json!("not base64!"), Err(()));
    }

    #[test]
    fn error_messages_do_not_quote_values() {
        let f = field("hukou", "birth_date");
        let e = Value::from_json(&f, &json!("secret-value")).unwrap_err();
        assert!(!e.message.contains("secret-value"));
        assert!(e.message.contains("birth_date"));
    }

    #[test]
    fn decimal_canonical_forms() {
        for (i, o) in [("0", Some("0")), ("-0.0", Some("0")), ("1.50", Some("1.5")), (".5", Some("0.5")),
                       ("+7", Some("7")), ("1.", Some("1")), ("", None), ("-", None), ("1.2.3", None), ("１", None)] {
            assert_eq!(canonical_decimal(i).as_deref(), o, "{i}");
        }
    }

    #[test]
    fn datetime_round_trip() {
        let t = parse_datetime("2026-11-22T08:00:00Z").unwrap();
        assert_eq!(format_datetime(t), "2026-11-22T08:00:00Z");
        assert_eq!(parse_datetime("2026-11-22T16:00:00+08:00"), Some(t));
        assert!(parse_datetime("yesterday").is_none());
        // Written back as sent, or refused: never rendered as another time.
        for s in ["0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "0001-01-01T00:30:00+01:00"] {
            assert_eq!(parse_datetime(&format_datetime(parse_datetime(s).unwrap())), parse_datetime(s), "{s}");
        }
        assert_eq!(parse_datetime("0000-01-01T00:00:00+01:00"), None, "UTC year -1");
        assert_eq!(parse_datetime("9999-12-31T23:00:00-02:00"), None, "UTC year 10000");
    }

    /// The hand-rolled formatting agrees with `time`'s own for every day
    /// of years 0000–9999 sampled every 37 days, and falls back outside.
    #[test]
    fn date_formatting_agrees_with_time() {
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        let mut d = Date::from_calendar_date(0, time::Month::January, 1).unwrap();
        let last = Date::from_calendar_date(9999, time::Month::December, 31).unwrap();
        while d <= last {
            let s = format_date(d);
            assert_eq!(s, d.format(&fmt).unwrap());
            assert_eq!(parse_date(&s), Some(d));
            d = match d.checked_add(time::Duration::days(37)) {
                Some(n) => n,
                None => break,
            };
        }
        assert_eq!(format_date(last), "9999-12-31");
        assert_eq!(format_date(Date::from_calendar_date(-1, time::Month::March, 5).unwrap()), "-001-03-05");
    }
}
