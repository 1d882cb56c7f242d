//! Records of audited uses as the journal keeps them: a request's events,
//! sealed (they name subjects by their keys, and the data directory holds
//! no key in the clear), durable before the request's answer leaves, and
//! entered into the chain and indexes by the commit writer behind it.

use super::{Action, AuditEvent};
use crate::codec::{decode, encode};
use crate::keys::{DocType, SubjectKey};
use crate::pseudo::Sealer;
use crate::{Error, Result};

/// Associated data of the seal: a record of uses opens only as one.
const AD: &[u8] = b"basedata journal uses";

/// The strings of a record's events, each stored once: a chunk's events
/// share their department, purpose, datasets, fields and outcomes.
#[derive(Default)]
struct Table<'a> {
    strings: Vec<&'a str>,
}

impl<'a> Table<'a> {
    /// The place of `s` in the table. A linear search from the end: a
    /// record holds a handful of distinct strings, the one wanted most
    /// often the last added.
    fn id(&mut self, s: &'a str) -> u32 {
        if let Some(i) = self.strings.iter().rposition(|t| *t == s) {
            return i as u32;
        }
        self.strings.push(s);
        (self.strings.len() - 1) as u32
    }
}

/// One event as a record stores it, strings by their place in the
/// record's table; `K` holds the key's bytes (borrowed when writing,
/// owned when reading back).
#[derive(bincode::Encode, bincode::Decode)]
struct Row<K> {
    department: u32,
    operator: Option<u32>,
    operator_verified: bool,
    purpose: u32,
    purpose_code: Option<u32>,
    action: Action,
    /// Document type code and normalized key.
    key: Option<(u8, K)>,
    datasets: Vec<u32>,
    fields: Vec<u32>,
    outcome: u32,
    key_mapped: bool,
    rejected_lines: u64,
}

/// The journal payload of `events`: the string table and the rows,
/// behind the format marker, sealed.
pub fn seal(sealer: &Sealer, events: &[AuditEvent]) -> Result<Vec<u8>> {
    let mut t = Table::default();
    let rows: Vec<Row<&[u8]>> = events
        .iter()
        .map(|e| Row {
            department: t.id(&e.department),
            operator: e.operator.as_deref().map(|o| t.id(o)),
            operator_verified: e.operator_verified,
            purpose: t.id(&e.purpose),
            purpose_code: e.purpose_code.as_deref().map(|c| t.id(c)),
            action: e.action,
            key: e.key.as_ref().map(|k| (k.doc_type().as_u8(), k.as_bytes())),
            datasets: e.datasets.iter().map(|d| t.id(d)).collect(),
            fields: e.fields.iter().map(|f| t.id(f)).collect(),
            outcome: t.id(&e.outcome),
            key_mapped: e.key_mapped,
            rejected_lines: e.rejected_lines,
        })
        .collect();
    sealer.seal(AD, &encode(&(&t.strings, &rows)))
}

/// The events of a journal payload made by [`seal`].
pub fn open(sealer: &Sealer, payload: &[u8]) -> Result<Vec<AuditEvent>> {
    let corrupt = |msg: &str| Error::Corrupt { what: "journal uses", msg: msg.to_owned() };
    let (strings, rows): (Vec<String>, Vec<Row<Vec<u8>>>) = decode("journal uses", &sealer.open(AD, payload)?)?;
    let s = |i: u32| strings.get(i as usize).cloned().ok_or_else(|| corrupt("a string outside the table"));
    let many = |ids: Vec<u32>| ids.into_iter().map(s).collect::<Result<Vec<String>>>();
    rows.into_iter()
        .map(|r| {
            let key = match r.key {
                None => None,
                Some((doc, bytes)) => {
                    let doc = DocType::from_u8(doc).ok_or_else(|| corrupt("unknown document type"))?;
                    Some(SubjectKey::from_normalized_bytes(doc, &bytes).map_err(|_| corrupt("invalid key"))?)
                }
            };
            Ok(AuditEvent {
                department: s(r.department)?,
                operator: r.operator.map(s).transpose()?,
                operator_verified: r.operator_verified,
                purpose: s(r.purpose)?,
                purpose_code: r.purpose_code.map(s).transpose()?,
                action: r.action,
                key,
                datasets: many(r.datasets)?,
                fields: many(r.fields)?,
                outcome: s(r.outcome)?,
                key_mapped: r.key_mapped,
                rejected_lines: r.rejected_lines,
            })
        })
        .collect()
}

/// Events at which records of uses wait for the writer to enter those
/// queued before them: about 30 ms of the writer's time, what an auditor
/// may wait to see the newest uses, and the memory they hold meanwhile.
pub const MAX_PENDING_EVENTS: usize = 32_768;

/// How long the writer lets records of uses gather before it enters
/// them, unless [`ENTER_EVENTS`] gathered first or someone waits for them
/// ([`Pending::hurry`]): entering a few hundred uses in one group costs
/// the writer far less per use than a group per request.
pub const ENTER_AFTER: std::time::Duration = std::time::Duration::from_millis(10);

/// Events that make the writer enter the queued records at once.
pub const ENTER_EVENTS: usize = 4096;

#[derive(Default)]
struct Queue {
    records: std::collections::VecDeque<(u64, Vec<AuditEvent>)>,
    events: usize,
    /// Records queued and entered so far.
    queued: u64,
    entered: u64,
    /// The writer stopped: nothing more will be entered.
    closed: bool,
    /// When the oldest record queued was.
    since: Option<std::time::Instant>,
    /// Someone waits for the queued records to be entered.
    hurry: bool,
}

/// Records of uses durable (or about to be) in the journal and not yet
/// entered into the audit trail, in journal order: filled by whoever
/// records a use, emptied by the commit writer.
pub struct Pending {
    queue: std::sync::Mutex<Queue>,
    /// Signalled when records are entered (blocking waiters).
    entered_cv: std::sync::Condvar,
    /// Records entered so far (async waiters).
    entered: tokio::sync::watch::Sender<u64>,
    /// Wakes the writer when a record is queued.
    nudge: (crossbeam::channel::Sender<()>, crossbeam::channel::Receiver<()>),
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            queue: Default::default(),
            entered_cv: Default::default(),
            entered: tokio::sync::watch::channel(0).0,
            nudge: crossbeam::channel::bounded(1),
        }
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = self.lock();
        f.debug_struct("Pending").field("records", &q.records.len()).field("events", &q.events).finish()
    }
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues record `lsn` (called in journal order) and wakes the writer.
    /// Queues record `lsn` (called in journal order). Wakes the writer
    /// when the queue was empty (to time [`ENTER_AFTER`] from) and when
    /// it reaches [`ENTER_EVENTS`].
    pub fn push(&self, lsn: u64, events: Vec<AuditEvent>) {
        let mut q = self.lock();
        let before = q.events;
        q.events += events.len();
        q.queued += 1;
        q.records.push_back((lsn, events));
        let wake = q.since.is_none() || (before < ENTER_EVENTS && q.events >= ENTER_EVENTS);
        q.since.get_or_insert_with(std::time::Instant::now);
        drop(q);
        if wake {
            let _ = self.nudge.0.try_send(());
        }
    }

    /// When the writer should enter the queued records: `None` when none
    /// is queued; now when enough gathered or someone waits for them.
    pub fn due(&self) -> Option<std::time::Instant> {
        let q = self.lock();
        let since = q.since?;
        Some(if q.hurry || q.events >= ENTER_EVENTS { since.min(std::time::Instant::now()) } else { since + ENTER_AFTER })
    }

    /// Asks the writer to enter what is queued now (an auditor waits).
    pub fn hurry(&self) {
        let mut q = self.lock();
        if q.records.is_empty() {
            return;
        }
        q.hurry = true;
        drop(q);
        let _ = self.nudge.0.try_send(());
    }

    /// Takes every queued record: how many, and their events in order.
    pub fn take_all(&self) -> (u64, Vec<AuditEvent>) {
        let mut q = self.lock();
        let n = q.records.len() as u64;
        q.events = 0;
        q.since = None;
        q.hurry = false;
        let mut events = Vec::new();
        for (_, mut e) in q.records.drain(..) {
            events.append(&mut e);
        }
        (n, events)
    }

    /// `records` taken records are in the audit trail.
    pub fn entered(&self, records: u64) {
        let mut q = self.lock();
        q.entered += records;
        let n = q.entered;
        drop(q);
        self.entered_cv.notify_all();
        self.entered.send_replace(n);
    }

    /// The writer stopped for good (a panic): waiters give up.
    pub fn close(&self) {
        self.lock().closed = true;
        self.entered_cv.notify_all();
        self.entered.send_modify(|_| ());
    }

    pub fn closed(&self) -> bool {
        self.lock().closed
    }

    /// Events queued and not yet taken.
    pub fn events(&self) -> usize {
        self.lock().events
    }

    /// Records queued so far: once this many are entered, every use
    /// recorded before the call is in the audit trail.
    pub fn queued(&self) -> u64 {
        self.lock().queued
    }

    /// Follows the records entered.
    pub fn watch_entered(&self) -> tokio::sync::watch::Receiver<u64> {
        self.entered.subscribe()
    }

    /// The writer's wake-up: a message arrives when a record was queued.
    pub fn nudges(&self) -> crossbeam::channel::Receiver<()> {
        self.nudge.1.clone()
    }

    /// Waits (blocking) until every use recorded before the call is in the
    /// audit trail, or `patience` passes: whether it is.
    pub fn settle(&self, patience: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + patience;
        self.hurry();
        let mut q = self.lock();
        let target = q.queued;
        while q.entered < target {
            if q.closed {
                return false;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            q = self.entered_cv.wait_timeout(q, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }
}

#[cfg(test)]
mod tests;
