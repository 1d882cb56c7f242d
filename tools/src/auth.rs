//! Who is calling: departments from the configuration, bearer tokens kept
//! only as SHA-256 digests and compared in constant time, and the caller
//! context (department, operator, purpose) that handlers and the audit
//! trail receive.

use crate::config::{DepartmentConfig, Role};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

#[derive(Debug)]
pub struct Department {
    pub id: String,
    pub name: String,
    pub roles: Vec<Role>,
    token_digest: [u8; 32],
    /// Rate and concurrency limits of this department.
    pub limits: crate::limits::Limits,
}

impl Department {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[derive(Debug, Default)]
pub struct Departments {
    list: Vec<Arc<Department>>,
}

impl Departments {
    pub fn from_config(cfgs: &[DepartmentConfig]) -> anyhow::Result<Departments> {
        let mut list = Vec::with_capacity(cfgs.len());
        for c in cfgs {
            let token_digest = match (&c.token, &c.token_sha256) {
                (Some(t), _) => sha256(t.as_bytes()),
                (None, Some(h)) => {
                    let v = hex::decode(h)?;
                    v.try_into().map_err(|_| anyhow::anyhow!("department {}: bad token_sha256", c.id))?
                }
                (None, None) => anyhow::bail!("department {} has no token", c.id),
            };
            list.push(Arc::new(Department {
                id: c.id.clone(),
                name: c.name.clone(),
                roles: c.roles.clone(),
                token_digest,
                limits: crate::limits::Limits::from_config(c),
            }));
        }
        Ok(Departments { list })
    }

    /// The department owning `token`. Every configured digest is compared,
    /// in constant time, so timing reveals neither which nor how much
    /// matched.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Department>> {
        let digest = sha256(token.as_bytes());
        let mut found = None;
        for d in &self.list {
            if bool::from(d.token_digest.ct_eq(&digest)) {
                found = Some(d.clone());
            }
        }
        found
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Department>> {
        self.list.iter().find(|d| d.id == id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Department>> {
        self.list.iter()
    }
}

/// The authenticated caller of one request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub department: Arc<Department>,
    /// `X-Operator`: the staff member at the counter, if given.
    pub operator: Option<String>,
}

/// The stated purpose (`X-Purpose`) of a request that reads subject data.
#[derive(Clone, Debug)]
pub struct Purpose(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    fn depts() -> Departments {
        Departments::from_config(&[
            DepartmentConfig {
                id: "a".into(),
                name: "A".into(),
                roles: vec![Role::Consumer],
                token: Some("token-of-department-a".into()),
                token_sha256: None,
                ..Default::default()
            },
            DepartmentConfig {
                id: "b".into(),
                name: "B".into(),
                roles: vec![Role::Auditor],
                token: None,
                token_sha256: Some(hex::encode(sha256(b"token-of-department-b"))),
                ..Default::default()
            },
        ])
        .unwrap()
    }

    #[test]
    fn tokens_in_clear_and_as_digest() {
        let d = depts();
        assert_eq!(d.authenticate("token-of-department-a").unwrap().id, "a");
        assert_eq!(d.authenticate("token-of-department-b").unwrap().id, "b");
        assert!(d.authenticate("token-of-department-c").is_none());
        assert!(d.authenticate("").is_none());
        assert!(d.get("b").unwrap().has(Role::Auditor));
    }
}
