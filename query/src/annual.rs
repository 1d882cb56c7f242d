//! The yearly sharing report (Guangzhou Arts. 35–37, Huizhou Arts. 50–51):
//! for one calendar year, what each department provided and used, which
//! consumers used each provider's data and how, each dataset's timeliness
//! day by day over the year, rejected update lines and disputes as data
//! quality, grants and disputes answered on time or late, and refusals for
//! purpose or class. Built from the usage counters kept on the write path
//! and the grant and dispute records, never from a scan of the audit log,
//! so a year's report costs the same however many uses the year saw.

use crate::caller::Caller;
use crate::error::{Error, Result};
use crate::gov::{cst_date, end_of_day, Grant, GrantState};
use crate::service::Queries;
use basedata_store::catalog::{Dataset, UpdateFrequency};
use basedata_store::engine::Engine;
use basedata_store::store::provider_stats_name;
use basedata_store::usage::{daily, day_of, totals, use_totals, Kind, Owner, Refusal, CST_OFFSET_MICROS};
use basedata_store::Action;
use std::collections::HashMap;
use time::{Date, Month};

/// Julian day number of 1970-01-01 (the usage counters count days from it).
const UNIX_EPOCH_JULIAN_DAY: i32 = 2_440_588;
/// How far before the year the timeliness walk looks for the last update
/// (a quarterly dataset may go up to about 106 days without one).
const LOOK_BACK_DAYS: i32 = 400;
/// The first year a report may be asked for.
pub const FIRST_YEAR: i32 = 2000;

/// How requests of one kind (grant requests, disputes) were answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Handling {
    /// Received in the year.
    pub received: usize,
    /// Decided or resolved in the year.
    pub answered: usize,
    pub on_time: usize,
    pub late: usize,
    /// Grants only: deemed approved (no answer by the deadline) in the year.
    pub deemed_approved: usize,
    /// Still unanswered at the end of the period and past their deadline.
    pub open_overdue: usize,
}

impl Handling {
    fn add(&mut self, o: &Handling) {
        self.received += o.received;
        self.answered += o.answered;
        self.on_time += o.on_time;
        self.late += o.late;
        self.deemed_approved += o.deemed_approved;
        self.open_overdue += o.open_overdue;
    }
}

/// Uses of a kind counted over the year.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Uses {
    pub lookups: u64,
    pub verifications: u64,
    pub batch_lines: u64,
    pub change_feed_reads: u64,
    pub denials: u64,
}

impl Uses {
    fn from_counts(c: &HashMap<Kind, u64>) -> Uses {
        let n = |a| c.get(&Kind::Action(a)).copied().unwrap_or(0);
        Uses {
            lookups: n(Action::Lookup),
            verifications: n(Action::Verify),
            batch_lines: n(Action::BatchVerify),
            change_feed_reads: n(Action::ChangeFeed),
            denials: n(Action::Denied),
        }
    }

    /// Reads of subject data (everything but denials).
    pub fn reads(&self) -> u64 {
        self.lookups + self.verifications + self.batch_lines + self.change_feed_reads
    }
}

/// One department's year.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DepartmentYear {
    pub department: String,
    pub name: String,
    pub roles: Vec<String>,
    /// `strict` (catalogued purposes only) or `transitional` (free text).
    pub purpose_mode: &'static str,
    /// The record of responsible persons at the end of the period.
    pub responsible_record: &'static str,
    pub responsible_as_of: Option<Date>,
    pub responsible_persons: usize,
    /// As provider.
    pub datasets_provided: Vec<String>,
    pub update_requests: u64,
    pub updates_applied: u64,
    pub rejected_lines: u64,
    /// As consumer.
    pub uses: Uses,
    pub uses_without_catalogued_purpose: u64,
    pub refused_for_purpose: u64,
    pub refused_for_class: u64,
    pub refused_for_claim_limit: u64,
    /// Grant requests and disputes about the datasets it provides.
    pub grants: Handling,
    pub disputes: Handling,
}

/// Which department used a dataset, and how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerUse {
    pub department: String,
    pub uses: Uses,
}

/// Updates and timeliness over the period, of a dataset or of one
/// provider's part of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Timeliness {
    pub updates_applied: u64,
    /// Updates applied per month, January first.
    pub monthly_updates: [u64; 12],
    /// Days of the period with at least one update applied.
    pub update_days: u32,
    /// Days of the period on which the provider was past the date its
    /// update frequency required the next update by.
    pub days_overdue: u32,
    /// The longest run of calendar days without an update, within the
    /// period (counting from the last update before it).
    pub longest_gap_days: u32,
    /// Days of the period before the first update ever.
    pub days_before_first_update: u32,
}

/// One provider's part of a dataset of several.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderYear {
    pub provider: String,
    pub timeliness: Timeliness,
}

/// One dataset's year.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetYear {
    pub dataset: String,
    pub title: String,
    /// The dataset's provider, or with several its steward.
    pub provider: String,
    pub update_frequency: String,
    pub timeliness: Timeliness,
    pub rejected_lines: u64,
    /// With several providers: each one's part.
    pub providers: Vec<ProviderYear>,
    pub consumers: Vec<ConsumerUse>,
    pub grants: Handling,
    pub disputes: Handling,
}

/// The yearly report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnualReport {
    pub year: i32,
    /// Unix microseconds: the start of the year (CST) and the end of the
    /// period covered (the end of the year, or now for the current year).
    pub from: i64,
    pub to: i64,
    /// Whether the year is over (the figures are final).
    pub complete: bool,
    /// Whether the working-day calendar covers the year (deadlines and
    /// timeliness are computed in working days).
    pub calendar_covers_year: bool,
    /// Days of the year the period covers.
    pub days: u32,
    pub departments: Vec<DepartmentYear>,
    pub datasets: Vec<DatasetYear>,
    pub grants: Handling,
    pub disputes: Handling,
}

/// Unix microseconds of the first moment of CST day `day`.
fn day_start(day: i32) -> i64 {
    i64::from(day) * 86_400_000_000 - CST_OFFSET_MICROS
}

fn date_of_day(day: i32) -> Date {
    Date::from_julian_day(day + UNIX_EPOCH_JULIAN_DAY).unwrap_or(Date::MIN)
}

fn day_of_date(d: Date) -> i32 {
    d.to_julian_day() - UNIX_EPOCH_JULIAN_DAY
}

/// The date by which the update after one on `last` is due, under `freq`
/// (the freshness report's rule and the yearly report's, day by day).
pub(crate) fn next_update_due(calendar: &basedata_store::calendar::Calendar, freq: &UpdateFrequency, last: Date) -> Date {
    match freq {
        // Base data is updated as it changes (Art. 19); a whole working day
        // without any change to a populated base dataset is suspicious.
        UpdateFrequency::Realtime => calendar.add_working_days(last, 1),
        UpdateFrequency::WorkingDays(n) => calendar.add_working_days(last, *n),
        // "At least once within 10 working days of each quarter's start"
        // (Guangzhou Art. 19 para 4, Huizhou Art. 16): whenever in a
        // quarter the last update came, the next is due by the 10th
        // working day of the quarter after it.
        UpdateFrequency::Quarterly => {
            let start = next_quarter_start(last);
            calendar.add_working_days(start.previous_day().unwrap_or(start), QUARTER_START_WORKING_DAYS)
        }
    }
}

/// Working days into a quarter by which a quarterly dataset's update is due.
const QUARTER_START_WORKING_DAYS: u32 = 10;

/// The first day of the quarter after the one `d` is in.
fn next_quarter_start(d: Date) -> Date {
    let month0 = u8::from(d.month()) - 1;
    let (year, next0) = match month0 / 3 {
        3 => (d.year() + 1, 0),
        q => (d.year(), (q + 1) * 3),
    };
    let month = Month::try_from(next0 + 1).unwrap_or(Month::January);
    Date::from_calendar_date(year, month, 1).unwrap_or(Date::MAX)
}

/// Grants about one dataset in `[from, to]`.
fn grant_handling<'a>(grants: impl Iterator<Item = &'a Grant>, from: i64, to: i64, q: &Queries) -> Handling {
    let mut h = Handling::default();
    let within = |t: i64| t >= from && t <= to;
    for g in grants {
        h.received += within(g.created_at) as usize;
        let deadline = end_of_day(g.due_date());
        if g.decided_at.is_some_and(within) {
            h.answered += 1;
            if g.decided_on_time() == Some(true) {
                h.on_time += 1;
            } else {
                h.late += 1;
            }
        } else if g.effective_state(to, &q.grants.policy()) == GrantState::DeemedApproved && g.decided_at.is_none() {
            h.deemed_approved += within(deadline) as usize;
        }
        // Unanswered at the end of the period (answered later, or not yet)
        // and past the deadline, without the policy answering for it.
        let unanswered_at_end = g.created_at <= to && g.decided_at.is_none_or(|t| t > to);
        if unanswered_at_end && deadline <= to && g.effective_state(to, &q.grants.policy()) == GrantState::Pending {
            h.open_overdue += 1;
        }
    }
    h
}

impl Queries {
    /// The yearly report for `year` (CST calendar year), for auditors and
    /// administrators. The current year is reported up to now; a future
    /// year, or one before [`FIRST_YEAR`], is refused.
    pub async fn annual_report(&self, caller: &Caller, year: i32) -> Result<AnnualReport> {
        self.require_oversight(caller)?;
        self.settle_uses().await?;
        let now = self.grants.now();
        let this_year = cst_date(now).year();
        if !(FIRST_YEAR..=this_year).contains(&year) {
            return Err(Error::InvalidValue(format!("year must be from {FIRST_YEAR} to {this_year}")));
        }
        let first_day = day_of_date(Date::from_calendar_date(year, Month::January, 1).map_err(|e| Error::InvalidValue(e.to_string()))?);
        let next_year_day =
            day_of_date(Date::from_calendar_date(year + 1, Month::January, 1).map_err(|e| Error::InvalidValue(e.to_string()))?);
        let complete = day_of(now) >= next_year_day;
        // Days [first_day, end_day) are covered; to is the period's last moment.
        let end_day = if complete { next_year_day } else { day_of(now) + 1 };
        let (from, to) = (day_start(first_day), if complete { day_start(next_year_day) - 1 } else { now });
        let store = self.store.clone();
        let disputes = tokio::task::spawn_blocking(move || crate::gov::all_disputes(&**store.engine())).await??;
        let grants = self.grants.all();
        let store = self.store.clone();
        let pairs = tokio::task::spawn_blocking(move || use_totals(&**store.engine(), first_day, end_day)).await??;
        let engine = &**self.store.engine();

        let mut datasets = Vec::new();
        for ds in self.catalog.datasets() {
            let mut row = self.dataset_year(engine, ds, first_day, end_day)?;
            let mut consumers: Vec<ConsumerUse> = pairs
                .iter()
                .filter(|((_, d), _)| *d == ds.id)
                .map(|((dept, _), c)| ConsumerUse { department: dept.clone(), uses: Uses::from_counts(c) })
                .filter(|c| c.uses != Uses::default())
                .collect();
            consumers.sort_by(|a, b| b.uses.reads().cmp(&a.uses.reads()).then_with(|| a.department.cmp(&b.department)));
            row.consumers = consumers;
            row.grants = grant_handling(grants.iter().filter(|g| g.dataset == ds.id), from, to, self);
            for d in disputes.iter().filter(|d| d.dataset == ds.id) {
                let h = &mut row.disputes;
                h.received += (d.created_at >= from && d.created_at <= to) as usize;
                if d.resolved_at.is_some_and(|t| t >= from && t <= to) {
                    h.answered += 1;
                    if d.resolved_on_time() == Some(true) {
                        h.on_time += 1;
                    } else {
                        h.late += 1;
                    }
                }
                let open_at_end = d.created_at <= to && d.resolved_at.is_none_or(|t| t > to);
                h.open_overdue += (open_at_end && end_of_day(d.due_date()) <= to) as usize;
            }
            datasets.push(row);
        }

        let mut departments = Vec::new();
        for dept in self.directory.all() {
            let id = dept.id.as_str();
            let c = totals(engine, Owner::Department(id), first_day, end_day)?;
            let n = |k: Kind| c.get(&k).copied().unwrap_or(0);
            let view = self.view(&dept)?;
            let status = self.record_status(&view, to);
            let mut row = DepartmentYear {
                department: id.to_owned(),
                name: dept.name.clone(),
                roles: dept.roles.iter().map(|r| r.as_str().to_owned()).collect(),
                purpose_mode: if dept.purposes.is_some() { "strict" } else { "transitional" },
                responsible_record: status.as_str(),
                responsible_as_of: view.responsible_as_of,
                responsible_persons: view.responsible.len(),
                update_requests: n(Kind::Action(Action::Update)),
                uses: Uses::from_counts(&c),
                uses_without_catalogued_purpose: n(Kind::Uncatalogued),
                refused_for_purpose: n(Kind::Refused(Refusal::Purpose)),
                refused_for_class: n(Kind::Refused(Refusal::Class)),
                refused_for_claim_limit: n(Kind::Refused(Refusal::ClaimLimit)),
                ..Default::default()
            };
            row.rejected_lines = n(Kind::Rejected);
            for ds in &datasets {
                // With several providers each counts its own part; grants
                // and disputes are the steward's.
                let own = ds.providers.iter().find(|p| p.provider == id);
                if own.is_none() && ds.provider != id {
                    continue;
                }
                row.datasets_provided.push(ds.dataset.clone());
                row.updates_applied += own.map_or(ds.timeliness.updates_applied, |p| p.timeliness.updates_applied);
                if ds.provider == id {
                    row.grants.add(&ds.grants);
                    row.disputes.add(&ds.disputes);
                }
            }
            departments.push(row);
        }
        let mut all_grants = Handling::default();
        let mut all_disputes = Handling::default();
        for ds in &datasets {
            all_grants.add(&ds.grants);
            all_disputes.add(&ds.disputes);
        }
        Ok(AnnualReport {
            year,
            from,
            to,
            complete,
            calendar_covers_year: self.calendar.covers(year),
            days: (end_day - first_day) as u32,
            departments,
            datasets,
            grants: all_grants,
            disputes: all_disputes,
        })
    }

    /// A dataset's updates, rejected lines and timeliness over days
    /// `[first_day, end_day)`, and with several providers each one's.
    fn dataset_year(&self, engine: &dyn Engine, ds: &Dataset, first_day: i32, end_day: i32) -> Result<DatasetYear> {
        let providers = match ds.division {
            None => Vec::new(),
            Some(_) => ds
                .providers
                .iter()
                .map(|p| {
                    let counted = provider_stats_name(&ds.id, &p.id);
                    let timeliness = self.timeliness(engine, &counted, &ds.update_frequency, first_day, end_day)?;
                    Ok(ProviderYear { provider: p.id.clone(), timeliness })
                })
                .collect::<Result<_>>()?,
        };
        Ok(DatasetYear {
            dataset: ds.id.clone(),
            title: ds.title.clone(),
            provider: ds.provider.clone(),
            update_frequency: ds.update_frequency.to_string(),
            timeliness: self.timeliness(engine, &ds.id, &ds.update_frequency, first_day, end_day)?,
            rejected_lines: daily(engine, Owner::Dataset(&ds.id), Kind::Rejected, first_day, end_day)?.iter().sum(),
            providers,
            consumers: Vec::new(),
            grants: Handling::default(),
            disputes: Handling::default(),
        })
    }

    /// Updates and timeliness of the counters named `counted` (a dataset,
    /// or `dataset@provider`), walked day by day against `freq`.
    fn timeliness(&self, engine: &dyn Engine, counted: &str, freq: &UpdateFrequency, first_day: i32, end_day: i32) -> Result<Timeliness> {
        let before = first_day - LOOK_BACK_DAYS;
        let applied = daily(engine, Owner::Dataset(counted), Kind::Applied, before, end_day)?;
        let mut t = Timeliness::default();
        // The last day with an update, and the date the next one is due by.
        let mut last: Option<(i32, Date)> = None;
        for day in before..end_day {
            let n = applied[(day - before) as usize];
            let in_year = day >= first_day;
            if in_year {
                match last {
                    None => t.days_before_first_update += 1,
                    // Overdue on a day without an update past the due date.
                    Some((_, due)) if n == 0 && date_of_day(day) > due => t.days_overdue += 1,
                    _ => {}
                }
            }
            if n > 0 {
                if in_year {
                    t.updates_applied += n;
                    t.update_days += 1;
                    t.monthly_updates[usize::from(u8::from(date_of_day(day).month())) - 1] += n;
                }
                last = Some((day, next_update_due(&self.calendar, freq, date_of_day(day))));
            } else if let (true, Some((l, _))) = (in_year, last) {
                t.longest_gap_days = t.longest_gap_days.max((day - l) as u32);
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_start_is_cst_midnight() {
        // 2026-01-01T00:00 CST is 2025-12-31T16:00Z.
        let d = day_of_date(Date::from_calendar_date(2026, Month::January, 1).unwrap());
        assert_eq!(day_start(d), 1_767_196_800_000_000);
        assert_eq!(day_of(day_start(d)), d);
        assert_eq!(day_of(day_start(d) - 1), d - 1);
        assert_eq!(date_of_day(d), Date::from_calendar_date(2026, Month::January, 1).unwrap());
    }

    #[test]
    fn a_quarterly_update_is_due_by_the_tenth_working_day_of_the_next_quarter() {
        use time::macros::date;
        let c = basedata_store::calendar::Calendar::builtin();
        let due = |d| next_update_due(&c, &UpdateFrequency::Quarterly, d);
        // Early or late in a quarter, the next is due in the next quarter's
        // first ten working days: 1 Jan 2027 is a holiday, so Fri 15 Jan.
        assert_eq!(due(date!(2026 - 10 - 09)), date!(2027 - 01 - 15));
        assert_eq!(due(date!(2026 - 12 - 08)), date!(2027 - 01 - 15));
        assert_eq!(due(date!(2026 - 12 - 31)), date!(2027 - 01 - 15));
        // Q1 2026 ends on 31 Mar; Qingming (4–6 Apr) is in the next
        // quarter's first ten working days: Wed 15 Apr.
        assert_eq!(due(date!(2026 - 01 - 05)), date!(2026 - 04 - 15));
        // National Day (1–7 Oct), then 8, 9, the worked Sat 10, 12–16 and
        // 19 Oct: Tue 20 Oct.
        assert_eq!(due(date!(2026 - 07 - 01)), date!(2026 - 10 - 20));
        assert_eq!(next_quarter_start(date!(2026 - 06 - 30)), date!(2026 - 07 - 01));
        // Other frequencies count working days from the last update.
        assert_eq!(next_update_due(&c, &UpdateFrequency::WorkingDays(5), date!(2026 - 11 - 16)), date!(2026 - 11 - 23));
        assert_eq!(next_update_due(&c, &UpdateFrequency::Realtime, date!(2026 - 11 - 20)), date!(2026 - 11 - 23));
    }
}
