//! Bulk loading of a whole dataset through SST files: the initial load of
//! a province's records (tens of millions), which the write path would
//! apply one synced batch at a time. The result is what the write path
//! would have stored for the same updates into an empty dataset: the same
//! pseudonyms, sealed key mappings, record and change-log encodings, dense
//! sequence numbers after the last one in use, per-dataset counters and
//! usage counter, so a server started afterwards serves the records, feeds
//! the changes and detects stale updates as if they had come through
//! `POST /v1/datasets/{id}/updates`.
//!
//! How it goes:
//! 1. Staging, on the caller's threads ([`Stager`]): each validated update
//!    becomes one sort item holding its pseudonym, version, line number,
//!    sealed key mapping and stored fields (already pseudonymized), plus one
//!    item per key-typed field value for that key's mapping. Items never
//!    hold a real key, so spilled runs are as separated as the store.
//! 2. Sorting in bounded memory ([`sort::Sorter`]), by pseudonym, then
//!    version (highest first), then line.
//! 3. Writing, with the store's writer held ([`Store::bulk_commit`]): the
//!    sorted stream is in the key order of both `records` (`pid ‖ dataset`)
//!    and `keymap` (`pid`); numbering the records in that order makes the
//!    `changes` keys ascending too, so all three families' SST files are
//!    written in one pass, records on one thread and changes with key
//!    mappings on another.
//! 4. Ingestion of the files (key mappings, then changes, then records),
//!    then the counters and last sequence number in one synced write.
//!
//! Semantics, as on the write path: of several lines for one key, the
//! highest version is kept and, among equal versions, the first line (the
//! write path would find the later ones stale); the others are counted as
//! superseded and leave no history, since they would never have been
//! current at any distinct time. A delete stores a tombstone. Only an
//! empty dataset (no update ever applied) is loaded; for any other,
//! updates go through the write path, which owns the merge with what is
//! stored.
//!
//! Crash safety: ingestion is atomic per family, not across families, so
//! before the first file is ingested a marker naming the staged files and
//! the counters goes into `meta` (synced), and it is cleared in the final
//! counters write. Staged files are ingested through hard links, so they
//! survive ingestion; [`finish_interrupted`] re-ingests them (ingesting a
//! file twice stores the same values again) and writes the counters. Until
//! then a store with a marker holds part of a load, never a change to what
//! was there before.

pub mod sort;

use crate::codec::{decode, encode};
use crate::engine::{Cf, Durability, SstIngest, SstWriter, WriteBatch};
use crate::keys::{Subject, SubjectKey};
use crate::pseudo::Pid;
use crate::record::{encode_change, encode_fields, encode_record, seq_key, ChangeEntry};
use crate::store::{BulkApplied, BulkSlot, DatasetStats, Store, Update, UpdateOp};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Sort key of an item: pseudonym (16), kind (1), inverted version (8, so
/// the highest version sorts first), line number (8).
pub const KEY_LEN: usize = 33;
const KIND_RECORD: u8 = 0;
const KIND_KEYREF: u8 = 1;
const OP_UPSERT: u8 = 0;
const OP_DELETE: u8 = 1;
// Item layout after the key: doc type, then for a record the op, the
// sealed mapping's length and bytes and the encoded stored fields (upserts
// only); for a key reference the sealed mapping.
const AT_DOC: usize = KEY_LEN;
const AT_OP: usize = KEY_LEN + 1;
const AT_SEALED_LEN: usize = KEY_LEN + 2;
const AT_SEALED: usize = KEY_LEN + 3;

/// The `meta` key of an unfinished load's marker.
const MARKER_KEY: &[u8] = crate::engine::BULK_LOAD_MARKER;
/// Items handed from the merge to the file writers at once.
const BATCH_ITEMS: usize = 4096;

/// The SST ingestion of the engine under `store`; an engine without it
/// (the memory engine) cannot take a bulk load.
fn sst_ingest_of(store: &Store) -> Result<&dyn SstIngest> {
    store.engine().sst_ingest().ok_or(Error::Unsupported("bulk loading needs an engine that ingests SST files"))
}

/// How much memory and which scratch space a load may use.
#[derive(Clone, Debug)]
pub struct BulkOptions {
    /// Bytes of staged items kept in memory before a sorted run is spilled.
    pub memory_bytes: usize,
    /// Where sort runs and staged SST files go (a private directory is made
    /// inside). On the data directory's file system, ingestion links the
    /// files instead of copying them.
    pub tmp_dir: PathBuf,
    /// SST files are cut at about this size.
    pub sst_file_bytes: u64,
    /// About how many bytes of input the load will stage (the input file's
    /// size), so that the sorter's memory is reserved once instead of being
    /// grown by doubling: each doubling copies the arena into freshly
    /// faulted pages, which took a quarter of a load's CPU.
    pub expected_bytes: u64,
}

impl BulkOptions {
    pub fn new(tmp_dir: impl Into<PathBuf>) -> Self {
        BulkOptions { memory_bytes: 1 << 30, tmp_dir: tmp_dir.into(), sst_file_bytes: 256 << 20, expected_bytes: 0 }
    }
}

/// Staged items of a chunk of input, framed `[len: u32 LE][item]`; built by
/// a [`Stager`] on any thread and handed to [`BulkLoader::push`].
#[derive(Debug, Default)]
pub struct Staged {
    buf: Vec<u8>,
    records: u64,
}

impl Staged {
    pub fn new() -> Self {
        Self::default()
    }

    /// Updates staged.
    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.records = 0;
    }

    fn begin(&mut self) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        at
    }

    fn end(&mut self, at: usize) {
        let len = (self.buf.len() - at - 4) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }

    fn items(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = self.buf.as_slice();
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let (item, tail) = tail.split_at(u32::from_le_bytes(*len) as usize);
            rest = tail;
            Some(item)
        })
    }
}

/// Turns validated updates into sort items; cheap to copy, shared by the
/// staging threads.
#[derive(Clone, Copy)]
pub struct Stager<'s> {
    store: &'s Store,
    dataset: &'s str,
    subject: Subject,
}

impl std::fmt::Debug for Stager<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stager").field("dataset", &self.dataset).finish()
    }
}

impl Stager<'_> {
    /// Stages update `u` from input line `line`: a line number, or any
    /// number that grows with the position in the input; it breaks ties
    /// between equal versions (the first line wins).
    pub fn stage(&self, u: &Update, line: u64, out: &mut Staged) -> Result<()> {
        if u.dataset != self.dataset || u.key.subject() != self.subject {
            return Err(Error::Invalid(format!("an update of {} in a bulk load of {}", u.dataset, self.dataset)));
        }
        let (pid, sealed) = self.store.sealed_mapping(&u.key);
        let at = out.begin();
        push_key(&mut out.buf, &pid, KIND_RECORD, !u.version, line, u.key);
        let mut refs: Vec<SubjectKey> = Vec::new();
        match &u.op {
            UpdateOp::Delete => push_sealed(&mut out.buf, OP_DELETE, &sealed),
            UpdateOp::Upsert(fields) => {
                push_sealed(&mut out.buf, OP_UPSERT, &sealed);
                // Encoded once here; the writers splice them into both the
                // record and the change-log entry.
                encode_fields(&mut out.buf, fields, &mut |k: &SubjectKey| {
                    refs.push(*k);
                    self.store.pseudonym(k)
                });
            }
        }
        out.end(at);
        // Key-typed values: their subjects need a mapping too, as on the
        // write path.
        for k in refs {
            let (p, s) = self.store.sealed_mapping(&k);
            let at = out.begin();
            push_key(&mut out.buf, &p, KIND_KEYREF, 0, line, k);
            out.buf.extend_from_slice(&s);
            out.end(at);
        }
        out.records += 1;
        Ok(())
    }
}

fn push_key(buf: &mut Vec<u8>, pid: &Pid, kind: u8, inv_version: u64, line: u64, key: SubjectKey) {
    buf.extend_from_slice(&pid.0);
    buf.push(kind);
    buf.extend_from_slice(&inv_version.to_be_bytes());
    buf.extend_from_slice(&line.to_be_bytes());
    buf.push(key.doc_type().as_u8());
}

fn push_sealed(buf: &mut Vec<u8>, op: u8, sealed: &[u8]) {
    buf.push(op);
    // A sealed mapping is a format byte, at most 19 bytes of key and a
    // 16-byte tag.
    buf.push(u8::try_from(sealed.len()).expect("sealed mapping under 256 bytes"));
    buf.extend_from_slice(sealed);
}

/// What a finished load did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BulkSummary {
    /// Updates staged (valid lines).
    pub staged: u64,
    /// Records stored (one per key; tombstones included), each with a
    /// change-log entry.
    pub applied: u64,
    /// Of them, live records (not deletes).
    pub live: u64,
    /// Lines that lost to another line for the same key (lower version, or
    /// equal version on a later line).
    pub superseded: u64,
    /// Sequence numbers given to the load (`first_seq..=last_seq`; empty
    /// when nothing was applied).
    pub first_seq: u64,
    pub last_seq: u64,
    pub sort: sort::SortStats,
    /// Size of the SST files ingested.
    pub sst_bytes: u64,
}

/// One bulk load of one dataset: stage and push updates, then
/// [`BulkLoader::finish`].
pub struct BulkLoader<'s> {
    store: &'s Store,
    sst: &'s dyn SstIngest,
    dataset: &'s str,
    subject: Subject,
    sorter: sort::Sorter<KEY_LEN>,
    opts: BulkOptions,
    staged: u64,
    /// Stops ingestion before this family, as a crash would (recovery tests).
    #[cfg(test)]
    interrupt_before: Option<Cf>,
}

impl std::fmt::Debug for BulkLoader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkLoader").field("dataset", &self.dataset).field("staged", &self.staged).finish()
    }
}

fn refuse_unless_empty(dataset: &str, stats: &DatasetStats) -> Result<()> {
    if stats.updates == 0 {
        return Ok(());
    }
    Err(Error::Bulk(format!(
        "dataset {dataset} already holds data ({} records, {} updates applied); a bulk load only fills an empty \
         dataset: send further updates to POST /v1/datasets/{dataset}/updates, or load into a new data directory",
        stats.records, stats.updates
    )))
}

impl<'s> BulkLoader<'s> {
    /// Starts a load of `dataset`; refuses a store whose engine cannot
    /// ingest SST files, an unknown or non-empty dataset, and a store with
    /// an unfinished load.
    pub fn new(store: &'s Store, dataset: &str, opts: BulkOptions) -> Result<Self> {
        let sst = sst_ingest_of(store)?;
        let ds =
            store.catalog().dataset(dataset).ok_or_else(|| Error::Invalid(format!("unknown dataset {dataset}")))?;
        if let Some(i) = interrupted(store)? {
            return Err(Error::Bulk(format!(
                "the bulk load of dataset {} was interrupted and must be finished first",
                i.dataset
            )));
        }
        refuse_unless_empty(&ds.id, &store.dataset_stats(&ds.id))?;
        let mut sorter = sort::Sorter::new(&opts.tmp_dir, opts.memory_bytes)?;
        sorter.reserve(opts.expected_bytes);
        Ok(BulkLoader {
            store,
            sst,
            dataset: &ds.id,
            subject: ds.subject,
            sorter,
            opts,
            staged: 0,
            #[cfg(test)]
            interrupt_before: None,
        })
    }

    /// A stager for this load's dataset, for any number of threads.
    pub fn stager(&self) -> Stager<'s> {
        Stager { store: self.store, dataset: self.dataset, subject: self.subject }
    }

    /// Adds staged items; spills a sorted run when the memory budget is used up.
    pub fn push(&mut self, staged: &Staged) -> Result<()> {
        for item in staged.items() {
            self.sorter.push(item)?;
        }
        self.staged += staged.records;
        Ok(())
    }

    /// Updates pushed so far.
    pub fn staged(&self) -> u64 {
        self.staged
    }

    /// Sorts, writes and ingests everything pushed and updates the
    /// counters; `progress` is told how many sorted records were written.
    pub fn finish(self, progress: &mut dyn FnMut(u64)) -> Result<BulkSummary> {
        #[cfg(test)]
        let stop_before = self.interrupt_before;
        #[cfg(not(test))]
        let stop_before = None;
        let BulkLoader { store, sst, dataset, sorter, opts, staged, .. } = self;
        let mut sorted = sorter.finish()?;
        let sort_stats = sorted.stats();
        let staging = tempfile::Builder::new().prefix(".basedata-bulk-").tempdir_in(&opts.tmp_dir)?;
        // Absolute, so that a restart from anywhere finds the files.
        let staging_path = staging.path().canonicalize()?;
        let mut marked = false;
        let summary = store.bulk_commit(dataset, |slot| {
            refuse_unless_empty(dataset, &slot.stats)?;
            let w = write_files(sst, &mut sorted, dataset, slot, &staging_path, opts.sst_file_bytes, progress)?;
            let mut summary = BulkSummary {
                staged,
                applied: w.applied,
                live: w.live,
                superseded: w.superseded,
                first_seq: slot.first_seq,
                last_seq: slot.first_seq + w.applied - 1,
                sort: sort_stats,
                sst_bytes: w.bytes,
            };
            if w.applied == 0 {
                summary.first_seq = 0;
                summary.last_seq = 0;
                let none =
                    BulkApplied { last_seq: slot.first_seq - 1, committed_at: slot.committed_at, ..Default::default() };
                return Ok((none, WriteBatch::new(), summary));
            }
            let name = |p: &PathBuf| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let marker = Marker {
                dataset: dataset.to_owned(),
                dir: staging_path.to_string_lossy().into_owned(),
                before: slot.stats,
                first_seq: slot.first_seq,
                last_seq: summary.last_seq,
                applied: w.applied,
                live: w.live,
                committed_at: slot.committed_at,
                keymap: w.keymap.iter().map(name).collect(),
                changes: w.changes.iter().map(name).collect(),
                records: w.records.iter().map(name).collect(),
            };
            // The files are synced by their writers; their names too,
            // before the marker points at them.
            std::fs::File::open(&staging_path)?.sync_all()?;
            let mut b = WriteBatch::new();
            b.put(Cf::Meta, MARKER_KEY, encode(&marker));
            store.engine().write(b, Durability::Sync)?;
            // From here on the staged files are what a restart finishes
            // the load from: never removed on an error.
            marked = true;
            ingest(sst, &marker, stop_before)?;
            let mut clear = WriteBatch::new();
            clear.delete(Cf::Meta, MARKER_KEY);
            let done = BulkApplied {
                applied: w.applied,
                live: w.live,
                last_seq: summary.last_seq,
                committed_at: slot.committed_at,
            };
            Ok((done, clear, summary))
        });
        if summary.is_err() && marked {
            let _ = staging.keep();
        }
        summary
    }
}

/// A load interrupted after its files were staged (see the module notes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interrupted {
    pub dataset: String,
    pub applied: u64,
    /// Where its staged files are.
    pub dir: PathBuf,
}

#[derive(Debug, bincode::Encode, bincode::Decode)]
struct Marker {
    dataset: String,
    dir: String,
    /// The dataset's counters when the load began.
    before: DatasetStats,
    first_seq: u64,
    last_seq: u64,
    applied: u64,
    live: u64,
    committed_at: i64,
    keymap: Vec<String>,
    changes: Vec<String>,
    records: Vec<String>,
}

impl Marker {
    fn files(&self) -> [(Cf, Vec<PathBuf>); 3] {
        let dir = Path::new(&self.dir);
        let paths = |names: &[String]| names.iter().map(|n| dir.join(n)).collect::<Vec<_>>();
        // Mappings first: alone they reveal nothing and change no answer;
        // the change log before the records it announces.
        [(Cf::KeyMap, paths(&self.keymap)), (Cf::Changes, paths(&self.changes)), (Cf::Records, paths(&self.records))]
    }
}

fn read_marker(store: &Store) -> Result<Option<Marker>> {
    match store.engine().get(Cf::Meta, MARKER_KEY)? {
        Some(b) => decode::<Marker>("bulk load marker", &b).map(Some),
        None => Ok(None),
    }
}

/// The unfinished load of this store, if one was interrupted.
pub fn interrupted(store: &Store) -> Result<Option<Interrupted>> {
    Ok(read_marker(store)?.map(|m| Interrupted { dataset: m.dataset, applied: m.applied, dir: PathBuf::from(m.dir) }))
}

/// Finishes an interrupted load from its staged files: ingests them again
/// and writes the counters. Refuses when the files are gone or when the
/// store was written to since (its sequence numbers or the dataset's
/// counters moved), since the load's numbers may then be taken.
pub fn finish_interrupted(store: &Store) -> Result<Option<Interrupted>> {
    let Some(m) = read_marker(store)? else { return Ok(None) };
    let sst = sst_ingest_of(store)?;
    let lost = || {
        Error::Bulk(format!(
            "the bulk load of dataset {} was interrupted and its staged files in {} are incomplete; restore the data \
             directory from a backup",
            m.dataset, m.dir
        ))
    };
    if m.files().iter().flat_map(|(_, f)| f).any(|p| !p.is_file()) {
        return Err(lost());
    }
    let moved_on = || {
        Error::Bulk(format!(
            "the store was written to after the bulk load of dataset {} was interrupted; restore the data directory \
             from a backup",
            m.dataset
        ))
    };
    store.bulk_commit(&m.dataset, |slot| {
        if slot.stats != m.before {
            return Err(moved_on());
        }
        // Either no change of the load was ingested and nothing else took
        // its numbers, or all were (ingestion of a family is atomic) and
        // the last change is the load's.
        let untouched = slot.first_seq == m.first_seq;
        let changes_in = slot.first_seq == m.last_seq + 1
            && match store.engine().get(Cf::Changes, &seq_key(m.last_seq))? {
                Some(b) => {
                    let c = decode::<ChangeEntry>("change", &b)?;
                    c.dataset == m.dataset && c.committed_at == m.committed_at
                }
                None => false,
            };
        if !(untouched || changes_in) {
            return Err(moved_on());
        }
        ingest(sst, &m, None)?;
        let mut clear = WriteBatch::new();
        clear.delete(Cf::Meta, MARKER_KEY);
        let done = BulkApplied { applied: m.applied, live: m.live, last_seq: m.last_seq, committed_at: m.committed_at };
        Ok((done, clear, ()))
    })?;
    let _ = std::fs::remove_dir_all(&m.dir);
    Ok(Some(Interrupted { dataset: m.dataset, applied: m.applied, dir: PathBuf::from(m.dir) }))
}

/// Ingests the marker's files family by family. Each file is ingested
/// through a fresh hard link that the engine moves into the store, so the
/// staged file itself stays for a restart; where links are impossible
/// (another file system) the engine copies.
fn ingest(sst: &dyn SstIngest, m: &Marker, stop_before: Option<Cf>) -> Result<()> {
    for (cf, files) in m.files() {
        if stop_before == Some(cf) {
            return Err(Error::Bulk(format!("ingestion stopped before {}", cf.name())));
        }
        if files.is_empty() {
            continue;
        }
        let mut links = Vec::with_capacity(files.len());
        for f in &files {
            let link = f.with_extension("ingest");
            let _ = std::fs::remove_file(&link);
            if std::fs::hard_link(f, &link).is_err() {
                break;
            }
            links.push(link);
        }
        if links.len() == files.len() {
            sst.ingest(cf, &links, true)?;
        } else {
            for l in &links {
                let _ = std::fs::remove_file(l);
            }
            sst.ingest(cf, &files, false)?;
        }
    }
    Ok(())
}

/// Sorted items on their way to the file writers: winners carry their
/// sequence number, key references 0.
struct OutBatch {
    buf: Vec<u8>,
    items: Vec<(usize, usize, u64)>,
}

impl OutBatch {
    fn new() -> Self {
        OutBatch { buf: Vec::with_capacity(BATCH_ITEMS * 256), items: Vec::with_capacity(BATCH_ITEMS) }
    }

    fn cleared(mut self) -> Self {
        self.buf.clear();
        self.items.clear();
        self
    }

    fn push(&mut self, item: &[u8], seq: u64) {
        self.items.push((self.buf.len(), item.len(), seq));
        self.buf.extend_from_slice(item);
    }

    fn iter(&self) -> impl Iterator<Item = (&[u8], u64)> {
        self.items.iter().map(|&(off, len, seq)| (&self.buf[off..off + len], seq))
    }
}

#[derive(Debug, Default)]
struct Written {
    applied: u64,
    live: u64,
    superseded: u64,
    records: Vec<PathBuf>,
    changes: Vec<PathBuf>,
    keymap: Vec<PathBuf>,
    bytes: u64,
}

/// Writes the SST files of the sorted stream: the calling thread merges,
/// drops superseded lines and numbers the records; one thread writes
/// `records`, another `changes` and `keymap`.
fn write_files(
    sst: &dyn SstIngest,
    sorted: &mut sort::Sorted<KEY_LEN>,
    dataset: &str,
    slot: &BulkSlot,
    dir: &Path,
    sst_bytes: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<Written> {
    let (rtx, rrx) = crossbeam::channel::bounded::<Arc<OutBatch>>(4);
    let (ctx, crx) = crossbeam::channel::bounded::<Arc<OutBatch>>(4);
    std::thread::scope(|s| {
        let named = |name: &str| std::thread::Builder::new().name(name.to_owned());
        let records = named("load-records").spawn_scoped(s, move || -> Result<(Vec<PathBuf>, u64)> {
            let mut out = SstSeries::new(sst, Cf::Records, dir, sst_bytes);
            let mut key = Vec::with_capacity(16 + dataset.len());
            let mut val = Vec::with_capacity(1024);
            for batch in rrx {
                for (item, seq) in batch.iter() {
                    if seq == 0 {
                        continue;
                    }
                    key.clear();
                    key.extend_from_slice(&item[..16]);
                    key.extend_from_slice(dataset.as_bytes());
                    record_value(&mut val, item, seq, slot.committed_at);
                    out.put(&key, &val)?;
                }
            }
            out.finish()
        })?;
        let changes = named("load-changes").spawn_scoped(s, move || -> Result<(Vec<PathBuf>, Vec<PathBuf>, u64)> {
            let mut changes = SstSeries::new(sst, Cf::Changes, dir, sst_bytes);
            let mut keymap = SstSeries::new(sst, Cf::KeyMap, dir, sst_bytes);
            let mut val = Vec::with_capacity(1024);
            let mut last_pid = [0u8; 16];
            let mut any = false;
            for batch in crx {
                for (item, seq) in batch.iter() {
                    if seq != 0 {
                        change_value(&mut val, item, dataset, slot.committed_at);
                        changes.put(&seq_key(seq), &val)?;
                    }
                    // A subject's record and the references to it carry
                    // the same mapping (sealing is deterministic): one entry.
                    if !any || item[..16] != last_pid {
                        keymap.put(&item[..16], sealed_of(item))?;
                        last_pid.copy_from_slice(&item[..16]);
                        any = true;
                    }
                }
            }
            let (c, cb) = changes.finish()?;
            let (k, kb) = keymap.finish()?;
            Ok((c, k, cb + kb))
        })?;
        let produced = produce(sorted, slot.first_seq, &rtx, &ctx, progress);
        drop((rtx, ctx));
        let records = joined(records.join());
        let changes = joined(changes.join());
        // A writer's own error explains a producer's failed send.
        let (rfiles, rbytes) = records?;
        let (cfiles, kfiles, cbytes) = changes?;
        let mut w = produced?;
        w.records = rfiles;
        w.changes = cfiles;
        w.keymap = kfiles;
        w.bytes = rbytes + cbytes;
        Ok(w)
    })
}

fn joined<T>(r: std::thread::Result<Result<T>>) -> Result<T> {
    r.unwrap_or_else(|_| Err(Error::Bulk("a file writer thread panicked".into())))
}

/// Numbers the sorted records: the first of a pseudonym wins (highest
/// version, then first line) and takes the next sequence number; the
/// others are superseded. Key references pass with 0.
struct Numbering {
    next_seq: u64,
    last_pid: Option<[u8; 16]>,
    w: Written,
}

impl Numbering {
    fn take(&mut self, item: &[u8]) -> Option<u64> {
        if item[16] != KIND_RECORD {
            return Some(0);
        }
        let pid: [u8; 16] = item[..16].try_into().expect("16 bytes");
        if self.last_pid == Some(pid) {
            self.w.superseded += 1;
            return None;
        }
        self.last_pid = Some(pid);
        self.w.applied += 1;
        self.w.live += (item[AT_OP] == OP_UPSERT) as u64;
        self.next_seq += 1;
        Some(self.next_seq - 1)
    }
}

fn produce(
    sorted: &mut sort::Sorted<KEY_LEN>,
    first_seq: u64,
    rtx: &crossbeam::channel::Sender<Arc<OutBatch>>,
    ctx: &crossbeam::channel::Sender<Arc<OutBatch>>,
    progress: &mut dyn FnMut(u64),
) -> Result<Written> {
    let mut n = Numbering { next_seq: first_seq, last_pid: None, w: Written::default() };
    let gone = || Error::Bulk("a file writer stopped".into());
    let mut send = |b: Arc<OutBatch>, n: &Numbering| -> Result<()> {
        rtx.send(b.clone()).map_err(|_| gone())?;
        ctx.send(b).map_err(|_| gone())?;
        progress(n.w.applied + n.w.superseded);
        Ok(())
    };
    if sorted.in_memory() {
        // The sorted buckets go to the writers as they are.
        while let Some(block) = sorted.next_block() {
            let mut items = Vec::with_capacity(block.items.len());
            for &(off, len) in &block.items {
                if let Some(seq) = n.take(&block.bytes[off..off + len]) {
                    items.push((off, len, seq));
                }
            }
            send(Arc::new(OutBatch { buf: block.bytes, items }), &n)?;
        }
        return Ok(n.w);
    }
    let mut batch = OutBatch::new();
    // Batches come back once both writers dropped them: reused, so that
    // no fresh (page-faulting) memory is taken per batch.
    let mut sent: std::collections::VecDeque<Arc<OutBatch>> = std::collections::VecDeque::new();
    loop {
        let item = sorted.next()?;
        if let Some(item) = item {
            if let Some(seq) = n.take(item) {
                batch.push(item, seq);
            }
        }
        if batch.items.len() >= BATCH_ITEMS || (item.is_none() && !batch.items.is_empty()) {
            let reused = match sent.front() {
                Some(f) if Arc::strong_count(f) == 1 => sent.pop_front().and_then(|a| Arc::try_unwrap(a).ok()),
                _ => None,
            };
            let next = reused.map(OutBatch::cleared).unwrap_or_else(OutBatch::new);
            let b = Arc::new(std::mem::replace(&mut batch, next));
            send(b.clone(), &n)?;
            sent.push_back(b);
            if sent.len() > 16 {
                sent.pop_front();
            }
        }
        if item.is_none() {
            return Ok(n.w);
        }
    }
}

fn sealed_of(item: &[u8]) -> &[u8] {
    if item[16] == KIND_RECORD {
        let n = item[AT_SEALED_LEN] as usize;
        &item[AT_SEALED..AT_SEALED + n]
    } else {
        &item[AT_OP..]
    }
}

fn version_of(item: &[u8]) -> u64 {
    !u64::from_be_bytes(item[17..25].try_into().expect("8 bytes"))
}

/// The encoded fields of a record item, `None` for a delete.
fn fields_of(item: &[u8]) -> Option<&[u8]> {
    (item[AT_OP] == OP_UPSERT).then(|| &item[AT_SEALED + item[AT_SEALED_LEN] as usize..])
}

/// The stored record of a record item.
fn record_value(out: &mut Vec<u8>, item: &[u8], seq: u64, committed_at: i64) {
    encode_record(out, version_of(item), committed_at, seq, fields_of(item));
}

/// The change-log entry of a record item.
fn change_value(out: &mut Vec<u8>, item: &[u8], dataset: &str, committed_at: i64) {
    let pid: &[u8; 16] = item[..16].try_into().expect("16 bytes");
    encode_change(out, dataset, item[AT_DOC], pid, version_of(item), committed_at, fields_of(item));
}

/// SST files of one family, cut at about `max_bytes`.
struct SstSeries<'o> {
    sst: &'o dyn SstIngest,
    cf: Cf,
    dir: &'o Path,
    max_bytes: u64,
    cur: Option<Box<dyn SstWriter + 'o>>,
    puts: u64,
    files: Vec<PathBuf>,
}

impl<'o> SstSeries<'o> {
    fn new(sst: &'o dyn SstIngest, cf: Cf, dir: &'o Path, max_bytes: u64) -> Self {
        SstSeries { sst, cf, dir, max_bytes, cur: None, puts: 0, files: Vec::new() }
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let w = match &mut self.cur {
            Some(w) => w,
            None => {
                let path = self.dir.join(format!("{}-{:04}.sst", self.cf.name(), self.files.len() + 1));
                let w = self.sst.sst_writer(self.cf, &path)?;
                self.files.push(path);
                self.cur.insert(w)
            }
        };
        w.put(key, value)?;
        self.puts += 1;
        if self.puts % 1024 == 0 && w.file_size() >= self.max_bytes {
            if let Some(w) = self.cur.take() {
                w.finish()?;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(Vec<PathBuf>, u64)> {
        if let Some(w) = self.cur.take() {
            w.finish()?;
        }
        let mut bytes = 0;
        for f in &self.files {
            bytes += std::fs::metadata(f)?.len();
        }
        Ok((self.files, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Body, ChangeOp, StoredFields, StoredRecord, StoredValue};
    use crate::value::Value;

    fn item(op: u8, version: u64, fields: &StoredFields) -> Vec<u8> {
        let key = SubjectKey::parse(Subject::Person, "11010519491231002X").unwrap();
        let mut buf = Vec::new();
        push_key(&mut buf, &Pid([7; 16]), KIND_RECORD, !version, 3, key);
        push_sealed(&mut buf, op, &[1, 2, 3]);
        if op == OP_UPSERT {
            crate::codec::encode_into(&mut buf, fields);
        }
        buf
    }

    #[test]
    fn spliced_values_equal_the_stored_encodings() {
        let fields: StoredFields = vec![
            ("name".into(), StoredValue::Str("张三".into())),
            ("birth_date".into(), StoredValue::Date(2_433_282)),
            ("spouse".into(), StoredValue::Key { doc: 1, pid: Pid([3; 16]) }),
            ("photo".into(), StoredValue::Bytes(vec![0; 300])),
        ];
        for (version, seq, at) in [
            (1u64, 1u64, 0i64),
            (250, 251, -5),
            (70_000, 1 << 33, 1_763_000_000_000_000),
            (u64::MAX, u64::MAX - 1, i64::MIN),
        ] {
            for op in [OP_UPSERT, OP_DELETE] {
                let it = item(op, version, &fields);
                let live = op == OP_UPSERT;
                let body = if live { Body::Live(fields.clone()) } else { Body::Deleted };
                let mut got = Vec::new();
                record_value(&mut got, &it, seq, at);
                assert_eq!(got, encode(&StoredRecord { version, committed_at: at, seq, body }));
                change_value(&mut got, &it, "hukou", at);
                let c = ChangeEntry {
                    dataset: "hukou".into(),
                    doc: 1,
                    pid: Pid([7; 16]),
                    op: if live { ChangeOp::Upsert } else { ChangeOp::Delete },
                    version,
                    committed_at: at,
                    fields: if live { fields.clone() } else { Vec::new() },
                };
                assert_eq!(got, encode(&c));
                assert_eq!(sealed_of(&it), &[1, 2, 3]);
                assert_eq!(version_of(&it), version);
            }
        }
    }

    #[test]
    fn sort_keys_order_versions_down_and_lines_up() {
        let key = SubjectKey::parse(Subject::Person, "11010519491231002X").unwrap();
        let k = |kind, v: u64, line| {
            let mut b = Vec::new();
            push_key(&mut b, &Pid([1; 16]), kind, !v, line, key);
            b[..KEY_LEN].to_vec()
        };
        assert!(k(KIND_RECORD, 5, 9) < k(KIND_RECORD, 4, 1), "higher version first");
        assert!(k(KIND_RECORD, 5, 1) < k(KIND_RECORD, 5, 2), "then the earlier line");
        assert!(k(KIND_RECORD, 0, 9) < k(KIND_KEYREF, 0, 0), "records before references");
    }

    // Loads through the real engine, compared with what the write path
    // would have stored.

    use crate::clock::ManualClock;
    use crate::engine::rocks::{RocksConfig, RocksEngine};
    use crate::keys::{EntityKey, PersonKey};
    use crate::store::Outcome;
    use crate::{Catalog, Secret};
    use std::collections::BTreeMap;

    fn person(i: u32) -> SubjectKey {
        let birth =
            time::Date::from_calendar_date(1950 + (i % 50) as i32, time::Month::March, 1 + (i % 28) as u8).unwrap();
        SubjectKey::Person(PersonKey::from_parts("440305", birth, (i % 1000) as u16).unwrap())
    }

    fn entity(i: u32) -> SubjectKey {
        SubjectKey::Entity(EntityKey::from_parts('9', '1', "440300", &format!("{:08}", 10_000_000 + i)).unwrap())
    }

    fn open(dir: &Path, clock: &Arc<ManualClock>) -> Store {
        let cfg = RocksConfig { block_cache_bytes: 8 << 20, ..Default::default() };
        let engine = Arc::new(RocksEngine::open(dir, &cfg).unwrap());
        Store::open(engine, &Secret::from_bytes([5; 32]), Arc::new(Catalog::builtin()), clock.clone()).unwrap()
    }

    fn upsert(ds: &str, key: SubjectKey, version: u64, name: &str) -> Update {
        Update {
            provider: None,
            link: None,
            dataset: ds.into(),
            key,
            version,
            op: UpdateOp::Upsert(vec![("name".into(), Value::Str(name.into()))]),
        }
    }

    fn load(store: &Store, ds: &str, updates: &[Update], tmp: &Path, memory: usize) -> Result<BulkSummary> {
        let opts = BulkOptions { memory_bytes: memory, sst_file_bytes: 64 << 10, ..BulkOptions::new(tmp) };
        let mut l = BulkLoader::new(store, ds, opts)?;
        let mut staged = Staged::new();
        for (i, u) in updates.iter().enumerate() {
            l.stager().stage(u, i as u64 + 1, &mut staged)?;
            if staged.records() == 100 {
                l.push(&staged)?;
                staged.clear();
            }
        }
        l.push(&staged)?;
        l.finish(&mut |_| {})
    }

    /// 400 persons; some get several lines (versions out of order, equal
    /// versions), some a delete last.
    fn person_updates() -> (Vec<Update>, BTreeMap<SubjectKey, (u64, Option<String>)>) {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut updates = Vec::new();
        let mut model: BTreeMap<SubjectKey, (u64, Option<String>)> = BTreeMap::new();
        for n in 0..600u32 {
            let key = person(rng.u32(0..400));
            let version = rng.u64(1..5);
            let u = if rng.u8(0..10) == 0 {
                Update { link: None, dataset: "hukou".into(), key, version, op: UpdateOp::Delete, provider: None }
            } else {
                upsert("hukou", key, version, &format!("line {n}"))
            };
            // The write path's rule, line by line: only a higher version applies.
            let applies = model.get(&key).is_none_or(|(v, _)| version > *v);
            if applies {
                let name = match &u.op {
                    UpdateOp::Upsert(_) => Some(format!("line {n}")),
                    UpdateOp::Delete => None,
                };
                model.insert(key, (version, name));
            }
            updates.push(u);
        }
        (updates, model)
    }

    fn check_against_model(s: &Store, model: &BTreeMap<SubjectKey, (u64, Option<String>)>, first_seq: u64) {
        let n = model.len() as u64;
        let mut seqs = Vec::new();
        for (key, (version, name)) in model {
            let got = s.get(key, "hukou", None).unwrap();
            match name {
                Some(name) => {
                    let r = got.expect("a live record");
                    assert_eq!((r.version, r.field("name")), (*version, Some(&Value::Str(name.clone()))));
                }
                None => assert!(got.is_none(), "a tombstone reads as nothing"),
            }
            seqs.push(s.record_seq(key, "hukou").unwrap().expect("every key has a record or tombstone"));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (first_seq..first_seq + n).collect::<Vec<_>>(), "one dense sequence number per key");
        let changes = s.changes(first_seq - 1, usize::MAX).unwrap();
        assert_eq!(changes.iter().map(|c| c.seq).collect::<Vec<_>>(), (first_seq..first_seq + n).collect::<Vec<_>>());
        for c in &changes {
            let (version, name) = &model[&c.key];
            assert_eq!(c.version, *version);
            assert_eq!(c.op, if name.is_some() { ChangeOp::Upsert } else { ChangeOp::Delete });
            assert_eq!(c.fields.first().map(|(_, v)| v.clone()), name.clone().map(Value::Str));
        }
        let live = model.values().filter(|(_, n)| n.is_some()).count() as u64;
        let st = s.dataset_stats("hukou");
        assert_eq!((st.records, st.updates), (live, n));
    }

    #[test]
    fn a_load_stores_what_the_write_path_would_in_memory_or_spilled() {
        let (updates, model) = person_updates();
        for memory in [64 << 20, 8 << 10] {
            let dir = tempfile::tempdir().unwrap();
            let clock = Arc::new(ManualClock::new(1_000_000));
            let data = dir.path().join("data");
            let s = open(&data, &clock);
            // Something committed before: the load numbers after it.
            s.apply(&[upsert("death", person(1), 1, "x")], Durability::Sync).unwrap();
            let sum = load(&s, "hukou", &updates, dir.path(), memory).unwrap();
            assert_eq!((sum.staged, sum.applied), (600, model.len() as u64));
            assert_eq!(sum.superseded, 600 - model.len() as u64);
            assert_eq!((sum.first_seq, sum.last_seq), (2, 1 + model.len() as u64));
            assert_eq!(sum.sort.runs > 0, memory < 1 << 20, "{sum:?}");
            assert!(sum.sst_bytes > 0);
            check_against_model(&s, &model, 2);
            assert_eq!(s.last_seq(), sum.last_seq);
            // Nothing is left behind in the scratch directory.
            let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(left, vec![std::ffi::OsString::from("data")]);

            // After a reopen: counters and numbers held; versions respected.
            drop(s);
            clock.advance(1);
            let s = open(&data, &clock);
            check_against_model(&s, &model, 2);
            let (key, (version, _)) = model.iter().next().unwrap();
            let out = s
                .apply(
                    &[upsert("hukou", *key, *version, "replay"), upsert("hukou", *key, version + 1, "newer")],
                    Durability::Sync,
                )
                .unwrap();
            assert_eq!(out, vec![Outcome::Stale { current: *version }, Outcome::Applied { seq: sum.last_seq + 1 }]);
            assert_eq!(s.dataset_stats("hukou").updates, model.len() as u64 + 1);
        }
    }

    #[test]
    fn key_typed_fields_get_their_mappings() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(5));
        let s = open(&dir.path().join("data"), &clock);
        let updates: Vec<Update> = (0..50)
            .map(|i| Update {
                provider: None,
                link: None,
                dataset: "market_registration".into(),
                key: entity(i),
                version: 1,
                op: UpdateOp::Upsert(vec![
                    ("name".into(), Value::Str(format!("公司{i}"))),
                    ("legal_representative_id".into(), Value::Key(person(1000 + i % 7))),
                ]),
            })
            .collect();
        let sum = load(&s, "market_registration", &updates, dir.path(), 1 << 20).unwrap();
        assert_eq!(sum.applied, 50);
        for i in 0..50 {
            let r = s.get(&entity(i), "market_registration", None).unwrap().unwrap();
            assert_eq!(r.field("legal_representative_id"), Some(&Value::Key(person(1000 + i % 7))));
        }
        assert_eq!(s.changes(0, 100).unwrap().len(), 50);
    }

    #[test]
    fn non_empty_datasets_and_other_engines_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(5));
        let s = open(&dir.path().join("data"), &clock);
        // An empty load changes nothing and leaves the dataset loadable.
        let sum = load(&s, "hukou", &[], dir.path(), 1 << 20).unwrap();
        assert_eq!((sum.applied, s.last_seq(), s.dataset_stats("hukou").updates), (0, 0, 0));
        load(&s, "hukou", &[upsert("hukou", person(1), 1, "a")], dir.path(), 1 << 20).unwrap();
        let e = load(&s, "hukou", &[upsert("hukou", person(2), 1, "b")], dir.path(), 1 << 20).unwrap_err();
        assert!(matches!(&e, Error::Bulk(m) if m.contains("POST /v1/datasets/hukou/updates")), "{e}");
        assert!(s.get(&person(2), "hukou", None).unwrap().is_none());
        let e = load(&s, "death", &[upsert("hukou", person(2), 1, "b")], dir.path(), 1 << 20).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "an update of another dataset: {e}");
        assert!(matches!(load(&s, "nope", &[], dir.path(), 1 << 20), Err(Error::Invalid(_))));

        let mem = Store::open(
            Arc::new(crate::engine::mem::MemEngine::new()),
            &Secret::from_bytes([5; 32]),
            Arc::new(Catalog::builtin()),
            clock,
        )
        .unwrap();
        assert!(matches!(load(&mem, "hukou", &[], dir.path(), 1 << 20), Err(Error::Unsupported(_))));
    }

    fn interrupted_load(
        dir: &Path,
        clock: &Arc<ManualClock>,
        before: Cf,
    ) -> (Store, BTreeMap<SubjectKey, (u64, Option<String>)>) {
        let (updates, model) = person_updates();
        let s = open(&dir.join("data"), clock);
        let opts = BulkOptions { memory_bytes: 1 << 20, ..BulkOptions::new(dir) };
        let mut l = BulkLoader::new(&s, "hukou", opts).unwrap();
        l.interrupt_before = Some(before);
        let mut staged = Staged::new();
        for (i, u) in updates.iter().enumerate() {
            l.stager().stage(u, i as u64 + 1, &mut staged).unwrap();
        }
        l.push(&staged).unwrap();
        assert!(matches!(l.finish(&mut |_| {}), Err(Error::Bulk(_))));
        let i = interrupted(&s).unwrap().expect("a marker");
        assert_eq!((i.dataset.as_str(), i.applied), ("hukou", model.len() as u64));
        assert!(i.dir.is_dir(), "staged files are kept");
        (s, model)
    }

    #[test]
    fn an_interrupted_load_is_finished_from_its_staged_files() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(5));
        let (s, model) = interrupted_load(dir.path(), &clock, Cf::Records);
        drop(s);
        // As after a crash: the change log is in, the records are not.
        let s = open(&dir.path().join("data"), &clock);
        assert_eq!(s.last_seq(), model.len() as u64);
        assert!(s.get(model.keys().next().unwrap(), "hukou", None).unwrap().is_none());
        let e = load(&s, "death", &[], dir.path(), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("must be finished first"), "{e}");
        let done = finish_interrupted(&s).unwrap().expect("finished");
        assert!(!done.dir.exists(), "staged files are removed once ingested");
        assert_eq!(interrupted(&s).unwrap(), None);
        assert_eq!(finish_interrupted(&s).unwrap(), None);
        check_against_model(&s, &model, 1);
        drop(s);
        let s = open(&dir.path().join("data"), &clock);
        check_against_model(&s, &model, 1);
    }

    /// A load that fails in process after its change log went in leaves
    /// the store refusing commits, which would take the load's numbers and
    /// make it unfinishable, until it is finished; then writes go on after
    /// it.
    #[test]
    fn a_load_stopped_half_way_holds_writes_until_it_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(5));
        let (s, model) = interrupted_load(dir.path(), &clock, Cf::Records);
        let e = s.apply(&[upsert("death", person(1), 1, "x")], Durability::Sync).unwrap_err();
        assert!(e.to_string().contains("writes are refused until it is finished"), "{e}");
        assert_eq!(s.last_seq(), 0, "nothing written");
        finish_interrupted(&s).unwrap().expect("finished in process");
        check_against_model(&s, &model, 1);
        s.apply(&[upsert("death", person(1), 1, "x")], Durability::Sync).unwrap();
        assert_eq!(s.last_seq(), model.len() as u64 + 1, "the next number after the load's");
    }

    /// A backup would hold the marker but not the staged files it names.
    #[test]
    fn a_store_with_an_unfinished_load_is_not_backed_up() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(5));
        let (s, _) = interrupted_load(dir.path(), &clock, Cf::Records);
        let to = dir.path().join("backups");
        let e = crate::backup::create(&**s.engine(), &to).unwrap_err();
        assert!(e.to_string().contains("interrupted and is not finished"), "{e}");
        assert!(!to.exists(), "nothing is written");
        finish_interrupted(&s).unwrap().expect("finished");
        crate::backup::create(&**s.engine(), &to).unwrap();
    }

    #[test]
    fn an_interrupted_load_is_not_finished_over_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(5));
        let (s, _) = interrupted_load(dir.path(), &clock, Cf::Changes);
        // A write that took the numbers the load was given.
        s.apply(&[upsert("death", person(1), 1, "x")], Durability::Sync).unwrap();
        let e = finish_interrupted(&s).unwrap_err();
        assert!(e.to_string().contains("written to after"), "{e}");
        assert!(interrupted(&s).unwrap().is_some(), "the marker stays for the operator");
    }
}
