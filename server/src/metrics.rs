//! `GET /metrics`: Prometheus text format. Request counters and latency
//! histograms per route and department are updated by the access-log
//! layer (each request thread keeps the handles of the series it counts);
//! store, writer and RocksDB figures are read at scrape time, so the
//! request path pays for an atomic increment and a histogram observation,
//! nothing more.

use basedata_store::commit::CommitStats;
use basedata_store::engine::EngineStats;
use basedata_store::{Cf, Store};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::atomic::Ordering;

/// The engine's figures per column family with their `property` labels.
/// The labels are what dashboards select on: they stay the RocksDB
/// property names (without `rocksdb.`) they were first published as,
/// whatever the figures are called in the store.
fn engine_figures(s: &EngineStats) -> [(&'static str, Option<u64>); 10] {
    [
        ("estimate-num-keys", s.estimated_keys),
        ("total-sst-files-size", s.total_sst_bytes),
        ("live-sst-files-size", s.live_sst_bytes),
        ("cur-size-all-mem-tables", s.memtable_bytes),
        ("estimate-pending-compaction-bytes", s.pending_compaction_bytes),
        ("num-running-compactions", s.running_compactions),
        ("num-running-flushes", s.running_flushes),
        ("num-files-at-level0", s.l0_files),
        ("block-cache-usage", s.block_cache_bytes),
        ("block-cache-pinned-usage", s.block_cache_pinned_bytes),
    ]
}

/// The series of one kind of answer, as a request thread last found them.
struct Series {
    metrics: u64,
    route: String,
    method: String,
    status: axum::http::StatusCode,
    department: String,
    requests: prometheus::IntCounter,
    latency: prometheus::Histogram,
}

/// Kinds of answer a request thread keeps the series of; past this the
/// cache starts over (routes, statuses and departments are few, so it
/// rarely does).
const SERIES_CACHED: usize = 64;

thread_local! {
    /// Finding a series by its label values hashes them all and takes the
    /// family's lock, and the handle it returns is a reference count
    /// shared by every thread: per request, that cost more than the count
    /// itself. Each thread keeps the handles it used.
    static SERIES: std::cell::RefCell<Vec<Series>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub struct Metrics {
    /// Tells this instance's series apart in the request threads' caches
    /// (tests build many instances on one thread).
    id: u64,
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    refused: IntCounterVec,
    last_seq: IntGauge,
    kept_after: IntGauge,
    calendar_last_year: IntGauge,
    audit_seq: IntGauge,
    prints: IntGauge,
    batch_spilled: IntGauge,
    dataset_records: IntGaugeVec,
    dataset_updates: IntGaugeVec,
    commit: IntGaugeVec,
    rocks: IntGaugeVec,
    journal: IntGaugeVec,
    index_tail: IntGaugeVec,
    cluster: IntGaugeVec,
    connections: IntGaugeVec,
    log_write_errors: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("basedata".into()), None).expect("registry");
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route template, method, status and department"),
            &["route", "method", "status", "department"],
        )
        .expect("metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by route and department")
                .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0]),
            &["route", "department"],
        )
        .expect("metric");
        let refused = IntCounterVec::new(
            Opts::new("requests_refused_total", "Requests refused by per-department limits"),
            &["department", "reason"],
        )
        .expect("metric");
        let last_seq = IntGauge::new("change_log_last_seq", "Sequence number of the last applied change").expect("metric");
        let kept_after = IntGauge::new(
            "change_log_kept_after",
            "The change log holds no change numbered at or below this (removed for change_retention_days; 0: none removed)",
        )
        .expect("metric");
        let calendar_last_year = IntGauge::new(
            "calendar_last_year",
            "The last year whose holidays and make-up days the working-day calendar holds (0: none); deadlines past it count weekends and the holidays fixed by date only",
        )
        .expect("metric");
        let audit_seq = IntGauge::new("audit_last_seq", "Sequence number of the last audit entry").expect("metric");
        let prints = IntGauge::new("verify_prints_records", "Records whose claim fingerprints are held in memory (-1: not kept)").expect("metric");
        let batch_spilled = IntGauge::new(
            "batch_spilled_bytes",
            "Bytes of batch answers spilled to disk and not yet read by their clients, all batches together (bounded by the server's spill budget)",
        )
        .expect("metric");
        let log_write_errors =
            IntGauge::new("log_write_errors", "Failed writes of the server's log (a full disk, a closed pipe); the lines of a failed write are given up").expect("metric");
        let dataset_records =
            IntGaugeVec::new(Opts::new("dataset_records", "Records held per dataset"), &["dataset"]).expect("metric");
        let dataset_updates =
            IntGaugeVec::new(Opts::new("dataset_updates_total", "Changes applied per dataset"), &["dataset"]).expect("metric");
        let commit = IntGaugeVec::new(
            Opts::new("writer", "Group-commit writer: groups (writes; a failed group tried again job by job writes each alone), jobs, items, largest_group, longest_commit_us, slow_commits (over 10 ms), long_commits (over 3 ms), queued, failures, sliced_jobs and slices (jobs too large for one group, written a slice per group), bulk_jobs (batch work, a batch's chunks and job progress, written after the jobs queued meanwhile), use_records (audited uses appended to the journal), use_syncs, longest_use_sync_us and slow_use_syncs (over 10 ms; the syncs their answers wait for), uses_entered (records entered into the audit trail behind), gather_pauses (small groups the busy writer waited for more jobs before, up to commit_pause_us)"),
            &["stat"],
        )
        .expect("metric");
        let rocks = IntGaugeVec::new(
            Opts::new("rocksdb_property", "RocksDB integer properties per column family"),
            &["cf", "property"],
        )
        .expect("metric");
        let journal = IntGaugeVec::new(
            Opts::new(
                "journal",
                "The store's write-ahead journal since open: records, writes (group writes, one pwrite each), syncs (fdatasyncs), bytes, largest_group (records), replayed (at open, after a crash), segments (files held), longest_sync_us and slow_syncs (group writes and syncs over 10 ms: the disk's stalls, which basedata_writer's slow_commits wait out), failed_releases (segments that could not be removed: the journal grows until one is)",
            ),
            &["stat"],
        )
        .expect("metric");
        let index_tail = IntGaugeVec::new(
            Opts::new(
                "audit_index_tail",
                "The audit index's keys held in memory until put into the store as a sorted file: keys, parts (unsorted groups and sorted runs), files (put in since start), failures (tries that failed; the keys stay in memory and are tried again)",
            ),
            &["stat"],
        )
        .expect("metric");
        let cluster = IntGaugeVec::new(
            Opts::new(
                "cluster",
                "Cluster mode: position, stream_last, lag, replica_lag, replicas_current, published, publish_failures, applied_messages, unreadable_messages, apply_failures, audit_head, audit_shipped, audit_unshipped, audit_shipped_entries, audit_ship_failures, audit_ship_lag_max_ms, audit_ship_lag_p99_ms",
            ),
            &["stat"],
        )
        .expect("metric");
        let connections = IntGaugeVec::new(
            Opts::new(
                "connections",
                "Connections: open, accepted, refused_per_client, refused_total, closed_idle, closed_header, closed_send, handed_over (to hyper by the connection loop of subject reads)",
            ),
            &["stat"],
        )
        .expect("metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(refused.clone()),
            Box::new(last_seq.clone()),
            Box::new(kept_after.clone()),
            Box::new(calendar_last_year.clone()),
            Box::new(audit_seq.clone()),
            Box::new(prints.clone()),
            Box::new(batch_spilled.clone()),
            Box::new(dataset_records.clone()),
            Box::new(dataset_updates.clone()),
            Box::new(commit.clone()),
            Box::new(rocks.clone()),
            Box::new(journal.clone()),
            Box::new(index_tail.clone()),
            Box::new(cluster.clone()),
            Box::new(connections.clone()),
            Box::new(log_write_errors.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        #[cfg(target_os = "linux")]
        {
            let _ = registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        }
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Metrics {
            id,
            registry,
            requests,
            latency,
            refused,
            last_seq,
            kept_after,
            calendar_last_year,
            audit_seq,
            prints,
            batch_spilled,
            dataset_records,
            dataset_updates,
            commit,
            rocks,
            journal,
            index_tail,
            cluster,
            connections,
            log_write_errors,
        }
    }

    pub fn observe(&self, route: &str, method: &str, status: axum::http::StatusCode, department: &str, seconds: f64) {
        SERIES.with_borrow_mut(|cache| {
            let found = cache.iter().position(|s| {
                s.metrics == self.id && s.status == status && s.method == method && s.route == route && s.department == department
            });
            let i = match found {
                Some(i) => i,
                None => {
                    if cache.len() >= SERIES_CACHED {
                        cache.clear();
                    }
                    // `as_str` is a static string: no allocation per request.
                    cache.push(Series {
                        metrics: self.id,
                        route: route.to_owned(),
                        method: method.to_owned(),
                        status,
                        department: department.to_owned(),
                        requests: self.requests.with_label_values(&[route, method, status.as_str(), department]),
                        latency: self.latency.with_label_values(&[route, department]),
                    });
                    cache.len() - 1
                }
            };
            cache[i].requests.inc();
            cache[i].latency.observe(seconds);
        });
    }

    pub fn refused(&self, department: &str, reason: &str) {
        self.refused.with_label_values(&[department, reason]).inc();
    }

    /// The connection figures, read at scrape time like the rest.
    pub fn set_connections(&self, c: &crate::conn::ConnStats) {
        for (name, v) in c.figures() {
            self.connections.with_label_values(&[name]).set(v as i64);
        }
    }

    /// Cluster mode's figures, read at scrape time like the rest.
    pub fn set_cluster(&self, c: &crate::cluster::Cluster) {
        let st = &c.stats;
        let position = c.position();
        let stream_last = st.stream_last.load(Ordering::Relaxed);
        for (name, v) in [
            ("position", position),
            ("stream_last", stream_last),
            ("lag", stream_last.saturating_sub(position)),
            ("replica_lag", st.replica_lag.load(Ordering::Relaxed)),
            ("replicas_current", st.replicas_current.load(Ordering::Relaxed)),
            ("published", st.published.load(Ordering::Relaxed)),
            ("publish_failures", st.publish_failures.load(Ordering::Relaxed)),
            ("applied_messages", st.applied_messages.load(Ordering::Relaxed)),
            ("unreadable_messages", st.unreadable_messages.load(Ordering::Relaxed)),
            ("apply_failures", st.apply_failures.load(Ordering::Relaxed)),
        ] {
            self.cluster.with_label_values(&[name]).set(v as i64);
        }
        for (name, v) in crate::cluster::audit_ship::figures(&c.audit.stats) {
            self.cluster.with_label_values(&[name]).set(v as i64);
        }
    }

    /// Notes the working-day calendar the server counts deadlines on.
    pub fn set_calendar(&self, calendar: &basedata_store::calendar::Calendar) {
        self.calendar_last_year.set(calendar.last_year().map_or(0, i64::from));
    }

    /// Reads the scrape-time figures and renders everything.
    pub fn render(&self, store: &Store, commit: &CommitStats) -> String {
        self.last_seq.set(store.last_seq() as i64);
        self.kept_after.set(store.changes_kept_after() as i64);
        if let Ok(h) = store.audit_head() {
            self.audit_seq.set(h.seq as i64);
        }
        self.prints.set(store.prints().map_or(-1, |p| p.len() as i64));
        self.batch_spilled.set(crate::spool::SPILL_BUDGET.used() as i64);
        self.log_write_errors.set(crate::logging::write_errors() as i64);
        for ds in store.catalog().datasets() {
            let s = store.dataset_stats(&ds.id);
            self.dataset_records.with_label_values(&[&ds.id]).set(s.records as i64);
            self.dataset_updates.with_label_values(&[&ds.id]).set(s.updates as i64);
        }
        for (name, v) in [
            ("groups", commit.groups.load(Ordering::Relaxed)),
            ("jobs", commit.jobs.load(Ordering::Relaxed)),
            ("items", commit.items.load(Ordering::Relaxed)),
            ("largest_group", commit.largest_group.load(Ordering::Relaxed)),
            ("longest_commit_us", commit.longest_commit_us.load(Ordering::Relaxed)),
            ("slow_commits", commit.slow_commits.load(Ordering::Relaxed)),
            ("long_commits", commit.long_commits.load(Ordering::Relaxed)),
            ("queued", commit.queued.load(Ordering::Relaxed) as u64),
            ("failures", commit.failures.load(Ordering::Relaxed)),
            ("sliced_jobs", commit.sliced_jobs.load(Ordering::Relaxed)),
            ("bulk_jobs", commit.bulk_jobs.load(Ordering::Relaxed)),
            ("slices", commit.slices.load(Ordering::Relaxed)),
            ("use_records", commit.use_records.load(Ordering::Relaxed)),
            ("use_syncs", commit.use_syncs.load(Ordering::Relaxed)),
            ("longest_use_sync_us", commit.longest_use_sync_us.load(Ordering::Relaxed)),
            ("slow_use_syncs", commit.slow_use_syncs.load(Ordering::Relaxed)),
            ("uses_entered", commit.uses_entered.load(Ordering::Relaxed)),
            ("gather_pauses", commit.gather_pauses.load(Ordering::Relaxed)),
        ] {
            self.commit.with_label_values(&[name]).set(v as i64);
        }
        for cf in Cf::ALL {
            for (label, v) in engine_figures(&store.engine().stats(cf)) {
                if let Some(v) = v {
                    self.rocks.with_label_values(&[cf.name(), label]).set(v as i64);
                }
            }
        }
        if let Some(j) = store.engine().journal_stats() {
            for (name, v) in j.figures() {
                self.journal.with_label_values(&[name]).set(v as i64);
            }
        }
        let t = store.index_tail().stats();
        for (name, v) in [("keys", t.entries as u64), ("parts", t.parts as u64), ("files", t.files), ("failures", t.failures)] {
            self.index_tail.with_label_values(&[name]).set(v as i64);
        }
        let mut out = Vec::with_capacity(16 << 10);
        // Encoding into a Vec cannot fail for valid metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basedata_store::clock::SystemClock;
    use basedata_store::dir::{open_with_secret, OpenOptions};
    use basedata_store::{Catalog, Secret};
    use std::sync::Arc;

    #[test]
    fn engine_figures_keep_their_published_labels() {
        let dir = tempfile::tempdir().unwrap();
        let opts = OpenOptions { block_cache_bytes: 8 << 20, warm_page_cache: false, prime_wal_bytes: 0 };
        let secret = Secret::generate().unwrap();
        let opened = open_with_secret(dir.path(), &secret, Arc::new(Catalog::builtin()), Arc::new(SystemClock), &opts);
        let text = Metrics::new().render(&opened.unwrap().store, &CommitStats::default());
        for label in [
            "estimate-num-keys",
            "total-sst-files-size",
            "live-sst-files-size",
            "cur-size-all-mem-tables",
            "estimate-pending-compaction-bytes",
            "num-running-compactions",
            "num-running-flushes",
            "num-files-at-level0",
            "block-cache-usage",
            "block-cache-pinned-usage",
        ] {
            for cf in Cf::ALL {
                let series = format!("basedata_rocksdb_property{{cf=\"{}\",property=\"{label}\"}}", cf.name());
                assert!(text.contains(&series), "{series} missing:\n{text}");
            }
        }
        // Opening wrote the store's format records: the journal took them.
        for stat in ["records", "writes", "syncs", "bytes", "largest_group", "replayed", "segments", "longest_sync_us", "slow_syncs", "failed_releases"] {
            let series = format!("basedata_journal{{stat=\"{stat}\"}}");
            assert!(text.contains(&series), "{series} missing:\n{text}");
        }
        let records = text.lines().find_map(|l| l.strip_prefix("basedata_journal{stat=\"records\"} ")).unwrap();
        assert!(records.parse::<u64>().unwrap() > 0, "{text}");
    }
}
