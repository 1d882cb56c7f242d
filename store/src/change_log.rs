//! The change log's retention: its head, the changes committed before a
//! cut-off, removed in one range deletion, and the mark of how far it was
//! cut, so that a subscriber resuming before it is told what it missed
//! instead of silently skipping it.
//!
//! Only the change feed reads the log. Records and their history (what a
//! record said at any past moment) are kept apart and are never cut here;
//! sequence numbers come from `meta` (`last_seq`), and the newest change is
//! always kept, so a store opened after a cut numbers on where it left off.

use crate::codec::decode;
use crate::engine::{position_value, Cf, Durability, WriteBatch};
use crate::record::{seq_from_key, seq_key, ChangeEntry, META_CHANGES_CUT};
use crate::store::Store;
use crate::Result;
use std::sync::atomic::Ordering;

/// What one cut removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChangesCut {
    /// Sequence numbers removed (changes, unless the log had gaps).
    pub removed: u64,
    /// The log now starts after this number.
    pub kept_after: u64,
}

impl Store {
    /// The log holds no change numbered at or below this (0: nothing was
    /// ever removed); a feed read after an earlier number would miss some.
    pub fn changes_kept_after(&self) -> u64 {
        self.changes_cut.load(Ordering::Acquire)
    }

    /// Removes the changes committed before `before` (Unix microseconds),
    /// except the newest change, in one synced range deletion together
    /// with the new mark, then gives their disk space back. A store whose
    /// oldest change is newer changes nothing.
    pub fn changes_prune(&self, before: i64) -> Result<ChangesCut> {
        let _one = self.changes_cutting.lock().unwrap_or_else(|e| e.into_inner());
        let kept_after = self.changes_kept_after();
        // Changes past `last_seq` belong to a bulk load not yet finished:
        // never touched.
        let last = self.last_seq();
        let cut = self.last_committed_before(kept_after, last, before)?;
        if cut <= kept_after {
            return Ok(ChangesCut { removed: 0, kept_after });
        }
        let (start, end) = (seq_key(kept_after + 1), seq_key(cut + 1));
        let mut b = WriteBatch::new();
        b.delete_range(Cf::Changes, start, end);
        b.put(Cf::Meta, META_CHANGES_CUT, position_value(cut));
        // Raised before the deletion, so that a feed reading meanwhile and
        // checking the mark after its read never misses the removal. (A
        // deletion that then fails, on a full disk, puts it back: feeds
        // refused meanwhile were told of a gap that is not there, and
        // resume later than they needed to, never earlier.)
        self.changes_cut.store(cut, Ordering::Release);
        if let Err(e) = self.engine().write(b, Durability::Sync) {
            self.changes_cut.store(kept_after, Ordering::Release);
            return Err(e);
        }
        // The cut is made and durable; space not given back now (or at
        // shutdown) is given back by the engine's own compactions later.
        if !self.maintenance_stopped() {
            if let Err(e) = self.engine().reclaim(Cf::Changes, &seq_key(0), &end) {
                tracing::warn!(error = %e, "the change log's removed head was not compacted yet");
            }
        }
        Ok(ChangesCut { removed: cut - kept_after, kept_after: cut })
    }

    /// The largest sequence number in `(after, last)` whose change was
    /// committed before `before`, or `after` if there is none. Commit
    /// times never decrease along the log (each commit takes the later of
    /// the clock and the last commit's time), so a binary search over the
    /// numbers finds it with a few dozen seeks, wherever the log has gaps.
    fn last_committed_before(&self, after: u64, last: u64, before: i64) -> Result<u64> {
        let end = seq_key(last);
        // The commit time of the first change numbered `x` or later, below
        // `last`; `None` when there is none.
        let first_from = |x: u64| -> Result<Option<(u64, i64)>> {
            match self.engine().scan(Cf::Changes, &seq_key(x), Some(&end), false)?.next() {
                None => Ok(None),
                Some(item) => {
                    let (k, v) = item?;
                    Ok(Some((seq_from_key(&k)?, decode::<ChangeEntry>("change", &v)?.committed_at)))
                }
            }
        };
        // Invariant: every change below `lo` is older than `before`, and
        // `lo - 1` is `after` or such a change; the first change from `hi`
        // on is not (or there is none below `last`).
        let (mut lo, mut hi) = (after + 1, last.max(after + 1));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match first_from(mid)? {
                Some((seq, at)) if at < before => lo = seq + 1,
                _ => hi = mid,
            }
        }
        Ok(lo - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::engine::mem::MemEngine;
    use crate::keys::{PersonKey, SubjectKey};
    use crate::store::UpdateOp;
    use crate::{Catalog, Secret, Update, Value};
    use std::sync::Arc;

    const DAY: i64 = 86_400 * 1_000_000;

    fn store(engine: Arc<dyn crate::Engine>, clock: Arc<ManualClock>) -> Store {
        Store::open(engine, &Secret::from_bytes([7; 32]), Arc::new(Catalog::builtin()), clock).unwrap()
    }

    fn update(i: u64) -> Update {
        let d = time::Date::from_calendar_date(1979, time::Month::March, 3).unwrap();
        let key = SubjectKey::Person(PersonKey::from_parts("110105", d, i as u16).unwrap());
        Update {
            provider: None,
            link: None,
            dataset: "hukou".into(),
            key,
            version: 1,
            op: UpdateOp::Upsert(vec![("name".into(), Value::Str(format!("name {i}")))]),
        }
    }

    /// Commits `n` changes, one per call, `step` microseconds apart.
    fn commit(s: &Store, clock: &ManualClock, from: u64, n: u64, step: i64) {
        for i in from..from + n {
            s.apply(&[update(i)], Durability::Sync).unwrap();
            clock.advance(step);
        }
    }

    #[test]
    fn a_cut_removes_exactly_the_changes_before_it_keeps_the_newest_and_is_remembered() {
        let engine: Arc<dyn crate::Engine> = Arc::new(MemEngine::new());
        let clock = Arc::new(ManualClock::new(100 * DAY));
        let s = store(engine.clone(), clock.clone());
        assert_eq!(s.changes_prune(100 * DAY).unwrap(), ChangesCut { removed: 0, kept_after: 0 }, "an empty log");
        // Changes 1..=40 a day apart at 100..140 days; 41..=50 at 140 days, within one day.
        commit(&s, &clock, 0, 40, DAY);
        commit(&s, &clock, 40, 10, 1);
        assert_eq!(s.last_seq(), 50);
        // Before day 120: changes 1..=20 (committed at days 100..=119).
        let cut = s.changes_prune(120 * DAY).unwrap();
        assert_eq!(cut, ChangesCut { removed: 20, kept_after: 20 });
        assert_eq!(s.changes_kept_after(), 20);
        assert_eq!(s.changes(0, 100).unwrap().first().map(|c| c.seq), Some(21));
        assert_eq!(s.changes(0, 100).unwrap().len(), 30);
        // The same cut-off again removes nothing more.
        assert_eq!(s.changes_prune(120 * DAY).unwrap(), ChangesCut { removed: 0, kept_after: 20 });
        // A cut-off after every change keeps the newest.
        let cut = s.changes_prune(1000 * DAY).unwrap();
        assert_eq!(cut, ChangesCut { removed: 29, kept_after: 49 });
        assert_eq!(s.changes(0, 100).unwrap().iter().map(|c| c.seq).collect::<Vec<_>>(), [50]);
        drop(s);
        // Reopened: the mark, the numbering and the commit times go on.
        let s = store(engine, clock.clone());
        assert_eq!((s.changes_kept_after(), s.last_seq()), (49, 50));
        commit(&s, &clock, 50, 1, 1);
        assert_eq!(s.changes(49, 10).unwrap().iter().map(|c| c.seq).collect::<Vec<_>>(), [50, 51]);
    }

    #[test]
    fn the_search_steps_over_gaps_and_stops_at_changes_a_bulk_load_has_not_finished() {
        let engine: Arc<dyn crate::Engine> = Arc::new(MemEngine::new());
        let clock = Arc::new(ManualClock::new(100 * DAY));
        let s = store(engine.clone(), clock.clone());
        commit(&s, &clock, 0, 30, DAY);
        // Gaps: changes 5..=9, 14 and 29 gone (as an earlier cut's range,
        // or numbers never used, would leave them).
        let mut b = WriteBatch::new();
        b.delete_range(Cf::Changes, seq_key(5), seq_key(10));
        b.delete(Cf::Changes, seq_key(14).to_vec());
        b.delete(Cf::Changes, seq_key(29).to_vec());
        // An old change past `last_seq`, as an unfinished load leaves.
        let stray = crate::codec::encode(&ChangeEntry { committed_at: 0, ..decode::<ChangeEntry>("change", &engine.get(Cf::Changes, &seq_key(1)).unwrap().unwrap()).unwrap() });
        b.put(Cf::Changes, seq_key(31).to_vec(), stray);
        engine.write(b, Durability::Sync).unwrap();
        for (before_day, kept_after) in [(101, 1), (106, 4), (110, 10), (115, 15), (114, 15), (200, 28)] {
            let cut = s.changes_prune(before_day * DAY).unwrap();
            assert_eq!(cut.kept_after, kept_after, "before day {before_day}");
        }
        assert!(engine.get(Cf::Changes, &seq_key(30)).unwrap().is_some(), "the newest change stays");
        assert!(engine.get(Cf::Changes, &seq_key(31)).unwrap().is_some(), "past last_seq: untouched");
    }
}
