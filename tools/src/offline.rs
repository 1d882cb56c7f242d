//! Offline commands on a data directory whose server is stopped:
//! `basedata compare` (a batch comparison from a file to a file, with the
//! same line formats and the same audit entries as `POST /v1/verify/batch`)
//! and `basedata audit-verify` (the audit chain check).

use anyhow::{bail, Context};
use basedata_query::batch::{Batch, Counts, Requester};
use basedata_query::{Caller, Department, Role};
use basedata_server::config::Config;
use basedata_server::http::MAX_PURPOSE_CHARS;
use basedata_server::lifecycle as server;
pub use basedata_store::audit::AuditChecks;
use basedata_store::commit::Committer;
use basedata_store::{dir, Store};
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;

/// Opens the store in `data`, which must already exist: an offline
/// command never creates a store (or a secret) by mistake.
pub fn open_existing(data: &Path, cfg: &Config, key_file: Option<&Path>) -> anyhow::Result<Arc<Store>> {
    if !dir::holds_store(data) {
        bail!("no store in {}", data.display());
    }
    server::open_store(data, cfg, key_file, server::config_clock(cfg)).map_err(|e| in_use(e, "an offline command"))
}

/// Explains RocksDB's lock error, which is what an offline command meets
/// while a server holds the store.
pub fn in_use(e: anyhow::Error, why: &str) -> anyhow::Error {
    if locked(&e) {
        e.context(format!("the store is in use: stop the server first ({why} needs the data directory to itself)"))
    } else {
        e
    }
}

/// Whether opening a store failed on its lock (a server holds it).
pub fn locked(e: &anyhow::Error) -> bool {
    format!("{e:#}").contains("lock")
}

/// A department for offline runs: the configured one, or where no
/// configuration names departments, a consumer, as the staff running
/// comparisons are.
pub fn offline_department(id: &str, cfg: &Config) -> anyhow::Result<Arc<Department>> {
    let depts = basedata_server::auth::Departments::from_config(&cfg.departments)?;
    if let Some(d) = depts.get(id) {
        return Ok(d.identity.clone());
    }
    if !cfg.departments.is_empty() {
        bail!("department {id:?} is not in the configuration");
    }
    Ok(Arc::new(Department::new(id, vec![Role::Consumer])))
}

/// `basedata compare`.
pub struct CompareOptions<'a> {
    pub data: &'a Path,
    pub input: &'a Path,
    pub output: &'a Path,
    pub department: &'a str,
    pub operator: Option<&'a str>,
    pub purpose: &'a str,
    pub config: &'a Config,
    pub key_file: Option<&'a Path>,
    /// Draw a progress bar on standard error (when it is a terminal).
    pub progress: bool,
}

/// Runs a comparison of `input` into `output`; returns the line counts.
/// The output file is synced before this returns; every line's audit
/// entry is durable before that line is written.
pub fn compare(o: &CompareOptions) -> anyhow::Result<Counts> {
    let purpose = o.purpose.trim();
    if purpose.is_empty() {
        bail!("--purpose must state what the comparison is for");
    }
    if purpose.chars().count() > MAX_PURPOSE_CHARS {
        bail!("--purpose is limited to {MAX_PURPOSE_CHARS} characters");
    }
    let operator = o.operator.map(str::trim).filter(|s| !s.is_empty()).map(|s| s.chars().take(64).collect());
    let department = offline_department(o.department, o.config)?;
    let input = File::open(o.input).with_context(|| format!("cannot read {}", o.input.display()))?;
    let len = input.metadata().map(|m| m.len()).unwrap_or(0);
    if let (Ok(a), Ok(b)) = (o.input.canonicalize(), o.output.canonicalize()) {
        if a == b {
            bail!("--output must not be the input file");
        }
    }
    let store = open_existing(o.data, o.config, o.key_file)?;
    // The purpose rules of the API: a department with a purpose list
    // states one of its codes.
    let mut caller = Caller::declared(department, operator);
    caller.purpose_code = match basedata_query::purpose::code_for(store.catalog(), &caller.department, purpose) {
        Ok(code) => code,
        Err(r) => {
            // Refused as over the API: recorded before it is reported.
            let mut ev = caller.event(purpose, basedata_store::Action::Denied, None);
            ev.outcome = format!("purpose_not_allowed: purpose {}", r.as_str());
            store.commit(&[], &[ev], basedata_store::Durability::Sync)?;
            bail!(
                "--purpose: department {} states one of its purposes ({}) as CODE or CODE; note ({})",
                caller.department.id,
                caller.department.purposes.clone().unwrap_or_default().join(", "),
                r.as_str()
            )
        }
    };
    let output = File::create(o.output).with_context(|| format!("cannot create {}", o.output.display()))?;
    let batch = Batch {
        committer: Arc::new(Committer::start(store.clone(), 64)),
        store: store.clone(),
        // Offline, grants are not consulted: fields that only their readers
        // may verify are verified for their provider alone.
        requester: Arc::new(Requester {
            caller,
            purpose: purpose.to_owned(),
            grants: Arc::new(basedata_query::access::NoGrants),
        }),
    };
    let bar = if o.progress {
        indicatif::ProgressBar::new(len)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template"),
    );
    let tick = bar.clone();
    let (counts, out) = batch.run_blocking(input, BufWriter::with_capacity(1 << 20, output), move |n| tick.set_position(n))?;
    bar.finish_and_clear();
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all().with_context(|| format!("cannot write {}", o.output.display()))?;
    // Stops the writer after its last group; then nothing is buffered.
    drop(batch);
    store.engine().flush()?;
    if counts.processed > 0 && counts.invalid == counts.processed {
        bail!(
            "none of the {} lines of {} is a valid request (each line's error is in {})",
            counts.processed,
            o.input.display(),
            o.output.display()
        );
    }
    Ok(counts)
}

/// `basedata audit-verify`: recomputes the whole hash chain and each other
/// node's chain the store holds, and checks the index against the entries;
/// with `backups`, also the chain against the head each backup recorded.
/// `heads` are heads recorded elsewhere (sequence number, hex hash); for
/// each, what is wrong with the chain against it, if anything.
pub fn audit_verify(
    data: &Path,
    cfg: &Config,
    key_file: Option<&Path>,
    backups: Option<&Path>,
    heads: &[(u64, String)],
) -> anyhow::Result<(AuditChecks, Vec<basedata_store::backup::BackupAnchor>, Vec<Option<String>>)> {
    let store = open_existing(data, cfg, key_file)?;
    let anchors = match backups {
        Some(b) => basedata_store::backup::check_against_backups(&store, b)?,
        None => Vec::new(),
    };
    let held = heads
        .iter()
        .map(|(seq, hash)| basedata_store::backup::check_head(&store, *seq, hash, "the given head"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((store.audit_checks()?, anchors, held))
}
