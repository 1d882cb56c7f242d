//! Sharing governance state: conditional-sharing grants (有条件共享申请) and
//! disputes (异议核查), with their legal deadlines in working days.
//!
//! This module holds the records and their state machines; it prepares the
//! writes (`WriteBatch`) and leaves committing them — together with their
//! audit entries — to the caller. The grant book keeps every grant in
//! memory (they number in the thousands) and is the [`GrantSource`] of the
//! access decision, so a revocation stops counting the moment it commits.
//!
//! A grant is of conditional fields or of a dataset's change feed (a
//! subscription), and for one purpose: it covers only uses that state
//! the catalogued purpose it was applied for, and a grant applied for with
//! a free-text purpose only uses that state none.
//!
//! Layout (`gov` family): `g/<id>` -> [`Grant`] (format marker 3; grants
//! of marker 2 read without a deciding operator, those of marker 1, from
//! before kinds and purpose codes, as field grants with no purpose code
//! either), `x/<id>` -> [`Dispute`].

use crate::access::{Coverage, GrantSource, Scope};
use basedata_store::calendar::Calendar;
use basedata_store::codec::{decode, decode_all, encode, encode_marked, marked_body, FORMAT_V1};
use basedata_store::engine::{prefix_end, Cf, Engine, WriteBatch};
use basedata_store::usage::{day_of, CST_OFFSET_MICROS};
use basedata_store::{Pid, Result};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use time::Date;

/// The CST calendar date of a Unix-microsecond time.
pub fn cst_date(micros: i64) -> Date {
    Date::from_julian_day(day_of(micros) + 2_440_588).unwrap_or(Date::MIN)
}

/// Start of the CST day after `d`, in Unix microseconds: when a deadline
/// that falls on `d` has passed.
pub fn end_of_day(d: Date) -> i64 {
    (d.to_julian_day() as i64 - 2_440_588 + 1) * 86_400_000_000 - CST_OFFSET_MICROS
}

/// Policy knobs of the deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Policy {
    /// Working days a provider has to answer a grant application.
    pub grant_reply_days: u32,
    /// Working days a provider has to check a dispute.
    pub dispute_days: u32,
    /// A grant unanswered by its due date counts as approved (Art. 26).
    pub deemed_approval: bool,
    /// Days after which a department's record of responsible persons is
    /// flagged as out of date in the sharing report.
    pub responsible_max_age_days: u32,
}

impl Policy {
    /// Why the policy cannot stand, if it cannot: the rules a configured
    /// policy and a switched one share.
    pub fn check(&self) -> std::result::Result<(), String> {
        for (name, days) in [("grant_reply_days", self.grant_reply_days), ("dispute_days", self.dispute_days)] {
            if !(1..=60).contains(&days) {
                return Err(format!("{name} is 1 to 60 working days"));
            }
        }
        if self.responsible_max_age_days == 0 {
            return Err("responsible_max_age_days must be at least 1".into());
        }
        Ok(())
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy { grant_reply_days: 5, dispute_days: 5, deemed_approval: true, responsible_max_age_days: 365 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum GrantState {
    Pending,
    Approved,
    Rejected,
    DeemedApproved,
    Revoked,
}

impl GrantState {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Pending => "pending",
            GrantState::Approved => "approved",
            GrantState::Rejected => "rejected",
            GrantState::DeemedApproved => "deemed_approved",
            GrantState::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<GrantState> {
        [GrantState::Pending, GrantState::Approved, GrantState::Rejected, GrantState::DeemedApproved, GrantState::Revoked]
            .into_iter()
            .find(|g| g.as_str() == s)
    }
}

/// What a grant opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum GrantKind {
    /// Conditional fields of the dataset, in lookups, verification and the feed.
    Fields,
    /// The dataset's changes in the change feed (a subscription).
    Subscription,
}

impl GrantKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantKind::Fields => "fields",
            GrantKind::Subscription => "subscription",
        }
    }

    pub fn parse(s: &str) -> Option<GrantKind> {
        [GrantKind::Fields, GrantKind::Subscription].into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Grant {
    pub id: String,
    /// The applying (consumer) department.
    pub department: String,
    pub dataset: String,
    pub kind: GrantKind,
    /// Empty for a subscription.
    pub fields: Vec<String>,
    /// The purpose as applied for (code and note, or free text).
    pub purpose: String,
    /// The catalogued purpose applied for; uses under another purpose are
    /// not covered. `None`: a free-text purpose.
    pub purpose_code: Option<String>,
    pub legal_basis: String,
    pub state: GrantState,
    pub created_at: i64,
    /// Reply deadline, as a Julian day (CST).
    pub due: i32,
    pub decided_at: Option<i64>,
    /// The department that decided (the dataset's provider).
    pub decided_by: Option<String>,
    /// Who decided for it, as its request named them (a console session's
    /// staff member, or `X-Operator`): the approver that every use the
    /// grant opens is recorded with. `None` for a deemed approval, and for
    /// grants decided before this was kept.
    pub decided_operator: Option<String>,
    /// The platform established who `decided_operator` is (a console
    /// session); false when the request declared it (`X-Operator`).
    pub decided_operator_verified: bool,
    pub reason: Option<String>,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
}

/// Grants as stored and logged before the deciding operator was kept
/// (format marker 2): read, never written.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub(crate) struct GrantV2 {
    id: String,
    department: String,
    dataset: String,
    kind: GrantKind,
    fields: Vec<String>,
    purpose: String,
    purpose_code: Option<String>,
    legal_basis: String,
    state: GrantState,
    created_at: i64,
    due: i32,
    decided_at: Option<i64>,
    decided_by: Option<String>,
    reason: Option<String>,
    revoked_at: Option<i64>,
    revoked_by: Option<String>,
}

impl From<GrantV2> for Grant {
    fn from(g: GrantV2) -> Grant {
        Grant {
            id: g.id,
            department: g.department,
            dataset: g.dataset,
            kind: g.kind,
            fields: g.fields,
            purpose: g.purpose,
            purpose_code: g.purpose_code,
            legal_basis: g.legal_basis,
            state: g.state,
            created_at: g.created_at,
            due: g.due,
            decided_at: g.decided_at,
            decided_by: g.decided_by,
            decided_operator: None,
            decided_operator_verified: false,
            reason: g.reason,
            revoked_at: g.revoked_at,
            revoked_by: g.revoked_by,
        }
    }
}

/// Grants as stored before kinds and purpose codes (format marker 1):
/// read, never written.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
struct GrantV1 {
    id: String,
    department: String,
    dataset: String,
    fields: Vec<String>,
    purpose: String,
    legal_basis: String,
    state: GrantState,
    created_at: i64,
    due: i32,
    decided_at: Option<i64>,
    decided_by: Option<String>,
    reason: Option<String>,
    revoked_at: Option<i64>,
    revoked_by: Option<String>,
}

/// Format marker of stored grants with a kind and a purpose code.
const GRANT_FORMAT_V2: u8 = 2;
/// Format marker of stored grants that name their deciding operator.
const GRANT_FORMAT_V3: u8 = 3;

impl Grant {
    pub(crate) fn encode(&self) -> Vec<u8> {
        encode_marked(GRANT_FORMAT_V3, self)
    }

    fn decode(bytes: &[u8]) -> Result<Grant> {
        let (marker, body) = marked_body("grant", bytes)?;
        if marker == GRANT_FORMAT_V3 {
            return body.decode();
        }
        if marker == GRANT_FORMAT_V2 {
            return Ok(body.decode::<GrantV2>()?.into());
        }
        if marker != FORMAT_V1 {
            return Err(basedata_store::Error::Format { what: "grant", found: marker });
        }
        let g: GrantV1 = body.decode()?;
        // What format 2 added: a kind (a first-format grant is of fields)
        // and a purpose code (none); format 3's additions follow from it.
        Ok(GrantV2 {
            id: g.id,
            department: g.department,
            dataset: g.dataset,
            kind: GrantKind::Fields,
            fields: g.fields,
            purpose: g.purpose,
            purpose_code: None,
            legal_basis: g.legal_basis,
            state: g.state,
            created_at: g.created_at,
            due: g.due,
            decided_at: g.decided_at,
            decided_by: g.decided_by,
            reason: g.reason,
            revoked_at: g.revoked_at,
            revoked_by: g.revoked_by,
        }
        .into())
    }

    /// Whether the grant, approved, opens `scope`.
    fn opens(&self, scope: Scope<'_>) -> bool {
        match (self.kind, scope) {
            (GrantKind::Fields, Scope::Field(f)) => self.fields.iter().any(|g| g == f),
            (GrantKind::Subscription, Scope::Feed) => true,
            _ => false,
        }
    }

    pub fn due_date(&self) -> Date {
        Date::from_julian_day(self.due).unwrap_or(Date::MIN)
    }

    /// The state at `now`: a pending grant past its due date is deemed
    /// approved when the policy says so, even before the sweeper records it.
    pub fn effective_state(&self, now: i64, policy: &Policy) -> GrantState {
        if self.state == GrantState::Pending && policy.deemed_approval && now >= end_of_day(self.due_date()) {
            GrantState::DeemedApproved
        } else {
            self.state
        }
    }

    /// Whether the decision came by the due date (for the yearly report).
    pub fn decided_on_time(&self) -> Option<bool> {
        self.decided_at.map(|t| cst_date(t) <= self.due_date())
    }
}

/// A random 128-bit identifier, as hex.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    // Unique and unguessable is all an id needs; the clock is a fallback
    // for a system without an entropy source.
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        b.copy_from_slice(&t.as_nanos().to_be_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn grant_key(id: &str) -> Vec<u8> {
    let mut k = b"g/".to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

pub(crate) fn dispute_key(id: &str) -> Vec<u8> {
    let mut k = b"x/".to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

/// A department's record of responsible persons set through the API.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct ResponsibleRecord {
    pub persons: Vec<basedata_store::caller::ResponsiblePerson>,
    /// When it was set (Unix microseconds) and by which department.
    pub updated_at: i64,
    pub updated_by: String,
}

/// A policy switched through the API (or, in cluster mode, the log): it
/// stands instead of the configuration's from then on.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct PolicyRecord {
    pub policy: Policy,
    /// When (Unix microseconds) and by which department.
    pub set_at: i64,
    pub set_by: String,
}

pub(crate) const POLICY_KEY: &[u8] = b"p/policy";

/// All grants, in memory, behind a lock that readers hold only briefly,
/// and the deadline policy in force.
#[derive(Debug)]
pub struct GrantBook {
    grants: RwLock<HashMap<String, Grant>>,
    policy: RwLock<(Policy, Option<PolicyRecord>)>,
    clock: Arc<dyn basedata_store::clock::Clock>,
}

impl GrantBook {
    pub fn load(engine: &dyn Engine, policy: Policy, clock: Arc<dyn basedata_store::clock::Clock>) -> Result<GrantBook> {
        let mut grants = HashMap::new();
        let end = prefix_end(b"g/");
        for item in engine.scan(Cf::Gov, b"g/", end.as_deref(), false)? {
            let (_, v) = item?;
            let g = Grant::decode(&v)?;
            grants.insert(g.id.clone(), g);
        }
        let switched: Option<PolicyRecord> = match engine.get(Cf::Gov, POLICY_KEY)? {
            Some(v) => Some(decode("policy", &v)?),
            None => None,
        };
        let policy = switched.as_ref().map_or(policy, |r| r.policy);
        Ok(GrantBook { grants: RwLock::new(grants), policy: RwLock::new((policy, switched)), clock })
    }

    /// The deadline policy in force.
    pub fn policy(&self) -> Policy {
        self.policy.read().unwrap_or_else(|e| e.into_inner()).0
    }

    /// The switch the policy in force comes from; `None`: the configuration.
    pub fn policy_record(&self) -> Option<PolicyRecord> {
        self.policy.read().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    /// Puts a committed switch in force.
    pub(crate) fn switch_policy(&self, record: PolicyRecord) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = (record.policy, Some(record));
    }

    pub fn now(&self) -> i64 {
        self.clock.now_micros()
    }

    pub fn get(&self, id: &str) -> Option<Grant> {
        self.grants.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    pub fn all(&self) -> Vec<Grant> {
        let mut v: Vec<Grant> = self.grants.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
        v
    }

    /// Puts the write that stores `g` into `b`; call [`GrantBook::put`]
    /// once it is durable.
    pub fn write_into(g: &Grant, b: &mut WriteBatch) {
        b.put(Cf::Gov, grant_key(&g.id), g.encode());
    }

    /// Makes a committed grant visible to the access decision.
    pub fn put(&self, g: Grant) {
        self.grants.write().unwrap_or_else(|e| e.into_inner()).insert(g.id.clone(), g);
    }

    /// Pending grants whose deadline has passed and that the policy deems
    /// approved, as they should be recorded.
    pub fn overdue_pending(&self) -> Vec<Grant> {
        let now = self.now();
        let policy = self.policy();
        self.grants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|g| g.state == GrantState::Pending && g.effective_state(now, &policy) == GrantState::DeemedApproved)
            .cloned()
            .collect()
    }

    pub fn due_for(&self, calendar: &Calendar, now: i64) -> Date {
        calendar.add_working_days(cst_date(now), self.policy().grant_reply_days)
    }
}

impl GrantBook {
    /// Runs `f` over the grants of `department` that open `scope` of
    /// `dataset` and are in force now (approved, or deemed approved),
    /// whatever purpose they were applied for: what both [`GrantSource`]
    /// answers look at.
    fn with_in_force<R>(&self, department: &str, dataset: &str, scope: Scope<'_>, f: impl FnOnce(&mut dyn Iterator<Item = &Grant>) -> R) -> R {
        let now = self.now();
        let policy = self.policy();
        let grants = self.grants.read().unwrap_or_else(|e| e.into_inner());
        let mut in_force = grants.values().filter(|g| {
            g.department == department
                && g.dataset == dataset
                && g.opens(scope)
                && matches!(g.effective_state(now, &policy), GrantState::Approved | GrantState::DeemedApproved)
        });
        f(&mut in_force)
    }
}

impl GrantSource for GrantBook {
    fn coverage(&self, department: &str, purpose: Option<&str>, dataset: &str, scope: Scope<'_>) -> Coverage {
        self.with_in_force(department, dataset, scope, |in_force| {
            let mut found = Coverage::None;
            for g in in_force {
                if g.purpose_code.as_deref() == purpose {
                    return Coverage::Covered;
                }
                found = Coverage::OtherPurpose;
            }
            found
        })
    }

    fn covering(&self, department: &str, purpose: Option<&str>, dataset: &str, scope: Scope<'_>) -> Vec<String> {
        let mut ids: Vec<(i64, String)> = self.with_in_force(department, dataset, scope, |in_force| {
            in_force.filter(|g| g.purpose_code.as_deref() == purpose).map(|g| (g.created_at, g.id.clone())).collect()
        });
        ids.sort();
        ids.into_iter().map(|(_, id)| id).collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum Resolution {
    Confirmed,
    Corrected,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Confirmed => "confirmed",
            Resolution::Corrected => "corrected",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Dispute {
    pub id: String,
    /// The consumer department that filed it.
    pub department: String,
    pub operator: Option<String>,
    /// Document type and pseudonym of the subject.
    pub doc: u8,
    pub pid: Pid,
    pub dataset: String,
    pub field: String,
    pub claimed: String,
    pub note: String,
    pub created_at: i64,
    /// Change-log position when filed: a correction must come after it.
    pub opened_seq: u64,
    pub due: i32,
    pub resolution: Option<Resolution>,
    pub resolution_note: Option<String>,
    pub resolved_at: Option<i64>,
    pub resolved_by: Option<String>,
}

impl Dispute {
    pub fn due_date(&self) -> Date {
        Date::from_julian_day(self.due).unwrap_or(Date::MIN)
    }

    pub fn is_open(&self) -> bool {
        self.resolution.is_none()
    }

    pub fn is_overdue(&self, now: i64) -> bool {
        self.is_open() && now >= end_of_day(self.due_date())
    }

    pub fn resolved_on_time(&self) -> Option<bool> {
        self.resolved_at.map(|t| cst_date(t) <= self.due_date())
    }

    /// Puts the write that stores this dispute into `b`.
    pub fn write_into(&self, b: &mut WriteBatch) {
        b.put(Cf::Gov, dispute_key(&self.id), encode(self));
    }
}

pub fn load_dispute(engine: &dyn Engine, id: &str) -> Result<Option<Dispute>> {
    match engine.get(Cf::Gov, &dispute_key(id))? {
        Some(v) => Ok(Some(decode("dispute", &v)?)),
        None => Ok(None),
    }
}

pub fn all_disputes(engine: &dyn Engine) -> Result<Vec<Dispute>> {
    let mut out: Vec<Dispute> = decode_all(engine, Cf::Gov, b"x/", "dispute")?;
    out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use basedata_store::clock::ManualClock;
    use basedata_store::engine::mem::MemEngine;
    use time::macros::date;

    fn micros(d: Date, hour_cst: i64) -> i64 {
        (d.to_julian_day() as i64 - 2_440_588) * 86_400_000_000 + hour_cst * 3_600_000_000 - CST_OFFSET_MICROS
    }

    pub(crate) fn grant(due: Date) -> Grant {
        Grant {
            id: "g1".into(),
            department: "counter".into(),
            dataset: "hukou".into(),
            kind: GrantKind::Fields,
            fields: vec!["photo".into()],
            purpose: "p".into(),
            purpose_code: None,
            legal_basis: "b".into(),
            state: GrantState::Pending,
            created_at: 0,
            due: due.to_julian_day(),
            decided_at: None,
            decided_by: None,
            decided_operator: None,
            decided_operator_verified: false,
            reason: None,
            revoked_at: None,
            revoked_by: None,
        }
    }

    /// `g` in the layout of format marker 2 (what it lacks: the deciding operator).
    pub(crate) fn as_v2(g: &Grant) -> GrantV2 {
        GrantV2 {
            id: g.id.clone(),
            department: g.department.clone(),
            dataset: g.dataset.clone(),
            kind: g.kind,
            fields: g.fields.clone(),
            purpose: g.purpose.clone(),
            purpose_code: g.purpose_code.clone(),
            legal_basis: g.legal_basis.clone(),
            state: g.state,
            created_at: g.created_at,
            due: g.due,
            decided_at: g.decided_at,
            decided_by: g.decided_by.clone(),
            reason: g.reason.clone(),
            revoked_at: g.revoked_at,
            revoked_by: g.revoked_by.clone(),
        }
    }

    fn granted(book: &GrantBook, department: &str, field: &str) -> bool {
        book.coverage(department, None, "hukou", Scope::Field(field)) == Coverage::Covered
    }

    #[test]
    fn cst_days() {
        let d = date!(2026 - 11 - 22);
        assert_eq!(cst_date(micros(d, 0)), d);
        assert_eq!(cst_date(micros(d, 23)), d);
        assert_eq!(cst_date(micros(d, 24)), date!(2026 - 11 - 23));
        assert_eq!(end_of_day(d), micros(d, 24));
    }

    #[test]
    fn deemed_approval_after_the_due_day() {
        let due = date!(2026 - 11 - 27);
        let clock = Arc::new(ManualClock::new(micros(due, 23)));
        let book = GrantBook::load(&MemEngine::new(), Policy::default(), clock.clone()).unwrap();
        book.put(grant(due));
        assert!(!granted(&book, "counter", "photo"));
        clock.set(micros(due, 24));
        assert!(granted(&book, "counter", "photo"));
        assert!(!granted(&book, "counter", "name"));
        assert!(!granted(&book, "other", "photo"));
        assert_eq!(book.overdue_pending().len(), 1);
        let off = GrantBook::load(&MemEngine::new(), Policy { deemed_approval: false, ..Policy::default() }, clock).unwrap();
        off.put(grant(due));
        assert!(!granted(&off, "counter", "photo"));
        assert!(off.overdue_pending().is_empty());
    }

    #[test]
    fn revoked_grants_stop_counting_at_once() {
        let clock = Arc::new(ManualClock::new(0));
        let book = GrantBook::load(&MemEngine::new(), Policy::default(), clock).unwrap();
        let mut g = grant(date!(2030 - 01 - 01));
        g.state = GrantState::Approved;
        book.put(g.clone());
        assert!(granted(&book, "counter", "photo"));
        g.state = GrantState::Revoked;
        book.put(g);
        assert!(!granted(&book, "counter", "photo"));
    }

    #[test]
    fn grants_cover_their_purpose_and_kind_only() {
        let book = GrantBook::load(&MemEngine::new(), Policy::default(), Arc::new(ManualClock::new(0))).unwrap();
        let mut g = grant(date!(2030 - 01 - 01));
        g.state = GrantState::Approved;
        g.purpose_code = Some("social_insurance".into());
        book.put(g.clone());
        let cov = |purpose, scope| book.coverage("counter", purpose, "hukou", scope);
        assert_eq!(cov(Some("social_insurance"), Scope::Field("photo")), Coverage::Covered);
        assert_eq!(cov(Some("tax_administration"), Scope::Field("photo")), Coverage::OtherPurpose);
        assert_eq!(cov(None, Scope::Field("photo")), Coverage::OtherPurpose);
        assert_eq!(cov(Some("social_insurance"), Scope::Feed), Coverage::None);
        book.put(Grant { id: "g2".into(), kind: GrantKind::Subscription, fields: Vec::new(), ..g });
        assert_eq!(cov(Some("social_insurance"), Scope::Feed), Coverage::Covered);
        assert_eq!(cov(Some("tax_administration"), Scope::Feed), Coverage::OtherPurpose);
    }

    #[test]
    fn first_format_grants_read_as_field_grants_without_a_purpose_code() {
        let g = grant(date!(2030 - 01 - 01));
        let old = GrantV1 {
            id: g.id.clone(),
            department: g.department.clone(),
            dataset: g.dataset.clone(),
            fields: g.fields.clone(),
            purpose: g.purpose.clone(),
            legal_basis: g.legal_basis.clone(),
            state: g.state,
            created_at: g.created_at,
            due: g.due,
            decided_at: None,
            decided_by: None,
            reason: None,
            revoked_at: None,
            revoked_by: None,
        };
        assert_eq!(Grant::decode(&encode(&old)).unwrap(), g);
        assert_eq!(Grant::decode(&g.encode()).unwrap(), g);
        assert!(Grant::decode(&[9, 0]).is_err());
    }

    #[test]
    fn second_format_grants_read_without_a_deciding_operator() {
        let mut g = grant(date!(2030 - 01 - 01));
        g.state = GrantState::Approved;
        g.decided_at = Some(7);
        g.decided_by = Some("gongan".into());
        assert_eq!(Grant::decode(&encode_marked(GRANT_FORMAT_V2, &as_v2(&g))).unwrap(), g);
        g.decided_operator = Some("steward-07".into());
        assert_eq!(Grant::decode(&g.encode()).unwrap(), g);
    }

    #[test]
    fn the_covering_grants_are_those_in_force_for_the_use() {
        let clock = Arc::new(ManualClock::new(100));
        let book = GrantBook::load(&MemEngine::new(), Policy::default(), clock).unwrap();
        let mut g = grant(date!(2030 - 01 - 01));
        g.state = GrantState::Approved;
        g.decided_at = Some(50);
        g.purpose_code = Some("social_insurance".into());
        book.put(g.clone());
        book.put(Grant { id: "g0".into(), created_at: -1, ..g.clone() });
        book.put(Grant { id: "g2".into(), kind: GrantKind::Subscription, fields: Vec::new(), ..g.clone() });
        book.put(Grant { id: "g3".into(), department: "other".into(), ..g.clone() });
        book.put(Grant { id: "g4".into(), state: GrantState::Revoked, revoked_at: Some(90), ..g.clone() });
        book.put(Grant { id: "g5".into(), state: GrantState::Pending, decided_at: None, ..g.clone() });
        let ids = |purpose, scope| book.covering("counter", purpose, "hukou", scope);
        let sp = Some("social_insurance");
        assert_eq!(ids(sp, Scope::Field("photo")), ["g0", "g1"]);
        assert!(ids(sp, Scope::Field("name")).is_empty());
        assert!(ids(Some("tax_administration"), Scope::Field("photo")).is_empty());
        assert!(ids(None, Scope::Field("photo")).is_empty());
        assert_eq!(ids(sp, Scope::Feed), ["g2"]);
        // What covers is what `coverage` counts.
        assert_eq!(book.coverage("counter", sp, "hukou", Scope::Field("photo")), Coverage::Covered);
        assert_eq!(book.coverage("counter", Some("tax_administration"), "hukou", Scope::Field("photo")), Coverage::OtherPurpose);
    }

    #[test]
    fn grants_persist_and_reload() {
        let engine = MemEngine::new();
        let mut g = grant(date!(2030 - 01 - 01));
        g.state = GrantState::Approved;
        let mut b = WriteBatch::new();
        GrantBook::write_into(&g, &mut b);
        engine.write(b, basedata_store::Durability::Sync).unwrap();
        let book = GrantBook::load(&engine, Policy::default(), Arc::new(ManualClock::new(0))).unwrap();
        assert_eq!(book.get("g1"), Some(g));
    }
}
