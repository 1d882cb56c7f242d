//! The audit index's tail: what it shows before and after the indexer
//! puts it into the engine, and what a reopen rebuilds.

use super::*;
// A verification of person `k` by department `d1`, and the sequence
// numbers of a key's entries: as retention's tests make and read them.
use crate::audit::retention::tests::{of_key, verify};
use crate::audit::AuditFiles;
use crate::clock::ManualClock;
use crate::engine::mem::MemEngine;
use crate::{Catalog, Secret, Store};

fn open(engine: &Arc<MemEngine>) -> Store {
    Store::open(engine.clone(), &Secret::from_bytes([6; 32]), Arc::new(Catalog::builtin()), Arc::new(ManualClock::new(1_000))).unwrap()
}

fn engine_keys(e: &MemEngine) -> Vec<Box<[u8]>> {
    e.scan(Cf::AuditIndex, &[], None, false).unwrap().map(|i| i.unwrap().0).collect()
}

fn entry(k: &str, v: &str) -> Entry {
    (k.as_bytes().to_vec(), v.as_bytes().to_vec())
}

#[test]
fn a_range_reads_groups_and_runs_in_key_order_each_key_once() {
    let tail = IndexTail::default();
    tail.push(vec![entry("k3", "a"), entry("k1", "b"), entry("t9", "c")], 3);
    tail.push(vec![entry("k2", "d"), entry("k1", "b")], 5);
    let keys = |t: &IndexTail, s: &str, e: Option<&str>| -> Vec<String> {
        t.range(s.as_bytes(), e.map(str::as_bytes)).map(|(k, _)| String::from_utf8(k).unwrap()).collect()
    };
    assert_eq!(keys(&tail, "k", Some("l")), ["k1", "k2", "k3"]);
    assert_eq!(keys(&tail, "k2", None), ["k2", "k3", "t9"]);
    // Sorted into a run, the same.
    let groups = tail.lock().groups.clone();
    let run = Run::of(&groups);
    assert_eq!((run.upto, run.groups, run.len()), (5, 2, 4));
    assert_eq!(run.at(1), (&b"k2"[..], &b"d"[..]));
    {
        let mut st = tail.lock();
        st.groups.clear();
        st.run_entries = run.len();
        st.runs.push(Arc::new(run));
    }
    tail.push(vec![entry("k0", "e")], 6);
    assert_eq!(keys(&tail, "k", Some("l")), ["k0", "k1", "k2", "k3"]);
    assert_eq!(keys(&tail, "k15", Some("k25")), ["k2"]);
    assert_eq!(tail.stats(), TailStats { entries: 5, parts: 2, files: 0, failures: 0 });
}

#[test]
fn a_range_over_several_runs_and_new_keys_takes_each_key_once_in_order() {
    let tail = IndexTail::default();
    let group = |keys: &[&str]| Arc::new(Group { entries: keys.iter().map(|k| entry(k, "v")).collect(), upto: 1, since: Instant::now() });
    {
        let mut st = tail.lock();
        st.runs.push(Arc::new(Run::of(&[group(&["k5", "k1", "t1"])])));
        st.runs.push(Arc::new(Run::of(&[group(&["k2", "k5", "k9"])])));
    }
    tail.push(vec![entry("k3", "v"), entry("k9", "v"), entry("d1", "v")], 2);
    let keys: Vec<String> = tail.range(b"k", Some(b"l")).map(|(k, _)| String::from_utf8(k).unwrap()).collect();
    assert_eq!(keys, ["k1", "k2", "k3", "k5", "k9"]);
    let keys: Vec<String> = tail.range(b"k4", Some(b"k6")).map(|(k, _)| String::from_utf8(k).unwrap()).collect();
    assert_eq!(keys, ["k5"]);
    assert_eq!(tail.range(b"x", None).count(), 0);
}

#[test]
fn runs_merge_in_key_order_each_key_once() {
    let run = |keys: &[&str]| Arc::new(Run::of(&[Arc::new(Group { entries: keys.iter().map(|k| entry(k, "v")).collect(), upto: 1, since: Instant::now() })]));
    let runs = [run(&["c", "a", "e"]), run(&[]), run(&["b", "c", "f"]), run(&["a"])];
    let got: Vec<&str> = Merge::of(&runs).map(|(k, _)| std::str::from_utf8(k).unwrap()).collect();
    assert_eq!(got, ["a", "b", "c", "e", "f"]);
}

#[test]
fn the_merge_keeps_key_order_and_takes_a_key_held_twice_once() {
    let engine: Vec<Result<Kv>> = ["a", "c", "e"].iter().map(|k| Ok((k.as_bytes().into(), b"x".as_slice().into()))).collect();
    let tail = vec![entry("b", "y"), entry("c", "x"), entry("f", "y")];
    let got: Vec<(String, String)> = merged(engine.into_iter(), tail.into_iter())
        .map(|i| i.unwrap())
        .map(|(k, v)| (String::from_utf8(k.into()).unwrap(), String::from_utf8(v.into()).unwrap()))
        .collect();
    let want = [("a", "x"), ("b", "y"), ("c", "x"), ("e", "x"), ("f", "y")];
    assert_eq!(got, want.map(|(k, v)| (k.to_owned(), v.to_owned())));
}

#[test]
fn an_entry_is_found_at_once_and_settled_into_the_engine_with_its_position() {
    let engine = Arc::new(MemEngine::new());
    let s = open(&engine);
    s.commit(&[], &[verify(1), verify(2)], Durability::Sync).unwrap();
    s.commit(&[], &[verify(1)], Durability::Sync).unwrap();
    // Found through the tail, whatever the indexer has done by now.
    assert_eq!(of_key(&s, 1), [1, 2 + 1]);
    assert_eq!(of_key(&s, 2), [2]);
    s.index_tail().settle().unwrap();
    assert_eq!(s.index_tail().stats(), TailStats { entries: 0, parts: 0, files: 1, failures: 0 });
    assert_eq!(indexed_upto(&*engine).unwrap(), Some(3));
    // Two uses of one department in a group are a chunk: two subject
    // keys, one department and one time key; the lone use three keys.
    assert_eq!(engine_keys(&engine).len(), 4 + 3);
    assert_eq!(of_key(&s, 1), [1, 3]);
    assert!(s.audit_index_check().unwrap().ok);
}

#[test]
fn a_reopen_rebuilds_the_keys_after_the_position_from_the_entries() {
    let engine = Arc::new(MemEngine::new());
    {
        let s = open(&engine);
        s.commit(&[], &[verify(1)], Durability::Sync).unwrap();
        s.index_tail().settle().unwrap();
        s.commit(&[], &[verify(2)], Durability::Sync).unwrap();
        s.commit(&[], &[verify(3)], Durability::Sync).unwrap();
    }
    // As a crash leaves it: the keys of entries 2 and 3 only in memory.
    let indexed: Vec<Box<[u8]>> = engine_keys(&engine);
    let mut b = WriteBatch::new();
    for k in &indexed {
        if crate::record::seq_at_end(k).unwrap() > 1 {
            b.delete(Cf::AuditIndex, k.to_vec());
        }
    }
    b.put(Cf::Meta, META_AUDIT_INDEXED, position_value(1));
    engine.write(b, Durability::Sync).unwrap();
    assert_eq!(engine_keys(&engine).len(), 3);
    // The files alone pass the check: entries after the position may
    // lack their keys.
    let files = AuditFiles(&*engine).audit_index_check().unwrap();
    assert!(files.ok, "{:?}", files.problem);

    let s = open(&engine);
    assert_eq!(of_key(&s, 2), [2]);
    assert_eq!(of_key(&s, 3), [3]);
    assert_eq!(s.index_tail().stats().entries, 6);
    s.index_tail().settle().unwrap();
    assert_eq!(engine_keys(&engine).len(), 9);
    assert_eq!(indexed_upto(&*engine).unwrap(), Some(3));
    assert!(s.audit_index_check().unwrap().ok);
}

#[test]
fn a_missing_key_before_the_position_is_reported() {
    let engine = Arc::new(MemEngine::new());
    let s = open(&engine);
    s.commit(&[], &[verify(1)], Durability::Sync).unwrap();
    s.commit(&[], &[verify(2)], Durability::Sync).unwrap();
    s.index_tail().settle().unwrap();
    let first = engine_keys(&engine).into_iter().find(|k| k[0] == b'k' && crate::record::seq_at_end(k).unwrap() == 1).unwrap();
    let mut b = WriteBatch::new();
    b.delete(Cf::AuditIndex, first.to_vec());
    engine.write(b, Durability::Sync).unwrap();
    let check = s.audit_index_check().unwrap();
    assert!(!check.ok);
    assert_eq!(check.problem.as_deref(), Some("entry 1 lacks its index key (k)"));
}

#[test]
fn a_store_written_before_the_tail_opens_with_its_head_as_the_position() {
    let engine = Arc::new(MemEngine::new());
    {
        let s = open(&engine);
        s.commit(&[], &[verify(1)], Durability::Sync).unwrap();
        s.commit(&[], &[verify(2)], Durability::Sync).unwrap();
    }
    // Such a store has every entry's keys and no position.
    let mut b = WriteBatch::new();
    b.delete(Cf::Meta, META_AUDIT_INDEXED);
    engine.write(b, Durability::Sync).unwrap();
    assert_eq!(engine_keys(&engine).len(), 6);
    let s = open(&engine);
    assert_eq!(indexed_upto(&*engine).unwrap(), Some(2));
    assert_eq!(s.index_tail().stats(), TailStats::default());
    assert_eq!(of_key(&s, 2), [2]);
    assert!(s.audit_index_check().unwrap().ok);
}

#[test]
fn the_indexer_puts_what_it_holds_into_the_engine_when_the_store_closes() {
    let engine = Arc::new(MemEngine::new());
    {
        let s = open(&engine);
        s.commit(&[], &[verify(1)], Durability::Sync).unwrap();
    }
    assert_eq!(engine_keys(&engine).len(), 3);
    assert_eq!(indexed_upto(&*engine).unwrap(), Some(1));
}

#[test]
fn after_a_settle_new_keys_wait_for_their_turn_again() {
    let engine = Arc::new(MemEngine::new());
    let s = open(&engine);
    s.commit(&[], &[verify(1)], Durability::Sync).unwrap();
    s.index_tail().settle().unwrap();
    assert_eq!(s.index_tail().stats().files, 1);
    // Commits keep coming (0.3 s of them, far from INGEST_AFTER and
    // INGEST_ENTRIES): they stay in memory, not a file each.
    for i in 2..32 {
        s.commit(&[], &[verify(i)], Durability::Sync).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    let st = s.index_tail().stats();
    assert_eq!((st.files, st.entries), (1, 30 * 3));
    assert_eq!(of_key(&s, 31), [31]);
}
