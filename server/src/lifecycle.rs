//! Server lifecycle: open the store from a data directory and the secret
//! (kept outside it; the rules are `basedata_store::dir`'s), bind, serve
//! until SIGTERM or Ctrl-C, then drain in-flight requests and close the
//! store cleanly.

use crate::auth::Departments;
use crate::config::Config;
use crate::http::{AppState, Settings};
use anyhow::Context;
use basedata_store::clock::{Clock, SystemClock};
use basedata_store::dir::{self, Notice};
use basedata_store::{Catalog, Store};
use std::path::Path;
use std::sync::Arc;

/// Tells the operator, on standard error, what opening a store did.
pub fn tell(notices: &[Notice]) {
    for n in notices {
        eprintln!("{n}");
    }
}

pub fn load_catalog(cfg: &Config) -> anyhow::Result<Catalog> {
    Ok(match &cfg.catalog {
        Some(p) => Catalog::load(p).with_context(|| format!("catalog {}", p.display()))?,
        None => Catalog::builtin(),
    })
}

/// Memory a record's claim fingerprints take, with the table's share, as
/// measured for hukou records (BENCHMARKS.md) and rounded up.
const PRINT_BYTES_PER_RECORD: u64 = 200;

/// Whether the claim fingerprints of `records` records fit in half of the
/// `available` memory (unknown: assumed to fit).
fn prints_fit(records: u64, available: Option<u64>) -> bool {
    available.is_none_or(|a| records.saturating_mul(PRINT_BYTES_PER_RECORD) <= a / 2)
}

/// Opens (or creates) the store in `data` (see `basedata_store::dir`).
pub fn open_store(data: &Path, cfg: &Config, key_file: Option<&Path>, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Store>> {
    open_store_with(data, cfg, key_file, clock, false)
}

/// [`open_store`] for serving: also warms the page cache for point reads.
pub fn open_store_for_serving(data: &Path, cfg: &Config, key_file: Option<&Path>, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Store>> {
    open_store_with(data, cfg, key_file, clock, true)
}

fn open_store_with(
    data: &Path,
    cfg: &Config,
    key_file: Option<&Path>,
    clock: Arc<dyn Clock>,
    warm: bool,
) -> anyhow::Result<Arc<Store>> {
    // The secret first, while a new data directory is still empty: its
    // key file is created only then.
    let (secret, created) = dir::load_secret(data, &cfg.key_source(key_file))?;
    tell(created.as_slice());
    let catalog = load_catalog(cfg)?;
    let opened = dir::open_with_secret(data, &secret, Arc::new(catalog), clock, &cfg.open_options(warm))?;
    tell(&opened.notices);
    if warm && cfg.verify_prints {
        // Measured: ~160 bytes a record. A table that would take more than
        // half the memory left is not built: verifications then read the
        // records, slower but without pushing the machine into swap.
        let records: u64 = opened.store.catalog().datasets().iter().map(|d| opened.store.dataset_stats(&d.id).records).sum();
        let available = basedata_store::engine::rocks::available_memory_bytes();
        if prints_fit(records, available) {
            let t = std::time::Instant::now();
            let records = opened.store.keep_prints()?;
            tracing::info!(records, ms = t.elapsed().as_millis() as u64, "claim fingerprints built");
        } else {
            tracing::warn!(
                records,
                need_mb = records.saturating_mul(PRINT_BYTES_PER_RECORD) >> 20,
                available_mb = available.unwrap_or(0) >> 20,
                "claim fingerprints not kept: they would take more than half the available memory; verifications read the records"
            );
        }
    }
    Ok(Arc::new(opened.store))
}

pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// The clock the configuration asks for.
pub fn config_clock(cfg: &Config) -> Arc<dyn Clock> {
    if cfg.clock_offset_seconds == 0 {
        system_clock()
    } else {
        tracing::warn!(offset_seconds = cfg.clock_offset_seconds, "the server clock is shifted");
        Arc::new(basedata_store::clock::OffsetClock(cfg.clock_offset_seconds.saturating_mul(1_000_000)))
    }
}

/// The application state for a configuration: departments, governance
/// policy and calendar.
pub fn app_state(store: Arc<Store>, cfg: &Config) -> anyhow::Result<AppState> {
    // A purpose list names purposes of the catalog the store was opened with.
    for d in &cfg.departments {
        for code in d.purposes.iter().flatten() {
            if store.catalog().purpose(code).is_none() {
                anyhow::bail!("department {}: purpose {code:?} is not a purpose of the catalog", d.id);
            }
        }
    }
    let departments = Departments::from_config(&cfg.departments)?;
    let calendar = match &cfg.calendar {
        Some(p) => basedata_store::calendar::Calendar::load(p)?,
        None => basedata_store::calendar::Calendar::builtin(),
    };
    let settings = Settings {
        max_body_bytes: cfg.max_body_mb << 20,
        write_queue: cfg.write_queue,
        commit_pause: std::time::Duration::from_micros(cfg.commit_pause_us),
        request_timeout: std::time::Duration::from_secs(cfg.request_timeout_seconds),
        job_retention: std::time::Duration::from_secs(u64::from(cfg.job_retention_days) * 86_400),
        policy: cfg.policy.policy(),
        claims: cfg.policy.claims(),
        calendar,
        connections: fit_to_open_files(crate::conn::ConnLimits::from_config(&cfg.connections)?),
        deadline_sweep: std::time::Duration::from_secs(u64::from(cfg.policy.sweep_seconds)),
        audit_retention_days: cfg.audit_retention_days,
        change_retention_days: cfg.change_retention_days,
    };
    let stored = basedata_query::staff::all(store.engine().as_ref())?;
    let staff = crate::accounts::staff::StaffBook::load(&cfg.staff, &stored, cfg.console, &departments)?;
    let mut state = AppState::build(store, departments, settings)?;
    state.accounts = Arc::new(crate::accounts::Accounts::new(staff));
    state.watch_staff();
    Ok(state)
}

/// On a data directory restored from a backup, before the node numbers
/// any use of its own: takes back from the log the audit entries this
/// node shipped after the backup was made (see
/// `basedata_store::backup::RESTORED_MARKER`), waiting for the log as
/// long as it takes, then removes the marker. A log whose chain under this
/// node's name is not this store's stops the start.
async fn take_back_after_restore(data: &Path, store: &Arc<Store>, cluster: &crate::cluster::Cluster) -> anyhow::Result<()> {
    let marker = data.join(basedata_store::backup::RESTORED_MARKER);
    if !marker.exists() {
        return Ok(());
    }
    let node = &cluster.config().node;
    let mut tries = 0u32;
    let taken = loop {
        match crate::cluster::audit_ship::take_back_own(store, cluster).await {
            Ok(n) => break n,
            Err(crate::cluster::audit_ship::TakeBackError::Refused(e)) => {
                return Err(e.context(format!("this store was restored from a backup and cannot go on as node {node}")));
            }
            Err(e) => {
                tries += 1;
                if tries == 1 || tries.is_multiple_of(30) {
                    tracing::warn!(error = %e, "restored from a backup: waiting for the log to take back this node's audit entries");
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
    };
    tracing::info!(node = %node, uses = taken, head = store.audit_head()?.seq, "restored from a backup: took back this node's audit entries from the log");
    std::fs::remove_file(&marker)?;
    // The removal is made durable: the marker must not come back after a
    // power cut once new uses are numbered past the taken-back ones.
    std::fs::File::open(data)?.sync_all()?;
    Ok(())
}

/// Sends batch answers that spill beyond memory to the configured spill
/// directory, or `spill/` inside `data` (see `spool`).
pub fn place_spill(data: &Path, cfg: &Config) -> anyhow::Result<()> {
    let dir = cfg.spill_dir.clone().unwrap_or_else(|| data.join("spill"));
    crate::spool::SPILL_BUDGET
        .place_in(&dir)
        .with_context(|| format!("cannot spill batch answers to {} (spill_dir)", dir.display()))
}

/// How often the audit chain's head is written to the server's log (when
/// it moved).
pub const AUDIT_HEAD_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Writes the audit chain's head to the server's log at start and then
/// every [`AUDIT_HEAD_LOG_EVERY`] when it moved. The chain is not keyed:
/// whoever can write the store's files can cut its tail, or rewrite it
/// with the hashes recomputed, and it still links. Heads kept where they
/// cannot reach (a log collected off the host) find that: `basedata
/// audit-verify --head SEQ:HASH`.
async fn log_audit_heads(store: Arc<Store>) {
    let mut tick = tokio::time::interval(AUDIT_HEAD_LOG_EVERY);
    let mut logged = None;
    loop {
        tick.tick().await;
        match store.audit_head() {
            Ok(h) if logged != Some(h) => {
                tracing::info!(seq = h.seq, hash = %hex::encode(h.hash), "audit head");
                logged = Some(h);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the audit head"),
        }
    }
}

/// Runs `task` on the use cases at once and then every `every`, each run
/// after the last has finished, until the handle is aborted.
fn periodically<F, Fut>(every: std::time::Duration, queries: Arc<basedata_query::Queries>, task: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(Arc<basedata_query::Queries>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            task(queries.clone()).await;
        }
    })
}

/// How often audit entries and changes past their retention periods are
/// looked for.
const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(6 * 3_600);

/// How often the working-day calendar is checked for the year deadlines
/// are counted into, and how close to a year's end the next year counts.
const CALENDAR_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(24 * 3_600);
const CALENDAR_AHEAD_DAYS: u16 = 45;

/// Serves `state` on `listener` until a shutdown signal arrives.
pub async fn serve(state: AppState, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    serve_tls(state, listener, None).await
}

/// [`serve`], over TLS when an acceptor is given (`[tls]`): requests then
/// carry the connection's `ConnectInfo<TlsPeer>` for authentication.
pub async fn serve_tls(
    state: AppState,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> anyhow::Result<()> {
    let app = crate::http::Edge::new(crate::http::router_with(state.clone(), crate::console::router(&state)), &state);
    // Lets `basedata backup --data DIR` reach this process, which holds the store.
    let _control = crate::control::ControlSocket::start(&state.store);
    let anchors = tokio::spawn(log_audit_heads(state.store.clone()));
    // Records grants that the reply deadline turned into deemed approvals.
    let sweeper = periodically(state.deadline_sweep, state.queries.clone(), |queries| async move {
        if let Err(e) = queries.sweep_deemed().await {
            tracing::warn!(code = e.code(), error = %e, "deemed-approval sweep failed");
        }
    });
    // A calendar without the year that deadlines are being counted into
    // counts that year's lunar holidays as working days: said at start and
    // daily, until the operator adds the year's arrangement.
    let calendar_watch = periodically(CALENDAR_CHECK_EVERY, state.queries.clone(), |queries| async move {
        let today = basedata_query::gov::cst_date(queries.store.clock().now_micros());
        if let Some(year) = queries.calendar.missing_year(today, CALENDAR_AHEAD_DAYS) {
            tracing::warn!(
                year,
                "the working-day calendar lacks this year's holidays and make-up days: deadlines count only weekends \
                 and the holidays fixed by date in it; add the year's published arrangement (`calendar` in the configuration)"
            );
        }
    });
    // Audit entries past the retention period, removed at start and then
    // every few hours (a day's entries at most wait that long).
    let retention = state.audit_retention_days.map(|days| {
        periodically(RETENTION_EVERY, state.queries.clone(), move |queries| async move {
            match queries.apply_audit_retention(days).await {
                Ok(p) if p.total() > 0 => {
                    tracing::info!(uses = p.total(), kept_from = p.anchor.seq + 1, "removed audit entries past the retention period")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(code = e.code(), error = %e, "audit retention failed"),
            }
        })
    });
    // The change log's head past its retention period, cut likewise.
    let change_retention = state.change_retention_days.map(|days| {
        periodically(RETENTION_EVERY, state.queries.clone(), move |queries| async move {
            match queries.apply_change_retention(days).await {
                Ok(c) if c.removed > 0 => {
                    tracing::info!(changes = c.removed, kept_after = c.kept_after, "removed changes past the retention period")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(code = e.code(), error = %e, "change log retention failed"),
            }
        })
    });
    // Uploads an earlier process left half-received go before any request
    // can begin one; then jobs run, resuming any a previous run left
    // unfinished.
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || basedata_query::jobs::runner::discard_leftover_uploads(&store)).await??;
    let jobs = tokio::spawn(basedata_query::jobs::runner::runner(state.queries.clone()));
    crate::conn::serve(listener, tls, app, state.conn_limits, state.connections.clone(), shutdown_signal()).await;
    // A removal past the retention period runs on a blocking thread, which
    // the runtime would wait for at exit, for hours on a first run over
    // years of trail: it stops at its next step instead, and the next start
    // goes on.
    state.store.stop_maintenance();
    sweeper.abort();
    calendar_watch.abort();
    for r in [retention, change_retention].into_iter().flatten() {
        r.abort();
    }
    jobs.abort();
    anchors.abort();
    // Unsynced writes (none on the API paths, but bulk tools may share the
    // store) reach disk before the process exits.
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        // The audit index's keys still in memory go into the engine, so
        // the next start rebuilds none; if they cannot, it will.
        if let Err(e) = store.index_tail().settle() {
            tracing::warn!(error = %e, "the audit index's tail was not written; the next start rebuilds it");
        }
        store.engine().flush()
    })
    .await??;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Keeps the total connection cap below the process's open-file limit:
/// past it, accepting fails for every client and the store cannot open
/// its files. A quarter of the limit (at least 64) is left to the store.
fn fit_to_open_files(mut limits: crate::conn::ConnLimits) -> crate::conn::ConnLimits {
    let soft = std::fs::read_to_string("/proc/self/limits").ok().and_then(|t| {
        let line = t.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse::<usize>().ok()
    });
    if let Some(soft) = soft {
        let room = soft.saturating_sub((soft / 4).max(64)).max(16);
        if limits.total > room {
            tracing::warn!(configured = limits.total, open_file_limit = soft, using = room,
                "[connections] max_total exceeds what the open-file limit allows; lowered");
            limits.total = room;
        }
    }
    limits
}

/// Completes at the first SIGINT or SIGTERM.
async fn signalled() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn shutdown_signal() {
    signalled().await;
    tracing::info!("shutdown requested; draining requests");
    // A second signal means now: every acknowledged write is already
    // durable, so nothing is lost by not waiting. (Once handled, the
    // signals no longer end the process by themselves.)
    tokio::spawn(async {
        signalled().await;
        tracing::warn!("second shutdown signal; exiting without waiting");
        // `exit` skips the log guard's drop, which writes out the
        // pending access lines.
        crate::logging::flush();
        std::process::exit(130);
    });
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// `basedata serve`.
pub fn run(data: &Path, cfg: Config, listen: &str, key_file: Option<&Path>) -> anyhow::Result<()> {
    let store = open_store_for_serving(data, &cfg, key_file, config_clock(&cfg))?;
    if cfg.departments.is_empty() {
        eprintln!("warning: no departments configured; every API request will be refused (see --config)");
    }
    let mut state = app_state(store, &cfg)?;
    place_spill(data, &cfg)?;
    let tls = cfg.tls.as_ref().map(crate::tls::acceptor).transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let rt = runtime()?;
    rt.block_on(async move {
        if let Some(c) = cfg.cluster.clone() {
            // The same secret as the store's: the log's payloads are sealed with it.
            let (secret, _) = dir::load_secret(data, &cfg.key_source(key_file))?;
            let position = crate::cluster::prepare_store(&state.store, &c.served_partitions())?;
            let node = c.node.clone();
            let cluster = crate::cluster::Cluster::connect(c, &secret, position).await?;
            take_back_after_restore(data, &state.store, &cluster).await?;
            tracing::info!(node = %node, position, "cluster mode: updates go through the replicated log");
            state = state.with_cluster(cluster.clone());
            state.queries.use_governance_log(cluster.clone());
            let to = crate::cluster::ApplyTo {
                catalog: state.catalog.clone(),
                committer: state.committer.clone(),
                queries: state.queries.clone(),
                store: state.store.clone(),
            };
            tokio::spawn(crate::cluster::applier(to, cluster));
        }
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        tracing::info!(listen = %listener.local_addr()?, "serving");
        eprintln!("basedata listening on {scheme}://{}", listener.local_addr()?);
        serve_tls(state, listener, tls).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_kept_only_within_half_the_available_memory() {
        let gib = 1u64 << 30;
        assert!(prints_fit(1_000_000, Some(24 * gib)));
        assert!(prints_fit(50_000_000, Some(24 * gib)), "10 GB of 24");
        assert!(!prints_fit(100_000_000, Some(24 * gib)), "20 GB of 24");
        assert!(!prints_fit(1_000_000, Some(300 << 20)), "200 MB of 300");
        assert!(prints_fit(u64::MAX, None), "unknown memory: kept");
    }
}
