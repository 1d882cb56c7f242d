//! What only some engines can do, as traits of their own that
//! [`Engine`](super::Engine) hands out through defaulted accessors
//! (`sst_ingest`, `checkpoint`, `stats`): bulk loads, backups and metrics
//! ask for the capability they need, and an engine that lacks it answers
//! `None` instead of being downcast to a concrete type.

use super::Cf;
use crate::Result;
use std::path::{Path, PathBuf};

/// SST files written beside the engine and added to it whole, so that a
/// bulk load bypasses the write path (memtables, write-ahead log and the
/// compactions that would follow).
pub trait SstIngest: Send + Sync {
    /// Starts an SST file of family `cf` at `path`. It is written with the
    /// family's own table options (format, block size, compression, filters,
    /// prefix extractor), so that reads, prefix blooms included, work on it
    /// as on files the engine wrote itself. Keys must be put in ascending
    /// order.
    fn sst_writer(&self, cf: Cf, path: &Path) -> Result<Box<dyn SstWriter + '_>>;

    /// Adds finished files to family `cf` atomically: all of their entries
    /// become visible at once, over older values of the same keys. With
    /// `move_files` the engine takes the files over (links them into its
    /// own directory and removes the given paths) instead of copying them.
    fn ingest(&self, cf: Cf, files: &[PathBuf], move_files: bool) -> Result<()>;
}

/// One SST file being written (see [`SstIngest::sst_writer`]).
pub trait SstWriter {
    /// Appends an entry; keys ascend strictly.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()>;

    /// Bytes written so far, for cutting a series of files at a size.
    fn file_size(&self) -> u64;

    /// Completes the file and syncs it to disk.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Consistent on-disk copies of a live store, which backups are made from
/// while the store keeps serving.
pub trait Checkpoint: Send + Sync {
    /// The directory the engine keeps its files in (the data directory).
    /// A checkpoint made inside it stays on its file system, where the
    /// copy can share the immutable files by hard links.
    fn dir(&self) -> &Path;

    /// Writes a copy of the store into `to`, which must not exist yet: the
    /// state a crash at this instant would leave, so every synced write is
    /// in it and every write batch whole or absent. The copy opens as a
    /// store of its own.
    fn create_checkpoint(&self, to: &Path) -> Result<()>;
}

/// Figures of one column family, read at scrape time for metrics. Each is
/// What an engine's write-ahead journal has done since the store opened
/// (see `engine::journal`): how many records its group commits took per
/// write and sync, and what it holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Records appended (one a write batch).
    pub records: u64,
    /// Group writes (one `pwrite` each, and a sync unless all were unsynced).
    pub writes: u64,
    /// `fdatasync`s of those writes.
    pub syncs: u64,
    /// Bytes written.
    pub bytes: u64,
    /// The most records one group write took.
    pub largest_group: u64,
    /// Records replayed at open (written before a crash, not yet in tables).
    pub replayed: u64,
    /// Segment files held: the one appended to and those not yet released.
    pub segments: u64,
    /// The longest group write and sync, in microseconds, and those over
    /// [`SLOW_SYNC`]: every writer of the group waited that long, so set
    /// beside the commit writer's slow commits they tell a stalling disk
    /// from anything else.
    pub longest_sync_us: u64,
    pub slow_syncs: u64,
    /// Releases of segments that failed (a segment that could not be
    /// removed): the journal then grows until one succeeds.
    pub failed_releases: u64,
}

/// A journal group write and sync slower than this is counted as slow
/// (`JournalStats::slow_syncs`), as the commit writer counts its commits.
pub const SLOW_SYNC: std::time::Duration = std::time::Duration::from_millis(10);

impl JournalStats {
    /// Every figure, named, in a fixed order.
    pub fn figures(&self) -> [(&'static str, u64); 10] {
        [
            ("records", self.records),
            ("writes", self.writes),
            ("syncs", self.syncs),
            ("bytes", self.bytes),
            ("largest_group", self.largest_group),
            ("replayed", self.replayed),
            ("segments", self.segments),
            ("longest_sync_us", self.longest_sync_us),
            ("slow_syncs", self.slow_syncs),
            ("failed_releases", self.failed_releases),
        ]
    }

    /// Counts a group write and sync that took `took`.
    pub fn note_sync(&mut self, took: std::time::Duration) {
        self.longest_sync_us = self.longest_sync_us.max(took.as_micros() as u64);
        if took > SLOW_SYNC {
            self.slow_syncs += 1;
        }
    }
}

/// `None` where the engine does not keep it (the memory engine keeps none).
/// Cache figures are those of the cache the family shares with the others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Estimated number of keys (deleted and overwritten ones may count
    /// until compaction drops them).
    pub estimated_keys: Option<u64>,
    /// Bytes of all table files, including ones only an open reader or
    /// snapshot still holds.
    pub total_sst_bytes: Option<u64>,
    /// Bytes of the table files of the current version.
    pub live_sst_bytes: Option<u64>,
    /// Bytes held by memtables, flushed or not.
    pub memtable_bytes: Option<u64>,
    /// Bytes compaction estimates it still has to rewrite.
    pub pending_compaction_bytes: Option<u64>,
    pub running_compactions: Option<u64>,
    pub running_flushes: Option<u64>,
    /// Table files in level 0, which every read may have to look into.
    pub l0_files: Option<u64>,
    /// Bytes in the block cache.
    pub block_cache_bytes: Option<u64>,
    /// Of them, bytes pinned (in use or held in the cache for good).
    pub block_cache_pinned_bytes: Option<u64>,
}

impl EngineStats {
    /// Every figure, named, in a fixed order.
    pub fn figures(&self) -> [(&'static str, Option<u64>); 10] {
        [
            ("estimated_keys", self.estimated_keys),
            ("total_sst_bytes", self.total_sst_bytes),
            ("live_sst_bytes", self.live_sst_bytes),
            ("memtable_bytes", self.memtable_bytes),
            ("pending_compaction_bytes", self.pending_compaction_bytes),
            ("running_compactions", self.running_compactions),
            ("running_flushes", self.running_flushes),
            ("l0_files", self.l0_files),
            ("block_cache_bytes", self.block_cache_bytes),
            ("block_cache_pinned_bytes", self.block_cache_pinned_bytes),
        ]
    }
}
