//! What the side-by-side harnesses (`http_bench`, `vs_postgres`) share:
//! child processes that are always stopped, bounded runs of commands, the
//! `basedata serve` configuration and start-up, `loadgen` runs, CPU and
//! machine-load readings from /proc, a streaming HTTP client for NDJSON
//! batch bodies, and the machine description of a report.

use anyhow::{bail, Context};
use serde_json::Value;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Token of the provider department (`gongan`) in [`write_config`].
pub const PROVIDER_TOKEN: &str = "bench-gongan-token-0000000000";
/// Token of the consumer department (`shebao-counter`) in [`write_config`].
pub const COUNTER_TOKEN: &str = "bench-counter-token-000000000";
/// Body of a verification request: name and birth date, columns 1 and 2 of
/// a `loadgen --keys` row.
pub const VERIFY_BODY: &str = r#"{"dataset":"hukou","fields":{"name":"{1}","birth_date":"{2}"}}"#;

/// A child process, stopped when dropped (also on an error path).
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
    /// Signal of an orderly stop (`TERM`; `INT` is PostgreSQL's fast shutdown).
    signal: &'static str,
}

/// Running children and their stop signals, for [`stop_children_on_signal`].
static CHILDREN: Mutex<Vec<(u32, &'static str)>> = Mutex::new(Vec::new());

fn registered(f: impl FnOnce(&mut Vec<(u32, &'static str)>)) {
    if let Ok(mut c) = CHILDREN.lock() {
        f(&mut c);
    }
}

/// Whether process `pid` still runs (a zombie does not).
fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()) != Some("Z")
}

/// On SIGINT or SIGTERM, stops every running [`Proc`] with its own signal
/// (SIGKILL after 15 s) and exits with status 130: an interrupted harness
/// leaves no server behind.
pub fn stop_children_on_signal(tag: &'static str) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        let got = rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else { return false };
            tokio::select! {
                _ = term.recv() => true,
                _ = int.recv() => true,
            }
        });
        if !got {
            return;
        }
        let children = CHILDREN.lock().map(|c| c.clone()).unwrap_or_default();
        eprintln!("[{tag}] interrupted; stopping {} child process(es)", children.len());
        for (pid, sig) in &children {
            let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && children.iter().any(|(pid, _)| alive(*pid)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        for (pid, _) in children.iter().filter(|(pid, _)| alive(*pid)) {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
        }
        std::process::exit(130);
    });
}

impl Proc {
    pub fn new(child: Child, name: &'static str) -> Proc {
        registered(|c| c.push((child.id(), "TERM")));
        Proc { child, name, signal: "TERM" }
    }

    /// The signal of an orderly stop, instead of SIGTERM.
    pub fn with_signal(mut self, signal: &'static str) -> Proc {
        let pid = self.pid();
        registered(|c| c.iter_mut().filter(|(p, _)| *p == pid).for_each(|e| e.1 = signal));
        self.signal = signal;
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `self.signal` (via kill(1), to this child's pid only), then SIGKILL
    /// after `grace`; true if it stopped by itself.
    fn stop_within(&mut self, grace: Duration) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return true;
        }
        let _ = Command::new("kill").arg(format!("-{}", self.signal)).arg(self.pid().to_string()).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    /// Orderly stop, SIGKILL after 30 s.
    pub fn stop(mut self) {
        if !self.stop_within(Duration::from_secs(30)) {
            eprintln!("{} ignored SIG{}; killed it", self.name, self.signal);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop_within(Duration::from_secs(10));
        let pid = self.pid();
        registered(|c| c.retain(|(p, _)| *p != pid));
    }
}

/// The `basedata` binary (`given`, or beside this program) and the named
/// benchmark binaries beside this program; fails if one is not built.
pub fn binaries<const N: usize>(given: Option<&Path>, names: [&str; N]) -> anyhow::Result<(PathBuf, [PathBuf; N])> {
    let here = std::env::current_exe()?.parent().context("no directory of this program")?.to_path_buf();
    let basedata = given.map(Path::to_path_buf).unwrap_or_else(|| here.join("basedata"));
    let others = names.map(|n| here.join(n));
    for b in std::iter::once(&basedata).chain(&others) {
        if !b.exists() {
            bail!("{} is missing: cargo build --release --bin basedata && cargo build --release -p basedata-benches --bins", b.display());
        }
    }
    Ok((basedata, others))
}

/// Runs `cmd` to its end, killing it after `timeout`; its output goes where
/// `cmd` says. Returns the exit status and the wall seconds.
pub fn run_bounded(cmd: &mut Command, name: &'static str, timeout: Duration) -> anyhow::Result<(ExitStatus, f64)> {
    let t = Instant::now();
    let mut p = Proc::new(cmd.spawn().with_context(|| format!("cannot start {name}"))?, name);
    loop {
        if let Some(st) = p.child.try_wait()? {
            return Ok((st, t.elapsed().as_secs_f64()));
        }
        if t.elapsed() > timeout {
            drop(p);
            bail!("{name} did not finish within {} s; stopped it", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`run_bounded`] with standard output and error in `log` (appended); fails
/// with the log's tail when the command fails.
pub fn run_logged(cmd: &mut Command, name: &'static str, timeout: Duration, log: &Path) -> anyhow::Result<f64> {
    let file = || std::fs::OpenOptions::new().create(true).append(true).open(log);
    cmd.stdin(Stdio::null()).stdout(file()?).stderr(file()?);
    let (st, secs) = run_bounded(cmd, name, timeout)?;
    if !st.success() {
        bail!("{name} failed ({st}):\n{}", tail(log, 20));
    }
    Ok(secs)
}

/// The last `n` lines of a file (for error messages).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One request on a fresh connection (`Connection: close`): status and body.
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").context("malformed response")?;
    let status: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no status")?;
    let body = if is_chunked(head) { dechunk(rest) } else { rest.to_owned() };
    Ok((status, body))
}

fn is_chunked(head: &str) -> bool {
    head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Waits (at most `max`) until `GET path` on `addr` answers 200, failing
/// early if the process exits.
pub fn wait_ready(addr: &str, path: &str, p: &mut Proc, log: Option<&Path>, max: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + max;
    while Instant::now() < deadline {
        if let Ok((200, _)) = http(addr, "GET", path, &[], "") {
            return Ok(());
        }
        if let Ok(Some(st)) = p.child.try_wait() {
            let see = log.map(|l| format!("; see {}", l.display())).unwrap_or_default();
            bail!("{} exited with {st}{see}", p.name);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{} did not answer on {addr} within {} s", p.name, max.as_secs())
}

/// The `basedata serve`/`basedata load` configuration of the harnesses: the
/// provider and the counter departments, and (when given) the block cache.
pub fn write_config(path: &Path, block_cache_mb: Option<usize>) -> anyhow::Result<()> {
    let cache = block_cache_mb.map(|mb| format!("block_cache_mb = {mb}\n\n")).unwrap_or_default();
    std::fs::write(
        path,
        format!(
            "{cache}[[departments]]\nid = \"gongan\"\nroles = [\"provider\", \"consumer\"]\ntoken = \"{PROVIDER_TOKEN}\"\n\n\
             [[departments]]\nid = \"shebao-counter\"\nroles = [\"consumer\"]\ntoken = \"{COUNTER_TOKEN}\"\n"
        ),
    )?;
    Ok(())
}

/// Starts `basedata serve` on `addr` and waits (up to 120 s) until it answers.
pub fn start_basedata(basedata: &Path, data: &Path, config: &Path, addr: &str, log: &Path) -> anyhow::Result<Proc> {
    let mut server = Proc::new(
        Command::new(basedata)
            .arg("serve")
            .arg("--data")
            .arg(data)
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg(addr)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .context("cannot start basedata serve")?,
        "basedata serve",
    );
    wait_ready(addr, "/healthz", &mut server, Some(log), Duration::from_secs(120))?;
    Ok(server)
}

/// The arguments of a `loadgen` run of `POST /v1/persons/{id}/verify` with
/// [`VERIFY_BODY`] over the rows of `rows` (key, name, birth date, …).
pub fn verify_args(base: &str, rows: &Path, conns: usize, warmup: f64, duration: f64) -> Vec<String> {
    [
        "--url", &format!("{base}/v1/persons/{{0}}/verify"),
        "-H", &format!("Authorization: Bearer {COUNTER_TOKEN}"),
        "-H", "X-Purpose: benchmark",
        "-H", "Content-Type: application/json",
        "--keys", &rows.to_string_lossy(),
        "--body", VERIFY_BODY,
        "-c", &conns.to_string(), "--warmup", &warmup.to_string(), "-d", &duration.to_string(),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

/// A single-quoted shell word where needed.
pub fn shell_quote(a: &str) -> String {
    if a.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_./:=,@".contains(&c)) {
        a.to_owned()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

/// A command line as one would type it.
pub fn command_line(program: &str, args: &[String]) -> String {
    std::iter::once(program.to_owned()).chain(args.iter().map(|a| shell_quote(a))).collect::<Vec<_>>().join(" ")
}

/// Runs of the `loadgen` binary; each result is also appended to `log`.
pub struct Loadgen {
    pub path: PathBuf,
    pub threads: usize,
    pub log: std::fs::File,
    /// Prefix of progress lines on standard error.
    pub tag: &'static str,
}

impl Loadgen {
    /// Runs `loadgen` with `args`; returns its JSON result and the command line.
    pub fn run(&mut self, label: &str, args: &[String]) -> anyhow::Result<(Value, String)> {
        let mut all: Vec<String> = args.to_vec();
        all.extend(["--threads".into(), self.threads.to_string(), "--label".into(), label.into()]);
        let command = command_line("loadgen", &all);
        eprintln!("[{}] {label}: {command}", self.tag);
        let out = Command::new(&self.path).args(&all).stdin(Stdio::null()).stderr(Stdio::inherit()).output().context("run loadgen")?;
        if !out.status.success() {
            bail!("loadgen failed ({}) for {label}", out.status);
        }
        let v: Value = serde_json::from_slice(&out.stdout).context("loadgen output")?;
        writeln!(self.log, "{v}")?;
        eprintln!("[{}]   {v}", self.tag);
        Ok((v, command))
    }
}

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces).
fn stat_fields(pid: &str) -> Vec<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    rest.split_whitespace().map(|v| v.parse::<f64>().unwrap_or(0.0)).collect()
}

/// CPU seconds (user + system) used so far by process `pid`.
pub fn cpu_of(pid: u32) -> f64 {
    let f = stat_fields(&pid.to_string());
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

/// CPU seconds of the waited-for children of this process (the commands
/// it ran to their end).
pub fn reaped_children_cpu() -> f64 {
    let f = stat_fields("self");
    (f.get(13).unwrap_or(&0.0) + f.get(14).unwrap_or(&0.0)) / 100.0
}

/// The live children of process `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        // Field 4 of the stat line, the parent's pid, is the second here.
        .filter(|child| stat_fields(&child.to_string()).get(1).copied() == Some(pid as f64))
        .collect()
}

/// CPU seconds of process `pid`, of its exited children (a PostgreSQL
/// postmaster reaps its backends) and of its live children.
pub fn tree_cpu(pid: u32) -> f64 {
    let own: f64 = stat_fields(&pid.to_string()).iter().skip(11).take(4).sum::<f64>() / 100.0;
    own + children_of(pid).into_iter().map(cpu_of).sum::<f64>()
}

/// Proportional set size of process `pid` and its live children, in MB
/// (shared memory counted once in all).
pub fn tree_pss_mb(pid: u32) -> f64 {
    std::iter::once(pid)
        .chain(children_of(pid))
        .map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
                .ok()
                .and_then(|s| s.lines().find(|l| l.starts_with("Pss:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
                .unwrap_or(0.0)
                / 1024.0
        })
        .sum()
}

/// Busy and total jiffies of the whole machine (all cores), from /proc/stat.
pub fn machine_jiffies() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

/// Cores kept busy, on average, between two readings of [`machine_jiffies`].
pub fn busy_cores(a: (f64, f64), b: (f64, f64), cores: f64) -> f64 {
    let total = b.1 - a.1;
    if total <= 0.0 {
        0.0
    } else {
        (b.0 - a.0) / total * cores
    }
}

pub fn cores() -> f64 {
    std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0)
}

/// Waits (at most `max`) until the machine is nearly idle, so that other
/// work on it does not take the CPU from the run; returns the busy cores
/// seen last.
pub fn wait_quiet(max: Duration, tag: &str) -> f64 {
    let deadline = Instant::now() + max;
    let mut warned = false;
    loop {
        let a = machine_jiffies();
        std::thread::sleep(Duration::from_secs(1));
        let busy = busy_cores(a, machine_jiffies(), cores());
        if busy < 0.25 || Instant::now() >= deadline {
            return busy;
        }
        if !warned {
            eprintln!("[{tag}] the machine is busy ({busy:.2} cores in use by other work); waiting");
            warned = true;
        }
    }
}

/// What a measured step cost the machine.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub wall_s: f64,
    /// CPU of the server under test (0 when the step has none).
    pub server_cpu_s: f64,
    /// CPU of the commands the harness ran to their end meanwhile (the client).
    pub client_cpu_s: f64,
    /// Cores used by everything else during the step: other work that took
    /// CPU from it.
    pub other_cores: f64,
}

/// Runs `step` once the machine is quiet (waiting at most `quiet_wait`),
/// reading the server's CPU (`server_cpu`) and the machine's load around it.
pub fn measure<T>(
    quiet_wait: Duration,
    tag: &str,
    server_cpu: &dyn Fn() -> f64,
    step: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, Sample)> {
    wait_quiet(quiet_wait, tag);
    let (s0, c0, m0, t0) = (server_cpu(), reaped_children_cpu(), machine_jiffies(), Instant::now());
    let out = step()?;
    let wall_s = t0.elapsed().as_secs_f64();
    let all_busy = busy_cores(m0, machine_jiffies(), cores());
    let server_cpu_s = (server_cpu() - s0).max(0.0);
    let client_cpu_s = (reaped_children_cpu() - c0).max(0.0);
    let other_cores = (all_busy - (server_cpu_s + client_cpu_s) / wall_s.max(1e-9)).max(0.0);
    Ok((out, Sample { wall_s, server_cpu_s, client_cpu_s, other_cores }))
}

/// A line of `/proc/PID/status` in MB (`VmRSS:`, `VmHWM:`).
pub fn status_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

pub fn rss_mb(pid: u32) -> f64 {
    status_mb(pid, "VmRSS:")
}

/// Bytes of the files under `p`.
pub fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Free bytes of the file system holding `p`.
pub fn free_bytes(p: &Path) -> u64 {
    sh("df", &["-Pk", &p.to_string_lossy()])
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|k| k.parse::<u64>().ok())
        .map(|k| k * 1024)
        .unwrap_or(0)
}

/// A gauge of the server's `/metrics` with the given name and label text;
/// `None` when the server cannot be asked or has no such series (an
/// older build), so that a report leaves the figure blank rather than
/// showing 0.
pub fn metric(addr: &str, prefix: &str) -> Option<f64> {
    metric_in(&metrics_text(addr)?, prefix)
}

/// The server's `/metrics` page; `None` when it does not answer `200`.
fn metrics_text(addr: &str) -> Option<String> {
    match http(addr, "GET", "/metrics", &[], "") {
        Ok((200, text)) => Some(text),
        _ => None,
    }
}

/// The value of the first line of Prometheus text `text` that starts
/// with `prefix` (a series' name and labels).
pub fn metric_in(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

/// Group-commit counters: groups, jobs, group commits over 10 ms, the
/// journal's group writes and syncs over 10 ms; each `None` where the
/// server does not report it.
pub fn writer_counts(addr: &str) -> [Option<f64>; 4] {
    let Some(text) = metrics_text(addr) else { return [None; 4] };
    [
        "basedata_writer{stat=\"groups\"}",
        "basedata_writer{stat=\"jobs\"}",
        "basedata_writer{stat=\"slow_commits\"}",
        "basedata_journal{stat=\"slow_syncs\"}",
    ]
    .map(|series| metric_in(&text, series))
}

/// Standard output of a command, trimmed ("" when it cannot run).
pub fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The machine a report was taken on: cores, CPU, memory, the disk under
/// `work`, kernel, date and commit.
pub fn machine(work: &Path) -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok()))
        .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    let df = sh("df", &["-PT", &work.to_string_lossy()]);
    let disk = df
        .lines()
        .nth(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dev = f.first().copied().unwrap_or("?");
            let base = dev.rsplit('/').next().unwrap_or(dev);
            let rot = std::fs::read_to_string(format!("/sys/block/{base}/queue/rotational"))
                .map(|r| if r.trim() == "1" { " (reported rotational)" } else { " (reported non-rotational)" })
                .unwrap_or("");
            let size_gb = f.get(2).and_then(|k| k.parse::<f64>().ok()).map(|k| k / 1024.0 / 1024.0).unwrap_or(0.0);
            format!("{dev}, {} , {size_gb:.0} GiB{rot}", f.get(1).copied().unwrap_or("?"))
        })
        .unwrap_or_default();
    vec![
        ("cores (nproc)".into(), std::thread::available_parallelism().map(|n| n.get().to_string()).unwrap_or_default()),
        ("CPU".into(), format!("{} ({} MHz)", field("model name"), field("cpu MHz"))),
        ("memory".into(), mem),
        ("disk".into(), disk),
        ("kernel".into(), std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned()),
        ("date (UTC)".into(), sh("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])),
        // The working directory's commit, when run from the repository.
        ("commit".into(), sh("git", &["describe", "--always", "--dirty"])),
    ]
}

/// The working directory of a harness: the one given, or a new one under
/// /var/tmp that is removed at the end unless kept.
pub struct WorkDir {
    pub path: PathBuf,
    scratch: Option<tempfile::TempDir>,
}

impl WorkDir {
    pub fn new(given: Option<&Path>, prefix: &str) -> anyhow::Result<WorkDir> {
        match given {
            Some(w) => {
                std::fs::create_dir_all(w).with_context(|| format!("cannot create {}", w.display()))?;
                Ok(WorkDir { path: w.canonicalize()?, scratch: None })
            }
            None => {
                let t = tempfile::Builder::new().prefix(prefix).tempdir_in("/var/tmp")?;
                Ok(WorkDir { path: t.path().to_path_buf(), scratch: Some(t) })
            }
        }
    }

    /// Leaves the directory in place at the end.
    pub fn keep(self) -> PathBuf {
        if let Some(t) = self.scratch {
            let _ = t.keep();
        }
        self.path
    }
}

/// What a streamed POST answered.
#[derive(Clone, Copy, Debug)]
pub struct Streamed {
    pub status: u16,
    /// Lines and bytes of the response body (written to the output file).
    pub lines: u64,
    pub bytes: u64,
}

/// POSTs the file `body` to `addr` + `path`, streamed while the response is
/// read (the server answers as the body arrives), and writes the response
/// body to `out`. Fails when the whole exchange takes longer than `timeout`
/// or the connection stalls for two minutes.
pub fn post_file(addr: &str, path: &str, headers: &[(&str, &str)], body: &Path, out: &Path, timeout: Duration) -> anyhow::Result<Streamed> {
    let deadline = Instant::now() + timeout;
    let len = std::fs::metadata(body).with_context(|| format!("cannot read {}", body.display()))?.len();
    let s = TcpStream::connect(addr)?;
    let stall = Some(Duration::from_secs(120));
    s.set_read_timeout(stall)?;
    s.set_write_timeout(stall)?;
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {len}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut w = s.try_clone()?;
    let file = std::fs::File::open(body)?;
    let writer = std::thread::spawn(move || -> std::io::Result<u64> {
        w.write_all(head.as_bytes())?;
        let n = std::io::copy(&mut BufReader::with_capacity(1 << 20, file), &mut w)?;
        w.flush()?;
        Ok(n)
    });
    let mut r = BufReader::with_capacity(1 << 20, s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no HTTP status line")?;
    let mut head_text = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        head_text.push_str(&line);
    }
    let mut w_out = BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    let (mut lines, mut bytes) = (0u64, 0u64);
    let mut buf = vec![0u8; 1 << 16];
    let mut copy = |r: &mut BufReader<TcpStream>, mut n: Option<u64>| -> anyhow::Result<()> {
        loop {
            if Instant::now() > deadline {
                bail!("the response took longer than {} s", timeout.as_secs());
            }
            let want = n.map(|n| n.min(buf.len() as u64) as usize).unwrap_or(buf.len());
            if want == 0 {
                return Ok(());
            }
            let got = r.read(&mut buf[..want])?;
            if got == 0 {
                if n.is_some() {
                    bail!("the response broke off");
                }
                return Ok(());
            }
            w_out.write_all(&buf[..got])?;
            lines += buf[..got].iter().filter(|&&b| b == b'\n').count() as u64;
            bytes += got as u64;
            n = n.map(|n| n - got as u64);
        }
    };
    if is_chunked(&head_text) {
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                bail!("the chunked response broke off");
            }
            let size = line.trim().split(';').next().unwrap_or("");
            let size = u64::from_str_radix(size, 16).with_context(|| format!("bad chunk size {size:?}"))?;
            if size == 0 {
                break;
            }
            copy(&mut r, Some(size))?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else {
        let length = head_text
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
            .and_then(|v| v.parse::<u64>().ok());
        copy(&mut r, length)?;
    }
    drop(copy);
    w_out.flush()?;
    // The server may answer an error before reading the whole body.
    match writer.join() {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if status == 200 => bail!("sending the body failed: {e}"),
        Ok(Err(_)) => {}
        Err(_) => bail!("the body writer panicked"),
    }
    Ok(Streamed { status, lines, bytes })
}

/// A number at `path` in a JSON value (0 when absent).
pub fn f(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_f64().unwrap_or(0.0)
}

/// Microseconds as milliseconds with two decimals.
pub fn ms(us: f64) -> String {
    format!("{:.2}", us / 1000.0)
}

pub fn s(v: impl Into<String>) -> String {
    v.into()
}

/// A count with thousands separators (`1,234,567`).
pub fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Verification's throughput against the minimal handler's over
/// alternated pairs of runs: single runs on a shared two-core machine
/// drift by ±10 %, so one pair can land in a fast and a slow spell.
#[derive(Clone, Debug, PartialEq)]
pub struct PairRatios {
    /// Each pair's verification / minimal, in the order run.
    pub each: Vec<f64>,
    /// The middle of `each` (the mean of the two middle ones for an even
    /// count).
    pub median: f64,
    /// Every pair's verifications over every pair's minimal requests.
    pub pooled: f64,
}

/// [`PairRatios`] of `(verification req/s, minimal req/s)` pairs; `None`
/// without a pair whose minimal run answered anything.
pub fn pair_ratios(pairs: &[(f64, f64)]) -> Option<PairRatios> {
    let pairs: Vec<(f64, f64)> = pairs.iter().copied().filter(|&(_, m)| m > 0.0).collect();
    if pairs.is_empty() {
        return None;
    }
    let each: Vec<f64> = pairs.iter().map(|&(v, m)| v / m).collect();
    let mut sorted = each.clone();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 };
    let (v, m) = pairs.iter().fold((0.0, 0.0), |(a, b), &(v, m)| (a + v, b + m));
    Some(PairRatios { each, median, pooled: v / m })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_series_is_none_not_zero() {
        let text = "# TYPE basedata_writer gauge\nbasedata_writer{stat=\"groups\"} 1200\nbasedata_writer{stat=\"groups_x\"} 7\nbasedata_journal{stat=\"slow_syncs\"} 0\n";
        assert_eq!(metric_in(text, "basedata_writer{stat=\"groups\"}"), Some(1200.0));
        assert_eq!(metric_in(text, "basedata_journal{stat=\"slow_syncs\"}"), Some(0.0));
        assert_eq!(metric_in(text, "basedata_writer{stat=\"slow_commits\"}"), None);
        assert_eq!(metric_in("basedata_writer{stat=\"jobs\"} n/a\n", "basedata_writer{stat=\"jobs\"}"), None);
    }

    #[test]
    fn pair_ratios_give_each_the_median_and_the_pooled_ratio() {
        let r = pair_ratios(&[(52_000.0, 92_000.0), (55_000.0, 75_000.0), (60_000.0, 100_000.0)]).unwrap();
        assert_eq!(r.each.len(), 3);
        assert!((r.each[1] - 55.0 / 75.0).abs() < 1e-12);
        assert!((r.median - 0.6).abs() < 1e-12, "{r:?}");
        assert!((r.pooled - 167_000.0 / 267_000.0).abs() < 1e-12, "{r:?}");
        let even = pair_ratios(&[(1.0, 2.0), (3.0, 4.0)]).unwrap();
        assert!((even.median - 0.625).abs() < 1e-12, "{even:?}");
        // A minimal run that answered nothing is left out, not divided by.
        let r = pair_ratios(&[(1.0, 0.0), (1.0, 2.0)]).unwrap();
        assert_eq!(r.each, vec![0.5]);
        assert_eq!(pair_ratios(&[(5.0, 0.0)]), None);
        assert_eq!(pair_ratios(&[]), None);
    }

    #[test]
    fn thousands_groups_digits() {
        for (n, want) in [(0.0, "0"), (999.0, "999"), (1000.0, "1,000"), (1234567.4, "1,234,567"), (-12345.0, "-12,345")] {
            assert_eq!(thousands(n), want, "{n}");
        }
    }

    #[test]
    fn shell_quote_quotes_only_when_needed() {
        assert_eq!(shell_quote("a-b_c/d.e:f=g,h@i"), "a-b_c/d.e:f=g,h@i");
        assert_eq!(shell_quote("X-Purpose: benchmark"), "'X-Purpose: benchmark'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn dechunk_joins_chunks() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
