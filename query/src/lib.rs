//! The consumer side of basedata: lookups filtered by the access decision,
//! verification without disclosure and batch comparison.
//!
//! Boundary: takes a caller (department and grants) and real keys, reads
//! through `basedata_store::Store`, and returns only what the caller may
//! see; it does not know HTTP.
