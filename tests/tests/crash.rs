//! Crash safety end to end: concurrent providers write household
//! registrations to the release binary, which is killed with SIGKILL at a
//! random moment, restarted on the same data, and checked; twelve times.
//!
//! The writers keep a model of every key: the last acknowledged update and
//! the updates sent after it whose fate is unknown (the connection died, or
//! the answer never came). After each restart every key must be in a state
//! the model admits: the acknowledged update or one sent after it, never an
//! older one, never one that was not sent. The change feed must continue
//! the log without a gap and hold every acknowledged update, and the audit
//! chain must verify. Meanwhile counters verify the same persons, singly and
//! in small batches: after each restart every answered verification (each
//! line of an answered batch) must have its audit entry, found by the
//! person's key, and none may have more entries than were sent. After the
//! last cycle the data directory is opened in-process to check the whole
//! change log, the current records, the audit chain and its index
//! directly.
//!
//! Kill delays, batch sizes, keys and operations come from a seed printed
//! per run (`BASEDATA_CRASH_SEED` reruns with the same ones; thread timing
//! still varies, so a rerun explores the same schedule, not the same
//! interleaving).

use basedata_store::clock::SystemClock;
use basedata_store::dir::{self as data_dir, KeySource, OpenOptions};
use basedata_store::keys::{mask, PersonKey};
use basedata_store::record::ChangeOp;
use basedata_store::{Catalog, SubjectKey};
use basedata_tests::*;
use basedata_gen::{person_key, GenConfig};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CYCLES: u64 = 12;
const WRITERS: usize = 8;
const KEYS_PER_WRITER: usize = 128;
const KEYS: usize = WRITERS * KEYS_PER_WRITER;
const BATCH_LINES: RangeInclusive<usize> = 1..=50;
const KILL_AFTER_MS: RangeInclusive<u64> = 50..=400;
/// One line in this many is a delete.
const DELETE_ONE_IN: u32 = 10;
const CHECKERS: usize = 8;
const VERIFIERS: usize = 3;
/// Lines of a batch comparison sent by a verifier.
const VERIFY_BATCH_LINES: RangeInclusive<usize> = 2..=40;
const PURPOSE: &str = "crash-recovery-check";

/// One update line as the model knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Line {
    version: u64,
    delete: bool,
}

/// What a writer knows about one of its keys.
#[derive(Clone, Debug, Default)]
struct KeyModel {
    /// Highest version ever sent: every new line goes above it, so no line
    /// is ever stale, whatever happened to the unacknowledged ones.
    sent: u64,
    /// The last acknowledged line.
    acked: Option<Line>,
    /// Lines sent after `acked` without an acknowledgement: each may or may
    /// not have been applied before the kill.
    pending: Vec<Line>,
}

impl KeyModel {
    /// Whether the stored state (`None`: no live record; `Some(v)`: a live
    /// record at version `v`) is one that the acknowledged history allows.
    fn admits(&self, observed: Option<u64>) -> bool {
        match observed {
            None => self.acked.is_none_or(|a| a.delete) || self.pending.iter().any(|p| p.delete),
            Some(v) => {
                let live = Line { version: v, delete: false };
                self.acked == Some(live) || self.pending.contains(&live)
            }
        }
    }

    /// Whether `observed` is exactly the last acknowledged state (as
    /// opposed to a later, unacknowledged one that happened to be applied).
    fn is_acked_state(&self, observed: Option<u64>) -> bool {
        match (self.acked, observed) {
            (None, None) => true,
            (Some(a), None) => a.delete,
            (Some(a), Some(v)) => !a.delete && a.version == v,
            (None, Some(_)) => false,
        }
    }

    fn describe(&self) -> String {
        format!("acknowledged {:?}, unacknowledged after it {:?}", self.acked, self.pending)
    }
}

/// The name an upsert carries, so a record's fields can be matched to its version.
fn name_of(version: u64) -> String {
    format!("测试{version}")
}

fn line_json(key: &PersonKey, l: Line) -> Value {
    if l.delete {
        return json!({"key": key.as_str(), "version": l.version, "op": "delete"});
    }
    let gender = if key.sequence() % 2 == 1 { "1" } else { "2" };
    json!({"key": key.as_str(), "version": l.version, "op": "upsert", "fields": {
        "name": name_of(l.version), "gender": gender,
        "birth_date": key.birth_date().to_string(), "status": "normal"}})
}

/// splitmix64: independent-looking seeds for cycles and writers.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn base_seed() -> u64 {
    match std::env::var("BASEDATA_CRASH_SEED") {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| panic!("BASEDATA_CRASH_SEED={s:?} is not an unsigned integer")),
        Err(_) => fastrand::u64(..),
    }
}

/// What one writer did in one cycle.
#[derive(Default)]
struct WriterReport {
    acked_lines: u64,
    acked_deletes: u64,
    acked_requests: u64,
    /// Requests that died with the server.
    cut: u64,
    /// Requests shed with 503 overloaded.
    shed: u64,
    max_acked_seq: u64,
    /// Every acknowledged line, by global key index.
    acked: Vec<(usize, Line)>,
    unexpected: Vec<String>,
}

/// Sends NDJSON batches for the keys of writer `w` until stopped or the
/// server dies; a line counts as acknowledged only after a 200 that applied it.
fn write(
    w: usize,
    seed: u64,
    url: &str,
    keys: &[PersonKey],
    models: &mut [KeyModel],
    killing: &AtomicBool,
    stop: &AtomicBool,
) -> WriterReport {
    let mut rng = fastrand::Rng::with_seed(seed);
    let agent = agent();
    let mut order: Vec<usize> = (0..models.len()).collect();
    let mut rep = WriterReport::default();
    let global = |j: usize| j * WRITERS + w;
    while !stop.load(SeqCst) {
        let n = rng.usize(BATCH_LINES).min(order.len());
        rng.shuffle(&mut order);
        let mut batch = Vec::with_capacity(n);
        let mut body = Vec::new();
        for &j in &order[..n] {
            let m = &mut models[j];
            // Provider versions need not be dense.
            m.sent += rng.u64(1..=3);
            let l = Line { version: m.sent, delete: rng.u32(0..DELETE_ONE_IN) == 0 };
            serde_json::to_writer(&mut body, &line_json(&keys[global(j)], l)).unwrap();
            body.push(b'\n');
            batch.push((j, l));
        }
        let answer = agent
            .post(url)
            .header("authorization", format!("Bearer {}", tokens::GONGAN))
            .header("content-type", "application/x-ndjson")
            .send(&body[..])
            .and_then(|mut r| Ok((r.status().as_u16(), r.body_mut().read_to_string()?)));
        let (status, text) = match answer {
            Ok(a) => a,
            Err(e) => {
                // Not acknowledged: the lines may or may not have been applied.
                for &(j, l) in &batch {
                    models[j].pending.push(l);
                }
                if killing.load(SeqCst) {
                    rep.cut += 1;
                } else {
                    rep.unexpected.push(format!("writer {w}: transport error while the server was up: {e}"));
                }
                break;
            }
        };
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let all_applied = v["applied"].as_u64() == Some(n as u64)
            && v["stale"].as_u64() == Some(0)
            && v["rejected"].as_array().is_some_and(Vec::is_empty);
        if status == 200 && all_applied {
            for &(j, l) in &batch {
                let m = &mut models[j];
                // Everything pending was sent earlier, with a lower version.
                m.pending.clear();
                m.acked = Some(l);
                rep.acked.push((global(j), l));
                rep.acked_deletes += l.delete as u64;
            }
            rep.acked_lines += n as u64;
            rep.acked_requests += 1;
            rep.max_acked_seq = rep.max_acked_seq.max(v["last_seq"].as_u64().unwrap_or(0));
            continue;
        }
        for &(j, l) in &batch {
            models[j].pending.push(l);
        }
        if status == 503 && v["error"]["code"] == "overloaded" {
            rep.shed += 1;
        } else {
            rep.unexpected.push(format!("writer {w}: {n} fresh lines answered {status} {text}"));
            break;
        }
    }
    rep
}

/// What one verifier did in one cycle, by global key index: uses answered
/// (a 200 for a single verification, a batch's answer read whole) and
/// uses sent without an answer (each may or may not be audited).
#[derive(Default)]
struct VerifierReport {
    answered: HashMap<usize, u64>,
    unknown: HashMap<usize, u64>,
    requests: u64,
    unexpected: Vec<String>,
}

/// Verifies random persons until stopped or the server dies: singly, or
/// a batch of a few lines; the claims need not match.
fn verify(v: usize, seed: u64, server_url: &str, keys: &[PersonKey], killing: &AtomicBool, stop: &AtomicBool) -> VerifierReport {
    let mut rng = fastrand::Rng::with_seed(seed);
    let agent = agent();
    let mut rep = VerifierReport::default();
    while !stop.load(SeqCst) {
        let picked: Vec<usize> = if rng.bool() {
            vec![rng.usize(0..KEYS)]
        } else {
            (0..rng.usize(VERIFY_BATCH_LINES)).map(|_| rng.usize(0..KEYS)).collect()
        };
        let mut claim = |i: usize| json!({"name": name_of(rng.u64(1..=5) + i as u64 % 2)});
        let answer = if picked.len() == 1 {
            let url = format!("{server_url}/v1/persons/{}/verify", keys[picked[0]].as_str());
            let body = json!({"dataset": "hukou", "fields": claim(picked[0])}).to_string();
            agent
                .post(&url)
                .header("authorization", format!("Bearer {}", tokens::COUNTER))
                .header("x-purpose", PURPOSE)
                .header("content-type", "application/json")
                .send(body.as_bytes())
                .and_then(|mut r| Ok((r.status().as_u16(), r.body_mut().read_to_string()?)))
                .map(|(status, text)| (status, status == 200 && text.contains("\"result\"")))
        } else {
            let mut body = Vec::new();
            for (n, &i) in picked.iter().enumerate() {
                let line = json!({"ref": format!("v{v}-{n}"), "subject": "person", "key": keys[i].as_str(), "fields": claim(i)});
                serde_json::to_writer(&mut body, &line).unwrap();
                body.push(b'\n');
            }
            agent
                .post(&format!("{server_url}/v1/verify/batch"))
                .header("authorization", format!("Bearer {}", tokens::COUNTER))
                .header("x-purpose", PURPOSE)
                .header("content-type", "application/x-ndjson")
                .send(&body[..])
                .and_then(|mut r| Ok((r.status().as_u16(), r.body_mut().read_to_string()?)))
                .map(|(status, text)| {
                    // Whole: one answer a line, in order (a cut stream is shorter).
                    let whole = text.lines().count() == picked.len()
                        && text.lines().enumerate().all(|(n, l)| l.contains(&format!("\"v{v}-{n}\"")) && l.contains("\"result\""));
                    (status, status == 200 && whole)
                })
        };
        let into = match answer {
            Ok((_, true)) => &mut rep.answered,
            Ok((status, false)) => {
                if !killing.load(SeqCst) && status != 503 {
                    rep.unexpected.push(format!("verifier {v}: {} uses answered {status} while the server was up", picked.len()));
                }
                &mut rep.unknown
            }
            Err(e) => {
                if !killing.load(SeqCst) {
                    rep.unexpected.push(format!("verifier {v}: transport error while the server was up: {e}"));
                }
                &mut rep.unknown
            }
        };
        for i in picked {
            *into.entry(i).or_default() += 1;
        }
        rep.requests += 1;
    }
    rep
}

/// The audited verifications of each key, through the audit query by key
/// (paged); `keys_of` picks the keys to ask for.
fn audited_verifications(server: &Server, keys: &[PersonKey], keys_of: impl Iterator<Item = usize>) -> HashMap<usize, u64> {
    let mut out = HashMap::new();
    for i in keys_of {
        let mut after = 0u64;
        let n = out.entry(i).or_default();
        loop {
            let r = server.req("GET", &format!("/v1/audit?key={}&limit=500&after={after}", keys[i].as_str())).token(tokens::AUDITOR).get();
            assert_eq!(r.status, 200, "{}", r.text);
            let entries = r.json["entries"].as_array().expect("entries");
            if entries.is_empty() {
                break;
            }
            *n += entries.iter().filter(|e| matches!(e["action"].as_str(), Some("verify" | "batch_verify"))).count() as u64;
            after = entries.last().unwrap()["seq"].as_u64().unwrap();
        }
    }
    out
}

/// Looks every key up over HTTP; returns the disagreements with the model
/// and how many keys were found at a later, unacknowledged state.
fn check_lookups(server: &Server, keys: &[PersonKey], models: &[Vec<KeyModel>]) -> (Vec<String>, usize) {
    let all: Vec<(usize, &KeyModel)> =
        (0..KEYS).map(|i| (i, &models[i % WRITERS][i / WRITERS])).collect();
    let chunk = KEYS.div_ceil(CHECKERS);
    std::thread::scope(|s| {
        let handles: Vec<_> = all
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let agent = agent();
                    let (mut bad, mut newer) = (Vec::new(), 0);
                    for &(i, m) in part {
                        let key = &keys[i];
                        let url = server.url(&format!("/v1/persons/{}?datasets=hukou", key.as_str()));
                        let mut r = agent
                            .get(&url)
                            .header("authorization", format!("Bearer {}", tokens::COUNTER))
                            .header("x-purpose", PURPOSE)
                            .call()
                            .expect("lookup after restart failed at transport level");
                        let status = r.status().as_u16();
                        let v: Value = r.body_mut().read_json().unwrap_or(Value::Null);
                        let observed = match status {
                            404 if v["error"]["code"] == "not_found" => None,
                            200 => {
                                let rec = &v["datasets"]["hukou"];
                                let version = rec["version"].as_u64().unwrap_or(0);
                                if rec["fields"]["name"] != name_of(version).as_str() {
                                    bad.push(format!("person #{i} ({}): fields {} do not belong to version {version}", mask(key.as_str()), rec["fields"]));
                                }
                                Some(version)
                            }
                            _ => {
                                bad.push(format!("person #{i} ({}): lookup answered {status} {v}", mask(key.as_str())));
                                continue;
                            }
                        };
                        if !m.admits(observed) {
                            bad.push(format!("person #{i} ({}): stored {observed:?} (None = no record), but {}", mask(key.as_str()), m.describe()));
                        } else if !m.is_acked_state(observed) {
                            newer += 1;
                        }
                    }
                    (bad, newer)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).fold((Vec::new(), 0), |(mut bad, n), (b, k)| {
            bad.extend(b);
            (bad, n + k)
        })
    })
}

/// Audit entries a server entered at open from records of uses that its
/// journal held and the trail lacked (its log line says how many).
fn uses_entered_at_open(logs: &str) -> u64 {
    logs.lines()
        .filter(|l| l.contains("entered into the audit trail"))
        .filter_map(|l| {
            let at = l.find("entries")? + "entries".len();
            let digits: String = l[at..].trim_start_matches(['=', '"', ':', ' ']).chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        })
        .sum()
}

/// What the change log has shown so far.
struct LogSeen {
    /// Last sequence number read.
    pos: u64,
    /// Last version per key index, to check that versions only grow.
    last_version: Vec<u64>,
}

/// Reads the change feed after `seen.pos` to its end, checking density and
/// content; returns the (key, line) pairs it held.
fn read_feed(server: &Server, seen: &mut LogSeen, index: &HashMap<&str, usize>, models: &[Vec<KeyModel>]) -> HashSet<(usize, Line)> {
    let mut got = HashSet::new();
    loop {
        let r = server
            .req("GET", &format!("/v1/changes?after={}&limit=1000", seen.pos))
            .token(tokens::COUNTER)
            .purpose(PURPOSE)
            .get();
        assert_eq!(r.status, 200, "change feed: {}", r.text);
        let changes = r.json["changes"].as_array().expect("changes array");
        if changes.is_empty() {
            return got;
        }
        for c in changes {
            let seq = c["seq"].as_u64().unwrap();
            assert_eq!(seq, seen.pos + 1, "the change log has a gap after {}", seen.pos);
            seen.pos = seq;
            assert_eq!(c["dataset"], "hukou");
            let i = *index.get(c["key"].as_str().unwrap()).expect("a change for a key nobody wrote");
            let version = c["version"].as_u64().unwrap();
            let delete = match c["op"].as_str() {
                Some("delete") => true,
                Some("upsert") => {
                    assert_eq!(c["fields"]["name"], name_of(version).as_str(), "change {seq}: fields of another version");
                    false
                }
                op => panic!("change {seq}: op {op:?}"),
            };
            assert!(version > seen.last_version[i], "change {seq}: person #{i} went from version {} to {version}", seen.last_version[i]);
            assert!(version <= models[i % WRITERS][i / WRITERS].sent, "change {seq}: person #{i} at version {version}, never sent");
            seen.last_version[i] = version;
            got.insert((i, Line { version, delete }));
        }
    }
}

#[test]
fn acknowledged_updates_survive_sigkill_and_the_change_log_has_no_gaps() {
    let base = base_seed();
    eprintln!("crash test: base seed {base} (rerun with BASEDATA_CRASH_SEED={base})");
    let started = Instant::now();
    let gen = GenConfig { persons: KEYS as u64, entities: 0, seed: base };
    let keys: Vec<PersonKey> = (0..KEYS as u64).map(|i| person_key(&gen, i)).collect();
    let index: HashMap<&str, usize> = keys.iter().enumerate().map(|(i, k)| (k.as_str(), i)).collect();
    assert_eq!(index.len(), KEYS, "generated keys collide");
    let mut models: Vec<Vec<KeyModel>> = vec![vec![KeyModel::default(); KEYS_PER_WRITER]; WRITERS];
    let mut all_acked: Vec<(usize, Line)> = Vec::new();
    let mut seen = LogSeen { pos: 0, last_version: vec![0; KEYS] };
    let (mut max_acked_seq, mut audit_entries, mut total_cut, mut total_reentered) = (0u64, 0u64, 0u64, 0u64);
    // Verifications by key over all cycles: answered, and sent without an answer.
    let (mut verified, mut unsure): (HashMap<usize, u64>, HashMap<usize, u64>) = Default::default();
    let (mut verify_requests, mut verified_uses) = (0u64, 0u64);

    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &standard_config(), &[]);
    subscribe(&server, tokens::COUNTER, tokens::GONGAN, "hukou", PURPOSE);
    for cycle in 0..CYCLES {
        let seed = mix(base ^ mix(cycle));
        let mut rng = fastrand::Rng::with_seed(seed);
        let kill_after = rng.u64(KILL_AFTER_MS);
        let (killing, stop) = (AtomicBool::new(false), AtomicBool::new(false));
        let url = server.url("/v1/datasets/hukou/updates");
        let base_url = server.url("");
        let (reports, checks): (Vec<WriterReport>, Vec<VerifierReport>) = std::thread::scope(|s| {
            let handles: Vec<_> = models
                .iter_mut()
                .enumerate()
                .map(|(w, m)| {
                    let (wseed, url, keys, killing, stop) = (rng.u64(..), &url, &keys, &killing, &stop);
                    s.spawn(move || write(w, wseed, url, keys, m, killing, stop))
                })
                .collect();
            let verifiers: Vec<_> = (0..VERIFIERS)
                .map(|v| {
                    let (vseed, url, keys, killing, stop) = (rng.u64(..), &base_url, &keys, &killing, &stop);
                    s.spawn(move || verify(v, vseed, url, keys, killing, stop))
                })
                .collect();
            std::thread::sleep(Duration::from_millis(kill_after));
            killing.store(true, SeqCst);
            server.kill();
            stop.store(true, SeqCst);
            (handles.into_iter().map(|h| h.join().unwrap()).collect(), verifiers.into_iter().map(|h| h.join().unwrap()).collect())
        });
        let unexpected: Vec<&String> = reports.iter().flat_map(|r| &r.unexpected).chain(checks.iter().flat_map(|r| &r.unexpected)).collect();
        assert!(unexpected.is_empty(), "cycle {cycle} (seed {base}): {unexpected:#?}\nserver log:\n{}", server.logs());
        let sum = |f: fn(&WriterReport) -> u64| reports.iter().map(f).sum::<u64>();
        let (lines, deletes, requests, cut, shed) = (
            sum(|r| r.acked_lines),
            sum(|r| r.acked_deletes),
            sum(|r| r.acked_requests),
            sum(|r| r.cut),
            sum(|r| r.shed),
        );
        total_cut += cut;
        let cycle_acked: Vec<(usize, Line)> = reports.iter().flat_map(|r| r.acked.iter().copied()).collect();
        max_acked_seq = max_acked_seq.max(reports.iter().map(|r| r.max_acked_seq).max().unwrap_or(0));

        let restart = Instant::now();
        server = Server::start_in(dir.path(), &standard_config(), &[]);
        let restart_ms = restart.elapsed().as_millis();
        let reentered = uses_entered_at_open(&server.logs());
        total_reentered += reentered;

        let (bad, newer) = check_lookups(&server, &keys, &models);
        assert!(bad.is_empty(), "cycle {cycle} (seed {base}): {} keys disagree, first: {:#?}", bad.len(), &bad[..bad.len().min(10)]);

        let before = seen.pos;
        let logged = read_feed(&server, &mut seen, &index, &models);
        assert!(seen.pos >= max_acked_seq, "cycle {cycle} (seed {base}): the log ends at {} but seq {max_acked_seq} was acknowledged", seen.pos);
        let missing: Vec<_> = cycle_acked.iter().filter(|a| !logged.contains(a)).collect();
        assert!(missing.is_empty(), "cycle {cycle} (seed {base}): {} acknowledged updates missing from the change log, first: {:?}", missing.len(), &missing[..missing.len().min(10)]);

        let v = server.req("GET", "/v1/audit/verify").token(tokens::AUDITOR).get();
        assert_eq!((v.status, &v.json["ok"]), (200, &json!(true)), "cycle {cycle} (seed {base}): audit chain: {}", v.text);
        let entries = v.json["entries"].as_u64().unwrap();
        // Each acknowledged update request wrote its audit entry durably.
        assert!(entries >= audit_entries + requests, "cycle {cycle} (seed {base}): audit has {entries} entries, expected at least {audit_entries} + {requests}");
        audit_entries = entries;

        // Every answered verification is on record under its person's key.
        let mut touched: HashSet<usize> = HashSet::new();
        for c in &checks {
            verify_requests += c.requests;
            for (&i, &n) in &c.answered {
                *verified.entry(i).or_default() += n;
                verified_uses += n;
                touched.insert(i);
            }
            for (&i, &n) in &c.unknown {
                *unsure.entry(i).or_default() += n;
                touched.insert(i);
            }
        }
        let audited = audited_verifications(&server, &keys, touched.iter().copied());
        for (i, n) in &audited {
            let (answered, sent) = (verified.get(i).copied().unwrap_or(0), unsure.get(i).copied().unwrap_or(0));
            assert!(
                (answered..=answered + sent).contains(n),
                "cycle {cycle} (seed {base}): person #{i} has {n} audited verifications; {answered} were answered and {sent} more sent"
            );
        }

        eprintln!(
            "cycle {cycle:2} (seed {seed}): killed after {kill_after:3} ms; acknowledged {lines:5} updates ({deletes} deletes) in {requests:3} requests, \
             {cut} cut by the kill, {shed} shed; restarted in {restart_ms} ms ({reentered} uses entered from the journal); {KEYS} keys agree ({newer} at a later unacknowledged update); log +{} changes, no gap; audit {entries} entries, \
             the verifications of {} persons on record",
            seen.pos - before,
            touched.len()
        );
        all_acked.extend(cycle_acked);
    }
    server.kill();
    let acked_deletes = all_acked.iter().filter(|(_, l)| l.delete).count();
    // The checks above saw something worth checking.
    assert!(all_acked.len() >= 100 && acked_deletes > 0, "only {} updates ({acked_deletes} deletes) acknowledged", all_acked.len());
    assert!(total_cut > 0, "no kill ever cut a request in flight");
    assert!(verified_uses >= 100, "only {verified_uses} verifications answered in {verify_requests} requests");

    // The data directory itself, opened in-process after the last kill.
    // With its key file beside it, as the server found it.
    let data = dir.path().join("data");
    let catalog = Arc::new(Catalog::builtin());
    let opened = data_dir::open(&data, &KeySource::default(), catalog, Arc::new(SystemClock), &OpenOptions::default());
    let store = opened.unwrap().store;
    let log = store.changes(0, usize::MAX).unwrap();
    for (n, c) in log.iter().enumerate() {
        assert_eq!(c.seq, n as u64 + 1, "the change log has a gap before {}", c.seq);
    }
    assert_eq!(store.last_seq(), log.len() as u64);
    assert_eq!(store.last_seq(), seen.pos, "the store and the feed disagree on the end of the log");
    let mut last: HashMap<usize, (u64, Line)> = HashMap::new();
    let mut in_log = HashSet::with_capacity(log.len());
    for c in &log {
        let SubjectKey::Person(k) = c.key else { panic!("change {} is for an entity", c.seq) };
        let i = index[k.as_str()];
        let l = Line { version: c.version, delete: c.op == ChangeOp::Delete };
        in_log.insert((i, l));
        last.insert(i, (c.seq, l));
    }
    let missing = all_acked.iter().filter(|a| !in_log.contains(a)).count();
    assert_eq!(missing, 0, "acknowledged updates missing from the change log");
    for (i, key) in keys.iter().enumerate() {
        let sk = SubjectKey::Person(*key);
        let rec = store.get(&sk, "hukou", None).unwrap();
        let m = &models[i % WRITERS][i / WRITERS];
        assert!(m.admits(rec.as_ref().map(|r| r.version)), "person #{i} ({}): stored {:?}, but {}", mask(key.as_str()), rec.as_ref().map(|r| r.version), m.describe());
        // The current record is the last change of its key.
        match (last.get(&i), &rec) {
            (None, None) => assert_eq!(store.record_seq(&sk, "hukou").unwrap(), None),
            (Some((seq, l)), _) => {
                assert_eq!(store.record_seq(&sk, "hukou").unwrap(), Some(*seq), "person #{i}");
                assert_eq!(rec.as_ref().map(|r| (r.version, r.seq)), (!l.delete).then_some((l.version, *seq)), "person #{i}");
            }
            (None, Some(r)) => panic!("person #{i}: record at version {} without a change", r.version),
        }
        if let Some(r) = &rec {
            assert_eq!(r.field("name").map(|v| v.to_json()), Some(json!(name_of(r.version))), "person #{i}");
        }
    }
    let check = store.audit_verify().unwrap();
    assert!(check.ok, "audit chain: {:?}", check.problem);
    assert!(check.entries >= audit_entries);
    // The index holds exactly what the entries call for.
    let index = store.audit_index_check().unwrap();
    assert!(index.ok, "audit index: {:?}", index.problem);
    eprintln!(
        "crash test: {CYCLES} cycles, {} acknowledged updates ({acked_deletes} deletes), {total_cut} requests cut, \
         log of {} changes without a gap, {verified_uses} verifications answered in {verify_requests} requests and on record \
         ({total_reentered} uses entered from the journal at restarts), {} audit entries, {} index keys, in {:.1} s",
        all_acked.len(),
        log.len(),
        check.entries,
        index.keys,
        started.elapsed().as_secs_f64()
    );
}
