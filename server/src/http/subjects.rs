//! Lookups and verifications of one subject (`/v1/persons/{id}`,
//! `/v1/entities/{code}`, `…/verify`): the use cases are
//! `Queries::lookup` and `Queries::verify`, each audited durably before it
//! answers.
//!
//! Hot path: key parsing runs here, pseudonymization and point reads in
//! the use case, inline (microseconds, mostly cache hits); the only wait
//! is the group commit of the audit entry.

use super::schema::{JsonAnswer, JsonBytes, DatasetRecord, ErrorBody, IdType, Lookup, Verification, VerifyRequest, WithheldItem};
use super::{ApiError, ApiResult, AppState, KeyPath};
use crate::auth::{Caller, Purpose};
use axum::extract::{Query, State};
use axum::Extension;
use basedata_ingest::log::UpdateLog;
use basedata_store::value::{format_datetime, parse_datetime};
use basedata_store::keys::DocType;
use basedata_store::{Subject, SubjectKey};
use basedata_query::claimed::VerifyBody;
use basedata_query::verify::Verdict;
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LookupParams {
    /// Comma-separated dataset ids (default: all of the subject's datasets).
    datasets: Option<String>,
    /// RFC 3339 time: the records as they stood then.
    as_of: Option<String>,
    /// The document type of the key in the path (default: `citizen_id` for
    /// a person, `unified_credit_code` for an entity).
    #[param(value_type = Option<IdType>)]
    id_type: Option<String>,
}

/// `?id_type=` of the requests that name one subject by a key in the path.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IdTypeParam {
    /// The document type of the key in the path (default: `citizen_id` for
    /// a person, `unified_credit_code` for an entity).
    #[param(value_type = Option<IdType>)]
    pub id_type: Option<String>,
}

/// The document type an `id_type` names for a key of `subject`, the
/// subject's own when none is given; another subject's type or an unknown
/// name is `400 invalid_value`.
pub fn doc_type_of(subject: Subject, id_type: Option<&str>) -> ApiResult<DocType> {
    match id_type {
        None => Ok(subject.doc_type()),
        Some(name) => DocType::for_subject(subject, name).ok_or_else(|| {
            let allowed = DocType::names(subject);
            ApiError::invalid_value(format!("id_type of a {subject} is one of {}", allowed.join(", ")))
                .with_details(serde_json::json!({ "allowed": allowed }))
        }),
    }
}

/// The key a request names: `raw` as a number of the document `id_type`
/// names (see [`doc_type_of`]).
pub fn parse_key(subject: Subject, raw: &str, id_type: Option<&str>) -> ApiResult<SubjectKey> {
    let doc = doc_type_of(subject, id_type)?;
    SubjectKey::parse_doc(doc, raw).map_err(ApiError::invalid_key)
}

pub fn parse_time(param: &str, value: &str) -> ApiResult<i64> {
    parse_datetime(value).ok_or_else(|| ApiError::invalid_value(format!("{param} must be an RFC 3339 time")))
}

/// Look a person up: the fields the caller may see, and what is withheld.
#[utoipa::path(get, path = "/v1/persons/{id}", tag = "subjects",
    params(("id" = String, Path, description = "Citizen ID number, or the number of the document `id_type` names"), LookupParams,
           ("X-Purpose" = String, Header, description = "Purpose of use (UTF-8, percent-encoding allowed)"),
           ("X-Operator" = Option<String>, Header, description = "Staff member at the counter, as the calling program declares it: recorded in the audit trail as declared, not verified")),
    responses((status = 200, body = Lookup), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn lookup_person(
    state: State<AppState>,
    caller: Extension<Caller>,
    purpose: Extension<Purpose>,
    KeyPath(id): KeyPath,
    q: Query<LookupParams>,
) -> ApiResult<JsonAnswer<Lookup>> {
    lookup_subject(state, caller, purpose, Subject::Person, id, q).await
}

/// Look an organization up.
#[utoipa::path(get, path = "/v1/entities/{code}", tag = "subjects",
    params(("code" = String, Path, description = "Unified social credit code, or the business-licence registration number with `id_type=business_licence`"), LookupParams,
           ("X-Purpose" = String, Header, description = "Purpose of use"),
           ("X-Operator" = Option<String>, Header, description = "Staff member at the counter, as the calling program declares it: recorded in the audit trail as declared, not verified")),
    responses((status = 200, body = Lookup), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn lookup_entity(
    state: State<AppState>,
    caller: Extension<Caller>,
    purpose: Extension<Purpose>,
    KeyPath(code): KeyPath,
    q: Query<LookupParams>,
) -> ApiResult<JsonAnswer<Lookup>> {
    lookup_subject(state, caller, purpose, Subject::Entity, code, q).await
}

pub(super) async fn lookup_subject(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(purpose): Extension<Purpose>,
    subject: Subject,
    raw_key: String,
    Query(q): Query<LookupParams>,
) -> ApiResult<JsonAnswer<Lookup>> {
    let key = parse_key(subject, &raw_key, q.id_type.as_deref())?;
    held_here(&state, &key)?;
    let as_of = q.as_of.as_deref().map(|t| parse_time("as_of", t)).transpose()?;
    let result = state.queries.lookup(&caller, &purpose.0, key, q.datasets.as_deref(), as_of).await?;
    let datasets = result
        .datasets
        .into_iter()
        .map(|d| {
            let fields: Map<String, Value> = d.fields.iter().map(|(n, v)| (n.clone(), v.to_json())).collect();
            (d.dataset, DatasetRecord { version: d.version, updated_at: format_datetime(d.updated_at), fields })
        })
        .collect();
    let withheld = result
        .withheld
        .into_iter()
        .map(|w| WithheldItem { dataset: w.dataset, field: w.field, share: w.share.as_str().into(), reason: w.reason.as_str().into() })
        .collect();
    Ok(JsonAnswer(Lookup {
        key: key.as_str().into(),
        id_type: key.other_doc_type().map(|d| d.as_str().into()),
        subject: subject.as_str().into(),
        datasets,
        withheld,
        as_of: as_of.map(format_datetime),
    }))
}

/// Cluster mode on a node holding only some partitions: a key of another
/// partition is not answered here (its records are not here), and the
/// answer says which partition to ask for.
pub fn held_here(state: &AppState, key: &SubjectKey) -> ApiResult<()> {
    match state.cluster.as_ref().and_then(|c| c.partitioning().not_held(&state.store, key)) {
        None => Ok(()),
        Some(p) => Err(ApiError::unavailable(format!("this node does not hold partition {p} of the key; ask a node that does"))
            .with_details(serde_json::json!({ "partition": p }))),
    }
}

/// Parses a JSON request body, mapping every failure to `invalid_body`.
pub fn json_body<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "a member is missing or has the wrong type",
            _ => "malformed JSON",
        };
        ApiError::invalid_body(format!("request body: {what} (line {}, column {})", e.line(), e.column()))
    })
}


/// Verify claimed values of a person's record without disclosing them.
#[utoipa::path(post, path = "/v1/persons/{id}/verify", tag = "subjects", request_body = VerifyRequest,
    params(("id" = String, Path, description = "Citizen ID number, or the number of the document `id_type` names"), IdTypeParam,
           ("X-Purpose" = String, Header, description = "Purpose of use")),
    responses((status = 200, body = Verification), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn verify_person(
    state: State<AppState>,
    caller: Extension<Caller>,
    purpose: Extension<Purpose>,
    KeyPath(id): KeyPath,
    q: Query<IdTypeParam>,
    body: axum::body::Bytes,
) -> ApiResult<JsonBytes> {
    verify_subject(state, caller, purpose, Subject::Person, id, q, body).await
}

/// Verify claimed values of an organization's record without disclosing them.
#[utoipa::path(post, path = "/v1/entities/{code}/verify", tag = "subjects", request_body = VerifyRequest,
    params(("code" = String, Path, description = "Unified social credit code, or the business-licence registration number with `id_type=business_licence`"), IdTypeParam,
           ("X-Purpose" = String, Header, description = "Purpose of use")),
    responses((status = 200, body = Verification), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn verify_entity(
    state: State<AppState>,
    caller: Extension<Caller>,
    purpose: Extension<Purpose>,
    KeyPath(code): KeyPath,
    q: Query<IdTypeParam>,
    body: axum::body::Bytes,
) -> ApiResult<JsonBytes> {
    verify_subject(state, caller, purpose, Subject::Entity, code, q, body).await
}

pub(super) async fn verify_subject(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(purpose): Extension<Purpose>,
    subject: Subject,
    raw_key: String,
    Query(q): Query<IdTypeParam>,
    body: axum::body::Bytes,
) -> ApiResult<JsonBytes> {
    let key = parse_key(subject, &raw_key, q.id_type.as_deref())?;
    held_here(&state, &key)?;
    // Read in place: the claims are not built into a JSON object first.
    let req: VerifyBody<'_> = json_body(&body)?;
    let v = state.queries.verify_claimed(&caller, &purpose.0, key, req.dataset(), req.claims()).await?;
    Ok(JsonBytes(verification_answer(key.as_str(), key.other_doc_type().map(|d| d.as_str()), &v.dataset, v.outcome.as_str(), &v.fields)))
}

/// A verification's answer written straight into its buffer: the bytes
/// [`Verification`]'s derived `Serialize` gives (`verification_answers_are_written_as_serialized`
/// holds them equal), without building its strings and map of fields.
/// `fields` come in name order without repeats, as claims are kept.
fn verification_answer(key: &str, id_type: Option<&str>, dataset: &str, result: &str, fields: &[(String, Verdict)]) -> Vec<u8> {
    debug_assert!(fields.windows(2).all(|w| w[0].0 < w[1].0), "fields out of name order");
    let mut out = Vec::with_capacity(96 + 32 * fields.len());
    // Writing a `str` into a `Vec` cannot fail.
    let string = |out: &mut Vec<u8>, s: &str| {
        let _ = serde_json::to_writer(&mut *out, s);
    };
    out.extend_from_slice(b"{\"key\":");
    string(&mut out, key);
    if let Some(t) = id_type {
        out.extend_from_slice(b",\"id_type\":");
        string(&mut out, t);
    }
    out.extend_from_slice(b",\"dataset\":");
    string(&mut out, dataset);
    out.extend_from_slice(b",\"result\":");
    string(&mut out, result);
    out.extend_from_slice(b",\"fields\":{");
    for (i, (name, verdict)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(&mut out, name);
        out.push(b':');
        string(&mut out, verdict.as_str());
    }
    out.extend_from_slice(b"}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written answer is byte for byte what serializing the
    /// documented `Verification` gives, escapes and optional members included.
    #[test]
    fn verification_answers_are_written_as_serialized() {
        let f = |pairs: &[(&str, Verdict)]| pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect::<Vec<_>>();
        let cases = [
            ("11010519491231002X", None, "hukou", "match", f(&[("birth_date", Verdict::Match), ("name", Verdict::Match)])),
            ("E12345678", Some("passport"), "residence_permit", "mismatch", f(&[("name", Verdict::Mismatch)])),
            ("91350100M000100Y43", None, "market_registration", "not_found", f(&[("a", Verdict::NoValue), ("b", Verdict::Mismatch), ("c", Verdict::Match)])),
            ("k\"e\\y\n\u{1}é", Some("t\""), "d\u{2028}s", "match", f(&[("n\"a\tme", Verdict::Match)])),
            ("k", None, "d", "match", Vec::new()),
        ];
        for (key, id_type, dataset, result, fields) in cases {
            let documented = Verification {
                key: key.into(),
                id_type: id_type.map(Into::into),
                dataset: dataset.into(),
                result,
                fields: fields.iter().map(|(n, v)| (n.clone(), v.as_str())).collect(),
            };
            let want = serde_json::to_vec(&documented).unwrap();
            let got = verification_answer(key, id_type, dataset, result, &fields);
            assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(want).unwrap());
        }
    }
}
