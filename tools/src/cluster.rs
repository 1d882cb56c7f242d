//! Cluster mode (`serve --cluster`): provider updates are made durable in a
//! replicated NATS JetStream stream before they are acknowledged, and every
//! node applies that stream, in stream order, into its own store.
//!
//! - The log: one stream, subjects `<stream>.p.<partition>`, the partition
//!   being xxh3 of the key's pseudonym modulo the configured count. Each
//!   message holds updates of one dataset and one partition as update
//!   lines (the API's own format, keys normalized), sealed with a key
//!   derived from the store secret ([`LogSealer`]): the NATS servers hold
//!   neither real keys nor field values in the clear.
//! - Applying: an ordered consumer from the node's recorded position; each
//!   message's updates go through the group committer like a provider's,
//!   with the message's stream sequence written in the same atomic batch
//!   (`cluster/position` in `meta`), so a restart resumes exactly after the
//!   last applied message. Re-applying is harmless anyway: provider
//!   versions make a repeated update stale.
//! - Reads carry the position they reflect (`X-Basedata-Position`) and may
//!   ask for at least one (`X-Basedata-Min-Position`): read-your-writes
//!   across nodes.

use crate::config::ClusterConfig;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, consumer, stream};
use basedata_ingest::line::{parse_line, write_line};
use basedata_store::codec::{decode, encode};
use basedata_store::commit::SubmitError;
use basedata_store::pseudo::LogSealer;
use basedata_store::{Catalog, Cf, Outcome, Secret, Store, SubjectKey, Update, WriteBatch};
use futures_util::{FutureExt, StreamExt};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The store's position in the log: the stream sequence of the last
/// applied message.
pub const META_POSITION: &[u8] = b"cluster/position";
/// The partitions a store's position covers.
pub const META_PARTITIONS: &[u8] = b"cluster/partitions";
/// Response header: the log position the answer reflects (at least).
pub const POSITION_HEADER: &str = "x-basedata-position";
/// Request header: answer only once this node has applied the log up to here.
pub const MIN_POSITION_HEADER: &str = "x-basedata-min-position";

/// Plaintext bytes of update lines per log message, well below NATS's
/// default 1 MiB message limit once sealed.
const MESSAGE_BYTES: usize = 256 << 10;
/// Messages handed to the writer and not yet durable: enough to keep
/// groups large, few enough that a restart has little to redo.
const IN_FLIGHT: usize = 256;
/// Outcomes of recently applied messages kept for the requests that
/// logged them.
const OUTCOMES_KEPT: usize = 65_536;
const PARTITIONS_KEY: &str = "basedata_partitions";
/// A consumer silent this long while the stream holds messages it has not
/// received is recreated (the client's own check takes two missed 15 s
/// heartbeats).
const WATCHDOG: Duration = Duration::from_secs(3);

/// What applying one log message did on this node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub applied: usize,
    pub stale: usize,
    /// The node's last change-log sequence number after it.
    pub last_seq: u64,
}

/// A log message ready to publish.
#[derive(Debug)]
pub struct Outgoing {
    subject: String,
    payload: bytes::Bytes,
    /// Sent again under the same id, it is stored once.
    id: String,
    partition: u16,
    lines: usize,
}

impl Outgoing {
    fn build(&self) -> PublishMessage {
        PublishMessage::build().payload(self.payload.clone()).message_id(&self.id)
    }
}

/// A provider request's updates as log messages.
#[derive(Debug, Default)]
pub struct Prepared {
    pub messages: Vec<Outgoing>,
    /// Indices of updates too large for one message of the NATS servers.
    pub too_large: Vec<usize>,
    /// That limit, in bytes.
    pub limit: usize,
}

/// Messages of one request awaiting their acknowledgement at a time.
const ACK_WINDOW: usize = 64;

/// One message of a provider's request, acknowledged by the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoggedMessage {
    pub position: u64,
    pub partition: u16,
    /// Update lines in it.
    pub lines: usize,
}

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

/// A node's connection to the log.
pub struct Cluster {
    cfg: ClusterConfig,
    /// Per partition: whether this node holds it.
    served: Vec<bool>,
    client: async_nats::Client,
    js: jetstream::Context,
    sealer: LogSealer,
    position: tokio::sync::watch::Sender<u64>,
    outcomes: Mutex<BTreeMap<u64, Applied>>,
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
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.cfg.node).field("position", &self.position()).finish()
    }
}

/// Why updates could not be logged.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LogError(pub String);

/// A random id per log message, so that a message sent again after a lost
/// acknowledgement is stored once (JetStream's duplicate window).
fn message_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// The subject of a partition.
pub fn subject(stream: &str, partition: u16) -> String {
    format!("{stream}.p.{partition}")
}

/// The partition of a log subject (`<stream>.p.<n>`).
pub fn partition_of_subject(stream: &str, subject: &str) -> Option<u16> {
    subject.strip_prefix(stream)?.strip_prefix(".p.")?.parse().ok()
}

/// A key's partition, from its pseudonym: stable for a secret and a
/// partition count, spread evenly whatever the keys look like.
pub fn partition_of(pid: &basedata_store::Pid, partitions: u16) -> u16 {
    (xxhash_rust::xxh3::xxh3_64(pid.as_bytes()) % u64::from(partitions.max(1))) as u16
}

/// The update lines of one message: `dataset\n` then one line per update.
pub fn encode_message(dataset: &str, updates: &[&Update]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + updates.len() * 192);
    out.extend_from_slice(dataset.as_bytes());
    for u in updates {
        out.push(b'\n');
        write_line(u, &mut out);
    }
    out
}

/// Reads a message back, validating every line against this node's catalog.
pub fn decode_message(catalog: &Catalog, plain: &[u8]) -> Result<Vec<Update>, String> {
    let mut lines = plain.split(|&c| c == b'\n');
    let name = std::str::from_utf8(lines.next().unwrap_or_default()).map_err(|_| "dataset name is not UTF-8".to_owned())?;
    let ds = catalog.dataset(name).ok_or_else(|| format!("dataset {name} is not in this node's catalog"))?;
    lines
        .enumerate()
        .map(|(i, l)| parse_line(ds, l).map_err(|e| format!("line {}: {} ({})", i + 1, e.code, e.message)))
        .collect()
}

/// The position recorded in a store (0: nothing applied yet).
pub fn stored_position(store: &Store) -> anyhow::Result<u64> {
    Ok(match store.engine().get(Cf::Meta, META_POSITION)? {
        Some(v) => decode::<u64>("cluster position", &v)?,
        None => 0,
    })
}

/// The position to apply the log from, for the partitions `cfg` serves.
/// A position covers only the partitions the store held when it was
/// written: a node that now serves more (its configuration grew, or it was
/// restored from the backup of a node that held fewer) reads the log again
/// from the start, where every update it holds already is stale and those
/// of its new partitions are applied. The partitions are recorded (synced)
/// before anything is applied.
pub fn prepare_store(store: &Store, cfg: &ClusterConfig) -> anyhow::Result<u64> {
    let serves = cfg.served_partitions();
    let mut position = stored_position(store)?;
    if position > 0 {
        let held: Option<Vec<u16>> = match store.engine().get(Cf::Meta, META_PARTITIONS)? {
            Some(v) => Some(decode("cluster partitions", &v)?),
            None => None,
        };
        let covered = held.as_ref().is_some_and(|h| serves.iter().all(|p| h.contains(p)));
        if !covered {
            tracing::warn!(position, ?held, ?serves, "this node now serves partitions its position does not cover; reading the log again from the start");
            position = 0;
        }
    }
    let mut b = WriteBatch::new();
    b.put(Cf::Meta, META_PARTITIONS.to_vec(), encode(&serves));
    b.put(Cf::Meta, META_POSITION.to_vec(), encode(&position));
    store.engine().write(b, basedata_store::Durability::Sync)?;
    Ok(position)
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
        let mut served = vec![false; usize::from(cfg.partitions)];
        for p in cfg.served_partitions() {
            served[usize::from(p)] = true;
        }
        Ok(Arc::new(Cluster {
            served,
            sealer: LogSealer::new(secret),
            client,
            js,
            position: tokio::sync::watch::channel(position).0,
            outcomes: Mutex::new(BTreeMap::new()),
            stuck: AtomicBool::new(false),
            stream_ok: AtomicBool::new(false),
            last_received: AtomicU64::new(position),
            last_activity: Mutex::new(std::time::Instant::now()),
            restart: tokio::sync::Notify::new(),
            stats: ClusterStats::default(),
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
            subjects: vec![format!("{}.p.*", cfg.stream)],
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
        let info = s.info().await?;
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

    /// Whether this node holds partition `p`.
    pub fn serves(&self, p: u16) -> bool {
        self.served.get(usize::from(p)).copied().unwrap_or(false)
    }

    /// Whether this node holds every partition (and so can answer any key).
    pub fn serves_all(&self) -> bool {
        self.served.iter().all(|s| *s)
    }

    /// The partition of `key` when this node does not hold it.
    pub fn not_held(&self, store: &Store, key: &SubjectKey) -> Option<u16> {
        let p = partition_of(&store.pseudonym(key), self.cfg.partitions);
        (!self.serves(p)).then_some(p)
    }

    /// The stream sequence of the last message this node has applied durably.
    pub fn position(&self) -> u64 {
        *self.position.borrow()
    }

    /// Whether the NATS connection is up and the applier can go on.
    pub fn healthy(&self) -> bool {
        matches!(self.client.connection_state(), async_nats::connection::State::Connected)
            && self.stream_ok.load(Ordering::Relaxed)
            && !self.stuck.load(Ordering::Relaxed)
    }

    /// Waits until this node has applied the log up to `pos`; false when
    /// `timeout` passes first.
    pub async fn wait_for(&self, pos: u64, timeout: Duration) -> bool {
        let mut rx = self.position.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|p| *p >= pos)).await.is_ok_and(|r| r.is_ok())
    }

    /// What applying message `pos` did here, while it is remembered.
    pub fn outcome(&self, pos: u64) -> Option<Applied> {
        self.outcomes.lock().unwrap_or_else(|e| e.into_inner()).get(&pos).copied()
    }

    /// Seals validated updates of one dataset into log messages: one per
    /// partition, cut at [`MESSAGE_BYTES`] of lines (the lines of one key
    /// stay in order, in one message or consecutive ones). An update whose
    /// line alone, sealed, exceeds what the NATS servers take in one
    /// message is left out and named in `too_large` (by index).
    pub fn prepare(&self, store: &Store, dataset: &str, updates: &[Update]) -> Result<Prepared, LogError> {
        if !self.stream_ok.load(Ordering::Acquire) {
            return Err(LogError("this node has not reached the update log yet; nothing was acknowledged, resend".into()));
        }
        let limit = self.client.server_info().max_payload.max(4096);
        let cut = MESSAGE_BYTES.min(limit / 2);
        let mut by_partition: BTreeMap<u16, Vec<(usize, &Update)>> = BTreeMap::new();
        for (i, u) in updates.iter().enumerate() {
            by_partition.entry(partition_of(&store.pseudonym(&u.key), self.cfg.partitions)).or_default().push((i, u));
        }
        let mut out = Prepared::default();
        for (p, ups) in by_partition {
            let subject = subject(&self.cfg.stream, p);
            let mut start = 0;
            while start < ups.len() {
                let mut end = start;
                let mut bytes = 0;
                while end < ups.len() && (end == start || bytes < cut) {
                    bytes += line_size_hint(ups[end].1);
                    end += 1;
                }
                loop {
                    let lines: Vec<&Update> = ups[start..end].iter().map(|(_, u)| *u).collect();
                    let sealed = self.sealer.seal(subject.as_bytes(), &encode_message(dataset, &lines)).map_err(|e| LogError(e.to_string()))?;
                    if sealed.len() <= limit {
                        out.messages.push(Outgoing { subject: subject.clone(), payload: sealed.into(), id: message_id(), partition: p, lines: lines.len() });
                        break;
                    }
                    if end - start == 1 {
                        out.too_large.push(ups[start].0);
                        break;
                    }
                    // The size hints were short; this line on its own.
                    end = start + 1;
                }
                start = end;
            }
        }
        out.limit = limit;
        Ok(out)
    }

    /// Publishes prepared messages: sent back to back with at most
    /// [`ACK_WINDOW`] unacknowledged, so that one round trip covers many
    /// and no request holds more of the client's acknowledgement slots
    /// than that. A message the stream did not acknowledge within 5 s — its
    /// leader died and a new one is being elected — is sent again, backing
    /// off, under the same id for up to `publish_retry_ms`; JetStream
    /// stores it once. Once this returns the updates are durable on a
    /// quorum of the stream's replicas.
    pub async fn send(&self, prepared: &Prepared) -> Result<Vec<LoggedMessage>, LogError> {
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
    async fn publish_once(&self, m: &Outgoing) -> Result<PublishAckFuture, String> {
        self.js.send_publish(m.subject.clone(), m.build()).await.map_err(|e| e.to_string())
    }

    /// Awaits a sent message's acknowledgement, sending it again (backing
    /// off) until the stream takes it or `deadline` passes.
    async fn settle(
        &self,
        m: &Outgoing,
        first: Result<PublishAckFuture, String>,
        deadline: tokio::time::Instant,
    ) -> Result<LoggedMessage, LogError> {
        let acked = |sent: Result<PublishAckFuture, String>| async move { sent?.await.map_err(|e| e.to_string()) };
        let mut attempt = acked(first).await;
        let mut backoff = Duration::from_millis(100);
        loop {
            match attempt {
                Ok(a) => return Ok(LoggedMessage { position: a.sequence, partition: m.partition, lines: m.lines }),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    self.stats.publish_failures.fetch_add(1, Ordering::Relaxed);
                    return Err(LogError(format!(
                        "the update log did not take the updates (acknowledgement: {e}); nothing was acknowledged, resend them"
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

    fn record(&self, pos: u64, applied: Applied) {
        {
            let mut o = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
            o.insert(pos, applied);
            while o.len() > OUTCOMES_KEPT {
                o.pop_first();
            }
        }
        self.stats.applied_messages.fetch_add(1, Ordering::Relaxed);
        // Going on again: whatever stopped the applier is behind it.
        self.stuck.store(false, Ordering::Relaxed);
        // Answered jobs are a sign of life too: a writer slow on a busy
        // disk must not look like a dead consumer to the watchdog.
        self.touch();
        // Only written jobs get here, and they are a prefix of the run's
        // chain (see `apply_from`): the position never passes a gap.
        crate::http::raise_to(&self.position, pos);
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

/// Roughly the bytes of an update's line, to cut messages to size
/// without writing the lines twice.
fn line_size_hint(u: &Update) -> usize {
    match &u.op {
        basedata_store::UpdateOp::Delete => 64,
        basedata_store::UpdateOp::Upsert(fields) => 64 + fields.iter().map(|(n, v)| n.len() + value_len(v) + 6).sum::<usize>(),
    }
}

fn value_len(v: &basedata_store::Value) -> usize {
    use basedata_store::Value::*;
    match v {
        Str(s) | Code(s) | Decimal(s) => s.len() + 8,
        Bytes(b) => b.len() * 4 / 3 + 4,
        _ => 24,
    }
}

/// Applies the log into the store, forever: restarts from the durable
/// position after a lost connection, a failed write or a silent consumer;
/// waits longer (and reports itself unready) while it is stuck on a
/// message it cannot apply or on a log that no longer holds what it needs.
pub async fn applier(state: crate::http::AppState, cluster: Arc<Cluster>) {
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
    loop {
        match apply_from(&state, &cluster).await {
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
async fn apply_from(state: &crate::http::AppState, cluster: &Arc<Cluster>) -> anyhow::Result<()> {
    let chain = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let result = consume(state, cluster, &chain, &in_flight).await;
    let _drained = in_flight.acquire_many(IN_FLIGHT as u32).await;
    result
}

async fn consume(
    state: &crate::http::AppState,
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
        let held = partition_of_subject(&cluster.cfg.stream, &m.subject).is_some_and(|p| cluster.serves(p));
        // Another node's partition: nothing to open or apply; the position
        // passes it in order, through the writer, which writes nothing for
        // an empty job but now and then the position.
        let updates = if held {
            match open_message(state, cluster, &m) {
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
        submit(state, cluster, chain, seq, updates, write_position, permit).await?;
    }
}

/// Messages of other partitions after which a node that holds only some
/// writes its position anyway, so that a restart need not re-read them
/// all (and finds them even if the stream has since dropped old ones).
const SKIPPED_BETWEEN_WRITES: u32 = 1_000;

/// The updates of a log message of this node's partitions.
fn open_message(state: &crate::http::AppState, cluster: &Cluster, m: &jetstream::Message) -> Result<Vec<Update>, String> {
    let plain = cluster.sealer.open(m.subject.as_bytes(), &m.payload).map_err(|e| e.to_string())?;
    decode_message(&state.catalog, &plain)
}

/// Hands one message's updates to the writer, with the position in the
/// same batch; waits (briefly, repeatedly) while the writer's queue is full.
/// The permit is held by the reply, so it is given back once the job is
/// answered (or dropped with it, should the writer have stopped).
async fn submit(
    state: &crate::http::AppState,
    cluster: &Arc<Cluster>,
    chain: &Arc<AtomicBool>,
    seq: u64,
    mut updates: Vec<Update>,
    write_position: bool,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> anyhow::Result<()> {
    let mut extra = WriteBatch::new();
    if write_position {
        extra.put(Cf::Meta, META_POSITION.to_vec(), encode(&seq));
    }
    let (c, g) = (cluster.clone(), chain.clone());
    let seq_tx = state.seq_tx.clone();
    let mut reply: basedata_store::commit::Reply = Box::new(move |r| {
        let _permit = permit;
        match r {
            Ok(done) => {
                let applied = done.outcomes.iter().filter(|o| matches!(o, Outcome::Applied { .. })).count();
                let stale = done.outcomes.len() - applied;
                c.record(seq, Applied { applied, stale, last_seq: done.last_seq });
                if applied > 0 {
                    crate::http::raise_to(&seq_tx, done.last_seq);
                }
            }
            Err(e) if matches!(*e, basedata_store::Error::Abandoned) => {}
            Err(e) => {
                // Raised here, on the writer thread, before it takes its
                // next group: nothing queued behind this job is written.
                g.store(true, Ordering::Release);
                c.stats.apply_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(position = seq, error = %e, "applying a log message failed");
                c.restart.notify_one();
            }
        }
    });
    loop {
        match state.committer.submit_guarded(updates, Vec::new(), extra, reply, Some(chain.clone())) {
            Ok(()) => return Ok(()),
            Err(r) if r.why == SubmitError::Overloaded => {
                (updates, extra, reply) = (r.updates, r.extra, r.reply);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(_) => anyhow::bail!("the writer stopped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basedata_store::{Catalog, Secret};

    #[test]
    fn partitions_are_stable_and_spread() {
        let p = basedata_store::pseudo::Pseudonymizer::new(&Secret::from_bytes([1; 32]));
        let mut counts = [0u32; 16];
        for i in 0..16_000u16 {
            let d = time::Date::from_calendar_date(1970 + i32::from(i % 50), time::Month::March, 1 + (i % 28) as u8).unwrap();
            let k = basedata_store::SubjectKey::Person(basedata_store::PersonKey::from_parts("350102", d, i % 999).unwrap());
            let pid = p.pid(&k);
            assert_eq!(partition_of(&pid, 16), partition_of(&pid, 16));
            counts[partition_of(&pid, 16) as usize] += 1;
            assert_eq!(partition_of(&pid, 1), 0);
        }
        // 1,000 expected per partition; 5 standard deviations is about ±160.
        assert!(counts.iter().all(|c| (840..=1160).contains(c)), "{counts:?}");
        assert_eq!(subject("BASEDATA", 7), "BASEDATA.p.7");
        assert_eq!(partition_of_subject("BASEDATA", "BASEDATA.p.7"), Some(7));
        assert_eq!(partition_of_subject("BASEDATA", "OTHER.p.7"), None);
        assert_eq!(partition_of_subject("BASEDATA", "BASEDATA.q.7"), None);
        assert_eq!(partition_of_subject("BASEDATA", "BASEDATA.p.x"), None);
    }

    #[test]
    fn a_node_that_serves_more_partitions_reads_the_log_again() {
        let store = Store::open(
            Arc::new(basedata_store::engine::mem::MemEngine::new()),
            &Secret::from_bytes([2; 32]),
            Arc::new(Catalog::builtin()),
            Arc::new(basedata_store::clock::ManualClock::new(1)),
        )
        .unwrap();
        let mut cfg = ClusterConfig::with_servers(vec!["nats://127.0.0.1:1".into()]);
        cfg.serve_partitions = Some(vec![0, 1, 2]);
        assert_eq!(prepare_store(&store, &cfg).unwrap(), 0);
        let mut b = WriteBatch::new();
        b.put(Cf::Meta, META_POSITION.to_vec(), encode(&500u64));
        store.engine().write(b, basedata_store::Durability::Sync).unwrap();
        // Fewer partitions, or the same: the position stands.
        cfg.serve_partitions = Some(vec![1, 2]);
        assert_eq!(prepare_store(&store, &cfg).unwrap(), 500);
        assert_eq!(prepare_store(&store, &cfg).unwrap(), 500);
        // One more than the position covers (now {1, 2}): from the start.
        cfg.serve_partitions = Some(vec![0, 1, 2]);
        assert_eq!(prepare_store(&store, &cfg).unwrap(), 0);
        assert_eq!(stored_position(&store).unwrap(), 0);
        // All of them, from a position of all of them: stands.
        cfg.serve_partitions = None;
        let mut b = WriteBatch::new();
        b.put(Cf::Meta, META_POSITION.to_vec(), encode(&700u64));
        store.engine().write(b, basedata_store::Durability::Sync).unwrap();
        assert_eq!(prepare_store(&store, &cfg).unwrap(), 0, "recorded {{0,1,2}} does not cover all 16");
        let mut b = WriteBatch::new();
        b.put(Cf::Meta, META_POSITION.to_vec(), encode(&700u64));
        store.engine().write(b, basedata_store::Durability::Sync).unwrap();
        assert_eq!(prepare_store(&store, &cfg).unwrap(), 700);
    }

    #[test]
    fn messages_round_trip_through_the_catalog() {
        let cat = Catalog::builtin();
        let ds = cat.dataset("hukou").unwrap();
        let lines = [
            r#"{"key":"11010519491231002X","version":4,"fields":{"name":"张三","gender":"2","birth_date":"1949-12-31","status":"normal"}}"#,
            r#"{"key":"11010519491231002X","version":5,"op":"delete"}"#,
        ];
        let ups: Vec<Update> = lines.iter().map(|l| parse_line(ds, l.as_bytes()).unwrap()).collect();
        let refs: Vec<&Update> = ups.iter().collect();
        let plain = encode_message("hukou", &refs);
        assert_eq!(decode_message(&cat, &plain).unwrap(), ups);
        assert!(decode_message(&cat, b"nope\n{}").unwrap_err().contains("not in this node's catalog"));
        let bad = [b"hukou\n".as_slice(), br#"{"key":"11010519491231002X","version":1,"fields":{"nick":"x"}}"#].concat();
        assert!(decode_message(&cat, &bad).unwrap_err().contains("unknown_field"));
        assert_eq!(decode_message(&cat, b"hukou").unwrap(), Vec::<Update>::new());
    }
}
