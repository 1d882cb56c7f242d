//! `Store::get_many`: one answer per asked pair, in the order asked,
//! agreeing with `Store::get` whatever the storage order.

mod common;

use basedata_store::clock::ManualClock;
use basedata_store::store::UpdateOp;
use basedata_store::{Durability, Store, SubjectKey, Update, Value};
use common::*;
use std::sync::Arc;

fn upsert(ds: &str, key: SubjectKey, version: u64, name: &str) -> Update {
    Update { link: None, dataset: ds.into(), key, version, op: UpdateOp::Upsert(vec![("name".into(), Value::Str(name.into()))]), provider: None }
}

fn check(s: &Store) {
    // Stored, deleted, never stored, other dataset, asked twice, entity.
    let asks: Vec<(SubjectKey, &str)> = vec![
        (person(7), "hukou"),
        (person(3), "hukou"),
        (person(99), "hukou"),
        (person(3), "death"),
        (person(5), "hukou"),
        (person(7), "hukou"),
        (entity(2), "market_registration"),
        (person(1), "hukou"),
    ];
    let many = s.get_many(&asks).unwrap();
    assert_eq!(many.len(), asks.len());
    for ((k, ds), got) in asks.iter().zip(&many) {
        assert_eq!(got, &s.get(k, ds, None).unwrap(), "{ds}");
    }
    let names: Vec<Option<Value>> = many.iter().map(|r| r.as_ref().and_then(|r| r.field("name")).cloned()).collect();
    let s = |v: &str| Some(Value::Str(v.into()));
    assert_eq!(names, vec![s("g"), s("c2"), None, s("d"), None, s("g"), s("e"), s("a")]);
    assert!(Store::get_many(&open_mem(), &[]).unwrap().is_empty());
}

fn open_mem() -> Store {
    mem_store(Arc::new(ManualClock::new(0)))
}

fn fill(s: &Store) {
    s.apply(
        &[
            upsert("hukou", person(1), 1, "a"),
            upsert("hukou", person(3), 1, "c"),
            upsert("hukou", person(3), 2, "c2"),
            upsert("death", person(3), 1, "d"),
            upsert("hukou", person(5), 1, "x"),
            upsert("hukou", person(7), 1, "g"),
            upsert("market_registration", entity(2), 1, "e"),
        ],
        Durability::Sync,
    )
    .unwrap();
    s.apply(&[Update { link: None, dataset: "hukou".into(), key: person(5), version: 2, op: UpdateOp::Delete, provider: None }], Durability::Sync).unwrap();
}

#[test]
fn answers_in_the_order_asked_on_both_engines() {
    let m = open_mem();
    fill(&m);
    check(&m);
    let dir = tempfile::tempdir().unwrap();
    let r = open(rocks(dir.path(), true), Arc::new(ManualClock::new(0)));
    fill(&r);
    check(&r);
}

#[test]
fn every_kind_of_value_reads_back_and_fields_can_be_left_out() {
    // The borrowed decoding of get_many must mirror the stored layout for
    // every value kind exactly.
    let s = open_mem();
    let fields = vec![
        ("a_str".to_string(), Value::Str("张三 ".into())),
        ("b_date".to_string(), Value::Date(time::macros::date!(1949 - 12 - 31))),
        ("c_time".to_string(), Value::DateTime(1_700_000_000_123_456)),
        ("d_int".to_string(), Value::Int(-42)),
        ("e_dec".to_string(), Value::Decimal("1000.50".into())),
        ("f_bool".to_string(), Value::Bool(true)),
        ("g_code".to_string(), Value::Code("normal".into())),
        ("h_key".to_string(), Value::Key(person(4))),
        ("i_bytes".to_string(), Value::Bytes(vec![0, 255, 7])),
        ("j_key".to_string(), Value::Key(entity(9))),
    ];
    let u = Update { link: None, dataset: "hukou".into(), key: person(8), version: 3, op: UpdateOp::Upsert(fields.clone()), provider: None };
    s.apply(&[u], Durability::Sync).unwrap();
    let asks = [(person(8), "hukou"), (person(9), "hukou")];
    let all = s.get_many(&asks).unwrap();
    assert_eq!(all[0].as_ref().unwrap().fields, fields);
    assert_eq!(all[0], s.get(&person(8), "hukou", None).unwrap());
    assert_eq!(all[1], None);
    let some = s.get_many_fields(&asks, &|i, name| i == 0 && (name == "b_date" || name == "h_key")).unwrap();
    let kept: Vec<&str> = some[0].as_ref().unwrap().fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(kept, vec!["b_date", "h_key"]);
    assert_eq!(some[0].as_ref().unwrap().field("h_key"), Some(&Value::Key(person(4))));
    assert_eq!(some[0].as_ref().unwrap().version, 3);
}
