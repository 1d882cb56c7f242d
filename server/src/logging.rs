//! Structured JSON logs on stderr. Nothing logged anywhere in the program
//! may contain a full ID number or a field value: keys go through
//! `keys::mask`, and the access log records route templates, not paths.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::{BufWriter, Stderr, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber, writing each line straight to stderr;
/// `RUST_LOG` overrides `default_filter` (e.g.
/// `RUST_LOG=info,basedata::access=off` silences the access log). For the
/// short-lived commands, whose few lines must all be out before they exit.
pub fn init(default_filter: &str) {
    install(default_filter, std::io::stderr);
}

/// Keeps the server's log written out; dropping it writes what is still
/// pending and stops the log thread.
pub struct LogGuard {
    log: Arc<Log<Stderr>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.flusher.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        self.log.write_out(&mut Vec::new());
    }
}

/// How often the log thread writes pending lines out at the latest.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Pending access lines that wake the log thread before its time.
const WAKE_AT: usize = 256 << 10;
/// Pending access lines past which a request thread writes them out
/// itself: the log thread is not keeping up (a disk slower than the log),
/// and the lines must neither be lost nor pile up in memory without bound.
const HOLD_AT: usize = 16 << 20;

/// [`init`] for the server. Request threads never write the log: each
/// access line is appended to a pending buffer in memory (a copy under a
/// lock held for that copy only), and the log thread (`basedata-log`)
/// writes the buffer out when it passes [`WAKE_AT`] and at least every
/// [`FLUSH_EVERY`]. Written from the request threads, a busy log cost a
/// few percent of an audited read's CPU in system calls, and a write
/// that waited for the disk held every request thread behind the lock.
/// Any other line (start-up, backups, warnings, errors) is written out at
/// once, after the access lines pending before it. What is still pending
/// when the process is killed is lost, which is why nothing of record (the
/// audit trail) is ever only a log line.
pub fn init_server(default_filter: &str) -> LogGuard {
    let log = Arc::new(Log::new(std::io::stderr()));
    install(default_filter, Shared(log.clone()));
    let _ = ACCESS_OUT.set(log.clone());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (l, done) = (log.clone(), stop.clone());
    let mut writeback = Writeback::of_stderr();
    let flusher = std::thread::Builder::new()
        .name("basedata-log".into())
        .spawn(move || {
            let mut spare = Vec::with_capacity(WAKE_AT * 2);
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                std::thread::park_timeout(FLUSH_EVERY);
                l.write_out(&mut spare);
                if let Some(w) = writeback.as_mut() {
                    w.start();
                }
            }
        })
        .map_err(|e| tracing::warn!(error = %e, "no log thread: access lines go out with the other lines, or past 16 MiB"))
        .ok();
    if let Some(t) = &flusher {
        let _ = log.flusher.set(t.thread().clone());
    }
    // A panic's message (Rust's own, written straight to stderr) comes
    // after the access lines pending before it and never inside one.
    let (l, print) = (log.clone(), std::panic::take_hook());
    std::panic::set_hook(Box::new(move |info| l.in_order(|| print(info))));
    LogGuard { log, stop, flusher }
}

/// Writes the pending access lines out now: for an exit that skips
/// [`LogGuard`]'s drop (`std::process::exit`).
pub fn flush() {
    if let Some(log) = ACCESS_OUT.get() {
        log.write_out(&mut Vec::new());
    }
}

/// Failed writes of the log (a full disk, a closed pipe), for `/metrics`.
static WRITE_ERRORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many writes of the server's log have failed.
pub fn write_errors() -> u64 {
    WRITE_ERRORS.load(std::sync::atomic::Ordering::Relaxed)
}

/// The server's log: access lines pending in memory, and the stream
/// they and every other line are written to.
struct Log<W: Write> {
    pending: Mutex<Vec<u8>>,
    out: Mutex<BufWriter<W>>,
    /// The log thread, woken when [`WAKE_AT`] is passed.
    flusher: OnceLock<std::thread::Thread>,
    /// A write failed, and may have cut its last line short (only ever
    /// changed with `out` locked).
    torn: std::sync::atomic::AtomicBool,
}

impl<W: Write> Log<W> {
    fn new(out: W) -> Log<W> {
        Log {
            pending: Mutex::new(Vec::with_capacity(WAKE_AT * 2)),
            out: Mutex::new(BufWriter::with_capacity(64 << 10, out)),
            flusher: OnceLock::new(),
            torn: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Appends one access line (newline included).
    fn append(&self, line: &[u8]) {
        let held = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.extend_from_slice(line);
            p.len()
        };
        if held >= HOLD_AT {
            self.write_out(&mut Vec::new());
        } else if held >= WAKE_AT && held - line.len() < WAKE_AT {
            if let Some(t) = self.flusher.get() {
                t.unpark();
            }
        }
    }

    /// Writes the pending lines out and flushes; `spare` (left empty) is
    /// swapped in as the new pending buffer, so that the buffers' memory
    /// is reused.
    fn write_out(&self, spare: &mut Vec<u8>) {
        // `out` first and held throughout: a line written at once by
        // another thread meanwhile must come after these.
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        spare.clear();
        std::mem::swap(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()), spare);
        self.put(&mut out, spare);
        if out.flush().is_err() {
            // What the buffer kept is tried again with the next write.
            WRITE_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        spare.clear();
    }

    /// Runs `print`, which writes to the log's stream past it, with the
    /// stream locked and the pending lines written first. If the lock is
    /// held (a panic inside the log, or another thread writing), `print`
    /// runs as it is: waiting could be waiting for itself.
    fn in_order(&self, print: impl FnOnce()) {
        let Ok(mut out) = self.out.try_lock() else { return print() };
        if let Ok(mut pending) = self.pending.try_lock() {
            let lines = std::mem::take(&mut *pending);
            drop(pending);
            self.put(&mut out, &lines);
        }
        let _ = out.flush();
        print();
    }

    /// Writes `lines` to `out`, whose lock the caller holds. A failed
    /// write is counted and its lines are given up (held, a full disk or a
    /// closed pipe would pile them up without bound); it may have cut a
    /// line short, so the next write first ends that line, and the lines
    /// after it each stand whole.
    fn put(&self, out: &mut BufWriter<W>, lines: &[u8]) {
        use std::sync::atomic::Ordering::Relaxed;
        if lines.is_empty() {
            return;
        }
        if self.torn.load(Relaxed) {
            if out.write_all(b"\n").is_err() {
                WRITE_ERRORS.fetch_add(1, Relaxed);
                return;
            }
            self.torn.store(false, Relaxed);
        }
        if out.write_all(lines).is_err() {
            WRITE_ERRORS.fetch_add(1, Relaxed);
            self.torn.store(true, Relaxed);
        }
    }

    /// The stream, for a line written at once: the pending access lines
    /// are written first, so that lines keep their order.
    fn lock_out(&self) -> std::sync::MutexGuard<'_, BufWriter<W>> {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        self.put(&mut out, &pending);
        out
    }
}

/// How much of the log may be written, and not yet on its way to the disk,
/// before the flusher starts its writeback.
const WRITEBACK_EVERY: u64 = 1 << 20;

/// Starts the disk writes of a log that goes to a regular file in steps of
/// [`WRITEBACK_EVERY`], as RocksDB's `bytes_per_sync` does for its tables.
/// Left to the kernel, the access log (a line per request, megabytes a
/// second under load) is written back in one burst every few seconds;
/// every `fdatasync` of the store's write-ahead log issued meanwhile waits
/// behind the burst at the disk, and every answer in flight waits for that
/// sync. Measured at half of verification's maximum rate: group commits of
/// 60–100 ms, a p99 of 36–54 ms with the log in a file against 11–15 ms
/// with it discarded (BENCHMARKS.md). `POSIX_FADV_DONTNEED` starts the
/// writeback of the range without waiting for it and drops the pages once
/// clean, so the log does not crowd the store's files out of the page
/// cache either. Nothing here makes a line durable: the access log never
/// is a record (see [`init_server`]).
struct Writeback {
    file: std::fs::File,
    /// Where the last writeback started from.
    done: u64,
}

impl Writeback {
    /// Only when stderr is a regular file: a pipe or a terminal has no
    /// pages of its own to write back.
    fn of_stderr() -> Option<Writeback> {
        use std::os::fd::AsFd;
        Writeback::of(std::fs::File::from(std::io::stderr().as_fd().try_clone_to_owned().ok()?))
    }

    fn of(file: std::fs::File) -> Option<Writeback> {
        let meta = file.metadata().ok()?;
        meta.is_file().then_some(Writeback { file, done: meta.len() })
    }

    /// Starts the writeback of what was written since the last one, once
    /// that is [`WRITEBACK_EVERY`] or more; returns whether it did.
    fn start(&mut self) -> bool {
        let Ok(len) = self.file.metadata().map(|m| m.len()) else { return false };
        // A file truncated under us (rotation by copytruncate) starts over.
        if len < self.done {
            self.done = 0;
        }
        if len - self.done < WRITEBACK_EVERY {
            return false;
        }
        let range = std::num::NonZeroU64::new(len - self.done);
        let started = rustix::fs::fadvise(&self.file, self.done, range, rustix::fs::Advice::DontNeed).is_ok();
        if started {
            self.done = len;
        }
        started
    }
}

/// The log as a writer of whole lines for `tracing` (each line is
/// formatted first, then written under the lock in one piece, after the
/// access lines pending before it, and flushed).
struct Shared(Arc<Log<Stderr>>);

struct Line<'a> {
    out: std::sync::MutexGuard<'a, BufWriter<Stderr>>,
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Shared {
    type Writer = Line<'a>;
    fn make_writer(&'a self) -> Line<'a> {
        Line { out: self.0.lock_out() }
    }
}

fn install<W>(default_filter: &str, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(writer)
        .try_init();
}

/// The server's log, for access-log lines written without going through
/// `tracing`'s formatter (see [`access`]).
static ACCESS_OUT: OnceLock<Arc<Log<Stderr>>> = OnceLock::new();

/// One request, as the access log records it.
#[derive(Clone, Copy, Debug)]
pub struct AccessLine<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    /// The route template, never the concrete path (which holds keys).
    pub route: &'a str,
    pub status: u16,
    pub department: &'a str,
    pub micros: u64,
}

thread_local! {
    /// The line being formatted, and the second whose timestamp prefix
    /// (`2026-12-04T03:30:01`) was formatted last.
    static LINE: RefCell<(String, i64, String)> = const { RefCell::new((String::new(), i64::MIN, String::new())) };
}

/// Writes one access-log line: the same JSON object `tracing`'s JSON
/// formatter writes for the event, built by hand into a reused buffer.
/// Measured with callgrind on the key-check endpoint, which does no store
/// work, the generic formatter took a quarter of a request's instructions.
/// `RUST_LOG` still decides whether the line is written; without the
/// server's logger (commands, tests) the event goes through `tracing`.
pub fn access(l: &AccessLine<'_>) {
    if !tracing::enabled!(target: "basedata::access", tracing::Level::INFO) {
        return;
    }
    let Some(out) = ACCESS_OUT.get() else {
        tracing::info!(
            target: "basedata::access",
            request_id = %l.request_id,
            method = %l.method,
            route = %l.route,
            status = l.status,
            department = %l.department,
            micros = l.micros,
            "request"
        );
        return;
    };
    LINE.with_borrow_mut(|(buf, second, prefix)| {
        format_access(l, SystemTime::now(), buf, second, prefix);
        out.append(buf.as_bytes());
    });
}

/// Formats `l` at `now` into `buf` (a whole line, newline included),
/// reusing the timestamp prefix of `second` when it is still current.
fn format_access(l: &AccessLine<'_>, now: SystemTime, buf: &mut String, second: &mut i64, prefix: &mut String) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    if secs != *second {
        *second = secs;
        prefix.clear();
        let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let _ = write!(
            prefix,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
    }
    buf.clear();
    buf.push_str(r#"{"timestamp":""#);
    buf.push_str(prefix);
    buf.push('.');
    push_digits(buf, since.subsec_micros() as u64, 6);
    buf.push_str(r#"Z","level":"INFO","fields":{"message":"request","request_id":""#);
    json_str(buf, l.request_id);
    buf.push_str(r#"","method":""#);
    json_str(buf, l.method);
    buf.push_str(r#"","route":""#);
    json_str(buf, l.route);
    buf.push_str(r#"","status":"#);
    push_digits(buf, l.status as u64, 1);
    buf.push_str(r#","department":""#);
    json_str(buf, l.department);
    buf.push_str(r#"","micros":"#);
    push_digits(buf, l.micros, 1);
    buf.push_str("},\"target\":\"basedata::access\"}\n");
}

/// Appends `n` in decimal, zero-padded to at least `width` digits (a line
/// a request: the formatting machinery costs more than the digits).
fn push_digits(buf: &mut String, n: u64, width: usize) {
    let mut digits = itoa::Buffer::new();
    let text = digits.format(n);
    buf.extend(std::iter::repeat_n('0', width.saturating_sub(text.len())));
    buf.push_str(text);
}

/// Appends `s` escaped for a JSON string.
fn json_str(buf: &mut String, s: &str) {
    // Ids, routes and department names need no escaping: copied whole.
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        buf.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '"' => buf.push_str("\\\""),
            '\\' => buf.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(buf, "\\u{:04x}", c as u32);
            }
            c => buf.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_file_is_written_back_in_steps() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.log");
        std::fs::write(&path, b"from an earlier run\n").unwrap();
        let mut log = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        let mut w = Writeback::of(log.try_clone().unwrap()).expect("a regular file");
        assert_eq!(w.done, 20, "what was there before is not this server's to write back");
        let line = [b'x'; 1000];
        for _ in 0..1000 {
            log.write_all(&line).unwrap();
        }
        assert!(!w.start(), "under a step: left to the kernel");
        for _ in 0..100 {
            log.write_all(&line).unwrap();
        }
        assert!(w.start(), "a step written");
        assert_eq!(w.done, 20 + 1_100_000);
        assert!(!w.start(), "nothing new");
        // Rotated by truncation: the new file's first step counts from 0.
        log.set_len(0).unwrap();
        for _ in 0..1100 {
            log.write_all(&line).unwrap();
        }
        assert!(w.start());
        assert_eq!(w.done, 1_100_000);
        // Pipes and terminals have no pages of their own to write back.
        let (reader, _writer) = std::io::pipe().unwrap();
        assert!(Writeback::of(std::fs::File::from(std::os::fd::OwnedFd::from(reader))).is_none());
    }

    /// A stream that keeps what was written to it.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<u8>>>);

    impl Write for Kept {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Kept {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn access_lines_wait_in_memory_and_keep_their_place_before_other_lines() {
        let kept = Kept::default();
        let log = Log::new(kept.clone());
        log.append(b"a\n");
        log.append(b"b\n");
        assert_eq!(kept.text(), "", "an access line is not written by the thread that logs it");
        {
            let mut out = log.lock_out();
            out.write_all(b"warning\n").unwrap();
            out.flush().unwrap();
        }
        assert_eq!(kept.text(), "a\nb\nwarning\n", "a line written at once comes after the access lines before it");
        log.append(b"c\n");
        let mut spare = Vec::with_capacity(16);
        log.write_out(&mut spare);
        assert_eq!(kept.text(), "a\nb\nwarning\nc\n");
        assert!(spare.is_empty() && log.pending.lock().unwrap().is_empty());

        // Past the bound, the thread that logs writes the lines out itself.
        let line = vec![b'x'; 4095].into_iter().chain([b'\n']).collect::<Vec<u8>>();
        let before = kept.text().len();
        for _ in 0..HOLD_AT / line.len() - 1 {
            log.append(&line);
        }
        assert_eq!(kept.text().len(), before, "below the bound everything waits for the log thread");
        log.append(&line);
        assert_eq!(kept.text().len(), before + HOLD_AT, "at the bound the lines are written out");
        assert!(log.pending.lock().unwrap().is_empty());
    }

    /// What a panic prints comes after the pending lines, and is printed
    /// at once when the log is locked.
    #[test]
    fn a_panic_message_comes_after_the_pending_lines() {
        let kept = Kept::default();
        let log = Log::new(kept.clone());
        log.append(b"a\n");
        let mut printer = kept.clone();
        log.in_order(|| printer.write_all(b"panicked\n").unwrap());
        assert_eq!(kept.text(), "a\npanicked\n");
        log.append(b"b\n");
        let held = log.lock_out();
        let mut printer = kept.clone();
        log.in_order(|| printer.write_all(b"again\n").unwrap());
        drop(held);
        assert_eq!(kept.text(), "a\npanicked\nagain\n", "printed, not waited behind the lock");
        log.write_out(&mut Vec::new());
        assert_eq!(kept.text(), "a\npanicked\nagain\nb\n");
    }

    /// Takes `room` more bytes, then fails once (a disk that fills up
    /// and is freed again), then takes everything.
    struct Fills {
        kept: Kept,
        room: Option<usize>,
    }

    impl Write for Fills {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            match self.room {
                Some(0) => {
                    self.room = None;
                    Err(std::io::Error::other("no space left"))
                }
                Some(n) => {
                    let k = buf.len().min(n);
                    self.room = Some(n - k);
                    self.kept.write(&buf[..k])
                }
                None => self.kept.write(buf),
            }
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A write that fails part-way gives its lines up and is counted, and
    /// the line it cut short is ended, so every later line stands whole.
    #[test]
    fn a_failed_write_is_counted_and_the_lines_after_it_stand_whole() {
        let kept = Kept::default();
        let log = Log::new(Fills { kept: kept.clone(), room: Some(100_500) });
        // Lines past the buffer's 64 KiB go to the stream in one write.
        let line = |c: u8| vec![c; 999].into_iter().chain([b'\n']).collect::<Vec<u8>>();
        for _ in 0..200 {
            log.append(&line(b'a'));
        }
        let errors = write_errors();
        log.write_out(&mut Vec::new());
        assert!(write_errors() > errors, "the failure is counted");
        let cut = kept.text();
        assert_eq!(cut.len(), 100_500);
        assert!(!cut.ends_with('\n'), "the failed write cut a line short");
        log.append(&line(b'b'));
        log.append(&line(b'c'));
        log.write_out(&mut Vec::new());
        let text = kept.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[lines.len() - 2..], [std::str::from_utf8(&line(b'b')[..999]).unwrap(), std::str::from_utf8(&line(b'c')[..999]).unwrap()]);
        assert_eq!(lines.len(), 100 + 1 + 2, "100 whole lines, the one cut short, then the later two");
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn digits_are_decimal_and_padded_to_the_width_asked() {
        for (n, width, want) in [(0, 1, "0"), (0, 6, "000000"), (123, 6, "000123"), (999_999, 6, "999999"), (200, 1, "200"), (u64::MAX, 1, "18446744073709551615"), (7, 30, "000000000000000000000000000007")] {
            let mut s = String::from("x");
            push_digits(&mut s, n, width);
            assert_eq!(s, format!("x{want}"), "{n} {width}");
        }
    }

    #[test]
    fn access_lines_are_the_json_tracing_writes() {
        let (mut buf, mut second, mut prefix) = (String::new(), i64::MIN, String::new());
        let line = AccessLine {
            request_id: "00ff",
            method: "GET",
            route: "/v1/persons/{id}",
            status: 200,
            department: "odd\"dept\\\u{1}",
            micros: 42,
        };
        let at = UNIX_EPOCH + Duration::from_micros(1_796_355_001_000_123);
        format_access(&line, at, &mut buf, &mut second, &mut prefix);
        assert!(buf.ends_with('\n') && buf.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&buf).unwrap();
        assert_eq!(v["timestamp"], "2026-12-04T03:30:01.000123Z");
        assert_eq!((v["level"].as_str(), v["target"].as_str()), (Some("INFO"), Some("basedata::access")));
        let f = &v["fields"];
        assert_eq!((f["message"].as_str(), f["request_id"].as_str(), f["method"].as_str()), (Some("request"), Some("00ff"), Some("GET")));
        assert_eq!((f["route"].as_str(), f["status"].as_u64(), f["micros"].as_u64()), (Some("/v1/persons/{id}"), Some(200), Some(42)));
        assert_eq!(f["department"].as_str(), Some("odd\"dept\\\u{1}"));
        // The next line within the same second reuses the prefix.
        format_access(&line, at + Duration::from_micros(5), &mut buf, &mut second, &mut prefix);
        let v: serde_json::Value = serde_json::from_str(&buf).unwrap();
        assert_eq!(v["timestamp"], "2026-12-04T03:30:01.000128Z");
    }
}
