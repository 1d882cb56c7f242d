//! Audited uses in compact form ([`Uses`]) and as the journal keeps them:
//! a request's uses, sealed (they name subjects by their keys, and the
//! data directory holds no key in the clear), durable before the
//! request's answer leaves, and entered into the chain and indexes by the
//! commit writer behind it. Each record is entered as entries of its own
//! (a chunk entry per run of one department's rows), not merged with
//! other records: records are batch chunks of hundreds of lines or more.

use super::{Action, AuditEvent};
use crate::codec::{encode_marked, marked_body, FORMAT_V1};
use crate::keys::{DocType, SubjectKey};
use crate::pseudo::{Pid, Sealer};
use crate::{Error, Result};

/// Associated data of the seal: a record of uses opens only as one.
const AD: &[u8] = b"basedata journal uses";

/// Audited uses in the compact form they travel in from whoever answered
/// them to the audit trail: every distinct string and list of strings
/// once, a fixed-size row a use. A batch chunk's thousands of lines share
/// their department, purpose, dataset, fields and a few outcomes, so
/// building, sealing, queueing and entering them costs no allocation a
/// line, and the writer compares numbers where it would compare strings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Uses {
    names: Vec<String>,
    /// Lists of strings (datasets, fields), as places in `names`.
    lists: Vec<Vec<u32>>,
    rows: Vec<Use>,
}

/// One use of a [`Uses`]; `u32`s are places in its string table, except
/// `datasets` and `fields`, places in its table of lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Use {
    /// Who made it.
    pub by: Stamp,
    pub action: Action,
    /// The key asked for and its pseudonym, made by whoever built the
    /// row (off the writer's thread); only the key is sealed.
    pub subject: Option<(SubjectKey, Pid)>,
    pub datasets: u32,
    pub fields: u32,
    pub outcome: u32,
    pub key_mapped: bool,
    pub rejected_lines: u64,
    /// The grants the use relied on, as a place in the table of lists;
    /// `None` for none (most uses).
    pub grants: Option<u32>,
}

/// Lists [`Uses::list`] compares a new one with, newest first.
pub const LISTS_LOOKED_AT: usize = 8;

/// Who made a use, as places in a [`Uses`]' string table
/// ([`Uses::stamp`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub department: u32,
    pub operator: Option<u32>,
    pub operator_verified: bool,
    pub purpose: u32,
    pub purpose_code: Option<u32>,
}

impl Stamp {
    /// A use made by this caller.
    pub fn row(self, action: Action, subject: Option<(SubjectKey, Pid)>, datasets: u32, fields: u32, outcome: u32, key_mapped: bool) -> Use {
        Use {
            by: self,
            action,
            subject,
            datasets,
            fields,
            outcome,
            key_mapped,
            rejected_lines: 0,
            grants: None,
        }
    }
}

impl Uses {
    pub fn with_capacity(rows: usize) -> Uses {
        Uses { rows: Vec::with_capacity(rows), ..Uses::default() }
    }

    /// The place of `s` in the string table. A linear search from the end:
    /// a record holds a handful of distinct strings, the one wanted most
    /// often the last added.
    pub fn name(&mut self, s: &str) -> u32 {
        if let Some(i) = self.names.iter().rposition(|t| t == s) {
            return i as u32;
        }
        self.names.push(s.to_owned());
        (self.names.len() - 1) as u32
    }

    /// The place of the list `items` in the table of lists. Lists are
    /// few and mostly the last one again: they are compared by name with
    /// the last [`LISTS_LOOKED_AT`], and one not among them is added
    /// (again, if it was older), so lines that each claim another set of
    /// fields cost a bounded search, not one growing with the table.
    pub fn list<'s, I>(&mut self, items: I) -> u32
    where
        I: IntoIterator<Item = &'s str> + Clone,
    {
        let names = &self.names;
        let same = |l: &Vec<u32>| {
            let mut items = items.clone().into_iter();
            l.iter().all(|&i| items.next() == Some(names[i as usize].as_str())) && items.next().is_none()
        };
        let from = self.lists.len().saturating_sub(LISTS_LOOKED_AT);
        if let Some(at) = self.lists[from..].iter().rposition(same) {
            return (from + at) as u32;
        }
        // Not among them by name, so not by place either: added at once.
        let ids: Vec<u32> = items.into_iter().map(|s| self.name(s)).collect();
        self.push_list(ids)
    }

    /// The place of the list of string places `ids`, looked for as
    /// [`Uses::list`] looks.
    fn list_of(&mut self, ids: Vec<u32>) -> u32 {
        let from = self.lists.len().saturating_sub(LISTS_LOOKED_AT);
        if let Some(at) = self.lists[from..].iter().rposition(|l| *l == ids) {
            return (from + at) as u32;
        }
        self.push_list(ids)
    }

    fn push_list(&mut self, ids: Vec<u32>) -> u32 {
        self.lists.push(ids);
        (self.lists.len() - 1) as u32
    }

    pub fn push(&mut self, u: Use) {
        self.rows.push(u);
    }

    pub fn rows(&self) -> &[Use] {
        &self.rows
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The string at place `i` of the table.
    pub fn text(&self, i: u32) -> &str {
        &self.names[i as usize]
    }

    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// The list at place `i`, as places in the string table.
    pub(crate) fn ids(&self, i: u32) -> &[u32] {
        &self.lists[i as usize]
    }

    /// The list at place `i`, spelled out.
    pub fn list_texts(&self, i: u32) -> Vec<String> {
        self.ids(i).iter().map(|&n| self.text(n).to_owned()).collect()
    }

    /// The department, operator and purpose of `by` (its other members
    /// are not looked at), interned: what every use one caller made in
    /// one request shares.
    pub fn stamp(&mut self, by: &AuditEvent) -> Stamp {
        Stamp {
            department: self.name(&by.department),
            operator: by.operator.as_deref().map(|o| self.name(o)),
            operator_verified: by.operator_verified,
            purpose: self.name(&by.purpose),
            purpose_code: by.purpose_code.as_deref().map(|c| self.name(c)),
        }
    }

    /// The place of the grant ids `ids` in the table of lists, `None` for
    /// none: a use's [`Use::grants`].
    pub fn grants(&mut self, ids: &[String]) -> Option<u32> {
        (!ids.is_empty()).then(|| self.list(ids.iter().map(String::as_str)))
    }

    /// `events` in this form; `pseudonym` gives a key's pseudonym.
    pub fn of_events(events: &[AuditEvent], pseudonym: impl Fn(&SubjectKey) -> Pid) -> Uses {
        let mut u = Uses::with_capacity(events.len());
        for e in events {
            let stamp = u.stamp(e);
            let datasets = u.list(e.datasets.iter().map(String::as_str));
            let fields = u.list(e.fields.iter().map(String::as_str));
            let outcome = u.name(&e.outcome);
            let mut row = stamp.row(e.action, e.key.map(|k| (k, pseudonym(&k))), datasets, fields, outcome, e.key_mapped);
            row.rejected_lines = e.rejected_lines;
            row.grants = u.grants(&e.grants);
            u.push(row);
        }
        u
    }

    /// Every use as an event of its own.
    pub fn events(&self) -> Vec<AuditEvent> {
        let s = |i: u32| self.text(i).to_owned();
        self.rows
            .iter()
            .map(|r| AuditEvent {
                department: s(r.by.department),
                operator: r.by.operator.map(s),
                operator_verified: r.by.operator_verified,
                purpose: s(r.by.purpose),
                purpose_code: r.by.purpose_code.map(s),
                action: r.action,
                key: r.subject.map(|(k, _)| k),
                datasets: self.list_texts(r.datasets),
                fields: self.list_texts(r.fields),
                outcome: s(r.outcome),
                key_mapped: r.key_mapped,
                // As callers make events: the writer hashes the key.
                pid: None,
                rejected_lines: r.rejected_lines,
                grants: r.grants.map(|g| self.list_texts(g)).unwrap_or_default(),
            })
            .collect()
    }
}

/// One use as a record stores it, strings by their place in the record's
/// table; `K` holds the key's bytes and `L` a list of places (borrowed
/// when writing, owned when reading back).
#[derive(bincode::Encode, bincode::Decode)]
struct Row<K, L> {
    department: u32,
    operator: Option<u32>,
    operator_verified: bool,
    purpose: u32,
    purpose_code: Option<u32>,
    action: Action,
    /// Document type code and normalized key.
    key: Option<(u8, K)>,
    datasets: L,
    fields: L,
    outcome: u32,
    key_mapped: bool,
    rejected_lines: u64,
    grants: Option<L>,
}

/// A row as records of format marker 1 stored it, naming no grants: read,
/// never written.
#[derive(bincode::Encode, bincode::Decode)]
struct RowV1<K, L> {
    department: u32,
    operator: Option<u32>,
    operator_verified: bool,
    purpose: u32,
    purpose_code: Option<u32>,
    action: Action,
    key: Option<(u8, K)>,
    datasets: L,
    fields: L,
    outcome: u32,
    key_mapped: bool,
    rejected_lines: u64,
}

impl<K, L> From<RowV1<K, L>> for Row<K, L> {
    fn from(r: RowV1<K, L>) -> Row<K, L> {
        Row {
            department: r.department,
            operator: r.operator,
            operator_verified: r.operator_verified,
            purpose: r.purpose,
            purpose_code: r.purpose_code,
            action: r.action,
            key: r.key,
            datasets: r.datasets,
            fields: r.fields,
            outcome: r.outcome,
            key_mapped: r.key_mapped,
            rejected_lines: r.rejected_lines,
            grants: None,
        }
    }
}

/// Format marker of records of uses whose rows name their grants.
const USES_FORMAT_V2: u8 = 2;

/// The journal payload of `uses`: the string table and the rows, behind
/// the format marker, sealed.
pub fn seal(sealer: &Sealer, uses: &Uses) -> Result<Vec<u8>> {
    let rows: Vec<Row<&[u8], &[u32]>> = uses
        .rows
        .iter()
        .map(|r| Row {
            department: r.by.department,
            operator: r.by.operator,
            operator_verified: r.by.operator_verified,
            purpose: r.by.purpose,
            purpose_code: r.by.purpose_code,
            action: r.action,
            key: r.subject.as_ref().map(|(k, _)| (k.doc_type().as_u8(), k.as_bytes())),
            datasets: uses.ids(r.datasets),
            fields: uses.ids(r.fields),
            outcome: r.outcome,
            key_mapped: r.key_mapped,
            rejected_lines: r.rejected_lines,
            grants: r.grants.map(|g| uses.ids(g)),
        })
        .collect();
    sealer.seal(AD, &encode_marked(USES_FORMAT_V2, &(&uses.names, &rows)))
}

/// The uses of a journal payload made by [`seal`]; `pseudonym` gives a
/// key's pseudonym.
pub fn open(sealer: &Sealer, payload: &[u8], pseudonym: impl Fn(&SubjectKey) -> Pid) -> Result<Uses> {
    let corrupt = |msg: &str| Error::Corrupt { what: "journal uses", msg: msg.to_owned() };
    type Table = (Vec<String>, Vec<Row<Vec<u8>, Vec<u32>>>);
    let opened = sealer.open(AD, payload)?;
    let (marker, body) = marked_body("journal uses", &opened)?;
    let (names, rows): Table = match marker {
        USES_FORMAT_V2 => body.decode()?,
        FORMAT_V1 => {
            let (names, rows): (Vec<String>, Vec<RowV1<Vec<u8>, Vec<u32>>>) = body.decode()?;
            (names, rows.into_iter().map(Row::from).collect())
        }
        found => return Err(Error::Format { what: "journal uses", found }),
    };
    let mut u = Uses { names, lists: Vec::new(), rows: Vec::with_capacity(rows.len()) };
    let n = u.names.len() as u32;
    let name = |i: u32| if i < n { Ok(i) } else { Err(corrupt("a string outside the table")) };
    for r in rows {
        if r.datasets.iter().chain(&r.fields).chain(r.grants.iter().flatten()).any(|&i| i >= n) {
            return Err(corrupt("a string outside the table"));
        }
        let subject = match r.key {
            None => None,
            Some((doc, bytes)) => {
                let doc = DocType::from_u8(doc).ok_or_else(|| corrupt("unknown document type"))?;
                let k = SubjectKey::from_normalized_bytes(doc, &bytes).map_err(|_| corrupt("invalid key"))?;
                Some((k, pseudonym(&k)))
            }
        };
        let by = Stamp {
            department: name(r.department)?,
            operator: r.operator.map(name).transpose()?,
            operator_verified: r.operator_verified,
            purpose: name(r.purpose)?,
            purpose_code: r.purpose_code.map(name).transpose()?,
        };
        let row = Use {
            by,
            action: r.action,
            subject,
            datasets: u.list_of(r.datasets),
            fields: u.list_of(r.fields),
            outcome: name(r.outcome)?,
            key_mapped: r.key_mapped,
            rejected_lines: r.rejected_lines,
            grants: r.grants.map(|g| u.list_of(g)),
        };
        u.push(row);
    }
    Ok(u)
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

/// How long records whose entering failed wait before the writer tries
/// them again (sooner when an auditor waits for them): a fault that
/// lasts (a store refusing writes until an interrupted load is finished)
/// then costs a failed write a second, not one with every group.
pub const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Default)]
struct Queue {
    records: std::collections::VecDeque<Uses>,
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
    /// Entering failed: not to be tried again before this, unless
    /// someone waits for the records.
    held_until: Option<std::time::Instant>,
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
    /// Read around each append of a record of uses, written while a
    /// backup's copy is taken (see [`Pending::hold_appends`]).
    gate: tokio::sync::RwLock<()>,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            queue: Default::default(),
            entered_cv: Default::default(),
            entered: tokio::sync::watch::channel(0).0,
            nudge: crossbeam::channel::bounded(1),
            gate: Default::default(),
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

    /// Queues a record (called in journal order). Wakes the writer
    /// when the queue was empty (to time [`ENTER_AFTER`] from) and when
    /// it reaches [`ENTER_EVENTS`].
    pub fn push(&self, uses: Uses) {
        let mut q = self.lock();
        let before = q.events;
        q.events += uses.len();
        q.queued += 1;
        q.records.push_back(uses);
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
        let now = std::time::Instant::now();
        if q.hurry {
            return Some(since.min(now));
        }
        let at = if q.events >= ENTER_EVENTS { since.min(now) } else { since + ENTER_AFTER };
        Some(q.held_until.map_or(at, |h| at.max(h)))
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

    /// Takes every queued record, in order; none while records whose
    /// entering failed wait out [`RETRY_AFTER`] and nobody waits for them.
    pub fn take_all(&self) -> Vec<Uses> {
        let mut q = self.lock();
        if !q.hurry && q.held_until.is_some_and(|h| std::time::Instant::now() < h) {
            return Vec::new();
        }
        q.events = 0;
        q.since = None;
        q.hurry = false;
        q.held_until = None;
        q.records.drain(..).collect()
    }

    /// Puts records taken by [`Pending::take_all`] back in front of the
    /// queue, in their order, after entering them failed: they are in the
    /// journal, and the position up to which the trail holds every record
    /// must not pass them (a later entering would record it, and a reopen
    /// would then skip them). Tried again after [`RETRY_AFTER`].
    pub fn put_back(&self, taken: Vec<Uses>) {
        if taken.is_empty() {
            return;
        }
        let mut q = self.lock();
        for uses in taken.into_iter().rev() {
            q.events += uses.len();
            q.records.push_front(uses);
        }
        let now = std::time::Instant::now();
        q.since = Some(now);
        q.hurry = false;
        q.held_until = Some(now + RETRY_AFTER);
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

    /// Held while a record of uses is appended; waits while appends are
    /// held.
    pub async fn appending(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    /// Holds every append of a record of uses until the guard is dropped
    /// (blocking; not from an async task). A backup takes its copy under it,
    /// once [`Pending::settle`] has every use recorded in the trail: a use
    /// answered meanwhile is then in the copy or recorded after it, never
    /// answered before the copy and only in the journal, which the copy
    /// leaves out. Appenders wait (async) meanwhile; lookups and
    /// verifications, which go through the group commit, do not.
    pub fn hold_appends(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.gate.blocking_write()
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
