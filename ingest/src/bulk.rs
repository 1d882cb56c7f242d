//! Loading updates through the ordinary write path in large unsynced
//! batches with one sync at the end: for data sets built in process (the
//! demo). Whole files go through `sst` instead.

use basedata_store::{Durability, Outcome, Store, Update};

/// Updates per engine write: large enough to amortize the write, small
/// enough to keep memory flat.
pub const LOAD_BATCH: usize = 20_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadSummary {
    pub lines: u64,
    pub applied: u64,
    pub stale: u64,
    pub rejected: u64,
}

impl LoadSummary {
    fn count(&mut self, outcomes: &[Outcome]) {
        for o in outcomes {
            match o {
                Outcome::Applied { .. } => self.applied += 1,
                Outcome::Stale { .. } => self.stale += 1,
                Outcome::Refused { .. } => self.rejected += 1,
            }
        }
    }
}

/// Accumulates updates and applies them in batches.
pub struct BatchLoader<'a> {
    store: &'a Store,
    pending: Vec<Update>,
    pub summary: LoadSummary,
}

impl<'a> BatchLoader<'a> {
    pub fn new(store: &'a Store) -> Self {
        BatchLoader { store, pending: Vec::with_capacity(LOAD_BATCH), summary: LoadSummary::default() }
    }

    pub fn push(&mut self, u: Update) -> basedata_store::Result<()> {
        self.pending.push(u);
        if self.pending.len() >= LOAD_BATCH {
            self.drain()?;
        }
        Ok(())
    }

    fn drain(&mut self) -> basedata_store::Result<()> {
        if !self.pending.is_empty() {
            let out = self.store.apply(&self.pending, Durability::Buffered)?;
            self.summary.count(&out);
            self.pending.clear();
        }
        Ok(())
    }

    /// Applies what is pending and makes everything loaded durable.
    pub fn finish(mut self) -> basedata_store::Result<LoadSummary> {
        self.drain()?;
        self.store.engine().flush()?;
        Ok(self.summary)
    }
}
