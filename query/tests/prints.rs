//! Claim fingerprints give every verification the verdicts the records
//! give. Generated persons and entities are loaded, then some are deleted,
//! some rewritten with fields left out and some with other values; every
//! field of every record is then claimed as stored, padded and full-width,
//! and with another record's value, and verified both ways. The table kept
//! current by the commits is checked, then one built afresh by a scan.

use basedata_gen::GenConfig;
use basedata_query::verify::{Claims, Outcome, Verdict};
use basedata_store::clock::ManualClock;
use basedata_store::engine::mem::MemEngine;
use basedata_store::{Catalog, Durability, Secret, Store, SubjectKey, Update, UpdateOp};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use std::sync::Arc;

type Verdicts = (Outcome, Vec<(String, Verdict)>);

fn owned(r: (Outcome, Vec<(&str, Verdict)>)) -> Verdicts {
    (r.0, r.1.into_iter().map(|(n, v)| (n.to_owned(), v)).collect())
}

/// Fields claimed in full width (ASCII letters and digits of U+FF01–FF5E)
/// and padded with ideographic spaces: equal after folding.
fn wide(s: &str) -> String {
    let body: String = s
        .chars()
        .map(|c| if c.is_ascii_graphic() { char::from_u32(c as u32 - 0x21 + 0xFF01).unwrap_or(c) } else { c })
        .collect();
    format!("\u{3000}{body} ")
}

#[derive(Default)]
struct Tally {
    checked: u64,
    by: BTreeMap<String, u64>,
}

/// Verifies every claim of `claims` against `key` in `ds`, from the record
/// and from the fingerprints, and requires the same verdicts.
fn check(store: &Store, ds_id: &str, key: SubjectKey, claims: &Map<String, Json>, tally: &mut Tally) {
    let cat = store.catalog().clone();
    let ds = cat.dataset(ds_id).unwrap();
    let Ok(c) = Claims::parse(ds, claims) else { return };
    let record = store.get(&key, ds_id, None).unwrap();
    let expected = owned(c.verify(record.as_ref()));
    let prints = store.prints().expect("the store keeps fingerprints");
    let mut got = None;
    store
        .printed_many(&prints, &[(key, ds_id)], |_, pid, view| {
            // The audit entry's pseudonym is the key's own, linked or not.
            assert_eq!(pid, store.pseudonym(&key));
            got = Some(owned(c.verify_printed(store, &prints, view)))
        })
        .unwrap();
    assert_eq!(got.as_ref(), Some(&expected), "{ds_id} {claims:?}");
    tally.checked += 1;
    *tally.by.entry(format!("{:?}", expected.0)).or_default() += 1;
    for (_, v) in &expected.1 {
        *tally.by.entry(format!("{v:?}")).or_default() += 1;
    }
}

#[test]
fn fingerprints_give_the_verdicts_of_the_records() {
    let catalog = Arc::new(Catalog::builtin());
    let store = Store::open(Arc::new(MemEngine::new()), &Secret::from_bytes([9; 32]), catalog.clone(), Arc::new(ManualClock::new(1_000_000)))
        .unwrap();
    assert_eq!(store.keep_prints().unwrap(), 0);

    // Generated update lines, per dataset.
    let mut lines: BTreeMap<String, Vec<Json>> = BTreeMap::new();
    let g = GenConfig { persons: 300, entities: 120, seed: 7 };
    basedata_gen::generate(&g, &catalog, &mut |ds, line| {
        lines.entry(ds.to_owned()).or_default().push(serde_json::from_slice(line).unwrap());
        Ok(())
    })
    .unwrap();
    assert!(lines.len() >= 2, "persons and entities: {:?}", lines.keys());
    let mut updates: Vec<Update> = Vec::new();
    for (ds, ls) in &lines {
        let d = catalog.dataset(ds).unwrap();
        for l in ls {
            updates.push(basedata_ingest::line::parse_value(d, l).unwrap());
        }
    }
    for chunk in updates.chunks(64) {
        store.apply(chunk, Durability::Buffered).unwrap();
    }

    // Every fifth record deleted, every fifth but one rewritten without its
    // last field, every fifth but two given the values of its neighbour.
    let mut changes = Vec::new();
    for (i, u) in updates.iter().enumerate() {
        let mut next = u.clone();
        next.version += 1;
        match (i % 5, &u.op) {
            (0, _) => next.op = UpdateOp::Delete,
            (1, UpdateOp::Upsert(f)) if f.len() > 1 => next.op = UpdateOp::Upsert(f[..f.len() - 1].to_vec()),
            (2, _) => match updates.get(i + 1) {
                Some(n) if n.dataset == u.dataset => next.op = n.op.clone(),
                _ => continue,
            },
            _ => continue,
        }
        changes.push(next);
    }
    for chunk in changes.chunks(64) {
        store.apply(chunk, Durability::Buffered).unwrap();
    }

    let check_all = |tally: &mut Tally| {
        for (ds, ls) in &lines {
            for (i, l) in ls.iter().enumerate() {
                let d = catalog.dataset(ds).unwrap();
                let key = basedata_ingest::line::parse_value(d, l).unwrap().key;
                let fields = l["fields"].as_object().unwrap();
                let other = ls[(i + 1) % ls.len()]["fields"].as_object().unwrap();
                check(&store, ds, key, fields, tally);
                for (name, v) in fields {
                    let one = |v: Json| Map::from_iter([(name.clone(), v)]);
                    check(&store, ds, key, &one(v.clone()), tally);
                    if let Json::String(s) = v {
                        check(&store, ds, key, &one(Json::String(wide(s))), tally);
                    }
                    if let Some(o) = other.get(name) {
                        check(&store, ds, key, &one(o.clone()), tally);
                    }
                }
            }
        }
    };
    let mut kept = Tally::default();
    check_all(&mut kept);
    // Every outcome and every verdict occurred, so each path was compared.
    for what in ["Match", "Mismatch", "NotFound", "NoValue"] {
        assert!(kept.by.get(what).copied().unwrap_or(0) > 0, "no {what} among {:?}", kept.by);
    }

    // A table built by scanning what is stored agrees as well.
    let live = store.keep_prints().unwrap();
    assert!(live > 0 && live < updates.len(), "{live} live records of {}", updates.len());
    let mut rebuilt = Tally::default();
    check_all(&mut rebuilt);
    assert_eq!(rebuilt.by, kept.by);
    println!("{} verifications compared each time: {:?}", kept.checked, kept.by);
}
