//! Retention of the audit trail: entries older than the retention period
//! are removed from the oldest end of each chain the store holds, and each
//! chain is checked from where the removal stopped.
//!
//! The chain stays checkable because a removal only ever takes a prefix of
//! whole entries (a chunk of batch lines goes whole or stays whole) and
//! records where it stopped: the number and hash of the last entry removed
//! (the chain's *anchor*), in the same atomic write as the removal and the
//! entries' index keys. The check then starts from the anchor
//! ([`super::walk_chain`]), exactly as it starts from zeros on a chain that
//! was never cut. Entries are removed only while they still link to the
//! anchor before them, so a removal never hides an entry that was altered:
//! it stops there and the chain check goes on reporting it.
//!
//! Layout (`meta`): `audit_anchor` -> [`ChainHead`] for this node's chain;
//! `audit/pruned/<node>` -> [`ChainHead`] for another node's chain held
//! here (cluster mode), beside its [`super::remote::RemoteChain`], which
//! the log's applier keeps rewriting and so cannot carry it.
//!
//! Entries' times never decrease along their numbers (the writer's clock
//! is held monotonic), so the removal stops at the first entry at or after
//! the cut-off time. In cluster mode this node's entries are removed only
//! once the log has acknowledged them (`cluster/audit_shipped`), so that
//! every peer can still copy them.

use super::remote::{self, Shipped, META_SHIPPED};
use super::{load_head, stored_hash, ChainHead, Stored, META_AUDIT_ANCHOR};
use crate::codec::{decode, encode};
use crate::engine::{prefix_end, Cf, WriteBatch};
use crate::record::seq_key;
use crate::{Durability, Result, Store};

/// Uses removed per atomic write: a chunk entry of batch lines holds up to
/// a few thousand, so a step stays a few megabytes of deletions.
const STEP_USES: u64 = 4_096;

/// What one removal did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Uses removed from this node's chain.
    pub uses: u64,
    /// Where this node's chain now starts (zeros: it was never cut).
    pub anchor: ChainHead,
    /// Each other node's chain held here from which uses were removed:
    /// its name, the uses removed and where it now starts.
    pub remote: Vec<(String, u64, ChainHead)>,
}

impl Pruned {
    /// Uses removed from every chain.
    pub fn total(&self) -> u64 {
        self.uses + self.remote.iter().map(|(_, n, _)| n).sum::<u64>()
    }
}

/// Why a removal stopped before the cut-off time: the chain is damaged
/// there, and what is damaged is kept for the chain check to report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// `None`: this node's chain.
    pub node: Option<String>,
    pub seq: u64,
    pub why: String,
}

/// One chain as a removal sees it.
struct ChainRef<'n> {
    node: Option<&'n str>,
    anchor: ChainHead,
    /// No entry past this number is removed.
    limit: u64,
}

impl ChainRef<'_> {
    fn entry_key(&self, seq: u64) -> Vec<u8> {
        match self.node {
            None => seq_key(seq).to_vec(),
            Some(n) => remote::entry_key(n, seq),
        }
    }

    fn end_key(&self) -> Option<Vec<u8>> {
        match self.node {
            // Other nodes' chains sort after every local key.
            None => Some(vec![remote::REMOTE_ENTRY]),
            Some(n) => {
                let k = remote::entry_key(n, 0);
                prefix_end(&k[..k.len() - 8])
            }
        }
    }

    fn index_prefix(&self) -> Vec<u8> {
        self.node.map(remote::index_prefix).unwrap_or_default()
    }

    fn anchor_key(&self) -> Vec<u8> {
        match self.node {
            None => META_AUDIT_ANCHOR.to_vec(),
            Some(n) => remote::pruned_key(n),
        }
    }
}

impl Store {
    /// Removes from every chain held the entries dated before `before`
    /// (Unix microseconds), oldest first, in atomic synced steps; see the
    /// module's notes. Entries that no longer link to the chain before
    /// them stop the removal of their chain (reported in the second value).
    /// Meant for one caller at a time (the server's retention task).
    pub fn audit_prune(&self, before: i64) -> Result<(Pruned, Vec<Stopped>)> {
        let files = self.audit_files();
        let mut out = Pruned::default();
        let mut stopped = Vec::new();
        let head = load_head(&**self.engine())?;
        // In cluster mode, only what the log has acknowledged.
        let shipped: Option<Shipped> = self.engine().get(Cf::Meta, META_SHIPPED)?.map(|v| decode("audit shipping record", &v)).transpose()?;
        let limit = shipped.map_or(head.seq, |s| s.seq.min(head.seq));
        let local = ChainRef { node: None, anchor: files.local_anchor()?, limit };
        let (uses, anchor, stop) = self.prune_chain(&local, before)?;
        out.uses = uses;
        out.anchor = anchor;
        stopped.extend(stop);
        for (node, chain) in self.remote_chains()? {
            let held = ChainRef { node: Some(&node), anchor: files.remote_anchor(&node, chain.anchor)?, limit: chain.head.seq };
            let (uses, anchor, stop) = self.prune_chain(&held, before)?;
            if uses > 0 {
                out.remote.push((node.clone(), uses, anchor));
            }
            stopped.extend(stop);
        }
        Ok((out, stopped))
    }

    /// Removes the entries of one chain dated before `before`: the uses
    /// removed, the chain's new anchor, and why it stopped early, if it did.
    fn prune_chain(&self, chain: &ChainRef<'_>, before: i64) -> Result<(u64, ChainHead, Option<Stopped>)> {
        let engine = &**self.engine();
        let prefix = chain.index_prefix();
        let end = chain.end_key();
        let mut anchor = chain.anchor;
        let mut removed = 0u64;
        let stop = |seq: u64, why: String| Some(Stopped { node: chain.node.map(str::to_owned), seq, why });
        loop {
            let mut batch = WriteBatch::new();
            let mut step = 0u64;
            let mut next = anchor;
            let mut problem = None;
            // The scan is dropped before the step is written.
            for item in engine.scan(Cf::Audit, &chain.entry_key(anchor.seq + 1), end.as_deref(), false)? {
                let (k, v) = item?;
                let first = crate::record::seq_at_end(&k)?;
                if first != next.seq + 1 {
                    problem = stop(next.seq + 1, format!("entry {} is missing (next is {first})", next.seq + 1));
                    break;
                }
                let e = match Stored::decode(&v) {
                    Ok(e) => e,
                    Err(err) => {
                        problem = stop(first, format!("entry {first} is unreadable: {err}"));
                        break;
                    }
                };
                let last = first + e.span() - 1;
                if e.at() >= before || last > chain.limit {
                    break;
                }
                if stored_hash(&next.hash, first, &v) != Some(e.hash()) {
                    problem = stop(first, format!("entry {first} does not match its hash"));
                    break;
                }
                batch.delete(Cf::Audit, k.into_vec());
                for (ik, _) in e.index_entries(first) {
                    batch.delete(Cf::AuditIndex, [prefix.as_slice(), &ik].concat());
                }
                next = ChainHead { seq: last, hash: e.hash() };
                step += e.span();
                if step >= STEP_USES {
                    break;
                }
            }
            if step > 0 {
                batch.put(Cf::Meta, chain.anchor_key(), encode(&next));
                engine.write(batch, Durability::Sync)?;
                anchor = next;
                removed += step;
            }
            if problem.is_some() || step < STEP_USES {
                if let Some(p) = &problem {
                    tracing::warn!(node = ?p.node, seq = p.seq, why = %p.why, "audit retention stopped at a damaged entry");
                }
                return Ok((removed, anchor, problem));
            }
        }
    }
}

/// Refuses a retention period the law does not allow: audit logs are kept
/// at least six months (Cybersecurity Law, Art. 21).
pub fn check_retention_days(days: u32) -> std::result::Result<(), String> {
    if days < MIN_RETENTION_DAYS {
        return Err(format!(
            "audit_retention_days is {days}: audit logs must be kept at least six months ({MIN_RETENTION_DAYS} days)"
        ));
    }
    Ok(())
}

/// Six months, at their longest.
pub const MIN_RETENTION_DAYS: u32 = 184;

#[cfg(test)]
mod tests;
