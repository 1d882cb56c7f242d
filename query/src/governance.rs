//! The governance use cases: conditional-sharing grants (apply, decide,
//! revoke, list) and disputes (file, resolve, list), each state change
//! committed together with its audit entry, and the deemed-approval sweep.
//! The records and their deadlines are in `gov`; the rules of who may do
//! what, and when, are here.

use crate::caller::{system_event, Caller, Role};
use crate::error::{Error, Result};
use crate::gov::{cst_date, load_dispute, new_id, Dispute, Grant, GrantKind, GrantState, Resolution};
use crate::govlog::{key_parts, Change, Changed, Expect};
use crate::service::Queries;
use basedata_store::catalog::{AreaOf, Division, Share};
use basedata_store::{Action, AuditEvent, Subject, SubjectKey, Value};

/// Longest free text of a grant or dispute, in characters.
const MAX_TEXT: usize = 2000;

fn required_text(name: &str, v: Option<&str>) -> Result<String> {
    match v.map(str::trim) {
        Some(t) if !t.is_empty() => checked_text(name, t, MAX_TEXT).map(|()| t.to_owned()),
        _ => Err(Error::InvalidValue(format!("{name} is required"))),
    }
}

/// Free text that goes on record (with a grant, a dispute, a responsible
/// person): at most `max` characters, and none that could forge or hide a
/// line of the audit trail or of a page (the rule `X-Purpose` follows).
/// Refused, never cut or cleaned; the message names `name`.
pub(crate) fn text_refusal(name: &str, t: &str, max: usize) -> std::result::Result<(), String> {
    use basedata_store::audit::{audit_text_fault, TextFault};
    match audit_text_fault(t, max) {
        None => Ok(()),
        Some(TextFault::TooLong) => Err(format!("{name} is limited to {max} characters")),
        Some(TextFault::Unfit) => Err(format!("{name} holds control or formatting characters")),
    }
}

/// [`text_refusal`] as this module's error.
fn checked_text(name: &str, t: &str, max: usize) -> Result<()> {
    text_refusal(name, t, max).map_err(Error::InvalidValue)
}

/// Longest purpose a grant may state: what the `X-Purpose` header of a
/// use may hold, since the grant covers uses that state it.
const MAX_PURPOSE_CHARS: usize = 500;

fn grant_event(caller: &Caller, g: &Grant, outcome: &str) -> AuditEvent {
    let mut ev = caller.event(&g.purpose, Action::Grant, None);
    ev.purpose_code = g.purpose_code.clone();
    ev.datasets = vec![g.dataset.clone()];
    ev.fields = g.fields.clone();
    ev.outcome = format!("{outcome} {}", g.id);
    ev
}

/// What a grant application says.
#[derive(Clone, Debug)]
pub struct Application<'a> {
    pub dataset: &'a str,
    pub kind: GrantKind,
    /// The conditional fields; none for a subscription.
    pub fields: &'a [String],
    pub purpose: Option<&'a str>,
    pub legal_basis: Option<&'a str>,
}

/// What a dispute filing says.
#[derive(Clone, Debug)]
pub struct DisputeFiling<'a> {
    pub subject: &'a str,
    pub key: &'a str,
    /// The document type of `key` (default: the subject's own).
    pub id_type: Option<&'a str>,
    pub dataset: &'a str,
    pub field: &'a str,
    /// The value the consumer believes correct.
    pub claimed: &'a serde_json::Value,
    pub note: Option<&'a str>,
}

impl Queries {
    fn is_provider_of(&self, caller: &Caller, dataset: &str) -> bool {
        self.catalog.dataset(dataset).is_some_and(|d| caller.provides(d))
    }

    /// The dataset's only provider or, of several, its steward: who
    /// decides and revokes grants and resolves disputes for all of them.
    fn is_steward_of(&self, caller: &Caller, dataset: &str) -> bool {
        self.catalog.dataset(dataset).is_some_and(|d| caller.stewards(d))
    }

    /// In a dataset of several providers, the one answering for the
    /// disputed value: the provider of the disputed field, or of the area
    /// the record (or its key's region) is in. `None` for a dataset of one
    /// provider, or a record no provider's area holds.
    fn part_provider_of(&self, d: &Dispute, key: &SubjectKey) -> Result<Option<String>> {
        let Some(ds) = self.catalog.dataset(&d.dataset) else { return Ok(None) };
        let Some(division) = &ds.division else { return Ok(None) };
        let in_area = |a: &str| ds.providers.iter().find(|p| p.holds_area(a.trim())).map(|p| p.id.clone());
        Ok(match division {
            Division::Fields => ds.providers.iter().find(|p| p.fields.iter().any(|f| *f == d.field)).map(|p| p.id.clone()),
            Division::Area(AreaOf::KeyRegion) => key.region().and_then(in_area),
            Division::Area(AreaOf::Field(f)) => match self.store.get(key, &ds.id, None)? {
                Some(r) => match r.field(f) {
                    Some(Value::Str(a) | Value::Code(a)) => in_area(a),
                    _ => None,
                },
                None => None,
            },
        })
    }

    fn sees_grant(&self, caller: &Caller, g: &Grant) -> bool {
        caller.department.has(Role::Admin)
            || caller.department.has(Role::Auditor)
            || g.department == caller.department.id
            || self.is_provider_of(caller, &g.dataset)
    }

    fn sees_dispute(&self, caller: &Caller, d: &Dispute) -> bool {
        caller.department.has(Role::Admin)
            || caller.department.has(Role::Auditor)
            || d.department == caller.department.id
            || self.is_provider_of(caller, &d.dataset)
    }

    /// Stores `g` with its audit event if the stored grant is as `expect`
    /// says (through the log, in cluster mode).
    async fn commit_grant(&self, g: Grant, expect: Expect, ev: AuditEvent) -> Result<Grant> {
        match self.govern(Change::Grant { grant: g, expect }, vec![ev]).await? {
            Changed::Grant(g) => Ok(g),
            other => Err(Error::Internal(format!("a grant change stored {other:?}"))),
        }
    }

    async fn commit_dispute(&self, d: Dispute, key: &SubjectKey, expect: Expect, ev: AuditEvent) -> Result<Dispute> {
        match self.govern(Change::Dispute { dispute: d, key: key_parts(key), expect }, vec![ev]).await? {
            Changed::Dispute(d) => Ok(d),
            other => Err(Error::Internal(format!("a dispute change stored {other:?}"))),
        }
    }

    /// A consumer applies for conditional fields of a dataset, or for a
    /// subscription to its changes, for one purpose: a strict department
    /// names one of its purpose codes (`CODE` or `CODE; note`), and a
    /// refused purpose is audited as `denied`.
    pub async fn apply_grant(&self, caller: &Caller, a: &Application<'_>) -> Result<Grant> {
        if !caller.department.has(Role::Consumer) {
            return Err(Error::Forbidden("only consumer departments apply for conditional sharing".into()));
        }
        let ds = self.catalog.dataset(a.dataset).ok_or_else(|| Error::UnknownDataset(a.dataset.to_owned()))?;
        // A provider already reads its own conditional fields and follows
        // its own changes; a grant it approved to itself would only count
        // in the sharing report as a request decided on time.
        if ds.is_provided_by(&caller.department.id) {
            return Err(Error::Conflict(format!(
                "department {} provides dataset {}: its own data need no grant",
                caller.department.id, ds.id
            )));
        }
        let mut names: Vec<String> = Vec::new();
        match a.kind {
            GrantKind::Subscription if !a.fields.is_empty() => {
                return Err(Error::InvalidValue(
                    "a subscription is to a whole dataset's changes: leave fields out (conditional fields need their own grant)".into(),
                ))
            }
            GrantKind::Subscription => {}
            GrantKind::Fields if a.fields.is_empty() => {
                return Err(Error::InvalidValue("fields must name at least one conditional field".into()))
            }
            GrantKind::Fields => {}
        }
        for name in a.fields {
            let f = ds.field(name).ok_or_else(|| Error::UnknownField(format!("dataset {} has no field {name}", ds.id)))?;
            match f.share {
                Share::Conditional => {}
                Share::Unconditional => {
                    return Err(Error::InvalidValue(format!("field {name} is shared unconditionally: no grant is needed")))
                }
                Share::None => {
                    return Err(Error::InvalidValue(format!(
                        "field {name} is not shared (negative list); only verification is possible"
                    )))
                }
            }
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        let purpose = required_text("purpose", a.purpose)?;
        checked_text("purpose", &purpose, MAX_PURPOSE_CHARS)?;
        let legal_basis = required_text("legal_basis", a.legal_basis)?;
        let purpose_code = self.admit_purpose(caller, &purpose).await?.purpose_code;
        let now = self.grants.now();
        let g = Grant {
            id: new_id(),
            department: caller.department.id.clone(),
            dataset: ds.id.clone(),
            kind: a.kind,
            fields: names,
            purpose,
            purpose_code,
            legal_basis,
            state: GrantState::Pending,
            created_at: now,
            due: self.grants.due_for(&self.calendar, now).to_julian_day(),
            decided_at: None,
            decided_by: None,
            decided_operator: None,
            decided_operator_verified: false,
            reason: None,
            revoked_at: None,
            revoked_by: None,
        };
        let ev = grant_event(caller, &g, "applied");
        self.commit_grant(g, Expect::Absent, ev).await
    }

    /// A grant the caller may see; others' are as absent as missing ones.
    pub fn grant(&self, caller: &Caller, id: &str) -> Result<Grant> {
        self.grants
            .get(id)
            .filter(|g| self.sees_grant(caller, g))
            .ok_or_else(|| Error::NotFound("no such grant".into()))
    }

    /// The dataset's provider approves or refuses a pending grant; a
    /// refusal gives its reasons.
    pub async fn decide_grant(&self, caller: &Caller, id: &str, approve: bool, reason: Option<&str>) -> Result<Grant> {
        let mut g = self.grant(caller, id)?;
        if !self.is_steward_of(caller, &g.dataset) {
            return Err(Error::Forbidden(format!("only the provider (steward) of {} decides on this grant", g.dataset)));
        }
        // Applications to one's own dataset are refused; one stored before
        // that rule is still not the provider's to approve.
        if g.department == caller.department.id {
            return Err(Error::Conflict("a department does not decide on its own application".into()));
        }
        let now = self.grants.now();
        match g.effective_state(now, &self.grants.policy()) {
            GrantState::Pending => {}
            other => {
                return Err(Error::Conflict(format!("the grant is {}; only pending grants are decided", other.as_str())))
            }
        }
        let reason = reason.map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned);
        if let Some(r) = &reason {
            checked_text("reason", r, MAX_TEXT)?;
        }
        if !approve && reason.is_none() {
            return Err(Error::InvalidValue("a refusal must give its reasons".into()));
        }
        g.state = if approve { GrantState::Approved } else { GrantState::Rejected };
        g.decided_at = Some(now);
        g.decided_by = Some(caller.department.id.clone());
        g.decided_operator = caller.operator.clone();
        g.decided_operator_verified = caller.operator.is_some() && caller.operator_verified;
        g.reason = reason;
        let ev = grant_event(caller, &g, g.state.as_str());
        self.commit_grant(g, Expect::GrantIn(vec![GrantState::Pending]), ev).await
    }

    /// The dataset's provider or an administrator revokes a grant; it
    /// stops counting at once.
    pub async fn revoke_grant(&self, caller: &Caller, id: &str, reason: Option<&str>) -> Result<Grant> {
        let mut g = self.grant(caller, id)?;
        if !(self.is_steward_of(caller, &g.dataset) || caller.department.has(Role::Admin)) {
            return Err(Error::Forbidden("only the dataset's provider or an administrator revokes a grant".into()));
        }
        let reason = required_text("reason", reason)?;
        let now = self.grants.now();
        match g.effective_state(now, &self.grants.policy()) {
            GrantState::Revoked | GrantState::Rejected => {
                return Err(Error::Conflict(format!("the grant is already {}", g.state.as_str())))
            }
            _ => {}
        }
        g.state = GrantState::Revoked;
        g.revoked_at = Some(now);
        g.revoked_by = Some(caller.department.id.clone());
        g.reason = Some(reason);
        let ev = grant_event(caller, &g, "revoked");
        let from = vec![GrantState::Pending, GrantState::Approved, GrantState::DeemedApproved];
        self.commit_grant(g, Expect::GrantIn(from), ev).await
    }

    /// Grants the caller may see (its own, those on its datasets, all for
    /// auditors and administrators), optionally in one state.
    pub fn grants_list(&self, caller: &Caller, state: Option<&str>) -> Result<Vec<Grant>> {
        let want = match state.filter(|s| !s.is_empty()) {
            Some(s) => Some(GrantState::parse(s).ok_or_else(|| {
                Error::InvalidValue("state is one of pending, approved, rejected, deemed_approved, revoked".into())
            })?),
            None => None,
        };
        let now = self.grants.now();
        Ok(self
            .grants
            .all()
            .into_iter()
            .filter(|g| self.sees_grant(caller, g))
            .filter(|g| want.is_none_or(|w| g.effective_state(now, &self.grants.policy()) == w))
            .collect())
    }

    /// Records grants that became deemed approved (the reply deadline
    /// passed without a decision), each with its audit entry. The access
    /// decision already honours them from the deadline on; this makes the
    /// record match. In cluster mode every node sweeps and logs what it
    /// finds; the first entry for a grant applies everywhere, the others
    /// find it no longer pending and change nothing, so a grant is deemed
    /// approved, and audited as such, once. Returns how many this call
    /// recorded.
    pub async fn sweep_deemed(&self) -> Result<usize> {
        let mut recorded = 0;
        for mut g in self.grants.overdue_pending() {
            g.state = GrantState::DeemedApproved;
            let mut ev = system_event(&g.purpose, Action::Grant);
            ev.purpose_code = g.purpose_code.clone();
            ev.datasets = vec![g.dataset.clone()];
            ev.fields = g.fields.clone();
            ev.outcome = format!("deemed_approved {}", g.id);
            match self.commit_grant(g, Expect::GrantIn(vec![GrantState::Pending]), ev).await {
                Ok(_) => recorded += 1,
                // Decided, revoked or deemed through another node meanwhile.
                Err(Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(recorded)
    }

    /// A consumer disputes a field of a record (异议核查).
    pub async fn file_dispute(&self, caller: &Caller, f: &DisputeFiling<'_>) -> Result<Dispute> {
        if !caller.department.has(Role::Consumer) {
            return Err(Error::Forbidden("only consumer departments file disputes".into()));
        }
        let subject: Subject = f.subject.parse().map_err(|_| Error::InvalidValue("subject is person or entity".into()))?;
        let doc = match f.id_type {
            None => subject.doc_type(),
            Some(name) => basedata_store::keys::DocType::for_subject(subject, name).ok_or_else(|| {
                let names = basedata_store::keys::DocType::names(subject).join(", ");
                Error::InvalidValue(format!("id_type of a {subject} is one of {names}"))
            })?,
        };
        let key = SubjectKey::parse_doc(doc, f.key)?;
        let ds = self.dataset(subject, Some(f.dataset))?;
        if ds.field(f.field).is_none() {
            return Err(Error::UnknownField(format!("dataset {} has no field {}", ds.id, f.field)));
        }
        let claimed = match f.claimed {
            serde_json::Value::String(s) => s.clone(),
            v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => v.to_string(),
            _ => return Err(Error::InvalidValue("claimed is the value the consumer believes correct (a string)".into())),
        };
        checked_text("claimed", &claimed, MAX_TEXT)?;
        if let Some(n) = f.note {
            checked_text("note", n, MAX_TEXT)?;
        }
        let now = self.grants.now();
        let due = self.calendar.add_working_days(cst_date(now), self.grants.policy().dispute_days);
        let d = Dispute {
            id: new_id(),
            department: caller.department.id.clone(),
            operator: caller.operator.clone(),
            doc: key.doc_type().as_u8(),
            pid: self.store.pseudonym(&key),
            dataset: ds.id.clone(),
            field: f.field.to_owned(),
            claimed,
            note: f.note.unwrap_or_default().to_owned(),
            created_at: now,
            opened_seq: self.store.last_seq(),
            due: due.to_julian_day(),
            resolution: None,
            resolution_note: None,
            resolved_at: None,
            resolved_by: None,
        };
        let mut ev = caller.event("dispute", Action::Dispute, Some(key));
        ev.datasets = vec![ds.id.clone()];
        ev.fields = vec![d.field.clone()];
        ev.outcome = format!("opened {}", d.id);
        self.commit_dispute(d, &key, Expect::Absent, ev).await
    }

    /// The dataset's provider confirms the value or reports its
    /// correction; a correction needs an update of the record written
    /// since the dispute was opened that changed the disputed field (or
    /// removed the record): the citizen is told the error was fixed.
    pub async fn resolve_dispute(&self, caller: &Caller, id: &str, outcome: &str, note: Option<&str>) -> Result<Dispute> {
        let outcome = match outcome {
            "confirmed" => Resolution::Confirmed,
            "corrected" => Resolution::Corrected,
            _ => return Err(Error::InvalidValue("outcome is confirmed or corrected".into())),
        };
        let mut d = load_dispute(&**self.store.engine(), id)?
            .filter(|d| self.sees_dispute(caller, d))
            .ok_or_else(|| Error::NotFound("no such dispute".into()))?;
        let key = self.store.resolve(&d.pid)?.ok_or_else(|| Error::Internal("dispute subject without key mapping".into()))?;
        // The steward, or in a dataset of several providers the one whose
        // area or fields the disputed value is in (it made the value, and
        // it can correct it).
        let part = self.part_provider_of(&d, &key)?;
        if !self.is_steward_of(caller, &d.dataset) && part.as_deref() != Some(caller.department.id.as_str()) {
            return Err(Error::Forbidden(format!(
                "only the provider of the disputed value ({}) or the steward of {} resolves this dispute",
                part.as_deref().unwrap_or("the steward"),
                d.dataset
            )));
        }
        if !d.is_open() {
            return Err(Error::Conflict("the dispute is already resolved".into()));
        }
        if outcome == Resolution::Corrected {
            let seq = self.store.record_seq(&key, &d.dataset)?;
            if seq.is_none_or(|s| s <= d.opened_seq) {
                return Err(Error::Conflict(
                    "a correction needs an update of this record after the dispute was opened: send it to the updates endpoint first"
                        .into(),
                ));
            }
            let value = |as_of| -> Result<Option<basedata_store::Value>> {
                Ok(self.store.get(&key, &d.dataset, as_of)?.and_then(|r| r.field(&d.field).cloned()))
            };
            if value(Some(d.created_at))? == value(None)? {
                return Err(Error::Conflict(format!(
                    "the record was updated after the dispute was opened, but its field {} still holds the value disputed: \
                     send the corrected value first, or resolve the dispute as confirmed",
                    d.field
                )));
            }
        }
        let now = self.grants.now();
        d.resolution = Some(outcome);
        if let Some(n) = note {
            checked_text("note", n.trim(), MAX_TEXT)?;
        }
        d.resolution_note = note.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
        d.resolved_at = Some(now);
        d.resolved_by = Some(caller.department.id.clone());
        let mut ev = caller.event("dispute", Action::Dispute, Some(key));
        ev.datasets = vec![d.dataset.clone()];
        ev.fields = vec![d.field.clone()];
        ev.outcome = format!("{} {}", outcome.as_str(), d.id);
        self.commit_dispute(d, &key, Expect::Open, ev).await
    }

    /// Disputes the caller may see, optionally `open`, `resolved` or `overdue`.
    pub async fn disputes(&self, caller: &Caller, state: Option<&str>) -> Result<Vec<Dispute>> {
        let now = self.grants.now();
        let filter: fn(&Dispute, i64) -> bool = match state.unwrap_or("") {
            "" => |_, _| true,
            "open" => |d, _| d.is_open(),
            "resolved" => |d, _| !d.is_open(),
            "overdue" => |d, now| d.is_overdue(now),
            _ => return Err(Error::InvalidValue("state is one of open, resolved, overdue".into())),
        };
        let store = self.store.clone();
        let all = tokio::task::spawn_blocking(move || crate::gov::all_disputes(&**store.engine())).await??;
        Ok(all.into_iter().filter(|d| self.sees_dispute(caller, d) && filter(d, now)).collect())
    }

    /// The real key a dispute is about (its record holds the pseudonym).
    pub fn dispute_key(&self, d: &Dispute) -> Result<Option<SubjectKey>> {
        Ok(self.store.resolve(&d.pid)?)
    }
}
