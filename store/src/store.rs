//! The store: the record model over an [`Engine`]. Applies provider updates
//! as atomic, numbered, durable batches (stale-version detection, history,
//! change log, per-dataset counters) and answers current and as-of reads.
//!
//! Invariants:
//! - Nothing outside this module sees a pseudonym: callers pass real keys,
//!   get real keys back, and every stored key is pseudonymized.
//! - Sequence numbers are dense: every applied change gets the next number,
//!   and a batch's changes are written in the same atomic engine write as
//!   the records they describe, so the change log has no gaps after a crash.
//! - Commit times never go backwards, even if the wall clock does, so that
//!   as-of reads agree with commit order.
//!
//! Hot path: `get`/`get_all` are lock-free point reads and one prefix seek.

pub mod link;

use crate::audit::uses::Uses;
use crate::audit::{AuditEvent, ChainHead};
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::codec::{decode, encode};
use crate::engine::{prefix_end, BatchOp, Cf, Durability, Engine, WriteBatch};
use crate::keys::SubjectKey;
use crate::providers::{Current, Refusal, Settled};
use crate::prints::{PrintView, Prints};
use crate::pseudo::{Pid, Pseudonymizer, Sealer, Sealing, Secret};
use crate::record::*;
use crate::usage::{Kind, Owner};
use crate::value::Value;
use crate::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub(crate) const META_FORMAT: &[u8] = b"format";
pub(crate) const META_SECRET_CHECK: &[u8] = b"secret_check";
pub(crate) const META_LAST_SEQ: &[u8] = b"last_seq";
const META_DS_STATS: &[u8] = b"ds_stats/";
pub(crate) const STORE_FORMAT: u8 = 1;

/// One provider update, validated against the catalog by the caller.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    pub dataset: String,
    pub key: SubjectKey,
    pub version: u64,
    pub op: UpdateOp,
    /// The department writing it, for a dataset of several providers: the
    /// writer lets it write only its area or its fields, judged against
    /// the record it finds ([`crate::providers`]). `None` writes the whole
    /// record (a dataset of one provider, whose check is the request's).
    pub provider: Option<String>,
    /// A business-licence registration number that the credit code `key`
    /// was assigned to: linked in the same batch (see [`link`]).
    pub link: Option<SubjectKey>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum UpdateOp {
    /// The record becomes exactly these fields.
    Upsert(Vec<(String, Value)>),
    Delete,
}

/// The name under which a provider of a dataset of several has its
/// counters (dataset statistics, daily usage) beside its dataset's.
pub fn provider_stats_name(dataset: &str, provider: &str) -> String {
    format!("{dataset}@{provider}")
}

/// The catalog's dataset of an update the writer checked on entry.
fn ds_of<'a>(catalog: &'a Catalog, id: &str) -> Result<&'a crate::catalog::Dataset> {
    catalog.dataset(id).ok_or_else(|| Error::Invalid(format!("unknown dataset {id}")))
}

impl UpdateOp {
    /// The update as a division of several providers judges it.
    pub fn change(&self) -> crate::providers::Change<'_> {
        match self {
            UpdateOp::Upsert(fields) => crate::providers::Change::Upsert(fields),
            UpdateOp::Delete => crate::providers::Change::Delete,
        }
    }
}

/// What happened to one update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied { seq: u64 },
    /// Not applied: the stored version is the same or newer.
    Stale { current: u64 },
    /// Not applied: outside its provider's area or fields (`code`
    /// `forbidden`), or a link that conflicts with stored ones (`conflict`,
    /// the reason one of [`link`]'s messages).
    Refused { code: &'static str, reason: String },
}

/// Most named datasets [`Store::get_all`] reads by point reads. Measured
/// on lookups (`GET /v1/persons/{id}`): one dataset by a multi-get is
/// about 5% faster than by a scan of the subject's records, all twelve
/// person datasets about 8% slower (points that find nothing cost more
/// than one scan that finds what there is).
pub const POINT_READS_UP_TO: usize = 3;

/// A record as read, with subject keys in the clear.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub dataset: String,
    pub version: u64,
    /// Commit time, Unix microseconds.
    pub committed_at: i64,
    pub seq: u64,
    pub fields: Vec<(String, Value)>,
}

impl Record {
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// One entry of the change log, with its subject key in the clear.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub seq: u64,
    pub dataset: String,
    pub key: SubjectKey,
    pub op: ChangeOp,
    pub version: u64,
    pub committed_at: i64,
    pub fields: Vec<(String, Value)>,
}

/// Counters kept per dataset on the write path, for the freshness report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct DatasetStats {
    /// Records currently held (tombstones excluded).
    pub records: u64,
    /// Applied changes, ever.
    pub updates: u64,
    /// Commit time of the last applied change, Unix microseconds (0 = never).
    pub last_update: i64,
}

#[derive(Debug)]
struct WriterState {
    next_seq: u64,
    last_committed: i64,
    stats: HashMap<String, DatasetStats>,
    audit_head: ChainHead,
    usage: crate::usage::UsageCache,
    /// Why commits are refused: a bulk load failed after some of its
    /// change-log entries were ingested, so the numbers from `next_seq` on
    /// are taken until the load is finished (`bulk::finish_interrupted`,
    /// or reopening the store, which finishes it).
    stopped: Option<String>,
}

/// Where a bulk load (see [`crate::bulk`]) writes, handed out by
/// [`Store::bulk_commit`] while the writer is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkSlot {
    /// The next free change-log sequence number: the load numbers its
    /// changes from here, densely.
    pub first_seq: u64,
    /// Commit time for everything the load writes, not before any earlier
    /// commit (Unix microseconds).
    pub committed_at: i64,
    /// The dataset's counters before the load.
    pub stats: DatasetStats,
}

/// What a bulk load made durable, for the counters [`Store::bulk_commit`]
/// writes after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BulkApplied {
    /// Changes written (records and tombstones), numbered up to `last_seq`.
    pub applied: u64,
    /// Live records added to the dataset (the load replaced none).
    pub live: u64,
    /// Sequence number of the last change written.
    pub last_seq: u64,
    /// Their commit time.
    pub committed_at: i64,
}

/// What one commit did: an outcome per update, and the sequence number of
/// its first audit entry (entries are numbered consecutively).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub outcomes: Vec<Outcome>,
    pub first_audit_seq: u64,
    /// Last change-log sequence number after this commit.
    pub last_seq: u64,
}

pub struct Store {
    engine: Arc<dyn Engine>,
    pseudo: Pseudonymizer,
    /// Seals batch job lines: they hold ID numbers, which may not reach
    /// the data directory in the clear.
    job_sealer: Sealer,
    /// Seals the journal's records of audited uses (`audit::uses`).
    uses_sealer: Sealer,
    /// Those records not yet entered into the audit trail.
    pending_uses: crate::audit::uses::Pending,
    catalog: Arc<Catalog>,
    clock: Arc<dyn Clock>,
    writer: Mutex<WriterState>,
    last_seq: AtomicU64,
    /// The change log holds nothing numbered at or below this
    /// (`change_log`).
    pub(crate) changes_cut: AtomicU64,
    /// Held by a cut of the change log, one at a time.
    pub(crate) changes_cutting: Mutex<()>,
    /// Claim fingerprints of every live record, when this store keeps them
    /// ([`Store::keep_prints`]); replaced whole, never half-built.
    prints: RwLock<Option<Arc<Prints>>>,
    /// Held by whatever removes old audit entries or copies a chain from
    /// its start (`audit::retention`, `audit::remote`), so neither finds
    /// the other's half-done work.
    pub(crate) audit_cut: Mutex<()>,
    /// Raised at shutdown ([`Store::stop_maintenance`]): long upkeep
    /// stops at its next step.
    maintenance_stopped: AtomicBool,
    /// The audit index's keys the engine does not hold yet
    /// (`audit::tail`), and what puts them there; it stops, putting
    /// what it holds first, with the store.
    index_tail: Arc<crate::audit::tail::IndexTail>,
    indexer: Option<crate::audit::tail::Indexer>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("last_seq", &self.last_seq()).finish()
    }
}

impl Store {
    /// Opens a store on `engine`, initializing an empty one. Fails with
    /// [`Error::WrongSecret`] when the secret is not the one the store was
    /// created with.
    pub fn open(
        engine: Arc<dyn Engine>,
        secret: &Secret,
        catalog: Arc<Catalog>,
        clock: Arc<dyn Clock>,
    ) -> Result<Store> {
        let pseudo = Pseudonymizer::new(secret);
        match engine.get(Cf::Meta, META_FORMAT)? {
            None => {
                let mut b = WriteBatch::new();
                b.put(Cf::Meta, META_FORMAT, vec![STORE_FORMAT]);
                b.put(Cf::Meta, META_SECRET_CHECK, pseudo.check_value().to_vec());
                engine.write(b, Durability::Sync)?;
            }
            Some(f) if f.as_slice() == [STORE_FORMAT] => {
                let check = engine.get(Cf::Meta, META_SECRET_CHECK)?;
                if check.as_deref() != Some(&pseudo.check_value()[..]) {
                    return Err(Error::WrongSecret);
                }
            }
            Some(f) => {
                return Err(Error::Format { what: "store", found: f.first().copied().unwrap_or(0) })
            }
        }
        // The change log is the truth about sequence numbers; meta is a
        // fallback for a log that has been pruned.
        let mut last_seq = match engine.get(Cf::Meta, META_LAST_SEQ)? {
            Some(b) => seq_from_key(&b)?,
            None => 0,
        };
        let mut last_committed = 0;
        if let Some(item) = engine.scan(Cf::Changes, &[], None, true)?.next() {
            let (k, v) = item?;
            last_seq = last_seq.max(seq_from_key(&k)?);
            last_committed = decode::<ChangeEntry>("change", &v)?.committed_at;
        }
        let changes_cut = crate::engine::position_of("change log cut", engine.get(Cf::Meta, META_CHANGES_CUT)?.as_deref())?;
        let mut stats = HashMap::new();
        let end = prefix_end(META_DS_STATS);
        for item in engine.scan(Cf::Meta, META_DS_STATS, end.as_deref(), false)? {
            let (k, v) = item?;
            let name = String::from_utf8_lossy(&k[META_DS_STATS.len()..]).into_owned();
            stats.insert(name, decode::<DatasetStats>("dataset stats", &v)?);
        }
        let audit_head = crate::audit::load_head(&*engine)?;
        let index_tail = Arc::new(crate::audit::tail::IndexTail::default());
        match crate::audit::tail::indexed_upto(&*engine)? {
            // Written before the tail: every entry's keys are in the index.
            None => crate::audit::tail::record_indexed(&*engine, audit_head.seq, Durability::Sync)?,
            Some(upto) if upto < audit_head.seq => {
                let keys = crate::audit::tail::rebuilt(&*engine, upto)?;
                tracing::info!(after = upto, keys = keys.len(), "audit index keys rebuilt from the entries after its position");
                index_tail.push(keys, audit_head.seq);
            }
            Some(_) => {}
        }
        let mut store = Store {
            engine,
            pseudo,
            job_sealer: Sealer::new(secret, Sealing::Jobs),
            uses_sealer: Sealer::new(secret, Sealing::Uses),
            pending_uses: Default::default(),
            catalog,
            clock,
            writer: Mutex::new(WriterState {
                next_seq: last_seq + 1,
                last_committed,
                stats,
                audit_head,
                usage: Default::default(),
                stopped: None,
            }),
            last_seq: AtomicU64::new(last_seq),
            changes_cut: AtomicU64::new(changes_cut),
            changes_cutting: Mutex::new(()),
            prints: RwLock::new(None),
            audit_cut: Mutex::new(()),
            maintenance_stopped: Default::default(),
            index_tail,
            indexer: None,
        };
        store.indexer = Some(store.index_tail.start(store.engine.clone()));
        store.enter_unindexed_uses()?;
        Ok(store)
    }

    /// Runs `f` on the writer's audit chain head and usage counters, with
    /// commits held meanwhile: what `f` writes is appended to the chain
    /// as the next entries, and the head it leaves is the writer's.
    pub(crate) fn with_chain_head<R>(
        &self,
        f: impl FnOnce(&mut ChainHead, &mut crate::usage::UsageCache) -> Result<R>,
    ) -> Result<R> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(why) = &w.stopped {
            return Err(Error::Bulk(why.clone()));
        }
        let w = &mut *w;
        f(&mut w.audit_head, &mut w.usage)
    }

    /// Enters into the audit trail the records of uses the journal holds
    /// and the trail lacked at open (a crash came between an answer and
    /// its entry), in journal order, before anything else is written.
    fn enter_unindexed_uses(&self) -> Result<()> {
        let Some(log) = self.engine.use_log() else { return Ok(()) };
        let records = log.take_unindexed();
        if records.is_empty() {
            return Ok(());
        }
        let uses = records.iter().map(|(_, payload)| self.open_uses(payload)).collect::<Result<Vec<Uses>>>()?;
        let mut through = 0;
        log.with_last(&mut |last| through = last);
        self.commit_all(&[], &uses, &[], Self::uses_entered(through), Durability::Sync)?;
        log.indexed(records.len() as u64, through);
        let entries: usize = uses.iter().map(Uses::len).sum();
        tracing::info!(records = records.len(), entries, "audited uses from the journal entered into the audit trail");
        Ok(())
    }

    /// Makes long upkeep stop at its next step, for good: the search for
    /// and removal of audit entries past their retention period (a first
    /// run over years of a busy trail takes hours), and the compaction
    /// that follows a cut of the change log, if not begun. Called at
    /// shutdown, so that the process does not wait for them; each step is
    /// atomic, and the next start goes on from where they stopped.
    pub fn stop_maintenance(&self) {
        self.maintenance_stopped.store(true, Ordering::Release);
    }

    /// Whether [`Store::stop_maintenance`] was called.
    pub fn maintenance_stopped(&self) -> bool {
        self.maintenance_stopped.load(Ordering::Acquire)
    }

    /// The audit index's keys held in memory (see `audit::tail`).
    pub fn index_tail(&self) -> &crate::audit::tail::IndexTail {
        &self.index_tail
    }

    /// Records of uses durable in the journal and not yet in the audit
    /// trail (see `commit`).
    pub fn pending_uses(&self) -> &crate::audit::uses::Pending {
        &self.pending_uses
    }

    /// Refuses every commit with `why`, or takes commits again (`None`):
    /// the state an interrupted bulk load leaves, for tests of what a
    /// refused write does.
    #[cfg(test)]
    pub(crate) fn refuse_writes(&self, why: Option<&str>) {
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).stopped = why.map(str::to_owned);
    }

    /// The journal payload of a record of `uses` (see `audit::uses`).
    pub fn seal_uses(&self, uses: &Uses) -> Result<Vec<u8>> {
        crate::audit::uses::seal(&self.uses_sealer, uses)
    }

    /// The uses of a journal payload made by [`Store::seal_uses`].
    pub fn open_uses(&self, payload: &[u8]) -> Result<Uses> {
        crate::audit::uses::open(&self.uses_sealer, payload, |k| self.pseudonym(k))
    }

    /// The write that goes with entering records of uses: every one up to
    /// journal position `through` is then in the audit trail.
    pub fn uses_entered(through: u64) -> WriteBatch {
        let mut b = WriteBatch::new();
        b.put(Cf::Meta, crate::engine::USES_INDEXED, crate::engine::position_value(through));
        b
    }

    /// Builds the claim fingerprints of every live record (one scan) and
    /// keeps them current from now on, so that verifications need not read
    /// records ([`crate::prints`]). For servers; tools that only load or
    /// inspect skip the scan and the memory. Returns the records covered.
    pub fn keep_prints(&self) -> Result<usize> {
        // Under the writer lock: no commit can fall between the scan and
        // the table taking over.
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.build_prints()
    }

    /// Builds the fingerprints from what is stored and puts them in place
    /// of any kept so far; the caller holds the writer lock.
    fn build_prints(&self) -> Result<usize> {
        let built = Arc::new(Prints::build(&self.catalog, &*self.engine)?);
        let n = built.len();
        *self.prints.write().unwrap_or_else(|e| e.into_inner()) = Some(built);
        Ok(n)
    }

    /// The claim fingerprints, if this store keeps them.
    pub fn prints(&self) -> Option<Arc<Prints>> {
        self.prints.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The fingerprint of a claimed value of `field` in canonical form
    /// (the bytes `value::canonical_stored` gives a stored value). A
    /// claimed subject key is fingerprinted by its pseudonym, as stored;
    /// `None` when the canonical form is not a key of the field's type.
    pub fn claim_print(&self, prints: &Prints, field: &crate::catalog::Field, canonical: &[u8]) -> Option<u64> {
        use crate::catalog::FieldType;
        let key = match field.ty {
            FieldType::PersonKey => SubjectKey::Person(crate::keys::PersonKey::parse(std::str::from_utf8(canonical).ok()?).ok()?),
            FieldType::EntityKey => SubjectKey::Entity(crate::keys::EntityKey::parse(std::str::from_utf8(canonical).ok()?).ok()?),
            _ => return Some(prints.claim(canonical)),
        };
        Some(prints.claim_key(key.doc_type().as_u8(), &self.pseudo.pid(&key)))
    }

    /// Calls `found(i, pid, view)` with the pseudonym of each pair's key
    /// (for its audit entry) and the fingerprints of its current record
    /// (`None`: no live record), through `prints`.
    pub fn printed_many(
        &self,
        prints: &Prints,
        items: &[(SubjectKey, &str)],
        mut found: impl FnMut(usize, Pid, Option<PrintView<'_>>),
    ) -> Result<()> {
        if let Some((_, ds)) = items.iter().find(|(_, ds)| self.catalog.dataset(ds).is_none()) {
            return Err(Error::Invalid(format!("unknown dataset {ds}")));
        }
        let keys: Vec<&SubjectKey> = items.iter().map(|(k, _)| k).collect();
        let homes = self.homes(&keys)?;
        let asked: Vec<(Pid, &str)> = items.iter().zip(&homes).map(|((_, ds), home)| (home.pid, *ds)).collect();
        let printed = prints.many(&asked);
        for (i, ((key, _), home)) in items.iter().zip(&homes).enumerate() {
            // The key's own pseudonym, already at hand unless it is linked.
            let own = if home.linked { self.pseudonym(key) } else { home.pid };
            found(i, own, printed.view(i));
        }
        Ok(())
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// The sealer of what comparison jobs store (their lines carry real
    /// keys); its key is derived from this store's secret.
    pub fn job_sealer(&self) -> &Sealer {
        &self.job_sealer
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Sequence number of the last applied change (0 when none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    /// The pseudonym of a key, for modules (audit, jobs) that store
    /// subject references of their own.
    pub fn pseudonym(&self, key: &SubjectKey) -> Pid {
        self.pseudo.pid(key)
    }

    /// A keyed digest of `parts`: for ledgers that must recognize a value
    /// again without being able to tell what it was.
    pub fn digest(&self, parts: &[&[u8]]) -> [u8; 16] {
        self.pseudo.digest(parts)
    }

    /// Registers the encrypted mapping for `key` in `batch`.
    pub fn seal_into(&self, batch: &mut WriteBatch, key: &SubjectKey) -> Pid {
        let pid = self.pseudo.pid(key);
        batch.put(Cf::KeyMap, pid.0.to_vec(), self.pseudo.seal(&pid, key));
        pid
    }

    /// The pseudonym of `key` and its sealed mapping exactly as the write
    /// path stores it in the `keymap` family, for writers that build the
    /// family's files themselves (bulk loads).
    pub fn sealed_mapping(&self, key: &SubjectKey) -> (Pid, Vec<u8>) {
        let pid = self.pseudo.pid(key);
        let sealed = self.pseudo.seal(&pid, key);
        (pid, sealed)
    }

    /// Puts into `batch` the sealed key mapping of each update whose key
    /// has no record in its dataset yet. Sealing is the costliest step
    /// per new key on the single writer thread; a caller that passes this
    /// batch as the `extra` of [`Store::commit_with`] has done it on its
    /// own thread instead, and the writer then skips it. Sealing is
    /// deterministic and records are never removed, so a key that gains a
    /// record in the meantime just has the same mapping written twice.
    ///
    /// Where the store keeps claim fingerprints, they tell which keys have
    /// a live record without reading any: the read of every update's
    /// record, which the writer repeats anyway, was the costliest part of
    /// a single update on its request thread. A key whose record is a
    /// tombstone, which the fingerprints do not hold, is sealed again: the
    /// same mapping, written twice.
    pub fn seal_new_keys(&self, updates: &[Update], batch: &mut WriteBatch) -> Result<()> {
        let pids: Vec<Pid> = updates.iter().map(|u| self.pseudo.pid(&u.key)).collect();
        let recorded: Vec<bool> = match self.prints() {
            Some(prints) => updates
                .iter()
                .zip(&pids)
                .map(|(u, pid)| prints.with(pid, &u.dataset, |view| view.is_some()).unwrap_or(false))
                .collect(),
            None => {
                let rkeys: Vec<Vec<u8>> = updates.iter().zip(&pids).map(|(u, p)| record_key(p, &u.dataset)).collect();
                let refs: Vec<&[u8]> = rkeys.iter().map(|k| k.as_slice()).collect();
                self.engine.multi_get(Cf::Records, &refs)?.iter().map(Option::is_some).collect()
            }
        };
        let mut sealed = HashSet::new();
        for ((u, pid), recorded) in updates.iter().zip(&pids).zip(recorded) {
            if !recorded && sealed.insert(*pid) {
                batch.put(Cf::KeyMap, pid.0.to_vec(), self.pseudo.seal(pid, &u.key));
            }
        }
        Ok(())
    }

    /// The key a sealed mapping holds for `pid` (as stored in `keymap`);
    /// fails unless it was sealed for that pseudonym under this secret.
    pub(crate) fn open_mapping(&self, pid: &Pid, sealed: &[u8]) -> Result<SubjectKey> {
        self.pseudo.open(pid, sealed)
    }

    /// The real key behind a pseudonym, if this store has seen it.
    pub fn resolve(&self, pid: &Pid) -> Result<Option<SubjectKey>> {
        match self.engine.get(Cf::KeyMap, &pid.0)? {
            Some(sealed) => self.pseudo.open(pid, &sealed).map(Some),
            None => Ok(None),
        }
    }

    fn resolve_required(&self, doc: u8, pid: &Pid) -> Result<SubjectKey> {
        doc_type(doc)?;
        self.resolve(pid)?
            .ok_or(Error::Corrupt { what: "key mapping", msg: "missing mapping for a stored key".into() })
    }

    fn materialize(&self, fields: &StoredFields) -> Result<Vec<(String, Value)>> {
        let mut key_of = |doc: u8, pid: &Pid| self.resolve_required(doc, pid);
        fields
            .iter()
            .map(|(n, v)| Ok((n.clone(), from_stored(v, &mut key_of)?)))
            .collect()
    }

    /// Counters of one dataset.
    /// The counters of one provider of a dataset of several (its records
    /// stay 0: they are counted per dataset only).
    pub fn provider_stats(&self, dataset: &str, provider: &str) -> DatasetStats {
        self.dataset_stats(&provider_stats_name(dataset, provider))
    }

    pub fn dataset_stats(&self, dataset: &str) -> DatasetStats {
        let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        w.stats.get(dataset).copied().unwrap_or_default()
    }

    /// Applies updates in order as one atomic batch and returns one outcome
    /// per update. With [`Durability::Sync`] the batch is on stable storage
    /// when this returns.
    pub fn apply(&self, updates: &[Update], durability: Durability) -> Result<Vec<Outcome>> {
        Ok(self.commit(updates, &[], durability)?.outcomes)
    }

    /// Applies updates and appends audit events, all in one atomic write:
    /// the record of an action is durable exactly when the action is.
    pub fn commit(&self, updates: &[Update], events: &[AuditEvent], durability: Durability) -> Result<Committed> {
        self.commit_with(updates, events, WriteBatch::new(), durability)
    }

    /// [`Store::commit`] plus `extra` writes of the caller's own (governance
    /// state, job progress) in the same atomic batch, so that a state change
    /// and its audit entry are durable together or not at all.
    pub fn commit_with(
        &self,
        updates: &[Update],
        events: &[AuditEvent],
        extra: WriteBatch,
        durability: Durability,
    ) -> Result<Committed> {
        self.commit_all(updates, &[], events, extra, durability)
    }

    /// [`Store::commit_with`] with uses in their compact form too
    /// (records of uses from the journal, comparison jobs' chunks), chained
    /// before `events`.
    pub(crate) fn commit_all(
        &self,
        updates: &[Update],
        uses: &[Uses],
        events: &[AuditEvent],
        extra: WriteBatch,
        durability: Durability,
    ) -> Result<Committed> {
        for u in updates {
            let ds = self
                .catalog
                .dataset(&u.dataset)
                .ok_or_else(|| Error::Invalid(format!("unknown dataset {}", u.dataset)))?;
            if ds.subject != u.key.subject() {
                return Err(Error::Invalid(format!("dataset {} holds {} records", ds.id, ds.subject.as_str())));
            }
        }
        // Mappings the caller sealed already (see `seal_new_keys`).
        let presealed: HashSet<&[u8]> = extra
            .ops()
            .iter()
            .filter_map(|op| match op {
                BatchOp::Put { cf: Cf::KeyMap, key, .. } => Some(key.as_slice()),
                _ => None,
            })
            .collect();
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(why) = &w.stopped {
            return Err(Error::Bulk(why.clone()));
        }
        let now = self.clock.now_micros().max(w.last_committed);
        let keys: Vec<&SubjectKey> = updates.iter().map(|u| &u.key).collect();
        // Where each key's records are before this batch links anything.
        let homes = self.homes(&keys)?;
        let rkeys: Vec<Vec<u8>> = updates.iter().zip(&homes).map(|(u, h)| record_key(&h.pid, &u.dataset)).collect();
        let refs: Vec<&[u8]> = rkeys.iter().map(|k| k.as_slice()).collect();
        let stored = self.engine.multi_get(Cf::Records, &refs)?;

        let mut overlay: HashMap<Vec<u8>, StoredRecord> = HashMap::new();
        // The pseudonyms the overlay holds records under, so that a link's
        // check of them costs one lookup, not a pass over the overlay.
        let mut overlay_pids: HashSet<Pid> = HashSet::new();
        let mut links = link::Pending::default();
        let mut batch = WriteBatch::new();
        let mut outcomes = Vec::with_capacity(updates.len());
        let mut next_seq = w.next_seq;
        // Per dataset: (live-record delta, applied updates).
        let mut stats_delta: HashMap<&str, (i64, u64)> = HashMap::new();
        // Per (dataset, provider) of several: applied updates.
        let mut provider_delta: HashMap<(&str, &str), u64> = HashMap::new();
        for (i, u) in updates.iter().enumerate() {
            // A link goes into the batch only with the update that carries
            // it: a line answered stale or refused below links nothing.
            let mut link_ops = WriteBatch::new();
            let mut new_link = None;
            if let Some(licence) = &u.link {
                let fresh = |p: &Pid| overlay_pids.contains(p);
                match self.link_into(&u.key, licence, &mut links, fresh, &mut link_ops)? {
                    Err(reason) => {
                        outcomes.push(Outcome::Refused { code: "conflict", reason: reason.to_owned() });
                        continue;
                    }
                    Ok(made) => new_link = made,
                }
            }
            // Undoes the link this line made, if it is not applied.
            let mut unlink = |links: &mut link::Pending| {
                if let Some((code, licence)) = new_link.take() {
                    links.forget(&code, &licence);
                }
            };
            // A link made earlier in this batch moves the key's home.
            let home = self.home_pending(&u.key, &links, homes[i]);
            let moved = home.pid != homes[i].pid;
            let rkey_buf = if moved { record_key(&home.pid, &u.dataset) } else { rkeys[i].clone() };
            let rkey = rkey_buf.as_slice();
            let current = match overlay.get(rkey) {
                Some(r) => Some(r.clone()),
                None if moved => match self.engine.get(Cf::Records, rkey)? {
                    Some(bytes) => Some(decode::<StoredRecord>("record", &bytes)?),
                    None => None,
                },
                None => match &stored[i] {
                    Some(bytes) => Some(decode::<StoredRecord>("record", bytes)?),
                    None => None,
                },
            };
            if let Some(cur) = &current {
                if u.version <= cur.version {
                    outcomes.push(Outcome::Stale { current: cur.version });
                    unlink(&mut links);
                    continue;
                }
            }
            // Key-typed values of a merged record, to be mapped below.
            let mut sealed_refs = Vec::new();
            let ds = ds_of(&self.catalog, &u.dataset)?;
            let settled = match (&u.provider, &ds.division) {
                (Some(by), Some(division)) => {
                    let live = match &current {
                        Some(StoredRecord { body: Body::Live(f), .. }) => Current::Live(f),
                        _ => Current::Absent,
                    };
                    let mut st = |v: &Value| {
                        to_stored(v, &mut |k: &SubjectKey| {
                            let p = self.pseudo.pid(k);
                            sealed_refs.push((p, *k));
                            p
                        })
                    };
                    let settled = match ds.provider_entry(by) {
                        Some(p) => division.settle(&ds.providers, p, &u.key, u.op.change(), live, &mut st),
                        None => Err(Refusal(format!("{by} is not a provider of dataset {}", ds.id))),
                    };
                    match settled {
                        Ok(s) => s,
                        Err(Refusal(reason)) => {
                            outcomes.push(Outcome::Refused { code: crate::providers::REFUSED, reason });
                            unlink(&mut links);
                            continue;
                        }
                    }
                }
                _ => Settled::AsSent,
            };
            batch.extend(link_ops);
            let seq = next_seq;
            next_seq += 1;
            let pid = home.pid;
            // A linked key's home holds the other key's mapping, written
            // with the link: a pseudonym only ever seals its own key.
            if current.is_none() && !home.linked && !presealed.contains(&pid.0[..]) {
                batch.put(Cf::KeyMap, pid.0.to_vec(), self.pseudo.seal(&pid, &u.key));
            }
            let was_live = matches!(&current, Some(StoredRecord { body: Body::Live(_), .. }));
            if let Some(StoredRecord { version, committed_at, seq: old_seq, body: Body::Live(fields) }) = current {
                let h = HistoryEntry { version, committed_at, superseded_at: now, seq: old_seq, fields };
                batch.put(Cf::History, history_key(&pid, &u.dataset, old_seq), encode(&h));
            }
            let (op, body, fields) = match (settled, &u.op) {
                (Settled::Fields(mut sf), _) => {
                    sf.sort_by_key(|(n, _)| ds.field_index(n));
                    for (p, k) in sealed_refs {
                        batch.put(Cf::KeyMap, p.0.to_vec(), self.pseudo.seal(&p, &k));
                    }
                    (ChangeOp::Upsert, Body::Live(sf.clone()), sf)
                }
                (Settled::Delete, _) | (Settled::AsSent, UpdateOp::Delete) => (ChangeOp::Delete, Body::Deleted, Vec::new()),
                (Settled::AsSent, UpdateOp::Upsert(fields)) => {
                    let mut sealed_refs = Vec::new();
                    let mut pid_of = |k: &SubjectKey| {
                        let p = self.pseudo.pid(k);
                        sealed_refs.push((p, *k));
                        p
                    };
                    let sf: StoredFields = fields.iter().map(|(n, v)| (n.clone(), to_stored(v, &mut pid_of))).collect();
                    for (p, k) in sealed_refs {
                        batch.put(Cf::KeyMap, p.0.to_vec(), self.pseudo.seal(&p, &k));
                    }
                    (ChangeOp::Upsert, Body::Live(sf.clone()), sf)
                }
            };
            let is_live = matches!(body, Body::Live(_));
            let rec = StoredRecord { version: u.version, committed_at: now, seq, body };
            batch.put(Cf::Records, rkey.to_vec(), encode(&rec));
            overlay.insert(rkey_buf, rec);
            overlay_pids.insert(home.pid);
            let change = ChangeEntry {
                dataset: u.dataset.clone(),
                doc: home.doc.as_u8(),
                pid,
                op,
                version: u.version,
                committed_at: now,
                fields,
            };
            batch.put(Cf::Changes, seq_key(seq).to_vec(), encode(&change));
            let d = stats_delta.entry(u.dataset.as_str()).or_default();
            d.0 += is_live as i64 - was_live as i64;
            d.1 += 1;
            if let Some(by) = &u.provider {
                *provider_delta.entry((u.dataset.as_str(), by.as_str())).or_default() += 1;
            }
            outcomes.push(Outcome::Applied { seq });
        }
        drop(presealed);
        batch.extend(extra);
        let first_audit_seq = w.audit_head.seq + 1;
        let mut audit_head = w.audit_head;
        let mut index = Vec::new();
        if uses.iter().any(|u| !u.is_empty()) {
            audit_head = crate::audit::append_uses(self, audit_head, now, uses, &mut batch, &mut index);
        }
        if !events.is_empty() {
            audit_head = crate::audit::append(self, audit_head, now, events, &mut batch, &mut index);
        }
        if batch.is_empty() {
            return Ok(Committed { outcomes, first_audit_seq, last_seq: next_seq - 1 });
        }
        let today = crate::usage::day_of(now);
        let mut usage = crate::usage::UsageDelta::default();
        crate::usage::count_events(&mut usage, today, events);
        crate::usage::count_uses(&mut usage, today, uses);
        for (ds, (_, applied)) in &stats_delta {
            usage.add(Owner::Dataset(ds), today, Kind::Applied, *applied);
        }
        for ((ds, by), applied) in &provider_delta {
            usage.add(Owner::Dataset(&provider_stats_name(ds, by)), today, Kind::Applied, *applied);
        }
        let usage_values = usage.write(&w.usage, &*self.engine, &mut batch)?;
        let mut new_stats = Vec::with_capacity(stats_delta.len());
        // A provider's counters ride with its dataset's under the name
        // `dataset@provider` (no dataset id holds `@`); records are not
        // counted per provider, since a record may change areas.
        let per_provider = provider_delta.iter().map(|((ds, by), n)| (provider_stats_name(ds, by), (0, *n)));
        let all_deltas: Vec<(String, (i64, u64))> =
            stats_delta.iter().map(|(ds, d)| (ds.to_string(), *d)).chain(per_provider).collect();
        for (ds, (live_delta, applied)) in &all_deltas {
            let mut s = w.stats.get(ds.as_str()).copied().unwrap_or_default();
            s.records = s.records.saturating_add_signed(*live_delta);
            s.updates += applied;
            s.last_update = now;
            let mut k = META_DS_STATS.to_vec();
            k.extend_from_slice(ds.as_bytes());
            batch.put(Cf::Meta, k, encode(&s));
            new_stats.push((ds.to_string(), s));
        }
        if next_seq != w.next_seq {
            batch.put(Cf::Meta, META_LAST_SEQ, seq_key(next_seq - 1).to_vec());
        }
        let prints = self.prints();
        let staged = match &prints {
            Some(p) => p.stage(&batch)?,
            None => Default::default(),
        };
        self.engine.write(batch, durability)?;
        // Before any answer of the group leaves: an auditor then finds
        // its entries (see `audit::tail`).
        self.index_tail.push(index, audit_head.seq);
        if let Some(p) = prints {
            p.apply(staged);
        }
        // Only a successful write moves the writer state on.
        w.next_seq = next_seq;
        w.last_committed = now;
        w.audit_head = audit_head;
        w.usage.absorb(usage_values);
        for (ds, s) in new_stats {
            w.stats.insert(ds, s);
        }
        self.last_seq.store(next_seq - 1, Ordering::Release);
        Ok(Committed { outcomes, first_audit_seq, last_seq: next_seq - 1 })
    }

    /// The record of `dataset` for `key`, current or as it stood at `as_of`
    /// (Unix microseconds).
    pub fn get(&self, key: &SubjectKey, dataset: &str, as_of: Option<i64>) -> Result<Option<Record>> {
        let pid = self.home(key)?.pid;
        let current = match self.engine.get(Cf::Records, &record_key(&pid, dataset))? {
            Some(b) => Some(decode::<StoredRecord>("record", &b)?),
            None => None,
        };
        self.resolve_version(&pid, dataset, current, as_of)
    }

    /// Current records of many `(key, dataset)` pairs, one answer per pair in
    /// the order asked. The storage keys are sorted before one multi-get, so
    /// RocksDB walks each block once however the caller ordered the pairs
    /// (batch comparisons arrive in the order of the caller's spreadsheet).
    pub fn get_many(&self, items: &[(SubjectKey, &str)]) -> Result<Vec<Option<Record>>> {
        self.get_many_fields(items, &|_, _| true)
    }

    /// [`Store::get_many`] keeping only the fields that `keep(i, name)`
    /// accepts for pair `i`. Batch comparisons read millions of records for
    /// two or three fields each; the others are skipped without being
    /// copied out of the stored bytes.
    pub fn get_many_fields(
        &self,
        items: &[(SubjectKey, &str)],
        keep: &dyn Fn(usize, &str) -> bool,
    ) -> Result<Vec<Option<Record>>> {
        let keys: Vec<&SubjectKey> = items.iter().map(|(k, _)| k).collect();
        let homes = self.homes(&keys)?;
        let rkeys: Vec<Vec<u8>> = items.iter().zip(&homes).map(|((_, ds), h)| record_key(&h.pid, ds)).collect();
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_unstable_by(|&a, &b| rkeys[a].cmp(&rkeys[b]));
        let sorted: Vec<&[u8]> = order.iter().map(|&i| rkeys[i].as_slice()).collect();
        let found = self.engine.multi_get(Cf::Records, &sorted)?;
        let mut out: Vec<Option<Record>> = vec![None; items.len()];
        for (&i, bytes) in order.iter().zip(found) {
            if let Some(bytes) = bytes {
                out[i] = self.decode_fields(&bytes, items[i].1, &|n| keep(i, n))?;
            }
        }
        Ok(out)
    }

    /// The current record of `dataset` for `key` with only the fields
    /// `keep` accepts decoded (a verification reads the claimed ones).
    pub fn get_fields(&self, key: &SubjectKey, dataset: &str, keep: &dyn Fn(&str) -> bool) -> Result<Option<Record>> {
        let rkey = record_key(&self.home(key)?.pid, dataset);
        match self.engine.get(Cf::Records, &rkey)? {
            Some(bytes) => self.decode_fields(&bytes, dataset, keep),
            None => Ok(None),
        }
    }

    /// A stored record with the fields `keep` accepts; `None` for a delete.
    fn decode_fields(&self, bytes: &[u8], dataset: &str, keep: &dyn Fn(&str) -> bool) -> Result<Option<Record>> {
        let mut key_of = |doc: u8, pid: &Pid| self.resolve_required(doc, pid);
        let mut fields = Vec::new();
        let head = visit_live_fields(bytes, |n, v| {
            if keep(n) {
                fields.push((n.to_owned(), v.to_value(&mut key_of)?));
            }
            Ok(())
        })?;
        let Some(head) = head else { return Ok(None) };
        Ok(Some(Record {
            dataset: dataset.to_owned(),
            version: head.version,
            committed_at: head.committed_at,
            seq: head.seq,
            fields,
        }))
    }

    /// Change-log sequence number of the current record of `dataset` for
    /// `key`, deletes included (`None`: never written).
    pub fn record_seq(&self, key: &SubjectKey, dataset: &str) -> Result<Option<u64>> {
        let pid = self.home(key)?.pid;
        Ok(match self.engine.get(Cf::Records, &record_key(&pid, dataset))? {
            Some(b) => Some(decode::<StoredRecord>("record", &b)?.seq),
            None => None,
        })
    }

    /// Records of `key` in the given datasets (all of its subject's when
    /// `datasets` is `None`), in dataset-id order. Up to
    /// [`POINT_READS_UP_TO`] named datasets are read by point reads, more
    /// by a scan of the subject's records.
    pub fn get_all(&self, key: &SubjectKey, datasets: Option<&[&str]>, as_of: Option<i64>) -> Result<Vec<Record>> {
        self.get_all_under(&self.home(key)?.pid, datasets, as_of)
    }

    /// [`Store::get_all`] of the records stored under `pid`, a key's
    /// [`Store::home`], for a caller that needs the home itself too.
    pub fn get_all_under(&self, pid: &Pid, datasets: Option<&[&str]>, as_of: Option<i64>) -> Result<Vec<Record>> {
        let pid = *pid;
        let mut out = Vec::new();
        if let Some(want) = datasets.filter(|w| w.len() <= POINT_READS_UP_TO) {
            // A few named datasets are point reads, one batched multi-get:
            // an iterator seeks every level and memtable of the family. A
            // key not stored is a dataset the subject has no record in,
            // skipped as the scan below skips it.
            let mut ids: Vec<&str> = want.to_vec();
            ids.sort_unstable();
            ids.dedup();
            let keys: Vec<Vec<u8>> = ids.iter().map(|ds| record_key(&pid, ds)).collect();
            let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            for (ds, v) in ids.iter().zip(self.engine.multi_get(Cf::Records, &refs)?) {
                if let Some(v) = v {
                    out.extend(self.stored_record(&pid, ds, &v, as_of)?);
                }
            }
            return Ok(out);
        }
        let end = prefix_end(&pid.0);
        for item in self.engine.scan(Cf::Records, &pid.0, end.as_deref(), false)? {
            let (k, v) = item?;
            let ds = std::str::from_utf8(&k[pid.0.len()..])
                .map_err(|_| Error::Corrupt { what: "record key", msg: "dataset id not UTF-8".into() })?;
            if datasets.is_some_and(|want| !want.contains(&ds)) {
                continue;
            }
            out.extend(self.stored_record(&pid, ds, &v, as_of)?);
        }
        Ok(out)
    }

    /// The record `v` stored for `pid` in `dataset`, as it was `as_of` (if
    /// it existed then): the same for the point reads and the scan of
    /// [`Store::get_all`].
    fn stored_record(&self, pid: &Pid, dataset: &str, v: &[u8], as_of: Option<i64>) -> Result<Option<Record>> {
        self.resolve_version(pid, dataset, Some(decode::<StoredRecord>("record", v)?), as_of)
    }

    fn resolve_version(
        &self,
        pid: &Pid,
        dataset: &str,
        current: Option<StoredRecord>,
        as_of: Option<i64>,
    ) -> Result<Option<Record>> {
        let live = |version, committed_at, seq, fields: &StoredFields| -> Result<Option<Record>> {
            Ok(Some(Record {
                dataset: dataset.to_owned(),
                version,
                committed_at,
                seq,
                fields: self.materialize(fields)?,
            }))
        };
        match (&current, as_of) {
            (None, None) => return Ok(None),
            (Some(cur), None) => {
                return match &cur.body {
                    Body::Live(f) => live(cur.version, cur.committed_at, cur.seq, f),
                    Body::Deleted => Ok(None),
                }
            }
            (Some(cur), Some(t)) if cur.committed_at <= t => {
                return match &cur.body {
                    Body::Live(f) => live(cur.version, cur.committed_at, cur.seq, f),
                    Body::Deleted => Ok(None),
                }
            }
            _ => {}
        }
        let t = as_of.unwrap_or(i64::MAX);
        let prefix = history_prefix(pid, dataset);
        let end = prefix_end(&prefix);
        // The last version committed at or before `t` is the only
        // candidate; it answers if it was still current at `t`. Entries are
        // in change-log order, so commit times only grow: read forward
        // (within one subject, which the engine serves from its prefix
        // index; a reverse scan is a scan in total key order) up to the
        // first committed after `t`.
        let mut candidate = None;
        for item in self.engine.scan(Cf::History, &prefix, end.as_deref(), false)? {
            let (_, v) = item?;
            let h = decode::<HistoryEntry>("history", &v)?;
            if h.committed_at > t {
                break;
            }
            candidate = Some(h);
        }
        match candidate {
            Some(h) if t < h.superseded_at => live(h.version, h.committed_at, h.seq, &h.fields),
            _ => Ok(None),
        }
    }

    /// Serializes a bulk load with the write path. `load` runs with the
    /// writer held, so no commit takes sequence numbers meanwhile; it gets
    /// a [`BulkSlot`], writes its records, key mappings and change-log
    /// entries outside the write path (SST ingestion) and makes them
    /// durable, then returns what it applied and writes of its own (`extra`,
    /// e.g. clearing a recovery marker). Those writes, the dataset's
    /// counters, its usage counter and the last sequence number then go
    /// into `meta`/`gov` in one synced batch, and the writer moves on past
    /// `last_seq`, exactly as after a commit of the same changes.
    ///
    /// `load` must only number changes from `first_seq` up (or, finishing
    /// an interrupted load, reuse the numbers that load was given).
    pub fn bulk_commit<T>(
        &self,
        dataset: &str,
        load: impl FnOnce(&BulkSlot) -> Result<(BulkApplied, WriteBatch, T)>,
    ) -> Result<T> {
        if self.catalog.dataset(dataset).is_none() {
            return Err(Error::Invalid(format!("unknown dataset {dataset}")));
        }
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let slot = BulkSlot {
            first_seq: w.next_seq,
            committed_at: self.clock.now_micros().max(w.last_committed),
            stats: w.stats.get(dataset).copied().unwrap_or_default(),
        };
        let (done, mut batch, out) = match load(&slot) {
            Ok(loaded) => loaded,
            Err(e) => {
                // Changes ingested before the failure hold numbers from
                // `next_seq` on: no commit may take them (and so make the
                // load unfinishable) until the load is finished.
                // (Unknown, if the log cannot be read: taken, to be safe.)
                if !matches!(self.engine.get(Cf::Changes, &seq_key(slot.first_seq)), Ok(None)) {
                    w.stopped = Some(format!(
                        "a bulk load of dataset {dataset} stopped half-way ({e}); writes are refused until it is \
                         finished: restart the server or tool on this data directory"
                    ));
                }
                return Err(e);
            }
        };
        let mut stats = slot.stats;
        let mut usage_values = Vec::new();
        if done.applied > 0 {
            stats.records += done.live;
            stats.updates += done.applied;
            stats.last_update = stats.last_update.max(done.committed_at);
            let mut k = META_DS_STATS.to_vec();
            k.extend_from_slice(dataset.as_bytes());
            batch.put(Cf::Meta, k, encode(&stats));
            let mut usage = crate::usage::UsageDelta::default();
            usage.add(Owner::Dataset(dataset), crate::usage::day_of(done.committed_at), Kind::Applied, done.applied);
            usage_values = usage.write(&w.usage, &*self.engine, &mut batch)?;
        }
        let last_seq = done.last_seq.max(w.next_seq - 1);
        batch.put(Cf::Meta, META_LAST_SEQ, seq_key(last_seq).to_vec());
        self.engine.write(batch, Durability::Sync)?;
        // Written: the state in memory follows before anything else can
        // fail, or the next commit would reuse these change-log numbers.
        w.next_seq = last_seq + 1;
        w.stopped = None;
        w.last_committed = w.last_committed.max(done.committed_at);
        w.usage.absorb(usage_values);
        if done.applied > 0 {
            w.stats.insert(dataset.to_owned(), stats);
        }
        self.last_seq.store(last_seq, Ordering::Release);
        // The load wrote its records as files, past the commit path: the
        // fingerprints are built again from what is now stored. If that
        // fails, verifications read the records instead (until a restart
        // builds the fingerprints again): stale ones would answer wrong.
        if done.applied > 0 && self.prints().is_some() {
            if let Err(e) = self.build_prints() {
                tracing::error!(error = %e, "claim fingerprints not rebuilt after a bulk load; verifying from the records");
                *self.prints.write().unwrap_or_else(|e| e.into_inner()) = None;
            }
        }
        Ok(out)
    }

    /// A digest of what the store holds, independent of where and when it
    /// was written: BLAKE3 over every record's key, provider version and
    /// body in key order, leaving out commit times and change-log numbers
    /// (each node of a cluster numbers its own). Two stores that applied
    /// the same updates have the same digest. Returns the records counted
    /// (tombstones included) and the digest in hex.
    pub fn records_digest(&self) -> Result<(u64, String)> {
        let mut h = blake3::Hasher::new();
        let mut n = 0u64;
        for item in self.engine.scan(Cf::Records, &[], None, false)? {
            let (k, v) = item?;
            let r = decode::<StoredRecord>("record", &v)?;
            let body = encode(&r.body);
            h.update(&(k.len() as u32).to_le_bytes());
            h.update(&k);
            h.update(&r.version.to_le_bytes());
            h.update(&(body.len() as u32).to_le_bytes());
            h.update(&body);
            n += 1;
        }
        Ok((n, h.finalize().to_hex().to_string()))
    }

    /// Up to `limit` changes with a sequence number greater than `after`.
    pub fn changes(&self, after: u64, limit: usize) -> Result<Vec<Change>> {
        let mut out = Vec::with_capacity(limit.min(1024));
        if limit == 0 || after == u64::MAX {
            return Ok(out);
        }
        for item in self.engine.scan(Cf::Changes, &seq_key(after + 1), None, false)?.take(limit) {
            let (k, v) = item?;
            let c = decode::<ChangeEntry>("change", &v)?;
            out.push(Change {
                seq: seq_from_key(&k)?,
                key: self.resolve_required(c.doc, &c.pid)?,
                dataset: c.dataset,
                op: c.op,
                version: c.version,
                committed_at: c.committed_at,
                fields: self.materialize(&c.fields)?,
            });
        }
        Ok(out)
    }
}
