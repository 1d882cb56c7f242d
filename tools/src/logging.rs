//! Structured JSON logs on stderr. Nothing logged anywhere in the program
//! may contain a full ID number or a field value: keys go through
//! `keys::mask`, and the access log records route templates, not paths.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber, writing each line straight to stderr;
/// `RUST_LOG` overrides `default_filter` (e.g.
/// `RUST_LOG=info,basedata::access=off` silences the access log). For the
/// short-lived commands, whose few lines must all be out before they exit.
pub fn init(default_filter: &str) {
    install(default_filter, std::io::stderr);
}

/// Keeps the server's log writer running; dropping it writes out what is
/// still queued.
pub struct LogGuard(#[allow(dead_code)] tracing_appender::non_blocking::WorkerGuard);

/// [`init`] for the server: request threads only queue their lines, and
/// one writer thread writes whatever queued up meanwhile with one system
/// call, instead of a write per access-log line on the request's thread.
/// Lines are never dropped: a full queue makes requests wait. What is
/// still queued when the process is killed is lost, which is why nothing
/// of record (the audit trail) is ever only a log line.
pub fn init_server(default_filter: &str) -> LogGuard {
    let out = std::io::BufWriter::with_capacity(64 << 10, std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("basedata-log")
        .finish(out);
    install(default_filter, writer);
    LogGuard(guard)
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
