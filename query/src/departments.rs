//! The departments as published to each other: id, name, roles, the
//! purposes they may state, and their responsible persons for information
//! sharing (共享工作责任人员, Guangzhou Arts. 6 and 17, Huizhou Arts. 10 and
//! 43). The configuration may name the persons; an administrator's record
//! set through the API replaces them, is audited, and is dated, so that
//! the sharing report can flag a record that is missing or out of date.
//!
//! Layout (`gov` family): `r/<department>` -> [`ResponsibleRecord`].

use crate::caller::{Caller, Department, ResponsiblePerson, Role};
use crate::error::{Error, Result};
use crate::gov::cst_date;
use crate::service::Queries;
use basedata_store::codec::decode;
use basedata_store::engine::Cf;
use basedata_store::Action;
use time::Date;

/// Longest name, post or contact, in characters.
const MAX_PERSON_TEXT: usize = 200;
/// Most persons one record lists.
pub const MAX_PERSONS: usize = 20;

pub use crate::gov::ResponsibleRecord;

/// Whether a department's record is current enough (for the sharing report).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordStatus {
    Current,
    /// No responsible person is recorded.
    Missing,
    /// The record is older than the policy's `responsible_max_age_days`.
    OutOfDate,
}

impl RecordStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordStatus::Current => "current",
            RecordStatus::Missing => "missing",
            RecordStatus::OutOfDate => "out_of_date",
        }
    }
}

/// A department as every other department may see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepartmentView {
    pub id: String,
    pub name: String,
    pub roles: Vec<Role>,
    /// `None`: free-text purposes (the transitional mode).
    pub purposes: Option<Vec<String>>,
    pub responsible: Vec<ResponsiblePerson>,
    /// The date the record stands as of: when it was last set through the
    /// API, or for persons from the configuration the latest `since`.
    pub responsible_as_of: Option<Date>,
    /// `api` or `config` (`None` when nobody is recorded).
    pub responsible_source: Option<&'static str>,
    /// Unix microseconds and department of the last change through the API.
    pub responsible_updated: Option<(i64, String)>,
}

pub(crate) fn record_key(department: &str) -> Vec<u8> {
    let mut k = b"r/".to_vec();
    k.extend_from_slice(department.as_bytes());
    k
}

/// Every department's record as stored (key, value), in key order.
pub(crate) fn all_records(engine: &dyn basedata_store::Engine) -> basedata_store::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let end = basedata_store::engine::prefix_end(b"r/");
    engine.scan(Cf::Gov, b"r/", end.as_deref(), false)?.map(|r| r.map(|(k, v)| (k.into_vec(), v.into_vec()))).collect()
}

/// Checks one person's particulars: every text present, short, fit for the
/// audit trail, and `since` a date.
pub fn check_person(p: &ResponsiblePerson) -> std::result::Result<(), String> {
    for (what, v) in [("name", &p.name), ("post", &p.post), ("contact", &p.contact)] {
        let t = v.trim();
        if t.is_empty() {
            return Err(format!("{what} is required"));
        }
        crate::governance::text_refusal(what, t, MAX_PERSON_TEXT)?;
    }
    parse_date(&p.since).map(|_| ()).ok_or_else(|| "since is a date, YYYY-MM-DD".to_owned())
}

fn parse_date(s: &str) -> Option<Date> {
    Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).ok()
}

impl Queries {
    fn responsible_record(&self, department: &str) -> Result<Option<ResponsibleRecord>> {
        match self.store.engine().get(Cf::Gov, &record_key(department))? {
            Some(v) => Ok(Some(decode("responsible persons", &v)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn view(&self, d: &Department) -> Result<DepartmentView> {
        let mut v = DepartmentView {
            id: d.id.clone(),
            name: d.name.clone(),
            roles: d.roles.clone(),
            purposes: d.purposes.clone(),
            responsible: Vec::new(),
            responsible_as_of: None,
            responsible_source: None,
            responsible_updated: None,
        };
        if let Some(r) = self.responsible_record(&d.id)? {
            v.responsible_as_of = Some(cst_date(r.updated_at));
            v.responsible_updated = Some((r.updated_at, r.updated_by));
            v.responsible = r.persons;
            v.responsible_source = Some("api");
        } else if !d.responsible.is_empty() {
            v.responsible = d.responsible.clone();
            v.responsible_as_of = d.responsible.iter().filter_map(|p| parse_date(&p.since)).max();
            v.responsible_source = Some("config");
        }
        Ok(v)
    }

    /// Every configured department, for any authenticated department
    /// (Guangzhou Art. 17: responsible persons are published on the platform).
    pub fn departments(&self, _caller: &Caller) -> Result<Vec<DepartmentView>> {
        self.directory.all().iter().map(|d| self.view(d)).collect()
    }

    /// Whether `view`'s record is current at `now` under the policy.
    pub fn record_status(&self, view: &DepartmentView, now: i64) -> RecordStatus {
        match view.responsible_as_of {
            _ if view.responsible.is_empty() => RecordStatus::Missing,
            None => RecordStatus::Missing,
            Some(d) if (cst_date(now) - d).whole_days() > i64::from(self.grants.policy().responsible_max_age_days) => {
                RecordStatus::OutOfDate
            }
            Some(_) => RecordStatus::Current,
        }
    }

    /// An administrator records `department`'s responsible persons,
    /// replacing what was recorded or configured; audited (`responsible`).
    pub async fn set_responsible(&self, caller: &Caller, department: &str, persons: Vec<ResponsiblePerson>) -> Result<DepartmentView> {
        if !caller.department.has(Role::Admin) {
            return Err(Error::Forbidden("only an administrator records responsible persons".into()));
        }
        let d = self.directory.department(department).ok_or_else(|| Error::NotFound(format!("no department {department:?}")))?;
        if persons.is_empty() || persons.len() > MAX_PERSONS {
            return Err(Error::InvalidValue(format!("persons lists 1 to {MAX_PERSONS} responsible persons")));
        }
        let persons: Vec<ResponsiblePerson> = persons
            .into_iter()
            .map(|p| ResponsiblePerson {
                name: p.name.trim().to_owned(),
                post: p.post.trim().to_owned(),
                contact: p.contact.trim().to_owned(),
                since: p.since.trim().to_owned(),
            })
            .collect();
        for (i, p) in persons.iter().enumerate() {
            check_person(p).map_err(|e| Error::InvalidValue(format!("persons[{i}]: {e}")))?;
        }
        let record = ResponsibleRecord { persons, updated_at: self.grants.now(), updated_by: caller.department.id.clone() };
        let mut ev = caller.event("responsible persons", Action::Responsible, None);
        let names: Vec<&str> = record.persons.iter().map(|p| p.name.as_str()).collect();
        ev.outcome = format!("recorded for {}: {}", d.id, names.join(", "));
        // The last change in log order stands on every node.
        self.govern(crate::govlog::Change::Responsible { department: d.id.clone(), record }, vec![ev]).await?;
        self.view(&d)
    }
}
