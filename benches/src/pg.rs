//! PostgreSQL beside basedata for the side-by-side harness: finds (or
//! installs from Debian's packages) the server binaries, creates a cluster
//! in a scratch directory, runs it on a loopback port with its unix socket
//! in that directory as an unprivileged user (PostgreSQL refuses to run as
//! root), runs `psql` scripts and `pgbench` against it with time limits,
//! and stops it.

use crate::harness::{run_bounded, run_logged, Proc};
use anyhow::{bail, Context};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The directory of the newest installed PostgreSQL's server binaries
/// (`/usr/lib/postgresql/N/bin`), if any has `postgres`, `initdb`, `psql`
/// and `pgbench`.
pub fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| ["postgres", "initdb", "psql", "pgbench"].iter().all(|b| bin.join(b).exists()))
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

/// Runs `apt-get` (update, then install `packages`) without questions,
/// bounded to ten minutes each.
pub fn apt_install(packages: &[&str], log: &Path) -> anyhow::Result<()> {
    eprintln!("[vs_postgres] installing {} from Debian's packages (log: {})", packages.join(" "), log.display());
    let ten = Duration::from_secs(600);
    run_logged(Command::new("apt-get").args(["update", "-qq"]), "apt-get update", ten, log)?;
    run_logged(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "-o", "Dpkg::Options::=--force-confold"])
            .args(packages),
        "apt-get install",
        ten,
        log,
    )?;
    Ok(())
}

/// The server binaries, installed from Debian's `postgresql` package when
/// missing. The package's own cluster is not wanted: before a first
/// install, `createcluster.conf` is written so that none is created (and
/// so none is started on the system's port).
pub fn find_or_install(log: &Path) -> anyhow::Result<PathBuf> {
    if let Some(b) = find_bin() {
        return Ok(b);
    }
    let conf = Path::new("/etc/postgresql-common/createcluster.conf");
    if !conf.exists() {
        std::fs::create_dir_all("/etc/postgresql-common")?;
        std::fs::write(conf, "# Written by basedata's vs_postgres: no cluster on installation.\ncreate_main_cluster = false\n")?;
    }
    apt_install(&["postgresql"], log)?;
    find_bin().context("the postgresql package is installed but its server binaries were not found under /usr/lib/postgresql")
}

/// Effective user id of this process, from /proc.
fn euid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2)?.parse().ok()))
        .unwrap_or(0)
}

/// The (uid, gid) the server runs as: none when this process is not root;
/// as root the `postgres` system user, created if missing.
fn server_user(log: &Path) -> anyhow::Result<Option<(u32, u32)>> {
    if euid() != 0 {
        return Ok(None);
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).stderr(Stdio::null()).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        run_logged(
            Command::new("useradd").args(["--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres"]),
            "useradd",
            Duration::from_secs(60),
            log,
        )?;
    }
    match (id("-u"), id("-g")) {
        (Some(u), Some(g)) => Ok(Some((u, g))),
        _ => bail!("no postgres user to run PostgreSQL as"),
    }
}

/// Server settings that differ from initdb's defaults.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `shared_buffers`, set equal to basedata's block cache.
    pub shared_buffers_mb: usize,
    pub max_connections: usize,
    /// `maintenance_work_mem` (index builds), equal to `basedata load`'s sort memory.
    pub maintenance_work_mem_mb: usize,
    /// `work_mem` (hash joins and sorts of the batch comparison).
    pub work_mem_mb: usize,
}

impl Settings {
    /// `-c name=value` arguments of `postgres`, as (name, value).
    pub fn pairs(&self, port: u16, socket_dir: &Path) -> Vec<(String, String)> {
        [
            ("listen_addresses", "127.0.0.1".to_owned()),
            ("port", port.to_string()),
            ("unix_socket_directories", socket_dir.to_string_lossy().into_owned()),
            ("shared_buffers", format!("{}MB", self.shared_buffers_mb)),
            ("max_connections", self.max_connections.to_string()),
            ("maintenance_work_mem", format!("{}MB", self.maintenance_work_mem_mb)),
            ("work_mem", format!("{}MB", self.work_mem_mb)),
            ("temp_buffers", format!("{}MB", self.work_mem_mb)),
            // A table created and filled in one transaction is then written
            // without WAL and synced at commit, as `basedata load` writes
            // table files and syncs them.
            ("wal_level", "minimal".to_owned()),
            ("max_wal_senders", "0".to_owned()),
            ("max_wal_size", "4GB".to_owned()),
            ("fsync", "on".to_owned()),
            ("synchronous_commit", "on".to_owned()),
            // Vacuum is run explicitly after the load, not in the middle of a measurement.
            ("autovacuum", "off".to_owned()),
            ("logging_collector", "off".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// A running PostgreSQL cluster of the harness.
pub struct Pg {
    pub bin: PathBuf,
    pub data: PathBuf,
    pub port: u16,
    pub settings: Vec<(String, String)>,
    server: Proc,
    log: PathBuf,
}

fn chown(path: &Path, user: Option<(u32, u32)>) -> anyhow::Result<()> {
    if let Some((u, g)) = user {
        std::os::unix::fs::chown(path, Some(u), Some(g)).with_context(|| format!("cannot chown {}", path.display()))?;
    }
    Ok(())
}

impl Pg {
    /// initdb into `dir/pgdata` (C locale, UTF-8, trust authentication:
    /// it listens on loopback only) and starts the server on `port`, its
    /// socket in `dir/pgsock`; waits (up to two minutes) until it accepts
    /// connections. `dir` must be traversable by the server's user.
    pub fn start(bin: &Path, dir: &Path, port: u16, settings: &Settings, log: &Path) -> anyhow::Result<Pg> {
        let user = server_user(log)?;
        let data = dir.join("pgdata");
        let sock = dir.join("pgsock");
        for d in [&data, &sock] {
            std::fs::create_dir_all(d)?;
            chown(d, user)?;
        }
        let as_server = |cmd: &mut Command| {
            cmd.current_dir(&data).env_remove("PGDATA");
            if let Some((u, g)) = user {
                cmd.uid(u).gid(g);
            }
        };
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.arg("-D").arg(&data).args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]);
        as_server(&mut initdb);
        run_logged(&mut initdb, "initdb", Duration::from_secs(120), log)?;
        let pairs = settings.pairs(port, &sock);
        let mut postgres = Command::new(bin.join("postgres"));
        postgres.arg("-D").arg(&data);
        for (k, v) in &pairs {
            postgres.arg("-c").arg(format!("{k}={v}"));
        }
        as_server(&mut postgres);
        let logf = || std::fs::OpenOptions::new().create(true).append(true).open(log);
        postgres.stdin(Stdio::null()).stdout(logf()?).stderr(logf()?);
        // SIGINT is the fast shutdown: clients are disconnected, then a checkpoint.
        let server = Proc::new(postgres.spawn().context("cannot start postgres")?, "postgres").with_signal("INT");
        let mut pg = Pg { bin: bin.to_path_buf(), data, port, settings: pairs, server, log: log.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut ready = Command::new(pg.bin.join("pg_isready"));
            ready.args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()]).stdout(Stdio::null()).stderr(Stdio::null());
            if matches!(run_bounded(&mut ready, "pg_isready", Duration::from_secs(10)), Ok((st, _)) if st.success()) {
                return Ok(pg);
            }
            if let Ok(Some(st)) = pg.server.child.try_wait() {
                bail!("postgres exited with {st}:\n{}", crate::harness::tail(&pg.log, 20));
            }
            if Instant::now() > deadline {
                bail!("postgres did not accept connections within 120 s:\n{}", crate::harness::tail(&pg.log, 20));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Pid of the postmaster (its CPU with its reaped children is the server's).
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// Memory of the server's processes (sum of their PSS), in MB.
    pub fn pss_mb(&self) -> f64 {
        crate::harness::tree_pss_mb(self.pid())
    }

    /// Arguments that connect a client over loopback TCP as `postgres`.
    pub fn conn_args(&self) -> Vec<String> {
        ["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"].iter().map(|a| a.to_string()).collect()
    }

    /// Runs a psql script file (stop on the first error, no psqlrc);
    /// returns its output and wall seconds.
    pub fn psql_file(&self, script: &Path, timeout: Duration) -> anyhow::Result<(String, f64)> {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args(self.conn_args()).args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-f"]).arg(script);
        self.captured(&mut cmd, "psql", timeout)
    }

    /// One SQL command through psql; its unaligned, tuples-only output.
    pub fn sql(&self, sql: &str, timeout: Duration) -> anyhow::Result<String> {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args(self.conn_args()).args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-c", sql]);
        Ok(self.captured(&mut cmd, "psql", timeout)?.0)
    }

    /// Runs `cmd` bounded in time with its standard output kept in a file
    /// beside the server log; fails with that output and the server log's tail.
    fn captured(&self, cmd: &mut Command, name: &'static str, timeout: Duration) -> anyhow::Result<(String, f64)> {
        let out = self.log.with_extension(format!("{name}.out"));
        cmd.stdin(Stdio::null()).stdout(std::fs::File::create(&out)?).stderr(std::fs::File::create(out.with_extension("err"))?);
        let (st, secs) = run_bounded(cmd, name, timeout)?;
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if !st.success() {
            let err = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
            bail!("{name} failed ({st}): {}\n{}", err.trim(), crate::harness::tail(&self.log, 5));
        }
        Ok((text, secs))
    }

    /// Runs `pgbench` with `args` (its own connection arguments added) for
    /// at most `timeout`; returns its report.
    pub fn pgbench(&self, args: &[String], timeout: Duration) -> anyhow::Result<PgbenchResult> {
        let mut cmd = Command::new(self.bin.join("pgbench"));
        cmd.args(self.conn_args()).args(args);
        let (out, _) = self.captured(&mut cmd, "pgbench", timeout)?;
        PgbenchResult::parse(&out)
    }

    /// Fast shutdown (SIGINT), SIGKILL after 30 s.
    pub fn stop(self) {
        self.server.stop();
    }
}

/// The figures of a pgbench report.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PgbenchResult {
    pub tps: f64,
    pub latency_avg_ms: f64,
    pub transactions: u64,
    pub failed: u64,
}

impl PgbenchResult {
    /// Reads `tps = …`, `latency average = … ms`, `number of transactions
    /// actually processed: …` and `number of failed transactions: …`.
    pub fn parse(out: &str) -> anyhow::Result<PgbenchResult> {
        let mut r = PgbenchResult::default();
        let mut seen_tps = false;
        for line in out.lines().map(str::trim) {
            let num = |s: &str| s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok());
            if let Some(v) = line.strip_prefix("tps = ").and_then(num) {
                r.tps = v;
                seen_tps = true;
            } else if let Some(v) = line.strip_prefix("latency average = ").and_then(num) {
                r.latency_avg_ms = v;
            } else if let Some(v) = line.strip_prefix("number of transactions actually processed:").and_then(|s| num(s.split('/').next()?)) {
                r.transactions = v as u64;
            } else if let Some(v) = line.strip_prefix("number of failed transactions:").and_then(num) {
                r.failed = v as u64;
            }
        }
        if !seen_tps {
            bail!("no tps in the pgbench report:\n{out}");
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_report_is_read() {
        let out = "transaction type: point.sql\nscaling factor: 1\nquery mode: prepared\nnumber of clients: 64\n\
                   number of threads: 1\nmaximum number of tries: 1\nduration: 10 s\n\
                   number of transactions actually processed: 254321\nnumber of failed transactions: 0 (0.000%)\n\
                   latency average = 2.514 ms\ninitial connection time = 95.101 ms\n\
                   tps = 25451.123456 (without initial connection time)\n";
        let r = PgbenchResult::parse(out).unwrap();
        assert_eq!(r, PgbenchResult { tps: 25451.123456, latency_avg_ms: 2.514, transactions: 254321, failed: 0 });
        assert!(PgbenchResult::parse("pgbench: error: connection refused").is_err());
    }
}
