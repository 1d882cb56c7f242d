//! Lookups: the records of one subject in the requested datasets, current
//! or as of a past moment, reduced to the fields the caller may see, with
//! every withheld field listed and why.
//!
//! An answer must not tell what it withholds: the withheld fields are
//! those of every requested dataset, whether or not the subject has a
//! record there, and a record of which the caller may see nothing is left
//! out as if it did not exist. So a person with an adoption record the
//! caller may not see is answered exactly like a person without one.

use crate::access::{add_grants, decide, relied_on, Access, GrantSource, Withheld};
use crate::caller::Caller;
use basedata_store::catalog::{Dataset, Share};
use basedata_store::pseudo::Pid;
use basedata_store::{Result, Store, SubjectKey, Value};

#[derive(Clone, Debug, PartialEq)]
pub struct DatasetView {
    pub dataset: String,
    pub version: u64,
    /// Commit time, Unix microseconds.
    pub updated_at: i64,
    pub fields: Vec<(String, Value)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WithheldField {
    pub dataset: String,
    pub field: String,
    pub share: Share,
    pub reason: Withheld,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct LookupResult {
    pub datasets: Vec<DatasetView>,
    pub withheld: Vec<WithheldField>,
    /// Records found of which the caller may see nothing: not shown, only
    /// counted for the audit trail.
    pub hidden: usize,
    /// The key's own pseudonym (never its linked home's), for the audit
    /// entry, so that the writer need not hash the key again.
    pub pid: Option<Pid>,
    /// The grants the disclosed values were read under (ids), for the
    /// audit entry.
    pub grants: Vec<String>,
}

impl LookupResult {
    /// `dataset.field` of every disclosed value, for the audit trail.
    pub fn disclosed(&self) -> Vec<String> {
        self.datasets
            .iter()
            .flat_map(|d| d.fields.iter().map(move |(f, _)| format!("{}.{f}", d.dataset)))
            .collect()
    }
}

/// Looks `key` up in `datasets` (all of the same subject as the key).
pub fn lookup(
    store: &Store,
    caller: &Caller,
    grants: &dyn GrantSource,
    key: &SubjectKey,
    datasets: &[&Dataset],
    as_of: Option<i64>,
) -> Result<LookupResult> {
    let ids: Vec<&str> = datasets.iter().map(|d| d.id.as_str()).collect();
    let home = store.home(key)?;
    let records = store.get_all_under(&home.pid, Some(&ids), as_of)?;
    // The key's own pseudonym, at hand unless its records are another's.
    let pid = if home.linked { store.pseudonym(key) } else { home.pid };
    let mut out = LookupResult { pid: Some(pid), ..LookupResult::default() };
    for ds in datasets {
        for f in &ds.fields {
            if let Access::Withheld(reason) = decide(caller, ds, f, grants) {
                out.withheld.push(WithheldField { dataset: ds.id.clone(), field: f.name.clone(), share: f.share, reason });
            }
        }
    }
    for rec in records {
        let Some(ds) = datasets.iter().find(|d| d.id == rec.dataset) else { continue };
        let mut visible = Vec::with_capacity(rec.fields.len());
        for f in &ds.fields {
            if let Access::Allowed = decide(caller, ds, f, grants) {
                if let Some(v) = rec.field(&f.name) {
                    visible.push((f.name.clone(), v.clone()));
                    add_grants(&mut out.grants, relied_on(caller, ds, f, grants));
                }
            }
        }
        if visible.is_empty() {
            out.hidden += 1;
            continue;
        }
        out.datasets.push(DatasetView { dataset: rec.dataset, version: rec.version, updated_at: rec.committed_at, fields: visible });
    }
    Ok(out)
}
