//! Cluster mode's replicated update log, apart from its transport: how a
//! provider's updates become sealed log messages (partitioned by key), how
//! a node applies a message through its group committer with its log
//! position in the same atomic batch, and the node's position.
//!
//! - One stream, subjects `<stream>.p.<partition>`, the partition being
//!   xxh3 of the key's pseudonym modulo the configured count. Each message
//!   holds updates of one dataset and one partition as update lines (the
//!   API's own format, keys normalized; the header names the provider of
//!   a dataset of several, whose part each node's writer judges), sealed with a key derived from the
//!   store secret ([`Sealer`]): the log's servers hold neither real keys
//!   nor field values in the clear.
//! - Applying: each message's updates go through the group committer like
//!   a provider's, with the message's stream sequence written in the same
//!   atomic batch (`cluster/position` in `meta`), so a restart resumes
//!   exactly after the last applied message. Re-applying is harmless
//!   anyway: provider versions make a repeated update stale.
//!
//! The transport (NATS JetStream, in the server crate) implements
//! [`UpdateLog`] for the provider use case and drives [`submit`].

use crate::line::{parse_line, write_line};
use basedata_store::codec::{decode, encode};
use basedata_store::commit::{Committer, SubmitError};
use basedata_store::pseudo::Sealer;
use basedata_store::{Catalog, Cf, Outcome, Pid, Secret, Store, SubjectKey, Update, WriteBatch};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The store's position in the log: the stream sequence of the last
/// applied message.
pub const META_POSITION: &[u8] = b"cluster/position";
/// The partitions a store's position covers.
pub const META_PARTITIONS: &[u8] = b"cluster/partitions";

/// Plaintext bytes of update lines per log message, well below NATS's
/// default 1 MiB message limit once sealed.
pub const MESSAGE_BYTES: usize = 256 << 10;
/// Outcomes of recently applied messages kept for the requests that
/// logged them.
const OUTCOMES_KEPT: usize = 65_536;

/// What applying one log message did on this node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub applied: usize,
    pub stale: usize,
    /// Refused by the writer: outside the provider's area or fields.
    pub refused: usize,
    /// Refused by the writer: links that conflict with stored ones.
    pub conflicts: usize,
    /// The node's last change-log sequence number after it.
    pub last_seq: u64,
}

/// A log message ready to publish.
#[derive(Debug)]
pub struct Outgoing {
    pub subject: String,
    pub payload: Vec<u8>,
    /// Sent again under the same id, it is stored once.
    pub id: String,
    pub partition: u16,
    pub lines: usize,
}

/// A provider request's updates as log messages.
#[derive(Debug, Default)]
pub struct Prepared {
    pub messages: Vec<Outgoing>,
    /// Indices of updates too large for one message of the log's servers.
    pub too_large: Vec<usize>,
    /// The payload limit they were held to, in bytes (the servers'
    /// `max_payload` less room for the message's headers).
    pub limit: usize,
}

/// One message of a provider's request, acknowledged by the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoggedMessage {
    pub position: u64,
    pub partition: u16,
    /// Update lines in it.
    pub lines: usize,
}

/// Why updates could not be logged.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LogError(pub String);

/// A future of the log, boxed so that [`UpdateLog`] is object-safe.
pub type LogFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The replicated log as the provider use case sees it.
pub trait UpdateLog: Send + Sync {
    /// Seals validated updates of one dataset into log messages.
    fn prepare(&self, store: &Store, dataset: &str, updates: &[Update]) -> Result<Prepared, LogError>;
    /// Publishes prepared messages; once this returns they are durable in
    /// the log.
    fn send<'a>(&'a self, prepared: &'a Prepared) -> LogFuture<'a, Result<Vec<LoggedMessage>, LogError>>;
    /// How messages map to partitions and which this node holds.
    fn partitioning(&self) -> &Partitioning;
    /// What this node has applied.
    fn positions(&self) -> &Positions;
    /// How long an update request waits for this node to apply its lines.
    fn apply_wait(&self) -> Duration;
}

/// A random id per log message, so that a message sent again after a lost
/// acknowledgement is stored once (the log's duplicate window).
pub fn message_id() -> String {
    let mut b = [0u8; 16];
    // Unique is all it needs; the clock stands in without an entropy source.
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        b.copy_from_slice(&t.as_nanos().to_be_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The subject of a partition.
pub fn subject(stream: &str, partition: u16) -> String {
    format!("{stream}.p.{partition}")
}

/// The subject of governance entries (grants, disputes, responsible
/// persons), one for the whole stream so that every node applies them in
/// one order.
pub fn governance_subject(stream: &str) -> String {
    format!("{stream}.g")
}

/// The partition of a log subject (`<stream>.p.<n>`).
pub fn partition_of_subject(stream: &str, subject: &str) -> Option<u16> {
    subject.strip_prefix(stream)?.strip_prefix(".p.")?.parse().ok()
}

/// A key's partition, from its pseudonym: stable for a secret and a
/// partition count, spread evenly whatever the keys look like.
pub fn partition_of(pid: &Pid, partitions: u16) -> u16 {
    (xxhash_rust::xxh3::xxh3_64(pid.as_bytes()) % u64::from(partitions.max(1))) as u16
}

/// The update lines of one message: `dataset\n` (`dataset@provider\n`
/// for a provider of a dataset of several, whose part every node's writer
/// judges) then one line per update. All updates of a message come from
/// one request, so from one provider.
pub fn encode_message(dataset: &str, updates: &[&Update]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + updates.len() * 192);
    out.extend_from_slice(dataset.as_bytes());
    if let Some(by) = updates.first().and_then(|u| u.provider.as_deref()) {
        out.push(b'@');
        out.extend_from_slice(by.as_bytes());
    }
    for u in updates {
        out.push(b'\n');
        write_line(u, &mut out);
    }
    out
}

/// Reads a message back, validating every line against this node's catalog.
pub fn decode_message(catalog: &Catalog, plain: &[u8]) -> Result<Vec<Update>, String> {
    let mut lines = plain.split(|&c| c == b'\n');
    let head = std::str::from_utf8(lines.next().unwrap_or_default()).map_err(|_| "dataset name is not UTF-8".to_owned())?;
    let (name, by) = match head.split_once('@') {
        Some((name, by)) => (name, Some(by)),
        None => (head, None),
    };
    let ds = catalog.dataset(name).ok_or_else(|| format!("dataset {name} is not in this node's catalog"))?;
    lines
        .enumerate()
        .map(|(i, l)| {
            let mut u = parse_line(ds, l).map_err(|e| format!("line {}: {} ({})", i + 1, e.code, e.message))?;
            // Refused or not, the writer decides as on the node that took it.
            u.provider = by.map(str::to_owned);
            Ok(u)
        })
        .collect()
}

/// Puts the write of the store's position, `seq`, into `b`: written in
/// the same batch as what applying message `seq` wrote.
pub fn put_position(b: &mut WriteBatch, seq: u64) {
    b.put(Cf::Meta, META_POSITION.to_vec(), encode(&seq));
}

/// The position recorded in a store (0: nothing applied yet).
pub fn stored_position(store: &Store) -> basedata_store::Result<u64> {
    Ok(match store.engine().get(Cf::Meta, META_POSITION)? {
        Some(v) => decode::<u64>("cluster position", &v)?,
        None => 0,
    })
}

/// The position to apply the log from, for the partitions `serves`. A
/// position covers only the partitions the store held when it was
/// written: a node that now serves more (its configuration grew, or it was
/// restored from the backup of a node that held fewer) reads the log again
/// from the start, where every update it holds already is stale and those
/// of its new partitions are applied. The partitions are recorded (synced)
/// before anything is applied.
pub fn prepare_store(store: &Store, serves: &[u16]) -> basedata_store::Result<u64> {
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
    b.put(Cf::Meta, META_PARTITIONS.to_vec(), encode(&serves.to_vec()));
    b.put(Cf::Meta, META_POSITION.to_vec(), encode(&position));
    store.engine().write(b, basedata_store::Durability::Sync)?;
    Ok(position)
}

/// How updates map to the log: its stream, its partitions, the ones this
/// node holds, and the seal of its messages.
#[derive(Debug)]
pub struct Partitioning {
    stream: String,
    partitions: u16,
    /// Per partition: whether this node holds it.
    served: Vec<bool>,
    sealer: Sealer,
}

impl Partitioning {
    pub fn new(stream: &str, partitions: u16, serves: &[u16], secret: &Secret) -> Partitioning {
        let mut served = vec![false; usize::from(partitions)];
        for &p in serves {
            if let Some(s) = served.get_mut(usize::from(p)) {
                *s = true;
            }
        }
        Partitioning { stream: stream.to_owned(), partitions, served, sealer: Sealer::log(secret) }
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
        let p = partition_of(&store.pseudonym(key), self.partitions);
        (!self.serves(p)).then_some(p)
    }

    /// Seals validated updates of one dataset into log messages: one per
    /// partition, cut at [`MESSAGE_BYTES`] of lines (the lines of one key
    /// stay in order, in one message or consecutive ones). An update whose
    /// line alone, sealed, exceeds `limit` (the log's payload limit: what
    /// its servers take in one message, less room for the message's
    /// headers) is left out and named in `too_large` (by index).
    pub fn prepare(&self, store: &Store, dataset: &str, updates: &[Update], limit: usize) -> Result<Prepared, LogError> {
        let cut = MESSAGE_BYTES.min(limit / 2);
        let mut by_partition: BTreeMap<u16, Vec<(usize, &Update)>> = BTreeMap::new();
        for (i, u) in updates.iter().enumerate() {
            by_partition.entry(partition_of(&store.pseudonym(&u.key), self.partitions)).or_default().push((i, u));
        }
        let mut out = Prepared::default();
        for (p, ups) in by_partition {
            let subject = subject(&self.stream, p);
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
                    let sealed = self
                        .sealer
                        .seal(subject.as_bytes(), &encode_message(dataset, &lines))
                        .map_err(|e| LogError(e.to_string()))?;
                    if sealed.len() <= limit {
                        out.messages.push(Outgoing {
                            subject: subject.clone(),
                            payload: sealed,
                            id: message_id(),
                            partition: p,
                            lines: lines.len(),
                        });
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

    /// Seals a payload other than update lines (a governance entry) for
    /// `subject`, under the same key as update messages.
    pub fn seal(&self, subject: &str, plain: &[u8]) -> Result<Vec<u8>, LogError> {
        self.sealer.seal(subject.as_bytes(), plain).map_err(|e| LogError(e.to_string()))
    }

    /// Opens what [`Partitioning::seal`] sealed for `subject`.
    pub fn unseal(&self, subject: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
        self.sealer.open(subject.as_bytes(), payload).map_err(|e| e.to_string())
    }

    /// The updates of a log message of this node's partitions.
    pub fn open(&self, catalog: &Catalog, subject: &str, payload: &[u8]) -> Result<Vec<Update>, String> {
        let plain = self.sealer.open(subject.as_bytes(), payload).map_err(|e| e.to_string())?;
        decode_message(catalog, &plain)
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

/// What this node has applied of the log: its position (watched, for
/// read-your-writes waits) and the outcomes of recent messages (for the
/// update requests that logged them).
#[derive(Debug)]
pub struct Positions {
    position: tokio::sync::watch::Sender<u64>,
    outcomes: Mutex<BTreeMap<u64, Applied>>,
}

impl Positions {
    pub fn new(position: u64) -> Positions {
        Positions { position: tokio::sync::watch::channel(position).0, outcomes: Mutex::new(BTreeMap::new()) }
    }

    /// The stream sequence of the last message this node has applied durably.
    pub fn position(&self) -> u64 {
        *self.position.borrow()
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

    /// Message `pos` is durable here. Only written jobs get here, and they
    /// are a prefix of the applier's chain (see [`submit`]): the position
    /// never passes a gap.
    pub fn record(&self, pos: u64, applied: Applied) {
        {
            let mut o = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
            o.insert(pos, applied);
            while o.len() > OUTCOMES_KEPT {
                o.pop_first();
            }
        }
        basedata_store::commit::raise_to(&self.position, pos);
    }
}

/// What the applier's transport hears of each message it submitted.
pub trait ApplyWatch: Send + Sync + 'static {
    /// Message `seq` is durable here, with this outcome.
    fn applied(&self, seq: u64, applied: Applied);
    /// Message `seq`'s write failed; later jobs of its chain are dropped
    /// unwritten.
    fn failed(&self, seq: u64, error: &basedata_store::Error);
}

/// Hands one message's updates to the writer, with the position in the
/// same batch when `write_position`; waits (briefly, repeatedly) while the
/// writer's queue is full. The jobs of one run of the applier form a chain
/// guarded by `chain`: the reply of a failed write raises it on the writer
/// thread, before the writer takes its next group, so nothing queued
/// behind it is written. `permit` is held by the reply, so it is given
/// back once the job is answered (or dropped with it, should the writer
/// have stopped).
pub async fn submit(
    committer: &Committer,
    watch: Arc<dyn ApplyWatch>,
    chain: &Arc<AtomicBool>,
    seq: u64,
    updates: Vec<Update>,
    write_position: bool,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), LogError> {
    submit_with(committer, watch, chain, seq, updates, WriteBatch::new(), write_position, permit).await
}

/// [`submit`] with writes of the message's own (another node's audit
/// entries) in the same batch as its position.
#[allow(clippy::too_many_arguments)]
pub async fn submit_with(
    committer: &Committer,
    watch: Arc<dyn ApplyWatch>,
    chain: &Arc<AtomicBool>,
    seq: u64,
    mut updates: Vec<Update>,
    mut extra: WriteBatch,
    write_position: bool,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), LogError> {
    if write_position {
        put_position(&mut extra, seq);
    }
    let g = chain.clone();
    let mut reply: basedata_store::commit::Reply = Box::new(move |r| {
        let _permit = permit;
        match r {
            Ok(done) => {
                let count = |f: fn(&Outcome) -> bool| done.outcomes.iter().filter(|o| f(o)).count();
                let applied = count(|o| matches!(o, Outcome::Applied { .. }));
                let stale = count(|o| matches!(o, Outcome::Stale { .. }));
                let refused = count(|o| matches!(o, Outcome::Refused { code, .. } if *code != "conflict"));
                let conflicts = count(|o| matches!(o, Outcome::Refused { code: "conflict", .. }));
                watch.applied(seq, Applied { applied, stale, refused, conflicts, last_seq: done.last_seq });
            }
            Err(e) if matches!(*e, basedata_store::Error::Abandoned) => {}
            Err(e) => {
                g.store(true, Ordering::Release);
                watch.failed(seq, &e);
            }
        }
    });
    loop {
        match committer.submit_guarded(updates, Vec::new(), extra, reply, Some(chain.clone())) {
            Ok(()) => return Ok(()),
            Err(r) if r.why == SubmitError::Overloaded => {
                (updates, extra, reply) = (r.updates, r.extra, r.reply);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(_) => return Err(LogError("the writer stopped".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        let p = basedata_store::pseudo::Pseudonymizer::new(&Secret::from_bytes([1; 32]));
        let mut counts = [0u32; 16];
        for i in 0..16_000u16 {
            let d = time::Date::from_calendar_date(1970 + i32::from(i % 50), time::Month::March, 1 + (i % 28) as u8).unwrap();
            let k = SubjectKey::Person(basedata_store::PersonKey::from_parts("350102", d, i % 999).unwrap());
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
        let store = crate::memory_store(2);
        let all: Vec<u16> = (0..16).collect();
        assert_eq!(prepare_store(&store, &[0, 1, 2]).unwrap(), 0);
        let put = |pos: u64| {
            let mut b = WriteBatch::new();
            b.put(Cf::Meta, META_POSITION.to_vec(), encode(&pos));
            store.engine().write(b, basedata_store::Durability::Sync).unwrap();
        };
        put(500);
        // Fewer partitions, or the same: the position stands.
        assert_eq!(prepare_store(&store, &[1, 2]).unwrap(), 500);
        assert_eq!(prepare_store(&store, &[1, 2]).unwrap(), 500);
        // One more than the position covers (now {1, 2}): from the start.
        assert_eq!(prepare_store(&store, &[0, 1, 2]).unwrap(), 0);
        assert_eq!(stored_position(&store).unwrap(), 0);
        // All of them, from a position of some of them: from the start.
        put(700);
        assert_eq!(prepare_store(&store, &all).unwrap(), 0, "recorded {{0,1,2}} does not cover all 16");
        put(700);
        assert_eq!(prepare_store(&store, &all).unwrap(), 700);
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

    #[test]
    fn a_message_carries_the_provider_of_a_dataset_of_several() {
        let cat = Catalog::from_toml_str(include_str!("../../store/catalog/several-providers.toml")).unwrap();
        let ds = cat.dataset("death").unwrap();
        let line = br#"{"key":"11010519491231002X","version":4,"fields":{"police_station":"station 1"}}"#;
        let u = crate::line::for_provider(ds, ds.provider_entry("gongan"), parse_line(ds, line).unwrap()).unwrap();
        let plain = encode_message("death", &[&u]);
        assert!(plain.starts_with(b"death@gongan\n"));
        let back = decode_message(&cat, &plain).unwrap();
        assert_eq!((back[0].provider.as_deref(), &back[0]), (Some("gongan"), &u));
    }

    #[test]
    fn sealed_messages_open_only_with_their_subject() {
        let store = Store::open(
            Arc::new(basedata_store::engine::mem::MemEngine::new()),
            &Secret::from_bytes([3; 32]),
            Arc::new(Catalog::builtin()),
            Arc::new(basedata_store::clock::ManualClock::new(1)),
        )
        .unwrap();
        let cat = Catalog::builtin();
        let ds = cat.dataset("hukou").unwrap();
        let line = br#"{"key":"11010519491231002X","version":4,"fields":{"name":"x","gender":"2","status":"normal","birth_date":"1949-12-31"}}"#;
        let ups = vec![parse_line(ds, line).unwrap()];
        let part = Partitioning::new("S", 4, &[0, 1, 2, 3], &Secret::from_bytes([3; 32]));
        let prepared = part.prepare(&store, "hukou", &ups, 1 << 20).unwrap();
        assert_eq!(prepared.messages.len(), 1);
        let m = &prepared.messages[0];
        assert_eq!(part.open(&cat, &m.subject, &m.payload).unwrap(), ups);
        assert!(part.open(&cat, "S.p.99", &m.payload).is_err(), "another subject's seal");
        // A line that cannot fit the servers' limit is named, not sent.
        let tiny = part.prepare(&store, "hukou", &ups, 64).unwrap();
        assert!(tiny.messages.is_empty() && tiny.too_large == vec![0]);
    }
}
