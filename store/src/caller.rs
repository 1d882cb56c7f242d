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

/// A department (政务部门) as the use cases see it: its id, name and roles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Department {
    pub id: String,
    pub name: String,
    pub roles: Vec<Role>,
}

impl Department {
    pub fn new(id: impl Into<String>, roles: Vec<Role>) -> Department {
        let id = id.into();
        Department { name: id.clone(), id, roles }
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
}

impl Caller {
    /// A caller whose operator, if any, the calling program declared.
    pub fn declared(department: Arc<Department>, operator: Option<String>) -> Caller {
        Caller { department, operator, operator_verified: false }
    }

    /// A caller whose operator the platform signed in.
    pub fn verified(department: Arc<Department>, operator: String) -> Caller {
        Caller { department, operator: Some(operator), operator_verified: true }
    }

    /// The audit event of a use by this caller, for `purpose`; the use case
    /// fills in what it read and how it ended.
    pub fn event(&self, purpose: &str, action: Action, key: Option<SubjectKey>) -> AuditEvent {
        AuditEvent {
            department: self.department.id.clone(),
            operator: self.operator.clone(),
            operator_verified: self.operator_verified,
            purpose: purpose.to_owned(),
            action,
            key,
            datasets: Vec::new(),
            fields: Vec::new(),
            outcome: String::new(),
            key_mapped: false,
        }
    }

    /// Whether this caller is the provider of `dataset` (一数一源).
    pub fn provides(&self, dataset: &crate::catalog::Dataset) -> bool {
        self.department.has(Role::Provider) && self.department.id == dataset.provider
    }
}

/// An event of the platform itself (the deemed-approval sweep), not of a
/// department's request.
pub fn system_event(purpose: &str, action: Action) -> AuditEvent {
    AuditEvent {
        department: "system".into(),
        operator: None,
        operator_verified: false,
        purpose: purpose.to_owned(),
        action,
        key: None,
        datasets: Vec::new(),
        fields: Vec::new(),
        outcome: String::new(),
        key_mapped: false,
    }
}
