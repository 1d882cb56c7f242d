//! The audit index's tail: the index keys of this node's entries that
//! the writer has committed and the engine does not hold yet, kept in
//! memory and built into the engine behind the answers.
//!
//! The writer commits a group's entries without their index keys and
//! hands the keys here ([`IndexTail::push`]) before it answers the group,
//! so an auditor sees an entry as soon as its answer has left: the audit
//! queries read the engine's index merged with the tail
//! ([`IndexTail::range`]). An indexer thread sorts what the writer pushed
//! into runs every [`FREEZE_EVERY`], and puts the runs into the engine as
//! one sorted file ([`crate::Engine::put_sorted`]) once they hold
//! [`INGEST_ENTRIES`] keys or the oldest is [`INGEST_AFTER`] old, then
//! records in `meta` ([`META_AUDIT_INDEXED`]) the last sequence number up
//! to which the engine holds every key. The index family's memtable then
//! sees hardly a write, so no auditor's scan sorts one (a vector memtable
//! sorted itself for every iterator: 15–20 ms for one key beside load),
//! and neither the journal nor a memtable takes a key a use.
//!
//! A crash loses only the tail, which the entries rebuild: a reopen
//! indexes every entry after the recorded position again
//! ([`crate::Store::open`]). Before the sorted file goes in, the journal
//! is synced, so that no key outlives a crash that its entry does not
//! (the writer enters a batch's uses with an unsynced write). A store
//! written before the tail has no position: it opens with its head as
//! the position, every entry then being indexed.

use crate::engine::{position_of, position_value, Cf, Durability, Engine, Kv, WriteBatch};
use crate::Result;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// `meta` key: the engine's audit index holds the keys of every entry of
/// this node's chain up to this sequence number.
pub(crate) const META_AUDIT_INDEXED: &[u8] = b"audit_indexed";

/// How often the indexer sorts what the writer pushed: an auditor's
/// query filters at most this long a stretch of unsorted keys (some
/// 30,000 under full load), and a file merges about ten runs.
pub const FREEZE_EVERY: Duration = Duration::from_millis(200);

/// Keys that make the runs worth a file of their own (about 10 MiB).
pub const INGEST_ENTRIES: usize = 1 << 18;

/// The longest a key stays in memory only.
pub const INGEST_AFTER: Duration = Duration::from_secs(5);

/// After a failed ingestion, how long before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// One index key and its value.
pub(crate) type Entry = (Vec<u8>, Vec<u8>);

/// The keys of one committed group, unsorted, and the last entry it
/// reaches.
struct Group {
    entries: Vec<Entry>,
    upto: u64,
    since: Instant,
}

/// Groups sorted together, their keys and values copied into one buffer
/// in key order, each key once: the copy is made while the groups are
/// fresh in the cache, and the file that takes the run later reads it in
/// order (reading the groups' own keys then, scattered and cold, took the
/// indexer nearly three times the CPU under closed-loop verifications).
struct Run {
    bytes: Vec<u8>,
    /// Where each key starts in `bytes`, its length and its value's.
    spans: Vec<(usize, u32, u32)>,
    upto: u64,
    groups: u64,
    since: Option<Instant>,
}

impl Run {
    fn of(groups: &[Arc<Group>]) -> Run {
        let mut order: Vec<&Entry> = groups.iter().flat_map(|g| g.entries.iter()).collect();
        order.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        order.dedup_by(|a, b| a.0 == b.0);
        let mut bytes = Vec::with_capacity(order.iter().map(|(k, v)| k.len() + v.len()).sum());
        let mut spans = Vec::with_capacity(order.len());
        for (k, v) in order {
            spans.push((bytes.len(), k.len() as u32, v.len() as u32));
            bytes.extend_from_slice(k);
            bytes.extend_from_slice(v);
        }
        Run {
            bytes,
            spans,
            upto: groups.iter().map(|g| g.upto).max().unwrap_or(0),
            groups: groups.len() as u64,
            since: groups.first().map(|g| g.since),
        }
    }

    fn len(&self) -> usize {
        self.spans.len()
    }

    fn at(&self, i: usize) -> (&[u8], &[u8]) {
        let (at, k, v) = self.spans[i];
        let (k, v) = (k as usize, v as usize);
        (&self.bytes[at..at + k], &self.bytes[at + k..at + k + v])
    }

    /// The first place whose key is not below `k`.
    fn from(&self, k: &[u8]) -> usize {
        self.spans.partition_point(|&(at, n, _)| &self.bytes[at..at + n as usize] < k)
    }
}

#[derive(Default)]
struct State {
    /// Unsorted, oldest first.
    groups: Vec<Arc<Group>>,
    /// Sorted, oldest first; every run is older than every group.
    runs: Vec<Arc<Run>>,
    run_entries: usize,
    /// Groups ever pushed, and ever put into the engine.
    pushed: u64,
    built: u64,
    /// Groups that someone waits to see in the engine: the indexer puts
    /// in what it holds at once while `built` is below it.
    settle_to: u64,
    stop: bool,
    /// Why the last ingestion failed, until one succeeds.
    failing: Option<String>,
    /// Sorted files put into the engine, and ingestions that failed.
    files: u64,
    failures: u64,
}

/// See the module's doc.
#[derive(Default)]
pub struct IndexTail {
    state: Mutex<State>,
    /// The indexer's: something to do.
    wake: Condvar,
    /// Settlers': runs went into the engine, or an ingestion failed.
    built: Condvar,
}

/// What [`IndexTail::stats`] reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TailStats {
    /// Keys held in memory, and the groups and runs holding them.
    pub entries: usize,
    pub parts: usize,
    /// Sorted files put into the engine since open, and failed tries.
    pub files: u64,
    pub failures: u64,
}

impl IndexTail {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The keys of a committed group whose last entry is `upto`, visible
    /// to [`IndexTail::range`] from now on.
    pub(crate) fn push(&self, entries: Vec<Entry>, upto: u64) {
        if entries.is_empty() {
            return;
        }
        let mut st = self.lock();
        st.groups.push(Arc::new(Group { entries, upto, since: Instant::now() }));
        st.pushed += 1;
    }

    /// Every key of the tail in `[start, end)`, in key order, each once;
    /// the runs' keys are copied only as they are read (a scan of the
    /// time index may take one key of a hundred thousand).
    pub(crate) fn range(&self, start: &[u8], end: Option<&[u8]>) -> TailRange {
        let (groups, runs) = {
            let st = self.lock();
            (st.groups.clone(), st.runs.clone())
        };
        let within = |k: &[u8]| k >= start && end.is_none_or(|e| k < e);
        let mut loose: Vec<Entry> = groups.iter().flat_map(|g| g.entries.iter()).filter(|(k, _)| within(k)).cloned().collect();
        loose.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let runs = runs
            .into_iter()
            .map(|run| {
                let from = run.from(start);
                let to = end.map_or(run.len(), |e| run.from(e)).max(from);
                (run, from, to)
            })
            .filter(|(_, from, to)| from < to)
            .collect();
        TailRange { runs, loose: loose.into_iter().peekable(), last: None }
    }

    /// Keys and parts held in memory.
    pub fn stats(&self) -> TailStats {
        let st = self.lock();
        let entries = st.run_entries + st.groups.iter().map(|g| g.entries.len()).sum::<usize>();
        TailStats { entries, parts: st.groups.len() + st.runs.len(), files: st.files, failures: st.failures }
    }

    /// Waits until every key pushed before the call is in the engine (the
    /// indexer ingests at once), for what reads or changes the engine's
    /// index directly: retention, the index check. An error when an
    /// ingestion failed meanwhile, or no indexer runs.
    pub fn settle(&self) -> Result<()> {
        let mut st = self.lock();
        let target = st.pushed;
        let failures = st.failures;
        if st.built < target {
            st.settle_to = st.settle_to.max(target);
            self.wake.notify_all();
        }
        while st.built < target {
            if st.stop {
                return Err(crate::Error::Engine("the audit index is closing".into()));
            }
            st = self.built.wait(st).unwrap_or_else(|p| p.into_inner());
            if st.failures > failures && st.built < target {
                let why = st.failing.clone().unwrap_or_default();
                return Err(crate::Error::Engine(format!("the audit index could not be written: {why}")));
            }
        }
        Ok(())
    }

    /// Starts the indexer over `engine`; it stops, putting what it holds
    /// into the engine first, when the returned handle is dropped.
    pub(crate) fn start(self: &Arc<Self>, engine: Arc<dyn Engine>) -> Indexer {
        let tail = self.clone();
        let thread = std::thread::Builder::new()
            .name("audit-indexer".into())
            .spawn(move || tail.run(&*engine))
            .map_err(|e| {
                // Queries still see every key; a reopen puts them in.
                tracing::error!(error = %e, "the audit indexer did not start; the index's tail stays in memory");
                self.lock().stop = true;
            })
            .ok();
        Indexer { tail: self.clone(), thread }
    }

    fn run(&self, engine: &dyn Engine) {
        let mut st = self.lock();
        loop {
            if !st.stop && st.built >= st.settle_to {
                st = self.wake.wait_timeout(st, FREEZE_EVERY).unwrap_or_else(|p| p.into_inner()).0;
            }
            let stopping = st.stop;
            if !st.groups.is_empty() {
                let groups = st.groups.clone();
                drop(st);
                let n = groups.len();
                let run = Run::of(&groups);
                drop(groups);
                st = self.lock();
                st.groups.drain(..n);
                st.run_entries += run.len();
                st.runs.push(Arc::new(run));
            }
            let due = st.run_entries >= INGEST_ENTRIES
                || st.runs.first().and_then(|r| r.since).is_some_and(|t| t.elapsed() >= INGEST_AFTER)
                || st.built < st.settle_to
                || stopping;
            if due && !st.runs.is_empty() {
                let runs = st.runs.clone();
                drop(st);
                let result = ingest(engine, &runs);
                st = self.lock();
                match result {
                    Ok(()) => {
                        st.runs.drain(..runs.len());
                        st.run_entries -= runs.iter().map(|r| r.len()).sum::<usize>();
                        st.built += runs.iter().map(|r| r.groups).sum::<u64>();
                        st.failing = None;
                        st.files += 1;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the audit index's tail could not be written; it stays in memory and is tried again");
                        st.failing = Some(e.to_string());
                        st.failures += 1;
                        // Those waiting hear of it; the next try is not theirs.
                        st.settle_to = st.built;
                        self.built.notify_all();
                        if stopping {
                            return;
                        }
                        st = self.wake.wait_timeout(st, RETRY_AFTER).unwrap_or_else(|p| p.into_inner()).0;
                        continue;
                    }
                }
            }
            self.built.notify_all();
            if stopping && st.groups.is_empty() && st.runs.is_empty() {
                return;
            }
        }
    }
}

/// What [`IndexTail::range`] found: the runs' places in range and the
/// newest keys, sorted.
pub(crate) struct TailRange {
    runs: Vec<(Arc<Run>, usize, usize)>,
    loose: std::iter::Peekable<std::vec::IntoIter<Entry>>,
    last: Option<Vec<u8>>,
}

impl Iterator for TailRange {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        loop {
            // The smallest key at the head of a run (runs are few: a file
            // takes them every few seconds) or of the newest keys.
            let mut best: Option<(usize, &[u8])> = None;
            for (i, (run, at, _)) in self.runs.iter().enumerate() {
                let k = run.at(*at).0;
                if best.is_none_or(|(_, b)| k < b) {
                    best = Some((i, k));
                }
            }
            let from_loose = match (best, self.loose.peek()) {
                (None, None) => return None,
                (None, Some(_)) => true,
                (Some((_, b)), Some((k, _))) => k.as_slice() < b,
                (Some(_), None) => false,
            };
            let e = match (from_loose, best) {
                (true, _) => self.loose.next()?,
                (false, Some((i, _))) => {
                    let (run, at, to) = &mut self.runs[i];
                    let (k, v) = run.at(*at);
                    let e = (k.to_vec(), v.to_vec());
                    *at += 1;
                    if *at == *to {
                        self.runs.swap_remove(i);
                    }
                    e
                }
                (false, None) => return None,
            };
            if self.last.as_ref() == Some(&e.0) {
                continue;
            }
            self.last = Some(e.0.clone());
            return Some(e);
        }
    }
}

/// The indexer thread of a store (see [`IndexTail::start`]).
pub(crate) struct Indexer {
    tail: Arc<IndexTail>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.tail.lock().stop = true;
        self.tail.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.tail.built.notify_all();
    }
}

/// Puts `runs` into the engine's index as one sorted file (merged, each
/// key once), then records the position they reach.
fn ingest(engine: &dyn Engine, runs: &[Arc<Run>]) -> Result<()> {
    // The entries these keys point to may have been written unsynced (a
    // batch's uses entered from the journal): on disk before their keys.
    engine.write(WriteBatch::new(), Durability::Sync)?;
    engine.put_sorted(Cf::AuditIndex, &mut Merge::of(runs))?;
    let upto = runs.iter().map(|r| r.upto).max().unwrap_or(0);
    // Lost in a crash, the position is only older: the keys after it are
    // put again, the same.
    record_indexed(engine, upto, Durability::Buffered)
}

/// The keys of several runs in key order, each once.
struct Merge<'a> {
    runs: &'a [Arc<Run>],
    /// The next place of each run not yet taken, smallest key on top.
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(&'a [u8], usize, usize)>>,
    last: Option<&'a [u8]>,
}

impl<'a> Merge<'a> {
    fn of(runs: &'a [Arc<Run>]) -> Merge<'a> {
        let heap = runs.iter().enumerate().filter(|(_, r)| r.len() > 0).map(|(ri, r)| std::cmp::Reverse((r.at(0).0, ri, 0))).collect();
        Merge { runs, heap, last: None }
    }
}

impl<'a> Iterator for Merge<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        while let Some(std::cmp::Reverse((_, ri, i))) = self.heap.pop() {
            let run: &'a Run = &self.runs[ri];
            if i + 1 < run.len() {
                self.heap.push(std::cmp::Reverse((run.at(i + 1).0, ri, i + 1)));
            }
            let e = run.at(i);
            if self.last == Some(e.0) {
                continue;
            }
            self.last = Some(e.0);
            return Some(e);
        }
        None
    }
}

/// The recorded position (see [`META_AUDIT_INDEXED`]); `None` in a store
/// written before the tail, whose index holds every entry's keys.
pub(crate) fn indexed_upto(engine: &dyn Engine) -> Result<Option<u64>> {
    match engine.get(Cf::Meta, META_AUDIT_INDEXED)? {
        None => Ok(None),
        Some(v) => position_of("audit index position", Some(&v)).map(Some),
    }
}

/// The last entry of this node's chain whose keys the engine's index
/// must hold: the recorded position, or every entry in a store written
/// before the tail. What reads the engine's index without the tail (the
/// index check, the named cuts) reads the entries after it whole.
pub(crate) fn whole_upto(engine: &dyn Engine) -> Result<u64> {
    Ok(indexed_upto(engine)?.unwrap_or(u64::MAX))
}

/// Records `upto` as the position.
pub(crate) fn record_indexed(engine: &dyn Engine, upto: u64, durability: Durability) -> Result<()> {
    let mut b = WriteBatch::new();
    b.put(Cf::Meta, META_AUDIT_INDEXED, position_value(upto));
    engine.write(b, durability)
}

/// The index keys of this node's entries after `upto`, read from the
/// entries: what a reopen puts back into the tail. An entry that does not
/// decode is left to the chain check, which reports it.
pub(crate) fn rebuilt(engine: &dyn Engine, upto: u64) -> Result<Vec<Entry>> {
    let mut keys = Vec::new();
    for item in super::AuditFiles(engine).entries(super::Chain::Local, upto)? {
        let (first, v) = item?;
        match super::Stored::decode(&v) {
            Ok(e) => keys.extend(e.index_entries(first)),
            Err(e) => tracing::warn!(entry = first, error = %e, "an audit entry after the index's position does not decode; not indexed"),
        }
    }
    Ok(keys)
}

/// The engine's scan of `[start, end)` of the audit index merged with
/// `tail` (in key order, each key once, as [`IndexTail::range`] gives it): the
/// engine's value where both hold a key (they hold the same).
pub(crate) fn merged<'a>(
    engine: impl Iterator<Item = Result<Kv>> + 'a,
    tail: impl Iterator<Item = Entry> + 'a,
) -> impl Iterator<Item = Result<Kv>> + 'a {
    let mut engine = engine.peekable();
    let mut tail = tail.peekable();
    std::iter::from_fn(move || {
        let from_tail = match (engine.peek(), tail.peek()) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(Err(_)), _) => false,
            (Some(Ok((ek, _))), Some((tk, _))) => match tk.as_slice().cmp(ek) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Equal => {
                    tail.next();
                    false
                }
                std::cmp::Ordering::Greater => false,
            },
        };
        if from_tail {
            tail.next().map(|(k, v)| Ok((k.into_boxed_slice(), v.into_boxed_slice())))
        } else {
            engine.next()
        }
    })
}

#[cfg(test)]
mod tests;
