//! Who is calling: departments from the configuration, bearer tokens kept
//! only as SHA-256 digests and compared in constant time, and client
//! certificate subjects (mutual TLS). Authentication yields the use cases'
//! [`Caller`]; the credentials and limits stay here at the edge.

use crate::config::{DepartmentConfig, Role};
use crate::cert::CertSubject;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

pub use basedata_query::Caller;

/// A configured department with its credentials and limits.
#[derive(Debug)]
pub struct Department {
    pub id: String,
    pub name: String,
    pub roles: Vec<Role>,
    /// What the use cases know of it, shared by every request it makes.
    pub identity: Arc<basedata_query::Department>,
    /// None for a department that authenticates by certificate only.
    token_digest: Option<[u8; 32]>,
    /// The client certificate subject that identifies this department.
    pub cert_subject: Option<CertSubject>,
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
            let cert_subject = c.cert_subject.as_deref().map(CertSubject::parse).transpose()?;
            let token_digest = match (&c.token, &c.token_sha256) {
                (Some(t), _) => Some(sha256(t.as_bytes())),
                (None, Some(h)) => {
                    let v = hex::decode(h)?;
                    Some(v.try_into().map_err(|_| anyhow::anyhow!("department {}: bad token_sha256", c.id))?)
                }
                (None, None) if cert_subject.is_some() => None,
                (None, None) => anyhow::bail!("department {} has no token", c.id),
            };
            list.push(Arc::new(Department {
                id: c.id.clone(),
                name: c.name.clone(),
                roles: c.roles.clone(),
                identity: Arc::new(basedata_query::Department {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    roles: c.roles.clone(),
                    purposes: c.purposes.clone(),
                    responsible: c.responsible.clone(),
                }),
                token_digest,
                cert_subject,
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
            if d.token_digest.is_some_and(|t| bool::from(t.ct_eq(&digest))) {
                found = Some(d.clone());
            }
        }
        found
    }

    /// The department a verified client certificate subject identifies.
    pub fn by_subject(&self, subject: &CertSubject) -> Option<Arc<Department>> {
        self.list.iter().find(|d| d.cert_subject.as_ref() == Some(subject)).cloned()
    }

    /// The calling department from a bearer token and, over mutual TLS, the
    /// subject of the client's verified certificate. A certificate that
    /// identifies a department is enough; a token sent with it must be that
    /// same department's. Otherwise the token decides. The error is the
    /// message for `401 unauthenticated`.
    pub fn identify(&self, token: Option<&str>, peer: Option<&CertSubject>) -> Result<Arc<Department>, String> {
        let by_cert = peer.and_then(|s| self.by_subject(s));
        let by_token = token.map(|t| self.authenticate(t));
        match (by_cert, by_token) {
            (Some(d), None) => Ok(d),
            (Some(d), Some(Some(t))) if t.id == d.id => Ok(d),
            (Some(d), Some(_)) => Err(format!("the token does not belong to department {}, named by the client certificate", d.id)),
            (None, Some(Some(t))) => Ok(t),
            (None, Some(None)) => Err("unknown token".into()),
            (None, None) => Err(match peer {
                Some(s) => format!("the client certificate {s} belongs to no department; send Authorization: Bearer <token>"),
                None => "send Authorization: Bearer <token>".into(),
            }),
        }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Department>> {
        self.list.iter().find(|d| d.id == id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Department>> {
        self.list.iter()
    }
}

impl Department {
    /// This department as the caller of one request, with the staff member
    /// its `X-Operator` names.
    pub fn caller(&self, operator: Option<String>) -> Caller {
        Caller::declared(self.identity.clone(), operator)
    }
}

/// The departments as the use cases look them up (jobs run for the
/// department that submitted them).
impl basedata_query::Directory for Departments {
    fn department(&self, id: &str) -> Option<Arc<basedata_query::Department>> {
        self.get(id).map(|d| d.identity.clone())
    }

    fn all(&self) -> Vec<Arc<basedata_query::Department>> {
        self.list.iter().map(|d| d.identity.clone()).collect()
    }
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

    #[test]
    fn client_certificates_identify_departments() {
        let d = Departments::from_config(&[
            DepartmentConfig {
                id: "a".into(),
                roles: vec![Role::Consumer],
                token: Some("token-of-department-a".into()),
                cert_subject: Some("CN=a,O=A".into()),
                ..Default::default()
            },
            DepartmentConfig {
                id: "b".into(),
                roles: vec![Role::Consumer],
                cert_subject: Some("CN=b".into()),
                ..Default::default()
            },
            DepartmentConfig {
                id: "c".into(),
                roles: vec![Role::Consumer],
                token: Some("token-of-department-c".into()),
                ..Default::default()
            },
        ])
        .unwrap();
        let a = CertSubject::parse("O=A,CN=a").unwrap();
        let b = CertSubject::parse("CN=b").unwrap();
        let stranger = CertSubject::parse("CN=stranger").unwrap();
        let id = |token: Option<&str>, peer: Option<&CertSubject>| d.identify(token, peer).map(|d| d.id.clone());
        assert_eq!(id(None, Some(&a)).unwrap(), "a");
        assert_eq!(id(None, Some(&b)).unwrap(), "b");
        assert_eq!(id(Some("token-of-department-a"), Some(&a)).unwrap(), "a");
        // A token of another department, or an unknown one, beside the certificate.
        assert!(id(Some("token-of-department-c"), Some(&a)).is_err());
        assert!(id(Some("token-of-department-x"), Some(&b)).is_err());
        // A certificate that names no department leaves it to the token.
        assert_eq!(id(Some("token-of-department-c"), Some(&stranger)).unwrap(), "c");
        assert!(id(None, Some(&stranger)).unwrap_err().contains("CN=stranger"));
        assert!(id(Some("token-of-department-x"), Some(&stranger)).is_err());
        // Without a certificate, tokens work as before; a certificate-only department has none.
        assert_eq!(id(Some("token-of-department-c"), None).unwrap(), "c");
        assert!(id(None, None).is_err());
        assert!(id(Some(""), None).is_err());
    }
}
