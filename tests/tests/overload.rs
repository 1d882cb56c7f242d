//! Bounded overload on loopback: a department flooding the server at well
//! over its configured rate is shed with 429 (Retry-After) while another
//! department keeps being served; a full write queue sheds with 503
//! overloaded; nothing else fails, every answer comes back within bounds,
//! and the server recovers once the flood stops.

use basedata_tests::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const P1: &str = "11010519491231002X";

fn seed(s: &Server) {
    let line = json!({"key": P1, "version": 1, "fields": {"name": "张三", "gender": "2", "birth_date": "1949-12-31", "status": "normal"}});
    let r = s.req("POST", "/v1/datasets/hukou/updates").token(tokens::GONGAN).ndjson(&[line]);
    assert_eq!(r.status, 200, "{}", r.text);
}

/// Runs `threads` closed-loop clients for `secs`, returning (status, code,
/// had Retry-After, latency) of every answer.
fn flood(s: &Server, token: &'static str, threads: usize, secs: u64) -> Vec<(u16, String, bool, Duration)> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for _ in 0..threads {
        let (out, stop, url) = (out.clone(), stop.clone(), s.url(&format!("/v1/persons/{P1}")));
        handles.push(std::thread::spawn(move || {
            let agent = agent();
            let mut mine = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let mut r = agent
                    .get(&url)
                    .header("authorization", format!("Bearer {token}"))
                    .header("x-purpose", "压力测试")
                    .call()
                    .expect("transport");
                let status = r.status().as_u16();
                let retry = r.headers().contains_key("retry-after");
                let body: serde_json::Value = r.body_mut().read_json().unwrap_or_default();
                mine.push((status, body["error"]["code"].as_str().unwrap_or("").to_owned(), retry, t.elapsed()));
            }
            out.lock().unwrap().extend(mine);
        }));
    }
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    Arc::try_unwrap(out).unwrap().into_inner().unwrap()
}

#[test]
fn rate_limited_department_is_shed_and_others_are_served() {
    let cfg = standard_config().replace(
        &format!("token = \"{}\"\n", tokens::COUNTER),
        &format!("token = \"{}\"\nrate_limit = 200\nburst = 20\nmax_concurrent = 8\n", tokens::COUNTER),
    );
    let s = Server::start(&cfg);
    seed(&s);
    let other = {
        let url = s.url(&format!("/v1/persons/{P1}"));
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            let agent = agent();
            let mut worst = Duration::ZERO;
            for _ in 0..50 {
                let t = Instant::now();
                let r = agent.get(&url).header("authorization", format!("Bearer {}", tokens::SHICHANG)).header("x-purpose", "x").call().unwrap();
                assert_eq!(r.status().as_u16(), 200);
                worst = worst.max(t.elapsed());
            }
            worst
        })
    };
    let answers = flood(&s, tokens::COUNTER, 24, 3);
    let worst_other = other.join().unwrap();
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let shed: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert!(!shed.is_empty(), "no request was shed out of {}", answers.len());
    assert!(shed.iter().all(|a| a.1 == "overloaded" && a.2), "429 without code or Retry-After");
    assert!(answers.iter().all(|a| a.0 == 200 || a.0 == 429), "unexpected statuses: {:?}", answers.iter().filter(|a| a.0 != 200 && a.0 != 429).take(3).collect::<Vec<_>>());
    // At most the sustained rate plus the burst got through.
    assert!(ok <= 200 * 3 + 20 + 50, "{ok} admitted");
    let slowest = answers.iter().map(|a| a.3).max().unwrap();
    assert!(slowest < Duration::from_secs(2), "slowest answer {slowest:?}");
    assert!(worst_other < Duration::from_secs(1), "other department waited {worst_other:?}");
    std::thread::sleep(Duration::from_millis(1100));
    let r = s.req("GET", &format!("/v1/persons/{P1}")).token(tokens::COUNTER).purpose("x").get();
    assert_eq!(r.status, 200, "no recovery: {}", r.text);
    let m = s.req("GET", "/metrics").get();
    assert!(m.text.contains("basedata_requests_refused_total{department=\"shebao-counter\""), "{}", m.text);
}

#[test]
fn full_write_queue_sheds_with_503_and_recovers() {
    let cfg = format!("write_queue = 1\n{}", standard_config());
    let s = Server::start(&cfg);
    seed(&s);
    let answers = flood(&s, tokens::COUNTER, 32, 2);
    let shed = answers.iter().filter(|a| a.0 == 503).count();
    assert!(shed > 0, "the one-slot write queue never filled in {} requests", answers.len());
    assert!(answers.iter().filter(|a| a.0 == 503).all(|a| a.1 == "overloaded"));
    assert!(answers.iter().all(|a| a.0 == 200 || a.0 == 503));
    assert!(answers.iter().any(|a| a.0 == 200));
    let slowest = answers.iter().map(|a| a.3).max().unwrap();
    assert!(slowest < Duration::from_secs(2), "slowest answer {slowest:?}");
    let r = s.req("GET", &format!("/v1/persons/{P1}")).token(tokens::COUNTER).purpose("x").get();
    assert_eq!(r.status, 200);
    // Every answered lookup was audited; the shed ones were not served.
    let v = s.req("GET", "/v1/audit/verify").token(tokens::AUDITOR).get();
    assert_eq!(v.json["ok"], true);
}
