//! End-to-end tests of the foundation over real HTTP with the release
//! binary: health, authentication, key explanations, catalog, graceful
//! shutdown and restart, secrets, the demo and the generator commands.

use basedata_tests::*;
use std::process::{Command, Stdio};

#[test]
fn health_ready_and_authentication() {
    let s = Server::start(&standard_config());
    let r = s.req("GET", "/healthz").get();
    assert_eq!(r.status, 200);
    assert!(r.header("x-request-id").is_some());
    let r = s.req("GET", "/readyz").get();
    assert_eq!((r.status, r.json["status"].as_str()), (200, Some("ready")));

    let r = s.req("GET", "/v1/catalog").get();
    assert_eq!((r.status, r.code()), (401, "unauthenticated"));
    let r = s.req("GET", "/v1/catalog").token("not-a-known-token-at-all").get();
    assert_eq!((r.status, r.code()), (401, "unauthenticated"));
    let r = s.req("GET", "/v1/catalog").header("authorization", "Basic abc").get();
    assert_eq!(r.status, 401);
    let r = s.req("GET", "/v1/catalog").token(tokens::COUNTER).get();
    assert_eq!(r.status, 200);
    let ids: Vec<&str> = r.json["datasets"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    for fixed in ["hukou", "death", "marriage", "market_registration", "tax_registration"] {
        assert!(ids.contains(&fixed), "{fixed} missing from {ids:?}");
    }
}

#[test]
fn key_endpoints_normalize_and_explain() {
    let s = Server::start(&standard_config());
    let check = |path: &str, valid: bool, field: &str, expected: &str| {
        let r = s.req("GET", path).token(tokens::COUNTER).get();
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert_eq!(r.json["valid"], valid, "{path}: {}", r.text);
        assert_eq!(r.json[field], expected, "{path}: {}", r.text);
    };
    check("/v1/keys/person/11010519491231002X", true, "normalized", "11010519491231002X");
    check("/v1/keys/person/11010519491231002x", true, "gender", "female");
    check("/v1/keys/person/%EF%BC%91%EF%BC%91%EF%BC%90%EF%BC%91%EF%BC%90%EF%BC%95%EF%BC%91%EF%BC%99%EF%BC%94%EF%BC%99%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%91%EF%BC%90%EF%BC%90%EF%BC%92%EF%BC%B8", true, "normalized", "11010519491231002X");
    check("/v1/keys/person/110105491231002", true, "normalized", "11010519491231002X");
    check("/v1/keys/person/%2011010519491231002X%20", true, "birth_date", "1949-12-31");
    check("/v1/keys/person/123", false, "reason", "length");
    check("/v1/keys/person/1101051949123100AX", false, "reason", "format");
    check("/v1/keys/person/110105194912310021", false, "reason", "checksum");
    check("/v1/keys/person/110105194902300021", false, "reason", "date");
    check("/v1/keys/person/110105290001010016", false, "reason", "date");
    check("/v1/keys/entity/91350100M000100Y43", true, "organization_code", "M000100Y4");
    check("/v1/keys/entity/91350100m000100y43", true, "region", "350100");
    check("/v1/keys/entity/91350100M000100Y4", false, "reason", "length");
    check("/v1/keys/entity/91350100M000100YI3", false, "reason", "format");
    check("/v1/keys/entity/91350100M000100Y44", false, "reason", "checksum");
    // Logs never carry the full ID numbers that passed through the paths.
    // The log lines arrive through a pipe; give them a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut logs = s.logs();
    while !logs.contains("/v1/keys/person/{id}") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        logs = s.logs();
    }
    assert!(logs.contains("/v1/keys/person/{id}"), "access log missing: {logs}");
    assert!(!logs.contains("11010519491231002X") && !logs.contains("91350100M000100Y43"), "{logs}");
}

#[test]
fn sigterm_shuts_down_cleanly_and_restart_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &standard_config(), &[]);
    let status = s.terminate();
    assert!(status.success(), "exit status {status:?}; logs:\n{}", s.logs());
    assert!(s.logs().contains("shut down cleanly"));
    // The key file sits beside the data directory, not in it.
    assert!(dir.path().join("data.key").exists());
    let s2 = Server::start_in(dir.path(), &standard_config(), &[]);
    assert_eq!(s2.req("GET", "/readyz").get().status, 200);
}

#[test]
fn wrong_or_missing_secret_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &standard_config(), &[]);
    s.terminate();
    let data = dir.path().join("data");
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, "ab".repeat(32)).unwrap();
    let (status, _, err) = run_cli(&["serve", "--data", data.to_str().unwrap(), "--key-file", other_key.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert!(!status.success());
    assert!(err.contains("secret key does not belong"), "{err}");
    std::fs::remove_file(dir.path().join("data.key")).unwrap();
    let (status, _, err) = run_cli(&["serve", "--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert!(!status.success());
    assert!(err.contains("no key file"), "{err}");
    let inside = data.join("k.key");
    let (status, _, err) = run_cli(&["serve", "--data", data.to_str().unwrap(), "--key-file", inside.to_str().unwrap()]);
    assert!(!status.success());
    assert!(err.contains("must not be inside"), "{err}");
}

#[test]
fn bad_arguments_exit_non_zero_with_a_reason() {
    for args in [&["gen"][..], &["serve"], &["nonsense"], &["serve", "--data", "/x", "--config", "/no/such/file.toml"]] {
        let (status, _, err) = run_cli(args);
        assert!(!status.success(), "{args:?}");
        assert!(!err.trim().is_empty(), "{args:?}");
    }
    let (status, out, _) = run_cli(&["--help"]);
    assert!(status.success());
    for cmd in ["serve", "demo", "gen"] {
        assert!(out.contains(cmd));
    }
}

#[test]
fn gen_is_deterministic_per_seed() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    for (dir, seed) in [(&a, "7"), (&b, "7"), (&c, "8")] {
        let (status, out, err) = run_cli(&["gen", "--persons", "500", "--entities", "50", "--out", dir.path().to_str().unwrap(), "--seed", seed]);
        assert!(status.success(), "{err}");
        assert!(out.contains("hukou.ndjson"));
    }
    let read = |d: &tempfile::TempDir, f: &str| std::fs::read(d.path().join(f)).unwrap();
    for f in ["hukou.ndjson", "death.ndjson", "marriage.ndjson", "market_registration.ndjson", "tax_registration.ndjson"] {
        assert_eq!(read(&a, f), read(&b, f), "{f}");
    }
    assert_ne!(read(&a, "hukou.ndjson"), read(&c, "hukou.ndjson"));
    assert_eq!(String::from_utf8(read(&a, "hukou.ndjson")).unwrap().lines().count(), 500);
}

#[test]
fn demo_generates_prints_tokens_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(binary())
        .args(["demo", "--data", dir.path().join("demo").to_str().unwrap(), "--persons", "2000", "--entities", "200"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut out = String::new();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    while !out.contains("Try:") {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        out.push_str(&line);
    }
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    reader.read_line(&mut line).unwrap();
    out.push_str(&line);
    assert!(out.contains("demo-counter-token") && out.contains("demo-gongan-token"), "{out}");
    let example = out.lines().find(|l| l.contains("/v1/keys/person/")).expect("example request");
    let key = example.rsplit('/').next().unwrap().trim();
    assert_eq!(key.len(), 18);
    assert!(basedata_store::keys::PersonKey::parse(key).is_ok());
    let r = agent()
        .get(&format!("http://127.0.0.1:{port}/v1/keys/person/{key}"))
        .header("authorization", "Bearer demo-counter-token")
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The demo's strict counter states catalogued purposes only; the
    // transitional one states free text and is subscribed to the feed.
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let strict = req("GET", &url(&format!("/v1/persons/{key}"))).token("demo-yibao-token").purpose("核验身份").get();
    assert_eq!((strict.status, strict.code()), (403, "purpose_not_allowed"), "{}", strict.text);
    let strict = req("GET", &url(&format!("/v1/persons/{key}"))).token("demo-yibao-token").purpose("identity_check; 演示").get();
    assert_eq!(strict.status, 200, "{}", strict.text);
    let feed = req("GET", &url("/v1/changes?limit=5")).token("demo-counter-token").purpose("核验身份").get();
    assert_eq!(feed.json["changes"].as_array().map(Vec::len), Some(5), "{}", feed.text);
    let _ = child.kill();
    let _ = child.wait();
}
