//! basedata's storage layer: identity keys, the dataset catalog, typed
//! values, the pseudonymized record model and the engines beneath it.
//!
//! Boundary: this crate knows nothing of HTTP or of the sharing rules. It
//! takes validated updates, audit events and real subject keys, and
//! guarantees that what it stores is keyed by pseudonyms, versioned and
//! durable when the caller asks for durability. It also holds the two
//! things both use-case crates stand on: who the caller is (`caller`) and
//! the NDJSON line rule of every input (`ndjson`).

pub mod audit;
#[cfg(feature = "rocks")]
pub mod backup;
#[cfg(feature = "rocks")]
pub mod bulk;
pub mod calendar;
pub mod caller;
pub mod catalog;
pub mod change_log;
pub mod commit;
pub mod clock;
pub mod codec;
pub mod dir;
pub mod engine;
pub mod keys;
pub mod ndjson;
pub mod prints;
pub mod providers;
pub mod pseudo;
pub mod record;
pub mod store;
mod take_back;
pub mod usage;
pub mod value;

pub use catalog::Catalog;
pub use engine::{Cf, Durability, Engine, WriteBatch};
pub use keys::{EntityKey, PersonKey, Subject, SubjectKey};
pub use pseudo::{Pid, Secret};
pub use audit::{Action, AuditEvent};
pub use store::link;
pub use store::{Change, Committed, Outcome, Record, Store, Update, UpdateOp};
pub use value::Value;

/// Errors of the storage layer. Client mistakes are caught before they
/// reach it; what remains here is configuration, corruption or I/O.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("storage engine: {0}")]
    Engine(String),
    /// The engine could not write for want of disk space: it passes once
    /// space is freed (see [`Error::unavailable_reason`]).
    #[error("storage engine: {0}")]
    NoSpace(String),
    #[error("corrupt {what}: {msg}")]
    Corrupt { what: &'static str, msg: String },
    #[error("unsupported stored format {found} of {what}")]
    Format { what: &'static str, found: u8 },
    #[error("the secret key does not belong to this data directory")]
    WrongSecret,
    /// A key file named inside the data directory (see `dir::load_secret`):
    /// the secret must never be stored, or backed up, with the data.
    #[error("the key file {} must not be inside the data directory", key_file.display())]
    KeyFileInsideData { key_file: std::path::PathBuf },
    /// No key file where an existing data directory's secret should be
    /// (see `dir::load_secret`); a new one would not read its data.
    #[error("no key file at {} for the existing data directory {}", key_file.display(), data.display())]
    NoKeyFile { key_file: std::path::PathBuf, data: std::path::PathBuf },
    /// A data directory that cannot be created.
    #[error("cannot create {}: {cause}", path.display())]
    CreateDir { path: std::path::PathBuf, cause: std::io::Error },
    /// The engine in a data directory that cannot be opened: another
    /// process holds it, or its files are damaged or not a store's.
    #[error("cannot open the store in {}: {cause}", path.display())]
    Open { path: std::path::PathBuf, cause: Box<Error> },
    #[error("invalid update: {0}")]
    Invalid(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("catalog: {0}")]
    Catalog(#[from] catalog::CatalogError),
    #[error("backup: {0}")]
    Backup(String),
    /// A bulk load refused or unable to go on (see `bulk`).
    #[error("bulk load: {0}")]
    Bulk(String),
    #[error("not supported by this engine: {0}")]
    Unsupported(&'static str),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A job the group committer dropped unwritten because its guard was
    /// raised (see `commit::Committer::submit_guarded`).
    #[error("not written: an earlier write of its chain failed")]
    Abandoned,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a caught panic said (its `&str` or `String` payload), for the
/// error that answers in its place.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// Why a full disk refuses a request, as its callers are told.
pub const NO_SPACE: &str = "the disk holding the store is full: nothing can be written, and no answer that must be audited can be given, until space is freed";

impl Error {
    /// An engine's failure, with a full disk told apart from the rest: it
    /// passes when space is freed, where the rest is a fault to look into.
    pub fn engine(msg: String) -> Error {
        // strerror(ENOSPC), which RocksDB's I/O errors quote.
        if msg.contains("No space left on device") {
            Error::NoSpace(msg)
        } else {
            Error::Engine(msg)
        }
    }

    /// For a failure that is the machine's state, not a fault of the
    /// request or the server (a full disk): what to tell the caller, who
    /// may try again later. `None` for the rest (internal errors).
    pub fn unavailable_reason(&self) -> Option<&'static str> {
        match self {
            Error::NoSpace(_) => Some(NO_SPACE),
            Error::Io(e) if e.kind() == std::io::ErrorKind::StorageFull => Some(NO_SPACE),
            _ => None,
        }
    }
}

/// What a failed store call or commit tells a use case's caller, the same
/// for every use case: shed load now, try again later, or a fault of the
/// server. Each use case's error type is made from it, so the rule lives
/// here once.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// The writer's queue is full.
    Overloaded,
    /// The machine's state (a full disk) or a stopping server: the caller
    /// may try again later; what to tell them.
    Unavailable(String),
    /// Anything else, for the log.
    Internal(String),
}

impl From<&Error> for Failure {
    fn from(e: &Error) -> Failure {
        match e.unavailable_reason() {
            Some(why) => Failure::Unavailable(why.into()),
            None => Failure::Internal(e.to_string()),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::from(&e)
    }
}

/// Makes a use case's error type (one with `Overloaded`,
/// `Unavailable(String)` and `Internal(String)` variants) from a store's
/// [`Error`], a [`commit::CommitError`] and a [`Failure`], by [`Failure`]'s
/// one rule.
#[macro_export]
macro_rules! failure_conversions {
    ($error:ty) => {
        impl From<$crate::Failure> for $error {
            fn from(f: $crate::Failure) -> Self {
                match f {
                    $crate::Failure::Overloaded => Self::Overloaded,
                    $crate::Failure::Unavailable(why) => Self::Unavailable(why),
                    $crate::Failure::Internal(msg) => Self::Internal(msg),
                }
            }
        }

        impl From<$crate::Error> for $error {
            fn from(e: $crate::Error) -> Self {
                $crate::Failure::from(e).into()
            }
        }

        impl From<$crate::commit::CommitError> for $error {
            fn from(e: $crate::commit::CommitError) -> Self {
                $crate::Failure::from(e).into()
            }
        }
    };
}
