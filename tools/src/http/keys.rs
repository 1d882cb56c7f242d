//! `GET /v1/keys/{person,entity}/{id}`: validate and explain a key without
//! touching stored data.

use super::ApiResult;
use axum::extract::Path;
use axum::Json;
use basedata_store::keys::{EntityKey, PersonKey};
use basedata_store::value::format_date;
use serde_json::{json, Value};

pub async fn person(Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(match PersonKey::parse(&id) {
        Ok(k) => json!({
            "valid": true,
            "normalized": k.as_str(),
            "birth_date": format_date(k.birth_date()),
            "gender": k.gender().as_str(),
            "region": k.region(),
        }),
        Err(e) => json!({"valid": false, "reason": e.reason(), "message": e.to_string()}),
    }))
}

pub async fn entity(Path(code): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(match EntityKey::parse(&code) {
        Ok(k) => json!({
            "valid": true,
            "normalized": k.as_str(),
            "registration_authority": k.registration_authority().to_string(),
            "organization_type": k.organization_type().to_string(),
            "region": k.region(),
            "organization_code": k.organization_code(),
        }),
        Err(e) => json!({"valid": false, "reason": e.reason(), "message": e.to_string()}),
    }))
}
