//! The consumer use cases' one error type: client mistakes with the API's
//! stable codes, refusals, and internal faults. No HTTP here: the edge maps
//! each variant to its status.

use basedata_store::keys::KeyError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidKey(#[from] KeyError),
    #[error("no dataset {0:?} in the catalog")]
    UnknownDataset(String),
    /// A dataset of the catalog asked of the other subject's records:
    /// unknown there, as `UnknownDataset`, but said as it is.
    #[error("dataset {dataset:?} holds {holds} records, not {asked} records (ask it under {})", lookup_path(*.holds))]
    OtherSubject { dataset: String, holds: basedata_store::keys::Subject, asked: basedata_store::keys::Subject },
    #[error("{0}")]
    UnknownField(String),
    #[error("{0}")]
    InvalidValue(String),
    #[error("{0}")]
    InvalidBody(String),
    /// The caller's department may not do this; audited as `denied` where
    /// subject data were asked for.
    #[error("{0}")]
    Forbidden(String),
    /// Too many different claims of a field the department may not read
    /// (see `claims`); audited as `denied` and flagged to auditors.
    #[error("{message}")]
    ClaimLimit { message: String, dataset: String, field: String, distinct: u32, period_days: u32 },
    /// The stated purpose is not one the department may state (an unknown
    /// code, or one its list lacks); audited as `denied`.
    #[error("{message}")]
    PurposeNotAllowed { message: String, code: String, reason: &'static str, allowed: Vec<String> },
    #[error("{0}")]
    NotFound(String),
    /// The thing exists but is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    /// The change feed was asked to resume before the oldest change it
    /// still holds: the changes in between were removed for the retention
    /// period, and a subscriber must learn that rather than skip them.
    #[error("the changes after {after} up to {kept_after} were removed for the change log's retention period; \
             bring your copy up to date another way, then resume after {kept_after}")]
    ChangesRemoved { after: u64, kept_after: u64 },
    /// The writer's queue is full: retry shortly.
    #[error("the server is at capacity; retry shortly")]
    Overloaded,
    /// The department has as many unfinished batch jobs as it may; a new
    /// one is taken once one of them is done.
    #[error("the department has {limit} unfinished batch jobs, its limit; submit again once one is done")]
    TooManyJobs { limit: u32, retry_after_secs: u64 },
    /// A request body over a configured limit (bytes or lines).
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    /// A fault of the store or the process; its cause is for the log only.
    #[error("internal: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a subject's records are looked up.
fn lookup_path(s: basedata_store::keys::Subject) -> &'static str {
    match s {
        basedata_store::keys::Subject::Person => "/v1/persons/{id}",
        basedata_store::keys::Subject::Entity => "/v1/entities/{code}",
    }
}

impl Error {
    /// The stable code of the API (and of `denied` audit entries).
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidKey(_) => "invalid_key",
            Error::UnknownDataset(_) | Error::OtherSubject { .. } => "unknown_dataset",
            Error::UnknownField(_) => "unknown_field",
            Error::InvalidValue(_) => "invalid_value",
            Error::InvalidBody(_) => "invalid_body",
            Error::Forbidden(_) => "forbidden",
            Error::ClaimLimit { .. } => "claim_limit",
            Error::PurposeNotAllowed { .. } => "purpose_not_allowed",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) | Error::ChangesRemoved { .. } => "conflict",
            Error::Overloaded | Error::TooManyJobs { .. } => "overloaded",
            Error::PayloadTooLarge(_) => "payload_too_large",
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) => "internal",
        }
    }
}

// A store's failure, as every use case tells it.
basedata_store::failure_conversions!(Error);

impl From<crate::verify::ClaimError> for Error {
    fn from(e: crate::verify::ClaimError) -> Self {
        let message = e.message();
        match e {
            crate::verify::ClaimError::UnknownField(_) => Error::UnknownField(message),
            crate::verify::ClaimError::InvalidValue(_) => Error::InvalidValue(message),
            crate::verify::ClaimError::Empty => Error::InvalidBody(message),
        }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Internal(format!("a worker failed: {e}"))
    }
}
