//! The working-day calendar: Monday–Friday, minus configured public
//! holidays, plus configured make-up working days (调休). The legal
//! deadlines of the sharing measures (a grant answered within 5 working
//! days, a dispute checked within 5) are counted on it. The calendar is
//! data, not code: the built-in file covers the published years and an
//! operator's file replaces it.
//!
//! A year the calendar does not hold still has the holidays the law fixes
//! by date (元旦, 劳动节, 国庆节), so that a deadline running into a year
//! whose arrangement is not configured yet does not count New Year's Day
//! as a working day; its lunar holidays and make-up days are unknown until
//! the year's arrangement is added, which the server warns of.

use crate::value::parse_date;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::Path;
use time::{Date, Duration, Weekday};

#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    #[error("calendar: {0}")]
    Invalid(String),
    #[error("calendar file {path}: {err}")]
    Io { path: String, err: std::io::Error },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    years: Vec<Year>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Year {
    year: i32,
    #[serde(default)]
    #[allow(dead_code)]
    source: Option<String>,
    #[serde(default)]
    holidays: Vec<String>,
    #[serde(default)]
    workdays: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Calendar {
    holidays: BTreeSet<Date>,
    workdays: BTreeSet<Date>,
    years: BTreeSet<i32>,
}

fn expand(entry: &str, year: i32, out: &mut BTreeSet<Date>) -> Result<(), CalendarError> {
    let bad = |why: &str| CalendarError::Invalid(format!("{year}: {entry:?}: {why}"));
    let (a, b) = match entry.split_once("..") {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (entry.trim(), entry.trim()),
    };
    let (a, b) = (parse_date(a).ok_or_else(|| bad("not a date"))?, parse_date(b).ok_or_else(|| bad("not a date"))?);
    if b < a || (b - a).whole_days() > 31 {
        return Err(bad("a range runs forward and spans at most a month"));
    }
    if a.year() != year && b.year() != year {
        return Err(bad("outside its year"));
    }
    let mut d = a;
    while d <= b {
        out.insert(d);
        d = d.next_day().ok_or_else(|| bad("date overflow"))?;
    }
    Ok(())
}

fn is_weekend(d: Date) -> bool {
    matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday)
}

/// The public holidays fixed by date every year (全国年节及纪念日放假办法,
/// Art. 2, as revised in 2024: New Year's Day 1 January, Labour Day 1–2
/// May, National Day 1–3 October). The lunar ones (Spring Festival,
/// Qingming, Dragon Boat, Mid-Autumn) move, and only the year's published
/// arrangement places them.
fn fixed_holiday(d: Date) -> bool {
    use time::Month::{January, May, October};
    matches!((d.month(), d.day()), (January, 1) | (May, 1 | 2) | (October, 1..=3))
}

impl Calendar {
    /// The built-in calendar of published national arrangements.
    pub fn builtin() -> Calendar {
        Calendar::from_toml_str(include_str!("../calendar/default.toml")).expect("built-in calendar is valid")
    }

    pub fn from_toml_str(s: &str) -> Result<Calendar, CalendarError> {
        let f: File = toml::from_str(s).map_err(|e| CalendarError::Invalid(e.message().to_owned()))?;
        let mut c = Calendar::default();
        for y in f.years {
            if !c.years.insert(y.year) {
                return Err(CalendarError::Invalid(format!("year {} appears twice", y.year)));
            }
            for h in &y.holidays {
                expand(h, y.year, &mut c.holidays)?;
            }
            let mut w = BTreeSet::new();
            for d in &y.workdays {
                expand(d, y.year, &mut w)?;
            }
            if let Some(d) = w.iter().find(|d| c.holidays.contains(d)) {
                return Err(CalendarError::Invalid(format!("{d} is both a holiday and a make-up working day")));
            }
            if let Some(d) = w.iter().find(|d| !is_weekend(**d)) {
                return Err(CalendarError::Invalid(format!("{d} is a make-up working day but not a weekend day")));
            }
            c.workdays.extend(w);
        }
        Ok(c)
    }

    pub fn load(path: &Path) -> Result<Calendar, CalendarError> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| CalendarError::Io { path: path.display().to_string(), err })?;
        Calendar::from_toml_str(&text)
    }

    /// Years whose arrangements the calendar holds; outside them only
    /// weekends and the holidays fixed by date are known, which the
    /// freshness report and the server's log point out.
    pub fn covers(&self, year: i32) -> bool {
        self.years.contains(&year)
    }

    /// The last year whose arrangement the calendar holds, if any.
    pub fn last_year(&self) -> Option<i32> {
        self.years.last().copied()
    }

    /// What is missing from the calendar for deadlines counted on `today`:
    /// this year's arrangement, or next year's once the year has less than
    /// `ahead` days left (a deadline of 5 working days, or a report's
    /// quarter, already reaches into it). `None` when nothing is.
    pub fn missing_year(&self, today: Date, ahead: u16) -> Option<i32> {
        if !self.covers(today.year()) {
            return Some(today.year());
        }
        let next = today.year() + 1;
        let left = Date::from_ordinal_date(next, 1).map_or(0, |d| (d - today).whole_days());
        (left <= i64::from(ahead) && !self.covers(next)).then_some(next)
    }

    pub fn is_working_day(&self, d: Date) -> bool {
        if self.workdays.contains(&d) {
            return true;
        }
        if is_weekend(d) {
            return false;
        }
        if self.covers(d.year()) {
            !self.holidays.contains(&d)
        } else {
            !fixed_holiday(d)
        }
    }

    /// The `n`-th working day after `start` (`start` itself not counted):
    /// the deadline of something received on `start` with `n` working days.
    pub fn add_working_days(&self, start: Date, n: u32) -> Date {
        let mut d = start;
        let mut left = n;
        while left > 0 {
            d = d.saturating_add(Duration::DAY);
            if self.is_working_day(d) {
                left -= 1;
            }
        }
        d
    }

    /// Working days in `(a, b]`: how many working days after `a` the day `b` is.
    pub fn working_days_between(&self, a: Date, b: Date) -> u32 {
        let mut n = 0;
        let mut d = a;
        while d < b {
            d = d.saturating_add(Duration::DAY);
            if self.is_working_day(d) {
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn check(c: &Calendar, start: Date, n: u32, due: Date) {
        assert_eq!(c.add_working_days(start, n), due, "{start} + {n}");
        assert_eq!(c.working_days_between(start, due), n, "{start}..{due}");
    }

    #[test]
    fn builtin_deadlines() {
        let c = Calendar::builtin();
        assert!(c.covers(2026) && !c.covers(2030));
        // An ordinary week.
        check(&c, date!(2026 - 11 - 16), 5, date!(2026 - 11 - 23));
        // Across the 2026 Spring Festival: Sat 14 Feb is a make-up working
        // day, 15–23 Feb are holidays.
        check(&c, date!(2026 - 02 - 12), 5, date!(2026 - 02 - 26));
        assert!(c.is_working_day(date!(2026 - 02 - 14)));
        assert!(!c.is_working_day(date!(2026 - 02 - 23)));
        // Across National Day 2026: Sun 20 Sep and Sat 10 Oct are working days.
        check(&c, date!(2026 - 09 - 30), 5, date!(2026 - 10 - 13));
        check(&c, date!(2026 - 09 - 18), 1, date!(2026 - 09 - 20));
        // Across National Day and Mid-Autumn 2025 (1–8 Oct).
        check(&c, date!(2025 - 09 - 29), 5, date!(2025 - 10 - 13));
        assert_eq!(c.add_working_days(date!(2026 - 11 - 20), 0), date!(2026 - 11 - 20));
    }

    #[test]
    fn explicit_calendars() {
        let c = Calendar::from_toml_str(
            "[[years]]\nyear = 2030\nholidays = [\"2030-01-07..2030-01-11\"]\nworkdays = [\"2030-01-12\"]\n",
        )
        .unwrap();
        // Received Fri 4 Jan 2030: the next week is a holiday, Sat 12 is worked.
        check(&c, date!(2030 - 01 - 04), 1, date!(2030 - 01 - 12));
        check(&c, date!(2030 - 01 - 04), 2, date!(2030 - 01 - 14));
        let plain = Calendar::default();
        check(&plain, date!(2030 - 01 - 04), 1, date!(2030 - 01 - 07));
    }

    #[test]
    fn a_year_not_held_still_keeps_the_holidays_fixed_by_date() {
        let c = Calendar::builtin();
        assert_eq!(c.last_year(), Some(2026));
        // Received Wed 30 Dec 2026: Thu 31 is the first working day, Fri 1
        // Jan 2027 is New Year's Day although 2027's arrangement is not held.
        check(&c, date!(2026 - 12 - 30), 2, date!(2027 - 01 - 04));
        assert!(!c.is_working_day(date!(2027 - 01 - 01)));
        for d in [date!(2031 - 05 - 01), date!(2031 - 05 - 02), date!(2031 - 10 - 01), date!(2031 - 10 - 03)] {
            assert!(!c.is_working_day(d), "{d}");
        }
        assert!(c.is_working_day(date!(2031 - 10 - 06)), "a Monday after National Day");
        // A year the calendar holds follows its arrangement only: there,
        // a fixed holiday moved by the arrangement would be a working day.
        let held = Calendar::from_toml_str("[[years]]\nyear = 2030\n").unwrap();
        assert!(held.is_working_day(date!(2030 - 01 - 01)));
    }

    #[test]
    fn the_missing_year_is_named_once_deadlines_reach_it() {
        let c = Calendar::builtin();
        assert_eq!(c.missing_year(date!(2026 - 06 - 01), 45), None);
        assert_eq!(c.missing_year(date!(2026 - 11 - 16), 45), None, "46 days left");
        assert_eq!(c.missing_year(date!(2026 - 11 - 17), 45), Some(2027));
        assert_eq!(c.missing_year(date!(2027 - 03 - 01), 45), Some(2027));
        assert_eq!(Calendar::default().last_year(), None);
        assert_eq!(Calendar::default().missing_year(date!(2026 - 06 - 01), 45), Some(2026));
    }

    #[test]
    fn invalid_calendars() {
        for bad in [
            "[[years]]\nyear = 2030\nholidays = [\"2030-13-01\"]\n",
            "[[years]]\nyear = 2030\nholidays = [\"2030-01-09..2030-01-01\"]\n",
            "[[years]]\nyear = 2030\nholidays = [\"2031-05-01\"]\n",
            "[[years]]\nyear = 2030\nworkdays = [\"2030-01-07\"]\n",
            "[[years]]\nyear = 2030\nholidays = [\"2030-01-12\"]\nworkdays = [\"2030-01-12\"]\n",
            "[[years]]\nyear = 2030\n[[years]]\nyear = 2030\n",
            "[[years]]\nyear = 2030\nextra = 1\n",
        ] {
            assert!(Calendar::from_toml_str(bad).is_err(), "{bad}");
        }
    }
}
