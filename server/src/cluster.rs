//! Cluster mode's transport (`serve --cluster`): the replicated update
//! log on NATS JetStream. Provider updates are published to a stream
//! before they are acknowledged ([`UpdateLog`] for the provider use case),
//! and every node applies that stream, in stream order, into its own store
//! through `basedata_ingest::log` (messages, partitions, positions and
//! the guarded submission to the group committer are there; connecting,
//! publishing with retries, consuming and the watchdog are here).
//!
//! Reads carry the position they reflect (`X-Basedata-Position`) and may
//! ask for at least one (`X-Basedata-Min-Position`): read-your-writes
//! across nodes.
//!
//! Governance changes (grants, disputes, responsible persons) travel on
//! the stream's subject `<stream>.g` ([`GovernanceLog`] for the use cases
//! in `basedata_query::replicated`), in the same order as the updates, and
//! every node applies them at their place in that order.

use crate::config::ClusterConfig;
use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, consumer, stream};
use basedata_ingest::log::{
    governance_subject, message_id, partition_of_subject, put_position, submit, submit_with, Applied, ApplyWatch, LogError, LogFuture,
    LoggedMessage, Outgoing, Partitioning, Positions, Prepared, UpdateLog,
};
use basedata_query::replicated::{self, Entry, GovernanceLog};
use basedata_query::Queries;
use basedata_store::commit::Committer;
use basedata_store::{Catalog, Secret, Store, Update, WriteBatch};
use std::collections::BTreeMap;
use futures_util::{FutureExt, StreamExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use basedata_ingest::log::{prepare_store, stored_position, META_PARTITIONS, META_POSITION};

pub mod audit_ship;

/// Response header: the log position the answer reflects (at least).
pub const POSITION_HEADER: &str = "x-basedata-position";
/// Request header: answer only once this node has applied the log up to here.
pub const MIN_POSITION_HEADER: &str = "x-basedata-min-position";

/// Messages handed to the writer and not yet durable: enough to keep
/// groups large, few enough that a restart has little to redo.
const IN_FLIGHT: usize = 256;
const PARTITIONS_KEY: &str = "basedata_partitions";
/// A consumer silent this long while the stream holds messages it has not
/// received is recreated (the client's own check takes two missed 15 s
/// heartbeats).
const WATCHDOG: Duration = Duration::from_secs(3);

fn publish_message(m: &Outgoing) -> PublishMessage {
    PublishMessage::build().payload(m.payload.clone().into()).message_id(&m.id)
}

/// Messages of one request awaiting their acknowledgement at a time.
const ACK_WINDOW: usize = 64;

/// Bytes of a log server's `max_payload` kept free of every message's
/// payload for the message's headers (a message id and the JetStream
/// headers the client adds are far below this).
pub(crate) const HEADER_ROOM: usize = 1024;

/// Counters for metrics and `GET /v1/cluster`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub published: AtomicU64,
    pub publish_failures: AtomicU64,
    pub applied_messages: AtomicU64,
    pub unreadable_messages: AtomicU64,
    pub apply_failures: AtomicU64,
    /// The stream's last sequence as last seen by the applier.
    pub stream_last: AtomicU64,
    /// The largest replication lag (operations) among the stream's
    /// replicas at the last look.
    pub replica_lag: AtomicU64,
    /// Replicas the stream's leader reports current, itself included.
    pub replicas_current: AtomicU64,
}

/// Outcomes of governance entries applied here, kept for the requests
/// that logged them (a few minutes' worth at any realistic rate).
const GOV_OUTCOMES_KEPT: usize = 4_096;

/// A node's connection to the log.
pub struct Cluster {
    cfg: ClusterConfig,
    partitioning: Partitioning,
    /// `<stream>.g`.
    gov_subject: String,
    /// What applying each recent governance entry did, by position.
    gov_outcomes: Mutex<BTreeMap<u64, replicated::Applied>>,
    client: async_nats::Client,
    js: jetstream::Context,
    positions: Positions,
    /// Set while the applier cannot go on: a message this node cannot
    /// apply, or a log that no longer holds what it needs next.
    stuck: AtomicBool,
    /// Set once the stream was found with this node's settings.
    stream_ok: AtomicBool,
    /// The stream sequence of the last message received, and when the
    /// consumer last showed life: the watchdog restarts a consumer that
    /// has fallen silent while the stream grew (its server died, say).
    last_received: AtomicU64,
    last_activity: Mutex<std::time::Instant>,
    restart: tokio::sync::Notify,
    pub stats: ClusterStats,
    /// The cluster-wide audit trail: shipping this node's, keeping the others'.
    pub audit: audit_ship::AuditLink,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.cfg.node).field("position", &self.position()).finish()
    }
}

impl Cluster {
    /// Starts connecting to the NATS servers (in the background: a node
    /// serves reads whether or not the log is reachable) with the store's
    /// recorded position.
    pub async fn connect(cfg: ClusterConfig, secret: &Secret, position: u64) -> anyhow::Result<Arc<Cluster>> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("basedata-{}", cfg.node))
            .connection_timeout(Duration::from_secs(5))
            .retry_on_initial_connect()
            .connect(cfg.servers.clone())
            .await?;
        let mut js = jetstream::new(client.clone());
        // An acknowledgement not there in 5 s is asked for again by sending
        // the message again (under its id, so it is stored once).
        js.set_timeout(Duration::from_secs(5));
        Ok(Arc::new(Cluster {
            gov_subject: governance_subject(&cfg.stream),
            gov_outcomes: Mutex::new(BTreeMap::new()),
            partitioning: Partitioning::new(&cfg.stream, cfg.partitions, &cfg.served_partitions(), secret),
            client,
            js,
            positions: Positions::new(position),
            stuck: AtomicBool::new(false),
            stream_ok: AtomicBool::new(false),
            last_received: AtomicU64::new(position),
            last_activity: Mutex::new(std::time::Instant::now()),
            restart: tokio::sync::Notify::new(),
            stats: ClusterStats::default(),
            audit: audit_ship::AuditLink::default(),
            cfg,
        }))
    }

    /// Makes sure the stream exists with this node's settings (creating it
    /// the first time), waiting while the JetStream cluster is still
    /// electing its leaders.
    async fn ensure_stream(&self) -> anyhow::Result<stream::Stream> {
        let cfg = &self.cfg;
        let want = stream::Config {
            name: cfg.stream.clone(),
            subjects: stream_subjects(&cfg.stream),
            num_replicas: cfg.replicas,
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            metadata: [(PARTITIONS_KEY.to_owned(), cfg.partitions.to_string())].into(),
            ..Default::default()
        };
        let mut s = loop {
            match self.js.get_or_create_stream(want.clone()).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::info!(error = %e, "waiting for the JetStream cluster");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let mut info = s.info().await?.clone();
        // A stream made by an older release lacks the newer subjects.
        let missing: Vec<String> = want.subjects.iter().filter(|w| !info.config.subjects.contains(w)).cloned().collect();
        if !missing.is_empty() {
            let mut grown = info.config.clone();
            grown.subjects.extend(missing.iter().cloned());
            info = self.js.update_stream(grown).await?;
            tracing::info!(stream = %cfg.stream, subjects = ?missing, "the stream now takes the newer subjects too");
        }
        let theirs = info.config.metadata.get(PARTITIONS_KEY).cloned().unwrap_or_default();
        if theirs != cfg.partitions.to_string() {
            anyhow::bail!(
                "stream {} was created with {theirs:?} partitions, this node is configured with {}",
                cfg.stream,
                cfg.partitions
            );
        }
        if info.config.num_replicas != cfg.replicas {
            tracing::warn!(stream = %cfg.stream, replicas = info.config.num_replicas, "the stream keeps another number of replicas than configured");
        }
        self.stream_ok.store(true, Ordering::Release);
        Ok(s)
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// The stream sequence of the last message this node has applied durably.
    pub fn position(&self) -> u64 {
        self.positions.position()
    }

    /// Whether the NATS connection is up and the applier can go on.
    pub fn healthy(&self) -> bool {
        matches!(self.client.connection_state(), async_nats::connection::State::Connected)
            && self.stream_ok.load(Ordering::Relaxed)
            && !self.stuck.load(Ordering::Relaxed)
    }

    /// Whether the update log reaches `pos`: from what this node has seen
    /// of it, else by asking the stream for its last position (the
    /// stream's leader answers, so a position any node was given is
    /// there). `Err(last)` when the log ends before `pos`; `Ok` when it
    /// reaches it, or when the stream cannot say within `timeout` (a leader
    /// being elected): then the caller waits as for any position.
    pub async fn log_reaches(&self, pos: u64, timeout: Duration) -> Result<(), u64> {
        if pos <= self.position() || pos <= self.stats.stream_last.load(Ordering::Relaxed) {
            return Ok(());
        }
        let Ok(Ok(info)) = tokio::time::timeout(timeout, self.stream_info()).await else { return Ok(()) };
        let last = info.state.last_sequence;
        self.stats.stream_last.fetch_max(last, Ordering::Relaxed);
        if pos <= last {
            Ok(())
        } else {
            Err(last)
        }
    }

    /// Waits until this node has applied the log up to `pos`; false when
    /// `timeout` passes first.
    pub async fn wait_for(&self, pos: u64, timeout: Duration) -> bool {
        self.positions.wait_for(pos, timeout).await
    }

    /// Publishes prepared messages: sent back to back with at most
    /// [`ACK_WINDOW`] unacknowledged, so that one round trip covers many
    /// and no request holds more of the client's acknowledgement slots
    /// than that. A message the stream did not acknowledge within 5 s — its
    /// leader died and a new one is being elected — is sent again, backing
    /// off, under the same id for up to `publish_retry_ms`; JetStream
    /// stores it once. Once this returns the updates are durable on a
    /// quorum of the stream's replicas.
    async fn publish(&self, prepared: &Prepared) -> Result<Vec<LoggedMessage>, LogError> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.cfg.publish_retry_ms);
        let mut done = Vec::with_capacity(prepared.messages.len());
        let mut pending = std::collections::VecDeque::with_capacity(ACK_WINDOW);
        for m in &prepared.messages {
            if pending.len() == ACK_WINDOW {
                let (m, first) = pending.pop_front().expect("a full window");
                done.push(self.settle(m, first, deadline).await?);
            }
            let first = self.publish_once(m).await;
            pending.push_back((m, first));
        }
        while let Some((m, first)) = pending.pop_front() {
            done.push(self.settle(m, first, deadline).await?);
        }
        self.stats.published.fetch_add(done.len() as u64, Ordering::Relaxed);
        Ok(done)
    }

    /// Sends `m` once; the acknowledgement is awaited apart.
    async fn publish_once(&self, m: &Outgoing) -> Result<PublishAckFuture, Unsent> {
        self.js.send_publish(m.subject.clone(), publish_message(m)).await.map_err(Unsent::from)
    }

    /// Awaits a sent message's acknowledgement, sending it again (backing
    /// off) until the stream takes it or `deadline` passes.
    async fn settle(
        &self,
        m: &Outgoing,
        first: Result<PublishAckFuture, Unsent>,
        deadline: tokio::time::Instant,
    ) -> Result<LoggedMessage, LogError> {
        let acked = |sent: Result<PublishAckFuture, Unsent>| async move { sent?.await.map_err(Unsent::from) };
        let mut attempt = acked(first).await;
        let mut backoff = Duration::from_millis(100);
        loop {
            match attempt {
                Ok(a) => return Ok(LoggedMessage { position: a.sequence, partition: m.partition, lines: m.lines }),
                Err(e) if e.permanent || tokio::time::Instant::now() >= deadline => {
                    self.stats.publish_failures.fetch_add(1, Ordering::Relaxed);
                    return Err(LogError(format!(
                        "the update log did not take the updates (acknowledgement: {}); nothing was acknowledged, resend them",
                        e.text
                    )));
                }
                Err(_) => {
                    // Backing off: a stream slow to acknowledge (a new leader
                    // catching up) must not be sent more copies than it can
                    // take; each copy under the same id is stored once.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    attempt = acked(self.publish_once(m).await).await;
                }
            }
        }
    }

    fn touch(&self) {
        *self.last_activity.lock().unwrap_or_else(|e| e.into_inner()) = std::time::Instant::now();
    }

    /// Looks at the stream (its replicas' lag, for metrics) and restarts a
    /// consumer that receives nothing while the stream grows.
    async fn observe_stream(&self) {
        let Ok(info) = self.stream_info().await else { return };
        let last = info.state.last_sequence;
        self.stats.stream_last.fetch_max(last, Ordering::Relaxed);
        let silent = self.last_activity.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
        // A stuck applier is silent on purpose.
        if last > self.last_received.load(Ordering::Relaxed) && silent > WATCHDOG && !self.stuck.load(Ordering::Relaxed) {
            tracing::warn!(stream_last = last, received = self.last_received.load(Ordering::Relaxed), "the log consumer fell silent; restarting it");
            self.touch();
            self.restart.notify_one();
        }
        if let Some(c) = &info.cluster {
            let lag = c.replicas.iter().filter_map(|r| r.lag).max().unwrap_or(0);
            let current = 1 + c.replicas.iter().filter(|r| r.current && !r.offline).count();
            self.stats.replica_lag.store(lag, Ordering::Relaxed);
            self.stats.replicas_current.store(current as u64, Ordering::Relaxed);
        }
    }

    /// The stream's state now: first and last sequence, leader, replicas.
    pub async fn stream_info(&self) -> Result<stream::Info, LogError> {
        let mut s = self.js.get_stream(&self.cfg.stream).await.map_err(|e| LogError(e.to_string()))?;
        s.info().await.map(|i| i.clone()).map_err(|e| LogError(e.to_string()))
    }
}

/// The subjects of the stream: update partitions, governance entries and
/// each node's audit entries.
fn stream_subjects(stream: &str) -> Vec<String> {
    vec![format!("{stream}.p.*"), governance_subject(stream), format!("{stream}.a.*")]
}

impl Cluster {
    /// Remembers what applying the governance entry at `seq` did, for the
    /// request that logged it.
    fn gov_applied(&self, seq: u64, applied: replicated::Applied) {
        let mut o = self.gov_outcomes.lock().unwrap_or_else(|e| e.into_inner());
        o.insert(seq, applied);
        while o.len() > GOV_OUTCOMES_KEPT {
            o.pop_first();
        }
    }

    /// The largest payload a message of ours may carry: the log's servers'
    /// `max_payload` less [`HEADER_ROOM`], since a message's headers (its
    /// id) count in that limit too: the client refuses, and the servers
    /// would reject, a message whose headers and payload pass it. Read at
    /// each use, as the one connected to says: it may change on a
    /// reconnect to another server.
    pub(crate) fn payload_limit(&self) -> usize {
        self.client.server_info().max_payload.max(4 * HEADER_ROOM) - HEADER_ROOM
    }
}

impl GovernanceLog for Cluster {
    fn node(&self) -> &str {
        &self.cfg.node
    }

    fn append<'a>(&'a self, entry: Vec<u8>) -> replicated::LogFuture<'a, Result<u64, String>> {
        Box::pin(async move {
            if !self.stream_ok.load(Ordering::Acquire) {
                return Err("this node has not reached the log yet".to_owned());
            }
            let payload = self.partitioning.seal(&self.gov_subject, &entry).map_err(|e| e.0)?;
            let limit = self.payload_limit();
            if payload.len() > limit {
                return Err(format!("the entry takes {} bytes, more than the log's servers take ({limit})", payload.len()));
            }
            let prepared = Prepared {
                messages: vec![Outgoing { subject: self.gov_subject.clone(), payload, id: message_id(), partition: 0, lines: 0 }],
                too_large: Vec::new(),
                limit,
            };
            let logged = self.publish(&prepared).await.map_err(|e| e.0)?;
            logged.first().map(|m| m.position).ok_or_else(|| "the log acknowledged nothing".to_owned())
        })
    }

    fn outcome<'a>(&'a self, position: u64) -> replicated::LogFuture<'a, Option<replicated::Applied>> {
        Box::pin(async move {
            if !self.positions.wait_for(position, self.apply_wait()).await {
                return None;
            }
            self.gov_outcomes.lock().unwrap_or_else(|e| e.into_inner()).get(&position).cloned()
        })
    }
}

impl UpdateLog for Cluster {
    fn prepare(&self, store: &Store, dataset: &str, updates: &[Update]) -> Result<Prepared, LogError> {
        if !self.stream_ok.load(Ordering::Acquire) {
            return Err(LogError("this node has not reached the update log yet; nothing was acknowledged, resend".into()));
        }
        let limit = self.payload_limit();
        self.partitioning.prepare(store, dataset, updates, limit)
    }

    fn send<'a>(&'a self, prepared: &'a Prepared) -> LogFuture<'a, Result<Vec<LoggedMessage>, LogError>> {
        Box::pin(self.publish(prepared))
    }

    fn partitioning(&self) -> &Partitioning {
        &self.partitioning
    }

    fn positions(&self) -> &Positions {
        &self.positions
    }

    fn apply_wait(&self) -> Duration {
        Duration::from_millis(self.cfg.apply_wait_ms)
    }
}

/// The applier's view of what became of each message it submitted.
impl ApplyWatch for Cluster {
    fn applied(&self, seq: u64, applied: Applied) {
        self.positions.record(seq, applied);
        self.stats.applied_messages.fetch_add(1, Ordering::Relaxed);
        // Going on again: whatever stopped the applier is behind it.
        self.stuck.store(false, Ordering::Relaxed);
        // Answered jobs are a sign of life too: a writer slow on a busy
        // disk must not look like a dead consumer to the watchdog.
        self.touch();
    }

    fn failed(&self, seq: u64, error: &basedata_store::Error) {
        self.stats.apply_failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(position = seq, error = %error, "applying a log message failed");
        self.restart.notify_one();
    }
}

/// What the applier writes with: the store's catalog and its one writer,
/// and the governance use cases that apply governance entries.
#[derive(Clone)]
pub struct ApplyTo {
    pub catalog: Arc<Catalog>,
    pub committer: Arc<Committer>,
    /// Read (never written) by the audit trail's shipper and applier.
    pub store: Arc<Store>,
    pub queries: Arc<Queries>,
}

/// Applies the log into the store, forever: restarts from the durable
/// position after a lost connection, a failed write or a silent consumer;
/// waits longer (and reports itself unready) while it is stuck on a
/// message it cannot apply or on a log that no longer holds what it needs.
pub async fn applier(to: ApplyTo, cluster: Arc<Cluster>) {
    {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                cluster.observe_stream().await;
            }
        });
    }
    tokio::spawn(audit_ship::shipper(to.store.clone(), cluster.clone()));
    loop {
        match apply_from(&to, &cluster).await {
            Ok(()) => tracing::warn!("the log consumer ended; resuming"),
            Err(e) => tracing::warn!(error = %e, position = cluster.position(), "applying the log stopped; resuming"),
        }
        let pause = if cluster.stuck.load(Ordering::Relaxed) { 5_000 } else { 500 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Why a run of the applier cannot go on until something changes.
fn stuck(cluster: &Cluster, why: String) -> anyhow::Error {
    cluster.stuck.store(true, Ordering::Relaxed);
    anyhow::anyhow!(why)
}

/// One run of the applier, from the position + 1. Its jobs form one chain
/// of the group committer: a failed write raises the chain's guard, so no
/// later message of the run is written without it, and the position on
/// disk and in memory stays at the last message written, every message
/// before it written too. The run ends only once every job it handed to
/// the writer has been answered, so the next run starts from a position
/// nothing will move any more.
async fn apply_from(to: &ApplyTo, cluster: &Arc<Cluster>) -> anyhow::Result<()> {
    let chain = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let result = consume(to, cluster, &chain, &in_flight).await;
    let _drained = in_flight.acquire_many(IN_FLIGHT as u32).await;
    result
}

async fn consume(
    to: &ApplyTo,
    cluster: &Arc<Cluster>,
    chain: &Arc<AtomicBool>,
    in_flight: &Arc<tokio::sync::Semaphore>,
) -> anyhow::Result<()> {
    let from = cluster.position() + 1;
    let s = cluster.ensure_stream().await?;
    // Fetched just now by `ensure_stream`.
    let info = s.cached_info();
    if info.state.first_sequence > from {
        return Err(stuck(
            cluster,
            format!(
                "the log starts at {} but this node needs {from} next: seed it from a backup of a node that is further on",
                info.state.first_sequence
            ),
        ));
    }
    if from > info.state.last_sequence + 1 {
        return Err(stuck(
            cluster,
            format!("this node has applied the log up to {} but the log ends at {} (was the stream recreated?)", from - 1, info.state.last_sequence),
        ));
    }
    let deliver_policy = if from <= 1 {
        consumer::DeliverPolicy::All
    } else {
        consumer::DeliverPolicy::ByStartSequence { start_sequence: from }
    };
    let consumer = s
        .create_consumer(consumer::pull::OrderedConfig {
            name: None,
            deliver_policy,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    tracing::info!(from, node = %cluster.cfg.node, "applying the update log");
    cluster.last_received.store(from - 1, Ordering::Relaxed);
    cluster.touch();
    // A restart asked for before this run began is this run.
    let _ = cluster.restart.notified().now_or_never();
    cluster.audit.begin_run();
    let mut next = from;
    let mut unwritten = 0u32;
    loop {
        let m = tokio::select! {
            m = messages.next() => m,
            _ = cluster.restart.notified() => anyhow::bail!("restarted (a failed write, or a silent consumer)"),
        };
        let Some(m) = m else { return Ok(()) };
        if chain.load(Ordering::Acquire) {
            anyhow::bail!("a write of applied updates failed");
        }
        let m = m?;
        cluster.touch();
        let (seq, pending) = {
            let info = m.info().map_err(|e| anyhow::anyhow!("a log message without its position: {e}"))?;
            (info.stream_sequence, info.pending)
        };
        cluster.stats.stream_last.fetch_max(seq + pending, Ordering::Relaxed);
        cluster.last_received.fetch_max(seq, Ordering::Relaxed);
        if seq < next {
            continue;
        }
        if seq > next {
            // Deleted from the stream before this node read it.
            return Err(stuck(cluster, format!("the log has no message {next} (the next is {seq}): seed this node from a backup")));
        }
        next = seq + 1;
        // Another node's audit entries: appended to its chain here.
        if let Some(staged) = audit_ship::stage(cluster, &to.store, &m.subject, &m.payload) {
            let extra = staged.map_err(|e| stuck(cluster, format!("log message {seq} ({}) cannot be applied here: {e}", m.subject)))?;
            unwritten = 0;
            let permit = in_flight.clone().acquire_owned().await?;
            let watch: Arc<dyn ApplyWatch> = cluster.clone();
            submit_with(&to.committer, watch, chain, seq, Vec::new(), extra, true, permit).await?;
            continue;
        }
        if m.subject.as_str() == cluster.gov_subject {
            apply_governance(to, cluster, chain, in_flight, seq, &m.payload).await?;
            unwritten = 0;
            continue;
        }
        let held = partition_of_subject(&cluster.cfg.stream, &m.subject).is_some_and(|p| cluster.partitioning.serves(p));
        // Another node's partition: nothing to open or apply; the position
        // passes it in order, through the writer, which writes nothing for
        // an empty job but now and then the position.
        let updates = if held {
            match cluster.partitioning.open(&to.catalog, &m.subject, &m.payload) {
                Ok(u) => u,
                Err(e) => {
                    // Not skipped: a node whose catalog or secret is not yet
                    // its peers' (a rolling upgrade) applies it once it is.
                    cluster.stats.unreadable_messages.fetch_add(1, Ordering::Relaxed);
                    return Err(stuck(cluster, format!("log message {seq} ({}) cannot be applied here: {e}", m.subject)));
                }
            }
        } else {
            Vec::new()
        };
        unwritten = if held { 0 } else { unwritten + 1 };
        let write_position = held || unwritten >= SKIPPED_BETWEEN_WRITES;
        if write_position {
            unwritten = 0;
        }
        let permit = in_flight.clone().acquire_owned().await?;
        let watch: Arc<dyn ApplyWatch> = cluster.clone();
        submit(&to.committer, watch, chain, seq, updates, write_position, permit).await?;
    }
}

/// Applies the governance entry at `seq`, once every message before it is
/// durable here (so the state it is checked against, and the change-log
/// mark a dispute takes, are the same at this point on every node), with
/// the position in the same batch. Only the node that logged the entry
/// records its audit events.
async fn apply_governance(
    to: &ApplyTo,
    cluster: &Arc<Cluster>,
    chain: &Arc<AtomicBool>,
    in_flight: &Arc<tokio::sync::Semaphore>,
    seq: u64,
    payload: &[u8],
) -> anyhow::Result<()> {
    let _all = in_flight.clone().acquire_many_owned(IN_FLIGHT as u32).await?;
    if chain.load(Ordering::Acquire) {
        anyhow::bail!("a write of applied updates failed");
    }
    let entry = cluster
        .partitioning
        .unseal(&cluster.gov_subject, payload)
        .and_then(|plain| Entry::decode(&plain).map_err(|e| e.to_string()))
        .and_then(|e| {
            let events = if e.origin == cluster.cfg.node { e.events().map_err(|e| e.to_string())? } else { Vec::new() };
            Ok((e, events))
        });
    let (entry, events) = match entry {
        Ok(x) => x,
        Err(e) => {
            cluster.stats.unreadable_messages.fetch_add(1, Ordering::Relaxed);
            return Err(stuck(cluster, format!("governance entry {seq} cannot be applied here: {e}")));
        }
    };
    let mut extra = WriteBatch::new();
    put_position(&mut extra, seq);
    match to.queries.apply_change(&entry.change, events, extra).await {
        Ok(applied) => {
            if let Err(why) = &applied {
                tracing::info!(position = seq, origin = %entry.origin, why = %why, "a governance entry found the state changed and changed nothing");
            }
            cluster.gov_applied(seq, applied);
            cluster.applied(seq, Applied::default());
            Ok(())
        }
        Err(e) => {
            cluster.stats.apply_failures.fetch_add(1, Ordering::Relaxed);
            anyhow::bail!("applying governance entry {seq} failed: {e}")
        }
    }
}

/// Messages of other partitions after which a node that holds only some
/// writes its position anyway, so that a restart need not re-read them
/// all (and finds them even if the stream has since dropped old ones).
const SKIPPED_BETWEEN_WRITES: u32 = 1_000;

/// Why a message was not taken by the log.
#[derive(Debug)]
struct Unsent {
    text: String,
    /// Sending the same message again cannot succeed (it is larger than
    /// the log's servers take), so waiting out the retry deadline would
    /// only hold the provider's request.
    permanent: bool,
}

impl From<PublishError> for Unsent {
    fn from(e: PublishError) -> Unsent {
        Unsent { permanent: e.kind() == PublishErrorKind::MaxPayloadExceeded, text: e.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a message over the size limit is given up on at once; a stream
    /// slow to answer or briefly gone is sent to again until the deadline.
    #[test]
    fn only_an_oversized_message_is_not_sent_again() {
        let over = Unsent::from(PublishError::new(PublishErrorKind::MaxPayloadExceeded));
        assert!(over.permanent);
        assert!(over.text.contains("max payload"), "{}", over.text);
        for kind in [PublishErrorKind::TimedOut, PublishErrorKind::BrokenPipe, PublishErrorKind::StreamNotFound, PublishErrorKind::Other] {
            assert!(!Unsent::from(PublishError::new(kind)).permanent, "{kind:?}");
        }
    }
}
