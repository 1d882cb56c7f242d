//! The yearly report end to end with the release binary: a little activity
//! on a real server, then `basedata report annual` writes the JSON, the
//! HTML document and its PDF (printed by Debian's headless Chromium), and
//! refuses a counter's token. The figures themselves are checked against a
//! generated year in the server's `annual_tests`.

use basedata_gen::{person_hukou, person_key, GenConfig};
use basedata_tests::*;
use serde_json::json;
use std::process::{Command, Stdio};

fn run_report(s: &Server, token: &str, out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(binary())
        .args(["report", "annual", "--url", &s.url(""), "--out"])
        .arg(out)
        .args(extra)
        .env("BASEDATA_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn report_command_writes_json_html_and_pdf() {
    let s = Server::start(&standard_config());
    let gen = GenConfig { persons: 3, entities: 0, seed: 11 };
    let lines: Vec<_> = (0..3)
        .map(|i| json!({"key": person_key(&gen, i).as_str(), "version": 1, "op": "upsert", "fields": person_hukou(&gen, i)}))
        .chain([json!({"key": "123", "version": 1, "op": "upsert", "fields": {}})])
        .collect();
    let r = s.req("POST", "/v1/datasets/hukou/updates").token(tokens::GONGAN).ndjson(&lines);
    assert_eq!((r.status, r.json["applied"].as_u64()), (200, Some(3)), "{}", r.text);
    for i in 0..2 {
        let r = s.req("GET", &format!("/v1/persons/{}?datasets=hukou", person_key(&gen, i).as_str())).token(tokens::COUNTER).purpose("窗口查询").get();
        assert_eq!(r.status, 200, "{}", r.text);
    }

    let dir = tempfile::tempdir().unwrap();
    let out = run_report(&s, tokens::AUDITOR, dir.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "report annual failed: {stderr}");
    let listed: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
    assert_eq!(listed.len(), 3, "json, html and pdf: {listed:?}");

    let json_file = listed.iter().find(|p| p.ends_with(".json")).unwrap();
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(json_file).unwrap()).unwrap();
    let hukou = report["datasets"].as_array().unwrap().iter().find(|d| d["dataset"] == "hukou").unwrap();
    assert_eq!((hukou["updates_applied"].as_u64(), hukou["rejected_lines"].as_u64()), (Some(3), Some(1)), "{hukou}");
    let counter = hukou["consumers"].as_array().unwrap().iter().find(|c| c["department"] == "shebao-counter").unwrap();
    assert_eq!(counter["uses"]["lookups"].as_u64(), Some(2));
    assert_eq!(report["complete"], false, "this year is not over");

    let html = std::fs::read_to_string(listed.iter().find(|p| p.ends_with(".html")).unwrap()).unwrap();
    assert!(html.contains(&format!("{}年度政务信息共享情况报告", report["year"])));
    assert!(html.contains(r#"<dd id="sum-applied">3</dd>"#));
    let pdf = std::fs::read(listed.iter().find(|p| p.ends_with(".pdf")).unwrap()).unwrap();
    assert!(pdf.starts_with(b"%PDF"), "not a PDF");
    let pages = pdf.windows(b"/Type /Page\n".len()).filter(|w| w.starts_with(b"/Type /Page") && !w.starts_with(b"/Type /Pages")).count();
    assert!(pages >= 2, "the document runs to several pages ({pages})");
    // The screenshot-like artefact a reviewer can open.
    let keep = package_dir().join("../target/annual-report");
    let _ = std::fs::create_dir_all(&keep);
    for p in &listed {
        let _ = std::fs::copy(p, keep.join(std::path::Path::new(p).file_name().unwrap()));
    }

    // A counter may not read it; the command says why and fails.
    let out = run_report(&s, tokens::COUNTER, dir.path(), &["--no-pdf"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"), "{}", String::from_utf8_lossy(&out.stderr));
    // A year not yet begun is refused by the server.
    let out = run_report(&s, tokens::AUDITOR, dir.path(), &["--no-pdf", "--year", "2999"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_value"));
}
