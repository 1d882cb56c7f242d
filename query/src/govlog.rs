//! The governance log's entries, apart from how they are applied: a
//! governance state change as the node that took the request decided it
//! (`Change`, with the precondition it needs), the entry that carries it
//! and the request's audit events through a replicated log (`Entry`), and
//! the log as the use cases see it (`GovernanceLog`). `replicated` applies
//! them.

use crate::error::{Error, Result};
use crate::gov::{Dispute, Grant, GrantState, PolicyRecord, ResponsibleRecord};
use basedata_store::codec::{encode_marked, marked_body};
use basedata_store::keys::DocType;
use basedata_store::{Action, AuditEvent, SubjectKey};
use std::future::Future;
use std::pin::Pin;

/// What a change expects of the record it replaces.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum Expect {
    /// No record of its id yet (a new grant or dispute).
    Absent,
    /// A grant stored in one of these states.
    GrantIn(Vec<GrantState>),
    /// A dispute not yet resolved.
    Open,
    /// Whatever is there: a replacement.
    Anything,
    /// A staff account as last changed at this time (Unix microseconds):
    /// a change built from that version, refused if another came first.
    /// Last, so that entries written before it decode as they were.
    ChangedAt(i64),
}

/// One governance state change, as the node that took the request decided it.
#[derive(Clone, Debug, PartialEq, bincode::Encode, bincode::Decode)]
pub enum Change {
    Grant { grant: Grant, expect: Expect },
    /// `key` is the subject's document type and key: a new dispute seals
    /// it into every node's key mapping, so that any node can resolve it.
    Dispute { dispute: Dispute, key: (u8, String), expect: Expect },
    Responsible { department: String, record: ResponsibleRecord },
    /// A policy switch without a precondition, as logged before
    /// [`Change::PolicySwitch`]: the last in log order stands.
    Policy { record: PolicyRecord },
    /// A stored staff account of the console, added (`Absent`) or changed
    /// (`ChangedAt` the version it was built from; `Anything` in entries
    /// logged before that: the last change in log order stands).
    Staff { record: crate::staff::StaffRecord, expect: Expect },
    /// A policy switch built from the policy in force: the configuration's
    /// (`Absent`) or the switch made at `ChangedAt`. A switch built from a
    /// policy another switch has replaced meanwhile is refused, so that of
    /// two switches of different members made at once neither undoes the
    /// other. Last, so that entries logged before it decode as they were.
    PolicySwitch { record: PolicyRecord, expect: Expect },
}

/// What an applied change stored.
#[derive(Clone, Debug, PartialEq)]
pub enum Changed {
    Grant(Grant),
    Dispute(Dispute),
    Responsible,
    Policy,
    Staff,
}

/// What applying an entry did: the change, or why its precondition failed.
pub type Applied = std::result::Result<Changed, String>;

/// An audit event as it travels in a log entry: the store's event holds a
/// parsed key, the entry the key's document type and normalized number.
#[derive(Clone, Debug, PartialEq, bincode::Encode, bincode::Decode)]
struct LoggedEvent {
    department: String,
    operator: Option<String>,
    operator_verified: bool,
    purpose: String,
    purpose_code: Option<String>,
    action: Action,
    key: Option<(u8, String)>,
    datasets: Vec<String>,
    fields: Vec<String>,
    outcome: String,
}

/// One entry of the governance log.
#[derive(Clone, Debug, PartialEq, bincode::Encode, bincode::Decode)]
pub struct Entry {
    /// The node that took the request: the one that records its events.
    pub origin: String,
    pub change: Change,
    events: Vec<LoggedEvent>,
}

/// Format marker of [`Entry`] in the log: its grants name their deciding
/// operator.
const ENTRY_FORMAT: u8 = 2;

/// Entries as logged before grants named their deciding operator (format
/// marker 1): read, never written. Only a grant's layout differs.
mod v1 {
    use super::{Expect, LoggedEvent};
    use crate::gov::{Dispute, GrantV2, PolicyRecord, ResponsibleRecord};

    #[derive(bincode::Encode, bincode::Decode)]
    pub(super) struct Entry {
        pub(super) origin: String,
        pub(super) change: Change,
        pub(super) events: Vec<LoggedEvent>,
    }

    #[derive(bincode::Encode, bincode::Decode)]
    pub(super) enum Change {
        Grant { grant: GrantV2, expect: Expect },
        Dispute { dispute: Dispute, key: (u8, String), expect: Expect },
        Responsible { department: String, record: ResponsibleRecord },
        Policy { record: PolicyRecord },
        Staff { record: crate::staff::StaffRecord, expect: Expect },
        PolicySwitch { record: PolicyRecord, expect: Expect },
    }

    impl From<Entry> for super::Entry {
        fn from(e: Entry) -> super::Entry {
            use super::Change as New;
            let change = match e.change {
                Change::Grant { grant, expect } => New::Grant { grant: grant.into(), expect },
                Change::Dispute { dispute, key, expect } => New::Dispute { dispute, key, expect },
                Change::Responsible { department, record } => New::Responsible { department, record },
                Change::Policy { record } => New::Policy { record },
                Change::Staff { record, expect } => New::Staff { record, expect },
                Change::PolicySwitch { record, expect } => New::PolicySwitch { record, expect },
            };
            super::Entry { origin: e.origin, change, events: e.events }
        }
    }
}

/// A key as a change carries it: its document type's code and its number.
pub(crate) fn key_parts(k: &SubjectKey) -> (u8, String) {
    (k.doc_type().as_u8(), k.as_str().to_owned())
}

pub(crate) fn key_of((doc, key): &(u8, String)) -> Result<SubjectKey> {
    let doc = DocType::from_u8(*doc).ok_or_else(|| Error::Internal(format!("a log entry names document type {doc}")))?;
    SubjectKey::from_normalized_bytes(doc, key.as_bytes()).map_err(|e| Error::Internal(format!("a log entry's key: {e}")))
}

impl Entry {
    pub fn new(origin: &str, change: Change, events: &[AuditEvent]) -> Entry {
        let events = events
            .iter()
            .map(|e| LoggedEvent {
                department: e.department.clone(),
                operator: e.operator.clone(),
                operator_verified: e.operator_verified,
                purpose: e.purpose.clone(),
                purpose_code: e.purpose_code.clone(),
                action: e.action,
                key: e.key.as_ref().map(key_parts),
                datasets: e.datasets.clone(),
                fields: e.fields.clone(),
                outcome: e.outcome.clone(),
            })
            .collect();
        Entry { origin: origin.to_owned(), change, events }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Only a grant's layout changed with format 2: other changes are
        // written as format 1, which peers not yet upgraded still read, so
        // a rolling upgrade stalls their applying only at a grant.
        let marker = if matches!(self.change, Change::Grant { .. }) { ENTRY_FORMAT } else { 1 };
        encode_marked(marker, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Entry> {
        let (marker, body) = marked_body("governance log entry", bytes)?;
        match marker {
            ENTRY_FORMAT => Ok(body.decode()?),
            1 => Ok(body.decode::<v1::Entry>()?.into()),
            _ => Err(Error::Internal(format!("governance log entry of unknown format {marker}: is this node older than its peers?"))),
        }
    }

    /// The request's audit events, to be recorded by its origin.
    pub fn events(&self) -> Result<Vec<AuditEvent>> {
        self.events
            .iter()
            .map(|e| {
                Ok(AuditEvent {
                    department: e.department.clone(),
                    operator: e.operator.clone(),
                    operator_verified: e.operator_verified,
                    purpose: e.purpose.clone(),
                    purpose_code: e.purpose_code.clone(),
                    action: e.action,
                    key: e.key.as_ref().map(key_of).transpose()?,
                    datasets: e.datasets.clone(),
                    fields: e.fields.clone(),
                    outcome: e.outcome.clone(),
                    key_mapped: false,
                    pid: None,
                    rejected_lines: 0,
                    grants: Vec::new(),
                })
            })
            .collect()
    }
}

/// A future of the log, boxed so that [`GovernanceLog`] is object-safe.
pub type LogFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The replicated log as the governance use cases see it (cluster mode).
pub trait GovernanceLog: Send + Sync {
    /// This node's name, carried in its entries.
    fn node(&self) -> &str;
    /// Appends an encoded [`Entry`]; once this returns its position, the
    /// entry is durable in the log.
    fn append<'a>(&'a self, entry: Vec<u8>) -> LogFuture<'a, std::result::Result<u64, String>>;
    /// Waits (bounded) until this node has applied `position`, and says
    /// what applying it did; `None` when the wait ran out.
    fn outcome<'a>(&'a self, position: u64) -> LogFuture<'a, Option<Applied>>;
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_logged_before_grants_named_their_decider_still_decode() {
        let mut grant = crate::gov::tests::grant(time::macros::date!(2030 - 01 - 01));
        grant.state = GrantState::Approved;
        grant.decided_at = Some(5);
        grant.decided_by = Some("gongan".into());
        let expect = Expect::GrantIn(vec![GrantState::Pending]);
        let ev = basedata_store::caller::system_event("p", Action::Grant);
        let new = Entry::new("node-a", Change::Grant { grant: grant.clone(), expect: expect.clone() }, &[ev]);
        let old = v1::Entry {
            origin: new.origin.clone(),
            change: v1::Change::Grant { grant: crate::gov::tests::as_v2(&grant), expect },
            events: new.events.clone(),
        };
        assert_eq!(Entry::decode(&encode_marked(1, &old)).unwrap(), new);
        // A grant logged now keeps who decided it.
        let mut named = new.clone();
        let Change::Grant { grant, .. } = &mut named.change else { unreachable!() };
        grant.decided_operator = Some("steward-7".into());
        assert_eq!(Entry::decode(&named.encode()).unwrap(), named);
        assert!(Entry::decode(&encode_marked(3, &old)).is_err());
        // Other changes are written as format 1, byte for byte what an
        // older node wrote and reads.
        let record = crate::gov::PolicyRecord { policy: crate::gov::Policy::default(), set_at: 1, set_by: "admin".into() };
        let policy = Entry::new("node-a", Change::Policy { record: record.clone() }, &[]);
        let bytes = policy.encode();
        assert_eq!(bytes[0], 1);
        let old = v1::Entry { origin: "node-a".into(), change: v1::Change::Policy { record }, events: Vec::new() };
        assert_eq!(bytes, encode_marked(1, &old));
        assert_eq!(Entry::decode(&bytes).unwrap(), policy);
    }
}
