//! Structured JSON logs on stderr. Nothing logged anywhere in the program
//! may contain a full ID number or a field value: keys go through
//! `keys::mask`, and the access log records route templates, not paths.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `RUST_LOG` overrides `default_filter`
/// (e.g. `RUST_LOG=info,basedata::access=off` silences the access log).
pub fn init(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
