//! Cluster mode end to end, on the scripted local cluster
//! (`tools/cluster.sh`: three NATS servers in one JetStream cluster, three
//! basedata nodes): providers write to every node while counters verify on
//! every node; the NATS server leading the stream and one basedata node are
//! killed with SIGKILL mid-traffic and brought back later, and a fourth
//! node joins empty at the end.
//!
//! Checked: every acknowledged update is on every node at its version or a
//! newer one that was sent (none lost, none invented); all nodes converge
//! on the stream's last position and the same record digest; the
//! survivors answered every verification sent to them during the outage;
//! a read asking for a position sees the write that returned it; a node
//! restored from a peer's backup resumes from the backup's position; a node
//! holding half the partitions answers exactly for its keys; a node with
//! an older catalog stops at the first update it cannot apply and goes on
//! from there once upgraded; each node's audit chain verifies, and every
//! node holds every node's chain: an auditor on node 3 finds the
//! verifications node 1 answered, each node checks every chain, and the
//! chains' heads agree on nodes 1 to 3.
//!
//! Governance goes through the same log, under the same load and kills: a
//! grant applied for through node 2 and approved through node 1 opens the
//! photo on nodes 2 and 3, and its revocation through node 3 closes it on
//! nodes 1 and 2; a dispute filed through node 2 is resolved through node
//! 3; a grant left undecided is deemed approved exactly once when two nodes
//! whose clocks run a month ahead both sweep it; a policy switch made
//! through one node stands on all; every node, including the
//! ones that joined late, were seeded from a backup or upgraded, ends with
//! the same governance digest.
//!
//! Keys, batch sizes and target nodes come from a seed printed per run
//! (`BASEDATA_CLUSTER_SEED` reruns with the same ones).

use base64::Engine;
use basedata_tests::*;
use basedata_gen::{person_key, GenConfig};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WRITERS: usize = 4;
const KEYS_PER_WRITER: u64 = 64;
const VERIFIERS: usize = 2;
/// Phases of the traffic, from its start.
const KILL_AT: Duration = Duration::from_secs(4);
/// JetStream elects a new stream leader within about 4 to 11 s of losing one.
const REVIVE_AT: Duration = Duration::from_secs(20);
const STOP_AT: Duration = Duration::from_secs(26);
const PURPOSE: &str = "cluster-failover-check";

struct Cluster {
    dir: PathBuf,
    env: HashMap<String, String>,
}

impl Cluster {
    fn script(dir: &Path, args: &[&str]) {
        Cluster::script_with(dir, args, &[]);
    }

    /// [`Cluster::script`] with more variables in the script's environment.
    fn script_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) {
        let script = package_dir().join("../tools/cluster.sh");
        let out = Command::new("bash")
            .arg(&script)
            .args(&args[..1])
            .arg(dir)
            .args(&args[1..])
            .env("BASEDATA_BIN", binary())
            .envs(env.iter().copied())
            .output()
            .expect("run tools/cluster.sh");
        assert!(
            out.status.success(),
            "tools/cluster.sh {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start(dir: &Path) -> Cluster {
        Cluster::start_with(dir, &[])
    }

    /// [`Cluster::start`], with `env` for the script (its NATS settings).
    fn start_with(dir: &Path, env: &[(&str, &str)]) -> Cluster {
        Cluster::script_with(dir, &["start"], env);
        let text = std::fs::read_to_string(dir.join("cluster.env")).unwrap();
        let env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Cluster { dir: dir.to_path_buf(), env }
    }

    fn url(&self, node: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.env[&format!("NODE_PORT_{node}")])
    }

    fn token(&self, who: &str) -> &str {
        &self.env[&format!("TOKEN_{who}")]
    }

    /// `GET /v1/cluster` of a node, with the stream's figures (a node
    /// whose NATS server just came back may not have them for a moment).
    fn status(&self, node: usize, digest: bool) -> Value {
        let path = if digest { "/v1/cluster?digest=true" } else { "/v1/cluster" };
        let mut tries = 0;
        loop {
            let r = req("GET", &self.url(node, path)).token(self.token("AUDITOR")).get();
            assert_eq!(r.status, 200, "{}", r.text);
            if r.json["stream_last"].is_u64() || tries == 50 {
                return r.json;
            }
            tries += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts one more node of this cluster, outside the script, in
    /// `DIR/<dir>` with `config` (the script's, or a variant) and `extra`
    /// arguments beside the cluster's own.
    fn extra_node(&self, node: &str, dir: &str, config: &str, extra: &[&str]) -> Server {
        let dir = self.dir.join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = self.dir.join("cluster.key");
        let mut args = vec!["--key-file", key.to_str().unwrap(), "--cluster", self.env["NATS_URLS"].as_str(), "--node", node];
        args.extend_from_slice(extra);
        Server::start_in(&dir, config, &args)
    }

    fn config(&self) -> String {
        std::fs::read_to_string(self.dir.join("basedata.toml")).unwrap()
    }

    /// `GET /v1/cluster` of a node started by [`Cluster::extra_node`].
    fn status_of(&self, node: &Server, digest: bool) -> Value {
        let path = if digest { "/v1/cluster?digest=true" } else { "/v1/cluster" };
        node.req("GET", path).token(self.token("AUDITOR")).get().json
    }

    /// Waits (up to a minute) until `node` has applied the log up to `last`.
    fn wait_caught_up(&self, node: &Server, last: u64, what: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let st = self.status_of(node, false);
            if st["position"].as_u64().unwrap_or(0) >= last {
                return st;
            }
            assert!(Instant::now() < deadline, "{what} did not catch up to {last}:\n{}", tail(&node.logs()));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (up to a minute) until every node named has shipped its whole
    /// audit chain to the log and nodes 1 to 3 have applied the log to its
    /// end; returns that position.
    fn quiesce(&self, extra: &[&Server]) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut unshipped: Vec<u64> = (1..=3).map(|n| self.status(n, false)["audit"]["unshipped"].as_u64().unwrap()).collect();
            unshipped.extend(extra.iter().map(|s| self.status_of(s, false)["audit"]["unshipped"].as_u64().unwrap()));
            if unshipped.iter().all(|u| *u == 0) {
                break;
            }
            assert!(Instant::now() < deadline, "audit entries were not shipped: {unshipped:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let last = self.status(1, false)["stream_last"].as_u64().unwrap();
        loop {
            let positions: Vec<u64> = (1..=3).map(|n| self.status(n, false)["position"].as_u64().unwrap()).collect();
            if positions.iter().all(|p| *p >= last) {
                return last;
            }
            assert!(Instant::now() < deadline, "nodes did not reach {last}: {positions:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The audit entries for `key` an auditor sees on `node`, asserting
    /// that one of them is a use of kind `action` that node `by` answered.
    fn shows_use(&self, node: usize, by: &str, action: &str, key: &str) -> Vec<Value> {
        let r = req("GET", &self.url(node, &format!("/v1/audit?key={key}&limit=10000"))).token(self.token("AUDITOR")).get();
        assert_eq!(r.status, 200, "{}", r.text);
        let entries = r.json["entries"].as_array().unwrap().clone();
        assert!(
            entries.iter().any(|e| e["node"] == by && e["action"] == action && e["key"] == key),
            "node {node} does not show {by}'s {action} of {key}: {}",
            r.text
        );
        entries
    }

    fn logs(&self, what: &str) -> String {
        std::fs::read_to_string(self.dir.join("logs").join(format!("{what}.log"))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script = package_dir().join("../tools/cluster.sh");
        let _ = Command::new("bash").arg(script).arg("stop").arg(&self.dir).output();
    }
}

/// What a writer knows of one key: every line has a higher version than
/// the one before, and the name carries the version, so a stored record
/// shows exactly which line it came from.
#[derive(Clone, Copy, Debug, Default)]
struct KeyModel {
    sent: u64,
    acked: u64,
}

/// A governance request through `node` that must end in `want`. While the
/// log is electing a leader (`503` saying nothing changed) or the node has
/// not yet applied what the request needs (`404` on a node just back), it
/// is sent again, for up to a minute. A `503` saying the change is logged
/// but not applied here yet is waited out by sending it again too: a
/// decision is then refused as already made (`409`), which counts as done.
fn gov_call(c: &Cluster, node: usize, who: &str, path: &str, body: &Value, want: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut logged_before = false;
    loop {
        let r = req("POST", &c.url(node, path)).token(c.token(who)).try_json(body);
        match r {
            Ok(r) if r.status == want => return r.json,
            Ok(r) if r.status == 409 && logged_before => return Value::Null,
            Ok(r) if r.status == 503 || r.status == 404 => {
                logged_before |= r.status == 503 && !r.text.contains("nothing changed");
                assert!(Instant::now() < deadline, "{path} through node {node}: still {} after a minute: {}", r.status, r.text);
            }
            Ok(r) => panic!("{path} through node {node}: {} {}", r.status, r.text),
            Err(e) => assert!(Instant::now() < deadline, "{path} through node {node}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Waits (up to a minute) until `cond` holds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within a minute");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether a lookup through `node` shows `key`'s photo (a conditional field).
fn photo_visible(c: &Cluster, node: usize, key: &str) -> bool {
    let r = req("GET", &c.url(node, &format!("/v1/persons/{key}?datasets=hukou"))).token(c.token("COUNTER")).purpose(PURPOSE).get();
    assert_eq!(r.status, 200, "node {node}: {}", r.text);
    r.json["datasets"]["hukou"]["fields"].get("photo").is_some()
}

fn line(key: &str, version: u64) -> Value {
    let (born, sex) = encoded(key);
    json!({"key": key, "version": version, "op": "upsert",
           "fields": {"name": format!("n{version}"), "gender": sex, "birth_date": born, "status": "normal"}})
}

#[test]
fn cluster_survives_losing_a_nats_server_and_a_node() {
    let seed = std::env::var("BASEDATA_CLUSTER_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    eprintln!("cluster test seed {seed} (BASEDATA_CLUSTER_SEED={seed} to rerun)");
    // BASEDATA_CLUSTER_DIR keeps the cluster's data and logs for a look afterwards.
    let scratch = tempfile::tempdir().unwrap();
    let dir = std::env::var("BASEDATA_CLUSTER_DIR").map(PathBuf::from).unwrap_or_else(|_| scratch.path().to_path_buf());
    let c = Arc::new(Cluster::start(&dir));
    let gen = GenConfig { persons: WRITERS as u64 * KEYS_PER_WRITER, entities: 0, seed };
    let keys: Vec<String> = (0..gen.persons).map(|i| person_key(&gen, i).as_str().to_owned()).collect();

    // Read-your-writes: a write on node 1, read on node 2 at its position.
    let r = req("POST", &c.url(1, "/v1/datasets/hukou/updates"))
        .token(c.token("GONGAN"))
        .ndjson(&[line(&keys[0], 1)]);
    assert_eq!(r.status, 200, "{}", r.text);
    // Applied here, or (on a slow machine) not yet within the wait.
    let (applied, logged) = (r.json["applied"].as_u64().unwrap(), r.json["logged"].as_u64().unwrap());
    assert_eq!((applied + logged, r.json["stale"].as_u64()), (1, Some(0)), "{}", r.text);
    let pos = r.json["position"].as_u64().unwrap();
    let read = req("GET", &format!("{}?datasets=hukou", c.url(2, &format!("/v1/persons/{}", keys[0]))))
        .token(c.token("COUNTER"))
        .purpose(PURPOSE)
        .header("x-basedata-min-position", &pos.to_string())
        .get();
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.json["datasets"]["hukou"]["version"], 1);
    assert!(read.header("x-basedata-position").unwrap().parse::<u64>().unwrap() >= pos);
    // A position past the end of the log is refused at once, not waited
    // for and not served stale: no write was given it.
    let asked = Instant::now();
    let ahead = req("GET", &c.url(2, &format!("/v1/persons/{}", keys[0])))
        .token(c.token("COUNTER"))
        .purpose(PURPOSE)
        .header("x-basedata-min-position", &(pos + 1_000_000).to_string())
        .get();
    assert_eq!((ahead.status, ahead.code()), (400, "invalid_value"), "{}", ahead.text);
    assert!(ahead.json["error"]["details"]["log_end"].as_u64().unwrap() >= pos, "{}", ahead.text);
    assert!(asked.elapsed() < Duration::from_secs(2), "answered without waiting out read_wait_ms (2 s)");
    // Who may not read is refused before any position is looked at: a
    // request without a token never waits for the log, whatever it asks.
    let asked = Instant::now();
    let anonymous = req("GET", &c.url(2, &format!("/v1/persons/{}", keys[0])))
        .purpose(PURPOSE)
        .header("x-basedata-min-position", "not a number")
        .get();
    assert_eq!((anonymous.status, anonymous.code()), (401, "unauthenticated"), "{}", anonymous.text);
    assert!(anonymous.header("x-basedata-position").is_none());
    let anonymous = req("GET", &c.url(2, "/v1/audit")).header("x-basedata-min-position", &(pos + 5).to_string()).get();
    assert_eq!(anonymous.status, 401, "{}", anonymous.text);
    assert!(asked.elapsed() < Duration::from_secs(2), "refused without waiting for a position");
    // A line too large for one NATS message (the servers take 1 MiB) is
    // rejected on its own; the rest of the request is logged and applied.
    let photo = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 900 << 10]);
    let mut big = line(&keys[1], 5);
    big["fields"]["photo"] = json!(photo);
    let r = req("POST", &c.url(1, "/v1/datasets/hukou/updates")).token(c.token("GONGAN")).ndjson(&[line(&keys[2], 1), big]);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["rejected"].as_array().unwrap().len(), 1, "{}", r.text);
    assert_eq!((r.json["rejected"][0]["line"].as_u64(), r.json["rejected"][0]["code"].as_str()), (Some(2), Some("payload_too_large")));
    assert_eq!(r.json["applied"].as_u64().unwrap() + r.json["logged"].as_u64().unwrap(), 1, "{}", r.text);

    // A record with a photo, for the grants.
    let gov_key = person_key(&gen, gen.persons + 1).as_str().to_owned();
    let mut with_photo = line(&gov_key, 1);
    with_photo["fields"]["photo"] = json!("aGVsbG8=");
    let r = req("POST", &c.url(1, "/v1/datasets/hukou/updates")).token(c.token("GONGAN")).ndjson(&[with_photo]);
    assert_eq!(r.status, 200, "{}", r.text);
    eventually("the photo record on every node", || {
        (1..=3).all(|n| req("GET", &c.url(n, &format!("/v1/persons/{gov_key}"))).token(c.token("COUNTER")).purpose(PURPOSE).get().status == 200)
    });
    assert!(!photo_visible(&c, 2, &gov_key), "the photo shows before any grant");

    let bad = req("GET", &c.url(2, &format!("/v1/persons/{}", keys[0])))
        .token(c.token("COUNTER"))
        .purpose(PURPOSE)
        .header("x-basedata-min-position", "soon")
        .get();
    assert_eq!((bad.status, bad.code()), (400, "invalid_value"));

    // Node 3 is down from KILL_AT to REVIVE_AT; writers and verifiers skip
    // it meanwhile (a request to it would fail at connect).
    let node3_down = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let outage = Arc::new(AtomicBool::new(false));
    let models: Vec<Arc<Mutex<HashMap<String, KeyModel>>>> = (0..WRITERS).map(|_| Arc::new(Mutex::new(HashMap::new()))).collect();
    // Version 1 of the first and third keys is acknowledged already.
    models[0].lock().unwrap().insert(keys[0].clone(), KeyModel { sent: 1, acked: 1 });
    models[0].lock().unwrap().insert(keys[2].clone(), KeyModel { sent: 1, acked: 1 });
    let acked_batches = Arc::new(AtomicU64::new(0));
    let refused_batches = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for (w, model) in models.iter().enumerate() {
        let (c, stop, model, node3_down, acked_batches, refused) =
            (c.clone(), stop.clone(), model.clone(), node3_down.clone(), acked_batches.clone(), refused_batches.clone());
        let mine: Vec<String> = keys[w * KEYS_PER_WRITER as usize..(w + 1) * KEYS_PER_WRITER as usize].to_vec();
        let mut rng = fastrand::Rng::with_seed(seed ^ (w as u64 + 1));
        threads.push(std::thread::spawn(move || {
            while !stop.load(SeqCst) {
                let n = rng.usize(1..=20);
                let mut batch = Vec::with_capacity(n);
                let mut sent = Vec::with_capacity(n);
                {
                    let mut m = model.lock().unwrap();
                    for _ in 0..n {
                        let k = &mine[rng.usize(..mine.len())];
                        let e = m.entry(k.clone()).or_default();
                        e.sent += 1;
                        batch.push(line(k, e.sent));
                        sent.push((k.clone(), e.sent));
                    }
                }
                let node = loop {
                    let n = rng.usize(1..=3);
                    if n != 3 || !node3_down.load(SeqCst) {
                        break n;
                    }
                };
                let r = req("POST", &c.url(node, "/v1/datasets/hukou/updates")).token(c.token("GONGAN")).try_ndjson(&batch);
                match r {
                    Ok(r) if r.status == 200 => {
                        assert!(r.json["rejected"].as_array().unwrap().is_empty(), "{}", r.text);
                        let mut m = model.lock().unwrap();
                        for (k, v) in sent {
                            let e = m.get_mut(&k).unwrap();
                            e.acked = e.acked.max(v);
                        }
                        acked_batches.fetch_add(1, SeqCst);
                    }
                    // Not acknowledged (the log was electing a leader, or the
                    // node died mid-request): the lines' fate is unknown.
                    Ok(r) => {
                        assert!(r.status == 503, "node {node}: {} {}", r.status, r.text);
                        if refused.fetch_add(1, SeqCst) < 5 {
                            eprintln!("refused by node {node}: {}", r.text);
                        }
                    }
                    Err(_) => {
                        refused.fetch_add(1, SeqCst);
                    }
                }
            }
        }));
    }
    // Verifiers: keys[0] holds version 1 at least, name n1 until a writer
    // touches it again, so claims are checked against the answer's shape,
    // not its verdict; what counts is that the survivors answer.
    let survivor_answers = Arc::new(AtomicU64::new(0));
    // A key node 1 answered a verification of, for the auditors of the others.
    let verified_on_1 = Arc::new(Mutex::new(None::<String>));
    let survivor_failures = Arc::new(Mutex::new(Vec::<String>::new()));
    for v in 0..VERIFIERS {
        let (c, stop, outage, node3_down, answers, failures) =
            (c.clone(), stop.clone(), outage.clone(), node3_down.clone(), survivor_answers.clone(), survivor_failures.clone());
        let verified_on_1 = verified_on_1.clone();
        let keys = keys.clone();
        let mut rng = fastrand::Rng::with_seed(seed ^ (0x100 + v as u64));
        threads.push(std::thread::spawn(move || {
            while !stop.load(SeqCst) {
                let node = rng.usize(1..=3);
                if node == 3 && node3_down.load(SeqCst) {
                    continue;
                }
                let k = &keys[rng.usize(..keys.len())];
                let r = req("POST", &c.url(node, &format!("/v1/persons/{k}/verify")))
                    .token(c.token("COUNTER"))
                    .purpose(PURPOSE)
                    .try_json(&json!({"dataset": "hukou", "fields": {"gender": "1"}}));
                let during = outage.load(SeqCst) && node != 3;
                match r {
                    Ok(r) if r.status == 200 || r.status == 404 => {
                        if node == 1 && r.status == 200 {
                            verified_on_1.lock().unwrap().get_or_insert_with(|| k.clone());
                        }
                        if during {
                            answers.fetch_add(1, SeqCst);
                        }
                    }
                    other if during => failures.lock().unwrap().push(format!("node {node}: {other:?}")),
                    Ok(r) => assert!(r.status == 200 || r.status == 404, "node {node}: {} {}", r.status, r.text),
                    Err(_) if node == 3 => {}
                    Err(e) => panic!("node {node}: {e}"),
                }
            }
        }));
    }

    let started = Instant::now();
    // Under that load: a grant applied for through node 2 and approved
    // through node 1 opens the photo on nodes 2 and 3; a dispute is filed
    // through node 2; another grant is left undecided.
    let application = |purpose: &str| json!({"dataset": "hukou", "fields": ["photo"], "purpose": purpose, "legal_basis": "《社会保险法》第七十二条"});
    let grant = gov_call(&c, 2, "COUNTER", "/v1/grants", &application("社保待遇资格认证比对照片"), 201);
    let grant_id = grant["id"].as_str().unwrap().to_owned();
    let decided = gov_call(&c, 1, "GONGAN", &format!("/v1/grants/{grant_id}/decision"), &json!({"approve": true, "reason": "依法履职需要"}), 200);
    assert!(decided.is_null() || decided["state"] == "approved", "{decided}");
    for node in [2, 3] {
        eventually(&format!("the approved photo on node {node}"), || photo_visible(&c, node, &gov_key));
    }
    let undecided = gov_call(&c, 1, "COUNTER", "/v1/grants", &application("出生医学证明核验"), 201);
    let undecided_id = undecided["id"].as_str().unwrap().to_owned();
    let dispute = gov_call(
        &c,
        2,
        "COUNTER",
        "/v1/disputes",
        &json!({"subject": "person", "key": gov_key, "dataset": "hukou", "field": "name", "claimed": "张三", "note": "窗口核对"}),
        201,
    );
    let dispute_id = dispute["id"].as_str().unwrap().to_owned();
    eprintln!("{:>6.2} s governance: grant {grant_id} approved, grant {undecided_id} pending, dispute {dispute_id} open", started.elapsed().as_secs_f64());
    let phase = |name: &str| {
        let acked = acked_batches.load(SeqCst);
        eprintln!("{:>6.2} s {name}: {acked} batches acknowledged, {} not", started.elapsed().as_secs_f64(), refused_batches.load(SeqCst));
        acked
    };
    std::thread::sleep(KILL_AT.saturating_sub(started.elapsed()));
    let leader = c.status(1, false)["leader"].as_str().unwrap().to_owned();
    let nats_n = leader.trim_start_matches("nats-").to_owned();
    eprintln!("killing {leader} (the stream leader) and node-3");
    node3_down.store(true, SeqCst);
    Cluster::script(&c.dir, &["kill", "node", "3"]);
    Cluster::script(&c.dir, &["kill", "nats", &nats_n]);
    outage.store(true, SeqCst);
    // Counted once both are dead: what is acknowledged from here on was
    // acknowledged by two NATS servers of three.
    let at_kill = phase("killed");
    // The outage lasts until REVIVE_AT and until writes have gone on
    // without the dead server (its election over), whichever is later.
    // Counted from 3 s on: answers due to work done before the kill (a
    // request waits up to 2 s to see its updates applied) are out by then.
    let killed = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let baseline = acked_batches.load(SeqCst).max(at_kill);
    while acked_batches.load(SeqCst) < baseline + 5 {
        assert!(killed.elapsed() < Duration::from_secs(60), "no update was acknowledged in the minute after a NATS server died");
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("writes went on {:.1} s after the kill", killed.elapsed().as_secs_f64());
    std::thread::sleep(REVIVE_AT.saturating_sub(started.elapsed()));
    outage.store(false, SeqCst);
    let at_revive = phase("revive");
    let stop_at = STOP_AT.max(started.elapsed() + (STOP_AT - REVIVE_AT));
    Cluster::script(&c.dir, &["restart", "nats", &nats_n]);
    phase("nats back");
    Cluster::script(&c.dir, &["restart", "node", "3"]);
    node3_down.store(false, SeqCst);
    phase("node back");
    // Node 3, back: resolves the dispute filed through node 2 and revokes
    // the grant; the photo closes on nodes 1 and 2.
    let resolved = gov_call(&c, 3, "GONGAN", &format!("/v1/disputes/{dispute_id}/resolution"), &json!({"outcome": "confirmed", "note": "经核实无误"}), 200);
    assert!(resolved.is_null() || resolved["state"] == "resolved" || resolved["outcome"] == "confirmed", "{resolved}");
    gov_call(&c, 3, "GONGAN", &format!("/v1/grants/{grant_id}/revoke"), &json!({"reason": "用途已结束"}), 200);
    for node in [1, 2] {
        eventually(&format!("the revoked photo closed on node {node}"), || !photo_visible(&c, node, &gov_key));
    }
    for node in 1..=3 {
        let r = req("GET", &c.url(node, &format!("/v1/disputes?state=resolved"))).token(c.token("COUNTER")).get();
        assert!(r.json["disputes"].as_array().is_some_and(|a| a.iter().any(|d| d["id"] == dispute_id.as_str())), "node {node}: {}", r.text);
    }
    phase("governance done");
    std::thread::sleep(stop_at.saturating_sub(started.elapsed()));
    stop.store(true, SeqCst);
    for t in threads {
        t.join().expect("a traffic thread failed");
    }
    let acked_total = phase("stop");
    assert!(acked_total > at_revive, "no update was acknowledged after the NATS server came back");
    eprintln!("verifications answered by survivors in the outage: {}", survivor_answers.load(SeqCst));
    let failures = survivor_failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "survivors failed verifications during the outage: {failures:?}");
    assert!(survivor_answers.load(SeqCst) > 0, "no verification reached a survivor during the outage");
    assert!(acked_total > 20, "too few updates were acknowledged to test anything: {acked_total}");

    // A fourth node joins empty and catches up from the stream.
    let config = c.config();
    let mut late = c.extra_node("node-4", "node-4-late", &config, &[]);

    // Convergence: every node reaches the stream's last position and the
    // same digest.
    let last = c.status(1, false)["stream_last"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut positions: Vec<u64> = (1..=3).map(|n| c.status(n, false)["position"].as_u64().unwrap()).collect();
        positions.push(c.status_of(&late, false)["position"].as_u64().unwrap_or(0));
        if positions.iter().all(|p| *p >= last) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nodes did not converge on position {last}: {positions:?}\nnode-3 log tail:\n{}\nnode-4 log:\n{}",
            tail(&c.logs("node-3")),
            tail(&late.logs())
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut digests: Vec<(u64, String)> = (1..=3)
        .map(|n| {
            let s = c.status(n, true);
            (s["records"].as_u64().unwrap(), s["digest"].as_str().unwrap().to_owned())
        })
        .collect();
    let s4 = c.status_of(&late, true);
    digests.push((s4["records"].as_u64().unwrap(), s4["digest"].as_str().unwrap().to_owned()));
    eprintln!("converged at position {last}: {digests:?}");
    assert!(digests.iter().all(|d| *d == digests[0]), "nodes hold different records: {digests:?}");

    // Every acknowledged update, on every node.
    let model: HashMap<String, KeyModel> = models.iter().flat_map(|m| m.lock().unwrap().clone()).collect();
    let acked: Vec<(&String, &KeyModel)> = model.iter().filter(|(_, m)| m.acked > 0).collect();
    assert!(!acked.is_empty());
    for node in 1..=4 {
        for (k, m) in &acked {
            let path = format!("/v1/persons/{k}?datasets=hukou");
            let r = if node == 4 { late.req("GET", &path) } else { req("GET", &c.url(node, &path)) }
                .token(c.token("COUNTER"))
                .purpose(PURPOSE)
                .get();
            assert_eq!(r.status, 200, "node {node} lost {k}: {}", r.text);
            let v = r.json["datasets"]["hukou"]["version"].as_u64().unwrap();
            assert!(v >= m.acked && v <= m.sent, "node {node}, key {k}: version {v}, acked {}, sent {}", m.acked, m.sent);
            assert_eq!(r.json["datasets"]["hukou"]["fields"]["name"], format!("n{v}"), "node {node}, key {k}");
        }
    }
    // A node seeded from a peer's backup resumes from the position the
    // backup holds and takes only the tail of the stream.
    // Quiet first: the lookups above were audited, and their entries
    // travel through the log, which moves positions on.
    c.quiesce(&[&late]);
    let backups = c.dir.join("backups");
    let (st, _, err) = run_cli(&["backup", "--data", c.dir.join("node-1").to_str().unwrap(), "--to", backups.to_str().unwrap()]);
    assert!(st.success(), "backup: {err}");
    let seeded_at = c.status(1, false)["position"].as_u64().unwrap();
    for i in 0..10u64 {
        let r = req("POST", &c.url(2, "/v1/datasets/hukou/updates")).token(c.token("GONGAN")).ndjson(&[line(&keys[i as usize], 1_000_000 + i)]);
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let key = c.dir.join("cluster.key");
    let restored = c.dir.join("node-5-seeded/data");
    let (st, _, err) =
        run_cli(&["restore", "--from", backups.to_str().unwrap(), "--data", restored.to_str().unwrap(), "--key-file", key.to_str().unwrap()]);
    assert!(st.success(), "restore: {err}");
    let seeded = c.extra_node("node-5", "node-5-seeded", &config, &[]);
    let last = c.status(1, false)["stream_last"].as_u64().unwrap();
    c.wait_caught_up(&seeded, last, "the seeded node");
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.status(1, false)["position"].as_u64().unwrap() < last {
        assert!(Instant::now() < deadline, "node-1 did not apply the tail it was sent");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        seeded.logs().contains(&format!("\"from\":{}", seeded_at + 1)),
        "the seeded node did not resume after the backup's position {seeded_at}:\n{}",
        tail(&seeded.logs())
    );
    assert_eq!(c.status_of(&seeded, true)["digest"], c.status(1, true)["digest"]);

    // A node holding half the partitions: it answers for its keys, sends
    // the others away with the partition named, and still takes updates.
    let half: Vec<u16> = (0..8).collect();
    let half_arg = half.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    let partial = c.extra_node("node-6", "node-6-half", &config, &["--serve-partitions", &half_arg]);
    let secret = basedata_store::Secret::from_hex(std::fs::read_to_string(&key).unwrap().trim()).unwrap();
    let pseudo = basedata_store::pseudo::Pseudonymizer::new(&secret);
    let partition = |k: &str| {
        let key = basedata_store::SubjectKey::Person(basedata_store::PersonKey::parse(k).unwrap());
        basedata_ingest::log::partition_of(&pseudo.pid(&key), 16)
    };
    let last = c.status(1, false)["stream_last"].as_u64().unwrap();
    assert_eq!(c.wait_caught_up(&partial, last, "the partial node")["serves"], json!(half));
    let (mut held, mut elsewhere) = (0, 0);
    for (k, _) in &acked {
        let path = format!("/v1/persons/{k}?datasets=hukou");
        let here = partial.req("GET", &path).token(c.token("COUNTER")).purpose(PURPOSE).get();
        let p = partition(k);
        if half.contains(&p) {
            let there = req("GET", &c.url(1, &path)).token(c.token("COUNTER")).purpose(PURPOSE).get();
            assert_eq!(here.status, 200, "{}", here.text);
            assert_eq!(here.json["datasets"]["hukou"]["version"], there.json["datasets"]["hukou"]["version"], "{k}");
            held += 1;
        } else {
            assert_eq!((here.status, here.code()), (503, "unavailable"), "{k}: {}", here.text);
            assert_eq!(here.json["error"]["details"]["partition"], p);
            elsewhere += 1;
        }
    }
    assert!(held > 0 && elsewhere > 0, "{held} keys held, {elsewhere} not");
    let batch = partial.req("POST", "/v1/verify/batch").token(c.token("COUNTER")).purpose(PURPOSE).ndjson(&[json!({"key": keys[0], "fields": {"gender": "1"}})]);
    assert_eq!((batch.status, batch.code()), (503, "unavailable"), "{}", batch.text);
    // Updates for both kinds of partition: what this node does not hold is
    // reported as logged (applied elsewhere), the rest as applied.
    let lines: Vec<Value> = keys.iter().take(40).enumerate().map(|(i, k)| line(k, 2_000_000 + i as u64)).collect();
    let r = partial.req("POST", "/v1/datasets/hukou/updates").token(c.token("GONGAN")).ndjson(&lines);
    assert_eq!(r.status, 200, "{}", r.text);
    let not_here = keys.iter().take(40).filter(|k| !half.contains(&partition(k))).count() as u64;
    let (applied, logged) = (r.json["applied"].as_u64().unwrap(), r.json["logged"].as_u64().unwrap());
    // Those of other partitions are logged; its own are applied (or, on a
    // slow machine, logged too when the wait ran out).
    assert!(logged >= not_here && applied + logged == 40 && r.json["stale"] == 0, "{} of 40 elsewhere: {}", not_here, r.text);

    // A node whose catalog lacks a field its peers write (an upgrade half
    // done) stops at the first message it cannot apply, unready, instead
    // of skipping it; with its peers' catalog it goes on from there.
    let dir7 = c.dir.join("node-7-old-catalog");
    std::fs::create_dir_all(&dir7).unwrap();
    let catalog = std::fs::read_to_string(package_dir().join("../store/catalog/default.toml")).unwrap();
    let gender = "[[datasets.fields]]\nname = \"gender\"\ntitle = \"性别\"\ntype = \"code\"\nshare = \"unconditional\"\ncode_list = \"gender\"\nrequired = true\n\n";
    assert!(catalog.contains(gender), "the catalog's hukou gender field moved");
    std::fs::write(dir7.join("catalog.toml"), catalog.replacen(gender, "", 1)).unwrap();
    let mut old = c.extra_node("node-7", "node-7-old-catalog", &format!("catalog = \"catalog.toml\"\n{config}"), &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !old.logs().contains("cannot be applied here") || old.req("GET", "/readyz").get().status != 503 {
        assert!(Instant::now() < deadline, "a node with another catalog did not stop:\n{}", tail(&old.logs()));
        std::thread::sleep(Duration::from_millis(200));
    }
    let stopped_at = c.status_of(&old, false)["position"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.status_of(&old, false)["position"].as_u64(), Some(stopped_at));
    let last = c.status(1, false)["stream_last"].as_u64().unwrap();
    assert!(stopped_at < last, "stopped at {stopped_at} of {last}");
    old.terminate();
    let upgraded = c.extra_node("node-7", "node-7-old-catalog", &config, &[]);
    c.wait_caught_up(&upgraded, last, "the upgraded node");
    assert!(upgraded.logs().contains(&format!("\"from\":{}", stopped_at + 1)), "{}", tail(&upgraded.logs()));
    assert_eq!(c.status_of(&upgraded, true)["digest"], c.status(1, true)["digest"]);

    // Deemed approval, once for the cluster: two more nodes whose clocks run
    // a month ahead catch up and sweep every second; both find the
    // undecided grant past its deadline, and the first entry wins.
    let ahead = format!("clock_offset_seconds = {}\n{config}\n[policy]\nsweep_seconds = 1\n", 30 * 86_400);
    let ahead8 = c.extra_node("node-8", "node-8-ahead", &ahead, &[]);
    let ahead9 = c.extra_node("node-9", "node-9-ahead", &ahead, &[]);
    for node in 1..=3 {
        eventually(&format!("the undecided grant deemed approved on node {node}"), || {
            let r = req("GET", &c.url(node, &format!("/v1/grants/{undecided_id}"))).token(c.token("COUNTER")).get();
            r.json["state"] == "deemed_approved"
        });
    }
    let last = c.status(1, false)["stream_last"].as_u64().unwrap();
    c.wait_caught_up(&ahead8, last, "node-8");
    c.wait_caught_up(&ahead9, last, "node-9");
    // Its audit entry exists once in the cluster, wherever it is read.
    let deemed = format!("deemed_approved {undecided_id}");
    let mut seen = std::collections::BTreeSet::new();
    let mut read = |name: &str, r: Resp| {
        assert_eq!(r.status, 200, "{name}: {}", r.text);
        for e in r.json["entries"].as_array().unwrap() {
            if e["outcome"] == deemed.as_str() {
                seen.insert((e["node"].as_str().unwrap_or(name).to_owned(), e["seq"].as_u64().unwrap()));
            }
        }
    };
    let audit = "/v1/audit?department=system&limit=1000";
    for node in 1..=3 {
        read(&format!("node-{node}"), req("GET", &c.url(node, audit)).token(c.token("AUDITOR")).get());
    }
    for (name, n) in [("node-8", &ahead8), ("node-9", &ahead9)] {
        read(name, n.req("GET", audit).token(c.token("AUDITOR")).get());
    }
    assert_eq!(seen.len(), 1, "the deemed approval is audited {} times: {seen:?}", seen.len());
    eprintln!("deemed approved once, audited by {:?}", seen.iter().next().unwrap().0);

    // A policy switch through node 2 stands on every node.
    let r = req("PUT", &c.url(2, "/v1/policy")).token(c.token("ADMIN")).json(&json!({"dispute_days": 7}));
    assert_eq!((r.status, r.json["source"].as_str()), (200, Some("api")), "{}", r.text);
    for node in [1, 3] {
        eventually(&format!("the policy switch on node {node}"), || {
            req("GET", &c.url(node, "/v1/policy")).token(c.token("COUNTER")).get().json["dispute_days"] == 7
        });
    }

    // The same governance state everywhere: the three, the late joiner,
    // the node seeded from a backup, the upgraded one and the two ahead.
    let last = c.status(1, false)["stream_last"].as_u64().unwrap();
    let mut governance = Vec::new();
    for node in 1..=3 {
        let deadline = Instant::now() + Duration::from_secs(60);
        while c.status(node, false)["position"].as_u64().unwrap() < last {
            assert!(Instant::now() < deadline, "node {node} did not catch up to {last}");
            std::thread::sleep(Duration::from_millis(100));
        }
        governance.push((format!("node-{node}"), c.status(node, true)["governance"].clone()));
    }
    for (name, n) in [("node-4", &late), ("node-5", &seeded), ("node-7", &upgraded), ("node-8", &ahead8), ("node-9", &ahead9)] {
        c.wait_caught_up(n, last, name);
        governance.push((name.to_owned(), c.status_of(n, true)["governance"].clone()));
    }
    eprintln!("governance at position {last}: {}", governance[0].1);
    assert_eq!(governance[0].1["grants"], 2, "{}", governance[0].1);
    assert_eq!(governance[0].1["disputes"], 1, "{}", governance[0].1);
    for (name, g) in &governance {
        assert_eq!((g["digest"].as_str(), g["policy"].as_str()), (governance[0].1["digest"].as_str(), governance[0].1["policy"].as_str()), "{name}: {g}");
    }

    // The cluster-wide audit trail: every node's chain, on every node.
    let last = c.quiesce(&[&late, &seeded, &partial, &upgraded, &ahead8, &ahead9]);
    let key = verified_on_1.lock().unwrap().clone().expect("node 1 answered no verification");
    let entries = c.shows_use(3, "node-1", "verify", &key);
    let times: Vec<&str> = entries.iter().map(|e| e["at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "not in time order: {times:?}");
    let mut heads = Vec::new();
    for node in 1..=3 {
        let r = req("GET", &c.url(node, "/v1/audit/verify")).token(c.token("AUDITOR")).get();
        assert_eq!(r.json["ok"], true, "node {node}: {}", r.text);
        let chains: Vec<&str> = r.json["chains"].as_array().unwrap().iter().map(|c| c["node"].as_str().unwrap()).collect();
        for other in ["node-1", "node-2", "node-3", "node-4", "node-6"] {
            assert!(chains.contains(&other), "node {node} does not hold {other}'s chain: {}", r.text);
        }
        let st = c.status(node, true);
        assert!(st["position"].as_u64().unwrap() >= last);
        eprintln!("node-{node} audit shipping: {}", st["audit"]);
        heads.push(st["audit_chains"].clone());
    }
    // The node seeded from node 1's backup keeps node 1's chain, which its
    // own trail began with, as node 1's, and ships only its own after it.
    let r = seeded.req("GET", "/v1/audit/verify").token(c.token("AUDITOR")).get();
    assert_eq!(r.json["ok"], true, "{}", r.text);
    let of_1 = r.json["chains"].as_array().unwrap().iter().find(|c| c["node"] == "node-1").cloned();
    assert!(of_1.is_some_and(|c| c["entries"].as_u64() > Some(0)), "the seeded node lost node 1's chain: {}", r.text);
    // Every node counts every node's uses in its reports, each once.
    let uses: Vec<(u64, u64)> = (1..=3)
        .map(|node| {
            let r = req("GET", &c.url(node, "/v1/reports/sharing")).token(c.token("AUDITOR")).get();
            assert_eq!(r.status, 200, "{}", r.text);
            let row = r.json["departments"].as_array().unwrap().iter().find(|d| d["department"] == "shebao-counter").cloned().unwrap();
            (row["lookups"].as_u64().unwrap(), row["verifications"].as_u64().unwrap())
        })
        .collect();
    eprintln!("the counter's lookups and verifications, as nodes 1 to 3 report them: {uses:?}");
    assert!(uses.iter().all(|u| *u == uses[0]) && uses[0].1 > 0, "{uses:?}");
    eprintln!("audit chain heads: {}", heads[0]);
    assert!(heads.iter().all(|h| *h == heads[0]), "the nodes hold different audit chains: {heads:?}");
    assert_eq!(late.req("GET", "/v1/audit/verify").token(c.token("AUDITOR")).get().json["ok"], true);
    late.terminate();
    // Offline, the stopped node's store checks every chain it holds.
    let key_file = c.dir.join("cluster.key");
    let data = c.dir.join("node-4-late/data");
    let (st, out, err) = run_cli(&["audit-verify", "--data", data.to_str().unwrap(), "--key-file", key_file.to_str().unwrap()]);
    assert!(st.success(), "audit-verify: {out} {err}");
    let check: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(check["ok"] == true && check["chains"].as_array().is_some_and(|c| c.len() >= 3), "{out}");
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A node that cannot reach the log (no NATS server at its address) takes
/// no governance change — `503`, nothing changed — and goes on answering
/// reads with the state it has.
#[test]
fn a_node_cut_off_from_the_log_refuses_governance_changes_and_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = format!("nats://127.0.0.1:{}", free_port());
    let s = Server::start_in(dir.path(), &standard_config(), &["--cluster", &nowhere, "--node", "cut-off"]);
    let grant = json!({"dataset": "hukou", "fields": ["photo"], "purpose": "社保待遇资格认证比对照片", "legal_basis": "《社会保险法》第七十二条"});
    let r = s.req("POST", "/v1/grants").token(tokens::COUNTER).json(&grant);
    assert_eq!((r.status, r.code()), (503, "unavailable"), "{}", r.text);
    assert!(r.text.contains("nothing changed"), "{}", r.text);
    let dispute = json!({"subject": "person", "key": "11010519491231002X", "dataset": "hukou", "field": "name", "claimed": "张三"});
    let r = s.req("POST", "/v1/disputes").token(tokens::COUNTER).json(&dispute);
    assert_eq!((r.status, r.code()), (503, "unavailable"), "{}", r.text);
    let person = json!({"persons": [{"name": "王五", "post": "科长", "contact": "020-00000000", "since": "2026-01-05"}]});
    let r = s.req("PUT", "/v1/departments/gongan/responsible").token(tokens::ADMIN).json(&person);
    assert_eq!((r.status, r.code()), (503, "unavailable"), "{}", r.text);
    // Checks that need no change still answer as on any node.
    let r = s.req("POST", "/v1/grants").token(tokens::COUNTER).json(&json!({"dataset": "hukou", "fields": ["name"], "purpose": "p", "legal_basis": "b"}));
    assert_eq!((r.status, r.code()), (400, "invalid_value"), "{}", r.text);
    // Reads go on with the state it has.
    let r = s.req("GET", "/v1/grants").token(tokens::COUNTER).get();
    assert_eq!(r.json["grants"], json!([]), "{}", r.text);
    let r = s.req("GET", "/v1/persons/11010519491231002X").token(tokens::COUNTER).purpose(PURPOSE).get();
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(s.req("GET", "/v1/departments").token(tokens::COUNTER).get().status, 200);
    assert_eq!(s.req("GET", "/readyz").get().status, 503, "a node without the log takes no changes");
}

/// The servers of the log here take messages of at most 256 KiB. Node 1
/// answers three batches of 2,048 verifications of unknown keys while two
/// of the three NATS servers are down (the stream has no quorum); each batch is one audit entry of about a
/// hundred kilobytes with its lines' key mappings. Once the log is back,
/// node 1 has them all to ship at once: messages filled to the usual
/// 256 KiB would be refused by the servers for ever, so it must fill them
/// to the servers' limit, and every node must end up with node 1's chain.
/// Update lines sized around the limit then show that a message's headers
/// are counted: the largest line taken leaves them room, and none is
/// refused by the servers after the node accepted it.
#[test]
fn audit_entries_are_shipped_in_messages_the_servers_take() {
    let scratch = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(scratch.path(), &[("NATS_MAX_PAYLOAD", "262144")]);
    let gen = GenConfig { persons: 3 * 2048, entities: 0, seed: 15 };
    // Nothing was answered yet: the chains are empty or hold setup only.
    c.quiesce(&[]);
    let before = c.status(1, false)["audit"]["shipped"].as_u64().unwrap();
    for n in ["1", "2"] {
        Cluster::script(&c.dir, &["kill", "nats", n]);
    }
    for b in 0..3u64 {
        let lines: Vec<Value> = (b * 2048..(b + 1) * 2048)
            .map(|i| json!({"ref": i.to_string(), "subject": "person", "key": person_key(&gen, i).as_str(), "fields": {"name": "张三"}}))
            .collect();
        let r = req("POST", &c.url(1, "/v1/verify/batch")).token(c.token("COUNTER")).purpose(PURPOSE).ndjson(&lines);
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.text.lines().count(), 2048);
        assert!(r.text.lines().all(|l| l.contains("\"not_found\"")), "{}", tail(&r.text));
    }
    let head = c.status(1, false)["audit"]["head"].as_u64().unwrap();
    assert!(head >= before + 3 * 2048, "node 1's chain holds the batches' uses: {before} → {head}");
    for n in ["1", "2"] {
        Cluster::script(&c.dir, &["restart", "nats", n]);
    }
    c.quiesce(&[]);
    let status = c.status(1, false);
    assert!(status["audit"]["shipped"].as_u64().unwrap() >= head, "{status}");
    // An auditor on node 3 finds a use node 1 answered in the last batch.
    c.shows_use(3, "node-1", "batch_verify", person_key(&gen, 3 * 2048 - 1).as_str());
    let r = req("GET", &c.url(3, "/v1/audit/verify")).token(c.token("AUDITOR")).get();
    assert_eq!(r.json["ok"], true, "{}", r.text);
    assert!(!c.logs("node-1").contains("an audit entry is larger than a message"), "{}", tail(&c.logs("node-1")));

    // An update line whose message would pass the servers' limit once its
    // headers are counted is refused on its own (the client and the servers
    // would refuse the message, and the whole request fail), and every smaller one is
    // logged. Bisecting on the photo's size finds where one turns into the
    // other; on code that left headers out of the count, its last probes
    // would be lines whose message falls just short of max_payload without
    // its headers, and the servers would refuse them (a 503 here).
    let key = person_key(&gen, 0);
    let mut version = 100;
    let mut taken = |b64: usize| -> bool {
        version += 1;
        let mut l = line(key.as_str(), version);
        l["fields"]["photo"] = json!(base64::engine::general_purpose::STANDARD.encode(vec![7u8; b64 / 4 * 3]));
        let r = req("POST", &c.url(1, "/v1/datasets/hukou/updates")).token(c.token("GONGAN")).ndjson(&[l]);
        assert_eq!(r.status, 200, "a line with {b64} bytes of photo: {}", r.text);
        match r.json["rejected"].as_array().unwrap().first() {
            Some(e) => {
                assert_eq!(e["code"], "payload_too_large", "{}", r.text);
                false
            }
            None => {
                assert_eq!(r.json["applied"].as_u64().unwrap() + r.json["logged"].as_u64().unwrap(), 1, "{}", r.text);
                true
            }
        }
    };
    // In units of 4 base64 characters (3 bytes of photo).
    let (mut lo, mut hi) = (200_000 / 4, 262_144 / 4);
    assert!(taken(lo * 4) && !taken(hi * 4));
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if taken(mid * 4) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    // The limit sits just below max_payload less the headers' room, not
    // far below it (the line's other fields and the seal take the rest).
    let largest = lo * 4;
    eprintln!("the largest update line logged carries {largest} characters of photo");
    assert!((262_144 - 4_096..262_144 - 1_024).contains(&largest), "{largest}");
    // The node goes on logging: a small update afterwards is taken.
    let r = req("POST", &c.url(1, "/v1/datasets/hukou/updates")).token(c.token("GONGAN")).ndjson(&[line(person_key(&gen, 20).as_str(), 1)]);
    assert_eq!((r.status, r.json["applied"].as_u64().unwrap() + r.json["logged"].as_u64().unwrap()), (200, 1), "{}", r.text);
}

/// Node 1 is restored from an older backup of its own, after it answered
/// and shipped more uses. Started on it, the node first takes back from
/// the log what it shipped after the backup, so its next uses follow
/// those instead of taking their numbers a second time (which every other
/// node's copy of its chain would skip as already held, and then refuse
/// at the first link, stopping their applier there). The next uses reach
/// every node, and every chain checks.
#[test]
fn a_node_restored_from_its_own_backup_takes_back_what_it_shipped() {
    let scratch = tempfile::tempdir().unwrap();
    let c = Cluster::start(scratch.path());
    let gen = GenConfig { persons: 100, entities: 0, seed: 16 };
    let batch = |from: u64, to: u64| {
        let lines: Vec<Value> = (from..to)
            .map(|i| json!({"ref": i.to_string(), "subject": "person", "key": person_key(&gen, i).as_str(), "fields": {"name": "张三"}}))
            .collect();
        let r = req("POST", &c.url(1, "/v1/verify/batch")).token(c.token("COUNTER")).purpose(PURPOSE).ndjson(&lines);
        assert_eq!((r.status, r.text.lines().count() as u64), (200, to - from), "{}", r.text);
    };
    let head = |n: usize| c.status(n, false)["audit"]["head"].as_u64().unwrap();
    batch(0, 10);
    c.quiesce(&[]);
    let data = c.dir.join("node-1");
    let backups = c.dir.join("node-1-backups");
    let (st, _, err) = run_cli(&["backup", "--data", data.to_str().unwrap(), "--to", backups.to_str().unwrap()]);
    assert!(st.success(), "backup: {err}");
    let at_backup = head(1);
    // Answered, and shipped, after the backup.
    batch(10, 20);
    batch(20, 30);
    c.quiesce(&[]);
    let before = head(1);
    assert!(before > at_backup, "{at_backup} → {before}");

    Cluster::script(&c.dir, &["kill", "node", "1"]);
    std::fs::rename(&data, c.dir.join("node-1-lost")).unwrap();
    let key = c.dir.join("cluster.key");
    let (st, _, err) = run_cli(&["restore", "--from", backups.to_str().unwrap(), "--data", data.to_str().unwrap(), "--key-file", key.to_str().unwrap()]);
    assert!(st.success(), "restore: {err}");
    assert!(data.join(basedata_store::backup::RESTORED_MARKER).exists());
    Cluster::script(&c.dir, &["restart", "node", "1"]);
    assert_eq!(head(1), before, "node 1 took back its chain up to where it had shipped it:\n{}", tail(&c.logs("node-1")));
    assert!(!data.join(basedata_store::backup::RESTORED_MARKER).exists(), "and is done with the restore");
    assert!(c.logs("node-1").contains("took back this node's audit entries"), "{}", tail(&c.logs("node-1")));

    batch(30, 35);
    // Every node applies the log to its end: no applier stopped at node 1's
    // entries.
    c.quiesce(&[]);
    assert!(head(1) >= before + 5);
    for n in [2, 3] {
        c.shows_use(n, "node-1", "batch_verify", person_key(&gen, 34).as_str());
        c.shows_use(n, "node-1", "batch_verify", person_key(&gen, 25).as_str());
    }
    for n in 1..=3 {
        let r = req("GET", &c.url(n, "/v1/audit/verify")).token(c.token("AUDITOR")).get();
        assert_eq!(r.json["ok"], true, "node {n}: {}", r.text);
    }
    // Node 1 itself still finds the uses it answered before the loss.
    c.shows_use(1, "node-1", "batch_verify", person_key(&gen, 15).as_str());
}
