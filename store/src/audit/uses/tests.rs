//! Tests of records of uses: sealed payloads, and (RocksDB) uses entered
//! behind their answers, after a crash and only once.

use super::*;
use crate::pseudo::{Sealing, Secret};

pub(super) fn event(key: Option<SubjectKey>) -> AuditEvent {
    AuditEvent {
        department: "shebao".into(),
        operator: Some("op-7".into()),
        operator_verified: true,
        purpose: "benefit check".into(),
        purpose_code: Some("benefit".into()),
        action: Action::Verify,
        key,
        datasets: vec!["hukou".into()],
        fields: vec!["name".into(), "birth_date".into()],
        outcome: "match".into(),
        key_mapped: true,
        pid: None,
        rejected_lines: 0,
        grants: Vec::new(),
    }
}

#[test]
fn events_come_back_whole_and_keys_are_not_in_the_clear() {
    let sealer = Sealer::new(&Secret::from_bytes([7; 32]), Sealing::Uses);
    let key = SubjectKey::parse(crate::Subject::Person, "11010519491231002X").unwrap();
    let mut other = event(Some(key.clone()));
    other.department = "gongan".into();
    other.operator = None;
    other.purpose_code = None;
    other.fields = vec![];
    other.datasets = vec!["hukou".into(), "death".into()];
    other.outcome = "not_found".into();
    other.action = Action::BatchVerify;
    other.key_mapped = false;
    other.rejected_lines = 3;
    other.grants = vec!["grant-1".into(), "grant-2".into()];
    let events = vec![event(Some(key.clone())), event(None), other, event(Some(key.clone()))];
    let uses = Uses::of_events(&events, fake_pid);
    assert_eq!(uses.events(), events, "the compact form holds every member");
    let payload = seal(&sealer, &uses).unwrap();
    assert!(!payload.windows(18).any(|w| w == key.as_bytes()), "the key is sealed");
    let back = open(&sealer, &payload, fake_pid).unwrap();
    assert_eq!(back, uses);
    assert_eq!(back.events(), events);
    let other = Sealer::new(&Secret::from_bytes([8; 32]), Sealing::Uses);
    assert!(open(&other, &payload, fake_pid).is_err(), "another secret does not open it");
    let jobs = Sealer::new(&Secret::from_bytes([7; 32]), Sealing::Jobs);
    assert!(open(&jobs, &payload, fake_pid).is_err(), "another use's key does not open it");
}

/// Records sealed before rows named grants (format marker 1) open as
/// uses that name none.
#[test]
fn records_of_the_first_format_open_without_grants() {
    let sealer = Sealer::new(&Secret::from_bytes([7; 32]), Sealing::Uses);
    let key = SubjectKey::parse(crate::Subject::Person, "11010519491231002X").unwrap();
    let events = vec![event(Some(key)), event(None)];
    let uses = Uses::of_events(&events, fake_pid);
    let rows: Vec<RowV1<&[u8], &[u32]>> = uses
        .rows
        .iter()
        .map(|r| RowV1 {
            department: r.by.department,
            operator: r.by.operator,
            operator_verified: r.by.operator_verified,
            purpose: r.by.purpose,
            purpose_code: r.by.purpose_code,
            action: r.action,
            key: r.subject.as_ref().map(|(k, _)| (k.doc_type().as_u8(), k.as_bytes())),
            datasets: uses.ids(r.datasets),
            fields: uses.ids(r.fields),
            outcome: r.outcome,
            key_mapped: r.key_mapped,
            rejected_lines: r.rejected_lines,
        })
        .collect();
    let payload = sealer.seal(AD, &crate::codec::encode(&(&uses.names, &rows))).unwrap();
    let back = open(&sealer, &payload, fake_pid).unwrap();
    assert_eq!(back.events(), events);
    assert!(back.rows().iter().all(|r| r.grants.is_none()));
    // A marker no release wrote is refused, not guessed at.
    let mut unknown = crate::codec::encode(&(&uses.names, &rows));
    unknown[0] = 9;
    assert!(open(&sealer, &sealer.seal(AD, &unknown).unwrap(), fake_pid).is_err());
}

/// A stand-in pseudonym: a function of the key, as the store's is.
fn fake_pid(k: &SubjectKey) -> Pid {
    let mut p = [0u8; crate::pseudo::PID_LEN];
    for (i, b) in k.as_bytes().iter().enumerate() {
        p[i % p.len()] ^= b.rotate_left(i as u32);
    }
    Pid(p)
}

/// Strings and lists are stored once however many uses name them, and
/// a list is told apart from its prefixes and extensions.
#[test]
fn strings_and_lists_are_interned() {
    let key = SubjectKey::parse(crate::Subject::Person, "11010519491231002X").unwrap();
    let mut events: Vec<AuditEvent> = (0..1000).map(|_| event(Some(key))).collect();
    events[10].fields = vec!["name".into()];
    events[11].fields = vec!["name".into(), "birth_date".into(), "gender".into()];
    events[12].fields = vec![];
    events[13].outcome = "mismatch".into();
    let uses = Uses::of_events(&events, fake_pid);
    assert_eq!(uses.names().len(), 10, "{:?}", uses.names());
    assert_eq!(uses.lists.len(), 5, "hukou, the usual fields, and three other lists");
    let rows = uses.rows();
    assert_eq!(rows[0], rows[999]);
    assert_eq!(rows[9].fields, rows[14].fields);
    let distinct: std::collections::HashSet<u32> = rows[10..13].iter().map(|r| r.fields).chain([rows[0].fields]).collect();
    assert_eq!(distinct.len(), 4);
    assert_eq!(uses.events(), events);
}

/// Lines that each claim another set of fields make lists enough, not a
/// search that grows with them: each is compared with the last few only,
/// and every use still reads back as it was made.
#[test]
fn many_distinct_lists_stay_correct() {
    let fields: Vec<String> = (0..12).map(|i| format!("f{i}")).collect();
    let events: Vec<AuditEvent> = (0..3000u32)
        .map(|n| {
            let mut e = event(None);
            e.fields = fields.iter().enumerate().filter(|(i, _)| n >> i & 1 == 1).map(|(_, f)| f.clone()).collect();
            e
        })
        .collect();
    let uses = Uses::of_events(&events, fake_pid);
    assert!(uses.lists.len() > 2048);
    assert_eq!(uses.events(), events);
    let sealer = Sealer::new(&Secret::from_bytes([7; 32]), Sealing::Uses);
    assert_eq!(open(&sealer, &seal(&sealer, &uses).unwrap(), fake_pid).unwrap().events(), events);
}

#[cfg(feature = "rocks")]
mod journal {
    use super::event;
    use crate::audit::AuditQuery;
    use crate::clock::ManualClock;
    use crate::commit::Committer;
    use crate::engine::rocks::RocksEngine;
    use crate::engine::{position_of, Engine, USES_INDEXED};
    use crate::keys::{PersonKey, SubjectKey};
    use crate::{Catalog, Cf, Secret, Store};
    use std::sync::Arc;

    fn open(dir: &std::path::Path) -> (Arc<RocksEngine>, Arc<Store>) {
        let engine = Arc::new(RocksEngine::open(dir, &Default::default()).unwrap());
        let store = Store::open(engine.clone(), &Secret::from_bytes([9; 32]), Arc::new(Catalog::builtin()), Arc::new(ManualClock::new(5_000)));
        (engine, Arc::new(store.unwrap()))
    }

    fn key(i: u16) -> SubjectKey {
        let d = time::Date::from_calendar_date(1975, time::Month::March, 9).unwrap();
        SubjectKey::Person(PersonKey::from_parts("110105", d, i).unwrap())
    }

    /// `events` as a record of uses of `store`'s.
    fn uses(store: &Store, events: &[crate::AuditEvent]) -> super::Uses {
        super::Uses::of_events(events, |k| store.pseudonym(k))
    }

    fn uses_of(store: &Store, i: u16) -> usize {
        store.audit_query(&AuditQuery { key: Some(key(i)), limit: 100, ..AuditQuery::default() }).unwrap().len()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    #[test]
    fn recorded_uses_are_durable_at_once_and_entered_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, store) = open(dir.path());
        let committer = Committer::start(store.clone(), 64);
        assert!(committer.journals_uses());
        let rt = rt();
        let before = engine.journal().durable_lsn();
        let rx = rt.block_on(committer.append_uses(uses(&store, &[event(Some(key(1)))]))).unwrap();
        rt.block_on(rx).unwrap().unwrap();
        // Answered once the journal had it on disk.
        assert!(engine.journal().durable_lsn() > before);
        let receivers: Vec<_> = (2..6).map(|i| rt.block_on(committer.append_uses(uses(&store, &[event(Some(key(i))), event(Some(key(i)))]))).unwrap()).collect();
        for rx in receivers {
            rt.block_on(rx).unwrap().unwrap();
        }
        assert!(rt.block_on(committer.settle_uses()));
        // The entering write is synced before an auditor reads it.
        assert_eq!(engine.journal().durable_lsn(), engine.journal().last_lsn());
        for i in 1..6 {
            assert_eq!(uses_of(&store, i), if i == 1 { 1 } else { 2 }, "subject {i}");
        }
        assert!(store.audit_verify().unwrap().ok);
        let through = position_of("test", engine.get(Cf::Meta, USES_INDEXED).unwrap().as_deref()).unwrap();
        assert!(through >= 5, "the trail's position {through}");
    }

    #[test]
    fn uses_the_trail_lacked_at_a_crash_are_entered_at_open_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (engine, store) = open(dir.path());
            let committer = Committer::start(store.clone(), 64);
            let rx = rt().block_on(committer.append_uses(uses(&store, &[event(Some(key(1)))]))).unwrap();
            rt().block_on(rx).unwrap().unwrap();
            assert!(rt().block_on(committer.settle_uses()));
            drop(committer);
            // Recorded, durable, and never entered: as if the process died
            // between an answer and the writer's next group. Write batches
            // follow them, so the tables' position passes them.
            let log = engine.use_log().unwrap();
            let mut last = 0;
            for i in 2..5 {
                let payload = store.seal_uses(&uses(&store, &[event(Some(key(i)))])).unwrap();
                last = log.append_uses(&payload, &mut |_| ()).unwrap();
                let mut b = crate::WriteBatch::new();
                b.put(Cf::Meta, format!("after-{i}").as_bytes(), vec![1]);
                engine.write(b, crate::Durability::Sync).unwrap();
            }
            log.sync_to(last).unwrap();
            assert_eq!(uses_of(&store, 2), 0);
        }
        {
            // The engine alone (an offline backup) sees what awaits entering.
            let engine = RocksEngine::open(dir.path(), &Default::default()).unwrap();
            assert_eq!(engine.use_log().unwrap().unentered(), 3);
        }
        let (engine, store) = open(dir.path());
        assert_eq!(engine.use_log().unwrap().unentered(), 0);
        for i in 1..5 {
            assert_eq!(uses_of(&store, i), 1, "subject {i}");
        }
        assert!(store.audit_verify().unwrap().ok);
        assert!(store.audit_index_check().unwrap().ok);
        engine.flush().unwrap();
        assert_eq!(engine.journal().closed_segments(), 0, "entered uses are released");
        drop((engine, store));
        let (_engine, store) = open(dir.path());
        for i in 1..5 {
            assert_eq!(uses_of(&store, i), 1, "subject {i} entered twice");
        }
    }

    /// Entering uses can fail without stopping the writer (a store that
    /// refuses writes until an interrupted load is finished): the records
    /// stay queued and are entered once writes are taken again, and the
    /// trail's journal position never passes a record it lacks.
    #[test]
    fn uses_whose_entering_failed_are_entered_later_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (engine, store) = open(dir.path());
            let committer = Committer::start(store.clone(), 64);
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            store.refuse_writes(Some("an interrupted load"));
            let rx = rt.block_on(committer.append_uses(uses(&store, &[event(Some(key(1)))]))).unwrap();
            rt.block_on(rx).unwrap().unwrap();
            // Asked for at once, and refused.
            let settled = rt.block_on(async { tokio::time::timeout(std::time::Duration::from_millis(300), committer.settle_uses()).await });
            assert!(settled.is_err(), "entered while the store refuses writes");
            assert_eq!(uses_of(&store, 1), 0);
            assert!(committer.stats().failures.load(std::sync::atomic::Ordering::Relaxed) >= 1, "the entering was tried");
            // A record after the failure, entered in the same turn as the
            // failed one once writes are taken again.
            let rx = rt.block_on(committer.append_uses(uses(&store, &[event(Some(key(2)))]))).unwrap();
            rt.block_on(rx).unwrap().unwrap();
            store.refuse_writes(None);
            let settled = rt.block_on(async { tokio::time::timeout(std::time::Duration::from_secs(10), committer.settle_uses()).await });
            assert_eq!(settled, Ok(true));
            assert_eq!((uses_of(&store, 1), uses_of(&store, 2)), (1, 1));
            assert_eq!(engine.use_log().unwrap().unentered(), 0);
            assert!(store.audit_verify().unwrap().ok);
        }
        let (_engine, store) = open(dir.path());
        assert_eq!((uses_of(&store, 1), uses_of(&store, 2)), (1, 1), "entered once, not again at open");
        assert!(store.audit_index_check().unwrap().ok);
    }

    /// On a full disk (RocksDB refusing writes after a flush found no
    /// space), a verification's audited use is refused and leaves no trace,
    /// a batch's record of uses waits in the journal, and all goes on once
    /// space is back: the chain and the indexes stay whole, now and after
    /// a reopen, with no restart in between.
    #[test]
    fn uses_on_a_full_disk_are_refused_or_wait_and_go_on_once_space_is_back() {
        const FULL: &str = "IO error: No space left on device: While appending to file: /data/000012.sst: No space left on device";
        let dir = tempfile::tempdir().unwrap();
        {
            let (engine, store) = open(dir.path());
            let committer = Committer::start(store.clone(), 64);
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            let point = |i: u16| {
                let (tx, rx) = std::sync::mpsc::channel();
                committer.submit(vec![], vec![event(Some(key(i)))], Box::new(move |r| tx.send(r.map(|_| ())).unwrap())).unwrap();
                rx.recv_timeout(std::time::Duration::from_secs(10)).expect("answered")
            };
            point(1).unwrap();
            engine.refuse_applies(Some(FULL), true);
            for i in 2..4 {
                let e = point(i).unwrap_err();
                assert_eq!(e.unavailable_reason(), Some(crate::NO_SPACE), "{e:?}");
            }
            // A batch's uses are durable in the journal and answered; they
            // are entered once writes are taken again.
            let rx = rt.block_on(committer.append_uses(uses(&store, &[event(Some(key(4)))]))).unwrap();
            rt.block_on(rx).unwrap().unwrap();
            assert!(engine.journal().failed().is_none());
            engine.refuse_applies(None, false);
            point(5).unwrap();
            let settled = rt.block_on(async { tokio::time::timeout(std::time::Duration::from_secs(10), committer.settle_uses()).await });
            assert_eq!(settled, Ok(true));
            let counts: Vec<usize> = (1..6).map(|i| uses_of(&store, i)).collect();
            assert_eq!(counts, vec![1, 0, 0, 1, 1]);
            assert!(store.audit_verify().unwrap().ok);
            assert!(store.audit_index_check().unwrap().ok);
        }
        let (_engine, store) = open(dir.path());
        let counts: Vec<usize> = (1..6).map(|i| uses_of(&store, i)).collect();
        assert_eq!(counts, vec![1, 0, 0, 1, 1], "no refused use comes back at a reopen");
        assert!(store.audit_verify().unwrap().ok);
        assert!(store.audit_index_check().unwrap().ok);
    }

    /// While a backup holds appends, a record of uses waits; it goes in
    /// once they are let go.
    #[test]
    fn appends_of_uses_wait_while_held() {
        let dir = tempfile::tempdir().unwrap();
        let (_engine, store) = open(dir.path());
        let committer = Committer::start(store.clone(), 64);
        let appended = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let held = store.pending_uses().hold_appends();
            scope.spawn(|| {
                let rx = rt().block_on(committer.append_uses(uses(&store, &[event(Some(key(3)))]))).unwrap();
                appended.store(true, std::sync::atomic::Ordering::SeqCst);
                rt().block_on(rx).unwrap().unwrap();
            });
            std::thread::sleep(std::time::Duration::from_millis(200));
            assert!(!appended.load(std::sync::atomic::Ordering::SeqCst), "appended while held");
            assert_eq!(store.pending_uses().queued(), 0);
            drop(held);
        });
        assert!(appended.load(std::sync::atomic::Ordering::SeqCst));
        assert!(rt().block_on(committer.settle_uses()));
        assert_eq!(uses_of(&store, 3), 1);
    }

    #[test]
    fn segments_holding_uses_not_yet_entered_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, store) = open(dir.path());
        let log = engine.use_log().unwrap();
        let payload = store.seal_uses(&uses(&store, &[event(Some(key(7)))])).unwrap();
        let lsn = log.append_uses(&payload, &mut |_| ()).unwrap();
        log.sync_to(lsn).unwrap();
        // Later batches apply past the record of uses (no deadlock in the
        // turnstile), and a flush must not release it.
        for i in 0..3u8 {
            let mut b = crate::WriteBatch::new();
            b.put(Cf::Meta, &[b'k', i], vec![i]);
            engine.write(b, crate::Durability::Sync).unwrap();
        }
        engine.flush().unwrap();
        drop((engine, store));
        let (_engine, store) = open(dir.path());
        assert_eq!(uses_of(&store, 7), 1);
    }

}
