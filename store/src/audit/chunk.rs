//! Uses audited as one stored entry per run: the uses one group commit
//! writes for one department (the verifications of a department's
//! counters that arrived together; a batch chunk's lines, one record of
//! uses in compact form at a time) share the department and the time, so
//! they are stored once with a compact row per use (action, subject
//! pseudonym, indexes into a table of names: operators, purposes, dataset,
//! field and outcome names; for a record of uses, its whole string table)
//! and hashed into the chain once.
//!
//! A chunk of `n` uses takes the sequence numbers `first..first + n`,
//! stored under `first`: every use keeps a sequence number of its own, as
//! it had when each use was an entry, so paging, counts and the API's
//! one entry per use are unchanged. Its index keys: a subject key per
//! line at the line's number whose value is `first` (where the line is
//! stored), and one department and one time key at `first` whose value is
//! the chunk's last number. Index keys of single entries have empty values.

use super::uses::{Use, Uses};
use super::{Action, AuditEvent, StoredEntry};
use crate::codec::encode_into;
use crate::pseudo::Pid;
use crate::record::{seq_from_key, seq_key};
use crate::Result;

/// Format marker of chunks whose lines name no grants: read, never written.
pub const ENTRY_FORMAT_CHUNK: u8 = 4;
/// Format marker of a [`StoredChunk`].
pub const ENTRY_FORMAT_CHUNK_V6: u8 = 6;

/// Uses at most in one chunk entry, so one entry stays a few hundred
/// kilobytes however many batch chunks a group commit joins.
pub const MAX_CHUNK_LINES: usize = 2048;

/// The stored form of a run of one department's uses. The hash must stay
/// the last member: it is the last 32 bytes of the encoding.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct StoredChunk {
    pub at: i64,
    pub department: String,
    /// The texts the lines refer to by index: operators, purposes and
    /// purpose codes, dataset, field and outcome names (written from a
    /// record of uses: its whole table, which may hold others too).
    pub names: Vec<String>,
    pub lines: Vec<ChunkLine>,
    pub hash: [u8; 32],
}

/// One use of a [`StoredChunk`]; `u32`s index [`StoredChunk::names`].
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct ChunkLine {
    pub action: Action,
    pub subject: Option<(u8, Pid)>,
    pub operator: Option<u32>,
    pub operator_verified: bool,
    pub purpose: u32,
    pub purpose_code: Option<u32>,
    pub datasets: Vec<u32>,
    pub fields: Vec<u32>,
    pub outcome: u32,
    /// Ids of the grants the use relied on.
    pub grants: Vec<u32>,
}

/// A chunk of format marker 4, whose lines name no grants.
#[derive(bincode::Encode, bincode::Decode)]
pub(crate) struct StoredChunkV4 {
    pub at: i64,
    pub department: String,
    pub names: Vec<String>,
    pub lines: Vec<ChunkLineV4>,
    pub hash: [u8; 32],
}

/// A line of a [`StoredChunkV4`].
#[derive(bincode::Encode, bincode::Decode)]
pub(crate) struct ChunkLineV4 {
    pub action: Action,
    pub subject: Option<(u8, Pid)>,
    pub operator: Option<u32>,
    pub operator_verified: bool,
    pub purpose: u32,
    pub purpose_code: Option<u32>,
    pub datasets: Vec<u32>,
    pub fields: Vec<u32>,
    pub outcome: u32,
}

impl From<StoredChunkV4> for StoredChunk {
    fn from(c: StoredChunkV4) -> StoredChunk {
        let lines = c
            .lines
            .into_iter()
            .map(|l| ChunkLine {
                action: l.action,
                subject: l.subject,
                operator: l.operator,
                operator_verified: l.operator_verified,
                purpose: l.purpose,
                purpose_code: l.purpose_code,
                datasets: l.datasets,
                fields: l.fields,
                outcome: l.outcome,
                grants: Vec::new(),
            })
            .collect();
        StoredChunk { at: c.at, department: c.department, names: c.names, lines, hash: c.hash }
    }
}

/// A stored audit entry of any format: one use, or a chunk of one department's uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    One(StoredEntry),
    Chunk(StoredChunk),
}

impl Stored {
    pub fn decode(bytes: &[u8]) -> Result<Stored> {
        match bytes.first() {
            Some(&(ENTRY_FORMAT_CHUNK | ENTRY_FORMAT_CHUNK_V6)) => {
                let corrupt = |msg: String| crate::Error::Corrupt { what: "audit chunk", msg };
                let config = crate::codec::config();
                let c: StoredChunk = if bytes[0] == ENTRY_FORMAT_CHUNK_V6 {
                    bincode::decode_from_slice(&bytes[1..], config).map_err(|e| corrupt(e.to_string()))?.0
                } else {
                    let (old, _): (StoredChunkV4, _) =
                        bincode::decode_from_slice(&bytes[1..], config).map_err(|e| corrupt(e.to_string()))?;
                    old.into()
                };
                // Every chunk holds a use: one without would take no number.
                if c.lines.is_empty() {
                    return Err(corrupt("a chunk without uses".into()));
                }
                Ok(Stored::Chunk(c))
            }
            _ => StoredEntry::decode(bytes).map(Stored::One),
        }
    }

    /// The sequence numbers the entry takes.
    pub fn span(&self) -> u64 {
        match self {
            Stored::One(_) => 1,
            Stored::Chunk(c) => c.lines.len() as u64,
        }
    }

    pub fn hash(&self) -> [u8; 32] {
        match self {
            Stored::One(e) => e.hash,
            Stored::Chunk(c) => c.hash,
        }
    }

    pub fn at(&self) -> i64 {
        match self {
            Stored::One(e) => e.at,
            Stored::Chunk(c) => c.at,
        }
    }

    pub fn department(&self) -> &str {
        match self {
            Stored::One(e) => &e.department,
            Stored::Chunk(c) => &c.department,
        }
    }

    /// Use `i` of the entry (0 for a single use) as a single entry; a
    /// chunk's lines carry the chunk's hash.
    pub fn line(&self, i: usize) -> Option<StoredEntry> {
        match self {
            Stored::One(e) => (i == 0).then(|| e.clone()),
            Stored::Chunk(c) => c.lines.get(i).map(|l| c.expand(l)),
        }
    }

    /// The subject pseudonym of every use of the entry, in sequence order.
    pub fn subjects(&self) -> Vec<Option<Pid>> {
        match self {
            Stored::One(e) => vec![e.subject.map(|(_, pid)| pid)],
            Stored::Chunk(c) => c.lines.iter().map(|l| l.subject.map(|(_, pid)| pid)).collect(),
        }
    }

    /// Every use of the entry, in sequence order.
    pub fn into_lines(self) -> Vec<StoredEntry> {
        match self {
            Stored::One(e) => vec![e],
            Stored::Chunk(c) => c.lines.iter().map(|l| c.expand(l)).collect(),
        }
    }

    /// Index keys and values of the entry stored at `first` (see the module's doc).
    pub(crate) fn index_entries(&self, first: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        match self {
            Stored::One(e) => super::index_keys(first, e).into_iter().map(|k| (k, Vec::new())).collect(),
            Stored::Chunk(c) => {
                let mut out = Vec::with_capacity(c.lines.len() + 2);
                let subjects = c.lines.iter().map(|l| l.subject.map(|(_, pid)| pid));
                chunk_index_entries(first, c.at, &c.department, subjects, |k, v| out.push((k, v)));
                out
            }
        }
    }
}

/// The index keys of a chunk stored at `first` whose uses name `subjects`
/// (see the module's doc), handed to `put` in sequence order.
pub(crate) fn chunk_index_entries(
    first: u64,
    at: i64,
    department: &str,
    subjects: impl ExactSizeIterator<Item = Option<Pid>>,
    mut put: impl FnMut(Vec<u8>, Vec<u8>),
) {
    let last = seq_key(first + subjects.len() as u64 - 1).to_vec();
    for (i, pid) in subjects.enumerate() {
        if let Some(pid) = pid {
            put(super::subject_index_key(&pid, first + i as u64), seq_key(first).to_vec());
        }
    }
    put(super::department_index_key(department, first), last.clone());
    put(super::time_index_key(at, first), last);
}

/// The stored bytes, hash zeroed, of the chunk of `rows` (one
/// department's, taken from `uses`) at `at`, written straight from the
/// compact rows: the bytes [`StoredChunk::encode`] makes of a chunk whose
/// names are the whole string table of `uses` (so its rows keep their
/// places) and whose lines are the rows.
pub(crate) fn encode_uses(at: i64, uses: &Uses, rows: &[Use]) -> Vec<u8> {
    let chunk = ChunkOf {
        at,
        department: uses.text(rows[0].by.department),
        names: uses.names(),
        lines: LinesOf { uses, rows },
        hash: [0; 32],
    };
    let mut out = Vec::with_capacity(64 + 32 * rows.len());
    out.push(ENTRY_FORMAT_CHUNK_V6);
    encode_into(&mut out, &chunk);
    out
}

/// [`StoredChunk`], borrowed: the members in the same order and of types
/// that bincode encodes alike.
#[derive(bincode::Encode)]
struct ChunkOf<'a> {
    at: i64,
    department: &'a str,
    names: &'a [String],
    lines: LinesOf<'a>,
    hash: [u8; 32],
}

/// `Vec<ChunkLine>`, from compact rows.
struct LinesOf<'a> {
    uses: &'a Uses,
    rows: &'a [Use],
}

impl bincode::Encode for LinesOf<'_> {
    fn encode<E: bincode::enc::Encoder>(&self, e: &mut E) -> std::result::Result<(), bincode::error::EncodeError> {
        // A sequence: its length as a u64, then the members.
        (self.rows.len() as u64).encode(e)?;
        for r in self.rows {
            LineOf {
                action: r.action,
                subject: r.subject.map(|(k, pid)| (k.doc_type().as_u8(), pid)),
                operator: r.by.operator,
                operator_verified: r.by.operator_verified,
                purpose: r.by.purpose,
                purpose_code: r.by.purpose_code,
                datasets: self.uses.ids(r.datasets),
                fields: self.uses.ids(r.fields),
                outcome: r.outcome,
                grants: r.grants.map_or(&[][..], |g| self.uses.ids(g)),
            }
            .encode(e)?;
        }
        Ok(())
    }
}

/// [`ChunkLine`], borrowed.
#[derive(bincode::Encode)]
struct LineOf<'a> {
    action: Action,
    subject: Option<(u8, Pid)>,
    operator: Option<u32>,
    operator_verified: bool,
    purpose: u32,
    purpose_code: Option<u32>,
    datasets: &'a [u32],
    fields: &'a [u32],
    outcome: u32,
    grants: &'a [u32],
}

impl StoredChunk {
    fn name(&self, i: u32) -> String {
        self.names.get(i as usize).cloned().unwrap_or_default()
    }

    fn expand(&self, l: &ChunkLine) -> StoredEntry {
        StoredEntry {
            at: self.at,
            department: self.department.clone(),
            operator: l.operator.map(|i| self.name(i)),
            purpose: self.name(l.purpose),
            action: l.action,
            subject: l.subject,
            datasets: l.datasets.iter().map(|&i| self.name(i)).collect(),
            fields: l.fields.iter().map(|&i| self.name(i)).collect(),
            outcome: self.name(l.outcome),
            operator_verified: l.operator_verified,
            purpose_code: l.purpose_code.map(|i| self.name(i)),
            grants: l.grants.iter().map(|&i| self.name(i)).collect(),
            hash: self.hash,
        }
    }

    /// A chunk of `events` (of one department) at `at` with a zero hash;
    /// `subject` gives each event's stored subject.
    pub(crate) fn of(at: i64, events: &[AuditEvent], mut subject: impl FnMut(&AuditEvent) -> Option<(u8, Pid)>) -> StoredChunk {
        let head = &events[0];
        // A run's uses name a handful of operators, purposes, datasets,
        // fields and outcomes: a linear search beats hashing them.
        let mut names: Vec<String> = Vec::new();
        let id = |s: &str, names: &mut Vec<String>| -> u32 {
            match names.iter().position(|n| n == s) {
                Some(i) => i as u32,
                None => {
                    names.push(s.to_owned());
                    names.len() as u32 - 1
                }
            }
        };
        let lines = events
            .iter()
            .map(|ev| ChunkLine {
                action: ev.action,
                subject: subject(ev),
                operator: ev.operator.as_deref().map(|o| id(o, &mut names)),
                operator_verified: ev.operator_verified,
                purpose: id(&ev.purpose, &mut names),
                purpose_code: ev.purpose_code.as_deref().map(|c| id(c, &mut names)),
                datasets: ev.datasets.iter().map(|d| id(d, &mut names)).collect(),
                fields: ev.fields.iter().map(|f| id(f, &mut names)).collect(),
                outcome: id(&ev.outcome, &mut names),
                grants: ev.grants.iter().map(|g| id(g, &mut names)).collect(),
            })
            .collect();
        StoredChunk { at, department: head.department.clone(), names, lines, hash: [0; 32] }
    }

    /// The stored bytes: marker 6, then bincode.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 48 * self.lines.len());
        out.push(ENTRY_FORMAT_CHUNK_V6);
        encode_into(&mut out, self);
        out
    }
}

/// How many events from the start of `events` go into one stored entry:
/// a run of one department's (up to [`MAX_CHUNK_LINES`]).
pub(crate) fn run_len(events: &[AuditEvent]) -> usize {
    let Some(first) = events.first() else { return 0 };
    events.iter().take(MAX_CHUNK_LINES).take_while(|e| e.department == first.department).count()
}

/// What an index key points at: the stored entry (`first`) and which of
/// its uses (see the module's doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IndexTarget {
    pub first: u64,
    pub uses: std::ops::RangeInclusive<u64>,
}

impl IndexTarget {
    /// From an index key of kind `kind` (`k`, `d` or `t`), its sequence
    /// number and its value.
    pub(crate) fn of(kind: u8, seq: u64, value: &[u8]) -> Result<IndexTarget> {
        if value.is_empty() {
            return Ok(IndexTarget { first: seq, uses: seq..=seq });
        }
        let other = seq_from_key(value)?;
        Ok(if kind == b'k' {
            IndexTarget { first: other, uses: seq..=seq }
        } else {
            IndexTarget { first: seq, uses: seq..=other }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{PersonKey, SubjectKey};

    fn pid(k: &SubjectKey) -> Pid {
        let mut p = [0u8; crate::pseudo::PID_LEN];
        p.iter_mut().zip(k.as_bytes().iter().rev()).for_each(|(a, b)| *a = *b);
        Pid(p)
    }

    /// A chunk written straight from compact uses reads back as the same
    /// uses as one made from their events: one decoder, one meaning.
    #[test]
    fn chunks_from_compact_uses_read_as_chunks_from_events() {
        let d = time::Date::from_calendar_date(1980, time::Month::May, 4).unwrap();
        let key = |i: u16| SubjectKey::Person(PersonKey::from_parts("110105", d, i).unwrap());
        let events: Vec<AuditEvent> = (0..6u16)
            .map(|i| AuditEvent {
                department: "counter".into(),
                operator: (i % 2 == 0).then(|| format!("op-{i}")),
                operator_verified: i % 3 == 0,
                purpose: "benefit check".into(),
                purpose_code: (i != 4).then(|| "benefit".into()),
                action: if i == 5 { Action::Denied } else { Action::BatchVerify },
                key: (i != 3).then(|| key(i)),
                datasets: if i == 2 { vec![] } else { vec!["hukou".into()] },
                fields: (0..i % 3).map(|f| format!("f{f}")).collect(),
                outcome: ["match", "mismatch", "not_found"][i as usize % 3].into(),
                key_mapped: i % 2 == 1,
                pid: None,
                rejected_lines: 0,
                // Grants named by some uses, one of them by two.
                grants: match i {
                    1 => vec!["g-a".into()],
                    4 => vec!["g-a".into(), "g-b".into()],
                    _ => Vec::new(),
                },
            })
            .collect();
        let uses = Uses::of_events(&events, pid);
        let ours = Stored::decode(&encode_uses(77, &uses, uses.rows())).unwrap();
        let theirs = StoredChunk::of(77, &events, |e| e.key.map(|k| (k.doc_type().as_u8(), pid(&k))));
        assert_eq!(ours.span(), 6);
        let lines = ours.into_lines();
        assert_eq!(lines, Stored::Chunk(theirs.clone()).into_lines());
        let grants: Vec<Vec<String>> = lines.iter().map(|l| l.grants.clone()).collect();
        assert_eq!(grants[1], ["g-a"]);
        assert_eq!(grants[4], ["g-a", "g-b"]);

        // A chunk as format 4 wrote it (no grants) reads as the same uses,
        // naming none.
        let old = StoredChunkV4 {
            at: theirs.at,
            department: theirs.department.clone(),
            names: theirs.names.clone(),
            lines: theirs
                .lines
                .iter()
                .map(|l| ChunkLineV4 {
                    action: l.action,
                    subject: l.subject,
                    operator: l.operator,
                    operator_verified: l.operator_verified,
                    purpose: l.purpose,
                    purpose_code: l.purpose_code,
                    datasets: l.datasets.clone(),
                    fields: l.fields.clone(),
                    outcome: l.outcome,
                })
                .collect(),
            hash: theirs.hash,
        };
        let mut bytes = vec![ENTRY_FORMAT_CHUNK];
        encode_into(&mut bytes, &old);
        let read = Stored::decode(&bytes).unwrap();
        assert_eq!(read.index_entries(5), Stored::Chunk(theirs).index_entries(5));
        let without: Vec<StoredEntry> = lines.into_iter().map(|l| StoredEntry { grants: Vec::new(), ..l }).collect();
        assert_eq!(read.into_lines(), without);
    }
}
