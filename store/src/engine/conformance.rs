//! One behavioural suite for every engine: each case is a plain function
//! over `&dyn Engine`, and `engine_suite!` instantiates all cases for an
//! engine constructor. The optional capabilities are cases too: an engine
//! either has one and it works, or answers `None` for it, and never panics.

use super::{prefix_end, Cf, Durability, Engine, EngineStats, WriteBatch};
use crate::Result;
use std::path::Path;

/// Opens a copy written by an engine's checkpoint, as that engine.
pub type OpenCopy = fn(&Path) -> Result<Box<dyn Engine>>;

fn put(e: &dyn Engine, cf: Cf, k: &[u8], v: &[u8]) {
    let mut b = WriteBatch::new();
    b.put(cf, k, v);
    e.write(b, Durability::Sync).unwrap();
}

fn keys(e: &dyn Engine, cf: Cf, start: &[u8], end: Option<&[u8]>, rev: bool) -> Vec<Vec<u8>> {
    e.scan(cf, start, end, rev).unwrap().map(|r| r.unwrap().0.to_vec()).collect()
}

pub fn get_put_delete(e: &dyn Engine) {
    assert_eq!(e.get(Cf::Meta, b"a").unwrap(), None);
    put(e, Cf::Meta, b"a", b"1");
    assert_eq!(e.get(Cf::Meta, b"a").unwrap().as_deref(), Some(&b"1"[..]));
    put(e, Cf::Meta, b"a", b"2");
    assert_eq!(e.get(Cf::Meta, b"a").unwrap().as_deref(), Some(&b"2"[..]));
    let mut b = WriteBatch::new();
    b.delete(Cf::Meta, b"a".to_vec());
    e.write(b, Durability::Sync).unwrap();
    assert_eq!(e.get(Cf::Meta, b"a").unwrap(), None);
}

pub fn families_are_separate(e: &dyn Engine) {
    let k = b"0123456789abcdef-k";
    put(e, Cf::Records, k, b"records");
    put(e, Cf::History, k, b"history");
    assert_eq!(e.get(Cf::Records, k).unwrap().unwrap(), b"records");
    assert_eq!(e.get(Cf::History, k).unwrap().unwrap(), b"history");
    assert_eq!(e.get(Cf::Changes, k).unwrap(), None);
}

/// A key of a subject-keyed family must hold a whole subject prefix: a
/// batch with a shorter one is refused whole, by every engine, and a key
/// of exactly the prefix is fine.
pub fn short_subject_keys_are_refused(e: &dyn Engine) {
    for cf in Cf::ALL.into_iter().filter(|cf| cf.subject_keyed()) {
        let mut b = WriteBatch::new();
        b.put(Cf::Meta, b"m".to_vec(), b"1".to_vec());
        b.put(cf, b"0123456789abcde".to_vec(), b"v".to_vec());
        let err = e.write(b, Durability::Sync).unwrap_err();
        assert!(matches!(err, crate::Error::Invalid(_)), "{}: {err:?}", cf.name());
        assert_eq!(e.get(Cf::Meta, b"m").unwrap(), None, "nothing of the batch written");
        let mut b = WriteBatch::new();
        b.delete(cf, b"k".to_vec());
        assert!(e.write(b, Durability::Buffered).is_err(), "{}: a delete too", cf.name());
        put(e, cf, b"0123456789abcdef", b"v");
        assert_eq!(e.get(cf, b"0123456789abcdef").unwrap().as_deref(), Some(&b"v"[..]));
    }
    // Other families take keys of any length.
    put(e, Cf::Meta, b"m", b"1");
    assert_eq!(e.get(Cf::Meta, b"m").unwrap().as_deref(), Some(&b"1"[..]));
}

pub fn batch_applies_in_order(e: &dyn Engine) {
    let mut b = WriteBatch::new();
    b.put(Cf::Meta, b"x".to_vec(), b"1".to_vec());
    b.delete(Cf::Meta, b"x".to_vec());
    b.put(Cf::Meta, b"y".to_vec(), b"1".to_vec());
    b.put(Cf::Meta, b"y".to_vec(), b"2".to_vec());
    assert_eq!(b.len(), 4);
    e.write(b, Durability::Buffered).unwrap();
    assert_eq!(e.get(Cf::Meta, b"x").unwrap(), None);
    assert_eq!(e.get(Cf::Meta, b"y").unwrap().unwrap(), b"2");
}

pub fn scan_bounds_and_direction(e: &dyn Engine) {
    for k in [&b"a"[..], b"b", b"ba", b"bb", b"c", b"d"] {
        put(e, Cf::Changes, k, b"v");
    }
    assert_eq!(keys(e, Cf::Changes, b"", None, false).len(), 6);
    assert_eq!(keys(e, Cf::Changes, b"b", Some(b"c"), false), vec![b"b".to_vec(), b"ba".to_vec(), b"bb".to_vec()]);
    assert_eq!(keys(e, Cf::Changes, b"b", Some(b"c"), true), vec![b"bb".to_vec(), b"ba".to_vec(), b"b".to_vec()]);
    assert_eq!(keys(e, Cf::Changes, b"c", None, true), vec![b"d".to_vec(), b"c".to_vec()]);
    assert!(keys(e, Cf::Changes, b"c", Some(b"c"), false).is_empty());
    assert!(keys(e, Cf::Changes, b"z", None, false).is_empty());
}

pub fn prefix_scan_on_subject_families(e: &dyn Engine) {
    // 16-byte subject prefixes, as the record model uses them.
    let p1 = [1u8; 16];
    let p2 = [2u8; 16];
    for p in [p1, p2] {
        for ds in [&b"death"[..], b"hukou", b"marriage"] {
            let mut k = p.to_vec();
            k.extend_from_slice(ds);
            put(e, Cf::Records, &k, ds);
        }
    }
    let end = prefix_end(&p1).unwrap();
    let got = keys(e, Cf::Records, &p1, Some(&end), false);
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|k| k.starts_with(&p1)));
    let rev = keys(e, Cf::Records, &p1, Some(&end), true);
    assert_eq!(rev.first().unwrap()[16..], b"marriage"[..]);
    // A range across prefixes must see both subjects.
    assert_eq!(keys(e, Cf::Records, &p1, None, false).len(), 6);
}

pub fn multi_get_matches_get(e: &dyn Engine) {
    put(e, Cf::KeyMap, b"k1", b"v1");
    put(e, Cf::KeyMap, b"k3", b"v3");
    let ks: Vec<&[u8]> = vec![b"k1", b"k2", b"k3", b"k1"];
    let got = e.multi_get(Cf::KeyMap, &ks).unwrap();
    assert_eq!(got, vec![Some(b"v1".to_vec()), None, Some(b"v3".to_vec()), Some(b"v1".to_vec())]);
}

pub fn empty_batch_is_fine(e: &dyn Engine) {
    e.write(WriteBatch::new(), Durability::Sync).unwrap();
    e.flush().unwrap();
}

pub fn binary_keys_and_large_values(e: &dyn Engine) {
    let key = [0u8, 255, 0, 255];
    let value = vec![7u8; 1 << 20];
    put(e, Cf::Jobs, &key, &value);
    assert_eq!(e.get(Cf::Jobs, &key).unwrap().unwrap().len(), 1 << 20);
    let all = keys(e, Cf::Jobs, &[0], Some(&[1]), false);
    assert_eq!(all, vec![key.to_vec()]);
}

/// Which figures an engine keeps, by name.
fn kept(s: &EngineStats) -> Vec<(&'static str, bool)> {
    s.figures().iter().map(|&(name, v)| (name, v.is_some())).collect()
}

pub fn stats_are_kept_alike_for_every_family(e: &dyn Engine) {
    let empty = e.stats(Cf::Gov);
    for i in 0..200u32 {
        put(e, Cf::Jobs, &i.to_be_bytes(), &[7u8; 100]);
    }
    e.flush().unwrap();
    let s = e.stats(Cf::Jobs);
    // A figure is kept for every family or for none, populated or empty.
    for cf in Cf::ALL {
        assert_eq!(kept(&e.stats(cf)), kept(&s), "{}", cf.name());
    }
    assert_eq!(kept(&empty), kept(&s));
    if s == EngineStats::default() {
        return;
    }
    // An engine with statistics counts what a populated family holds.
    assert!(s.estimated_keys.is_some_and(|n| n > 0), "{s:?}");
    if let (Some(total), Some(live)) = (s.total_sst_bytes, s.live_sst_bytes) {
        assert!(live > 0 && total >= live, "{s:?}");
    }
}

pub fn sst_files_ingest_as_written(e: &dyn Engine) {
    let Some(sst) = e.sst_ingest() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Subject-prefixed keys, so that the prefix read below goes through the
    // ingested file's prefix filter.
    let subject = [3u8; 16];
    let key = |ds: &[u8]| [&subject[..], ds].concat();
    put(e, Cf::Records, &key(b"hukou"), b"older");
    let copied = dir.path().join("records.sst");
    let mut w = sst.sst_writer(Cf::Records, &copied).unwrap();
    for ds in [&b"death"[..], b"hukou", b"marriage"] {
        w.put(&key(ds), ds).unwrap();
    }
    w.finish().unwrap();
    sst.ingest(Cf::Records, std::slice::from_ref(&copied), false).unwrap();
    assert!(copied.is_file(), "ingested by copy: the file stays");
    assert_eq!(e.get(Cf::Records, &key(b"hukou")).unwrap().unwrap(), b"hukou", "the file's value is the newer");
    let end = prefix_end(&subject).unwrap();
    assert_eq!(keys(e, Cf::Records, &subject, Some(&end), false).len(), 3);

    let moved = dir.path().join("keymap.sst");
    let mut w = sst.sst_writer(Cf::KeyMap, &moved).unwrap();
    w.put(b"k", b"v").unwrap();
    w.finish().unwrap();
    sst.ingest(Cf::KeyMap, std::slice::from_ref(&moved), true).unwrap();
    assert!(!moved.exists(), "taken over by the engine");
    assert_eq!(e.get(Cf::KeyMap, b"k").unwrap().unwrap(), b"v");
    assert_eq!(e.get(Cf::Records, b"k").unwrap(), None, "into its own family only");

    // Misuse is an error, not a panic.
    let mut w = sst.sst_writer(Cf::Meta, &dir.path().join("unordered.sst")).unwrap();
    w.put(b"b", b"1").unwrap();
    assert!(w.put(b"a", b"2").is_err(), "keys must ascend");
    assert!(sst.ingest(Cf::Meta, &[dir.path().join("missing.sst")], false).is_err());
}

pub fn checkpoint_opens_with_the_same_data(e: &dyn Engine, open_copy: OpenCopy) {
    let Some(cp) = e.checkpoint() else { return };
    assert!(cp.dir().is_dir(), "{}", cp.dir().display());
    put(e, Cf::Records, b"0123456789abcdefhukou", b"record");
    put(e, Cf::Changes, &1u64.to_be_bytes(), b"change");
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("checkpoint");
    cp.create_checkpoint(&to).unwrap();
    put(e, Cf::Changes, &2u64.to_be_bytes(), b"later");
    let copy = open_copy(&to).unwrap();
    assert_eq!(copy.get(Cf::Records, b"0123456789abcdefhukou").unwrap().unwrap(), b"record");
    assert_eq!(copy.get(Cf::Changes, &1u64.to_be_bytes()).unwrap().unwrap(), b"change");
    assert_eq!(copy.get(Cf::Changes, &2u64.to_be_bytes()).unwrap(), None, "the copy is of its instant");
    assert_eq!(e.get(Cf::Changes, &2u64.to_be_bytes()).unwrap().unwrap(), b"later");
    // An existing target is refused, never written into.
    assert!(cp.create_checkpoint(&to).is_err());
}

/// Sorted runs put in whole (the audit index's tail) read back like
/// written keys, beside keys written before and after them, a run over
/// the range of keys still in memory included; an empty run is nothing.
pub fn sorted_runs_read_as_written(e: &dyn Engine) {
    put(e, Cf::AuditIndex, b"k2", b"written");
    let run: [(&[u8], &[u8]); 3] = [(b"k1", b"1"), (b"k3", b"3"), (b"k5", b"5")];
    e.put_sorted(Cf::AuditIndex, &mut run.into_iter()).unwrap();
    e.put_sorted(Cf::AuditIndex, &mut std::iter::empty()).unwrap();
    e.put_sorted(Cf::AuditIndex, &mut [(&b"k4"[..], &b"4"[..])].into_iter()).unwrap();
    put(e, Cf::AuditIndex, b"k6", b"after");
    assert_eq!(keys(e, Cf::AuditIndex, b"k", Some(b"l"), false), [&b"k1"[..], b"k2", b"k3", b"k4", b"k5", b"k6"]);
    assert_eq!(e.get(Cf::AuditIndex, b"k3").unwrap().as_deref(), Some(&b"3"[..]));
    assert_eq!(e.get(Cf::AuditIndex, b"k2").unwrap().as_deref(), Some(&b"written"[..]));
    // A later removal (retention's) hides a key of a run.
    let mut b = WriteBatch::new();
    b.delete(Cf::AuditIndex, b"k3".to_vec());
    e.write(b, Durability::Sync).unwrap();
    assert_eq!(e.get(Cf::AuditIndex, b"k3").unwrap(), None);
    assert_eq!(keys(e, Cf::AuditIndex, b"k", Some(b"l"), false).len(), 5);
}

/// A range deletion removes the keys in `[start, end)` and nothing else,
/// keeps its place among the batch's operations (a put after it in the
/// range survives, one before it does not), and a reversed or empty range
/// is refused with the rest of its batch.
pub fn range_deletes_keep_their_place_in_the_batch(e: &dyn Engine) {
    let seq = |i: u64| i.to_be_bytes().to_vec();
    let mut b = WriteBatch::new();
    for i in 1..=20 {
        b.put(Cf::Changes, seq(i), b"v".to_vec());
    }
    e.write(b, Durability::Sync).unwrap();
    let mut b = WriteBatch::new();
    b.put(Cf::Changes, seq(9), b"before".to_vec());
    b.delete_range(Cf::Changes, seq(5), seq(12));
    b.put(Cf::Changes, seq(7), b"after".to_vec());
    b.put(Cf::Meta, b"mark".to_vec(), b"1".to_vec());
    e.write(b, Durability::Sync).unwrap();
    let left: Vec<u64> = keys(e, Cf::Changes, b"", None, false).iter().map(|k| u64::from_be_bytes(k[..].try_into().unwrap())).collect();
    assert_eq!(left, [1, 2, 3, 4, 7, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
    assert_eq!(e.get(Cf::Changes, &seq(7)).unwrap().as_deref(), Some(&b"after"[..]));
    assert_eq!(e.get(Cf::Changes, &seq(9)).unwrap(), None);
    for (start, end) in [(seq(3), seq(3)), (seq(4), seq(2))] {
        let mut b = WriteBatch::new();
        b.put(Cf::Meta, b"refused".to_vec(), b"1".to_vec());
        b.delete_range(Cf::Changes, start, end);
        assert!(matches!(e.write(b, Durability::Sync), Err(crate::Error::Invalid(_))));
        assert_eq!(e.get(Cf::Meta, b"refused").unwrap(), None, "nothing of the batch written");
    }
    // Giving the space back changes nothing a read sees.
    e.reclaim(Cf::Changes, &seq(0), &seq(12)).unwrap();
    assert_eq!(keys(e, Cf::Changes, b"", None, false).len(), 14);
    assert_eq!(keys(e, Cf::Changes, &seq(5), Some(&seq(12)), false), vec![seq(7)]);
}

#[macro_export]
#[doc(hidden)]
macro_rules! engine_suite {
    ($modname:ident, $make:expr, $open_copy:expr) => {
        mod $modname {
            #[allow(unused_imports)]
            use super::*;
            use $crate::engine::conformance as c;
            macro_rules! case {
                ($name:ident) => {
                    #[test]
                    fn $name() {
                        let (_guard, engine) = $make;
                        c::$name(&*engine);
                    }
                };
            }
            case!(get_put_delete);
            case!(families_are_separate);
            case!(short_subject_keys_are_refused);
            case!(batch_applies_in_order);
            case!(scan_bounds_and_direction);
            case!(prefix_scan_on_subject_families);
            case!(multi_get_matches_get);
            case!(empty_batch_is_fine);
            case!(binary_keys_and_large_values);
            case!(stats_are_kept_alike_for_every_family);
            case!(sst_files_ingest_as_written);
            case!(sorted_runs_read_as_written);
            case!(range_deletes_keep_their_place_in_the_batch);

            #[test]
            fn checkpoint_opens_with_the_same_data() {
                let (_guard, engine) = $make;
                c::checkpoint_opens_with_the_same_data(&*engine, $open_copy);
            }
        }
    };
}

crate::engine_suite!(
    mem_engine,
    ((), Box::new(crate::engine::mem::MemEngine::new()) as Box<dyn crate::engine::Engine>),
    |_| Err(crate::Error::Unsupported("copies of a memory engine"))
);
#[cfg(feature = "rocks")]
crate::engine_suite!(
    rocks_engine,
    {
        let dir = tempfile::tempdir().unwrap();
        let e = crate::engine::rocks::RocksEngine::open(dir.path(), &Default::default()).unwrap();
        (dir, Box::new(e) as Box<dyn crate::engine::Engine>)
    },
    |p| Ok(Box::new(crate::engine::rocks::RocksEngine::open_copy(p)?) as Box<dyn crate::engine::Engine>)
);

/// Which capabilities each engine has is part of its contract: a lost one
/// would otherwise pass the suite as "consistently absent".
#[test]
fn the_memory_engine_has_no_optional_capability() {
    let e = crate::engine::mem::MemEngine::new();
    put(&e, Cf::Jobs, b"k", b"v");
    assert!(e.sst_ingest().is_none() && e.checkpoint().is_none());
    assert_eq!(e.stats(Cf::Jobs), EngineStats::default());
}

#[cfg(feature = "rocks")]
#[test]
fn the_rocks_engine_has_every_capability() {
    let dir = tempfile::tempdir().unwrap();
    let e = crate::engine::rocks::RocksEngine::open(dir.path(), &Default::default()).unwrap();
    put(&e, Cf::Jobs, b"k", b"v");
    assert!(e.sst_ingest().is_some());
    assert_eq!(e.checkpoint().map(|c| c.dir()), Some(dir.path()));
    let s = e.stats(Cf::Jobs);
    assert!(s.figures().iter().all(|(_, v)| v.is_some()), "{s:?}");
}

#[cfg(feature = "rocks")]
#[test]
fn rocks_reopen_reads_the_same_data() {
    use crate::engine::rocks::RocksEngine;
    let dir = tempfile::tempdir().unwrap();
    {
        let e = RocksEngine::open(dir.path(), &Default::default()).unwrap();
        put(&e, Cf::Records, b"0123456789abcdefhukou", b"record");
        put(&e, Cf::Changes, &1u64.to_be_bytes(), b"change");
    }
    let e = RocksEngine::open(dir.path(), &Default::default()).unwrap();
    assert_eq!(e.get(Cf::Records, b"0123456789abcdefhukou").unwrap().unwrap(), b"record");
    assert_eq!(e.get(Cf::Changes, &1u64.to_be_bytes()).unwrap().unwrap(), b"change");
    let names = RocksEngine::list_cf_names(dir.path()).unwrap();
    for cf in Cf::ALL {
        assert!(names.iter().any(|n| n == cf.name()), "{} missing", cf.name());
    }
}

/// What a child process started by [`crash_after`] does before it dies.
#[cfg(feature = "rocks")]
fn crash_scenario(name: &str, dir: &std::path::Path) {
    use crate::engine::journal::JournalOptions;
    use crate::engine::rocks::{RocksConfig, RocksEngine};
    let key = |i: u32| format!("0123456789abcdef{i:08}hukou").into_bytes();
    match name {
        "journal" => {
            let cfg = RocksConfig { journal: JournalOptions { segment_bytes: 64 << 10, prefill: true }, ..Default::default() };
            let e = RocksEngine::open(dir, &cfg).unwrap();
            for i in 0..300u32 {
                let mut b = WriteBatch::new();
                b.put(Cf::Records, key(i), vec![7u8; 200]);
                // Unsynced writes are made durable by the next synced one.
                let d = if i % 3 == 0 { Durability::Sync } else { Durability::Buffered };
                e.write(b, d).unwrap();
            }
            put(&e, Cf::Meta, b"last", b"written");
            assert!(e.journal().closed_segments() > 0, "the writes rolled over segments");
            std::mem::forget(e);
        }
        "range" => {
            // A log's head cut by a range deletion, in the journal only.
            let e = RocksEngine::open(dir, &Default::default()).unwrap();
            let mut b = WriteBatch::new();
            for i in 1..=1000u64 {
                b.put(Cf::Changes, i.to_be_bytes().to_vec(), vec![7u8; 100]);
            }
            e.write(b, Durability::Sync).unwrap();
            e.flush().unwrap();
            let mut b = WriteBatch::new();
            b.delete_range(Cf::Changes, 1u64.to_be_bytes().to_vec(), 601u64.to_be_bytes().to_vec());
            b.put(Cf::Meta, b"cut".to_vec(), b"600".to_vec());
            e.write(b, Durability::Sync).unwrap();
            std::mem::forget(e);
        }
        "rocksdb-log" => {
            // A store as written before the journal: RocksDB's own log.
            let e = RocksEngine::open(dir, &Default::default()).unwrap();
            let mut opts = rocksdb::WriteOptions::default();
            opts.set_sync(true);
            e.db().put_cf_opt(e.cf(Cf::Records), key(1), b"logged", &opts).unwrap();
            std::mem::forget(e);
        }
        other => panic!("no crash scenario {other}"),
    }
    // Dies without closing anything, and without the exit handlers
    // through which RocksDB would flush at shutdown: memtables are lost.
    #[allow(unsafe_code)]
    // SAFETY: `_exit` ends the process at once; nothing runs after it.
    unsafe {
        libc::_exit(0)
    }
}

/// Runs `scenario` on `dir` in a child process that exits without
/// closing the store, as a crash would leave it.
#[cfg(feature = "rocks")]
fn crash_after(scenario: &str, dir: &std::path::Path) {
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "engine::conformance::crash_child", "--include-ignored", "--test-threads", "1"])
        .env("BASEDATA_CRASH_CHILD", format!("{scenario}:{}", dir.display()))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{scenario}: {status}");
}

#[cfg(feature = "rocks")]
#[test]
#[ignore = "the child process of the crash tests; runs only under them"]
fn crash_child() {
    let v = std::env::var("BASEDATA_CRASH_CHILD").expect("started by crash_after");
    let (name, dir) = v.split_once(':').unwrap();
    crash_scenario(name, std::path::Path::new(dir));
}

#[cfg(feature = "rocks")]
fn copy_dir(from: &std::path::Path, to: &std::path::Path, skip: &str) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != skip && e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[cfg(feature = "rocks")]
#[test]
fn rocks_writes_come_back_from_the_journal_after_a_crash() {
    use crate::engine::rocks::{RocksEngine, JOURNAL_DIR};
    let dir = tempfile::tempdir().unwrap();
    crash_after("journal", dir.path());
    // RocksDB itself holds none of it: a copy without the journal is empty.
    let bare = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), bare.path(), JOURNAL_DIR);
    {
        let e = RocksEngine::open(bare.path(), &Default::default()).unwrap();
        assert_eq!(keys(&e, Cf::Records, b"", None, false).len(), 0);
    }
    let e = RocksEngine::open(dir.path(), &Default::default()).unwrap();
    let got = keys(&e, Cf::Records, b"", None, false);
    assert_eq!(got.len(), 300);
    assert_eq!(e.get(Cf::Meta, b"last").unwrap().as_deref(), Some(&b"written"[..]));
    assert_eq!(e.journal().last_lsn(), 301);
    // The replay was flushed into tables and its segments released.
    assert_eq!(e.journal().closed_segments(), 0);
    put(&e, Cf::Meta, b"after", b"1");
    drop(e);
    let e = RocksEngine::open(dir.path(), &Default::default()).unwrap();
    assert_eq!(e.journal().last_lsn(), 302);
    assert_eq!(e.get(Cf::Meta, b"after").unwrap().as_deref(), Some(&b"1"[..]));
}

/// A range deletion synced to the journal but not flushed (the keys it
/// covers already in table files) is replayed after a crash: the keys
/// stay deleted, and giving their space back then keeps them so.
#[cfg(feature = "rocks")]
#[test]
fn rocks_a_range_deletion_comes_back_from_the_journal_after_a_crash() {
    use crate::engine::rocks::RocksEngine;
    let dir = tempfile::tempdir().unwrap();
    crash_after("range", dir.path());
    let e = RocksEngine::open(dir.path(), &Default::default()).unwrap();
    assert_eq!(e.get(Cf::Meta, b"cut").unwrap().as_deref(), Some(&b"600"[..]));
    let left = keys(&e, Cf::Changes, b"", None, false);
    assert_eq!(left.len(), 400);
    assert_eq!(left[0], 601u64.to_be_bytes());
    e.reclaim(Cf::Changes, &0u64.to_be_bytes(), &601u64.to_be_bytes()).unwrap();
    drop(e);
    let e = RocksEngine::open(dir.path(), &Default::default()).unwrap();
    assert_eq!(keys(&e, Cf::Changes, b"", None, false), left);
}

/// A journal segment that cannot be removed (here a directory in its
/// place) fails every release; the keeper then tries again at most once a
/// second, not at every write that finds segments piled up (each try is a
/// flush of every family: back to back they would fill level 0 and stall
/// writes), and goes on once the segment can be removed.
#[cfg(feature = "rocks")]
#[test]
fn rocks_a_segment_that_cannot_be_released_is_tried_again_once_a_second_not_at_every_write() {
    use crate::engine::journal::JournalOptions;
    use crate::engine::rocks::{RocksConfig, RocksEngine, JOURNAL_DIR};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let cfg = RocksConfig { journal: JournalOptions { segment_bytes: 64 << 10, prefill: false }, ..Default::default() };
    let e = RocksEngine::open(dir.path(), &cfg).unwrap();
    let mut i = 0u32;
    let mut write = || {
        put(&e, Cf::Records, format!("0123456789abcdef{i:08}hukou").as_bytes(), &[7u8; 2000]);
        i += 1;
    };
    while e.journal().closed_segments() == 0 {
        write();
    }
    let mut segs: Vec<_> = std::fs::read_dir(dir.path().join(JOURNAL_DIR)).unwrap().map(|d| d.unwrap().path()).collect();
    segs.sort();
    let oldest = segs[0].clone();
    std::fs::remove_file(&oldest).unwrap();
    std::fs::create_dir(&oldest).unwrap();
    std::fs::write(oldest.join("x"), b"x").unwrap();
    let failed = |e: &RocksEngine| e.journal_stats().unwrap().failed_releases;
    let start = Instant::now();
    while failed(&e) == 0 {
        assert!(start.elapsed() < Duration::from_secs(30), "no release tried");
        write();
    }
    let (t0, f0) = (Instant::now(), failed(&e));
    for _ in 0..400 {
        write();
    }
    let (took, tries) = (t0.elapsed(), failed(&e) - f0);
    assert!(tries <= took.as_secs() + 2, "{tries} releases tried in {took:?}");
    std::fs::remove_dir_all(&oldest).unwrap();
    let start = Instant::now();
    while e.journal().closed_segments() >= 8 {
        assert!(start.elapsed() < Duration::from_secs(10), "segments never released");
        std::thread::sleep(Duration::from_millis(50));
        write();
    }
}

#[cfg(feature = "rocks")]
#[test]
fn rocks_a_store_written_with_rocksdbs_own_log_opens_with_its_writes() {
    use crate::engine::rocks::RocksEngine;
    let dir = tempfile::tempdir().unwrap();
    crash_after("rocksdb-log", dir.path());
    let e = RocksEngine::open(dir.path(), &Default::default()).unwrap();
    let key = b"0123456789abcdef00000001hukou";
    assert_eq!(e.get(Cf::Records, key).unwrap().as_deref(), Some(&b"logged"[..]));
    put(&e, Cf::Records, key, b"journaled");
    drop(e);
    let e = RocksEngine::open(dir.path(), &Default::default()).unwrap();
    assert_eq!(e.get(Cf::Records, key).unwrap().as_deref(), Some(&b"journaled"[..]));
}

#[cfg(feature = "rocks")]
#[test]
fn rocks_synced_writes_overwrite_a_prefilled_journal_segment_in_place() {
    use crate::engine::journal::JournalOptions;
    use crate::engine::rocks::{RocksConfig, RocksEngine, JOURNAL_DIR};
    const SEGMENT: u64 = 2 << 20;
    let dir = tempfile::tempdir().unwrap();
    let cfg = RocksConfig { journal: JournalOptions { segment_bytes: SEGMENT, prefill: true }, ..Default::default() };
    let e = RocksEngine::open(dir.path(), &cfg).unwrap();
    let lengths = || {
        let mut v: Vec<(String, u64)> = std::fs::read_dir(dir.path().join(JOURNAL_DIR))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().into_string().unwrap(), e.metadata().unwrap().len())
            })
            .collect();
        v.sort();
        v
    };
    let before = lengths();
    assert_eq!(before.len(), 3, "the segment written and two spares: {before:?}");
    assert!(before.iter().all(|(_, len)| *len == SEGMENT), "{before:?}");
    for i in 0..300u32 {
        put(&e, Cf::Records, format!("0123456789abcdef{i:08}hukou").as_bytes(), &[7u8; 200]);
    }
    // The same files, no longer: the writes went into their length.
    assert_eq!(lengths(), before);
}

/// A batch synced to the journal that RocksDB then refuses for lack of
/// space (as it does once a flush found the disk full) is cancelled in the
/// journal: its writer hears of the failure, nothing of it is applied now
/// or after a reopen, and writes go on once RocksDB takes them again.
/// Meanwhile batches are refused before they reach the journal, and a
/// flush keeps the segment holding a cancelled batch, which a reopen needs
/// to find where its records begin.
#[cfg(feature = "rocks")]
#[test]
fn rocks_a_batch_refused_for_lack_of_space_is_cancelled_and_writing_goes_on() {
    use crate::engine::journal::JournalOptions;
    use crate::engine::rocks::{RocksConfig, RocksEngine};
    const FULL: &str = "IO error: No space left on device: While appending to file: /data/000012.sst: No space left on device";
    let dir = tempfile::tempdir().unwrap();
    let cfg = RocksConfig { journal: JournalOptions { segment_bytes: 64 << 10, prefill: true }, ..Default::default() };
    let key = |i: u32| format!("0123456789abcdef{i:08}hukou").into_bytes();
    let write = |e: &RocksEngine, i: u32, len: usize| {
        let mut b = WriteBatch::new();
        b.put(Cf::Records, key(i), vec![i as u8; len]);
        e.write(b, Durability::Sync)
    };
    let absent = |e: &RocksEngine, keys: &[u32]| keys.iter().all(|&i| e.get(Cf::Records, &key(i)).unwrap().is_none());
    {
        let e = RocksEngine::open(dir.path(), &cfg).unwrap();
        write(&e, 1, 100).unwrap();
        e.refuse_applies(Some(FULL), true);
        let refused = write(&e, 2, 100).unwrap_err();
        assert!(matches!(refused, crate::Error::NoSpace(_)), "{refused:?}");
        assert_eq!(e.journal().failed(), None, "the journal goes on");
        let records = e.journal().stats().records;
        assert_eq!(records, 3, "batches 1 and 2 and the cancel of 2");
        assert!(matches!(write(&e, 3, 100), Err(crate::Error::NoSpace(_))));
        assert_eq!(e.journal().stats().records, records, "refused before the journal");
        // RocksDB takes the probe but refuses the batch after it, one
        // large enough to start a segment: the one holding batch 2 and its
        // cancel is closed, with no batch applied after them.
        e.refuse_applies(Some(FULL), false);
        assert!(matches!(write(&e, 4, 70 << 10), Err(crate::Error::NoSpace(_))));
        assert_eq!(e.journal().stats().records, records + 2);
        e.flush().unwrap();
    }
    // No refused batch is replayed, and the segments kept reach back to
    // the last batch applied.
    let e = RocksEngine::open(dir.path(), &cfg).unwrap();
    assert_eq!(e.journal().stats().replayed, 0);
    assert!(e.get(Cf::Records, &key(1)).unwrap().is_some() && absent(&e, &[2, 3, 4]));
    e.refuse_applies(Some(FULL), true);
    assert!(matches!(write(&e, 5, 100), Err(crate::Error::NoSpace(_))));
    e.refuse_applies(None, false);
    write(&e, 6, 100).unwrap();
    assert!(absent(&e, &[5]) && e.get(Cf::Records, &key(6)).unwrap().is_some());
    // Any other failure to apply stops every later write until a reopen,
    // which replays the batch.
    e.refuse_applies(Some("Corruption: block checksum mismatch"), true);
    assert!(write(&e, 7, 100).is_err());
    e.refuse_applies(None, false);
    assert!(write(&e, 8, 100).is_err(), "writes stay stopped");
    assert!(e.journal().failed().is_some());
    drop(e);
    let e = RocksEngine::open(dir.path(), &cfg).unwrap();
    assert!(e.get(Cf::Records, &key(7)).unwrap().is_some(), "the batch the journal holds is replayed");
    assert!(e.get(Cf::Records, &key(6)).unwrap().is_some() && absent(&e, &[2, 3, 4, 5, 8]));
}

#[cfg(feature = "rocks")]
#[test]
fn free_disk_space_is_read_for_a_directory_and_not_made_up_for_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let free = crate::engine::rocks::available_disk_bytes(dir.path()).expect("statvfs of a directory");
    assert!(free > 0);
    assert_eq!(crate::engine::rocks::available_disk_bytes(&dir.path().join("missing")), None);
}
