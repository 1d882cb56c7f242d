//! Batch comparison end to end with the release binary: the streamed
//! endpoint over a raw HTTP/1.1 connection that sends and reads at once,
//! jobs (privacy, conflict until done, resuming after SIGKILL with every
//! line answered and audited exactly once), and the offline `compare` and
//! `audit-verify` commands on the same data.

use basedata_tests::*;
use basedata_gen::{person_hukou, person_key, GenConfig};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const STORED: u64 = 500;

const GEN: GenConfig = GenConfig { persons: STORED, entities: 0, seed: 11 };

fn key(i: u64) -> String {
    person_key(&GEN, i).as_str().to_owned()
}

/// The generated household registrations of the stored persons.
fn records() -> &'static [serde_json::Map<String, Value>] {
    static RECORDS: std::sync::OnceLock<Vec<serde_json::Map<String, Value>>> = std::sync::OnceLock::new();
    RECORDS.get_or_init(|| (0..STORED).map(|i| person_hukou(&GEN, i)).collect())
}

fn name(i: u64) -> String {
    records()[i as usize]["name"].as_str().unwrap().to_owned()
}

/// Stores `STORED` persons; person `STORED` and beyond are unknown.
fn seed(s: &Server) {
    let lines: Vec<Value> = (0..STORED).map(|i| json!({"key": key(i), "version": 1, "fields": records()[i as usize]})).collect();
    let r = s.req("POST", "/v1/datasets/hukou/updates").token(tokens::GONGAN).ndjson(&lines);
    assert_eq!((r.status, r.json["applied"].as_u64()), (200, Some(STORED)), "{}", r.text);
}

/// Request line `i`: mostly matches, every third a wrong name, every
/// 50th an unknown person, every 97th a broken key, every 101st not JSON.
fn line(i: u64) -> String {
    if i % 101 == 100 {
        return format!("{{\"ref\":\"r{i}\",");
    }
    let k = if i % 97 == 96 { "110105194912310021".to_owned() } else { key(if i % 50 == 49 { STORED + i } else { i % STORED }) };
    let name = if i % 3 == 0 { "不是本人".to_owned() } else { name(i % STORED) };
    json!({"ref": format!("r{i}"), "subject": "person", "key": k, "fields": {"name": name}}).to_string()
}

fn expected(i: u64) -> &'static str {
    match () {
        _ if i % 101 == 100 => "invalid_body",
        _ if i % 97 == 96 => "invalid_key",
        _ if i % 50 == 49 => "not_found",
        _ if i % 3 == 0 => "mismatch",
        _ => "match",
    }
}

fn check(answers: &[Value], n: u64) {
    assert_eq!(answers.len() as u64, n, "one answer per line");
    for (i, a) in answers.iter().enumerate() {
        let i = i as u64;
        let got = a["result"].as_str().or(a["error"]["code"].as_str()).unwrap_or("?");
        assert_eq!(got, expected(i), "line {i}: {a}");
        if i % 101 != 100 {
            assert_eq!(a["ref"], format!("r{i}"), "line {i}");
        }
    }
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines().filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn audit_entries(s: &Server) -> u64 {
    let r = s.req("GET", "/v1/audit/verify").token(tokens::AUDITOR).get();
    assert_eq!(r.json["ok"], true, "{}", r.text);
    r.json["entries"].as_u64().unwrap()
}

/// POSTs `n` lines to the batch endpoint with a chunked body, reading the
/// answers on this thread while another thread sends. The sender stops
/// after the first half until an answer has arrived, so the call only
/// succeeds if answers stream while the request is still open.
fn stream_batch(s: &Server, n: u64) -> (u16, Vec<u8>) {
    let mut conn = TcpStream::connect(&s.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "POST /v1/verify/batch HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nX-Purpose: %E6%89%B9%E9%87%8F%E6%A0%B8%E9%AA%8C\r\n\
         Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        s.addr,
        tokens::COUNTER
    );
    conn.write_all(head.as_bytes()).unwrap();
    let mut w = conn.try_clone().unwrap();
    let (first_answer_tx, first_answer_rx) = mpsc::channel::<()>();
    let sender = std::thread::spawn(move || {
        let send = |w: &mut TcpStream, from: u64, to: u64| {
            for start in (from..to).step_by(1000) {
                let mut body = String::new();
                for i in start..(start + 1000).min(to) {
                    body.push_str(&line(i));
                    body.push('\n');
                }
                write!(w, "{:x}\r\n{body}\r\n", body.len()).unwrap();
            }
        };
        send(&mut w, 0, n / 2);
        let streamed = first_answer_rx.recv_timeout(Duration::from_secs(30)).is_ok();
        send(&mut w, n / 2, n);
        w.write_all(b"0\r\n\r\n").unwrap();
        streamed
    });
    let mut r = BufReader::new(conn);
    let mut status_line = String::new();
    r.read_line(&mut status_line).unwrap();
    let status: u16 = status_line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut chunked = false;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h == "\r\n" {
            break;
        }
        chunked |= h.to_ascii_lowercase().starts_with("transfer-encoding: chunked");
    }
    assert!(chunked, "a streamed answer is chunked");
    let mut body = Vec::new();
    let mut signalled = false;
    loop {
        let mut size = String::new();
        r.read_line(&mut size).unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        let mut data = vec![0u8; size + 2];
        r.read_exact(&mut data).unwrap();
        body.extend_from_slice(&data[..size]);
        if !signalled && body.contains(&b'\n') {
            signalled = true;
            let _ = first_answer_tx.send(());
        }
    }
    assert!(sender.join().unwrap(), "no answer arrived before the request body ended");
    (status, body)
}

#[test]
fn batch_streams_every_answer_in_order_and_audits_every_line() {
    let s = Server::start(&standard_config());
    seed(&s);
    let before = audit_entries(&s);
    let n = 20_000;
    let (status, body) = stream_batch(&s, n);
    assert_eq!(status, 200);
    check(&parse_lines(std::str::from_utf8(&body).unwrap()), n);
    assert_eq!(audit_entries(&s) - before, n, "one audit entry per line");
    // Who looked, why, at whom: the entries of one person name the batch.
    let r = s.req("GET", &format!("/v1/audit?key={}&limit=100", key(1))).token(tokens::AUDITOR).get();
    let e = r.json["entries"].as_array().unwrap().iter().find(|e| e["action"] == "batch_verify").expect("audited").clone();
    assert_eq!((e["department"].as_str(), e["purpose"].as_str()), (Some("shebao-counter"), Some("批量核验")));
    assert_eq!(e["fields"], json!(["name"]));

    // Without a purpose, nothing is read.
    let r = s.req("POST", "/v1/verify/batch").token(tokens::COUNTER).send(Some(("application/x-ndjson", line(1).into_bytes())));
    assert_eq!((r.status, r.code()), (400, "purpose_required"));
    // A small batch works with a client that sends before it reads.
    let body: String = (0..10).map(|i| line(i) + "\n").collect();
    let r = s.req("POST", "/v1/verify/batch").token(tokens::COUNTER).purpose("x").send(Some(("application/x-ndjson", body.into_bytes())));
    check(&parse_lines(&r.text), 10);
}

fn job_status(s: &Server, id: &str, token: &str) -> Resp {
    s.req("GET", &format!("/v1/jobs/{id}")).token(token).purpose("进度").get()
}

#[test]
fn jobs_are_private_resume_after_a_kill_and_answer_each_line_once() {
    let scratch = tempfile::tempdir().unwrap();
    let cfg = standard_config();
    let mut s = Server::start_in(scratch.path(), &cfg, &[]);
    seed(&s);
    let before = audit_entries(&s);
    let n = 200_000;
    let body: String = (0..n).map(|i| line(i) + "\n").collect();
    let r = s.req("POST", "/v1/jobs").token(tokens::COUNTER).purpose("年度比对").send(Some(("application/x-ndjson", body.into_bytes())));
    assert_eq!((r.status, r.json["state"].as_str()), (202, Some("queued")), "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let r = s.req("GET", &format!("/v1/jobs/{id}/result")).token(tokens::COUNTER).purpose("x").get();
    assert_eq!((r.status, r.code()), (409, "conflict"), "a 200,000-line job is not done at once");
    // Another department cannot see it, nor learn that it exists.
    for path in [format!("/v1/jobs/{id}"), format!("/v1/jobs/{id}/result")] {
        let r = s.req("GET", &path).token(tokens::SHICHANG).purpose("x").get();
        assert_eq!((r.status, r.code()), (404, "not_found"), "{path}");
    }
    let r = job_status(&s, "0123456789abcdef0123456789abcdef", tokens::COUNTER);
    assert_eq!((r.status, r.code()), (404, "not_found"));

    // Kill the server while the job is part way through.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = job_status(&s, &id, tokens::COUNTER).json;
        let processed = j["processed"].as_u64().unwrap();
        if j["state"] == "running" && processed > 0 {
            assert!(processed < n, "the job finished before it could be interrupted: {j}");
            break;
        }
        assert!(Instant::now() < deadline, "the job never started: {j}");
        std::thread::sleep(Duration::from_millis(5));
    }
    s.kill();

    let s = Server::start_in(scratch.path(), &cfg, &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let j = loop {
        let j = job_status(&s, &id, tokens::COUNTER).json;
        if j["state"] == "done" {
            break j;
        }
        assert!(j["state"] == "running" || j["state"] == "queued", "{j}");
        assert!(Instant::now() < deadline, "the job did not finish after the restart: {j}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!((j["total"].as_u64(), j["processed"].as_u64()), (Some(n), Some(n)), "{j}");
    let sum: u64 = ["matched", "mismatched", "not_found", "invalid"].iter().map(|k| j[k].as_u64().unwrap()).sum();
    assert_eq!(sum, n);
    let r = s.req("GET", &format!("/v1/jobs/{id}/result")).token(tokens::COUNTER).purpose("取结果").get();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    check(&parse_lines(&r.text), n);
    // Plus one entry for the download of the answers.
    assert_eq!(audit_entries(&s) - before, n + 1, "each line audited exactly once across the kill");
}

#[test]
fn offline_compare_answers_like_the_api_and_is_audited() {
    let scratch = tempfile::tempdir().unwrap();
    let cfg = standard_config();
    let mut s = Server::start_in(scratch.path(), &cfg, &[]);
    seed(&s);
    let n = 3_000;
    let body: String = (0..n).map(|i| line(i) + "\n").collect();
    let api = s.req("POST", "/v1/verify/batch").token(tokens::COUNTER).purpose("x").send(Some(("application/x-ndjson", body.clone().into_bytes())));
    assert_eq!(api.status, 200);
    let before = audit_entries(&s);
    let data = scratch.path().join("data");
    let (input, output) = (scratch.path().join("in.ndjson"), scratch.path().join("out.ndjson"));
    std::fs::write(&input, &body).unwrap();
    let cfg_path = s.config.clone();
    let (data_s, in_s, out_s, cfg_s) =
        (data.to_str().unwrap(), input.to_str().unwrap(), output.to_str().unwrap(), cfg_path.to_str().unwrap());
    let args = |dept: &'static str| {
        vec!["compare", "--data", data_s, "--input", in_s, "--output", out_s, "--department", dept, "--purpose", "离线比对", "--config", cfg_s]
    };
    // The running server holds the store.
    let (st, _, err) = run_cli(&args("shebao-counter"));
    assert!(!st.success() && err.contains("stop the server"), "{err}");
    assert!(s.terminate().success());

    let (st, out, err) = run_cli(&args("shebao-counter"));
    assert!(st.success(), "{err}");
    assert!(out.contains(&format!("{n} lines")), "{out}");
    let answers = std::fs::read_to_string(&output).unwrap();
    assert_eq!(answers, api.text, "the same answers as the API");
    let (st, out, err) = run_cli(&["audit-verify", "--data", data_s, "--config", cfg_s]);
    assert!(st.success(), "{err}");
    let check: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(check["ok"], true);
    assert_eq!(check["entries"].as_u64().unwrap(), before + n, "one audit entry per line");
    // The entries are the API's: batch_verify, the department and purpose.
    let s = Server::start_in(scratch.path(), &cfg, &[]);
    let r = s.req("GET", "/v1/audit?department=shebao-counter&limit=10000").token(tokens::AUDITOR).get();
    let offline: Vec<&Value> = r.json["entries"].as_array().unwrap().iter().filter(|e| e["purpose"] == "离线比对").collect();
    assert_eq!(offline.len() as u64, n);
    assert!(offline.iter().all(|e| e["action"] == "batch_verify"));
    drop(s);

    // Bad arguments and files: a one-line reason and exit 1.
    for (args, reason) in [
        (args("nobody"), "not in the configuration"),
        (vec!["compare", "--data", data_s, "--input", "/nonexistent", "--output", out_s, "--department", "x", "--purpose", "p"], "cannot read"),
        (vec!["compare", "--data", "/nonexistent", "--input", in_s, "--output", out_s, "--department", "x", "--purpose", "p"], "no store"),
        (vec!["compare", "--data", data_s, "--input", in_s, "--output", out_s, "--department", "x", "--purpose", " "], "purpose"),
        (vec!["audit-verify", "--data", "/nonexistent"], "no store"),
    ] {
        let (st, _, err) = run_cli(&args);
        assert_eq!(st.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(reason) && err.trim().lines().count() == 1, "{args:?}: {err}");
    }
}

#[test]
fn a_client_that_sends_everything_before_reading_gets_every_answer() {
    // As urllib or HttpURLConnection do: the whole body with a length,
    // and only then the answer. The server must read on while the
    // answers wait for the client.
    let s = Server::start(&standard_config());
    seed(&s);
    let n: u64 = 1_000_000;
    let mut body = Vec::with_capacity(n as usize * 90);
    for i in 0..n {
        body.extend_from_slice(line(i).as_bytes());
        body.push(b'\n');
    }
    let base = s.peak_rss();
    let mut conn = TcpStream::connect(&s.addr).unwrap();
    let head = format!(
        "POST /v1/verify/batch HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nX-Purpose: x\r\n\
         Content-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        s.addr,
        tokens::COUNTER,
        body.len()
    );
    let started = Instant::now();
    conn.set_write_timeout(Some(Duration::from_secs(240))).unwrap();
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(&body).expect("the server stopped reading the body");
    let sent_after = started.elapsed();
    // The unread answers wait in a file of the data directory's spill
    // directory (not in /tmp, which may be memory): open, without a name.
    let spill = s.dir.join("data").join("spill");
    let open_there = || {
        std::fs::read_dir(format!("/proc/{}/fd", s.pid()))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .any(|l| l.starts_with(&spill))
    };
    let waited = Instant::now();
    while !open_there() && waited.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(open_there(), "no spill file open in {}", spill.display());
    assert_eq!(std::fs::read_dir(&spill).unwrap().count(), 0, "spill files have no name");
    conn.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8(answer).unwrap();
    let (head, chunked) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // De-chunk.
    let mut rest = chunked;
    let mut lines = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        lines.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    check(&parse_lines(&lines), n);
    let grown = s.peak_rss().saturating_sub(base);
    eprintln!("1M lines: body sent in {sent_after:?}, all answers in {:?}, server memory grew {} MB", started.elapsed(), grown >> 20);
    assert!(grown < 512 << 20, "server memory grew by {} MB", grown >> 20);
}

/// A department's job limits from the configuration: a job over its lines
/// is `413 payload_too_large`, one within them is taken.
#[test]
fn job_size_limits_come_from_the_department_configuration() {
    let cfg = standard_config().replace("id = \"shebao-counter\"\n", "id = \"shebao-counter\"\nmax_job_lines = 100\nmax_job_mb = 1\n");
    let s = Server::start(&cfg);
    seed(&s);
    let submit = |lines: &[Value]| s.req("POST", "/v1/jobs").token(tokens::COUNTER).purpose("limits").ndjson(lines);
    let lines: Vec<Value> = (0..101).map(|i| serde_json::from_str(&line(i)).unwrap_or(json!({"ref": i}))).collect();
    let r = submit(&lines);
    assert_eq!((r.status, r.code()), (413, "payload_too_large"), "{}", r.text);
    // (A body over max_job_mb is refused before it is read, which a client
    // that sends its whole body first may see as a reset connection; the
    // handler tests check that refusal.)
    let r = submit(&lines[..100]);
    assert_eq!((r.status, r.json["total"].as_u64()), (202, Some(100)), "{}", r.text);
    // Another department has the defaults.
    let r = s.req("POST", "/v1/jobs").token(tokens::GONGAN).purpose("limits").ndjson(&lines);
    assert_eq!(r.status, 202, "{}", r.text);
}
