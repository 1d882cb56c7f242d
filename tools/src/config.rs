//! The server configuration file (TOML, see CLI.md): listen address,
//! departments with roles and tokens, the secret's location, catalog and
//! engine tuning. Command-line flags override the file.

use anyhow::{bail, Context};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
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

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentConfig {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub roles: Vec<Role>,
    /// A bearer token in the clear (convenient for demos).
    pub token: Option<String>,
    /// Hex SHA-256 of the bearer token (preferred: the file then holds no secret).
    pub token_sha256: Option<String>,
    /// Sustained requests per second this department may make (none: unlimited).
    pub rate_limit: Option<u32>,
    /// Requests above the rate that may arrive at once (default: one second's worth).
    pub burst: Option<u32>,
    /// Requests of this department in progress at once (none: unlimited).
    pub max_concurrent: Option<u32>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: Option<String>,
    pub data: Option<PathBuf>,
    /// File holding the 32-byte store secret as hex (outside the data directory).
    pub key_file: Option<PathBuf>,
    /// The store secret inline, as hex, when no key file is used.
    pub secret: Option<String>,
    /// A catalog file replacing the built-in one.
    pub catalog: Option<PathBuf>,
    #[serde(default = "default_cache_mb")]
    pub block_cache_mb: usize,
    #[serde(default = "default_max_body_mb")]
    pub max_body_mb: usize,
    #[serde(default)]
    pub departments: Vec<DepartmentConfig>,
    /// Working-day calendar file replacing the built-in one.
    pub calendar: Option<PathBuf>,
    /// Shifts the server's clock, in seconds: for deadline drills and
    /// tests, never for production.
    #[serde(default)]
    pub clock_offset_seconds: i64,
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Longest time a request may take before it is answered 503.
    #[serde(default = "default_timeout")]
    pub request_timeout_seconds: u64,
    /// Writes (updates and audit entries) waiting for the disk before
    /// requests are shed with 503 overloaded.
    #[serde(default = "default_write_queue")]
    pub write_queue: usize,
}

fn default_timeout() -> u64 {
    120
}

fn default_write_queue() -> usize {
    4096
}

/// Deadlines of the sharing measures (Guangzhou Arts. 26, 30).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// A grant unanswered by its due date counts as approved.
    #[serde(default = "yes")]
    pub deemed_approval: bool,
    #[serde(default = "five")]
    pub grant_reply_days: u32,
    #[serde(default = "five")]
    pub dispute_days: u32,
}

fn yes() -> bool {
    true
}

fn five() -> u32 {
    5
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig { deemed_approval: true, grant_reply_days: 5, dispute_days: 5 }
    }
}

impl PolicyConfig {
    pub fn policy(&self) -> basedata_query::gov::Policy {
        basedata_query::gov::Policy {
            grant_reply_days: self.grant_reply_days,
            dispute_days: self.dispute_days,
            deemed_approval: self.deemed_approval,
        }
    }
}

fn default_cache_mb() -> usize {
    512
}

fn default_max_body_mb() -> usize {
    256
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: None,
            data: None,
            key_file: None,
            secret: None,
            catalog: None,
            block_cache_mb: default_cache_mb(),
            max_body_mb: default_max_body_mb(),
            departments: Vec::new(),
            calendar: None,
            clock_offset_seconds: 0,
            policy: PolicyConfig::default(),
            request_timeout_seconds: default_timeout(),
            write_queue: default_write_queue(),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut cfg: Config = toml::from_str(&text).with_context(|| format!("invalid configuration {}", path.display()))?;
        // Relative paths in the file are relative to the file.
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut cfg.data, &mut cfg.key_file, &mut cfg.catalog, &mut cfg.calendar].into_iter().flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        let mut seen = std::collections::HashSet::new();
        for d in &self.departments {
            if d.id.is_empty() || !d.id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-') {
                bail!("department id {:?} must be letters, digits, '-' or '_'", d.id);
            }
            if !seen.insert(&d.id) {
                bail!("department {} is configured twice", d.id);
            }
            match (&d.token, &d.token_sha256) {
                (Some(t), None) if t.len() >= 16 => {}
                (Some(_), None) => bail!("department {}: token must be at least 16 characters", d.id),
                (None, Some(h)) if h.len() == 64 && hex::decode(h).is_ok() => {}
                (None, Some(_)) => bail!("department {}: token_sha256 must be 64 hex digits", d.id),
                _ => bail!("department {}: give exactly one of token or token_sha256", d.id),
            }
            if d.roles.is_empty() {
                bail!("department {} has no roles", d.id);
            }
            if d.rate_limit == Some(0) || d.burst == Some(0) || d.max_concurrent == Some(0) {
                bail!("department {}: rate_limit, burst and max_concurrent must be positive", d.id);
            }
        }
        if self.key_file.is_some() && self.secret.is_some() {
            bail!("give key_file or secret, not both");
        }
        if !(1..=60).contains(&self.policy.grant_reply_days) || !(1..=60).contains(&self.policy.dispute_days) {
            bail!("policy deadlines are 1 to 60 working days");
        }
        if self.request_timeout_seconds < 70 || self.write_queue == 0 {
            // Change-feed long polls wait up to 60 s.
            bail!("request_timeout_seconds must be at least 70 and write_queue positive");
        }
        if self.block_cache_mb == 0 || self.max_body_mb == 0 {
            bail!("block_cache_mb and max_body_mb must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> anyhow::Result<Config> {
        let c: Config = toml::from_str(s)?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn cli_md_example_parses() {
        let c = parse(
            r#"
listen = "127.0.0.1:8080"
[[departments]]
id = "gongan"
name = "市公安局"
roles = ["provider", "consumer"]
token = "gongan-secret-token"
[[departments]]
id = "shebao-counter"
name = "社保服务窗口"
roles = ["consumer"]
token = "counter-secret-token"
"#,
        )
        .unwrap();
        assert_eq!(c.departments.len(), 2);
        assert_eq!(c.departments[0].roles, vec![Role::Provider, Role::Consumer]);
    }

    #[test]
    fn invalid_configurations_are_refused() {
        for bad in [
            "[[departments]]\nid = \"a\"\nroles = [\"consumer\"]\n",
            "[[departments]]\nid = \"a\"\nroles = [\"consumer\"]\ntoken = \"short\"\n",
            "[[departments]]\nid = \"a b\"\nroles = [\"consumer\"]\ntoken = \"0123456789abcdef\"\n",
            "[[departments]]\nid = \"a\"\nroles = []\ntoken = \"0123456789abcdef\"\n",
            "[[departments]]\nid = \"a\"\nroles = [\"king\"]\ntoken = \"0123456789abcdef\"\n",
            "[[departments]]\nid = \"a\"\nroles = [\"consumer\"]\ntoken_sha256 = \"xyz\"\n",
            "[[departments]]\nid = \"a\"\nroles = [\"consumer\"]\ntoken = \"0123456789abcdef\"\n[[departments]]\nid = \"a\"\nroles = [\"consumer\"]\ntoken = \"0123456789abcdeg\"\n",
            "unknown_key = 1\n",
        ] {
            assert!(parse(bad).is_err(), "accepted: {bad}");
        }
    }
}
