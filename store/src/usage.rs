//! Usage counters for the sharing report (评估与年度报告): per department and
//! per dataset, per day, per kind of use, maintained on the write path in
//! the same atomic batch as the audit entries and changes they count, so
//! reports are index reads and never drift from the audit trail.
//!
//! Days are calendar days in China Standard Time (UTC+8), the time zone of
//! the measures' deadlines and of the yearly report.
//!
//! Layout (`gov` family): `u/d/<department>\0<day:i32 BE><kind:u8>` and
//! `u/s/<dataset>\0<day><kind>` -> u64 BE.

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
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Applied => 0,
            Kind::Action(a) => 1 + a as u8,
            Kind::Uncatalogued => UNCATALOGUED,
        }
    }

    fn from_code(c: u8) -> Option<Kind> {
        match c {
            0 => return Some(Kind::Applied),
            UNCATALOGUED => return Some(Kind::Uncatalogued),
            _ => {}
        }
        Action::ALL.into_iter().find(|a| 1 + *a as u8 == c).map(Kind::Action)
    }
}

/// Whose counter: a department or a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner<'a> {
    Department(&'a str),
    Dataset(&'a str),
}

fn prefix(owner: Owner<'_>) -> Vec<u8> {
    let (tag, name) = match owner {
        Owner::Department(n) => (b"u/d/", n),
        Owner::Dataset(n) => (b"u/s/", n),
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

/// Sums of `owner`'s counters over days `[from_day, to_day)`.
pub fn totals(engine: &dyn Engine, owner: Owner<'_>, from_day: i32, to_day: i32) -> Result<HashMap<Kind, u64>> {
    let p = prefix(owner);
    let mut start = p.clone();
    start.extend_from_slice(&from_day.to_be_bytes());
    let mut end = p.clone();
    end.extend_from_slice(&to_day.to_be_bytes());
    let mut out = HashMap::new();
    if to_day <= from_day {
        return Ok(out);
    }
    // Day numbers are non-negative for any real date, so big-endian order
    // is numeric order.
    let end = if to_day < 0 { prefix_end(&p).unwrap_or(end) } else { end };
    for item in engine.scan(Cf::Gov, &start, Some(&end), false)? {
        let (k, v) = item?;
        let Some(kind) = k.last().copied().and_then(Kind::from_code) else { continue };
        let n = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
        *out.entry(kind).or_default() += n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_cst() {
        // 2026-11-22T15:59:59Z is 23:59:59 CST; one second later is the next day.
        let t = 1_795_363_199_000_000; // 2026-11-22T15:59:59Z
        assert_eq!(day_of(t) + 1, day_of(t + 1_000_000));
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(-CST_OFFSET_MICROS - 1), -1);
    }

    #[test]
    fn kind_codes_round_trip() {
        for k in [Kind::Applied, Kind::Action(Action::Lookup), Kind::Action(Action::Dispute), Kind::Uncatalogued] {
            assert_eq!(Kind::from_code(k.code()), Some(k));
        }
    }
}
