//! `basedata load`: bulk-loads one update file into an empty dataset of a
//! stopped store through SST files (`basedata_store::bulk`, pipeline in
//! `basedata_ingest::sst`), writing every rejected line to an error report
//! (NDJSON, one `{"line","key","code","message"}` object per line, as the
//! updates endpoint reports them), with a progress bar on a terminal and a
//! one-line summary.
//!
//! The store may be new: the data directory and its secret are created as
//! `serve` would create them. An interrupted earlier load is finished
//! first. The load is audited like a provider's push: an `update` entry
//! of the dataset's provider (of several, the one named with `--provider`,
//! whose area or fields the lines must keep to) saying what was loaded.
//!
//! A dataset that already holds data cannot take SST files (what is stored
//! must be merged line by line, by version): its file goes through the
//! write path instead, exactly as pushes to the updates endpoint would
//! (`basedata_ingest::provide`), a thousand lines a synced request, each
//! audited as the provider's `update`. Slower, but a provider's backlog
//! can be loaded while the server is stopped.

use anyhow::{bail, Context};
use basedata_server::config::Config;
use basedata_server::lifecycle as server;
use basedata_ingest::sst::{self, Progress};
use basedata_store::bulk::BulkOptions;
use basedata_store::caller::{Caller, Department, Role};
use basedata_store::commit::Committer;
use basedata_store::{dir, Action, AuditEvent, Durability, Store};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// One line of the error report, in the field order of the updates
/// endpoint's `rejected` entries.
#[derive(serde::Serialize)]
struct Rejection<'a> {
    line: u64,
    key: Option<&'a str>,
    code: &'a str,
    message: &'a str,
}

/// Smallest accepted `--memory-mb`.
pub const MIN_MEMORY_MB: usize = 16;

/// What to load, and with what.
#[derive(Debug)]
pub struct LoadOptions<'a> {
    pub data: &'a Path,
    pub dataset: &'a str,
    /// The provider whose load it is; needed for a dataset of several
    /// providers, whose lines are then held to its area or fields.
    pub provider: Option<&'a str>,
    pub input: &'a Path,
    pub config: &'a Config,
    pub key_file: Option<&'a Path>,
    /// Error report (default: `INPUT.errors.ndjson` beside the input).
    pub errors: Option<&'a Path>,
    /// Scratch space for sort runs and staged SST files (default: the data
    /// directory's parent, so staged files link into the store).
    pub tmp: Option<&'a Path>,
    /// Memory for sorting, in MiB.
    pub memory_mb: usize,
    /// Draw a progress bar on standard error when it is a terminal.
    pub progress: bool,
}

/// What a load did.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadReport {
    pub dataset: String,
    pub lines: u64,
    /// Records stored (one per key).
    pub loaded: u64,
    pub rejected: u64,
    /// Lines that lost to another line for the same key.
    pub superseded: u64,
    /// Lines not newer than the version stored (a load into a dataset
    /// that held data, through the write path; else 0).
    pub stale: u64,
    /// Whether the dataset held data, so that the file went through the
    /// write path rather than SST files.
    pub through_write_path: bool,
    pub first_seq: u64,
    pub last_seq: u64,
    pub seconds: f64,
    /// Of them, reading and validating (the rest is sorting, writing and
    /// ingesting).
    pub reading_seconds: f64,
    pub errors_file: PathBuf,
    /// Sorted runs spilled to disk (0: sorted in memory).
    pub runs: u64,
}

impl LoadReport {
    pub fn records_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.loaded as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The one-line summary `basedata load` prints.
    pub fn summary(&self) -> String {
        let kept_out = match self.through_write_path {
            true => format!("{} stale", self.stale),
            false => format!("{} superseded", self.superseded),
        };
        let mut s = format!(
            "{}: {} lines, {} loaded, {} rejected, {kept_out}, {:.1} s, {:.0} records/s",
            self.dataset,
            self.lines,
            self.loaded,
            self.rejected,
            self.seconds,
            self.records_per_second()
        );
        if self.through_write_path {
            s.push_str(" (the dataset held data: applied through the write path)");
        }
        if self.loaded > 0 {
            s.push_str(&format!(", sequence numbers {}..={}", self.first_seq, self.last_seq));
        }
        if self.rejected > 0 {
            s.push_str(&format!("; rejected lines in {}", self.errors_file.display()));
        }
        s
    }
}

/// The default error report of `input`: `INPUT.errors.ndjson` beside it.
pub fn default_errors_file(input: &Path) -> PathBuf {
    let mut name = input.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "input".into());
    name.push(".errors.ndjson");
    input.with_file_name(name)
}

fn same_file(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// Runs a load; every refusal and failure is an error with a one-line reason.
pub fn run(o: &LoadOptions) -> anyhow::Result<LoadReport> {
    let started = Instant::now();
    if o.memory_mb < MIN_MEMORY_MB {
        bail!("--memory-mb must be at least {MIN_MEMORY_MB}");
    }
    let meta = std::fs::metadata(o.input).with_context(|| format!("cannot read {}", o.input.display()))?;
    if !meta.is_file() {
        bail!("{} is not a file", o.input.display());
    }
    let catalog = Arc::new(server::load_catalog(o.config)?);
    let Some(ds) = catalog.dataset(o.dataset) else {
        bail!("unknown dataset {} (the catalog is served at GET /v1/catalog)", o.dataset);
    };
    let by = sst::load_provider(ds, o.provider).map_err(|e| anyhow::anyhow!("{e}"))?;
    let errors_file = o.errors.map(Path::to_path_buf).unwrap_or_else(|| default_errors_file(o.input));
    if same_file(&errors_file, o.input) {
        bail!("the error report must not be the input file");
    }
    let tmp = match o.tmp {
        Some(t) => t.to_path_buf(),
        None => match o.data.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        },
    };
    if tmp.starts_with(o.data) {
        bail!("--tmp must not be inside the data directory");
    }
    // The secret first, told about at once if it is new, even should the
    // store then fail to open; opening finishes an interrupted earlier
    // load first (see `basedata_store::dir`).
    let in_use =
        |e: basedata_store::Error| crate::offline::in_use(e.into(), "a bulk load needs the data directory to itself");
    let (secret, created) = dir::load_secret(o.data, &o.config.key_source(o.key_file)).map_err(in_use)?;
    server::tell(created.as_slice());
    let clock = server::config_clock(o.config);
    let opened =
        dir::open_with_secret(o.data, &secret, catalog.clone(), clock, &o.config.open_options(false)).map_err(in_use)?;
    server::tell(&opened.notices);
    let store = Arc::new(opened.store);
    let report_file = File::create(&errors_file).with_context(|| format!("cannot create {}", errors_file.display()))?;
    let mut report = BufWriter::with_capacity(1 << 20, report_file);

    let bar = if o.progress && std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(meta.len())
    } else {
        indicatif::ProgressBar::hidden()
    };
    let reading =
        indicatif::ProgressStyle::with_template("reading  {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template");
    let writing = indicatif::ProgressStyle::with_template("writing  {bar:40} {pos}/{len} records {per_sec} eta {eta}")
        .expect("valid template");
    bar.set_style(reading);
    let mut write_line = |line: u64, e: &basedata_ingest::LineError| -> std::io::Result<()> {
        let r = Rejection { line, key: e.key.as_deref(), code: e.code, message: &e.message };
        serde_json::to_writer(&mut report, &r)?;
        report.write_all(b"\n")
    };
    if store.dataset_stats(&ds.id).updates > 0 {
        let applied = through_write_path(&store, &ds.id, &by.id, o.input, &mut write_line, &|bytes| bar.set_position(bytes));
        bar.finish_and_clear();
        let applied = applied?;
        // The report is the closure's until here.
        drop(write_line);
        finish_report(report, &errors_file)?;
        refuse_all_rejected(applied.lines, applied.rejected, o.input, &ds.id, &errors_file)?;
        return Ok(LoadReport {
            dataset: ds.id.clone(),
            lines: applied.lines,
            loaded: applied.applied,
            rejected: applied.rejected,
            superseded: 0,
            stale: applied.stale,
            through_write_path: true,
            first_seq: applied.first_seq,
            last_seq: applied.last_seq,
            seconds: started.elapsed().as_secs_f64(),
            reading_seconds: 0.0,
            errors_file,
            runs: 0,
        });
    }
    let mut phase_writing = false;
    let mut reading_seconds = 0.0;
    let opts = BulkOptions { memory_bytes: o.memory_mb << 20, expected_bytes: meta.len(), ..BulkOptions::new(tmp) };
    let loaded = sst::load_file(
        &store,
        &ds.id,
        Some(&by.id),
        o.input,
        opts,
        &mut write_line,
        &mut |p| match p {
            Progress::Reading { bytes, .. } => bar.set_position(bytes),
            Progress::Writing { records, total } => {
                if !phase_writing {
                    phase_writing = true;
                    reading_seconds = started.elapsed().as_secs_f64();
                    bar.set_style(writing.clone());
                    bar.set_length(total);
                    bar.reset();
                }
                bar.set_position(records);
            }
        },
    );
    bar.finish_and_clear();
    let loaded = loaded.map_err(|e| anyhow::anyhow!("{e}"))?;
    // On the record like a provider's push: the provider's department, the
    // update action, what the load did.
    let file_name = o.input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let event = AuditEvent {
        department: by.id.clone(),
        operator: None,
        operator_verified: false,
        purpose: "bulk load".into(),
        purpose_code: None,
        action: Action::Update,
        key: None,
        datasets: vec![ds.id.clone()],
        fields: Vec::new(),
        outcome: format!(
            "bulk load of {file_name}: lines={} loaded={} rejected={} superseded={} seq={}..={}",
            loaded.lines,
            loaded.bulk.applied,
            loaded.rejected,
            loaded.bulk.superseded,
            loaded.bulk.first_seq,
            loaded.bulk.last_seq
        ),
        key_mapped: false,
        pid: None,
        rejected_lines: loaded.rejected,
        grants: Vec::new(),
    };
    store.commit(&[], &[event], Durability::Sync)?;
    drop(write_line);
    finish_report(report, &errors_file)?;
    refuse_all_rejected(loaded.lines, loaded.rejected, o.input, &ds.id, &errors_file)?;
    Ok(LoadReport {
        dataset: ds.id.clone(),
        lines: loaded.lines,
        loaded: loaded.bulk.applied,
        rejected: loaded.rejected,
        superseded: loaded.bulk.superseded,
        stale: 0,
        through_write_path: false,
        first_seq: loaded.bulk.first_seq,
        last_seq: loaded.bulk.last_seq,
        seconds: started.elapsed().as_secs_f64(),
        reading_seconds,
        errors_file,
        runs: loaded.bulk.sort.runs,
    })
}

fn finish_report(report: BufWriter<File>, errors_file: &Path) -> anyhow::Result<()> {
    report
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot write {}", errors_file.display()))
}

/// A file none of whose lines is valid is more likely the wrong file, or
/// for the wrong dataset, than a provider's data: an error, not a report.
fn refuse_all_rejected(lines: u64, rejected: u64, input: &Path, dataset: &str, errors_file: &Path) -> anyhow::Result<()> {
    if lines > 0 && rejected == lines {
        bail!(
            "none of the {lines} lines of {} is a valid update of {dataset} (each line's error is in {})",
            input.display(),
            errors_file.display()
        );
    }
    Ok(())
}

/// Lines handed to the write path at a time: its answer lists up to this
/// many rejected lines, so that every one reaches the error report.
const WRITE_PATH_LINES: u64 = basedata_ingest::provide::MAX_LISTED_REJECTIONS as u64;

/// What a load through the write path did.
#[derive(Debug, Default)]
struct Applied {
    lines: u64,
    applied: u64,
    stale: u64,
    rejected: u64,
    first_seq: u64,
    last_seq: u64,
}

/// Applies the update file `input` to `dataset` of `store` as the updates
/// endpoint applies a provider's pushes, `WRITE_PATH_LINES` raw lines a
/// request: each line against the stored version (newer applied, the
/// others stale), each request synced and audited as `provider`'s `update`.
/// Rejected lines go to `reject` with their line numbers in the file.
fn through_write_path(
    store: &Arc<Store>,
    dataset: &str,
    provider: &str,
    input: &Path,
    reject: &mut dyn FnMut(u64, &basedata_ingest::LineError) -> std::io::Result<()>,
    progress: &dyn Fn(u64),
) -> anyhow::Result<Applied> {
    use basedata_ingest::provide::Provide;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let committer = Arc::new(Committer::start(store.clone(), 64));
    let provide = Provide::new(store.clone(), committer, usize::MAX);
    let caller = Caller::declared(Arc::new(Department::new(provider, vec![Role::Provider])), None);
    let mut reader = BufReader::with_capacity(1 << 20, File::open(input).with_context(|| format!("cannot read {}", input.display()))?);
    let mut out = Applied { first_seq: store.last_seq() + 1, ..Applied::default() };
    let (mut chunk, mut in_chunk, mut before, mut bytes) = (Vec::new(), 0u64, 0u64, 0u64);
    loop {
        let read = reader.read_until(b'\n', &mut chunk).with_context(|| format!("cannot read {}", input.display()))?;
        bytes += read as u64;
        in_chunk += u64::from(read > 0);
        if in_chunk > 0 && (in_chunk == WRITE_PATH_LINES || read == 0) {
            let r = runtime.block_on(async {
                let mut s = provide.begin(&caller, dataset, Some("bulk load")).await?;
                s.push(&chunk)?;
                provide.apply(s).await
            });
            let r = r.map_err(|e| anyhow::anyhow!("{e}"))?;
            for (line, e) in &r.rejected.listed {
                reject(before + line, e).context("cannot write the error report")?;
            }
            let rejected = r.rejected.total() as u64;
            out.applied += r.applied as u64;
            out.stale += r.stale as u64;
            out.rejected += rejected;
            out.lines += r.applied as u64 + r.stale as u64 + rejected;
            out.last_seq = r.last_seq;
            before += in_chunk;
            (in_chunk, chunk) = (0, Vec::new());
            progress(bytes);
        }
        if read == 0 {
            break;
        }
    }
    if out.applied == 0 {
        out.first_seq = 0;
    }
    Ok(out)
}
