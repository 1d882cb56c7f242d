//! `vs_postgres`: basedata side by side with PostgreSQL on the same
//! machine, in one run, and the same at several sizes (the scale curve).
//!
//! For each size N (`--persons`, or every size of `--scale`) it generates
//! N persons' household registrations (the generator of `basedata gen`,
//! seed 1), then
//!
//! 1. PostgreSQL (from Debian's packages, installed if missing; a cluster
//!    of its own in the working directory, on a loopback port, run as the
//!    `postgres` user): `COPY` of the persons into a table keyed by ID
//!    number plus the primary-key build, timed; disk after `CHECKPOINT`;
//!    point verification with `pgbench -M prepared`; batch comparison
//!    (`\copy` in, join, `\copy` out) of the batch file; then the same two
//!    doing the same job as basedata, with an audit row (indexed by subject
//!    and department) committed per verification and per batch line,
//!    `synchronous_commit` on; then it is stopped;
//! 2. basedata: `basedata load` of the same records, timed; disk; `basedata
//!    serve` with the same cache size; `POST /v1/persons/{id}/verify`
//!    through `loadgen` at the same concurrency; `POST /v1/verify/batch` of
//!    the same batch (NDJSON streamed in, the whole answer read); resident
//!    memory; then it is stopped.
//!
//! It prints a markdown report (machine, settings, commands, figures with
//! their ratios and targets, the scale table and the flatness ratio),
//! writes it to `--report FILE`, and draws the scale curve with gnuplot
//! (installed from Debian's `gnuplot-nox` if missing) into `--plot FILE`.
//! Every step has a time limit and every process it starts is stopped,
//! also when a step fails.

use anyhow::{bail, Context};
use basedata_benches::harness::{
    self, cpu_of, free_bytes, http, machine, measure, post_file, rss_mb, start_basedata, status_mb, thousands, tree_cpu,
    verify_args, write_config, Loadgen, Sample, WorkDir, COUNTER_TOKEN, VERIFY_BODY,
};
use basedata_benches::pg::{self, Pg, PgbenchResult, Settings};
use basedata_store::catalog::FieldType;
use basedata_store::Catalog;
use basedata_gen::{self as gen, GenConfig};
use clap::Parser;
use serde_json::Value;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const TAG: &str = "vs_postgres";
/// Sizes above this are never run under CI.
const CI_MAX_PERSONS: u64 = 10_000_000;
/// Disk use per person assumed before a first size has been measured.
const FIRST_BYTES_PER_PERSON: f64 = 2500.0;

#[derive(Parser, Debug)]
#[command(
    name = "vs_postgres",
    about = "basedata side by side with PostgreSQL (loopback only): load, point verification, batch comparison, disk; \
             optionally at several sizes; prints a markdown report and draws the scale curve"
)]
struct Args {
    /// Persons generated and loaded (without --scale).
    #[arg(long, default_value = "1000000", value_parser = parse_count)]
    persons: u64,
    /// Scale mode: comma-separated sizes, e.g. 1000000,10000000,50000000 (a size the disk cannot hold is skipped).
    #[arg(long, value_delimiter = ',', value_parser = parse_count)]
    scale: Vec<u64>,
    /// Concurrent clients of the point verification (pgbench -c, loadgen -c).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Client threads (pgbench -j, loadgen --threads).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Measured seconds of each point-verification run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Warm-up seconds before each point-verification run.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Lines of the batch comparison (at most the number of persons).
    #[arg(long, default_value = "1000000", value_parser = parse_count)]
    batch_lines: u64,
    /// basedata's block cache (block_cache_mb) and PostgreSQL's shared_buffers, in MiB.
    #[arg(long, default_value_t = 512)]
    cache_mb: usize,
    /// Sort memory of the load: `basedata load --memory-mb` and PostgreSQL's maintenance_work_mem, in MiB.
    #[arg(long, default_value_t = 1024)]
    sort_memory_mb: usize,
    /// PostgreSQL's work_mem and temp_buffers (the batch join), in MiB.
    #[arg(long, default_value_t = 256)]
    work_mem_mb: usize,
    /// Longest wait, in seconds, for the machine to become idle before each measured step.
    #[arg(long, default_value_t = 120)]
    quiet_wait: u64,
    /// Working directory (default: a new directory under /var/tmp, removed at the end).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Keep the working directory: generated files, both stores, logs, batch answers.
    #[arg(long)]
    keep: bool,
    /// Also write the markdown report to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// The PNG of the scale curve (default: the report's path with .png, else ./vs_postgres-scale.png).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// The `basedata` binary (default: beside this one).
    #[arg(long)]
    basedata: Option<PathBuf>,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Serve without claim fingerprints (`verify_prints = false`):
    /// verifications read the records, for comparing the two paths.
    #[arg(long)]
    no_prints: bool,
}

/// A count, with `_` or `,` allowed between digits and an optional `k`/`M` suffix.
fn parse_count(s: &str) -> Result<u64, String> {
    let t: String = s.trim().chars().filter(|c| *c != '_').collect();
    let (digits, mul) = match t.strip_suffix(['M', 'm']) {
        Some(d) => (d, 1_000_000),
        None => match t.strip_suffix(['k', 'K']) {
            Some(d) => (d, 1_000),
            None => (t.as_str(), 1),
        },
    };
    match digits.parse::<u64>() {
        Ok(n) if n > 0 => n.checked_mul(mul).ok_or_else(|| format!("{s} is too large")),
        _ => Err(format!("{s:?} is not a positive count")),
    }
}

/// Time limit of a step over `n` records.
fn step_timeout(n: u64) -> Duration {
    Duration::from_secs(300 + n / 20_000)
}

/// One system's figures at one size.
#[derive(Clone, Debug, Default)]
struct Side {
    load: Sample,
    disk_bytes: u64,
    /// Point verifications per second and their mean latency.
    verify_rps: f64,
    verify_mean_ms: f64,
    verify_p99_ms: Option<f64>,
    verify_server_cpu_us: f64,
    verify_other: f64,
    verify_failed: u64,
    batch: Sample,
    batch_counts: Counts,
}

/// Verdicts of a batch comparison.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    lines: u64,
    matched: u64,
    mismatched: u64,
    not_found: u64,
    other: u64,
}

/// Everything measured at one size.
#[derive(Clone, Debug, Default)]
struct Point {
    persons: u64,
    batch_lines: u64,
    gen_s: f64,
    pg: Side,
    /// PostgreSQL doing the same job: an audit row per verification (in
    /// the same committed transaction) and per batch line.
    pga: Side,
    bd: Side,
    pg_vacuum_s: f64,
    pg_rn_index_s: f64,
    pg_table_bytes: u64,
    pg_index_bytes: u64,
    pg_total_relation_bytes: u64,
    pg_pss_mb: f64,
    bd_rss_mb: f64,
    bd_peak_rss_mb: f64,
    /// Most disk this size used at once (for the estimate of the next size).
    peak_disk_bytes: u64,
}

/// A size left out, and why.
struct Skipped {
    persons: u64,
    reason: String,
}

/// What stays the same across sizes.
struct Ctx {
    args: Args,
    basedata: PathBuf,
    pg_bin: PathBuf,
    loadgen: Loadgen,
    work: PathBuf,
    quiet: Duration,
    catalog: Catalog,
    /// Commands of the first size, for the report.
    commands: Vec<(String, String)>,
}

impl Ctx {
    fn note_command(&mut self, what: &str, text: String) {
        if !self.commands.iter().any(|(w, _)| w == what) {
            let text = text.replace(&self.work.to_string_lossy().into_owned(), "$WORK");
            self.commands.push((what.to_owned(), text));
        }
    }
}

/// A `COPY` text-format field.
fn copy_field(out: &mut Vec<u8>, v: Option<&Value>) {
    let text = match v {
        None | Some(Value::Null) => {
            out.extend_from_slice(b"\\N");
            return;
        }
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    for b in text.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

fn sql_type(t: FieldType) -> &'static str {
    match t {
        FieldType::Date => "date",
        FieldType::Datetime => "timestamptz",
        FieldType::Integer => "bigint",
        FieldType::Decimal => "numeric",
        FieldType::Bool => "boolean",
        // Strings, codes, keys and (base64) bytes are stored as received.
        _ => "text",
    }
}

/// A single-quoted SQL/psql literal of a path; refuses quotes and newlines.
fn quoted(p: &Path) -> anyhow::Result<String> {
    let s = p.to_string_lossy();
    if s.contains(['\'', '\n', '\\']) {
        bail!("the working directory's path must not hold quotes, backslashes or newlines: {s}");
    }
    Ok(format!("'{s}'"))
}

/// The claims of one sampled person: key, name, birth date.
type Claim = (String, String, String);

/// Generates the hukou lines of `n` persons, handing each to `sink` with its
/// 0-based index; returns the seconds it took.
fn generate(ctx: &Ctx, n: u64, sink: &mut dyn FnMut(u64, &[u8]) -> std::io::Result<()>) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut i = 0u64;
    gen::generate(&GenConfig { persons: n, entities: 0, seed: ctx.args.seed }, &ctx.catalog, &mut |ds, line| {
        if ds != "hukou" {
            return Ok(());
        }
        sink(i, line)?;
        i += 1;
        Ok(())
    })
    .context("generating persons")?;
    if i != n {
        bail!("the generator gave {i} household registrations for {n} persons");
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Pass 1 of the data: `persons.tsv` (PostgreSQL's COPY input, row number
/// first) and a uniform sample of `s` persons' claims (selection sampling:
/// exactly `s`, in index order).
fn write_pg_input(ctx: &Ctx, dir: &Path, n: u64, s: u64) -> anyhow::Result<(Vec<Claim>, f64)> {
    let hukou = ctx.catalog.dataset("hukou").context("no hukou dataset in the catalog")?;
    let names: Vec<String> = hukou.fields.iter().map(|f| f.name.clone()).collect();
    let mut tsv = BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join("persons.tsv"))?);
    let mut rng = fastrand::Rng::with_seed(ctx.args.seed ^ n);
    let mut sample: Vec<Claim> = Vec::with_capacity(s as usize);
    let mut row = Vec::with_capacity(1024);
    let secs = generate(ctx, n, &mut |i, line| {
        let v: Value = serde_json::from_slice(line).map_err(std::io::Error::other)?;
        let key = v["key"].as_str().unwrap_or("");
        let fields = &v["fields"];
        row.clear();
        row.extend_from_slice(format!("{}\t{key}\t", i + 1).as_bytes());
        copy_field(&mut row, v.get("version"));
        for name in &names {
            row.push(b'\t');
            copy_field(&mut row, fields.get(name));
        }
        row.push(b'\n');
        tsv.write_all(&row)?;
        let wanted = s - sample.len() as u64;
        if wanted > 0 && rng.u64(0..n - i) < wanted {
            let text = |k: &str| fields[k].as_str().unwrap_or("").to_owned();
            sample.push((key.to_owned(), text("name"), text("birth_date")));
        }
        Ok(())
    })?;
    tsv.flush()?;
    Ok((sample, secs))
}

/// Pass 2 of the data: `hukou.ndjson`, the input of `basedata load`.
fn write_basedata_input(ctx: &Ctx, dir: &Path, n: u64) -> anyhow::Result<f64> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join("hukou.ndjson"))?);
    let secs = generate(ctx, n, &mut |_, line| {
        out.write_all(line)?;
        out.write_all(b"\n")
    })?;
    out.flush()?;
    Ok(secs)
}

/// The sampled claims in a random order as `rows.tsv` (loadgen's rows:
/// all true), and as the batch (one line in ten with a wrong name) in both
/// forms: `batch.ndjson` for basedata, `batch.tsv` for PostgreSQL.
fn write_claims(ctx: &Ctx, dir: &Path, mut sample: Vec<Claim>) -> anyhow::Result<()> {
    fastrand::Rng::with_seed(ctx.args.seed.wrapping_add(7)).shuffle(&mut sample);
    let file = |name: &str| -> anyhow::Result<BufWriter<std::fs::File>> {
        Ok(BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join(name))?))
    };
    let (mut rows, mut nd, mut tsv) = (file("rows.tsv")?, file("batch.ndjson")?, file("batch.tsv")?);
    let mut field = Vec::new();
    for (i, (key, name, birth)) in sample.iter().enumerate() {
        writeln!(rows, "{key}\t{name}\t{birth}")?;
        let claimed = if i % 10 == 9 { format!("{name}甲") } else { name.clone() };
        let line = serde_json::json!({
            "ref": format!("r{i}"), "subject": "person", "key": key,
            "fields": {"name": claimed, "birth_date": birth},
        });
        writeln!(nd, "{line}")?;
        field.clear();
        copy_field(&mut field, Some(&Value::String(claimed)));
        tsv.write_all(format!("{i}\tr{i}\t{key}\t").as_bytes())?;
        tsv.write_all(&field)?;
        writeln!(tsv, "\t{birth}")?;
    }
    for mut w in [rows, nd, tsv] {
        w.flush()?;
    }
    Ok(())
}

fn count_pg(out: &Path) -> anyhow::Result<Counts> {
    let text = std::fs::read_to_string(out).with_context(|| format!("cannot read {}", out.display()))?;
    let mut c = Counts::default();
    for line in text.lines() {
        c.lines += 1;
        match line.split('\t').nth(2) {
            Some("match") => c.matched += 1,
            Some("mismatch") => c.mismatched += 1,
            Some("not_found") => c.not_found += 1,
            _ => c.other += 1,
        }
    }
    Ok(c)
}

fn count_basedata(out: &Path) -> anyhow::Result<Counts> {
    let text = std::fs::read_to_string(out).with_context(|| format!("cannot read {}", out.display()))?;
    let mut c = Counts::default();
    for line in text.lines() {
        c.lines += 1;
        if line.contains("\"result\":\"match\"") {
            c.matched += 1;
        } else if line.contains("\"result\":\"mismatch\"") {
            c.mismatched += 1;
        } else if line.contains("\"result\":\"not_found\"") {
            c.not_found += 1;
        } else {
            c.other += 1;
        }
    }
    Ok(c)
}

fn remove(path: &Path, keep: bool) {
    if !keep {
        let _ = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    }
}

/// The PostgreSQL side of one size.
/// A measured `pgbench` run (`args` for a number of seconds) after its
/// warm-up, recorded in `side`.
fn pgbench_into(pg: &Pg, ctx: &Ctx, args: &dyn Fn(u64) -> Vec<String>, side: &mut Side) -> anyhow::Result<()> {
    let limit = Duration::from_secs(ctx.args.duration + ctx.args.warmup + 120);
    if ctx.args.warmup > 0 {
        pg.pgbench(&args(ctx.args.warmup), limit)?;
    }
    let pid = pg.pid();
    let (r, s): (PgbenchResult, Sample) = measure(ctx.quiet, TAG, &|| tree_cpu(pid), || {
        let r = pg.pgbench(&args(ctx.args.duration), limit)?;
        // Backends exit after pgbench; their CPU counts once the postmaster has reaped them.
        std::thread::sleep(Duration::from_millis(500));
        Ok(r)
    })?;
    eprintln!("[{TAG}]   {r:?}");
    side.verify_rps = r.tps;
    side.verify_mean_ms = r.latency_avg_ms;
    side.verify_server_cpu_us = s.server_cpu_s * 1e6 / (r.transactions.max(1) as f64);
    side.verify_other = s.other_cores;
    side.verify_failed = r.failed;
    Ok(())
}

fn run_pg(ctx: &mut Ctx, dir: &Path, p: &mut Point, track: &mut dyn FnMut()) -> anyhow::Result<()> {
    let n = p.persons;
    let limit = step_timeout(n);
    let settings = Settings {
        shared_buffers_mb: ctx.args.cache_mb,
        max_connections: ctx.args.connections + 10,
        maintenance_work_mem_mb: ctx.args.sort_memory_mb,
        work_mem_mb: ctx.args.work_mem_mb,
    };
    let port = harness::free_port()?;
    let pg = Pg::start(&ctx.pg_bin, dir, port, &settings, &dir.join("pg.log"))?;
    ctx.note_command(
        "PostgreSQL server",
        format!(
            "initdb -D $DIR/pgdata -U postgres --auth=trust -E UTF8 --locale=C\npostgres -D $DIR/pgdata {}",
            pg.settings.iter().map(|(k, v)| format!("-c {k}={v}")).collect::<Vec<_>>().join(" ")
        ),
    );
    let pid = pg.pid();
    let hukou = ctx.catalog.dataset("hukou").context("no hukou dataset")?;
    let columns: Vec<String> = hukou.fields.iter().map(|f| format!("{} {}", f.name, sql_type(f.ty))).collect();

    // Load: COPY and the primary key, in one transaction (written without WAL).
    let load_sql = format!(
        "BEGIN;\nCREATE TABLE persons (rn integer NOT NULL, id text NOT NULL, version bigint NOT NULL, {});\n\
         COPY persons FROM {};\nALTER TABLE persons ADD PRIMARY KEY (id);\nCOMMIT;\n",
        columns.join(", "),
        quoted(&dir.join("persons.tsv"))?
    );
    let script = dir.join("pg-load.sql");
    std::fs::write(&script, &load_sql)?;
    ctx.note_command("PostgreSQL load (timed)", format!("psql -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -f pg-load.sql\n-- pg-load.sql:\n{load_sql}"));
    eprintln!("[{TAG}] {n} persons: PostgreSQL COPY + primary key");
    let (_, load) = measure(ctx.quiet, TAG, &|| tree_cpu(pid), || pg.psql_file(&script, limit))?;
    p.pg.load = load;
    track();
    remove(&dir.join("persons.tsv"), ctx.args.keep);
    let t = Instant::now();
    pg.sql("VACUUM (ANALYZE) persons", limit)?;
    p.pg_vacuum_s = t.elapsed().as_secs_f64();
    pg.sql("CHECKPOINT", limit)?;
    let sizes = pg.sql("SELECT pg_relation_size('persons'), pg_indexes_size('persons'), pg_total_relation_size('persons')", limit)?;
    let sizes: Vec<u64> = sizes.trim().split('|').filter_map(|v| v.parse().ok()).collect();
    if let [table, index, total] = sizes[..] {
        (p.pg_table_bytes, p.pg_index_bytes, p.pg_total_relation_bytes) = (table, index, total);
    }
    p.pg.disk_bytes = harness::dir_bytes(&pg.data);
    let rows: u64 = pg.sql("SELECT count(*) FROM persons", limit)?.trim().parse().unwrap_or(0);
    if rows != n {
        bail!("PostgreSQL holds {rows} persons, not {n}");
    }

    // Point verification: the row-number index pgbench selects by.
    let t = Instant::now();
    pg.sql("CREATE UNIQUE INDEX persons_rn ON persons (rn)", limit)?;
    pg.sql("ANALYZE persons", limit)?;
    p.pg_rn_index_s = t.elapsed().as_secs_f64();
    let verdict = |col: &str| format!("CASE WHEN {col} IS NULL THEN 'no_value' WHEN {col} = {col} THEN 'match' ELSE 'mismatch' END AS {col}");
    let point_query = format!("SELECT id, {}, {} FROM persons WHERE rn = :r;", verdict("name"), verdict("birth_date"));
    let point_sql = format!("\\set r random(1, :rows)\n{point_query}\n");
    let probe = pg.sql(&point_query.replace(":r", "1"), limit)?;
    if !probe.contains("|match|match") {
        bail!("the PostgreSQL verification probe did not match: {probe}");
    }
    let point_script = dir.join("pg-point.sql");
    std::fs::write(&point_script, &point_sql)?;
    let (conns, threads) = (ctx.args.connections.to_string(), ctx.args.client_threads.to_string());
    let script_arg = point_script.to_string_lossy().into_owned();
    let bench_args = |secs: u64| -> Vec<String> {
        let rows = format!("rows={n}");
        let secs = secs.to_string();
        ["-n", "-M", "prepared", "-f", &script_arg, "-D", &rows, "-c", &conns, "-j", &threads, "-T", &secs, "postgres"]
            .iter()
            .map(|x| x.to_string())
            .collect()
    };
    let pgbench_line = |args: Vec<String>, file: &str, sql: &str| {
        let args: Vec<String> = args.iter().map(|a| harness::shell_quote(a)).collect();
        format!("pgbench -h 127.0.0.1 -U postgres {}\n-- {file}:\n{sql}", args.join(" "))
    };
    ctx.note_command("PostgreSQL point verification (pgbench)", pgbench_line(bench_args(ctx.args.duration), "pg-point.sql", &point_sql));
    eprintln!("[{TAG}] {n} persons: pgbench");
    pgbench_into(&pg, ctx, &bench_args, &mut p.pg)?;

    // The same job: every verification leaves an audit row (who, why,
    // whom, what came out), indexed by subject and by department as
    // basedata's audit is, committed with `synchronous_commit` on before
    // the answer.
    pg.sql(
        "CREATE TABLE audit (seq bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), department text NOT NULL, \
         purpose text NOT NULL, subject_key text NOT NULL, outcome text NOT NULL); \
         CREATE INDEX audit_subject ON audit (subject_key, seq); CREATE INDEX audit_department ON audit (department, seq);",
        limit,
    )?;
    let audited_sql = format!(
        "\\set r random(1, :rows)\nWITH v AS ({}), a AS (INSERT INTO audit (department, purpose, subject_key, outcome) \
         SELECT 'bench-counter', 'benchmark', id, name || ' ' || birth_date FROM v) SELECT * FROM v;\n",
        point_query.trim_end_matches(';')
    );
    let audited_script = dir.join("pg-point-audited.sql");
    std::fs::write(&audited_script, &audited_sql)?;
    let audited_arg = audited_script.to_string_lossy().into_owned();
    let audited_args = |secs: u64| -> Vec<String> {
        bench_args(secs).into_iter().map(|a| if a == script_arg { audited_arg.clone() } else { a }).collect()
    };
    ctx.note_command(
        "PostgreSQL point verification with an audit row (pgbench)",
        pgbench_line(audited_args(ctx.args.duration), "pg-point-audited.sql", &audited_sql),
    );
    eprintln!("[{TAG}] {n} persons: pgbench with audit rows");
    pgbench_into(&pg, ctx, &audited_args, &mut p.pga)?;

    // Batch comparison: \copy in, join, \copy out.
    let field_verdict = |col: &str| {
        format!("CASE WHEN p.id IS NULL THEN '' WHEN p.{col} IS NULL THEN 'no_value' WHEN p.{col} = c.{col} THEN 'match' ELSE 'mismatch' END")
    };
    let out = dir.join("pg-batch-out.tsv");
    let batch_sql = format!(
        "CREATE TEMP TABLE claims (line bigint, ref text, id text, name text, birth_date date);\n\
         \\copy claims FROM {}\nANALYZE claims;\n\
         \\copy (SELECT c.ref, c.id, CASE WHEN p.id IS NULL THEN 'not_found' WHEN p.name = c.name AND p.birth_date = c.birth_date \
         THEN 'match' ELSE 'mismatch' END, {}, {} FROM claims c LEFT JOIN persons p ON p.id = c.id ORDER BY c.line) TO {}\n",
        quoted(&dir.join("batch.tsv"))?,
        field_verdict("name"),
        field_verdict("birth_date"),
        quoted(&out)?
    );
    let batch_script = dir.join("pg-batch.sql");
    std::fs::write(&batch_script, &batch_sql)?;
    ctx.note_command("PostgreSQL batch comparison (timed)", format!("psql -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -f pg-batch.sql\n-- pg-batch.sql:\n{batch_sql}"));
    eprintln!("[{TAG}] {n} persons: PostgreSQL batch of {} lines", p.batch_lines);
    let (_, batch) = measure(ctx.quiet, TAG, &|| tree_cpu(pid), || pg.psql_file(&batch_script, limit))?;
    p.pg.batch = batch;
    p.pg.batch_counts = count_pg(&out)?;
    remove(&out, ctx.args.keep);

    // The same job: an audit row per line, in the transaction that answers.
    let verdict_of = |c: &str| {
        format!("CASE WHEN p.id IS NULL THEN 'not_found' WHEN p.name = {c}.name AND p.birth_date = {c}.birth_date THEN 'match' ELSE 'mismatch' END")
    };
    let audited_batch_sql = batch_sql.replacen(
        "ANALYZE claims;\n",
        &format!(
            "ANALYZE claims;\nBEGIN;\nINSERT INTO audit (department, purpose, subject_key, outcome) \
             SELECT 'bench-counter', 'benchmark', c.id, {} FROM claims c LEFT JOIN persons p ON p.id = c.id ORDER BY c.line;\n",
            verdict_of("c")
        ),
        1,
    ) + "COMMIT;\n";
    let audited_batch = dir.join("pg-batch-audited.sql");
    std::fs::write(&audited_batch, &audited_batch_sql)?;
    ctx.note_command(
        "PostgreSQL batch comparison with an audit row per line (timed)",
        format!("psql -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -f pg-batch-audited.sql\n-- pg-batch-audited.sql:\n{audited_batch_sql}"),
    );
    eprintln!("[{TAG}] {n} persons: PostgreSQL batch of {} lines with audit rows", p.batch_lines);
    let (_, batch) = measure(ctx.quiet, TAG, &|| tree_cpu(pid), || pg.psql_file(&audited_batch, limit))?;
    p.pga.batch = batch;
    p.pga.batch_counts = count_pg(&out)?;
    remove(&out, ctx.args.keep);
    p.pg_pss_mb = pg.pss_mb();
    track();
    let data = pg.data.clone();
    pg.stop();
    remove(&data, ctx.args.keep);
    Ok(())
}

/// The basedata side of one size.
fn run_basedata(ctx: &mut Ctx, dir: &Path, p: &mut Point, track: &mut dyn FnMut()) -> anyhow::Result<()> {
    let n = p.persons;
    let limit = step_timeout(n);
    let config = dir.join("basedata.toml");
    write_config(&config, Some(ctx.args.cache_mb))?;
    if ctx.args.no_prints {
        let c = std::fs::read_to_string(&config)?;
        std::fs::write(&config, format!("verify_prints = false\n{c}"))?;
    }
    let data = dir.join("bd-data");
    let input = dir.join("hukou.ndjson");
    let load_args: Vec<String> = vec![
        "load".into(), "--data".into(), data.to_string_lossy().into_owned(),
        "--dataset".into(), "hukou".into(),
        "--input".into(), input.to_string_lossy().into_owned(),
        "--config".into(), config.to_string_lossy().into_owned(),
        "--memory-mb".into(), ctx.args.sort_memory_mb.to_string(),
    ];
    ctx.note_command("basedata load (timed)", harness::command_line("basedata", &load_args));
    eprintln!("[{TAG}] {n} persons: basedata load");
    let log = dir.join("bd-load.log");
    let (_, load) = measure(ctx.quiet, TAG, &|| 0.0, || harness::run_logged(Command::new(&ctx.basedata).args(&load_args), "basedata load", limit, &log))?;
    p.bd.load = load;
    let summary = std::fs::read_to_string(&log).unwrap_or_default();
    let loaded = summary
        .lines()
        .find_map(|l| l.strip_prefix("hukou: "))
        .and_then(|l| l.split(", ").find_map(|part| part.strip_suffix(" loaded")?.parse::<u64>().ok()));
    if loaded != Some(n) {
        bail!("basedata load did not load {n} records: {}", harness::tail(&log, 5));
    }
    track();
    remove(&input, ctx.args.keep);
    p.bd.disk_bytes = harness::dir_bytes(&data);

    let addr = format!("127.0.0.1:{}", harness::free_port()?);
    let server = start_basedata(&ctx.basedata, &data, &config, &addr, &dir.join("bd-server.log"))?;
    let pid = server.pid();
    let rows = dir.join("rows.tsv");
    let first: Vec<String> = std::fs::read_to_string(&rows)?.lines().next().unwrap_or("").split('\t').map(str::to_owned).collect();
    if first.len() < 3 {
        bail!("no claims in {}", rows.display());
    }
    let auth = format!("Bearer {COUNTER_TOKEN}");
    let headers = [("Authorization", auth.as_str()), ("X-Purpose", "benchmark"), ("Content-Type", "application/json")];
    let probe = VERIFY_BODY.replace("{1}", &first[1]).replace("{2}", &first[2]);
    let (st, body) = http(&addr, "POST", &format!("/v1/persons/{}/verify", first[0]), &headers, &probe)?;
    if st != 200 || !body.contains("\"result\":\"match\"") {
        bail!("the basedata verification probe did not match: {st} {body}");
    }
    let base = format!("http://{addr}");
    let args = verify_args(&base, &rows, ctx.args.connections, ctx.args.warmup as f64, ctx.args.duration as f64);
    eprintln!("[{TAG}] {n} persons: basedata verify");
    let label = "verify, POST /v1/persons/{id}/verify";
    let ((v, command), s) = measure(ctx.quiet, TAG, &|| cpu_of(pid), || ctx.loadgen.run(label, &args))?;
    ctx.note_command("basedata point verification (loadgen; rows.tsv: key, name, birth date)", command);
    let f = |path: &[&str]| harness::f(&v, path);
    p.bd.verify_rps = f(&["rps"]);
    p.bd.verify_mean_ms = f(&["latency_us", "mean"]) / 1000.0;
    p.bd.verify_p99_ms = Some(f(&["latency_us", "p99"]) / 1000.0);
    // The server's CPU covers the warm-up too.
    let served = f(&["rps"]) * (ctx.args.duration + ctx.args.warmup) as f64;
    p.bd.verify_server_cpu_us = s.server_cpu_s * 1e6 / served.max(1.0);
    p.bd.verify_other = s.other_cores;
    p.bd.verify_failed = (f(&["non_2xx"]) + f(&["io_errors"])) as u64;

    let out = dir.join("bd-batch-out.ndjson");
    let batch_headers = [("Authorization", auth.as_str()), ("X-Purpose", "benchmark"), ("Content-Type", "application/x-ndjson")];
    ctx.note_command(
        "basedata batch comparison (timed; the harness streams the file and reads the whole answer, as this does)",
        format!("curl -sS -X POST -T batch.ndjson -H 'Authorization: {auth}' -H 'X-Purpose: benchmark' -H 'Content-Type: application/x-ndjson' {base}/v1/verify/batch -o bd-batch-out.ndjson"),
    );
    eprintln!("[{TAG}] {n} persons: basedata batch of {} lines", p.batch_lines);
    let (answer, batch) = measure(ctx.quiet, TAG, &|| cpu_of(pid), || post_file(&addr, "/v1/verify/batch", &batch_headers, &dir.join("batch.ndjson"), &out, limit))?;
    if answer.status != 200 || answer.lines != p.batch_lines {
        bail!("the batch comparison answered {} with {} lines for {}: {}", answer.status, answer.lines, p.batch_lines, harness::tail(&out, 3));
    }
    p.bd.batch = batch;
    p.bd.batch_counts = count_basedata(&out)?;
    remove(&out, ctx.args.keep);
    p.bd_rss_mb = rss_mb(pid);
    p.bd_peak_rss_mb = status_mb(pid, "VmHWM:");
    track();
    server.stop();
    remove(&data, ctx.args.keep);
    remove(&dir.join("bd-data.key"), ctx.args.keep);
    Ok(())
}

fn run_point(ctx: &mut Ctx, n: u64) -> anyhow::Result<Point> {
    let dir = ctx.work.join(format!("n{n}"));
    std::fs::create_dir_all(&dir)?;
    let free0 = free_bytes(&dir);
    let min_free = std::cell::Cell::new(free0);
    let mut track = || min_free.set(min_free.get().min(free_bytes(&dir)));
    let mut p = Point { persons: n, batch_lines: ctx.args.batch_lines.min(n), ..Point::default() };
    eprintln!("[{TAG}] {n} persons: generating");
    let (sample, secs) = write_pg_input(ctx, &dir, n, p.batch_lines)?;
    write_claims(ctx, &dir, sample)?;
    p.gen_s = secs;
    track();
    run_pg(ctx, &dir, &mut p, &mut track)?;
    p.gen_s += write_basedata_input(ctx, &dir, n)?;
    track();
    run_basedata(ctx, &dir, &mut p, &mut track)?;
    p.peak_disk_bytes = free0.saturating_sub(min_free.get());
    if !ctx.args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(p)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

fn mb(bytes: u64) -> String {
    thousands(bytes as f64 / 1e6)
}

/// A table row whose ratio has a target: each side's figure with a detail.
fn target_row(r: &mut String, what: &str, bd: (f64, String), pg: (f64, String), ratio: f64, target: f64) {
    r.push_str(&format!(
        "| {what} | {} ({}) | {} ({}) | **{ratio:.2}** | ≥ {target} | {} |\n",
        thousands(bd.0),
        bd.1,
        thousands(pg.0),
        pg.1,
        verdict(ratio >= target)
    ));
}

/// The side-by-side table of one size.
fn point_table(p: &Point, connections: usize) -> String {
    let n = p.persons as f64;
    let b = p.batch_lines as f64;
    let (bd, pg) = (&p.bd, &p.pg);
    let load_ratio = ratio(pg.load.wall_s, bd.load.wall_s);
    let pga = &p.pga;
    let verify_ratio = ratio(bd.verify_rps, pg.verify_rps);
    let batch_ratio = ratio(pg.batch.wall_s, bd.batch.wall_s);
    let mut r = format!("#### {} persons\n\n", thousands(n));
    r.push_str("| measurement | basedata | PostgreSQL | basedata / PostgreSQL | target | |\n|---|---:|---:|---:|---|---|\n");
    let secs = |v: f64| format!("{v:.1} s");
    target_row(&mut r, "initial load, records/s (wall s)", (ratio(n, bd.load.wall_s), secs(bd.load.wall_s)), (ratio(n, pg.load.wall_s), secs(pg.load.wall_s)), load_ratio, 2.0);
    target_row(
        &mut r,
        &format!("point verification, req/s ({connections} clients; mean latency)"),
        (bd.verify_rps, format!("{:.2} ms", bd.verify_mean_ms)),
        (pg.verify_rps, format!("{:.2} ms", pg.verify_mean_ms)),
        verify_ratio,
        1.0,
    );
    target_row(
        &mut r,
        "point verification against PostgreSQL with an audit row per use, req/s (mean latency)",
        (bd.verify_rps, format!("{:.2} ms", bd.verify_mean_ms)),
        (pga.verify_rps, format!("{:.2} ms", pga.verify_mean_ms)),
        ratio(bd.verify_rps, pga.verify_rps),
        3.0,
    );
    target_row(
        &mut r,
        &format!("batch comparison of {} lines end to end, lines/s (wall s)", thousands(b)),
        (ratio(b, bd.batch.wall_s), secs(bd.batch.wall_s)),
        (ratio(b, pg.batch.wall_s), secs(pg.batch.wall_s)),
        batch_ratio,
        1.0,
    );
    target_row(
        &mut r,
        "batch comparison against PostgreSQL with an audit row per line, lines/s (wall s)",
        (ratio(b, bd.batch.wall_s), secs(bd.batch.wall_s)),
        (ratio(b, pga.batch.wall_s), secs(pga.batch.wall_s)),
        ratio(pga.batch.wall_s, bd.batch.wall_s),
        3.0,
    );
    r.push_str(&format!(
        "| disk after load, bytes/record (MB) | {:.0} ({}) | {:.0} ({}) | {:.2} | (lower is smaller) | |\n",
        ratio(bd.disk_bytes as f64, n),
        mb(bd.disk_bytes),
        ratio(pg.disk_bytes as f64, n),
        mb(pg.disk_bytes),
        ratio(bd.disk_bytes as f64, pg.disk_bytes as f64)
    ));
    r.push_str(&format!(
        "| server CPU per point verification, µs | {:.0} | {:.0} | {:.2} | | |\n",
        bd.verify_server_cpu_us,
        pg.verify_server_cpu_us,
        ratio(bd.verify_server_cpu_us, pg.verify_server_cpu_us)
    ));
    r.push_str(&format!(
        "| CPU of the load (server + client), s | {:.1} | {:.1} | | | |\n",
        bd.load.server_cpu_s + bd.load.client_cpu_s,
        pg.load.server_cpu_s + pg.load.client_cpu_s
    ));
    r.push_str(&format!(
        "| CPU of the batch (server + client), s | {:.1} | {:.1} | | | |\n",
        bd.batch.server_cpu_s + bd.batch.client_cpu_s,
        pg.batch.server_cpu_s + pg.batch.client_cpu_s
    ));
    r.push_str(&format!(
        "| other load during load / verification / batch, cores | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} | | | |\n\n",
        bd.load.other_cores, bd.verify_other, bd.batch.other_cores, pg.load.other_cores, pg.verify_other, pg.batch.other_cores
    ));
    let c = |c: &Counts| format!("{} match, {} mismatch, {} not found, {} other", c.matched, c.mismatched, c.not_found, c.other);
    r.push_str(&format!(
        "- Batch verdicts: basedata {}; PostgreSQL {}{}.\n",
        c(&bd.batch_counts),
        c(&pg.batch_counts),
        if bd.batch_counts == pg.batch_counts && pg.batch_counts == pga.batch_counts { " (the same, also with audit rows)" } else { " — **they differ**" }
    ));
    r.push_str(&format!(
        "- Point verification: basedata p99 {} ms, {} failed requests; PostgreSQL {} failed transactions ({} with audit rows; \
         server CPU {:.0} µs per audited verification).\n",
        bd.verify_p99_ms.map(|v| format!("{v:.2}")).unwrap_or_default(),
        bd.verify_failed,
        pg.verify_failed,
        pga.verify_failed,
        pga.verify_server_cpu_us
    ));
    r.push_str(&format!(
        "- PostgreSQL after the load: `pg_total_relation_size` {} MB (table {} MB, primary key {} MB); data directory {} MB \
         (WAL and catalogs included); `VACUUM (ANALYZE)` {:.1} s and the row-number index {:.1} s, not in the load figure.\n",
        mb(p.pg_total_relation_bytes),
        mb(p.pg_table_bytes),
        mb(p.pg_index_bytes),
        mb(pg.disk_bytes),
        p.pg_vacuum_s,
        p.pg_rn_index_s
    ));
    r.push_str(&format!(
        "- Memory: basedata server RSS {:.0} MB at the end (peak {:.0} MB); PostgreSQL's processes {:.0} MB (sum of PSS) after the runs.\n",
        p.bd_rss_mb, p.bd_peak_rss_mb, p.pg_pss_mb
    ));
    r.push_str(&format!("- Generating the data took {:.1} s (two passes; not measured).\n\n", p.gen_s));
    r
}

/// The scale table, the flatness ratios and the plot reference.
fn scale_section(points: &[Point], skipped: &[Skipped], plot: Option<&str>) -> String {
    let mut r = String::from("#### Scale\n\n");
    r.push_str(
        "| persons | basedata load records/s | basedata verify req/s | basedata batch lines/s | basedata bytes/record | basedata RSS MB (peak) \
         | PostgreSQL load records/s | PostgreSQL verify tps | PostgreSQL batch lines/s | PostgreSQL bytes/record |\n",
    );
    r.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for p in points {
        let n = p.persons as f64;
        let b = p.batch_lines as f64;
        r.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {:.0} ({:.0}) | {} | {} | {} | {:.0} |\n",
            thousands(n),
            thousands(ratio(n, p.bd.load.wall_s)),
            thousands(p.bd.verify_rps),
            thousands(ratio(b, p.bd.batch.wall_s)),
            ratio(p.bd.disk_bytes as f64, n),
            p.bd_rss_mb,
            p.bd_peak_rss_mb,
            thousands(ratio(n, p.pg.load.wall_s)),
            thousands(p.pg.verify_rps),
            thousands(ratio(b, p.pg.batch.wall_s)),
            ratio(p.pg.disk_bytes as f64, n),
        ));
    }
    for s in skipped {
        r.push_str(&format!("| {} | skipped: {} | | | | | | | | |\n", thousands(s.persons as f64), s.reason));
    }
    r.push('\n');
    if let Some(first) = points.first() {
        for p in &points[1..] {
            let bd = ratio(p.bd.verify_rps, first.bd.verify_rps);
            r.push_str(&format!(
                "Point-verification rate at {} persons / at {} persons: basedata **{bd:.2}** (target ≥ 0.7: {}), PostgreSQL {:.2}.\n",
                thousands(p.persons as f64),
                thousands(first.persons as f64),
                verdict(bd >= 0.7),
                ratio(p.pg.verify_rps, first.pg.verify_rps)
            ));
        }
        if points.len() == 1 {
            r.push_str("One size only: no flatness ratio (run with `--scale` for the curve).\n");
        }
    }
    if let Some(plot) = plot {
        r.push_str(&format!("\n![scale curve]({plot})\n"));
    }
    r
}

/// gnuplot, installed from Debian's `gnuplot-nox` when missing.
fn gnuplot(work: &Path) -> anyhow::Result<PathBuf> {
    let found = || {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("gnuplot")).find(|p| p.exists()))
    };
    if let Some(g) = found() {
        return Ok(g);
    }
    pg::apt_install(&["gnuplot-nox"], &work.join("apt.log"))?;
    found().context("gnuplot-nox is installed but gnuplot is not on PATH")
}

/// Draws the scale curve (four panels, both systems, persons on a log axis) into `png`.
fn plot(points: &[Point], work: &Path, png: &Path, title: &str) -> anyhow::Result<()> {
    let data = work.join("scale.tsv");
    let mut t = String::from("# persons\tbd_verify\tpg_verify\tbd_batch\tpg_batch\tbd_load\tpg_load\tbd_bytes\tpg_bytes\n");
    for p in points {
        let n = p.persons as f64;
        let b = p.batch_lines as f64;
        t.push_str(&format!(
            "{}\t{:.0}\t{:.0}\t{:.0}\t{:.0}\t{:.0}\t{:.0}\t{:.1}\t{:.1}\n",
            p.persons,
            p.bd.verify_rps,
            p.pg.verify_rps,
            ratio(b, p.bd.batch.wall_s),
            ratio(b, p.pg.batch.wall_s),
            ratio(n, p.bd.load.wall_s),
            ratio(n, p.pg.load.wall_s),
            ratio(p.bd.disk_bytes as f64, n),
            ratio(p.pg.disk_bytes as f64, n),
        ));
    }
    std::fs::write(&data, t)?;
    let lo = points.iter().map(|p| p.persons).min().unwrap_or(1) as f64;
    let hi = points.iter().map(|p| p.persons).max().unwrap_or(1) as f64;
    let panel = |title: &str, bd: u32, pg: u32| {
        format!(
            "set title '{title}'\nplot d using 1:{bd} with linespoints lw 2 pt 7 title 'basedata', d using 1:{pg} with linespoints lw 2 pt 5 title 'PostgreSQL'\n"
        )
    };
    let script = format!(
        "set terminal pngcairo size 1200,900 font 'sans,10'\nset output {}\nd = {}\n\
         set multiplot layout 2,2 title '{}'\nset logscale x\nset xrange [{}:{}]\nset yrange [0:*]\n\
         set xlabel 'persons'\nset format x '%.0s%c'\nset key bottom left\nset grid\n{}{}{}{}unset multiplot\n",
        quoted(png)?,
        quoted(&data)?,
        title.replace('\'', ""),
        lo / 2.0,
        hi * 2.0,
        panel("point verification (requests/s)", 2, 3),
        panel("batch comparison (lines/s)", 4, 5),
        panel("initial load (records/s)", 6, 7),
        panel("disk after load (bytes/record)", 8, 9),
    );
    let gp = work.join("scale.gp");
    std::fs::write(&gp, script)?;
    let g = gnuplot(work)?;
    harness::run_logged(Command::new(g).arg(&gp), "gnuplot", Duration::from_secs(60), &work.join("gnuplot.log"))?;
    if !png.exists() {
        bail!("gnuplot wrote no {}", png.display());
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    harness::stop_children_on_signal(TAG);
    if !(1..=1000).contains(&args.connections) || !(1..=64).contains(&args.client_threads) || args.client_threads > args.connections {
        bail!("--connections must be 1 to 1000 and --client-threads 1 to 64, at most --connections");
    }
    if !(1..=300).contains(&args.duration) || args.warmup > 60 {
        bail!("--duration must be 1 to 300 seconds and --warmup at most 60");
    }
    if args.cache_mb < 16 || args.sort_memory_mb < basedata_tools::load::MIN_MEMORY_MB || args.work_mem_mb < 1 {
        bail!("--cache-mb must be at least 16, --sort-memory-mb at least {}, --work-mem-mb at least 1", basedata_tools::load::MIN_MEMORY_MB);
    }
    let mut sizes = if args.scale.is_empty() { vec![args.persons] } else { args.scale.clone() };
    sizes.sort_unstable();
    sizes.dedup();
    let (basedata, [loadgen]) = harness::binaries(args.basedata.as_deref(), ["loadgen"])?;
    let work_dir = WorkDir::new(args.work.as_deref(), "basedata-vs-postgres-")?;
    let work = work_dir.path.clone();
    // The PostgreSQL server runs as another user and reads its COPY input here.
    std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    eprintln!("[{TAG}] working in {}", work.display());
    let pg_bin = pg::find_or_install(&work.join("apt.log"))?;
    let version = harness::sh(&pg_bin.join("postgres").to_string_lossy(), &["--version"]);
    let machine = machine(&work);
    let plot_path = args.plot.clone().unwrap_or_else(|| match &args.report {
        Some(r) => r.with_extension("png"),
        None => PathBuf::from("vs_postgres-scale.png"),
    });
    let quiet = Duration::from_secs(args.quiet_wait);
    let mut ctx = Ctx {
        loadgen: Loadgen { path: loadgen, threads: args.client_threads, log: std::fs::File::create(work.join("results.jsonl"))?, tag: TAG },
        args,
        basedata,
        pg_bin,
        work: work.clone(),
        quiet,
        catalog: Catalog::builtin(),
        commands: Vec::new(),
    };
    let mut points: Vec<Point> = Vec::new();
    let mut skipped: Vec<Skipped> = Vec::new();
    for &n in &sizes {
        if std::env::var_os("CI").is_some() && n > CI_MAX_PERSONS {
            skipped.push(Skipped { persons: n, reason: format!("more than {} persons are never run under CI", thousands(CI_MAX_PERSONS as f64)) });
            continue;
        }
        let per_person = points.last().map(|p| p.peak_disk_bytes as f64 / p.persons as f64 * 1.25).unwrap_or(FIRST_BYTES_PER_PERSON);
        let need = per_person * n as f64 + 2e9;
        let free = free_bytes(&work) as f64;
        if free < need {
            let reason = format!("needs about {:.0} GB of disk, {:.0} GB free", need / 1e9, free / 1e9);
            eprintln!("[{TAG}] {n} persons skipped: {reason}");
            skipped.push(Skipped { persons: n, reason });
            continue;
        }
        let p = run_point(&mut ctx, n)?;
        points.push(p);
    }
    if points.is_empty() {
        bail!("no size could be run");
    }

    let date = machine.iter().find(|(k, _)| k.starts_with("date")).map(|(_, v)| v.clone()).unwrap_or_default();
    let short = version.split_once("(PostgreSQL) ").and_then(|(_, v)| v.split_whitespace().next()).unwrap_or("");
    let plotted = match plot(&points, &work, &plot_path, &format!("basedata vs PostgreSQL {short}, {date}")) {
        Ok(()) => Some(plot_path.clone()),
        Err(e) => {
            eprintln!("[{TAG}] no plot: {e:#}");
            None
        }
    };
    let plot_ref = plotted.as_ref().map(|p| {
        // Beside the report, the plot is linked by its file name.
        let beside = ctx.args.report.as_ref().and_then(|r| r.parent()) == p.parent();
        if beside {
            p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
        } else {
            p.to_string_lossy().into_owned()
        }
    });

    let mut r = format!("### Figures, {date}\n\n");
    r.push_str(&format!("Command: `{}`\n\n", std::env::args().map(|a| harness::shell_quote(&a)).collect::<Vec<_>>().join(" ")));
    r.push_str("| machine | |\n|---|---|\n");
    for (k, v) in &machine {
        r.push_str(&format!("| {k} | {v} |\n"));
    }
    r.push_str(&format!("| PostgreSQL | {version} |\n"));
    r.push_str(&format!(
        "| settings | basedata block cache = PostgreSQL shared_buffers = {} MiB; load sort memory {} MiB; work_mem {} MiB; \
         {} clients, {} client thread(s), {} s measured after {} s warm-up |\n\n",
        ctx.args.cache_mb, ctx.args.sort_memory_mb, ctx.args.work_mem_mb, ctx.args.connections, ctx.args.client_threads, ctx.args.duration, ctx.args.warmup
    ));
    for p in &points {
        r.push_str(&point_table(p, ctx.args.connections));
    }
    r.push_str(&scale_section(&points, &skipped, plot_ref.as_deref()));
    r.push_str("\nCommands (`$WORK` is the harness's working directory, `$DIR` the directory of one size in it; ports are chosen per run):\n\n```sh\n");
    for (what, text) in &ctx.commands {
        r.push_str(&format!("# {what}\n{}\n", text.trim_end()));
    }
    r.push_str("```\n");
    println!("{r}");
    if let Some(p) = &ctx.args.report {
        std::fs::write(p, &r).with_context(|| format!("cannot write {}", p.display()))?;
        eprintln!("[{TAG}] report written to {}", p.display());
    }
    if let Some(p) = &plotted {
        eprintln!("[{TAG}] plot written to {}", p.display());
    }
    if ctx.args.keep {
        eprintln!("[{TAG}] kept {}", work_dir.keep().display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse_with_separators_and_suffixes() {
        for (s, want) in [("1000000", Ok(1_000_000)), ("1_000_000", Ok(1_000_000)), ("10M", Ok(10_000_000)), ("100k", Ok(100_000))] {
            assert_eq!(parse_count(s), want, "{s}");
        }
        for bad in ["0", "", "x", "-5", "1.5M"] {
            assert!(parse_count(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn copy_fields_are_escaped() {
        let mut out = Vec::new();
        copy_field(&mut out, Some(&Value::String("a\tb\\c\nd".into())));
        out.push(b'|');
        copy_field(&mut out, None);
        out.push(b'|');
        copy_field(&mut out, Some(&serde_json::json!(42)));
        assert_eq!(String::from_utf8(out).unwrap(), "a\\tb\\\\c\\nd|\\N|42");
    }
}
