//! The fast route of subject reads held to the router: the same requests sent
//! to two equal stores, one through [`Edge`] and one through the router
//! alone, must get the same answers byte for byte, leave the same audit
//! trail and count the same in the metrics.

use super::*;
use crate::config::Role;
use crate::http::tests::dept;
use crate::http::{router, AppState, Settings};
use crate::auth::Departments;
use axum::body::Body;
use axum::http::{HeaderMap, Request as HttpRequest, StatusCode};
use basedata_gen::{person_hukou, person_key, GenConfig};
use basedata_store::clock::ManualClock;
use basedata_store::engine::mem::MemEngine;
use basedata_store::{Catalog, Secret, Store};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

const PROVIDER: &str = "edge-provider-token-01";
const COUNTER: &str = "edge-counter-token-001";
const STRICT: &str = "edge-strict-token-0001";
const AUDITOR: &str = "edge-auditor-token-001";
const PERSONS: u64 = 4;

/// A store with `PERSONS` hukou records, the same every time.
async fn world() -> AppState {
    world_with(Settings::default()).await
}

async fn world_with(settings: Settings) -> AppState {
    world_on(Arc::new(MemEngine::new()), settings).await
}

async fn world_on(engine: Arc<dyn basedata_store::Engine>, settings: Settings) -> AppState {
    let clock = Arc::new(ManualClock::new(1_763_800_000_000_000));
    let store = Store::open(engine, &Secret::from_bytes([9; 32]), Arc::new(Catalog::builtin()), clock).unwrap();
    let departments = Departments::from_config(&[
        dept("gongan", "gongan", vec![Role::Provider], PROVIDER, None),
        dept("counter", "counter", vec![Role::Consumer], COUNTER, None),
        dept("strict", "strict", vec![Role::Consumer], STRICT, Some(vec!["social_insurance"])),
        dept("audit", "audit", vec![Role::Auditor], AUDITOR, None),
    ])
    .unwrap();
    let state = AppState::build(Arc::new(store), departments, settings).unwrap();
    let g = gen();
    let lines: Vec<String> = (0..PERSONS)
        .map(|i| json!({"key": person_key(&g, i).as_str(), "version": 1, "op": "upsert", "fields": person_hukou(&g, i)}).to_string())
        .collect();
    let req = HttpRequest::post("/v1/datasets/hukou/updates")
        .header("authorization", format!("Bearer {PROVIDER}"))
        .header("content-type", "application/x-ndjson")
        .body(Body::from(lines.join("\n")))
        .unwrap();
    let resp = router(state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    state
}

fn gen() -> GenConfig {
    GenConfig { persons: PERSONS, entities: 0, seed: 11 }
}

fn peer() -> crate::tls::TlsPeer {
    crate::tls::TlsPeer { addr: "127.0.0.1:40000".parse().unwrap(), subject: None, tls: false }
}

/// One request, built afresh for each side.
struct Case {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// Whether the fast route takes it.
    fast: bool,
}

impl Case {
    fn request(&self) -> HttpRequest<Body> {
        let mut b = HttpRequest::builder().method(self.method).uri(&self.path);
        for (k, v) in &self.headers {
            b = b.header(*k, v);
        }
        b.body(Body::from(self.body.clone())).unwrap()
    }
}

async fn answer(resp: Response) -> (StatusCode, HeaderMap, Vec<u8>) {
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.into_body().collect().await.unwrap().to_bytes().to_vec())
}

fn cases() -> Vec<Case> {
    let g = gen();
    let key = |i| person_key(&g, i).as_str().to_owned();
    let name = |i| person_hukou(&g, i)["name"].as_str().unwrap().to_owned();
    let claim = |_: u64, n: &str| json!({"dataset": "hukou", "fields": {"name": n}}).to_string().into_bytes();
    let std = |token: &str, purpose: Option<&str>, rid: usize| {
        let mut h = vec![("authorization", format!("Bearer {token}")), ("content-type", "application/json".into())];
        if let Some(p) = purpose {
            h.push(("x-purpose", p.into()));
        }
        h.push(("x-request-id", format!("edge-{rid}")));
        h
    };
    let verify = |i: u64| format!("/v1/persons/{}/verify", key(i));
    let lookup = |i: u64| format!("/v1/persons/{}", key(i));
    let mut v = vec![
        // match, mismatch, and the same with an operator named
        Case { method: "POST", path: verify(0), headers: std(COUNTER, Some("benchmark"), 1), body: claim(0, &name(0)), fast: true },
        Case { method: "POST", path: verify(1), headers: std(COUNTER, Some("benchmark"), 2), body: claim(1, "不是这个名字"), fast: true },
        Case {
            method: "POST",
            path: verify(2),
            headers: [std(COUNTER, Some("social_insurance; 复核"), 3), vec![("x-operator", "clerk-7".into())]].concat(),
            body: claim(2, &name(2)),
            fast: true,
        },
        // a subject with no record
        Case { method: "POST", path: verify(PERSONS + 1), headers: std(COUNTER, Some("benchmark"), 4), body: claim(0, "某"), fast: true },
        // refusals on the way in, in the layers' order
        Case { method: "POST", path: verify(0), headers: vec![("x-request-id", "edge-5".into())], body: claim(0, "x"), fast: true },
        Case { method: "POST", path: verify(0), headers: std("not-a-known-token-000", Some("benchmark"), 6), body: claim(0, "x"), fast: true },
        Case { method: "POST", path: verify(0), headers: std(COUNTER, None, 7), body: claim(0, "x"), fast: true },
        Case { method: "POST", path: verify(0), headers: std(STRICT, Some("benchmark"), 8), body: claim(0, "x"), fast: true },
        Case {
            method: "POST",
            path: verify(0),
            headers: [std(COUNTER, Some("benchmark"), 9), vec![("x-operator", "%0Aforged".into())]].concat(),
            body: claim(0, "x"),
            fast: true,
        },
        // bad keys and bodies
        Case { method: "POST", path: "/v1/persons/110105194912310021/verify".into(), headers: std(COUNTER, Some("benchmark"), 10), body: claim(0, "x"), fast: true },
        Case { method: "POST", path: verify(0), headers: std(COUNTER, Some("benchmark"), 11), body: b"{\"dataset\":".to_vec(), fast: true },
        Case { method: "POST", path: verify(0), headers: std(COUNTER, Some("benchmark"), 12), body: br#"{"dataset":"nope","fields":{"name":"x"}}"#.to_vec(), fast: true },
        Case { method: "POST", path: verify(0), headers: std(COUNTER, Some("benchmark"), 13), body: vec![b' '; 3 << 20], fast: true },
        // an entity (none are held)
        Case {
            method: "POST",
            path: "/v1/entities/91350100M000100Y43/verify".into(),
            headers: std(COUNTER, Some("benchmark"), 14),
            body: br#"{"fields":{"name":"x"}}"#.to_vec(),
            fast: true,
        },
        // a request id of the server's making
        Case { method: "POST", path: verify(3), headers: std(COUNTER, Some("benchmark"), 15)[..3].to_vec(), body: claim(3, &name(3)), fast: true },
        // query strings: a document type named, a wrong one, one that does not parse, one the handler ignores
        Case { method: "POST", path: format!("{}?id_type=citizen_id", verify(0)), headers: std(COUNTER, Some("benchmark"), 16), body: claim(0, &name(0)), fast: true },
        Case { method: "POST", path: format!("{}?id_type=unified_credit_code", verify(0)), headers: std(COUNTER, Some("benchmark"), 22), body: claim(0, "x"), fast: true },
        Case { method: "POST", path: format!("{}?id_type=a&id_type=b", verify(0)), headers: std(COUNTER, Some("benchmark"), 23), body: claim(0, "x"), fast: true },
        Case { method: "POST", path: format!("{}?", verify(0)), headers: std(COUNTER, Some("benchmark"), 24), body: claim(0, &name(0)), fast: true },
        // lookups: all datasets, one, one unknown, as of a time, a bad time, a subject with no record
        Case { method: "GET", path: lookup(0), headers: std(COUNTER, Some("benchmark"), 30), body: vec![], fast: true },
        Case { method: "GET", path: format!("{}?datasets=hukou", lookup(1)), headers: std(COUNTER, Some("benchmark"), 31), body: vec![], fast: true },
        Case { method: "GET", path: format!("{}?datasets=nope", lookup(1)), headers: std(COUNTER, Some("benchmark"), 32), body: vec![], fast: true },
        Case { method: "GET", path: format!("{}?as_of=2025-11-22T08:00:00Z", lookup(2)), headers: std(COUNTER, Some("benchmark"), 33), body: vec![], fast: true },
        Case { method: "GET", path: format!("{}?as_of=yesterday", lookup(2)), headers: std(COUNTER, Some("benchmark"), 34), body: vec![], fast: true },
        Case { method: "GET", path: lookup(PERSONS + 2), headers: std(COUNTER, Some("benchmark"), 35), body: vec![], fast: true },
        Case { method: "GET", path: "/v1/entities/91350100M000100Y43".into(), headers: std(COUNTER, Some("benchmark"), 36), body: vec![], fast: true },
        Case { method: "GET", path: lookup(0), headers: std(COUNTER, None, 37), body: vec![], fast: true },
        Case { method: "GET", path: lookup(0), headers: std(STRICT, Some("benchmark"), 38), body: vec![], fast: true },
        Case { method: "GET", path: lookup(0), headers: std("not-a-known-token-000", Some("benchmark"), 39), body: vec![], fast: true },
        Case { method: "GET", path: "/v1/persons/12345".into(), headers: std(COUNTER, Some("benchmark"), 40), body: vec![], fast: true },
        // left to the router
        Case { method: "HEAD", path: lookup(0), headers: std(COUNTER, Some("benchmark"), 41), body: vec![], fast: false },
        Case { method: "POST", path: lookup(0), headers: std(COUNTER, Some("benchmark"), 42), body: claim(0, "x"), fast: false },
        Case { method: "GET", path: format!("{}/", lookup(0)), headers: std(COUNTER, Some("benchmark"), 43), body: vec![], fast: false },
        Case { method: "GET", path: "/v1/persons/".into(), headers: std(COUNTER, Some("benchmark"), 44), body: vec![], fast: false },
        Case { method: "POST", path: verify(0).replacen("/v1/persons/", "/v1/persons/%20", 1), headers: std(COUNTER, Some("benchmark"), 17), body: claim(0, &name(0)), fast: false },
        Case { method: "GET", path: verify(0), headers: std(COUNTER, Some("benchmark"), 18), body: vec![], fast: false },
        Case { method: "POST", path: "/v1/persons//verify".into(), headers: std(COUNTER, Some("benchmark"), 19), body: claim(0, "x"), fast: false },
        Case { method: "POST", path: format!("{}/", verify(0)), headers: std(COUNTER, Some("benchmark"), 20), body: claim(0, "x"), fast: false },
    ];
    // The same verifications again, so that repeated uses are compared too.
    v.push(Case { method: "POST", path: verify(0), headers: std(COUNTER, Some("benchmark"), 21), body: claim(0, &name(0)), fast: true });
    // Submissions: applied, stale, a line rejected, a JSON array, and the
    // refusals on the way in; then what the router keeps.
    let line = |i: u64, version: u64| json!({"key": key(i), "version": version, "op": "upsert", "fields": person_hukou(&g, i)}).to_string();
    let ndjson = |token: &str, rid: usize| {
        vec![("authorization", format!("Bearer {token}")), ("content-type", "application/x-ndjson".into()), ("x-request-id", format!("edge-{rid}"))]
    };
    let updates = "/v1/datasets/hukou/updates".to_owned();
    v.extend([
        Case { method: "POST", path: updates.clone(), headers: ndjson(PROVIDER, 50), body: line(0, 2).into_bytes(), fast: true },
        Case { method: "POST", path: updates.clone(), headers: ndjson(PROVIDER, 51), body: line(0, 2).into_bytes(), fast: true },
        Case {
            method: "POST",
            path: updates.clone(),
            headers: ndjson(PROVIDER, 52),
            body: format!("{}\n{{\"key\":\"12345\",\"version\":1,\"op\":\"delete\"}}\n{}", line(1, 2), line(2, 2)).into_bytes(),
            fast: true,
        },
        Case {
            method: "POST",
            path: updates.clone(),
            headers: [ndjson(PROVIDER, 53), vec![("content-type", "application/json".into())]].concat(),
            body: format!("[{}]", line(3, 2)).into_bytes(),
            fast: true,
        },
        Case { method: "POST", path: updates.clone(), headers: ndjson(COUNTER, 54), body: line(0, 3).into_bytes(), fast: true },
        Case { method: "POST", path: updates.clone(), headers: ndjson("not-a-known-token-000", 55), body: line(0, 3).into_bytes(), fast: true },
        Case { method: "POST", path: updates.clone(), headers: vec![("x-request-id", "edge-56".into())], body: line(0, 3).into_bytes(), fast: true },
        Case { method: "POST", path: "/v1/datasets/nope/updates".into(), headers: ndjson(PROVIDER, 57), body: line(0, 3).into_bytes(), fast: true },
        Case {
            method: "POST",
            path: updates.clone(),
            headers: [ndjson(PROVIDER, 58), vec![("content-type", "text/csv".into())]].concat(),
            body: line(0, 3).into_bytes(),
            fast: true,
        },
        Case { method: "POST", path: updates.clone(), headers: ndjson(PROVIDER, 59), body: b"{\"key\":".to_vec(), fast: true },
        Case { method: "POST", path: "/v1/datasets/hu%6Bou/updates".into(), headers: ndjson(PROVIDER, 60), body: line(0, 4).into_bytes(), fast: false },
        Case { method: "GET", path: updates.clone(), headers: ndjson(PROVIDER, 61), body: vec![], fast: false },
        Case { method: "POST", path: format!("{updates}/"), headers: ndjson(PROVIDER, 62), body: line(0, 4).into_bytes(), fast: false },
        Case { method: "POST", path: "/v1/datasets//updates".into(), headers: ndjson(PROVIDER, 63), body: line(0, 4).into_bytes(), fast: false },
    ]);
    v
}

/// Whether the fast route takes `req`: a subject read or a submission.
fn taken(req: &HttpRequest<Body>) -> bool {
    subject_read(req).is_some() || submission_of(req.method(), req.uri().path()).is_some()
}

#[tokio::test]
async fn the_fast_route_answers_audits_and_counts_as_the_router_does() {
    let (fast, slow) = (world().await, world().await);
    let edge = Edge::new(router(fast.clone()), &fast);
    let plain = router(slow.clone());
    let mut fast_taken = 0;
    for (i, case) in cases().iter().enumerate() {
        let req = case.request();
        assert_eq!(taken(&req), case.fast, "case {i}: {} {}", case.method, case.path);
        fast_taken += usize::from(case.fast);
        let (s1, mut h1, b1) = answer(edge.call(req, &peer()).await).await;
        let (s2, mut h2, b2) = answer(plain.clone().oneshot(case.request()).await.unwrap()).await;
        if !case.headers.iter().any(|(k, _)| *k == "x-request-id") {
            // Fresh ids differ; both must carry one.
            assert!(h1.remove("x-request-id").is_some() && h2.remove("x-request-id").is_some(), "case {i}");
        }
        // The router states the length of a full body; hyper does so on
        // the wire for both.
        for (h, b) in [(&mut h1, &b1), (&mut h2, &b2)] {
            if let Some(n) = h.remove("content-length") {
                // A HEAD answer states the length of the GET's body.
                if case.method != "HEAD" {
                    assert_eq!(n.to_str().unwrap(), b.len().to_string(), "case {i}");
                }
            }
        }
        assert_eq!(
            (s1, &h1, String::from_utf8_lossy(&b1)),
            (s2, &h2, String::from_utf8_lossy(&b2)),
            "case {i}: {} {}",
            case.method,
            case.path
        );
    }
    assert!(fast_taken >= 30, "the fast route was taken {fast_taken} times");

    // The audit trails: entry for entry, hashes included (same secret,
    // same clock, same order of uses).
    let trail = |state: AppState| async move {
        let req = HttpRequest::get("/v1/audit?limit=1000").header("authorization", format!("Bearer {AUDITOR}")).body(Body::empty()).unwrap();
        let (s, _, b) = answer(router(state).oneshot(req).await.unwrap()).await;
        assert_eq!(s, StatusCode::OK);
        serde_json::from_slice::<Value>(&b).unwrap()
    };
    let (t1, t2) = (trail(fast.clone()).await, trail(slow.clone()).await);
    let entries = t1["entries"].as_array().expect("entries");
    assert!(entries.iter().filter(|e| e["action"] == "verify").count() >= 6, "{t1}");
    assert!(entries.iter().filter(|e| e["action"] == "lookup").count() >= 4, "{t1}");
    assert!(entries.iter().any(|e| e["outcome"].as_str().is_some_and(|o| o.contains("purpose"))), "the refused purpose is audited: {t1}");
    assert!(entries.iter().filter(|e| e["action"] == "update").count() >= 5, "{t1}");
    assert_eq!(t1, t2);

    // The metrics: the same requests counted under the same labels (times
    // differ, so histogram sums and buckets are left out).
    let counted = |state: &AppState| -> Vec<String> {
        state
            .metrics
            .render(&state.store, state.committer.stats())
            .lines()
            .filter(|l| {
                (l.contains("/v1/persons") || l.contains("/v1/entities") || l.contains("/v1/datasets"))
                    && !l.starts_with('#')
                    && !l.contains("_bucket")
                    && !l.contains("_sum")
            })
            .map(str::to_owned)
            .collect()
    };
    let (m1, m2) = (counted(&fast), counted(&slow));
    for route in ["/v1/persons/{id}/verify", "/v1/persons/{id}", "/v1/entities/{code}", "/v1/datasets/{dataset}/updates"] {
        assert!(m1.iter().any(|l| l.contains(&format!("route=\"{route}\""))), "{route}: {m1:#?}");
    }
    assert_eq!(m1, m2);
}

/// The time limit holds on the fast route as on the router: a read that
/// waits for its audit entry past the limit is answered 503 by both.
#[tokio::test]
async fn a_read_past_the_time_limit_is_answered_503_by_both() {
    let limited = || Settings { request_timeout: std::time::Duration::from_millis(20), ..Settings::default() };
    // Every write, the audit entries' group commits among them, takes 200 ms.
    let slow_disk = || {
        let engine = MemEngine::new();
        engine.delay_writes(std::time::Duration::from_millis(200));
        Arc::new(engine)
    };
    let fast = world_on(slow_disk(), limited()).await;
    let slow = world_on(slow_disk(), limited()).await;
    let edge = Edge::new(router(fast.clone()), &fast);
    let g = gen();
    let key = person_key(&g, 0).as_str().to_owned();
    let headers = |b: axum::http::request::Builder| {
        b.header("authorization", format!("Bearer {COUNTER}")).header("x-purpose", "benchmark").header("x-request-id", "late-1")
    };
    let claim = json!({"dataset": "hukou", "fields": {"name": "x"}}).to_string();
    for (method, path, body) in [("POST", format!("/v1/persons/{key}/verify"), claim), ("GET", format!("/v1/persons/{key}"), String::new())] {
        let req = || headers(HttpRequest::builder().method(method).uri(&path)).body(Body::from(body.clone())).unwrap();
        assert!(subject_read(&req()).is_some());
        let (s1, h1, b1) = answer(edge.call(req(), &peer()).await).await;
        let (s2, _, b2) = answer(router(slow.clone()).oneshot(req()).await.unwrap()).await;
        assert_eq!((s1, String::from_utf8_lossy(&b1)), (s2, String::from_utf8_lossy(&b2)), "{method} {path}");
        assert_eq!(s1, StatusCode::SERVICE_UNAVAILABLE, "{}", String::from_utf8_lossy(&b1));
        assert_eq!(h1["x-request-id"], "late-1");
    }
}

#[tokio::test]
async fn a_verifications_future_holds_each_step_once() {
    // Each request allocates its future and hyper moves it: a wrapper
    // written as an `async fn` over the future it is handed holds it twice
    // (argument and await slot), and three such wrappers made 15.6 KB of
    // a 3.5 KB verification. The bound leaves room for compiler changes,
    // not for one more doubling.
    let state = world().await;
    let req = || Request::builder().method("POST").uri("/v1/persons/x/verify").body(axum::body::Body::empty()).unwrap();
    let whole = std::mem::size_of_val(&serve(state.clone(), req(), None, Read::Verify, Subject::Person, "x".into()));
    let inner = std::mem::size_of_val(&admitted(&state, req(), None, Read::Verify, Subject::Person, "x".into()));
    assert!(whole < inner * 2, "serve {whole} bytes around admitted {inner}");
}

/// A server on a loopback port serving `state` as `basedata serve` does
/// (the edge over the router, the connection code); its connection
/// figures, and the sender that shuts it down.
async fn listening(state: &AppState) -> (std::net::SocketAddr, Arc<crate::conn::ConnStats>, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(crate::conn::ConnStats::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let edge = Edge::new(router(state.clone()), state);
    tokio::spawn(crate::conn::serve(listener, None, edge, crate::conn::ConnLimits::default(), stats.clone(), async {
        let _ = stopped.await;
    }));
    (addr, stats, stop)
}

/// An answer as it came over the wire: status line, headers in order
/// (names lowercased), body.
#[derive(Debug, PartialEq)]
struct Wire {
    status: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// Sends `requests` on one new connection and reads as many answers.
async fn exchange(addr: std::net::SocketAddr, requests: Vec<(Vec<u8>, bool)>) -> Vec<Wire> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let heads: Vec<bool> = requests.iter().map(|(_, head)| *head).collect();
    // Written beside the reading: a large body may be answered before
    // it is all sent.
    let writing = tokio::spawn(async move {
        for (bytes, _) in requests {
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
        wr
    });
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for is_head in heads {
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let mut chunk = [0u8; 8192];
            let n = rd.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before an answer; so far {got:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf.drain(..end + 4).collect()).unwrap();
        let mut lines = head.trim_end().split("\r\n");
        let status = lines.next().unwrap().to_owned();
        let headers: Vec<(String, String)> =
            lines.map(|l| l.split_once(": ").map(|(k, v)| (k.to_owned(), v.to_owned())).unwrap()).collect();
        let len: usize = headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
        let len = if is_head { 0 } else { len };
        while buf.len() < len {
            let mut chunk = [0u8; 8192];
            let n = rd.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed inside a body");
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8_lossy(&buf.drain(..len).collect::<Vec<u8>>()).into_owned();
        got.push(Wire { status, headers, body });
    }
    drop(writing);
    got
}

impl Case {
    /// The request as a client writes it.
    fn wire(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\nhost: 127.0.0.1\r\n", self.method, self.path);
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        if !self.body.is_empty() || self.method == "POST" {
            out.push_str(&format!("content-length: {}\r\n", self.body.len()));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// On the wire: every case sent to two equal stores, to one as a
/// connection's first request (which the connection's own loop answers
/// when it takes it) and to the other after a request that hands the
/// connection to hyper. The answers must be the same bytes but for the
/// date, and so must the audit trails.
#[tokio::test]
async fn the_connection_loop_writes_what_hyper_writes() {
    let (fast, slow) = (world().await, world().await);
    let (a, a_stats, _stop_a) = listening(&fast).await;
    let (b, b_stats, _stop_b) = listening(&slow).await;
    let healthz = (b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".to_vec(), false);
    let cases = cases();
    let mut left_to_hyper = 0;
    for (i, case) in cases.iter().enumerate() {
        let head = case.method == "HEAD";
        let mut one = exchange(a, vec![(case.wire(), head)]).await.remove(0);
        let mut two = exchange(b, vec![healthz.clone(), (case.wire(), head)]).await.remove(1);
        left_to_hyper += usize::from(!case.fast || case.body.len() > crate::conn::LANE_MAX_BODY);
        for w in [&mut one, &mut two] {
            let dates = w.headers.iter().filter(|(k, v)| k == "date" && v.ends_with(" GMT")).count();
            assert_eq!(dates, 1, "case {i}: {w:?}");
            w.headers.retain(|(k, _)| k != "date");
            if !case.headers.iter().any(|(k, _)| *k == "x-request-id") {
                let ids = w.headers.iter().filter(|(k, v)| k == "x-request-id" && v.len() == 16).count();
                assert_eq!(ids, 1, "case {i}: {w:?}");
                w.headers.retain(|(k, _)| k != "x-request-id");
            }
        }
        assert_eq!(one, two, "case {i}: {} {}", case.method, case.path);
    }
    assert!(cases.len() - left_to_hyper >= 30, "the loop took {} of {}", cases.len() - left_to_hyper, cases.len());
    let handed = |s: &crate::conn::ConnStats| s.handed_over.load(std::sync::atomic::Ordering::Relaxed) as usize;
    assert_eq!(handed(&a_stats), left_to_hyper, "the loop answered the rest itself");
    assert_eq!(handed(&b_stats), cases.len());

    let trail = |state: AppState| async move {
        let req = HttpRequest::get("/v1/audit?limit=1000").header("authorization", format!("Bearer {AUDITOR}")).body(Body::empty()).unwrap();
        let (s, _, b) = answer(router(state).oneshot(req).await.unwrap()).await;
        assert_eq!(s, StatusCode::OK);
        serde_json::from_slice::<Value>(&b).unwrap()
    };
    let (t1, t2) = (trail(fast).await, trail(slow).await);
    assert!(t1["entries"].as_array().expect("entries").iter().filter(|e| e["action"] == "verify").count() >= 6, "{t1}");
    assert_eq!(t1, t2);
}

/// A client that sends its request and then shuts its side for writing
/// (`nc -N`, some proxies) gets its answer: from hyper, and from the
/// connection's own loop. A verification so answered is in the audit
/// trail, entered before its answer went out.
#[tokio::test]
async fn a_request_is_answered_when_the_client_half_closes_after_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let state = world().await;
    let (addr, _stats, _stop) = listening(&state).await;
    let g = gen();
    let key = person_key(&g, 0).as_str().to_owned();
    let claim = json!({"dataset": "hukou", "fields": {"name": person_hukou(&g, 0)["name"]}}).to_string();
    let head = |path: &str, token: Option<&str>| {
        let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\nx-purpose: benchmark\r\n"));
        format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{auth}\r\n")
    };
    let requests = [
        head("/healthz", None),
        head("/readyz", None),
        head("/metrics", None),
        head(&format!("/v1/keys/person/{key}"), Some(COUNTER)),
        head("/v1/audit/verify", Some(AUDITOR)),
        head("/v1/changes?after=0", Some(COUNTER)),
        // The connection's own loop.
        head(&format!("/v1/persons/{key}"), Some(COUNTER)),
        // A verification hyper serves (the loop leaves `Connection: close` to it).
        format!(
            "POST /v1/persons/{key}/verify HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {COUNTER}\r\nx-purpose: half-closed\r\n\
             connection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{claim}",
            claim.len()
        ),
    ];
    for request in requests {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        // shutdown(SHUT_WR): the read side stays open for the answer.
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut got)).await.expect("closed").unwrap();
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{request}\n→ {text:?}");
    }
    let req = HttpRequest::get("/v1/audit?limit=1000").header("authorization", format!("Bearer {AUDITOR}")).body(Body::empty()).unwrap();
    let (s, _, b) = answer(router(state).oneshot(req).await.unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    let trail: Value = serde_json::from_slice(&b).unwrap();
    let verified = trail["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "verify" && e["purpose"] == "half-closed").count();
    assert_eq!(verified, 1, "{trail}");
}

/// `datasets=` that names no dataset once split (`,,`) is a mistake in
/// the request, not a lookup of nothing: `400 invalid_value`, on the
/// router and the fast route, for persons and entities.
#[tokio::test]
async fn a_datasets_list_naming_no_dataset_is_invalid_value() {
    let state = world().await;
    let g = gen();
    let edge = Edge::new(router(state.clone()), &state);
    let paths = [
        format!("/v1/persons/{}?datasets=,,", person_key(&g, 0).as_str()),
        format!("/v1/persons/{}?datasets=%20,%20", person_key(&g, 0).as_str()),
        format!("/v1/entities/{}?datasets=,", basedata_gen::entity_key(&g, 0).as_str()),
    ];
    for path in &paths {
        let req = || {
            HttpRequest::get(path.as_str())
                .header("authorization", format!("Bearer {COUNTER}"))
                .header("x-purpose", "benchmark")
                .body(Body::empty())
                .unwrap()
        };
        for (side, resp) in [("router", router(state.clone()).oneshot(req()).await.unwrap()), ("edge", edge.call(req(), &peer()).await)] {
            let (s, _, b) = answer(resp).await;
            let b: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_value")), "{side} {path}: {b}");
            assert!(b["error"]["message"].as_str().unwrap().contains("names no dataset"), "{b}");
        }
    }
}
