//! External sort of byte items by a fixed-length key prefix, in bounded
//! memory: items are appended to arenas until the memory budget is
//! reached, then the run is sorted and spilled to a file; at the end the
//! runs are merged (k-way, through a heap of run heads).
//!
//! Items order by their first `K` bytes (byte-wise); callers make those
//! bytes unique (they end in a line number) so the order is total and the
//! result deterministic. An item is the key followed by any payload. The
//! sorter copies items into its arenas, so pushing never allocates per
//! item, and the sorted stream hands out borrowed slices one at a time.
//!
//! Items go to one of 256 arenas by their first byte. Keys here are
//! pseudonyms, spread evenly, so each arena holds a 256th of the items and
//! sorting and reading one touches memory that fits in the CPU caches; one
//! big arena read in key order would miss the cache on nearly every item.
//!
//! Run files (`[len: u32 LE][item]`…) live in a private directory that is
//! removed when the sorter or its output is dropped, on success or error.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Runs merged at once; more are first merged in groups, so that the number
/// of open files and read buffers stays bounded.
const MAX_FAN_IN: usize = 64;
/// No item can be larger than this (a record is a few kilobytes at most,
/// a photo two megabytes); a larger length in a run file means corruption.
const MAX_ITEM: usize = 64 << 20;

/// One arena entry: the first 16 key bytes as a number, for quick
/// comparisons, and where the item (behind its length) starts.
#[derive(Clone, Copy)]
struct Entry {
    head: u128,
    off: usize,
}

/// Counters of a sort, for progress reports and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SortStats {
    pub items: u64,
    /// Runs written to disk (0: everything was sorted in memory).
    pub runs: u64,
    pub spilled_bytes: u64,
}

/// Accumulates items; [`Sorter::finish`] returns them in key order.
pub struct Sorter<const K: usize> {
    dir: tempfile::TempDir,
    buckets: Vec<Bucket>,
    /// Bytes held in the arenas and indexes.
    used: usize,
    budget: usize,
    runs: Vec<PathBuf>,
    next_run: u64,
    stats: SortStats,
}

/// The items whose key starts with one byte value.
#[derive(Default)]
struct Bucket {
    arena: Vec<u8>,
    index: Vec<Entry>,
    sorted: bool,
}

impl Bucket {
    fn sort<const K: usize>(&mut self) {
        if !self.sorted {
            let arena = &self.arena;
            self.index.sort_unstable_by(|a, b| {
                a.head.cmp(&b.head).then_with(|| item_at(arena, a.off)[..K].cmp(&item_at(arena, b.off)[..K]))
            });
            self.sorted = true;
        }
    }

    fn clear(&mut self) {
        self.arena.clear();
        self.index.clear();
        self.sorted = false;
    }
}

const BUCKETS: usize = 256;
/// Average size, with its length prefix and index entry, assumed of an
/// item for [`Sorter::reserve`] (a staged person record is about 250
/// bytes of input for 220 of item).
const TYPICAL_ITEM: usize = 250;
const ENTRY: usize = std::mem::size_of::<Entry>();

fn head_of(key: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = key.len().min(16);
    b[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(b)
}

fn item_at(arena: &[u8], off: usize) -> &[u8] {
    let len = u32::from_le_bytes(arena[off..off + 4].try_into().expect("4 bytes")) as usize;
    &arena[off + 4..off + 4 + len]
}

fn corrupt(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("sort run file: {msg}"))
}

impl<const K: usize> Sorter<K> {
    /// A sorter that keeps at most about `budget` bytes of items in memory
    /// and spills runs into a new directory under `tmp`.
    pub fn new(tmp: &Path, budget: usize) -> io::Result<Self> {
        const { assert!(K >= 1, "items are bucketed by their first key byte") };
        std::fs::create_dir_all(tmp)?;
        let dir = tempfile::Builder::new().prefix("basedata-sort-").tempdir_in(tmp)?;
        Ok(Sorter {
            dir,
            buckets: (0..BUCKETS).map(|_| Bucket::default()).collect(),
            used: 0,
            budget: budget.max(4096),
            runs: Vec::new(),
            next_run: 0,
            stats: SortStats::default(),
        })
    }

    pub fn stats(&self) -> SortStats {
        self.stats
    }

    /// Reserves room for about `bytes` of items (at most the memory budget),
    /// spread over the arenas as pseudonym keys spread. Items are assumed
    /// to average [`TYPICAL_ITEM`] bytes for the indexes.
    pub fn reserve(&mut self, bytes: u64) {
        let bytes = (bytes.min(self.budget as u64) as usize) / BUCKETS;
        if bytes == 0 {
            return;
        }
        // A little over the even share: arenas fill unevenly.
        let (arena, entries) = (bytes + bytes / 8, (bytes + bytes / 8) / TYPICAL_ITEM);
        for b in &mut self.buckets {
            b.arena.reserve(arena.saturating_sub(b.arena.len()));
            b.index.reserve(entries.saturating_sub(b.index.len()));
        }
    }

    /// Adds one item (its first `K` bytes are its key).
    pub fn push(&mut self, item: &[u8]) -> io::Result<()> {
        if item.len() < K || item.len() > MAX_ITEM {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "sort item shorter than its key or too large"));
        }
        let need = 4 + item.len() + ENTRY;
        if self.used > 0 && self.used + need > self.budget {
            self.spill()?;
        }
        let b = &mut self.buckets[item[0] as usize];
        let off = b.arena.len();
        b.arena.extend_from_slice(&(item.len() as u32).to_le_bytes());
        b.arena.extend_from_slice(item);
        b.index.push(Entry { head: head_of(&item[..K]), off });
        b.sorted = false;
        self.used += need;
        self.stats.items += 1;
        Ok(())
    }

    fn new_run_path(&mut self) -> PathBuf {
        self.next_run += 1;
        self.dir.path().join(format!("run-{:06}", self.next_run))
    }

    /// Sorts what is in memory and writes it out as one run.
    fn spill(&mut self) -> io::Result<()> {
        let path = self.new_run_path();
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        for b in &mut self.buckets {
            b.sort::<K>();
            for e in &b.index {
                let len = u32::from_le_bytes(b.arena[e.off..e.off + 4].try_into().expect("4 bytes")) as usize;
                w.write_all(&b.arena[e.off..e.off + 4 + len])?;
            }
            self.stats.spilled_bytes += b.arena.len() as u64;
            b.clear();
        }
        w.flush()?;
        self.stats.runs += 1;
        self.runs.push(path);
        self.used = 0;
        Ok(())
    }

    /// Everything pushed, in key order.
    pub fn finish(mut self) -> io::Result<Sorted<K>> {
        if self.runs.is_empty() {
            return Ok(Sorted {
                source: Source::Memory { buckets: self.buckets, bucket: 0, pos: 0 },
                stats: self.stats,
                _dir: self.dir,
            });
        }
        if self.used > 0 {
            self.spill()?;
        }
        // Memory goes to read buffers now.
        self.buckets = Vec::new();
        while self.runs.len() > MAX_FAN_IN {
            let group: Vec<PathBuf> = self.runs.drain(..MAX_FAN_IN).collect();
            let out = self.new_run_path();
            let mut merge = Merge::<K>::open(&group, self.budget)?;
            let mut w = BufWriter::with_capacity(1 << 20, File::create(&out)?);
            while let Some(item) = merge.next()? {
                w.write_all(&(item.len() as u32).to_le_bytes())?;
                w.write_all(item)?;
            }
            w.flush()?;
            drop(merge);
            for p in &group {
                std::fs::remove_file(p)?;
            }
            self.runs.push(out);
        }
        let merge = Merge::open(&self.runs, self.budget)?;
        Ok(Sorted { source: Source::Merge(merge), stats: self.stats, _dir: self.dir })
    }
}

/// The sorted items, read one at a time.
pub struct Sorted<const K: usize> {
    source: Source<K>,
    stats: SortStats,
    _dir: tempfile::TempDir,
}

enum Source<const K: usize> {
    Memory { buckets: Vec<Bucket>, bucket: usize, pos: usize },
    Merge(Merge<K>),
}

impl<const K: usize> Sorted<K> {
    /// The next item in key order, or `None` at the end.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> io::Result<Option<&[u8]>> {
        match &mut self.source {
            Source::Memory { buckets, bucket, pos } => {
                // Each bucket is sorted when reading reaches it, so sorting
                // is spread over the reading.
                while *bucket < buckets.len() && *pos == buckets[*bucket].index.len() {
                    let done = std::mem::take(&mut buckets[*bucket]);
                    drop(done);
                    *bucket += 1;
                    *pos = 0;
                }
                let Some(b) = buckets.get_mut(*bucket) else { return Ok(None) };
                b.sort::<K>();
                let e = b.index[*pos];
                *pos += 1;
                Ok(Some(item_at(&b.arena, e.off)))
            }
            Source::Merge(m) => m.next(),
        }
    }

    pub fn stats(&self) -> SortStats {
        self.stats
    }

    /// Whether everything was sorted in memory; then the items can be
    /// taken a block at a time with [`Sorted::next_block`], without copying.
    pub fn in_memory(&self) -> bool {
        matches!(self.source, Source::Memory { .. })
    }

    /// Sorted in memory: the next block of items in key order, as the
    /// bytes that hold them and their `(offset, length)` in those bytes.
    /// `None` at the end, and for a merge (read those with `next`).
    pub fn next_block(&mut self) -> Option<SortedBlock> {
        let Source::Memory { buckets, bucket, pos } = &mut self.source else { return None };
        // Blocks are whole buckets; a bucket partly read by `next` is not.
        if *pos != 0 {
            return None;
        }
        while *bucket < buckets.len() {
            let mut b = std::mem::take(&mut buckets[*bucket]);
            *bucket += 1;
            if b.index.is_empty() {
                continue;
            }
            b.sort::<K>();
            let items = b
                .index
                .iter()
                .map(|e| {
                    let len = u32::from_le_bytes(b.arena[e.off..e.off + 4].try_into().expect("4 bytes")) as usize;
                    (e.off + 4, len)
                })
                .collect();
            return Some(SortedBlock { bytes: b.arena, items });
        }
        None
    }
}

/// Items sorted in memory, handed out without copying.
#[derive(Debug)]
pub struct SortedBlock {
    pub bytes: Vec<u8>,
    /// `(offset, length)` of each item in `bytes`, in key order.
    pub items: Vec<(usize, usize)>,
}

struct RunReader {
    r: BufReader<File>,
    buf: Vec<u8>,
}

impl RunReader {
    /// Reads the next item into `buf`; false at the end of the run.
    fn advance(&mut self, key_len: usize) -> io::Result<bool> {
        let mut len = [0u8; 4];
        match self.r.read(&mut len[..1])? {
            0 => return Ok(false),
            _ => self.r.read_exact(&mut len[1..])?,
        }
        let len = u32::from_le_bytes(len) as usize;
        if len < key_len || len > MAX_ITEM {
            return Err(corrupt("bad item length"));
        }
        self.buf.resize(len, 0);
        self.r.read_exact(&mut self.buf).map_err(|_| corrupt("truncated item"))?;
        Ok(true)
    }
}

/// A run head in the merge heap: its key (copied, so the heap orders
/// without reaching into the readers) and which run it belongs to.
#[derive(PartialEq, Eq)]
struct Head<const K: usize> {
    key: [u8; K],
    run: usize,
}

impl<const K: usize> Ord for Head<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: reversed, so the smallest key is on top.
        other.key.cmp(&self.key).then_with(|| other.run.cmp(&self.run))
    }
}

impl<const K: usize> PartialOrd for Head<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

struct Merge<const K: usize> {
    readers: Vec<RunReader>,
    heap: BinaryHeap<Head<K>>,
    /// The run whose current item was handed out last; advanced on the next call.
    taken: Option<usize>,
}

impl<const K: usize> Merge<K> {
    fn open(runs: &[PathBuf], budget: usize) -> io::Result<Self> {
        let per_run = (budget / runs.len().max(1)).clamp(64 << 10, 8 << 20);
        let mut m = Merge { readers: Vec::with_capacity(runs.len()), heap: BinaryHeap::new(), taken: None };
        for (i, p) in runs.iter().enumerate() {
            let mut r = RunReader { r: BufReader::with_capacity(per_run, File::open(p)?), buf: Vec::new() };
            if r.advance(K)? {
                m.heap.push(Head { key: r.buf[..K].try_into().expect("K bytes"), run: i });
            }
            m.readers.push(r);
        }
        Ok(m)
    }

    fn next(&mut self) -> io::Result<Option<&[u8]>> {
        if let Some(run) = self.taken.take() {
            let r = &mut self.readers[run];
            if r.advance(K)? {
                self.heap.push(Head { key: r.buf[..K].try_into().expect("K bytes"), run });
            }
        }
        match self.heap.pop() {
            Some(h) => {
                self.taken = Some(h.run);
                Ok(Some(&self.readers[h.run].buf))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Items with a 4-byte key and a payload that depends on it.
    fn item(k: u32) -> Vec<u8> {
        let mut v = k.to_be_bytes().to_vec();
        v.extend(std::iter::repeat_n((k % 251) as u8, (k % 13) as usize));
        v
    }

    fn sort_all(keys: &[u32], budget: usize) -> (Vec<Vec<u8>>, SortStats) {
        sort_reserved(keys, budget, 0)
    }

    fn sort_reserved(keys: &[u32], budget: usize, reserve: u64) -> (Vec<Vec<u8>>, SortStats) {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Sorter::<4>::new(tmp.path(), budget).unwrap();
        s.reserve(reserve);
        for &k in keys {
            s.push(&item(k)).unwrap();
        }
        let mut sorted = s.finish().unwrap();
        let mut out = Vec::new();
        while let Some(i) = sorted.next().unwrap() {
            out.push(i.to_vec());
        }
        let stats = sorted.stats();
        drop(sorted);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "run files are removed");
        (out, stats)
    }

    fn shuffled(n: u32, seed: u64) -> Vec<u32> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut keys: Vec<u32> = (0..n).map(|i| i.wrapping_mul(2_654_435_761)).collect();
        rng.shuffle(&mut keys);
        keys
    }

    fn expected(keys: &[u32]) -> Vec<Vec<u8>> {
        let mut k = keys.to_vec();
        k.sort_unstable();
        k.into_iter().map(item).collect()
    }

    #[test]
    fn in_memory_sort_spills_nothing() {
        let keys = shuffled(10_000, 1);
        let (out, stats) = sort_all(&keys, 64 << 20);
        assert_eq!(out, expected(&keys));
        assert_eq!((stats.items, stats.runs), (10_000, 0));
    }

    /// Reserved room changes nothing but where the items are kept: the
    /// same order in memory, and the same spilling when the budget is
    /// smaller than the reservation asked for.
    #[test]
    fn reserving_room_keeps_results_and_budget() {
        let keys = shuffled(10_000, 5);
        let (out, stats) = sort_reserved(&keys, 64 << 20, 10_000 * 40);
        assert_eq!(out, expected(&keys));
        assert_eq!(stats.runs, 0);
        let (out, stats) = sort_reserved(&keys, 16 << 10, 1 << 30);
        assert_eq!(out, expected(&keys));
        assert!(stats.runs > 1, "{stats:?}");
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Sorter::<4>::new(tmp.path(), 1 << 20).unwrap();
        s.reserve(u64::MAX);
        let held: usize = s.buckets.iter().map(|b| b.arena.capacity()).sum();
        assert!(((1 << 20)..(2 << 20)).contains(&held), "reservation capped by the budget: {held}");
    }

    #[test]
    fn tiny_budget_spills_and_merges() {
        let keys = shuffled(20_000, 2);
        let (out, stats) = sort_all(&keys, 4096);
        assert_eq!(out, expected(&keys));
        // Far more runs than the fan-in: the cascade is exercised too.
        assert!(stats.runs > MAX_FAN_IN as u64, "{stats:?}");
        assert!(stats.spilled_bytes > 0);
    }

    #[test]
    fn a_few_runs_merge_directly() {
        let keys = shuffled(3_000, 3);
        let (out, stats) = sort_all(&keys, 16 << 10);
        assert_eq!(out, expected(&keys));
        assert!((2..=MAX_FAN_IN as u64).contains(&stats.runs), "{stats:?}");
    }

    #[test]
    fn keys_longer_than_sixteen_bytes_tie_break_past_the_head() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Sorter::<20>::new(tmp.path(), 4096).unwrap();
        let mut all = Vec::new();
        for i in (0..500u32).rev() {
            let mut it = vec![7u8; 16];
            it.extend_from_slice(&(i % 50).to_be_bytes());
            it.extend_from_slice(&i.to_le_bytes());
            s.push(&it).unwrap();
            all.push(it);
        }
        all.sort_by(|a, b| a[..20].cmp(&b[..20]).then(a.cmp(b)));
        let mut sorted = s.finish().unwrap();
        let mut out = Vec::new();
        while let Some(i) = sorted.next().unwrap() {
            out.push(i.to_vec());
        }
        // Equal keys may come in any order; keys must be ascending and the
        // multiset of items preserved.
        assert!(out.windows(2).all(|w| w[0][..20] <= w[1][..20]));
        out.sort_by(|a, b| a[..20].cmp(&b[..20]).then(a.cmp(b)));
        assert_eq!(out, all);
    }

    #[test]
    fn blocks_of_an_in_memory_sort_hold_every_item_in_order() {
        let keys = shuffled(5_000, 4);
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Sorter::<4>::new(tmp.path(), 64 << 20).unwrap();
        for &k in &keys {
            s.push(&item(k)).unwrap();
        }
        let mut sorted = s.finish().unwrap();
        assert!(sorted.in_memory());
        let mut out = Vec::new();
        while let Some(b) = sorted.next_block() {
            out.extend(b.items.iter().map(|&(off, len)| b.bytes[off..off + len].to_vec()));
        }
        assert_eq!(out, expected(&keys));
        assert!(sorted.next().unwrap().is_none());
        let (_, stats) = sort_all(&keys, 4096);
        assert!(stats.runs > 0);
    }

    #[test]
    fn empty_input_and_bad_items() {
        let (out, stats) = sort_all(&[], 4096);
        assert!(out.is_empty());
        assert_eq!(stats.items, 0);
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Sorter::<4>::new(tmp.path(), 4096).unwrap();
        assert!(s.push(b"abc").is_err());
    }

    #[test]
    fn a_damaged_run_is_an_error_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("run");
        std::fs::write(&path, [200u8, 0, 0, 0, 1, 2]).unwrap();
        let mut m = Merge::<4>::open(&[path.clone()], 4096);
        assert!(m.is_err() || m.as_mut().unwrap().next().is_err());
        std::fs::write(&path, [2u8, 0, 0, 0, 1, 2]).unwrap();
        assert!(Merge::<4>::open(&[path], 4096).is_err(), "item shorter than its key");
    }
}
