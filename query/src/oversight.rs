//! Oversight, for auditors and administrators: the audit trail (who used
//! which subject's data, when, why and how) and its chain check, and the
//! evaluation reports of Arts. 35–37 — per department over a period, what
//! it provided and used and how timely it answered; per dataset, whether
//! its provider keeps it current. Reports are built from the usage
//! counters kept on the write path and from the (few) grant and dispute
//! records, never from a scan of the audit log.
//!
//! Two views reach beyond auditors: the "who used my data" report a
//! counter prints for a person standing at it (itself audited), and a
//! provider's view of its own datasets' timeliness.

use crate::caller::{Caller, Role};
use crate::annual::next_update_due;
use crate::error::{Error, Result};
use crate::gov::{cst_date, end_of_day, GrantState};
use crate::service::Queries;
use basedata_store::audit::retention::Pruned;
use basedata_store::caller::retention_event;
use basedata_store::audit::{AuditEntry, AuditQuery, ChainCheck};
use basedata_store::usage::{daily, daily_sum, day_of, totals, Kind, Owner};
use basedata_store::{Action, SubjectKey, WriteBatch};
use time::Date;

/// A grant a use relied on, as its audit entry is shown with it: the
/// approver of each use record, as the Shenzhen measures ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    pub grant: String,
    /// The rest is `None` (and `deemed` false) for a grant this node does
    /// not hold, which no entry it wrote names.
    pub dataset: Option<String>,
    /// Approved by a decision, or deemed approved (no decision by the
    /// deadline).
    pub deemed: bool,
    /// The deciding department (the dataset's provider); `None` when deemed.
    pub by: Option<String>,
    /// Who decided for it, and whether the platform established who that
    /// is (a console session) rather than the request declaring it; `None`
    /// when deemed, when the request named no one, and for grants decided
    /// before this was kept.
    pub approver: Option<String>,
    pub approver_verified: bool,
    /// Since when, Unix microseconds: the decision, or the end of the
    /// deadline's day.
    pub since: Option<i64>,
}

/// Julian day number of 1970-01-01 (the usage counters count days from it).
const UNIX_EPOCH_JULIAN_DAY: i32 = 2_440_588;

/// Daily figures over a period, one row per department or dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageByDay {
    pub first_day: Date,
    /// Per department: lookups, verifications and batch lines a day.
    pub by_department: Vec<(String, Vec<u64>)>,
    /// Per dataset: updates applied a day.
    pub by_dataset: Vec<(String, Vec<u64>)>,
    /// Per dataset: its lookups, verifications and batch lines a day, by
    /// every configured department together.
    pub uses_by_dataset: Vec<(String, Vec<u64>)>,
}

/// Entries one page of an access report lists at most; the next page
/// starts after the last entry of this one.
pub const MAX_ACCESS_REPORT: usize = 2_000;

/// One page of an access report.
#[derive(Clone, Debug)]
pub struct AccessReport {
    /// Oldest first.
    pub entries: Vec<basedata_store::audit::AuditEntry>,
    /// Whether later entries follow.
    pub more: bool,
    /// Where the next page starts, when `more`: pass it back as `after`.
    pub next: Option<basedata_store::audit::AuditCursor>,
}

/// Entries one audit query returns at most.
pub const MAX_AUDIT_LIMIT: usize = 10_000;

/// One department's figures over a period.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DepartmentFigures {
    pub department: String,
    pub name: String,
    pub datasets_provided: Vec<String>,
    pub records_provided: u64,
    pub updates_applied: u64,
    /// Uses by kind (update requests, lookups, verifications, batch
    /// lines, change-feed reads, denials).
    pub uses: Vec<(Action, u64)>,
    pub grants_decided: usize,
    pub grants_decided_on_time: usize,
    pub grants_deemed_approved: usize,
    pub disputes_resolved: usize,
    pub disputes_resolved_on_time: usize,
    pub disputes_overdue: usize,
    /// Verifications refused for too many different claims (see `claims`).
    pub claim_limit_refusals: usize,
    /// Whether it states catalogued purposes only (`strict`) or free text
    /// (`transitional`).
    pub purpose_mode: &'static str,
    /// Its reads of subject data in the period that named no catalogued
    /// purpose.
    pub uses_without_catalogued_purpose: u64,
    /// Whether its record of responsible persons is current, and its date.
    pub responsible: Option<crate::departments::RecordStatus>,
    pub responsible_as_of: Option<Date>,
}

impl DepartmentFigures {
    /// Uses of kind `a` in the period.
    pub fn used(&self, a: Action) -> u64 {
        self.uses.iter().find(|(k, _)| *k == a).map_or(0, |(_, n)| *n)
    }
}

/// One dataset's timeliness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetFreshness {
    pub dataset: String,
    pub provider: String,
    pub update_frequency: String,
    pub records: u64,
    pub updates: u64,
    /// Unix microseconds; `None` before the first update.
    pub last_update: Option<i64>,
    pub next_update_due: Option<Date>,
    pub overdue: bool,
    /// A dataset of several providers: each one's own timeliness, by the
    /// same rule (empty for a dataset of one provider).
    pub providers: Vec<ProviderFreshness>,
}

/// One provider's timeliness within a dataset of several.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderFreshness {
    pub provider: String,
    pub updates: u64,
    pub last_update: Option<i64>,
    pub next_update_due: Option<Date>,
    pub overdue: bool,
}

impl Queries {
    /// Oversight (the audit log, reports) is for auditors and administrators.
    pub fn require_oversight(&self, caller: &Caller) -> Result<()> {
        if caller.department.has(Role::Auditor) || caller.department.has(Role::Admin) {
            Ok(())
        } else {
            Err(Error::Forbidden("this is for auditors and administrators".into()))
        }
    }

    /// Audit entries matching `q`, at most its limit (1 to
    /// [`MAX_AUDIT_LIMIT`]; any other is refused, never quietly changed).
    pub async fn audit(&self, caller: &Caller, q: AuditQuery) -> Result<Vec<AuditEntry>> {
        self.require_oversight(caller)?;
        if q.limit == 0 || q.limit > MAX_AUDIT_LIMIT {
            return Err(Error::InvalidValue(format!("limit is 1 to {MAX_AUDIT_LIMIT}")));
        }
        self.settle_uses().await?;
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || store.audit_query(&q)).await??)
    }

    /// The approvals of each of `entries`: the grants its use relied on,
    /// as its entry names them (recorded when the use was decided), with
    /// who approved each. Grants are looked up once each, however many
    /// entries name them.
    pub fn approvals(&self, entries: &[AuditEntry]) -> Vec<Vec<Approval>> {
        let mut seen: std::collections::HashMap<&str, Approval> = std::collections::HashMap::new();
        entries
            .iter()
            .map(|e| {
                e.grants
                    .iter()
                    .map(|id| {
                        seen.entry(id.as_str())
                            .or_insert_with(|| match self.grants.get(id) {
                                Some(g) => {
                                    // Rejected, yet relied on: it was deemed approved
                                    // then (its deadline passed undecided), and the
                                    // refusal came after a policy switch.
                                    let deemed = g.decided_at.is_none() || g.state == GrantState::Rejected;
                                    Approval {
                                        since: Some(g.decided_at.unwrap_or_else(|| end_of_day(g.due_date()))),
                                        by: if deemed { None } else { g.decided_by },
                                        approver: if deemed { None } else { g.decided_operator },
                                        approver_verified: !deemed && g.decided_operator_verified,
                                        grant: g.id,
                                        dataset: Some(g.dataset),
                                        deemed,
                                    }
                                }
                                None => Approval {
                                    grant: id.clone(),
                                    dataset: None,
                                    deemed: false,
                                    by: None,
                                    approver: None,
                                    approver_verified: false,
                                    since: None,
                                },
                            })
                            .clone()
                    })
                    .collect()
            })
            .collect()
    }

    /// Recomputes the hash chain of the whole audit log.
    pub async fn audit_check(&self, caller: &Caller) -> Result<ChainCheck> {
        self.require_oversight(caller)?;
        self.settle_uses().await?;
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || store.audit_verify()).await??)
    }

    /// [`Queries::audit_check`], and each other node's chain held here
    /// (cluster mode), by node name.
    pub async fn audit_check_all(&self, caller: &Caller) -> Result<(ChainCheck, Vec<(String, ChainCheck)>)> {
        self.require_oversight(caller)?;
        self.settle_uses().await?;
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || -> basedata_store::Result<_> { Ok((store.audit_verify()?, store.audit_verify_remote()?)) })
            .await??)
    }

    /// Removes the audit entries older than `retention_days` from every
    /// chain held (see `basedata_store::audit::retention`): the cuts are
    /// recorded in the trail first, as the platform's own entry, so that
    /// the trail says what is removed and the chain check accepts the
    /// anchors the removal leaves. Nothing is recorded when nothing is
    /// that old.
    pub async fn apply_audit_retention(&self, retention_days: u32) -> Result<Pruned> {
        let before = basedata_store::clock::days_before(self.store.clock().now_micros(), retention_days);
        let store = self.store.clone();
        let Some(cuts) = tokio::task::spawn_blocking(move || store.audit_cuts(before)).await?? else {
            return Ok(Pruned::default());
        };
        self.record(vec![retention_event(&cuts, before)], WriteBatch::new()).await?;
        let store = self.store.clone();
        let (pruned, stopped) = tokio::task::spawn_blocking(move || store.audit_prune(&cuts)).await??;
        for s in stopped {
            // The chain check reports it; the rest of the cut waits for it.
            tracing::warn!(node = ?s.node, seq = s.seq, why = %s.why, "audit retention stopped at a damaged entry");
        }
        Ok(pruned)
    }

    /// Per configured department over `from..=to` (Unix microseconds;
    /// default the beginning and now): provided, used, denied, and the
    /// timeliness of its answers. Returns the period and the rows.
    pub async fn sharing_report(
        &self,
        caller: &Caller,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<(i64, i64, Vec<DepartmentFigures>)> {
        self.require_oversight(caller)?;
        self.settle_uses().await?;
        let now = self.grants.now();
        let (from, to) = (from.unwrap_or(0), to.unwrap_or(now));
        if to < from {
            return Err(Error::InvalidValue("to is before from".into()));
        }
        // Counters are per CST day: the period covers the days of `from` to `to`.
        let (from_day, to_day) = (day_of(from), day_of(to) + 1);
        let grants = self.grants.all();
        let store = self.store.clone();
        let disputes = tokio::task::spawn_blocking(move || crate::gov::all_disputes(&**store.engine())).await??;
        let in_period = |t: i64| t >= from && t <= to;
        let engine = &**self.store.engine();
        let mut rows = Vec::new();
        for dept in self.directory.all() {
            let id = dept.id.as_str();
            let used = totals(engine, Owner::Department(id), from_day, to_day)?;
            let uses = [Action::Update, Action::Lookup, Action::Verify, Action::BatchVerify, Action::ChangeFeed, Action::Denied]
                .into_iter()
                .map(|a| (a, used.get(&Kind::Action(a)).copied().unwrap_or(0)))
                .collect();
            let view = self.view(&dept)?;
            let mut f = DepartmentFigures {
                department: id.to_owned(),
                name: dept.name.clone(),
                uses,
                purpose_mode: if dept.purposes.is_some() { "strict" } else { "transitional" },
                uses_without_catalogued_purpose: used.get(&Kind::Uncatalogued).copied().unwrap_or(0),
                responsible: Some(self.record_status(&view, now)),
                responsible_as_of: view.responsible_as_of,
                ..Default::default()
            };
            for ds in self.catalog.datasets().iter().filter(|d| d.is_provided_by(id)) {
                // Of a dataset of several providers, a department counts
                // its own updates; records, which may change areas, count
                // for the steward.
                let counted = match ds.division {
                    None => ds.id.clone(),
                    Some(_) => basedata_store::store::provider_stats_name(&ds.id, id),
                };
                if ds.provider == id {
                    f.records_provided += self.store.dataset_stats(&ds.id).records;
                }
                f.updates_applied +=
                    totals(engine, Owner::Dataset(&counted), from_day, to_day)?.get(&Kind::Applied).copied().unwrap_or(0);
                f.datasets_provided.push(ds.id.clone());
            }
            // Grants and disputes are the steward's.
            let stewarded: Vec<&str> =
                self.catalog.datasets().iter().filter(|d| d.provider == id).map(|d| d.id.as_str()).collect();
            let mine = |dataset: &String| stewarded.contains(&dataset.as_str());
            let decided: Vec<_> = grants.iter().filter(|g| mine(&g.dataset) && g.decided_at.is_some_and(in_period)).collect();
            let resolved: Vec<_> =
                disputes.iter().filter(|d| mine(&d.dataset) && d.resolved_at.is_some_and(in_period)).collect();
            f.grants_decided = decided.len();
            f.grants_decided_on_time = decided.iter().filter(|g| g.decided_on_time() == Some(true)).count();
            f.grants_deemed_approved = grants
                .iter()
                .filter(|g| {
                    mine(&g.dataset)
                        && g.effective_state(now, &self.grants.policy()) == GrantState::DeemedApproved
                        && in_period(end_of_day(g.due_date()))
                })
                .count();
            f.disputes_resolved = resolved.len();
            f.disputes_resolved_on_time = resolved.iter().filter(|d| d.resolved_on_time() == Some(true)).count();
            f.disputes_overdue = disputes.iter().filter(|d| mine(&d.dataset) && d.is_overdue(now)).count();
            f.claim_limit_refusals = crate::claims::refusals(engine, id, from, to)?;
            rows.push(f);
        }
        Ok((from, to, rows))
    }

    /// Per dataset: records held, last update, and whether its provider is
    /// overdue against its update frequency. Returns the time it is as of,
    /// whether the working-day calendar covers this year, and the rows.
    pub fn freshness_report(&self, caller: &Caller) -> Result<(i64, bool, Vec<DatasetFreshness>)> {
        self.require_oversight(caller)?;
        self.freshness_rows()
    }

    /// The freshness rows of the datasets `caller` provides (一数一源: a
    /// provider watches its own).
    pub fn own_freshness(&self, caller: &Caller) -> Result<(i64, bool, Vec<DatasetFreshness>)> {
        if !caller.department.has(Role::Provider) {
            return Err(Error::Forbidden("this is for providers".into()));
        }
        let (now, covered, mut rows) = self.freshness_rows()?;
        let id = &caller.department.id;
        rows.retain(|r| r.provider == *id || r.providers.iter().any(|p| p.provider == *id));
        Ok((now, covered, rows))
    }

    /// Every recorded use of `key`'s data after audit entry `after`,
    /// oldest first, a page of at most [`MAX_ACCESS_REPORT`]: what a
    /// person who shows their ID at a counter is entitled to know. For
    /// consuming departments (counters), auditors and administrators; each
    /// page is itself recorded, under `purpose`, before it is returned.
    /// `after` continues from an earlier page's `next`; `node` is this
    /// node's name in a cluster, whose trail holds every node's uses.
    pub async fn access_report(
        &self,
        caller: &Caller,
        purpose: &str,
        key: SubjectKey,
        after: Option<basedata_store::audit::AuditCursor>,
        node: Option<String>,
    ) -> Result<AccessReport> {
        let d = &caller.department;
        if !(d.has(Role::Consumer) || d.has(Role::Auditor) || d.has(Role::Admin)) {
            return Err(Error::Forbidden("access reports are printed at counters".into()));
        }
        self.settle_uses().await?;
        let store = self.store.clone();
        // One more than a page tells whether another page follows.
        let local = node.clone().unwrap_or_default();
        let q = AuditQuery { key: Some(key), cursor: after.clone(), node, limit: MAX_ACCESS_REPORT + 1, ..AuditQuery::default() };
        let mut entries = tokio::task::spawn_blocking(move || store.audit_query(&q)).await??;
        let more = entries.len() > MAX_ACCESS_REPORT;
        entries.truncate(MAX_ACCESS_REPORT);
        let mut ev = caller.event(purpose, Action::AccessReport, Some(key));
        ev.outcome = match &after {
            None => format!("entries={}", entries.len()),
            Some(c) => format!("entries={} after={c}", entries.len()),
        };
        self.record(vec![ev], WriteBatch::new()).await?;
        let next = entries.last().filter(|_| more).map(|e| basedata_store::audit::AuditCursor::of(e, &local));
        Ok(AccessReport { entries, more, next })
    }

    /// Day by day over the last `days` CST days (oldest first, today
    /// last): each department's uses (lookups, verifications and batch
    /// lines), each dataset's applied updates, and each dataset's uses by
    /// all configured departments, from the usage counters. Returns the
    /// first day's date and the three series.
    pub async fn usage_by_day(&self, caller: &Caller, days: u32) -> Result<UsageByDay> {
        self.require_oversight(caller)?;
        self.settle_uses().await?;
        let days = days.clamp(1, 366) as i32;
        let today = basedata_store::usage::day_of(self.grants.now());
        let (first, end) = (today - days + 1, today + 1);
        let departments: Vec<String> = self.directory.all().iter().map(|d| d.id.clone()).collect();
        let datasets: Vec<String> = self.catalog.datasets().iter().map(|d| d.id.clone()).collect();
        let store = self.store.clone();
        let (by_department, by_dataset, uses_by_dataset) = tokio::task::spawn_blocking(move || -> Result<_> {
            let engine = &**store.engine();
            let used = [Action::Lookup, Action::Verify, Action::BatchVerify].map(Kind::Action);
            let mut deps = Vec::with_capacity(departments.len());
            for d in &departments {
                deps.push((d.clone(), daily_sum(engine, Owner::Department(d), &used, first, end)?));
            }
            let mut sets = Vec::with_capacity(datasets.len());
            let mut uses = Vec::with_capacity(datasets.len());
            for ds in datasets {
                sets.push((ds.clone(), daily(engine, Owner::Dataset(&ds), Kind::Applied, first, end)?));
                // One scan per department that could have used it: the
                // use counters are kept per (department, dataset).
                let mut row = vec![0; days as usize];
                for d in &departments {
                    let theirs = daily_sum(engine, Owner::Use { department: d, dataset: &ds }, &used, first, end)?;
                    row.iter_mut().zip(theirs).for_each(|(n, m)| *n += m);
                }
                uses.push((ds, row));
            }
            Ok((deps, sets, uses))
        })
        .await??;
        let first_date = Date::from_julian_day(first + UNIX_EPOCH_JULIAN_DAY).unwrap_or(Date::MIN);
        Ok(UsageByDay { first_day: first_date, by_department, by_dataset, uses_by_dataset })
    }

    fn freshness_rows(&self) -> Result<(i64, bool, Vec<DatasetFreshness>)> {
        let now = self.grants.now();
        let today = cst_date(now);
        let rows = self
            .catalog
            .datasets()
            .iter()
            .map(|ds| {
                let st = self.store.dataset_stats(&ds.id);
                let due_after = |last_update: i64| {
                    (last_update != 0).then(|| next_update_due(&self.calendar, &ds.update_frequency, cst_date(last_update)))
                };
                let due = due_after(st.last_update);
                let providers = match ds.division {
                    None => Vec::new(),
                    Some(_) => ds
                        .providers
                        .iter()
                        .map(|p| {
                            let ps = self.store.provider_stats(&ds.id, &p.id);
                            let due = due_after(ps.last_update);
                            ProviderFreshness {
                                provider: p.id.clone(),
                                updates: ps.updates,
                                last_update: (ps.last_update != 0).then_some(ps.last_update),
                                next_update_due: due,
                                overdue: due.is_some_and(|d| today > d),
                            }
                        })
                        .collect(),
                };
                DatasetFreshness {
                    providers,
                    dataset: ds.id.clone(),
                    provider: ds.provider.clone(),
                    update_frequency: ds.update_frequency.to_string(),
                    records: st.records,
                    updates: st.updates,
                    last_update: (st.last_update != 0).then_some(st.last_update),
                    next_update_due: due,
                    overdue: due.is_some_and(|d| today > d),
                }
            })
            .collect();
        Ok((now, self.calendar.covers(today.year()), rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basedata_store::caller::{Department, Listed};
    use basedata_store::calendar::Calendar;
    use basedata_store::clock::ManualClock;
    use basedata_store::commit::Committer;
    use basedata_store::engine::mem::MemEngine;
    use basedata_store::{Catalog, Secret, Store, Subject};
    use std::sync::Arc;


    const DAY: i64 = 86_400_000_000;

    /// One department's use of `datasets`, about a valid citizen ID.
    fn used(dept: &Arc<Department>, action: Action, datasets: &[&str]) -> basedata_store::AuditEvent {
        let key = SubjectKey::parse(Subject::Person, "11010519491231002X").unwrap();
        let mut ev = Caller::declared(dept.clone(), None).event("测试", action, Some(key));
        ev.datasets = datasets.iter().map(|d| (*d).to_owned()).collect();
        ev.outcome = "found".into();
        ev
    }

    fn series<'a>(rows: &'a [(String, Vec<u64>)], id: &str) -> &'a [u64] {
        &rows.iter().find(|(d, _)| d == id).unwrap_or_else(|| panic!("no row {id}")).1
    }

    #[tokio::test]
    async fn uses_per_dataset_are_summed_over_departments_day_by_day() {
        // 2026-12-01, noon in Beijing.
        let clock = Arc::new(ManualClock::new(1_796_097_600_000_000));
        let store = Arc::new(
            Store::open(Arc::new(MemEngine::new()), &Secret::from_bytes([7; 32]), Arc::new(Catalog::builtin()), clock.clone())
                .unwrap(),
        );
        let committer = Arc::new(Committer::start(store.clone(), 64));
        let counter = Arc::new(Department::new("counter", vec![Role::Consumer]));
        let tax = Arc::new(Department::new("tax", vec![Role::Consumer]));
        let audit = Arc::new(Department::new("audit", vec![Role::Auditor]));
        let directory = Arc::new(Listed(vec![counter.clone(), tax.clone(), audit.clone()]));
        let q = Queries::new(store, committer, crate::gov::Policy::default(), Calendar::builtin(), directory).unwrap();

        // Today: two lookups by the counter (one of two datasets), a
        // verification by the tax office.
        let today = vec![
            used(&counter, Action::Lookup, &["hukou", "marriage"]),
            used(&counter, Action::Lookup, &["hukou"]),
            used(&tax, Action::Verify, &["hukou"]),
        ];
        q.record(today, WriteBatch::new()).await.unwrap();
        // Two days later: a batch line, and a refused use, which is no use.
        clock.advance(2 * DAY);
        q.record(vec![used(&tax, Action::BatchVerify, &["marriage"]), used(&counter, Action::Denied, &["hukou"])], WriteBatch::new())
            .await
            .unwrap();

        let u = q.usage_by_day(&Caller::declared(audit, None), 4).await.unwrap();
        assert_eq!(u.first_day, Date::from_calendar_date(2026, time::Month::November, 30).unwrap());
        assert_eq!(series(&u.uses_by_dataset, "hukou"), [0, 3, 0, 0]);
        assert_eq!(series(&u.uses_by_dataset, "marriage"), [0, 1, 0, 1]);
        assert_eq!(series(&u.uses_by_dataset, "death"), [0, 0, 0, 0]);
        assert_eq!(u.uses_by_dataset.len(), q.catalog.datasets().len());
        assert_eq!(series(&u.by_department, "counter"), [0, 2, 0, 0]);
        assert_eq!(series(&u.by_department, "tax"), [0, 1, 0, 1]);
        assert_eq!(series(&u.by_dataset, "hukou"), [0, 0, 0, 0]);
        // Oversight is for auditors.
        let refused = q.usage_by_day(&Caller::declared(counter, None), 4).await;
        assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
    }
}
