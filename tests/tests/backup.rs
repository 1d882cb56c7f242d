//! End to end with the release binary: `basedata backup` taken while the
//! server serves and a writer keeps writing holds every update acknowledged
//! before it began, and restores into a new directory that matches the
//! source store up to the backup's point, record for record and audit entry
//! for audit entry, and serves with the same key. Later backups into the
//! same directory copy only new files; a restore refuses a non-empty
//! directory and a wrong key.

use basedata_store::clock::SystemClock;
use basedata_store::dir::{self as data_dir, KeySource, OpenOptions};
use basedata_store::record::ChangeOp;
use basedata_store::{Catalog, Cf, PersonKey, Secret, Store, SubjectKey, Value as FieldValue};
use basedata_tests::*;
use basedata_gen::{self as gen, GenConfig};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Persons loaded before the writer starts; the writer rewrites the first
/// `HOT` of them over and over with rising versions.
const PERSONS: u64 = 300;
const HOT: u64 = 60;
const PER_REQUEST: u64 = 10;
/// Bounds of the writer: requests in all, and after the backup.
const MAX_REQUESTS: usize = 400;
const AFTER_BACKUP: usize = 10;

fn keys() -> Vec<PersonKey> {
    let cfg = GenConfig { persons: PERSONS, entities: 0, seed: 7 };
    (0..PERSONS).map(|i| gen::person_key(&cfg, i)).collect()
}

fn hukou_line(i: u64, key: &PersonKey, version: u64) -> Value {
    let cfg = GenConfig { persons: PERSONS, entities: 0, seed: 7 };
    let mut fields = gen::person_hukou(&cfg, i);
    fields.insert("name".into(), json!(format!("测试{i}-{version}")));
    json!({"key": key.as_str(), "version": version, "op": "upsert", "fields": fields})
}

fn push(s: &Server, lines: &[Value]) -> Resp {
    s.req("POST", "/v1/datasets/hukou/updates").token(tokens::GONGAN).ndjson(lines)
}

fn lookup(s: &Server, key: &PersonKey) -> Resp {
    s.req("GET", &format!("/v1/persons/{}", key.as_str())).token(tokens::COUNTER).purpose("备份核对").get()
}

fn cli(args: &[&Path]) -> (bool, String, String) {
    let args: Vec<&str> = args.iter().map(|p| p.to_str().unwrap()).collect();
    let (status, out, err) = run_cli(&args);
    (status.success(), out, err)
}

fn manifest(backups: &Path, id: u64) -> Value {
    serde_json::from_slice(&std::fs::read(backups.join(format!("manifests/{id}.json"))).unwrap()).unwrap()
}

fn open(data: &Path, key_file: &Path) -> Store {
    let keys = KeySource { key_file: Some(key_file), ..Default::default() };
    let opts = OpenOptions { block_cache_bytes: 16 << 20, warm_page_cache: false, prime_wal_bytes: 0 };
    let catalog = std::sync::Arc::new(Catalog::builtin());
    data_dir::open(data, &keys, catalog, std::sync::Arc::new(SystemClock), &opts).unwrap().store
}

fn raw(store: &Store, cf: Cf) -> Vec<(Box<[u8]>, Box<[u8]>)> {
    store.engine().scan(cf, &[], None, false).unwrap().map(Result::unwrap).collect()
}

/// Files under `dir` with size and modification time.
fn files(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_file() {
            out.insert(entry.path(), (meta.len(), meta.modified().unwrap()));
        }
    }
    out
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

type Fields = Vec<(String, FieldValue)>;

#[test]
fn backup_while_serving_restores_everything_acknowledged() {
    let keys = keys();
    let src_dir = tempfile::tempdir().unwrap();
    let data = src_dir.path().join("data");
    let key_file = src_dir.path().join("data.key");
    let scratch = tempfile::tempdir().unwrap();
    let backups = scratch.path().join("backups");

    let mut s = Server::start_in(src_dir.path(), &standard_config(), &[]);
    for chunk in (0..PERSONS).collect::<Vec<_>>().chunks(100) {
        let lines: Vec<Value> = chunk.iter().map(|&i| hukou_line(i, &keys[i as usize], 1)).collect();
        let r = push(&s, &lines);
        assert_eq!((r.status, r.json["applied"].as_u64()), (200, Some(chunk.len() as u64)), "{}", r.text);
    }
    for key in keys.iter().take(20) {
        assert_eq!(lookup(&s, key).status, 200);
    }

    // The writer: rising versions of the hot keys, a lookup per request,
    // each acknowledgement recorded with the moment it arrived.
    let acked: Mutex<Vec<(u64, u64, Instant)>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let backup_done: Mutex<Option<usize>> = Mutex::new(None);
    let (backup_started, backup_out) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut version = 1;
            for n in 0..MAX_REQUESTS {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if backup_done.lock().unwrap().is_some_and(|at| n >= at + AFTER_BACKUP) {
                    break;
                }
                version += 1;
                let first = (n as u64 * PER_REQUEST) % HOT;
                let batch: Vec<u64> = (first..first + PER_REQUEST).collect();
                let lines: Vec<Value> = batch.iter().map(|&i| hukou_line(i, &keys[i as usize], version)).collect();
                let r = push(&s, &lines);
                assert_eq!((r.status, r.json["applied"].as_u64()), (200, Some(PER_REQUEST)), "{}", r.text);
                let at = Instant::now();
                acked.lock().unwrap().extend(batch.iter().map(|&i| (i, version, at)));
                assert_eq!(lookup(&s, &keys[first as usize]).status, 200);
            }
        });
        // Back up once the writer is well under way.
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.lock().unwrap().len() < 20 * PER_REQUEST as usize {
            assert!(Instant::now() < deadline && !writer.is_finished(), "the writer does not progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        let started = Instant::now();
        let out = cli(&[Path::new("backup"), Path::new("--data"), &data, Path::new("--to"), &backups]);
        *backup_done.lock().unwrap() = Some(acked.lock().unwrap().len() / PER_REQUEST as usize);
        if !out.0 {
            stop.store(true, Ordering::SeqCst);
        }
        writer.join().unwrap();
        (started, out)
    });
    let (ok, stdout, stderr) = backup_out;
    assert!(ok, "backup failed: {stderr}\nserver logs:\n{}", s.logs());
    assert!(stdout.contains("backup 1 of"), "{stdout}");
    assert!(stdout.contains("secret key is not part of the backup"), "{stdout}");
    // Made by the server, which holds the store, over its control socket.
    assert!(s.logs().contains("backup written"), "{}", s.logs());
    let acked = acked.into_inner().unwrap();
    let before: Vec<_> = acked.iter().filter(|(_, _, at)| *at < backup_started).collect();
    assert!(before.len() >= 20 * PER_REQUEST as usize);
    assert!(acked.len() > before.len(), "the writer wrote nothing after the backup began");
    let m1 = manifest(&backups, 1);
    assert_eq!(m1["backup_id"], 1);
    // The secret stays apart from the backup, in hex or raw.
    let secret_hex = std::fs::read_to_string(&key_file).unwrap().trim().to_owned();
    let secret_raw: Vec<u8> =
        (0..secret_hex.len()).step_by(2).map(|i| u8::from_str_radix(&secret_hex[i..i + 2], 16).unwrap()).collect();
    assert_eq!(secret_raw.len(), 32);
    for path in all_files(&backups) {
        let bytes = std::fs::read(&path).unwrap();
        for needle in [secret_hex.as_bytes(), &secret_raw[..]] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle), "the secret is in {}", path.display());
        }
    }

    // A second backup into the same directory copies only what is new.
    let lines: Vec<Value> = (HOT..HOT + 5).map(|i| hukou_line(i, &keys[i as usize], 1000)).collect();
    assert_eq!(push(&s, &lines).json["applied"], 5);
    let shared = backups.join("rocksdb/shared_checksum");
    let first_files = files(&shared);
    let (ok, stdout, stderr) = cli(&[Path::new("backup"), Path::new("--data"), &data, Path::new("--to"), &backups]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("backup 2 of"), "{stdout}");
    let m2 = manifest(&backups, 2);
    let copy = &m2["copy"];
    let (copied, total) = (copy["files_copied"].as_u64().unwrap(), copy["files_total"].as_u64().unwrap());
    assert!(copied < total, "{copy}");
    assert!(copy["bytes_copied"].as_u64() < copy["bytes_total"].as_u64(), "{copy}");
    let second_files = files(&shared);
    for (path, meta) in &first_files {
        assert_eq!(second_files.get(path), Some(meta), "{} was rewritten", path.display());
    }
    let new_tables = second_files.len() - first_files.len();
    assert!(new_tables > 0 && new_tables as u64 <= copied, "{new_tables} new tables, {copy}");
    assert!(m2["summary"]["last_seq"].as_u64() > m1["summary"]["last_seq"].as_u64());
    assert!(s.terminate().success());

    // Restore backup 1 into a new directory, checked against the key.
    let dst_dir = tempfile::tempdir().unwrap();
    let restored = dst_dir.path().join("data");
    let restored_key = dst_dir.path().join("data.key");
    std::fs::copy(&key_file, &restored_key).unwrap();
    let (ok, stdout, stderr) = cli(&[
        Path::new("restore"), Path::new("--from"), &backups, Path::new("--data"), &restored,
        Path::new("--backup-id"), Path::new("1"),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("audit chains and index verified") && stdout.contains("matches"), "{stdout}");

    {
        let src = open(&data, &key_file);
        let dst = open(&restored, &restored_key);
        let point = m1["summary"]["last_seq"].as_u64().unwrap();
        assert_eq!(dst.last_seq(), point);

        // The source's change log up to the backup's point, folded, is
        // exactly what the restored store holds.
        let mut expected: HashMap<(String, String), Option<(u64, Fields)>> = HashMap::new();
        let mut after = 0;
        while after < point {
            let changes = src.changes(after, 1000).unwrap();
            assert!(!changes.is_empty());
            for c in changes.into_iter().take_while(|c| c.seq <= point) {
                after = c.seq;
                let v = match c.op {
                    ChangeOp::Upsert => Some((c.version, c.fields)),
                    ChangeOp::Delete => None,
                };
                expected.insert((c.key.as_str().to_owned(), c.dataset), v);
            }
        }
        assert_eq!(expected.len() as u64, PERSONS);
        for key in &keys {
            let got: Vec<(String, u64, Fields)> = dst
                .get_all(&SubjectKey::from(*key), None, None)
                .unwrap()
                .into_iter()
                .map(|r| (r.dataset, r.version, r.fields))
                .collect();
            let want: Vec<(String, u64, Fields)> = expected
                .iter()
                .filter(|((k, _), _)| k == key.as_str())
                .filter_map(|((_, ds), v)| v.clone().map(|(version, fields)| (ds.clone(), version, fields)))
                .collect();
            assert_eq!(got, want, "record of person {}", key.masked());
        }
        let records = raw(&dst, Cf::Records).len() as u64;
        assert_eq!(records, PERSONS);

        // Every update acknowledged before the backup began is there.
        for (i, version, _) in &before {
            let r = dst.get(&SubjectKey::from(keys[*i as usize]), "hukou", None).unwrap().unwrap();
            assert!(r.version >= *version, "person {i}: version {} restored, {version} acknowledged", r.version);
        }

        // The audit chain: the manifest's head, intact, a prefix of the source's.
        let head = dst.audit_head().unwrap();
        assert_eq!(head.seq, m1["summary"]["audit_head"]["seq"].as_u64().unwrap());
        let hash: String = head.hash.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hash, m1["summary"]["audit_head"]["hash"].as_str().unwrap());
        assert!(head.seq >= 20 + PERSONS / 100);
        let check = dst.audit_verify().unwrap();
        assert!(check.ok, "{:?}", check.problem);
        assert_eq!(check.entries, head.seq);
        // Entries are stored under their first sequence number (a chunk of
        // uses entered together holds several): the copy holds exactly
        // the source's stored entries up to its head.
        let src_audit = raw(&src, Cf::Audit);
        let stored_at = |k: &[u8]| u64::from_be_bytes(k.try_into().unwrap());
        assert!(src_audit.iter().any(|(k, _)| stored_at(k) > head.seq), "the source went on after the backup");
        let prefix: Vec<_> = src_audit.iter().filter(|(k, _)| stored_at(k) <= head.seq).cloned().collect();
        assert_eq!(raw(&dst, Cf::Audit), prefix);
        assert!(src.audit_verify().unwrap().ok);
    }

    // The restored directory serves with the same key.
    let s2 = Server::start_in(dst_dir.path(), &standard_config(), &[]);
    let (i, version, _) = before.last().unwrap();
    let r = lookup(&s2, &keys[*i as usize]);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json["datasets"]["hukou"]["version"].as_u64().unwrap() >= *version, "{}", r.text);
    let r = s2.req("GET", "/v1/audit/verify").token(tokens::AUDITOR).get();
    assert_eq!(r.json["ok"], true, "{}", r.text);
    drop(s2);

    // With the server stopped, the command backs the store up itself.
    let (ok, stdout, stderr) = cli(&[Path::new("backup"), Path::new("--data"), &data, Path::new("--to"), &backups]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("backup 3 of"), "{stdout}");
    assert_eq!(manifest(&backups, 3)["summary"]["last_seq"], m2["summary"]["last_seq"]);
}

#[test]
fn restore_refuses_a_non_empty_directory_and_a_wrong_key() {
    let src_dir = tempfile::tempdir().unwrap();
    let data = src_dir.path().join("data");
    let backups = src_dir.path().join("backups");
    let mut s = Server::start_in(src_dir.path(), &standard_config(), &[]);
    let key = keys()[0];
    assert_eq!(push(&s, &[hukou_line(0, &key, 1)]).json["applied"], 1);
    let (ok, _, stderr) = cli(&[Path::new("backup"), Path::new("--data"), &data, Path::new("--to"), &backups]);
    assert!(ok, "{stderr}");
    s.terminate();

    // Not into a directory that holds anything.
    let busy = src_dir.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), b"keep me").unwrap();
    let (ok, _, stderr) = cli(&[Path::new("restore"), Path::new("--from"), &backups, Path::new("--data"), &busy]);
    assert!(!ok);
    assert!(stderr.contains("not empty") && stderr.lines().count() == 1, "{stderr}");
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);
    assert_eq!(std::fs::read(busy.join("notes.txt")).unwrap(), b"keep me");

    // Not with another store's key, whether named or found beside the directory.
    let other_key = src_dir.path().join("other.key");
    Secret::create_file(&other_key).unwrap();
    let target = src_dir.path().join("restored");
    let (ok, _, stderr) = cli(&[
        Path::new("restore"), Path::new("--from"), &backups, Path::new("--data"), &target,
        Path::new("--key-file"), &other_key,
    ]);
    assert!(!ok);
    assert!(stderr.contains("does not belong to the store in this backup"), "{stderr}");
    assert!(!target.exists());
    std::fs::copy(&other_key, src_dir.path().join("restored.key")).unwrap();
    let (ok, _, stderr) = cli(&[Path::new("restore"), Path::new("--from"), &backups, Path::new("--data"), &target]);
    assert!(!ok && stderr.contains("does not belong"), "{stderr}");
    assert!(!target.exists());

    // Not from a directory that is not a backup; and without a key it
    // restores, saying the secret was not checked.
    let (ok, _, stderr) = cli(&[Path::new("restore"), Path::new("--from"), &data, Path::new("--data"), &target]);
    assert!(!ok && stderr.contains("not a basedata backup directory"), "{stderr}");
    std::fs::remove_file(src_dir.path().join("restored.key")).unwrap();
    let (ok, stdout, stderr) = cli(&[Path::new("restore"), Path::new("--from"), &backups, Path::new("--data"), &target]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("the secret was not checked"), "{stderr}");
    assert!(stdout.contains("audit chains and index verified"), "checked without the key too: {stdout}");
    let dst = open(&target, &src_dir.path().join("data.key"));
    assert_eq!(dst.get(&SubjectKey::from(key), "hukou", None).unwrap().unwrap().version, 1);
}
