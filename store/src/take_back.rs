//! A store restored from an older backup of a cluster node takes back,
//! from the log, the entries of its own audit chain that the node shipped
//! after the backup (see `Store::take_back_shipped`). Apart from
//! `audit::remote`, because it also counts the uses it takes back
//! (`usage`), which itself reads audit entries.

use crate::audit::remote::{Carried, Shipped, ShippedBatch, META_SHIPPED};
use crate::audit::{stored_hash, ChainHead, Stored, META_AUDIT_HEAD};
use crate::codec::{decode, encode};
use crate::engine::{Cf, WriteBatch};
use crate::record::seq_key;
use crate::usage::{count_entries, UsageDelta};
use crate::{Result, Store};

impl Store {
    /// Takes back this node's own entries from a message of its chain as
    /// the log holds it (`b`, shipped under `node`): those past the local
    /// chain's head are appended to it, exactly as shipped, with their
    /// index keys, key mappings and usage counts, and the shipping record
    /// moves past them (they are in the log). Returns the uses appended.
    ///
    /// Why: a store restored from an older backup of this node lacks what
    /// the node answered and shipped after the backup. Numbering new uses
    /// over those would give the node a second history under the same
    /// numbers, which every peer's copy refuses (the stopping of their
    /// applier at it). Entries the store holds already must be the same
    /// bytes; a different one, a gap or a broken link means the log's chain
    /// under this name is not this store's, which is an error: the node
    /// then needs another name.
    pub fn take_back_shipped(&self, node: &str, b: &ShippedBatch) -> Result<u64> {
        let corrupt = |msg: String| crate::Error::Corrupt { what: "this node's audit chain in the log", msg };
        if b.node != node {
            return Err(corrupt(format!("a message of node {node} holds entries of node {}", b.node)));
        }
        // Entries removed here for retention since are not taken back.
        let kept = self.audit_files().local_anchor()?.seq;
        self.with_chain_head(|head, usage| {
            let mut at = *head;
            let mut batch = WriteBatch::new();
            let mut counted = UsageDelta::default();
            let mut carried = Carried::default();
            let mut appended = 0u64;
            let mut seq = b.first;
            for shipped in &b.entries {
                let e = Stored::decode(&shipped.bytes).map_err(|err| corrupt(format!("entry {seq} is unreadable: {err}")))?;
                let first = seq;
                seq += e.span();
                if first <= kept {
                    continue;
                }
                if first <= at.seq {
                    match self.engine().get(Cf::Audit, &seq_key(first))? {
                        Some(held) if *held == shipped.bytes[..] => continue,
                        _ => {
                            return Err(corrupt(format!(
                                "its entry {first} differs from this store's: the log holds another chain under the name {node}; \
                                 start this store under a new node name"
                            )))
                        }
                    }
                }
                if first != at.seq + 1 {
                    return Err(corrupt(format!("entry {} is missing (the next is {first})", at.seq + 1)));
                }
                if stored_hash(&at.hash, first, &shipped.bytes) != Some(e.hash()) {
                    return Err(corrupt(format!("entry {first} does not link to this store's entry {}", at.seq)));
                }
                for (k, v) in e.index_entries(first) {
                    batch.put(Cf::AuditIndex, k, v);
                }
                batch.put(Cf::Audit, seq_key(first).to_vec(), shipped.bytes.clone());
                carried.carry(&e, first, shipped);
                appended += e.span();
                at = ChainHead { seq: first + e.span() - 1, hash: e.hash() };
                count_entries(&mut counted, &e.into_lines());
            }
            if appended == 0 {
                return Ok(0);
            }
            if let Some((seq, why)) = carried.put_missing(self, &mut batch)? {
                return Err(corrupt(format!("entry {seq}: {why}")));
            }
            batch.put(Cf::Meta, META_AUDIT_HEAD, encode(&at));
            let values = counted.write(usage, &**self.engine(), &mut batch)?;
            let mut rec = match self.engine().get(Cf::Meta, META_SHIPPED)? {
                Some(v) => decode::<Shipped>("audit shipping record", &v)?,
                None => Shipped { node: node.to_owned(), anchor: b.anchor, seq: 0 },
            };
            if rec.node == node && rec.seq < at.seq {
                rec.seq = at.seq;
                batch.put(Cf::Meta, META_SHIPPED.to_vec(), encode(&rec));
            }
            self.engine().write(batch, crate::Durability::Sync)?;
            usage.absorb(values);
            *head = at;
            Ok(appended)
        })
    }
}
