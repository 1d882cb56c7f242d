//! Handler tests of batch comparison and jobs, through the router with
//! `oneshot` and in-memory stores.

use crate::auth::Departments;
use crate::config::{DepartmentConfig, Role};
use crate::http::{router, AppState};
use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use basedata_store::clock::ManualClock;
use basedata_store::engine::mem::MemEngine;
use basedata_store::{Catalog, Durability, Secret, Store, SubjectKey, Update, UpdateOp, Value};
use http_body_util::BodyExt;
use serde_json::{json, Value as Json};
use std::sync::Arc;
use tower::ServiceExt;

const COUNTER: &str = "batch-counter-token-001";
const OTHER: &str = "batch-other-token-00001";
const WEIJIAN: &str = "batch-weijian-token-001";

fn dept(id: &str, roles: Vec<Role>, token: &str) -> DepartmentConfig {
    DepartmentConfig { id: id.into(), name: id.into(), roles, token: Some(token.into()), ..Default::default() }
}

/// A store with `n` generated persons' household registrations.
fn state(n: u64) -> AppState {
    state_with(n, crate::http::Settings { max_body_bytes: 1 << 20, ..Default::default() })
}

fn state_with(n: u64, settings: crate::http::Settings) -> AppState {
    state_on(Arc::new(MemEngine::new()), n, settings)
}

/// [`state_with`] on a given engine, for tests that make its writes fail.
fn state_on(engine: Arc<MemEngine>, n: u64, settings: crate::http::Settings) -> AppState {
    let depts = Departments::from_config(&[
        dept("counter", vec![Role::Consumer], COUNTER),
        dept("other", vec![Role::Consumer], OTHER),
        dept("weijian", vec![Role::Provider], WEIJIAN),
    ])
    .unwrap();
    AppState::build(Arc::new(store_on(engine, n)), depts, settings).unwrap()
}

fn store_of(n: u64) -> Store {
    store_on(Arc::new(MemEngine::new()), n)
}

fn store_on(engine: Arc<MemEngine>, n: u64) -> Store {
    let store = Store::open(
        engine,
        &Secret::from_bytes([7; 32]),
        Arc::new(Catalog::builtin()),
        Arc::new(ManualClock::new(1_763_800_000_000_000)),
    )
    .unwrap();
    let updates: Vec<Update> = (0..n)
        .map(|i| Update {
            provider: None,
            link: None,
            dataset: "hukou".into(),
            key: SubjectKey::Person(person(i)),
            version: 1,
            op: UpdateOp::Upsert(vec![("name".into(), Value::Str(format!("姓名{i}")))]),
        })
        .collect();
    store.apply(&updates, Durability::Sync).unwrap();
    store
}

fn person(i: u64) -> basedata_store::PersonKey {
    basedata_gen::person_key(&basedata_gen::GenConfig { persons: 1 << 20, entities: 0, seed: 3 }, i)
}

/// Line `i` of a test batch: a match, a mismatch, an unknown person, or
/// (every seventh) a broken line, by `i`.
fn line(i: u64, stored: u64) -> String {
    match i % 7 {
        6 => format!("{{\"ref\":\"r{i}\",\"subject\":\"person\",\"key\":\"12345\",\"fields\":{{\"name\":\"x\"}}}}"),
        5 => format!("{{\"ref\":\"r{i}\" oops"),
        _ => {
            let k = person(i % (stored + 1));
            let name = if i % 3 == 0 { "别人".to_owned() } else { format!("姓名{}", i % (stored + 1)) };
            json!({"ref": format!("r{i}"), "subject": "person", "key": k.as_str(), "fields": {"name": name}}).to_string()
        }
    }
}

fn body_of(lines: impl Iterator<Item = String>) -> Vec<u8> {
    let mut b = Vec::new();
    for l in lines {
        b.extend_from_slice(l.as_bytes());
        b.push(b'\n');
    }
    b
}

fn req(method: &str, path: &str, token: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("x-purpose", "%E4%BD%8E%E4%BF%9D%E5%A4%8D%E6%A0%B8")
        .body(body)
        .unwrap()
}

async fn send(state: &AppState, r: Request<Body>) -> (StatusCode, Vec<u8>) {
    let resp = router(state.clone()).oneshot(r).await.unwrap();
    let s = resp.status();
    (s, resp.into_body().collect().await.unwrap().to_bytes().to_vec())
}

fn ndjson(bytes: &[u8]) -> Vec<Json> {
    bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect()
}

fn json_of(bytes: &[u8]) -> Json {
    serde_json::from_slice(bytes).unwrap()
}

/// Checks answers against `line(i, stored)` for i in 0..n.
fn check_answers(out: &[Json], n: u64, stored: u64) {
    assert_eq!(out.len() as u64, n);
    for (i, a) in out.iter().enumerate() {
        let i = i as u64;
        let expected = match i % 7 {
            6 => "invalid_key",
            5 => "invalid_body",
            _ if i % (stored + 1) == stored => "not_found",
            _ if i % 3 == 0 => "mismatch",
            _ => "match",
        };
        let got = a["result"].as_str().or(a["error"]["code"].as_str()).unwrap();
        assert_eq!(got, expected, "line {i}: {a}");
        if i % 7 != 5 {
            assert_eq!(a["ref"], format!("r{i}"), "line {i}");
        }
    }
}

#[tokio::test]
async fn batch_answers_every_line_in_order_and_audits_each() {
    let st = state(50);
    let n = 12_345;
    let before = st.store.audit_head().unwrap().seq;
    let (s, out) = send(&st, req("POST", "/v1/verify/batch", COUNTER, Body::from(body_of((0..n).map(|i| line(i, 50)))))).await;
    assert_eq!(s, StatusCode::OK);
    check_answers(&ndjson(&out), n, 50);
    assert_eq!(st.store.audit_head().unwrap().seq - before, n);
    let check = st.store.audit_verify().unwrap();
    assert!(check.ok, "{check:?}");
    // The entries say who, why, what and the outcome, in line order.
    let q = basedata_store::audit::AuditQuery { department: Some("counter".into()), limit: 7, ..Default::default() };
    let entries = st.store.audit_query(&q).unwrap();
    let outcomes: Vec<&str> = entries.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(outcomes, vec!["mismatch", "match", "match", "mismatch", "match", "invalid_body", "invalid_key"]);
    assert_eq!(entries[1].action, basedata_store::Action::BatchVerify);
    assert_eq!(entries[1].purpose, "低保复核");
    assert_eq!(entries[1].key, Some(SubjectKey::Person(person(1))));
    assert_eq!(entries[1].fields, vec!["name".to_string()]);
    assert_eq!(entries[1].datasets, vec!["hukou".to_string()]);
}

/// Reads answer frames into `got` until it holds `lines` lines, each
/// frame within 10 s (`what` says what failed otherwise).
async fn read_until(body: &mut Body, got: &mut Vec<u8>, lines: usize, what: &str) {
    while ndjson(got).len() < lines {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame()).await.expect(what).unwrap().unwrap();
        got.extend_from_slice(&frame.into_data().unwrap());
    }
}

#[tokio::test]
async fn batch_streams_answers_before_the_body_ends() {
    let st = state(10);
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
    let resp = router(st.clone()).oneshot(req("POST", "/v1/verify/batch", COUNTER, Body::new(body))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let mut resp_body = resp.into_body();
    // A full chunk and a half, then wait for answers while the body is open.
    let first = basedata_query::batch::CHUNK_LINES as u64 + 100;
    tx.send_data(Bytes::from(body_of((0..first).map(|i| line(i, 10))))).await.unwrap();
    let mut got = Vec::new();
    read_until(&mut resp_body, &mut got, basedata_query::batch::CHUNK_LINES, "answers arrive while the request is still open").await;
    // The half chunk is answered once the body pauses, before it ends.
    read_until(&mut resp_body, &mut got, first as usize, "the lines sent are answered while the body pauses").await;
    // A line sent in two pieces, with a pause between them, is one line.
    let more = body_of((first..first + 10).map(|i| line(i, 10)));
    let (a, b) = more.split_at(more.len() - 7);
    tx.send_data(Bytes::copy_from_slice(a)).await.unwrap();
    tokio::time::sleep(super::BODY_PAUSE * 3).await;
    tx.send_data(Bytes::copy_from_slice(b)).await.unwrap();
    drop(tx);
    got.extend_from_slice(&resp_body.collect().await.unwrap().to_bytes());
    check_answers(&ndjson(&got), first + 10, 10);
}

#[tokio::test]
async fn batch_needs_a_purpose_and_refuses_lines_per_dataset_access() {
    let st = state(3);
    let mut r = req("POST", "/v1/verify/batch", COUNTER, Body::from(line(1, 3)));
    r.headers_mut().remove("x-purpose");
    let (s, b) = send(&st, r).await;
    assert_eq!((s, json_of(&b)["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("purpose_required")));
    // weijian provides `death` only: hukou lines are refused, death lines answered.
    let k = person(1);
    let lines = [
        json!({"ref": 1, "subject": "person", "key": k.as_str(), "fields": {"name": "姓名1"}}),
        json!({"ref": 2, "subject": "person", "key": k.as_str(), "dataset": "death", "fields": {"death_date": "2020-01-01"}}),
    ];
    let before = st.store.audit_head().unwrap().seq;
    let (s, out) = send(&st, req("POST", "/v1/verify/batch", WEIJIAN, Body::from(body_of(lines.iter().map(|l| l.to_string()))))).await;
    assert_eq!(s, StatusCode::OK);
    let out = ndjson(&out);
    assert_eq!(out[0]["error"]["code"], "forbidden");
    assert_eq!(out[1]["result"], "not_found");
    let q = basedata_store::audit::AuditQuery { after: before, limit: 10, ..Default::default() };
    let actions: Vec<_> = st.store.audit_query(&q).unwrap().iter().map(|e| (e.action, e.outcome.clone())).collect();
    assert_eq!(
        actions,
        vec![(basedata_store::Action::Denied, "forbidden".into()), (basedata_store::Action::BatchVerify, "not_found".into())]
    );
    // An empty body is an empty answer.
    let (s, out) = send(&st, req("POST", "/v1/verify/batch", COUNTER, Body::empty())).await;
    assert_eq!((s, out.len()), (StatusCode::OK, 0));
}

async fn status(st: &AppState, id: &str, token: &str) -> (StatusCode, Json) {
    let (s, b) = send(st, req("GET", &format!("/v1/jobs/{id}"), token, Body::empty())).await;
    (s, json_of(&b))
}

#[tokio::test]
async fn jobs_are_private_conflict_until_done_then_answer_every_line() {
    let st = state(20);
    let n = 5_000;
    let (s, b) = send(&st, req("POST", "/v1/jobs", COUNTER, Body::from(body_of((0..n).map(|i| line(i, 20)))))).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let job = json_of(&b);
    assert_eq!(job["state"], "queued");
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    // No runner yet: the job waits, and its result is a conflict.
    let (s, j) = status(&st, &id, COUNTER).await;
    assert_eq!((s, j["state"].as_str(), j["total"].as_u64(), j["processed"].as_u64()), (StatusCode::OK, Some("queued"), Some(n), Some(0)));
    let (s, b) = send(&st, req("GET", &format!("/v1/jobs/{id}/result"), COUNTER, Body::empty())).await;
    assert_eq!((s, json_of(&b)["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    // Another department cannot tell the job exists; nor can a made-up id.
    for (path, token) in [
        (format!("/v1/jobs/{id}"), OTHER),
        (format!("/v1/jobs/{id}/result"), OTHER),
        ("/v1/jobs/00000000000000000000000000000000".to_owned(), COUNTER),
        ("/v1/jobs/not-an-id".to_owned(), COUNTER),
    ] {
        let (s, b) = send(&st, req("GET", &path, token, Body::empty())).await;
        assert_eq!((s, json_of(&b)["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{path}");
    }
    let before = st.store.audit_head().unwrap().seq;
    let runner = tokio::spawn(basedata_query::jobs::runner::runner(st.queries.clone()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let j = loop {
        let (_, j) = status(&st, &id, COUNTER).await;
        if j["state"] == "done" {
            break j;
        }
        assert!(std::time::Instant::now() < deadline, "job not done: {j}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    runner.abort();
    assert_eq!(j["processed"], n);
    let sum: u64 = ["matched", "mismatched", "not_found", "invalid"].iter().map(|k| j[k].as_u64().unwrap()).sum();
    assert_eq!(sum, n);
    assert_eq!(j["invalid"].as_u64().unwrap(), (0..n).filter(|i| i % 7 >= 5).count() as u64);
    // Audited once per line, in the submitter's name and purpose.
    assert_eq!(st.store.audit_head().unwrap().seq - before, n);
    let q = basedata_store::audit::AuditQuery { after: before, limit: 1, ..Default::default() };
    let e = &st.store.audit_query(&q).unwrap()[0];
    assert_eq!((e.department.as_str(), e.purpose.as_str(), e.action), ("counter", "低保复核", basedata_store::Action::BatchVerify));
    // The download is audited too: one more entry, naming the job.
    let (s, out) = send(&st, req("GET", &format!("/v1/jobs/{id}/result"), COUNTER, Body::empty())).await;
    assert_eq!(s, StatusCode::OK);
    check_answers(&ndjson(&out), n, 20);
    let head = st.store.audit_head().unwrap().seq;
    assert_eq!(head - before, n + 1);
    let q = basedata_store::audit::AuditQuery { after: head - 1, limit: 1, ..Default::default() };
    let e = &st.store.audit_query(&q).unwrap()[0];
    assert_eq!((e.department.as_str(), e.purpose.as_str()), ("counter", "低保复核"));
    assert_eq!((e.action, e.key, e.outcome.clone()), (basedata_store::Action::BatchVerify, None, format!("result_download:{id}")));
}

#[tokio::test]
async fn a_resumed_job_continues_after_its_last_answered_chunk() {
    // Simulates a crash after the first chunk: its answers and progress
    // were committed; the runner must neither redo nor skip a chunk.
    let st = state(5);
    let n = basedata_query::batch::CHUNK_LINES as u64 * 2 + 7;
    let (_, b) = send(&st, req("POST", "/v1/jobs", COUNTER, Body::from(body_of((0..n).map(|i| line(i, 5)))))).await;
    let id = basedata_query::jobs::JobId::parse(json_of(&b)["id"].as_str().unwrap()).unwrap();
    let engine = st.store.engine().clone();
    let mut meta = basedata_query::jobs::meta(&*engine, &id).unwrap().unwrap();
    assert_eq!(meta.chunks, 3);
    let first = basedata_query::jobs::input(&st.store, &id, 0).unwrap().unwrap();
    let done = basedata_query::batch::process(&st.store, &basedata_query::batch::Unrestricted, &first).unwrap();
    let mut w = basedata_store::WriteBatch::new();
    basedata_query::jobs::put_output(&st.store, &mut w, &id, 0, &done.out).unwrap();
    meta.state = basedata_query::jobs::JobState::Running;
    meta.done_chunks = 1;
    meta.counts = done.counts;
    basedata_query::jobs::put_meta(&mut w, &meta);
    engine.write(w, Durability::Sync).unwrap();
    let before = st.store.audit_head().unwrap().seq;
    let runner = tokio::spawn(basedata_query::jobs::runner::runner(st.queries.clone()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while status(&st, &id.to_hex(), COUNTER).await.1["state"] != "done" {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    runner.abort();
    let (_, out) = send(&st, req("GET", &format!("/v1/jobs/{}/result", id.to_hex()), COUNTER, Body::empty())).await;
    check_answers(&ndjson(&out), n, 5);
    // Only the two remaining chunks were audited now, and the download.
    assert_eq!(st.store.audit_head().unwrap().seq - before, n - first.lines as u64 + 1);
    assert_eq!(status(&st, &id.to_hex(), COUNTER).await.1["processed"], n);
}

#[tokio::test]
async fn a_job_waits_out_a_full_disk_and_then_finishes() {
    // A full disk is the machine's state, not the job's: the job must not
    // fail for good (its department would have to send it again), but go
    // on from its stored progress once the store takes writes again.
    let engine = Arc::new(MemEngine::new());
    let st = state_on(engine.clone(), 5, crate::http::Settings { max_body_bytes: 1 << 20, ..Default::default() });
    // One chunk: a chunk stored after a failed one would leave a gap in
    // the job's progress, and such a job fails rather than resume.
    let n = basedata_query::batch::CHUNK_LINES as u64 - 7;
    let (status_code, b) = send(&st, req("POST", "/v1/jobs", COUNTER, Body::from(body_of((0..n).map(|i| line(i, 5)))))).await;
    assert_eq!(status_code, StatusCode::ACCEPTED);
    let id = json_of(&b)["id"].as_str().unwrap().to_owned();
    // Started before the disk filled: the next few writes fail, its first
    // chunk's answers among them; the record of a failure, written after
    // them, would not.
    let job = basedata_query::jobs::JobId::parse(&id).unwrap();
    let mut meta = basedata_query::jobs::meta(&**st.store.engine(), &job).unwrap().unwrap();
    meta.state = basedata_query::jobs::JobState::Running;
    let mut w = basedata_store::WriteBatch::new();
    basedata_query::jobs::put_meta(&mut w, &meta);
    st.store.engine().write(w, Durability::Sync).unwrap();
    engine.fail_next_writes(1, "IO error: No space left on device: While appending to file: /data/journal/00000007: No space left on device");
    let runner = tokio::spawn(basedata_query::jobs::runner::runner(st.queries.clone()));
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let during = status(&st, &id, COUNTER).await.1;
    assert_eq!(during["state"], "running", "{during}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = status(&st, &id, COUNTER).await.1;
        if now["state"] == "done" {
            break;
        }
        assert_ne!(now["state"], "failed", "{now}");
        assert!(std::time::Instant::now() < deadline, "{now}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    runner.abort();
    let (_, out) = send(&st, req("GET", &format!("/v1/jobs/{id}/result"), COUNTER, Body::empty())).await;
    check_answers(&ndjson(&out), n, 5);
}

#[tokio::test]
async fn a_request_body_that_breaks_off_ends_in_an_aborted_answer() {
    // The answers so far may arrive, but never as a complete response.
    let st = state(3);
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
    let resp = router(st.clone()).oneshot(req("POST", "/v1/verify/batch", COUNTER, Body::new(body))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    tx.send_data(Bytes::from(body_of((0..10).map(|i| line(i, 3))))).await.unwrap();
    tx.abort(std::io::Error::other("client went away"));
    let collected = tokio::time::timeout(std::time::Duration::from_secs(10), resp.into_body().collect()).await.unwrap();
    assert!(collected.is_err(), "a broken-off request must not look answered in full");
}

/// A finished job is kept for the retention and then deleted with its
/// input and answers; running and queued ones never expire.
#[test]
fn finished_jobs_expire_after_the_retention() {
    use basedata_query::jobs::{JobId, JobMeta, JobState};
    let day = 86_400_000_000i64;
    let retention = std::time::Duration::from_secs(30 * 86_400);
    let mut m = JobMeta {
        state: JobState::Done,
        finished_at: Some(10 * day),
        total: 1,
        chunks: 1,
        done_chunks: 1,
        ..JobMeta::receiving(JobId([1; 16]), "counter", None, "p", 0)
    };
    assert!(!basedata_query::jobs::runner::expired(&m, 40 * day - 1, retention));
    assert!(basedata_query::jobs::runner::expired(&m, 40 * day, retention));
    m.state = JobState::Failed;
    assert!(basedata_query::jobs::runner::expired(&m, 41 * day, retention));
    for s in [JobState::Running, JobState::Queued, JobState::Receiving] {
        m.state = s;
        assert!(!basedata_query::jobs::runner::expired(&m, 400 * day, retention), "{s:?}");
    }
    m.state = JobState::Done;
    m.finished_at = None;
    assert!(!basedata_query::jobs::runner::expired(&m, 400 * day, retention));
}

#[tokio::test]
async fn the_runner_deletes_jobs_past_their_retention() {
    let settings = crate::http::Settings { job_retention: std::time::Duration::ZERO, ..Default::default() };
    let st = state_with(5, settings);
    let n = 300;
    let before = st.store.audit_head().unwrap().seq;
    let (s, b) = send(&st, req("POST", "/v1/jobs", COUNTER, Body::from(body_of((0..n).map(|i| line(i, 5)))))).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let id = json_of(&b)["id"].as_str().unwrap().to_owned();
    let runner = tokio::spawn(basedata_query::jobs::runner::runner(st.queries.clone()));
    // Done, then deleted at the runner's next look (no retention at all).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while status(&st, &id, COUNTER).await.0 != StatusCode::NOT_FOUND {
        assert!(std::time::Instant::now() < deadline, "the job was not deleted");
        st.queries.wake_jobs();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    runner.abort();
    assert!(basedata_query::jobs::all(&**st.store.engine()).unwrap().is_empty());
    let left = st.store.engine().scan(basedata_store::Cf::Jobs, &[], None, false).unwrap().count();
    assert_eq!(left, 0, "input and answers are deleted with the job");
    // Its lines' audit entries stay.
    assert_eq!(st.store.audit_head().unwrap().seq - before, n);
}

/// An upload an earlier process left half-received is discarded before
/// the server takes requests, however its time compares with the clock's
/// (one set back makes it look newer than the start); the runner itself
/// leaves uploads alone, so one being received while it looks goes on.
#[tokio::test]
async fn uploads_left_half_received_are_discarded_at_start_only() {
    use basedata_query::jobs::{JobId, JobMeta};
    let st = state_with(5, Default::default());
    let now = st.store.clock().now_micros();
    let receiving = |id: u8, created_at: i64| JobMeta::receiving(JobId([id; 16]), "counter", None, "p", created_at);
    let put = |m: &JobMeta| {
        let mut b = basedata_store::WriteBatch::new();
        basedata_query::jobs::put_meta(&mut b, m);
        st.store.engine().write(b, basedata_store::Durability::Sync).unwrap();
    };
    put(&receiving(1, now + 3_600_000_000));
    put(&receiving(2, now - 1));
    let ids = || basedata_query::jobs::all(&**st.store.engine()).unwrap().iter().map(|m| m.id.0[0]).collect::<Vec<_>>();
    assert_eq!(basedata_query::jobs::runner::discard_leftover_uploads(&st.store).unwrap(), 2);
    assert_eq!(ids(), Vec::<u8>::new());
    put(&receiving(3, now - 3_600_000_000));
    let runner = tokio::spawn(basedata_query::jobs::runner::runner(st.queries.clone()));
    for _ in 0..5 {
        st.queries.wake_jobs();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    runner.abort();
    assert_eq!(ids(), vec![3], "being received, as far as the runner knows");
}

/// A store with `n` persons and the given departments.
fn state_with_departments(n: u64, depts: &[DepartmentConfig]) -> AppState {
    let settings = crate::http::Settings { max_body_bytes: 1 << 20, ..Default::default() };
    AppState::build(Arc::new(store_of(n)), Departments::from_config(depts).unwrap(), settings).unwrap()
}

async fn send_with_headers(state: &AppState, r: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Json) {
    let resp = router(state.clone()).oneshot(r).await.unwrap();
    let (s, h) = (resp.status(), resp.headers().clone());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (s, h, serde_json::from_slice(&body).unwrap_or(Json::Null))
}

/// Every stored piece of every job, and the metas among them.
fn stored_job_entries(st: &AppState) -> (usize, usize) {
    let all = st.store.engine().scan(basedata_store::Cf::Jobs, &[], None, false).unwrap().count();
    (all, basedata_query::jobs::all(&**st.store.engine()).unwrap().len())
}

async fn wait_done(st: &AppState, id: &str, token: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while status(st, id, token).await.1["state"] != "done" {
        assert!(std::time::Instant::now() < deadline, "job {id} not done");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `max_body_mb` applies to jobs too (unless the department has its own
/// `max_job_mb`): a bigger body is `413`, whether its length is announced
/// or only found while it streams, and nothing of it stays stored.
#[tokio::test]
async fn a_job_over_the_byte_limit_is_refused_and_leaves_nothing() {
    let st = state(5);
    let lines = (0..20_000).map(|i| line(i, 5));
    let body = body_of(lines);
    assert!(body.len() > 1 << 20);
    // Streamed, length unknown: refused once past the limit.
    let (s, h, j) = send_with_headers(&st, req("POST", "/v1/jobs", COUNTER, Body::from(body.clone()))).await;
    assert_eq!((s, j["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")), "{j}");
    assert!(h.get("retry-after").is_none());
    assert_eq!(stored_job_entries(&st), (0, 0), "a refused job leaves nothing behind");
    // Announced: refused before it is read.
    let mut r = req("POST", "/v1/jobs", COUNTER, Body::from(body.clone()));
    r.headers_mut().insert("content-length", body.len().into());
    let (s, _, j) = send_with_headers(&st, r).await;
    assert_eq!((s, j["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")));
    assert_eq!(stored_job_entries(&st), (0, 0));
    // A department's own limit replaces the server's.
    let mut big = dept("counter", vec![Role::Consumer], COUNTER);
    big.max_job_mb = Some(4);
    let st = state_with_departments(5, &[big]);
    let (s, _, j) = send_with_headers(&st, req("POST", "/v1/jobs", COUNTER, Body::from(body))).await;
    assert_eq!((s, j["total"].as_u64()), (StatusCode::ACCEPTED, Some(20_000)), "{j}");
}

#[tokio::test]
async fn a_job_over_the_line_limit_is_refused_and_leaves_nothing() {
    let mut d = dept("counter", vec![Role::Consumer], COUNTER);
    d.max_job_lines = Some(3000);
    let st = state_with_departments(5, &[d]);
    // Past the limit in a later piece of the body, after a chunk was
    // stored: what was stored is deleted.
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
    tx.send_data(Bytes::from(body_of((0..2500).map(|i| line(i, 5))))).await.unwrap();
    tx.send_data(Bytes::from(body_of((2500..3001).map(|i| line(i, 5))))).await.unwrap();
    drop(tx);
    let (s, _, j) = send_with_headers(&st, req("POST", "/v1/jobs", COUNTER, Body::new(body))).await;
    assert_eq!((s, j["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")), "{j}");
    assert_eq!(stored_job_entries(&st), (0, 0), "a refused job leaves nothing behind");
    // Blank lines are not request lines: exactly at the limit is taken.
    let mut body = body_of((0..3000).map(|i| line(i, 5)));
    body.extend_from_slice(b"\n\n");
    let (s, _, j) = send_with_headers(&st, req("POST", "/v1/jobs", COUNTER, Body::from(body))).await;
    assert_eq!((s, j["total"].as_u64()), (StatusCode::ACCEPTED, Some(3000)), "{j}");
}

/// A department with `max_jobs` unfinished jobs gets `429 overloaded` with
/// `Retry-After` for the next, before anything is stored; others are not
/// affected, and once its jobs are done it may submit again.
#[tokio::test]
async fn too_many_unfinished_jobs_are_refused_with_retry_after() {
    let mut d = dept("counter", vec![Role::Consumer], COUNTER);
    d.max_jobs = Some(2);
    let st = state_with_departments(5, &[d, dept("other", vec![Role::Consumer], OTHER)]);
    let submit = |token: &'static str| {
        let st = st.clone();
        async move { send_with_headers(&st, req("POST", "/v1/jobs", token, Body::from(body_of((0..10).map(|i| line(i, 5)))))).await }
    };
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (s, _, j) = submit(COUNTER).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{j}");
        ids.push(j["id"].as_str().unwrap().to_owned());
    }
    let stored = stored_job_entries(&st);
    let (s, h, j) = submit(COUNTER).await;
    assert_eq!((s, j["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("overloaded")), "{j}");
    assert_eq!(j["error"]["details"]["max_jobs"], 2);
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(stored_job_entries(&st), stored, "a refused job stores nothing");
    // Another department's limit is its own (default 4).
    for _ in 0..4 {
        assert_eq!(submit(OTHER).await.0, StatusCode::ACCEPTED);
    }
    assert_eq!(submit(OTHER).await.0, StatusCode::TOO_MANY_REQUESTS);
    let runner = tokio::spawn(basedata_query::jobs::runner::runner(st.queries.clone()));
    for id in &ids {
        wait_done(&st, id, COUNTER).await;
    }
    runner.abort();
    assert_eq!(submit(COUNTER).await.0, StatusCode::ACCEPTED, "done jobs no longer count");
}

/// A batch comparison's work goes on while its answers stream: it holds
/// its place under the department's concurrency cap until its body is done
/// with, not only until the answer's head is produced.
#[tokio::test]
async fn a_streamed_batch_counts_against_the_concurrency_cap_until_its_body_is_done() {
    let mut d = dept("counter", vec![Role::Consumer], COUNTER);
    d.max_concurrent = Some(1);
    let st = state_with_departments(5, &[d]);
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
    let first = router(st.clone()).oneshot(req("POST", "/v1/verify/batch", COUNTER, Body::new(body))).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    tx.send_data(Bytes::from(body_of((0..3).map(|i| line(i, 5))))).await.unwrap();
    let another = || req("POST", "/v1/verify/batch", COUNTER, Body::from(body_of((0..3).map(|i| line(i, 5)))));
    let (s, h, j) = send_with_headers(&st, another()).await;
    assert_eq!((s, j["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("overloaded")), "{j}");
    assert!(h.contains_key("retry-after"));
    // Once the first comparison's body has ended and been read, its place is free.
    drop(tx);
    let answers = tokio::time::timeout(std::time::Duration::from_secs(10), first.into_body().collect()).await.unwrap().unwrap();
    assert_eq!(ndjson(&answers.to_bytes()).len(), 3);
    let (s, body) = send(&st, another()).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
}

/// A client that goes away while it uploads a job drops the request's
/// future; what the job stored is discarded all the same, and it does not
/// count against the department's unfinished jobs.
#[tokio::test]
async fn a_job_whose_client_goes_away_mid_upload_leaves_nothing_and_does_not_count() {
    let mut d = dept("counter", vec![Role::Consumer], COUNTER);
    d.max_jobs = Some(1);
    let st = state_with_departments(5, &[d]);
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
    tx.send_data(Bytes::from(body_of((0..2500).map(|i| line(i, 5))))).await.unwrap();
    let upload = router(st.clone()).oneshot(req("POST", "/v1/jobs", COUNTER, Body::new(body)));
    // The connection closes: hyper drops the request's future, then
    // fails its body (hyper's body sender does so when dropped).
    assert!(tokio::time::timeout(std::time::Duration::from_millis(300), upload).await.is_err(), "still receiving");
    assert_eq!(stored_job_entries(&st).1, 1, "the job was admitted and was receiving");
    tx.abort(std::io::Error::other("connection closed"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while stored_job_entries(&st) != (0, 0) {
        assert!(std::time::Instant::now() < deadline, "the given-up job was not discarded: {:?}", stored_job_entries(&st));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let next = req("POST", "/v1/jobs", COUNTER, Body::from(body_of((0..10).map(|i| line(i, 5)))));
    let (s, _, j) = send_with_headers(&st, next).await;
    assert_eq!(s, StatusCode::ACCEPTED, "the department's one job slot is free again: {j}");
}

/// Department `counter` queues a job of many slices, then `other` a
/// one-line job: the one-line job is answered after one slice of the long
/// one, not after all of it. The audit trail records the order in which
/// lines were verified (chunk by chunk, in commit order).
#[tokio::test]
async fn a_one_line_job_does_not_wait_for_another_departments_long_job() {
    use basedata_query::batch::CHUNK_LINES;
    use basedata_query::jobs::runner::SLICE_CHUNKS;
    let st = state_with(20, crate::http::Settings::default());
    let slice_lines = SLICE_CHUNKS * CHUNK_LINES as u64;
    let long = 3 * slice_lines + 5;
    let (s, b) = send(&st, req("POST", "/v1/jobs", COUNTER, Body::from(body_of((0..long).map(|i| line(i, 20)))))).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let long_id = json_of(&b)["id"].as_str().unwrap().to_owned();
    let (s, b) = send(&st, req("POST", "/v1/jobs", OTHER, Body::from(body_of(std::iter::once(line(1, 20)))))).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let short_id = json_of(&b)["id"].as_str().unwrap().to_owned();
    let before = st.store.audit_head().unwrap().seq;
    let runner = tokio::spawn(basedata_query::jobs::runner::runner(st.queries.clone()));
    wait_done(&st, &long_id, COUNTER).await;
    wait_done(&st, &short_id, OTHER).await;
    runner.abort();
    let entries = |dept: &str| {
        let q = basedata_store::audit::AuditQuery { department: Some(dept.into()), after: before, limit: 1_000_000, ..Default::default() };
        st.store.audit_query(&q).unwrap().iter().map(|e| e.seq).collect::<Vec<u64>>()
    };
    let (long_seqs, short_seqs) = (entries("counter"), entries("other"));
    assert_eq!((long_seqs.len() as u64, short_seqs.len()), (long, 1));
    let long_before_short = long_seqs.iter().filter(|s| **s < short_seqs[0]).count() as u64;
    assert!(long_before_short <= slice_lines, "the short job waited for {long_before_short} lines of the long one");
    assert!(long - long_before_short >= 2 * slice_lines, "the short job was done while the long one went on");
}

/// Past the server's places for streaming batches, a batch is told to
/// retry (429 `overloaded`, `Retry-After`), and a place is free again once
/// a stream's answer ends.
#[tokio::test]
async fn batches_past_the_servers_streams_are_told_to_retry() {
    let mut st = state(10);
    st.batch_streams = Arc::new(tokio::sync::Semaphore::new(1));
    let (tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
    let first = router(st.clone()).oneshot(req("POST", "/v1/verify/batch", COUNTER, Body::new(body))).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let another = || req("POST", "/v1/verify/batch", OTHER, Body::from(body_of((0..3).map(|i| line(i, 5)))));
    let (s, headers, err) = send_with_headers(&st, another()).await;
    assert_eq!((s, err["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("overloaded")), "{err}");
    assert_eq!(headers["retry-after"], "1");
    drop(tx);
    let answered = first.into_body().collect().await.unwrap().to_bytes();
    assert!(answered.is_empty(), "an empty body, answered");
    // The relay gives its place back just after the answer ends.
    let mut again = (StatusCode::TOO_MANY_REQUESTS, Vec::new());
    for _ in 0..100 {
        again = send(&st, another()).await;
        if again.0 != StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(again.0, StatusCode::OK);
    check_answers(&ndjson(&again.1), 3, 5);
}
