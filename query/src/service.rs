//! The consumer side's handles, held once per process: the store, the
//! group committer, the grant book, the calendar and the job queue. Every
//! use case of this crate is a method on [`Queries`]; the transport holds
//! one and calls them.

use crate::caller::Directory;
use crate::error::{Error, Result};
use crate::gov::{GrantBook, Policy};
use basedata_store::calendar::Calendar;
use basedata_store::catalog::Dataset;
use basedata_store::commit::Committer;
use basedata_store::{Action, AuditEvent, Catalog, Store, Subject, WriteBatch};
use std::sync::Arc;
use std::time::Duration;

/// The consumer use cases and what they share.
pub struct Queries {
    pub store: Arc<Store>,
    pub catalog: Arc<Catalog>,
    /// The single writer: audit entries and state changes, group-committed.
    pub committer: Arc<Committer>,
    /// Conditional-sharing grants: the access decision's grant source.
    pub grants: Arc<GrantBook>,
    pub calendar: Arc<Calendar>,
    /// Serializes governance state changes (check, then commit).
    /// Held until the change is committed and taken in, even by a request
    /// given up meanwhile (an owned guard, moved into the commit).
    pub(crate) gov_lock: Arc<tokio::sync::Mutex<()>>,
    /// Cluster mode: the replicated log governance changes go through.
    pub(crate) gov_log: std::sync::OnceLock<Arc<dyn crate::govlog::GovernanceLog>>,
    /// Takes in committed staff accounts (see `Queries::on_staff_change`).
    #[allow(clippy::type_complexity)]
    pub(crate) staff_hook: std::sync::RwLock<Option<Arc<dyn Fn(&crate::staff::StaffRecord) + Send + Sync>>>,
    /// Serializes keeping rejected update lines (number after the last
    /// stored, then commit).
    pub(crate) rejected_lock: Arc<tokio::sync::Mutex<()>>,
    /// Wakes the job runner when a job is queued.
    pub(crate) job_wake: tokio::sync::Notify,
    /// Serializes the admission of jobs (count a department's unfinished
    /// jobs, then record the new one).
    pub(crate) job_admission: Arc<tokio::sync::Mutex<()>>,
    /// How long a finished job's input and answers are kept.
    pub job_retention: Duration,
    /// How many distinct claims of a field it may not read a department
    /// may make per subject (see `claims`).
    pub claim_policy: crate::claims::ClaimPolicy,
    pub(crate) claim_locks: crate::claims::ClaimLocks,
    /// The configured departments, for jobs run after their request ended.
    pub(crate) directory: Arc<dyn Directory>,
}

impl std::fmt::Debug for Queries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queries").finish_non_exhaustive()
    }
}

/// How long an auditor's read waits for the audit trail to enter the
/// uses recorded before it: the writer enters them within a group or two
/// (milliseconds); this long means it is stuck.
pub const SETTLE_PATIENCE: Duration = Duration::from_secs(10);

impl Queries {
    /// The use cases over `store`, writing through `committer`; grants are
    /// loaded from the store under `policy`.
    pub fn new(
        store: Arc<Store>,
        committer: Arc<Committer>,
        policy: Policy,
        calendar: Calendar,
        directory: Arc<dyn Directory>,
    ) -> basedata_store::Result<Queries> {
        let grants = Arc::new(GrantBook::load(&**store.engine(), policy, store.clock().clone())?);
        Ok(Queries {
            catalog: store.catalog().clone(),
            store,
            committer,
            grants,
            calendar: Arc::new(calendar),
            gov_lock: Arc::default(),
            gov_log: std::sync::OnceLock::new(),
            staff_hook: std::sync::RwLock::new(None),
            rejected_lock: Arc::default(),
            job_wake: tokio::sync::Notify::new(),
            job_admission: Arc::default(),
            job_retention: Duration::from_secs(30 * 86_400),
            claim_policy: crate::claims::ClaimPolicy::default(),
            claim_locks: crate::claims::ClaimLocks::default(),
            directory,
        })
    }

    /// Wakes the job runner (a job was queued, or its retention passed).
    pub fn wake_jobs(&self) {
        self.job_wake.notify_one();
    }

    /// Commits audit events (and extra state writes) and waits until they
    /// are durable: no answer leaves before the record of it.
    ///
    /// A point use goes through the writer's group commit, not the
    /// journal's records of uses (which batch chunks take): at a few
    /// dozen uses a group the writer costs less CPU a use than a sync of
    /// its own for every few requests (BENCHMARKS.md, "Uses audited
    /// through the journal").
    pub async fn record(&self, events: Vec<AuditEvent>, extra: WriteBatch) -> Result<()> {
        self.committer.commit(Vec::new(), events, extra).await?;
        Ok(())
    }

    /// Waits until the audit trail holds every use recorded before the
    /// call, so that an auditor sees each use whose answer has left;
    /// `unavailable` if the writer does not get there in [`SETTLE_PATIENCE`].
    pub async fn settle_uses(&self) -> Result<()> {
        match tokio::time::timeout(SETTLE_PATIENCE, self.committer.settle_uses()).await {
            Ok(true) => Ok(()),
            _ => Err(Error::Unavailable("the audit trail is still entering recent uses; try again".into())),
        }
    }

    /// [`Queries::record`], with `after` run once the write is durable
    /// even if the caller has gone by then (see
    /// [`Committer::commit_then`]): where a lock guards a check and the
    /// write it allows, the guard travels in `after`, so the next check
    /// sees the write.
    pub async fn record_then<A: FnOnce() + Send + 'static>(&self, events: Vec<AuditEvent>, extra: WriteBatch, after: A) -> Result<()> {
        self.committer.commit_then(Vec::new(), events, extra, after).await?;
        Ok(())
    }

    /// Records a refused use durably, then returns the refusal.
    pub async fn deny(&self, ev: AuditEvent, err: Error) -> Error {
        self.deny_then(ev, err, WriteBatch::new(), || ()).await
    }

    /// [`Queries::deny`], committing `extra` with the refusal's entry and
    /// running `after` as [`Queries::record_then`] does.
    pub async fn deny_then<A: FnOnce() + Send + 'static>(&self, mut ev: AuditEvent, err: Error, extra: WriteBatch, after: A) -> Error {
        ev.action = Action::Denied;
        ev.outcome = err.code().to_owned();
        // A refused use relied on no approval, whatever its request named.
        ev.grants.clear();
        match self.record_then(vec![ev], extra, after).await {
            Ok(()) => err,
            Err(e) => e,
        }
    }

    /// A dataset of `subject` by id, or the subject's primary dataset.
    pub fn dataset(&self, subject: Subject, id: Option<&str>) -> Result<&Dataset> {
        match id {
            Some(id) => match self.catalog.dataset(id) {
                Some(d) if d.subject == subject => Ok(d),
                Some(d) => Err(Error::OtherSubject { dataset: id.to_owned(), holds: d.subject, asked: subject }),
                None => Err(Error::UnknownDataset(id.to_owned())),
            },
            None => self.catalog.primary(subject).ok_or_else(|| Error::UnknownDataset("(primary)".into())),
        }
    }

    /// Resolves `datasets=a,b` for a subject (default: all of its datasets).
    pub fn datasets(&self, subject: Subject, param: Option<&str>) -> Result<Vec<&Dataset>> {
        match param.map(str::trim).filter(|p| !p.is_empty()) {
            None => Ok(self.catalog.datasets_for(subject).collect()),
            Some(list) => {
                let mut out: Vec<&Dataset> = Vec::new();
                for id in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let ds = self.dataset(subject, Some(id))?;
                    if !out.iter().any(|d| d.id == ds.id) {
                        out.push(ds);
                    }
                }
                // `datasets=,,` asks for no dataset at all: a mistake to
                // say so, not a lookup of nothing (which would answer
                // `404 not_found`, as if the subject had no record).
                if out.is_empty() {
                    return Err(Error::InvalidValue("datasets names no dataset".into()));
                }
                Ok(out)
            }
        }
    }
}

/// Use cases over an in-memory store, for tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::Queries;
    use basedata_store::engine::mem::MemEngine;
    use basedata_store::{clock::ManualClock, commit::Committer, Catalog, Secret, Store};
    use std::sync::Arc;

    struct NoDirectory;

    impl crate::caller::Directory for NoDirectory {
        fn department(&self, _: &str) -> Option<Arc<crate::Department>> {
            None
        }
        fn all(&self) -> Vec<Arc<crate::Department>> {
            Vec::new()
        }
    }

    /// The use cases over `engine`, with the catalog of a dataset of
    /// several providers, a clock at 1 µs and the default policy.
    pub fn queries(engine: Arc<MemEngine>) -> Queries {
        let catalog = Catalog::from_toml_str(include_str!("../../store/catalog/several-providers.toml")).unwrap();
        let clock = Arc::new(ManualClock::new(1));
        let store = Arc::new(Store::open(engine, &Secret::from_bytes([3; 32]), Arc::new(catalog), clock).unwrap());
        let committer = Arc::new(Committer::start(store.clone(), 64));
        let (policy, calendar) = (crate::gov::Policy::default(), basedata_store::calendar::Calendar::builtin());
        Queries::new(store, committer, policy, calendar, Arc::new(NoDirectory)).unwrap()
    }
}
