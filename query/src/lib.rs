//! The consumer side of basedata, as use cases: audited lookups and
//! verifications, batch comparisons and their jobs, the change feed, and
//! the governance of conditional sharing and disputes. Each is a method of
//! [`Queries`] that takes a [`Caller`] and plain values and returns plain
//! results or an [`Error`] with a stable code.
//!
//! Boundary: knows the catalog, the access rules and the audit trail; does
//! not know HTTP (no transport types cross it). Every use is audited
//! durably, through the group committer, before its answer is returned.

pub mod access;
pub mod annual;
pub mod batch;
pub mod changes;
pub mod claimed;
pub mod claims;
pub mod compare;
pub mod departments;
pub mod error;
pub mod gov;
pub mod govlog;
pub mod governance;
pub mod jobs;
pub mod lookup;
pub mod oversight;
pub mod purpose;
pub mod replicated;
pub mod rejected;
pub mod service;
pub mod staff;
pub mod subjects;
pub mod verify;

pub use access::{decide, may_follow, may_read, Access, Coverage, GrantSource, NoGrants, Scope, Withheld};
pub use basedata_store::caller::{self, Caller, Department, Directory, Role};
pub use error::{Error, Result};
pub use service::Queries;
