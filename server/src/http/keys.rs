//! `GET /v1/keys/{person,entity}/{id}`: validate and explain a key without
//! touching stored data.

use super::schema::{ErrorBody, KeyInfo};
use super::ApiResult;
use axum::extract::Path;
use axum::Json;
use basedata_store::keys::{EntityKey, KeyError, PersonKey};
use basedata_store::value::format_date;

fn invalid(e: KeyError) -> KeyInfo {
    KeyInfo { valid: false, reason: Some(e.reason().into()), message: Some(e.to_string()), ..Default::default() }
}

/// Validate and explain a citizen ID number.
#[utoipa::path(get, path = "/v1/keys/person/{id}", tag = "keys",
    params(("id" = String, Path, description = "Citizen ID number, 18 or 15 characters")),
    responses((status = 200, body = KeyInfo), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn person(Path(id): Path<String>) -> ApiResult<Json<KeyInfo>> {
    Ok(Json(match PersonKey::parse(&id) {
        Ok(k) => KeyInfo {
            valid: true,
            normalized: Some(k.as_str().into()),
            birth_date: Some(format_date(k.birth_date())),
            gender: Some(k.gender().as_str().into()),
            region: Some(k.region().into()),
            ..Default::default()
        },
        Err(e) => invalid(e),
    }))
}

/// Validate and explain a unified social credit code.
#[utoipa::path(get, path = "/v1/keys/entity/{code}", tag = "keys",
    params(("code" = String, Path, description = "Unified social credit code, 18 characters")),
    responses((status = 200, body = KeyInfo), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn entity(Path(code): Path<String>) -> ApiResult<Json<KeyInfo>> {
    Ok(Json(match EntityKey::parse(&code) {
        Ok(k) => KeyInfo {
            valid: true,
            normalized: Some(k.as_str().into()),
            registration_authority: Some(k.registration_authority().to_string()),
            organization_type: Some(k.organization_type().to_string()),
            region: Some(k.region().into()),
            organization_code: Some(k.organization_code().into()),
            ..Default::default()
        },
        Err(e) => invalid(e),
    }))
}
