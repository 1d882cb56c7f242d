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

/// Keeps the server's log buffer flushed; dropping it flushes what is
/// still buffered and stops the flusher.
pub struct LogGuard {
    out: Arc<Mutex<BufWriter<Stderr>>>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.flusher.take() {
            let _ = t.join();
        }
        flush(&self.out);
    }
}

/// How often the server's log buffer is written out at the latest.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// [`init`] for the server: access-log lines go into one shared buffer,
/// written out when it fills, when another line is logged, and at least
/// every [`FLUSH_EVERY`], instead of one write system call per request on
/// the request's thread (measured: a few percent of an audited read's CPU). What is still buffered when the
/// process is killed is lost, which is why nothing of record (the audit
/// trail) is ever only a log line.
pub fn init_server(default_filter: &str) -> LogGuard {
    let out = Arc::new(Mutex::new(BufWriter::with_capacity(256 << 10, std::io::stderr())));
    install(default_filter, Shared(out.clone()));
    let _ = ACCESS_OUT.set(out.clone());
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let o = out.clone();
    let mut writeback = Writeback::of_stderr();
    let flusher = std::thread::Builder::new()
        .name("basedata-log".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(FLUSH_EVERY) {
                flush(&o);
                if let Some(w) = writeback.as_mut() {
                    w.start();
                }
            }
        })
        .ok();
    LogGuard { out, stop: Some(tx), flusher }
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

/// The shared buffer as a writer of whole lines (each line is formatted
/// first, then written under the lock in one piece). Only the access log,
/// a line per request, waits in the buffer; any other line (start-up,
/// backups, warnings, errors) is written out at once, with what is before it.
struct Shared(Arc<Mutex<BufWriter<Stderr>>>);

/// Target of the per-request access log (`http::access_log`).
const ACCESS_TARGET: &str = "basedata::access";

struct Line<'a> {
    out: std::sync::MutexGuard<'a, BufWriter<Stderr>>,
    flush: bool,
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
        if self.flush {
            let _ = self.out.flush();
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Shared {
    type Writer = Line<'a>;
    fn make_writer(&'a self) -> Line<'a> {
        Line { out: self.0.lock().unwrap_or_else(|e| e.into_inner()), flush: true }
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line<'a> {
        let mut line = self.make_writer();
        line.flush = meta.target() != ACCESS_TARGET;
        line
    }
}

fn flush(out: &Mutex<BufWriter<Stderr>>) {
    let mut w = out.lock().unwrap_or_else(|e| e.into_inner());
    let _ = w.flush();
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

/// The server's log buffer, for access-log lines written without going
/// through `tracing`'s formatter (see [`access`]).
static ACCESS_OUT: OnceLock<Arc<Mutex<BufWriter<Stderr>>>> = OnceLock::new();

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
        let mut w = out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = w.write_all(buf.as_bytes());
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
fn push_digits(buf: &mut String, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let start = at.min(digits.len() - width.min(digits.len()));
    buf.extend(digits[start..].iter().map(|&d| d as char));
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

    #[test]
    fn digits_are_decimal_and_padded_to_the_width_asked() {
        for (n, width, want) in [(0, 1, "0"), (0, 6, "000000"), (123, 6, "000123"), (999_999, 6, "999999"), (200, 1, "200"), (u64::MAX, 1, "18446744073709551615"), (7, 20, "00000000000000000007")] {
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
