//! The provider side of basedata, as use cases: a provider's updates
//! checked, validated line by line and applied durably (`provide`), in
//! cluster mode through the replicated update log (`log`), and bulk loads
//! of whole datasets (`sst`, through SST files; `bulk`, through the write
//! path).
//!
//! Boundary: knows the update line format of the API and the catalog; does
//! not know HTTP or the log's transport. Every rejection carries a stable
//! error code and a message that names the field at fault without quoting
//! the value.

pub mod bulk;
pub mod line;
pub mod log;
pub mod provide;
#[cfg(feature = "rocks")]
pub mod sst;

pub use bulk::{BatchLoader, LoadSummary};
pub use line::{for_provider, parse_line, parse_value, LineError};
pub use provide::{Format, KeepRejected, Provide, Report, Submission};

/// A store in memory with the built-in catalog, for this crate's tests.
#[cfg(test)]
pub(crate) fn memory_store(secret: u8) -> basedata_store::Store {
    basedata_store::Store::open(
        std::sync::Arc::new(basedata_store::engine::mem::MemEngine::new()),
        &basedata_store::Secret::from_bytes([secret; 32]),
        std::sync::Arc::new(basedata_store::Catalog::builtin()),
        std::sync::Arc::new(basedata_store::clock::ManualClock::new(1)),
    )
    .expect("an in-memory store opens")
}
