//! The narrow storage-engine seam: ordered key-value column families with
//! atomic, optionally synced write batches.
//!
//! Everything above this trait (record model, pseudonymization, change log,
//! audit) is engine-agnostic. Two engines implement it: [`rocks::RocksEngine`]
//! for production and [`mem::MemEngine`] for tests and tools; one
//! conformance suite (`conformance`) runs against both, so the seam stays
//! honest. The trait deliberately knows nothing about records or keys.
//!
//! What only some engines can do is a capability of its own (in
//! `capability`): SST files written outside the engine and ingested
//! ([`SstIngest`], bulk loads), consistent on-disk copies of a live store
//! ([`Checkpoint`], backups) and typed statistics ([`EngineStats`],
//! metrics). [`Engine`] hands each out through an accessor that defaults to
//! "absent", so callers ask for what they need instead of naming an engine
//! type, and an engine without it is refused with a clear error rather than
//! a failed downcast.

#[cfg(feature = "rocks")]
pub mod background;
mod capability;
#[cfg(feature = "rocks")]
pub mod journal;
pub mod mem;
#[cfg(feature = "rocks")]
pub mod rocks;

pub use capability::{Checkpoint, EngineStats, JournalStats, SstIngest, SstWriter, SLOW_SYNC};

use crate::Result;

/// Column families, one per purpose. The numeric order is irrelevant; the
/// names are stored on disk and must never change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// Store-wide metadata: format version, secret check, sequence numbers, counters.
    Meta,
    /// Pseudonym -> encrypted real key (the only place a real key is kept).
    KeyMap,
    /// Current record per (pseudonym, dataset). Subject-keyed.
    Records,
    /// Superseded record versions, for as-of reads. Subject-keyed.
    History,
    /// The change log, keyed by commit sequence number.
    Changes,
    /// The hash-chained audit log, keyed by audit sequence number.
    Audit,
    /// Secondary indexes over the audit log (by subject, department, time).
    AuditIndex,
    /// Batch comparison jobs: inputs, progress and results.
    Jobs,
    /// Governance state: grants, disputes, counters.
    Gov,
}

impl Cf {
    pub const ALL: [Cf; 9] = [
        Cf::Meta,
        Cf::KeyMap,
        Cf::Records,
        Cf::History,
        Cf::Changes,
        Cf::Audit,
        Cf::AuditIndex,
        Cf::Jobs,
        Cf::Gov,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Meta => "meta",
            Cf::KeyMap => "keymap",
            Cf::Records => "records",
            Cf::History => "history",
            Cf::Changes => "changes",
            Cf::Audit => "audit",
            Cf::AuditIndex => "audit_index",
            Cf::Jobs => "jobs",
            Cf::Gov => "gov",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Whether every key of this family starts with a subject's pseudonym
    /// ([`SUBJECT_PREFIX_LEN`] bytes), by which an engine may hash or
    /// filter it (RocksDB's memtables and prefix blooms of these families
    /// do).
    pub fn subject_keyed(self) -> bool {
        matches!(self, Cf::Records | Cf::History)
    }
}

/// Length of the subject prefix (a pseudonym) of every key of a
/// subject-keyed family ([`Cf::subject_keyed`]).
pub const SUBJECT_PREFIX_LEN: usize = 16;

/// Refuses a batch that writes a key its family cannot hold: a key of a
/// subject-keyed family shorter than the subject prefix, which an engine
/// hashing by that prefix would file under bytes it does not have. Every
/// engine checks it, so that none accepts what another would lose.
fn check_keys(batch: &WriteBatch) -> Result<()> {
    for op in batch.ops() {
        let (cf, keys) = match op {
            BatchOp::Put { cf, key, .. } | BatchOp::Delete { cf, key } => (cf, [key, key]),
            BatchOp::DeleteRange { cf, start, end } => {
                if start >= end {
                    return Err(crate::Error::Invalid(format!("an empty or reversed range of {} to delete", cf.name())));
                }
                (cf, [start, end])
            }
        };
        for key in keys {
            if cf.subject_keyed() && key.len() < SUBJECT_PREFIX_LEN {
                return Err(crate::Error::Invalid(format!(
                    "a key of {} is {} bytes; it must start with a {SUBJECT_PREFIX_LEN}-byte subject prefix",
                    cf.name(),
                    key.len()
                )));
            }
        }
    }
    Ok(())
}

/// One operation of a write batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    Put { cf: Cf, key: Vec<u8>, value: Vec<u8> },
    Delete { cf: Cf, key: Vec<u8> },
    /// Every key in `[start, end)`: one operation however many keys it
    /// removes (RocksDB keeps it as a single range tombstone), for cutting
    /// a log's head by retention.
    DeleteRange { cf: Cf, start: Vec<u8>, end: Vec<u8> },
}

/// An atomic group of writes: either all of them become visible or none.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
    bytes: usize,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        let (key, value) = (key.into(), value.into());
        self.bytes += key.len() + value.len();
        self.ops.push(BatchOp::Put { cf, key, value });
    }

    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        let key = key.into();
        self.bytes += key.len();
        self.ops.push(BatchOp::Delete { cf, key });
    }

    /// Deletes every key in `[start, end)` of `cf`. Its place among the
    /// batch's other operations is kept: a put after it in the range
    /// survives, one before it does not.
    pub fn delete_range(&mut self, cf: Cf, start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) {
        let (start, end) = (start.into(), end.into());
        self.bytes += start.len() + end.len();
        self.ops.push(BatchOp::DeleteRange { cf, start, end });
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Approximate payload size, for metrics and batch sizing.
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }

    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    pub fn into_ops(self) -> Vec<BatchOp> {
        self.ops
    }

    pub fn extend(&mut self, other: WriteBatch) {
        self.bytes += other.bytes;
        self.ops.extend(other.ops);
    }
}

/// Whether a write must be on stable storage before `write` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync the write-ahead log before returning: an acknowledged write
    /// survives a crash of the process or the machine.
    Sync,
    /// Leave it to the OS page cache (bulk loads that sync at the end).
    Buffered,
}

/// Owned key/value pair returned by scans.
pub type Kv = (Box<[u8]>, Box<[u8]>);

/// A scan result stream. Boxed so that the engine stays object-safe.
pub type KvIter<'a> = Box<dyn Iterator<Item = Result<Kv>> + 'a>;

/// The storage engine: few required methods, the rest defaulted.
pub trait Engine: Send + Sync + 'static {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Applies all operations atomically.
    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<()>;

    /// Keys in `[start, end)` (end `None` = to the last key), ascending, or
    /// descending when `reverse` is set.
    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: Option<&[u8]>, reverse: bool)
        -> Result<KvIter<'a>>;

    /// Point reads of many keys; engines override it with a batched read.
    fn multi_get(&self, cf: Cf, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|k| self.get(cf, k)).collect()
    }

    /// Persists memtables; a no-op where nothing is buffered.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// Bytes in the memtables that take writes now (not those already
    /// being flushed); 0 where nothing is buffered.
    fn unflushed_bytes(&self) -> u64 {
        0
    }

    /// Starts persisting the memtables in the background and returns at
    /// once; a no-op where nothing is buffered.
    fn flush_in_background(&self) -> Result<()> {
        Ok(())
    }

    /// Gives back the disk space of keys in `[start, end)` of `cf` that a
    /// write has already deleted, instead of waiting for the engine to
    /// come to them (RocksDB: table files wholly inside the range are
    /// dropped and the rest of it compacted). Changes nothing a read
    /// sees; a no-op where deleting frees space at once.
    fn reclaim(&self, _cf: Cf, _start: &[u8], _end: &[u8]) -> Result<()> {
        Ok(())
    }

    /// Sizes, counts and cache use of family `cf`, for metrics; a figure
    /// the engine does not keep is `None`.
    fn stats(&self, _cf: Cf) -> EngineStats {
        EngineStats::default()
    }

    /// What the engine's write-ahead journal has done, for metrics; `None`
    /// where the engine keeps none.
    fn journal_stats(&self) -> Option<JournalStats> {
        None
    }

    /// Puts `entries` (ascending, each key once) into `cf` as one sorted
    /// run, durable when it returns, where the engine can without its
    /// journal or a memtable (RocksDB: a table file ingested whole; the
    /// audit index's tail, `audit::tail`). No write in the journal may
    /// touch these keys, or a replay after a crash would shadow them.
    /// Default: one synced batch.
    fn put_sorted(&self, cf: Cf, entries: &mut dyn Iterator<Item = (&[u8], &[u8])>) -> Result<()> {
        let mut b = WriteBatch::new();
        for (k, v) in entries {
            b.put(cf, k, v);
        }
        if b.is_empty() {
            return Ok(());
        }
        self.write(b, Durability::Sync)
    }

    /// SST files written beside the engine and ingested whole (bulk loads);
    /// `None` where the engine has no such files.
    fn sst_ingest(&self) -> Option<&dyn SstIngest> {
        None
    }

    /// Consistent on-disk copies of the live store (backups); `None` where
    /// the engine keeps nothing on disk.
    fn checkpoint(&self) -> Option<&dyn Checkpoint> {
        None
    }

    /// The journal taking records of audited uses; `None` where the engine
    /// keeps no journal (uses are then written with their entries at once).
    fn use_log(&self) -> Option<&dyn UseLog> {
        None
    }
}

/// `meta` key: every record of audited uses up to this journal position
/// is in the audit trail (chained and indexed), written by whoever enters
/// them with the entries; a reopen hands back the records after it.
pub const USES_INDEXED: &[u8] = b"uses_indexed";

/// The `meta` key of an unfinished bulk load's marker (see `bulk`), which
/// a backup must not copy (see `backup`).
pub const BULK_LOAD_MARKER: &[u8] = b"bulk_load";

/// Format byte of a position kept in `meta` (a journal record's number,
/// or a log's sequence number; every stored value starts with one); the
/// position follows, big-endian.
pub const POSITION_FORMAT: u8 = 1;

/// A position as `meta` keeps it.
pub fn position_value(lsn: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(9);
    v.push(POSITION_FORMAT);
    v.extend_from_slice(&lsn.to_be_bytes());
    v
}

/// A position read back from `meta` (0 when absent).
pub fn position_of(what: &'static str, v: Option<&[u8]>) -> Result<u64> {
    match v {
        None => Ok(0),
        Some([POSITION_FORMAT, rest @ ..]) if rest.len() == 8 => {
            Ok(u64::from_be_bytes(rest.try_into().unwrap_or_default()))
        }
        Some(v) => Err(crate::Error::Corrupt { what, msg: format!("{} bytes, format {:?}", v.len(), v.first()) }),
    }
}

/// Records of audited uses in the engine's journal: durable there before
/// their answers leave, and entered into the audit trail (chain and
/// indexes) by the commit writer behind them (see `commit`).
pub trait UseLog: Send + Sync {
    /// Appends a record of uses; `queued` runs with its number before any
    /// later record is numbered, so what it queues is in journal order.
    fn append_uses(&self, payload: &[u8], queued: &mut dyn FnMut(u64)) -> Result<u64>;

    /// Returns once every record up to `lsn` is durable (blocks).
    fn sync_to(&self, lsn: u64) -> Result<()>;

    /// Runs `f` with the last record's number while no record is appended
    /// (so no `queued` of [`UseLog::append_uses`] runs meanwhile).
    fn with_last(&self, f: &mut dyn FnMut(u64));

    /// `records` more records of uses are in the audit trail, and with
    /// them every one up to `through` (what the writer wrote as
    /// [`USES_INDEXED`]): the journal may release them.
    fn indexed(&self, records: u64, through: u64);

    /// The records of uses the audit trail lacked at open, in journal
    /// order, with their numbers; taken once.
    fn take_unindexed(&self) -> Vec<(u64, Vec<u8>)>;

    /// Records of uses appended (or found at open) and not yet in the
    /// audit trail.
    fn unentered(&self) -> u64;
}

/// The smallest key greater than every key starting with `prefix`, or `None`
/// when no such key exists (all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last != 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod conformance;
