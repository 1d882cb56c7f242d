//! Attacks on a real server, kept as tests so that they stay closed: slow
//! and idle connections, made-up methods growing the metrics and the log,
//! answers that grow with bad input, free-text headers that would be
//! stored altered, ambiguous credentials, and a provider approving a grant
//! to itself. Each is bounded in time and ends by itself.

use basedata_tests::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const P1: &str = "11010519491231002X";

fn config(connections: &str, extra: &str) -> String {
    let section = if connections.is_empty() { String::new() } else { format!("[connections]\n{connections}\n") };
    format!("{extra}\n{section}\n{}", standard_config())
}

fn addr(s: &Server) -> SocketAddr {
    s.addr.trim_start_matches("http://").parse().unwrap()
}

/// A connection from `source` (any 127.x.x.x address reaches a server on
/// 127.0.0.1, so tests can be several clients).
fn connect_from(s: &Server, source: &str) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&format!("{source}:0").parse::<SocketAddr>().unwrap().into()).unwrap();
    sock.connect(&addr(s).into()).unwrap();
    let tcp: TcpStream = sock.into();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp
}

/// Whether the server closed the connection (end of stream or reset)
/// before `within`; a timeout means it is still open.
fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    tcp.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return true,
            // An answer (e.g. 408 or 400) before the close is fine.
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return false,
            Err(_) => return true,
        }
    }
}

/// One raw HTTP/1.1 exchange on a fresh connection; the status line and
/// the whole answer.
fn raw(s: &Server, request: &[u8]) -> (u16, String) {
    let mut tcp = connect_from(s, "127.0.0.1");
    tcp.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

fn healthz(s: &Server, source: &str) -> bool {
    let mut tcp = connect_from(s, source);
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

#[test]
fn slow_and_idle_connections_are_closed_and_others_still_answered() {
    let s = Server::start(&config(
        "header_timeout_seconds = 1\nbody_timeout_seconds = 1\nidle_timeout_seconds = 2\nmax_per_client = 20\nmax_total = 40",
        "",
    ));
    // One client holds all its connections, idle.
    let mut idle: Vec<TcpStream> = (0..20).map(|_| connect_from(&s, "127.0.0.1")).collect();
    // Its next one is refused with an answer, not left hanging. (The
    // readiness probe's connection, from 127.0.0.1 too, may still hold a
    // place while the idle ones open; the first one after them can take
    // the place it frees, and is then held idle like them.)
    let mut refused = String::new();
    for _ in 0..2 {
        let mut extra = connect_from(&s, "127.0.0.1");
        extra.set_read_timeout(Some(Duration::from_millis(1000))).unwrap();
        let _ = extra.read_to_string(&mut refused);
        if !refused.is_empty() {
            break;
        }
        idle.push(extra);
    }
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused:?}");
    assert!(refused.contains("\"overloaded\""), "{refused}");
    // Another client is still served meanwhile.
    assert!(healthz(&s, "127.0.0.2"));

    // Headers that stop halfway, and a body that stops halfway.
    let mut slow_headers = connect_from(&s, "127.0.0.3");
    slow_headers.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").unwrap();
    let mut slow_body = connect_from(&s, "127.0.0.3");
    let head = format!(
        "POST /v1/datasets/hukou/updates HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/x-ndjson\r\ncontent-length: 100000\r\n\r\n{{\"key\":",
        tokens::GONGAN
    );
    slow_body.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut slow_headers, Duration::from_secs(8)), "half-sent headers are cut off");
    assert!(closed_within(&mut slow_body, Duration::from_secs(8)), "a stalled body is cut off");
    // Idle connections are closed after the idle timeout.
    for c in &mut idle {
        assert!(closed_within(c, Duration::from_secs(8)), "idle connection still open");
    }
    assert!(started.elapsed() < Duration::from_secs(15));
    // Their places are free again.
    assert!(healthz(&s, "127.0.0.1"));
    let m = s.req("GET", "/metrics").get().text;
    for stat in ["closed_idle", "closed_header", "refused_per_client"] {
        let line = m.lines().find(|l| l.starts_with("basedata_connections{") && l.contains(stat)).unwrap_or_default();
        let n: f64 = line.rsplit(' ').next().unwrap_or("0").parse().unwrap_or(0.0);
        assert!(n >= 1.0, "{stat}: {line:?}");
    }
}

#[test]
fn a_steady_slow_upload_is_not_cut_and_shutdown_does_not_wait_forever() {
    let mut s = Server::start(&config("body_timeout_seconds = 1\ndrain_seconds = 1", ""));
    // A body sent in pieces, each within the body timeout, is taken whole.
    let line = json!({"key": P1, "version": 1, "fields": {"name": "张三", "gender": "2", "birth_date": "1949-12-31", "status": "normal"}});
    let body = format!("{line}\n");
    let mut tcp = connect_from(&s, "127.0.0.1");
    let head = format!(
        "POST /v1/datasets/hukou/updates HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/x-ndjson\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        tokens::GONGAN,
        body.len()
    );
    tcp.write_all(head.as_bytes()).unwrap();
    for piece in body.as_bytes().chunks(body.len() / 3 + 1) {
        std::thread::sleep(Duration::from_millis(600));
        tcp.write_all(piece).unwrap();
    }
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"applied\":1"), "{out}");

    // A client in the middle of a request does not keep the server from
    // stopping.
    let mut stuck = connect_from(&s, "127.0.0.1");
    stuck.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[test]
fn made_up_methods_grow_neither_the_metrics_nor_the_log() {
    let s = Server::start(&standard_config());
    let before = s.req("GET", "/metrics").get().text.len();
    for i in 0..200 {
        let method = format!("X{i:04}{}", "M".repeat(1000));
        let (status, _) = raw(&s, format!("{method} /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes());
        assert!((400..500).contains(&status), "{status}");
    }
    let after = s.req("GET", "/metrics").get().text;
    assert!(!after.contains("MMMM"), "a made-up method became a label");
    assert!(after.len() < before + 20_000, "{before} -> {}", after.len());
    let logs = s.logs();
    assert!(!logs.contains("MMMM"), "a made-up method was logged");
    assert!(logs.lines().all(|l| l.len() < 4_000), "an overlong log line");
}

#[test]
fn an_updates_answer_stays_small_at_the_body_limit() {
    let s = Server::start(&config("", "max_body_mb = 32"));
    let base = s.peak_rss();
    // Nothing but bad lines, up to the body limit, as NDJSON and as one array.
    let lines = (32 << 20) / 3 - 10;
    let ndjson = "{}\n".repeat(lines).into_bytes();
    let mut array = Vec::with_capacity(ndjson.len() + 2);
    array.push(b'[');
    array.extend(std::iter::repeat_n(&b"{},"[..], lines - 1).flatten());
    array.extend_from_slice(b"{}]");
    for (ct, body) in [("application/x-ndjson", ndjson), ("application/json", array)] {
        let r = s.req("POST", "/v1/datasets/hukou/updates").token(tokens::GONGAN).send(Some((ct, body)));
        assert_eq!(r.status, 200, "{ct}: {}", &r.text[..r.text.len().min(300)]);
        assert!(r.text.len() < 300_000, "{ct}: a {} byte answer", r.text.len());
        assert_eq!(r.json["rejected"].as_array().unwrap().len(), 1000);
        assert_eq!(r.json["rejected_total"], lines);
        assert_eq!(r.json["rejected_by_code"]["invalid_body"], lines);
    }
    let grown = s.peak_rss().saturating_sub(base);
    assert!(grown < 400 << 20, "peak memory grew by {} MB for a 32 MB body", grown >> 20);
}

#[test]
fn free_text_headers_are_stored_as_sent_or_refused() {
    let s = Server::start(&standard_config());
    let lookup = |purpose: &str, operator: Option<&str>| {
        let mut r = s.req("GET", &format!("/v1/persons/{P1}")).token(tokens::COUNTER).purpose(purpose);
        if let Some(o) = operator {
            r = r.header("x-operator", o);
        }
        r.get()
    };
    for (purpose, operator, what) in [
        ("核验%00身份", None, "NUL, percent-encoded"),
        ("核验%0A伪造的审计行", None, "a line break"),
        ("核验%1B[31m", None, "an escape"),
        ("核验", Some("%FF%FE"), "an operator that is not UTF-8"),
        ("核验", Some(&"a".repeat(65)[..]), "an operator over 64 characters"),
        ("核验", Some("op%07"), "a control character in the operator"),
        ("核验%E2%80%A8伪造", None, "a line separator"),
        ("核验%E2%80%AEabc", None, "a right-to-left override"),
    ] {
        let r = lookup(purpose, operator);
        assert_eq!((r.status, r.code()), (400, "invalid_value"), "{what}: {}", r.text);
    }
    assert_eq!(lookup(&"用".repeat(501), None).status, 400, "a purpose over 500 characters");
    // Raw control bytes in the header value itself.
    let (status, text) = raw(
        &s,
        format!("GET /v1/persons/{P1} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nx-purpose: a\x01b\r\nconnection: close\r\n\r\n", tokens::COUNTER)
            .as_bytes(),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains(r#""code":"invalid_value""#), "an unreadable head is answered in the API's error format: {text}");
    // At the limits, taken and stored as sent.
    let op = "o".repeat(64);
    assert_eq!(lookup("核验身份", Some(&op)).status, 404);
    let audit = s.req("GET", "/v1/audit?department=shebao-counter").token(tokens::AUDITOR).get();
    let entries = audit.json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "only the accepted request is on record: {}", audit.text);
    assert_eq!(entries[0]["operator"].as_str(), Some(op.as_str()));
    assert_eq!(entries[0]["purpose"].as_str(), Some("核验身份"));
}

#[test]
fn credentials_are_read_one_way_only() {
    let s = Server::start(&standard_config());
    let catalog = |auth: &[&str]| {
        let mut r = s.req("GET", "/v1/catalog");
        for a in auth {
            r = r.header("authorization", a);
        }
        r.get()
    };
    for scheme in ["Bearer", "bearer", "BEARER", "BeArEr"] {
        assert_eq!(catalog(&[&format!("{scheme} {}", tokens::COUNTER)]).status, 200, "{scheme}");
    }
    let two = catalog(&[&format!("Bearer {}", tokens::COUNTER), &format!("Bearer {}", tokens::ADMIN)]);
    assert_eq!((two.status, two.code()), (401, "unauthenticated"), "two Authorization headers: {}", two.text);
    assert_eq!(catalog(&[&format!("Basic {}", tokens::COUNTER)]).status, 401);
    assert_eq!(catalog(&["Bearer"]).status, 401);
}

#[test]
fn a_provider_cannot_grant_itself_its_own_dataset() {
    let s = Server::start(&standard_config());
    // gongan provides hukou and is a consumer too.
    let body: Value = json!({"dataset": "hukou", "fields": ["photo"], "purpose": "p", "legal_basis": "b"});
    let r = s.req("POST", "/v1/grants").token(tokens::GONGAN).json(&body);
    assert_eq!((r.status, r.code()), (409, "conflict"), "{}", r.text);
    let grants = s.req("GET", "/v1/grants").token(tokens::GONGAN).get();
    assert_eq!(grants.json["grants"].as_array().map(Vec::len), Some(0), "{}", grants.text);
}

#[test]
fn a_record_the_caller_may_not_see_is_answered_as_no_record() {
    let s = Server::start(&standard_config());
    // Born the same day as P1, and a woman too: the two records differ only in their keys.
    const P2: &str = "440305194912310027";
    let hukou = |key: &str| {
        let (born, sex) = encoded(key);
        json!({"key": key, "version": 1, "fields": {"name": "张三", "gender": sex, "birth_date": born, "status": "normal"}})
    };
    let r = s.req("POST", "/v1/datasets/hukou/updates").token(tokens::GONGAN).ndjson(&[hukou(P1), hukou(P2)]);
    assert_eq!(r.json["applied"], 2, "{}", r.text);
    // P1 has an adoption record; every item of it is conditional.
    let adoption = json!({"key": P1, "version": 1, "fields": {"name": "张三", "role": "adoptee", "adoption_certificate_no": "民收字001"}});
    let r = s.req("POST", "/v1/datasets/adoption/updates").token(tokens::MINZHENG).ndjson(&[adoption]);
    assert_eq!(r.json["applied"], 1, "{}", r.text);

    let lookup = |key: &str, datasets: &str| {
        s.req("GET", &format!("/v1/persons/{key}{datasets}")).token(tokens::COUNTER).purpose("核验身份").get()
    };
    // All datasets: the two answers differ only in the key.
    let (a, b) = (lookup(P1, ""), lookup(P2, ""));
    assert_eq!((a.status, b.status), (200, 200), "{} {}", a.text, b.text);
    // (Both records came in one request: one commit time.)
    assert_eq!(a.text.replace(P1, "KEY"), b.text.replace(P2, "KEY"));
    assert!(a.json["datasets"].get("adoption").is_none(), "{}", a.text);
    // Only the adoption dataset: both are "not found", word for word.
    let (a, b) = (lookup(P1, "?datasets=adoption"), lookup(P2, "?datasets=adoption"));
    assert_eq!((a.status, a.code()), (404, "not_found"), "{}", a.text);
    assert_eq!(a.text, b.text);
    // Nor does a verification, single or in a batch: the same refusal for both.
    let verify = |key: &str| {
        s.req("POST", &format!("/v1/persons/{key}/verify")).token(tokens::COUNTER).purpose("核验身份")
            .json(&json!({"dataset": "adoption", "fields": {"role": "adoptee"}}))
    };
    let (a, b) = (verify(P1), verify(P2));
    assert_eq!((a.status, a.code()), (403, "forbidden"), "{}", a.text);
    assert_eq!(a.text, b.text);
    let batch = format!(
        "{}\n{}\n",
        json!({"ref": 1, "subject": "person", "key": P1, "dataset": "adoption", "fields": {"role": "adoptee"}}),
        json!({"ref": 2, "subject": "person", "key": P2, "dataset": "adoption", "fields": {"role": "adoptee"}})
    );
    let r = s.req("POST", "/v1/verify/batch").token(tokens::COUNTER).purpose("核验身份").send(Some(("application/x-ndjson", batch.into_bytes())));
    let codes: Vec<&str> = r.text.lines().map(|l| if l.contains("\"forbidden\"") { "forbidden" } else { "other" }).collect();
    assert_eq!(codes, ["forbidden", "forbidden"], "{}", r.text);
    // The provider, which reads its own dataset, still verifies.
    let own = s.req("POST", &format!("/v1/persons/{P1}/verify")).token(tokens::MINZHENG).purpose("收养登记核验")
        .json(&json!({"dataset": "adoption", "fields": {"role": "adoptee"}}));
    assert_eq!((own.status, own.json["result"].as_str()), (200, Some("match")), "{}", own.text);
    // Nor does the change feed show that P1's adoption record came in,
    // even to a subscriber of both datasets.
    subscribe(&s, tokens::COUNTER, tokens::GONGAN, "hukou", "核验身份");
    subscribe(&s, tokens::COUNTER, tokens::MINZHENG, "adoption", "核验身份");
    let feed = s.req("GET", "/v1/changes?after=0").token(tokens::COUNTER).purpose("核验身份").get();
    let datasets: Vec<&str> = feed.json["changes"].as_array().unwrap().iter().filter_map(|c| c["dataset"].as_str()).collect();
    assert_eq!(datasets, ["hukou", "hukou"], "{}", feed.text);
    // The auditors still see what happened.
    let audit = s.req("GET", &format!("/v1/audit?key={P1}")).token(tokens::AUDITOR).get();
    let outcomes: Vec<&str> = audit.json["entries"].as_array().unwrap().iter().filter_map(|e| e["outcome"].as_str()).collect();
    assert!(outcomes.contains(&"nothing_visible"), "{outcomes:?}");
}
