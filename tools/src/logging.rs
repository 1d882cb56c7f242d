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

/// [`init`] for the server: lines go into one shared buffer, written out
/// when it fills and at least every [`FLUSH_EVERY`], instead of one write
/// system call per access-log line on the request's thread (measured: a
/// few percent of an audited read's CPU). What is still buffered when the
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
/// first, then written under the lock in one piece).
struct Shared(Arc<Mutex<BufWriter<Stderr>>>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Shared {
    type Writer = tracing_subscriber::fmt::writer::MutexGuardWriter<'a, BufWriter<Stderr>>;
    fn make_writer(&'a self) -> Self::Writer {
        self.0.make_writer()
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
