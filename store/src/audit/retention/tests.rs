//! Removal of old entries: whole entries from the oldest end, the chain
//! and its index checked from the anchor, and nothing altered hidden.

use super::*;
use crate::audit::{Action, AuditEvent, AuditQuery};
use crate::audit::META_AUDIT_ANCHOR;
use crate::caller::retention_event;
use crate::clock::ManualClock;
use crate::engine::mem::MemEngine;
use crate::keys::{PersonKey, SubjectKey};
use crate::{Catalog, Engine, Secret};
use std::sync::Arc;

pub(crate) fn key(i: u16) -> SubjectKey {
    let d = time::Date::from_calendar_date(1979, time::Month::March, 3).unwrap();
    SubjectKey::Person(PersonKey::from_parts("110105", d, i).unwrap())
}

pub(crate) fn verify(k: u16) -> AuditEvent {
    let mut ev = crate::caller::system_event("p", Action::Verify);
    ev.department = "d1".into();
    ev.key = Some(key(k));
    ev
}

/// Uses 1–3 alone at 1,000, 1,010 and 1,020; uses 4–7 as one chunk of
/// batch lines at 1,030; uses 8–9 alone at 1,040 and 1,050.
fn trail() -> (Arc<MemEngine>, Store) {
    let engine = Arc::new(MemEngine::new());
    let clock = Arc::new(ManualClock::new(1_000));
    let s = Store::open(engine.clone(), &Secret::from_bytes([4; 32]), Arc::new(Catalog::builtin()), clock.clone()).unwrap();
    let commit = |events: Vec<AuditEvent>| {
        s.commit(&[], &events, Durability::Sync).unwrap();
        clock.advance(10);
    };
    for k in 1..=3 {
        commit(vec![verify(k)]);
    }
    commit((4..=7).map(verify).collect());
    for k in 8..=9 {
        commit(vec![verify(k)]);
    }
    assert_eq!(s.audit_head().unwrap().seq, 9);
    (engine, s)
}

/// What the server's retention task does: names the cuts of entries
/// dated before `before` in the trail, then makes them.
pub(crate) fn cut(s: &Store, before: i64) -> (Pruned, Vec<Stopped>) {
    let Some(cuts) = s.audit_cuts(before).unwrap() else { return Default::default() };
    s.commit(&[], &[retention_event(&cuts, before)], Durability::Sync).unwrap();
    s.audit_prune(&cuts).unwrap()
}

pub(crate) fn of_key(s: &Store, k: u16) -> Vec<u64> {
    let q = AuditQuery { key: Some(key(k)), limit: 100, ..Default::default() };
    s.audit_query(&q).unwrap().iter().map(|e| e.seq).collect()
}

#[test]
fn old_entries_go_whole_and_the_chain_checks_from_where_they_stopped() {
    let (_, s) = trail();
    let hash_of = |seq| s.audit_hash_at(seq).unwrap().unwrap();
    let (h3, h7) = (hash_of(3), hash_of(7));

    // The chunk at 1,030 is not before 1,025: it stays whole.
    let (p, stopped) = cut(&s, 1_025);
    assert_eq!((p.uses, p.anchor, stopped), (3, ChainHead { seq: 3, hash: h3 }, vec![]));
    let check = s.audit_verify().unwrap();
    assert!(check.ok, "{check:?}");
    // Uses 4–9, and the entry that named the cut.
    assert_eq!((check.entries, check.starts_after), (7, 3));
    let named = s.audit_query(&AuditQuery { department: Some("system".into()), limit: 10, ..Default::default() }).unwrap();
    assert_eq!(named.len(), 1);
    assert_eq!((named[0].seq, named[0].action), (10, Action::Retention));
    assert!(named[0].outcome.starts_with("up to entry 3 of this node's chain; dated before 1970-01-01T00:00:00.001025Z"), "{}", named[0].outcome);
    assert_eq!(of_key(&s, 2), Vec::<u64>::new());
    assert_eq!(of_key(&s, 5), vec![5]);

    let (p, _) = cut(&s, 1_035);
    assert_eq!((p.uses, p.anchor.seq), (4, 7));
    let checks = s.audit_checks().unwrap();
    assert_eq!(checks.first_problem(), None);
    assert_eq!((checks.chain.entries, checks.chain.starts_after), (4, 7));
    // Uses 8 and 9 with their subject, department and time keys; the two
    // entries naming the cuts with their department and time keys.
    assert_eq!(checks.index.keys, 10);
    assert_eq!(of_key(&s, 5), Vec::<u64>::new());
    assert_eq!(of_key(&s, 8), vec![8]);
    let all = AuditQuery { limit: 100, ..Default::default() };
    assert_eq!(s.audit_query(&all).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), vec![8, 9, 10, 11]);

    // A head recorded at the cut still checks; one before it cannot.
    assert_eq!(s.audit_hash_at(7).unwrap(), Some(h7));
    assert_eq!(s.audit_hash_at(3).unwrap(), None);
    assert_eq!(crate::backup::check_head(&s, 7, &crate::backup::hex(&h7), "the log").unwrap(), None);
    let old = crate::backup::check_head(&s, 3, &crate::backup::hex(&h3), "the log").unwrap().unwrap();
    assert!(old.contains("retention period removed"), "{old}");

    // Nothing more is that old: a second run removes nothing.
    assert_eq!(cut(&s, 1_035).0.total(), 0);
    assert_eq!(s.audit_head().unwrap().seq, 11, "nothing to cut, nothing recorded");
}

#[test]
fn what_follows_the_anchor_is_still_checked() {
    let (engine, s) = trail();
    cut(&s, 1_025);
    // An entry removed by hand after the anchor is found.
    let mut b = WriteBatch::new();
    b.delete(Cf::Audit, seq_key(8).to_vec());
    engine.write(b, Durability::Sync).unwrap();
    let check = s.audit_verify().unwrap();
    assert!(!check.ok);
    assert_eq!(check.problem.as_deref(), Some("entry 8 is missing (next is 9)"));

    // So is an anchor moved on by hand over entries still held.
    let (engine, s) = trail();
    cut(&s, 1_025);
    let mut b = WriteBatch::new();
    b.put(Cf::Meta, META_AUDIT_ANCHOR.to_vec(), encode(&ChainHead { seq: 3, hash: [1; 32] }));
    engine.write(b, Durability::Sync).unwrap();
    assert_eq!(s.audit_verify().unwrap().problem.as_deref(), Some("entry 4 does not match its hash"));
}

#[test]
fn an_anchor_past_every_named_cut_is_found() {
    // The first three entries deleted by hand and an anchor written over
    // them, with no removal named at all.
    let (engine, s) = trail();
    let h3 = s.audit_hash_at(3).unwrap().unwrap();
    let mut b = WriteBatch::new();
    for seq in 1..=3 {
        b.delete(Cf::Audit, seq_key(seq).to_vec());
    }
    b.put(Cf::Meta, META_AUDIT_ANCHOR.to_vec(), encode(&ChainHead { seq: 3, hash: h3 }));
    engine.write(b, Durability::Sync).unwrap();
    let check = s.audit_verify().unwrap();
    assert_eq!(check.problem.as_deref(), Some("entries up to 3 are gone, but the trail names no removal past 0"));

    // Past a named cut, the same way.
    let (engine, s) = trail();
    cut(&s, 1_025);
    let h7 = s.audit_hash_at(7).unwrap().unwrap();
    let mut b = WriteBatch::new();
    b.delete(Cf::Audit, seq_key(4).to_vec());
    b.put(Cf::Meta, META_AUDIT_ANCHOR.to_vec(), encode(&ChainHead { seq: 7, hash: h7 }));
    engine.write(b, Durability::Sync).unwrap();
    let check = s.audit_verify().unwrap();
    assert_eq!(check.problem.as_deref(), Some("entries up to 7 are gone, but the trail names no removal past 3"));
}

#[test]
fn cuts_read_back_as_named() {
    let cuts = Cuts { local: Some(12), remote: vec![("node-a".into(), 7), ("n_2".into(), 1)] };
    let outcome = retention_event(&cuts, 0).outcome;
    assert_eq!(outcome, "up to entry 12 of this node's chain; up to entry 7 of node node-a's chain; up to entry 1 of node n_2's chain; dated before 1970-01-01T00:00:00Z");
    assert_eq!(Cuts::parse(&outcome), cuts);
    assert_eq!(Cuts::parse("removed nothing; up to entry x of this node's chain"), Cuts::default());
}

#[test]
fn a_removal_stops_at_an_altered_entry_and_leaves_it_to_the_check() {
    let (engine, s) = trail();
    // Entry 2's text altered, its stored hash left as it was.
    let mut bytes = engine.get(Cf::Audit, &seq_key(2)).unwrap().unwrap();
    let at = bytes.windows(2).position(|w| w == b"d1").unwrap();
    bytes[at + 1] = b'9';
    let mut b = WriteBatch::new();
    b.put(Cf::Audit, seq_key(2).to_vec(), bytes);
    engine.write(b, Durability::Sync).unwrap();

    // The cut is named before the altered entry, not past it.
    assert_eq!(s.audit_cuts(i64::MAX).unwrap().unwrap().local, Some(1));
    let (p, stopped) = cut(&s, i64::MAX);
    assert_eq!((p.uses, stopped), (1, vec![]));
    let check = s.audit_verify().unwrap();
    assert_eq!(check.problem.as_deref(), Some("entry 2 does not match its hash"));
}

#[test]
fn in_cluster_mode_only_what_the_log_acknowledged_goes() {
    let (engine, s) = trail();
    let shipped = Shipped { node: "n1".into(), anchor: ChainHead::default(), seq: 5 };
    let mut b = WriteBatch::new();
    b.put(Cf::Meta, META_SHIPPED.to_vec(), encode(&shipped));
    engine.write(b, Durability::Sync).unwrap();
    // Entry 4–7 (a chunk) reaches past 5: it waits whole.
    let (p, _) = cut(&s, i64::MAX);
    assert_eq!((p.uses, p.anchor.seq), (3, 3));
    assert!(s.audit_verify().unwrap().ok);
}

#[test]
fn a_retention_shorter_than_six_months_is_refused() {
    assert!(check_retention_days(183).unwrap_err().contains("at least six months"));
    assert_eq!(check_retention_days(184), Ok(()));
    assert_eq!(check_retention_days(3_650), Ok(()));
}

#[test]
fn a_stopped_store_leaves_the_removal_to_its_next_start() {
    let engine = Arc::new(MemEngine::new());
    let clock = Arc::new(ManualClock::new(1_000));
    let open = || Store::open(engine.clone(), &Secret::from_bytes([4; 32]), Arc::new(Catalog::builtin()), clock.clone()).unwrap();
    let s = open();
    // More uses than two steps of the removal.
    let uses = (2 * STEP_USES / 100 + 1) * 100;
    for first in (0..uses).step_by(100) {
        s.commit(&[], &(first..first + 100).map(|i| verify((i % 900) as u16 + 1)).collect::<Vec<_>>(), Durability::Sync).unwrap();
        clock.advance(10);
    }
    let cuts = s.audit_cuts(i64::MAX).unwrap().expect("a cut");
    assert_eq!(cuts.local, Some(uses));
    s.commit(&[], &[retention_event(&cuts, i64::MAX)], Durability::Sync).unwrap();

    s.stop_maintenance();
    assert!(s.audit_cuts(i64::MAX).unwrap().is_none(), "no cut is named once stopped");
    let (p, stopped) = s.audit_prune(&cuts).unwrap();
    assert_eq!((p.uses, p.anchor, stopped), (0, ChainHead::default(), vec![]));
    assert!(s.audit_verify().unwrap().ok);
    drop(s);

    // The next start goes on with the named cut.
    let s = open();
    assert!(!s.maintenance_stopped());
    let (p, _) = s.audit_prune(&cuts).unwrap();
    assert_eq!(p.uses, uses);
    let check = s.audit_verify().unwrap();
    assert!(check.ok, "{check:?}");
    assert_eq!((check.starts_after, check.entries), (uses, 1));
}
