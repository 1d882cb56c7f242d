//! `GET /openapi.json`: the OpenAPI 3 document of the API, generated from
//! the handlers' annotations and the typed bodies in `schema`, so it
//! changes with the code. A test checks that every endpoint of the
//! contract is in it.

use super::schema::*;
use super::{annual, audit, batch, changes, cluster, departments, gov, keys, ops, reports, subjects, updates};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "basedata", description = "Identity-keyed base-data store for government information sharing"),
    modifiers(&BearerAuth),
    paths(
        ops::healthz, ops::readyz, ops::metrics, ops::catalog,
        keys::person, keys::entity,
        updates::post_updates,
        subjects::lookup_person, subjects::lookup_entity, subjects::verify_person, subjects::verify_entity,
        changes::changes,
        batch::verify_batch, batch::submit_job, batch::job_status, batch::job_result,
        gov::apply, gov::list_grants, gov::get_grant, gov::decide, gov::revoke,
        gov::file_dispute, gov::list_disputes, gov::resolve_dispute,
        audit::list, audit::verify, cluster::status,
        reports::sharing, reports::freshness, annual::annual,
        departments::list, departments::set_responsible, departments::policy, departments::switch_policy,
    ),
    components(schemas(ErrorBody, ErrorDetail, UpdateLine, IdType))
)]
pub struct ApiDoc;

/// The document, rendered once.
pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serializes")
}
