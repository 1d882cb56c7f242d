//! Stated purposes (用途): the purpose a use of subject data states, read
//! against the catalog's purposes and the department's list. Shared data
//! are used only for the purpose they were obtained for (Guangzhou Art.
//! 25, State Council Art. 14, Huizhou Art. 48), so a use names a
//! catalogued purpose by its code, which is recorded with it and matched
//! against the purpose its grants were applied for.
//!
//! Syntax of a statement: `CODE` or `CODE; note` — the code is what comes
//! before the first `;`, trimmed; the note, free text, what follows. A
//! department whose configuration lists purposes is strict: it may state
//! only those codes, and anything else is refused (`purpose_not_allowed`)
//! and audited as `denied`. A department without a list is in the
//! transitional mode: any text is accepted; if it names a catalogued
//! purpose that code is recorded, otherwise the use counts in the sharing
//! report as one without a catalogued purpose.

use crate::caller::{Caller, Department};
use crate::error::{Error, Result};
use crate::service::Queries;
use basedata_store::{Action, Catalog, WriteBatch};

/// The code part and the note of a purpose statement.
pub fn split(text: &str) -> (&str, Option<&str>) {
    match text.split_once(';') {
        Some((code, note)) => (code.trim(), Some(note.trim()).filter(|n| !n.is_empty())),
        None => (text.trim(), None),
    }
}

/// Why a stated purpose was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The code is not a purpose of the catalog.
    Unknown,
    /// A catalogued purpose the department's list does not hold.
    NotAllowed,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unknown => "unknown",
            Refusal::NotAllowed => "not_allowed",
        }
    }
}

/// The catalogued purpose `text` names for `department`: `Ok` with the
/// code (`None` for free text in the transitional mode), or why a strict
/// department may not state it.
pub fn code_for(catalog: &Catalog, department: &Department, text: &str) -> std::result::Result<Option<String>, Refusal> {
    let (code, _) = split(text);
    let catalogued = catalog.purpose(code).is_some();
    match &department.purposes {
        None => Ok(catalogued.then(|| code.to_owned())),
        Some(_) if !catalogued => Err(Refusal::Unknown),
        Some(list) if list.iter().any(|c| c == code) => Ok(Some(code.to_owned())),
        Some(_) => Err(Refusal::NotAllowed),
    }
}

impl Queries {
    /// [`code_for`] the caller's department under this catalog.
    pub fn purpose_code(&self, caller: &Caller, text: &str) -> std::result::Result<Option<String>, Refusal> {
        code_for(&self.catalog, &caller.department, text)
    }

    /// Admits the purpose a use states: the caller, now carrying the
    /// purpose code it is recorded and matched with. A refusal is audited
    /// as `denied` before it is returned.
    pub async fn admit_purpose(&self, caller: &Caller, text: &str) -> Result<Caller> {
        match self.purpose_code(caller, text) {
            Ok(code) => {
                let mut c = caller.clone();
                c.purpose_code = code;
                Ok(c)
            }
            Err(refusal) => {
                let err = self.purpose_refusal(caller, text, refusal);
                let mut ev = caller.event(text, Action::Denied, None);
                ev.outcome = format!("{}: purpose {}", err.code(), refusal.as_str());
                self.record(vec![ev], WriteBatch::new()).await?;
                Err(err)
            }
        }
    }

    /// The error of a refused purpose, naming the codes the department may state.
    pub fn purpose_refusal(&self, caller: &Caller, text: &str, refusal: Refusal) -> Error {
        let (code, _) = split(text);
        let allowed = caller.department.purposes.clone().unwrap_or_default();
        let message = match refusal {
            Refusal::Unknown => format!(
                "{:?} is not a purpose code of the catalog; department {} states one of its purposes as CODE or CODE; note",
                code, caller.department.id
            ),
            Refusal::NotAllowed => {
                format!("department {} may not use data for purpose {code}", caller.department.id)
            }
        };
        Error::PurposeNotAllowed { message, code: code.to_owned(), reason: refusal.as_str(), allowed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_departments_state_their_codes_only() {
        let cat = Catalog::builtin();
        let strict = Department { purposes: Some(vec!["social_insurance".into()]), ..Department::new("c", Vec::new()) };
        let free = Department::new("f", Vec::new());
        assert_eq!(code_for(&cat, &strict, "social_insurance; 业务 7"), Ok(Some("social_insurance".into())));
        assert_eq!(code_for(&cat, &strict, "tax_administration"), Err(Refusal::NotAllowed));
        assert_eq!(code_for(&cat, &strict, "no_such_code"), Err(Refusal::Unknown));
        assert_eq!(code_for(&cat, &strict, "办理社保业务"), Err(Refusal::Unknown));
        assert_eq!(code_for(&cat, &free, "办理社保业务"), Ok(None));
        assert_eq!(code_for(&cat, &free, "no_such_code; x"), Ok(None));
        assert_eq!(code_for(&cat, &free, "tax_administration; x"), Ok(Some("tax_administration".into())));
    }

    #[test]
    fn statements_split_at_the_first_semicolon() {
        assert_eq!(split("social_insurance"), ("social_insurance", None));
        assert_eq!(split(" social_insurance ; 业务编号 12; 续 "), ("social_insurance", Some("业务编号 12; 续")));
        assert_eq!(split("social_insurance;"), ("social_insurance", None));
        assert_eq!(split("办理社保业务"), ("办理社保业务", None));
    }
}
