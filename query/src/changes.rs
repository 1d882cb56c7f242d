//! The change feed: the change log in commit order, reduced to the
//! datasets the caller follows (its own, and those it holds an approved
//! subscription to for the purpose it states) and to the fields it may
//! read, at the time of reading, each delivered change audited. A long poll sleeps on the committer's
//! sequence watch instead of polling the store. `next` is the position to
//! resume from, so a consumer that stores it loses and repeats nothing.

use crate::access::{add_grants, decide, may_follow, relied_on, Access, GrantSource, Scope};
use crate::caller::Caller;
use crate::error::{Error, Result};
use crate::service::Queries;
use basedata_store::change_log::ChangesCut;
use basedata_store::{Action, Change, WriteBatch};
use std::time::Duration;

pub const MAX_LIMIT: usize = 1000;
pub const MAX_WAIT_SECONDS: u64 = 60;
/// Entries examined per request at most, so that a caller who may read
/// little of a busy log still gets a bounded, resumable answer.
const SCAN_CAP: usize = 10_000;

/// One page of the feed: changes with only their visible fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    pub changes: Vec<Change>,
    /// Resume after this sequence number.
    pub next: u64,
}

impl Queries {
    /// At most `limit` changes after `after` that the caller may read,
    /// waiting up to `wait` seconds for one when there is none yet.
    pub async fn changes(&self, caller: &Caller, purpose: &str, after: u64, limit: usize, wait: u64) -> Result<Page> {
        if limit == 0 || limit > MAX_LIMIT {
            return Err(Error::InvalidValue(format!("limit is 1 to {MAX_LIMIT}")));
        }
        if wait > MAX_WAIT_SECONDS {
            return Err(Error::InvalidValue(format!("wait is at most {MAX_WAIT_SECONDS} seconds")));
        }
        self.changes_held_after(after)?;
        if wait > 0 && self.store.last_seq() <= after {
            let mut rx = self.committer.watch_seq();
            let _ = tokio::time::timeout(Duration::from_secs(wait), rx.wait_for(|s| *s > after)).await;
        }
        let store = self.store.clone();
        let scanned = tokio::task::spawn_blocking(move || store.changes(after, SCAN_CAP)).await??;
        // Checked again after the scan: a cut made meanwhile (its mark is
        // raised before its deletion) may have removed what it skipped.
        self.changes_held_after(after)?;
        let mut next = after;
        let mut out = Vec::new();
        let mut events = Vec::new();
        // Per dataset: its subscription's grants, and each field's.
        type Relied<'c> = (Vec<String>, Vec<(&'c str, Vec<String>)>);
        let mut relied_by_dataset: std::collections::HashMap<&str, Relied<'_>> = std::collections::HashMap::new();
        for mut c in scanned {
            if out.len() >= limit {
                break;
            }
            next = c.seq;
            let Some(ds) = self.catalog.dataset(&c.dataset) else { continue };
            if !may_follow(caller, ds, &*self.grants) {
                continue;
            }
            let allowed = |f: &basedata_store::catalog::Field| decide(caller, ds, f, &*self.grants) == Access::Allowed;
            // As in lookups, a change the caller may see nothing of is not
            // shown: its mere presence would tell that a withheld record
            // exists (or changed) and when.
            if !ds.fields.iter().any(allowed) {
                continue;
            }
            let had_fields = !c.fields.is_empty();
            c.fields.retain(|(name, _)| ds.field(name).is_some_and(allowed));
            if had_fields && c.fields.is_empty() {
                continue;
            }
            let mut ev = caller.event(purpose, Action::ChangeFeed, Some(c.key));
            ev.datasets = vec![c.dataset.clone()];
            ev.fields = c.fields.iter().map(|(f, _)| format!("{}.{f}", c.dataset)).collect();
            // The subscription it came under (a provider follows its own
            // datasets without one), and the grants of the conditional
            // fields it shows. A page's changes are of a few datasets:
            // each dataset's grants are looked up once.
            let relied = relied_by_dataset.entry(ds.id.as_str()).or_insert_with(|| {
                let subscription = if caller.provides(ds) {
                    Vec::new()
                } else {
                    self.grants.covering(&caller.department.id, caller.purpose_code.as_deref(), &ds.id, Scope::Feed)
                };
                let by_field = ds.fields.iter().map(|f| (f.name.as_str(), relied_on(caller, ds, f, &*self.grants))).collect();
                (subscription, by_field)
            });
            ev.grants = relied.0.clone();
            for (name, _) in &c.fields {
                if let Some((_, ids)) = relied.1.iter().find(|(n, _)| n == name) {
                    add_grants(&mut ev.grants, ids.clone());
                }
            }
            ev.outcome = format!("seq {}", c.seq);
            events.push(ev);
            out.push(c);
        }
        if events.is_empty() {
            let mut ev = caller.event(purpose, Action::ChangeFeed, None);
            ev.outcome = format!("no changes after {after}");
            events.push(ev);
        }
        self.record(events, WriteBatch::new()).await?;
        Ok(Page { changes: out, next })
    }

    /// Refuses a read after `after` when the log no longer holds every
    /// change after it (see `basedata_store::change_log`).
    fn changes_held_after(&self, after: u64) -> Result<()> {
        let kept_after = self.store.changes_kept_after();
        if after < kept_after {
            return Err(Error::ChangesRemoved { after, kept_after });
        }
        Ok(())
    }

    /// Removes the changes older than `retention_days` from the change
    /// log (see `basedata_store::change_log`). Not a department's use of
    /// anyone's data, so not audited; the server logs it.
    pub async fn apply_change_retention(&self, retention_days: u32) -> Result<ChangesCut> {
        let before = basedata_store::clock::days_before(self.store.clock().now_micros(), retention_days);
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || store.changes_prune(before)).await??)
    }
}
