//! The server configuration file (TOML, see CLI.md): listen address,
//! departments with roles and tokens, the secret's location, catalog and
//! engine tuning. Command-line flags override the file.

use anyhow::{bail, Context};
use basedata_store::clock::MAX_RETENTION_DAYS;
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub use basedata_query::Role;

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
    /// Largest request body of one of this department's batch jobs, in
    /// MB (default: `max_body_mb`).
    pub max_job_mb: Option<u64>,
    /// Most request lines of one of its batch jobs (default 1,000,000).
    pub max_job_lines: Option<u64>,
    /// Its batch jobs unfinished (queued or running) at once (default 4).
    pub max_jobs: Option<u32>,
    /// Subject of the client certificate that identifies this department
    /// over mutual TLS, e.g. `CN=gongan,O=市公安局` (matching rule in
    /// `tls`). With it, the token is optional.
    pub cert_subject: Option<String>,
    /// The catalogued purpose codes it may state (strict); left out, it
    /// states purposes as free text (the transitional mode).
    pub purposes: Option<Vec<String>>,
    /// Its responsible persons for information sharing (`[[departments.responsible]]`);
    /// a record set through `PUT /v1/departments/{id}/responsible` replaces them.
    #[serde(default)]
    pub responsible: Vec<basedata_query::caller::ResponsiblePerson>,
}

/// When a client of a TLS server with a client CA must show a certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// The handshake fails without a certificate signed by the client CA.
    Required,
    /// A client without a certificate may still authenticate by token.
    #[default]
    Optional,
}

/// `[tls]`: serve HTTPS instead of plain HTTP.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM certificates of the CA(s) that sign client certificates:
    /// enables mutual TLS.
    pub client_ca: Option<PathBuf>,
    /// Default `optional`; only meaningful with `client_ca`.
    pub client_auth: Option<ClientAuth>,
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
    /// Keep claim fingerprints of every record in memory while serving
    /// (`basedata_store::prints`): verifications then read no records.
    /// Costs a scan of the records at start and ~160 bytes a record; not
    /// built when that would be over half the available memory.
    #[serde(default = "yes")]
    pub verify_prints: bool,
    /// Megabytes of each journal segment (the store's write-ahead log),
    /// zero-filled before use and then recycled, so that synced writes
    /// overwrite allocated blocks in place instead of growing a file (0:
    /// default-length segments grown as written). See
    /// `basedata_store::engine::journal`.
    #[serde(default = "default_prime_wal_mb")]
    pub prime_wal_mb: u64,
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
    /// Longest a busy writer waits for more writes before a small group
    /// commit, in microseconds (as long as recent commits took, at most
    /// this; 0: never waits). See `basedata_store::commit::Gather`.
    #[serde(default = "default_commit_pause_us")]
    pub commit_pause_us: u64,
    /// Days a finished batch job's input and answers are kept for its
    /// department to download; then they are deleted (the audit entries of
    /// its lines stay).
    #[serde(default = "default_job_retention_days")]
    pub job_retention_days: u32,
    /// Days audit entries are kept; older ones are removed from the trail
    /// (at start and every six hours), and the removal is itself recorded.
    /// Left out: kept for ever. At least six months (184 days).
    pub audit_retention_days: Option<u32>,
    /// Days changes stay in the change log (`GET /v1/changes`); older ones
    /// are removed (at start and every six hours), except the newest, and
    /// a subscriber resuming before them is answered `409 conflict` with
    /// where the log now starts. Left out: kept for ever. Records and
    /// their history are not affected.
    pub change_retention_days: Option<u32>,
    /// Where batch answers a client has not read yet spill beyond memory
    /// (sealed, unnamed files). Default: `spill/` inside the data
    /// directory, on the disk that was sized for the store, and never a
    /// RAM-backed `/tmp`.
    pub spill_dir: Option<PathBuf>,
    /// HTTPS, and mutual TLS with a client CA.
    pub tls: Option<TlsConfig>,
    /// Cluster mode: updates go through a replicated NATS JetStream log.
    pub cluster: Option<ClusterConfig>,
    /// How long clients may take, and how many connections they may hold.
    #[serde(default)]
    pub connections: ConnectionsConfig,
    /// Staff accounts of the console (`[[staff]]`).
    #[serde(default)]
    pub staff: Vec<StaffConfig>,
    /// Session and lockout rules of the console.
    #[serde(default)]
    pub console: ConsoleConfig,
}

/// `[connections]`: every connection is closed when its client is too
/// slow, and admitted only under the caps (see `conn`).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionsConfig {
    /// A request's headers must be complete this long after their first byte.
    pub header_timeout_seconds: f64,
    /// A request body must make progress at least this often.
    pub body_timeout_seconds: f64,
    /// A connection with no request begun this long after the last answer
    /// (or its opening) is closed.
    pub idle_timeout_seconds: f64,
    /// An answer the client does not read for this long is abandoned.
    pub send_timeout_seconds: f64,
    /// Open connections one client address may hold (429 past it).
    pub max_per_client: usize,
    /// Open connections in all (503 past it). Also kept below the process's
    /// open-file limit, which the store needs a share of.
    pub max_total: usize,
    /// At shutdown, longest wait for answers in progress.
    pub drain_seconds: f64,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        ConnectionsConfig {
            header_timeout_seconds: 10.0,
            body_timeout_seconds: 30.0,
            idle_timeout_seconds: 60.0,
            send_timeout_seconds: 60.0,
            max_per_client: 256,
            max_total: 4096,
            drain_seconds: 30.0,
        }
    }
}

impl ConnectionsConfig {
    /// Every timeout between 0.1 s and a day, caps at least 1.
    pub fn check(&self) -> anyhow::Result<()> {
        for (name, v) in [
            ("header_timeout_seconds", self.header_timeout_seconds),
            ("body_timeout_seconds", self.body_timeout_seconds),
            ("idle_timeout_seconds", self.idle_timeout_seconds),
            ("send_timeout_seconds", self.send_timeout_seconds),
            ("drain_seconds", self.drain_seconds),
        ] {
            if !(0.1..=86_400.0).contains(&v) {
                bail!("[connections] {name} must be between 0.1 and 86400 seconds");
            }
        }
        if self.max_per_client == 0 || self.max_total == 0 {
            bail!("[connections] max_per_client and max_total must be at least 1");
        }
        Ok(())
    }
}

/// `[cluster]` (or `serve --cluster URLS`): log-first replication on NATS
/// JetStream. Every node of a cluster uses the same catalog and the same
/// store secret (pseudonyms, and with them partitions, must agree).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS server URLs; the client fails over between them. May be left
    /// to `serve --cluster URLS`.
    #[serde(default)]
    pub servers: Vec<String>,
    /// This node's name, in logs, metrics and `GET /v1/cluster`.
    #[serde(default = "default_node")]
    pub node: String,
    /// The JetStream stream holding the update log.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Partitions of the log (subjects `<stream>.p.<n>`), fixed for the
    /// life of a stream: a key's partition is xxh3 of its pseudonym
    /// modulo this.
    #[serde(default = "default_partitions")]
    pub partitions: u16,
    /// Copies of the stream kept by the NATS cluster (3 survives one loss).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// How long a provider's request waits for this node to apply what it
    /// logged, to report applied and stale counts; after that the answer
    /// says only that the updates are durable in the log.
    #[serde(default = "default_apply_wait_ms")]
    pub apply_wait_ms: u64,
    /// How long a read asking for a log position (`X-Basedata-Min-Position`)
    /// waits for this node to reach it before it is answered 503.
    #[serde(default = "default_read_wait_ms")]
    pub read_wait_ms: u64,
    /// How long a provider's request keeps resending what the log did not
    /// acknowledge (a stream electing a new leader takes seconds) before
    /// it is answered 503.
    #[serde(default = "default_publish_retry_ms")]
    pub publish_retry_ms: u64,
    /// The partitions this node holds and answers for (default: all).
    /// Every node still takes updates for any key; reads of a key in a
    /// partition it does not hold are answered `503` naming the partition.
    #[serde(default)]
    pub serve_partitions: Option<Vec<u16>>,
}

fn default_publish_retry_ms() -> u64 {
    // JetStream's elections after a lost leader took 6 to 11 s here.
    20_000
}

fn default_node() -> String {
    "node".into()
}

fn default_stream() -> String {
    "BASEDATA".into()
}

fn default_partitions() -> u16 {
    16
}

fn default_replicas() -> usize {
    3
}

fn default_apply_wait_ms() -> u64 {
    2_000
}

fn default_read_wait_ms() -> u64 {
    2_000
}

impl ClusterConfig {
    /// Settings for the given servers, the rest defaulted.
    pub fn with_servers(servers: Vec<String>) -> ClusterConfig {
        ClusterConfig {
            servers,
            node: default_node(),
            stream: default_stream(),
            partitions: default_partitions(),
            replicas: default_replicas(),
            apply_wait_ms: default_apply_wait_ms(),
            read_wait_ms: default_read_wait_ms(),
            publish_retry_ms: default_publish_retry_ms(),
            serve_partitions: None,
        }
    }

    /// The partitions this node holds, ascending.
    pub fn served_partitions(&self) -> Vec<u16> {
        (0..self.partitions).filter(|p| self.serve_partitions.as_ref().is_none_or(|ps| ps.contains(p))).collect()
    }

    /// Everything but the server list, which the command line may still give.
    pub fn validate_settings(&self) -> anyhow::Result<()> {
        let name_ok = |s: &str| !s.is_empty() && s.len() <= 64 && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        if !name_ok(&self.stream) || !name_ok(&self.node) {
            bail!("[cluster] stream and node names are 1 to 64 letters, digits, '-' or '_'");
        }
        if self.partitions == 0 || self.partitions > 1024 {
            bail!("[cluster] partitions must be 1 to 1024");
        }
        if !(1..=5).contains(&self.replicas) {
            bail!("[cluster] replicas must be 1 to 5 (JetStream's limit)");
        }
        if let Some(ps) = &self.serve_partitions {
            let mut seen = std::collections::HashSet::new();
            if ps.is_empty() || ps.iter().any(|p| *p >= self.partitions || !seen.insert(*p)) {
                bail!("[cluster] serve_partitions must list distinct partitions below {}", self.partitions);
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.validate_settings()?;
        if self.servers.is_empty() {
            bail!("cluster mode needs at least one NATS server URL ([cluster] servers or --cluster URLS)");
        }
        Ok(())
    }
}

fn default_timeout() -> u64 {
    120
}

fn default_job_retention_days() -> u32 {
    30
}

fn default_write_queue() -> usize {
    4096
}

fn default_commit_pause_us() -> u64 {
    basedata_store::commit::GATHER_PAUSE.as_micros() as u64
}

/// The longest `commit_pause_us` accepted: a pause is added to the answer
/// of every write it holds back.
pub const MAX_COMMIT_PAUSE_US: u64 = 10_000;

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
    /// Different claims of a field of few values that a department may
    /// not read, per subject and period, before it is refused.
    #[serde(default = "two")]
    pub distinct_claims: u32,
    #[serde(default = "thirty")]
    pub claim_period_days: u32,
    /// A department's record of responsible persons older than this is
    /// flagged in the sharing report.
    #[serde(default = "a_year")]
    pub responsible_max_age_days: u32,
    /// Seconds between two looks for grants past their deadline (each
    /// one found is recorded as deemed approved; in cluster mode through
    /// the log, once for the cluster).
    #[serde(default = "thirty")]
    pub sweep_seconds: u32,
}

fn a_year() -> u32 {
    365
}

fn yes() -> bool {
    true
}

fn five() -> u32 {
    5
}

fn two() -> u32 {
    2
}

fn thirty() -> u32 {
    30
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            deemed_approval: true,
            grant_reply_days: 5,
            dispute_days: 5,
            distinct_claims: 2,
            claim_period_days: 30,
            responsible_max_age_days: a_year(),
            sweep_seconds: 30,
        }
    }
}

impl PolicyConfig {
    pub fn policy(&self) -> basedata_query::gov::Policy {
        basedata_query::gov::Policy {
            grant_reply_days: self.grant_reply_days,
            dispute_days: self.dispute_days,
            deemed_approval: self.deemed_approval,
            responsible_max_age_days: self.responsible_max_age_days,
        }
    }

    pub fn claims(&self) -> basedata_query::claims::ClaimPolicy {
        basedata_query::claims::ClaimPolicy { distinct: self.distinct_claims, period_days: self.claim_period_days }
    }
}

fn default_cache_mb() -> usize {
    512
}

/// The memtable size: a segment of that length holds about what one
/// memtable holds.
fn default_prime_wal_mb() -> u64 {
    64
}

/// A segment and a spare are zero-filled at every start; more would only delay it.
const MAX_PRIME_WAL_MB: u64 = 4096;

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
            verify_prints: true,
            prime_wal_mb: default_prime_wal_mb(),
            max_body_mb: default_max_body_mb(),
            departments: Vec::new(),
            calendar: None,
            clock_offset_seconds: 0,
            policy: PolicyConfig::default(),
            request_timeout_seconds: default_timeout(),
            write_queue: default_write_queue(),
            commit_pause_us: default_commit_pause_us(),
            job_retention_days: default_job_retention_days(),
            audit_retention_days: None,
            change_retention_days: None,
            spill_dir: None,
            tls: None,
            cluster: None,
            staff: Vec::new(),
            console: Default::default(),
            connections: ConnectionsConfig::default(),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut cfg: Config = toml::from_str(&text).with_context(|| format!("invalid configuration {}", path.display()))?;
        // Relative paths in the file are relative to the file.
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut cfg.data, &mut cfg.key_file, &mut cfg.catalog, &mut cfg.calendar, &mut cfg.spill_dir].into_iter().flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(tls) = &mut cfg.tls {
            for p in [Some(&mut tls.cert), Some(&mut tls.key), tls.client_ca.as_mut()].into_iter().flatten() {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Where the store secret is to be found under this configuration;
    /// `key_file` is the one named on the command line, if any.
    pub fn key_source<'a>(&'a self, key_file: Option<&'a Path>) -> basedata_store::dir::KeySource<'a> {
        basedata_store::dir::KeySource {
            key_file,
            secret_hex: self.secret.as_deref(),
            config_key_file: self.key_file.as_deref(),
        }
    }

    /// How the engine of the data directory is opened under this
    /// configuration; `serving` for a server about to serve (page cache
    /// warmed, write-ahead log primed).
    pub fn open_options(&self, serving: bool) -> basedata_store::dir::OpenOptions {
        basedata_store::dir::OpenOptions {
            block_cache_bytes: self.block_cache_mb << 20,
            warm_page_cache: serving,
            prime_wal_bytes: if serving { self.prime_wal_mb << 20 } else { 0 },
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.connections.check()?;
        if self.prime_wal_mb > MAX_PRIME_WAL_MB {
            bail!("prime_wal_mb must be 0 to {MAX_PRIME_WAL_MB}");
        }
        let mut seen = std::collections::HashSet::new();
        for d in &self.departments {
            if d.id.is_empty() || !d.id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-') {
                bail!("department id {:?} must be letters, digits, '-' or '_'", d.id);
            }
            if d.id == basedata_store::audit::SYSTEM_DEPARTMENT {
                // The platform's own entries go on record under it.
                bail!("department id {:?} is reserved for the platform's own audit entries", d.id);
            }
            if !seen.insert(&d.id) {
                bail!("department {} is configured twice", d.id);
            }
            match (&d.token, &d.token_sha256) {
                (Some(t), None) if t.len() >= 16 => {}
                (Some(_), None) => bail!("department {}: token must be at least 16 characters", d.id),
                (None, Some(h)) if h.len() == 64 && hex::decode(h).is_ok() => {}
                (None, Some(_)) => bail!("department {}: token_sha256 must be 64 hex digits", d.id),
                (None, None) if d.cert_subject.is_some() => {}
                _ => bail!("department {}: give exactly one of token or token_sha256", d.id),
            }
            if d.roles.is_empty() {
                bail!("department {} has no roles", d.id);
            }
            if d.rate_limit == Some(0) || d.burst == Some(0) || d.max_concurrent == Some(0) {
                bail!("department {}: rate_limit, burst and max_concurrent must be positive", d.id);
            }
            if d.max_job_mb == Some(0) || d.max_job_lines == Some(0) || d.max_jobs == Some(0) {
                bail!("department {}: max_job_mb, max_job_lines and max_jobs must be positive", d.id);
            }
            if d.max_job_mb.is_some_and(|mb| mb > 1 << 20) {
                bail!("department {}: max_job_mb is at most 1048576 (1 TB)", d.id);
            }
            if d.purposes.as_ref().is_some_and(|p| p.is_empty()) {
                bail!("department {}: purposes lists at least one code (leave it out for free-text purposes)", d.id);
            }
            for p in &d.responsible {
                basedata_query::departments::check_person(p)
                    .map_err(|e| anyhow::anyhow!("department {}: responsible person: {e}", d.id))?;
            }
        }
        self.validate_tls()?;
        if self.key_file.is_some() && self.secret.is_some() {
            bail!("give key_file or secret, not both");
        }
        self.policy.policy().check().map_err(|e| anyhow::anyhow!("[policy] {e}"))?;
        if !(1..=100).contains(&self.policy.distinct_claims) || !(1..=3660).contains(&self.policy.claim_period_days) {
            bail!("[policy] distinct_claims is 1 to 100 and claim_period_days 1 to 3660");
        }
        if !(1..=3600).contains(&self.policy.sweep_seconds) {
            bail!("[policy] sweep_seconds is 1 to 3600");
        }
        if self.job_retention_days == 0 {
            bail!("job_retention_days must be at least 1");
        }
        if let Some(days) = self.audit_retention_days {
            basedata_store::audit::retention::check_retention_days(days).map_err(anyhow::Error::msg)?;
        }
        // A shift of more than a century is a typo; one far enough would
        // wrap "now" and put every retention cut-off in the future.
        if self.clock_offset_seconds.unsigned_abs() > u64::from(MAX_RETENTION_DAYS) * 86_400 {
            bail!("clock_offset_seconds is at most a century either way ({} seconds)", u64::from(MAX_RETENTION_DAYS) * 86_400);
        }
        if let Some(days) = self.change_retention_days {
            if !(1..=MAX_RETENTION_DAYS).contains(&days) {
                bail!("change_retention_days is 1 to {MAX_RETENTION_DAYS} (leave it out to keep changes for ever)");
            }
        }
        if self.request_timeout_seconds < 70 || self.write_queue == 0 {
            // Change-feed long polls wait up to 60 s.
            bail!("request_timeout_seconds must be at least 70 and write_queue positive");
        }
        if self.commit_pause_us > MAX_COMMIT_PAUSE_US {
            bail!("commit_pause_us must be at most {MAX_COMMIT_PAUSE_US} (it delays every write it holds back)");
        }
        if let Some(c) = &self.cluster {
            c.validate_settings()?;
        }
        if self.block_cache_mb == 0 || self.max_body_mb == 0 {
            bail!("block_cache_mb and max_body_mb must be positive");
        }
        Ok(())
    }

    /// `[tls]` and the departments' certificate subjects: each parses, no
    /// two are the same (a certificate identifies one department at most),
    /// and they need a client CA to be of any use.
    fn validate_tls(&self) -> anyhow::Result<()> {
        let client_ca = self.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if self.tls.as_ref().is_some_and(|t| t.client_auth.is_some()) && !client_ca {
            bail!("[tls] client_auth needs client_ca");
        }
        let mut subjects: Vec<(crate::cert::CertSubject, &str)> = Vec::new();
        for d in &self.departments {
            let Some(s) = &d.cert_subject else { continue };
            if !client_ca {
                bail!("department {}: cert_subject needs [tls] with client_ca", d.id);
            }
            let subject = crate::cert::CertSubject::parse(s).with_context(|| format!("department {}: cert_subject", d.id))?;
            if let Some((_, other)) = subjects.iter().find(|(o, _)| *o == subject) {
                bail!("departments {other} and {} have the same cert_subject", d.id);
            }
            subjects.push((subject, &d.id));
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

    /// The spill directory, like every path of the file, is relative to it.
    #[test]
    fn the_spill_directory_is_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("basedata.toml");
        std::fs::write(&path, "spill_dir = \"spill-here\"\n").unwrap();
        assert_eq!(Config::load(&path).unwrap().spill_dir, Some(dir.path().join("spill-here")));
        std::fs::write(&path, "spill_dir = \"/srv/spill\"\n").unwrap();
        assert_eq!(Config::load(&path).unwrap().spill_dir, Some(PathBuf::from("/srv/spill")));
        assert_eq!(parse("").unwrap().spill_dir, None, "the data directory's own by default");
    }

    #[test]
    fn log_priming_is_on_by_default_for_serving_only_and_bounded() {
        let c = parse("").unwrap();
        assert_eq!(c.open_options(true).prime_wal_bytes, 64 << 20);
        assert_eq!(c.open_options(false).prime_wal_bytes, 0, "tools that only load or inspect do not prime");
        assert_eq!(parse("prime_wal_mb = 0\n").unwrap().open_options(true).prime_wal_bytes, 0);
        assert_eq!(parse("prime_wal_mb = 4096\n").unwrap().open_options(true).prime_wal_bytes, 4096 << 20);
    }

    #[test]
    fn change_retention_is_for_ever_unless_set_to_a_day_or_more() {
        assert_eq!(parse("").unwrap().change_retention_days, None);
        assert_eq!(parse("change_retention_days = 1\n").unwrap().change_retention_days, Some(1));
        let e = parse("change_retention_days = 0\n").unwrap_err().to_string();
        assert!(e.contains("change_retention_days is 1 to 36500"), "{e}");
        assert!(parse("change_retention_days = -3\n").is_err());
        // A value a few digits too long is refused, not kept for ages.
        assert_eq!(parse("change_retention_days = 36500\n").unwrap().change_retention_days, Some(36_500));
        let e = parse("change_retention_days = 999999999\n").unwrap_err().to_string();
        assert!(e.contains("change_retention_days is 1 to 36500"), "{e}");
        let e = parse("audit_retention_days = 999999999\n").unwrap_err().to_string();
        assert!(e.contains("at most 36500"), "{e}");
        assert!(parse("clock_offset_seconds = -3153600000\n").is_ok());
        let e = parse("clock_offset_seconds = -9000000000000000000\n").unwrap_err().to_string();
        assert!(e.contains("clock_offset_seconds is at most a century"), "{e}");
    }

    #[test]
    fn audit_retention_is_for_ever_unless_set_to_six_months_or_more() {
        assert_eq!(parse("").unwrap().audit_retention_days, None);
        assert_eq!(parse("audit_retention_days = 184\n").unwrap().audit_retention_days, Some(184));
        let e = parse("audit_retention_days = 90\n").unwrap_err().to_string();
        assert!(e.contains("at least six months (184 days)"), "{e}");
    }

    #[test]
    fn the_commit_pause_defaults_to_the_writers_and_is_bounded() {
        assert_eq!(parse("").unwrap().commit_pause_us, 200);
        assert_eq!(parse("commit_pause_us = 0\n").unwrap().commit_pause_us, 0);
        assert_eq!(parse("commit_pause_us = 10000\n").unwrap().commit_pause_us, 10_000);
        let e = parse("commit_pause_us = 10001\n").unwrap_err().to_string();
        assert!(e.contains("commit_pause_us must be at most 10000"), "{e}");
        assert!(parse("commit_pause_us = -1\n").is_err());
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
            "[[departments]]\nid = \"a\"\nroles = [\"consumer\"]\ntoken = \"0123456789abcdef\"\nmax_jobs = 0\n",
            "[[departments]]\nid = \"a\"\nroles = [\"consumer\"]\ntoken = \"0123456789abcdef\"\nmax_job_lines = 0\n",
            "[[departments]]\nid = \"a\"\nroles = [\"consumer\"]\ntoken = \"0123456789abcdef\"\nmax_job_mb = 0\n",
            "[[departments]]\nid = \"a\"\nroles = [\"consumer\"]\ntoken = \"0123456789abcdef\"\nmax_job_mb = -1\n",
            "[[departments]]\nid = \"a\"\nroles = [\"consumer\"]\ntoken = \"0123456789abcdef\"\npurposes = []\n",
            "[[departments]]\nid = \"a\"\nroles = [\"consumer\"]\ntoken = \"0123456789abcdef\"\nresponsible = [{ name = \"x\", post = \"y\", contact = \"z\", since = \"soon\" }]\n",
            "[[departments]]\nid = \"a\"\nroles = [\"consumer\"]\ntoken = \"0123456789abcdef\"\nresponsible = [{ name = \"x\", post = \"y\", contact = \"z\" }]\n",
            "[policy]\nresponsible_max_age_days = 0\n",
            "prime_wal_mb = 4097\n",
            "prime_wal_mb = -1\n",
            "audit_retention_days = 183\n",
            "[[departments]]\nid = \"system\"\nroles = [\"consumer\"]\ntoken = \"0123456789abcdef\"\n",
            "audit_retention_days = 0\n",
            "audit_retention_days = -1\n",
            "[[departments]]\nid = \"a\"\nroles = [\"consumer\"]\ntoken = \"0123456789abcdef\"\n[[departments]]\nid = \"a\"\nroles = [\"consumer\"]\ntoken = \"0123456789abcdeg\"\n",
            "unknown_key = 1\n",
        ] {
            assert!(parse(bad).is_err(), "accepted: {bad}");
        }
    }

    #[test]
    fn cluster_section_defaults_and_limits() {
        let c = parse("[cluster]\nservers = [\"nats://127.0.0.1:4222\"]\nnode = \"n-1\"\n").unwrap();
        let cl = c.cluster.unwrap();
        assert_eq!((cl.stream.as_str(), cl.partitions, cl.replicas, cl.node.as_str()), ("BASEDATA", 16, 3, "n-1"));
        assert!(cl.validate().is_ok());
        // Servers may come from the command line, so the file alone may omit them…
        let c = parse("[cluster]\npartitions = 4\nserve_partitions = [0, 3]\n").unwrap();
        // …but serving needs them.
        assert!(c.cluster.unwrap().validate().is_err());
        for bad in [
            "[cluster]\npartitions = 0\n",
            "[cluster]\npartitions = 5000\n",
            "[cluster]\nreplicas = 0\n",
            "[cluster]\nreplicas = 7\n",
            "[cluster]\nstream = \"a.b\"\n",
            "[cluster]\nnode = \"\"\n",
            "[cluster]\nservers = []\nsurprise = 1\n",
            "[cluster]\nserve_partitions = []\n",
            "[cluster]\nserve_partitions = [16]\n",
            "[cluster]\nserve_partitions = [1, 1]\n",
        ] {
            assert!(parse(bad).is_err(), "accepted: {bad}");
        }
    }

    const TLS_DEPTS: &str = r#"
[[departments]]
id = "gongan"
roles = ["consumer"]
cert_subject = "CN=gongan,O=市公安局"
[[departments]]
id = "counter"
roles = ["consumer"]
token = "counter-secret-token"
cert_subject = "CN=counter"
"#;

    #[test]
    fn tls_section_and_certificate_subjects() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("basedata.toml");
        let text = format!(
            "[tls]\ncert = \"server.crt\"\nkey = \"/abs/server.key\"\nclient_ca = \"ca/clients.pem\"\nclient_auth = \"required\"\n{TLS_DEPTS}"
        );
        std::fs::write(&path, text).unwrap();
        let c = Config::load(&path).unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert, dir.path().join("server.crt"));
        assert_eq!(tls.key, Path::new("/abs/server.key"));
        assert_eq!(tls.client_ca.unwrap(), dir.path().join("ca/clients.pem"));
        assert_eq!(tls.client_auth, Some(ClientAuth::Required));
        // A department identified by certificate needs no token.
        assert!(c.departments[0].token.is_none());
        assert!(parse("[tls]\ncert = \"a\"\nkey = \"b\"\n").unwrap().tls.unwrap().client_auth.is_none());
    }

    #[test]
    fn invalid_tls_configurations_are_refused() {
        let tls = "[tls]\ncert = \"a\"\nkey = \"b\"\nclient_ca = \"c\"\n";
        for bad in [
            // Certificate subjects without a client CA to verify them.
            TLS_DEPTS.to_owned(),
            format!("[tls]\ncert = \"a\"\nkey = \"b\"\n{TLS_DEPTS}"),
            "[tls]\ncert = \"a\"\nkey = \"b\"\nclient_auth = \"optional\"\n".to_owned(),
            format!("{tls}client_auth = \"sometimes\"\n"),
            "[tls]\ncert = \"a\"\n".to_owned(),
            format!("{tls}[[departments]]\nid = \"a\"\nroles = [\"consumer\"]\ncert_subject = \"CN=a, O=b\"\n"),
            format!("{tls}[[departments]]\nid = \"a\"\nroles = [\"consumer\"]\ncert_subject = \"nonsense\"\n"),
            // The same subject twice would make a certificate ambiguous.
            format!("{tls}[[departments]]\nid = \"a\"\nroles = [\"consumer\"]\ncert_subject = \"CN=x,O=y\"\n[[departments]]\nid = \"b\"\nroles = [\"consumer\"]\ncert_subject = \"o=y,cn=x\"\n"),
            // Neither token nor certificate.
            format!("{tls}[[departments]]\nid = \"a\"\nroles = [\"consumer\"]\n"),
        ] {
            assert!(parse(&bad).is_err(), "accepted: {bad}");
        }
        assert!(parse(&format!("{tls}{TLS_DEPTS}")).is_ok());
    }
}

/// `[[staff]]` in the configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffConfig {
    /// Sign-in name, recorded as the operator of every use: `[A-Za-z0-9._-]`, at most 64.
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// The configured department this person works for.
    pub department: String,
    pub roles: Vec<StaffRole>,
    /// PHC string of an argon2id hash (`basedata staff-password` makes one).
    pub password_argon2: Option<String>,
    /// Subject of the client certificate that signs this person in over
    /// mutual TLS (same matching rule as departments' `cert_subject`).
    pub cert_subject: Option<String>,
    /// A disabled account cannot sign in; its sessions end at once.
    #[serde(default)]
    pub disabled: bool,
}

/// `[console]`: session and lockout rules; every value has a default.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// A session unused this long ends.
    pub session_idle_minutes: u64,
    /// Failed sign-ins in a row after which the account is locked.
    pub max_failures: u32,
    /// How long a locked account stays locked.
    pub lockout_minutes: u64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig { session_idle_minutes: 15, max_failures: 5, lockout_minutes: 15 }
    }
}

/// What a staff member does in the console.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StaffRole {
    /// Counter staff: lookups, verifications, access reports.
    Clerk,
    /// A provider's data steward: grant requests, disputes, freshness.
    Steward,
    /// Audit trail, queues, reports.
    Auditor,
    /// Everything above.
    Admin,
}

impl StaffRole {
    pub fn title(self) -> &'static str {
        match self {
            StaffRole::Clerk => "窗口人员",
            StaffRole::Steward => "数据管护员",
            StaffRole::Auditor => "审计员",
            StaffRole::Admin => "管理员",
        }
    }

    pub const ALL: [StaffRole; 4] = [StaffRole::Clerk, StaffRole::Steward, StaffRole::Auditor, StaffRole::Admin];

    /// The name in the configuration (and in stored accounts).
    pub fn as_str(self) -> &'static str {
        match self {
            StaffRole::Clerk => "clerk",
            StaffRole::Steward => "steward",
            StaffRole::Auditor => "auditor",
            StaffRole::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<StaffRole> {
        StaffRole::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// What [`StaffRole::needs`] asks of the department, in Chinese.
    pub fn needs_zh(self) -> &'static str {
        match self {
            StaffRole::Clerk => "需要具有使用（consumer）角色的部门",
            StaffRole::Steward => "需要具有提供（provider）角色的部门",
            StaffRole::Auditor => "需要具有审计（auditor）或管理（admin）角色的部门",
            StaffRole::Admin => "",
        }
    }

    /// The department role this staff role acts through: a clerk's
    /// department must consume, a steward's provide, an auditor's audit.
    pub fn needs(self) -> &'static [Role] {
        match self {
            StaffRole::Clerk => &[Role::Consumer],
            StaffRole::Steward => &[Role::Provider],
            StaffRole::Auditor => &[Role::Auditor, Role::Admin],
            StaffRole::Admin => &[],
        }
    }
}
