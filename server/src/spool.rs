//! A first-in, first-out buffer of answer bytes that never makes its
//! writer wait: held in memory up to a bound, beyond it appended to an
//! unnamed file in the spill directory and read back in order.
//!
//! Why: a batch comparison answers while its request body is still
//! arriving. A client that sends its whole body before it reads (most HTTP
//! libraries do) leaves the answers unread; if they backed up into the
//! comparison, the server would stop reading the body and both sides would
//! wait for ever. With the spool in between, the server always keeps
//! reading, and memory stays bounded whatever the body's length.
//!
//! Answers hold normalized keys, and the store promises that clear keys
//! rest on disk only sealed. So every record in the file is sealed
//! (ChaCha20-Poly1305) with a key made for this one spool and held only in
//! memory: the file is unreadable once the request ends, and it has no
//! name, so it vanishes with the process whatever happens.
//!
//! The spill directory is the server's (`spill_dir`, by default inside the
//! data directory), not the system's temporary directory: on Debian that
//! is a tmpfs, where "spilled" answers would sit in memory after all. A
//! new file is begun only while its filesystem keeps a reserve free
//! ([`SPILL_FREE_RESERVE`]), so that answers nobody reads can never take
//! the space the store's own writes need.

use axum::body::Bytes;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use tokio::sync::Notify;

/// Bytes an answer spool holds in memory before it spills to a file.
pub const SPOOL_MEMORY: usize = 8 << 20;
/// Size at which a spill file is closed for writing and a new one begun,
/// so that files read out are given back while the answer goes on.
const SEGMENT: u64 = 64 << 20;
/// Most unread bytes on disk: past it the answer is abandoned (a client
/// that never reads would otherwise fill the disk for as long as it sends).
/// About thirty million answer lines.
pub const SPOOL_DISK_MAX: u64 = 4 << 30;
/// Most unread bytes on disk for all answers of the server together: many
/// clients that send and never read would otherwise each spill up to
/// [`SPOOL_DISK_MAX`]. Past it, the answer that would spill more is
/// abandoned as one over its own bound is.
pub const SPOOL_DISK_ALL: u64 = 16 << 30;

/// Free space a spill file must leave on its filesystem when it is begun:
/// this share of the filesystem's size, and at least [`SPILL_FREE_MIN`].
pub const SPILL_FREE_RESERVE_PERCENT: u64 = 5;
/// The least free space a spill file leaves when it is begun.
pub const SPILL_FREE_MIN: u64 = 1 << 30;

/// Unread spilled bytes shared by several spools, their bound, and where
/// their files go.
#[derive(Debug)]
pub struct SpillBudget {
    used: std::sync::atomic::AtomicU64,
    max: u64,
    /// Spill files open now: each may still grow to a whole segment, which
    /// the free space seen when the next one is begun does not show yet.
    files: std::sync::atomic::AtomicU64,
    /// Set once, when the server starts; until then (unit tests, tools)
    /// the system's temporary directory.
    dir: OnceLock<PathBuf>,
}

impl SpillBudget {
    pub const fn new(max: u64) -> SpillBudget {
        SpillBudget { used: std::sync::atomic::AtomicU64::new(0), max, files: std::sync::atomic::AtomicU64::new(0), dir: OnceLock::new() }
    }

    /// Spill files go to `dir` from now on: created if missing (readable
    /// by the server's user only) and tried with one file, so that a
    /// directory the server cannot use stops the start, not a batch.
    pub fn place_in(&self, dir: &Path) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        tempfile::tempfile_in(dir)?;
        if let Some(held) = self.dir.get() {
            return if held == dir {
                Ok(())
            } else {
                Err(io::Error::other(format!("spill files already go to {}", held.display())))
            };
        }
        let _ = self.dir.set(dir.to_path_buf());
        Ok(())
    }

    /// Where spill files go now.
    pub fn dir(&self) -> PathBuf {
        self.dir.get().cloned().unwrap_or_else(std::env::temp_dir)
    }

    /// Takes `n` bytes if they fit.
    fn take(&self, n: u64) -> bool {
        use std::sync::atomic::Ordering::AcqRel;
        self.used.fetch_update(AcqRel, std::sync::atomic::Ordering::Acquire, |u| u.checked_add(n).filter(|&t| t <= self.max)).is_ok()
    }

    fn give(&self, n: u64) {
        self.used.fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
    }

    /// Bytes taken now.
    pub fn used(&self) -> u64 {
        self.used.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// The server's: every answer's spool draws on it.
pub static SPILL_BUDGET: SpillBudget = SpillBudget::new(SPOOL_DISK_ALL);

#[derive(Debug)]
pub struct Spool {
    state: Mutex<State>,
    /// Wakes the reader; one stored permit is enough for one reader.
    ready: Notify,
    memory: usize,
    disk_max: u64,
    budget: &'static SpillBudget,
}

#[derive(Debug, Default)]
struct State {
    mem: VecDeque<Bytes>,
    mem_bytes: usize,
    /// Spill files, oldest first. Once one is in use, everything goes to
    /// the last until all are read out, so that the order is kept; each is
    /// dropped (and, having no name, gone) once read out.
    files: VecDeque<SpillFile>,
    /// Unread bytes in the files.
    on_disk: u64,
    /// The writer has no more.
    closed: bool,
    /// The reader is gone: further writes are refused.
    abandoned: bool,
    /// A spill failed (disk full and the like).
    failed: Option<io::ErrorKind>,
    /// Most unread bytes the files ever held, for the log.
    peak_spilled: u64,
}

struct SpillFile {
    file: File,
    /// Counts this file among the open ones until it is dropped.
    budget: &'static SpillBudget,
    key: LessSafeKey,
    write_at: u64,
    read_at: u64,
    /// Records sealed and opened so far: the nonce of each.
    sealed: u64,
    opened: u64,
}

impl std::fmt::Debug for SpillFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillFile").field("write_at", &self.write_at).field("read_at", &self.read_at).finish()
    }
}

fn nonce(n: u64) -> Nonce {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_be_bytes());
    Nonce::assume_unique_for_key(b)
}

/// Refuses a new spill file in `dir` unless its filesystem would keep the
/// reserve free after the file's whole segment is written.
fn leaves_reserve(dir: &Path, open_files: u64) -> io::Result<()> {
    let st = rustix::fs::statvfs(dir).map_err(io::Error::from)?;
    let (size, free) = (st.f_blocks.saturating_mul(st.f_frsize), st.f_bavail.saturating_mul(st.f_frsize));
    // Every open file may still grow to a whole segment.
    let free = free.saturating_sub(open_files.saturating_mul(SEGMENT));
    room_to_spill(size, free).map_err(|reserve| {
        io::Error::new(
            io::ErrorKind::StorageFull,
            format!("{} has {free} bytes free beside the open spill files, and spilled answers leave {reserve} free", dir.display()),
        )
    })
}

/// Whether a filesystem of `size` bytes with `free` available takes one
/// more spill segment and keeps its reserve; else the reserve.
fn room_to_spill(size: u64, free: u64) -> Result<(), u64> {
    let reserve = (size / 100 * SPILL_FREE_RESERVE_PERCENT).max(SPILL_FREE_MIN);
    if free < SEGMENT.saturating_add(reserve) {
        return Err(reserve);
    }
    Ok(())
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        self.budget.files.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl SpillFile {
    /// A new file in the budget's directory, counted among its open files.
    fn create(budget: &'static SpillBudget) -> io::Result<SpillFile> {
        use std::sync::atomic::Ordering::AcqRel;
        let dir = budget.dir();
        // Counted first, so that spools beginning files at once each see
        // the others' room taken.
        let others = budget.files.fetch_add(1, AcqRel);
        let made = leaves_reserve(&dir, others).and_then(|()| {
            let mut k = [0u8; 32];
            getrandom::fill(&mut k).map_err(|e| io::Error::other(format!("no OS randomness: {e}")))?;
            let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &k).expect("a 32-byte key"));
            // Unnamed (`O_TMPFILE`): nothing to clean up after a crash.
            Ok((tempfile::tempfile_in(&dir)?, key))
        });
        match made {
            Ok((file, key)) => Ok(SpillFile { file, budget, key, write_at: 0, read_at: 0, sealed: 0, opened: 0 }),
            Err(e) => {
                budget.files.fetch_sub(1, AcqRel);
                Err(e)
            }
        }
    }

    /// `length (u32 LE) ‖ ciphertext ‖ tag`.
    fn append(&mut self, plain: &[u8]) -> io::Result<()> {
        let mut record = Vec::with_capacity(4 + plain.len() + CHACHA20_POLY1305.tag_len());
        record.extend_from_slice(&[0; 4]);
        record.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(self.sealed), Aad::empty(), &mut record[4..])
            .map_err(|_| io::Error::other("cannot seal a spilled answer"))?;
        record.extend_from_slice(tag.as_ref());
        let len = u32::try_from(record.len() - 4).map_err(|_| io::Error::other("answer piece over 4 GiB"))?;
        record[..4].copy_from_slice(&len.to_le_bytes());
        self.file.write_all_at(&record, self.write_at)?;
        self.write_at += record.len() as u64;
        self.sealed += 1;
        Ok(())
    }

    /// The next record, or `None` when all written ones are read.
    fn next(&mut self) -> io::Result<Option<Bytes>> {
        if self.read_at >= self.write_at {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        self.file.read_exact_at(&mut len, self.read_at)?;
        let len = u32::from_le_bytes(len) as usize;
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, self.read_at + 4)?;
        let plain = self
            .key
            .open_in_place(nonce(self.opened), Aad::empty(), &mut buf)
            .map_err(|_| io::Error::other("a spilled answer does not open"))?
            .len();
        buf.truncate(plain);
        self.read_at += 4 + len as u64;
        self.opened += 1;
        Ok(Some(Bytes::from(buf)))
    }
}

impl State {
    /// Appends to the last file (a new one when there is none or it is
    /// full); the unread bytes now on disk.
    fn spill(&mut self, bytes: &[u8], disk_max: u64, budget: &'static SpillBudget) -> io::Result<u64> {
        if self.on_disk + bytes.len() as u64 > disk_max {
            return Err(io::Error::new(io::ErrorKind::StorageFull, format!("over {disk_max} bytes of answers unread")));
        }
        // The record's framing and tag on top of the bytes.
        let record = (bytes.len() + 4 + CHACHA20_POLY1305.tag_len()) as u64;
        if !budget.take(record) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("the server holds over {} bytes of unread answers on disk", budget.max),
            ));
        }
        if self.files.back().is_none_or(|f| f.write_at >= SEGMENT) {
            match SpillFile::create(budget) {
                Ok(f) => self.files.push_back(f),
                Err(e) => {
                    budget.give(record);
                    return Err(e);
                }
            }
        }
        let f = self.files.back_mut().expect("made above");
        let before = f.write_at;
        if let Err(e) = f.append(bytes) {
            budget.give(record);
            return Err(e);
        }
        debug_assert_eq!(f.write_at - before, record);
        self.on_disk += record;
        Ok(self.on_disk)
    }

    /// The next record of the files, dropping each once read out.
    fn unspill(&mut self, budget: &SpillBudget) -> io::Result<Option<Bytes>> {
        while let Some(f) = self.files.front_mut() {
            let before = f.read_at;
            if let Some(b) = f.next()? {
                self.on_disk -= f.read_at - before;
                budget.give(f.read_at - before);
                return Ok(Some(b));
            }
            // Read out; the last one is also dropped, so that what comes
            // next goes to memory again.
            self.files.pop_front();
        }
        Ok(None)
    }
}

impl Spool {
    /// A spool holding up to `memory` bytes in memory.
    pub fn new(memory: usize, disk_max: u64) -> Spool {
        Spool::with_budget(memory, disk_max, &SPILL_BUDGET)
    }

    /// [`Spool::new`], its spilled bytes drawn on `budget`.
    pub fn with_budget(memory: usize, disk_max: u64, budget: &'static SpillBudget) -> Spool {
        Spool { state: Mutex::new(State::default()), ready: Notify::new(), memory, disk_max, budget }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds bytes at the end; never waits for the reader. Fails once the
    /// reader is gone or a spill failed.
    pub fn push(&self, bytes: Vec<u8>) -> io::Result<()> {
        let mut s = self.lock();
        if s.abandoned {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if let Some(kind) = s.failed {
            return Err(kind.into());
        }
        if s.files.is_empty() && s.mem_bytes + bytes.len() <= self.memory {
            s.mem_bytes += bytes.len();
            s.mem.push_back(Bytes::from(bytes));
        } else {
            // Page-cache writes: short enough to make under the lock and
            // on this thread.
            match s.spill(&bytes, self.disk_max, self.budget) {
                Ok(held) => s.peak_spilled = s.peak_spilled.max(held),
                Err(e) => {
                    s.failed = Some(e.kind());
                    drop(s);
                    self.ready.notify_one();
                    return Err(e);
                }
            }
        }
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// The writer has no more.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// The reader is gone; later pushes fail, so the writer stops.
    pub fn abandon(&self) {
        let mut s = self.lock();
        s.abandoned = true;
        s.mem.clear();
        s.files.clear();
        self.budget.give(std::mem::take(&mut s.on_disk));
    }

    /// Most bytes ever spilled to the file at once.
    pub fn peak_spilled(&self) -> u64 {
        self.lock().peak_spilled
    }

    /// The next bytes in order; `None` once the writer closed and all is
    /// read.
    pub async fn pop(&self) -> Option<io::Result<Bytes>> {
        loop {
            {
                let mut s = self.lock();
                if let Some(kind) = s.failed {
                    return Some(Err(kind.into()));
                }
                if let Some(b) = s.mem.pop_front() {
                    s.mem_bytes -= b.len();
                    return Some(Ok(b));
                }
                match s.unspill(self.budget) {
                    Ok(Some(b)) => return Some(Ok(b)),
                    Ok(None) => {}
                    Err(e) => {
                        s.failed = Some(e.kind());
                        return Some(Err(e));
                    }
                }
                if s.closed {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }
}

impl Drop for Spool {
    /// What is still unread on disk goes back to the budget with the files.
    fn drop(&mut self) {
        let on_disk = std::mem::take(&mut self.lock().on_disk);
        self.budget.give(on_disk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spools sharing a budget spill no more than it allows together, and
    /// what is read out, abandoned or dropped is given back.
    #[test]
    fn spools_share_the_servers_spill_budget() {
        static BUDGET: SpillBudget = SpillBudget::new(10_000);
        let (a, b) = (Spool::with_budget(0, SPOOL_DISK_MAX, &BUDGET), Spool::with_budget(0, SPOOL_DISK_MAX, &BUDGET));
        let piece = || vec![b'x'; 1_000];
        while a.push(piece()).is_ok() {}
        assert!(BUDGET.used() > 8_000 && BUDGET.used() <= 10_000, "{}", BUDGET.used());
        let e = b.push(piece()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}");
        // The other spool's failure stays its own; reading `a` out frees it.
        let (c, before) = (Spool::with_budget(0, SPOOL_DISK_MAX, &BUDGET), BUDGET.used());
        assert!(c.push(piece()).is_err());
        drop(c);
        assert_eq!(BUDGET.used(), before);
        a.abandon();
        assert_eq!(BUDGET.used(), 0);
        let d = Spool::with_budget(0, SPOOL_DISK_MAX, &BUDGET);
        d.push(piece()).unwrap();
        d.push(piece()).unwrap();
        assert!(BUDGET.used() > 2_000);
        let _ = run(d.pop()).unwrap().unwrap();
        assert!(BUDGET.used() > 1_000 && BUDGET.used() < 2_100, "{}", BUDGET.used());
        drop(d);
        assert_eq!(BUDGET.used(), 0);
    }

    /// A spill file is begun only while the filesystem keeps its reserve
    /// after the file's whole segment: 5 % of its size, at least 1 GiB.
    #[test]
    fn spilling_keeps_a_reserve_free() {
        let gib = 1u64 << 30;
        assert_eq!(room_to_spill(100 * gib, 50 * gib), Ok(()));
        assert_eq!(room_to_spill(100 * gib, 5 * gib + SEGMENT), Ok(()));
        assert_eq!(room_to_spill(100 * gib, 5 * gib + SEGMENT - 1), Err(5 * gib));
        assert_eq!(room_to_spill(4 * gib, gib + SEGMENT - 1), Err(gib), "small filesystems keep 1 GiB");
        assert_eq!(room_to_spill(0, 0), Err(gib), "an unknown size keeps the minimum");
    }

    /// Spill files go to the directory the budget was placed in: open
    /// there, unnamed, while the answer is unread.
    #[test]
    fn spill_files_go_to_the_placed_directory() {
        static BUDGET: SpillBudget = SpillBudget::new(1 << 30);
        let dir = tempfile::tempdir().unwrap();
        let place = dir.path().join("spill");
        BUDGET.place_in(&place).unwrap();
        assert!(place.is_dir(), "created");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&place).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o700);
        assert!(BUDGET.place_in(dir.path()).is_err(), "placed once");
        let open_in = |d: &Path| {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
                .filter(|l| l.starts_with(d))
                .count()
        };
        let spool = Spool::with_budget(0, SPOOL_DISK_MAX, &BUDGET);
        spool.push(b"an answer".to_vec()).unwrap();
        assert_eq!(open_in(&place), 1, "one file, open in the spill directory");
        assert_eq!(std::fs::read_dir(&place).unwrap().count(), 0, "and without a name");
        assert_eq!(&run(spool.pop()).unwrap().unwrap()[..], b"an answer");
        drop(spool);
        assert_eq!(open_in(&place), 0, "gone with its spool");
    }

    /// Each open spill file counts for a whole segment against the free
    /// space the next one sees, and stops counting once dropped.
    #[test]
    fn open_spill_files_are_counted_until_dropped() {
        static BUDGET: SpillBudget = SpillBudget::new(1 << 30);
        let count = || BUDGET.files.load(std::sync::atomic::Ordering::Acquire);
        let (a, b) = (Spool::with_budget(0, SPOOL_DISK_MAX, &BUDGET), Spool::with_budget(0, SPOOL_DISK_MAX, &BUDGET));
        a.push(b"one".to_vec()).unwrap();
        b.push(b"two".to_vec()).unwrap();
        assert_eq!(count(), 2);
        drop(a);
        assert_eq!(count(), 1);
        assert_eq!(&run(b.pop()).unwrap().unwrap()[..], b"two");
        b.close();
        assert!(run(b.pop()).is_none());
        assert_eq!(count(), 0, "read out: dropped");
        // A filesystem that holds only the reserve and the open files' room
        // takes no further file.
        let st = rustix::fs::statvfs(&std::env::temp_dir()).unwrap();
        let free = st.f_bavail * st.f_frsize;
        let too_many = free / SEGMENT + 1;
        let e = leaves_reserve(&std::env::temp_dir(), too_many).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}");
        assert!(e.to_string().contains("beside the open spill files"), "{e}");
    }

    /// A directory the server cannot use stops the start.
    #[test]
    fn an_unusable_spill_directory_is_refused() {
        static BUDGET: SpillBudget = SpillBudget::new(1 << 30);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        assert!(BUDGET.place_in(&file).is_err());
        assert!(BUDGET.place_in(&file.join("below")).is_err());
        assert_eq!(BUDGET.dir(), std::env::temp_dir(), "not placed");
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn bytes_come_out_in_order_through_memory_and_file() {
        let spool = Spool::new(100, SPOOL_DISK_MAX);
        let mut expected = Vec::new();
        for i in 0..1_000u32 {
            let piece = format!("line {i} {}\n", "x".repeat((i % 37) as usize)).into_bytes();
            expected.extend_from_slice(&piece);
            spool.push(piece).unwrap();
            // Read some along the way, so memory and file alternate.
            if i % 7 == 0 {
                let b = run(spool.pop()).unwrap().unwrap();
                expected.drain(..b.len()).for_each(drop);
            }
        }
        assert!(spool.peak_spilled() > 1_000, "most went to the file");
        spool.close();
        let mut got = Vec::new();
        while let Some(b) = run(spool.pop()) {
            got.extend_from_slice(&b.unwrap());
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn the_file_holds_no_clear_text() {
        static BUDGET: SpillBudget = SpillBudget::new(1 << 30);
        let mut f = SpillFile::create(&BUDGET).unwrap();
        f.append(b"11010519491231002X").unwrap();
        let mut raw = vec![0u8; f.write_at as usize];
        f.file.read_exact_at(&mut raw, 0).unwrap();
        assert!(!raw.windows(18).any(|w| w == b"11010519491231002X"));
        assert_eq!(&f.next().unwrap().unwrap()[..], b"11010519491231002X");
        assert!(f.next().unwrap().is_none());
    }

    #[test]
    fn a_gone_reader_stops_the_writer() {
        let spool = Spool::new(10, SPOOL_DISK_MAX);
        spool.push(b"0123456789abc".to_vec()).unwrap();
        spool.abandon();
        assert_eq!(spool.push(b"x".to_vec()).unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn unread_answers_past_the_disk_bound_abandon_the_answer() {
        let spool = Spool::new(10, 1_000);
        for _ in 0..9 {
            spool.push(vec![b'x'; 50]).unwrap();
        }
        let err = spool.push(vec![b'x'; 600]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert!(run(spool.pop()).unwrap().is_err(), "the reader learns of it");
    }

    #[test]
    fn files_read_out_are_given_back() {
        let spool = Spool::new(0, SPOOL_DISK_MAX);
        let piece = vec![7u8; 1 << 20];
        for _ in 0..70 {
            spool.push(piece.clone()).unwrap();
        }
        assert_eq!(spool.lock().files.len(), 2, "a new file past 64 MiB");
        for _ in 0..66 {
            assert_eq!(run(spool.pop()).unwrap().unwrap().len(), 1 << 20);
        }
        assert_eq!(spool.lock().files.len(), 1, "the first, read out, is gone");
        spool.close();
        let mut rest = 0;
        while let Some(b) = run(spool.pop()) {
            rest += b.unwrap().len();
        }
        assert_eq!(rest, 4 << 20);
        assert!(spool.lock().files.is_empty());
    }
}
