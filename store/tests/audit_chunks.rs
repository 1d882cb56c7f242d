//! Uses stored as chunks (one audit entry a run of one department's uses
//! in a commit, one sequence number a use): read back use by use through
//! every index and page boundary, checked link by link, found when
//! tampered with, shipped to another node and counted there once a use.

mod common;

use basedata_store::audit::chunk::MAX_CHUNK_LINES;
use basedata_store::audit::remote::RemoteHeads;
use basedata_store::audit::{AuditEntry, AuditQuery, ChainHead, Stored, StoredEntry};
use basedata_store::clock::ManualClock;
use basedata_store::usage::{day_of, totals, Kind, Owner, RemoteUsage};
use basedata_store::{Action, AuditEvent, Cf, Durability, Store, WriteBatch};
use common::*;
use std::sync::Arc;

const AT: i64 = 1_700_000_000_000_000;

/// Batch line `i` of department `dept`: every seventh refused, every
/// fifth a mismatch, subjects repeating every 300 lines.
fn line(dept: &str, i: u32) -> AuditEvent {
    let denied = i % 7 == 3;
    AuditEvent {
        department: dept.into(),
        // Operators, purposes and their provenance differ use by use.
        operator: (i % 4 != 0).then(|| format!("op-{}", i % 3)),
        operator_verified: i % 2 == 0,
        purpose: if i % 11 == 0 { "核对".into() } else { "social_assistance; 低保资格复核".into() },
        purpose_code: (i % 11 != 0).then(|| "social_assistance".into()),
        action: if denied { Action::Denied } else { Action::BatchVerify },
        key: Some(person(i % 300)),
        datasets: vec!["hukou".into()],
        fields: if denied { vec![] } else { vec!["name".into(), "birth_date".into()] },
        outcome: if denied { "forbidden".into() } else if i % 5 == 0 { "mismatch".into() } else { "match".into() },
        key_mapped: false,
        pid: None,
        rejected_lines: 0,
        grants: Vec::new(),
    }
}

fn single(dept: &str, i: u32) -> AuditEvent {
    AuditEvent { action: Action::Verify, ..line(dept, i) }
}

/// The events of the store below, in sequence order.
fn events() -> Vec<AuditEvent> {
    let mut out: Vec<AuditEvent> = (0..4000).map(|i| line("shebao", i)).collect();
    // Another department's lines in between, and single uses.
    out.splice(1000..1000, (0..40).map(|i| line("minzheng", i)));
    out.insert(1500, single("shebao", 1));
    out.push(single("minzheng", 2));
    out
}

/// A store holding [`events`], written in two commits.
fn store() -> (Store, Vec<AuditEvent>) {
    let s = mem_store(Arc::new(ManualClock::new(AT)));
    let ev = events();
    s.commit(&[], &ev[..1200], Durability::Sync).unwrap();
    s.commit(&[], &ev[1200..], Durability::Sync).unwrap();
    (s, ev)
}

fn all(s: &Store, q: AuditQuery) -> Vec<AuditEntry> {
    s.audit_query(&AuditQuery { limit: 100_000, ..q }).unwrap()
}

/// Reads `q` page by page (`after` = the last seq of the page before).
fn paged(s: &Store, q: AuditQuery, limit: usize) -> Vec<AuditEntry> {
    let mut out: Vec<AuditEntry> = Vec::new();
    loop {
        let after = out.last().map_or(0, |e| e.seq);
        let page = s.audit_query(&AuditQuery { after, limit, ..q.clone() }).unwrap();
        if page.is_empty() {
            return out;
        }
        assert!(page.len() <= limit);
        out.extend(page);
    }
}

fn same_use(e: &AuditEntry, ev: &AuditEvent) {
    assert_eq!(e.department, ev.department, "seq {}", e.seq);
    assert_eq!(e.action, ev.action, "seq {}", e.seq);
    assert_eq!(e.key, ev.key, "seq {}", e.seq);
    assert_eq!(e.datasets, ev.datasets, "seq {}", e.seq);
    assert_eq!(e.fields, ev.fields, "seq {}", e.seq);
    assert_eq!(e.outcome, ev.outcome, "seq {}", e.seq);
    assert_eq!(e.operator, ev.operator, "seq {}", e.seq);
    assert_eq!(e.purpose, ev.purpose, "seq {}", e.seq);
    assert_eq!(e.purpose_code, ev.purpose_code, "seq {}", e.seq);
    assert_eq!(e.operator_verified, ev.operator_verified, "seq {}", e.seq);
}

#[test]
fn runs_of_one_departments_uses_are_stored_as_chunks_with_a_number_a_use() {
    let (s, ev) = store();
    let stored: Vec<(u64, Stored)> = s
        .engine()
        .scan(Cf::Audit, &[], Some(&[0xFF]), false)
        .unwrap()
        .map(|i| {
            let (k, v) = i.unwrap();
            (u64::from_be_bytes(k[..8].try_into().unwrap()), Stored::decode(&v).unwrap())
        })
        .collect();
    let spans: Vec<(u64, u64)> = stored.iter().map(|(first, e)| (*first, e.span())).collect();
    // First commit: 1000 shebao uses, 40 minzheng, 160 shebao; second:
    // 2841 shebao uses (batch lines and a single verification), cut at
    // MAX_CHUNK_LINES, then minzheng's single use, stored alone.
    assert_eq!(MAX_CHUNK_LINES, 2048);
    assert_eq!(spans, vec![(1, 1000), (1001, 40), (1041, 160), (1201, 2048), (3249, 793), (4042, 1)]);
    let total: u64 = spans.iter().map(|s| s.1).sum();
    assert_eq!(total, ev.len() as u64);
    assert!(spans.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0), "consecutive: {spans:?}");
    assert_eq!(stored.iter().filter(|(_, e)| matches!(e, Stored::Chunk(_))).count(), 5);
    assert!(matches!(stored[5].1, Stored::One(_)));
    let check = s.audit_verify().unwrap();
    assert!(check.ok, "{check:?}");
    assert_eq!(check.entries, ev.len() as u64);
    assert_eq!(s.audit_head().unwrap().seq, ev.len() as u64);
}

#[test]
fn every_line_reads_back_as_its_own_entry_through_every_index() {
    let (s, ev) = store();
    let every = all(&s, AuditQuery::default());
    assert_eq!(every.len(), ev.len());
    for (i, (e, want)) in every.iter().zip(&ev).enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        assert_eq!(e.at, AT);
        same_use(e, want);
    }
    // Paged by any size, across chunk boundaries, the same entries.
    for limit in [1, 7, 999, 1000, 1001, 2048] {
        let seqs: Vec<u64> = paged(&s, AuditQuery::default(), limit).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=ev.len() as u64).collect::<Vec<_>>(), "limit {limit}");
    }
    // By department, paged.
    for dept in ["shebao", "minzheng"] {
        let want: Vec<u64> = ev.iter().enumerate().filter(|(_, e)| e.department == dept).map(|(i, _)| i as u64 + 1).collect();
        for limit in [13, 500] {
            let got: Vec<u64> = paged(&s, AuditQuery { department: Some(dept.into()), ..Default::default() }, limit).iter().map(|e| e.seq).collect();
            assert_eq!(got, want, "{dept}, limit {limit}");
        }
    }
    // By subject: every line of that person, in a chunk or not.
    for p in [0u32, 1, 2, 299] {
        let want: Vec<u64> = ev.iter().enumerate().filter(|(_, e)| e.key == Some(person(p))).map(|(i, _)| i as u64 + 1).collect();
        assert!(want.len() >= 8, "person {p}: {want:?}");
        let got = paged(&s, AuditQuery { key: Some(person(p)), ..Default::default() }, 3);
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), want, "person {p}");
        for e in &got {
            same_use(e, &ev[e.seq as usize - 1]);
        }
    }
    // By time: every entry has the same time here; a window after it is empty.
    assert_eq!(all(&s, AuditQuery { from: Some(AT), to: Some(AT + 1), ..Default::default() }).len(), ev.len());
    assert!(all(&s, AuditQuery { from: Some(AT + 1), ..Default::default() }).is_empty());
    assert!(all(&s, AuditQuery { to: Some(AT), ..Default::default() }).is_empty());
}

#[test]
fn a_tampered_chunk_is_found() {
    let (s, _) = store();
    let raw = s.engine().clone();
    let bytes = raw.get(Cf::Audit, &1001u64.to_be_bytes()).unwrap().unwrap();
    let Stored::Chunk(mut c) = Stored::decode(&bytes).unwrap() else { panic!("entry 1001 is a chunk") };
    // A mismatch turned into a match, the hash left alone.
    let i = c.lines.iter().position(|l| c.names[l.outcome as usize] == "mismatch").unwrap();
    let m = c.names.iter().position(|n| n == "match").unwrap() as u32;
    c.lines[i].outcome = m;
    let mut wb = WriteBatch::new();
    wb.put(Cf::Audit, 1001u64.to_be_bytes().to_vec(), c.encode());
    raw.write(wb, Durability::Sync).unwrap();
    let check = s.audit_verify().unwrap();
    assert!(!check.ok);
    assert_eq!(check.problem.as_deref(), Some("entry 1001 does not match its hash"));
    assert_eq!(check.entries, 1000);
    // A chunk removed leaves a gap of its lines.
    let mut wb = WriteBatch::new();
    wb.delete(Cf::Audit, 1001u64.to_be_bytes().to_vec());
    raw.write(wb, Durability::Sync).unwrap();
    let check = s.audit_verify().unwrap();
    assert_eq!(check.problem.as_deref(), Some("entry 1001 is missing (next is 1041)"));
}

#[test]
fn a_chunk_is_not_read_as_one_entry() {
    let (s, _) = store();
    let bytes = s.engine().get(Cf::Audit, &1u64.to_be_bytes()).unwrap().unwrap();
    assert!(StoredEntry::decode(&bytes).is_err());
}

#[test]
fn chunks_ship_to_another_node_and_count_once_a_line_there() {
    let (a, ev) = store();
    let b = mem_store(Arc::new(ManualClock::new(AT)));
    let mut usage = RemoteUsage::default();
    let mut heads = RemoteHeads::new();
    let head = a.audit_head().unwrap().seq;
    let mut from = 1;
    let mut messages = 0;
    while from <= head {
        // Small messages, and each sent twice: repeats are skipped.
        let batch = a.audit_ship_batch("node-a", ChainHead::default(), from, head, 2, 1 << 20).unwrap();
        assert!(!batch.entries.is_empty());
        for _ in 0..2 {
            let mut wb = WriteBatch::new();
            let engine = b.engine().clone();
            let mut count = |uses: &[StoredEntry], wb: &mut WriteBatch| usage.count(&*engine, uses, wb);
            b.remote_append(&mut heads, Some(&mut count), &batch, &mut wb).unwrap();
            b.engine().write(wb, Durability::Sync).unwrap();
        }
        from = batch.last() + 1;
        messages += 1;
    }
    assert_eq!(messages, 3, "two entries a message");
    let checks = b.audit_verify_remote().unwrap();
    assert_eq!(checks.len(), 1);
    assert!(checks[0].1.ok, "{checks:?}");
    assert_eq!(checks[0].1.entries, ev.len() as u64);
    // The other node's lines, by subject, with their keys and numbers.
    let q = AuditQuery { key: Some(person(7)), limit: 1000, ..Default::default() };
    let got = b.audit_query(&q).unwrap();
    let want: Vec<u64> = ev.iter().enumerate().filter(|(_, e)| e.key == Some(person(7))).map(|(i, _)| i as u64 + 1).collect();
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), want);
    for e in &got {
        assert_eq!(e.node.as_deref(), Some("node-a"));
        same_use(e, &ev[e.seq as usize - 1]);
    }
    // Counted once a line, each by its action.
    let day = day_of(AT);
    let t = totals(&**b.engine(), Owner::Department("shebao"), day, day + 1).unwrap();
    let lines = |dept: &str, action: Action| ev.iter().filter(|e| e.department == dept && e.action == action).count() as u64;
    assert_eq!(t.get(&Kind::Action(Action::BatchVerify)).copied(), Some(lines("shebao", Action::BatchVerify)));
    assert_eq!(t.get(&Kind::Action(Action::Denied)).copied(), Some(lines("shebao", Action::Denied)));
    assert_eq!(t.get(&Kind::Action(Action::Verify)).copied(), Some(1));
    // The same figures as node A's own counters.
    let own = totals(&**a.engine(), Owner::Department("shebao"), day, day + 1).unwrap();
    for k in [Kind::Action(Action::BatchVerify), Kind::Action(Action::Denied), Kind::Action(Action::Verify)] {
        assert_eq!(t.get(&k), own.get(&k), "{k:?}");
    }
}

#[test]
fn the_index_check_finds_a_missing_a_misdirected_and_a_stray_key() {
    let (s, ev) = store();
    let check = s.audit_index_check().unwrap();
    assert!(check.ok, "{check:?}");
    // A subject key a use, a department and a time key an entry.
    assert_eq!(check.keys, ev.len() as u64 + 2 * 6);
    let raw = s.engine().clone();
    let subject_key = |seq: u64| {
        let pid = s.pseudonym(&person(((seq - 1) % 300) as u32));
        [&[b'k'][..], &pid.0, &seq.to_be_bytes()].concat()
    };
    let write = |put: Option<(Vec<u8>, Vec<u8>)>, delete: Option<Vec<u8>>| {
        let mut wb = WriteBatch::new();
        if let Some((k, v)) = put {
            wb.put(Cf::AuditIndex, k, v);
        }
        if let Some(k) = delete {
            wb.delete(Cf::AuditIndex, k);
        }
        raw.write(wb, Durability::Sync).unwrap();
    };
    // Use 5 is line 5 of the chunk stored at 1 (person 4).
    let k5 = subject_key(5);
    assert_eq!(raw.get(Cf::AuditIndex, &k5).unwrap(), Some(1u64.to_be_bytes().to_vec()));
    write(None, Some(k5.clone()));
    assert_eq!(s.audit_index_check().unwrap().problem.as_deref(), Some("entry 1 lacks its index key (k)"));
    write(Some((k5.clone(), 2u64.to_be_bytes().to_vec())), None);
    assert_eq!(s.audit_index_check().unwrap().problem.as_deref(), Some("the index key of entry 1 (k) points elsewhere"));
    write(Some((k5, 1u64.to_be_bytes().to_vec())), None);
    assert!(s.audit_index_check().unwrap().ok);
    write(Some((subject_key(4043), Vec::new())), None);
    let check = s.audit_index_check().unwrap();
    assert_eq!(check.problem, Some(format!("the index holds {} keys where the entries call for {}", check.keys, check.keys - 1)));
}

#[test]
fn a_chunk_without_uses_is_unreadable_not_a_gap_in_numbers() {
    let (s, _) = store();
    let raw = s.engine().clone();
    let Stored::Chunk(mut c) = Stored::decode(&raw.get(Cf::Audit, &1001u64.to_be_bytes()).unwrap().unwrap()).unwrap() else {
        panic!("entry 1001 is a chunk")
    };
    c.lines.clear();
    assert!(Stored::decode(&c.encode()).is_err());
    let mut wb = WriteBatch::new();
    wb.put(Cf::Audit, 1001u64.to_be_bytes().to_vec(), c.encode());
    raw.write(wb, Durability::Sync).unwrap();
    let check = s.audit_verify().unwrap();
    assert!(check.problem.as_deref().unwrap_or("").starts_with("entry 1001 is unreadable"), "{check:?}");
    assert!(!s.audit_index_check().unwrap().ok);
}

#[test]
fn a_subject_key_pointing_at_another_subjects_use_shows_nothing() {
    let (s, ev) = store();
    let by = |p: u32| -> Vec<u64> {
        let q = AuditQuery { key: Some(person(p)), limit: 10_000, ..Default::default() };
        s.audit_query(&q).unwrap().iter().map(|e| e.seq).collect()
    };
    let before = by(77);
    // Use 1005 is person 4's (line 4 of minzheng's chunk stored at 1001).
    assert_eq!(ev[1004].key, Some(person(4)));
    let pid = s.pseudonym(&person(77));
    let mut wb = WriteBatch::new();
    wb.put(Cf::AuditIndex, [&[b'k'][..], &pid.0, &1005u64.to_be_bytes()].concat(), 1001u64.to_be_bytes().to_vec());
    s.engine().write(wb, Durability::Sync).unwrap();
    assert_eq!(by(77), before);
    assert!(!s.audit_index_check().unwrap().ok);
}
