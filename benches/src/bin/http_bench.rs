//! `http_bench`: the side-by-side HTTP benchmark in one command. On this
//! machine and on loopback only, it
//!
//! 1. measures the disk's synced-write latency (append 4 KiB + fdatasync),
//!    the floor under every acknowledged write and audit entry;
//! 2. generates N persons (`basedata gen`) and starts `basedata serve`;
//! 3. loads them through `POST /v1/datasets/hukou/updates` in batches —
//!    the first seconds of that load are the batched durable-ingest figure;
//! 4. measures single-update requests from many clients (group commit),
//!    `POST /v1/persons/{id}/verify` next to `minimal_axum` (the ceiling)
//!    and `minimal_axum --durable` (the same handler syncing each body to
//!    a log first: the floor under any audited answer), verification
//!    latency at half its maximum rate next to both minimal handlers at
//!    that same rate, the ratio to the ceiling in further pairs, each run
//!    in the other order from the one before (the machine's speed drifts;
//!    the target is judged on all pairs together), and lookups;
//!
//! and prints a markdown report: machine, date, the figures with their
//! targets, and the exact `loadgen` command of every row. Every run of
//! `loadgen` is bounded in time; every process it starts is its own child
//! and is stopped before it exits.

use anyhow::bail;
use basedata_benches::harness::{
    self, cpu_of, dir_bytes, f, free_port, http, machine, metric, ms, rss_mb, s, start_basedata, verify_args, wait_ready, write_config,
    writer_counts, Loadgen, Proc, WorkDir, COUNTER_TOKEN, PROVIDER_TOKEN, VERIFY_BODY,
};
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a measured run may last, warm-up included.
const MAX_MEASURE_SECONDS: f64 = 20.0;

#[derive(Parser, Debug)]
#[command(name = "http_bench", about = "Side-by-side HTTP benchmark of basedata serve (loopback only); prints a markdown report")]
struct Args {
    /// Persons generated and loaded.
    #[arg(long, default_value_t = 1_000_000)]
    persons: u64,
    /// Measured seconds of each run (warm-up not included).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up seconds before each measured run.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Connections of the request/response runs.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Connections (concurrent providers) of the batched ingest.
    #[arg(long, default_value_t = 4)]
    ingest_connections: usize,
    /// Update lines per batched request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Load generator threads.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Working directory (default: a new directory under /var/tmp, removed at the end).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Keep the working directory (store, generated files, server log).
    #[arg(long)]
    keep: bool,
    /// The `basedata` binary (default: beside this one).
    #[arg(long)]
    basedata: Option<PathBuf>,
    /// Longest wait, in seconds, for the machine to become idle before each measured run.
    #[arg(long, default_value_t = 300)]
    quiet_wait: u64,
    /// Also write the report to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Pairs of closed-loop runs of verification and the minimal handler
    /// (at least 1): their ratios, median and pooled ratio are reported,
    /// and the target is judged on the pooled one.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pairs: u32,
}

/// Synced-append latency of the disk under `dir`: 4 KiB + fdatasync, for
/// about three seconds or 20,000 writes.
fn fsync_probe(dir: &Path) -> anyhow::Result<Value> {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
    let block = vec![0x5au8; 4096];
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let start = Instant::now();
    let mut n = 0u64;
    while n < 20_000 && start.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        h.saturating_record(t.elapsed().as_micros().max(1) as u64);
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(serde_json::json!({
        "writes": n, "per_s": (n as f64 / secs).round(),
        "p50_us": h.value_at_quantile(0.5), "p99_us": h.value_at_quantile(0.99), "max_us": h.max(),
    }))
}

/// The figures of one measured run.
struct Row {
    name: String,
    result: Value,
    server_cpu_s: f64,
    jobs_per_group: Option<f64>,
    /// Group commits over 10 ms during the run.
    slow_commits: Option<f64>,
    /// Of the journal's group writes and syncs, those over 10 ms during the
    /// run: the disk's share of the slow commits.
    slow_syncs: Option<f64>,
    /// Cores used by processes other than the server and the client during the run.
    other_cores: f64,
    command: String,
    target: String,
    verdict: Option<bool>,
}

struct Bench {
    loadgen: Loadgen,
    quiet_wait: Duration,
    rows: Vec<Row>,
}

impl Bench {
    /// A measured run against the server `server` (its CPU and group-commit counters are read around it).
    fn measure(
        &mut self,
        name: &str,
        server: &Proc,
        metrics_addr: Option<&str>,
        args: &[String],
        target: &str,
        verdict: impl Fn(&Value) -> Option<bool>,
    ) -> anyhow::Result<Value> {
        let pid = server.pid();
        let w0 = metrics_addr.map(writer_counts);
        let ((v, command), sample) = harness::measure(self.quiet_wait, "http_bench", &|| cpu_of(pid), || self.loadgen.run(name, args))?;
        let w1 = metrics_addr.map(writer_counts);
        // A counter's change over the run; `None` where the server does
        // not report it.
        let delta = |i: usize| match (w0, w1) {
            (Some(a), Some(b)) => a[i].zip(b[i]).map(|(x, y)| y - x),
            _ => None,
        };
        let jobs_per_group = match (delta(0), delta(1)) {
            (Some(groups), Some(jobs)) if groups > 0.0 => Some(jobs / groups),
            _ => None,
        };
        // Stalls of the writer, which every answer of the group waits out
        // (a flush's log switch, the disk): what a tail is made of.
        let (slow_commits, slow_syncs) = (delta(2), delta(3));
        let ok = verdict(&v);
        self.rows.push(Row {
            name: name.into(),
            result: v.clone(),
            server_cpu_s: sample.server_cpu_s,
            jobs_per_group,
            slow_commits,
            slow_syncs,
            other_cores: sample.other_cores,
            command,
            target: target.into(),
            verdict: ok,
        });
        Ok(v)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    harness::stop_children_on_signal("http_bench");
    if !(args.duration > 0.0 && args.warmup >= 0.0 && args.duration + args.warmup <= MAX_MEASURE_SECONDS) {
        bail!("--warmup + --duration must be at most {MAX_MEASURE_SECONDS} seconds");
    }
    let (basedata, [loadgen, minimal]) = harness::binaries(args.basedata.as_deref(), ["loadgen", "minimal_axum"])?;
    let work_dir = WorkDir::new(args.work.as_deref(), "basedata-http-bench-")?;
    let work = work_dir.path.clone();
    let mut bench = Bench {
        loadgen: Loadgen {
            path: loadgen,
            threads: args.client_threads,
            log: std::fs::File::create(work.join("results.jsonl"))?,
            tag: "http_bench",
        },
        quiet_wait: Duration::from_secs(args.quiet_wait),
        rows: Vec::new(),
    };
    let machine = machine(&work);
    eprintln!("[http_bench] working in {}", work.display());

    // 1. The disk.
    let fsync = fsync_probe(&work)?;
    eprintln!("[http_bench] fsync probe: {fsync}");

    // 2. Data and server.
    let gen_dir = work.join("gen");
    let t = Instant::now();
    harness::run_logged(
        Command::new(&basedata).args(["gen", "--persons", &args.persons.to_string(), "--entities", "0", "--out"]).arg(&gen_dir),
        "basedata gen",
        Duration::from_secs(3600),
        &work.join("gen.log"),
    )?;
    let gen_secs = t.elapsed().as_secs_f64();
    let hukou = gen_dir.join("hukou.ndjson");
    let rows_path = work.join("rows.tsv");
    let persons = {
        let text = std::fs::read_to_string(&hukou)?;
        let mut out = String::with_capacity(text.len() / 4);
        let mut n = 0u64;
        for line in text.lines() {
            let v: Value = serde_json::from_str(line)?;
            let fl = &v["fields"];
            out.push_str(&format!(
                "{}\t{}\t{}\t{}\n",
                v["key"].as_str().unwrap_or(""),
                fl["name"].as_str().unwrap_or(""),
                fl["birth_date"].as_str().unwrap_or(""),
                fl["gender"].as_str().unwrap_or("1"),
            ));
            n += 1;
        }
        std::fs::write(&rows_path, out)?;
        n
    };
    let first_row: Vec<String> = std::fs::read_to_string(&rows_path)?.lines().next().unwrap_or("").split('\t').map(str::to_owned).collect();
    let config = work.join("basedata.toml");
    write_config(&config, None)?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let server = start_basedata(&basedata, &work.join("data"), &config, &addr, &work.join("server.log"))?;
    let base = format!("http://{addr}");
    let provider = format!("Authorization: Bearer {PROVIDER_TOKEN}");
    let counter = format!("Authorization: Bearer {COUNTER_TOKEN}");
    let conns = args.connections.to_string();
    let dur = args.duration.to_string();
    let warm = args.warmup.to_string();
    let rows_arg = rows_path.to_string_lossy().into_owned();

    // 3. Batched durable ingest: the first (at most 20) seconds of loading the persons.
    let batches = (persons as usize).div_ceil(args.batch) as u64;
    let ingest_args = |extra: &[String]| -> Vec<String> {
        let mut a = vec![
            s("--url"), format!("{base}/v1/datasets/hukou/updates"),
            s("-H"), provider.clone(),
            s("-H"), s("Content-Type: application/x-ndjson"),
            s("--lines"), hukou.to_string_lossy().into_owned(),
            s("--lines-per-request"), args.batch.to_string(),
            s("-c"), args.ingest_connections.to_string(),
        ];
        a.extend_from_slice(extra);
        a
    };
    let v = bench.measure(
        &format!("ingest, batches of {} lines", args.batch),
        &server,
        Some(&addr),
        &ingest_args(&[s("-d"), s("20")]),
        "≥ 100,000 updates/s",
        |v| Some(f(v, &["lines_per_s"]) >= 100_000.0),
    )?;
    let sent = v["issued"].as_u64().unwrap_or(0);
    if sent < batches {
        eprintln!("[http_bench] loading the remaining {} batches (not measured)", batches - sent);
        bench.loadgen.run("ingest (rest, not measured)", &ingest_args(&[s("--skip-requests"), sent.to_string(), s("-d"), s("600")]))?;
    }
    let held = metric(&addr, "basedata_dataset_records{dataset=\"hukou\"}").unwrap_or(0.0);
    eprintln!("[http_bench] hukou records held: {held}");
    if held < persons as f64 * 0.99 {
        bail!("only {held} of {persons} persons were loaded; see {}", work.join("results.jsonl").display());
    }

    // 4. Single-update requests from many clients.
    let single = r#"{"key":"{0}","version":{n},"op":"upsert","fields":{"name":"{1}","gender":"{3}","ethnicity":"01","birth_date":"{2}","status":"normal"}}"#;
    let probe = single.replace("{0}", &first_row[0]).replace("{1}", &first_row[1]).replace("{2}", &first_row[2]).replace("{3}", &first_row[3]).replace("{n}", "999");
    let (st, body) = http(&addr, "POST", "/v1/datasets/hukou/updates", &[("Authorization", &format!("Bearer {PROVIDER_TOKEN}"))], &probe)?;
    if st != 200 || !body.contains("\"applied\":1") {
        bail!("a single update was not applied: {st} {body}");
    }
    bench.measure(
        &format!("ingest, single-update requests ({} clients)", args.connections),
        &server,
        Some(&addr),
        &[
            s("--url"), format!("{base}/v1/datasets/hukou/updates"),
            s("-H"), provider.clone(),
            s("-H"), s("Content-Type: application/x-ndjson"),
            s("--keys"), rows_arg.clone(),
            s("--body"), s(single),
            s("--seq-base"), s("1000"),
            s("-c"), conns.clone(), s("--warmup"), warm.clone(), s("-d"), dur.clone(),
        ],
        "≥ 20,000 updates/s",
        |v| Some(f(v, &["rps"]) >= 20_000.0),
    )?;

    // 5. Verification next to the minimal axum handler.
    let verify_body = VERIFY_BODY;
    let probe = verify_body.replace("{1}", &first_row[1]).replace("{2}", &first_row[2]);
    let auth = format!("Bearer {COUNTER_TOKEN}");
    let (st, body) = http(&addr, "POST", &format!("/v1/persons/{}/verify", first_row[0]), &[("Authorization", &auth), ("X-Purpose", "benchmark")], &probe)?;
    if st != 200 || !body.contains("\"result\":\"match\"") {
        bail!("the verification probe did not match: {st} {body}");
    }
    // The two floors: the handler that does nothing, and the same handler
    // syncing each body to a log before it answers (group commit).
    let mini_args = |url: &str, extra: &[String]| -> Vec<String> {
        let mut a = vec![
            s("--url"), url.to_owned(),
            s("-H"), s("Content-Type: application/json"),
            s("--keys"), rows_arg.clone(),
            s("--body"), s(verify_body),
            s("-c"), conns.clone(), s("--warmup"), warm.clone(), s("-d"), dur.clone(),
        ];
        a.extend_from_slice(extra);
        a
    };
    let durable_dir = work.join("minimal-durable");
    let measure_minimal = |bench: &mut Bench, name: &str, durable: bool, extra: &[String]| -> anyhow::Result<Value> {
        let maddr = format!("127.0.0.1:{}", free_port()?);
        let mut cmd = Command::new(&minimal);
        cmd.args(["--listen", &maddr, "--max-seconds", "120"]).stdout(Stdio::null()).stderr(Stdio::null());
        if durable {
            cmd.arg("--durable").arg(&durable_dir);
        }
        let mut mini = Proc::new(cmd.spawn()?, "minimal_axum");
        wait_ready(&maddr, "/", &mut mini, None, Duration::from_secs(30))?;
        let v = bench.measure(name, &mini, None, &mini_args(&format!("http://{maddr}/"), extra), "", |_| None)?;
        mini.stop();
        Ok(v)
    };
    let mini_v = measure_minimal(&mut bench, "minimal axum handler, POST / (ceiling)", false, &[])?;
    measure_minimal(&mut bench, "minimal axum handler, POST / synced to a log before the answer (durable floor)", true, &[])?;
    let verify_args = |extra: &[String]| -> Vec<String> {
        let mut a = verify_args(&base, &rows_path, args.connections, args.warmup, args.duration);
        a.extend_from_slice(extra);
        a
    };
    // Verification at full rate, against the minimal handler's `ceiling`.
    let measure_verify = |bench: &mut Bench, name: &str, ceiling: f64| -> anyhow::Result<Value> {
        bench.measure(name, &server, Some(&addr), &verify_args(&[]), "≥ 0.6 × minimal axum", |v| {
            Some(ceiling > 0.0 && f(v, &["rps"]) / ceiling >= 0.6)
        })
    };
    let v = measure_verify(&mut bench, "verify, POST /v1/persons/{id}/verify (audited)", f(&mini_v, &["rps"]))?;
    let verify_max = f(&v, &["rps"]);
    let half = (verify_max / 2.0).round().max(1.0);
    bench.measure(
        &format!("verify at half the maximum rate ({half} req/s)"),
        &server,
        Some(&addr),
        &verify_args(&[s("--rate"), half.to_string()]),
        "p99 ≤ 1.5 × fdatasync p99",
        |v| Some(f(v, &["latency_us", "p99"]) <= 1.5 * f(&fsync, &["p99_us"])),
    )?;
    // What the HTTP stack and the disk alone give at that same rate: the
    // floor under the p99 above.
    let at_half = [s("--rate"), half.to_string()];
    measure_minimal(&mut bench, &format!("minimal axum handler at the same rate ({half} req/s)"), false, &at_half)?;
    measure_minimal(&mut bench, &format!("minimal axum handler, synced, at the same rate ({half} req/s)"), true, &at_half)?;
    // The ratio again in further pairs, each in the other order from the
    // one before, so that a drift of the machine's speed falls on both
    // sides alike; the target is judged on all pairs together below.
    let mut pairs = vec![(verify_max, f(&mini_v, &["rps"]))];
    for k in 2..=args.pairs {
        let mini_name = format!("pair {k}: minimal axum handler, POST / (ceiling)");
        let verify_name = format!("pair {k}: verify, POST /v1/persons/{{id}}/verify (audited)");
        // Judged below on all pairs together, not pair by pair.
        let verify = |bench: &mut Bench| bench.measure(&verify_name, &server, Some(&addr), &verify_args(&[]), "", |_| None);
        let (v, m) = if k % 2 == 0 {
            let v = verify(&mut bench)?;
            (v, measure_minimal(&mut bench, &mini_name, false, &[])?)
        } else {
            let m = measure_minimal(&mut bench, &mini_name, false, &[])?;
            (verify(&mut bench)?, m)
        };
        pairs.push((f(&v, &["rps"]), f(&m, &["rps"])));
    }
    let ratios = harness::pair_ratios(&pairs);
    // The verdict on the first verification row is the pooled ratio's:
    // one pair alone is not evidence either way.
    let first_verify = bench.rows.iter_mut().find(|r| r.name.starts_with("verify, POST"));
    if let (Some(r), Some(row)) = (ratios.as_ref().filter(|_| pairs.len() > 1), first_verify) {
        row.target = format!("≥ 0.6 × minimal axum, all {} pairs together", pairs.len());
        row.verdict = Some(r.pooled >= 0.6);
    }

    // 6. Lookups.
    let (st, body) = http(&addr, "GET", &format!("/v1/persons/{}?datasets=hukou", first_row[0]), &[("Authorization", &auth), ("X-Purpose", "benchmark")], "")?;
    if st != 200 || !body.contains(&first_row[1]) {
        bail!("the lookup probe failed: {st} {body}");
    }
    for (name, path) in [
        ("lookup, GET /v1/persons/{id}?datasets=hukou", format!("{base}/v1/persons/{{0}}?datasets=hukou")),
        ("lookup, GET /v1/persons/{id} (all person datasets)", format!("{base}/v1/persons/{{0}}")),
    ] {
        bench.measure(
            name,
            &server,
            Some(&addr),
            &[
                s("--url"), path,
                s("-H"), counter.clone(),
                s("-H"), s("X-Purpose: benchmark"),
                s("--keys"), rows_arg.clone(),
                s("-c"), conns.clone(), s("--warmup"), warm.clone(), s("-d"), dur.clone(),
            ],
            "",
            |_| None,
        )?;
    }
    // The HTTP layers alone (authentication, access log, metrics, JSON) with
    // no store read and no audit entry: what verification costs beyond them.
    bench.measure(
        "key check, GET /v1/keys/person/{id} (no store, no audit)",
        &server,
        None,
        &[
            s("--url"), format!("{base}/v1/keys/person/{{0}}"),
            s("-H"), counter.clone(),
            s("--keys"), rows_arg.clone(),
            s("-c"), conns.clone(), s("--warmup"), warm.clone(), s("-d"), dur.clone(),
        ],
        "",
        |_| None,
    )?;
    let server_rss = rss_mb(server.pid());
    server.stop();
    let store_mb = dir_bytes(&work.join("data")) as f64 / 1e6;

    // Report.
    let mut r = String::new();
    r.push_str("| machine | |\n|---|---|\n");
    for (k, v) in &machine {
        r.push_str(&format!("| {k} | {v} |\n"));
    }
    r.push_str(&format!(
        "| synced append (4 KiB + fdatasync) | {} per s, p50 {} ms, p99 {} ms, max {} ms |\n",
        fsync["per_s"],
        ms(f(&fsync, &["p50_us"])),
        ms(f(&fsync, &["p99_us"])),
        ms(f(&fsync, &["max_us"]))
    ));
    r.push_str(&format!(
        "| data set | {persons} persons (hukou), generated in {gen_secs:.1} s; store {store_mb:.0} MB on disk; server RSS {server_rss:.0} MB at the end |\n\n"
    ));
    r.push_str("| benchmark | conns | req/s | updates/s | p50 ms | p90 ms | p99 ms | max ms | server CPU µs/req | client CPU µs/req | requests per group commit | group commits over 10 ms | journal syncs over 10 ms | other load (cores) | non-2xx / errors | target | |\n");
    r.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n");
    for row in &bench.rows {
        let v = &row.result;
        let ok = f(v, &["ok"]).max(1.0);
        let is_update = row.name.starts_with("ingest");
        r.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {} | {} | {} | {:.2} | {} / {} | {} | {} |\n",
            row.name,
            v["connections"],
            f(v, &["rps"]),
            if is_update { format!("{:.0}", f(v, &["lines_per_s"])) } else { "".into() },
            ms(f(v, &["latency_us", "p50"])),
            ms(f(v, &["latency_us", "p90"])),
            ms(f(v, &["latency_us", "p99"])),
            ms(f(v, &["latency_us", "max"])),
            row.server_cpu_s * 1e6 / ok,
            f(v, &["client_cpu_s"]) * 1e6 / ok,
            row.jobs_per_group.map(|j| format!("{j:.1}")).unwrap_or_default(),
            row.slow_commits.map(|n| format!("{n:.0}")).unwrap_or_default(),
            row.slow_syncs.map(|n| format!("{n:.0}")).unwrap_or_default(),
            row.other_cores,
            v["non_2xx"],
            v["io_errors"],
            row.target,
            match row.verdict {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "",
            }
        ));
    }
    // The first run whose name starts with `prefix`.
    let row = |prefix: &str| bench.rows.iter().find(|r| r.name.starts_with(prefix));
    let per_req = |prefix: &str| {
        row(prefix).map(|r| {
            let ok = f(&r.result, &["ok"]).max(1.0);
            (f(&r.result, &["rps"]), r.server_cpu_s * 1e6 / ok)
        })
    };
    if let (Some((verify_rps, verify_cpu)), Some((mini_rps, mini_cpu))) = (per_req("verify, POST"), per_req("minimal axum handler, POST / (ceiling)")) {
        r.push_str(&format!(
            "\nVerification throughput / minimal axum handler: {verify_rps:.0} / {mini_rps:.0} = **{:.2}** \
             (server CPU per request: {mini_cpu:.0} µs / {verify_cpu:.0} µs = {:.2}; the client's own CPU is shared by both runs)\n",
            verify_rps / mini_rps,
            mini_cpu / verify_cpu.max(1e-9),
        ));
        if let Some(p) = ratios.as_ref().filter(|p| p.each.len() > 1) {
            let each: Vec<String> = p.each.iter().map(|x| format!("{x:.2}")).collect();
            r.push_str(&format!(
                "\nOver {} pairs (each run in the other order from the one before): {}; median **{:.2}**, all pairs together **{:.2}** (the target's figure)\n",
                p.each.len(),
                each.join(", "),
                p.median,
                p.pooled,
            ));
        }
    }
    if let Some((durable_rps, durable_cpu)) = per_req("minimal axum handler, POST / synced") {
        if let Some((mini_rps, mini_cpu)) = per_req("minimal axum handler, POST / (ceiling)") {
            r.push_str(&format!(
                "\nThe durable floor / minimal axum handler: {durable_rps:.0} / {mini_rps:.0} = **{:.2}** \
                 (server CPU per request {durable_cpu:.0} µs against {mini_cpu:.0} µs): what a synced record of every request costs by itself\n",
                durable_rps / mini_rps,
            ));
        }
    }
    let p99 = |prefix: &str| row(prefix).map(|r| f(&r.result, &["latency_us", "p99"]));
    if let (Some(v), Some(m), Some(d)) = (p99("verify at half"), p99("minimal axum handler at the same rate"), p99("minimal axum handler, synced, at")) {
        let sync = f(&fsync, &["p99_us"]);
        let late = row("verify at half").map_or(0.0, |r| f(&r.result, &["pacer_late_us", "p99"]));
        r.push_str(&format!(
            "\np99 at half the maximum rate: verification {} ms; at the same rate the minimal handler {} ms and the synced minimal handler {} ms; \
             the disk's fdatasync p99 {} ms (verification = **{:.1}×** it, the minimal handler {:.1}×; \
             verification = {:.1}× the synced minimal handler). The load generator's pacer released requests up to {} ms late (p99, verification run), \
             which the figures count\n",
            ms(v), ms(m), ms(d), ms(sync), v / sync.max(1.0), m / sync.max(1.0), v / d.max(1.0), ms(late),
        ));
        // The latency split where it arose: before sending (the pacer, or
        // all connections busy with earlier requests) and after.
        let split = |prefix: &str| row(prefix).map(|r| (f(&r.result, &["wait_us", "p99"]), f(&r.result, &["service_us", "p99"])));
        if let (Some((vw, vs)), Some((dw, ds))) = (split("verify at half"), split("minimal axum handler, synced, at")) {
            r.push_str(&format!(
                "Of that, the p99 of the wait from due to sent (a request that falls due while every connection is busy waits for one) \
                 and of the time from sent to answered: verification {} ms and {} ms, the synced minimal handler {} ms and {} ms\n",
                ms(vw), ms(vs), ms(dw), ms(ds),
            ));
        }
    }
    r.push_str("\nCommands (loadgen in target/release/; `{0}`… are columns of rows.tsv: key, name, birth date, gender):\n\n```sh\n");
    for row in &bench.rows {
        r.push_str(&format!("# {}\n{}\n", row.name, row.command.replace(&work.to_string_lossy().into_owned(), "$WORK")));
    }
    r.push_str("```\n");
    println!("{r}");
    if let Some(p) = &args.report {
        std::fs::write(p, &r)?;
    }
    if args.keep {
        eprintln!("[http_bench] kept {}", work_dir.keep().display());
    }
    Ok(())
}
