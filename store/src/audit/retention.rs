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
//! A removal is named before it is made: the platform records a
//! `retention` entry whose outcome states each chain's cut ([`Cuts`]),
//! and only then removes up to it. The check accepts an anchor only as
//! far as a cut the kept chain names ([`AuditFiles::named_cuts`]); the
//! latest such entry is always newer than what any removal takes, so it is
//! kept. Deleting the oldest entries by hand and writing an anchor over
//! them is thus found as surely as before, and a crash between naming and
//! removing leaves a named cut not yet reached, which the next run makes.
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

use super::remote::{Shipped, META_SHIPPED};
use super::{linked_head, load_head, read_next, Action, AuditFiles, Chain, ChainCheck, ChainHead, Stored, SYSTEM_DEPARTMENT};
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
struct ChainRef {
    /// `None`: this node's.
    node: Option<String>,
    anchor: ChainHead,
    /// Where the chain was held from (zeros, or where a copy of another
    /// node's began): a cut up to there needs no naming.
    held: u64,
    /// No entry past this number is removed.
    limit: u64,
}

impl ChainRef {
    fn chain(&self) -> Chain<'_> {
        self.node.as_deref().map_or(Chain::Local, Chain::Remote)
    }
}

/// Where a removal cuts each chain: the last use it removes. The trail
/// names the cuts (a `retention` entry's outcome) before they are made,
/// and a chain check accepts an anchor only as far as a named cut.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cuts {
    /// This node's chain (`None`: nothing of it).
    pub local: Option<u64>,
    /// Other nodes' chains held here, by name.
    pub remote: Vec<(String, u64)>,
}

impl Cuts {
    /// The cuts as a `retention` entry's outcome names them, parts joined
    /// by `; ` ([`Cuts::parse`] reads them back).
    pub fn outcome(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = self.local {
            parts.push(format!("up to entry {s} of this node's chain"));
        }
        for (node, s) in &self.remote {
            parts.push(format!("up to entry {s} of node {node}'s chain"));
        }
        parts.join("; ")
    }

    /// The cuts an outcome names; other parts of its text are passed over.
    pub fn parse(outcome: &str) -> Cuts {
        let mut c = Cuts::default();
        for part in outcome.split("; ") {
            let Some((n, whose)) = part.strip_prefix("up to entry ").and_then(|r| r.split_once(' ')) else { continue };
            let Ok(n) = n.parse::<u64>() else { continue };
            if whose == "of this node's chain" {
                c.local = Some(n);
            } else if let Some(node) = whose.strip_prefix("of node ").and_then(|w| w.strip_suffix("'s chain")) {
                c.remote.push((node.to_owned(), n));
            }
        }
        c
    }

    /// Takes in `other`, keeping the furthest cut of each chain.
    fn widen(&mut self, other: Cuts) {
        self.local = self.local.max(other.local);
        for (node, n) in other.remote {
            match self.remote.iter_mut().find(|(m, _)| *m == node) {
                Some((_, held)) => *held = (*held).max(n),
                None => self.remote.push((node, n)),
            }
        }
    }

    /// The furthest cut named for a chain.
    fn of(&self, chain: Chain<'_>) -> u64 {
        match chain.node() {
            None => self.local.unwrap_or(0),
            Some(n) => self.remote.iter().find(|(m, _)| m == n).map_or(0, |(_, s)| *s),
        }
    }
}

/// The purpose the platform states for removing entries past retention
/// (`caller::retention_event`).
pub const RETENTION_PURPOSE: &str = "audit retention period";

impl<'a> AuditFiles<'a> {
    /// Every cut the `retention` entries of this node's chain name (found
    /// through the department index under `system`, from its anchor on),
    /// the furthest of each chain. Only entries the chain check walks
    /// count, so a cut is as trustworthy as the chain that names it.
    pub fn named_cuts(self) -> Result<Cuts> {
        let anchor = self.local_anchor()?.seq;
        let start = super::department_index_key(SYSTEM_DEPARTMENT, anchor + 1);
        let end = prefix_end(&start[..start.len() - 8]);
        let mut cuts = Cuts::default();
        let mut name = |e: Stored| {
            for line in e.into_lines() {
                if line.action == Action::Retention && line.department == SYSTEM_DEPARTMENT {
                    cuts.widen(Cuts::parse(&line.outcome));
                }
            }
        };
        // Entries after the index's position may not be indexed yet
        // (`tail`): read whole.
        let upto = super::tail::whole_upto(self.0)?;
        for item in self.0.scan(Cf::AuditIndex, &start, end.as_deref(), false)? {
            let (k, _) = item?;
            let first = crate::record::seq_at_end(&k)?;
            if first > upto {
                break;
            }
            let Some(v) = self.0.get(Cf::Audit, &seq_key(first))? else { continue };
            let Ok(e) = Stored::decode(&v) else { continue };
            name(e);
        }
        if upto < u64::MAX {
            for item in self.entries(Chain::Local, upto.max(anchor))? {
                let (_, v) = item?;
                let Ok(e) = Stored::decode(&v) else { continue };
                name(e);
            }
        }
        Ok(cuts)
    }
}

impl<'a> AuditFiles<'a> {
    /// `check` of `chain` that starts at `anchor` and was held from `held`
    /// (zeros, or where a copy began), failed if the entries between were
    /// removed without a named cut.
    pub(crate) fn within_named_cuts(self, check: ChainCheck, chain: Chain<'_>, anchor: ChainHead, held: u64) -> Result<ChainCheck> {
        if !check.ok || anchor.seq <= held {
            return Ok(check);
        }
        let named = self.named_cuts()?.of(chain);
        if anchor.seq > named {
            let problem = format!("entries up to {} are gone, but the trail names no removal past {named}", anchor.seq);
            return Ok(ChainCheck { ok: false, problem: Some(problem), ..check });
        }
        Ok(check)
    }
}

impl Store {
    /// Where removing the entries dated before `before` (Unix
    /// microseconds) would cut each chain held: the last use of the last
    /// entry before it that still links to the chain before it, whole
    /// entries only, and in cluster mode no further than the log has
    /// acknowledged of this node's chain. `None` when no chain's cut would
    /// move. Every chain cut before is named too, at its cut or where it
    /// now starts, so that the newest entry naming cuts names each chain's
    /// (a chain that has gone quiet would otherwise lose its naming entry
    /// to a later cut of this node's chain).
    pub fn audit_cuts(&self, before: i64) -> Result<Option<Cuts>> {
        let _cutting = self.audit_cut.lock().unwrap_or_else(|p| p.into_inner());
        let mut cuts = Cuts::default();
        let mut moves = false;
        for chain in self.chains()? {
            let cut = self.last_before(&chain, before)?;
            if self.maintenance_stopped() {
                // Its search may have ended early: nothing is named, and
                // the next start searches again.
                return Ok(None);
            }
            moves |= cut.is_some();
            let to = cut.unwrap_or(chain.anchor.seq);
            if to > chain.held {
                match chain.node {
                    None => cuts.local = Some(to),
                    Some(node) => cuts.remote.push((node, to)),
                }
            }
        }
        Ok(moves.then_some(cuts))
    }

    /// Removes from every chain held its entries up to its cut in `cuts`,
    /// oldest first, in atomic synced steps (see the module's notes);
    /// record the cuts in the trail first ([`Cuts::outcome`]), or the
    /// chain check refuses the anchors they leave. Entries that no longer
    /// link to the chain before them stop the removal of their chain
    /// (reported in the second value).
    pub fn audit_prune(&self, cuts: &Cuts) -> Result<(Pruned, Vec<Stopped>)> {
        let _cutting = self.audit_cut.lock().unwrap_or_else(|p| p.into_inner());
        // The keys removed here must be in the engine, or the tail would
        // put them back (see `tail`).
        self.index_tail().settle()?;
        let mut out = Pruned::default();
        let mut stopped = Vec::new();
        for mut chain in self.chains()? {
            chain.limit = chain.limit.min(cuts.of(chain.chain()));
            let (uses, anchor, stop) = self.prune_chain(&chain)?;
            stopped.extend(stop);
            match chain.node {
                None => (out.uses, out.anchor) = (uses, anchor),
                Some(node) if uses > 0 => out.remote.push((node, uses, anchor)),
                Some(_) => {}
            }
        }
        Ok((out, stopped))
    }

    /// Every chain held, each from its anchor, with how far it may be cut.
    fn chains(&self) -> Result<Vec<ChainRef>> {
        let files = self.audit_files();
        let head = load_head(&**self.engine())?;
        // In cluster mode, only what the log has acknowledged.
        let shipped: Option<Shipped> = self.engine().get(Cf::Meta, META_SHIPPED)?.map(|v| decode("audit shipping record", &v)).transpose()?;
        let limit = shipped.map_or(head.seq, |s| s.seq.min(head.seq));
        let mut out = vec![ChainRef { node: None, anchor: files.local_anchor()?, held: 0, limit }];
        for (node, chain) in self.remote_chains()? {
            let anchor = files.anchor(Chain::Remote(&node), chain.anchor)?;
            out.push(ChainRef { node: Some(node), anchor, held: chain.anchor.seq, limit: chain.head.seq });
        }
        Ok(out)
    }

    /// The last use of the last whole entry of `chain` dated before
    /// `before` and within its limit, if any is past its anchor. A gap, an
    /// unreadable entry or one that does not link to the one before ends
    /// the cut before it: no cut is named past damage, which stays for the
    /// chain check to report.
    fn last_before(&self, chain: &ChainRef, before: i64) -> Result<Option<u64>> {
        let mut last = chain.anchor;
        let mut since_look = 0u64;
        for item in self.audit_files().entries(chain.chain(), chain.anchor.seq)? {
            if since_look >= STEP_USES {
                if self.maintenance_stopped() {
                    break;
                }
                since_look = 0;
            }
            let (seq, v) = match item {
                Ok(entry) => entry,
                // A key that names no number ends the cut, as damage does.
                Err(crate::Error::Corrupt { .. }) => break,
                Err(e) => return Err(e),
            };
            let Ok(e) = read_next(&last, seq, &v) else { break };
            if e.at() >= before || last.seq + e.span() > chain.limit {
                break;
            }
            let Ok(next) = linked_head(&last, seq, &v, &e) else { break };
            last = next;
            since_look += e.span();
        }
        Ok((last.seq > chain.anchor.seq).then_some(last.seq))
    }

    /// Removes the entries of one chain up to its limit: the uses
    /// removed, the chain's new anchor, and why it stopped early at an
    /// entry, if it did. It also stops, between steps, once the store's
    /// upkeep is stopped ([`Store::stop_maintenance`]).
    fn prune_chain(&self, chain: &ChainRef) -> Result<(u64, ChainHead, Option<Stopped>)> {
        let engine = &**self.engine();
        let prefix = chain.chain().index_prefix();
        let mut anchor = chain.anchor;
        let mut removed = 0u64;
        loop {
            if self.maintenance_stopped() {
                return Ok((removed, anchor, None));
            }
            let mut batch = WriteBatch::new();
            let mut step = 0u64;
            let mut next = anchor;
            let mut problem = None;
            // The scan is dropped before the step is written.
            for item in self.audit_files().entries(chain.chain(), anchor.seq)? {
                let (first, v) = item?;
                let stop = |why| Some(Stopped { node: chain.node.clone(), seq: next.seq + 1, why });
                let e = match read_next(&next, first, &v) {
                    Ok(e) => e,
                    Err(why) => {
                        problem = stop(why);
                        break;
                    }
                };
                if first + e.span() - 1 > chain.limit {
                    break;
                }
                let after = match linked_head(&next, first, &v, &e) {
                    Ok(h) => h,
                    Err(why) => {
                        problem = stop(why);
                        break;
                    }
                };
                batch.delete(Cf::Audit, chain.chain().entry_key(first));
                for (ik, _) in e.index_entries(first) {
                    batch.delete(Cf::AuditIndex, [prefix.as_slice(), &ik].concat());
                }
                next = after;
                step += e.span();
                if step >= STEP_USES {
                    break;
                }
            }
            if step > 0 {
                batch.put(Cf::Meta, chain.chain().anchor_key(), encode(&next));
                engine.write(batch, Durability::Sync)?;
                anchor = next;
                removed += step;
            }
            if problem.is_some() || step < STEP_USES {
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
    if days > crate::clock::MAX_RETENTION_DAYS {
        return Err(format!(
            "audit_retention_days is {days}: at most {} (leave it out to keep entries for ever)",
            crate::clock::MAX_RETENTION_DAYS
        ));
    }
    Ok(())
}

/// Six months, at their longest.
pub const MIN_RETENTION_DAYS: u32 = 184;

#[cfg(test)]
pub(crate) mod tests;
