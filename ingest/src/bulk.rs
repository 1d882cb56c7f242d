//! Streaming load of an NDJSON update file through the ordinary write
//! path, in large unsynced batches with one sync at the end. Used by the
//! demo and by `basedata load`.

use crate::line::{parse_line, LineError};
use basedata_store::catalog::Dataset;
use basedata_store::{Durability, Outcome, Store, Update};
use std::io::BufRead;

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

/// Loads every line of `input` into `dataset`; rejected lines (1-based line
/// numbers) go to `on_reject` and do not stop the load.
pub fn load_ndjson(
    store: &Store,
    dataset: &Dataset,
    input: impl BufRead,
    mut on_reject: impl FnMut(u64, &LineError),
    mut on_progress: impl FnMut(u64),
) -> basedata_store::Result<LoadSummary> {
    let mut loader = BatchLoader::new(store);
    let mut rejected = 0;
    let mut lines = 0u64;
    for (i, line) in input.split(b'\n').enumerate() {
        let line = line?;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        lines += 1;
        match parse_line(dataset, line) {
            Ok(u) => loader.push(u)?,
            Err(e) => {
                rejected += 1;
                on_reject(i as u64 + 1, &e);
            }
        }
        if lines % 100_000 == 0 {
            on_progress(lines);
        }
    }
    let mut summary = loader.finish()?;
    summary.lines = lines;
    summary.rejected = rejected;
    on_progress(lines);
    Ok(summary)
}
