//! Usage counters for the sharing report (评估与年度报告): per department and
//! per dataset, per day, per kind of use, maintained on the write path in
//! the same atomic batch as the audit entries and changes they count, so
//! reports are index reads and never drift from the audit trail.
//!
//! Days are calendar days in China Standard Time (UTC+8), the time zone of
//! the measures' deadlines and of the yearly report.
//!
//! Layout (`gov` family): `u/d/<department>\0<day:i32 BE><kind:u8>`,
//! `u/s/<dataset>\0<day><kind>` and, per consuming department and dataset
//! it touched, `u/p/<department>\0<dataset>\0<day><kind>` -> u64 BE.
//!
//! In cluster mode every node applies every update, so a dataset's applied
//! updates are counted by each node's writer already; uses are answered by
//! one node each. The uses other nodes answered are counted from their
//! audit entries as this node receives them through the log, once per
//! entry (a chain's copy takes each entry once), under the same keys with
//! `U` for `u`: the applier alone writes those, so they never race the
//! writer's cache of its own. Every read sums both, so any node reports the
//! cluster's uses and none counts a use twice.

use crate::audit::Action;
use crate::engine::{prefix_end, Cf, Engine, WriteBatch};
use crate::Result;
use std::collections::HashMap;

/// Offset of China Standard Time from UTC, in microseconds.
pub const CST_OFFSET_MICROS: i64 = 8 * 3600 * 1_000_000;

/// The CST calendar day (days since 1970-01-01) of a Unix-microsecond time.
pub fn day_of(micros: i64) -> i32 {
    (micros + CST_OFFSET_MICROS).div_euclid(86_400_000_000) as i32
}

/// The stored code of [`Kind::Uncatalogued`], far above the actions'.
const UNCATALOGUED: u8 = 0xff;
/// The stored code of [`Kind::Rejected`].
const REJECTED: u8 = 0xf0;
/// The stored codes of [`Kind::Refused`], one per [`Refusal`].
const REFUSED: u8 = 0xf1;

/// Why a department's request was refused, as the yearly report groups
/// refusals (Huizhou Art. 51 (三): use beyond what was granted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Refusal {
    /// A purpose the department may not state (`purpose_not_allowed`).
    Purpose = 0,
    /// Data of a class, dataset or role it may not use (`forbidden`).
    Class = 1,
    /// Too many different claims about a few-valued field (`claim_limit`).
    ClaimLimit = 2,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Refusal::Purpose, Refusal::Class, Refusal::ClaimLimit];

    /// The refusal a denial's outcome records: denials' outcomes start with
    /// the stable error code of the refusal.
    pub fn of_outcome(outcome: &str) -> Option<Refusal> {
        let code = outcome.split([':', ' ']).next().unwrap_or("");
        match code {
            "purpose_not_allowed" => Some(Refusal::Purpose),
            "forbidden" => Some(Refusal::Class),
            "claim_limit" => Some(Refusal::ClaimLimit),
            _ => None,
        }
    }
}

/// What a counter counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An audited action of a department.
    Action(Action),
    /// Updates applied to a dataset.
    Applied,
    /// A department's reads of subject data whose stated purpose named no
    /// catalogued purpose (free text, accepted from departments without a
    /// purpose list).
    Uncatalogued,
    /// Update lines refused (malformed, invalid values, too large), of a
    /// dataset and of the provider that sent them: the data-quality side of
    /// a provider's year.
    Rejected,
    /// A department's requests refused, by why.
    Refused(Refusal),
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Applied => 0,
            Kind::Action(a) => 1 + a as u8,
            Kind::Uncatalogued => UNCATALOGUED,
            Kind::Rejected => REJECTED,
            Kind::Refused(r) => REFUSED + r as u8,
        }
    }

    fn from_code(c: u8) -> Option<Kind> {
        match c {
            0 => return Some(Kind::Applied),
            UNCATALOGUED => return Some(Kind::Uncatalogued),
            REJECTED => return Some(Kind::Rejected),
            _ => {}
        }
        if let Some(r) = Refusal::ALL.into_iter().find(|r| REFUSED + *r as u8 == c) {
            return Some(Kind::Refused(r));
        }
        Action::ALL.into_iter().find(|a| 1 + *a as u8 == c).map(Kind::Action)
    }
}

/// Whose counter: a department, a dataset, or a department's use of one
/// dataset (who used a provider's data, and how).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner<'a> {
    Department(&'a str),
    Dataset(&'a str),
    Use { department: &'a str, dataset: &'a str },
}

/// The key prefix of every use counter.
const USE_PREFIX: &[u8] = b"u/p/";

fn prefix(owner: Owner<'_>) -> Vec<u8> {
    let (tag, name) = match owner {
        Owner::Department(n) => (b"u/d/", n),
        Owner::Dataset(n) => (b"u/s/", n),
        Owner::Use { department, dataset } => {
            let mut k = USE_PREFIX.to_vec();
            k.extend_from_slice(department.as_bytes());
            k.push(0);
            k.extend_from_slice(dataset.as_bytes());
            k.push(0);
            return k;
        }
    };
    let mut k = tag.to_vec();
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k
}

fn counter_key(owner: Owner<'_>, day: i32, kind: Kind) -> Vec<u8> {
    let mut k = prefix(owner);
    k.extend_from_slice(&day.to_be_bytes());
    k.push(kind.code());
    k
}

/// What `n` alike uses add to the counters: the action per department, a
/// read without a catalogued purpose, a refusal by its kind, the datasets
/// used (or refused) by the department, and rejected update lines. Shared
/// by the writer (this node's events) and the applier (others' entries).
#[allow(clippy::too_many_arguments)]
pub(crate) fn count_use(
    delta: &mut UsageDelta,
    day: i32,
    department: &str,
    action: Action,
    uncatalogued: bool,
    refusal: Option<Refusal>,
    datasets: &[String],
    rejected_lines: u64,
    n: u64,
) {
    let owner = Owner::Department(department);
    delta.add(owner, day, Kind::Action(action), n);
    if action.reads_subject_data() && uncatalogued {
        delta.add(owner, day, Kind::Uncatalogued, n);
    }
    if let Some(r) = refusal {
        delta.add(owner, day, Kind::Refused(r), n);
    }
    // Who used (or was refused) which dataset, for its provider's part of
    // the yearly report.
    if action.reads_subject_data() || action == Action::Denied {
        for ds in datasets {
            delta.add(Owner::Use { department, dataset: ds }, day, Kind::Action(action), n);
        }
    }
    // Rejected update lines, against the dataset and against the provider
    // that sent them (a dataset may have several).
    delta.add(owner, day, Kind::Rejected, rejected_lines * n);
    for ds in datasets {
        delta.add(Owner::Dataset(ds), day, Kind::Rejected, rejected_lines * n);
    }
}

/// The kind of refusal a use's outcome records, for a refused use.
pub(crate) fn refusal_of(action: Action, outcome: &str) -> Option<Refusal> {
    (action == Action::Denied).then(|| Refusal::of_outcome(outcome)).flatten()
}

/// A use as the counters see it: department, action, whether it read
/// without a catalogued purpose, its refusal, datasets, rejected lines.
type Shape<'a> = (&'a str, Action, bool, Option<Refusal>, &'a [String], u64);

/// Counts `events` into `delta`, alike ones together (see [`count_shapes`]).
pub(crate) fn count_events(delta: &mut UsageDelta, day: i32, events: &[crate::audit::AuditEvent]) {
    count_shapes(
        delta,
        day,
        events.iter().map(|ev| {
            let shape = (&*ev.department, ev.action, ev.purpose_code.is_none(), refusal_of(ev.action, &ev.outcome), &ev.datasets[..], ev.rejected_lines);
            (shape, 1)
        }),
    );
}

/// Counts `uses` into `delta`: rows alike by their table places first
/// (comparing numbers, not strings), then those few shapes by name.
pub(crate) fn count_uses(delta: &mut UsageDelta, day: i32, uses: &[crate::audit::uses::Uses]) {
    for u in uses {
        let alike = tally(u.rows().iter().map(|r| ((r.by.department, r.action, r.by.purpose_code.is_none(), r.outcome, r.datasets, r.rejected_lines), 1)));
        // Spelled out once a shape: a handful a record.
        let datasets: Vec<Vec<String>> = alike.iter().map(|((_, _, _, _, d, _), _)| u.list_texts(*d)).collect();
        count_shapes(
            delta,
            day,
            alike.iter().zip(&datasets).map(|(&((department, action, uncatalogued, outcome, _, rejected), n), datasets)| {
                let shape = (u.text(department), action, uncatalogued, refusal_of(action, u.text(outcome)), &datasets[..], rejected);
                (shape, n)
            }),
        );
    }
}

/// Counts uses of `day` into `delta`, each shape with its number: alike
/// ones (a batch chunk's lines mostly are) once, so a chunk of thousands
/// of lines costs a few counter updates, not thousands.
fn count_shapes<'a>(delta: &mut UsageDelta, day: i32, uses: impl Iterator<Item = (Shape<'a>, u64)>) {
    for ((department, action, uncatalogued, refusal, datasets, rejected), n) in tally(uses) {
        count_use(delta, day, department, action, uncatalogued, refusal, datasets, rejected, n);
    }
}

/// Adds up the numbers of equal items. Few distinct items a commit, and
/// equal ones come together: looking at the last few keeps it linear.
fn tally<T: PartialEq>(items: impl Iterator<Item = (T, u64)>) -> Vec<(T, u64)> {
    let mut out: Vec<(T, u64)> = Vec::new();
    for (item, k) in items {
        match out.iter_mut().rev().take(8).find(|(s, _)| *s == item) {
            Some((_, n)) => *n += k,
            None => out.push((item, k)),
        }
    }
    out
}

/// The first byte of the counters of uses other nodes answered.
const REMOTE: u8 = b'U';

/// `key` as the counter of uses other nodes answered.
fn remote_key(mut key: Vec<u8>) -> Vec<u8> {
    key[0] = REMOTE;
    key
}

/// The counters of uses other nodes of a cluster answered, kept by this
/// node's applier from their audit entries (see the module's doc). The
/// applier stages entries in log order and they are written in that order,
/// so it increments from its own cache; after a failed write it must
/// [`RemoteUsage::forget`] what it staged.
#[derive(Debug, Default)]
pub struct RemoteUsage {
    cache: UsageCache,
}

impl RemoteUsage {
    /// Counts the uses of one stored entry another node answered (one, or
    /// a chunk's, which share its time) into `batch`.
    pub fn count(&mut self, engine: &dyn Engine, uses: &[crate::audit::StoredEntry], batch: &mut WriteBatch) -> Result<()> {
        let mut delta = UsageDelta::default();
        // Counted as their node counted them, under the keys of others' uses.
        count_entries(&mut delta, uses);
        delta.inc = delta.inc.into_iter().map(|(k, by)| (remote_key(k), by)).collect();
        // Taken in at once, not after the write: the applier's next
        // entries are written after these, in order, or not at all.
        let values = delta.write(&self.cache, engine, batch)?;
        self.cache.absorb(values);
        Ok(())
    }

    /// Drops the cache: what was staged but not written must be read again.
    pub fn forget(&mut self) {
        self.cache = UsageCache::default();
    }
}

/// Counts the uses of one stored entry (one, or a chunk's, which share its
/// time) as the writer counted them when it answered them: another node's
/// (`RemoteUsage`), or this node's own taken back from the log after a
/// restore (`take_back`). Rejected update lines are counted by the node
/// that took the request: an entry does not carry them.
pub(crate) fn count_entries(delta: &mut UsageDelta, uses: &[crate::audit::StoredEntry]) {
    let Some(first) = uses.first() else { return };
    let shapes = uses
        .iter()
        .map(|e| ((&*e.department, e.action, e.purpose_code.is_none(), refusal_of(e.action, &e.outcome), &e.datasets[..], 0), 1));
    count_shapes(delta, day_of(first.at), shapes);
}

/// Counter values read so far, so that the writer increments without a
/// read per event. Only the writer thread touches it.
#[derive(Debug, Default)]
pub(crate) struct UsageCache {
    values: HashMap<Vec<u8>, u64>,
}

/// Increments accumulated during one commit, applied to the cache only
/// after the batch is written.
#[derive(Debug, Default)]
pub(crate) struct UsageDelta {
    inc: HashMap<Vec<u8>, u64>,
}

impl UsageDelta {
    pub(crate) fn add(&mut self, owner: Owner<'_>, day: i32, kind: Kind, by: u64) {
        if by > 0 {
            *self.inc.entry(counter_key(owner, day, kind)).or_default() += by;
        }
    }

    /// Puts the new counter values into `batch`; returns them for the cache.
    pub(crate) fn write(self, cache: &UsageCache, engine: &dyn Engine, batch: &mut WriteBatch) -> Result<Vec<(Vec<u8>, u64)>> {
        let mut out = Vec::with_capacity(self.inc.len());
        for (k, by) in self.inc {
            let base = match cache.values.get(&k) {
                Some(v) => *v,
                None => engine.get(Cf::Gov, &k)?.and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0),
            };
            batch.put(Cf::Gov, k.clone(), (base + by).to_be_bytes().to_vec());
            out.push((k, base + by));
        }
        Ok(out)
    }
}

impl UsageCache {
    pub(crate) fn absorb(&mut self, values: Vec<(Vec<u8>, u64)>) {
        // Bounded: one entry per (owner, day, kind) touched since start;
        // old days are dropped when the cache grows large.
        if self.values.len() > 100_000 {
            self.values.clear();
        }
        self.values.extend(values);
    }
}

/// Sums of `owner`'s counters over days `[from_day, to_day)`: the uses
/// this node answered and those other nodes did.
pub fn totals(engine: &dyn Engine, owner: Owner<'_>, from_day: i32, to_day: i32) -> Result<HashMap<Kind, u64>> {
    let mut out = HashMap::new();
    for p in [prefix(owner), remote_key(prefix(owner))] {
        for (kind, n) in totals_of(engine, p, from_day, to_day)? {
            *out.entry(kind).or_default() += n;
        }
    }
    Ok(out)
}

fn totals_of(engine: &dyn Engine, p: Vec<u8>, from_day: i32, to_day: i32) -> Result<HashMap<Kind, u64>> {
    // Counters are kept from day 0 (1970-01-01) on, where big-endian order
    // is numeric order: a period that starts earlier starts there (a
    // negative day's bytes would sort after every stored one).
    let from_day = from_day.max(0);
    let mut out = HashMap::new();
    if to_day <= from_day {
        return Ok(out);
    }
    let mut start = p.clone();
    start.extend_from_slice(&from_day.to_be_bytes());
    let mut end = p.clone();
    end.extend_from_slice(&to_day.to_be_bytes());
    for item in engine.scan(Cf::Gov, &start, Some(&end), false)? {
        let (k, v) = item?;
        let Some(kind) = k.last().copied().and_then(Kind::from_code) else { continue };
        let n = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
        *out.entry(kind).or_default() += n;
    }
    Ok(out)
}

/// `owner`'s counters of `kind`, one value per day of `[from_day, to_day)`,
/// in one scan.
pub fn daily(engine: &dyn Engine, owner: Owner<'_>, kind: Kind, from_day: i32, to_day: i32) -> Result<Vec<u64>> {
    daily_sum(engine, owner, &[kind], from_day, to_day)
}

/// The sum of `owner`'s counters of `kinds`, one value per day of
/// `[from_day, to_day)`, in one scan (a day's kinds sit side by side).
pub fn daily_sum(engine: &dyn Engine, owner: Owner<'_>, kinds: &[Kind], from_day: i32, to_day: i32) -> Result<Vec<u64>> {
    let mut out = vec![0; (to_day - from_day).max(0) as usize];
    if out.is_empty() {
        return Ok(out);
    }
    for p in [prefix(owner), remote_key(prefix(owner))] {
        let (mut start, mut end) = (p.clone(), p);
        start.extend_from_slice(&from_day.to_be_bytes());
        end.extend_from_slice(&to_day.to_be_bytes());
        for item in engine.scan(Cf::Gov, &start, Some(&end), false)? {
            let (k, v) = item?;
            let Some((day, code)) = day_and_code(&k) else { continue };
            if Kind::from_code(code).is_some_and(|k| kinds.contains(&k)) && (from_day..to_day).contains(&day) {
                out[(day - from_day) as usize] += v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            }
        }
    }
    Ok(out)
}

/// The day and kind code that end every counter key.
fn day_and_code(k: &[u8]) -> Option<(i32, u8)> {
    let n = k.len().checked_sub(5)?;
    Some((i32::from_be_bytes(k[n..n + 4].try_into().ok()?), k[n + 4]))
}

/// Every department's use of every dataset over days `[from_day, to_day)`:
/// `(department, dataset) -> kind -> total`. One scan of the use counters
/// (a row per pair, day and kind used).
pub fn use_totals(
    engine: &dyn Engine,
    from_day: i32,
    to_day: i32,
) -> Result<HashMap<(String, String), HashMap<Kind, u64>>> {
    let mut out: HashMap<(String, String), HashMap<Kind, u64>> = HashMap::new();
    for p in [USE_PREFIX.to_vec(), remote_key(USE_PREFIX.to_vec())] {
        let end = prefix_end(&p);
        for item in engine.scan(Cf::Gov, &p, end.as_deref(), false)? {
            let (k, v) = item?;
            let Some((day, code)) = day_and_code(&k) else { continue };
            let (Some(kind), true) = (Kind::from_code(code), (from_day..to_day).contains(&day)) else { continue };
            // `<department>\0<dataset>\0` between the prefix and the day.
            let names = &k[p.len()..k.len() - 5];
            let mut parts = names.split(|b| *b == 0);
            let (Some(d), Some(ds)) = (parts.next(), parts.next()) else { continue };
            let (Ok(d), Ok(ds)) = (std::str::from_utf8(d), std::str::from_utf8(ds)) else { continue };
            let n = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            *out.entry((d.to_owned(), ds.to_owned())).or_default().entry(kind).or_default() += n;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uses counted from their compact form count as the same events do,
    /// alike ones apart or together.
    #[test]
    fn compact_uses_count_as_their_events() {
        use crate::audit::{uses::Uses, AuditEvent};
        let ev = |department: &str, action: Action, datasets: &[&str], outcome: &str, code: Option<&str>| AuditEvent {
            department: department.into(),
            operator: None,
            operator_verified: false,
            purpose: "p".into(),
            purpose_code: code.map(Into::into),
            action,
            key: None,
            datasets: datasets.iter().map(|d| d.to_string()).collect(),
            fields: vec!["name".into()],
            outcome: outcome.into(),
            key_mapped: false,
            pid: None,
            rejected_lines: 0,
            grants: Vec::new(),
        };
        let mut events = Vec::new();
        for i in 0..40 {
            events.push(ev("counter", Action::BatchVerify, &["hukou"], "match", Some("c")));
            if i % 7 == 0 {
                events.push(ev("counter", Action::Denied, &["hukou"], "forbidden", Some("c")));
                events.push(ev("other", Action::BatchVerify, &["hukou", "death"], "invalid_key", None));
            }
        }
        events.push(ev("counter", Action::BatchVerify, &[], "invalid_body", Some("c")));
        let (mut a, mut b) = (UsageDelta::default(), UsageDelta::default());
        count_events(&mut a, 3, &events);
        count_uses(&mut b, 3, &[Uses::of_events(&events, |_| unreachable!("no keys"))]);
        assert!(!a.inc.is_empty());
        assert_eq!(a.inc, b.inc);
    }

    #[test]
    fn days_are_cst() {
        // 2026-11-22T15:59:59Z is 23:59:59 CST; one second later is the next day.
        let t = 1_795_363_199_000_000; // 2026-11-22T15:59:59Z
        assert_eq!(day_of(t) + 1, day_of(t + 1_000_000));
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(-CST_OFFSET_MICROS - 1), -1);
    }

    #[test]
    fn refusals_are_told_by_the_denial_code() {
        assert_eq!(Refusal::of_outcome("purpose_not_allowed: purpose not_allowed"), Some(Refusal::Purpose));
        assert_eq!(Refusal::of_outcome("forbidden"), Some(Refusal::Class));
        assert_eq!(Refusal::of_outcome("claim_limit"), Some(Refusal::ClaimLimit));
        for other in ["invalid_key", "not_found", "", "forbiddenx", "claim_limits"] {
            assert_eq!(Refusal::of_outcome(other), None, "{other}");
        }
    }

    #[test]
    fn daily_sums_add_the_kinds_asked_for_day_by_day() {
        let engine = crate::engine::mem::MemEngine::new();
        let owner = Owner::Use { department: "counter", dataset: "hukou" };
        let mut d = UsageDelta::default();
        d.add(owner, 10, Kind::Action(Action::Lookup), 2);
        d.add(owner, 10, Kind::Action(Action::Verify), 3);
        d.add(owner, 12, Kind::Action(Action::BatchVerify), 4);
        d.add(owner, 12, Kind::Action(Action::Denied), 7);
        // Outside the days asked for, and another dataset whose name
        // begins with this one's.
        d.add(owner, 13, Kind::Action(Action::Lookup), 1);
        d.add(Owner::Use { department: "counter", dataset: "hukou2" }, 10, Kind::Action(Action::Lookup), 5);
        let mut batch = WriteBatch::new();
        d.write(&UsageCache::default(), &engine, &mut batch).unwrap();
        engine.write(batch, crate::Durability::Sync).unwrap();
        let used = [Action::Lookup, Action::Verify, Action::BatchVerify].map(Kind::Action);
        assert_eq!(daily_sum(&engine, owner, &used, 9, 13).unwrap(), vec![0, 5, 0, 4]);
        assert_eq!(daily(&engine, owner, Kind::Action(Action::Denied), 9, 13).unwrap(), vec![0, 0, 0, 7]);
        assert_eq!(daily_sum(&engine, owner, &used, 13, 13).unwrap(), Vec::<u64>::new());
    }

    fn entry(at: i64, department: &str, action: Action, datasets: &[&str], outcome: &str) -> crate::audit::StoredEntry {
        crate::audit::StoredEntry {
            at,
            department: department.into(),
            operator: None,
            purpose: "p".into(),
            action,
            subject: None,
            datasets: datasets.iter().map(|d| d.to_string()).collect(),
            fields: Vec::new(),
            outcome: outcome.into(),
            operator_verified: false,
            purpose_code: None,
            grants: Vec::new(),
            hash: [0; 32],
        }
    }

    #[test]
    fn uses_other_nodes_answered_count_beside_this_nodes_own() {
        let engine = crate::engine::mem::MemEngine::new();
        let day = 20_000;
        let at = i64::from(day) * 86_400_000_000 - CST_OFFSET_MICROS + 3_600_000_000;
        assert_eq!(day_of(at), day);
        // This node's writer: one lookup of hukou by the counter.
        let mut own = UsageDelta::default();
        count_use(&mut own, day, "counter", Action::Lookup, true, None, &["hukou".into()], 0, 1);
        let mut batch = WriteBatch::new();
        own.write(&UsageCache::default(), &engine, &mut batch).unwrap();
        engine.write(batch, crate::Durability::Sync).unwrap();
        // Another node's entries: two lookups, a verification and a
        // refusal for a purpose, staged in two batches.
        let mut remote = RemoteUsage::default();
        let mut batch = WriteBatch::new();
        remote.count(&engine, &[entry(at, "counter", Action::Lookup, &["hukou"], "found")], &mut batch).unwrap();
        remote.count(&engine, &[entry(at, "counter", Action::Lookup, &["hukou", "marriage"], "found")], &mut batch).unwrap();
        engine.write(batch, crate::Durability::Sync).unwrap();
        let mut batch = WriteBatch::new();
        remote.count(&engine, &[entry(at, "counter", Action::Verify, &["hukou"], "match")], &mut batch).unwrap();
        remote.count(&engine, &[entry(at, "counter", Action::Denied, &["hukou"], "purpose_not_allowed: x")], &mut batch).unwrap();
        engine.write(batch, crate::Durability::Sync).unwrap();
        // After a failed write the applier forgets its cache and reads
        // what was written.
        remote.forget();
        let mut batch = WriteBatch::new();
        remote.count(&engine, &[entry(at, "counter", Action::Lookup, &["hukou"], "found")], &mut batch).unwrap();
        engine.write(batch, crate::Durability::Sync).unwrap();

        let t = totals(&engine, Owner::Department("counter"), day, day + 1).unwrap();
        assert_eq!(t.get(&Kind::Action(Action::Lookup)), Some(&4), "1 here and 3 elsewhere: {t:?}");
        // A period from before 1970 counts the same days.
        assert_eq!(totals(&engine, Owner::Department("counter"), -3, day + 1).unwrap(), t);
        assert!(totals(&engine, Owner::Department("counter"), -3, -1).unwrap().is_empty());
        assert_eq!(t.get(&Kind::Action(Action::Verify)), Some(&1));
        assert_eq!(t.get(&Kind::Refused(Refusal::Purpose)), Some(&1));
        assert_eq!(t.get(&Kind::Uncatalogued), Some(&5), "reads without a purpose code: {t:?}");
        let used = [Action::Lookup, Action::Verify, Action::BatchVerify].map(Kind::Action);
        let hukou = Owner::Use { department: "counter", dataset: "hukou" };
        assert_eq!(daily_sum(&engine, hukou, &used, day - 1, day + 1).unwrap(), vec![0, 5]);
        let pairs = use_totals(&engine, day, day + 1).unwrap();
        assert_eq!(pairs[&("counter".to_owned(), "hukou".to_owned())][&Kind::Action(Action::Lookup)], 4);
        assert_eq!(pairs[&("counter".to_owned(), "marriage".to_owned())][&Kind::Action(Action::Lookup)], 1);
        assert_eq!(pairs[&("counter".to_owned(), "hukou".to_owned())][&Kind::Action(Action::Denied)], 1);
        // A dataset's applied updates are each node's own count; others'
        // entries add nothing to them.
        assert!(totals(&engine, Owner::Dataset("hukou"), day, day + 1).unwrap().get(&Kind::Applied).is_none());
    }

    #[test]
    fn kind_codes_round_trip() {
        let mut kinds = vec![Kind::Applied, Kind::Uncatalogued, Kind::Rejected];
        kinds.extend(Action::ALL.map(Kind::Action));
        kinds.extend(Refusal::ALL.map(Kind::Refused));
        let codes: std::collections::HashSet<u8> = kinds.iter().map(|k| k.code()).collect();
        assert_eq!(codes.len(), kinds.len(), "two kinds share a stored code");
        for k in kinds {
            assert_eq!(Kind::from_code(k.code()), Some(k));
        }
    }

    /// Counting alike uses together gives the counters that counting them
    /// one by one gives, however the shapes interleave.
    #[test]
    fn alike_uses_counted_together_count_as_one_by_one() {
        use crate::audit::AuditEvent;
        let mut events = Vec::new();
        for i in 0..500u32 {
            let action = [Action::BatchVerify, Action::Denied, Action::Verify, Action::Update][(i % 7 % 4) as usize];
            events.push(AuditEvent {
                department: format!("d{}", i % 3),
                operator: None,
                operator_verified: false,
                purpose: "p".into(),
                purpose_code: (i % 5 != 0).then(|| "code".into()),
                action,
                key: None,
                datasets: if i % 11 == 0 { vec!["hukou".into(), "death".into()] } else { vec!["hukou".into()] },
                fields: vec![],
                outcome: ["match", "forbidden", "purpose_not_allowed", "claim_limit"][(i % 4) as usize].into(),
                key_mapped: false,
                pid: None,
                rejected_lines: if action == Action::Update { u64::from(i % 3) } else { 0 },
                grants: Vec::new(),
            });
        }
        // Long runs of one shape too.
        events.extend(std::iter::repeat_n(events[1].clone(), 300));
        let mut together = UsageDelta::default();
        count_events(&mut together, 7, &events);
        let mut one_by_one = UsageDelta::default();
        for e in &events {
            let refusal = refusal_of(e.action, &e.outcome);
            count_use(&mut one_by_one, 7, &e.department, e.action, e.purpose_code.is_none(), refusal, &e.datasets, e.rejected_lines, 1);
        }
        assert!(together.inc.len() > 20, "{} counters", together.inc.len());
        assert_eq!(together.inc, one_by_one.inc);
    }
}
