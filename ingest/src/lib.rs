//! The provider side of basedata: parsing and validating update lines
//! against the catalog, and applying them durably: through the write path
//! (`bulk`) or, for whole datasets, as SST files (`sst`).
//!
//! Boundary: knows the update line format of the API and the catalog; does
//! not know HTTP. Every rejection carries a stable error code and a message
//! that names the field at fault without quoting the value.

pub mod bulk;
pub mod line;
#[cfg(feature = "rocks")]
pub mod sst;

pub use bulk::{load_ndjson, BatchLoader, LoadSummary};
pub use line::{parse_line, parse_value, LineError};
