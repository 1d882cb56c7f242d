//! Claim fingerprints: for every current record, a keyed 64-bit hash of
//! each field's canonical value, held in memory so that a verification
//! compares claims with a record without reading or decoding it.
//!
//! A verification only asks whether a claimed value equals the stored one
//! (after both are made canonical, `value::canonical_stored`). Equal
//! values have equal hashes; unequal ones collide with probability 2⁻⁶⁴
//! per comparison, and the seed is drawn afresh each time the table is
//! built and never leaves the process, so no one can aim for a collision.
//! Batch comparisons of millions of lines then cost a hash lookup a line
//! instead of a block read and a decode.
//!
//! The table mirrors the `records` family exactly: it is built by one scan
//! when a server opens the store ([`crate::Store::keep_prints`]), and every
//! commit that writes records updates it under the writer lock once the
//! write is durable, from the very bytes written (so no write path can
//! forget it). Deleted records have no entry, as they have no record to
//! verify against. Key-typed values are hashed by their pseudonym, as they
//! are stored, and claims of them are pseudonymized the same way.
//!
//! Memory: per record, a table slot of 40 bytes plus the entry, 8 bytes a
//! stored field and a mask word, and the allocator's share (measured: a
//! million hukou records take 152–168 MB).

use crate::catalog::Catalog;
use crate::engine::{BatchOp, Cf, Engine, WriteBatch};
use crate::pseudo::{Pid, PID_LEN};
use crate::record::{visit_live_fields, ValueRef};
use crate::value::{date_bytes, fold_text_cow};
use crate::{Error, Result};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::RwLock;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Shards of the table: writers (one at a time) and readers on every core
/// rarely meet on the same lock.
const SHARDS: usize = 64;

/// A record's place in the table: its pseudonym and its dataset's position
/// in the catalog.
#[derive(Clone, Copy, PartialEq, Eq)]
struct PrintKey {
    pid: [u8; PID_LEN],
    ds: u16,
}

impl Hash for PrintKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        // Pseudonyms are keyed digests: their bytes are uniform already.
        let word = u64::from_le_bytes(self.pid[..8].try_into().expect("8 bytes"));
        h.write_u64(word ^ self.ds as u64);
    }
}

/// The identity hasher for [`PrintKey`]s (see its `Hash`).
#[derive(Default)]
struct Uniform(u64);

impl Hasher for Uniform {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used by PrintKey; any other input still hashes correctly.
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A record's fingerprints: mask words (bit `i` set when field `i` of the
/// dataset has a value), then one hash per set bit, in field order.
type Entry = Box<[u64]>;
type Shard = HashMap<PrintKey, Entry, BuildHasherDefault<Uniform>>;

/// A dataset as the table knows it.
#[derive(Clone, Debug)]
struct DatasetSlot {
    index: u16,
    /// Field names in catalog order.
    fields: Vec<String>,
    mask_words: usize,
}

/// The fingerprints of one record, borrowed from the table.
#[derive(Clone, Copy, Debug)]
pub struct PrintView<'a> {
    mask: &'a [u64],
    hashes: &'a [u64],
}

impl PrintView<'_> {
    /// The hash of field `index` (catalog order), `None` when the record
    /// has no value for it.
    pub fn field(&self, index: usize) -> Option<u64> {
        let (word, bit) = (index / 64, index % 64);
        let m = *self.mask.get(word)?;
        if m & (1 << bit) == 0 {
            return None;
        }
        let before: u32 = self.mask[..word].iter().map(|w| w.count_ones()).sum::<u32>() + (m & ((1u64 << bit) - 1)).count_ones();
        self.hashes.get(before as usize).copied()
    }
}

/// Changes to the table computed from a batch before it is written, put
/// in place once the write succeeded.
#[derive(Default)]
pub struct Staged(Vec<(PrintKey, Option<Entry>)>);

/// The in-memory fingerprint table. See the module documentation.
pub struct Prints {
    seed: u64,
    datasets: HashMap<String, DatasetSlot>,
    shards: Box<[RwLock<Shard>]>,
}

impl std::fmt::Debug for Prints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prints").field("records", &self.len()).finish()
    }
}

impl Prints {
    /// An empty table for `catalog`'s datasets, with a fresh random seed.
    pub fn new(catalog: &Catalog) -> Result<Prints> {
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).map_err(|e| Error::Invalid(format!("no randomness for the fingerprint seed: {e}")))?;
        let datasets = catalog
            .datasets()
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let slot = DatasetSlot {
                    index: i as u16,
                    fields: d.fields.iter().map(|f| f.name.clone()).collect(),
                    mask_words: d.fields.len().div_ceil(64).max(1),
                };
                (d.id.clone(), slot)
            })
            .collect();
        Ok(Prints {
            seed: u64::from_le_bytes(seed),
            datasets,
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
        })
    }

    /// A table holding every live record of `engine`, by one scan, split
    /// by the first byte of the pseudonym over the cores (decoding and
    /// hashing, not reading, is what a build spends its time on).
    pub fn build(catalog: &Catalog, engine: &dyn Engine) -> Result<Prints> {
        let prints = Prints::new(catalog)?;
        let parts = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 16);
        let bounds: Vec<u16> = (0..=parts).map(|i| (i * 256 / parts) as u16).collect();
        std::thread::scope(|scope| {
            let runs: Vec<_> = bounds
                .windows(2)
                .map(|w| {
                    let (lo, hi) = (w[0], w[1]);
                    let prints = &prints;
                    scope.spawn(move || prints.load_range(engine, lo, hi))
                })
                .collect();
            runs.into_iter().try_for_each(|r| r.join().unwrap_or_else(|_| Err(Error::Invalid("a fingerprint builder failed".into()))))
        })?;
        Ok(prints)
    }

    /// Adds the live records whose pseudonym starts with a byte in `lo..hi`.
    fn load_range(&self, engine: &dyn Engine, lo: u16, hi: u16) -> Result<()> {
        let start = [lo as u8];
        let end = [hi as u8];
        let end = (hi < 256).then_some(&end[..]);
        let from: &[u8] = if lo == 0 { &[] } else { &start };
        for item in engine.scan(Cf::Records, from, end, false)? {
            let (k, v) = item?;
            if let Some((key, Some(entry))) = self.entry_of(&k, &v)? {
                self.shards[shard_of(&key.pid)].write().unwrap_or_else(|e| e.into_inner()).insert(key, entry);
            }
        }
        Ok(())
    }

    /// Records with fingerprints.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The fingerprint of a claimed value in canonical form.
    pub fn claim(&self, canonical: &[u8]) -> u64 {
        xxh3_64_with_seed(canonical, self.seed)
    }

    /// The fingerprint of a subject key, by its pseudonym and document
    /// type, as key values are stored: for claimed keys and stored ones.
    pub fn claim_key(&self, doc: u8, pid: &Pid) -> u64 {
        let mut b = [0u8; 2 + PID_LEN];
        b[0] = b'K';
        b[1] = doc;
        b[2..].copy_from_slice(&pid.0);
        xxh3_64_with_seed(&b, self.seed)
    }

    fn value_print(&self, v: ValueRef<'_>) -> Result<u64> {
        let h = |b: &[u8]| xxh3_64_with_seed(b, self.seed);
        // The same bytes as `value::canonical_stored` of the owned value.
        Ok(match v {
            ValueRef::Str(s) | ValueRef::Code(s) => h(fold_text_cow(s).as_bytes()),
            ValueRef::Decimal(s) => h(s.as_bytes()),
            ValueRef::Date(j) => {
                let d = time::Date::from_julian_day(j)
                    .map_err(|_| Error::Corrupt { what: "date value", msg: format!("julian day {j}") })?;
                match date_bytes(d) {
                    Some(b) => h(&b),
                    None => h(crate::value::format_date(d).as_bytes()),
                }
            }
            ValueRef::DateTime(t) => h(&t.to_be_bytes()),
            ValueRef::Int(i) => h(&i.to_be_bytes()),
            ValueRef::Bool(b) => h(if b { b"true" } else { b"false" }),
            ValueRef::Key { doc, pid } => self.claim_key(doc, &pid),
            ValueRef::Bytes(b) => h(b),
        })
    }

    /// The table key and entry of a stored record (`Some(None)`: a
    /// tombstone; `None`: not a record of a dataset of the catalog).
    fn entry_of(&self, rkey: &[u8], bytes: &[u8]) -> Result<Option<(PrintKey, Option<Entry>)>> {
        let Some((key, slot)) = self.key_of(rkey) else { return Ok(None) };
        let mut mask = vec![0u64; slot.mask_words];
        let mut found: Vec<(usize, u64)> = Vec::with_capacity(slot.fields.len());
        let live = visit_live_fields(bytes, |name, v| {
            // Fields the catalog no longer has cannot be claimed.
            if let Some(i) = slot.fields.iter().position(|f| f == name) {
                found.push((i, self.value_print(v)?));
            }
            Ok(())
        })?;
        if live.is_none() {
            return Ok(Some((key, None)));
        }
        found.sort_unstable_by_key(|(i, _)| *i);
        found.dedup_by_key(|(i, _)| *i);
        for (i, _) in &found {
            mask[i / 64] |= 1 << (i % 64);
        }
        mask.extend(found.into_iter().map(|(_, h)| h));
        Ok(Some((key, Some(mask.into_boxed_slice()))))
    }

    fn key_of(&self, rkey: &[u8]) -> Option<(PrintKey, &DatasetSlot)> {
        if rkey.len() <= PID_LEN {
            return None;
        }
        let ds = std::str::from_utf8(&rkey[PID_LEN..]).ok()?;
        let slot = self.datasets.get(ds)?;
        let pid = rkey[..PID_LEN].try_into().ok()?;
        Some((PrintKey { pid, ds: slot.index }, slot))
    }

    /// What writing `batch` will change in the table (its record writes).
    pub fn stage(&self, batch: &WriteBatch) -> Result<Staged> {
        let mut out = Vec::new();
        for op in batch.ops() {
            match op {
                BatchOp::Put { cf: Cf::Records, key, value } => {
                    if let Some(change) = self.entry_of(key, value)? {
                        out.push(change);
                    }
                }
                BatchOp::Delete { cf: Cf::Records, key } => {
                    if let Some((k, _)) = self.key_of(key) {
                        out.push((k, None));
                    }
                }
                _ => {}
            }
        }
        Ok(Staged(out))
    }

    /// Puts staged changes in place, in batch order; call once their batch
    /// is written, while no other write can come between.
    pub fn apply(&self, staged: Staged) {
        for (key, entry) in staged.0 {
            let mut shard = self.shards[shard_of(&key.pid)].write().unwrap_or_else(|e| e.into_inner());
            match entry {
                Some(e) => shard.insert(key, e),
                None => shard.remove(&key),
            };
        }
    }

    /// Calls `f` with the fingerprints of the record of `dataset` stored
    /// under `pid` (`None`: no live record). `None` when the catalog has no
    /// such dataset.
    pub fn with<R>(&self, pid: &Pid, dataset: &str, f: impl FnOnce(Option<PrintView<'_>>) -> R) -> Option<R> {
        let slot = self.datasets.get(dataset)?;
        let key = PrintKey { pid: pid.0, ds: slot.index };
        let shard = self.shards[shard_of(&key.pid)].read().unwrap_or_else(|e| e.into_inner());
        let view = shard.get(&key).map(|e| {
            let (mask, hashes) = e.split_at(slot.mask_words.min(e.len()));
            PrintView { mask, hashes }
        });
        Some(f(view))
    }
}

/// The fingerprints of many records, copied out of the table at once
/// ([`Prints::many`]).
#[derive(Debug, Default)]
pub struct Printed {
    words: Vec<u64>,
    /// Per record asked for: where its entry starts in `words`, its
    /// length and how many of those are mask words.
    at: Vec<Option<(u32, u16, u16)>>,
}

impl Printed {
    /// The fingerprints of the `i`th record asked for (`None`: no live
    /// record, or no such dataset).
    pub fn view(&self, i: usize) -> Option<PrintView<'_>> {
        let (start, len, mask_words) = self.at.get(i).copied().flatten()?;
        let e = &self.words[start as usize..start as usize + len as usize];
        let (mask, hashes) = e.split_at(mask_words as usize);
        Some(PrintView { mask, hashes })
    }
}

impl Prints {
    /// The fingerprints of the records of `keys` (pseudonym and dataset).
    ///
    /// A batch's lookups land at random places of a table far larger than
    /// the caches: each costs cache and TLB misses, and taking a shard's
    /// lock for each (an atomic read-modify-write, which x86 orders
    /// against every other memory access) kept those misses from
    /// overlapping. Here each shard is locked once for all its keys, its
    /// slots are found first and their entries copied after, so the
    /// misses of many keys are in flight together.
    pub fn many(&self, keys: &[(Pid, &str)]) -> Printed {
        if let [(pid, ds)] = keys {
            // A point verification's one key: no lists by shard to build.
            let mut out = Printed { words: Vec::new(), at: vec![None] };
            self.with(pid, ds, |view| {
                if let Some(v) = view {
                    out.words.extend_from_slice(v.mask);
                    out.words.extend_from_slice(v.hashes);
                    out.at[0] = Some((0, out.words.len() as u16, v.mask.len() as u16));
                }
            });
            return out;
        }
        let mut by_shard: Vec<Vec<u32>> = vec![Vec::new(); SHARDS];
        let mut slots: Vec<Option<(PrintKey, u16)>> = Vec::with_capacity(keys.len());
        for (i, (pid, ds)) in keys.iter().enumerate() {
            let slot = self.datasets.get(*ds).map(|d| (PrintKey { pid: pid.0, ds: d.index }, d.mask_words as u16));
            if slot.is_some() {
                by_shard[shard_of(&pid.0)].push(i as u32);
            }
            slots.push(slot);
        }
        let mut out = Printed { words: Vec::with_capacity(keys.len() * 8), at: vec![None; keys.len()] };
        for (n, idx) in by_shard.iter().enumerate() {
            if idx.is_empty() {
                continue;
            }
            let shard = self.shards[n].read().unwrap_or_else(|e| e.into_inner());
            let found: Vec<Option<&[u64]>> = idx.iter().map(|&i| slots[i as usize].and_then(|(k, _)| shard.get(&k)).map(|e| &e[..])).collect();
            for (&i, e) in idx.iter().zip(&found) {
                if let (Some(e), Some((_, mask_words))) = (e, slots[i as usize]) {
                    out.at[i as usize] = Some((out.words.len() as u32, e.len() as u16, mask_words.min(e.len() as u16)));
                    out.words.extend_from_slice(e);
                }
            }
        }
        out
    }
}

/// The shard of a pseudonym: from other bytes than the in-shard hash, so
/// that a shard's table still spreads its keys.
fn shard_of(pid: &[u8; PID_LEN]) -> usize {
    pid[PID_LEN - 1] as usize % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fields found by their rank among the set bits, across mask words.
    #[test]
    fn a_view_finds_fields_by_rank_across_mask_words() {
        let mask = [0b1010_0001u64, 1 << 3];
        let hashes = [10, 50, 70, 64 + 3];
        let v = PrintView { mask: &mask, hashes: &hashes };
        let got: Vec<(usize, u64)> = (0..128).filter_map(|i| v.field(i).map(|h| (i, h))).collect();
        assert_eq!(got, vec![(0, 10), (5, 50), (7, 70), (67, 67)]);
        assert_eq!(v.field(200), None, "past the mask");
    }

    /// Many records copied out at once are the records one lookup each
    /// finds, in the order asked, across shards, datasets and absences.
    #[test]
    fn many_at_once_finds_what_one_at_a_time_finds() {
        let cat = Catalog::builtin();
        let p = Prints::new(&cat).unwrap();
        let (hukou, death) = (p.datasets["hukou"].index, p.datasets["death"].index);
        let pid = |i: u32| {
            let mut b = [0u8; PID_LEN];
            b[..4].copy_from_slice(&i.to_le_bytes());
            b[PID_LEN - 1] = (i * 7) as u8;
            Pid(b)
        };
        for i in 0..500u32 {
            let ds = if i % 3 == 0 { death } else { hukou };
            if i % 5 != 0 {
                let entry: Entry = (0..1 + i % 9).map(|w| (i as u64) << 8 | w as u64).collect();
                p.shards[shard_of(&pid(i).0)].write().unwrap().insert(PrintKey { pid: pid(i).0, ds }, entry);
            }
        }
        let asked: Vec<(Pid, &str)> = (0..600u32)
            .rev()
            .map(|i| (pid(i), if i % 11 == 0 { "no_such_dataset" } else if i % 3 == 0 { "death" } else { "hukou" }))
            .collect();
        let printed = p.many(&asked);
        let flat = |v: Option<PrintView<'_>>| v.map(|v| (v.mask.to_vec(), v.hashes.to_vec()));
        let mut found = 0;
        for (i, (pid, ds)) in asked.iter().enumerate() {
            let one = p.with(pid, ds, flat).flatten();
            found += one.is_some() as usize;
            assert_eq!(flat(printed.view(i)), one, "key {i}");
            assert_eq!(flat(p.many(&[(*pid, ds)]).view(0)), one, "key {i} alone");
        }
        assert!(found > 100, "{found}");
    }

    #[test]
    fn claims_hash_by_seed() {
        let cat = Catalog::builtin();
        let (a, b) = (Prints::new(&cat).unwrap(), Prints::new(&cat).unwrap());
        assert_eq!(a.claim(b"1949-12-31"), a.claim(b"1949-12-31"));
        assert_ne!(a.claim(b"1949-12-31"), a.claim(b"1949-12-30"));
        assert_ne!(a.claim(b"1949-12-31"), b.claim(b"1949-12-31"), "each table draws its own seed");
    }
}
