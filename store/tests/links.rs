//! Keys of other documents and links: a passport holder's and a
//! licence-numbered entity's records are their own subjects, and a credit
//! code later linked to a registration number reaches the same records,
//! history and audit trail as the number, in one batch with the update
//! that links them; conflicting links are refused and change nothing.

mod common;

use basedata_store::audit::{AuditEvent, AuditQuery};
use basedata_store::clock::ManualClock;
use basedata_store::keys::{DocKey, DocType, SubjectKey};
use basedata_store::link::{CODE_HAS_RECORDS, CODE_LINKED_ELSEWHERE, LICENCE_LINKED_ELSEWHERE};
use basedata_store::{Action, Durability, Outcome, Store, Update, UpdateOp, Value};
use common::*;
use std::sync::Arc;

fn licence(i: u32) -> SubjectKey {
    SubjectKey::Document(DocKey::complete(DocType::BusinessLicence, &format!("440300{:08}", 100 + i)).unwrap())
}

fn upsert(key: SubjectKey, link: Option<SubjectKey>, version: u64, name: &str) -> Update {
    Update {
        dataset: "market_registration".into(),
        key,
        version,
        op: UpdateOp::Upsert(vec![("name".into(), Value::Str(name.into()))]),
        link,
        provider: None,
    }
}

fn name(s: &Store, key: &SubjectKey) -> Option<String> {
    s.get(key, "market_registration", None).unwrap().and_then(|r| match r.field("name") {
        Some(Value::Str(n)) => Some(n.clone()),
        _ => None,
    })
}

fn lookup(key: SubjectKey) -> AuditEvent {
    AuditEvent {
        department: "shuiwu".into(),
        operator: None,
        operator_verified: false,
        purpose: "纳税登记".into(),
        purpose_code: None,
        action: Action::Lookup,
        key: Some(key),
        datasets: vec!["market_registration".into()],
        fields: vec![],
        outcome: "found".into(),
        key_mapped: false,
        pid: None,
        rejected_lines: 0,
        grants: Vec::new(),
    }
}

fn trail(s: &Store, key: SubjectKey) -> Vec<(u64, String)> {
    let q = AuditQuery { key: Some(key), limit: 100, ..Default::default() };
    s.audit_query(&q).unwrap().into_iter().map(|e| (e.seq, e.key.unwrap().as_str().to_owned())).collect()
}

#[test]
fn a_credit_code_linked_to_a_licence_number_reaches_its_records_and_trail() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000));
    let s = mem_store(clock.clone());
    let (lic, code) = (licence(1), entity(1));
    s.commit(&[upsert(lic, None, 1, "个体户甲")], &[lookup(lic)], Durability::Sync).unwrap();
    // Before the link the code knows nothing.
    s.commit(&[], &[lookup(code)], Durability::Sync).unwrap();
    assert_eq!(name(&s, &code), None);
    clock.advance(1_000_000);

    let done = s.commit(&[upsert(code, Some(lic), 2, "甲有限公司")], &[], Durability::Sync).unwrap();
    assert!(matches!(done.outcomes[..], [Outcome::Applied { .. }]), "{:?}", done.outcomes);
    for key in [lic, code] {
        assert_eq!(name(&s, &key).as_deref(), Some("甲有限公司"));
        let r = s.get(&key, "market_registration", Some(1_700_000_000_500_000)).unwrap().unwrap();
        assert_eq!(r.field("name"), Some(&Value::Str("个体户甲".into())), "history by either key");
        assert_eq!(s.get_many(&[(key, "market_registration")]).unwrap()[0].as_ref().map(|r| r.version), Some(2));
    }
    assert_eq!(s.linked_key(&code).unwrap(), Some(lic));
    assert_eq!(s.linked_key(&lic).unwrap(), Some(code));
    // The change log names the subject by the key it is stored under.
    let changes = s.changes(0, 10).unwrap();
    assert_eq!(changes.iter().map(|c| c.key).collect::<Vec<_>>(), vec![lic, lic]);

    // Writes by either key go to the one record.
    s.commit(&[upsert(lic, None, 3, "甲有限公司（更名）")], &[lookup(code)], Durability::Sync).unwrap();
    assert_eq!(name(&s, &code).as_deref(), Some("甲有限公司（更名）"));
    let stale = s.apply(&[upsert(code, None, 3, "x")], Durability::Sync).unwrap();
    assert_eq!(stale, vec![Outcome::Stale { current: 3 }]);

    // Each key's trail holds both keys' entries, in order, each as named.
    let both = trail(&s, lic);
    assert_eq!(both, trail(&s, code));
    let names: Vec<&str> = both.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(names, vec![lic.as_str(), code.as_str(), code.as_str()]);
    assert!(both.windows(2).all(|w| w[0].0 < w[1].0));
    // Another entity's trail is not mixed in.
    assert!(trail(&s, entity(2)).is_empty());
    assert!(s.audit_verify().unwrap().ok);
}

#[test]
fn conflicting_links_are_refused_and_change_nothing() {
    let s = mem_store(Arc::new(ManualClock::new(1_700_000_000_000_000)));
    let (lic1, lic2, code1, code2) = (licence(1), licence(2), entity(1), entity(2));
    s.apply(&[upsert(lic1, None, 1, "甲"), upsert(lic2, None, 1, "乙"), upsert(code2, None, 1, "丙")], Durability::Sync).unwrap();
    let out = s
        .apply(
            &[
                upsert(code1, Some(lic1), 2, "甲公司"),
                // The same link again, in the same batch: no change, applied.
                upsert(code1, Some(lic1), 3, "甲公司二"),
                upsert(code1, Some(lic2), 4, "x"),
                upsert(code2, Some(lic2), 2, "x"),
                upsert(entity(3), Some(lic1), 2, "x"),
            ],
            Durability::Sync,
        )
        .unwrap();
    assert!(matches!(out[0], Outcome::Applied { .. }) && matches!(out[1], Outcome::Applied { .. }), "{out:?}");
    assert_eq!(
        out[2..],
        [
            Outcome::Refused { code: "conflict", reason: CODE_LINKED_ELSEWHERE.into() },
            Outcome::Refused { code: "conflict", reason: CODE_HAS_RECORDS.into() },
            Outcome::Refused { code: "conflict", reason: LICENCE_LINKED_ELSEWHERE.into() },
        ]
    );
    assert_eq!(name(&s, &lic1).as_deref(), Some("甲公司二"));
    assert_eq!(name(&s, &lic2).as_deref(), Some("乙"));
    assert_eq!(name(&s, &code2).as_deref(), Some("丙"));
    assert_eq!(name(&s, &entity(3)), None);
    assert_eq!(s.linked_key(&lic2).unwrap(), None);
    // A code that got records of its own earlier in the same batch is refused too.
    let out = s.apply(&[upsert(entity(4), None, 1, "丁"), upsert(entity(4), Some(licence(4)), 2, "x")], Durability::Sync).unwrap();
    assert_eq!(out[1], Outcome::Refused { code: "conflict", reason: CODE_HAS_RECORDS.into() });
}

#[test]
fn other_documents_key_their_own_records_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000));
    let passport = SubjectKey::parse_doc(DocType::Passport, "E12345678").unwrap();
    let permit = SubjectKey::parse_doc(DocType::HkMacaoTaiwanPermit, "H12345678").unwrap();
    let (lic, code) = (licence(9), entity(9));
    {
        let s = open(rocks(dir.path(), true), clock.clone());
        let hukou = |key, name: &str| Update {
            dataset: "hukou".into(),
            key,
            version: 1,
            op: UpdateOp::Upsert(vec![("name".into(), Value::Str(name.into()))]),
            link: None,
            provider: None,
        };
        let out = s.apply(&[hukou(person(1), "张三"), hukou(passport, "SMITH JOHN"), hukou(permit, "陈大文")], Durability::Sync).unwrap();
        assert!(out.iter().all(|o| matches!(o, Outcome::Applied { .. })));
        s.apply(&[upsert(lic, None, 1, "甲"), upsert(code, Some(lic), 2, "甲公司")], Durability::Sync).unwrap();
    }
    let s = open(rocks(dir.path(), true), clock);
    for (key, name) in [(person(1), "张三"), (passport, "SMITH JOHN"), (permit, "陈大文")] {
        let r = s.get(&key, "hukou", None).unwrap().unwrap();
        assert_eq!(r.field("name"), Some(&Value::Str(name.into())), "{key:?}");
    }
    // The same characters as another document type are another subject.
    let as_passport = SubjectKey::parse_doc(DocType::Passport, "H12345678").unwrap();
    assert_eq!(s.get(&as_passport, "hukou", None).unwrap(), None);
    let keys: Vec<_> = s.changes(0, 10).unwrap().into_iter().map(|c| (c.key.doc_type(), c.key)).collect();
    assert!(keys.contains(&(DocType::Passport, passport)) && keys.contains(&(DocType::HkMacaoTaiwanPermit, permit)));
    assert_eq!(name(&s, &code).as_deref(), Some("甲公司"));
    assert_eq!(s.resolve(&s.pseudonym(&passport)).unwrap(), Some(passport));
}

#[test]
fn a_line_answered_stale_links_nothing() {
    let s = mem_store(Arc::new(ManualClock::new(1_700_000_000_000_000)));
    let (lic, code) = (licence(7), entity(7));
    s.commit(&[upsert(lic, None, 5, "个体户庚")], &[], Durability::Sync).unwrap();
    // The number's record is at version 5: a line at 3 that would link
    // the code is stale, and must leave the code unlinked.
    let done = s.commit(&[upsert(code, Some(lic), 3, "庚有限公司")], &[], Durability::Sync).unwrap();
    assert!(matches!(done.outcomes[..], [Outcome::Stale { current: 5 }]), "{:?}", done.outcomes);
    assert!(!s.home(&code).unwrap().linked);
    assert_eq!(name(&s, &code), None);
    // A later line in the same batch sees no link either, and the link is
    // made by the line that is applied.
    let done = s
        .commit(&[upsert(code, Some(lic), 4, "庚有限公司"), upsert(code, None, 9, "庚公司")], &[], Durability::Sync)
        .unwrap();
    assert!(matches!(done.outcomes[..], [Outcome::Stale { current: 5 }, Outcome::Applied { .. }]), "{:?}", done.outcomes);
    assert!(!s.home(&code).unwrap().linked, "the code's own record was written, unlinked");
    assert_eq!(name(&s, &lic).as_deref(), Some("个体户庚"));
    let done = s.commit(&[upsert(lic, None, 6, "个体户庚二")], &[], Durability::Sync).unwrap();
    assert!(matches!(done.outcomes[..], [Outcome::Applied { .. }]), "{:?}", done.outcomes);
}
