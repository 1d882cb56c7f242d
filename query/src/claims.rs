//! Distinct-claim limits: a verdict on a claimed value of a field that a
//! few guesses would reveal (a code list, a boolean, a date in a narrow
//! range, text a short word list covers: the catalog's `few_values`)
//! narrows the field down, so a department that may not read such a field
//! could learn it from a handful of verifications. Such claims are counted
//! per department, subject and field: within a period a department may make
//! a few distinct claims (the value a person states, and a corrected one);
//! the next distinct claim is refused, audited as `denied` with the code
//! `claim_limit`, and kept as a flag for auditors. Repeating a claim
//! already counted is free: it tells nothing new.
//!
//! Layout (`gov` family, values behind the format marker):
//! `c/<department>\0<pid><dataset>\0<field>` -> [`Ledger`] (the claims'
//! keyed digests and times, never the values: a plain hash of a value of
//! few possibilities would be read back by trying each);
//! `cr/<department>\0<at BE><pid><dataset>\0<field>` -> [`Flag`], one per
//! refusal.

use crate::error::{Error, Result};
use basedata_store::catalog::{Dataset, Field};
use basedata_store::codec::{decode, encode};
use basedata_store::engine::prefix_end;
use basedata_store::{Cf, Engine, Pid, Store, WriteBatch};
use std::hash::{Hash, Hasher};

/// How many distinct claims of one field of one subject a department may
/// make, and over how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClaimPolicy {
    pub distinct: u32,
    pub period_days: u32,
}

impl Default for ClaimPolicy {
    /// Two: the value a person states, and one correction of a mistyped
    /// claim; a third different value within a month is guessing.
    fn default() -> Self {
        ClaimPolicy { distinct: 2, period_days: 30 }
    }
}

impl ClaimPolicy {
    fn period_micros(&self) -> i64 {
        i64::from(self.period_days) * 86_400_000_000
    }
}

/// The counted claims of one department, subject and field.
#[derive(Clone, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Ledger {
    /// (keyed digest of the canonical claimed value, first claimed at).
    pub claims: Vec<([u8; 16], i64)>,
}

/// A refused claim, kept for auditors.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Flag {
    pub department: String,
    pub at: i64,
    pub pid: [u8; 16],
    pub dataset: String,
    pub field: String,
}

fn ledger_key(department: &str, pid: &Pid, dataset: &str, field: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + department.len() + 1 + 16 + dataset.len() + 1 + field.len());
    k.extend_from_slice(b"c/");
    k.extend_from_slice(department.as_bytes());
    k.push(0);
    k.extend_from_slice(pid.as_bytes());
    k.extend_from_slice(dataset.as_bytes());
    k.push(0);
    k.extend_from_slice(field.as_bytes());
    k
}

fn flag_prefix(department: &str) -> Vec<u8> {
    let mut k = b"cr/".to_vec();
    k.extend_from_slice(department.as_bytes());
    k.push(0);
    k
}

/// What the ledger says of a verification's counted claims.
#[derive(Debug)]
pub enum Admission {
    /// Within the limit: the write that records the new claims, to be
    /// committed with the verification's audit entry.
    Admitted(WriteBatch),
    /// Over the limit on `field`: the write that keeps the flag, to be
    /// committed with the refusal's audit entry, and the refusal.
    Refused(WriteBatch, Error),
}

/// Serializes the check-and-count of one department and subject, so that
/// concurrent verifications cannot both take the last free claim.
#[derive(Debug)]
pub struct ClaimLocks {
    stripes: Vec<std::sync::Arc<tokio::sync::Mutex<()>>>,
}

impl Default for ClaimLocks {
    fn default() -> Self {
        ClaimLocks { stripes: (0..64).map(|_| Default::default()).collect() }
    }
}

impl ClaimLocks {
    /// The stripe of `department` and `pid`, locked: an owned guard, so
    /// that it can be held until the count is committed even when the
    /// request that took it is given up (see `Queries::record_then`).
    pub async fn lock(&self, department: &str, pid: &Pid) -> tokio::sync::OwnedMutexGuard<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (department, pid.as_bytes()).hash(&mut h);
        self.stripes[(h.finish() % self.stripes.len() as u64) as usize].clone().lock_owned().await
    }
}

/// Counts `claims` (fields under the `Counted` rule, with their canonical
/// values) of `department` about the subject of pseudonym `pid` at time `now`. The caller holds
/// the [`ClaimLocks`] stripe of the department and subject until the
/// returned write is committed.
pub fn admit(
    store: &Store,
    policy: ClaimPolicy,
    department: &str,
    pid: Pid,
    dataset: &Dataset,
    claims: &[(&Field, &[u8])],
    now: i64,
) -> Result<Admission> {
    let engine = &**store.engine();
    let since = now.saturating_sub(policy.period_micros());
    let mut batch = WriteBatch::new();
    for (field, value) in claims {
        let k = ledger_key(department, &pid, &dataset.id, &field.name);
        let mut ledger: Ledger = match engine.get(Cf::Gov, &k)? {
            Some(b) => decode("claim ledger", &b)?,
            None => Ledger::default(),
        };
        ledger.claims.retain(|(_, at)| *at > since);
        let digest = store.digest(&[department.as_bytes(), dataset.id.as_bytes(), field.name.as_bytes(), value]);
        if ledger.claims.iter().any(|(d, _)| *d == digest) {
            continue;
        }
        if ledger.claims.len() >= policy.distinct as usize {
            let mut flag_batch = WriteBatch::new();
            let flag =
                Flag { department: department.to_owned(), at: now, pid: pid.0, dataset: dataset.id.clone(), field: field.name.clone() };
            let mut fk = flag_prefix(department);
            fk.extend_from_slice(&now.to_be_bytes());
            fk.extend_from_slice(pid.as_bytes());
            fk.extend_from_slice(dataset.id.as_bytes());
            fk.push(0);
            fk.extend_from_slice(field.name.as_bytes());
            flag_batch.put(Cf::Gov, fk, encode(&flag));
            let err = Error::ClaimLimit {
                message: format!(
                    "this department may not read field {} of dataset {}, and has made {} different claims of it for this \
                     subject in the last {} days, its limit",
                    field.name, dataset.id, policy.distinct, policy.period_days
                ),
                dataset: dataset.id.clone(),
                field: field.name.clone(),
                distinct: policy.distinct,
                period_days: policy.period_days,
            };
            return Ok(Admission::Refused(flag_batch, err));
        }
        ledger.claims.push((digest, now));
        batch.put(Cf::Gov, k, encode(&ledger));
    }
    Ok(Admission::Admitted(batch))
}

/// How many claims of `department` were refused at `from..=to` (Unix
/// microseconds): the flags are counted by key, not decoded.
pub fn refusals(engine: &dyn Engine, department: &str, from: i64, to: i64) -> Result<usize> {
    // Times are stored big-endian, in numeric order from 1970 on; an
    // earlier start would sort after every stored one.
    let from = from.max(0);
    if to < from {
        return Ok(0);
    }
    let p = flag_prefix(department);
    let mut start = p.clone();
    start.extend_from_slice(&from.to_be_bytes());
    let end = match to.checked_add(1) {
        Some(t) => {
            let mut e = p.clone();
            e.extend_from_slice(&t.to_be_bytes());
            Some(e)
        }
        None => prefix_end(&p),
    };
    let mut n = 0;
    for item in engine.scan(Cf::Gov, &start, end.as_deref(), false)? {
        item?;
        n += 1;
    }
    Ok(n)
}
