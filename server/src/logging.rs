//! Structured JSON logs on stderr. Nothing logged anywhere in the program
//! may contain a full ID number or a field value: keys go through
//! `keys::mask`, and the access log records route templates, not paths.

use std::io::{BufWriter, Stderr, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;
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
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let o = out.clone();
    let flusher = std::thread::Builder::new()
        .name("basedata-log".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(FLUSH_EVERY) {
                flush(&o);
            }
        })
        .ok();
    LogGuard { out, stop: Some(tx), flusher }
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
