//! Governance state changes as entries of a replicated log. A grant,
//! dispute or responsible-persons change is decided by the node that took
//! the request (who may do it, what the new record is, with every time in
//! it taken from that node's clock once), then applied against a
//! precondition on the record it replaces: at once on a single node, and
//! in cluster mode by every node in log order, so that all nodes hold the
//! same governance state and a change that lost a race (two decisions on
//! one grant, two nodes deeming it approved) is refused everywhere alike.
//!
//! The request's audit events travel in the entry and are recorded only by
//! the node that took the request, in the same atomic batch as the state
//! it changes there: one entry in the trail per change, on the node that
//! answered it.

use crate::error::{Error, Result};
use crate::gov::{dispute_key, grant_key, load_dispute, Dispute, Grant, GrantBook, PolicyRecord, POLICY_KEY};
use crate::govlog::key_of;
pub use crate::govlog::{Applied, Change, Changed, Entry, Expect, GovernanceLog, LogFuture};
use crate::service::Queries;
use basedata_store::caller::{Caller, Role};
use basedata_store::{Action, AuditEvent, Cf, WriteBatch};

/// Why `current` does not meet `expect`, if it does not.
fn grant_precondition(expect: &Expect, current: Option<&Grant>) -> std::result::Result<(), String> {
    match (expect, current) {
        (Expect::Anything, _) | (Expect::Absent, None) => Ok(()),
        (Expect::GrantIn(states), Some(g)) if states.contains(&g.state) => Ok(()),
        (_, Some(g)) => Err(format!("the grant was {} meanwhile; this change no longer applies", g.state.as_str())),
        (_, None) => Err("no such grant".into()),
    }
}

fn dispute_precondition(expect: &Expect, current: Option<&Dispute>) -> std::result::Result<(), String> {
    match (expect, current) {
        (Expect::Anything, _) | (Expect::Absent, None) => Ok(()),
        (Expect::Open, Some(d)) if d.is_open() => Ok(()),
        (Expect::Open, Some(_)) => Err("the dispute was resolved meanwhile".into()),
        (_, Some(_)) => Err("a dispute of this id exists".into()),
        (_, None) => Err("no such dispute".into()),
    }
}

/// Whether a record last changed at `current` (`None`: there is none) is
/// the one a change expecting `expect` was built from: none for
/// `Absent`, that version for `ChangedAt`; anything otherwise (entries
/// logged before these preconditions).
fn built_from(expect: &Expect, current: Option<i64>) -> bool {
    match expect {
        Expect::Absent => current.is_none(),
        Expect::ChangedAt(at) => current == Some(*at),
        _ => true,
    }
}

impl Queries {
    /// The deadline policy in force and the switch it comes from (`None`:
    /// the configuration), for anyone authenticated.
    pub fn policy(&self) -> (crate::gov::Policy, Option<PolicyRecord>) {
        (self.grants.policy(), self.grants.policy_record())
    }

    /// An administrator switches the deadline policy: what `change` sets
    /// replaces the policy in force, on every node of a cluster, from its
    /// place in the log on; audited (`policy`).
    pub async fn switch_policy(&self, caller: &Caller, change: &PolicyChange) -> Result<crate::gov::Policy> {
        if !caller.department.has(Role::Admin) {
            return Err(Error::Forbidden("only an administrator switches the governance policy".into()));
        }
        // The policy in force and the switch it comes from, read together:
        // the switch is made only if that is still the policy in force.
        let from = self.grants.policy_record();
        let mut p = from.as_ref().map_or_else(|| self.grants.policy(), |r| r.policy);
        let expect = from.map_or(Expect::Absent, |r| Expect::ChangedAt(r.set_at));
        p.grant_reply_days = change.grant_reply_days.unwrap_or(p.grant_reply_days);
        p.dispute_days = change.dispute_days.unwrap_or(p.dispute_days);
        p.deemed_approval = change.deemed_approval.unwrap_or(p.deemed_approval);
        p.responsible_max_age_days = change.responsible_max_age_days.unwrap_or(p.responsible_max_age_days);
        // Ten years at most through the API; the configuration may hold more.
        if change.responsible_max_age_days.is_some_and(|d| d > 3660) {
            return Err(Error::InvalidValue("responsible_max_age_days is 1 to 3660 days".into()));
        }
        p.check().map_err(Error::InvalidValue)?;
        let record = PolicyRecord { policy: p, set_at: self.grants.now(), set_by: caller.department.id.clone() };
        let mut ev = caller.event("governance policy", Action::Policy, None);
        ev.outcome = format!(
            "grant_reply_days={} dispute_days={} deemed_approval={} responsible_max_age_days={}",
            p.grant_reply_days, p.dispute_days, p.deemed_approval, p.responsible_max_age_days
        );
        self.govern(Change::PolicySwitch { record, expect }, vec![ev]).await?;
        Ok(p)
    }

    /// Who takes in a stored staff account once it is committed (the
    /// console's account book, on every node): replaces any before.
    pub fn on_staff_change(&self, hook: std::sync::Arc<dyn Fn(&crate::staff::StaffRecord) + Send + Sync>) {
        *self.staff_hook.write().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// Stores a staff account with its audit event: a new one must not
    /// exist yet ([`Expect::Absent`]); a change must replace the version
    /// it was built from ([`Expect::ChangedAt`]), so that of two changes
    /// made at once (two administrators, two nodes) the second is refused
    /// rather than undoing the first. In cluster mode through the log, so
    /// every node's console knows it.
    pub async fn store_staff(&self, record: crate::staff::StaffRecord, expect: Expect, ev: AuditEvent) -> Result<()> {
        self.govern(Change::Staff { record, expect }, vec![ev]).await.map(|_| ())
    }

    /// Cluster mode: governance changes go through `log`.
    pub fn use_governance_log(&self, log: std::sync::Arc<dyn GovernanceLog>) {
        // Set once at start-up, before any request.
        let _ = self.gov_log.set(log);
    }

    /// Makes `change` with its audit `events`: at once on a single node;
    /// in cluster mode once the log holds it and this node has applied it.
    pub(crate) async fn govern(&self, change: Change, events: Vec<AuditEvent>) -> Result<Changed> {
        let applied = match self.gov_log.get() {
            None => self.apply_change(&change, events, WriteBatch::new()).await?,
            Some(log) => {
                let entry = Entry::new(log.node(), change, &events);
                let position = log.append(entry.encode()).await.map_err(|e| {
                    Error::Unavailable(format!("the governance log did not take the change ({e}); nothing changed, send it again"))
                })?;
                log.outcome(position).await.ok_or_else(|| {
                    Error::Unavailable(format!(
                        "the change is in the governance log at position {position} but this node has not applied it yet; it takes effect on every node — look it up before sending it again"
                    ))
                })?
            }
        };
        applied.map_err(Error::Conflict)
    }

    /// A change whose precondition failed: only `extra` (the log position,
    /// in cluster mode) is written, then the lock `release` holds is let go.
    async fn refused(&self, extra: WriteBatch, release: impl FnOnce() + Send + 'static, why: String) -> Result<Applied> {
        self.record_then(Vec::new(), extra, release).await?;
        Ok(Err(why))
    }

    /// Applies one change: its record if `change`'s precondition holds,
    /// with `events` (the node that took the request passes them; the
    /// others pass none) and `extra` (the log position, in cluster mode) in
    /// one atomic batch. A failed precondition writes only `extra`.
    /// Every node that applies the same entries in the same order ends with
    /// the same records (a dispute's change-log mark is each node's own).
    pub async fn apply_change(&self, change: &Change, events: Vec<AuditEvent>, mut extra: WriteBatch) -> Result<Applied> {
        // Held from the precondition's check until the change is committed
        // and in memory: moved into the commit's `after`, which runs on the
        // writer even when the request waiting for it is given up, so no
        // later change is checked against a state this one has left behind.
        let guard = self.gov_lock.clone().lock_owned().await;
        let release = move || drop(guard);
        match change {
            Change::Grant { grant, expect } => {
                if let Err(why) = grant_precondition(expect, self.grants.get(&grant.id).as_ref()) {
                    return self.refused(extra, release, why).await;
                }
                GrantBook::write_into(grant, &mut extra);
                let (book, taken) = (self.grants.clone(), grant.clone());
                self.record_then(events, extra, move || {
                    book.put(taken);
                    release();
                })
                .await?;
                Ok(Ok(Changed::Grant(grant.clone())))
            }
            Change::Dispute { dispute, key, expect } => {
                let current = load_dispute(&**self.store.engine(), &dispute.id)?;
                if let Err(why) = dispute_precondition(expect, current.as_ref()) {
                    return self.refused(extra, release, why).await;
                }
                let mut d = dispute.clone();
                // A correction must come after the dispute in this node's
                // change log, whose numbers are its own: marked where this
                // node applies the filing, kept by every later change.
                d.opened_seq = match &current {
                    Some(c) => c.opened_seq,
                    None => self.store.last_seq(),
                };
                if current.is_none() {
                    self.store.seal_into(&mut extra, &key_of(key)?);
                }
                d.write_into(&mut extra);
                self.record_then(events, extra, release).await?;
                Ok(Ok(Changed::Dispute(d)))
            }
            Change::Responsible { department, record } => {
                extra.put(Cf::Gov, crate::departments::record_key(department), basedata_store::codec::encode(record));
                self.record_then(events, extra, release).await?;
                Ok(Ok(Changed::Responsible))
            }
            Change::Staff { record, expect } => {
                let current = crate::staff::load(&**self.store.engine(), &record.id)?;
                if !built_from(expect, current.map(|c| c.changed_at)) {
                    let why = if *expect == Expect::Absent {
                        format!("an account {} was added meanwhile", record.id)
                    } else {
                        format!("account {} was changed meanwhile; look at it again before changing it", record.id)
                    };
                    return self.refused(extra, release, why).await;
                }
                record.write_into(&mut extra);
                let hook = self.staff_hook.read().unwrap_or_else(|e| e.into_inner()).clone();
                let taken = record.clone();
                self.record_then(events, extra, move || {
                    if let Some(hook) = hook {
                        hook(&taken);
                    }
                    release();
                })
                .await?;
                Ok(Ok(Changed::Staff))
            }
            Change::Policy { record } | Change::PolicySwitch { record, .. } => {
                // A switch logged before switches had a precondition holds
                // whatever is in force.
                let expect = if let Change::PolicySwitch { expect, .. } = change { expect } else { &Expect::Anything };
                if !built_from(expect, self.grants.policy_record().map(|r| r.set_at)) {
                    let why = "the policy was switched meanwhile; look at it again before switching it".to_owned();
                    return self.refused(extra, release, why).await;
                }
                extra.put(Cf::Gov, POLICY_KEY.to_vec(), basedata_store::codec::encode(record));
                let (book, taken) = (self.grants.clone(), record.clone());
                self.record_then(events, extra, move || {
                    book.switch_policy(taken);
                    release();
                })
                .await?;
                Ok(Ok(Changed::Policy))
            }
        }
    }

    /// The governance state as every node of a cluster should hold it:
    /// counts and a BLAKE3 digest of grants, disputes (without their
    /// node-local change-log mark) and recorded responsible persons, in key
    /// order.
    pub fn governance_digest(&self) -> Result<GovernanceDigest> {
        let mut h = blake3::Hasher::new();
        let mut grants = self.grants.all();
        grants.sort_by(|a, b| a.id.cmp(&b.id));
        for g in &grants {
            h.update(&grant_key(&g.id));
            h.update(&g.encode());
        }
        let mut disputes = crate::gov::all_disputes(&**self.store.engine())?;
        disputes.sort_by(|a, b| a.id.cmp(&b.id));
        for d in &disputes {
            let mut d = d.clone();
            d.opened_seq = 0;
            h.update(&dispute_key(&d.id));
            h.update(&basedata_store::codec::encode(&d));
        }
        let records = crate::departments::all_records(&**self.store.engine())?;
        for (k, v) in &records {
            h.update(k);
            h.update(v);
        }
        if let Some(p) = self.grants.policy_record() {
            h.update(POLICY_KEY);
            h.update(&basedata_store::codec::encode(&p));
        }
        let accounts = crate::staff::all(&**self.store.engine())?;
        for a in &accounts {
            h.update(&crate::staff::key(&a.id));
            h.update(&basedata_store::codec::encode(a));
        }
        Ok(GovernanceDigest {
            grants: grants.len() as u64,
            disputes: disputes.len() as u64,
            responsible: records.len() as u64,
            accounts: accounts.len() as u64,
            digest: h.finalize().to_hex().to_string(),
        })
    }
}

/// What a policy switch sets; what it leaves out stays as it is.
#[derive(Clone, Debug, Default)]
pub struct PolicyChange {
    pub grant_reply_days: Option<u32>,
    pub dispute_days: Option<u32>,
    pub deemed_approval: Option<bool>,
    pub responsible_max_age_days: Option<u32>,
}

/// See [`Queries::governance_digest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GovernanceDigest {
    pub grants: u64,
    pub disputes: u64,
    pub responsible: u64,
    /// Stored staff accounts of the console.
    pub accounts: u64,
    pub digest: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gov::{GrantState, ResponsibleRecord};
    use basedata_store::engine::mem::MemEngine;
    use basedata_store::SubjectKey;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn entries_round_trip_with_their_events() {
        let key = SubjectKey::parse(basedata_store::Subject::Person, "11010519491231002X").unwrap();
        let mut ev = basedata_store::caller::system_event("p", Action::Dispute);
        ev.key = Some(key);
        ev.outcome = "opened x".into();
        let change = Change::Responsible {
            department: "gongan".into(),
            record: ResponsibleRecord { persons: Vec::new(), updated_at: 7, updated_by: "admin".into() },
        };
        let e = Entry::new("node-1", change, std::slice::from_ref(&ev));
        let back = Entry::decode(&e.encode()).unwrap();
        assert_eq!(back, e);
        let events = back.events().unwrap();
        assert_eq!((events[0].key, events[0].outcome.as_str(), events[0].key_mapped), (Some(key), "opened x", false));
        let mut other = e.encode();
        other[0] = 9;
        assert!(Entry::decode(&other).unwrap_err().to_string().contains("unknown format 9"));
    }

    /// Gives `change` up 20 ms in, as a request's time limit or a client
    /// that goes away does, while its commit is still being written.
    async fn given_up(q: &Queries, change: &Change) {
        let started = q.apply_change(change, Vec::new(), WriteBatch::new());
        assert!(tokio::time::timeout(Duration::from_millis(20), started).await.is_err(), "given up before it was durable");
    }

    fn slow_queries() -> (Queries, Arc<MemEngine>) {
        let engine = Arc::new(MemEngine::new());
        (crate::service::testing::queries(engine.clone()), engine)
    }

    #[tokio::test]
    async fn a_change_given_up_while_it_commits_is_in_memory_before_the_next_is_checked() {
        let (q, engine) = slow_queries();
        let pending = crate::gov::tests::grant(time::macros::date!(2026 - 03 - 02));
        let new = Change::Grant { grant: pending.clone(), expect: Expect::Absent };
        q.apply_change(&new, Vec::new(), WriteBatch::new()).await.unwrap().unwrap();
        engine.delay_writes(Duration::from_millis(300));
        let decided = |state| {
            let mut g = pending.clone();
            g.state = state;
            Change::Grant { grant: g, expect: Expect::GrantIn(vec![GrantState::Pending]) }
        };
        given_up(&q, &decided(GrantState::Approved)).await;
        // The other decision, sent meanwhile, is checked against the
        // approval (committed all the same), not against the book as it
        // was before: it is refused, and the approval stands.
        let second = q.apply_change(&decided(GrantState::Rejected), Vec::new(), WriteBatch::new()).await.unwrap();
        assert!(second.as_ref().is_err_and(|why| why.contains("approved")), "{second:?}");
        assert_eq!(q.grants.get(&pending.id).map(|g| g.state), Some(GrantState::Approved));
        let stored = GrantBook::load(&**q.store.engine(), crate::gov::Policy::default(), q.store.clock().clone()).unwrap();
        assert_eq!(stored.get(&pending.id).map(|g| g.state), Some(GrantState::Approved), "memory and the store agree");
    }

    #[tokio::test]
    async fn a_policy_switch_built_from_a_replaced_policy_is_refused() {
        let (q, _) = slow_queries();
        let switch = |grant_reply_days, set_at, expect| {
            let record = PolicyRecord { policy: crate::gov::Policy { grant_reply_days, ..Default::default() }, set_at, set_by: "admin".into() };
            let q = &q;
            async move { q.apply_change(&Change::PolicySwitch { record, expect }, Vec::new(), WriteBatch::new()).await.unwrap() }
        };
        // Two switches built from the configuration's policy: the first
        // stands, the second would undo it and is refused.
        switch(9, 5, Expect::Absent).await.unwrap();
        assert!(switch(7, 6, Expect::Absent).await.is_err_and(|why| why.contains("switched meanwhile")));
        assert!(switch(7, 6, Expect::ChangedAt(4)).await.is_err());
        assert_eq!(q.policy().0.grant_reply_days, 9);
        switch(7, 6, Expect::ChangedAt(5)).await.unwrap();
        assert_eq!(q.policy().1.map(|r| (r.policy.grant_reply_days, r.set_at)), Some((7, 6)));
        // Through the use case, one member at a time: each switch keeps
        // the members the one before set.
        let admin = Caller::declared(std::sync::Arc::new(crate::Department::new("admin", vec![Role::Admin])), None);
        q.switch_policy(&admin, &PolicyChange { dispute_days: Some(3), ..Default::default() }).await.unwrap();
        let p = q.switch_policy(&admin, &PolicyChange { deemed_approval: Some(false), ..Default::default() }).await.unwrap();
        assert_eq!((p.grant_reply_days, p.dispute_days, p.deemed_approval), (7, 3, false));
        assert_eq!(q.policy().0, p);
    }

    #[tokio::test]
    async fn a_policy_switch_given_up_while_it_commits_still_takes_effect() {
        let (q, engine) = slow_queries();
        engine.delay_writes(Duration::from_millis(300));
        let policy = crate::gov::Policy { grant_reply_days: 9, ..Default::default() };
        let record = PolicyRecord { policy, set_at: 5, set_by: "admin".into() };
        given_up(&q, &Change::PolicySwitch { record: record.clone(), expect: Expect::Absent }).await;
        for _ in 0..100 {
            if q.policy().0 == policy {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(q.policy(), (policy, Some(record)));
        assert!(q.store.engine().get(Cf::Gov, POLICY_KEY).unwrap().is_some(), "and it is stored");
    }

    #[tokio::test]
    async fn a_staff_change_made_from_a_replaced_version_is_refused() {
        let (q, _) = slow_queries();
        let version = |changed_at: i64, disabled: bool| crate::staff::StaffRecord {
            id: "clerk9".into(),
            name: "赵九".into(),
            department: "counter".into(),
            roles: vec!["clerk".into()],
            password_argon2: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
            disabled,
            created_at: 1,
            created_by: "admin1".into(),
            changed_at,
            changed_by: "admin1".into(),
        };
        let store = |record, expect| {
            let q = &q;
            async move { q.apply_change(&Change::Staff { record, expect }, Vec::new(), WriteBatch::new()).await }
        };
        store(version(1, false), Expect::Absent).await.unwrap().unwrap();
        assert!(store(version(2, false), Expect::Absent).await.unwrap().unwrap_err().contains("added meanwhile"));
        // Two changes built from version 1: the first is stored, the
        // second would undo it and is refused.
        store(version(5, true), Expect::ChangedAt(1)).await.unwrap().unwrap();
        let second = store(version(6, false), Expect::ChangedAt(1)).await.unwrap();
        assert!(second.as_ref().is_err_and(|why| why.contains("changed meanwhile")), "{second:?}");
        let stored = crate::staff::load(&**q.store.engine(), "clerk9").unwrap().unwrap();
        assert_eq!((stored.changed_at, stored.disabled), (5, true));
        // Built from the version stored, a change goes through.
        store(version(7, false), Expect::ChangedAt(5)).await.unwrap().unwrap();
        assert!(store(version(8, true), Expect::ChangedAt(5)).await.unwrap().is_err());
    }

    #[test]
    fn preconditions_name_what_changed() {
        let g = crate::gov::tests::grant(time::macros::date!(2026 - 03 - 02));
        assert!(grant_precondition(&Expect::Absent, None).is_ok());
        assert!(grant_precondition(&Expect::GrantIn(vec![GrantState::Pending]), Some(&g)).is_ok());
        let mut decided = g.clone();
        decided.state = GrantState::DeemedApproved;
        let why = grant_precondition(&Expect::GrantIn(vec![GrantState::Pending]), Some(&decided)).unwrap_err();
        assert!(why.contains("deemed_approved"), "{why}");
        assert!(grant_precondition(&Expect::Absent, Some(&g)).is_err());
        assert!(grant_precondition(&Expect::GrantIn(vec![GrantState::Pending]), None).is_err());
    }
}
