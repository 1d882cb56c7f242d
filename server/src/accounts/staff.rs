//! Staff accounts of the console: the people who sign in (counter clerks,
//! providers' data stewards, auditors, administrators), each belonging to
//! one configured department, with argon2id password hashes from the
//! configuration or the store, and the lockout that stops password
//! guessing.
//!
//! Configured accounts (`[[staff]]`) change only with the configuration;
//! stored ones are added, disabled, enabled and given new passwords by an
//! administrator (the console's account page, or `basedata staff`). Both
//! obey the same rules ([`check_account`]); an id is defined once, and a
//! stored account whose id the configuration has since taken, or that no
//! longer fits its department, is left out (see [`StaffBook::left_out`]).
//!
//! The console acts for the staff member's department with the staff
//! member as the verified operator, so every rule of the API (roles,
//! grants, purposes, audit) applies unchanged; the staff role only decides
//! which pages a person may use.

use crate::auth::{Department, Departments};
pub use crate::config::StaffRole;
use crate::config::{ConsoleConfig, StaffConfig};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use basedata_query::staff::StaffRecord;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Where an account is defined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `[[staff]]` of the configuration: read-only at run time.
    Config,
    /// The store, added by an administrator.
    Store { created_at: i64, created_by: String, changed_at: i64 },
}

/// A staff member, as the console knows them.
#[derive(Debug)]
pub struct Staff {
    pub id: String,
    pub name: String,
    pub department: Arc<Department>,
    pub roles: Vec<StaffRole>,
    pub(crate) password: Option<String>,
    pub cert_subject: Option<crate::cert::CertSubject>,
    pub disabled: bool,
    pub source: Source,
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

    pub fn stored(&self) -> bool {
        matches!(self.source, Source::Store { .. })
    }

    /// This account as a stored record, changed by `by` at `now`.
    fn record(&self, by: &str, now: i64) -> Option<StaffRecord> {
        let Source::Store { created_at, created_by, .. } = &self.source else { return None };
        Some(StaffRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            department: self.department.id.clone(),
            roles: self.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            password_argon2: self.password.clone().unwrap_or_default(),
            disabled: self.disabled,
            created_at: *created_at,
            created_by: created_by.clone(),
            changed_at: now,
            changed_by: by.to_owned(),
        })
    }
}

/// Whether `id` is an acceptable staff id (and so may go into the audit
/// log as an operator).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Most characters of a staff member's name.
pub const MAX_NAME_CHARS: usize = 64;

/// Fewest and most characters of a staff password.
pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 256;

/// Why an account, or a change to one, is refused. Each has a stable
/// code, an English text (configuration, command line) and a Chinese one
/// (the console).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountError {
    InvalidId,
    /// A name over [`MAX_NAME_CHARS`], or holding control or formatting
    /// characters (it is shown on pages and in the audit trail).
    InvalidName,
    /// The id is defined already (in the configuration when `configured`).
    Taken { configured: bool },
    NoDepartment(String),
    NoRoles,
    UnknownRole(String),
    /// A staff role the department cannot act through.
    RoleNeeds { role: StaffRole, department: String },
    WeakPassword,
    BadHash(String),
    NotFound,
    /// Configured accounts change only with the configuration.
    Configured,
    /// The account is already disabled (`true`) or enabled (`false`).
    Unchanged { disabled: bool },
}

impl AccountError {
    pub fn code(&self) -> &'static str {
        match self {
            AccountError::NotFound => "not_found",
            AccountError::Taken { .. } | AccountError::Configured | AccountError::Unchanged { .. } => "conflict",
            _ => "invalid_value",
        }
    }

    /// The reason in Chinese, for the console.
    pub fn message_zh(&self) -> String {
        match self {
            AccountError::InvalidId => "工号只能由 1 至 64 个字母、数字和 . _ - 组成。".into(),
            AccountError::InvalidName => format!("姓名最多 {MAX_NAME_CHARS} 个字符，且不能含控制字符或格式字符。"),
            AccountError::Taken { configured: true } => "该工号已在配置文件中定义。".into(),
            AccountError::Taken { configured: false } => "该工号已存在。".into(),
            AccountError::NoDepartment(d) => format!("没有部门 {d}。"),
            AccountError::NoRoles => "至少选择一个角色。".into(),
            AccountError::UnknownRole(r) => format!("没有角色 {r}。"),
            AccountError::RoleNeeds { role, department } => {
                format!("部门 {department} 不能承担“{}”：{}", role.title(), role.needs_zh())
            }
            AccountError::WeakPassword => format!("密码须为 {MIN_PASSWORD_CHARS} 至 {MAX_PASSWORD_CHARS} 个字符。"),
            AccountError::BadHash(m) => format!("密码散列无效：{m}"),
            AccountError::NotFound => "没有这个账号。".into(),
            AccountError::Configured => "该账号在配置文件中管理，不能在此修改。".into(),
            AccountError::Unchanged { disabled } => format!("账号已经{}。", if *disabled { "停用" } else { "启用" }),
        }
    }
}

impl std::fmt::Display for AccountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccountError::InvalidId => write!(f, "use 1 to 64 of A-Z a-z 0-9 . _ - for a staff id"),
            AccountError::InvalidName => write!(f, "a staff name is at most {MAX_NAME_CHARS} characters, without control or formatting characters"),
            AccountError::Taken { configured: true } => write!(f, "the id is defined in the configuration already"),
            AccountError::Taken { configured: false } => write!(f, "the id is defined twice"),
            AccountError::NoDepartment(d) => write!(f, "no department {d}"),
            AccountError::NoRoles => write!(f, "no roles (clerk, steward, auditor, admin)"),
            AccountError::UnknownRole(r) => write!(f, "no role {r:?} (clerk, steward, auditor, admin)"),
            AccountError::RoleNeeds { role, department } => write!(
                f,
                "role {} needs a department with role {}, and {department} has none",
                role.as_str(),
                role.needs().iter().map(|n| n.as_str()).collect::<Vec<_>>().join(" or ")
            ),
            AccountError::WeakPassword => {
                write!(f, "a staff password needs {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")
            }
            AccountError::BadHash(m) => write!(f, "password_argon2: {m}"),
            AccountError::NotFound => write!(f, "no such account"),
            AccountError::Configured => write!(f, "the account is in the configuration file; change it there"),
            AccountError::Unchanged { disabled } => write!(f, "the account is {} already", if *disabled { "disabled" } else { "enabled" }),
        }
    }
}

impl std::error::Error for AccountError {}

/// Checks what every account must be, wherever it is defined: a valid id,
/// a configured department, and roles that department can act through.
pub fn check_account(id: &str, department: &str, roles: &[StaffRole], departments: &dyn Fn(&str) -> Option<Arc<Department>>) -> Result<Arc<Department>, AccountError> {
    if !valid_id(id) {
        return Err(AccountError::InvalidId);
    }
    let department = departments(department).ok_or_else(|| AccountError::NoDepartment(department.to_owned()))?;
    if roles.is_empty() {
        return Err(AccountError::NoRoles);
    }
    for r in roles {
        let needs = r.needs();
        if !needs.is_empty() && !needs.iter().any(|n| department.has(*n)) {
            return Err(AccountError::RoleNeeds { role: *r, department: department.id.clone() });
        }
    }
    Ok(department)
}

/// A stored record as an account, checked like a configured one.
fn stored_staff(r: &StaffRecord, departments: &dyn Fn(&str) -> Option<Arc<Department>>) -> Result<Staff, AccountError> {
    let roles = r.roles.iter().map(|x| StaffRole::parse(x).ok_or_else(|| AccountError::UnknownRole(x.clone()))).collect::<Result<Vec<_>, _>>()?;
    let department = check_account(&r.id, &r.department, &roles, departments)?;
    check_hash(&r.password_argon2)?;
    Ok(Staff {
        id: r.id.clone(),
        name: r.name.clone(),
        department,
        roles,
        password: Some(r.password_argon2.clone()),
        cert_subject: None,
        disabled: r.disabled,
        source: Source::Store { created_at: r.created_at, created_by: r.created_by.clone(), changed_at: r.changed_at },
    })
}

/// Checks the length of a new password.
pub fn check_password(password: &str) -> Result<(), AccountError> {
    let n = password.chars().count();
    if (MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&n) {
        Ok(())
    } else {
        Err(AccountError::WeakPassword)
    }
}

fn check_hash(hash: &str) -> Result<(), AccountError> {
    let parsed = PasswordHash::new(hash).map_err(|e| AccountError::BadHash(e.to_string()))?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(AccountError::BadHash("not an argon2id hash".into()));
    }
    Ok(())
}

/// A password for a new account or a reset, to be shown once: 16
/// characters of an alphabet without look-alikes (about 93 bits).
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::with_capacity(16);
    while out.len() < 16 {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).expect("the operating system's random source");
        // Bytes past the last whole multiple of the alphabet's size are
        // dropped, so every character is equally likely.
        let limit = 256 - 256 % ALPHABET.len();
        out.extend(b.iter().filter(|x| usize::from(**x) < limit).map(|x| ALPHABET[usize::from(*x) % ALPHABET.len()] as char).take(16 - out.len()));
    }
    out
}

/// A new stored account, as an administrator enters it.
#[derive(Clone, Debug)]
pub struct NewAccount {
    pub id: String,
    pub name: String,
    pub department: String,
    pub roles: Vec<StaffRole>,
}

/// A change to a stored account.
#[derive(Clone, Debug)]
pub enum Change {
    Disable,
    Enable,
    /// A new password, as its argon2id hash.
    Reset(String),
}

impl Change {
    /// The audit outcome's verb.
    pub fn verb(&self) -> &'static str {
        match self {
            Change::Disable => "disabled",
            Change::Enable => "enabled",
            Change::Reset(_) => "password_reset",
        }
    }
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
    /// Configured accounts in configuration order, then stored ones by id.
    /// A change replaces an account's `Arc`, which ends the sessions that
    /// hold the old one (see [`StaffBook::is_current`]).
    list: RwLock<Vec<Arc<Staff>>>,
    /// Stored accounts that were not taken in, with the reason.
    left_out: Vec<(String, String)>,
    departments: HashMap<String, Arc<Department>>,
    rules: ConsoleConfig,
    failures: Mutex<HashMap<String, Failures>>,
    /// Verified instead of a missing account's hash, so that an unknown id
    /// costs as much time as a wrong password.
    decoy: String,
}

impl StaffBook {
    pub fn from_config(cfgs: &[StaffConfig], rules: ConsoleConfig, departments: &Departments) -> anyhow::Result<StaffBook> {
        StaffBook::load(cfgs, &[], rules, departments)
    }

    /// The configured accounts `cfgs` (any mistake is an error) and the
    /// stored ones `stored` (one that does not fit is left out, with a
    /// warning: the server still starts).
    pub fn load(cfgs: &[StaffConfig], stored: &[StaffRecord], rules: ConsoleConfig, departments: &Departments) -> anyhow::Result<StaffBook> {
        let mut list: Vec<Arc<Staff>> = Vec::with_capacity(cfgs.len() + stored.len());
        for c in cfgs {
            let department = check_account(&c.id, &c.department, &c.roles, &|d| departments.get(d).cloned()).map_err(|e| anyhow::anyhow!("staff {:?}: {e}", c.id))?;
            if list.iter().any(|s| s.id == c.id) {
                anyhow::bail!("staff id {} is configured twice", c.id);
            }
            if let Some(h) = &c.password_argon2 {
                check_hash(h).map_err(|e| anyhow::anyhow!("staff {}: {e}", c.id))?;
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
                source: Source::Config,
            }));
        }
        let mut left_out = Vec::new();
        for r in stored {
            match stored_staff(r, &|d| departments.get(d).cloned()) {
                Ok(_) if list.iter().any(|s| s.id == r.id) => {
                    let why = AccountError::Taken { configured: true }.to_string();
                    tracing::warn!(staff = %r.id, "stored staff account left out: {why}; the configured one counts");
                    left_out.push((r.id.clone(), why));
                }
                Ok(s) => list.push(Arc::new(s)),
                Err(e) => {
                    tracing::warn!(staff = %r.id, "stored staff account left out: {e}");
                    left_out.push((r.id.clone(), e.to_string()));
                }
            }
        }
        Ok(StaffBook {
            list: RwLock::new(list),
            left_out,
            departments: departments.iter().map(|d| (d.id.clone(), d.clone())).collect(),
            rules,
            failures: Mutex::default(),
            decoy: hash_password("decoy password")?,
        })
    }

    pub fn rules(&self) -> &ConsoleConfig {
        &self.rules
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Staff>>> {
        self.list.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<Arc<Staff>> {
        self.read().iter().find(|s| s.id == id).cloned()
    }

    /// Every account: configured ones in configuration order, then stored
    /// ones by id.
    pub fn all(&self) -> Vec<Arc<Staff>> {
        self.read().clone()
    }

    /// Stored accounts not taken in when the book was loaded, with why.
    pub fn left_out(&self) -> &[(String, String)] {
        &self.left_out
    }

    /// Whether `staff` is the account as it stands now, and enabled: a
    /// session holding an older version of it (disabled since, or its
    /// password reset) is over.
    pub fn is_current(&self, staff: &Arc<Staff>) -> bool {
        !staff.disabled && self.read().iter().any(|s| Arc::ptr_eq(s, staff))
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
        self.read().is_empty()
    }

    /// The staff member a verified client certificate subject identifies.
    pub fn by_subject(&self, subject: &crate::cert::CertSubject) -> Option<Arc<Staff>> {
        self.read().iter().find(|s| s.cert_subject.as_ref() == Some(subject)).cloned()
    }

    /// The record of a new stored account, checked against the
    /// configuration and every account defined; `hash` is the argon2id
    /// hash of its first password. Nothing changes until the record is
    /// committed and [`StaffBook::put`].
    pub fn new_record(&self, a: &NewAccount, hash: String, by: &str, now: i64) -> Result<StaffRecord, AccountError> {
        let department = self.check_new(a)?;
        check_hash(&hash)?;
        Ok(StaffRecord {
            id: a.id.clone(),
            name: a.name.trim().to_owned(),
            department: department.id.clone(),
            roles: a.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            password_argon2: hash,
            disabled: false,
            created_at: now,
            created_by: by.to_owned(),
            changed_at: now,
            changed_by: by.to_owned(),
        })
    }

    /// Checks a new account against the configuration and every account
    /// defined (before its password is hashed).
    pub fn check_new(&self, a: &NewAccount) -> Result<Arc<Department>, AccountError> {
        let department = check_account(&a.id, &a.department, &a.roles, &|d| self.department(d))?;
        // Refused, never cut: the name is shown as it was typed.
        if basedata_store::audit::audit_text_fault(&a.name, MAX_NAME_CHARS).is_some() {
            return Err(AccountError::InvalidName);
        }
        if let Some(s) = self.get(&a.id) {
            return Err(AccountError::Taken { configured: !s.stored() });
        }
        if self.left_out.iter().any(|(id, _)| *id == a.id) {
            // Its stored record is still there, only not taken in.
            return Err(AccountError::Taken { configured: false });
        }
        Ok(department)
    }

    /// Stored account `id`, which an administrator may change.
    pub fn stored_account(&self, id: &str) -> Result<Arc<Staff>, AccountError> {
        let s = self.get(id).ok_or(AccountError::NotFound)?;
        if s.stored() {
            Ok(s)
        } else {
            Err(AccountError::Configured)
        }
    }

    /// The record of stored account `id` after `change`.
    /// The stored account `id` with `change` made by `by` at `now`, and
    /// when the version it was made from was changed (for the store's
    /// precondition, see `Queries::store_staff`).
    pub fn changed_record(&self, id: &str, change: &Change, by: &str, now: i64) -> Result<(StaffRecord, i64), AccountError> {
        let s = self.stored_account(id)?;
        let Source::Store { changed_at: from, .. } = s.source else { return Err(AccountError::Configured) };
        let mut r = s.record(by, now).ok_or(AccountError::Configured)?;
        match change {
            Change::Disable | Change::Enable if r.disabled == matches!(change, Change::Disable) => {
                return Err(AccountError::Unchanged { disabled: r.disabled })
            }
            Change::Disable => r.disabled = true,
            Change::Enable => r.disabled = false,
            Change::Reset(hash) => {
                check_hash(hash)?;
                r.password_argon2 = hash.clone();
            }
        }
        Ok((r, from))
    }

    /// Takes a committed record in, replacing the account's former
    /// version (whose sessions so end) and clearing its failures.
    pub fn put(&self, r: &StaffRecord) -> Result<Arc<Staff>, AccountError> {
        let staff = Arc::new(stored_staff(r, &|d| self.department(d))?);
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        match list.iter_mut().find(|s| s.id == r.id) {
            Some(slot) => *slot = staff.clone(),
            None => {
                list.push(staff.clone());
                list.sort_by(|a, b| a.stored().cmp(&b.stored()).then_with(|| if a.stored() { a.id.cmp(&b.id) } else { std::cmp::Ordering::Equal }));
            }
        }
        drop(list);
        self.unlock(&r.id);
        Ok(staff)
    }

    fn department(&self, id: &str) -> Option<Arc<Department>> {
        self.departments.get(id).cloned()
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
        let hash = staff.as_ref().and_then(|s| s.password.as_deref()).unwrap_or(&self.decoy);
        let ok = PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok());
        match staff {
            Some(s) if ok && s.password.is_some() => {
                if s.disabled {
                    return Err(SignInError::Disabled);
                }
                self.failures.lock().unwrap().remove(id);
                Ok(s)
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
    let staff = StaffConfig { name: "王五".into(), ..test_clerk("clerk1", password) };
    StaffBook::from_config(&[staff], rules, &test_departments()).expect("a valid staff list")
}

/// A configured clerk of `counter` signing in with `password`, for tests.
#[cfg(test)]
pub(crate) fn test_clerk(id: &str, password: &str) -> StaffConfig {
    StaffConfig {
        id: id.into(),
        name: String::new(),
        department: "counter".into(),
        roles: vec![StaffRole::Clerk],
        password_argon2: Some(hash_password(password).expect("a hash")),
        cert_subject: None,
        disabled: false,
    }
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
        let good = test_clerk("s1", "pw-123456");
        let check = |c: StaffConfig| StaffBook::from_config(&[c], ConsoleConfig::default(), &departments).err().map(|e| e.to_string());
        assert_eq!(check(good.clone()), None);
        assert!(check(StaffConfig { id: "bad id".into(), ..good.clone() }).is_some());
        assert!(check(StaffConfig { department: "nowhere".into(), ..good.clone() }).is_some());
        // A steward needs a providing department.
        assert!(check(StaffConfig { roles: vec![StaffRole::Steward], ..good.clone() }).unwrap().contains("provider"));
        assert!(check(StaffConfig { password_argon2: Some("plain".into()), ..good.clone() }).is_some());
        assert!(check(StaffConfig { password_argon2: None, ..good }).is_some());
    }

    fn new_account(id: &str) -> NewAccount {
        NewAccount { id: id.into(), name: "赵六".into(), department: "counter".into(), roles: vec![StaffRole::Clerk] }
    }

    #[test]
    fn stored_accounts_are_added_changed_and_end_old_sessions() {
        let b = book(5);
        let hash = hash_password("first-pass-1").unwrap();
        // The rules of configured accounts hold for stored ones.
        assert_eq!(b.check_new(&new_account("clerk1")).unwrap_err(), AccountError::Taken { configured: true });
        assert_eq!(b.check_new(&new_account("bad id")).unwrap_err(), AccountError::InvalidId);
        for name in ["赵".repeat(MAX_NAME_CHARS + 1), "赵\u{202E}六".to_owned(), "赵\n六".to_owned()] {
            let a = NewAccount { name, ..new_account("s9") };
            assert_eq!(b.check_new(&a).unwrap_err(), AccountError::InvalidName);
        }
        assert!(b.check_new(&NewAccount { name: "赵".repeat(MAX_NAME_CHARS), ..new_account("s9") }).is_ok());
        assert_eq!(b.check_new(&NewAccount { roles: vec![StaffRole::Steward], ..new_account("s2") }).unwrap_err().code(), "invalid_value");
        assert_eq!(b.check_new(&NewAccount { department: "nowhere".into(), ..new_account("s2") }).unwrap_err(), AccountError::NoDepartment("nowhere".into()));
        assert_eq!(b.check_new(&NewAccount { roles: vec![], ..new_account("s2") }).unwrap_err(), AccountError::NoRoles);
        assert!(matches!(b.new_record(&new_account("s2"), "plain".into(), "admin1", 1), Err(AccountError::BadHash(_))));
        // Configured accounts are not changed at run time.
        assert_eq!(b.changed_record("clerk1", &Change::Disable, "admin1", 1).unwrap_err(), AccountError::Configured);
        assert_eq!(b.changed_record("nobody", &Change::Disable, "admin1", 1).unwrap_err(), AccountError::NotFound);

        let r = b.new_record(&new_account("s2"), hash, "admin1", 10).unwrap();
        assert_eq!((r.roles.as_slice(), r.created_by.as_str(), r.disabled), (&["clerk".to_owned()][..], "admin1", false));
        let first = b.put(&r).unwrap();
        assert_eq!(b.sign_in("s2", "first-pass-1").unwrap().id, "s2");
        assert!(b.is_current(&first));
        assert_eq!(b.check_new(&new_account("s2")).unwrap_err(), AccountError::Taken { configured: false });

        // A reset: the old password fails, the new one works, and the
        // version a session holds is no longer current.
        let (reset, _) = b.changed_record("s2", &Change::Reset(hash_password("second-pass-2").unwrap()), "admin1", 20).unwrap();
        assert_eq!((reset.created_at, reset.changed_at), (10, 20));
        b.put(&reset).unwrap();
        assert!(!b.is_current(&first));
        assert_eq!(b.sign_in("s2", "first-pass-1").unwrap_err(), SignInError::BadCredentials);
        let second = b.sign_in("s2", "second-pass-2").unwrap();
        assert!(b.is_current(&second));

        let (off, from) = b.changed_record("s2", &Change::Disable, "admin1", 30).unwrap();
        assert_eq!(from, 20, "made from the version the reset stored");
        b.put(&off).unwrap();
        assert!(!b.is_current(&second));
        assert_eq!(b.sign_in("s2", "second-pass-2").unwrap_err(), SignInError::Disabled);
        assert_eq!(b.changed_record("s2", &Change::Disable, "admin1", 31).unwrap_err().code(), "conflict");
        b.put(&b.changed_record("s2", &Change::Enable, "admin1", 40).unwrap().0).unwrap();
        assert!(b.sign_in("s2", "second-pass-2").is_ok());
        // Configured accounts first, stored ones after.
        assert_eq!(b.all().iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), vec!["clerk1", "s2"]);
    }

    #[test]
    fn stored_accounts_that_no_longer_fit_are_left_out() {
        let b = book(5);
        let ok = b.new_record(&new_account("s3"), hash_password("pw-123456").unwrap(), "admin1", 1).unwrap();
        let taken = StaffRecord { id: "clerk1".into(), ..ok.clone() };
        let gone = StaffRecord { id: "s4".into(), department: "closed".into(), ..ok.clone() };
        let role = StaffRecord { id: "s5".into(), roles: vec!["superuser".into()], ..ok.clone() };
        let b = StaffBook::load(&[test_clerk("clerk1", "pw-123456")], &[taken, gone, role, ok], ConsoleConfig::default(), &test_departments()).unwrap();
        assert_eq!(b.all().iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), vec!["clerk1", "s3"]);
        assert!(!b.get("clerk1").unwrap().stored(), "the configuration's account counts");
        let out: Vec<&str> = b.left_out().iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(out, vec!["clerk1", "s4", "s5"]);
        // A left-out id is still taken.
        assert_eq!(b.check_new(&new_account("s4")).unwrap_err(), AccountError::Taken { configured: false });
    }

    #[test]
    fn generated_passwords_are_long_and_differ() {
        let (a, b) = (generate_password(), generate_password());
        assert_eq!(a.chars().count(), 16);
        assert!(check_password(&a).is_ok());
        assert_ne!(a, b);
        assert!(check_password("short").is_err());
    }
}
