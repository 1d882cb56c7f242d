//! A data directory that served batch jobs, disputes, grants and rejected
//! update lines holds no ID
//! number in the clear: not in any file byte for byte (the journal before
//! any flush; table files, journal and MANIFEST after one),
//! nor in any decompressed key or value of any column family. The store's
//! own scan (`store/tests/identity_separation.rs`) covers records, history
//! and the change log; this one covers what the consumer use cases store.

use basedata_gen::{person_hukou, person_key, GenConfig};
use basedata_store::engine::rocks::{RocksConfig, RocksEngine};
use basedata_store::{Cf, Engine};
use basedata_tests::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

const STORED: u64 = 300;
const GEN: GenConfig = GenConfig { persons: STORED, entities: 0, seed: 29 };

fn key(i: u64) -> String {
    person_key(&GEN, i).as_str().to_owned()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every regular file under `dir`, recursively, with its bytes.
fn files(dir: &Path, out: &mut Vec<(std::path::PathBuf, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let (path, kind) = (entry.path(), entry.file_type().unwrap());
        if kind.is_dir() {
            files(&path, out);
        } else if kind.is_file() {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
}

/// The first of `ids` (all of one length) that `hay` holds. One pass over
/// `hay`, not one a number: a served store's journal segments are
/// zero-filled to tens of megabytes each.
fn find_any<'a>(hay: &[u8], ids: &HashSet<&'a [u8]>) -> Option<&'a [u8]> {
    let len = ids.iter().next()?.len();
    if hay.len() < len {
        return None;
    }
    // Every ID number starts with a digit: other windows are not looked up.
    (0..=hay.len() - len).filter(|&i| hay[i].is_ascii_digit()).find_map(|i| ids.get(&hay[i..i + len]).copied())
}

/// Asserts that no file under `dir` holds any of `ids`; returns the file
/// names seen, for the caller to check that the scan saw what it meant to.
fn assert_no_id_in_files(dir: &Path, ids: &[String], when: &str) -> Vec<String> {
    let set: HashSet<&[u8]> = ids.iter().map(|id| id.as_bytes()).collect();
    assert!(set.iter().all(|id| id.len() == ids[0].len()), "ID numbers of one length");
    let mut all = Vec::new();
    files(dir, &mut all);
    for (path, bytes) in &all {
        if let Some(id) = find_any(bytes, &set) {
            panic!("{when}: {} holds the ID number {} in the clear", path.display(), String::from_utf8_lossy(id));
        }
    }
    all.iter().filter(|(_, b)| !b.is_empty()).map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
}

#[test]
fn the_one_pass_search_finds_a_number_anywhere_and_nothing_else() {
    let (a, b) = (key(1), key(2));
    let set: HashSet<&[u8]> = [a.as_bytes(), b.as_bytes()].into_iter().collect();
    let mut hay = vec![0u8; 1000];
    assert_eq!(find_any(&hay, &set), None);
    hay.extend_from_slice(b.as_bytes());
    assert_eq!(find_any(&hay, &set), Some(b.as_bytes()), "at the very end");
    assert_eq!(find_any(&hay[..hay.len() - 1], &set), None, "cut short");
    let mut front = a.as_bytes().to_vec();
    front.extend_from_slice(&hay);
    assert_eq!(find_any(&front, &set), Some(a.as_bytes()), "at the very start");
}

#[test]
fn no_id_number_on_disk_after_jobs_disputes_and_grants() {
    let scratch = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(scratch.path(), &standard_config(), &[]);
    let updates: Vec<Value> =
        (0..STORED).map(|i| json!({"key": key(i), "version": 1, "fields": person_hukou(&GEN, i)})).collect();
    let r = s.req("POST", "/v1/datasets/hukou/updates").token(tokens::GONGAN).ndjson(&updates);
    assert_eq!(r.json["applied"].as_u64(), Some(STORED), "{}", r.text);

    // A batch job over the stored persons and as many unknown ones (whose
    // numbers the store never saw otherwise).
    let n = 2 * STORED;
    let lines: Vec<Value> = (0..n)
        .map(|i| json!({"ref": i, "subject": "person", "key": key(i), "fields": {"name": "某某"}}))
        .collect();
    let r = s.req("POST", "/v1/jobs").token(tokens::COUNTER).purpose("identity-check").ndjson(&lines);
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = s.req("GET", &format!("/v1/jobs/{id}")).token(tokens::COUNTER).purpose("identity-check").get();
        if r.json["state"] == "done" {
            break;
        }
        assert!(Instant::now() < deadline, "job not done: {}", r.text);
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = s.req("GET", &format!("/v1/jobs/{id}/result")).token(tokens::COUNTER).purpose("identity-check").get();
    assert_eq!(r.status, 200);
    assert_eq!(r.text.lines().count() as u64, n);
    assert!(r.text.contains(&key(STORED + 1)), "the answers name the keys");

    // A dispute about one person, a grant application, audited reads.
    let r = s.req("POST", "/v1/disputes").token(tokens::COUNTER).json(
        &json!({"subject": "person", "key": key(5), "dataset": "hukou", "field": "name", "claimed": "张叁", "note": "姓名有误"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let r = s.req("POST", "/v1/grants").token(tokens::COUNTER).json(
        &json!({"dataset": "hukou", "fields": ["photo"], "purpose": "照片比对", "legal_basis": "《社会保险法》第七十二条"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let r = s.req("GET", &format!("/v1/persons/{}", key(7))).token(tokens::COUNTER).purpose("identity-check").get();
    assert_eq!(r.status, 200);
    // A provider's line rejected with its key: kept for the stewards, masked.
    let r = s.req("POST", "/v1/datasets/hukou/updates").token(tokens::GONGAN).ndjson(&[json!({"key": key(9), "version": 2, "fields": {"name": 5}})]);
    assert_eq!(r.json["rejected"][0]["code"], "invalid_value", "{}", r.text);
    s.kill();

    let ids: Vec<String> = (0..n).map(key).collect();
    let data = scratch.path().join("data");
    // Before any flush: all of it is in the journal.
    let seen = assert_no_id_in_files(&data, &ids, "before flush");
    assert!(seen.iter().any(|f| f.ends_with(".jnl")), "no journal segment among {seen:?}");
    // The server prefilled its segments: the scan covered those too,
    // whose tails hold whatever their earlier use left there.
    let primed = std::fs::read_dir(data.join(basedata_store::engine::rocks::JOURNAL_DIR))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().ends_with(".jnl") && e.metadata().unwrap().len() >= 64 << 20);
    assert!(primed, "no prefilled journal segment among {seen:?}");

    // After a flush into table files (uncompressed, so that the bytes of
    // the files are the bytes of the values).
    let engine = RocksEngine::open(&data, &RocksConfig { compression: false, ..Default::default() }).unwrap();
    engine.flush().unwrap();
    let mut jobs = 0;
    let masked = basedata_store::keys::mask(&key(9)).to_string();
    let mut kept_masked = 0;
    for cf in Cf::ALL {
        for item in engine.scan(cf, &[], None, false).unwrap() {
            let (k, v) = item.unwrap();
            jobs += usize::from(cf == Cf::Jobs);
            kept_masked += usize::from(cf == Cf::Gov && contains(&v, masked.as_bytes()));
            for id in &ids {
                assert!(!contains(&k, id.as_bytes()) && !contains(&v, id.as_bytes()), "{} holds the ID number {id}", cf.name());
            }
        }
    }
    assert!(jobs > 2, "the job's input and answers are stored (saw {jobs} entries)");
    assert_eq!(kept_masked, 1, "the rejected line is kept, its key masked");
    drop(engine);
    let seen = assert_no_id_in_files(&data, &ids, "after flush");
    assert!(seen.iter().any(|f| f.ends_with(".sst")), "no table file among {seen:?}");
    assert!(seen.iter().any(|f| f.starts_with("MANIFEST")), "no MANIFEST among {seen:?}");
    // The scan reads data: the names stored are there in the clear.
    let mut all = Vec::new();
    files(&data, &mut all);
    let name = person_hukou(&GEN, 3)["name"].as_str().unwrap().to_owned();
    assert!(all.iter().any(|(_, b)| contains(b, name.as_bytes())), "the scan does not see stored values");
}
