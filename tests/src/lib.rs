//! Harness for end-to-end tests: starts the release `basedata` binary on a
//! loopback port in a scratch directory, waits until it answers, talks to
//! it over real HTTP, and stops it (SIGTERM or SIGKILL) on demand or drop.

pub mod webdriver;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// This package's directory, as cargo names it when it runs a test; the
/// path compiled in only as a fallback. Cargo reuses a test binary built
/// from identical sources in another checkout with the same build cache,
/// and the compiled-in path then names that checkout, which may be gone.
pub fn package_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// The binary under test: `BASEDATA_BIN`, else the release build of this
/// workspace (honouring `CARGO_TARGET_DIR`). `tools/test.sh` builds it first.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("BASEDATA_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| package_dir().join("../target"));
    let bin = target.join("release/basedata");
    assert!(bin.exists(), "{} is missing: run `cargo build --release --bin basedata` (tools/test.sh does)", bin.display());
    bin
}

/// Tokens of the departments in [`standard_config`].
pub mod tokens {
    pub const GONGAN: &str = "t-gongan-000000000000";
    pub const WEIJIAN: &str = "t-weijian-00000000000";
    pub const MINZHENG: &str = "t-minzheng-0000000000";
    pub const SHICHANG: &str = "t-shichang-0000000000";
    pub const SHUIWU: &str = "t-shuiwu-000000000000";
    pub const COUNTER: &str = "t-counter-00000000000";
    pub const AUDITOR: &str = "t-auditor-00000000000";
    pub const ADMIN: &str = "t-admin-0000000000000";
}

/// A configuration with the fixed providers, a counter, an auditor and an admin.
pub fn standard_config() -> String {
    use tokens::*;
    let mut s = String::new();
    for (id, roles, token) in [
        ("gongan", r#"["provider", "consumer"]"#, GONGAN),
        ("weijian", r#"["provider"]"#, WEIJIAN),
        ("minzheng", r#"["provider"]"#, MINZHENG),
        ("shichang", r#"["provider", "consumer"]"#, SHICHANG),
        ("shuiwu", r#"["provider"]"#, SHUIWU),
        ("shebao-counter", r#"["consumer"]"#, COUNTER),
        ("shenji", r#"["auditor"]"#, AUDITOR),
        ("admin", r#"["admin"]"#, ADMIN),
    ] {
        s.push_str(&format!("[[departments]]\nid = \"{id}\"\nroles = {roles}\ntoken = \"{token}\"\n\n"));
    }
    s
}

/// Has `consumer` subscribe to `dataset`'s changes (a grant of kind
/// `subscription`, for `purpose`) and `provider` approve it; returns the grant.
pub fn subscribe(s: &Server, consumer: &str, provider: &str, dataset: &str, purpose: &str) -> Value {
    let body = serde_json::json!({"dataset": dataset, "kind": "subscription", "purpose": purpose, "legal_basis": "测试依据"});
    let r = s.req("POST", "/v1/grants").token(consumer).json(&body);
    assert_eq!(r.status, 201, "subscription to {dataset}: {}", r.text);
    let id = r.json["id"].as_str().expect("grant id").to_owned();
    let d = s.req("POST", &format!("/v1/grants/{id}/decision")).token(provider).json(&serde_json::json!({"approve": true}));
    assert_eq!(d.status, 200, "approval of the subscription to {dataset}: {}", d.text);
    d.json
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running server process. Killed on drop.
pub struct Server {
    child: Option<Child>,
    pub addr: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// Everything the process wrote to stderr (its logs).
    pub stderr: Arc<Mutex<String>>,
    _scratch: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts `basedata serve` with `config` in a new scratch directory.
    pub fn start(config: &str) -> Server {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().to_path_buf();
        let mut s = Server::start_in(&dir, config, &[]);
        s._scratch = Some(scratch);
        s
    }

    /// Starts (or restarts) a server on the data in `dir/data`.
    pub fn start_in(dir: &Path, config: &str, extra: &[&str]) -> Server {
        let server = Server::spawn_in(dir, config, extra);
        server.wait_ready();
        server
    }

    /// Like [`Server::start_in`] without waiting for `/healthz` over plain
    /// HTTP (a TLS server is waited for by its own client).
    pub fn spawn_in(dir: &Path, config: &str, extra: &[&str]) -> Server {
        let cfg_path = dir.join("basedata.toml");
        std::fs::write(&cfg_path, config).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .arg("--data")
            .arg(dir.join("data"))
            .arg("--config")
            .arg(&cfg_path)
            .arg("--listen")
            .arg(&addr)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn basedata");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Server { child: Some(child), addr, dir: dir.to_path_buf(), config: cfg_path, stderr, _scratch: None }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = agent().get(&self.url("/healthz")).call() {
                if r.status().as_u16() == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not come up; stderr:\n{}", self.stderr.lock().unwrap());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The server's peak resident memory so far, in bytes (`VmHWM`).
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/PID/status");
        line.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()).expect("a size in kB") * 1024
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("server running");
        #[allow(unsafe_code)]
        // SAFETY: plain kill(2) on a child we own.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// A request builder for this server.
    pub fn req(&self, method: &str, path: &str) -> Req {
        Req { method: method.into(), url: self.url(path), headers: Vec::new() }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// A request builder for any URL.
pub fn req(method: &str, url: &str) -> Req {
    Req { method: method.into(), url: url.into(), headers: Vec::new() }
}

/// A small request builder over ureq that never turns statuses into errors.
pub struct Req {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
}

/// Status and body of a response; `json` is `Null` when the body is not JSON.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub text: String,
    pub json: Value,
    pub headers: Vec<(String, String)>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

impl Req {
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn token(self, t: &str) -> Self {
        self.header("authorization", &format!("Bearer {t}"))
    }
    pub fn purpose(self, p: &str) -> Self {
        self.header("x-purpose", p)
    }
    pub fn send(self, body: Option<(&str, Vec<u8>)>) -> Resp {
        self.try_send(body).expect("request failed at transport level")
    }
    /// [`Req::send`] that reports a transport failure (a server that is
    /// down, a connection cut) instead of panicking.
    pub fn try_send(self, body: Option<(&str, Vec<u8>)>) -> Result<Resp, String> {
        let a = agent();
        let uri: ureq::http::Uri = self.url.parse().unwrap();
        let mut b = ureq::http::Request::builder().method(self.method.as_str()).uri(uri);
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        let result = match body {
            Some((ct, bytes)) => a.run(b.header("content-type", ct).body(bytes).unwrap()),
            None => a.run(b.body(()).unwrap()),
        };
        let mut r = result.map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let text = r.body_mut().with_config().limit(1 << 30).read_to_string().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Resp { status, text, json, headers })
    }
    pub fn get(self) -> Resp {
        self.send(None)
    }
    pub fn json(self, v: &Value) -> Resp {
        self.try_json(v).expect("request failed at transport level")
    }
    pub fn ndjson(self, lines: &[Value]) -> Resp {
        self.try_ndjson(lines).expect("request failed at transport level")
    }
    pub fn try_json(self, v: &Value) -> Result<Resp, String> {
        self.try_send(Some(("application/json", serde_json::to_vec(v).unwrap())))
    }
    pub fn try_ndjson(self, lines: &[Value]) -> Result<Resp, String> {
        let mut body = Vec::new();
        for l in lines {
            serde_json::to_writer(&mut body, l).unwrap();
            body.push(b'\n');
        }
        self.try_send(Some(("application/x-ndjson", body)))
    }
}

/// Runs the binary with arguments to completion, returning status, stdout, stderr.
/// The auditor's `GET /v1/audit` entries (up to 1,000), the query's
/// other parameters given as `&name=value…`.
pub fn audit_entries(s: &Server, query: &str) -> Vec<Value> {
    let r = s.req("GET", &format!("/v1/audit?limit=1000{query}")).token(tokens::AUDITOR).get();
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["entries"].as_array().unwrap().clone()
}

pub fn run_cli(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(binary()).args(args).stdin(Stdio::null()).output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The birth date (`YYYY-MM-DD`) and sex code (`"1"` male, `"2"` female)
/// that an 18-digit citizen ID number encodes: a person's record must
/// agree with its key, so fixtures take both from it.
pub fn encoded(key: &str) -> (String, &'static str) {
    let b = &key[6..14];
    let sex = if (key.as_bytes()[16] - b'0') % 2 == 1 { "1" } else { "2" };
    (format!("{}-{}-{}", &b[..4], &b[4..6], &b[6..8]), sex)
}
