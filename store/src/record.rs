//! The record model on disk: key layouts of the subject families and the
//! stored (pseudonymized, versioned) forms of records, history entries and
//! change-log entries.
//!
//! Layouts (`pid` = 16-byte subject pseudonym, `ds` = dataset id bytes):
//! - records: `pid ds` -> [`StoredRecord`] (the current version, or a
//!   tombstone that remembers a delete's provider version);
//! - history: `pid ds 0x00 seq` -> [`HistoryEntry`], a superseded version
//!   with the interval during which it was current;
//! - changes: `seq` -> [`ChangeEntry`].
//!
//! Dataset ids are `[a-z0-9_]`, so the 0x00 separator keeps `hukou` and
//! `hukou_x` histories apart.
//!
//! The stored forms are the derived bincode encodings of the types below
//! (behind `codec`'s format byte). Two hot paths do not go through the
//! owned types, and are declared here, next to what they mirror, so that a
//! change of the layout meets them: `ValueRef` and `visit_live_fields`
//! read a record field by field without copying strings (reads that keep a
//! few fields of many records), and `encode_fields`, `encode_record` and
//! `encode_change` write the
//! encodings of records and change-log entries from borrowed values and
//! from fields encoded once (bulk loads). The tests at the end hold every
//! fast path byte for byte to the derived encoding, for every value kind.

use crate::codec::{config, encode_into, v1_body, FORMAT_V1};
use crate::keys::{DocType, SubjectKey};
use crate::pseudo::Pid;
use crate::value::Value;
use crate::{Error, Result};

pub fn record_key(pid: &Pid, dataset: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + dataset.len());
    k.extend_from_slice(&pid.0);
    k.extend_from_slice(dataset.as_bytes());
    k
}

pub fn history_prefix(pid: &Pid, dataset: &str) -> Vec<u8> {
    let mut k = record_key(pid, dataset);
    k.push(0);
    k
}

pub fn history_key(pid: &Pid, dataset: &str, seq: u64) -> Vec<u8> {
    let mut k = history_prefix(pid, dataset);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `meta` key: no change numbered at or below this is left in the change
/// log (see `change_log`); absent when the log was never cut. Kept as a
/// position (`engine::position_value`).
pub(crate) const META_CHANGES_CUT: &[u8] = b"changes_cut";

pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The sequence number that ends `k` (an index or entry key), or an
/// error for a key too short to end in one.
pub fn seq_at_end(k: &[u8]) -> Result<u64> {
    seq_from_key(k.get(k.len().saturating_sub(8)..).unwrap_or(k))
}

pub fn seq_from_key(k: &[u8]) -> Result<u64> {
    let b: [u8; 8] = k
        .try_into()
        .map_err(|_| Error::Corrupt { what: "sequence key", msg: format!("length {}", k.len()) })?;
    Ok(u64::from_be_bytes(b))
}

/// A field value as stored: subject keys replaced by their pseudonyms.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum StoredValue {
    Str(String),
    /// Julian day number.
    Date(i32),
    DateTime(i64),
    Int(i64),
    Decimal(String),
    Bool(bool),
    Code(String),
    Key { doc: u8, pid: Pid },
    Bytes(Vec<u8>),
}

/// Named field values in catalog order.
pub type StoredFields = Vec<(String, StoredValue)>;

#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum Body {
    Live(StoredFields),
    /// Deleted at this version; kept so that older replays stay stale.
    Deleted,
}

#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct StoredRecord {
    /// The provider's own version of the record.
    pub version: u64,
    /// Commit time, Unix microseconds.
    pub committed_at: i64,
    /// Change-log sequence number of the commit.
    pub seq: u64,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct HistoryEntry {
    pub version: u64,
    pub committed_at: i64,
    /// When the next version (or a delete) replaced this one.
    pub superseded_at: i64,
    pub seq: u64,
    pub fields: StoredFields,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum ChangeOp {
    Upsert,
    Delete,
}

impl ChangeOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Upsert => "upsert",
            ChangeOp::Delete => "delete",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct ChangeEntry {
    pub dataset: String,
    pub doc: u8,
    pub pid: Pid,
    pub op: ChangeOp,
    pub version: u64,
    pub committed_at: i64,
    pub fields: StoredFields,
}

/// Converts between the program's values and the stored form; the store
/// supplies the pseudonym mapping in both directions.
pub(crate) fn to_stored(v: &Value, pid_of: &mut impl FnMut(&SubjectKey) -> Pid) -> StoredValue {
    ValueRef::of_value(v, pid_of).to_stored()
}

pub(crate) fn from_stored(v: &StoredValue, key_of: &mut impl FnMut(u8, &Pid) -> Result<SubjectKey>) -> Result<Value> {
    ValueRef::of_stored(v).to_value(key_of)
}

/// [`StoredValue`] borrowing its strings and bytes: variant for variant in
/// the same order, so it encodes and decodes exactly as a stored value
/// (bincode writes `&str` and `&[u8]` as it writes `String` and `Vec<u8>`).
/// It is also where program values and stored values meet, in both
/// directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, bincode::Encode, bincode::BorrowDecode)]
pub(crate) enum ValueRef<'a> {
    Str(&'a str),
    /// Julian day number.
    Date(i32),
    DateTime(i64),
    Int(i64),
    Decimal(&'a str),
    Bool(bool),
    Code(&'a str),
    Key { doc: u8, pid: Pid },
    Bytes(&'a [u8]),
}

impl<'a> ValueRef<'a> {
    /// The stored form of a program value; `pid_of` pseudonymizes subject
    /// keys.
    pub(crate) fn of_value(v: &'a Value, pid_of: &mut impl FnMut(&SubjectKey) -> Pid) -> ValueRef<'a> {
        match v {
            Value::Str(s) => ValueRef::Str(s),
            Value::Date(d) => ValueRef::Date(d.to_julian_day()),
            Value::DateTime(t) => ValueRef::DateTime(*t),
            Value::Int(i) => ValueRef::Int(*i),
            Value::Decimal(s) => ValueRef::Decimal(s),
            Value::Bool(b) => ValueRef::Bool(*b),
            Value::Code(s) => ValueRef::Code(s),
            Value::Key(k) => ValueRef::Key { doc: k.doc_type().as_u8(), pid: pid_of(k) },
            Value::Bytes(b) => ValueRef::Bytes(b),
        }
    }

    pub(crate) fn of_stored(v: &'a StoredValue) -> ValueRef<'a> {
        match v {
            StoredValue::Str(s) => ValueRef::Str(s),
            StoredValue::Date(j) => ValueRef::Date(*j),
            StoredValue::DateTime(t) => ValueRef::DateTime(*t),
            StoredValue::Int(i) => ValueRef::Int(*i),
            StoredValue::Decimal(s) => ValueRef::Decimal(s),
            StoredValue::Bool(b) => ValueRef::Bool(*b),
            StoredValue::Code(s) => ValueRef::Code(s),
            StoredValue::Key { doc, pid } => ValueRef::Key { doc: *doc, pid: *pid },
            StoredValue::Bytes(b) => ValueRef::Bytes(b),
        }
    }

    pub(crate) fn to_stored(self) -> StoredValue {
        match self {
            ValueRef::Str(s) => StoredValue::Str(s.to_owned()),
            ValueRef::Date(j) => StoredValue::Date(j),
            ValueRef::DateTime(t) => StoredValue::DateTime(t),
            ValueRef::Int(i) => StoredValue::Int(i),
            ValueRef::Decimal(s) => StoredValue::Decimal(s.to_owned()),
            ValueRef::Bool(b) => StoredValue::Bool(b),
            ValueRef::Code(s) => StoredValue::Code(s.to_owned()),
            ValueRef::Key { doc, pid } => StoredValue::Key { doc, pid },
            ValueRef::Bytes(b) => StoredValue::Bytes(b.to_vec()),
        }
    }

    /// The program value; `key_of` resolves pseudonyms to subject keys.
    pub(crate) fn to_value(self, key_of: &mut impl FnMut(u8, &Pid) -> Result<SubjectKey>) -> Result<Value> {
        Ok(match self {
            ValueRef::Str(s) => Value::Str(s.to_owned()),
            ValueRef::Date(j) => Value::Date(
                time::Date::from_julian_day(j)
                    .map_err(|_| Error::Corrupt { what: "date value", msg: format!("julian day {j}") })?,
            ),
            ValueRef::DateTime(t) => Value::DateTime(t),
            ValueRef::Int(i) => Value::Int(i),
            ValueRef::Decimal(s) => Value::Decimal(s.to_owned()),
            ValueRef::Bool(b) => Value::Bool(b),
            ValueRef::Code(s) => Value::Code(s.to_owned()),
            ValueRef::Key { doc, pid } => Value::Key(key_of(doc, &pid)?),
            ValueRef::Bytes(b) => Value::Bytes(b.to_vec()),
        })
    }
}

/// The header of a stored record, as [`visit_live_fields`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordHead {
    pub version: u64,
    pub committed_at: i64,
    pub seq: u64,
}

/// Reads a stored record (`encode(&StoredRecord)`) field by field, handing
/// each to `visit` without collecting them (a read that keeps two fields of
/// ten need not build the other eight); `None` for a delete's tombstone.
/// The order of reads is the derived layout of [`StoredRecord`]: header,
/// body variant, field count, then name and value of each field.
pub(crate) fn visit_live_fields<'a>(
    bytes: &'a [u8],
    mut visit: impl FnMut(&'a str, ValueRef<'a>) -> Result<()>,
) -> Result<Option<RecordHead>> {
    use bincode::de::BorrowDecode;
    let corrupt = |e: bincode::error::DecodeError| Error::Corrupt { what: "record", msg: e.to_string() };
    let reader = bincode::de::read::SliceReader::new(v1_body("record", bytes)?);
    let mut d = bincode::de::DecoderImpl::new(reader, config(), ());
    let head = RecordHead {
        version: u64::borrow_decode(&mut d).map_err(corrupt)?,
        committed_at: i64::borrow_decode(&mut d).map_err(corrupt)?,
        seq: u64::borrow_decode(&mut d).map_err(corrupt)?,
    };
    match u32::borrow_decode(&mut d).map_err(corrupt)? {
        BODY_LIVE => {}
        BODY_DELETED => return Ok(None),
        other => return Err(Error::Corrupt { what: "record", msg: format!("unknown body variant {other}") }),
    }
    let n = u64::borrow_decode(&mut d).map_err(corrupt)?;
    for _ in 0..n {
        let name = <&str>::borrow_decode(&mut d).map_err(corrupt)?;
        let value = ValueRef::borrow_decode(&mut d).map_err(corrupt)?;
        visit(name, value)?;
    }
    Ok(Some(head))
}

// Variant indexes as bincode derives them: declaration order.
const BODY_LIVE: u32 = 0;
const BODY_DELETED: u32 = 1;
// The change-log writers below serve bulk loads only, which need RocksDB;
// a build without it (the fuzz targets) keeps them for the tests.
#[cfg_attr(not(feature = "rocks"), allow(dead_code))]
const CHANGE_UPSERT: u32 = 0;
#[cfg_attr(not(feature = "rocks"), allow(dead_code))]
const CHANGE_DELETE: u32 = 1;

/// Appends the encoding of the [`StoredFields`] that [`to_stored`] would
/// make of `fields`, without copying their values: the count, then name
/// and value of each. `pid_of` pseudonymizes key-typed values.
#[cfg_attr(not(feature = "rocks"), allow(dead_code))]
pub(crate) fn encode_fields(
    out: &mut Vec<u8>,
    fields: &[(String, Value)],
    pid_of: &mut impl FnMut(&SubjectKey) -> Pid,
) {
    encode_into(out, fields.len());
    for (name, v) in fields {
        encode_into(out, name.as_str());
        encode_into(out, ValueRef::of_value(v, pid_of));
    }
}

/// `encode(&StoredRecord { version, committed_at, seq, body })` into `out`
/// (cleared first), where `fields` holds the body's fields as
/// [`encode_fields`] wrote them, or is `None` for [`Body::Deleted`]. Spliced
/// from its parts: bincode writes a struct as its fields in order and an
/// enum as its variant index, then the payload.
#[cfg_attr(not(feature = "rocks"), allow(dead_code))]
pub(crate) fn encode_record(out: &mut Vec<u8>, version: u64, committed_at: i64, seq: u64, fields: Option<&[u8]>) {
    out.clear();
    out.push(FORMAT_V1);
    encode_into(out, version);
    encode_into(out, committed_at);
    encode_into(out, seq);
    match fields {
        Some(f) => {
            encode_into(out, BODY_LIVE);
            out.extend_from_slice(f);
        }
        None => encode_into(out, BODY_DELETED),
    }
}

/// `encode(&ChangeEntry { .. })` into `out` (cleared first): an upsert with
/// `fields` as [`encode_fields`] wrote them, or a delete (no fields) for
/// `None`. Spliced like [`encode_record`].
#[cfg_attr(not(feature = "rocks"), allow(dead_code))]
pub(crate) fn encode_change(
    out: &mut Vec<u8>,
    dataset: &str,
    doc: u8,
    pid: &[u8; 16],
    version: u64,
    committed_at: i64,
    fields: Option<&[u8]>,
) {
    out.clear();
    out.push(FORMAT_V1);
    encode_into(out, dataset);
    encode_into(out, doc);
    out.extend_from_slice(pid); // Pid: a fixed-size array, written without a length
    encode_into(out, if fields.is_some() { CHANGE_UPSERT } else { CHANGE_DELETE });
    encode_into(out, version);
    encode_into(out, committed_at);
    match fields {
        Some(f) => out.extend_from_slice(f),
        None => encode_into(out, 0u64), // no fields
    }
}

/// The document type byte of a stored key, checked.
pub fn doc_type(doc: u8) -> Result<DocType> {
    DocType::from_u8(doc).ok_or(Error::Corrupt { what: "document type", msg: format!("{doc}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};
    use crate::keys::Subject;

    /// A field of every value kind, with lengths and numbers on both sides
    /// of bincode's one-byte varint limit.
    fn every_kind() -> Vec<(String, Value)> {
        let person = SubjectKey::parse(Subject::Person, "11010519491231002X").unwrap();
        let entity = SubjectKey::parse(Subject::Entity, "91350100M000100Y43").unwrap();
        [
            ("str", Value::Str("张三".into())),
            ("long_str", Value::Str("街".repeat(100))),
            ("date", Value::Date(time::macros::date!(1949 - 12 - 31))),
            ("datetime", Value::DateTime(-1_234_567)),
            ("small_int", Value::Int(7)),
            ("int_min", Value::Int(i64::MIN)),
            ("int_max", Value::Int(i64::MAX)),
            ("decimal", Value::Decimal("12.5".into())),
            ("bool", Value::Bool(true)),
            ("code", Value::Code("normal".into())),
            ("person", Value::Key(person)),
            ("entity", Value::Key(entity)),
            ("bytes", Value::Bytes(vec![1, 2, 3, 255])),
            ("no_bytes", Value::Bytes(Vec::new())),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect()
    }

    fn pid_of(k: &SubjectKey) -> Pid {
        Pid::from_slice(&blake3::hash(k.as_str().as_bytes()).as_bytes()[..16]).unwrap()
    }

    fn key_of(doc: u8, pid: &Pid) -> Result<SubjectKey> {
        let found = every_kind().into_iter().find_map(|(_, v)| match v {
            Value::Key(k) if pid_of(&k) == *pid && k.doc_type().as_u8() == doc => Some(k),
            _ => None,
        });
        found.ok_or(Error::Corrupt { what: "test key", msg: "unknown pseudonym".into() })
    }

    fn stored(fields: &[(String, Value)]) -> StoredFields {
        fields.iter().map(|(n, v)| (n.clone(), to_stored(v, &mut pid_of))).collect()
    }

    fn bincode_of<T: bincode::Encode>(v: T) -> Vec<u8> {
        let mut out = Vec::new();
        encode_into(&mut out, v);
        out
    }

    #[test]
    fn borrowed_values_encode_like_stored_values() {
        for (_, v) in every_kind() {
            let sv = to_stored(&v, &mut pid_of);
            assert_eq!(bincode_of(ValueRef::of_value(&v, &mut pid_of)), bincode_of(&sv), "{v:?}");
            assert_eq!(ValueRef::of_stored(&sv), ValueRef::of_value(&v, &mut pid_of), "{v:?}");
            assert_eq!(from_stored(&sv, &mut key_of).unwrap(), v);
        }
    }

    #[test]
    fn encoded_fields_are_the_stored_fields_encoding() {
        for fields in [every_kind(), Vec::new(), every_kind()[..1].to_vec()] {
            let mut out = Vec::new();
            encode_fields(&mut out, &fields, &mut pid_of);
            assert_eq!(out, bincode_of(stored(&fields)), "{fields:?}");
        }
    }

    #[test]
    fn spliced_records_and_changes_are_the_derived_encodings() {
        let mut fields = Vec::new();
        encode_fields(&mut fields, &every_kind(), &mut pid_of);
        let pid = Pid([9; 16]);
        let mut got = Vec::new();
        for (version, seq, at) in [
            (1u64, 1u64, 0i64),
            (250, 251, -5),
            (70_000, 1 << 33, 1_763_000_000_000_000),
            (u64::MAX, u64::MAX - 1, i64::MIN),
        ] {
            for live in [true, false] {
                let encoded = live.then_some(fields.as_slice());
                let body = if live { Body::Live(stored(&every_kind())) } else { Body::Deleted };
                encode_record(&mut got, version, at, seq, encoded);
                assert_eq!(got, encode(&StoredRecord { version, committed_at: at, seq, body }));
                encode_change(&mut got, "hukou", 2, &pid.0, version, at, encoded);
                let change = ChangeEntry {
                    dataset: "hukou".into(),
                    doc: 2,
                    pid,
                    op: if live { ChangeOp::Upsert } else { ChangeOp::Delete },
                    version,
                    committed_at: at,
                    fields: if live { stored(&every_kind()) } else { Vec::new() },
                };
                assert_eq!(got, encode(&change));
                assert_eq!(decode::<ChangeEntry>("change", &got).unwrap(), change);
            }
        }
    }

    #[test]
    fn the_borrowed_reader_reads_what_was_stored() {
        let fields = every_kind();
        let r = StoredRecord { version: 300, committed_at: -7, seq: 1 << 40, body: Body::Live(stored(&fields)) };
        let mut read = Vec::new();
        let head = visit_live_fields(&encode(&r), |n, v| {
            read.push((n.to_owned(), v.to_value(&mut key_of)?));
            Ok(())
        })
        .unwrap();
        assert_eq!(head, Some(RecordHead { version: 300, committed_at: -7, seq: 1 << 40 }));
        assert_eq!(read, fields);

        let tombstone = StoredRecord { body: Body::Deleted, ..r };
        let visited = visit_live_fields(&encode(&tombstone), |_, _| panic!("a tombstone has no fields"));
        assert_eq!(visited.unwrap(), None);

        // A damaged value is an error, never a misread.
        let mut bad = encode(&tombstone);
        *bad.last_mut().unwrap() = 7;
        assert!(matches!(visit_live_fields(&bad, |_, _| Ok(())), Err(Error::Corrupt { .. })));
        bad[0] = 9;
        assert!(matches!(visit_live_fields(&bad, |_, _| Ok(())), Err(Error::Format { found: 9, .. })));
        let cut = encode(&StoredRecord { version: 1, committed_at: 1, seq: 1, body: Body::Live(stored(&fields)) });
        assert!(visit_live_fields(&cut[..cut.len() - 3], |_, _| Ok(())).is_err());
    }
}
