//! `GET /v1/keys/{person,entity}/{id}[?id_type=]`: validate and explain a
//! key, of the subject's default document or the one `id_type` names,
//! without touching stored data.

use super::schema::{ErrorBody, KeyInfo};
use super::subjects::{doc_type_of, IdTypeParam};
use super::{ApiResult, KeyPath};
use axum::extract::Query;
use axum::Json;
use basedata_store::keys::{KeyError, SubjectKey};
use basedata_store::value::format_date;
use basedata_store::Subject;

fn invalid(e: KeyError) -> KeyInfo {
    KeyInfo { valid: false, reason: Some(e.reason().into()), message: Some(e.to_string()), ..Default::default() }
}

/// What a valid key says about itself.
fn explain(key: &SubjectKey) -> KeyInfo {
    let base = KeyInfo { valid: true, normalized: Some(key.as_str().into()), ..Default::default() };
    match key {
        SubjectKey::Person(k) => KeyInfo {
            birth_date: Some(format_date(k.birth_date())),
            gender: Some(k.gender().as_str().into()),
            region: Some(k.region().into()),
            kind: k.residence_permit().map(Into::into),
            ..base
        },
        SubjectKey::Entity(k) => KeyInfo {
            registration_authority: Some(k.registration_authority().to_string()),
            organization_type: Some(k.organization_type().to_string()),
            region: Some(k.region().into()),
            organization_code: Some(k.organization_code().into()),
            ..base
        },
        SubjectKey::Document(k) => {
            let (birth, gender) = k.birth_and_gender().unzip();
            KeyInfo {
                kind: k.kind().map(Into::into),
                birth_date: birth.map(format_date),
                gender: gender.map(|g| g.as_str().into()),
                region: k.region().map(Into::into),
                ..base
            }
        }
    }
}

fn check(subject: Subject, raw: &str, id_type: Option<&str>) -> ApiResult<Json<KeyInfo>> {
    let doc = doc_type_of(subject, id_type)?;
    let info = match SubjectKey::parse_doc(doc, raw) {
        Ok(key) => KeyInfo { id_type: key.other_doc_type().map(|d| d.as_str().into()), ..explain(&key) },
        Err(e) => KeyInfo { id_type: id_type.map(|_| doc.as_str().into()), ..invalid(e) },
    };
    Ok(Json(info))
}

/// Validate and explain a citizen ID number, or the number of the person's
/// document `id_type` names.
#[utoipa::path(get, path = "/v1/keys/person/{id}", tag = "keys",
    params(("id" = String, Path, description = "Citizen ID number, 18 or 15 characters, or the number of the document `id_type` names"), IdTypeParam),
    responses((status = 200, body = KeyInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn person(KeyPath(id): KeyPath, Query(q): Query<IdTypeParam>) -> ApiResult<Json<KeyInfo>> {
    check(Subject::Person, &id, q.id_type.as_deref())
}

/// Validate and explain a unified social credit code, or a
/// business-licence registration number (`id_type=business_licence`).
#[utoipa::path(get, path = "/v1/keys/entity/{code}", tag = "keys",
    params(("code" = String, Path, description = "Unified social credit code, 18 characters, or a business-licence registration number (15 digits) with `id_type=business_licence`"), IdTypeParam),
    responses((status = 200, body = KeyInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn entity(KeyPath(code): KeyPath, Query(q): Query<IdTypeParam>) -> ApiResult<Json<KeyInfo>> {
    check(Subject::Entity, &code, q.id_type.as_deref())
}
