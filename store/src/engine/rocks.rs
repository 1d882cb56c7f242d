//! RocksDB engine: one column family per [`Cf`], a shared LRU block cache,
//! bloom filters on the point-read families and a 16-byte prefix extractor
//! (the subject pseudonym) on records and history so that "every dataset of
//! one person" is a prefix seek that the prefix bloom can skip.

use super::journal::{Journal, JournalOptions, Kind};
use super::{
    position_of, position_value, BatchOp, Cf, Checkpoint, Durability, Engine, EngineStats, JournalStats, KvIter, SstIngest,
    SstWriter, UseLog, WriteBatch, USES_INDEXED,
};
use crate::{Error, Result};
use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompactionStyle, DBCompressionType,
    DataBlockIndexType, Env, IngestExternalFileOptions, IteratorMode, MemtableFactory, Options, ReadOptions,
    SliceTransform, SstFileWriter, UniversalCompactOptions, WriteOptions, DB,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use super::SUBJECT_PREFIX_LEN;

/// Tuning knobs that an operator sets in the configuration file.
#[derive(Clone, Debug)]
pub struct RocksConfig {
    /// Shared block cache for all column families.
    pub block_cache_bytes: usize,
    /// LZ4 block compression (turned off only by tests that scan raw files).
    pub compression: bool,
    /// Bloom filter bits per key on point-read families.
    pub bloom_bits_per_key: f64,
    /// Memtable size per column family.
    pub write_buffer_bytes: usize,
    /// Background flush/compaction threads.
    pub background_jobs: i32,
    /// How the journal (the store's write-ahead log) lays out its segments.
    pub journal: JournalOptions,
}

impl Default for RocksConfig {
    fn default() -> Self {
        RocksConfig {
            block_cache_bytes: 512 << 20,
            compression: true,
            bloom_bits_per_key: 10.0,
            write_buffer_bytes: 64 << 20,
            background_jobs: 2,
            journal: JournalOptions::default(),
        }
    }
}

pub struct RocksEngine {
    db: Arc<DB>,
    path: PathBuf,
    /// Every write goes to the journal first and to RocksDB without its
    /// own log (see [`Engine::write`] below).
    journal: Arc<Journal>,
    unlogged: WriteOptions,
    applied: Arc<Turnstile>,
    uses: Arc<UsesBook>,
    keeper: Keeper,
    /// Kept so that SST files written outside the engine (bulk loads) get
    /// the families' own table options; see [`RocksEngine::sst_options`].
    cfg: RocksConfig,
    cache: Cache,
    /// The families' SST options in `Cf::ALL` order, made on the first SST
    /// writer: a writer borrows its options for as long as it writes.
    sst_opts: OnceLock<Vec<Options>>,
    /// Held while a checkpoint is taken and while table files go in
    /// (`ingest_files`), so that neither happens inside the other.
    copying: Mutex<()>,
    /// Refusals for lack of space since a probe write last went in (0:
    /// none): while not 0, batches are refused before they reach the
    /// journal, which would otherwise fill up with batches and their
    /// cancels. A count, so that a probe that began before a refusal does
    /// not clear it.
    out_of_space: std::sync::atomic::AtomicU64,
    /// Tests: the failure the next batches meet instead of being applied,
    /// as RocksDB answers once a flush found the disk full, and whether
    /// probes meet it too.
    #[cfg(test)]
    refusing: Mutex<Option<(String, bool)>>,
}

impl std::fmt::Debug for RocksEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksEngine").field("path", &self.path).finish()
    }
}

/// `MemAvailable` of /proc/meminfo, in bytes (Linux).
pub fn available_memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes an unprivileged process may still write on the file system of
/// `path` (`statvfs`), or `None` when it cannot be told.
pub fn available_disk_bytes(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

fn op_key(op: &BatchOp) -> (Cf, &[u8]) {
    match op {
        BatchOp::Put { cf, key, .. } | BatchOp::Delete { cf, key } => (*cf, key.as_slice()),
        BatchOp::DeleteRange { cf, start, .. } => (*cf, start.as_slice()),
    }
}

pub(crate) fn engine_err(e: rocksdb::Error) -> Error {
    Error::engine(e.into_string())
}

/// The journal's directory inside the data directory.
pub const JOURNAL_DIR: &str = "journal";
/// `meta` key: the last journal record the families hold, written with
/// every record's own writes (a [`position_value`]).
const JOURNAL_APPLIED: &[u8] = b"journal_applied";
/// Closed journal segments that make the keeper flush, so the log a
/// reopen replays stays short (about 512 MiB with 64 MiB segments, what
/// RocksDB's own log was allowed before a flush).
const KEEP_SEGMENTS: usize = 8;

/// Writes journal record `lsn` (its batch `wb`) to RocksDB without
/// RocksDB's log, with the position it reaches.
fn apply(db: &DB, mut wb: rocksdb::WriteBatch, lsn: u64, unlogged: &WriteOptions) -> Result<()> {
    let meta = db.cf_handle(Cf::Meta.name()).expect("column family created at open");
    wb.put_cf(meta, JOURNAL_APPLIED, position_value(lsn));
    db.write_opt(wb, unlogged).map_err(engine_err)
}

/// The last journal record that may be released once the tables hold
/// what is applied now (`last`, the turnstile's, read first): never past
/// the last batch applied, which a reopen takes as where the records it
/// needs begin. Records after it that need no applying (uses, cancels)
/// stay until a later batch moves it.
fn release_bound(db: &DB, last: u64, uses: &UsesBook) -> Result<u64> {
    Ok(uses.cap(last).min(read_position(db, JOURNAL_APPLIED, "journal position")?))
}

/// A journal position kept in `meta`.
fn read_position(db: &DB, key: &'static [u8], what: &'static str) -> Result<u64> {
    let meta = db.cf_handle(Cf::Meta.name()).expect("column family created at open");
    position_of(what, db.get_pinned_cf(meta, key).map_err(engine_err)?.as_deref())
}

/// What the journal's records of audited uses have come to: they may be
/// released only once in the audit trail.
#[derive(Default)]
struct UsesBook {
    /// Records of uses appended (or found unindexed at open).
    appended: std::sync::atomic::AtomicU64,
    /// Of those, the ones in the audit trail.
    indexed: std::sync::atomic::AtomicU64,
    /// Every record of uses up to this is in the audit trail.
    through: std::sync::atomic::AtomicU64,
    unindexed: Mutex<Vec<(u64, Vec<u8>)>>,
}

impl UsesBook {
    /// The last journal record that may be released as far as uses go,
    /// capping `applied` (read before, so a use appended after this is
    /// numbered beyond it).
    fn cap(&self, applied: u64) -> u64 {
        use std::sync::atomic::Ordering::SeqCst;
        let appended = self.appended.load(SeqCst);
        if appended == self.indexed.load(SeqCst) {
            applied
        } else {
            applied.min(self.through.load(SeqCst))
        }
    }
}

/// Flushes every family's memtables together (atomic flush) and waits
/// for it, then releases the journal segments the tables then hold, but
/// none holding a record of uses not yet in the audit trail.
fn flush_and_release(db: &DB, journal: &Journal, applied: &Turnstile, uses: &UsesBook) -> Result<()> {
    let through = release_bound(db, applied.last(), uses)?;
    let all: Vec<&rocksdb::ColumnFamily> =
        Cf::ALL.iter().map(|&cf| db.cf_handle(cf.name()).expect("column family created at open")).collect();
    let mut opts = rocksdb::FlushOptions::default();
    opts.set_wait(true);
    db.flush_cfs_opt(&all, &opts).map_err(engine_err)?;
    journal.release_through(through)
}

/// Applies journal records to RocksDB in their order, whichever thread
/// wrote each: two batches writing one key must land as the journal has
/// them, and a reopen replays in that order. Records of uses have no
/// writes and are passed over.
struct Turnstile {
    /// The last record applied, whether writing stopped, and records of
    /// uses numbered beyond the last applied (passed over when reached).
    state: Mutex<(u64, bool, std::collections::BTreeSet<u64>)>,
    turn: Condvar,
}

impl Turnstile {
    fn new(last: u64) -> Turnstile {
        Turnstile { state: Mutex::new((last, false, Default::default())), turn: Condvar::new() }
    }

    /// Moves the last applied record past the records of uses that
    /// follow it (the state's lock held).
    fn pass_uses(st: &mut (u64, bool, std::collections::BTreeSet<u64>)) {
        while st.2.first() == Some(&(st.0 + 1)) {
            st.2.pop_first();
            st.0 += 1;
        }
    }

    /// Record `lsn` holds uses: nothing to apply, its turn passes at once.
    fn pass(&self, lsn: u64) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.2.insert(lsn);
        Self::pass_uses(&mut st);
        self.turn.notify_all();
    }

    fn last(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Runs `f` once every record before `lsn` is applied and returns
    /// what it did: `Ok` of the write's own result, or an error that
    /// stops every later turn (as does an earlier turn's).
    fn take_turn(&self, lsn: u64, f: impl FnOnce() -> Result<Result<()>>) -> Result<Result<()>> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while st.0 + 1 != lsn && !st.1 {
            st = self.turn.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.1 {
            return Err(Error::engine("the store stopped taking writes after a failed write; reopen it".to_owned()));
        }
        // Not held while applying: records of uses pass meanwhile (under
        // the journal's lock), and no other batch can take this turn.
        drop(st);
        let result = f();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 = lsn;
        st.1 |= result.is_err();
        Self::pass_uses(&mut st);
        self.turn.notify_all();
        result
    }

    /// A record was appended that will never be applied (its sync
    /// failed): no later one may be either.
    fn stop(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.turn.notify_all();
    }
}

/// A thread that keeps the journal off the write path: it makes the next
/// spare segment once a roll took the last one, and flushes the families
/// and releases the journal segments the tables then hold when segments
/// pile up and when the commit writer finds itself idle with data in
/// memtables. Nobody waits for it.
struct Keeper {
    wake: Mutex<Option<std::sync::mpsc::SyncSender<()>>>,
    flush: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keeper {
    fn start(db: Arc<DB>, journal: Arc<Journal>, applied: Arc<Turnstile>, uses: Arc<UsesBook>) -> Keeper {
        use std::sync::atomic::Ordering;
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let flush = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let asked = Arc::clone(&flush);
        let thread = std::thread::Builder::new()
            .name("journal-keeper".into())
            .spawn(move || {
                // After a failure (a full disk, a segment that cannot be
                // removed), a spare or a flush for piled-up segments is
                // tried again at most once a second, not at every write
                // that wakes this: back-to-back flushes would fill level 0
                // with tiny files and stall writes.
                let again = |failed: Option<std::time::Instant>| failed.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1));
                let mut spare_failed: Option<std::time::Instant> = None;
                let mut flush_failed: Option<std::time::Instant> = None;
                while rx.recv().is_ok() {
                    if journal.wants_spare() && again(spare_failed) {
                        spare_failed = None;
                        if let Err(e) = journal.make_spare() {
                            tracing::warn!(error = %e, "making a journal spare failed; a roll makes one then, or is refused while the disk is full");
                            spare_failed = Some(std::time::Instant::now());
                        }
                    }
                    let asked = asked.swap(false, Ordering::Relaxed);
                    if asked || (journal.closed_segments() >= KEEP_SEGMENTS && again(flush_failed)) {
                        flush_failed = None;
                        if let Err(e) = flush_and_release(&db, &journal, &applied, &uses) {
                            tracing::warn!(error = %e, "flushing for the journal failed; its segments stay");
                            flush_failed = Some(std::time::Instant::now());
                        }
                    }
                }
            })
            .ok();
        Keeper { wake: Mutex::new(Some(tx)), flush, thread }
    }

    /// Asks for a look at the journal; one already asked for and not
    /// begun covers this.
    fn wake(&self) {
        if let Some(tx) = self.wake.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = tx.try_send(());
        }
    }

    /// Asks for a flush (and release) whatever the journal holds.
    fn flush(&self) {
        self.flush.store(true, std::sync::atomic::Ordering::Relaxed);
        self.wake();
    }
}

impl UseLog for RocksEngine {
    fn append_uses(&self, payload: &[u8], queued: &mut dyn FnMut(u64)) -> Result<u64> {
        use std::sync::atomic::Ordering::SeqCst;
        let lsn = self.journal.append_then(Kind::Uses, payload, |lsn| {
            self.uses.appended.fetch_add(1, SeqCst);
            self.applied.pass(lsn);
            queued(lsn);
        })?;
        if self.journal.closed_segments() >= KEEP_SEGMENTS || self.journal.wants_spare() {
            self.keeper.wake();
        }
        Ok(lsn)
    }

    fn sync_to(&self, lsn: u64) -> Result<()> {
        self.journal.sync_to(lsn)
    }

    fn with_last(&self, f: &mut dyn FnMut(u64)) {
        self.journal.with_last(f)
    }

    fn indexed(&self, records: u64, through: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        self.uses.through.fetch_max(through, SeqCst);
        self.uses.indexed.fetch_add(records, SeqCst);
    }

    fn unentered(&self) -> u64 {
        use std::sync::atomic::Ordering::SeqCst;
        self.uses.appended.load(SeqCst).saturating_sub(self.uses.indexed.load(SeqCst))
    }

    fn take_unindexed(&self) -> Vec<(u64, Vec<u8>)> {
        std::mem::take(&mut *self.uses.unindexed.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for RocksEngine {
    fn drop(&mut self) {
        // The keeper holds the database: it stops before the engine closes it.
        self.keeper.wake.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = self.keeper.thread.take() {
            let _ = t.join();
        }
    }
}

/// Buckets of the hashed memtables of `records` and `history`: about
/// one per entry of a full 64 MiB memtable (its 4 MiB of bucket pointers
/// count towards the memtable's size).
const MEMTABLE_BUCKETS: usize = 1 << 19;

/// The audit index's memtable size (see `cf_options`).
const AUDIT_INDEX_BUFFER: usize = 4 << 20;

fn cf_options(cf: Cf, cfg: &RocksConfig, cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    // Partitioned indexes and filters: a point read loads a 4 KiB partition
    // of each, not a file's whole index and filter (megabytes in a large
    // file) whenever those have been pushed out of the block cache, which
    // at ten million records made a verification cost nearly twice the CPU.
    // The small top level of each stays pinned.
    table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_partition_filters(true);
    table.set_metadata_block_size(4096);
    table.set_pin_top_level_index_and_filter(true);
    table.set_format_version(5);
    let mut opts = Options::default();
    opts.set_write_buffer_size(cfg.write_buffer_bytes);
    opts.set_max_write_buffer_number(4);
    opts.set_compression_type(if cfg.compression {
        DBCompressionType::Lz4
    } else {
        DBCompressionType::None
    });
    match cf {
        Cf::Records | Cf::History => {
            table.set_bloom_filter(cfg.bloom_bits_per_key, false);
            table.set_whole_key_filtering(true);
            // A hash index inside each data block: a point read finds its
            // key without the binary search over restart points.
            table.set_data_block_index_type(DataBlockIndexType::BinaryAndHash);
            table.set_data_block_hash_ratio(0.75);
            opts.set_prefix_extractor(SliceTransform::create_fixed_prefix(SUBJECT_PREFIX_LEN));
            opts.set_memtable_prefix_bloom_ratio(0.1);
            table.set_block_size(8 << 10);
            // Every update inserts into both at a random place (keys start
            // with the subject's pseudonym), and in one skip list over a
            // whole memtable that insert was the writer's costliest step
            // (a cache miss per level). Hashed by subject, an insert or a
            // point read finds its subject's own small list at once. Reads
            // within one subject (a prefix) stay cheap; a read across
            // subjects in key order (a digest, a reverse scan) sorts the
            // live memtable first, so the store reads these families by
            // prefix, forward, on every request path.
            opts.set_memtable_factory(MemtableFactory::HashSkipList {
                bucket_count: MEMTABLE_BUCKETS,
                height: 4,
                branching_factor: 4,
            });
        }
        Cf::KeyMap | Cf::Meta | Cf::Jobs | Cf::Gov => {
            table.set_bloom_filter(cfg.bloom_bits_per_key, false);
        }
        // Append-only, sequentially keyed logs: blooms would never help.
        Cf::Changes | Cf::Audit => {
            table.set_block_size(32 << 10);
        }
        // Read only by auditors' range scans, and written, for this
        // node's chain, as sorted files put in whole (`audit::tail`): the
        // memtable holds only retention's removals and other nodes'
        // chains' keys, so it is the default skip list, which an auditor's
        // scan reads without sorting it first (a vector memtable, when
        // every audited use wrote its keys here, sorted itself for every
        // scan: 15–20 ms for one key beside load).
        //
        // Universal (size-tiered) compaction: every flush of this family
        // spans its whole key range (subject pseudonyms are random), so
        // leveled compaction rewrote the entire bottom level with each
        // handful of flushed files — a third of all server CPU under
        // audited reads, growing with the log. Tiered merges rewrite each
        // entry a logarithmic number of times. A store whose index was
        // written leveled opens unchanged: each level is a sorted run.
        Cf::AuditIndex => {
            table.set_block_size(32 << 10);
            opts.set_write_buffer_size(cfg.write_buffer_bytes.min(AUDIT_INDEX_BUFFER));
            opts.set_compaction_style(DBCompactionStyle::Universal);
            // Flushes write uncompressed, and merges compress only their
            // output where the runs older than it hold less than half the
            // data: compressing random pseudonyms on every flush took a
            // sixth of the flush thread's time under a million-line batch,
            // and an index entry is rewritten a few times on its way to
            // the old, compressed runs.
            let mut universal = UniversalCompactOptions::default();
            universal.set_compression_size_percent(50);
            opts.set_universal_compaction_options(&universal);
        }
    }
    opts.set_block_based_table_factory(&table);
    opts
}

impl RocksEngine {
    pub fn open(path: &Path, cfg: &RocksConfig) -> Result<Self> {
        Self::open_with(path, cfg, false)
    }

    /// Opens an existing private copy of a store (a checkpoint being backed
    /// up, a restore being verified): never creates a database, and runs no
    /// automatic compaction, so that the files on disk stay the ones of the
    /// copy (what a backup copies, or what was restored). Families added
    /// since the copy was made are created empty, as `open` would.
    pub fn open_copy(path: &Path) -> Result<Self> {
        let cfg = RocksConfig { block_cache_bytes: 8 << 20, background_jobs: 1, ..Default::default() };
        Self::open_with(path, &cfg, true)
    }

    fn open_with(path: &Path, cfg: &RocksConfig, copy: bool) -> Result<Self> {
        // HyperClockCache: lookups without the LRU cache's shard mutex,
        // which point reads from every request thread contend on (0: the
        // entry size is estimated automatically).
        let cache = Cache::new_hyper_clock_cache(cfg.block_cache_bytes, 0);
        let mut db_opts = Options::default();
        db_opts.create_if_missing(!copy);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(cfg.background_jobs);
        // Flushes and compactions run only on CPU that requests leave
        // unused (see `background`): on a small machine a burst of either
        // would otherwise take a core from requests for a second at a time
        // (tail latency), while over time they still get the idle CPU they
        // need. Four memtables per family give a flush that waits its turn
        // room before writes would stall.
        let mut env = Env::new().map_err(engine_err)?;
        super::background::start(&mut env, cfg.background_jobs);
        db_opts.set_env(&env);
        db_opts.set_bytes_per_sync(1 << 20);
        // Every flush flushes all families together: writes reach RocksDB
        // without its log (the journal is the log), and only an atomic
        // flush persists a state in which every family holds the same
        // journal records, the last of which `meta` names. Atomic flush
        // rules out pipelined writes, which only help several concurrent
        // writers: writes come from one writer thread (see `commit`).
        db_opts.set_atomic_flush(true);
        // Required by the vector memtable of the audit index; writes come
        // from one writer thread anyway (see `commit`).
        db_opts.set_allow_concurrent_memtable_write(false);
        db_opts.set_compression_type(if cfg.compression {
            DBCompressionType::Lz4
        } else {
            DBCompressionType::None
        });
        let cfs = Cf::ALL.iter().map(|&cf| {
            let mut opts = cf_options(cf, cfg, &cache);
            opts.set_disable_auto_compactions(copy);
            ColumnFamilyDescriptor::new(cf.name(), opts)
        });
        // A store written before the journal existed may hold writes in
        // RocksDB's own log: opening recovers them as it always did.
        let db = Arc::new(DB::open_cf_descriptors(&db_opts, path, cfs).map_err(engine_err)?);
        let mut unlogged = WriteOptions::default();
        unlogged.disable_wal(true);
        let applied = read_position(&db, JOURNAL_APPLIED, "journal position")?;
        // Records of uses are read from the position the audit trail holds,
        // which may lie before `applied`; write batches after `applied`.
        let indexed = read_position(&db, USES_INDEXED, "indexed uses position")?;
        let mut unindexed = Vec::new();
        let (journal, replayed) =
            Journal::open_from(&path.join(JOURNAL_DIR), cfg.journal, applied, indexed, |lsn, kind, payload| match kind {
                Kind::Batch if lsn > applied => apply(&db, rocksdb::WriteBatch::from_data(payload), lsn, &unlogged),
                Kind::Batch | Kind::Cancel => Ok(()),
                Kind::Uses => {
                    unindexed.push((lsn, payload.to_vec()));
                    Ok(())
                }
            })?;
        // Replayed batches may have entered some of them.
        let indexed = read_position(&db, USES_INDEXED, "indexed uses position")?;
        unindexed.retain(|(lsn, _)| *lsn > indexed);
        let uses = Arc::new(UsesBook {
            appended: (unindexed.len() as u64).into(),
            through: indexed.into(),
            unindexed: Mutex::new(unindexed),
            ..Default::default()
        });
        let journal = Arc::new(journal);
        let applied = Arc::new(Turnstile::new(journal.last_lsn()));
        if replayed > 0 {
            tracing::info!(records = replayed, through = journal.last_lsn(), "journal replayed");
            // What was replayed is held by tables once flushed.
            flush_and_release(&db, &journal, &applied, &uses)?;
        } else {
            // Every write batch the segments hold is in the tables already.
            journal.release_through(release_bound(&db, journal.last_lsn(), &uses)?)?;
        }
        let keeper = Keeper::start(Arc::clone(&db), Arc::clone(&journal), Arc::clone(&applied), Arc::clone(&uses));
        Ok(RocksEngine {
            db,
            path: path.to_path_buf(),
            journal,
            unlogged,
            applied,
            uses,
            keeper,
            cfg: cfg.clone(),
            cache,
            sst_opts: OnceLock::new(),
            copying: Mutex::new(()),
            out_of_space: Default::default(),
            #[cfg(test)]
            refusing: Mutex::new(None),
        })
    }

    /// Flushes the memtables of every family, together (atomic flush),
    /// and releases the journal segments it then holds.
    fn flush_families(&self) -> Result<()> {
        flush_and_release(&self.db, &self.journal, &self.applied, &self.uses)
    }

    /// Ingests table `files` into `cf`, never while a checkpoint is taken:
    /// a checkpoint flushes, then lists the live files, and a file put in
    /// between could bring keys of writes the copy lacks (the audit
    /// index's keys of entries written after its flush).
    fn ingest_files(&self, cf: Cf, files: &[PathBuf], move_files: bool) -> Result<()> {
        let mut opts = IngestExternalFileOptions::default();
        opts.set_move_files(move_files);
        let _copying = self.copying.lock().unwrap_or_else(|p| p.into_inner());
        self.db.ingest_external_file_cf_opts(self.cf(cf), &opts, files.to_vec()).map_err(engine_err)
    }

    /// Applies journal record `lsn`, its batch `wb`, in its turn.
    fn apply_live(&self, wb: rocksdb::WriteBatch, lsn: u64) -> Result<()> {
        self.refused(false)?;
        apply(&self.db, wb, lsn, &self.unlogged)
    }

    /// Tests: the failure [`RocksEngine::refuse_applies`] set.
    fn refused(&self, probe: bool) -> Result<()> {
        #[cfg(test)]
        if let Some((why, probes)) = self.refusing.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            if probes || !probe {
                return Err(Error::engine(why));
            }
        }
        let _ = probe;
        Ok(())
    }

    /// After a refusal for lack of space: whether RocksDB takes writes
    /// again, told by a write of a probe key outside the journal (lost in
    /// a crash, and read by nothing).
    fn space_again(&self) -> Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let seen = self.out_of_space.load(SeqCst);
        if seen == 0 {
            return Ok(());
        }
        self.refused(true)?;
        let mut wb = rocksdb::WriteBatch::default();
        wb.put_cf(self.cf(Cf::Meta), b"probe/space", b"");
        self.db.write_opt(wb, &self.unlogged).map_err(engine_err)?;
        let _ = self.out_of_space.compare_exchange(seen, 0, SeqCst, SeqCst);
        Ok(())
    }

    /// Tests: batches meet `why` instead of being applied, until `None`;
    /// so do the probes made before a batch is journaled when `probes`.
    #[cfg(test)]
    pub(crate) fn refuse_applies(&self, why: Option<&str>, probes: bool) {
        *self.refusing.lock().unwrap_or_else(|p| p.into_inner()) = why.map(|w| (w.to_owned(), probes));
    }

    /// The journal (tests: what it holds after a write).
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The options of family `cf`, for an `SstFileWriter` whose files are
    /// then ingested: the same table format, block size, compression,
    /// filters and prefix extractor as files the engine writes itself, so
    /// reads (prefix blooms included) work on them alike.
    pub fn sst_options(&self, cf: Cf) -> Options {
        cf_options(cf, &self.cfg, &self.cache)
    }

    /// Reads the live table files of `families` once, in a background
    /// thread, so that they are in the operating system's page cache before
    /// requests need them: after a restart, or after a bulk load (RocksDB's
    /// SST writer drops the pages it wrote), the first point reads would
    /// otherwise each wait for the disk. Only when they fit in half of the
    /// memory available now; the server never waits for it.
    pub fn warm_page_cache(&self, families: &[Cf]) -> Option<std::thread::JoinHandle<u64>> {
        let names: Vec<&str> = families.iter().map(|cf| cf.name()).collect();
        let files: Vec<(PathBuf, u64)> = self
            .db
            .live_files()
            .ok()?
            .into_iter()
            .filter(|f| names.contains(&f.column_family_name.as_str()))
            .map(|f| (self.path.join(f.name.trim_start_matches('/')), f.size as u64))
            .collect();
        let total: u64 = files.iter().map(|(_, n)| n).sum();
        if total == 0 || total > available_memory_bytes()? / 2 {
            return None;
        }
        std::thread::Builder::new()
            .name("basedata-warm".into())
            .spawn(move || {
                use std::io::Read;
                let mut buf = vec![0u8; 1 << 20];
                let mut read = 0u64;
                for (path, _) in files {
                    // A file compacted away meanwhile is simply skipped.
                    let Ok(mut f) = std::fs::File::open(&path) else { continue };
                    while let Ok(n) = f.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        read += n as u64;
                    }
                }
                read
            })
            .ok()
    }

    pub fn db(&self) -> &DB {
        &self.db
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn cf(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        // Every family is created at open, so a missing one is a bug.
        self.db.cf_handle(cf.name()).expect("column family created at open")
    }

    /// Reads the RocksDB files of `path` without the engine's options, for
    /// tests and tools that inspect the raw contents of a data directory.
    pub fn list_cf_names(path: &Path) -> Result<Vec<String>> {
        DB::list_cf(&Options::default(), path).map_err(engine_err)
    }
}

impl Engine for RocksEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db
            .get_pinned_cf(self.cf(cf), key)
            .map(|v| v.map(|s| s.to_vec()))
            .map_err(engine_err)
    }

    /// Appends the batch to the journal, syncs it there (for
    /// [`Durability::Sync`]), then applies it to RocksDB without RocksDB's
    /// log, in journal order, together with the journal position it
    /// reaches; a reopen replays what the tables do not hold yet.
    ///
    /// A batch durable in the journal that RocksDB then refuses for lack
    /// of space (it stops taking writes when a flush fails so, and takes
    /// them again once space is freed) is cancelled in the journal before
    /// its writer hears of the failure: a failed write then changes
    /// nothing, now or after a reopen, and later writes go on. Any other
    /// failure to apply, or a cancel that cannot be made durable, stops
    /// every later write, since memory and disk differ until a reopen
    /// replays the batch.
    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<()> {
        super::check_keys(&batch)?;
        if batch.is_empty() {
            // A synced empty batch syncs the writes before it.
            return match durability {
                Durability::Sync => self.journal.sync_all(),
                Durability::Buffered => Ok(()),
            };
        }
        self.space_again()?;
        let mut wb = rocksdb::WriteBatch::default();
        // In key order per family: each memtable insert then starts its
        // search from where the previous one ended instead of from the top
        // of a skip list of hundreds of thousands of entries (random keys,
        // such as pseudonyms, otherwise cost a full search each). The sort
        // is stable, so writes to one key keep their order; the batch is
        // atomic either way.
        // A range deletion covers other keys than its own: sorted by its
        // start, it could pass a put it must come before or after, so a
        // batch holding one keeps its order.
        let mut ops: Vec<&BatchOp> = batch.ops().iter().collect();
        if !ops.iter().any(|op| matches!(op, BatchOp::DeleteRange { .. })) {
            ops.sort_by(|a, b| op_key(a).cmp(&op_key(b)));
        }
        for op in ops {
            match op {
                BatchOp::Put { cf, key, value } => wb.put_cf(self.cf(*cf), key, value),
                BatchOp::Delete { cf, key } => wb.delete_cf(self.cf(*cf), key),
                BatchOp::DeleteRange { cf, start, end } => wb.delete_range_cf(self.cf(*cf), start, end),
            }
        }
        let (lsn, check) = match self.journal.append_checked(wb.data()) {
            Ok(appended) => appended,
            Err(e) => {
                // A record numbered whose write-behind failed will never be
                // applied: writers after it must not wait for its turn.
                if self.journal.failed().is_some() {
                    self.applied.stop();
                }
                return Err(e);
            }
        };
        if durability == Durability::Sync {
            if let Err(e) = self.journal.sync_to(lsn) {
                self.applied.stop();
                return Err(e);
            }
        }
        let turn = self.applied.take_turn(lsn, || match self.apply_live(wb, lsn) {
            Err(e @ Error::NoSpace(_)) => match self.journal.cancel(lsn, check, |at| self.applied.pass(at)) {
                Ok(()) => {
                    self.out_of_space.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(Err(e))
                }
                // Not a full disk to its caller: the batch is live in the
                // journal, and the next start applies it.
                Err(c) => Err(Error::Engine(format!("{e}; cancelling it in the journal failed too: {c}"))),
            },
            r => r.map(Ok),
        });
        let result = turn.unwrap_or_else(|e| {
            self.journal.fail(&format!("a write synced to the journal failed to apply: {e}; reopen the store"));
            Err(e)
        });
        if self.journal.closed_segments() >= KEEP_SEGMENTS || self.journal.wants_spare() {
            self.keeper.wake();
        }
        result
    }

    fn put_sorted(&self, cf: Cf, entries: &mut dyn Iterator<Item = (&[u8], &[u8])>) -> Result<()> {
        // One writer at a time (the audit indexer), so one name; a file a
        // crash left half-written is replaced.
        let path = self.path.join(format!("sorted-{}.sst", cf.name()));
        let _ = std::fs::remove_file(&path);
        // Uncompressed, as a flush of the audit index writes (see
        // `cf_options`): its merges compress the old runs.
        let mut opts = self.sst_options(cf);
        opts.set_compression_type(DBCompressionType::None);
        let mut writer = SstFileWriter::create(&opts);
        writer.open(&path).map_err(engine_err)?;
        let mut any = false;
        for (k, v) in entries {
            writer.put(k, v).map_err(engine_err)?;
            any = true;
        }
        if !any {
            drop(writer);
            let _ = std::fs::remove_file(&path);
            return Ok(());
        }
        writer.finish().map_err(engine_err)?;
        // Unlike a bulk load's files these keys are never in the journal,
        // so the families need no flush of ours first: a reopen replays
        // nothing over them. (RocksDB flushes this family itself when the
        // file overlaps what its memtable holds.)
        let result = self.ingest_files(cf, std::slice::from_ref(&path), true);
        if result.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        result
    }

    fn scan<'a>(
        &'a self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
    ) -> Result<KvIter<'a>> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(start.to_vec());
        if let Some(e) = end {
            if e <= start {
                return Ok(Box::new(std::iter::empty()));
            }
            ro.set_iterate_upper_bound(e.to_vec());
        }
        // Within one subject prefix a forward scan can use the prefix bloom;
        // reverse scans and any other range must see the whole key order
        // (RocksDB does not support SeekToLast in prefix mode).
        let within_prefix = !reverse
            && cf.subject_keyed()
            && start.len() >= SUBJECT_PREFIX_LEN
            && match (end, super::prefix_end(&start[..SUBJECT_PREFIX_LEN])) {
                (Some(e), Some(pe)) => e <= pe.as_slice(),
                _ => false,
            };
        if within_prefix {
            ro.set_prefix_same_as_start(true);
        } else {
            ro.set_total_order_seek(true);
        }
        let mode = if reverse { IteratorMode::End } else { IteratorMode::Start };
        let it = self.db.iterator_cf_opt(self.cf(cf), ro, mode);
        Ok(Box::new(it.map(|r| r.map_err(engine_err))))
    }

    fn multi_get(&self, cf: Cf, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let sorted = keys.windows(2).all(|w| w[0] <= w[1]);
        self.db
            .batched_multi_get_cf(self.cf(cf), keys.iter().copied(), sorted)
            .into_iter()
            .map(|r| r.map(|v| v.map(|s| s.to_vec())).map_err(engine_err))
            .collect()
    }

    fn flush(&self) -> Result<()> {
        self.journal.sync_all()?;
        self.flush_families()
    }

    fn reclaim(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<()> {
        // The range tombstone is flushed first, through the journal's own
        // flush (which releases segments as usual); the compaction then
        // drops what it covers in every level the range reaches. Its
        // status is not handed back by the binding: a compaction that
        // fails leaves the space to RocksDB's own later compactions, and
        // reads are right either way.
        self.flush_families()?;
        self.db.compact_range_cf(self.cf(cf), Some(start), Some(end));
        Ok(())
    }

    fn unflushed_bytes(&self) -> u64 {
        Cf::ALL
            .iter()
            .filter_map(|&cf| self.db.property_int_value_cf(self.cf(cf), "rocksdb.cur-size-active-mem-table").ok().flatten())
            .sum()
    }

    fn flush_in_background(&self) -> Result<()> {
        self.keeper.flush();
        Ok(())
    }

    fn stats(&self, cf: Cf) -> EngineStats {
        let p = |name: &str| self.db.property_int_value_cf(self.cf(cf), name).ok().flatten();
        EngineStats {
            estimated_keys: p("rocksdb.estimate-num-keys"),
            total_sst_bytes: p("rocksdb.total-sst-files-size"),
            live_sst_bytes: p("rocksdb.live-sst-files-size"),
            memtable_bytes: p("rocksdb.cur-size-all-mem-tables"),
            pending_compaction_bytes: p("rocksdb.estimate-pending-compaction-bytes"),
            running_compactions: p("rocksdb.num-running-compactions"),
            running_flushes: p("rocksdb.num-running-flushes"),
            l0_files: p("rocksdb.num-files-at-level0"),
            block_cache_bytes: p("rocksdb.block-cache-usage"),
            block_cache_pinned_bytes: p("rocksdb.block-cache-pinned-usage"),
        }
    }

    fn journal_stats(&self) -> Option<JournalStats> {
        Some(self.journal.stats())
    }

    fn sst_ingest(&self) -> Option<&dyn SstIngest> {
        Some(self)
    }

    fn checkpoint(&self) -> Option<&dyn Checkpoint> {
        Some(self)
    }

    fn use_log(&self) -> Option<&dyn UseLog> {
        Some(self)
    }
}

impl SstIngest for RocksEngine {
    fn sst_writer(&self, cf: Cf, path: &Path) -> Result<Box<dyn SstWriter + '_>> {
        let opts = self.sst_opts.get_or_init(|| Cf::ALL.iter().map(|&cf| self.sst_options(cf)).collect());
        let writer = SstFileWriter::create(&opts[cf.index()]);
        writer.open(path).map_err(engine_err)?;
        Ok(Box::new(RocksSstWriter(writer)))
    }

    fn ingest(&self, cf: Cf, files: &[PathBuf], move_files: bool) -> Result<()> {
        // Tables first hold every write before the files: a reopen then
        // replays none of them over keys the files brought.
        self.flush_families()?;
        self.ingest_files(cf, files, move_files)
    }
}

struct RocksSstWriter<'o>(SstFileWriter<'o>);

impl SstWriter for RocksSstWriter<'_> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.0.put(key, value).map_err(engine_err)
    }

    fn file_size(&self) -> u64 {
        self.0.file_size()
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.0.finish().map_err(engine_err)
    }
}

impl Checkpoint for RocksEngine {
    fn dir(&self) -> &Path {
        &self.path
    }

    fn create_checkpoint(&self, to: &Path) -> Result<()> {
        let _copying = self.copying.lock().unwrap_or_else(|p| p.into_inner());
        let cp = rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(engine_err)?;
        cp.create_checkpoint(to).map_err(engine_err)
    }
}
