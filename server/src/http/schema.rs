//! The typed request and response bodies of the API. Handlers build these
//! and serialize them; the OpenAPI document derives its schemas from the
//! same types, so the published contract cannot drift from what is sent.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A JSON answer, as axum's `Json` makes it (same bytes, same
/// `content-type`), serialized into one `Vec` sized for a small answer:
/// `Json` writes through a `BytesMut` writer that checks and grows its
/// buffer for every fragment (each quote, key and comma), which cost a
/// verification's answer more than its own steps. For the answers of the
/// hottest routes.
pub struct JsonAnswer<T>(pub T);

impl<T: Serialize> axum::response::IntoResponse for JsonAnswer<T> {
    fn into_response(self) -> axum::response::Response {
        let mut buf = Vec::with_capacity(256);
        match serde_json::to_writer(&mut buf, &self.0) {
            Ok(()) => JsonBytes(buf).into_response(),
            Err(e) => super::ApiError::internal(format!("answer not serializable: {e}")).into_response(),
        }
    }
}

/// A JSON answer already written out (by hand, where an answer of the
/// hottest route is cheaper written than built and serialized).
pub struct JsonBytes(pub Vec<u8>);

impl axum::response::IntoResponse for JsonBytes {
    fn into_response(self) -> axum::response::Response {
        ([(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"))], self.0).into_response()
    }
}

/// `{"error": {...}}`: every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code, e.g. `invalid_key`, `forbidden`, `overloaded`.
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct Ready {
    pub status: String,
    pub last_seq: u64,
}

/// The type of the legal document whose number keys a subject (证件类型):
/// `citizen_id` and `passport`, `hk_macao_taiwan_permit`,
/// `foreign_permanent_residence` for persons; `unified_credit_code` and
/// `business_licence` (the registration number of a market entity without
/// a credit code) for entities.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum IdType {
    CitizenId,
    UnifiedCreditCode,
    Passport,
    HkMacaoTaiwanPermit,
    ForeignPermanentResidence,
    BusinessLicence,
}

/// Explanation of a key; only the members of a valid key of its kind, or
/// `reason`/`message` of an invalid one, are present.
#[derive(Serialize, ToSchema, Default)]
pub struct KeyInfo {
    pub valid: bool,
    /// The document type the key was checked as, when the request named
    /// one (a valid key's: when it is not the subject's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<IdType>)]
    pub id_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalized: Option<String>,
    /// What the number is within its type: `cn_ordinary` or `other`
    /// (passport), `hong_kong`, `macao` or `taiwan` (permit), `card_2017` or
    /// `card_2023` (permanent residence card), or for a citizen ID number
    /// of a Hong Kong, Macao or Taiwan resident's residence permit
    /// `hong_kong_residence_permit`, `macao_residence_permit`,
    /// `taiwan_residence_permit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_authority: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_code: Option<String>,
    /// `length`, `format`, `checksum` or `date`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CatalogDoc {
    pub datasets: Vec<DatasetDoc>,
    /// The purposes of use a request states in `X-Purpose` (`CODE` or
    /// `CODE; note`) and a grant is applied for.
    pub purposes: Vec<PurposeDoc>,
}

/// A purpose of use (用途) of the catalog.
#[derive(Serialize, ToSchema)]
pub struct PurposeDoc {
    pub code: String,
    pub name: String,
    pub legal_basis: String,
}

/// A dataset of the catalog (rendered from the store's catalog types).
#[derive(Serialize, ToSchema)]
pub struct DatasetDoc {
    pub id: String,
    /// `person` or `entity`.
    pub subject: String,
    pub title: String,
    /// The only provider; of several, the steward, who decides grants and
    /// resolves disputes for the dataset.
    pub provider: String,
    pub provider_name: String,
    /// Every provider with its part (one entry, without a part, for a
    /// dataset of one provider). Each writes only records of its `areas`
    /// or only its `fields`; other lines are refused as `forbidden`.
    pub providers: Vec<ProviderDoc>,
    /// Present for a dataset of several providers: how it is divided.
    pub division: Option<DivisionDoc>,
    /// `realtime`, `working_days:N` or `quarterly`.
    pub update_frequency: String,
    pub legal_basis: String,
    pub fields: Vec<FieldDoc>,
}

/// One provider of a dataset and its part.
#[derive(Serialize, ToSchema)]
pub struct ProviderDoc {
    /// A department id.
    pub id: String,
    pub name: String,
    /// Administrative division codes (2, 4, 6, 9 or 12 digits); a record
    /// whose area value equals one or begins with it is in the area.
    pub areas: Option<Vec<String>>,
    /// The fields it provides.
    pub fields: Option<Vec<String>>,
}

/// How a dataset of several providers is divided.
#[derive(Serialize, ToSchema)]
pub struct DivisionDoc {
    /// `area` or `fields`.
    pub by: String,
    /// `by: area`: the field holding a record's division code.
    pub area_field: Option<String>,
    /// `by: area`: `true` when the region of the record's key decides.
    pub area_from_key: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct FieldDoc {
    pub name: String,
    pub title: String,
    /// string, date, datetime, integer, decimal, bool, code, person_key, entity_key, bytes
    #[serde(rename = "type")]
    pub ty: String,
    /// unconditional, conditional or none
    pub share: String,
    pub condition: Option<String>,
    pub legal_basis: Option<String>,
    pub codes: Option<Vec<CodeDoc>>,
    pub required: Option<bool>,
    /// Present (`false`) when only departments that may read the field may
    /// have a claimed value of it verified.
    pub verifiable: Option<bool>,
    /// Present (`true`) when a few guesses would reveal the field (every
    /// type but bytes, unless the catalog says otherwise), so that a
    /// department that may not read it has its distinct claims of it
    /// counted per subject (`403 claim_limit` beyond the limit) and may not
    /// verify it in a batch.
    pub few_values: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct CodeDoc {
    pub value: String,
    pub title: String,
}

/// One provider update (a line of NDJSON, or an item of a JSON array).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct UpdateLine {
    pub key: String,
    /// The document type of `key` (default: `citizen_id` in a person
    /// dataset, `unified_credit_code` in an entity dataset).
    #[schema(value_type = Option<IdType>)]
    pub id_type: Option<String>,
    pub version: u64,
    /// `upsert` (default) or `delete`.
    pub op: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub fields: Option<Map<String, Value>>,
}

#[derive(Serialize, ToSchema)]
pub struct UpdatesResult {
    pub applied: usize,
    pub stale: usize,
    /// The first 1,000 rejected lines, in line order.
    pub rejected: Vec<Rejection>,
    /// How many lines were rejected in all (more than are listed when
    /// over 1,000).
    pub rejected_total: usize,
    /// Every rejected line counted by its code.
    pub rejected_by_code: std::collections::BTreeMap<String, usize>,
    pub last_seq: u64,
    /// Cluster mode: the log position of the last message holding these
    /// updates (ask a node for it with `X-Basedata-Min-Position`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// Cluster mode: updates durable in the replicated log that this node
    /// had not applied yet when it answered, so that whether they were
    /// applied or stale is not known here (`applied + stale + logged` is
    /// what was submitted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logged: Option<usize>,
}

/// `GET /v1/cluster`: this node's place in the replicated update log.
#[derive(Serialize, ToSchema)]
pub struct ClusterStatus {
    pub node: String,
    pub stream: String,
    pub partitions: u16,
    /// The partitions this node holds.
    pub serves: Vec<u16>,
    /// Stream sequence of the last message applied here.
    pub position: u64,
    /// The stream's first and last sequence numbers now (absent while the
    /// log cannot be reached: the node still answers reads).
    pub stream_first: Option<u64>,
    pub stream_last: Option<u64>,
    /// Messages in the stream not yet applied here.
    pub lag: Option<u64>,
    /// The NATS server leading the stream.
    pub leader: Option<String>,
    pub replicas: Vec<ClusterReplica>,
    /// Whether this node's NATS connection is up.
    pub connected: bool,
    /// Records held here (tombstones included) and their digest, when
    /// asked for with `digest=true`: equal on nodes that applied the same log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Governance state held here (grants, disputes, responsible persons),
    /// when asked for with `digest=true`: equal on nodes that applied the
    /// same log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub governance: Option<GovernanceState>,
    /// Shipping this node's audit chain through the log.
    pub audit: ClusterAudit,
    /// With `digest=true`: the head of every audit chain held here, this
    /// node's and the copies of the others', by node: equal on nodes that
    /// hold the same chains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_chains: Option<std::collections::BTreeMap<String, ChainHeadDoc>>,
}

#[derive(Serialize, ToSchema)]
pub struct ClusterAudit {
    /// The last entry of this node's chain.
    pub head: u64,
    /// The last entry the log has acknowledged.
    pub shipped: u64,
    /// Entries on this node's disk only, not yet in the log.
    pub unshipped: u64,
    /// Age of the oldest of them (0 when none).
    pub oldest_unshipped_age_ms: u64,
    /// The shipping window: acknowledgement time minus the time of the
    /// oldest entry of each message, the largest since start and the 99th
    /// percentile of the last 1,024 messages.
    pub ship_lag_max_ms: f64,
    pub ship_lag_p99_ms: f64,
    /// Entries and messages acknowledged since start; sends that failed.
    pub shipped_entries: u64,
    pub messages: u64,
    pub failures: u64,
    /// Other nodes' entries appended here since start.
    pub remote_appended: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ChainHeadDoc {
    pub seq: u64,
    /// Hex.
    pub hash: String,
}

/// A node's governance state in brief.
#[derive(Serialize, ToSchema)]
pub struct GovernanceState {
    pub grants: u64,
    pub disputes: u64,
    /// Departments with responsible persons recorded through the API.
    pub responsible: u64,
    /// Staff accounts of the console held in the store.
    pub accounts: u64,
    /// BLAKE3 of the records in key order (a dispute without its
    /// node-local change-log mark).
    pub digest: String,
    /// This node's deadline policy: nodes that disagree on it disagree on
    /// when a grant is deemed approved.
    pub policy: String,
}

#[derive(Serialize, ToSchema)]
pub struct ClusterReplica {
    pub name: String,
    pub current: bool,
    pub offline: bool,
    /// Operations behind the leader.
    pub lag: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct Rejection {
    pub line: u64,
    pub key: Option<String>,
    /// `invalid_body`, `invalid_key`, `unknown_field`, `invalid_value`,
    /// `payload_too_large` (cluster mode), or `forbidden`: a line of a
    /// dataset of several providers outside the sender's area or fields
    /// (also recorded as a `denied` audit entry).
    pub code: String,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
pub struct Lookup {
    pub key: String,
    /// The document type of `key`, when it is not the subject's default
    /// (citizen ID number, credit code).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<IdType>)]
    pub id_type: Option<String>,
    pub subject: String,
    pub datasets: BTreeMap<String, DatasetRecord>,
    pub withheld: Vec<WithheldItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DatasetRecord {
    pub version: u64,
    pub updated_at: String,
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
}

#[derive(Serialize, ToSchema)]
pub struct WithheldItem {
    pub dataset: String,
    pub field: String,
    pub share: String,
    /// `no_grant`, `granted_for_other_purpose` (the grants that cover it are for
    /// another purpose than the one stated) or `not_shared`.
    pub reason: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// Default: the subject's primary dataset.
    pub dataset: Option<String>,
    /// Field name -> claimed value.
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
}

#[derive(Serialize, ToSchema)]
pub struct Verification {
    pub key: String,
    /// The document type of `key`, when it is not the subject's default
    /// (citizen ID number, credit code).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<IdType>)]
    pub id_type: Option<String>,
    pub dataset: String,
    /// `match`, `mismatch` or `not_found`.
    pub result: &'static str,
    /// Field name -> `match`, `mismatch` or `no_value`.
    pub fields: BTreeMap<String, &'static str>,
}

#[derive(Serialize, ToSchema)]
pub struct Changes {
    pub changes: Vec<ChangeItem>,
    pub next: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ChangeItem {
    pub seq: u64,
    pub dataset: String,
    pub subject: String,
    pub key: String,
    /// The document type of `key`, when it is not the subject's default
    /// (citizen ID number, credit code).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<IdType>)]
    pub id_type: Option<String>,
    pub op: String,
    pub version: u64,
    pub committed_at: String,
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    pub dataset: String,
    /// `fields` (the default: conditional fields) or `subscription` (the
    /// dataset's changes in the change feed).
    pub kind: Option<String>,
    /// The conditional fields (required for `fields`); left out for a subscription.
    pub fields: Option<Vec<String>>,
    /// `CODE` or `CODE; note` (a department with a purpose list must name
    /// one of its codes); free text from a department without one.
    pub purpose: Option<String>,
    pub legal_basis: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub approve: bool,
    /// Required for a refusal.
    pub reason: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    pub reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct GrantDoc {
    pub id: String,
    pub department: String,
    pub dataset: String,
    /// `fields` or `subscription`.
    pub kind: String,
    pub fields: Vec<String>,
    pub purpose: String,
    /// The catalogued purpose the grant is for: it covers only uses that
    /// state it. Null for a free-text purpose (covers uses stating none).
    pub purpose_code: Option<String>,
    pub legal_basis: String,
    /// pending, approved, rejected, deemed_approved, revoked
    pub state: String,
    pub created_at: String,
    /// Reply deadline (working days).
    pub due: String,
    pub decided_at: Option<String>,
    pub decided_by: Option<String>,
    /// Who decided for `decided_by`, as the decision named them (a
    /// console user, or the request's `X-Operator`).
    pub decided_operator: Option<String>,
    /// `verified` or `declared`, as `operator_source` of audit entries;
    /// null without `decided_operator`.
    pub decided_operator_source: Option<String>,
    pub reason: Option<String>,
    pub revoked_at: Option<String>,
    pub revoked_by: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct GrantList {
    pub grants: Vec<GrantDoc>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisputeRequest {
    /// `person` or `entity`.
    pub subject: String,
    pub key: String,
    /// The document type of `key` (default: the subject's own).
    #[schema(value_type = Option<IdType>)]
    pub id_type: Option<String>,
    pub dataset: String,
    pub field: String,
    /// The value the consumer believes correct.
    #[schema(value_type = String)]
    pub claimed: Value,
    pub note: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolutionRequest {
    /// `confirmed` or `corrected`.
    pub outcome: String,
    pub note: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DisputeDoc {
    pub id: String,
    pub department: String,
    pub subject: Option<String>,
    pub key: Option<String>,
    /// The document type of `key`, when it is not the subject's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<IdType>)]
    pub id_type: Option<String>,
    pub dataset: String,
    pub field: String,
    pub claimed: String,
    pub note: String,
    /// open or resolved
    pub state: String,
    pub overdue: bool,
    pub created_at: String,
    pub due: String,
    pub resolution: Option<ResolutionDoc>,
}

#[derive(Serialize, ToSchema)]
pub struct ResolutionDoc {
    pub outcome: String,
    pub note: Option<String>,
    pub at: Option<String>,
    pub by: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DisputeList {
    pub disputes: Vec<DisputeDoc>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEntryDoc {
    /// Cluster mode: the node that answered the use (whose chain holds the
    /// entry; `seq` and `hash` are of that chain). Null on a single node.
    pub node: Option<String>,
    pub seq: u64,
    pub at: String,
    pub department: String,
    pub operator: Option<String>,
    /// `verified`: a staff member signed in to the console (the platform
    /// established who it is); `declared`: the calling program's
    /// `X-Operator`, not checked. Absent without an operator.
    pub operator_source: Option<String>,
    pub purpose: String,
    /// The catalogued purpose `purpose` names; null for free text.
    pub purpose_code: Option<String>,
    /// lookup, verify, batch_verify, change_feed, update, denied, grant,
    /// dispute, sign_in, access_report, account, responsible, policy,
    /// retention
    pub action: String,
    pub subject: Option<String>,
    pub key: Option<String>,
    /// The document type of `key`, when it is not the subject's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<IdType>)]
    pub id_type: Option<String>,
    pub datasets: Vec<String>,
    pub fields: Vec<String>,
    pub outcome: String,
    /// The approvals the use relied on (its approvers), as recorded when
    /// it was decided: each grant that opened a conditional field it
    /// disclosed or verified, or its change-feed subscription. Empty for
    /// uses that needed no approval and for entries other than uses.
    pub approvals: Vec<ApprovalDoc>,
    /// SHA-256 of this entry chained to the previous one, hex.
    pub hash: String,
}

/// A grant an audited use relied on.
#[derive(Serialize, ToSchema)]
pub struct ApprovalDoc {
    /// The grant's id.
    pub grant: String,
    /// Null (with the members below) for a grant this node does not hold.
    pub dataset: Option<String>,
    /// `approved` (decided by the provider) or `deemed_approved` (no
    /// decision by the deadline).
    pub state: Option<String>,
    /// The department that approved it; null when deemed approved.
    pub approved_by: Option<String>,
    /// Who approved it for that department, as the decision named them;
    /// null when deemed approved or not named.
    pub approver: Option<String>,
    /// `verified`: a staff member signed in to the console; `declared`:
    /// the deciding request's `X-Operator`, not checked. Null without an
    /// approver.
    pub approver_source: Option<String>,
    /// When the approval took effect.
    pub since: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditEntryDoc>,
    /// Pass as `after` to read the next page (a single node; null in
    /// cluster mode, where paging is by `cursor`).
    pub next: Option<u64>,
    /// The last entry's place in the order of every chain this node holds
    /// (time, node, sequence number), `<at µs>.<seq>.<node>`: pass it as
    /// `after` to read the next page, on a single node or in a cluster.
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditCheck {
    /// Every chain held here is intact: this node's and (cluster mode)
    /// each other node's copy.
    pub ok: bool,
    /// Entries, head and problem of this node's own chain.
    pub entries: u64,
    /// The last entry removed for the retention period: the chain is
    /// checked from the one after it (absent when none was removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts_after: Option<u64>,
    pub head: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Each chain checked, this node's first.
    pub chains: Vec<ChainCheckDoc>,
}

#[derive(Serialize, ToSchema)]
pub struct ChainCheckDoc {
    /// The node whose chain it is (null: this node, on a single node).
    pub node: Option<String>,
    pub entries: u64,
    /// As in [`AuditCheck`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts_after: Option<u64>,
    /// The hash of the last entry, hex.
    pub head: String,
    pub ok: bool,
    /// The first problem found.
    pub problem: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SharingReport {
    pub from: String,
    pub to: String,
    pub departments: Vec<SharingRow>,
}

#[derive(Serialize, ToSchema)]
pub struct SharingRow {
    pub department: String,
    pub name: String,
    pub datasets_provided: Vec<String>,
    pub records_provided: u64,
    pub updates_applied: u64,
    pub update_requests: u64,
    pub lookups: u64,
    pub verifications: u64,
    pub batch_lines: u64,
    pub change_feed_reads: u64,
    pub denials: u64,
    /// Verifications refused for too many different claims of a field of
    /// few values the department may not read: flags for auditors.
    pub claim_limit_refusals: usize,
    pub grants_decided: usize,
    pub grants_decided_on_time: usize,
    pub grants_deemed_approved: usize,
    pub disputes_resolved: usize,
    pub disputes_resolved_on_time: usize,
    pub disputes_overdue: usize,
    /// `strict` (catalogued purposes only) or `transitional` (free text accepted).
    pub purpose_mode: String,
    /// Lookups, verifications, batch lines and change-feed reads whose
    /// purpose named no catalogued purpose.
    pub uses_without_catalogued_purpose: u64,
    /// The record of responsible persons: `current`, `missing` or `out_of_date`.
    pub responsible_record: String,
    /// The date the record stands as of.
    pub responsible_as_of: Option<String>,
    /// True when the department needs attention: uses without a
    /// catalogued purpose, or a responsible-persons record missing or out of date.
    pub flagged: bool,
}

/// A person responsible for a department's information sharing.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponsiblePersonDoc {
    pub name: String,
    /// Post (职务).
    pub post: String,
    /// Office telephone or e-mail.
    pub contact: String,
    /// Responsible since, `YYYY-MM-DD`.
    pub since: String,
}

/// A department as published to every authenticated department.
#[derive(Serialize, ToSchema)]
pub struct DepartmentDoc {
    pub id: String,
    pub name: String,
    pub roles: Vec<String>,
    /// The purpose codes it may state; null: free text (the transitional mode).
    pub purposes: Option<Vec<String>>,
    pub responsible: Vec<ResponsiblePersonDoc>,
    /// The date the record stands as of (last set, or the latest `since` of configured persons).
    pub responsible_as_of: Option<String>,
    /// `api` or `config`; null when nobody is recorded.
    pub responsible_source: Option<String>,
    /// When and by whom the record was last set through the API.
    pub responsible_updated_at: Option<String>,
    pub responsible_updated_by: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DepartmentList {
    pub departments: Vec<DepartmentDoc>,
}

/// The governance policy in force: reply deadlines and the deemed-approval rule.
#[derive(Serialize, ToSchema)]
pub struct PolicyDoc {
    /// Working days a provider has to answer a grant application.
    pub grant_reply_days: u32,
    /// Working days a provider has to check a dispute.
    pub dispute_days: u32,
    /// A grant unanswered by its due date counts as approved.
    pub deemed_approval: bool,
    pub responsible_max_age_days: u32,
    /// `config` (the configuration file) or `api` (switched through `PUT /v1/policy`).
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_by: Option<String>,
}

/// `PUT /v1/policy`: what to switch; members left out stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    pub grant_reply_days: Option<u32>,
    pub dispute_days: Option<u32>,
    pub deemed_approval: Option<bool>,
    pub responsible_max_age_days: Option<u32>,
}

/// `PUT /v1/departments/{id}/responsible`: the whole new record.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponsibleRequest {
    pub persons: Vec<ResponsiblePersonDoc>,
}

#[derive(Serialize, ToSchema)]
pub struct FreshnessReport {
    pub as_of: String,
    pub calendar_covers_this_year: bool,
    pub datasets: Vec<FreshnessRow>,
}

#[derive(Serialize, ToSchema)]
pub struct FreshnessRow {
    pub dataset: String,
    pub provider: String,
    pub update_frequency: String,
    pub records: u64,
    pub updates: u64,
    pub last_update: Option<String>,
    pub next_update_due: Option<String>,
    pub overdue: bool,
    /// A dataset of several providers: each one's updates and timeliness
    /// by the same rule (left out for a dataset of one provider).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderFreshnessRow>,
}

#[derive(Serialize, ToSchema)]
pub struct ProviderFreshnessRow {
    pub provider: String,
    pub updates: u64,
    pub last_update: Option<String>,
    pub next_update_due: Option<String>,
    pub overdue: bool,
}

/// The yearly sharing report (Guangzhou Arts. 35–37, Huizhou Arts. 50–51).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AnnualReport {
    pub year: i32,
    /// The period covered: the start of the year and its end, or now for
    /// the current year (RFC 3339, China Standard Time days).
    pub from: String,
    pub to: String,
    /// The first and last day of the period (China Standard Time).
    pub first_day: String,
    pub last_day: String,
    /// The year is over and its figures are final.
    pub complete: bool,
    /// Days of the year the period covers.
    pub days: u32,
    /// The working-day calendar covers the year (deadlines and timeliness
    /// count working days).
    pub calendar_covers_year: bool,
    pub generated_at: String,
    /// Grant requests and disputes over all datasets.
    pub grants: AnnualHandling,
    pub disputes: AnnualHandling,
    pub departments: Vec<AnnualDepartment>,
    pub datasets: Vec<AnnualDataset>,
}

/// How grant requests or disputes were answered in the year.
#[derive(Serialize, Deserialize, ToSchema, Clone, Default)]
pub struct AnnualHandling {
    pub received: usize,
    /// Decided (grants) or resolved (disputes) in the year.
    pub answered: usize,
    pub on_time: usize,
    pub late: usize,
    /// Grants deemed approved for want of an answer by the deadline.
    pub deemed_approved: usize,
    /// Unanswered at the end of the period and past the deadline.
    pub open_overdue: usize,
}

/// Uses counted over the year.
#[derive(Serialize, Deserialize, ToSchema, Clone, Default, PartialEq, Eq)]
pub struct AnnualUses {
    pub lookups: u64,
    pub verifications: u64,
    pub batch_lines: u64,
    pub change_feed_reads: u64,
    pub denials: u64,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AnnualDepartment {
    pub department: String,
    pub name: String,
    pub roles: Vec<String>,
    /// `strict` or `transitional`.
    pub purpose_mode: String,
    /// `current`, `missing` or `out_of_date` at the end of the period.
    pub responsible_record: String,
    pub responsible_as_of: Option<String>,
    pub responsible_persons: usize,
    pub datasets_provided: Vec<String>,
    pub update_requests: u64,
    pub updates_applied: u64,
    pub rejected_lines: u64,
    pub uses: AnnualUses,
    pub uses_without_catalogued_purpose: u64,
    pub refused_for_purpose: u64,
    pub refused_for_class: u64,
    pub refused_for_claim_limit: u64,
    /// About the datasets it provides.
    pub grants: AnnualHandling,
    pub disputes: AnnualHandling,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AnnualDataset {
    pub dataset: String,
    pub title: String,
    /// The provider, or with several the steward.
    pub provider: String,
    pub update_frequency: String,
    pub updates_applied: u64,
    pub rejected_lines: u64,
    /// Updates applied per month, January first.
    pub monthly_updates: Vec<u64>,
    pub update_days: u32,
    /// Days the provider was past the date its update frequency required
    /// the next update by.
    pub days_overdue: u32,
    pub longest_gap_days: u32,
    pub days_before_first_update: u32,
    /// With several providers: each one's updates and timeliness.
    pub providers: Vec<AnnualProvider>,
    /// Who used the dataset, and how.
    pub consumers: Vec<AnnualConsumer>,
    pub grants: AnnualHandling,
    pub disputes: AnnualHandling,
}

/// One provider's part of a dataset of several, over the year.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AnnualProvider {
    pub provider: String,
    pub updates_applied: u64,
    pub update_days: u32,
    pub days_overdue: u32,
    pub longest_gap_days: u32,
    pub days_before_first_update: u32,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AnnualConsumer {
    pub department: String,
    pub uses: AnnualUses,
}
