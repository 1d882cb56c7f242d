//! The audit trail (使用记录): one entry per use of subject data, chained
//! by SHA-256 so that any altered, removed or reordered entry is detected,
//! and indexed by subject pseudonym, department and time so that "who has
//! looked at this person" and period queries are index reads.
//!
//! Layout: `audit`: `seq` -> [`StoredEntry`]; `audit_index`:
//! `'k' pid seq`, `'d' department 0x00 seq`, `'t' at seq` (empty values);
//! `meta`: `audit_head` = last seq and hash, written in the same batch, so
//! that truncating the tail is detected too.
//!
//! Entry hash = SHA-256(previous hash ‖ seq ‖ encoded entry without hash),
//! where the encoding is the entry's stored bytes with the trailing 32-byte
//! hash zeroed, so an entry is checked in the format it was written in.
//! Subject keys are stored as pseudonyms like everywhere else; the chain
//! covers the pseudonym, so resolving keys for display changes nothing.
//!
//! Another node's chain (cluster mode) is kept beside the local one in the
//! same families under keys that cannot collide with it: see [`remote`].
//!
//! The run of one department's uses that one commit writes is stored as
//! one entry that takes a sequence number per use (see [`chunk`]); read
//! back, each use is an entry of its own.
//!
//! Formats: marker 1 (the first release) has no operator provenance; such
//! entries read as `operator_verified = false` (the operator, if any, was
//! declared by the calling program). Marker 2 adds `operator_verified`
//! before the hash. Marker 3 adds the purpose code, marker 5 the grants
//! the use relied on. Marker 4 is a chunk, and marker 6 a chunk whose
//! lines name their grants. Every format stays readable and verifiable.

use crate::codec::{config, decode, encode, encode_into};
use crate::engine::{prefix_end, Cf, WriteBatch};
use crate::keys::{Subject, SubjectKey};
use crate::pseudo::Pid;
use crate::record::{doc_type, seq_from_key, seq_key};
use crate::{Result, Store};
use sha2::{Digest, Sha256};

pub mod chunk;
pub mod remote;
pub mod retention;
pub mod tail;
pub mod uses;

pub use chunk::Stored;
use chunk::{IndexTarget, StoredChunk};

pub(crate) const META_AUDIT_HEAD: &[u8] = b"audit_head";
/// The department of the platform's own entries (a deemed approval, a
/// removal for retention), which no configured department may take.
pub const SYSTEM_DEPARTMENT: &str = "system";
/// Where this node's chain starts once entries were removed for the
/// retention period (see [`retention`]): the last one removed.
pub(crate) const META_AUDIT_ANCHOR: &[u8] = b"audit_anchor";

/// What was done. Stable names: they appear in the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, bincode::Encode, bincode::Decode)]
pub enum Action {
    Lookup,
    Verify,
    BatchVerify,
    ChangeFeed,
    Update,
    Denied,
    Grant,
    Dispute,
    /// A staff member's sign-in to the console, successful or not.
    SignIn,
    /// A "who used my data" report printed for a person at the counter.
    AccessReport,
    /// An administrator's action on a staff account (unlock, sign out).
    Account,
    /// A change of a department's record of responsible persons.
    Responsible,
    /// A switch of the governance policy (reply deadlines, deemed approval).
    Policy,
    /// Entries past the retention period removed from the trail (the
    /// platform's own event; see [`retention`]).
    Retention,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Lookup => "lookup",
            Action::Verify => "verify",
            Action::BatchVerify => "batch_verify",
            Action::ChangeFeed => "change_feed",
            Action::Update => "update",
            Action::Denied => "denied",
            Action::Grant => "grant",
            Action::Dispute => "dispute",
            Action::SignIn => "sign_in",
            Action::AccessReport => "access_report",
            Action::Account => "account",
            Action::Responsible => "responsible",
            Action::Policy => "policy",
            Action::Retention => "retention",
        }
    }

    /// Every action, in the order of their stored codes.
    pub const ALL: [Action; 14] = [
        Action::Lookup,
        Action::Verify,
        Action::BatchVerify,
        Action::ChangeFeed,
        Action::Update,
        Action::Denied,
        Action::Grant,
        Action::Dispute,
        Action::SignIn,
        Action::AccessReport,
        Action::Account,
        Action::Responsible,
        Action::Policy,
        Action::Retention,
    ];

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Whether the action is a use of subject data, which states a purpose.
    pub fn reads_subject_data(self) -> bool {
        matches!(self, Action::Lookup | Action::Verify | Action::BatchVerify | Action::ChangeFeed)
    }
}

/// An event to record, before it has a sequence number, time and hash.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    pub department: String,
    pub operator: Option<String>,
    /// The platform itself established who `operator` is (a console
    /// session, a client certificate); false when the calling program
    /// merely declared it (`X-Operator`).
    pub operator_verified: bool,
    /// The stated purpose as sent (code and note, or free text).
    pub purpose: String,
    /// The catalogued purpose `purpose` names; `None` for free text (a
    /// department without a purpose list) and for the platform's own events.
    pub purpose_code: Option<String>,
    pub action: Action,
    pub key: Option<SubjectKey>,
    pub datasets: Vec<String>,
    /// Fields disclosed or verified.
    pub fields: Vec<String>,
    pub outcome: String,
    /// The action found a stored record for `key`, so the key's pseudonym
    /// mapping is already stored and the entry need not write it again
    /// (an unconditional rewrite is a random insert per audited read).
    pub key_mapped: bool,
    /// The pseudonym of `key`, where the caller already has it (a
    /// verification computes it to find the record), so that the writer,
    /// which every use waits on, does not hash the key again. `None`: the
    /// writer computes it. Never another key's (a linked code's home).
    pub pid: Option<Pid>,
    /// Update lines this request had refused: counted against its datasets
    /// for the yearly report's data quality, not part of the stored entry.
    pub rejected_lines: u64,
    /// The grants the use relied on (ids): those that opened a conditional
    /// field it disclosed or verified, or the change feed, to its
    /// department for its purpose when it was decided. Its approvals, as
    /// the trail shows them.
    pub grants: Vec<String>,
}

/// Whether `c` may stand in free text kept in the audit trail (purposes,
/// operators, notes). Control characters, line and paragraph separators
/// and bidirectional overrides could forge lines in, or hide text of,
/// whatever shows the trail, so text holding them is refused, never stored.
pub fn fits_audit_text(c: char) -> bool {
    !(c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}'))
}

/// Why a text may not go on record as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextFault {
    /// More characters than allowed.
    TooLong,
    /// A character [`fits_audit_text`] refuses.
    Unfit,
}

/// Whether `t` may go on record as it is: at most `max_chars` characters,
/// each one that [`fits_audit_text`]. Text that may not is refused, never
/// cut or cleaned.
pub fn audit_text_fault(t: &str, max_chars: usize) -> Option<TextFault> {
    if t.chars().count() > max_chars {
        Some(TextFault::TooLong)
    } else if !t.chars().all(fits_audit_text) {
        Some(TextFault::Unfit)
    } else {
        None
    }
}

/// The stored form of an entry (format marker 3). The hash must stay the
/// last member: it is the last 32 bytes of the encoding.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct StoredEntry {
    pub at: i64,
    pub department: String,
    pub operator: Option<String>,
    pub purpose: String,
    pub action: Action,
    /// Document type and pseudonym of the subject, if the event concerns one.
    pub subject: Option<(u8, Pid)>,
    pub datasets: Vec<String>,
    pub fields: Vec<String>,
    pub outcome: String,
    pub operator_verified: bool,
    pub purpose_code: Option<String>,
    /// Ids of the grants the use relied on (see [`AuditEvent::grants`]).
    pub grants: Vec<String>,
    pub hash: [u8; 32],
}

/// Format marker of entries with operator provenance but no purpose code.
pub const ENTRY_FORMAT_V2: u8 = 2;
/// Format marker of entries with the purpose code but no grants.
pub const ENTRY_FORMAT_V3: u8 = 3;
/// Format marker of [`StoredEntry`] since entries name their grants.
pub const ENTRY_FORMAT_V5: u8 = 5;

/// The stored form of entries of format marker 3: read, never written.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct StoredEntryV3 {
    pub at: i64,
    pub department: String,
    pub operator: Option<String>,
    pub purpose: String,
    pub action: Action,
    pub subject: Option<(u8, Pid)>,
    pub datasets: Vec<String>,
    pub fields: Vec<String>,
    pub outcome: String,
    pub operator_verified: bool,
    pub purpose_code: Option<String>,
    pub hash: [u8; 32],
}

impl StoredEntryV3 {
    /// The encoding as format 3 wrote it, for tests of old stores.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ENTRY_FORMAT_V3];
        encode_into(&mut out, self);
        out
    }
}

/// The stored form of entries of format marker 2: read, never written.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct StoredEntryV2 {
    pub at: i64,
    pub department: String,
    pub operator: Option<String>,
    pub purpose: String,
    pub action: Action,
    pub subject: Option<(u8, Pid)>,
    pub datasets: Vec<String>,
    pub fields: Vec<String>,
    pub outcome: String,
    pub operator_verified: bool,
    pub hash: [u8; 32],
}

impl StoredEntryV2 {
    /// The encoding as format 2 wrote it, for tests of old stores.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ENTRY_FORMAT_V2];
        encode_into(&mut out, self);
        out
    }
}

/// The stored form of entries written before operator provenance
/// (format marker 1): read, never written.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct StoredEntryV1 {
    pub at: i64,
    pub department: String,
    pub operator: Option<String>,
    pub purpose: String,
    pub action: Action,
    pub subject: Option<(u8, Pid)>,
    pub datasets: Vec<String>,
    pub fields: Vec<String>,
    pub outcome: String,
    pub hash: [u8; 32],
}

impl StoredEntryV1 {
    /// The encoding as the first release wrote it (marker 1), for tests of
    /// old stores.
    pub fn encode(&self) -> Vec<u8> {
        crate::codec::encode(self)
    }
}

/// The current form of an entry read in an older format: what the format
/// lacked is `operator_verified` (format 1: `false`, declared), the
/// purpose code (formats 1 and 2: none) and the grants (all: none).
macro_rules! upgrade {
    ($old:expr, $verified:expr, $purpose_code:expr) => {{
        let o = $old;
        StoredEntry {
            at: o.at,
            department: o.department,
            operator: o.operator,
            purpose: o.purpose,
            action: o.action,
            subject: o.subject,
            datasets: o.datasets,
            fields: o.fields,
            outcome: o.outcome,
            operator_verified: $verified,
            purpose_code: $purpose_code,
            grants: Vec::new(),
            hash: o.hash,
        }
    }};
}

impl StoredEntry {
    /// The stored bytes: marker 5, then bincode.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.push(ENTRY_FORMAT_V5);
        encode_into(&mut out, self);
        out
    }

    /// Reads an entry of any format.
    pub fn decode(bytes: &[u8]) -> Result<StoredEntry> {
        const WHAT: &str = "audit entry";
        let corrupt = |e: bincode::error::DecodeError| crate::Error::Corrupt { what: WHAT, msg: e.to_string() };
        match bytes.first() {
            Some(&ENTRY_FORMAT_V5) => bincode::decode_from_slice(&bytes[1..], config()).map(|(v, _)| v).map_err(corrupt),
            Some(&ENTRY_FORMAT_V3) => {
                let (v3, _): (StoredEntryV3, _) = bincode::decode_from_slice(&bytes[1..], config()).map_err(corrupt)?;
                let (verified, code) = (v3.operator_verified, v3.purpose_code.clone());
                Ok(upgrade!(v3, verified, code))
            }
            Some(&ENTRY_FORMAT_V2) => {
                let (v2, _): (StoredEntryV2, _) = bincode::decode_from_slice(&bytes[1..], config()).map_err(corrupt)?;
                let verified = v2.operator_verified;
                Ok(upgrade!(v2, verified, None))
            }
            Some(&chunk::ENTRY_FORMAT_CHUNK | &chunk::ENTRY_FORMAT_CHUNK_V6) => {
                Err(crate::Error::Corrupt { what: WHAT, msg: "a chunk of uses, not one entry".into() })
            }
            _ => Ok(upgrade!(decode::<StoredEntryV1>(WHAT, bytes)?, false, None)),
        }
    }
}

/// An entry as read back, with its subject key in the clear.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    /// The node whose chain holds the entry (the node that answered the
    /// use), when it is another node of the cluster; `None` for this one's.
    pub node: Option<String>,
    pub seq: u64,
    pub at: i64,
    pub department: String,
    pub operator: Option<String>,
    pub operator_verified: bool,
    pub purpose: String,
    pub purpose_code: Option<String>,
    pub action: Action,
    pub subject: Option<Subject>,
    pub key: Option<SubjectKey>,
    pub datasets: Vec<String>,
    pub fields: Vec<String>,
    pub outcome: String,
    /// Ids of the grants the use relied on (see [`AuditEvent::grants`]).
    pub grants: Vec<String>,
    pub hash: [u8; 32],
}

/// Where the chain stands: last sequence number and hash (zeros when empty).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: [u8; 32],
}

/// The hash an entry's stored bytes must carry after `prev`: the bytes
/// with their trailing hash zeroed, whatever the format.
pub(crate) fn stored_hash(prev: &[u8; 32], seq: u64, bytes: &[u8]) -> Option<[u8; 32]> {
    let n = bytes.len().checked_sub(32)?;
    let mut unhashed = bytes.to_vec();
    unhashed[n..].fill(0);
    Some(chain_hash(prev, seq, &unhashed))
}

/// The hash of an entry from its encoding with a zero hash.
fn chain_hash(prev: &[u8; 32], seq: u64, unhashed: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(unhashed);
    h.finalize().into()
}

pub(crate) fn index_keys(seq: u64, e: &StoredEntry) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(3);
    if let Some((_, pid)) = &e.subject {
        out.push(subject_index_key(pid, seq));
    }
    out.push(department_index_key(&e.department, seq));
    out.push(time_index_key(e.at, seq));
    out
}

pub(crate) fn subject_index_key(pid: &Pid, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + pid.0.len() + 8);
    k.push(b'k');
    k.extend_from_slice(&pid.0);
    k.extend_from_slice(&seq_key(seq));
    k
}

/// The pseudonym a subject index key names: empty for a key too short
/// to hold one (damaged, or altered by hand), which then names nobody.
fn subject_key_pid(k: &[u8]) -> &[u8] {
    k.len().checked_sub(8 + crate::pseudo::PID_LEN).and_then(|from| k.get(from..k.len() - 8)).unwrap_or_default()
}

pub(crate) fn department_index_key(department: &str, seq: u64) -> Vec<u8> {
    let mut d = Vec::with_capacity(department.len() + 10);
    d.push(b'd');
    d.extend_from_slice(department.as_bytes());
    d.push(0);
    d.extend_from_slice(&seq_key(seq));
    d
}

pub(crate) fn time_index_key(at: i64, seq: u64) -> Vec<u8> {
    let mut t = Vec::with_capacity(17);
    t.push(b't');
    t.extend_from_slice(&at.to_be_bytes());
    t.extend_from_slice(&seq_key(seq));
    t
}

/// Appends `events` to the chain inside `batch`, their index keys to
/// `index` (for the tail, [`tail`], once the batch is written); returns
/// the new head.
///
/// A run of one department's events (see [`chunk`]) is stored as one
/// entry taking one sequence number an event; a run of one as an entry of
/// the single-use format. Key mappings are put in key order, because
/// RocksDB's skip-list memtable inserts keys that follow each other
/// several times faster than scattered ones.
pub(crate) fn append(
    store: &Store,
    head: ChainHead,
    at: i64,
    events: &[AuditEvent],
    batch: &mut WriteBatch,
    index: &mut Vec<tail::Entry>,
) -> ChainHead {
    let mut head = head;
    let mut sealed: Vec<(Pid, SubjectKey)> = Vec::new();
    let mut subject = |ev: &AuditEvent| {
        ev.key.map(|k| {
            let pid = ev.pid.unwrap_or_else(|| store.pseudonym(&k));
            // The mapping may not exist yet (a lookup of an unknown key);
            // the auditor must still be able to see which key was asked for.
            if !ev.key_mapped {
                sealed.push((pid, k));
            }
            (k.doc_type().as_u8(), pid)
        })
    };
    let mut rest = events;
    while !rest.is_empty() {
        let n = chunk::run_len(rest);
        let (run, more) = rest.split_at(n);
        rest = more;
        let first = head.seq + 1;
        let (stored, bytes) = if n == 1 {
            let ev = &run[0];
            let e = StoredEntry {
                at,
                department: ev.department.clone(),
                operator: ev.operator.clone(),
                purpose: ev.purpose.clone(),
                action: ev.action,
                subject: subject(ev),
                datasets: ev.datasets.clone(),
                fields: ev.fields.clone(),
                outcome: ev.outcome.clone(),
                operator_verified: ev.operator_verified,
                purpose_code: ev.purpose_code.clone(),
                grants: ev.grants.clone(),
                hash: [0; 32],
            };
            let bytes = e.encode();
            (Stored::One(e), bytes)
        } else {
            let c = StoredChunk::of(at, run, &mut subject);
            let bytes = c.encode();
            (Stored::Chunk(c), bytes)
        };
        // Index keys and span do not depend on the hash left zero in `stored`.
        index.extend(stored.index_entries(first));
        head = link(head, first, stored.span(), bytes, batch);
    }
    seal_unmapped(store, sealed, batch);
    batch.put(Cf::Meta, META_AUDIT_HEAD, encode(&head));
    head
}

/// [`append`] for uses in their compact form ([`uses::Uses`]): each run
/// of one department's rows (up to [`chunk::MAX_CHUNK_LINES`]) is stored
/// as a chunk written straight from the rows, with the pseudonyms they
/// carry, so the writer builds no event, string or pseudonym a use.
pub(crate) fn append_uses(
    store: &Store,
    head: ChainHead,
    at: i64,
    all: &[uses::Uses],
    batch: &mut WriteBatch,
    index: &mut Vec<tail::Entry>,
) -> ChainHead {
    let mut head = head;
    let mut sealed: Vec<(Pid, SubjectKey)> = Vec::new();
    for u in all {
        let mut rest = u.rows();
        while let Some(lead) = rest.first() {
            let n = rest.iter().take(chunk::MAX_CHUNK_LINES).take_while(|r| r.by.department == lead.by.department).count();
            let (run, more) = rest.split_at(n);
            rest = more;
            let first = head.seq + 1;
            let bytes = chunk::encode_uses(at, u, run);
            let subjects = run.iter().map(|r| r.subject.map(|(_, pid)| pid));
            chunk::chunk_index_entries(first, at, u.text(lead.by.department), subjects, |k, v| index.push((k, v)));
            head = link(head, first, n as u64, bytes, batch);
            sealed.extend(run.iter().filter(|r| !r.key_mapped).filter_map(|r| r.subject.map(|(k, pid)| (pid, k))));
        }
    }
    seal_unmapped(store, sealed, batch);
    batch.put(Cf::Meta, META_AUDIT_HEAD, encode(&head));
    head
}

/// Chains the entry `bytes` (its hash, the last 32 bytes, zeroed) as
/// sequence numbers `first..first + span` after `head` and puts it.
fn link(head: ChainHead, first: u64, span: u64, mut bytes: Vec<u8>, batch: &mut WriteBatch) -> ChainHead {
    let hash = chain_hash(&head.hash, first, &bytes);
    let len = bytes.len();
    bytes[len - 32..].copy_from_slice(&hash);
    batch.put(Cf::Audit, seq_key(first).to_vec(), bytes);
    ChainHead { seq: first + span - 1, hash }
}

/// Puts the key mappings of subjects that had none stored, once each.
fn seal_unmapped(store: &Store, mut sealed: Vec<(Pid, SubjectKey)>, batch: &mut WriteBatch) {
    sealed.sort_unstable_by(|a, b| a.0 .0.cmp(&b.0 .0));
    sealed.dedup_by(|a, b| a.0 == b.0);
    for (_, k) in &sealed {
        store.seal_into(batch, k);
    }
}

pub(crate) fn load_head(store_engine: &dyn crate::Engine) -> Result<ChainHead> {
    Ok(match store_engine.get(Cf::Meta, META_AUDIT_HEAD)? {
        Some(b) => decode("audit head", &b)?,
        None => ChainHead::default(),
    })
}

/// Filters of an audit query; all optional, combined with AND.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub department: Option<String>,
    pub key: Option<SubjectKey>,
    /// Unix microseconds, inclusive.
    pub from: Option<i64>,
    /// Unix microseconds, exclusive.
    pub to: Option<i64>,
    /// Only entries with a sequence number greater than this (paging).
    /// With other nodes' chains held, local entry `after` stands for its
    /// place in the merged order (see [`AuditCursor`]).
    pub after: u64,
    pub limit: usize,
    /// Only entries after this place in the merged order of every chain
    /// held (cluster mode); takes the place of `after`.
    pub cursor: Option<AuditCursor>,
    /// This node's name in the cluster, which orders its entries among
    /// the others' (see [`AuditCursor`]); `None` on a single node.
    pub node: Option<String>,
}

/// Result of checking the whole chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainCheck {
    pub ok: bool,
    /// Uses checked: those from the chain's anchor to its head.
    pub entries: u64,
    /// The last use removed for retention (see [`retention`]): the chain
    /// is checked from the one after it; 0 when none was removed.
    pub starts_after: u64,
    pub head: [u8; 32],
    /// The first problem found, if any.
    pub problem: Option<String>,
}

/// Where an entry's chain is kept: this node's own, or another node's
/// (cluster mode, see [`remote`]).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Chain<'a> {
    Local,
    Remote(&'a str),
}

impl<'a> Chain<'a> {
    fn entry_key(self, seq: u64) -> Vec<u8> {
        match self {
            Chain::Local => seq_key(seq).to_vec(),
            Chain::Remote(node) => remote::entry_key(node, seq),
        }
    }

    /// What the chain's index keys start with before the local layout's.
    fn index_prefix(self) -> Vec<u8> {
        match self {
            Chain::Local => Vec::new(),
            Chain::Remote(node) => remote::index_prefix(node),
        }
    }

    /// The key in `meta` of where the chain starts once entries were
    /// removed for retention (see [`retention`]).
    fn anchor_key(self) -> Vec<u8> {
        match self {
            Chain::Local => META_AUDIT_ANCHOR.to_vec(),
            Chain::Remote(node) => remote::pruned_key(node),
        }
    }

    /// The other node whose chain it is; `None` for this node's.
    fn node(self) -> Option<&'a str> {
        match self {
            Chain::Local => None,
            Chain::Remote(node) => Some(node),
        }
    }
}

/// A place in the merged order of every chain a node holds (cluster
/// mode): entries are ordered by time, then the name of the node whose
/// chain holds them, then sequence number, and a page starts after the
/// last entry of the one before. Written `<at>.<seq>.<node>` (`at` in Unix
/// microseconds), so that the node name, last, may hold anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditCursor {
    pub at: i64,
    pub node: String,
    pub seq: u64,
}

impl AuditCursor {
    /// The cursor of an entry; `local` names this node's own chain.
    pub fn of(e: &AuditEntry, local: &str) -> AuditCursor {
        AuditCursor { at: e.at, node: e.node.clone().unwrap_or_else(|| local.to_owned()), seq: e.seq }
    }

    pub fn parse(s: &str) -> Option<AuditCursor> {
        let mut parts = s.splitn(3, '.');
        let at = parts.next()?.parse().ok()?;
        let seq = parts.next()?.parse().ok()?;
        let node = parts.next()?;
        // A cursor comes back from clients and its text goes on record
        // (an access report's entry names it): a node's name is short and
        // printable.
        if audit_text_fault(node, 64).is_some() {
            return None;
        }
        Some(AuditCursor { at, node: node.to_owned(), seq })
    }
}

impl std::fmt::Display for AuditCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.at, self.seq, self.node)
    }
}

impl Store {
    pub(crate) fn to_entry(&self, seq: u64, e: StoredEntry) -> Result<AuditEntry> {
        let (subject, key) = match &e.subject {
            Some((doc, pid)) => {
                let subject = doc_type(*doc)?.subject();
                (Some(subject), self.resolve(pid)?)
            }
            None => (None, None),
        };
        Ok(AuditEntry {
            node: None,
            seq,
            at: e.at,
            department: e.department,
            operator: e.operator,
            operator_verified: e.operator_verified,
            purpose: e.purpose,
            purpose_code: e.purpose_code,
            action: e.action,
            subject,
            key,
            datasets: e.datasets,
            fields: e.fields,
            outcome: e.outcome,
            grants: e.grants,
            hash: e.hash,
        })
    }

    /// The entry stored at `first` in `chain`.
    fn stored_at(&self, chain: Chain<'_>, first: u64) -> Result<Option<Stored>> {
        match self.engine().get(Cf::Audit, &chain.entry_key(first))? {
            Some(b) => Ok(Some(Stored::decode(&b)?)),
            None => Ok(None),
        }
    }

    /// The entry of `chain` that holds use `seq` (a chunk of batch lines
    /// holds several), and where it is stored.
    fn covering(&self, chain: Chain<'_>, seq: u64) -> Result<Option<(u64, Stored)>> {
        if let Some(s) = self.stored_at(chain, seq)? {
            return Ok(Some((seq, s)));
        }
        let start = chain.entry_key(0);
        let end = chain.entry_key(seq);
        let Some(item) = self.engine().scan(Cf::Audit, &start, Some(&end), true)?.next() else { return Ok(None) };
        let (k, v) = item?;
        let first = crate::record::seq_at_end(&k)?;
        let s = Stored::decode(&v)?;
        Ok((first + s.span() > seq).then_some((first, s)))
    }

    /// Entries matching `q`, oldest first. The most selective index (subject,
    /// then department, then time) drives the read; the other filters are
    /// checked on the entries it yields.
    ///
    /// With other nodes' chains held (cluster mode) every chain is read the
    /// same way and the entries are merged in the order (time, node, seq);
    /// paging then goes by [`AuditCursor`] (`after` names a local entry's
    /// place in that order). Without them it is this node's chain in
    /// sequence order, paged by `after`, as on a single node.
    pub fn audit_query(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let limit = q.limit.max(1);
        let remotes = self.remote_chains()?;
        if remotes.is_empty() && q.cursor.is_none() {
            return self.chain_query(q, Chain::Local, q.after, None, limit);
        }
        let local = q.node.as_deref().unwrap_or("");
        // A local entry removed for retention: every entry kept is after it.
        let after = if q.after <= self.audit_files().local_anchor()?.seq { 0 } else { q.after };
        let cursor = match &q.cursor {
            Some(c) => Some(c.clone()),
            // A local entry not (yet) there: nothing after it.
            None if after > 0 => Some(match self.covering(Chain::Local, after)? {
                Some((_, e)) => AuditCursor { at: e.at(), node: local.to_owned(), seq: after },
                None => AuditCursor { at: i64::MAX, node: local.to_owned(), seq: after },
            }),
            None => None,
        };
        let chains = std::iter::once((local, Chain::Local))
            .chain(remotes.iter().filter(|(n, _)| n != local).map(|(n, _)| (n.as_str(), Chain::Remote(n))));
        let mut out = Vec::new();
        for (name, chain) in chains {
            let after = match &cursor {
                None => 0,
                Some(c) => match self.after_cursor(chain, name, c)? {
                    Some(seq) => seq,
                    None => continue,
                },
            };
            let mut got = self.chain_query(q, chain, after, cursor.as_ref().map(|c| c.at), limit)?;
            if let Chain::Remote(n) = chain {
                for e in &mut got {
                    e.node = Some(n.to_owned());
                }
            }
            out.extend(got);
        }
        let order = |e: &AuditEntry| (e.at, e.node.clone().unwrap_or_else(|| local.to_owned()), e.seq);
        out.sort_by_cached_key(order);
        out.truncate(limit);
        Ok(out)
    }

    /// The last sequence number of `chain` (named `name`) at or before
    /// cursor `c` in the merged order; `None` when the chain has nothing
    /// after `c`. A chain's times never decrease along its sequence numbers (its
    /// writer's clock is held monotonic), so its time index finds the place.
    fn after_cursor(&self, chain: Chain<'_>, name: &str, c: &AuditCursor) -> Result<Option<u64>> {
        if name == c.node {
            return Ok(Some(c.seq));
        }
        // Same time: a chain named before the cursor's comes first.
        let bound = if name < c.node.as_str() {
            match c.at.checked_add(1) {
                Some(b) => b,
                None => return Ok(None),
            }
        } else {
            c.at
        };
        let mut p = chain.index_prefix();
        p.push(b't');
        let end = prefix_end(&p);
        let mut start = p.clone();
        start.extend_from_slice(&bound.max(0).to_be_bytes());
        match self.index_scan(&start, end.as_deref())?.next() {
            Some(item) => {
                let (k, _) = item?;
                Ok(Some(crate::record::seq_at_end(&k)?.saturating_sub(1)))
            }
            None => Ok(None),
        }
    }

    /// Up to `limit` entries of one chain after sequence number `after`
    /// matching `q`, in sequence order; `time_floor` is a time no wanted
    /// entry is before (a cursor's), where the time index starts reading.
    fn chain_query(&self, q: &AuditQuery, chain: Chain<'_>, after: u64, time_floor: Option<i64>, limit: usize) -> Result<Vec<AuditEntry>> {
        if after == u64::MAX {
            // Nothing can follow the last number there is.
            return Ok(Vec::new());
        }
        let base = chain.index_prefix();
        let with = |kind: &[u8]| {
            let mut p = base.clone();
            p.extend_from_slice(kind);
            p
        };
        // An index prefix and where to start reading it (after `after`).
        let after_start = |p: Vec<u8>| {
            let mut s = p.clone();
            s.extend_from_slice(&seq_key(after.saturating_add(1)));
            (p, s)
        };
        let scans: Vec<(Vec<u8>, Vec<u8>)> = if let Some(k) = &q.key {
            // A key linked to another (a licence number and its credit
            // code) has the other's entries in its trail too.
            self.audit_pids(k)?
                .iter()
                .map(|pid| {
                    let mut p = with(b"k");
                    p.extend_from_slice(&pid.0);
                    after_start(p)
                })
                .collect()
        } else if let Some(d) = &q.department {
            let mut p = with(b"d");
            p.extend_from_slice(d.as_bytes());
            p.push(0);
            // A chunk of batch lines holding `after` is indexed at its first line.
            let from = match after {
                0 => 0,
                _ => self.covering(chain, after + 1)?.map_or(after, |(first, _)| first.min(after + 1) - 1),
            };
            let mut s = p.clone();
            s.extend_from_slice(&seq_key(from + 1));
            vec![(p, s)]
        } else {
            let p = with(b"t");
            let mut s = p.clone();
            let from = q.from.unwrap_or(i64::MIN).max(time_floor.unwrap_or(i64::MIN));
            s.extend_from_slice(&from.max(0).to_be_bytes());
            vec![(p, s)]
        };
        let mut out = Vec::new();
        for (prefix, start) in &scans {
            out.extend(self.audit_scan(q, chain, prefix, start, after, limit)?);
        }
        if scans.len() > 1 {
            out.sort_by_key(|e| e.seq);
            out.truncate(limit);
        }
        Ok(out)
    }

    /// Up to `limit` entries of one index range that pass `q`'s filters.
    fn audit_scan(&self, q: &AuditQuery, chain: Chain<'_>, prefix: &[u8], start: &[u8], after: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        let mut out = Vec::new();
        let end = prefix_end(prefix);
        let kind = prefix[chain.index_prefix().len()];
        // The last entry read: a chunk's lines follow each other in the
        // subject index when one subject is in a batch several times.
        let mut held: Option<(u64, Stored)> = None;
        for item in self.index_scan(start, end.as_deref())? {
            let (k, v) = item?;
            let seq = crate::record::seq_at_end(&k)?;
            let target = IndexTarget::of(kind, seq, &v)?;
            if *target.uses.end() <= after {
                continue;
            }
            if held.as_ref().is_none_or(|(first, _)| *first != target.first) {
                held = self.stored_at(chain, target.first)?.map(|e| (target.first, e));
            }
            let Some((first, e)) = &held else { continue };
            if q.to.is_some_and(|to| e.at() >= to) {
                // Entries are in time order on every index.
                break;
            }
            if q.from.is_some_and(|from| e.at() < from) {
                continue;
            }
            if q.department.as_ref().is_some_and(|d| d != e.department()) {
                continue;
            }
            for seq in (*target.uses.start()).max(after + 1)..=*target.uses.end() {
                let Some(line) = seq.checked_sub(*first).and_then(|i| e.line(i as usize)) else { break };
                // A subject key names its use's subject; one that does not
                // (an index altered by hand) shows nothing rather than
                // another subject's use.
                if kind == b'k' {
                    if line.subject.is_none_or(|(_, p)| p.0 != subject_key_pid(&k)) {
                        break;
                    }
                }
                out.push(self.to_entry(seq, line)?);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// The audit index's keys in `[start, end)`: the engine's merged with
    /// the tail's (see [`tail`]). The tail is read first, so that keys it
    /// hands to the engine meanwhile are in the engine's scan, not lost
    /// between the two.
    fn index_scan(&self, start: &[u8], end: Option<&[u8]>) -> Result<impl Iterator<Item = Result<crate::engine::Kv>> + '_> {
        let held = self.index_tail().range(start, end);
        Ok(tail::merged(self.engine().scan(Cf::AuditIndex, start, end, false)?, held))
    }

    /// The current chain head.
    pub fn audit_head(&self) -> Result<ChainHead> {
        load_head(&**self.engine())
    }

    /// The audit families of this store, for the checks (see [`AuditFiles`]).
    pub fn audit_files(&self) -> AuditFiles<'_> {
        AuditFiles(&**self.engine())
    }

    /// The chain's hash after entry `seq` of this node's chain, as the
    /// entry ending exactly there holds it; `None` when no stored entry
    /// ends at `seq` (zeros before the first entry; the anchor's hash at
    /// the last use removed for retention, and `None` before it).
    pub fn audit_hash_at(&self, seq: u64) -> Result<Option<[u8; 32]>> {
        let anchor = self.audit_files().local_anchor()?;
        if seq <= anchor.seq {
            return Ok((seq == anchor.seq).then_some(anchor.hash));
        }
        // The entry holding `seq` starts at most a chunk's length before it.
        let from = seq_key(seq.saturating_sub(chunk::MAX_CHUNK_LINES as u64 - 1).max(1));
        let Some(item) = self.engine().scan(Cf::Audit, &from, Some(&seq_key(seq + 1)), false)?.last() else {
            return Ok(None);
        };
        let (k, v) = item?;
        let first = seq_from_key(&k)?;
        let e = Stored::decode(&v)?;
        Ok((first + e.span() - 1 == seq).then(|| e.hash()))
    }

    /// Recomputes the whole chain from the first entry kept.
    pub fn audit_verify(&self) -> Result<ChainCheck> {
        self.audit_files().audit_verify()
    }
}

/// The audit families of a store, read without its secret: every check
/// of the trail needs only the stored entries, their index and the heads,
/// so a restore checks a copy before it is put in place whether or not
/// it is given the key.
#[derive(Clone, Copy)]
pub struct AuditFiles<'a>(pub &'a dyn crate::Engine);

impl<'a> AuditFiles<'a> {
    /// The stored entries of `chain` after `anchor`, in chain order:
    /// where each is stored, and its bytes. (Starting there passes over the
    /// deletions a removal for retention left below it.)
    pub(crate) fn entries(self, chain: Chain<'_>, anchor: u64) -> Result<impl Iterator<Item = Result<(u64, Box<[u8]>)>> + 'a> {
        let start = chain.entry_key(anchor.saturating_add(1));
        let (end, seq_of): (_, fn(&[u8]) -> Result<u64>) = match chain {
            // Other nodes' chains sort after every local key (see `remote`).
            Chain::Local => (Some(vec![remote::REMOTE_ENTRY]), seq_from_key),
            Chain::Remote(_) => (prefix_end(&start[..start.len() - 8]), crate::record::seq_at_end),
        };
        let scan = self.0.scan(Cf::Audit, &start, end.as_deref(), false)?;
        Ok(scan.map(move |i| i.and_then(|(k, v)| Ok((seq_of(&k)?, v)))))
    }

    /// Where `chain` starts: after its last entry removed for retention,
    /// or at `held` (zeros, or where a copy of another node's chain began)
    /// if that is later.
    pub(crate) fn anchor(self, chain: Chain<'_>, held: ChainHead) -> Result<ChainHead> {
        Ok(match self.0.get(Cf::Meta, &chain.anchor_key())? {
            Some(v) => {
                let removed: ChainHead = decode("audit anchor", &v)?;
                if removed.seq > held.seq { removed } else { held }
            }
            None => held,
        })
    }

    /// Where this node's chain starts: after the last entry removed for
    /// the retention period, or zeros.
    pub fn local_anchor(self) -> Result<ChainHead> {
        self.anchor(Chain::Local, ChainHead::default())
    }

    /// Checks `chain`, held from `held`, link by link from where it
    /// starts to its recorded head (`head`, read for each walk), and its
    /// start against the cuts the trail names (see [`retention`]).
    pub(crate) fn verify_kept(self, chain: Chain<'_>, held: ChainHead, head: impl Fn() -> Result<ChainHead>) -> Result<ChainCheck> {
        loop {
            let anchor = self.anchor(chain, held)?;
            let check = walk_chain(self.entries(chain, anchor.seq)?, anchor, head()?)?;
            // A removal's step between reading the anchor and the scan
            // would show as a gap: the walk is then made again.
            if self.anchor(chain, held)? == anchor {
                return self.within_named_cuts(check, chain, anchor, held.seq);
            }
        }
    }

    /// Recomputes this node's chain from the first entry kept.
    pub fn audit_verify(self) -> Result<ChainCheck> {
        self.verify_kept(Chain::Local, ChainHead::default(), || load_head(self.0))
    }

    /// Recomputes this node's chain and each other node's chain held, and
    /// checks the index against the entries.
    pub fn checks(self) -> Result<AuditChecks> {
        Ok(AuditChecks { chain: self.audit_verify()?, remote: self.audit_verify_remote()?, index: self.audit_index_check()? })
    }
}

/// Result of checking this node's audit index against its entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexCheck {
    pub ok: bool,
    /// Index keys found.
    pub keys: u64,
    /// The first problem found, if any.
    pub problem: Option<String>,
}

/// Every check of the audit trail a store holds, as `basedata
/// audit-verify` reports them and a restore requires them.
pub struct AuditChecks {
    pub chain: ChainCheck,
    /// Each other node's chain the store holds (cluster mode), by node name.
    pub remote: Vec<(String, ChainCheck)>,
    pub index: IndexCheck,
}

impl AuditChecks {
    /// What the first failed check found, naming it, if any failed.
    pub fn first_problem(&self) -> Option<String> {
        let problem = |p: &Option<String>| p.clone().unwrap_or_default();
        if !self.chain.ok {
            return Some(format!("chain: {}", problem(&self.chain.problem)));
        }
        if let Some((node, c)) = self.remote.iter().find(|(_, c)| !c.ok) {
            return Some(format!("node {node}'s chain: {}", problem(&c.problem)));
        }
        (!self.index.ok).then(|| format!("index: {}", problem(&self.index.problem)))
    }
}

impl Store {
    /// Recomputes this node's chain and each other node's chain held, and
    /// checks the index against the entries.
    pub fn audit_checks(&self) -> Result<AuditChecks> {
        self.index_tail().settle()?;
        self.audit_files().checks()
    }

    /// See [`AuditFiles::audit_index_check`].
    pub fn audit_index_check(&self) -> Result<IndexCheck> {
        // The keys in memory first, so that every entry's are checked.
        self.index_tail().settle()?;
        self.audit_files().audit_index_check()
    }
}

impl<'a> AuditFiles<'a> {

    /// Checks that the audit index is exactly what the entries call for:
    /// every subject, department and time key of every entry (pointing
    /// where the entry is stored), and no other key; for this node's chain
    /// and for every other node's chain held (cluster mode), each under its
    /// own prefix. Reads the entries once and the index once, holding
    /// neither. This node's entries after the index's recorded position
    /// ([`tail`]) may lack their keys, which a reopen puts in (a copy of
    /// a running store, a store after a crash); the keys they have must
    /// point where the entries are.
    pub fn audit_index_check(self) -> Result<IndexCheck> {
        let upto = tail::whole_upto(self.0)?;
        let (mut keys, problem) = self.chain_index_check(self.entries(Chain::Local, self.local_anchor()?.seq)?, &[], None, upto)?;
        if problem.is_some() {
            return Ok(IndexCheck { ok: false, keys, problem });
        }
        for (node, chain) in self.remote_chains()? {
            let anchor = self.anchor(Chain::Remote(&node), chain.anchor)?.seq;
            let (n, problem) = self.chain_index_check(self.entries(Chain::Remote(&node), anchor)?, &remote::index_prefix(&node), Some(&node), u64::MAX)?;
            keys += n;
            if problem.is_some() {
                return Ok(IndexCheck { ok: false, keys, problem });
            }
        }
        Ok(IndexCheck { ok: true, keys, problem: None })
    }

    /// One chain's part of [`Store::audit_index_check`]: its entries, its
    /// index keys under `prefix`, the node it is of (`None`: this one),
    /// and the last entry whose keys must be there. The keys it holds (0
    /// when it stopped before counting them) and the first problem.
    fn chain_index_check(
        self,
        entries: impl Iterator<Item = Result<(u64, Box<[u8]>)>>,
        prefix: &[u8],
        node: Option<&str>,
        upto: u64,
    ) -> Result<(u64, Option<String>)> {
        let whose = node.map_or(String::new(), |n| format!("node {n}'s "));
        let mut expected = 0u64;
        for item in entries {
            let (first, v) = item?;
            let stored = match Stored::decode(&v) {
                Ok(s) => s,
                Err(e) => return Ok((0, Some(format!("{whose}entry {first} is unreadable: {e}")))),
            };
            for (key, value) in stored.index_entries(first) {
                expected += 1;
                let kind = key[0] as char;
                match self.0.get(Cf::AuditIndex, &[prefix, &key].concat())? {
                    Some(held) if held == value => {}
                    Some(_) => return Ok((0, Some(format!("the index key of {whose}entry {first} ({kind}) points elsewhere")))),
                    None if first > upto => expected -= 1,
                    None => return Ok((0, Some(format!("{whose}entry {first} lacks its index key ({kind})")))),
                }
            }
        }
        let mut keys = 0u64;
        for kind in [b'd', b'k', b't'] {
            let start = [prefix, &[kind]].concat();
            let end = prefix_end(&start);
            keys += self.0.scan(Cf::AuditIndex, &start, end.as_deref(), false)?.count() as u64;
        }
        if keys != expected {
            let chain = node.map_or(String::new(), |n| format!(" of node {n}'s chain"));
            return Ok((keys, Some(format!("the index holds {keys} keys{chain} where the entries call for {expected}"))));
        }
        Ok((keys, None))
    }
}

/// Checks stored entries, in key order, link by link from `anchor` (the
/// head before the first of them) to the recorded `head`: the first
/// problem found, or the chain's length and last hash.
pub(crate) fn walk_chain(
    entries: impl Iterator<Item = Result<(u64, Box<[u8]>)>>,
    anchor: ChainHead,
    head: ChainHead,
) -> Result<ChainCheck> {
    let mut prev = anchor;
    let mut n = 0u64;
    let fail = |n, prev: ChainHead, msg: String| ChainCheck { ok: false, entries: n, starts_after: anchor.seq, head: prev.hash, problem: Some(msg) };
    for item in entries {
        let (seq, v) = item?;
        let linked = read_next(&prev, seq, &v).and_then(|e| Ok((linked_head(&prev, seq, &v, &e)?, e.span())));
        match linked {
            Ok((next, span)) => (prev, n) = (next, n + span),
            Err(msg) => return Ok(fail(n, prev, msg)),
        }
    }
    if head.seq != prev.seq || head.hash != prev.hash {
        return Ok(fail(n, prev, format!("the chain ends at {} but the recorded head is {}", prev.seq, head.seq)));
    }
    Ok(ChainCheck { ok: true, entries: n, starts_after: anchor.seq, head: prev.hash, problem: None })
}

/// Entry `seq`, stored as `bytes`, read as the one after `prev`: what is
/// wrong if it is not the next or is unreadable, worded as the chain check
/// reports it.
pub(crate) fn read_next(prev: &ChainHead, seq: u64, bytes: &[u8]) -> std::result::Result<Stored, String> {
    if seq != prev.seq + 1 {
        return Err(format!("entry {} is missing (next is {seq})", prev.seq + 1));
    }
    Stored::decode(bytes).map_err(|err| format!("entry {seq} is unreadable: {err}"))
}

/// The chain's head after entry `e` (stored at `seq` as `bytes`), if it
/// links to `prev`.
pub(crate) fn linked_head(prev: &ChainHead, seq: u64, bytes: &[u8], e: &Stored) -> std::result::Result<ChainHead, String> {
    if stored_hash(&prev.hash, seq, bytes) != Some(e.hash()) {
        return Err(format!("entry {seq} does not match its hash"));
    }
    Ok(ChainHead { seq: seq + e.span() - 1, hash: e.hash() })
}

#[cfg(test)]
mod key_tests {
    use super::*;

    /// Keys cut short read as naming nobody and as no sequence number;
    /// they never panic a scan.
    #[test]
    fn short_index_keys_name_no_subject_and_no_number() {
        let pid = Pid([7; crate::pseudo::PID_LEN]);
        let whole = subject_index_key(&pid, 42);
        assert_eq!(subject_key_pid(&whole), &pid.0[..]);
        assert_eq!(crate::record::seq_at_end(&whole).unwrap(), 42);
        for len in 0..whole.len() - 8 {
            assert_eq!(subject_key_pid(&whole[..len]), &[] as &[u8], "{len}");
        }
        assert!(crate::record::seq_at_end(&whole[..7]).is_err());
        assert!(crate::record::seq_at_end(b"").is_err());
    }
}
