//! The provider use case (一数一源): a department pushes updates of one
//! dataset it provides. The provider check comes first (a refusal is
//! audited), then the body is parsed line by line as it arrives, every
//! line validated against the catalog; the valid lines are applied
//! together through the group committer (or, in cluster mode, made
//! durable in the replicated update log) with the request's audit entry,
//! and the outcome is returned only once all of that is durable.
//!
//! Memory: an NDJSON body is parsed as it streams, so only a partial line
//! and the parsed updates are held, never the raw body (a JSON array body
//! is held, within the body limit, and parsed one element at a time).
//! Rejections are listed with their lines up to [`MAX_LISTED_REJECTIONS`]
//! and only counted beyond, so a body of nothing but bad lines answers in
//! bounded size.

use crate::line::{for_provider, parse_line, parse_value, LineError};
use crate::log::{LoggedMessage, UpdateLog};
use basedata_store::caller::Caller;
use basedata_store::catalog::{Dataset, Provider};
use basedata_store::providers::REFUSED;
use basedata_store::commit::Committer;
use basedata_store::ndjson::Splitter;
use basedata_store::{Action, AuditEvent, Outcome, Store, Update, WriteBatch};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why a provider's request was not taken. Line-level mistakes are not
/// errors: they are the outcome's `rejected` lines.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no dataset {0:?} in the catalog")]
    UnknownDataset(String),
    /// Not the dataset's provider; audited as `denied`.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    InvalidBody(String),
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the server is at capacity; retry shortly")]
    Overloaded,
    #[error("{0}")]
    Unavailable(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    /// The stable code of the API (and of `denied` audit entries).
    pub fn code(&self) -> &'static str {
        match self {
            Error::UnknownDataset(_) => "unknown_dataset",
            Error::Forbidden(_) => "forbidden",
            Error::InvalidBody(_) => "invalid_body",
            Error::PayloadTooLarge(_) => "payload_too_large",
            Error::Overloaded => "overloaded",
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) => "internal",
        }
    }
}

// A store's failure, as every use case tells it.
basedata_store::failure_conversions!(Error);

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the updates of a body are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One update a line.
    Ndjson,
    /// One JSON array of updates.
    JsonArray,
}

/// Rejected lines listed with their line number, key and message; past
/// these, rejections are only counted by code.
pub const MAX_LISTED_REJECTIONS: usize = 1000;

/// The rejected lines of a request: the first [`MAX_LISTED_REJECTIONS`]
/// in line order, and a count of all of them by code.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rejections {
    /// The lowest-numbered rejected lines, in line order.
    pub listed: Vec<(u64, LineError)>,
    /// Every rejected line, counted by its code.
    pub by_code: BTreeMap<&'static str, usize>,
}

/// The lines of `outcomes` the writer refused (outside the provider's
/// area or fields), as rejections of the lines `lines` numbers.
fn refused_lines(outcomes: &[Outcome], updates_lines: &[u64], keys: &[String]) -> Vec<(u64, LineError)> {
    outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            Outcome::Refused { code, reason } => {
                Some((updates_lines[i], LineError { code, message: reason.clone(), key: Some(keys[i].clone()) }))
            }
            _ => None,
        })
        .collect()
}

impl Rejections {
    fn push(&mut self, line: u64, e: LineError) {
        *self.by_code.entry(e.code).or_default() += 1;
        if self.listed.len() < MAX_LISTED_REJECTIONS {
            self.listed.push((line, e));
        }
    }

    /// Adds rejections found after parsing (whose lines may come before
    /// listed ones) and keeps the listed ones the lowest-numbered.
    fn merge(&mut self, more: Vec<(u64, LineError)>) {
        if more.is_empty() {
            return;
        }
        for (_, e) in &more {
            *self.by_code.entry(e.code).or_default() += 1;
        }
        self.listed.extend(more);
        self.listed.sort_by_key(|(line, _)| *line);
        self.listed.truncate(MAX_LISTED_REJECTIONS);
    }

    /// Counts rejections whose lines are not known here (cluster mode:
    /// refused by the writer of another node's apply).
    fn count(&mut self, code: &'static str, n: usize) {
        if n > 0 {
            *self.by_code.entry(code).or_default() += n;
        }
    }

    /// How many lines were rejected, listed or not.
    pub fn total(&self) -> usize {
        self.by_code.values().sum()
    }
}

/// What a provider's request did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub applied: usize,
    /// Acknowledged, not applied: not newer than the stored version.
    pub stale: usize,
    pub rejected: Rejections,
    /// The node's last change-log sequence number.
    pub last_seq: u64,
    /// Cluster mode: the log position of the request's last message.
    pub position: Option<u64>,
    /// Cluster mode: lines durable in the log whose outcome this node did
    /// not see (another node's partitions, or not applied here in time).
    pub logged: Option<usize>,
}

/// The provider use case and what it writes through.
pub struct Provide {
    store: Arc<Store>,
    committer: Arc<Committer>,
    /// Cluster mode: the replicated update log.
    log: Option<Arc<dyn UpdateLog>>,
    /// Largest accepted body, in bytes.
    max_body_bytes: usize,
}

impl std::fmt::Debug for Provide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provide").field("cluster", &self.log.is_some()).field("max_body_bytes", &self.max_body_bytes).finish()
    }
}

/// A request taken from an authorized provider, its body arriving.
#[derive(Debug)]
pub struct Submission<'a> {
    ds: &'a Dataset,
    /// The caller's part, for a dataset of several providers.
    by: Option<&'a Provider>,
    format: Format,
    limit: usize,
    received: usize,
    splitter: Splitter,
    /// A JSON array body, which is parsed whole.
    array: Vec<u8>,
    updates: Vec<Update>,
    /// The line number of each update.
    lines: Vec<u64>,
    rejected: Rejections,
    event: AuditEvent,
}

impl Submission<'_> {
    /// The body's format (NDJSON unless said otherwise).
    pub fn in_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Takes the next piece of the body.
    pub fn push(&mut self, bytes: &[u8]) -> Result<()> {
        self.received += bytes.len();
        if self.received > self.limit {
            return Err(Error::PayloadTooLarge(self.limit));
        }
        match self.format {
            Format::Ndjson => {
                let (ds, by, updates, lines, rejected) = (self.ds, self.by, &mut self.updates, &mut self.lines, &mut self.rejected);
                self.splitter.push(bytes, &mut |n, line| take(n, parse_line(ds, line).and_then(|u| for_provider(ds, by, u)), updates, lines, rejected));
            }
            Format::JsonArray => self.array.extend_from_slice(bytes),
        }
        Ok(())
    }

    /// The body has ended.
    fn finish(&mut self) -> Result<()> {
        match self.format {
            Format::Ndjson => {
                let (ds, by, updates, lines, rejected) = (self.ds, self.by, &mut self.updates, &mut self.lines, &mut self.rejected);
                std::mem::take(&mut self.splitter)
                    .finish(&mut |n, line| take(n, parse_line(ds, line).and_then(|u| for_provider(ds, by, u)), updates, lines, rejected));
            }
            Format::JsonArray => {
                // Element by element: a whole `Vec<Value>` of a large body
                // would take many times the body's size.
                let array = std::mem::take(&mut self.array);
                let (ds, by, updates, lines, rejected) = (self.ds, self.by, &mut self.updates, &mut self.lines, &mut self.rejected);
                let mut each = EachElement(|n, v: serde_json::Value| {
                    take(n, parse_value(ds, &v).and_then(|u| for_provider(ds, by, u)), updates, lines, rejected)
                });
                let mut de = serde_json::Deserializer::from_slice(&array);
                serde::de::DeserializeSeed::deserialize(&mut each, &mut de).and_then(|()| de.end()).map_err(|e| {
                    let what = match e.classify() {
                        serde_json::error::Category::Data => "an array of updates is expected",
                        _ => "malformed JSON",
                    };
                    Error::InvalidBody(format!("request body: {what} (line {}, column {})", e.line(), e.column()))
                })?;
            }
        }
        Ok(())
    }
}

/// Visits the elements of one JSON array in turn, numbering them from 1.
struct EachElement<F>(F);

impl<'de, F: FnMut(u64, serde_json::Value)> serde::de::DeserializeSeed<'de> for &mut EachElement<F> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(u64, serde_json::Value)> serde::de::Visitor<'de> for &mut EachElement<F> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of updates")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        let mut n = 0;
        while let Some(v) = seq.next_element::<serde_json::Value>()? {
            n += 1;
            (self.0)(n, v);
        }
        Ok(())
    }
}

/// Files one parsed line as an update or a rejection.
fn take(
    n: u64,
    parsed: std::result::Result<Update, LineError>,
    updates: &mut Vec<Update>,
    lines: &mut Vec<u64>,
    rejected: &mut Rejections,
) {
    match parsed {
        Ok(u) => {
            updates.push(u);
            lines.push(n);
        }
        Err(e) => rejected.push(n, e),
    }
}

impl Provide {
    pub fn new(store: Arc<Store>, committer: Arc<Committer>, max_body_bytes: usize) -> Provide {
        Provide { store, committer, log: None, max_body_bytes }
    }

    /// Cluster mode: updates go through the replicated log.
    pub fn with_log(mut self, log: Arc<dyn UpdateLog>) -> Provide {
        self.log = Some(log);
        self
    }

    /// Takes a request of `caller` to update `dataset`: only the dataset's
    /// provider may (a refusal is audited before it is returned).
    /// `purpose` defaults to "provider update".
    pub async fn begin(&self, caller: &Caller, dataset: &str, purpose: Option<&str>) -> Result<Submission<'_>> {
        let ds = self.store.catalog().dataset(dataset).ok_or_else(|| Error::UnknownDataset(dataset.to_owned()))?;
        let mut event = caller.event(purpose.unwrap_or("provider update"), Action::Update, None);
        event.datasets = vec![ds.id.clone()];
        if !caller.provides(ds) {
            let who: Vec<&str> = ds.providers.iter().map(|p| p.id.as_str()).collect();
            let err = Error::Forbidden(format!("only {} provides dataset {} (one datum, one source)", who.join(", "), ds.id));
            event.action = Action::Denied;
            event.outcome = err.code().to_owned();
            self.committer.commit(Vec::new(), vec![event], WriteBatch::new()).await?;
            return Err(err);
        }
        let by = ds.division.as_ref().and_then(|_| ds.provider_entry(&caller.department.id));
        Ok(Submission {
            ds,
            by,
            format: Format::Ndjson,
            limit: self.max_body_bytes,
            received: 0,
            splitter: Splitter::new(),
            array: Vec::new(),
            updates: Vec::new(),
            lines: Vec::new(),
            rejected: Rejections::default(),
            event,
        })
    }

    /// Applies a whole submission: returns once its valid lines and its
    /// audit entry are durable.
    pub async fn apply(&self, s: Submission<'_>) -> Result<Report> {
        self.apply_keeping(s, None).await
    }

    /// [`Provide::apply`], then `keep` takes the listed rejected lines (if
    /// any): in the same task as the commit, so that it runs even when
    /// the request is given up meanwhile.
    pub async fn apply_keeping(&self, mut s: Submission<'_>, keep: Option<KeepRejected>) -> Result<Report> {
        s.finish()?;
        if let Some(log) = &self.log {
            return self.logged(log.clone(), s, keep).await;
        }
        let submitted = s.updates.len();
        s.event.outcome = format!("submitted={submitted} rejected={}", s.rejected.total());
        s.event.rejected_lines = s.rejected.total() as u64;
        // New keys' mappings are sealed here, on a request thread, so that
        // the single writer has less to do per update.
        let mut mappings = WriteBatch::new();
        self.store.seal_new_keys(&s.updates, &mut mappings)?;
        let keys: Vec<String> = s.updates.iter().map(|u| u.key.as_str().to_owned()).collect();
        let denied = s.event.clone();
        let (committer, lines, mut rejected) = (self.committer.clone(), s.lines, s.rejected);
        // The updates' commit and the entry for the lines the writer
        // refused run to their end in a task of their own: a request given
        // up between the two (its client gone, its time limit passed)
        // would leave applied updates with no record of those refusals.
        let settled = tokio::spawn(async move {
            let done = committer.commit(s.updates, vec![s.event], mappings).await?;
            // Lines the writer refused (outside the provider's part, or
            // links that conflict with stored ones) are rejected like ones
            // that failed validation.
            let counted = rejected.total();
            rejected.merge(refused_lines(&done.outcomes, &lines, &keys));
            last_steps(&committer, denied, &rejected, rejected.total() - counted, keep).await?;
            Ok::<_, Error>((done, rejected))
        });
        let (done, rejected) = settled.await.map_err(|e| Error::Internal(format!("the submission's commit failed: {e}")))??;
        let applied = done.outcomes.iter().filter(|o| matches!(o, Outcome::Applied { .. })).count();
        let stale = done.outcomes.iter().filter(|o| matches!(o, Outcome::Stale { .. })).count();
        Ok(Report {
            applied,
            stale,
            rejected,
            last_seq: done.last_seq,
            position: None,
            logged: None,
        })
    }

    /// Cluster mode: the request is audited here first (so that no update
    /// is in the log without the request that brought it on record), then
    /// the valid lines are made durable in the replicated log — the answer
    /// promises that much, and no more is needed for them to reach every
    /// node — and the answer waits a little for this node to apply them,
    /// so it can tell applied from stale.
    ///
    /// From the request's entry on, the steps run to their end in a task
    /// of their own, as on a single node: a request given up while the log
    /// takes its lines or this node applies them would otherwise leave the
    /// lines in the log with no record of the ones refused.
    async fn logged(&self, log: Arc<dyn UpdateLog>, mut s: Submission<'_>, keep: Option<KeepRejected>) -> Result<Report> {
        let prepared = if s.updates.is_empty() {
            crate::log::Prepared::default()
        } else {
            log.prepare(&self.store, &s.ds.id, &s.updates).map_err(|e| Error::Unavailable(e.0))?
        };
        let too_large = prepared.too_large.iter().map(|&i| {
            let e = LineError {
                code: "payload_too_large",
                message: format!("this update is larger than one message of the update log takes ({} bytes)", prepared.limit),
                key: Some(s.updates[i].key.as_str().to_owned()),
            };
            (s.lines[i], e)
        });
        s.rejected.merge(too_large.collect());
        s.event.outcome = format!("submitted={} rejected={}", s.updates.len() - prepared.too_large.len(), s.rejected.total());
        s.event.rejected_lines = s.rejected.total() as u64;
        let (store, committer, mut rejected, event) = (self.store.clone(), self.committer.clone(), s.rejected, s.event);
        let settled = tokio::spawn(async move {
            let denied = event.clone();
            committer.commit(Vec::new(), vec![event], WriteBatch::new()).await?;
            let sent = log.send(&prepared).await.map_err(|e| Error::Unavailable(e.0))?;
            let positions = log.positions();
            let Some(last) = sent.iter().map(|m| m.position).max() else {
                let position = Some(positions.position());
                last_steps(&committer, denied, &rejected, 0, keep).await?;
                return Ok(Report { rejected, last_seq: store.last_seq(), position, ..Report::default() });
            };
            // Lines of partitions this node does not hold are applied
            // elsewhere: their outcome is not known here.
            let (mine, elsewhere): (Vec<&LoggedMessage>, Vec<_>) =
                sent.iter().partition(|m| log.partitioning().serves(m.partition));
            let mut logged = elsewhere.iter().map(|m| m.lines).sum::<usize>();
            let (mut applied, mut stale) = (0, 0);
            let mut last_seq = store.last_seq();
            let outcomes: Option<Vec<_>> = match mine.iter().map(|m| m.position).max() {
                Some(p) if positions.wait_for(p, log.apply_wait()).await => {
                    mine.iter().map(|m| positions.outcome(m.position)).collect()
                }
                Some(_) => None,
                None => Some(Vec::new()),
            };
            let counted = rejected.total();
            match outcomes {
                Some(o) => {
                    applied = o.iter().map(|a| a.applied).sum();
                    stale = o.iter().map(|a| a.stale).sum();
                    rejected.count(REFUSED, o.iter().map(|a| a.refused).sum());
                    rejected.count("conflict", o.iter().map(|a| a.conflicts).sum());
                    last_seq = o.iter().map(|a| a.last_seq).max().unwrap_or(last_seq);
                }
                None => logged += mine.iter().map(|m| m.lines).sum::<usize>(),
            }
            last_steps(&committer, denied, &rejected, rejected.total() - counted, keep).await?;
            Ok(Report { applied, stale, rejected, last_seq, position: Some(last), logged: Some(logged) })
        });
        settled.await.map_err(|e| Error::Internal(format!("the submission's logging failed: {e}")))?
    }
}

/// What keeps a submission's listed rejected lines for its stewards (see
/// [`Provide::apply_keeping`]): handed the lines, a future that keeps them.
pub type KeepRejected =
    Box<dyn FnOnce(Vec<(u64, LineError)>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send>;

/// A submission's last steps once its lines are in: the refusals' entry
/// (see [`audit_refusals`]), then the listed rejected lines handed to
/// `keep`, if there are any.
async fn last_steps(
    committer: &Committer,
    denied: AuditEvent,
    rejected: &Rejections,
    found_later: usize,
    keep: Option<KeepRejected>,
) -> Result<()> {
    audit_refusals(committer, denied, rejected, found_later).await?;
    if let Some(keep) = keep.filter(|_| !rejected.listed.is_empty()) {
        keep(rejected.listed.clone()).await;
    }
    Ok(())
}

/// Lines refused for being outside the caller's area or fields are
/// on record as a `denied` entry of their own beside the request's,
/// like a refused request (`event` is the request's entry, reused).
/// `found_later` of them were found by the writer, after the request's
/// entry counted the others as rejected lines: the refusal's entry
/// counts those, so the yearly report counts each line once.
async fn audit_refusals(committer: &Committer, mut event: AuditEvent, rejected: &Rejections, found_later: usize) -> Result<()> {
    let n = rejected.by_code.get(REFUSED).copied().unwrap_or(0);
    event.outcome = match (n, found_later) {
        (0, 0) => return Ok(()),
        (0, later) => format!("conflict lines={later}: links that conflict with stored ones"),
        (n, _) => format!("{REFUSED} lines={n}: outside the provider's area or fields"),
    };
    event.action = Action::Denied;
    event.rejected_lines = found_later as u64;
    committer.commit(Vec::new(), vec![event], WriteBatch::new()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use basedata_store::caller::{Department, Role};

    fn provide() -> Provide {
        let store = Arc::new(crate::memory_store(5));
        let committer = Arc::new(Committer::start(store.clone(), 64));
        Provide::new(store, committer, 64 << 20)
    }

    fn gongan() -> Caller {
        Caller::declared(Arc::new(Department::new("gongan", vec![Role::Provider])), None)
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    const GOOD: &str = r#"{"key":"11010519491231002X","version":1,"fields":{"name":"张三","gender":"2","birth_date":"1949-12-31","status":"normal"}}"#;

    #[test]
    fn a_body_of_bad_lines_lists_the_first_thousand_and_counts_the_rest() {
        let p = provide();
        let caller = gongan();
        let r = run(async {
            let mut s = p.begin(&caller, "hukou", None).await.unwrap();
            let bad = "{}\n".repeat(10_000);
            for _ in 0..30 {
                s.push(bad.as_bytes()).unwrap();
            }
            s.push(format!("{GOOD}\n{{\"key\":\"1\",\"version\":1}}\n").as_bytes()).unwrap();
            p.apply(s).await.unwrap()
        });
        assert_eq!(r.applied, 1);
        assert_eq!(r.rejected.listed.len(), MAX_LISTED_REJECTIONS);
        assert!(r.rejected.listed.iter().map(|(n, _)| *n).eq(1..=MAX_LISTED_REJECTIONS as u64), "the lowest lines, in order");
        assert_eq!(r.rejected.total(), 300_001);
        assert_eq!(r.rejected.by_code.get("invalid_body"), Some(&300_000));
        assert_eq!(r.rejected.by_code.get("invalid_key"), Some(&1));
    }

    #[test]
    fn rejections_found_later_keep_the_listed_ones_lowest() {
        let e = |code| LineError { code, message: String::new(), key: None };
        let mut r = Rejections::default();
        for n in 10..2_000 {
            r.push(n, e("invalid_body"));
        }
        r.merge(vec![(5, e("payload_too_large")), (3_000, e("payload_too_large"))]);
        assert_eq!(r.listed.len(), MAX_LISTED_REJECTIONS);
        assert_eq!(r.listed[0].0, 5);
        assert_eq!(r.listed.last().unwrap().0, 10 + MAX_LISTED_REJECTIONS as u64 - 2);
        assert_eq!(r.total(), 1_992);
    }

    #[test]
    fn a_json_array_is_taken_element_by_element() {
        let p = provide();
        let caller = gongan();
        let r = run(async {
            let mut s = p.begin(&caller, "hukou", None).await.unwrap().in_format(Format::JsonArray);
            s.push(format!("[{{}}, {GOOD}, 7]").as_bytes()).unwrap();
            p.apply(s).await.unwrap()
        });
        assert_eq!(r.applied, 1);
        assert_eq!(r.rejected.listed.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1, 3]);
        let p = provide();
        for body in [&b"{}"[..], b"[{}", b"[1] x"] {
            let err = run(async {
                let mut s = p.begin(&caller, "hukou", None).await.unwrap().in_format(Format::JsonArray);
                s.push(body).unwrap();
                p.apply(s).await.unwrap_err()
            });
            assert_eq!(err.code(), "invalid_body", "{}", String::from_utf8_lossy(body));
        }
    }

    /// A store with the example catalog of several providers.
    fn several() -> (Provide, Arc<Store>) {
        several_on(Arc::new(basedata_store::engine::mem::MemEngine::new()))
    }

    /// [`several`] over `engine`.
    fn several_on(engine: Arc<basedata_store::engine::mem::MemEngine>) -> (Provide, Arc<Store>) {
        let catalog = basedata_store::Catalog::from_toml_str(include_str!("../../store/catalog/several-providers.toml")).unwrap();
        let store = Arc::new(
            Store::open(
                engine,
                &basedata_store::Secret::from_bytes([9; 32]),
                Arc::new(catalog),
                Arc::new(basedata_store::clock::ManualClock::new(1)),
            )
            .unwrap(),
        );
        let committer = Arc::new(Committer::start(store.clone(), 64));
        (Provide::new(store.clone(), committer, 1 << 20), store)
    }

    fn provider(id: &str) -> Caller {
        Caller::declared(Arc::new(Department::new(id, vec![Role::Provider])), None)
    }

    /// Sends `lines` to `dataset` as `who`: (applied, stale, refused lines as (line, code, message)).
    fn send(p: &Provide, who: &str, dataset: &str, lines: &[String]) -> (usize, usize, Vec<(u64, &'static str, String)>) {
        let r = run(async {
            let mut s = p.begin(&provider(who), dataset, None).await.unwrap();
            s.push(lines.join("\n").as_bytes()).unwrap();
            p.apply(s).await.unwrap()
        });
        (r.applied, r.stale, r.rejected.listed.into_iter().map(|(n, e)| (n, e.code, e.message)).collect())
    }

    const P1: &str = "11010519491231002X";
    const P2: &str = "110105198001010016";

    fn permit(key: &str, version: u64, area: &str) -> String {
        format!(r#"{{"key":"{key}","version":{version},"fields":{{"name":"甲","area_code":"{area}","permit_no":"p{version}"}}}}"#)
    }

    fn delete(key: &str, version: u64) -> String {
        format!(r#"{{"key":"{key}","version":{version},"op":"delete"}}"#)
    }

    fn area_of(store: &Store, key: &str) -> Option<String> {
        let k = basedata_store::SubjectKey::parse(basedata_store::Subject::Person, key).unwrap();
        let r = store.get(&k, "residence_permit", None).unwrap()?;
        match r.field("area_code") {
            Some(basedata_store::Value::Str(s)) => Some(s.clone()),
            _ => None,
        }
    }

    fn denied_entries(store: &Store, department: &str) -> Vec<String> {
        let q = basedata_store::audit::AuditQuery { department: Some(department.into()), limit: 100, ..Default::default() };
        store.audit_query(&q).unwrap().into_iter().filter(|e| e.action == Action::Denied).map(|e| e.outcome).collect()
    }

    #[test]
    fn a_submission_given_up_while_it_commits_still_records_the_lines_it_refused() {
        let engine = Arc::new(basedata_store::engine::mem::MemEngine::new());
        let (p, store) = several_on(engine.clone());
        let wait = std::time::Duration::from_millis(50);
        let denied = run(async {
            let mut s = p.begin(&provider("yuexiu"), "residence_permit", None).await.unwrap();
            s.push([permit(P1, 1, "440104001"), permit(P2, 1, "440106")].join("\n").as_bytes()).unwrap();
            // Each write takes 300 ms: the request is given up (its client
            // gone, its time limit passed) while its updates are written.
            engine.delay_writes(std::time::Duration::from_millis(300));
            assert!(tokio::time::timeout(wait, p.apply(s)).await.is_err(), "given up before its commit was durable");
            // The refusal's entry follows the commit all the same.
            for _ in 0..100 {
                let denied = denied_entries(&store, "yuexiu");
                if !denied.is_empty() {
                    return denied;
                }
                tokio::time::sleep(wait).await;
            }
            Vec::new()
        });
        assert_eq!(denied, vec!["forbidden lines=1: outside the provider's area or fields"]);
        assert_eq!(area_of(&store, P1).as_deref(), Some("440104001"), "the valid line was applied");
    }

    #[test]
    fn each_area_provider_writes_only_records_of_its_area() {
        let (p, store) = several();
        // Yuexiu creates its own record; a new record in Tianhe's area or in
        // nobody's is refused, line by line.
        let (applied, _, refused) =
            send(&p, "yuexiu", "residence_permit", &[permit(P1, 1, "440104001"), permit(P2, 1, "440106"), permit(P2, 2, "440199")]);
        assert_eq!(applied, 1);
        assert_eq!(refused.iter().map(|(n, c, _)| (*n, *c)).collect::<Vec<_>>(), vec![(2, "forbidden"), (3, "forbidden")]);
        assert!(refused[0].2.contains("440106 is not in the area of yuexiu; only tianhe may"), "{}", refused[0].2);
        assert!(refused[1].2.contains("area 440199 is not any provider's area"), "{}", refused[1].2);
        assert_eq!(denied_entries(&store, "yuexiu"), vec!["forbidden lines=2: outside the provider's area or fields"]);
        // Tianhe may neither change nor delete Yuexiu's record.
        let (applied, _, refused) = send(&p, "tianhe", "residence_permit", &[permit(P1, 2, "440106"), delete(P1, 3)]);
        assert_eq!((applied, refused.len()), (0, 2));
        assert!(refused.iter().all(|(_, c, m)| *c == "forbidden" && m.contains("only yuexiu may change or move it")), "{refused:?}");
        assert_eq!(area_of(&store, P1).as_deref(), Some("440104001"));
        // A stale line stays stale, whoever sends it.
        assert_eq!(send(&p, "tianhe", "residence_permit", &[permit(P1, 1, "440106")]).1, 1);
    }

    #[test]
    fn a_delete_of_a_key_without_a_record_blocks_no_provider() {
        let (p, store) = several();
        // Tianhe deletes a key nobody holds, at the highest version there
        // is: refused, so Yuexiu can still create its record at version 1.
        let (applied, _, refused) = send(&p, "tianhe", "residence_permit", &[delete(P2, u64::MAX)]);
        assert_eq!((applied, refused.len()), (0, 1));
        assert!(refused[0].2.contains("no record of this key is held"), "{refused:?}");
        assert_eq!(send(&p, "yuexiu", "residence_permit", &[permit(P2, 1, "440104")]).0, 1);
        // Nor once the owner has deleted it: the next record of the key
        // needs only outrun the owner's delete.
        assert_eq!(send(&p, "yuexiu", "residence_permit", &[delete(P2, 2)]).0, 1);
        assert_eq!(send(&p, "tianhe", "residence_permit", &[delete(P2, u64::MAX)]).2.len(), 1);
        assert_eq!(send(&p, "tianhe", "residence_permit", &[permit(P2, 3, "440106")]).0, 1);
        assert_eq!(area_of(&store, P2).as_deref(), Some("440106"));
    }

    #[test]
    fn a_record_moves_to_another_area_by_its_current_provider_only() {
        let (p, store) = several();
        send(&p, "yuexiu", "residence_permit", &[permit(P1, 1, "440104")]);
        // Yuexiu moves it to Tianhe; from then on Tianhe owns it.
        assert_eq!(send(&p, "yuexiu", "residence_permit", &[permit(P1, 2, "440106")]).0, 1);
        assert_eq!(area_of(&store, P1).as_deref(), Some("440106"));
        let (applied, _, refused) = send(&p, "yuexiu", "residence_permit", &[permit(P1, 3, "440104")]);
        assert_eq!((applied, refused[0].1), (0, "forbidden"), "the old area's provider cannot take it back");
        assert_eq!(send(&p, "tianhe", "residence_permit", &[permit(P1, 4, "440106")]).0, 1);
        assert_eq!(send(&p, "yuexiu", "residence_permit", &[delete(P1, 5)]).2.len(), 1, "nor delete it");
        assert_eq!(send(&p, "tianhe", "residence_permit", &[delete(P1, 6)]).0, 1);
        assert_eq!(area_of(&store, P1), None);
        // Tianhe's counters are its own.
        assert_eq!(store.provider_stats("residence_permit", "tianhe").updates, 2);
        assert_eq!(store.provider_stats("residence_permit", "yuexiu").updates, 2);
    }

    #[test]
    fn a_field_provider_writes_only_its_fields_and_keeps_the_others() {
        let (p, store) = several();
        let key = basedata_store::SubjectKey::parse(basedata_store::Subject::Person, P1).unwrap();
        let fields = || -> Vec<String> {
            store.get(&key, "death", None).unwrap().map(|r| r.fields.into_iter().map(|(n, _)| n).collect()).unwrap_or_default()
        };
        let police = |v: u64, extra: &str| format!(r#"{{"key":"{P1}","version":{v},"fields":{{"police_station":"某派出所"{extra}}}}}"#);
        let health = |v: u64| format!(r#"{{"key":"{P1}","version":{v},"fields":{{"name":"甲","death_date":"2020-02-02"}}}}"#);
        assert_eq!(send(&p, "gongan", "death", &[police(1, "")]).0, 1);
        // A field of health's part: the whole line is refused.
        let (applied, _, refused) = send(&p, "gongan", "death", &[police(2, r#","cause_of_death":"x""#)]);
        assert_eq!((applied, refused[0].1), (0, "forbidden"));
        assert_eq!(refused[0].2, "field cause_of_death is provided by weijian, not gongan");
        // Health's upsert sets its fields and keeps the police's.
        assert_eq!(send(&p, "weijian", "death", &[health(3)]).0, 1);
        assert_eq!(fields(), ["name", "death_date", "police_station"]);
        // Health's part requires its name; the police's does not.
        let (_, _, refused) = send(&p, "weijian", "death", &[format!(r#"{{"key":"{P1}","version":4,"fields":{{"death_date":"2020-02-03"}}}}"#)]);
        assert_eq!((refused[0].1, refused[0].2.as_str()), ("invalid_value", "field name: required"));
        // A delete removes the sender's fields only; the record goes with the last.
        assert_eq!(send(&p, "gongan", "death", &[delete(P1, 5)]).0, 1);
        assert_eq!(fields(), ["name", "death_date"]);
        assert_eq!(send(&p, "weijian", "death", &[delete(P1, 6)]).0, 1);
        assert!(store.get(&key, "death", None).unwrap().is_none());
    }

    #[test]
    fn a_department_outside_the_providers_is_refused_whole() {
        let (p, store) = several();
        let err = run(async { p.begin(&provider("shichang"), "residence_permit", None).await.unwrap_err() });
        assert_eq!(err.code(), "forbidden");
        assert!(err.to_string().contains("only yuexiu, tianhe, laisui provide"), "{err}");
        assert_eq!(denied_entries(&store, "shichang"), vec!["forbidden"]);
    }
}
