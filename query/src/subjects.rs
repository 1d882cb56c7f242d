//! The counter's use cases: look one subject up, or verify claimed values
//! of its record, each audited durably before it answers. Each does its own
//! read, decides access through `access`, and builds its own audit event.
//!
//! Hot path: key pseudonymization and point reads run inline on the
//! calling thread (microseconds, mostly cache hits); the only wait is the
//! group commit of the audit entry.

use crate::access::{add_grants, claim_rule, may_read, relied_on, unverifiable, ClaimRule};
use crate::claimed::Claimed;
use crate::claims;
use crate::caller::Caller;
use crate::error::{Error, Result};
use crate::lookup::{lookup, LookupResult};
use crate::service::Queries;
use crate::verify::{ClaimError, Claims, Outcome, Verdict};
use basedata_store::catalog::Dataset;
use basedata_store::{Action, SubjectKey, WriteBatch};
use serde_json::{Map, Value as Json};

/// A verification's answer: the verdicts and nothing else.
#[derive(Clone, Debug, PartialEq)]
pub struct Verification {
    pub dataset: String,
    pub outcome: Outcome,
    pub fields: Vec<(String, Verdict)>,
}

impl Queries {
    /// The records of `key` in `datasets` (default: all of its subject's),
    /// now or `as_of` a past time, reduced to what the caller may see.
    /// No record at all is [`Error::NotFound`], audited like a found one.
    pub async fn lookup(
        &self,
        caller: &Caller,
        purpose: &str,
        key: SubjectKey,
        datasets: Option<&str>,
        as_of: Option<i64>,
    ) -> Result<LookupResult> {
        let datasets = self.datasets(key.subject(), datasets)?;
        let mut ev = caller.event(purpose, Action::Lookup, Some(key));
        ev.datasets = datasets.iter().map(|d| d.id.clone()).collect();
        if let Some(ds) = datasets.iter().find(|d| !may_read(caller, d)) {
            let msg = format!("department {} may not read dataset {}", caller.department.id, ds.id);
            return Err(self.deny(ev, Error::Forbidden(msg)).await);
        }
        let result = lookup(&self.store, caller, &*self.grants, &key, &datasets, as_of)?;
        ev.datasets = result.datasets.iter().map(|d| d.dataset.clone()).collect();
        ev.fields = result.disclosed();
        ev.grants = result.grants.clone();
        // The trail keeps what the answer does not say: records that exist
        // but of which nothing could be shown.
        ev.outcome = match (result.datasets.is_empty(), result.hidden) {
            (false, _) => "found".into(),
            (true, 0) => "not_found".into(),
            (true, _) => "nothing_visible".into(),
        };
        ev.key_mapped = !result.datasets.is_empty() || result.hidden > 0;
        ev.pid = result.pid;
        self.record(vec![ev], WriteBatch::new()).await?;
        if result.datasets.is_empty() {
            return Err(Error::NotFound("no record for this key in the requested datasets that this department may see".into()));
        }
        Ok(result)
    }

    /// Verifies claimed `fields` of `key`'s record in `dataset` (default:
    /// the subject's primary dataset) without disclosing stored values.
    pub async fn verify(
        &self,
        caller: &Caller,
        purpose: &str,
        key: SubjectKey,
        dataset: Option<&str>,
        fields: &Map<String, Json>,
    ) -> Result<Verification> {
        self.verify_with(caller, purpose, key, dataset, |ds| Claims::parse(ds, fields)).await
    }

    /// [`Queries::verify`] of claims read in place from a request's body.
    pub async fn verify_claimed(
        &self,
        caller: &Caller,
        purpose: &str,
        key: SubjectKey,
        dataset: Option<&str>,
        fields: &Claimed<'_>,
    ) -> Result<Verification> {
        self.verify_with(caller, purpose, key, dataset, |ds| Claims::parse_texts(ds, fields.texts())).await
    }

    /// A verification of the claims `parse` reads against the dataset.
    async fn verify_with(
        &self,
        caller: &Caller,
        purpose: &str,
        key: SubjectKey,
        dataset: Option<&str>,
        parse: impl for<'d> FnOnce(&'d Dataset) -> std::result::Result<Claims<'d>, ClaimError>,
    ) -> Result<Verification> {
        let ds = self.dataset(key.subject(), dataset)?;
        let claims = parse(ds)?;
        let mut ev = caller.event(purpose, Action::Verify, Some(key));
        ev.datasets = vec![ds.id.clone()];
        ev.fields = claims.field_names();
        if !may_read(caller, ds) {
            let msg = format!("department {} may not verify against dataset {}", caller.department.id, ds.id);
            return Err(self.deny(ev, Error::Forbidden(msg)).await);
        }
        let dept = caller.department.id.as_str();
        let mut counted = Vec::new();
        // Named by the entry only if the verification is made.
        let mut relied = Vec::new();
        for (f, value) in claims.claimed() {
            add_grants(&mut relied, relied_on(caller, ds, f, &*self.grants));
            match claim_rule(caller, ds, f, &*self.grants) {
                ClaimRule::Free => {}
                ClaimRule::Counted => counted.push((f, value)),
                ClaimRule::Refused => return Err(self.deny(ev, Error::Forbidden(unverifiable(ds, f))).await),
            }
        }
        // Counted claims: check and count under the subject's lock, held
        // until the count is committed with the audit entry.
        let mut extra = WriteBatch::new();
        let counting = if counted.is_empty() {
            None
        } else {
            // Counted per subject: a credit code and the registration
            // number it is linked to share one count.
            let pid = self.store.home(&key)?.pid;
            let guard = self.claim_locks.lock(dept, &pid).await;
            let now = self.grants.now();
            match claims::admit(&self.store, self.claim_policy, dept, pid, ds, &counted, now)? {
                claims::Admission::Admitted(batch) => extra = batch,
                claims::Admission::Refused(flag, err) => return Err(self.deny_then(ev, err, flag, move || drop(guard)).await),
            }
            Some(guard)
        };
        let crate::verify::Checked { outcome, verdicts, found, pid } = crate::verify::verify_many(&self.store, &[(key, &ds.id)], &[&claims])?
            .pop()
            .ok_or_else(|| basedata_store::Error::Invalid("a verification has no result".into()))?;
        ev.outcome = outcome.as_str().to_owned();
        ev.key_mapped = found;
        ev.pid = pid;
        ev.grants = relied;
        // The count's lock is let go once the count is durable.
        self.record_then(vec![ev], extra, move || drop(counting)).await?;
        Ok(Verification {
            dataset: ds.id.clone(),
            outcome,
            fields: verdicts.into_iter().map(|(n, v)| (n.to_owned(), v)).collect(),
        })
    }
}
