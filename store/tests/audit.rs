//! The audit chain against tampering with the raw RocksDB files: an
//! altered, removed or reordered entry, or a cut-off tail, is found by
//! `Store::audit_verify`, which names the first bad entry.

mod common;

use basedata_store::audit::{AuditEvent, StoredEntry};
use basedata_store::clock::ManualClock;
use basedata_store::codec::{decode, encode};
use basedata_store::{Action, Cf, Durability, Engine, WriteBatch};
use common::*;
use std::path::Path;
use std::sync::Arc;

const ENTRIES: u64 = 10;

fn event(i: u32) -> AuditEvent {
    AuditEvent {
        department: "shebao-counter".into(),
        operator: Some("op-7".into()),
        purpose: "低保资格复核".into(),
        action: Action::BatchVerify,
        key: Some(person(i)),
        datasets: vec!["hukou".into()],
        fields: vec!["name".into()],
        outcome: "match".into(),
    }
}

/// A store in `dir` with `ENTRIES` audit entries, written in three commits.
fn write_entries(dir: &Path) {
    let s = open(rocks(dir, true), Arc::new(ManualClock::new(1_700_000_000_000_000)));
    for range in [0..3, 3..4, 4..ENTRIES as u32] {
        let events: Vec<AuditEvent> = range.map(event).collect();
        s.commit(&[], &events, Durability::Sync).unwrap();
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
        let mut entry: StoredEntry = decode("audit entry", &value(e, 4)).unwrap();
        entry.outcome = "mismatch".into();
        put(e, 4, encode(&entry));
    });
    assert_eq!(p.as_deref(), Some("entry 4 does not match its hash"));
    // The purpose rewritten with its hash recomputed: the next entry's
    // link no longer matches.
    let p = check(|e| {
        let prev: StoredEntry = decode("audit entry", &value(e, 3)).unwrap();
        let mut entry: StoredEntry = decode("audit entry", &value(e, 4)).unwrap();
        entry.purpose = "另有用途".into();
        entry.hash = [0; 32];
        entry.hash = sha2_of(&prev.hash, 4, &encode(&entry));
        put(e, 4, encode(&entry));
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
