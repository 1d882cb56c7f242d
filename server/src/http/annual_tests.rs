//! A generated year of activity driven through the router on a manual
//! clock (providers pushing updates with rejected lines and a long pause,
//! counters looking up, verifying and comparing in batches, refusals for
//! purpose and class, grants and disputes answered on time, late, or not at
//! all), and the yearly report's figures checked against the tally the
//! test kept while it went.

use super::*;
use super::tests::dept;
use crate::config::Role;
use axum::body::Body;
use axum::http::{Request as HttpRequest, StatusCode};
use basedata_gen::{person_hukou, person_key, GenConfig};
use basedata_store::calendar::Calendar;
use basedata_store::clock::ManualClock;
use basedata_store::engine::mem::MemEngine;
use basedata_store::Secret;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use time::macros::date;
use time::{Date, Duration as Days};
use tower::ServiceExt;

const GONGAN: &str = "annual-gongan-token-01";
const SHEBAO: &str = "annual-shebao-token-01";
const YIBAO: &str = "annual-yibao-token-001";
const SHENJI: &str = "annual-shenji-token-01";
/// Persons the providers keep records of.
const PERSONS: u64 = 40;

struct Sim {
    app: Router,
    clock: Arc<ManualClock>,
    rng: fastrand::Rng,
    gen: GenConfig,
    versions: Vec<u64>,
    calendar: Calendar,
}

/// 10:00 China Standard Time on `d`, as Unix microseconds.
fn at_ten(d: Date) -> i64 {
    let days = i64::from(d.to_julian_day() - date!(1970 - 01 - 01).to_julian_day());
    days * 86_400_000_000 + 2 * 3_600_000_000
}

impl Sim {
    fn new(seed: u64, start: Date) -> Sim {
        let clock = Arc::new(ManualClock::new(at_ten(start)));
        let store = Store::open(Arc::new(MemEngine::new()), &Secret::from_bytes([7; 32]), Arc::new(Catalog::builtin()), clock.clone())
            .unwrap();
        let departments = Departments::from_config(&[
            dept("gongan", "市公安局", vec![Role::Provider], GONGAN, None),
            dept("shebao", "社保窗口", vec![Role::Consumer], SHEBAO, Some(vec!["social_insurance"])),
            dept("yibao", "医保窗口", vec![Role::Consumer], YIBAO, None),
            dept("shenji", "审计", vec![Role::Auditor], SHENJI, None),
        ])
        .unwrap();
        let state = AppState::build(Arc::new(store), departments, Settings::default()).unwrap();
        Sim {
            app: router(state),
            clock,
            rng: fastrand::Rng::with_seed(seed),
            gen: GenConfig { persons: PERSONS, entities: 0, seed },
            versions: vec![0; PERSONS as usize],
            calendar: Calendar::builtin(),
        }
    }

    async fn send(&self, method: &str, path: &str, token: &str, purpose: Option<&str>, body: Option<(&str, Vec<u8>)>) -> (StatusCode, Value) {
        let mut b = HttpRequest::builder().method(method).uri(path).header("authorization", format!("Bearer {token}"));
        if let Some(p) = purpose {
            // Header values are ASCII: the API takes UTF-8 percent-encoded.
            b = b.header("x-purpose", percent_encoding::utf8_percent_encode(p, percent_encoding::NON_ALPHANUMERIC).to_string());
        }
        let req = match body {
            Some((ct, bytes)) => b.header("content-type", ct).body(Body::from(bytes)).unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn json(&self, method: &str, path: &str, token: &str, purpose: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.send(method, path, token, purpose, Some(("application/json", body.to_string().into_bytes()))).await
    }

    fn key(&self, i: u64) -> String {
        person_key(&self.gen, i).as_str().to_owned()
    }

    fn name(&self, i: u64) -> String {
        person_hukou(&self.gen, i)["name"].as_str().unwrap().to_owned()
    }
}

/// What the test did, to compare with the report.
#[derive(Default, Debug)]
struct Tally {
    applied: u64,
    rejected: u64,
    update_requests: u64,
    monthly: [u64; 12],
    update_days: Vec<Date>,
    /// Every day with updates, before the year too (timeliness on 1
    /// January depends on the last update of December).
    all_update_days: Vec<Date>,
    /// Per consumer: lookups, verifications, batch lines, denials.
    lookups: BTreeMap<&'static str, u64>,
    verifications: BTreeMap<&'static str, u64>,
    batch_lines: BTreeMap<&'static str, u64>,
    denials: BTreeMap<&'static str, u64>,
    /// Denials naming hukou (the pair counters' share).
    hukou_denials: BTreeMap<&'static str, u64>,
    refused_purpose: BTreeMap<&'static str, u64>,
    refused_class: BTreeMap<&'static str, u64>,
    grants_received: usize,
    grants_on_time: usize,
    grants_deemed: usize,
    disputes_received: usize,
    disputes_on_time: usize,
    disputes_late: usize,
    disputes_open_overdue: usize,
}

/// Days in 2026 past the date a realtime dataset's next update was due
/// (the next working day after an update), without an update that day.
fn expected_overdue(calendar: &Calendar, update_days: &[Date]) -> (u32, u32) {
    let mut overdue = 0;
    let mut longest = 0;
    let mut d = date!(2026 - 01 - 01);
    while d.year() == 2026 {
        let last = update_days.iter().copied().filter(|u| *u <= d).max();
        if let Some(last) = last {
            if last != d {
                // The first working day after `last`, stepping day by day.
                let mut due = last.next_day().unwrap();
                while !calendar.is_working_day(due) {
                    due = due.next_day().unwrap();
                }
                if d > due {
                    overdue += 1;
                }
                longest = longest.max((d - last).whole_days() as u32);
            }
        }
        d = d.next_day().unwrap();
    }
    (overdue, longest)
}

#[tokio::test]
async fn annual_report_figures_match_a_generated_year() {
    let seed = std::env::var("BASEDATA_ANNUAL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    println!("annual report test seed {seed} (BASEDATA_ANNUAL_SEED={seed} to rerun)");
    // The year starts with records already in place from December.
    let mut sim = Sim::new(seed, date!(2025 - 12 - 01));
    let mut t = Tally::default();
    let mut open_grants: Vec<(String, Date)> = Vec::new();
    // Disputes to resolve: id, the day to resolve on (None: never).
    let mut open_disputes: Vec<(String, Option<Date>, Date)> = Vec::new();
    // No updates in this stretch: the provider falls behind.
    let pause = date!(2026 - 05 - 06)..=date!(2026 - 05 - 25);

    let mut day = date!(2025 - 12 - 01);
    let end = date!(2027 - 01 - 05);
    let mut mid_year_checked = false;
    while day <= end {
        sim.clock.set(at_ten(day));
        let in_year = day.year() == 2026;
        let working = sim.calendar.is_working_day(day);

        if day == date!(2026 - 07 - 01) {
            // The current year's report covers up to now and says so.
            let (s, r) = sim.send("GET", "/v1/reports/annual?year=2026", SHENJI, None, None).await;
            assert_eq!(s, StatusCode::OK, "{r}");
            assert_eq!((r["complete"].as_bool(), r["days"].as_u64()), (Some(false), Some(182)));
            let (s, r) = sim.send("GET", "/v1/reports/annual?year=2027", SHENJI, None, None).await;
            assert_eq!((s, r["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_value")));
            mid_year_checked = true;
        }

        // Every person's record is in place before the year.
        if day == date!(2025 - 12 - 01) {
            let lines: Vec<String> = (0..PERSONS)
                .map(|i| {
                    sim.versions[i as usize] = 1;
                    let mut fields = person_hukou(&sim.gen, i);
                    fields.remove("photo");
                    json!({"key": sim.key(i), "version": 1, "op": "upsert", "fields": fields}).to_string()
                })
                .collect();
            let (s, r) = sim.send("POST", "/v1/datasets/hukou/updates", GONGAN, None, Some(("application/x-ndjson", lines.join("\n").into_bytes()))).await;
            assert_eq!((s, r["applied"].as_u64()), (StatusCode::OK, Some(PERSONS)), "{r}");
        }
        // The provider: most working days, rarely at weekends, never in the pause.
        let pushes = day.year() < 2027
            && !pause.contains(&day)
            && (day.year() == 2025 || sim.rng.f64() < if working { 0.7 } else { 0.1 });
        if pushes {
            let mut lines = Vec::new();
            let n = sim.rng.u64(1..=4);
            for _ in 0..n {
                let i = sim.rng.u64(0..PERSONS);
                sim.versions[i as usize] += 1;
                let mut fields = person_hukou(&sim.gen, i);
                fields.remove("photo");
                lines.push(json!({"key": sim.key(i), "version": sim.versions[i as usize], "op": "upsert", "fields": fields}).to_string());
            }
            let bad = sim.rng.u8(0..10) < 3;
            if bad {
                lines.push(json!({"key": "123", "version": 1, "op": "upsert", "fields": {}}).to_string());
            }
            let body = lines.join("\n").into_bytes();
            let (s, r) = sim.send("POST", "/v1/datasets/hukou/updates", GONGAN, None, Some(("application/x-ndjson", body))).await;
            assert_eq!(s, StatusCode::OK, "{r}");
            assert_eq!(r["applied"].as_u64(), Some(n), "{r}");
            assert_eq!(r["rejected"].as_array().map(Vec::len), Some(bad as usize));
            t.all_update_days.push(day);
            if in_year {
                t.applied += n;
                t.rejected += bad as u64;
                t.update_requests += 1;
                t.monthly[usize::from(u8::from(day.month())) - 1] += n;
                t.update_days.push(day);
            }
        }
        let tally = |m: &mut BTreeMap<&'static str, u64>, k: &'static str, by: u64| {
            if in_year {
                *m.entry(k).or_default() += by;
            }
        };

        // The counters, on working days.
        if working && day.year() < 2027 {
            for (who, token, purpose) in [("shebao", SHEBAO, "social_insurance; 养老待遇核定"), ("yibao", YIBAO, "医保报销审核")] {
                for _ in 0..sim.rng.u32(0..=3) {
                    let i = sim.rng.u64(0..PERSONS);
                    let (s, r) = sim.send("GET", &format!("/v1/persons/{}?datasets=hukou", sim.key(i)), token, Some(purpose), None).await;
                    assert_eq!(s, StatusCode::OK, "{r}");
                    tally(&mut t.lookups, who, 1);
                }
                for _ in 0..sim.rng.u32(0..=2) {
                    let i = sim.rng.u64(0..PERSONS);
                    let body = json!({"dataset": "hukou", "fields": {"name": sim.name(i)}});
                    let (s, r) = sim.json("POST", &format!("/v1/persons/{}/verify", sim.key(i)), token, Some(purpose), body).await;
                    assert_eq!((s, r["result"].as_str()), (StatusCode::OK, Some("match")), "{r}");
                    tally(&mut t.verifications, who, 1);
                }
            }
            // A catalogued purpose the strict counter may not state.
            if sim.rng.u8(0..20) == 0 {
                let (s, r) = sim.send("GET", &format!("/v1/persons/{}", sim.key(0)), SHEBAO, Some("tax_administration"), None).await;
                assert_eq!((s, r["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("purpose_not_allowed")), "{r}");
                tally(&mut t.denials, "shebao", 1);
                tally(&mut t.refused_purpose, "shebao", 1);
            }
            // A counter trying to write the provider's dataset.
            if sim.rng.u8(0..25) == 0 {
                let line = json!({"key": sim.key(1), "version": 999_999, "op": "delete"}).to_string().into_bytes();
                let (s, r) = sim.send("POST", "/v1/datasets/hukou/updates", YIBAO, None, Some(("application/x-ndjson", line))).await;
                assert_eq!((s, r["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{r}");
                tally(&mut t.denials, "yibao", 1);
                tally(&mut t.hukou_denials, "yibao", 1);
                tally(&mut t.refused_class, "yibao", 1);
            }
            // Now and then a batch comparison.
            if sim.rng.u8(0..15) == 0 {
                let m = sim.rng.u64(2..=6);
                let body: Vec<String> = (0..m)
                    .map(|r| json!({"ref": r, "subject": "person", "key": sim.key(r), "fields": {"name": sim.name(r)}}).to_string())
                    .collect();
                let (s, _) = sim.send("POST", "/v1/verify/batch", YIBAO, Some("医保批量比对"), Some(("application/x-ndjson", body.join("\n").into_bytes()))).await;
                assert_eq!(s, StatusCode::OK);
                tally(&mut t.batch_lines, "yibao", m);
            }
        }

        // Grants: applied for on some working days; answered the same day,
        // or left to the deadline (deemed approved).
        if in_year && working && sim.rng.u8(0..30) == 0 {
            let body = json!({"dataset": "hukou", "fields": ["photo"], "purpose": "social_insurance", "legal_basis": "《社会保险法》"});
            let (s, g) = sim.json("POST", "/v1/grants", SHEBAO, Some("social_insurance"), body).await;
            assert_eq!(s, StatusCode::CREATED, "{g}");
            t.grants_received += 1;
            let id = g["id"].as_str().unwrap().to_owned();
            if sim.rng.bool() {
                let (s, r) = sim.json("POST", &format!("/v1/grants/{id}/decision"), GONGAN, None, json!({"approve": true})).await;
                assert_eq!(s, StatusCode::OK, "{r}");
                t.grants_on_time += 1;
            } else {
                let due = Date::parse(g["due"].as_str().unwrap(), &time::format_description::well_known::Iso8601::DATE).unwrap();
                open_grants.push((id, due));
            }
        }
        // Disputes: resolved the same day, 10 days later (late), or never.
        if in_year && working && day.month() != time::Month::December && sim.rng.u8(0..25) == 0 {
            let i = sim.rng.u64(0..PERSONS);
            let body = json!({"subject": "person", "key": sim.key(i), "dataset": "hukou", "field": "name", "claimed": "某某", "note": "窗口核对不一致"});
            let (s, d) = sim.json("POST", "/v1/disputes", SHEBAO, Some("social_insurance"), body).await;
            assert_eq!(s, StatusCode::CREATED, "{d}");
            t.disputes_received += 1;
            let due = Date::parse(d["due"].as_str().unwrap(), &time::format_description::well_known::Iso8601::DATE).unwrap();
            let when = match sim.rng.u8(0..3) {
                0 => Some(day),
                1 => Some(day + Days::days(14)),
                _ => None,
            };
            open_disputes.push((d["id"].as_str().unwrap().to_owned(), when, due));
        }
        let mut still = Vec::new();
        for (id, when, due) in open_disputes.drain(..) {
            if when == Some(day) {
                let (s, r) = sim.json("POST", &format!("/v1/disputes/{id}/resolution"), GONGAN, None, json!({"outcome": "confirmed", "note": "核实无误"})).await;
                assert_eq!(s, StatusCode::OK, "{r}");
                if day.year() == 2026 {
                    if day <= due {
                        t.disputes_on_time += 1;
                    } else {
                        t.disputes_late += 1;
                    }
                }
            } else {
                still.push((id, when, due));
            }
        }
        open_disputes = still;
        day = day.next_day().unwrap();
    }
    assert!(mid_year_checked);
    // Unresolved at the year's end and past their deadline; those resolved
    // in January were still open on 31 December.
    t.disputes_open_overdue = open_disputes.iter().filter(|(_, when, due)| when.is_none_or(|w| w.year() == 2027) && *due < date!(2026 - 12 - 31)).count();
    // Deemed approved when the deadline's day ends: within the year for
    // deadlines before 31 December.
    t.grants_deemed = open_grants.iter().filter(|(_, due)| *due < date!(2026 - 12 - 31)).count();

    // The complete year, asked for in January.
    let (s, r) = sim.send("GET", "/v1/reports/annual?year=2026", SHENJI, None, None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!((r["complete"].as_bool(), r["days"].as_u64(), r["calendar_covers_year"].as_bool()), (Some(true), Some(365), Some(true)));
    let ds = |id: &str| r["datasets"].as_array().unwrap().iter().find(|d| d["dataset"] == id).unwrap().clone();
    let dep = |id: &str| r["departments"].as_array().unwrap().iter().find(|d| d["department"] == id).unwrap().clone();
    let hukou = ds("hukou");
    assert_eq!(hukou["updates_applied"].as_u64(), Some(t.applied));
    assert_eq!(hukou["rejected_lines"].as_u64(), Some(t.rejected));
    assert_eq!(hukou["update_days"].as_u64(), Some(t.update_days.len() as u64));
    let monthly: Vec<u64> = hukou["monthly_updates"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(monthly, t.monthly);
    let (overdue, longest) = expected_overdue(&sim.calendar, &t.all_update_days);
    println!(
        "year: {} updates on {} days, {} rejected lines, {overdue} days overdue (longest gap {longest}); lookups {:?}, verifications {:?}, batch lines {:?}, denials {:?}; grants {} ({} on time, {} deemed); disputes {} ({} on time, {} late, {} open overdue)",
        t.applied, t.update_days.len(), t.rejected, t.lookups, t.verifications, t.batch_lines, t.denials,
        t.grants_received, t.grants_on_time, t.grants_deemed, t.disputes_received, t.disputes_on_time, t.disputes_late, t.disputes_open_overdue
    );
    assert!(overdue >= 10, "the May pause makes the provider late ({overdue} days)");
    assert_eq!(hukou["days_overdue"].as_u64(), Some(u64::from(overdue)));
    assert_eq!(hukou["longest_gap_days"].as_u64(), Some(u64::from(longest)));
    assert_eq!(hukou["days_before_first_update"].as_u64(), Some(0));
    // A dataset nobody updated: no timeliness to measure, nothing overdue.
    let permits = ds("residence_permit");
    assert_eq!((permits["days_before_first_update"].as_u64(), permits["days_overdue"].as_u64()), (Some(365), Some(0)));

    // Who used the provider's data, and how.
    for who in ["shebao", "yibao"] {
        let c = hukou["consumers"].as_array().unwrap().iter().find(|c| c["department"] == who).unwrap_or_else(|| panic!("{who} in {hukou}"));
        let get = |m: &BTreeMap<&str, u64>| m.get(who).copied().unwrap_or(0);
        assert_eq!(c["uses"]["lookups"].as_u64(), Some(get(&t.lookups)), "{who}");
        assert_eq!(c["uses"]["verifications"].as_u64(), Some(get(&t.verifications)), "{who}");
        assert_eq!(c["uses"]["batch_lines"].as_u64(), Some(get(&t.batch_lines)), "{who}");
        assert_eq!(c["uses"]["denials"].as_u64(), Some(get(&t.hukou_denials)), "{who}");

        let d = dep(who);
        assert_eq!(d["uses"]["lookups"].as_u64(), Some(get(&t.lookups)), "{who}");
        assert_eq!(d["uses"]["verifications"].as_u64(), Some(get(&t.verifications)), "{who}");
        assert_eq!(d["uses"]["batch_lines"].as_u64(), Some(get(&t.batch_lines)), "{who}");
        assert_eq!(d["uses"]["denials"].as_u64(), Some(get(&t.denials)), "{who}");
        assert_eq!(d["refused_for_purpose"].as_u64(), Some(get(&t.refused_purpose)), "{who}");
        assert_eq!(d["refused_for_class"].as_u64(), Some(get(&t.refused_class)), "{who}");
    }
    // Free-text purposes: every read of the transitional counter.
    let yibao_reads = [&t.lookups, &t.verifications, &t.batch_lines].iter().map(|m| m.get("yibao").copied().unwrap_or(0)).sum::<u64>();
    assert_eq!(dep("yibao")["uses_without_catalogued_purpose"].as_u64(), Some(yibao_reads));
    assert_eq!(dep("shebao")["uses_without_catalogued_purpose"].as_u64(), Some(0));
    assert_eq!((dep("shebao")["purpose_mode"].as_str(), dep("yibao")["purpose_mode"].as_str()), (Some("strict"), Some("transitional")));

    // The provider's side.
    let g = dep("gongan");
    assert_eq!(g["updates_applied"].as_u64(), Some(t.applied));
    assert_eq!(g["rejected_lines"].as_u64(), Some(t.rejected));
    assert_eq!(g["update_requests"].as_u64(), Some(t.update_requests));
    assert_eq!(g["responsible_record"].as_str(), Some("missing"));
    let grants = &g["grants"];
    assert_eq!(grants["received"].as_u64(), Some(t.grants_received as u64), "{grants}");
    assert_eq!(grants["answered"].as_u64(), Some(t.grants_on_time as u64), "{grants}");
    assert_eq!(grants["on_time"].as_u64(), Some(t.grants_on_time as u64), "{grants}");
    assert_eq!(grants["deemed_approved"].as_u64(), Some(t.grants_deemed as u64), "{grants}");
    let disputes = &g["disputes"];
    assert_eq!(disputes["received"].as_u64(), Some(t.disputes_received as u64), "{disputes}");
    assert_eq!(disputes["on_time"].as_u64(), Some(t.disputes_on_time as u64), "{disputes}");
    assert_eq!(disputes["late"].as_u64(), Some(t.disputes_late as u64), "{disputes}");
    assert_eq!(disputes["open_overdue"].as_u64(), Some(t.disputes_open_overdue as u64), "{disputes}");
    assert_eq!(r["disputes"], *disputes, "one provider: its figures are the totals");

    // The document shows the same figures.
    let (s, _) = sim.send("GET", "/v1/reports/annual?year=2026&format=html", SHENJI, None, None).await;
    assert_eq!(s, StatusCode::OK);
    let req = HttpRequest::get("/v1/reports/annual?year=2026&format=html").header("authorization", format!("Bearer {SHENJI}")).body(Body::empty()).unwrap();
    let resp = sim.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    let doc = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(doc.contains(&format!(r#"<dd id="sum-applied">{}</dd>"#, t.applied)), "applied in the summary");
    assert!(doc.contains(&format!(r#"<dd id="sum-rejected">{}</dd>"#, t.rejected)), "rejected in the summary");
    assert!(doc.contains("医保窗口") && doc.contains(r#"id="consumers-hukou""#));

    // Only oversight reads it; a year must be a year.
    let (s, r) = sim.send("GET", "/v1/reports/annual?year=2026", SHEBAO, None, None).await;
    assert_eq!((s, r["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    for bad in ["year=abc", "year=1999", "year=2028", "year=2026&format=pdf"] {
        let (s, r) = sim.send("GET", &format!("/v1/reports/annual?{bad}"), SHENJI, None, None).await;
        assert_eq!((s, r["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_value")), "{bad}");
    }
    // Last year's report: only the December before the year began.
    let (s, r) = sim.send("GET", "/v1/reports/annual?year=2025", SHENJI, None, None).await;
    assert_eq!(s, StatusCode::OK);
    let before = r["datasets"].as_array().unwrap().iter().find(|d| d["dataset"] == "hukou").unwrap()["update_days"].as_u64();
    assert_eq!(before, Some(31), "every day of December 2025 had updates");
}
