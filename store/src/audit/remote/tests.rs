//! Other nodes' chains: appended only in order and intact, found by audit
//! queries beside the local chain, checked apart from it.

use super::*;
use crate::audit::{Action, AuditCursor, AuditEvent, AuditQuery};
use crate::clock::ManualClock;
use crate::engine::mem::MemEngine;
use crate::engine::Durability;
use crate::keys::{PersonKey, SubjectKey};
use crate::{Catalog, Secret};
use std::sync::Arc;

fn store(clock: i64) -> (Store, Arc<ManualClock>) {
    let c = Arc::new(ManualClock::new(clock));
    let s = Store::open(Arc::new(MemEngine::new()), &Secret::from_bytes([9; 32]), Arc::new(Catalog::builtin()), c.clone()).unwrap();
    (s, c)
}

fn key(i: u16) -> SubjectKey {
    let d = time::Date::from_calendar_date(1980, time::Month::May, 5).unwrap();
    SubjectKey::Person(PersonKey::from_parts("440305", d, i).unwrap())
}

fn event(department: &str, k: Option<u16>) -> AuditEvent {
    AuditEvent {
        department: department.into(),
        operator: None,
        operator_verified: false,
        purpose: "p".into(),
        purpose_code: None,
        action: Action::Verify,
        key: k.map(key),
        datasets: vec!["hukou".into()],
        fields: vec!["name".into()],
        outcome: "match".into(),
        key_mapped: false,
        pid: None,
        rejected_lines: 0,
        grants: Vec::new(),
    }
}

/// Commits one audited use per event at `at`, then moves the clock on.
fn uses(s: &Store, clock: &ManualClock, events: &[AuditEvent]) {
    for e in events {
        s.commit(&[], std::slice::from_ref(e), Durability::Sync).unwrap();
        clock.advance(10);
    }
}

fn ship(s: &Store, from: u64, to: u64) -> ShippedBatch {
    s.audit_ship_batch("node-a", ChainHead::default(), from, to, 1_000, 1 << 20).unwrap()
}

fn append(s: &Store, b: &ShippedBatch) -> std::result::Result<Appended, RemoteError> {
    let mut heads = s.remote_heads().unwrap();
    let mut wb = WriteBatch::new();
    let done = s.remote_append(&mut heads, None, b, &mut wb)?;
    s.engine().write(wb, Durability::Sync).unwrap();
    Ok(done)
}

/// Node A with five uses (keys 1 to 5, departments d1/d2), node B with two
/// of its own (keys 7 and 1), interleaved in time.
fn two_nodes() -> (Store, Store) {
    let (a, ca) = store(1_000);
    let (b, cb) = store(1_005);
    let ea: Vec<AuditEvent> = (1..=5).map(|i| event(if i % 2 == 0 { "d2" } else { "d1" }, Some(i))).collect();
    uses(&a, &ca, &ea);
    uses(&b, &cb, &[event("d1", Some(7)), event("d3", Some(1))]);
    (a, b)
}

#[test]
fn entries_are_appended_in_order_and_the_chain_verifies() {
    let (a, b) = two_nodes();
    assert_eq!(append(&b, &ship(&a, 1, 3)).unwrap(), Appended { appended: 3, duplicates: 0 });
    assert_eq!(append(&b, &ship(&a, 4, 5)).unwrap(), Appended { appended: 2, duplicates: 0 });
    let chains = b.remote_chains().unwrap();
    assert_eq!(chains, vec![("node-a".to_owned(), RemoteChain { anchor: ChainHead::default(), head: a.audit_head().unwrap() })]);
    let checks = b.audit_verify_remote().unwrap();
    assert_eq!(checks.len(), 1);
    assert!(checks[0].1.ok && checks[0].1.entries == 5, "{checks:?}");
    assert_eq!(checks[0].1.head, a.audit_head().unwrap().hash);
    // The local chain and its check do not see the other node's entries.
    let local = b.audit_verify().unwrap();
    assert!(local.ok && local.entries == 2, "{local:?}");
    assert_eq!(b.audit_head().unwrap().seq, 2);
}

#[test]
fn duplicates_are_skipped() {
    let (a, b) = two_nodes();
    append(&b, &ship(&a, 1, 3)).unwrap();
    assert_eq!(append(&b, &ship(&a, 1, 3)).unwrap(), Appended { appended: 0, duplicates: 3 });
    assert_eq!(append(&b, &ship(&a, 2, 5)).unwrap(), Appended { appended: 2, duplicates: 2 });
    assert!(b.audit_verify_remote().unwrap()[0].1.ok);
    assert_eq!(b.remote_chains().unwrap()[0].1.head.seq, 5);
}

#[test]
fn a_gap_is_refused() {
    let (a, b) = two_nodes();
    let err = append(&b, &ship(&a, 2, 5)).unwrap_err();
    assert!(matches!(err, RemoteError::Gap { expected: 1, found: 2, .. }), "{err}");
    append(&b, &ship(&a, 1, 2)).unwrap();
    let err = append(&b, &ship(&a, 4, 5)).unwrap_err();
    assert!(matches!(err, RemoteError::Gap { expected: 3, found: 4, .. }), "{err}");
    assert_eq!(b.remote_chains().unwrap()[0].1.head.seq, 2);
}

#[test]
fn a_tampered_entry_is_refused() {
    let (a, b) = two_nodes();
    let mut batch = ship(&a, 1, 3);
    // Another department in entry 2, same length: the hash no longer fits.
    let bytes = &mut batch.entries[1].bytes;
    let at = bytes.windows(2).position(|w| w == b"d2").unwrap();
    bytes[at + 1] = b'9';
    let err = append(&b, &batch).unwrap_err();
    assert!(matches!(err, RemoteError::Broken { seq: 2, .. }), "{err}");
    assert!(b.remote_chains().unwrap().is_empty(), "nothing of the refused batch is kept");
    // A key mapping sealed for another pseudonym is refused too.
    let mut batch = ship(&a, 1, 2);
    batch.entries[1].mappings = batch.entries[0].mappings.clone();
    assert!(matches!(append(&b, &batch).unwrap_err(), RemoteError::Broken { seq: 2, .. }));
    // A stored copy changed afterwards fails the check.
    append(&b, &ship(&a, 1, 5)).unwrap();
    let k = entry_key("node-a", 4);
    let mut v = b.engine().get(Cf::Audit, &k).unwrap().unwrap();
    let n = v.len();
    v[n - 40] ^= 1;
    let mut wb = WriteBatch::new();
    wb.put(Cf::Audit, k, v);
    b.engine().write(wb, Durability::Sync).unwrap();
    let check = &b.audit_verify_remote().unwrap()[0].1;
    assert!(!check.ok && check.entries == 3, "{check:?}");
    assert!(b.audit_verify().unwrap().ok, "the local chain is not concerned");
}

#[test]
fn a_chain_shipped_from_an_anchor_starts_there() {
    let (a, b) = two_nodes();
    let mut heads = RemoteHeads::new();
    let mut wb = WriteBatch::new();
    let anchor = a.audit_ship_batch("node-a", ChainHead::default(), 1, 3, 100, 1 << 20).unwrap();
    append(&b, &anchor).unwrap();
    let at3 = b.remote_chains().unwrap()[0].1.head;
    let (c, _) = store(0);
    let later = a.audit_ship_batch("node-c", at3, 4, 5, 100, 1 << 20).unwrap();
    c.remote_append(&mut heads, None, &later, &mut wb).unwrap();
    c.engine().write(wb, Durability::Sync).unwrap();
    let chains = c.remote_chains().unwrap();
    assert_eq!(chains[0].1.anchor, at3);
    assert_eq!(chains[0].1.head.seq, 5);
    let check = &c.audit_verify_remote().unwrap()[0].1;
    assert!(check.ok && check.entries == 2, "{check:?}");
}

#[test]
fn batches_are_cut_at_their_limits() {
    let (a, _) = two_nodes();
    assert_eq!(a.audit_ship_batch("n", ChainHead::default(), 1, 5, 2, 1 << 20).unwrap().entries.len(), 2);
    assert_eq!(a.audit_ship_batch("n", ChainHead::default(), 1, 5, 100, 1).unwrap().entries.len(), 1);
    let all = a.audit_ship_batch("n", ChainHead::default(), 2, 5, 100, 1 << 20).unwrap();
    assert_eq!((all.first, all.last(), all.entries.len()), (2, 5, 4));
    assert!(all.entries.iter().all(|e| e.mappings.iter().all(Option::is_some)));
    assert_eq!(ShippedBatch::decode(&all.encode()).unwrap(), all);
    assert_eq!(all.oldest_at(), Some(1_010));
    assert!(a.audit_ship_batch("n", ChainHead::default(), 6, 5, 100, 1 << 20).unwrap().entries.is_empty());
    assert!(!valid_node_name("a.b") && !valid_node_name("") && valid_node_name("node-1_x"));
}

fn query(s: &Store, q: AuditQuery) -> Vec<(Option<String>, u64, i64)> {
    s.audit_query(&AuditQuery { node: Some("node-b".into()), limit: 100, ..q }).unwrap().into_iter().map(|e| (e.node, e.seq, e.at)).collect()
}

#[test]
fn queries_find_remote_entries_by_subject_department_and_time() {
    let (a, b) = two_nodes();
    append(&b, &ship(&a, 1, 5)).unwrap();
    let remote = |seq: u64| (Some("node-a".to_owned()), seq, 1_000 + 10 * (seq as i64 - 1));
    let local = |seq: u64| (None, seq, 1_005 + 10 * (seq as i64 - 1));
    // Key 3 was used on node A only; B never saw it, yet shows the key.
    let by_key = b.audit_query(&AuditQuery { key: Some(key(3)), limit: 10, ..Default::default() }).unwrap();
    assert_eq!(by_key.len(), 1);
    assert_eq!((by_key[0].node.as_deref(), by_key[0].seq, by_key[0].key), (Some("node-a"), 3, Some(key(3))));
    // Key 1: on both nodes, in time order.
    assert_eq!(query(&b, AuditQuery { key: Some(key(1)), ..Default::default() }), vec![remote(1), local(2)]);
    assert_eq!(query(&b, AuditQuery { department: Some("d2".into()), ..Default::default() }), vec![remote(2), remote(4)]);
    assert_eq!(query(&b, AuditQuery { department: Some("d1".into()), ..Default::default() }), vec![remote(1), local(1), remote(3), remote(5)]);
    assert_eq!(
        query(&b, AuditQuery { from: Some(1_010), to: Some(1_030), ..Default::default() }),
        vec![remote(2), local(2), remote(3)]
    );
    let all = query(&b, AuditQuery::default());
    assert_eq!(all, vec![remote(1), local(1), remote(2), local(2), remote(3), remote(4), remote(5)]);
    // Paging by cursor, two at a time, gives the same entries once each.
    for filter in [AuditQuery::default(), AuditQuery { department: Some("d1".into()), ..Default::default() }] {
        let whole = query(&b, filter.clone());
        let mut paged = Vec::new();
        let mut cursor = None;
        loop {
            let page = b.audit_query(&AuditQuery { node: Some("node-b".into()), limit: 2, cursor: cursor.clone(), ..filter.clone() }).unwrap();
            let Some(last) = page.last() else { break };
            cursor = Some(AuditCursor::of(last, "node-b"));
            paged.extend(page.into_iter().map(|e| (e.node, e.seq, e.at)));
        }
        assert_eq!(paged, whole);
    }
    // `after` names a local entry's place in the merged order.
    assert_eq!(query(&b, AuditQuery { after: 1, ..Default::default() }), all[2..].to_vec());
    let c = AuditCursor { at: 1_010, node: "node-a".into(), seq: 2 };
    assert_eq!(AuditCursor::parse(&c.to_string()), Some(c));
    assert_eq!(AuditCursor::parse("5.3.a.b"), Some(AuditCursor { at: 5, seq: 3, node: "a.b".into() }));
    assert_eq!(AuditCursor::parse("x"), None);
    // What would go on record as written is refused.
    assert_eq!(AuditCursor::parse("5.3.a\nforged"), None);
    assert_eq!(AuditCursor::parse("5.3.a\u{202E}b"), None);
    assert_eq!(AuditCursor::parse(&format!("5.3.{}", "n".repeat(65))), None);
    // Without other chains the local query is the single node's.
    let (single, clock) = store(1);
    uses(&single, &clock, &[event("d1", Some(1)), event("d1", Some(2))]);
    let q = AuditQuery { after: 1, limit: 10, ..Default::default() };
    assert_eq!(single.audit_query(&q).unwrap().iter().map(|e| (e.node.clone(), e.seq)).collect::<Vec<_>>(), vec![(None, 2)]);
}

#[test]
fn a_store_seeded_from_a_peer_keeps_the_peer_chain_and_ships_after_it() {
    let (a, _) = two_nodes();
    assert_eq!(a.audit_shipped("node-a").unwrap(), Shipped { node: "node-a".into(), anchor: ChainHead::default(), seq: 0 });
    a.record_audit_shipped(&Shipped { node: "node-a".into(), anchor: ChainHead::default(), seq: 3 }).unwrap();
    assert_eq!(a.audit_shipped("node-a").unwrap().seq, 3);
    // The same store under another name: a copy of node A's.
    let head = a.audit_head().unwrap();
    let s = a.audit_shipped("node-c").unwrap();
    assert_eq!(s, Shipped { node: "node-c".into(), anchor: head, seq: 5 });
    assert_eq!(a.audit_shipped("node-c").unwrap(), s, "the anchor stays");
    let chains = a.remote_chains().unwrap();
    assert_eq!(chains, vec![("node-a".to_owned(), RemoteChain { anchor: ChainHead::default(), head })]);
    assert!(a.audit_verify_remote().unwrap()[0].1.ok);
    // Node A's messages still in the log are duplicates here now.
    assert_eq!(append(&a, &ship(&a, 4, 5)).unwrap(), Appended { appended: 0, duplicates: 2 });
    assert!(a.audit_verify().unwrap().ok);
}

/// The index check covers other nodes' chains too: their keys, under the
/// node's prefix, exactly as their entries call for.
#[test]
fn the_index_check_covers_other_nodes_chains() {
    let (a, b) = two_nodes();
    append(&b, &ship(&a, 1, 5)).unwrap();
    let whole = b.audit_index_check().unwrap();
    assert!(whole.ok, "{whole:?}");
    let local_only = {
        let (_, c) = two_nodes();
        c.audit_index_check().unwrap().keys
    };
    assert!(whole.keys > local_only, "{} against {local_only}", whole.keys);
    // One of node A's subject keys gone.
    let prefix = [index_prefix("node-a").as_slice(), b"k"].concat();
    let end = prefix_end(&prefix);
    let (k, v) = b.engine().scan(Cf::AuditIndex, &prefix, end.as_deref(), false).unwrap().next().expect("a subject key of node-a").unwrap();
    let mut wb = WriteBatch::new();
    wb.delete(Cf::AuditIndex, k.to_vec());
    b.engine().write(wb, Durability::Sync).unwrap();
    let check = b.audit_index_check().unwrap();
    assert!(!check.ok);
    assert!(check.problem.as_deref().is_some_and(|p| p.starts_with("node node-a's entry") && p.ends_with("lacks its index key (k)")), "{check:?}");
    // And one left behind with no entry.
    let mut wb = WriteBatch::new();
    wb.put(Cf::AuditIndex, k.to_vec(), v.to_vec());
    wb.put(Cf::AuditIndex, [index_prefix("node-a").as_slice(), b"d-stale"].concat(), Vec::new());
    b.engine().write(wb, Durability::Sync).unwrap();
    let check = b.audit_index_check().unwrap();
    assert!(check.problem.as_deref().is_some_and(|p| p.contains("of node node-a's chain")), "{check:?}");
}

/// The `u/` usage counters of a store (its own uses), by key.
fn own_counters(s: &Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    let end = prefix_end(b"u/");
    s.engine().scan(Cf::Gov, b"u/", end.as_deref(), false).unwrap().map(|i| i.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap()).collect()
}

/// Node A as an older backup left it (its first `n` uses), and as it went
/// on: both made from the same uses at the same times.
fn restored_and_lost(n: usize) -> (Store, Store, Arc<ManualClock>) {
    let events: Vec<AuditEvent> = (1..=7).map(|i| event(if i % 2 == 0 { "d2" } else { "d1" }, Some(i))).collect();
    let (lost, cl) = store(1_000);
    uses(&lost, &cl, &events);
    let (restored, cr) = store(1_000);
    uses(&restored, &cr, &events[..n]);
    (restored, lost, cr)
}

/// A store restored from an older backup of this node takes back, from the
/// log, what the node answered and shipped after the backup: the same
/// entries at the same numbers, its index keys, counters and shipping
/// record, so its next use follows them instead of taking their numbers.
#[test]
fn a_restored_store_takes_back_its_shipped_entries() {
    let (restored, lost, clock) = restored_and_lost(3);
    let log = [ship(&lost, 1, 4), ship(&lost, 5, 7)];
    assert_eq!(restored.audit_head().unwrap().seq, 3);
    assert_eq!(restored.take_back_shipped("node-a", &log[0]).unwrap(), 1, "entries 1 to 3 are held, 4 is new");
    assert_eq!(restored.take_back_shipped("node-a", &log[1]).unwrap(), 3);
    assert_eq!(restored.take_back_shipped("node-a", &log[1]).unwrap(), 0, "taken back once");
    assert_eq!(restored.audit_head().unwrap(), lost.audit_head().unwrap());
    assert!(restored.audit_verify().unwrap().ok);
    let index = restored.audit_index_check().unwrap();
    assert!(index.ok, "{index:?}");
    assert_eq!(restored.audit_shipped("node-a").unwrap().seq, 7, "in the log already: not shipped again");
    assert_eq!(own_counters(&restored), own_counters(&lost), "counted as when they were answered");
    let q = |s: &Store| query(s, AuditQuery { key: Some(key(6)), limit: 10, ..Default::default() });
    assert_eq!(q(&restored), q(&lost), "found by subject");
    assert_eq!(q(&restored).len(), 1);
    // The next use follows them.
    uses(&restored, &clock, &[event("d1", Some(9))]);
    assert_eq!(restored.audit_head().unwrap().seq, 8);
    assert!(restored.audit_verify().unwrap().ok);
}

/// A log whose chain under this name is not this store's is refused, and
/// nothing of it is written: a store that answered uses of its own after
/// the backup, or one started under a name another store shipped under.
#[test]
fn another_chain_under_this_name_is_refused() {
    let (restored, lost, clock) = restored_and_lost(3);
    uses(&restored, &clock, &[event("d3", Some(1))]);
    let before = (restored.audit_head().unwrap(), own_counters(&restored));
    let e = restored.take_back_shipped("node-a", &ship(&lost, 1, 7)).unwrap_err().to_string();
    assert!(e.contains("its entry 4 differs from this store's") && e.contains("new node name"), "{e}");
    assert_eq!((restored.audit_head().unwrap(), own_counters(&restored)), before, "nothing written");
    // A store that numbered more uses of its own than the log holds of
    // the node: the log's last message is at or below its head, and its
    // entries still differ.
    uses(&restored, &clock, &(0..4).map(|_| event("d3", Some(2))).collect::<Vec<_>>());
    assert!(restored.audit_head().unwrap().seq > 7);
    let e = restored.take_back_shipped("node-a", &ship(&lost, 5, 7)).unwrap_err().to_string();
    assert!(e.contains("its entry 5 differs from this store's"), "{e}");
    // Past the head but not linking to it.
    let (other, _) = store(2_000);
    uses(&other, &ManualClock::new(2_000), &(1..=5).map(|i| event("d9", Some(i))).collect::<Vec<_>>());
    let e = other.take_back_shipped("node-a", &ship(&lost, 6, 7)).unwrap_err().to_string();
    assert!(e.contains("does not link"), "{e}");
    let e = other.take_back_shipped("node-a", &ship(&lost, 7, 7)).unwrap_err().to_string();
    assert!(e.contains("entry 6 is missing"), "{e}");
    let e = other.take_back_shipped("node-b", &ship(&lost, 6, 7)).unwrap_err().to_string();
    assert!(e.contains("holds entries of node node-a"), "{e}");
}

/// Another node's chain held here loses its old entries like the local
/// one, is checked from where they stopped, and goes on growing.
#[test]
fn another_nodes_chain_is_cut_and_still_grows() {
    let (a, b) = two_nodes();
    append(&b, &ship(&a, 1, 3)).unwrap();
    let (p, stopped) = crate::audit::retention::tests::cut(&b, 1_025);
    assert!(stopped.is_empty());
    assert_eq!((p.uses, p.anchor.seq), (2, 2));
    assert_eq!(p.remote, vec![("node-a".to_owned(), 3, ChainHead { seq: 3, hash: a.audit_hash_at(3).unwrap().unwrap() })]);
    append(&b, &ship(&a, 4, 5)).unwrap();
    let checks = b.audit_checks().unwrap();
    assert_eq!(checks.first_problem(), None);
    assert_eq!((checks.remote[0].1.entries, checks.remote[0].1.starts_after), (2, 3));
    // Their index keys went with them: node A's key 1 has no use left here.
    let q = AuditQuery { key: Some(key(1)), limit: 10, ..Default::default() };
    assert!(b.audit_query(&q).unwrap().is_empty());
    let q = AuditQuery { key: Some(key(5)), limit: 10, ..Default::default() };
    assert_eq!(b.audit_query(&q).unwrap().len(), 1);
    // A page after a local entry since removed goes on with everything kept.
    let q = AuditQuery { after: 1, limit: 10, node: Some("node-b".into()), ..Default::default() };
    let seqs: Vec<(Option<String>, u64)> = b.audit_query(&q).unwrap().into_iter().map(|e| (e.node, e.seq)).collect();
    assert_eq!(seqs, vec![(None, 3), (Some("node-a".into()), 4), (Some("node-a".into()), 5)]);
}

/// A node gone quiet keeps its copy's cut named: each entry naming cuts
/// restates every chain's, so cutting away the entry that first named it
/// does not leave the copy's anchor unnamed.
#[test]
fn a_quiet_nodes_cut_stays_named_while_this_nodes_chain_is_cut() {
    let (a, ca) = store(1_000);
    let (b, cb) = store(1_005);
    uses(&a, &ca, &[event("d1", Some(1)), event("d1", Some(2))]);
    uses(&b, &cb, &[event("d3", Some(3))]);
    append(&b, &ship(&a, 1, 2)).unwrap();
    let cut = crate::audit::retention::tests::cut;
    // Node A's copy goes whole, with this node's first use; entry 2 names both.
    let (p, _) = cut(&b, 1_012);
    assert_eq!((p.uses, p.remote.len()), (1, 1));
    cb.advance(1_000);
    uses(&b, &cb, &[event("d3", Some(4))]);
    // Then entry 2 itself goes; entry 4 names node A's cut again.
    let (p, _) = cut(&b, 2_000);
    assert_eq!((p.uses, p.anchor.seq, p.remote.len()), (1, 2, 0));
    let checks = b.audit_checks().unwrap();
    assert_eq!(checks.first_problem(), None);
    assert_eq!((checks.remote[0].1.entries, checks.remote[0].1.starts_after), (0, 2));
}
