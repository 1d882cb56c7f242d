//! Record-model tests: stale versions, deletes, history and as-of reads,
//! change log, counters, reopening, and a model-based random sequence
//! checked against a BTreeMap with reopens in between.

mod common;

use basedata_store::clock::ManualClock;
use basedata_store::store::UpdateOp;
use basedata_store::{Durability, Outcome, Store, SubjectKey, Update, Value};
use common::*;
use std::collections::BTreeMap;
use std::sync::Arc;

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

fn delete(ds: &str, key: SubjectKey, version: u64) -> Update {
    Update { link: None, dataset: ds.into(), key, version, op: UpdateOp::Delete, provider: None }
}

fn name_of(store: &Store, key: &SubjectKey, ds: &str, as_of: Option<i64>) -> Option<(u64, String)> {
    store.get(key, ds, as_of).unwrap().map(|r| match r.field("name") {
        Some(Value::Str(s)) => (r.version, s.clone()),
        other => panic!("unexpected {other:?}"),
    })
}

#[test]
fn stale_updates_are_acknowledged_not_applied() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let s = mem_store(clock);
    let k = person(1);
    let out = s.apply(&[upsert("hukou", k, 5, "a"), upsert("hukou", k, 5, "b"), upsert("hukou", k, 4, "c")], Durability::Sync).unwrap();
    assert_eq!(out, vec![Outcome::Applied { seq: 1 }, Outcome::Stale { current: 5 }, Outcome::Stale { current: 5 }]);
    assert_eq!(name_of(&s, &k, "hukou", None), Some((5, "a".into())));
    assert_eq!(s.last_seq(), 1);
    // A delete remembers its version, so an older replay stays stale.
    assert_eq!(s.apply(&[delete("hukou", k, 7)], Durability::Sync).unwrap(), vec![Outcome::Applied { seq: 2 }]);
    assert_eq!(name_of(&s, &k, "hukou", None), None);
    assert_eq!(s.apply(&[upsert("hukou", k, 6, "old")], Durability::Sync).unwrap(), vec![Outcome::Stale { current: 7 }]);
    assert_eq!(s.apply(&[upsert("hukou", k, 8, "new")], Durability::Sync).unwrap(), vec![Outcome::Applied { seq: 3 }]);
    assert_eq!(name_of(&s, &k, "hukou", None), Some((8, "new".into())));
}

#[test]
fn subject_mismatch_and_unknown_dataset_are_rejected() {
    let s = mem_store(Arc::new(ManualClock::new(0)));
    assert!(s.apply(&[upsert("hukou", entity(1), 1, "x")], Durability::Sync).is_err());
    assert!(s.apply(&[upsert("nope", person(1), 1, "x")], Durability::Sync).is_err());
    assert_eq!(s.last_seq(), 0);
}

/// On both engines: RocksDB keeps these versions in its hashed memtables
/// (no flush happens here), read by subject prefix.
#[test]
fn as_of_reads_follow_history() {
    let dir = tempfile::tempdir().unwrap();
    let on_rocks = |clock| open(rocks(dir.path(), true), clock);
    as_of_reads_follow_history_on(&|clock| mem_store(clock));
    as_of_reads_follow_history_on(&on_rocks);
}

fn as_of_reads_follow_history_on(make: &dyn Fn(Arc<ManualClock>) -> Store) {
    let clock = Arc::new(ManualClock::new(10_000_000));
    let s = make(clock.clone());
    let k = person(2);
    s.apply(&[upsert("hukou", k, 1, "v1")], Durability::Sync).unwrap(); // t=10s
    clock.set(20_000_000);
    s.apply(&[upsert("hukou", k, 2, "v2")], Durability::Sync).unwrap(); // t=20s
    clock.set(30_000_000);
    s.apply(&[delete("hukou", k, 3)], Durability::Sync).unwrap(); // t=30s
    clock.set(40_000_000);
    s.apply(&[upsert("hukou", k, 4, "v4")], Durability::Sync).unwrap(); // t=40s
    let at = |t: i64| name_of(&s, &k, "hukou", Some(t)).map(|(_, n)| n);
    assert_eq!(at(9_999_999), None);
    assert_eq!(at(10_000_000).as_deref(), Some("v1"));
    assert_eq!(at(19_999_999).as_deref(), Some("v1"));
    assert_eq!(at(20_000_000).as_deref(), Some("v2"));
    assert_eq!(at(35_000_000), None);
    assert_eq!(at(40_000_000).as_deref(), Some("v4"));
    assert_eq!(at(i64::MAX).as_deref(), Some("v4"));
    let all = s.get_all(&k, None, Some(25_000_000)).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].version, 2);
}

#[test]
fn commit_times_never_go_backwards() {
    let clock = Arc::new(ManualClock::new(50_000_000));
    let s = mem_store(clock.clone());
    s.apply(&[upsert("hukou", person(3), 1, "a")], Durability::Sync).unwrap();
    clock.set(1_000_000); // the wall clock jumps back
    s.apply(&[upsert("hukou", person(3), 2, "b")], Durability::Sync).unwrap();
    let c = s.changes(0, 10).unwrap();
    assert!(c[1].committed_at >= c[0].committed_at);
}

#[test]
fn change_log_is_dense_and_resolves_keys() {
    let s = mem_store(Arc::new(ManualClock::new(1)));
    let mut ups = Vec::new();
    for i in 0..10 {
        ups.push(upsert("hukou", person(i), 1, "x"));
    }
    ups.push(upsert("hukou", person(0), 1, "stale"));
    ups.push(delete("hukou", person(1), 2));
    s.apply(&ups, Durability::Sync).unwrap();
    let all = s.changes(0, 100).unwrap();
    assert_eq!(all.len(), 11);
    for (i, c) in all.iter().enumerate() {
        assert_eq!(c.seq, i as u64 + 1);
    }
    assert_eq!(all[10].key, person(1));
    assert_eq!(all[10].op.as_str(), "delete");
    assert_eq!(s.changes(5, 3).unwrap().iter().map(|c| c.seq).collect::<Vec<_>>(), vec![6, 7, 8]);
    assert!(s.changes(11, 10).unwrap().is_empty());
    let st = s.dataset_stats("hukou");
    assert_eq!((st.records, st.updates), (9, 11));
}

#[test]
fn embedded_keys_round_trip_through_pseudonyms() {
    let s = mem_store(Arc::new(ManualClock::new(1)));
    let rep = person(9);
    let u = Update {
        provider: None,
        link: None,
        dataset: "market_registration".into(),
        key: entity(1),
        version: 1,
        op: UpdateOp::Upsert(vec![
            ("name".into(), Value::Str("某某有限公司".into())),
            ("legal_representative_id".into(), Value::Key(rep)),
        ]),
    };
    s.apply(&[u], Durability::Sync).unwrap();
    let r = s.get(&entity(1), "market_registration", None).unwrap().unwrap();
    assert_eq!(r.field("legal_representative_id"), Some(&Value::Key(rep)));
    assert_eq!(s.changes(0, 1).unwrap()[0].fields, r.fields);
}

#[test]
fn wrong_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(rocks(dir.path(), true), Arc::new(ManualClock::new(1)));
        s.apply(&[upsert("hukou", person(1), 1, "x")], Durability::Sync).unwrap();
    }
    let other = basedata_store::Secret::from_bytes([7; 32]);
    let e = basedata_store::Store::open(
        rocks(dir.path(), true),
        &other,
        Arc::new(basedata_store::Catalog::builtin()),
        Arc::new(ManualClock::new(1)),
    );
    assert!(matches!(e, Err(basedata_store::Error::WrongSecret)));
}

/// Random operations against the store and a model, reopening the RocksDB
/// store every few steps; as-of reads are checked against model snapshots.
#[test]
fn model_based_random_sequences() {
    for seed in [1u64, 2, 3, 4] {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let mut store = open(rocks(dir.path(), true), clock.clone());
        let mut rng = fastrand::Rng::with_seed(seed);
        type Model = BTreeMap<(u32, &'static str), (u64, Option<String>)>;
        let mut model: Model = BTreeMap::new();
        let mut snapshots: Vec<(i64, Model)> = Vec::new();
        for step in 0..300 {
            clock.advance(1_000 + rng.i64(0..1_000));
            let n = rng.usize(1..6);
            let mut ups = Vec::new();
            for _ in 0..n {
                let i = rng.u32(0..8);
                let ds = if rng.bool() { "hukou" } else { "death" };
                let version = rng.u64(1..30);
                let del = rng.u8(0..5) == 0;
                let name = format!("n{step}-{i}");
                ups.push((i, ds, version, if del { None } else { Some(name) }));
            }
            let updates: Vec<Update> = ups
                .iter()
                .map(|(i, ds, v, n)| match n {
                    Some(n) => upsert(ds, person(*i), *v, n),
                    None => delete(ds, person(*i), *v),
                })
                .collect();
            let out = store.apply(&updates, Durability::Sync).unwrap();
            for ((i, ds, v, n), o) in ups.into_iter().zip(out) {
                let cur = model.get(&(i, ds)).map(|(cv, _)| *cv);
                let expect_applied = cur.is_none_or(|cv| v > cv);
                assert_eq!(matches!(o, Outcome::Applied { .. }), expect_applied, "seed {seed} step {step}");
                if expect_applied {
                    model.insert((i, ds), (v, n));
                }
            }
            snapshots.push((clock.now_micros_for_test(), model.clone()));
            if step % 50 == 49 {
                drop(store);
                store = open(rocks(dir.path(), true), clock.clone());
            }
            for i in 0..8 {
                for ds in ["hukou", "death"] {
                    let want = model.get(&(i, ds)).and_then(|(v, n)| n.clone().map(|n| (*v, n)));
                    assert_eq!(name_of(&store, &person(i), ds, None), want, "seed {seed} step {step}");
                }
            }
        }
        for (t, snap) in snapshots.iter().step_by(7) {
            for i in 0..8 {
                for ds in ["hukou", "death"] {
                    let want = snap.get(&(i, ds)).and_then(|(v, n)| n.clone().map(|n| (*v, n)));
                    assert_eq!(name_of(&store, &person(i), ds, Some(*t)), want, "seed {seed} as_of {t}");
                }
            }
        }
        let changes = store.changes(0, usize::MAX).unwrap();
        assert_eq!(changes.len() as u64, store.last_seq());
        assert!(changes.iter().enumerate().all(|(i, c)| c.seq == i as u64 + 1));
    }
}

trait NowForTest {
    fn now_micros_for_test(&self) -> i64;
}

impl NowForTest for ManualClock {
    fn now_micros_for_test(&self) -> i64 {
        use basedata_store::clock::Clock;
        self.now_micros()
    }
}

/// Mappings sealed by the caller (`seal_new_keys`) cover exactly the keys
/// without a record, are taken by the writer in place of its own, and
/// leave every key resolvable. Read from the records, a deleted record
/// still counts as a record; told by the claim fingerprints, which hold
/// live records only, its key is sealed again, to the same mapping.
#[test]
fn keys_sealed_before_the_writer_resolve() {
    keys_sealed_before_the_writer_resolve_with(false);
    keys_sealed_before_the_writer_resolve_with(true);
}

fn keys_sealed_before_the_writer_resolve_with(prints: bool) {
    use basedata_store::engine::BatchOp;
    use basedata_store::{Cf, WriteBatch};
    let s = mem_store(Arc::new(ManualClock::new(1_000_000)));
    let (old, gone, new) = (person(1), person(2), person(3));
    s.apply(&[upsert("hukou", old, 1, "a"), upsert("hukou", gone, 1, "b")], Durability::Sync).unwrap();
    s.apply(&[delete("hukou", gone, 2)], Durability::Sync).unwrap();
    let gone_mapping = s.resolve(&s.pseudonym(&gone)).unwrap();
    if prints {
        assert_eq!(s.keep_prints().unwrap(), 1, "the one live record");
    }
    // `new` twice in one request: one mapping.
    let updates = [upsert("hukou", old, 2, "a2"), upsert("hukou", gone, 3, "b3"), upsert("hukou", new, 1, "c"), upsert("hukou", new, 2, "c2")];
    let mut mappings = WriteBatch::new();
    s.seal_new_keys(&updates, &mut mappings).unwrap();
    let sealed: Vec<&[u8]> = mappings
        .ops()
        .iter()
        .map(|op| match op {
            BatchOp::Put { cf: Cf::KeyMap, key, .. } => key.as_slice(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    if prints {
        assert_eq!(sealed, vec![&s.pseudonym(&gone).0[..], &s.pseudonym(&new).0[..]]);
    } else {
        assert_eq!(sealed, vec![&s.pseudonym(&new).0[..]]);
    }
    let done = s.commit_with(&updates, &[], mappings, Durability::Sync).unwrap();
    assert_eq!(s.resolve(&s.pseudonym(&gone)).unwrap(), gone_mapping, "sealed again, the same key");
    assert!(done.outcomes.iter().all(|o| matches!(o, Outcome::Applied { .. })), "{:?}", done.outcomes);
    for k in [old, gone, new] {
        assert_eq!(s.resolve(&s.pseudonym(&k)).unwrap(), Some(k));
    }
    assert_eq!(name_of(&s, &new, "hukou", None), Some((2, "c2".into())));
}

#[test]
fn records_digest_ignores_when_and_in_what_batches_updates_were_applied() {
    let a = mem_store(Arc::new(ManualClock::new(1_000_000)));
    let b = mem_store(Arc::new(ManualClock::new(9_000_000)));
    let ups = [upsert("hukou", person(1), 3, "a"), upsert("hukou", person(2), 1, "b"), delete("hukou", person(3), 2)];
    a.apply(&ups, Durability::Sync).unwrap();
    // Other batches, a replayed stale update, and an earlier change-log
    // entry of its own: the same records in the end.
    b.apply(&[upsert("death", person(9), 1, "x")], Durability::Sync).unwrap();
    b.apply(&[delete("death", person(9), 2)], Durability::Sync).unwrap();
    a.apply(&[upsert("death", person(9), 2, "y"), delete("death", person(9), 2)], Durability::Sync).unwrap();
    for u in ups.iter().rev() {
        b.apply(std::slice::from_ref(u), Durability::Sync).unwrap();
    }
    b.apply(&[upsert("hukou", person(1), 2, "old")], Durability::Sync).unwrap();
    // a: death/9 went straight to v2 upsert (its delete at v2 was stale);
    // b: death/9 is deleted at v2. They differ until a deletes it too.
    let (na, da) = a.records_digest().unwrap();
    let (nb, db) = b.records_digest().unwrap();
    assert_eq!(na, 4);
    assert_eq!(nb, 4);
    assert_ne!(da, db, "a live record and a tombstone differ");
    a.apply(&[delete("death", person(9), 3)], Durability::Sync).unwrap();
    b.apply(&[delete("death", person(9), 3)], Durability::Sync).unwrap();
    assert_eq!(a.records_digest().unwrap(), b.records_digest().unwrap());
    assert_ne!(a.last_seq(), b.last_seq(), "the change logs differ, the records do not");
    b.apply(&[upsert("hukou", person(2), 5, "b")], Durability::Sync).unwrap();
    assert_ne!(a.records_digest().unwrap().1, b.records_digest().unwrap().1, "a version alone changes it");
}

/// A few named datasets are read by point reads, more or all of a
/// subject's by a scan: both give the same records in dataset-id order, whatever order and
/// repeats the names come in, with deleted records, datasets the subject
/// has no record in and as-of times.
#[test]
fn records_of_named_datasets_are_those_of_the_scan() {
    let clock = Arc::new(ManualClock::new(10_000_000));
    let s = mem_store(clock.clone());
    let k = person(7);
    s.apply(&[upsert("hukou", k, 1, "a"), upsert("marriage", k, 1, "m"), upsert("death", k, 1, "d")], Durability::Sync).unwrap();
    clock.set(20_000_000);
    s.apply(&[delete("marriage", k, 2), upsert("hukou", k, 2, "b"), upsert("hukou", person(8), 1, "other")], Durability::Sync).unwrap();
    let ids = |rs: Vec<basedata_store::Record>| rs.into_iter().map(|r| (r.dataset, r.version)).collect::<Vec<_>>();
    for as_of in [None, Some(15_000_000), Some(5_000_000)] {
        let all = ids(s.get_all(&k, None, as_of).unwrap());
        for want in [
            vec!["hukou"],
            vec!["hukou", "hukou"],
            vec!["marriage", "hukou"],
            vec!["death", "birth", "hukou", "hukou", "marriage"],
            vec!["death", "hukou", "marriage"],
            vec!["birth"],
            vec![],
        ] {
            let named = ids(s.get_all(&k, Some(&want), as_of).unwrap());
            let expected: Vec<_> = all.iter().filter(|(d, _)| want.contains(&d.as_str())).cloned().collect();
            assert_eq!(named, expected, "{want:?} as of {as_of:?}");
        }
    }
    // Both ways are taken, and what they compare is not empty.
    assert!(basedata_store::store::POINT_READS_UP_TO >= 3 && basedata_store::store::POINT_READS_UP_TO < 5);
    assert_eq!(ids(s.get_all(&k, Some(&["marriage", "hukou", "death"]), None).unwrap()), vec![("death".into(), 1), ("hukou".into(), 2)]);
    assert_eq!(ids(s.get_all(&k, Some(&["hukou", "marriage"]), Some(15_000_000)).unwrap()), vec![("hukou".into(), 1), ("marriage".into(), 1)]);
}

/// Once the writer has had nothing to do for a while, it flushes what the
/// writes before left in the memtables (when that is worth a flush), so
/// that the next requests do not pay for it.
#[test]
fn an_idle_writer_flushes_what_a_burst_left_in_memtables() {
    use basedata_store::commit::{Committer, IDLE_FLUSH_AFTER, IDLE_FLUSH_BYTES};
    let dir = tempfile::tempdir().unwrap();
    let engine = rocks(dir.path(), false);
    let store = Arc::new(open(engine.clone(), Arc::new(ManualClock::new(1_000_000))));
    let long = "名".repeat(100);
    for version in 1..=6u64 {
        for chunk in (0..7_000u32).collect::<Vec<_>>().chunks(1_000) {
            let updates: Vec<Update> = chunk.iter().map(|&i| upsert("hukou", person(i), version, &format!("{long}{i}"))).collect();
            store.apply(&updates, Durability::Buffered).unwrap();
        }
    }
    let held = engine.unflushed_bytes();
    assert!(held >= IDLE_FLUSH_BYTES, "the burst left {held} bytes, too few for the test");
    let mut c = Committer::start(store.clone(), 16);
    let deadline = std::time::Instant::now() + IDLE_FLUSH_AFTER + std::time::Duration::from_secs(20);
    while engine.unflushed_bytes() >= IDLE_FLUSH_BYTES {
        assert!(std::time::Instant::now() < deadline, "still {} bytes unflushed", engine.unflushed_bytes());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(name_of(&store, &person(6_999), "hukou", None), Some((6, format!("{long}6999"))));
    c.shutdown();
}
