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

use crate::keys::DocType;
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

pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
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
pub(crate) fn to_stored(v: &Value, pid_of: &mut impl FnMut(&crate::keys::SubjectKey) -> Pid) -> StoredValue {
    match v {
        Value::Str(s) => StoredValue::Str(s.clone()),
        Value::Date(d) => StoredValue::Date(d.to_julian_day()),
        Value::DateTime(t) => StoredValue::DateTime(*t),
        Value::Int(i) => StoredValue::Int(*i),
        Value::Decimal(s) => StoredValue::Decimal(s.clone()),
        Value::Bool(b) => StoredValue::Bool(*b),
        Value::Code(s) => StoredValue::Code(s.clone()),
        Value::Key(k) => StoredValue::Key { doc: k.doc_type().as_u8(), pid: pid_of(k) },
        Value::Bytes(b) => StoredValue::Bytes(b.clone()),
    }
}

pub(crate) fn from_stored(
    v: &StoredValue,
    key_of: &mut impl FnMut(u8, &Pid) -> Result<crate::keys::SubjectKey>,
) -> Result<Value> {
    Ok(match v {
        StoredValue::Str(s) => Value::Str(s.clone()),
        StoredValue::Date(j) => Value::Date(
            time::Date::from_julian_day(*j)
                .map_err(|_| Error::Corrupt { what: "date value", msg: format!("julian day {j}") })?,
        ),
        StoredValue::DateTime(t) => Value::DateTime(*t),
        StoredValue::Int(i) => Value::Int(*i),
        StoredValue::Decimal(s) => Value::Decimal(s.clone()),
        StoredValue::Bool(b) => Value::Bool(*b),
        StoredValue::Code(s) => Value::Code(s.clone()),
        StoredValue::Key { doc, pid } => Value::Key(key_of(*doc, pid)?),
        StoredValue::Bytes(b) => Value::Bytes(b.clone()),
    })
}

/// The document type byte of a stored key, checked.
pub fn doc_type(doc: u8) -> Result<DocType> {
    DocType::from_u8(doc).ok_or(Error::Corrupt { what: "document type", msg: format!("{doc}") })
}
