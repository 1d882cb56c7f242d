//! The audit chain against tampering with the raw RocksDB files: an
//! altered, removed or reordered entry, or a cut-off tail, is found by
//! `Store::audit_verify`, which names the first bad entry.

mod common;

use basedata_store::audit::{AuditEvent, StoredEntry};
use basedata_store::clock::ManualClock;
use basedata_store::codec::encode;
use basedata_store::engine::rocks::{RocksConfig, RocksEngine};
use basedata_store::{Action, Cf, Durability, Engine, WriteBatch};
use common::*;
use std::path::Path;
use std::sync::Arc;

const ENTRIES: u64 = 10;

fn event(i: u32) -> AuditEvent {
    AuditEvent {
        department: "shebao-counter".into(),
        operator: Some("op-7".into()),
        operator_verified: false,
        purpose: "低保资格复核".into(),
        purpose_code: None,
        action: Action::Verify,
        key: Some(person(i)),
        datasets: vec!["hukou".into()],
        fields: vec!["name".into()],
        outcome: "match".into(),
        key_mapped: false,
        pid: None,
        rejected_lines: 0,
        grants: Vec::new(),
    }
}

/// A store in `dir` with `ENTRIES` audit entries, one a commit (so each is
/// stored alone; runs stored as one are tested in `audit_chunks`).
fn write_entries(dir: &Path) {
    let s = open(rocks(dir, true), Arc::new(ManualClock::new(1_700_000_000_000_000)));
    for i in 0..ENTRIES as u32 {
        s.commit(&[], &[event(i)], Durability::Sync).unwrap();
    }
    let check = s.audit_verify().unwrap();
    assert!(check.ok && check.entries == ENTRIES, "{check:?}");
}

fn audit_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Applies `tamper` to the raw engine of a fresh store, reopens it and
/// returns the chain check's problem (`None` when the chain verifies).
fn check(tamper: impl FnOnce(&dyn Engine)) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    write_entries(dir.path());
    {
        let raw = rocks(dir.path(), true);
        tamper(&*raw);
    }
    let s = open(rocks(dir.path(), true), Arc::new(ManualClock::new(1_800_000_000_000_000)));
    let c = s.audit_verify().unwrap();
    assert_eq!(c.ok, c.problem.is_none(), "{c:?}");
    c.problem
}

fn put(e: &dyn Engine, seq: u64, value: Vec<u8>) {
    let mut b = WriteBatch::new();
    b.put(Cf::Audit, audit_key(seq).to_vec(), value);
    e.write(b, Durability::Sync).unwrap();
}

fn delete(e: &dyn Engine, seqs: &[u64]) {
    let mut b = WriteBatch::new();
    for s in seqs {
        b.delete(Cf::Audit, audit_key(*s).to_vec());
    }
    e.write(b, Durability::Sync).unwrap();
}

fn value(e: &dyn Engine, seq: u64) -> Vec<u8> {
    e.get(Cf::Audit, &audit_key(seq)).unwrap().expect("entry exists")
}

#[test]
fn an_untouched_chain_verifies() {
    assert_eq!(check(|_| {}), None);
}

#[test]
fn an_altered_entry_is_found() {
    // A field changed and the entry re-encoded, its old hash kept.
    let p = check(|e| {
        let mut entry: StoredEntry = StoredEntry::decode(&value(e, 4)).unwrap();
        entry.outcome = "mismatch".into();
        put(e, 4, entry.encode());
    });
    assert_eq!(p.as_deref(), Some("entry 4 does not match its hash"));
    // The purpose rewritten with its hash recomputed: the next entry's
    // link no longer matches.
    let p = check(|e| {
        let prev: StoredEntry = StoredEntry::decode(&value(e, 3)).unwrap();
        let mut entry: StoredEntry = StoredEntry::decode(&value(e, 4)).unwrap();
        entry.purpose = "另有用途".into();
        entry.hash = [0; 32];
        entry.hash = sha2_of(&prev.hash, 4, &entry.encode());
        put(e, 4, entry.encode());
    });
    assert_eq!(p.as_deref(), Some("entry 5 does not match its hash"));
    // Raw bytes flipped in the middle of the value.
    let p = check(|e| {
        let mut v = value(e, 7);
        let mid = v.len() / 2;
        v[mid] ^= 0x20;
        put(e, 7, v);
    });
    assert!(p.as_deref().is_some_and(|p| p.starts_with("entry 7 ")), "{p:?}");
}

/// SHA-256 of an entry as the chain defines it, for a forger who knows
/// the format (it still cannot fix the entries after it).
fn sha2_of(prev: &[u8; 32], seq: u64, unhashed: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(unhashed);
    h.finalize().into()
}

#[test]
fn a_removed_entry_is_found() {
    assert_eq!(check(|e| delete(e, &[5])).as_deref(), Some("entry 5 is missing (next is 6)"));
    assert_eq!(check(|e| delete(e, &[1])).as_deref(), Some("entry 1 is missing (next is 2)"));
}

#[test]
fn swapped_entries_are_found() {
    let p = check(|e| {
        let (a, b) = (value(e, 3), value(e, 6));
        put(e, 3, b);
        put(e, 6, a);
    });
    assert_eq!(p.as_deref(), Some("entry 3 does not match its hash"));
}

#[test]
fn a_truncated_tail_is_found() {
    let p = check(|e| delete(e, &[9, 10]));
    assert_eq!(p.as_deref(), Some(format!("the chain ends at 8 but the recorded head is {ENTRIES}").as_str()));
    // Everything removed: the recorded head still tells.
    let all: Vec<u64> = (1..=ENTRIES).collect();
    assert!(check(|e| delete(e, &all)).is_some());
}

/// An event flagged `key_mapped` (its action read a stored record) does not
/// write the key's mapping again but still names the key to auditors,
/// through the mapping the record's update wrote; an unflagged event about
/// a key never stored writes the mapping itself. The by-key index lives in
/// a vector memtable: it is read back here both before and after a flush.
#[test]
fn audited_keys_resolve_whether_or_not_the_event_writes_the_mapping() {
    use basedata_store::audit::AuditQuery;
    use basedata_store::{Update, UpdateOp, Value};
    let dir = tempfile::tempdir().unwrap();
    let s = open(rocks(dir.path(), true), Arc::new(ManualClock::new(1_700_000_000_000_000)));
    let stored = Update {
        provider: None,
        link: None,
        dataset: "hukou".into(),
        key: person(1),
        version: 1,
        op: UpdateOp::Upsert(vec![
            ("name".into(), Value::Str("甲".into())),
            ("gender".into(), Value::Code("1".into())),
            ("birth_date".into(), Value::Date(time::macros::date!(1980 - 01 - 01))),
            ("status".into(), Value::Code("normal".into())),
        ]),
    };
    s.commit(&[stored], &[], Durability::Sync).unwrap();
    let mapped = AuditEvent { key_mapped: true, ..event(1) };
    let unknown = AuditEvent { outcome: "not_found".into(), ..event(2) };
    s.commit(&[], &[mapped, unknown], Durability::Sync).unwrap();
    let by_key = |i: u32| {
        let q = AuditQuery { department: None, key: Some(person(i)), from: None, to: None, after: 0, limit: 10, ..Default::default() };
        s.audit_query(&q).unwrap()
    };
    for round in 0..2 {
        for i in [1, 2] {
            let entries = by_key(i);
            assert_eq!(entries.len(), 1, "person {i}, round {round}");
            assert_eq!(entries[0].key, Some(person(i)), "person {i}, round {round}");
        }
        s.engine().flush().unwrap();
    }
    assert!(s.audit_verify().unwrap().ok);
}

/// An event that carries its key's pseudonym (a verification has it from
/// the lookup) is stored and indexed exactly as one the writer hashes the
/// key for: two stores fed the same events, one with and one without,
/// hold the same raw audit and index entries, and each key finds its own.
#[test]
fn an_event_carrying_its_pseudonym_is_stored_as_one_without() {
    use basedata_store::audit::AuditQuery;
    let store = |carry: bool| {
        let dir = tempfile::tempdir().unwrap();
        let s = open(rocks(dir.path(), true), Arc::new(ManualClock::new(1_700_000_000_000_000)));
        // Alone, and as a run of one department's uses stored as a chunk.
        let events: Vec<AuditEvent> = (0..5).map(|i| AuditEvent { pid: carry.then(|| s.pseudonym(&person(i))), ..event(i) }).collect();
        s.commit(&[], &events[..1], Durability::Sync).unwrap();
        s.commit(&[], &events[1..], Durability::Sync).unwrap();
        for i in 0..5 {
            let q = AuditQuery { department: None, key: Some(person(i)), from: None, to: None, after: 0, limit: 10, ..Default::default() };
            let found = s.audit_query(&q).unwrap();
            assert_eq!(found.iter().map(|e| e.key).collect::<Vec<_>>(), vec![Some(person(i))], "carried {carry}");
        }
        assert!(s.audit_verify().unwrap().ok);
        // The index keys the writer left in memory, into the engine.
        s.index_tail().settle().unwrap();
        let raw = |cf| -> Vec<(Vec<u8>, Vec<u8>)> {
            s.engine().scan(cf, &[], None, false).unwrap().map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap()).collect()
        };
        (raw(Cf::Audit), raw(Cf::AuditIndex), dir)
    };
    let (audit, index, _a) = store(false);
    let (audit2, index2, _b) = store(true);
    assert_eq!(index.len(), 5 + 2 * 2, "a subject key a use, a department and a time key an entry");
    assert_eq!((audit, index), (audit2, index2));
}

/// The audit index used to be compacted leveled and is now tiered: an
/// index written leveled, down to the bottom level, opens under the new
/// options with every entry in place, and takes new entries, flushes and
/// compactions on top of it.
#[test]
fn an_index_compacted_leveled_opens_and_grows_tiered() {
    let dir = tempfile::tempdir().unwrap();
    let key = |i: u32| {
        let mut k = vec![b'k'];
        k.extend_from_slice(&xorshift(i).to_be_bytes());
        k.extend_from_slice(&i.to_be_bytes());
        k
    };
    {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let names: Vec<&str> = Cf::ALL.iter().map(|c| c.name()).collect();
        let db = rocksdb::DB::open_cf(&opts, dir.path(), &names).unwrap();
        let cf = db.cf_handle(Cf::AuditIndex.name()).unwrap();
        for round in 0..4u32 {
            for i in round * 5_000..(round + 1) * 5_000 {
                db.put_cf(&cf, key(i), b"").unwrap();
            }
            db.flush_cf(&cf).unwrap();
        }
        db.compact_range_cf(&cf, None::<&[u8]>, None::<&[u8]>);
        let live = db.live_files().unwrap();
        assert!(live.iter().any(|f| f.column_family_name == Cf::AuditIndex.name() && f.level > 0), "leveled files");
    }
    let engine = RocksEngine::open(dir.path(), &RocksConfig { block_cache_bytes: 8 << 20, ..Default::default() }).unwrap();
    let count = |e: &RocksEngine| e.scan(Cf::AuditIndex, &[], None, false).unwrap().count();
    assert_eq!(count(&engine), 20_000);
    for round in 4..12u32 {
        let mut b = WriteBatch::new();
        for i in round * 5_000..(round + 1) * 5_000 {
            b.put(Cf::AuditIndex, key(i), Vec::new());
        }
        engine.write(b, Durability::Sync).unwrap();
        engine.db().flush_cf(engine.cf(Cf::AuditIndex)).unwrap();
    }
    engine.db().compact_range_cf(engine.cf(Cf::AuditIndex), None::<&[u8]>, None::<&[u8]>);
    assert_eq!(count(&engine), 60_000);
    let mut want: Vec<Vec<u8>> = (0..60_000).map(key).collect();
    want.sort();
    let got: Vec<Vec<u8>> = engine.scan(Cf::AuditIndex, &[], None, false).unwrap().map(|kv| kv.unwrap().0.to_vec()).collect();
    assert_eq!(got, want);
}

/// Scattered but repeatable key bytes, as pseudonyms are.
fn xorshift(i: u32) -> u32 {
    let mut x = i.wrapping_mul(2_654_435_761) ^ 0x9E37_79B9;
    x ^= x << 13;
    x ^= x >> 17;
    x ^ (x << 5)
}

/// Entries written before operators carried provenance (format 1),
/// before purpose codes (format 2) and before grants (format 3) still
/// read, as declared operators without a purpose code or grants, and
/// still verify; entries of the current format follow them in the same
/// chain and keep whether the operator was verified, which purpose they
/// named and the grants they relied on.
#[test]
fn first_format_entries_read_and_verify_beside_new_ones() {
    use basedata_store::audit::{AuditQuery, ChainHead, StoredEntryV1, StoredEntryV2, StoredEntryV3};
    let dir = tempfile::tempdir().unwrap();
    write_entries(dir.path());
    {
        // Rewrite the whole chain as the first two formats wrote it.
        let raw = rocks(dir.path(), true);
        let mut prev = [0u8; 32];
        for seq in 1..=ENTRIES {
            let e = StoredEntry::decode(&value(&*raw, seq)).unwrap();
            // The fields both old formats share, from the current entry.
            macro_rules! old_entry {
                ($ty:ident { $($extra:tt)* }) => {
                    $ty {
                        at: e.at,
                        department: e.department,
                        operator: e.operator,
                        purpose: e.purpose,
                        action: e.action,
                        subject: e.subject,
                        datasets: e.datasets,
                        fields: e.fields,
                        outcome: e.outcome,
                        $($extra)*
                        hash: [0; 32],
                    }
                };
            }
            let (marker, bytes) = if seq > 2 * ENTRIES / 3 {
                let mut v3 = old_entry!(StoredEntryV3 { operator_verified: false, purpose_code: None, });
                v3.hash = sha2_of(&prev, seq, &v3.encode());
                prev = v3.hash;
                (3, v3.encode())
            } else if seq > ENTRIES / 3 {
                let mut v2 = old_entry!(StoredEntryV2 { operator_verified: false, });
                v2.hash = sha2_of(&prev, seq, &v2.encode());
                prev = v2.hash;
                (2, v2.encode())
            } else {
                let mut v1 = old_entry!(StoredEntryV1 {});
                v1.hash = sha2_of(&prev, seq, &v1.encode());
                prev = v1.hash;
                (1, v1.encode())
            };
            assert_eq!(bytes[0], marker);
            put(&*raw, seq, bytes);
        }
        let mut b = WriteBatch::new();
        b.put(Cf::Meta, b"audit_head".to_vec(), encode(&ChainHead { seq: ENTRIES, hash: prev }));
        raw.write(b, Durability::Sync).unwrap();
    }
    let s = open(rocks(dir.path(), true), Arc::new(ManualClock::new(1_800_000_000_000_000)));
    let c = s.audit_verify().unwrap();
    assert!(c.ok && c.entries == ENTRIES, "{c:?}");
    let verified = AuditEvent {
        operator: Some("clerk-1".into()),
        operator_verified: true,
        purpose: "social_assistance; 低保资格复核".into(),
        purpose_code: Some("social_assistance".into()),
        grants: vec!["grant-a".into(), "grant-b".into()],
        ..event(1)
    };
    s.commit(&[], &[verified, event(2)], Durability::Sync).unwrap();
    let c = s.audit_verify().unwrap();
    assert!(c.ok && c.entries == ENTRIES + 2, "{c:?}");
    let q = AuditQuery { department: None, key: None, from: None, to: None, after: 0, limit: 100, ..Default::default() };
    let all = s.audit_query(&q).unwrap();
    let flags: Vec<bool> = all.iter().map(|e| e.operator_verified).collect();
    let mut want = vec![false; ENTRIES as usize];
    want.extend([true, false]);
    assert_eq!(flags, want);
    assert_eq!(all[ENTRIES as usize].operator.as_deref(), Some("clerk-1"));
    assert_eq!(all[0].operator.as_deref(), Some("op-7"));
    let codes: Vec<Option<&str>> = all.iter().map(|e| e.purpose_code.as_deref()).collect();
    let mut want = vec![None; ENTRIES as usize];
    want.extend([Some("social_assistance"), None]);
    assert_eq!(codes, want);
    assert_eq!(all[ENTRIES as usize].purpose, "social_assistance; 低保资格复核");
    let grants: Vec<usize> = all.iter().map(|e| e.grants.len()).collect();
    let mut want = vec![0; ENTRIES as usize];
    want.extend([2, 0]);
    assert_eq!(grants, want);
    assert_eq!(all[ENTRIES as usize].grants, ["grant-a", "grant-b"]);
    // Alone, a use is an entry of its own (the two above were a chunk).
    s.commit(&[], &[AuditEvent { grants: vec!["grant-c".into()], ..event(3) }], Durability::Sync).unwrap();
    let q = AuditQuery { after: ENTRIES + 2, limit: 10, ..Default::default() };
    let last = s.audit_query(&q).unwrap();
    assert_eq!(last.iter().map(|e| e.grants.clone()).collect::<Vec<_>>(), [vec!["grant-c".to_owned()]]);
    assert!(s.audit_verify().unwrap().ok);
}

/// Another node's entries, appended to its chain here, count once each
/// among the uses other nodes answered (a duplicate is not counted again),
/// beside this node's own uses.
#[test]
fn other_nodes_entries_count_once_as_their_uses() {
    use basedata_store::audit::remote::RemoteHeads;
    use basedata_store::audit::ChainHead;
    use basedata_store::usage::{day_of, totals, Kind, Owner, RemoteUsage};
    let at = 1_700_000_000_000_000;
    let a = mem_store(Arc::new(ManualClock::new(at)));
    let b = mem_store(Arc::new(ManualClock::new(at)));
    a.commit(&[], &(0..5).map(event).collect::<Vec<_>>(), Durability::Sync).unwrap();
    b.commit(&[], &[event(9)], Durability::Sync).unwrap();
    let mut usage = RemoteUsage::default();
    let mut heads = RemoteHeads::new();
    for (from, to) in [(1, 3), (2, 5), (1, 5)] {
        let batch = a.audit_ship_batch("node-a", ChainHead::default(), from, to, 100, 1 << 20).unwrap();
        let mut wb = WriteBatch::new();
        let engine = b.engine().clone();
        let mut count = |uses: &[StoredEntry], wb: &mut WriteBatch| usage.count(&*engine, uses, wb);
        b.remote_append(&mut heads, Some(&mut count), &batch, &mut wb).unwrap();
        b.engine().write(wb, Durability::Sync).unwrap();
    }
    let day = day_of(at);
    let t = totals(&**b.engine(), Owner::Department("shebao-counter"), day, day + 1).unwrap();
    assert_eq!(t.get(&Kind::Action(Action::Verify)), Some(&6), "5 answered by node A, 1 here: {t:?}");
    // Node A's own counters know only its own uses.
    let t = totals(&**a.engine(), Owner::Department("shebao-counter"), day, day + 1).unwrap();
    assert_eq!(t.get(&Kind::Action(Action::Verify)), Some(&5));
}
