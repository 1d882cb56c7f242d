//! Other nodes' audit chains (cluster mode), kept beside this node's own so
//! that an auditor on any node sees every node's uses and can check every
//! chain link by link.
//!
//! Each node ships its own entries through the replicated log as they are
//! stored (their exact stored bytes: the chain hashes those), with the
//! sealed key mapping of each entry's subject so the receiver can show the
//! key. A receiver appends them to its copy of that node's chain only as
//! the chain's next entries: a duplicate is skipped, a gap or an entry that
//! does not link to the one before is refused, so a copy is never a broken
//! chain.
//!
//! Layout, in the families of the local chain but under keys that cannot
//! collide with it (local keys are 8-byte big-endian sequence numbers below
//! 2^56, and local index keys start with `k`, `d` or `t`):
//! - `audit`: `0xFF node 0x00 seq` -> the entry's stored bytes, so a scan
//!   of the local chain stops before the first `0xFF`;
//! - `audit_index`: `'R' node 0x00` followed by the local layout's index
//!   key (`'k' pid seq`, `'d' department 0x00 seq`, `'t' at seq`);
//! - `meta`: `audit/remote/<node>` -> [`RemoteChain`].
//!
//! A node name is 1 to 64 characters of ASCII letters, digits, `-` and `_`
//! (it is also a token of the log's subjects).

use super::{stored_hash, AuditFiles, ChainCheck, ChainHead, Stored, StoredEntry};
use crate::codec::{decode, encode, encode_marked, marked_body, FORMAT_V1};
use crate::engine::{prefix_end, Cf, WriteBatch};
use crate::record::{seq_from_key, seq_key};
use crate::{Pid, Result, Store};
use std::collections::{BTreeMap, HashSet};

/// First byte of another node's entry keys in `audit`.
pub const REMOTE_ENTRY: u8 = 0xFF;
/// First byte of another node's index keys in `audit_index`.
const REMOTE_INDEX: u8 = b'R';
/// Prefix of the per-node chain records in `meta`.
pub const META_REMOTE: &[u8] = b"audit/remote/";

/// The key of another node's entry `seq` in `audit`.
pub fn entry_key(node: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(node.len() + 10);
    k.push(REMOTE_ENTRY);
    k.extend_from_slice(node.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq_key(seq));
    k
}

/// What another node's index keys start with in `audit_index`.
pub fn index_prefix(node: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(node.len() + 2);
    k.push(REMOTE_INDEX);
    k.extend_from_slice(node.as_bytes());
    k.push(0);
    k
}

fn meta_key(node: &str) -> Vec<u8> {
    [META_REMOTE, node.as_bytes()].concat()
}

/// Prefix of the anchor of another node's chain after entries were
/// removed from it for the retention period (`meta`; see
/// `audit::retention`): apart from [`RemoteChain`], which the log's
/// applier keeps rewriting from what it holds in memory.
const META_PRUNED: &[u8] = b"audit/pruned/";

pub(crate) fn pruned_key(node: &str) -> Vec<u8> {
    [META_PRUNED, node.as_bytes()].concat()
}

/// Whether `node` may name a node: it is part of storage keys and of the
/// log's subjects.
pub fn valid_node_name(node: &str) -> bool {
    (1..=64).contains(&node.len()) && node.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Where this node's shipping of its own chain stands (`meta`,
/// `cluster/audit_shipped`): the last entry the log has acknowledged.
pub const META_SHIPPED: &[u8] = b"cluster/audit_shipped";

/// This node's shipping record: its name, where its chain as shipped
/// starts (see [`RemoteChain`]) and the last entry acknowledged.
#[derive(Clone, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Shipped {
    pub node: String,
    pub anchor: ChainHead,
    pub seq: u64,
}

/// A node's chain as held here: where the copy starts (`anchor`: the
/// sequence number and hash just before its first entry, zeros for a chain
/// held from its start) and its last entry.
///
/// A chain starts after an anchor when its node was seeded from a peer's
/// backup: the entries before are the peer's, shipped under the peer's name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct RemoteChain {
    pub anchor: ChainHead,
    pub head: ChainHead,
}

/// Every other node's chain held here, by node name.
pub type RemoteHeads = BTreeMap<String, RemoteChain>;

/// One entry as shipped: its stored bytes, and for each of its uses (one,
/// or a chunk's batch lines) about a subject the sealed key mapping of its
/// pseudonym (as in `keymap`), so the receiver can show the key. Sealed
/// under the secret the nodes share, a mapping opens only against that
/// pseudonym.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct ShippedEntry {
    pub bytes: Vec<u8>,
    /// One per use of the entry, in order.
    pub mappings: Vec<Option<Vec<u8>>>,
}

/// A run of consecutive entries of one node's chain, `first` onwards: the
/// plaintext of one log message (sealed by the transport).
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct ShippedBatch {
    pub node: String,
    /// Where the node's chain, as shipped, starts (see [`RemoteChain`]).
    pub anchor: ChainHead,
    pub first: u64,
    /// The sequence numbers the entries take (a chunk of batch lines takes one a line).
    pub uses: u64,
    pub entries: Vec<ShippedEntry>,
}

/// Format marker of [`ShippedBatch`] since entries may be chunks of batch lines.
const SHIPPED_FORMAT_V2: u8 = 2;

/// A shipped entry as format 1 sent it: one use per entry.
#[derive(bincode::Decode)]
struct ShippedEntryV1 {
    bytes: Vec<u8>,
    mapping: Option<Vec<u8>>,
}

/// A message as format 1 sent it (still read: the log keeps old messages).
#[derive(bincode::Decode)]
struct ShippedBatchV1 {
    node: String,
    anchor: ChainHead,
    first: u64,
    entries: Vec<ShippedEntryV1>,
}

impl ShippedBatch {
    /// The sequence number of the last use (`first - 1` when empty).
    pub fn last(&self) -> u64 {
        (self.first + self.uses).saturating_sub(1)
    }

    /// Versioned bytes (marker, then bincode).
    pub fn encode(&self) -> Vec<u8> {
        encode_marked(SHIPPED_FORMAT_V2, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<ShippedBatch> {
        let (marker, body) = marked_body("shipped audit entries", bytes)?;
        match marker {
            SHIPPED_FORMAT_V2 => body.decode(),
            FORMAT_V1 => {
                let v1: ShippedBatchV1 = body.decode()?;
                Ok(ShippedBatch {
                    node: v1.node,
                    anchor: v1.anchor,
                    first: v1.first,
                    uses: v1.entries.len() as u64,
                    entries: v1.entries.into_iter().map(|e| ShippedEntry { bytes: e.bytes, mappings: vec![e.mapping] }).collect(),
                })
            }
            m => Err(crate::Error::Corrupt { what: "shipped audit entries", msg: format!("unknown format marker {m}") }),
        }
    }

    /// The time of the first entry, the oldest (Unix microseconds).
    pub fn oldest_at(&self) -> Option<i64> {
        self.entries.first().and_then(|e| Stored::decode(&e.bytes).ok()).map(|e| e.at())
    }
}

/// Why shipped entries cannot be appended: the applier stops there rather
/// than store a broken chain.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("audit entries of node {node}: entry {expected} is next, the message starts at {found} (a gap)")]
    Gap { node: String, expected: u64, found: u64 },
    #[error("audit entry {seq} of node {node} is refused: {why}")]
    Broken { node: String, seq: u64, why: String },
    #[error("{0}")]
    Store(#[from] crate::Error),
}

/// What [`Store::remote_append`] did with a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    pub appended: usize,
    /// Entries the chain held already (a message sent again).
    pub duplicates: usize,
}

/// The sealed key mappings shipped with entries, one per pseudonym, with
/// the sequence number of the use each came with.
#[derive(Default)]
pub(crate) struct Carried<'b> {
    mapped: HashSet<Pid>,
    mappings: Vec<(u64, Pid, &'b Vec<u8>)>,
}

impl<'b> Carried<'b> {
    /// Takes the mappings of entry `e`, stored at `first`, as `shipped` carries them.
    pub(crate) fn carry(&mut self, e: &Stored, first: u64, shipped: &'b ShippedEntry) {
        for (i, pid) in e.subjects().into_iter().enumerate() {
            if let (Some(pid), Some(Some(sealed))) = (pid, shipped.mappings.get(i)) {
                if self.mapped.insert(pid) {
                    self.mappings.push((first + i as u64, pid, sealed));
                }
            }
        }
    }

    /// Puts into `batch` the mappings `store` lacks, each opened against
    /// its pseudonym first, reading which it holds at once (a message of
    /// batch comparisons names a thousand subjects). One that does not
    /// open is returned with its use's sequence number and why.
    pub(crate) fn put_missing(&self, store: &Store, batch: &mut WriteBatch) -> Result<Option<(u64, String)>> {
        let keys: Vec<&[u8]> = self.mappings.iter().map(|(_, pid, _)| pid.0.as_slice()).collect();
        for ((seq, pid, sealed), held) in self.mappings.iter().zip(store.engine().multi_get(Cf::KeyMap, &keys)?) {
            if held.is_none() {
                if let Err(err) = store.open_mapping(pid, sealed) {
                    return Ok(Some((*seq, format!("its key mapping: {err}"))));
                }
                batch.put(Cf::KeyMap, pid.0.to_vec(), (*sealed).clone());
            }
        }
        Ok(None)
    }
}

impl Store {
    /// This node's entries `from..=to` for shipping: at most `max_entries`,
    /// and no more once `max_bytes` of entries are taken (at least one).
    /// A missing local entry is an error: a chain is shipped whole.
    pub fn audit_ship_batch(
        &self,
        node: &str,
        anchor: ChainHead,
        from: u64,
        to: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<ShippedBatch> {
        let mut out = ShippedBatch { node: node.to_owned(), anchor, first: from, uses: 0, entries: Vec::new() };
        if from > to {
            return Ok(out);
        }
        let end = seq_key(to.saturating_add(1));
        let mut bytes = 0;
        for item in self.engine().scan(Cf::Audit, &seq_key(from), Some(&end), false)? {
            let (k, v) = item?;
            let seq = seq_from_key(&k)?;
            let expected = from + out.uses;
            if seq != expected {
                return Err(crate::Error::Corrupt { what: "audit chain", msg: format!("entry {expected} is missing (next is {seq})") });
            }
            let e = Stored::decode(&v)?;
            let pids = e.subjects();
            let keys: Vec<&[u8]> = pids.iter().flatten().map(|p| p.0.as_slice()).collect();
            let mut found = self.engine().multi_get(Cf::KeyMap, &keys)?.into_iter();
            let mappings: Vec<Option<Vec<u8>>> = pids.iter().map(|p| p.and_then(|_| found.next().flatten())).collect();
            bytes += v.len() + mappings.iter().flatten().map(Vec::len).sum::<usize>();
            out.uses += mappings.len() as u64;
            out.entries.push(ShippedEntry { bytes: v.into_vec(), mappings });
            if out.entries.len() >= max_entries || bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// Where shipping this store's chain as node `node` stands. A store
    /// whose record names another node was seeded from that node's backup
    /// (or renamed): its local chain up to now is that node's, which this
    /// store adopts as a copy of the other's chain (the other ships those
    /// entries itself, and this store goes on reading them from the log),
    /// and its own chain, as shipped, starts after it. The new record is
    /// written before it is returned, so the anchor never moves.
    pub fn audit_shipped(&self, node: &str) -> Result<Shipped> {
        let prev: Option<Shipped> = match self.engine().get(Cf::Meta, META_SHIPPED)? {
            Some(v) => Some(decode("audit shipping record", &v)?),
            None => None,
        };
        match prev {
            Some(s) if s.node == node => Ok(s),
            // Entries removed for retention before the log took any are
            // not shipped: the chain, as shipped, starts after them.
            // The record is kept at once (under the lock removals take), so
            // that no removal takes what the log has not acknowledged.
            None => {
                let _cutting = self.audit_cut.lock().unwrap_or_else(|p| p.into_inner());
                let kept = self.audit_files().local_anchor()?;
                let s = Shipped { node: node.to_owned(), anchor: kept, seq: kept.seq };
                self.record_audit_shipped(&s)?;
                Ok(s)
            }
            Some(other) => {
                let head = self.audit_head()?;
                self.adopt_local_chain(&other, head)?;
                let s = Shipped { node: node.to_owned(), anchor: head, seq: head.seq };
                self.record_audit_shipped(&s)?;
                Ok(s)
            }
        }
    }

    /// Copies the local entries after `prev.anchor` (or after the last one
    /// removed for retention, if later) up to `head` as node
    /// `prev.node`'s chain, unless a copy of that chain is held already.
    fn adopt_local_chain(&self, prev: &Shipped, head: ChainHead) -> Result<()> {
        if !valid_node_name(&prev.node) || self.engine().get(Cf::Meta, &meta_key(&prev.node))?.is_some() {
            return Ok(());
        }
        // No removal for retention runs while the chain is copied.
        let _cutting = self.audit_cut.lock().unwrap_or_else(|p| p.into_inner());
        tracing::info!(node = %prev.node, entries = head.seq - prev.anchor.seq, "keeping the audit chain of the node this store was copied from");
        let mut heads = RemoteHeads::new();
        // Entries removed here for retention are not copied.
        let kept = self.audit_files().local_anchor()?;
        let anchor = if kept.seq > prev.anchor.seq { kept } else { prev.anchor };
        let mut from = anchor.seq + 1;
        while from <= head.seq {
            let b = self.audit_ship_batch(&prev.node, anchor, from, head.seq, 1_000, 1 << 20)?;
            if b.entries.is_empty() {
                break;
            }
            let mut wb = WriteBatch::new();
            // Their uses were counted here as this store's own.
            self.remote_append(&mut heads, None, &b, &mut wb).map_err(|e| crate::Error::Corrupt { what: "audit chain", msg: e.to_string() })?;
            self.engine().write(wb, crate::Durability::Sync)?;
            from = b.last() + 1;
        }
        Ok(())
    }

    /// Records that the log has acknowledged this node's entries up to
    /// `s.seq` (synced: a restart resumes after it).
    pub fn record_audit_shipped(&self, s: &Shipped) -> Result<()> {
        let mut b = WriteBatch::new();
        b.put(Cf::Meta, META_SHIPPED.to_vec(), encode(s));
        self.engine().write(b, crate::Durability::Sync)
    }

    /// Every other node's chain held here, in name order.
    pub fn remote_chains(&self) -> Result<Vec<(String, RemoteChain)>> {
        self.audit_files().remote_chains()
    }

    /// See [`AuditFiles::audit_verify_remote`].
    pub fn audit_verify_remote(&self) -> Result<Vec<(String, ChainCheck)>> {
        self.audit_files().audit_verify_remote()
    }
}

impl<'a> AuditFiles<'a> {
    /// Every other node's chain held here, in name order.
    pub fn remote_chains(self) -> Result<Vec<(String, RemoteChain)>> {
        let end = prefix_end(META_REMOTE);
        let mut out = Vec::new();
        for item in self.0.scan(Cf::Meta, META_REMOTE, end.as_deref(), false)? {
            let (k, v) = item?;
            let node = String::from_utf8_lossy(&k[META_REMOTE.len()..]).into_owned();
            out.push((node, decode("remote audit chain", &v)?));
        }
        Ok(out)
    }
}

impl Store {
    /// [`Store::remote_chains`] as a map, for [`Store::remote_append`].
    pub fn remote_heads(&self) -> Result<RemoteHeads> {
        Ok(self.remote_chains()?.into_iter().collect())
    }

    /// Puts into `batch` the entries of `b` that extend its node's chain
    /// (`heads`, which this advances: the caller keeps it across batches
    /// written in order, and reloads it after a failed write), their index
    /// keys, the key mappings this store lacks, the chain's new head and
    /// whatever `each_new` puts for each new entry, given its uses (the
    /// counters of uses other nodes answered, `usage::RemoteUsage`: once
    /// per use, as duplicates are not passed to it). Entries the chain
    /// holds already are skipped; a gap, an entry that does not link to
    /// the one before or a mapping of another pseudonym is refused and
    /// `batch` must then be dropped.
    pub fn remote_append(
        &self,
        heads: &mut RemoteHeads,
        mut each_new: Option<&mut dyn FnMut(&[StoredEntry], &mut WriteBatch) -> Result<()>>,
        b: &ShippedBatch,
        batch: &mut WriteBatch,
    ) -> std::result::Result<Appended, RemoteError> {
        let node = &b.node;
        let broken = |seq: u64, why: String| RemoteError::Broken { node: node.clone(), seq, why };
        if !valid_node_name(node) {
            return Err(broken(b.first, format!("{node:?} is not a node name")));
        }
        let mut chain = heads.get(node).copied().unwrap_or(RemoteChain { anchor: b.anchor, head: b.anchor });
        let mut done = Appended::default();
        let mut carried = Carried::default();
        let mut index: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let prefix = index_prefix(node);
        let mut seq = b.first;
        for shipped in &b.entries {
            let e = Stored::decode(&shipped.bytes).map_err(|err| broken(seq, format!("unreadable: {err}")))?;
            let first = seq;
            seq += e.span();
            if first <= chain.head.seq {
                done.duplicates += e.span() as usize;
                continue;
            }
            if first != chain.head.seq + 1 {
                return Err(RemoteError::Gap { node: node.clone(), expected: chain.head.seq + 1, found: first });
            }
            if stored_hash(&chain.head.hash, first, &shipped.bytes) != Some(e.hash()) {
                return Err(broken(first, "it does not link to the entry before it".into()));
            }
            for (k, v) in e.index_entries(first) {
                index.push(([prefix.as_slice(), &k].concat(), v));
            }
            batch.put(Cf::Audit, entry_key(node, first), shipped.bytes.clone());
            chain.head = ChainHead { seq: first + e.span() - 1, hash: e.hash() };
            done.appended += e.span() as usize;
            carried.carry(&e, first, shipped);
            if let Some(f) = each_new.as_deref_mut() {
                f(&e.into_lines(), batch)?;
            }
        }
        if let Some((seq, why)) = carried.put_missing(self, batch)? {
            return Err(broken(seq, why));
        }
        // In key order, as the local chain's are (memtable inserts).
        index.sort_unstable();
        for (k, v) in index {
            batch.put(Cf::AuditIndex, k, v);
        }
        if done.appended > 0 {
            batch.put(Cf::Meta, meta_key(node), encode(&chain));
            heads.insert(node.clone(), chain);
        }
        Ok(done)
    }
}

impl<'a> AuditFiles<'a> {
    /// Checks every other node's chain held here link by link, from its
    /// anchor to its recorded head; one result per node, in name order.
    pub fn audit_verify_remote(self) -> Result<Vec<(String, ChainCheck)>> {
        let mut out = Vec::new();
        for (node, chain) in self.remote_chains()? {
            let check = self.verify_remote_chain(&node, &chain)?;
            out.push((node, check));
        }
        Ok(out)
    }

    fn verify_remote_chain(self, node: &str, chain: &RemoteChain) -> Result<ChainCheck> {
        self.verify_kept(super::Chain::Remote(node), chain.anchor, || Ok(chain.head))
    }
}

#[cfg(test)]
mod tests;
