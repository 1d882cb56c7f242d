//! The consumer side of basedata: the access decision, lookups filtered by
//! it, and verification without disclosure.
//!
//! Boundary: takes a caller (department id and its grants) and real keys,
//! reads through `basedata_store::Store`, and returns only what the caller
//! may see; it does not know HTTP or the audit trail (callers record what
//! these functions report as disclosed or verified).

pub mod access;
pub mod batch;
pub mod compare;
pub mod gov;
pub mod jobs;
pub mod lookup;
pub mod verify;

pub use access::{decide, Access, GrantSource, NoGrants, Withheld};
