//! Staff accounts of the console: the people who sign in (counter clerks,
//! providers' data stewards, auditors, administrators), each belonging to
//! one configured department, with argon2id password hashes from the
//! configuration, and the lockout that stops password guessing.
//!
//! The console acts for the staff member's department with the staff
//! member as the verified operator, so every rule of the API (roles,
//! grants, purposes, audit) applies unchanged; the staff role only decides
//! which pages a person may use.

use crate::auth::Departments;
pub use crate::config::StaffRole;
use crate::config::{ConsoleConfig, StaffConfig};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A staff member, as the console knows them after configuration.
#[derive(Debug)]
pub struct Staff {
    pub id: String,
    pub name: String,
    pub department: Arc<crate::auth::Department>,
    pub roles: Vec<StaffRole>,
    pub(crate) password: Option<String>,
    pub cert_subject: Option<crate::cert::CertSubject>,
    pub disabled: bool,
}

impl Staff {
    /// Whether the person may use pages for `role` (administrators may use all).
    pub fn may(&self, role: StaffRole) -> bool {
        self.roles.contains(&role) || self.roles.contains(&StaffRole::Admin)
    }

    /// The use cases' caller: the department, with this person as the
    /// verified operator.
    pub fn caller(&self) -> basedata_query::Caller {
        basedata_query::Caller::verified(self.department.identity.clone(), self.id.clone())
    }

    pub fn display(&self) -> &str {
        if self.name.is_empty() {
            &self.id
        } else {
            &self.name
        }
    }
}

/// Whether `id` is an acceptable staff id (and so may go into the audit
/// log as an operator).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Why a sign-in failed; the stable codes go into the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignInError {
    /// Unknown id or wrong password (the page does not say which).
    BadCredentials,
    /// Too many failures: locked for a while, even with the right password.
    Locked,
    Disabled,
}

impl SignInError {
    pub fn code(self) -> &'static str {
        match self {
            SignInError::BadCredentials => "bad_credentials",
            SignInError::Locked => "locked",
            SignInError::Disabled => "disabled",
        }
    }
}

#[derive(Debug, Default)]
struct Failures {
    count: u32,
    locked_until: Option<Instant>,
}

/// Every staff account, and the failed sign-ins per account.
#[derive(Debug)]
pub struct StaffBook {
    list: Vec<Arc<Staff>>,
    rules: ConsoleConfig,
    failures: Mutex<HashMap<String, Failures>>,
    /// Verified instead of a missing account's hash, so that an unknown id
    /// costs as much time as a wrong password.
    decoy: String,
}

impl StaffBook {
    pub fn from_config(cfgs: &[StaffConfig], rules: ConsoleConfig, departments: &Departments) -> anyhow::Result<StaffBook> {
        let mut list: Vec<Arc<Staff>> = Vec::with_capacity(cfgs.len());
        for c in cfgs {
            if !valid_id(&c.id) {
                anyhow::bail!("staff id {:?}: use 1 to 64 of A-Z a-z 0-9 . _ -", c.id);
            }
            if list.iter().any(|s| s.id == c.id) {
                anyhow::bail!("staff id {} is configured twice", c.id);
            }
            let department = departments
                .get(&c.department)
                .ok_or_else(|| anyhow::anyhow!("staff {}: no department {}", c.id, c.department))?
                .clone();
            if c.roles.is_empty() {
                anyhow::bail!("staff {} has no roles (clerk, steward, auditor, admin)", c.id);
            }
            for r in &c.roles {
                let needs = r.needs();
                if !needs.is_empty() && !needs.iter().any(|n| department.has(*n)) {
                    anyhow::bail!(
                        "staff {}: role {:?} needs a department with role {}, and {} has none",
                        c.id,
                        r,
                        needs.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(" or "),
                        department.id
                    );
                }
            }
            if let Some(h) = &c.password_argon2 {
                let parsed = PasswordHash::new(h).map_err(|e| anyhow::anyhow!("staff {}: password_argon2: {e}", c.id))?;
                if parsed.algorithm.as_str() != "argon2id" {
                    anyhow::bail!("staff {}: password_argon2 must be an argon2id hash", c.id);
                }
            }
            let cert_subject = c.cert_subject.as_deref().map(crate::cert::CertSubject::parse).transpose()?;
            if c.password_argon2.is_none() && cert_subject.is_none() {
                anyhow::bail!("staff {} has neither password_argon2 nor cert_subject", c.id);
            }
            list.push(Arc::new(Staff {
                id: c.id.clone(),
                name: c.name.clone(),
                department,
                roles: c.roles.clone(),
                password: c.password_argon2.clone(),
                cert_subject,
                disabled: c.disabled,
            }));
        }
        Ok(StaffBook { list, rules, failures: Mutex::default(), decoy: hash_password("decoy password")? })
    }

    pub fn rules(&self) -> &ConsoleConfig {
        &self.rules
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Staff>> {
        self.list.iter().find(|s| s.id == id)
    }

    /// Every account, in configuration order.
    pub fn all(&self) -> &[Arc<Staff>] {
        &self.list
    }

    /// Failed sign-ins in a row of `id`, and whether it is locked now.
    pub fn failures(&self, id: &str) -> (u32, bool) {
        let f = self.failures.lock().unwrap();
        f.get(id).map_or((0, false), |e| (e.count, e.locked_until.is_some_and(|u| Instant::now() < u)))
    }

    /// Clears `id`'s failures and lock (an administrator vouched for the
    /// person).
    pub fn unlock(&self, id: &str) {
        self.failures.lock().unwrap().remove(id);
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The staff member a verified client certificate subject identifies.
    pub fn by_subject(&self, subject: &crate::cert::CertSubject) -> Option<&Arc<Staff>> {
        self.list.iter().find(|s| s.cert_subject.as_ref() == Some(subject))
    }

    /// Checks a password sign-in. Slow on purpose (argon2id): call it off
    /// the async threads. A lockout counts failures per id, known or not,
    /// so that guessing cannot tell accounts apart either.
    pub fn sign_in(&self, id: &str, password: &str) -> Result<Arc<Staff>, SignInError> {
        let now = Instant::now();
        if !valid_id(id) {
            // No account has such an id. It costs the same time, but is not
            // counted: the failure table keys only on possible ids, so
            // made-up long strings cannot grow it.
            let _ = PasswordHash::new(&self.decoy).map(|h| Argon2::default().verify_password(password.as_bytes(), &h));
            return Err(SignInError::BadCredentials);
        }
        if self.locked(id, now) {
            return Err(SignInError::Locked);
        }
        let staff = self.get(id);
        let hash = staff.and_then(|s| s.password.as_deref()).unwrap_or(&self.decoy);
        let ok = PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok());
        match staff {
            Some(s) if ok && s.password.is_some() => {
                if s.disabled {
                    return Err(SignInError::Disabled);
                }
                self.failures.lock().unwrap().remove(id);
                Ok(s.clone())
            }
            _ => Err(self.failed(id, now)),
        }
    }

    fn locked(&self, id: &str, now: Instant) -> bool {
        let mut f = self.failures.lock().unwrap();
        match f.get(id).and_then(|e| e.locked_until) {
            Some(until) if now < until => true,
            Some(_) => {
                // The lock ran out: a fresh start.
                f.remove(id);
                false
            }
            None => false,
        }
    }

    fn failed(&self, id: &str, now: Instant) -> SignInError {
        let mut f = self.failures.lock().unwrap();
        // Bounded: ids are at most 64 characters, and a flood of made-up
        // ids is cut back to the locked ones.
        if f.len() > 100_000 {
            f.retain(|_, e| e.locked_until.is_some());
        }
        let e = f.entry(id.to_owned()).or_default();
        e.count += 1;
        if e.count >= self.rules.max_failures.max(1) {
            e.locked_until = Some(now + Duration::from_secs(self.rules.lockout_minutes * 60));
            SignInError::Locked
        } else {
            SignInError::BadCredentials
        }
    }
}

/// An argon2id hash of `password` with a random salt, as a PHC string for
/// `password_argon2`.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt).map_err(|e| anyhow::anyhow!("{e}"))?.to_string())
}

/// One consumer department, `counter`, for tests.
#[cfg(test)]
pub(crate) fn test_departments() -> Departments {
    use crate::config::{DepartmentConfig, Role};
    Departments::from_config(&[DepartmentConfig {
        id: "counter".into(),
        roles: vec![Role::Consumer],
        token: Some("t-counter-0000000000".into()),
        ..Default::default()
    }])
    .expect("a valid department")
}

/// A book with one clerk of `counter`, `clerk1` (王五), signing in with
/// `password`, for tests.
#[cfg(test)]
pub(crate) fn test_book(password: &str, rules: ConsoleConfig) -> StaffBook {
    let staff = StaffConfig {
        id: "clerk1".into(),
        name: "王五".into(),
        department: "counter".into(),
        roles: vec![StaffRole::Clerk],
        password_argon2: Some(hash_password(password).expect("a hash")),
        cert_subject: None,
        disabled: false,
    };
    StaffBook::from_config(&[staff], rules, &test_departments()).expect("a valid staff list")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(max_failures: u32) -> StaffBook {
        test_book("correct horse", ConsoleConfig { max_failures, ..ConsoleConfig::default() })
    }

    #[test]
    fn right_password_signs_in_wrong_one_does_not() {
        let b = book(5);
        assert_eq!(b.sign_in("clerk1", "correct horse").unwrap().id, "clerk1");
        assert_eq!(b.sign_in("clerk1", "wrong").unwrap_err(), SignInError::BadCredentials);
        assert_eq!(b.sign_in("nobody", "correct horse").unwrap_err(), SignInError::BadCredentials);
        assert_eq!(b.sign_in(&"x".repeat(10_000), "pw").unwrap_err(), SignInError::BadCredentials);
        assert!(b.failures.lock().unwrap().keys().all(|k| k.len() <= 64));
        // The caller carries the person as a verified operator.
        let c = b.get("clerk1").unwrap().caller();
        assert!(c.operator_verified && c.operator.as_deref() == Some("clerk1"));
    }

    #[test]
    fn repeated_failures_lock_even_the_right_password_out() {
        let b = book(3);
        assert_eq!(b.sign_in("clerk1", "a").unwrap_err(), SignInError::BadCredentials);
        assert_eq!(b.sign_in("clerk1", "b").unwrap_err(), SignInError::BadCredentials);
        assert_eq!(b.sign_in("clerk1", "c").unwrap_err(), SignInError::Locked);
        assert_eq!(b.sign_in("clerk1", "correct horse").unwrap_err(), SignInError::Locked);
    }

    #[test]
    fn a_success_clears_earlier_failures() {
        let b = book(3);
        b.sign_in("clerk1", "a").unwrap_err();
        b.sign_in("clerk1", "b").unwrap_err();
        b.sign_in("clerk1", "correct horse").unwrap();
        assert_eq!(b.sign_in("clerk1", "c").unwrap_err(), SignInError::BadCredentials);
    }

    #[test]
    fn configuration_mistakes_are_refused() {
        let departments = test_departments();
        let good = StaffConfig {
            id: "s1".into(),
            name: String::new(),
            department: "counter".into(),
            roles: vec![StaffRole::Clerk],
            password_argon2: Some(hash_password("pw-123456").unwrap()),
            cert_subject: None,
            disabled: false,
        };
        let check = |c: StaffConfig| StaffBook::from_config(&[c], ConsoleConfig::default(), &departments).err().map(|e| e.to_string());
        assert_eq!(check(good.clone()), None);
        assert!(check(StaffConfig { id: "bad id".into(), ..good.clone() }).is_some());
        assert!(check(StaffConfig { department: "nowhere".into(), ..good.clone() }).is_some());
        // A steward needs a providing department.
        assert!(check(StaffConfig { roles: vec![StaffRole::Steward], ..good.clone() }).unwrap().contains("provider"));
        assert!(check(StaffConfig { password_argon2: Some("plain".into()), ..good.clone() }).is_some());
        assert!(check(StaffConfig { password_argon2: None, ..good }).is_some());
    }
}
