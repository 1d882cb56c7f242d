//! The cluster-wide audit trail's transport: each node ships its own
//! hash-chained audit entries through the replicated log (subject
//! `<stream>.a.<node>`), and every other node keeps a copy of that chain
//! beside its own (`basedata_store::audit::remote`), so an auditor on any
//! node sees the uses answered by all of them.
//!
//! Shipping: one task per node reads the entries after the last one the
//! log acknowledged (`cluster/audit_shipped` in `meta`) in chain order, up
//! to [`BATCH_ENTRIES`] entries or [`BATCH_BYTES`] a message (half of what
//! a message may carry, the servers' `max_payload` less 1 KiB for its
//! headers, when that is smaller, see [`batch_bytes`]; a message still too
//! large goes again with half its entries), sealed like
//! update messages (the log's seal, the subject as associated data,
//! since the entries carry sealed key mappings and pseudonyms), under the
//! message id `<node>-a-<first seq>` so a resend after a lost
//! acknowledgement is stored once. It sends as soon as entries exist (it
//! looks every [`TICK`]), awaits the acknowledgement before the next
//! message, and only then records how far it got. A node that cannot reach
//! the log keeps its entries (they are durable in its store, as before)
//! and ships them once it can; after a restart it resumes after the
//! recorded position.
//!
//! The window: an answered request's entry is on one disk only from its
//! commit until the log acknowledges the message holding it. Every
//! acknowledged message records that lag (acknowledgement time minus the
//! time of its oldest entry); `GET /v1/cluster` and `/metrics` give the
//! largest and the 99th percentile of the recent ones.

use super::Cluster;
use async_nats::jetstream::message::PublishMessage;
use basedata_store::audit::remote::{valid_node_name, RemoteHeads, ShippedBatch};
use basedata_store::usage::RemoteUsage;
use basedata_store::{Store, WriteBatch};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Entries per message at most.
pub const BATCH_ENTRIES: usize = 1_000;
/// Bytes of entries (and their key mappings) per message, at most about.
pub const BATCH_BYTES: usize = 256 << 10;

/// The bytes of entries a message is filled with when its payload may
/// take up to `limit` bytes (`Cluster::payload_limit`): half of that,
/// for the framing, the seal and the last entry (which may pass the
/// budget), and never more than [`BATCH_BYTES`]. A message over the
/// servers' `max_payload` is refused however often it is sent.
pub fn batch_bytes(limit: usize) -> usize {
    BATCH_BYTES.min(limit / 2).max(1)
}

/// A sealed message larger than a message to the log's servers may carry.
#[derive(Debug)]
struct TooLarge {
    bytes: usize,
    limit: usize,
}
/// How often the shipper looks for new entries when it has nothing to send.
pub const TICK: Duration = Duration::from_millis(25);
/// Acknowledged messages whose lag the percentile is taken over.
const RECENT_LAGS: usize = 1_024;

/// The subject of node `node`'s audit entries.
pub fn subject(stream: &str, node: &str) -> String {
    format!("{stream}.a.{node}")
}

/// The node of an audit subject (`<stream>.a.<node>`).
pub fn node_of_subject<'a>(stream: &str, subject: &'a str) -> Option<&'a str> {
    subject.strip_prefix(stream)?.strip_prefix(".a.")
}

/// Shipping figures, for `GET /v1/cluster` and metrics.
#[derive(Debug, Default)]
pub struct ShipStats {
    /// This node's chain head as the shipper last saw it.
    pub head: AtomicU64,
    /// The last entry the log has acknowledged.
    pub shipped: AtomicU64,
    /// Entries acknowledged since the process started.
    pub shipped_entries: AtomicU64,
    pub messages: AtomicU64,
    /// Sends that failed or were not acknowledged (each retried).
    pub failures: AtomicU64,
    /// The largest lag of an acknowledged message (µs).
    pub lag_max_us: AtomicU64,
    /// Other nodes' entries appended to their chains here.
    pub remote_appended: AtomicU64,
    recent: Mutex<VecDeque<u64>>,
}

impl ShipStats {
    fn record_lag(&self, us: u64) {
        self.lag_max_us.fetch_max(us, Ordering::Relaxed);
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() == RECENT_LAGS {
            r.pop_front();
        }
        r.push_back(us);
    }

    /// The 99th percentile of the recent messages' lags (µs).
    pub fn lag_p99_us(&self) -> u64 {
        let mut v: Vec<u64> = self.recent.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect();
        if v.is_empty() {
            return 0;
        }
        v.sort_unstable();
        v[(v.len() * 99).div_ceil(100) - 1]
    }

    /// Entries of this node's chain not yet acknowledged by the log.
    pub fn unshipped(&self) -> u64 {
        self.head.load(Ordering::Relaxed).saturating_sub(self.shipped.load(Ordering::Relaxed))
    }
}

/// A node's end of the cluster-wide audit trail: its shipping
/// figures, and the other nodes' chain heads as the applier has staged them.
#[derive(Default)]
pub struct AuditLink {
    /// Loaded from the store at the first audit message of each run of the
    /// applier, then advanced as messages are staged: a run's jobs are
    /// written in order or (after a failed one) not at all, and the next
    /// run starts again from what is on disk.
    heads: Mutex<Option<RemoteHeads>>,
    /// The counters of uses other nodes answered, staged with their
    /// entries; forgotten with the heads.
    usage: Mutex<RemoteUsage>,
    pub stats: ShipStats,
}

impl std::fmt::Debug for AuditLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLink").field("stats", &self.stats).finish()
    }
}

impl AuditLink {
    /// A new run of the applier: heads are read again from the store.
    pub(super) fn begin_run(&self) {
        *self.heads.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.usage.lock().unwrap_or_else(|e| e.into_inner()).forget();
    }

    /// The writes that append another node's shipped entries to its chain
    /// here, from a message of `<stream>.a.<node>`; an error stops the
    /// applier at this message (a gap or a broken link is never stored).
    fn stage(&self, store: &Store, node: &str, plain: &[u8]) -> Result<WriteBatch, String> {
        let batch = ShippedBatch::decode(plain).map_err(|e| e.to_string())?;
        if batch.node != node {
            return Err(format!("it holds entries of node {} under node {node}'s subject", batch.node));
        }
        let mut heads = self.heads.lock().unwrap_or_else(|e| e.into_inner());
        if heads.is_none() {
            *heads = Some(store.remote_heads().map_err(|e| e.to_string())?);
        }
        let heads = heads.as_mut().expect("loaded above");
        let mut wb = WriteBatch::new();
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        let engine = store.engine().clone();
        let mut count = |uses: &[basedata_store::audit::StoredEntry], wb: &mut WriteBatch| usage.count(&*engine, uses, wb);
        let done = store.remote_append(heads, Some(&mut count), &batch, &mut wb).map_err(|e| e.to_string())?;
        self.stats.remote_appended.fetch_add(done.appended as u64, Ordering::Relaxed);
        Ok(wb)
    }
}

/// In the applier, for a message of subject `subject`: `None` when it is
/// not another node's audit entries (update messages, and this node's own
/// entries, which pass like another partition's messages); else the writes
/// that append them, or why they cannot be.
pub(super) fn stage(cluster: &Cluster, store: &Store, subject: &str, payload: &[u8]) -> Option<Result<WriteBatch, String>> {
    let node = node_of_subject(&cluster.cfg.stream, subject)?;
    if node == cluster.cfg.node {
        return None;
    }
    let staged = cluster.partitioning.unseal(subject, payload).and_then(|plain| cluster.audit.stage(store, node, &plain));
    if staged.is_err() {
        cluster.stats.unreadable_messages.fetch_add(1, Ordering::Relaxed);
    }
    Some(staged)
}

/// Why taking back this node's entries did not finish.
#[derive(Debug)]
pub enum TakeBackError {
    /// The log could not be read now: worth trying again.
    Log(anyhow::Error),
    /// What the log holds cannot go on this store's chain (another chain
    /// under this node's name, an unreadable message, a store that
    /// numbered uses of its own after the restore): trying again changes
    /// nothing.
    Refused(anyhow::Error),
}

impl std::fmt::Display for TakeBackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TakeBackError::Log(e) => write!(f, "the log cannot be read: {e:#}"),
            TakeBackError::Refused(e) => write!(f, "{e:#}"),
        }
    }
}

/// Takes back this node's own entries that the log holds past the local
/// chain's head, in order (`Store::take_back_shipped`): what a store
/// restored from an older backup of this node lacks. Called before the
/// node numbers any use of its own; returns the uses taken back.
///
/// The last message under the node's subject says whether there is
/// anything to take back; only then are the subject's messages read, from
/// the first, by an ordered consumer filtered to it. When there is
/// nothing past the head, that message's entries must still be the
/// store's own: a restored store that numbered uses of its own before
/// this (served alone, or an offline comparison) holds other entries
/// under the same numbers.
pub async fn take_back_own(store: &Arc<Store>, cluster: &Cluster) -> Result<u64, TakeBackError> {
    use async_nats::jetstream::{consumer, stream::LastRawMessageErrorKind};
    use futures_util::StreamExt;
    use TakeBackError::{Log, Refused};
    let node = cluster.cfg.node.clone();
    let subject = subject(&cluster.cfg.stream, &node);
    let stream = cluster.ensure_stream().await.map_err(Log)?;
    let open = |m_subject: &str, payload: &[u8]| -> Result<ShippedBatch, TakeBackError> {
        let plain = cluster
            .partitioning
            .unseal(m_subject, payload)
            .map_err(|e| Refused(anyhow::anyhow!("a message of this node's audit chain does not open: {e}")))?;
        ShippedBatch::decode(&plain).map_err(|e| Refused(anyhow::anyhow!("a message of this node's audit chain is unreadable: {e}")))
    };
    let take = |batch: ShippedBatch| {
        let (s, n) = (store.clone(), node.clone());
        async move {
            match tokio::task::spawn_blocking(move || s.take_back_shipped(&n, &batch)).await {
                Ok(Ok(n)) => Ok(n),
                Ok(Err(e)) => Err(Refused(e.into())),
                Err(e) => Err(Refused(anyhow::anyhow!("taking back this node's audit entries failed: {e}"))),
            }
        }
    };
    let head = || store.audit_head().map_err(|e| Refused(e.into()));
    let last = match stream.get_last_raw_message_by_subject(&subject).await {
        Ok(m) => open(&subject, &m.payload)?,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(0),
        Err(e) => return Err(Log(e.into())),
    };
    let last_seq = last.last();
    if last_seq <= head()?.seq {
        // Compared entry by entry, byte for byte.
        return take(last).await;
    }
    tracing::warn!(
        node = %node,
        head = head()?.seq,
        shipped = last_seq,
        "the log holds more of this node's audit chain than its store (restored from an older backup?): taking it back"
    );
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| Log(e.into()))?;
    let mut messages = consumer.messages().await.map_err(|e| Log(e.into()))?;
    let mut taken = 0;
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| Log(e.into()))?;
        let pending = m.info().map_err(|e| Log(anyhow::anyhow!("a log message without its position: {e}")))?.pending;
        let batch = open(&m.subject, &m.payload)?;
        if batch.last() > head()?.seq {
            taken += take(batch).await?;
        }
        if pending == 0 {
            break;
        }
    }
    let now = head()?.seq;
    if now < last_seq {
        // The consumer ended early: read again.
        return Err(Log(anyhow::anyhow!("the log's messages of this node were read up to {now} of {last_seq}")));
    }
    Ok(taken)
}

/// Ships this node's audit entries, forever (see the module's doc).
pub async fn shipper(store: Arc<Store>, cluster: Arc<Cluster>) {
    let node = cluster.cfg.node.clone();
    if !valid_node_name(&node) {
        tracing::error!(node = %node, "a node name of letters, digits, '-' and '_' is needed to ship the audit trail; not shipping");
        return;
    }
    let link = &cluster.audit;
    let mut rec = loop {
        let s = store.clone();
        let n = node.clone();
        match tokio::task::spawn_blocking(move || s.audit_shipped(&n)).await {
            Ok(Ok(r)) => break r,
            Ok(Err(e)) => tracing::error!(error = %e, "cannot read where shipping the audit trail stands; retrying"),
            Err(e) => tracing::error!(error = %e, "reading where shipping the audit trail stands failed; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    link.stats.shipped.store(rec.seq, Ordering::Relaxed);
    let subject = subject(&cluster.cfg.stream, &node);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut more = false;
    // Lowered while messages come out too large for the servers, back
    // to the full count after each message the log took.
    let mut max_entries = BATCH_ENTRIES;
    let mut oversized = 0u32;
    loop {
        // A backlog is sent message after message; otherwise look again soon.
        if !more {
            tick.tick().await;
        }
        more = false;
        if !cluster.stream_ok.load(Ordering::Acquire) {
            // The stream may not carry the audit subjects yet.
            continue;
        }
        let head = match store.audit_head() {
            Ok(h) => h.seq,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the audit chain's head");
                continue;
            }
        };
        link.stats.head.store(head, Ordering::Relaxed);
        if head <= rec.seq {
            continue;
        }
        let (s, r) = (store.clone(), rec.clone());
        let budget = batch_bytes(cluster.payload_limit());
        let batch = match tokio::task::spawn_blocking(move || s.audit_ship_batch(&r.node, r.anchor, r.seq + 1, head, max_entries, budget)).await {
            Ok(Ok(b)) if !b.entries.is_empty() => b,
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => {
                tracing::error!(error = %e, from = rec.seq + 1, "cannot read the audit entries to ship");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the audit entries to ship failed");
                continue;
            }
        };
        let oldest = batch.oldest_at().unwrap_or(0);
        let last = match ship(&cluster, &subject, &batch).await {
            Ok(last) => {
                max_entries = BATCH_ENTRIES;
                oversized = 0;
                last
            }
            Err(TooLarge { bytes, limit }) if batch.entries.len() > 1 => {
                tracing::debug!(bytes, limit, entries = batch.entries.len(), "an audit message came out too large; sending fewer entries");
                max_entries = (batch.entries.len() / 2).max(1);
                more = true;
                continue;
            }
            Err(TooLarge { bytes, limit }) => {
                // One entry alone (a chunk of a batch's uses with its key
                // mappings) is over the limit: only a larger max_payload
                // gets it, and the chain after it, to the other nodes.
                cluster.audit.stats.failures.fetch_add(1, Ordering::Relaxed);
                oversized += 1;
                if oversized == 1 || oversized.is_multiple_of(30) {
                    tracing::error!(
                        bytes,
                        limit,
                        entry = batch.first,
                        "an audit entry is larger than a message to the log's servers may carry (their max_payload less 1 KiB for headers); it and the entries after it stay on this node until max_payload is raised"
                    );
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let acked_at = store.clock().now_micros();
        link.stats.record_lag(acked_at.saturating_sub(oldest).max(0) as u64);
        let count = last.saturating_sub(rec.seq);
        rec.seq = last;
        let (s, r) = (store.clone(), rec.clone());
        match tokio::task::spawn_blocking(move || s.record_audit_shipped(&r)).await {
            Ok(Ok(())) => {}
            // Sent again after a restart, it is skipped by its receivers.
            Ok(Err(e)) => tracing::error!(error = %e, "cannot record how far the audit trail is shipped"),
            Err(e) => tracing::error!(error = %e, "recording how far the audit trail is shipped failed"),
        }
        link.stats.shipped.store(last, Ordering::Relaxed);
        link.stats.shipped_entries.fetch_add(count, Ordering::Relaxed);
        link.stats.messages.fetch_add(1, Ordering::Relaxed);
        more = last < head;
    }
}

/// Publishes one batch until the log acknowledges it, backing off (0.1 s
/// doubling to 2 s) while it cannot; returns the last entry the log now
/// holds of this node's chain, or [`TooLarge`] for a batch the servers
/// would refuse whatever the retries. A message whose id the log has seen (it was
/// stored before a restart lost the record of it) may have held fewer
/// entries than this one: the stored one tells how far it went.
async fn ship(cluster: &Cluster, subject: &str, batch: &ShippedBatch) -> Result<u64, TooLarge> {
    let plain = batch.encode();
    let mut id = format!("{}-a-{}", batch.node, batch.first);
    let mut own_id = false;
    let mut backoff = Duration::from_millis(100);
    let mut failures = 0u32;
    loop {
        let limit = cluster.payload_limit();
        let sent = match cluster.partitioning.seal(subject, &plain) {
            Ok(payload) if payload.len() > limit => return Err(TooLarge { bytes: payload.len(), limit }),
            Ok(payload) => {
                let m = PublishMessage::build().payload(payload.into()).message_id(&id);
                match cluster.js.send_publish(subject.to_owned(), m).await {
                    Ok(ack) => ack.await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        match sent {
            Ok(ack) if !ack.duplicate => return Ok(batch.last()),
            Ok(ack) => match stored_last(cluster, subject, ack.sequence, batch).await {
                Some(last) => return Ok(last),
                // Not found out: send this batch under an id of its own
                // (should it be stored twice, receivers skip the repeats).
                None if own_id => return Ok(batch.last()),
                None => {
                    id = format!("{}-a-{}-{}", batch.node, batch.first, batch.last());
                    own_id = true;
                }
            },
            Err(e) => {
                cluster.audit.stats.failures.fetch_add(1, Ordering::Relaxed);
                failures += 1;
                // Once, then every 30 or so: an unreachable log is a state.
                if failures == 1 || failures.is_multiple_of(32) {
                    tracing::warn!(error = %e, first = batch.first, attempts = failures, "the log did not take this node's audit entries; they stay here and are sent again");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// How far the stored message `seq` (a duplicate of `batch`'s id) reached.
async fn stored_last(cluster: &Cluster, subject: &str, seq: u64, batch: &ShippedBatch) -> Option<u64> {
    let stream = cluster.js.get_stream(&cluster.cfg.stream).await.ok()?;
    let m = stream.get_raw_message(seq).await.ok()?;
    if m.subject.as_str() != subject {
        return None;
    }
    let plain = cluster.partitioning.unseal(subject, &m.payload).ok()?;
    let stored = ShippedBatch::decode(&plain).ok()?;
    (stored.node == batch.node && stored.first == batch.first).then(|| stored.last())
}

/// Figures for `/metrics`: the cluster's, then these.
pub fn figures(stats: &ShipStats) -> [(&'static str, u64); 7] {
    [
        ("audit_head", stats.head.load(Ordering::Relaxed)),
        ("audit_shipped", stats.shipped.load(Ordering::Relaxed)),
        ("audit_unshipped", stats.unshipped()),
        ("audit_shipped_entries", stats.shipped_entries.load(Ordering::Relaxed)),
        ("audit_ship_failures", stats.failures.load(Ordering::Relaxed)),
        ("audit_ship_lag_max_ms", stats.lag_max_us.load(Ordering::Relaxed) / 1_000),
        ("audit_ship_lag_p99_ms", stats.lag_p99_us() / 1_000),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::HEADER_ROOM;

    #[test]
    fn messages_are_filled_to_half_the_servers_limit_at_most() {
        // The argument is a payload limit: max_payload less the headers'
        // room. NATS's default of 1 MiB leaves the usual budget.
        assert_eq!(batch_bytes((1 << 20) - HEADER_ROOM), BATCH_BYTES);
        assert_eq!(batch_bytes((64 << 20) - HEADER_ROOM), BATCH_BYTES);
        assert_eq!(batch_bytes((256 << 10) - HEADER_ROOM), ((256 << 10) - HEADER_ROOM) / 2);
        assert_eq!(batch_bytes(4096), 2048);
        assert_eq!(batch_bytes(0), 1);
    }

    #[test]
    fn audit_subjects_name_their_node() {
        assert_eq!(subject("BASEDATA", "node-1"), "BASEDATA.a.node-1");
        assert_eq!(node_of_subject("BASEDATA", "BASEDATA.a.node-1"), Some("node-1"));
        assert_eq!(node_of_subject("BASEDATA", "BASEDATA.p.1"), None);
        assert_eq!(node_of_subject("BASEDATA", "OTHER.a.node-1"), None);
    }

    #[test]
    fn the_percentile_is_of_recent_lags() {
        let s = ShipStats::default();
        assert_eq!(s.lag_p99_us(), 0);
        for us in 1..=100 {
            s.record_lag(us);
        }
        assert_eq!((s.lag_p99_us(), s.lag_max_us.load(Ordering::Relaxed)), (99, 100));
        for _ in 0..RECENT_LAGS {
            s.record_lag(5);
        }
        assert_eq!((s.lag_p99_us(), s.lag_max_us.load(Ordering::Relaxed)), (5, 100));
    }
}
