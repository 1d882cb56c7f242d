//! A copy of the data directory alone must not reveal whose records it
//! holds: no ID number written appears in any decompressed key or value of
//! any column family, nor anywhere in the raw files (the journal included)
//! of a store with compression off.

mod common;

use basedata_store::clock::ManualClock;
use basedata_store::store::UpdateOp;
use basedata_store::{Cf, Durability, SubjectKey, Update, Value};
use common::*;
use std::sync::Arc;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir`, subdirectories included.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn no_id_number_in_raw_store() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000));
    let engine = rocks(dir.path(), false);
    let store = open(engine.clone(), clock.clone());
    let persons: Vec<SubjectKey> = (0..200).map(person).collect();
    let entities: Vec<SubjectKey> = (0..50).map(entity).collect();
    let write_round = |version: u64| {
        let mut ups = Vec::new();
        for p in &persons {
            ups.push(Update {
                provider: None,
                link: None,
                dataset: "hukou".into(),
                key: *p,
                version,
                op: UpdateOp::Upsert(vec![
                    ("name".into(), Value::Str("测试".into())),
                    ("status".into(), Value::Code("normal".into())),
                ]),
            });
        }
        for (i, e) in entities.iter().enumerate() {
            ups.push(Update {
                provider: None,
                link: None,
                dataset: "market_registration".into(),
                key: *e,
                version,
                op: UpdateOp::Upsert(vec![("legal_representative_id".into(), Value::Key(persons[i]))]),
            });
        }
        store.apply(&ups, Durability::Sync).unwrap();
    };
    write_round(1);
    engine.flush().unwrap(); // into SST files
    clock.advance(1_000_000);
    write_round(2); // history entries, and a journal that still holds this round
    let ids: Vec<String> = persons.iter().chain(&entities).map(|k| k.as_str().to_owned()).collect();

    let mut entries = 0;
    for cf in Cf::ALL {
        for item in engine.scan(cf, &[], None, false).unwrap() {
            let (k, v) = item.unwrap();
            entries += 1;
            for id in &ids {
                assert!(!contains(&k, id.as_bytes()) && !contains(&v, id.as_bytes()), "{} leaks a key", cf.name());
            }
        }
    }
    assert!(entries > 1000, "scan saw only {entries} entries");

    let mut files = 0;
    let mut saw_journal = false;
    let mut raw = Vec::new();
    for path in files_under(dir.path()) {
        let bytes = std::fs::read(&path).unwrap();
        files += 1;
        if path.extension().is_some_and(|e| e == "jnl") && contains(&bytes, "测试".as_bytes()) {
            saw_journal = true;
        }
        // The check runs over the raw file: a plain copy would see this.
        for id in &ids {
            assert!(!contains(&bytes, id.as_bytes()), "{} leaks a key", path.display());
        }
        raw.extend(bytes);
    }
    assert!(files > 3 && saw_journal, "files {files}, journal {saw_journal}");
    // The names written are there in the clear, proving the scan reads data.
    assert!(contains(&raw, "测试".as_bytes()));
    // And the store itself still answers with the real keys.
    let r = store.get(&entities[3], "market_registration", None).unwrap().unwrap();
    assert_eq!(r.field("legal_representative_id"), Some(&Value::Key(persons[3])));
}
