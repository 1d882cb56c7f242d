//! Who uses the data: the calling department with its roles, the staff
//! member acting for it, and the one constructor of the audit events that
//! record each use. The transport authenticates; the use cases (provider
//! updates, reads) work with these plain types, and the audit trail
//! records them.

use crate::audit::{Action, AuditEvent};
use crate::keys::SubjectKey;
use std::sync::Arc;

/// What a department may do on the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Provider,
    Consumer,
    Auditor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Provider => "provider",
            Role::Consumer => "consumer",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

/// A person responsible for a department's information sharing
/// (共享工作责任人员), as published to the other departments.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct ResponsiblePerson {
    pub name: String,
    /// Post (职务), e.g. 信息中心主任.
    pub post: String,
    /// How to reach them: an office telephone or e-mail address.
    pub contact: String,
    /// Responsible since this date, `YYYY-MM-DD`.
    pub since: String,
}

/// A department (政务部门) as the use cases see it: its id, name, roles,
/// the purposes it may state and the responsible persons its
/// configuration names.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Department {
    pub id: String,
    pub name: String,
    pub roles: Vec<Role>,
    /// The catalogued purpose codes it may state; `None`: no list yet, so
    /// it states purposes as free text (the transitional mode).
    pub purposes: Option<Vec<String>>,
    /// Responsible persons from the configuration (a record set through
    /// the API replaces them).
    pub responsible: Vec<ResponsiblePerson>,
}

impl Department {
    pub fn new(id: impl Into<String>, roles: Vec<Role>) -> Department {
        let id = id.into();
        Department { name: id.clone(), id, roles, ..Default::default() }
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Finds configured departments by id: a stored job runs for the
/// department that submitted it, if that department still exists.
pub trait Directory: Send + Sync {
    fn department(&self, id: &str) -> Option<Arc<Department>>;
    /// Every configured department, in configuration order.
    fn all(&self) -> Vec<Arc<Department>>;
}

/// A directory of a fixed list of departments (tools and tests that hold
/// no configuration).
#[derive(Clone, Debug, Default)]
pub struct Listed(pub Vec<Arc<Department>>);

impl Directory for Listed {
    fn department(&self, id: &str) -> Option<Arc<Department>> {
        self.0.iter().find(|d| d.id == id).cloned()
    }

    fn all(&self) -> Vec<Arc<Department>> {
        self.0.clone()
    }
}

/// The authenticated caller of one use.
#[derive(Clone, Debug)]
pub struct Caller {
    pub department: Arc<Department>,
    /// The staff member acting.
    pub operator: Option<String>,
    /// Whether the platform established `operator` itself (a console
    /// session): recorded with every use, so that an auditor can tell a
    /// signed-in staff member from a name a program wrote in `X-Operator`.
    pub operator_verified: bool,
    /// The catalogued purpose this use stated, once its purpose was
    /// admitted; recorded with every use and matched against grants.
    pub purpose_code: Option<String>,
}

impl Caller {
    /// A caller whose operator, if any, the calling program declared.
    pub fn declared(department: Arc<Department>, operator: Option<String>) -> Caller {
        Caller { department, operator, operator_verified: false, purpose_code: None }
    }

    /// A caller whose operator the platform signed in.
    pub fn verified(department: Arc<Department>, operator: String) -> Caller {
        Caller { department, operator: Some(operator), operator_verified: true, purpose_code: None }
    }

    /// The audit event of a use by this caller, for `purpose`; the use case
    /// fills in what it read and how it ended.
    pub fn event(&self, purpose: &str, action: Action, key: Option<SubjectKey>) -> AuditEvent {
        AuditEvent {
            department: self.department.id.clone(),
            operator: self.operator.clone(),
            operator_verified: self.operator_verified,
            purpose: purpose.to_owned(),
            purpose_code: self.purpose_code.clone(),
            action,
            key,
            datasets: Vec::new(),
            fields: Vec::new(),
            outcome: String::new(),
            key_mapped: false,
            pid: None,
            rejected_lines: 0,
            grants: Vec::new(),
        }
    }

    /// Whether this caller is a provider of `dataset` (一数一源), the only
    /// one or one of several (each for its area or fields).
    pub fn provides(&self, dataset: &crate::catalog::Dataset) -> bool {
        self.department.has(Role::Provider) && dataset.is_provided_by(&self.department.id)
    }

    /// Whether this caller answers for `dataset`: its only provider, or
    /// the steward of several, who decides grants and resolves disputes.
    pub fn stewards(&self, dataset: &crate::catalog::Dataset) -> bool {
        self.department.has(Role::Provider) && self.department.id == dataset.provider
    }
}

/// An event of the platform itself (the deemed-approval sweep), not of a
/// department's request.
pub fn system_event(purpose: &str, action: Action) -> AuditEvent {
    AuditEvent {
        department: crate::audit::SYSTEM_DEPARTMENT.into(),
        operator: None,
        operator_verified: false,
        purpose: purpose.to_owned(),
        purpose_code: None,
        action,
        key: None,
        datasets: Vec::new(),
        fields: Vec::new(),
        outcome: String::new(),
        key_mapped: false,
        pid: None,
        rejected_lines: 0,
        grants: Vec::new(),
    }
}

/// The entry that names `cuts` (computed for entries dated before
/// `before`), recorded before they are made (`audit::retention`).
pub fn retention_event(cuts: &crate::audit::retention::Cuts, before: i64) -> AuditEvent {
    let mut ev = system_event(crate::audit::retention::RETENTION_PURPOSE, Action::Retention);
    ev.outcome = format!("{}; dated before {}", cuts.outcome(), crate::value::format_datetime(before));
    ev
}
