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
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, consumer, stream};
use basedata_ingest::line::{parse_line, write_line};
use basedata_store::codec::{decode, encode};
use basedata_store::commit::SubmitError;
use basedata_store::pseudo::LogSealer;
use basedata_store::{Catalog, Cf, Outcome, Secret, Store, SubjectKey, Update, WriteBatch};
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The store's position in the log: the stream sequence of the last
/// applied message.
pub const META_POSITION: &[u8] = b"cluster/position";
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
    /// Set when a write of applied messages failed: the applier restarts
    /// from the last durable position.
    failed: AtomicBool,
    /// Set while the log no longer holds the messages this node needs
    /// next (it must be seeded from a peer's backup).
    behind_log: AtomicBool,
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
        // A lost acknowledgement is resent (under the same message id, so
        // stored once) rather than waited for long.
        js.set_timeout(Duration::from_secs(2));
        let served = (0..cfg.partitions)
            .map(|p| cfg.serve_partitions.as_ref().is_none_or(|ps| ps.contains(&p)))
            .collect();
        Ok(Arc::new(Cluster {
            served,
            sealer: LogSealer::new(secret),
            client,
            js,
            position: tokio::sync::watch::channel(position).0,
            outcomes: Mutex::new(BTreeMap::new()),
            failed: AtomicBool::new(false),
            behind_log: AtomicBool::new(false),
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
            && !self.behind_log.load(Ordering::Relaxed)
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

    /// Logs validated updates of one dataset: one message per partition
    /// (and per [`MESSAGE_BYTES`] of lines), published back to back and
    /// then awaited, so one round of stream acknowledgements covers the
    /// request. Returns what was logged, message by message; once this
    /// returns the updates are durable on a quorum of the stream's replicas.
    pub async fn publish(&self, store: &Store, dataset: &str, updates: &[Update]) -> Result<Vec<LoggedMessage>, LogError> {
        if !self.stream_ok.load(Ordering::Acquire) {
            return Err(LogError("this node has not reached the update log yet; nothing was acknowledged, resend".into()));
        }
        let mut by_partition: BTreeMap<u16, Vec<&Update>> = BTreeMap::new();
        for u in updates {
            by_partition.entry(partition_of(&store.pseudonym(&u.key), self.cfg.partitions)).or_default().push(u);
        }
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            self.stats.publish_failures.fetch_add(1, Ordering::Relaxed);
            LogError(format!("the update log did not take the updates ({what}: {e}); nothing was acknowledged, resend them"))
        };
        let mut messages = Vec::new();
        for (p, ups) in by_partition {
            let subject = subject(&self.cfg.stream, p);
            // Lines of one key stay in one message or consecutive ones, in order.
            let mut start = 0;
            while start < ups.len() {
                let mut end = start;
                let mut bytes = 0;
                while end < ups.len() && (end == start || bytes < MESSAGE_BYTES) {
                    bytes += line_size_hint(ups[end]);
                    end += 1;
                }
                let plain = encode_message(dataset, &ups[start..end]);
                let sealed = self.sealer.seal(subject.as_bytes(), &plain).map_err(|e| fail("seal", &e))?;
                messages.push((subject.clone(), bytes::Bytes::from(sealed), message_id(), p, end - start));
                start = end;
            }
        }
        let build = |payload: &bytes::Bytes, id: &str| PublishMessage::build().payload(payload.clone()).message_id(id);
        // All sent back to back, then all awaited: one round trip of
        // acknowledgements for the request.
        let mut acks = Vec::with_capacity(messages.len());
        for (subject, payload, id, ..) in &messages {
            acks.push(self.js.send_publish(subject.clone(), build(payload, id)).await);
        }
        // While the stream elects a new leader (a NATS server died) it takes
        // nothing for a few seconds; a message that was not acknowledged is
        // sent again under the same id, which the stream stores once.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.cfg.publish_retry_ms);
        let mut seqs = Vec::with_capacity(messages.len());
        for ((subject, payload, id, partition, lines), first) in messages.iter().zip(acks) {
            let mut attempt = match first {
                Ok(ack) => ack.await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            loop {
                match attempt {
                    Ok(a) => {
                        seqs.push(LoggedMessage { position: a.sequence, partition: *partition, lines: *lines });
                        break;
                    }
                    Err(e) if tokio::time::Instant::now() >= deadline => return Err(fail("acknowledgement", &e)),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        attempt = match self.js.send_publish(subject.clone(), build(payload, id)).await {
                            Ok(ack) => ack.await.map_err(|e| e.to_string()),
                            Err(e) => Err(e.to_string()),
                        };
                    }
                }
            }
        }
        self.stats.published.fetch_add(seqs.len() as u64, Ordering::Relaxed);
        Ok(seqs)
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
        if !self.failed.load(Ordering::Acquire) {
            self.position.send_if_modified(|p| {
                let newer = pos > *p;
                *p = (*p).max(pos);
                newer
            });
        }
    }

    fn touch(&self) {
        *self.last_activity.lock().unwrap_or_else(|e| e.into_inner()) = std::time::Instant::now();
    }

    /// Looks at the stream (its replicas' lag, for metrics) and restarts a
    /// consumer that receives nothing while the stream grows.
    async fn observe_stream(&self) {
        let Ok(mut s) = self.js.get_stream(&self.cfg.stream).await else { return };
        let Ok(info) = s.info().await else { return };
        let last = info.state.last_sequence;
        self.stats.stream_last.fetch_max(last, Ordering::Relaxed);
        let silent = self.last_activity.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
        if last > self.last_received.load(Ordering::Relaxed) && silent > WATCHDOG {
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
/// position after a lost connection, a failed write or a bad message.
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
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn apply_from(state: &crate::http::AppState, cluster: &Arc<Cluster>) -> anyhow::Result<()> {
    // Writes that failed leave the position where the last good one put
    // it; whatever was in flight after them is redone (harmlessly).
    cluster.failed.store(false, Ordering::Release);
    let from = cluster.position() + 1;
    let mut s = cluster.ensure_stream().await?;
    let info = s.info().await?.clone();
    if info.state.messages > 0 && info.state.first_sequence > from {
        cluster.behind_log.store(true, Ordering::Relaxed);
        anyhow::bail!(
            "the log starts at {} but this node needs {from} next: seed it from a backup of another node",
            info.state.first_sequence
        );
    }
    cluster.behind_log.store(false, Ordering::Relaxed);
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
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut next = from;
    loop {
        let m = tokio::select! {
            m = messages.next() => m,
            _ = cluster.restart.notified() => anyhow::bail!("restarted by the watchdog"),
        };
        let Some(m) = m else { break };
        if cluster.failed.load(Ordering::Acquire) {
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
        next = seq + 1;
        let held = partition_of_subject(&cluster.cfg.stream, &m.subject).is_some_and(|p| cluster.serves(p));
        // Another node's partition: nothing to open or apply, but the
        // position passes it (in order, through the writer, which writes
        // nothing for an empty job).
        let updates = if held { open_message(state, cluster, seq, &m) } else { Vec::new() };
        let permit = in_flight.clone().acquire_owned().await?;
        submit(state, cluster, seq, updates, held, permit).await?;
    }
    Ok(())
}

/// The updates of a log message of this node's partitions. An unreadable
/// one is skipped, not retried: the same bytes would fail the same way
/// forever (a node with another secret or catalog than its peers fails on
/// every message, and says so in its log and metrics).
fn open_message(state: &crate::http::AppState, cluster: &Cluster, seq: u64, m: &jetstream::Message) -> Vec<Update> {
    match cluster
        .sealer
        .open(m.subject.as_bytes(), &m.payload)
        .map_err(|e| e.to_string())
        .and_then(|plain| decode_message(&state.catalog, &plain))
    {
        Ok(u) => u,
        Err(e) => {
            cluster.stats.unreadable_messages.fetch_add(1, Ordering::Relaxed);
            tracing::error!(position = seq, subject = %m.subject, error = %e, "an unreadable log message was skipped");
            Vec::new()
        }
    }
}

/// Hands one message's updates to the writer, with the position in the
/// same batch; waits (briefly, repeatedly) while the writer's queue is full.
async fn submit(
    state: &crate::http::AppState,
    cluster: &Arc<Cluster>,
    seq: u64,
    updates: Vec<Update>,
    held: bool,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> anyhow::Result<()> {
    let permit = Arc::new(Mutex::new(Some(permit)));
    loop {
        let mut extra = WriteBatch::new();
        // A message of another node's partition costs no write: a restart
        // reads it again from the last position written, and passes it again.
        if held {
            extra.put(Cf::Meta, META_POSITION.to_vec(), encode(&seq));
        }
        let c = cluster.clone();
        let seq_tx = state.seq_tx.clone();
        let p = permit.clone();
        let reply: basedata_store::commit::Reply = Box::new(move |r| {
            match r {
                Ok(done) => {
                    let applied = done.outcomes.iter().filter(|o| matches!(o, Outcome::Applied { .. })).count();
                    let stale = done.outcomes.len() - applied;
                    c.record(seq, Applied { applied, stale, last_seq: done.last_seq });
                    if applied > 0 {
                        seq_tx.send_if_modified(|s| {
                            let newer = done.last_seq > *s;
                            *s = (*s).max(done.last_seq);
                            newer
                        });
                    }
                }
                Err(e) => {
                    c.stats.apply_failures.fetch_add(1, Ordering::Relaxed);
                    c.failed.store(true, Ordering::Release);
                    tracing::error!(position = seq, error = %e, "applying a log message failed");
                }
            }
            p.lock().unwrap_or_else(|e| e.into_inner()).take();
        });
        match state.committer.submit_with(updates.clone(), Vec::new(), extra, reply) {
            Ok(()) => return Ok(()),
            Err(SubmitError::Overloaded) => tokio::time::sleep(Duration::from_millis(2)).await,
            Err(SubmitError::Closed) => anyhow::bail!("the writer stopped"),
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
