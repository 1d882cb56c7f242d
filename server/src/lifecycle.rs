//! Server lifecycle: open the store from a data directory and the secret
//! (kept outside it), bind, serve until SIGTERM or Ctrl-C, then drain
//! in-flight requests and close the store cleanly.

use crate::auth::Departments;
use crate::config::Config;
use crate::http::{router, AppState, Settings};
use anyhow::{bail, Context};
use basedata_store::clock::{Clock, SystemClock};
use basedata_store::engine::rocks::{RocksConfig, RocksEngine};
use basedata_store::{Catalog, Cf, Secret, Store};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the secret lives when neither the configuration nor a flag says:
/// beside the data directory (`DIR.key`), never inside it.
pub fn default_key_file(data: &Path) -> PathBuf {
    let mut name = data.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "data".into());
    name.push(".key");
    data.with_file_name(name)
}

fn dir_is_empty(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut it) => it.next().is_none(),
        Err(_) => true,
    }
}

/// Resolves the store secret: inline in the configuration, or a key file
/// (flag, configuration, or the default beside the data directory). A key
/// file is created only together with a new, empty data directory, so a
/// lost key file can never silently start a second, unreadable store.
pub fn load_secret(data: &Path, cfg: &Config, key_file: Option<&Path>) -> anyhow::Result<Secret> {
    if let (Some(hex), None) = (&cfg.secret, key_file) {
        return Ok(Secret::from_hex(hex)?);
    }
    let path = key_file.map(Path::to_path_buf).or_else(|| cfg.key_file.clone()).unwrap_or_else(|| default_key_file(data));
    if path.starts_with(data) {
        bail!("the key file {} must not be inside the data directory", path.display());
    }
    if path.exists() {
        return Ok(Secret::load(&path)?);
    }
    if dir_is_empty(data) {
        let s = Secret::create_file(&path)?;
        eprintln!("created a new store secret in {} (keep it apart from the data and back it up)", path.display());
        return Ok(s);
    }
    bail!("no key file at {} for the existing data directory {}", path.display(), data.display())
}

pub fn load_catalog(cfg: &Config) -> anyhow::Result<Catalog> {
    Ok(match &cfg.catalog {
        Some(p) => Catalog::load(p).with_context(|| format!("catalog {}", p.display()))?,
        None => Catalog::builtin(),
    })
}

/// Opens (or creates) the RocksDB store in `data`.
pub fn open_store(data: &Path, cfg: &Config, key_file: Option<&Path>, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Store>> {
    open_store_with(data, cfg, key_file, clock, false)
}

/// [`open_store`] for serving: also warms the page cache for point reads
/// (see `RocksEngine::warm_page_cache`).
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
    let secret = load_secret(data, cfg, key_file)?;
    let catalog = load_catalog(cfg)?;
    std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    let rocks = RocksConfig { block_cache_bytes: cfg.block_cache_mb << 20, ..Default::default() };
    let engine = RocksEngine::open(data, &rocks).with_context(|| format!("cannot open the store in {}", data.display()))?;
    if warm {
        // Point reads land on records and key mappings; the rest is read in order.
        engine.warm_page_cache(&[Cf::Records, Cf::KeyMap]);
    }
    let store = Store::open(Arc::new(engine), &secret, Arc::new(catalog), clock)?;
    // A bulk load cut short by a crash is completed (or refused) before
    // anything is served, so no one reads half a load.
    if let Some(i) = basedata_store::bulk::finish_interrupted(&store)? {
        eprintln!("finished the interrupted bulk load of {} ({} records)", i.dataset, i.applied);
    }
    Ok(Arc::new(store))
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
    let departments = Departments::from_config(&cfg.departments)?;
    let calendar = match &cfg.calendar {
        Some(p) => basedata_store::calendar::Calendar::load(p)?,
        None => basedata_store::calendar::Calendar::builtin(),
    };
    let settings = Settings {
        max_body_bytes: cfg.max_body_mb << 20,
        write_queue: cfg.write_queue,
        request_timeout: std::time::Duration::from_secs(cfg.request_timeout_seconds),
        job_retention: std::time::Duration::from_secs(u64::from(cfg.job_retention_days) * 86_400),
        policy: cfg.policy.policy(),
        calendar,
    };
    Ok(AppState::build(store, departments, settings)?)
}

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
    let app = router(state.clone());
    // Lets `basedata backup --data DIR` reach this process, which holds the store.
    let _control = crate::control::ControlSocket::start(&state.store);
    // Records grants that the reply deadline turned into deemed approvals.
    let sweeper = {
        let queries = state.queries.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
            loop {
                tick.tick().await;
                if let Err(e) = queries.sweep_deemed().await {
                    tracing::warn!(code = e.code(), error = %e, "deemed-approval sweep failed");
                }
            }
        })
    };
    // Runs batch comparison jobs, resuming any a previous run left unfinished.
    let jobs = tokio::spawn(basedata_query::jobs::runner::runner(state.queries.clone()));
    match tls {
        None => axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?,
        Some(acceptor) => {
            let listener = crate::tls::TlsListener::new(listener, acceptor)?;
            let app = app.into_make_service_with_connect_info::<crate::tls::TlsPeer>();
            axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?
        }
    }
    sweeper.abort();
    jobs.abort();
    // Unsynced writes (none on the API paths, but bulk tools may share the
    // store) reach disk before the process exits.
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || store.engine().flush()).await??;
    tracing::info!("shut down cleanly");
    Ok(())
}

async fn shutdown_signal() {
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
    tracing::info!("shutdown requested; draining requests");
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
    let tls = cfg.tls.as_ref().map(crate::tls::acceptor).transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let rt = runtime()?;
    rt.block_on(async move {
        if let Some(c) = cfg.cluster.clone() {
            // The same secret as the store's: the log's payloads are sealed with it.
            let secret = load_secret(data, &cfg, key_file)?;
            let position = crate::cluster::prepare_store(&state.store, &c.served_partitions())?;
            let node = c.node.clone();
            let cluster = crate::cluster::Cluster::connect(c, &secret, position).await?;
            tracing::info!(node = %node, position, "cluster mode: updates go through the replicated log");
            state = state.with_cluster(cluster.clone());
            let to = crate::cluster::ApplyTo { catalog: state.catalog.clone(), committer: state.committer.clone() };
            tokio::spawn(crate::cluster::applier(to, cluster));
        }
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        tracing::info!(listen = %listener.local_addr()?, "serving");
        eprintln!("basedata listening on {scheme}://{}", listener.local_addr()?);
        serve_tls(state, listener, tls).await
    })
}
