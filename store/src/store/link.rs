//! Links between a market entity's business-licence registration number
//! and the unified social credit code later assigned to it (Guangzhou Art.
//! 20: entities without a code are keyed by their licence until they get
//! one). A provider update that names both (`registration_number` beside a
//! credit-code `key`) links them, in the same atomic batch as the update.
//!
//! The subject keeps the storage identity it was first known by: its
//! records, their history and the change log stay under the licence
//! number's pseudonym, and the credit code's pseudonym points there. So a
//! link moves no data, and reads, verifications and writes by either key
//! reach the same records. Two entries in the `keymap` family, beside the
//! sealed keys (whose keys are 16-byte pseudonyms; these are 17 bytes, so
//! the two never meet):
//!
//! - `pid(credit code) ++ '>'` → document type and pseudonym of the licence
//!   number: where the credit code's records are;
//! - `pid(licence number) ++ '<'` → document type and pseudonym of the
//!   credit code: which code the licence number was given, so that the
//!   audit trail of either key includes the other's entries.
//!
//! A link is refused (`conflict`) when the credit code already holds
//! records of its own (they would be hidden), or either number is already
//! linked to a different one. Audit entries keep the key each use named;
//! a query by either key reads both keys' entries.

use crate::engine::{prefix_end, Cf, WriteBatch};
use crate::keys::{DocType, SubjectKey};
use crate::pseudo::{Pid, PID_LEN};
use super::Store;
use crate::{Error, Result};
use std::collections::HashMap;

/// Marks the entry of a credit code that points to its licence number.
const TO_RECORDS: u8 = b'>';
/// Marks the entry of a licence number that names its credit code.
const TO_CODE: u8 = b'<';

fn entry_key(pid: &Pid, mark: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(PID_LEN + 1);
    k.extend_from_slice(&pid.0);
    k.push(mark);
    k
}

fn entry_value(doc: DocType, pid: &Pid) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + PID_LEN);
    v.push(doc.as_u8());
    v.extend_from_slice(&pid.0);
    v
}

fn decode_entry(v: &[u8]) -> Result<(DocType, Pid)> {
    let corrupt = || Error::Corrupt { what: "key link", msg: "malformed entry".into() };
    let (&doc, pid) = v.split_first().ok_or_else(corrupt)?;
    let doc = DocType::from_u8(doc).ok_or_else(corrupt)?;
    let pid = Pid::from_slice(pid).filter(|_| pid.len() == PID_LEN).ok_or_else(corrupt)?;
    Ok((doc, pid))
}

/// Where a key's records are stored: its own pseudonym, or the one its
/// link points to, with that key's document type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Home {
    pub pid: Pid,
    pub doc: DocType,
    /// The key's records are under another key's pseudonym.
    pub linked: bool,
}

/// Links written earlier in a batch that is being built, which later
/// updates of the same batch must already see.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    to_records: HashMap<Pid, Pid>,
    to_code: HashMap<Pid, Pid>,
}

impl Pending {
    /// Takes back a link [`Store::link_into`] made (the pseudonyms of the
    /// code and the licence it returned) whose update was not applied.
    pub(crate) fn forget(&mut self, code: &Pid, licence: &Pid) {
        self.to_records.remove(code);
        self.to_code.remove(licence);
    }
}

/// Why a link was refused: the `conflict` message of the update line.
pub const CODE_HAS_RECORDS: &str =
    "the credit code already has records of its own: it cannot be linked to a registration number";
pub const CODE_LINKED_ELSEWHERE: &str = "the credit code is already linked to another registration number";
pub const LICENCE_LINKED_ELSEWHERE: &str = "the registration number is already linked to another credit code";

impl Store {
    /// Where the records of `key` are (see the module comment). Only a
    /// credit code can point elsewhere, so other keys cost no read.
    pub fn home(&self, key: &SubjectKey) -> Result<Home> {
        let own = Home { pid: self.pseudonym(key), doc: key.doc_type(), linked: false };
        if key.doc_type() != DocType::UnifiedCreditCode {
            return Ok(own);
        }
        match self.engine().get(Cf::KeyMap, &entry_key(&own.pid, TO_RECORDS))? {
            Some(v) => decode_entry(&v).map(|(doc, pid)| Home { pid, doc, linked: true }),
            None => Ok(own),
        }
    }

    /// [`Store::home`] of many keys, with one multi-get for the credit
    /// codes among them.
    pub fn homes(&self, keys: &[&SubjectKey]) -> Result<Vec<Home>> {
        let mut homes: Vec<Home> =
            keys.iter().map(|k| Home { pid: self.pseudonym(k), doc: k.doc_type(), linked: false }).collect();
        let codes: Vec<usize> = (0..keys.len()).filter(|&i| keys[i].doc_type() == DocType::UnifiedCreditCode).collect();
        if codes.is_empty() {
            return Ok(homes);
        }
        let entry_keys: Vec<Vec<u8>> = codes.iter().map(|&i| entry_key(&homes[i].pid, TO_RECORDS)).collect();
        let refs: Vec<&[u8]> = entry_keys.iter().map(Vec::as_slice).collect();
        for (&i, found) in codes.iter().zip(self.engine().multi_get(Cf::KeyMap, &refs)?) {
            if let Some(v) = found {
                let (doc, pid) = decode_entry(&v)?;
                homes[i] = Home { pid, doc, linked: true };
            }
        }
        Ok(homes)
    }

    /// The key linked to `key`: the licence number a credit code was given
    /// to, or the credit code a licence number was given. `None` for keys
    /// of other types or without a link.
    pub fn linked_key(&self, key: &SubjectKey) -> Result<Option<SubjectKey>> {
        let mark = match key.doc_type() {
            DocType::UnifiedCreditCode => TO_RECORDS,
            DocType::BusinessLicence => TO_CODE,
            _ => return Ok(None),
        };
        match self.engine().get(Cf::KeyMap, &entry_key(&self.pseudonym(key), mark))? {
            Some(v) => {
                let (_, pid) = decode_entry(&v)?;
                self.resolve(&pid)
            }
            None => Ok(None),
        }
    }

    /// The pseudonyms under which the audit trail of `key` is indexed: its
    /// own, and its linked key's.
    pub fn audit_pids(&self, key: &SubjectKey) -> Result<Vec<Pid>> {
        let mut pids = vec![self.pseudonym(key)];
        if let Some(other) = self.linked_key(key)? {
            pids.push(self.pseudonym(&other));
        }
        Ok(pids)
    }

    /// Whether any record (deleted ones included) is stored under `pid`.
    fn has_records(&self, pid: &Pid) -> Result<bool> {
        let end = prefix_end(&pid.0);
        Ok(self.engine().scan(Cf::Records, &pid.0, end.as_deref(), false)?.next().transpose()?.is_some())
    }

    /// Links `code` (a credit code) to `licence` (a registration number)
    /// into `batch`, seeing the links `pending` in the same batch; called
    /// by the single writer. `Ok(Err(reason))` when the link is refused;
    /// linking the same pair again changes nothing (`Ok(Ok(None))`); a new
    /// link returns the pseudonyms of code and licence, for
    /// [`Pending::forget`]. `fresh` tells whether
    /// the batch already put records under the code's own pseudonym.
    pub(crate) fn link_into(
        &self,
        code: &SubjectKey,
        licence: &SubjectKey,
        pending: &mut Pending,
        fresh: impl Fn(&Pid) -> bool,
        batch: &mut WriteBatch,
    ) -> Result<std::result::Result<Option<(Pid, Pid)>, &'static str>> {
        let code_pid = self.pseudonym(code);
        let licence_pid = self.pseudonym(licence);
        let stored = |pid: &Pid, mark| -> Result<Option<Pid>> {
            match self.engine().get(Cf::KeyMap, &entry_key(pid, mark))? {
                Some(v) => decode_entry(&v).map(|(_, p)| Some(p)),
                None => Ok(None),
            }
        };
        let points_to = match pending.to_records.get(&code_pid) {
            Some(p) => Some(*p),
            None => stored(&code_pid, TO_RECORDS)?,
        };
        match points_to {
            Some(p) if p == licence_pid => return Ok(Ok(None)),
            Some(_) => return Ok(Err(CODE_LINKED_ELSEWHERE)),
            None => {}
        }
        let given = match pending.to_code.get(&licence_pid) {
            Some(p) => Some(*p),
            None => stored(&licence_pid, TO_CODE)?,
        };
        if given.is_some_and(|p| p != code_pid) {
            return Ok(Err(LICENCE_LINKED_ELSEWHERE));
        }
        if fresh(&code_pid) || self.has_records(&code_pid)? {
            return Ok(Err(CODE_HAS_RECORDS));
        }
        batch.put(Cf::KeyMap, entry_key(&code_pid, TO_RECORDS), entry_value(DocType::BusinessLicence, &licence_pid));
        batch.put(Cf::KeyMap, entry_key(&licence_pid, TO_CODE), entry_value(DocType::UnifiedCreditCode, &code_pid));
        // Both keys must be readable back from their pseudonyms: the
        // licence number's records (new ones included) are shown under it,
        // and the code's audit entries name it.
        self.seal_into(batch, licence);
        self.seal_into(batch, code);
        pending.to_records.insert(code_pid, licence_pid);
        pending.to_code.insert(licence_pid, code_pid);
        Ok(Ok(Some((code_pid, licence_pid))))
    }

    /// Where the records of `key` are, seeing links `pending` in a batch.
    pub(crate) fn home_pending(&self, key: &SubjectKey, pending: &Pending, stored: Home) -> Home {
        match pending.to_records.get(&self.pseudonym(key)) {
            Some(pid) => Home { pid: *pid, doc: DocType::BusinessLicence, linked: true },
            None => stored,
        }
    }
}
