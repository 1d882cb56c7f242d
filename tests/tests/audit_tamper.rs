//! Tampering with a stopped server's audit log, directly in its RocksDB
//! files: `basedata audit-verify` exits 1 naming the problem for an
//! altered, removed or swapped entry and for a cut-off tail, and a server
//! started on the tampered data reports the chain broken.

use basedata_store::audit::Stored;
use basedata_store::dir::{open_engine, OpenOptions};
use basedata_store::{Cf, Durability, Engine, WriteBatch};
use basedata_tests::*;
use serde_json::{json, Value};
use std::path::Path;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A stopped server's directory whose audit log holds some entries;
/// returns the directory and the number of entries.
fn audited_store() -> (tempfile::TempDir, u64) {
    let scratch = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(scratch.path(), &standard_config(), &[]);
    let g = basedata_gen::GenConfig { persons: 20, entities: 0, seed: 4 };
    let keys: Vec<String> = (0..20).map(|i| basedata_gen::person_key(&g, i).as_str().to_owned()).collect();
    let lines: Vec<Value> = (0..20)
        .map(|i| json!({"key": keys[i], "version": 1, "fields": basedata_gen::person_hukou(&g, i as u64)}))
        .collect();
    let r = s.req("POST", "/v1/datasets/hukou/updates").token(tokens::GONGAN).ndjson(&lines);
    assert_eq!(r.json["applied"], 20, "{}", r.text);
    for k in &keys[..6] {
        let r = s.req("GET", &format!("/v1/persons/{k}")).token(tokens::COUNTER).purpose("核对").get();
        assert_eq!(r.status, 200);
        // An auditor's check enters the lookup into the trail at once, so
        // each is stored as an entry of its own (lookups entered together
        // are stored as one chunk), which the cases below alter one by one.
        let v = s.req("GET", "/v1/audit/verify").token(tokens::AUDITOR).get();
        assert_eq!(v.json["ok"], true, "{}", v.text);
    }
    let batch: Vec<Value> = keys.iter().map(|k| json!({"ref": k, "subject": "person", "key": k, "fields": {"name": "某"}})).collect();
    let r = s.req("POST", "/v1/verify/batch").token(tokens::COUNTER).purpose("批量").ndjson(&batch);
    assert_eq!(r.text.lines().count(), 20);
    let entries = s.req("GET", "/v1/audit/verify").token(tokens::AUDITOR).get().json["entries"].as_u64().unwrap();
    assert_eq!(entries, 1 + 6 + 20);
    assert!(s.terminate().success());
    (scratch, entries)
}

/// A copy of the store (data and key file) with `tamper` applied to its
/// raw audit family.
fn tampered(src: &Path, tamper: impl FnOnce(&dyn Engine)) -> tempfile::TempDir {
    let dst = tempfile::tempdir().unwrap();
    copy_dir(&src.join("data"), &dst.path().join("data"));
    std::fs::copy(src.join("data.key"), dst.path().join("data.key")).unwrap();
    let engine = open_engine(&dst.path().join("data"), &OpenOptions::default()).unwrap();
    tamper(&*engine);
    engine.flush().unwrap();
    dst
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn value(e: &dyn Engine, seq: u64) -> Vec<u8> {
    e.get(Cf::Audit, &key(seq)).unwrap().expect("entry exists")
}

fn write(e: &dyn Engine, puts: &[(u64, Vec<u8>)], deletes: &[u64]) {
    let mut b = WriteBatch::new();
    for (s, v) in puts {
        b.put(Cf::Audit, key(*s).to_vec(), v.clone());
    }
    for s in deletes {
        b.delete(Cf::Audit, key(*s).to_vec());
    }
    e.write(b, Durability::Sync).unwrap();
}

/// Runs `audit-verify` on `dir/data`: exit code, the check's JSON, stderr.
fn audit_verify(dir: &Path) -> (Option<i32>, Value, String) {
    let data = dir.join("data");
    let (st, out, err) = run_cli(&["audit-verify", "--data", data.to_str().unwrap()]);
    (st.code(), serde_json::from_str(out.trim()).unwrap_or(Value::Null), err)
}

#[test]
fn audit_verify_detects_every_kind_of_tampering() {
    let (store, entries) = audited_store();
    let (code, check, _) = audit_verify(store.path());
    assert_eq!((code, &check["ok"], check["entries"].as_u64()), (Some(0), &json!(true), Some(entries)), "{check}");

    type Tamper = Box<dyn FnOnce(&dyn Engine)>;
    let cases: Vec<(&str, Tamper, String)> = vec![
        (
            "altered outcome",
            Box::new(|e| {
                let mut entry = basedata_store::audit::StoredEntry::decode(&value(e, 3)).unwrap();
                entry.outcome = "not_found".into();
                write(e, &[(3, entry.encode())], &[]);
            }),
            "entry 3 does not match its hash".into(),
        ),
        (
            "altered bytes",
            Box::new(|e| {
                let mut v = value(e, 5);
                let n = v.len();
                v[n - 40] ^= 0x01;
                write(e, &[(5, v)], &[]);
            }),
            "entry 5 ".into(),
        ),
        ("deleted entry", Box::new(|e| write(e, &[], &[4])), "entry 4 is missing (next is 5)".into()),
        (
            "swapped entries",
            Box::new(|e| {
                let (a, b) = (value(e, 2), value(e, 6));
                write(e, &[(2, b), (6, a)], &[]);
            }),
            "entry 2 does not match its hash".into(),
        ),
        (
            // The batch's 20 lines are one stored entry (entries 8 to 27).
            "altered batch line",
            Box::new(|e| {
                let Stored::Chunk(mut c) = Stored::decode(&value(e, 8)).unwrap() else { panic!("the batch is one chunk") };
                assert_eq!(c.lines.len(), 20);
                c.names.push("match".into());
                c.lines[13].outcome = c.names.len() as u32 - 1;
                write(e, &[(8, c.encode())], &[]);
            }),
            "entry 8 does not match its hash".into(),
        ),
        ("deleted batch lines", Box::new(|e| write(e, &[], &[8])), format!("the chain ends at 7 but the recorded head is {entries}")),
        (
            "truncated tail",
            Box::new(move |e| write(e, &[], &[6, 7, 8])),
            format!("the chain ends at 5 but the recorded head is {entries}"),
        ),
    ];
    // The index, checked against the entries: a key removed is found.
    assert_eq!(check["index"]["ok"], true, "{check}");
    let dir = tampered(store.path(), |e| {
        let (k, _) = e.scan(Cf::AuditIndex, b"k", None, false).unwrap().next().unwrap().unwrap();
        let mut b = WriteBatch::new();
        b.delete(Cf::AuditIndex, k.to_vec());
        e.write(b, Durability::Sync).unwrap();
    });
    let (code, check, err) = audit_verify(dir.path());
    assert_eq!((code, &check["ok"], &check["index"]["ok"]), (Some(1), &json!(false), &json!(false)), "{check}");
    assert!(check["index"]["problem"].as_str().unwrap_or("").contains("lacks its index key (k)"), "{check}");
    assert!(err.contains("the audit index does not match the entries"), "{err}");
    let mut served = false;
    for (what, tamper, problem) in cases {
        let dir = tampered(store.path(), tamper);
        let (code, check, err) = audit_verify(dir.path());
        assert_eq!(code, Some(1), "{what}: {check} {err}");
        assert_eq!(check["ok"], false, "{what}");
        let p = check["problem"].as_str().unwrap_or("");
        assert!(p.starts_with(&problem), "{what}: {p:?}");
        assert!(err.contains("the audit chain is broken"), "{what}: {err}");
        if !served {
            // The server says the same to an auditor.
            served = true;
            let s = Server::start_in(dir.path(), &standard_config(), &[]);
            let r = s.req("GET", "/v1/audit/verify").token(tokens::AUDITOR).get();
            assert_eq!(r.json["ok"], false, "{what}: {}", r.text);
            assert!(r.json["problem"].as_str().unwrap_or("").starts_with(&problem), "{}", r.text);
        }
    }
}

/// A tail cut off with the recorded head moved back to match leaves a
/// chain that links from its first entry to its head (here the index's
/// keys of the cut entries still give it away, but whoever cut the tail
/// can remove those too): what was kept elsewhere tells. `audit-verify
/// --backups` holds the chain to the head each backup of the store
/// recorded.
#[test]
fn audit_verify_holds_the_chain_to_its_backups_heads() {
    let (store, entries) = audited_store();
    let backups = store.path().join("backups");
    let data = store.path().join("data");
    let (st, _, err) = run_cli(&["backup", "--data", data.to_str().unwrap(), "--to", backups.to_str().unwrap()]);
    assert!(st.success(), "backup: {err}");
    // The head as the server logged it, or an auditor noted it down.
    let head = audit_verify(store.path()).1["head"].as_str().unwrap().to_owned();
    let logged = format!("{entries}:{}", head.to_uppercase());
    let verify = |dir: &Path| {
        let data = dir.join("data");
        let (st, out, err) =
            run_cli(&["audit-verify", "--data", data.to_str().unwrap(), "--backups", backups.to_str().unwrap(), "--head", &logged]);
        (st.code(), serde_json::from_str::<Value>(out.trim()).unwrap_or(Value::Null), err)
    };
    let (code, check, err) = verify(store.path());
    assert_eq!(code, Some(0), "{check} {err}");
    assert_eq!(check["backups"], json!([{"backup_id": 1, "created_at": check["backups"][0]["created_at"], "seq": entries, "ok": true, "problem": null, "note": null}]));
    assert_eq!(check["heads"], json!([{"seq": entries, "hash": head, "ok": true, "problem": null}]));
    let (st, _, err) = run_cli(&["audit-verify", "--data", data.to_str().unwrap(), "--head", "1:abc"]);
    assert!(!st.success() && err.contains("expected SEQ:HASH"), "{err}");

    // The batch's chunk (entries 8 on) gone, and the head put back on entry 7.
    let dir = tampered(store.path(), |e| {
        let at_7 = Stored::decode(&value(e, 7)).unwrap().hash();
        write(e, &[], &[8]);
        let mut b = WriteBatch::new();
        b.put(Cf::Meta, b"audit_head".to_vec(), basedata_store::codec::encode(&basedata_store::audit::ChainHead { seq: 7, hash: at_7 }));
        e.write(b, Durability::Sync).unwrap();
    });
    let (code, check, err) = verify(dir.path());
    assert_eq!(code, Some(1), "{check} {err}");
    assert_eq!((&check["entries"], &check["problem"]), (&json!(7), &Value::Null), "the chain alone links: {check}");
    assert_eq!(check["backups"][0]["ok"], false, "{check}");
    let problem = check["backups"][0]["problem"].as_str().unwrap_or("");
    assert!(problem.contains(&format!("the chain ends at 7 but backup 1 recorded entry {entries}")), "{problem}");
    assert!(err.contains("the audit chain does not hold backup 1's head"), "{err}");
    assert_eq!(check["heads"][0]["ok"], false, "{check}");
    assert!(err.contains("the audit chain does not hold a recorded head: the chain ends at 7 but the given head recorded"), "{err}");
}

/// The server writes its audit head to its log when it starts (and every
/// ten minutes when it moved), for `audit-verify --head`.
#[test]
fn the_server_logs_its_audit_head() {
    let (store, entries) = audited_store();
    let head = audit_verify(store.path()).1["head"].as_str().unwrap().to_owned();
    let s = Server::start_in(store.path(), &standard_config(), &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let line = loop {
        if let Some(l) = s.logs().lines().find(|l| l.contains("audit head")).map(str::to_owned) {
            break l;
        }
        assert!(std::time::Instant::now() < deadline, "no audit head in the log:\n{}", s.logs());
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(line.contains(&format!("\"seq\":{entries}")) && line.contains(&head), "{line}");
}
