//! The store's write-ahead journal: every write batch of a RocksDB store is
//! appended here and made durable here before it reaches RocksDB, which
//! keeps no log of its own.
//!
//! Writers from any thread append records; whichever of them first needs
//! its record on disk leads: it takes every record appended meanwhile,
//! writes them with one `pwrite` and one `fdatasync`, and wakes the others
//! (group commit on the callers' own threads). Records are numbered densely
//! from 1 (`lsn`) across segment files; a record is whole or absent after a
//! crash, and a group is acknowledged only once every file it wrote is
//! synced.
//!
//! Layout: `DIR/NNNNNNNNNNNNNNNN.jnl`, segments numbered in the order
//! written, each opening with a header (magic, its own number, the first
//! record number it holds) and then whole records: `len: u32`, `lsn: u64`,
//! `check: u64` (xxh3 of the payload, seeded with the lsn), payload; all
//! little-endian. The top bit of `len` marks a record of audited uses
//! ([`Kind::Uses`]) rather than a write batch, the next bit a record that
//! cancels an earlier batch ([`Kind::Cancel`]); the kind is part of the
//! check's seed. `spare-N.jnl` are files ready to become the next segment.
//! Segments are made full-length in advance when asked (`prefill`), or
//! recycled once released, so that a synced append overwrites allocated
//! blocks and `fdatasync` need not also write the file's size or extents
//! (a second, serial device write per sync). Otherwise they are extended
//! a megabyte ahead of their records. Either way a record is numbered only
//! once its bytes are allocated, so a full disk refuses an append rather
//! than failing a write of records already numbered.
//!
//! Reading a segment stops at the first record that is incomplete, fails
//! its check or does not carry the next number: what follows was never
//! acknowledged, or is an older segment's content in a recycled file (its
//! header carries another number, or its records lower ones). A segment
//! whose header starts after the next expected number ends the journal:
//! it and any later segment belong to a group that was never acknowledged,
//! and are removed. A session never appends to a segment it found at open
//! (after a crash, new records written over a torn one could end at a
//! boundary of the records that followed it), so each open starts a new one.

use super::JournalStats;
use crate::{Error, Result};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use xxhash_rust::xxh3::xxh3_64_with_seed;

const MAGIC: &[u8; 8] = b"BDJRNL01";
/// Segment header: magic, segment number, first lsn, check of the three.
const HEADER: usize = 32;
/// Record header: length, lsn, check.
const RECORD: usize = 20;
/// The largest record payload: a write batch of the store is a few
/// megabytes at most (a group of the committer, a bulk chunk). The length
/// field's two top bits are the kind's.
pub const MAX_RECORD: usize = (1 << 30) - 1;
const SPARE: &str = "spare-";
/// Spares kept: released segments beyond these are deleted.
const SPARES: usize = 2;
/// Bytes a segment keeps allocated after any record but a cancel: room
/// for the cancels of the batches that may be in flight.
const CANCEL_ROOM: u64 = 64 * (RECORD as u64 + 16);
/// Unwritten appends beyond this are written out (not synced) by the
/// appender, so that a run of unsynced writes (a bulk load) does not hold
/// them all in memory.
const WRITE_BEHIND: usize = 4 << 20;

/// What a record holds: the store's kinds of journal record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A write batch of the engine, applied to the tables after it.
    Batch,
    /// Audited uses, durable here before their answers leave and entered
    /// into the audit trail's chain and indexes behind (`commit`).
    Uses,
    /// The number and check of a batch, synced here, that the tables then
    /// refused (a full disk): its writer was told it failed, so it is never
    /// replayed. Written by [`Journal::cancel`]; never handed to `replay`.
    /// The check keeps a cancel from matching another batch that reused
    /// the number (one written after a torn tail, by a later session).
    Cancel,
}

/// The bit of a record's length field that marks [`Kind::Uses`].
const USES_BIT: u32 = 1 << 31;
/// The bit of a record's length field that marks [`Kind::Cancel`].
const CANCEL_BIT: u32 = 1 << 30;

impl Kind {
    fn seed(self, lsn: u64) -> u64 {
        match self {
            Kind::Batch => lsn,
            Kind::Uses => lsn ^ (1 << 63),
            Kind::Cancel => lsn ^ (1 << 62),
        }
    }

    fn bit(self) -> u32 {
        match self {
            Kind::Batch => 0,
            Kind::Uses => USES_BIT,
            Kind::Cancel => CANCEL_BIT,
        }
    }
}

/// How a journal lays out its segments.
#[derive(Clone, Copy, Debug)]
pub struct JournalOptions {
    /// Length of a segment; a record longer than that gets a segment of
    /// its own.
    pub segment_bytes: u64,
    /// Make each new segment full-length (zero-filled) before it is used,
    /// and keep released segments as spares instead of deleting them.
    pub prefill: bool,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions { segment_bytes: 64 << 20, prefill: false }
    }
}

/// A segment no longer appended to, kept until its records are released.
#[derive(Debug)]
struct Closed {
    path: PathBuf,
    /// Its last record's number; 0 when it holds none.
    last: u64,
}

/// Records appended and not yet written, in order; `roll` starts a new
/// segment before its bytes.
struct Piece {
    roll: bool,
    first: u64,
    last: u64,
    bytes: Vec<u8>,
}

/// The segment being appended to: the leader's while it writes.
struct Out {
    file: File,
    path: PathBuf,
    number: u64,
    /// Where the next bytes go.
    offset: u64,
    /// The last record written to it (0: none).
    last: u64,
}

struct State {
    next_lsn: u64,
    /// Every record up to this is written (perhaps not yet synced).
    written: u64,
    /// Every record up to this is synced.
    durable: u64,
    pending: Vec<Piece>,
    pending_bytes: usize,
    /// Bytes the current segment holds once `pending` is written.
    tail: u64,
    /// The spares assigned to the rolls appended and not yet written, in
    /// order: each roll's file is there before its first record is
    /// numbered.
    assigned: std::collections::VecDeque<PathBuf>,
    /// The segment `tail` is in: a handle to grow its allocation, and the
    /// bytes allocated in it. A record is numbered only once the bytes it
    /// will take are allocated, so that writing it cannot meet a full
    /// disk. `u64::MAX` where the file system cannot allocate ahead.
    tail_file: Option<File>,
    reserved: u64,
    leader: bool,
    failed: Option<String>,
    out: Option<Out>,
    closed: Vec<Closed>,
    stats: JournalStats,
}

pub struct Journal {
    dir: PathBuf,
    opts: JournalOptions,
    state: Mutex<State>,
    done: Condvar,
    /// Files ready to become segments (prefilled ones only), and the
    /// number the next one made gets.
    spares: Mutex<(Vec<PathBuf>, u64)>,
    /// Held by a release from taking its segments to the last removal:
    /// two releases at once (the keeper's flush and another caller's)
    /// could otherwise remove a newer segment before an older one, and a
    /// crash between would leave a gap that refuses the next open.
    releasing: Mutex<()>,
    #[cfg(test)]
    refuse_space: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("dir", &self.dir).finish()
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::engine(format!("journal: {what} {}: {e}", path.display()))
}

fn segment_name(number: u64) -> String {
    format!("{number:016}.jnl")
}

fn header(number: u64, first: u64) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&number.to_le_bytes());
    h[16..24].copy_from_slice(&first.to_le_bytes());
    let check = xxh3_64_with_seed(&h[..24], 0);
    h[24..].copy_from_slice(&check.to_le_bytes());
    h
}

/// The first record number of a segment whose header is valid and names it.
fn read_header(bytes: &[u8], number: u64) -> Option<u64> {
    let h = bytes.get(..HEADER)?;
    let n = u64::from_le_bytes(h[8..16].try_into().ok()?);
    let check = u64::from_le_bytes(h[24..32].try_into().ok()?);
    (&h[..8] == MAGIC && n == number && check == xxh3_64_with_seed(&h[..24], 0))
        .then(|| u64::from_le_bytes(h[16..24].try_into().unwrap_or_default()))
}

/// Frames a record onto `out`; returns its check.
fn frame(out: &mut Vec<u8>, lsn: u64, kind: Kind, payload: &[u8]) -> u64 {
    let check = xxh3_64_with_seed(payload, kind.seed(lsn));
    out.extend_from_slice(&(payload.len() as u32 | kind.bit()).to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&check.to_le_bytes());
    out.extend_from_slice(payload);
    check
}

/// A record header's payload length, kind, number and check (`None`
/// for both kind bits, which no record has).
fn record_head(h: &[u8]) -> Option<(usize, Kind, u64, u64)> {
    let h = h.get(..RECORD)?;
    let len = u32::from_le_bytes(h[..4].try_into().ok()?);
    let kind = match (len & USES_BIT != 0, len & CANCEL_BIT != 0) {
        (false, false) => Kind::Batch,
        (true, false) => Kind::Uses,
        (false, true) => Kind::Cancel,
        (true, true) => return None,
    };
    let lsn = u64::from_le_bytes(h[4..12].try_into().ok()?);
    let check = u64::from_le_bytes(h[12..20].try_into().ok()?);
    Some(((len & !(USES_BIT | CANCEL_BIT)) as usize, kind, lsn, check))
}

/// The first record number of segment file `path` (number `number`), if
/// its header is valid; reads the header alone.
fn first_of(path: &Path, number: u64) -> Result<Option<u64>> {
    let file = File::open(path).map_err(|e| io_err("opening", path, e))?;
    let mut h = [0u8; HEADER];
    match file.read_exact_at(&mut h, 0) {
        Ok(()) => Ok(read_header(&h, number)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(io_err("reading", path, e)),
    }
}

/// Reads a segment's records in order from the file, up to the first
/// that is not whole, fails its check or is not the next number: a
/// prefilled segment is read only as far as it was written.
struct Records {
    file: std::io::BufReader<File>,
    path: PathBuf,
    /// Bytes of the file after what was read.
    left: u64,
    buf: Vec<u8>,
}

impl Records {
    fn open(path: &Path) -> Result<Records> {
        use std::io::{Seek, SeekFrom};
        let mut file = File::open(path).map_err(|e| io_err("opening", path, e))?;
        let len = file.metadata().map_err(|e| io_err("reading", path, e))?.len();
        file.seek(SeekFrom::Start(HEADER as u64)).map_err(|e| io_err("reading", path, e))?;
        Ok(Records { file: std::io::BufReader::with_capacity(1 << 16, file), path: path.to_path_buf(), left: len.saturating_sub(HEADER as u64), buf: Vec::new() })
    }

    /// Makes what was read durable (a file already on disk costs one
    /// device flush).
    fn sync(&self) -> Result<()> {
        self.file.get_ref().sync_data().map_err(|e| io_err("syncing", &self.path, e))
    }

    /// The header of record `lsn` (its payload's length, kind and check),
    /// read and counted off the bytes left, or `None` where the records
    /// end: too few bytes, another number, or a length past the file.
    fn head(&mut self, lsn: u64) -> Result<Option<(usize, Kind, u64)>> {
        use std::io::Read;
        if self.left < RECORD as u64 {
            return Ok(None);
        }
        let mut head = [0u8; RECORD];
        self.file.read_exact(&mut head).map_err(|e| io_err("reading", &self.path, e))?;
        let Some((len, kind, got, check)) = record_head(&head) else { return Ok(None) };
        if len == 0 || got != lsn || len as u64 > self.left - RECORD as u64 {
            return Ok(None);
        }
        self.left -= (RECORD + len) as u64;
        Ok(Some((len, kind, check)))
    }

    /// Reads a payload of `len` bytes into the buffer; whether it checks.
    fn payload(&mut self, len: usize, kind: Kind, lsn: u64, check: u64) -> Result<bool> {
        use std::io::Read;
        self.buf.resize(len, 0);
        self.file.read_exact(&mut self.buf).map_err(|e| io_err("reading", &self.path, e))?;
        Ok(xxh3_64_with_seed(&self.buf, kind.seed(lsn)) == check)
    }

    /// Record `lsn`'s kind, check and payload, or `None` where the records
    /// end.
    fn next(&mut self, lsn: u64) -> Result<Option<(Kind, u64, &[u8])>> {
        let Some((len, kind, check)) = self.head(lsn)? else { return Ok(None) };
        Ok(self.payload(len, kind, lsn, check)?.then_some((kind, check, &self.buf[..])))
    }

    /// Like [`Records::next`], but reads only records that cancel a batch
    /// (returning the batch's number and check); others are stepped over
    /// unread, so their checks are not verified. Honouring a cancel found
    /// past the end [`Records::next`] would find is harmless: the batch it
    /// names (by number and check) was never acknowledged.
    fn skim(&mut self, lsn: u64) -> Result<Option<Option<(u64, u64)>>> {
        let Some((len, kind, check)) = self.head(lsn)? else { return Ok(None) };
        if kind != Kind::Cancel {
            self.file.seek_relative(len as i64).map_err(|e| io_err("reading", &self.path, e))?;
            return Ok(Some(None));
        }
        if !self.payload(len, kind, lsn, check)? {
            return Ok(None);
        }
        let target = <[u8; 16]>::try_from(&self.buf[..]).ok().map(|b| {
            let (n, c) = b.split_at(8);
            (u64::from_le_bytes(n.try_into().unwrap_or_default()), u64::from_le_bytes(c.try_into().unwrap_or_default()))
        });
        Ok(target.map(Some))
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err("syncing", dir, e))
}

/// Makes `file` (whose length is `from`) at least `to` bytes long with
/// its blocks allocated (`fallocate`; they read as zeros, which end a
/// segment's records as a prefilled segment's do), so that writing them
/// cannot meet a full disk. Returns the length now, or `u64::MAX` where
/// the file system cannot allocate.
fn allocate(file: &File, from: u64, to: u64) -> std::io::Result<u64> {
    if to <= from {
        return Ok(from);
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), from, to - from) {
        Ok(()) => Ok(to),
        Err(rustix::io::Errno::OPNOTSUPP) => Ok(u64::MAX),
        Err(e) => Err(e.into()),
    }
}

/// The length of `file`.
fn length(file: &File) -> std::io::Result<u64> {
    file.metadata().map(|m| m.len())
}

/// Writes `len` zero bytes from `from` and syncs them, so the blocks are
/// allocated and later appends change no metadata.
fn zero_fill(file: &File, from: u64, len: u64, path: &Path) -> Result<()> {
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK];
    let mut at = from;
    let end = from + len;
    while at < end {
        let n = (end - at).min(CHUNK as u64) as usize;
        file.write_all_at(&zeros[..n], at).map_err(|e| io_err("filling", path, e))?;
        at += n as u64;
    }
    file.sync_all().map_err(|e| io_err("syncing", path, e))
}

impl Journal {
    /// Opens the journal in `dir` (made if missing) and hands `replay`
    /// every write batch numbered after `applied`, in order. `applied` is
    /// the last record the caller's durable state already holds. Returns
    /// the journal, with a new segment to append to, and how many records
    /// were replayed.
    pub fn open(
        dir: &Path,
        opts: JournalOptions,
        applied: u64,
        mut replay: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<(Journal, u64)> {
        Self::open_from(dir, opts, applied, applied, |lsn, kind, p| match kind {
            Kind::Batch => replay(lsn, p),
            Kind::Uses | Kind::Cancel => Ok(()),
        })
    }

    /// [`Journal::open`] that hands `replay` every record of uses and every
    /// batch not cancelled numbered after `from` (at most `applied`) that
    /// the segments still hold: records of uses not yet indexed may lie
    /// before `applied`. Only records missing after `applied` are an error.
    pub fn open_from(
        dir: &Path,
        opts: JournalOptions,
        applied: u64,
        from: u64,
        mut replay: impl FnMut(u64, Kind, &[u8]) -> Result<()>,
    ) -> Result<(Journal, u64)> {
        let from = from.min(applied);
        std::fs::create_dir_all(dir).map_err(|e| io_err("creating", dir, e))?;
        let mut segments: Vec<(u64, PathBuf)> = Vec::new();
        let mut spares = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io_err("listing", dir, e))? {
            let entry = entry.map_err(|e| io_err("listing", dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name.strip_prefix(SPARE).and_then(|n| n.strip_suffix(".jnl")).and_then(|n| n.parse::<u64>().ok()) {
                spares.push((n, entry.path()));
            } else if name.starts_with(SPARE) {
                // A spare whose filling a crash cut short.
                std::fs::remove_file(entry.path()).map_err(|e| io_err("removing", &entry.path(), e))?;
            } else if let Some(n) = name.strip_suffix(".jnl").and_then(|n| n.parse::<u64>().ok()) {
                segments.push((n, entry.path()));
            }
        }
        segments.sort();
        let mut expected: Option<u64> = None;
        let mut replayed = 0u64;
        let mut closed = Vec::new();
        let mut ended = false;
        let mut previous: Option<u64> = None;
        let firsts = segments.iter().map(|(n, p)| first_of(p, *n)).collect::<Result<Vec<_>>>()?;
        // A segment whose successor starts at or before `from + 1` holds
        // only records the caller's state has: its records need not be
        // read (after a clean close, none are).
        let passed_over = |i: usize| {
            let (number, first) = (segments[i].0, firsts[i]?);
            let next_first = segments.get(i + 1).filter(|(n, _)| *n == number + 1).and_then(|_| firsts[i + 1]);
            next_first.filter(|&nf| nf >= first && nf <= from + 1)
        };
        // A cancel follows the batch it cancels, perhaps segments later:
        // they are all known before the first batch is replayed.
        let mut cancelled = std::collections::HashSet::new();
        let mut reached: Option<u64> = None;
        for (i, (_, path)) in segments.iter().enumerate() {
            let Some(first) = firsts[i] else { continue };
            if reached.is_some_and(|e| first > e.max(applied + 1)) {
                // After a gap: removed below, cancels and all.
                break;
            }
            if let Some(nf) = passed_over(i) {
                reached = Some(nf);
                continue;
            }
            let mut records = Records::open(path)?;
            let mut lsn = first;
            while let Some(target) = records.skim(lsn)? {
                cancelled.extend(target);
                lsn += 1;
            }
            reached = Some(lsn);
        }
        for (i, (number, path)) in segments.iter().enumerate() {
            if ended {
                std::fs::remove_file(path).map_err(|e| io_err("removing", path, e))?;
                continue;
            }
            // Segments are made in number order and released oldest
            // first, so a number skipped between two is a file lost.
            if previous.is_some_and(|p| p + 1 != *number) {
                return Err(Error::Corrupt {
                    what: "journal",
                    msg: format!("segment {} is missing", segment_name(number - 1)),
                });
            }
            previous = Some(*number);
            let Some(first) = firsts[i] else {
                // Never written (a crash before its header) or another
                // segment's old content: no records.
                closed.push(Closed { path: path.clone(), last: 0 });
                continue;
            };
            match expected {
                None if first > applied + 1 => {
                    return Err(Error::Corrupt {
                        what: "journal",
                        msg: format!("records {} to {} are missing (segment {})", applied + 1, first - 1, path.display()),
                    });
                }
                // Records before `applied + 1` that the journal lacks are
                // in the caller's state (unsynced appends it persisted).
                Some(e) if first > e.max(applied + 1) => {
                    // Records after a gap were never acknowledged. This
                    // segment goes: the next one made takes its number.
                    ended = true;
                    previous = Some(number - 1);
                    std::fs::remove_file(path).map_err(|e| io_err("removing", path, e))?;
                    continue;
                }
                Some(e) if first < e => {
                    return Err(Error::Corrupt {
                        what: "journal",
                        msg: format!("segment {} starts at record {first}, before {e}", path.display()),
                    });
                }
                _ => {}
            }
            if let Some(nf) = passed_over(i) {
                expected = Some(nf);
                closed.push(Closed { path: path.clone(), last: nf - 1 });
                continue;
            }
            let mut records = Records::open(path)?;
            let mut lsn = first;
            while let Some((kind, check, payload)) = records.next(lsn)? {
                let live = match kind {
                    Kind::Batch => !cancelled.contains(&(lsn, check)),
                    Kind::Uses => true,
                    Kind::Cancel => false,
                };
                if lsn > from && live {
                    replay(lsn, kind, payload)?;
                    replayed += u64::from(lsn > applied && kind == Kind::Batch);
                }
                lsn += 1;
            }
            // After a crash of the process alone, the records just read may
            // be in the page cache only (appended, never synced). This
            // session numbers on after them and builds on them; were they
            // lost to a power cut later, the next open would find a gap
            // before the new segments and drop those, acknowledged writes
            // and all. So they are made durable before anything follows.
            records.sync()?;
            expected = Some(lsn);
            closed.push(Closed { path: path.clone(), last: lsn - 1 });
        }
        let next_lsn = expected.unwrap_or(1).max(applied + 1);
        // After the last segment kept (later ones were removed above).
        let number = previous.map_or(1, |n| n + 1);
        let journal = Journal {
            dir: dir.to_path_buf(),
            opts,
            state: Mutex::new(State {
                next_lsn,
                written: next_lsn - 1,
                durable: next_lsn - 1,
                pending: Vec::new(),
                pending_bytes: 0,
                tail: HEADER as u64,
                assigned: Default::default(),
                tail_file: None,
                reserved: 0,
                leader: false,
                failed: None,
                out: None,
                closed,
                stats: JournalStats { replayed, ..Default::default() },
            }),
            done: Condvar::new(),
            spares: Mutex::new((Vec::new(), 0)),
            releasing: Mutex::new(()),
            #[cfg(test)]
            refuse_space: Default::default(),
        };
        spares.sort();
        journal.spares().1 = spares.last().map_or(0, |(n, _)| *n);
        for (i, (_, path)) in spares.into_iter().enumerate() {
            if opts.prefill && i < SPARES && journal.full_length(&path) {
                journal.spares().0.push(path);
            } else {
                std::fs::remove_file(&path).map_err(|e| io_err("removing", &path, e))?;
            }
        }
        let out = journal.new_segment(number, next_lsn, None)?;
        {
            let mut st = journal.lock();
            let file = out.file.try_clone().map_err(|e| io_err("opening", &out.path, e))?;
            let have = length(&file).map_err(|e| io_err("reading", &out.path, e))?;
            // On a full disk the journal still opens: appends are then
            // refused one by one until space is freed.
            st.reserved = allocate(&file, have, journal.step()).unwrap_or(have);
            st.tail_file = Some(file);
            st.out = Some(out);
        }
        while journal.wants_spare() {
            journal.make_spare()?;
        }
        Ok((journal, replayed))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spares(&self) -> MutexGuard<'_, (Vec<PathBuf>, u64)> {
        self.spares.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes segment `number`, whose records start at `first`, from the
    /// spare `assigned` to its roll, or else from any spare, with its header
    /// written and synced. Without one (at open: a roll always has one
    /// assigned) it is a new file, zero-filled first when prefilling.
    fn new_segment(&self, number: u64, first: u64, assigned: Option<PathBuf>) -> Result<Out> {
        let path = self.dir.join(segment_name(number));
        let spare = assigned.or_else(|| self.spares().0.pop());
        let file = match spare {
            Some(s) => {
                std::fs::rename(&s, &path).map_err(|e| io_err("renaming", &s, e))?;
                OpenOptions::new().read(true).write(true).open(&path).map_err(|e| io_err("opening", &path, e))?
            }
            None => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| io_err("creating", &path, e))?;
                if self.opts.prefill {
                    zero_fill(&file, 0, self.opts.segment_bytes, &path)?;
                }
                file
            }
        };
        file.write_all_at(&header(number, first), 0).map_err(|e| io_err("writing", &path, e))?;
        file.sync_data().map_err(|e| io_err("syncing", &path, e))?;
        sync_dir(&self.dir)?;
        Ok(Out { file, path, number, offset: HEADER as u64, last: 0 })
    }

    /// Whether segments are prefilled and no spare is ready for the next
    /// roll: [`Journal::make_spare`] then makes one, off the write path.
    pub fn wants_spare(&self) -> bool {
        self.opts.prefill && self.spares().0.len() < SPARES
    }

    /// A name for a new spare (`spares` is the spares' lock, held).
    fn spare_path(&self, spares: &mut (Vec<PathBuf>, u64)) -> PathBuf {
        spares.1 += 1;
        self.dir.join(format!("{SPARE}{}.jnl", spares.1))
    }

    /// Makes a zero-filled spare segment.
    pub fn make_spare(&self) -> Result<()> {
        self.spare_made_by(|file, path| zero_fill(file, 0, self.opts.segment_bytes, path))
    }

    /// Makes a spare whose contents `fill` writes or allocates, under a
    /// temporary name until it is whole; on a failure (a full disk) the
    /// part made is given back.
    fn spare_made_by(&self, fill: impl FnOnce(&File, &Path) -> Result<()>) -> Result<()> {
        let done = self.spare_path(&mut self.spares());
        let path = done.with_extension("jnl.tmp");
        let file = File::create(&path).map_err(|e| io_err("creating", &path, e))?;
        if let Err(e) = fill(&file, &path) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        std::fs::rename(&path, &done).map_err(|e| io_err("renaming", &path, e))?;
        self.spares().0.push(done);
        Ok(())
    }

    /// Whether `path` is as long as a segment: a spare or segment a session
    /// without prefilling left shorter is no spare for a prefilled one.
    fn full_length(&self, path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|m| m.len() >= self.opts.segment_bytes)
    }

    /// How far ahead a segment's allocation grows: a megabyte, or the
    /// segment when smaller.
    fn step(&self) -> u64 {
        self.opts.segment_bytes.clamp(HEADER as u64 + RECORD as u64, 1 << 20)
    }

    /// Makes a spare at once for a roll that finds too few ready: its
    /// blocks allocated (`fallocate`) rather than written, so that it is
    /// quick; zero-filled where the file system cannot allocate. Without
    /// prefilling, the spare is empty with a first step allocated.
    fn make_spare_now(&self) -> Result<()> {
        self.space_refused()?;
        let prefill = self.opts.prefill;
        let to = if prefill { self.opts.segment_bytes } else { self.step() };
        self.spare_made_by(|file, path| match allocate(file, 0, to).map_err(|e| io_err("allocating", path, e))? {
            u64::MAX if prefill => zero_fill(file, 0, to, path),
            _ if prefill => file.sync_all().map_err(|e| io_err("syncing", path, e)),
            _ => Ok(()),
        })
    }

    /// Tests: spares made at a roll and allocations ahead of the tail
    /// fail as on a full disk while `on`.
    #[cfg(test)]
    pub(crate) fn refuse_space(&self, on: bool) {
        self.refuse_space.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Tests: the failure [`Journal::refuse_space`] asks for.
    fn space_refused(&self) -> Result<()> {
        #[cfg(test)]
        if self.refuse_space.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::engine("journal: allocating: No space left on device (os error 28)".to_owned()));
        }
        Ok(())
    }

    /// Keeps `path` (a released segment) as a spare if segments are
    /// prefilled and fewer than [`SPARES`] are ready, or deletes it.
    fn keep_or_delete(&self, path: PathBuf) -> Result<()> {
        let mut sp = self.spares();
        if self.opts.prefill && sp.0.len() < SPARES && self.full_length(&path) {
            let to = self.spare_path(&mut sp);
            std::fs::rename(&path, &to).map_err(|e| io_err("renaming", &path, e))?;
            sp.0.push(to);
            Ok(())
        } else {
            drop(sp);
            match std::fs::remove_file(&path) {
                // Removed by a release that failed after it (its directory
                // not synced): gone is what was asked.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                r => r.map_err(|e| io_err("removing", &path, e)),
            }
        }
    }

    /// Appends a record; returns its number. It is on disk once
    /// [`Journal::sync_to`] of that number returns.
    pub fn append(&self, payload: &[u8]) -> Result<u64> {
        self.append_then(Kind::Batch, payload, |_| ())
    }

    /// [`Journal::append`] that also returns the record's check, which a
    /// [`Journal::cancel`] of it names.
    pub fn append_checked(&self, payload: &[u8]) -> Result<(u64, u64)> {
        self.append_record(Kind::Batch, payload, |_| ())
    }

    /// Appends a record of `kind` and runs `then` with its number before
    /// any later record is numbered: what `then` queues is in journal
    /// order.
    pub fn append_then(&self, kind: Kind, payload: &[u8], then: impl FnOnce(u64)) -> Result<u64> {
        self.append_record(kind, payload, then).map(|(lsn, _)| lsn)
    }

    /// [`Journal::append_then`], returning the record's number and check.
    fn append_record(&self, kind: Kind, payload: &[u8], then: impl FnOnce(u64)) -> Result<(u64, u64)> {
        if payload.is_empty() || payload.len() > MAX_RECORD {
            return Err(Error::Invalid(format!("a journal record of {} bytes", payload.len())));
        }
        let len = (RECORD + payload.len()) as u64;
        // A cancel may take the last spare and the last allocated bytes;
        // other records leave both, so that a batch refused on a full disk
        // can always be cancelled (room for a few dozen in flight).
        let keep = usize::from(kind != Kind::Cancel);
        // Only within the segment: a cancel past its end rolls onto the
        // spare kept for it.
        let room = |end: u64| if kind == Kind::Cancel { 0 } else { CANCEL_ROOM.min(self.opts.segment_bytes.saturating_sub(end)) };
        let (lsn, check, behind) = loop {
            let mut st = self.lock();
            if let Some(why) = &st.failed {
                return Err(Error::engine(format!("journal: {why}")));
            }
            let roll = st.tail > HEADER as u64 && st.tail + len > self.opts.segment_bytes;
            // A record is numbered only where it can be written, so that a
            // full disk refuses the append now, before anything is numbered,
            // instead of failing the journal when it is written. A roll goes
            // onto a spare, made here if too few are ready (not under the
            // lock: appends go on meanwhile); the bytes of the segment the
            // record lands in are allocated first.
            if roll {
                if self.spares().0.len() <= keep {
                    drop(st);
                    self.make_spare_now()?;
                    continue;
                }
                let Some(spare) = self.spares().0.pop() else { continue };
                let ready = OpenOptions::new().read(true).write(true).open(&spare).and_then(|f| {
                    let have = length(&f)?;
                    let end = HEADER as u64 + len;
                    allocate(&f, have, end + room(end)).map(|to| (f, to))
                });
                match ready {
                    Ok((file, to)) => {
                        st.assigned.push_back(spare);
                        st.tail_file = Some(file);
                        st.reserved = to;
                        st.tail = HEADER as u64;
                    }
                    Err(e) => {
                        // The roll was not appended: the spare stays one.
                        self.spares().0.push(spare.clone());
                        return Err(io_err("allocating", &spare, e));
                    }
                }
            } else {
                let need = st.tail + len + room(st.tail + len);
                if need > st.reserved {
                    self.space_refused()?;
                    if let Some(f) = &st.tail_file {
                        // A step ahead, but not past the segment's length
                        // for records that end inside it.
                        let to = need.max(st.reserved.saturating_add(self.step()).min(self.opts.segment_bytes));
                        st.reserved = allocate(f, st.reserved, to).map_err(|e| io_err("allocating the tail segment in", &self.dir, e))?;
                    }
                }
            }
            let end = st.tail + len;
            let lsn = st.next_lsn;
            st.next_lsn += 1;
            st.tail = end;
            let check = match st.pending.last_mut() {
                Some(p) if !roll => {
                    p.last = lsn;
                    frame(&mut p.bytes, lsn, kind, payload)
                }
                _ => {
                    let mut bytes = Vec::with_capacity(len as usize);
                    let check = frame(&mut bytes, lsn, kind, payload);
                    st.pending.push(Piece { roll, first: lsn, last: lsn, bytes });
                    check
                }
            };
            st.pending_bytes += len as usize;
            st.stats.records += 1;
            then(lsn);
            break (lsn, check, st.pending_bytes > WRITE_BEHIND);
        };
        if behind {
            self.advance(lsn, false)?;
        }
        Ok((lsn, check))
    }

    /// Returns once every record up to `lsn` is synced: by writing and
    /// syncing what is pending itself, or by waiting for the thread that
    /// does.
    pub fn sync_to(&self, lsn: u64) -> Result<()> {
        self.advance(lsn, true)
    }

    /// Appends and syncs a record cancelling batch `lsn` (whose record's
    /// check is `check`), which was synced but which the caller's state
    /// then refused: no reopen replays it, so the state stays as the
    /// batch's failure left it. `then` runs with the cancel's own number,
    /// as in [`Journal::append_then`]. Returns once the cancel is durable;
    /// an error leaves the batch live.
    pub fn cancel(&self, lsn: u64, check: u64, then: impl FnOnce(u64)) -> Result<()> {
        let mut names = [0u8; 16];
        names[..8].copy_from_slice(&lsn.to_le_bytes());
        names[8..].copy_from_slice(&check.to_le_bytes());
        let at = self.append_then(Kind::Cancel, &names, then)?;
        self.sync_to(at)
    }

    /// Syncs every record appended so far.
    pub fn sync_all(&self) -> Result<()> {
        let last = self.lock().next_lsn - 1;
        self.advance(last, true)
    }

    /// The number of the last record appended.
    pub fn last_lsn(&self) -> u64 {
        self.lock().next_lsn - 1
    }

    /// Runs `f` with the number of the last record appended, no record
    /// being appended meanwhile (so no [`Journal::append_then`]'s `then`).
    pub fn with_last<R>(&self, f: impl FnOnce(u64) -> R) -> R {
        let st = self.lock();
        f(st.next_lsn - 1)
    }

    /// The number up to which every record is synced.
    pub fn durable_lsn(&self) -> u64 {
        self.lock().durable
    }

    /// Refuses every later append and sync: the caller's state no longer
    /// matches the journal (a record synced here failed to apply).
    pub fn fail(&self, why: &str) {
        let mut st = self.lock();
        st.failed.get_or_insert_with(|| why.to_owned());
        self.done.notify_all();
    }

    pub fn failed(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    fn advance(&self, lsn: u64, sync: bool) -> Result<()> {
        let mut st = self.lock();
        loop {
            if let Some(why) = &st.failed {
                return Err(Error::engine(format!("journal: {why}")));
            }
            if st.durable >= lsn || (!sync && st.written >= lsn) {
                return Ok(());
            }
            if st.leader {
                st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.leader = true;
            let pieces = std::mem::take(&mut st.pending);
            let bytes = std::mem::take(&mut st.pending_bytes) as u64;
            let upto = st.next_lsn - 1;
            let group = upto - st.written;
            let Some(mut out) = st.out.take() else {
                st.leader = false;
                return Err(Error::engine("journal: no segment to write".to_owned()));
            };
            drop(st);
            let started = std::time::Instant::now();
            let result = self.write_out(&mut out, pieces, sync);
            let took = started.elapsed();
            st = self.lock();
            st.out = Some(out);
            st.leader = false;
            match result {
                Ok(closed) => {
                    st.written = upto;
                    if sync {
                        st.durable = upto;
                        st.stats.syncs += 1;
                        st.stats.note_sync(took);
                    }
                    st.stats.writes += u64::from(group > 0);
                    st.stats.bytes += bytes;
                    st.stats.largest_group = st.stats.largest_group.max(group);
                    st.closed.extend(closed);
                }
                Err(e) => {
                    st.failed.get_or_insert_with(|| e.to_string());
                }
            }
            self.done.notify_all();
        }
    }

    /// Writes `pieces` in order, starting new segments where they roll;
    /// a segment left behind is synced first. Returns those segments.
    fn write_out(&self, out: &mut Out, pieces: Vec<Piece>, sync: bool) -> Result<Vec<Closed>> {
        let mut closed = Vec::new();
        for p in pieces {
            if p.roll {
                out.file.sync_data().map_err(|e| io_err("syncing", &out.path, e))?;
                let assigned = self.lock().assigned.pop_front();
                let next = self.new_segment(out.number + 1, p.first, assigned)?;
                let old = std::mem::replace(out, next);
                closed.push(Closed { path: old.path, last: old.last });
            }
            out.file.write_all_at(&p.bytes, out.offset).map_err(|e| io_err("writing", &out.path, e))?;
            out.offset += p.bytes.len() as u64;
            out.last = p.last;
        }
        if sync {
            out.file.sync_data().map_err(|e| io_err("syncing", &out.path, e))?;
        }
        Ok(closed)
    }

    /// Segments no longer appended to and not yet released.
    pub fn closed_segments(&self) -> usize {
        self.lock().closed.len()
    }

    pub fn stats(&self) -> JournalStats {
        let st = self.lock();
        JournalStats { segments: st.closed.len() as u64 + 1, ..st.stats }
    }

    /// Removes the segments whose records are all numbered `lsn` or lower
    /// (the caller's durable state holds them), keeping some as spares
    /// when segments are prefilled.
    pub fn release_through(&self, lsn: u64) -> Result<()> {
        let _one = self.releasing.lock().unwrap_or_else(|e| e.into_inner());
        let released: Vec<Closed> = {
            let mut st = self.lock();
            let keep = st.closed.iter().position(|c| c.last > lsn).unwrap_or(st.closed.len());
            st.closed.drain(..keep).collect()
        };
        let mut left = released.into_iter();
        while let Some(c) = left.next() {
            // One at a time, oldest first: on a file system that may
            // persist directory changes out of order (ext4 without its
            // journal), a crash could otherwise keep a newer released
            // segment but not an older one, and the gap refuses the open.
            if let Err(e) = self.keep_or_delete(c.path.clone()).and_then(|()| sync_dir(&self.dir)) {
                // The segments not surely gone go back, oldest first, so
                // that no later release removes a newer one before them.
                let mut st = self.lock();
                let back: Vec<Closed> = std::iter::once(c).chain(left).collect();
                st.closed.splice(..0, back);
                st.stats.failed_releases += 1;
                return Err(e);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
