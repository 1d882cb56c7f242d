//! The change log's retention period with the release binary: changes
//! committed more than `change_retention_days` ago (by a server whose clock
//! was shifted back) are removed at the next start, the newest always
//! kept; a subscriber resuming before the cut is told so with where the
//! log now starts, never silently skipped ahead; records and their
//! history stay whole.

use basedata_tests::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const DAY: i64 = 86_400;

fn config(offset_days: i64, extra: &str) -> String {
    format!("clock_offset_seconds = {}\n{extra}\n{}", offset_days * DAY, standard_config())
}

/// The provider reading its own dataset's changes after `after`.
fn feed(s: &Server, after: u64) -> Resp {
    s.req("GET", &format!("/v1/changes?after={after}&limit=100")).token(tokens::GONGAN).purpose("数据同步").get()
}

fn seqs(r: &Resp) -> Vec<u64> {
    r.json["changes"].as_array().unwrap_or_else(|| panic!("{}", r.text)).iter().map(|c| c["seq"].as_u64().unwrap()).collect()
}

/// Waits for the start-time cut: the feed from 0 is refused once its mark
/// is raised, and the server logs the cut once it is made and compacted.
fn cut_made(s: &Server) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = feed(s, 0);
        if r.status == 409 && s.logs().contains("removed changes past the retention period") {
            return r;
        }
        assert!(Instant::now() < deadline, "no cut made: {}\n{}", r.text, s.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn changes_past_the_retention_period_are_removed_and_a_subscriber_behind_them_is_told() {
    let scratch = tempfile::tempdir().unwrap();
    let g = basedata_gen::GenConfig { persons: 6, entities: 0, seed: 12 };
    let keys: Vec<String> = (0..6).map(|i| basedata_gen::person_key(&g, i).as_str().to_owned()).collect();
    let push = |s: &Server, range: std::ops::Range<usize>, version: u64| {
        let lines: Vec<Value> =
            range.map(|i| json!({"key": keys[i], "version": version, "fields": basedata_gen::person_hukou(&g, i as u64)})).collect();
        let r = s.req("POST", "/v1/datasets/hukou/updates").token(tokens::GONGAN).ndjson(&lines);
        assert_eq!(r.json["applied"].as_u64(), Some(lines.len() as u64), "{}", r.text);
    };

    // A hundred days ago four changes (1–4), fifty days ago two more (5–6).
    let mut s = Server::start_in(scratch.path(), &config(-100, ""), &[]);
    push(&s, 0..4, 1);
    assert!(s.terminate().success());
    let mut s = Server::start_in(scratch.path(), &config(-50, ""), &[]);
    push(&s, 4..6, 1);
    assert!(s.terminate().success());

    // Today without a retention period: the whole log is there.
    let mut s = Server::start_in(scratch.path(), &config(0, ""), &[]);
    assert_eq!(seqs(&feed(&s, 0)), [1, 2, 3, 4, 5, 6]);
    assert!(s.terminate().success());

    // Kept 60 days: changes 1–4 go at start.
    let mut s = Server::start_in(scratch.path(), &config(0, "change_retention_days = 60"), &[]);
    let refused = cut_made(&s);
    assert_eq!(refused.code(), "conflict", "{}", refused.text);
    let details = &refused.json["error"]["details"];
    assert_eq!((details["after"].as_u64(), details["kept_after"].as_u64()), (Some(0), Some(4)), "{}", refused.text);
    assert_eq!(details["reason"], "changes_removed");
    let metrics = s.req("GET", "/metrics").get().text;
    assert!(metrics.lines().any(|l| l.ends_with("change_log_kept_after 4")), "{metrics}");
    assert_eq!(feed(&s, 3).code(), "conflict", "one change short is still a gap");
    // Resuming where the log now starts, or later, goes on as before.
    let r = feed(&s, 4);
    assert_eq!((r.status, seqs(&r)), (200, vec![5, 6]), "{}", r.text);
    assert_eq!(r.json["next"].as_u64(), Some(6));
    assert_eq!(seqs(&feed(&s, 5)), [6]);
    // New changes are numbered on: the first key's second version.
    push(&s, 0..1, 2);
    assert_eq!(seqs(&feed(&s, 4)), [5, 6, 7]);
    // The records, and what they said in the past, are untouched: 75 days
    // ago the first key's record was the version of change 1, removed
    // from the log but not from its history.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
    let then = basedata_store::value::format_datetime(now - 75 * DAY * 1_000_000);
    let version = |k: &str, as_of: &str| {
        let r = s.req("GET", &format!("/v1/persons/{k}?datasets=hukou{as_of}")).token(tokens::COUNTER).purpose("核对").get();
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["datasets"]["hukou"]["version"].as_u64()
    };
    assert_eq!(version(&keys[0], ""), Some(2));
    assert_eq!(version(&keys[0], &format!("&as_of={then}")), Some(1));
    for k in &keys[1..] {
        assert_eq!(version(k, ""), Some(1));
    }
    assert!(s.terminate().success());

    // Kept 30 days, after a restart: everything is older, but the newest
    // change stays, and the numbering goes on past it.
    let mut s = Server::start_in(scratch.path(), &config(60, "change_retention_days = 30"), &[]);
    let refused = cut_made(&s);
    assert_eq!(refused.json["error"]["details"]["kept_after"].as_u64(), Some(6), "{}", refused.text);
    assert_eq!(seqs(&feed(&s, 6)), [7]);
    push(&s, 1..2, 2);
    assert_eq!(seqs(&feed(&s, 6)), [7, 8]);
    assert!(s.terminate().success());
}
