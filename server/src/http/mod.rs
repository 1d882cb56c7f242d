//! The HTTP API (axum): shared state, the router, and the layers every
//! request passes through — request id and access log, authentication,
//! the purpose requirement for subject-data reads, panic and body limits.
//!
//! Handlers live in submodules by area. Each is thin: it extracts the
//! request's parts, calls one use case of `basedata_ingest` or
//! `basedata_query`, and maps the outcome to the API's schema. Each returns
//! `ApiResult`, so a client mistake is always a 4xx with a stable code and
//! an internal fault never leaks its cause.

mod audit;
mod batch;
mod changes;
mod cluster;
mod departments;
mod edge;
pub mod error;
pub mod gov;
mod keys;
mod ops;
pub mod openapi;
pub mod annual;
pub mod annual_doc;
mod reports;
pub mod schema;
mod subjects;
mod updates;

use crate::auth::{Departments, Purpose};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use basedata_ingest::Provide;
use basedata_query::gov::Policy;
use basedata_query::Queries;
use basedata_store::calendar::Calendar;
use basedata_store::commit::Committer;
use basedata_store::{Catalog, Store};
use futures_util::FutureExt;
pub use edge::Edge;
pub use error::{ApiError, ApiResult};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything a handler may need, shared by all requests. One `Arc`: the
/// router clones the state for every request, and one reference count is
/// measurably cheaper than a dozen.
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl std::ops::Deref for AppState {
    type Target = AppStateInner;
    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// Changes made while the server is being assembled, before any request
/// holds a clone (afterwards each change would copy the state).
impl std::ops::DerefMut for AppState {
    fn deref_mut(&mut self) -> &mut AppStateInner {
        Arc::make_mut(&mut self.0)
    }
}

/// The fields of [`AppState`].
#[derive(Clone)]
pub struct AppStateInner {
    pub store: Arc<Store>,
    pub catalog: Arc<Catalog>,
    pub departments: Arc<Departments>,
    /// `GET /v1/catalog`, rendered once: the catalog does not change while serving.
    pub catalog_json: axum::body::Bytes,
    /// The single writer: updates and audit entries, group-committed.
    pub committer: Arc<Committer>,
    /// The consumer use cases.
    pub queries: Arc<Queries>,
    /// The provider use case.
    pub provide: Arc<Provide>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Longest a request may take (body streaming endpoints excepted).
    pub request_timeout: Duration,
    /// How often unanswered grants past their deadline are recorded as
    /// deemed approved.
    pub deadline_sweep: Duration,
    /// Days audit entries are kept before they are removed (`None`: for
    /// ever).
    pub audit_retention_days: Option<u32>,
    /// Days changes stay in the change log before they are removed
    /// (`None`: for ever).
    pub change_retention_days: Option<u32>,
    /// Largest update body.
    pub max_body_bytes: usize,
    /// Places for batch comparisons streaming at once, all departments
    /// together ([`batch::MAX_BATCH_STREAMS`]).
    pub batch_streams: Arc<tokio::sync::Semaphore>,
    /// Cluster mode: the replicated update log (None on a single node).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The connection rules, and what they did (for `/metrics`).
    pub conn_limits: crate::conn::ConnLimits,
    pub connections: Arc<crate::conn::ConnStats>,
    /// The console's staff accounts and sessions.
    pub accounts: Arc<crate::accounts::Accounts>,
}

/// Jobs waiting for the writer before requests are refused with 503.
pub const WRITE_QUEUE: usize = 4096;

/// What the configuration decides about the state.
#[derive(Clone, Debug)]
pub struct Settings {
    pub max_body_bytes: usize,
    pub write_queue: usize,
    /// The writer's longest wait for more writes before a small group.
    pub commit_pause: Duration,
    pub request_timeout: Duration,
    pub job_retention: Duration,
    pub policy: Policy,
    pub claims: basedata_query::claims::ClaimPolicy,
    pub calendar: Calendar,
    pub connections: crate::conn::ConnLimits,
    pub deadline_sweep: Duration,
    pub audit_retention_days: Option<u32>,
    pub change_retention_days: Option<u32>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_body_bytes: 256 << 20,
            write_queue: WRITE_QUEUE,
            commit_pause: basedata_store::commit::GATHER_PAUSE,
            request_timeout: Duration::from_secs(120),
            job_retention: Duration::from_secs(30 * 86_400),
            policy: Policy::default(),
            claims: basedata_query::claims::ClaimPolicy::default(),
            calendar: Calendar::builtin(),
            connections: crate::conn::ConnLimits::default(),
            deadline_sweep: Duration::from_secs(30),
            audit_retention_days: None,
            change_retention_days: None,
        }
    }
}

impl AppState {
    /// The state with default settings but the body limit.
    pub fn new(store: Arc<Store>, departments: Departments, max_body_bytes: usize) -> AppState {
        AppState::build(store, departments, Settings { max_body_bytes, ..Settings::default() })
            .expect("grants load from a store that opened")
    }

    /// The state for `settings`: the one writer thread is started here,
    /// once, and the use cases are set up over it.
    pub fn build(store: Arc<Store>, departments: Departments, settings: Settings) -> basedata_store::Result<AppState> {
        let catalog = store.catalog().clone();
        let catalog_json = serde_json::to_vec(&serde_json::json!({ "datasets": catalog.datasets(), "purposes": catalog.purposes() }))
            .map_err(|e| basedata_store::Error::Config(format!("catalog: {e}")))?;
        let committer = Arc::new(Committer::start_with(store.clone(), settings.write_queue, settings.commit_pause));
        let staff = crate::accounts::staff::StaffBook::from_config(&[], Default::default(), &departments)
            .map_err(|e| basedata_store::Error::Config(format!("staff accounts: {e}")))?;
        let departments = Arc::new(departments);
        let mut queries =
            Queries::new(store.clone(), committer.clone(), settings.policy, settings.calendar, departments.clone())?;
        queries.job_retention = settings.job_retention;
        queries.claim_policy = settings.claims;
        let metrics = crate::metrics::Metrics::new();
        metrics.set_calendar(&queries.calendar);
        let state = AppState(Arc::new(AppStateInner {
            provide: Arc::new(Provide::new(store.clone(), committer.clone(), settings.max_body_bytes)),
            queries: Arc::new(queries),
            committer,
            store,
            catalog,
            departments,
            catalog_json: catalog_json.into(),
            metrics: Arc::new(metrics),
            request_timeout: settings.request_timeout,
            deadline_sweep: settings.deadline_sweep,
            audit_retention_days: settings.audit_retention_days,
            change_retention_days: settings.change_retention_days,
            batch_streams: Arc::new(tokio::sync::Semaphore::new(batch::MAX_BATCH_STREAMS)),
            max_body_bytes: settings.max_body_bytes,
            cluster: None,
            conn_limits: settings.connections,
            connections: Arc::default(),
            accounts: Arc::new(crate::accounts::Accounts::new(staff)),
        }));
        state.watch_staff();
        Ok(state)
    }

    /// Hands the staff accounts the use cases commit (on this node, or on
    /// any node of a cluster through the log) to this state's account book,
    /// ending the sessions of each account's former version.
    pub fn watch_staff(&self) {
        let accounts = self.accounts.clone();
        self.queries.on_staff_change(Arc::new(move |r| {
            if let Err(e) = accounts.staff.put(r) {
                // Checked before it was committed; only a bug, or another
                // node with other departments, gets here.
                tracing::error!(staff = %r.id, error = %e, "a committed staff account was not taken in");
            }
            accounts.sessions.end_for(&r.id);
        }));
    }

    /// This node's name in a cluster; `None` on a single node.
    pub fn node_name(&self) -> Option<String> {
        self.cluster.as_ref().map(|c| c.config().node.clone())
    }

    /// Cluster mode: updates go through `cluster`'s replicated log.
    pub fn with_cluster(mut self, cluster: Arc<crate::cluster::Cluster>) -> AppState {
        let provide = Provide::new(self.store.clone(), self.committer.clone(), self.max_body_bytes).with_log(cluster.clone());
        self.provide = Arc::new(provide);
        self.cluster = Some(cluster);
        self
    }
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Builds the whole API router.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// The API router with `pages` (the console) beside it: they share the
/// request id, access log and panic catcher, not the API's JSON errors.
pub fn router_with(state: AppState, pages: Router<AppState>) -> Router {
    // Read positions exist in cluster mode only, and only for the API's
    // authenticated routes: inside authentication, so that a request that
    // is refused is refused at once, not after waiting for a position. A
    // single node spares every request the layer (a boxed future and a
    // route clone each).
    let positioned = |routes: Router<AppState>| match state.cluster {
        Some(_) => routes.route_layer(middleware::from_fn_with_state(state.clone(), cluster::position)),
        None => routes,
    };
    let subject_reads = Router::new()
        .route("/v1/persons/{id}", get(subjects::lookup_person))
        .route("/v1/entities/{code}", get(subjects::lookup_entity))
        .route("/v1/persons/{id}/verify", post(subjects::verify_person))
        .route("/v1/entities/{code}/verify", post(subjects::verify_entity))
        .route("/v1/changes", get(changes::changes))
        // Both stream bodies of any length in bounded memory.
        .route("/v1/verify/batch", post(batch::verify_batch).layer(axum::extract::DefaultBodyLimit::disable()))
        .route("/v1/jobs", post(batch::submit_job).layer(axum::extract::DefaultBodyLimit::disable()))
        .route("/v1/jobs/{id}", get(batch::job_status))
        .route("/v1/jobs/{id}/result", get(batch::job_result));
    // Authentication and the purpose in one layer: each layer is a boxed
    // future and a route clone on every request, and these are the
    // hottest routes.
    let subject_reads =
        positioned(subject_reads).route_layer(middleware::from_fn_with_state(state.clone(), authenticate_with_purpose));
    let authenticated = Router::new()
        .route("/v1/keys/person/{id}", get(keys::person))
        .route("/v1/keys/entity/{code}", get(keys::entity))
        .route("/v1/catalog", get(ops::catalog))
        .route(
            "/v1/datasets/{dataset}/updates",
            // The handler enforces its own, configurable limit while streaming.
            post(updates::post_updates).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/v1/grants", post(gov::apply).get(gov::list_grants))
        .route("/v1/grants/{id}", get(gov::get_grant))
        .route("/v1/grants/{id}/decision", post(gov::decide))
        .route("/v1/grants/{id}/revoke", post(gov::revoke))
        .route("/v1/disputes", post(gov::file_dispute).get(gov::list_disputes))
        .route("/v1/disputes/{id}/resolution", post(gov::resolve_dispute))
        .route("/v1/departments", get(departments::list))
        .route("/v1/departments/{id}/responsible", axum::routing::put(departments::set_responsible))
        .route("/v1/policy", get(departments::policy).put(departments::switch_policy))
        .route("/v1/reports/sharing", get(reports::sharing))
        .route("/v1/reports/annual", get(annual::annual))
        .route("/v1/reports/freshness", get(reports::freshness))
        .route("/v1/audit", get(audit::list))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/cluster", get(cluster::status));
    let authenticated =
        positioned(authenticated).route_layer(middleware::from_fn_with_state(state.clone(), authenticate)).merge(subject_reads);
    let api = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(openapi_json))
        .merge(authenticated)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(axum::http::StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed here")
        });
    let api = api.layer(middleware::from_fn_with_state(state.clone(), api_edge));
    // Pages answer their own errors as pages, so they are merged beside
    // the API's JSON error layer, not under it (a layer wraps only the
    // routes added before it).
    api.merge(pages.layer(middleware::from_fn_with_state(state.clone(), time_limit)))
        .layer(middleware::from_fn_with_state(state.clone(), access_log))
        .with_state(state)
}

/// Endpoints whose bodies stream for as long as the data lasts; the time
/// limit would cut legitimate large transfers short.
fn streams(req: &Request) -> bool {
    let p = req.uri().path();
    p == "/v1/verify/batch"
        || (p == "/v1/jobs" && req.method() == axum::http::Method::POST)
        || (p.starts_with("/v1/datasets/") && p.ends_with("/updates"))
}

/// Answers `503 unavailable` for a request that takes longer than the
/// configured limit, instead of holding the connection indefinitely.
async fn time_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if streams(&req) {
        return next.run(req).await;
    }
    // A change's job may be queued or being written when its answer is
    // given up: it is made all the same (see `Committer::commit_then`),
    // and its caller is told so.
    let changes =
        !matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD) && !edge::is_subject_read(&req);
    within_time_limit(&state, changes, next.run(req)).await
}

/// The answer, or `503 unavailable` once the request has taken longer
/// than the configured limit.
///
/// This and [`caught`] wrap a whole request's future, so they are plain
/// functions over future combinators, not `async fn`s: an `async fn`
/// keeps a future it is handed as an argument and, once it awaits it,
/// again in the await's own slot. Nested three deep around a verification
/// (3.5 KB) that made the future each request allocates and moves 15.6 KB.
fn within_time_limit<F: std::future::Future<Output = Response>>(
    state: &AppState,
    changes: bool,
    answer: F,
) -> impl std::future::Future<Output = Response> {
    tokio::time::timeout(state.request_timeout, answer).map(move |r| {
        r.unwrap_or_else(|_| {
            let message = if changes {
                "the request took too long and its answer was abandoned; a change it asked for may still be made: look it up before sending it again"
            } else {
                "the request took too long and was abandoned"
            };
            ApiError::unavailable(message).into_response()
        })
    })
}

/// The API's outer layer, in one boxed future: the time limit, and the
/// API's JSON errors for whatever answered in plain text.
async fn api_edge(State(state): State<AppState>, req: Request, next: Next) -> Response {
    json_errors(time_limit(State(state), req, next).await).await
}

async fn openapi_json() -> impl IntoResponse {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(openapi::document).clone();
    ([(axum::http::header::CONTENT_TYPE, "application/json")], doc)
}

/// Turns the plain-text rejections of axum's extractors (a malformed query
/// string, a body over the extractor limit, bad percent-encoding in a
/// path) into the API's JSON error format with a stable code, so that no
/// client ever has to parse two error formats.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&text).trim().to_owned();
    let code = match status.as_u16() {
        // A body that could not be read (a broken chunked encoding, a
        // client that stalled past the body's time limit) or is no JSON.
        400 if message.starts_with("Failed to buffer the request body") || message.starts_with("Failed to parse the request body") => {
            "invalid_body"
        }
        400 => "invalid_value",
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "payload_too_large",
        415 | 422 => "invalid_body",
        429 => "overloaded",
        s if s >= 500 => "unavailable",
        _ => "invalid_body",
    };
    let message = if message.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { message };
    let mut out = ApiError::new(status, code, message).into_response();
    for (k, v) in parts.headers.iter().filter(|(k, _)| *k != axum::http::header::CONTENT_TYPE && *k != axum::http::header::CONTENT_LENGTH) {
        out.headers_mut().insert(k.clone(), v.clone());
    }
    out
}

/// A subject key from the path (`{id}`, `{code}`). A segment that is not
/// UTF-8 once percent-decoded is no key of any kind: it comes through as
/// written, percent signs and all, so that the key check refuses it as it
/// refuses any malformed key (`invalid_key`, or `valid: false` from
/// `/v1/keys`), not as the path extractor's generic `invalid_value`.
pub struct KeyPath(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for KeyPath {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(key)) => Ok(KeyPath(key)),
            Err(PathRejection::FailedToDeserializePathParams(e)) if matches!(e.kind(), ErrorKind::InvalidUtf8InPathParam { .. }) => {
                raw_param(parts).map(KeyPath).ok_or_else(|| e.into_response())
            }
            Err(r) => Err(r.into_response()),
        }
    }
}

/// The path's one parameter as the request wrote it (not decoded): the
/// segment where the matched route has its `{…}`.
fn raw_param(parts: &axum::http::request::Parts) -> Option<String> {
    let route = parts.extensions.get::<MatchedPath>()?.as_str();
    let at = route.split('/').position(|s| s.starts_with('{'))?;
    parts.uri.path().split('/').nth(at).map(str::to_owned)
}

/// Department id recorded on the response for the access log.
#[derive(Clone)]
struct LoggedDepartment(String);

/// Gives every request an id (echoing a sane incoming `X-Request-Id`) and
/// writes one log line per request. Only the route template is logged,
/// never the concrete path, which holds ID numbers.
async fn access_log(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(req.headers());
    let method = method_label(req.method());
    // A clone of the matched path shares its string: nothing is allocated.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let resp = caught(next.run(req)).await;
    answered(&state, started, id, method, route, resp)
}

/// The request's id: a sane incoming `X-Request-Id` (at most 64 letters,
/// digits and dashes), else a fresh one.
fn request_id(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'))
        .map(str::to_owned)
        // Sixteen hex digits, without `format!`, which costs several
        // times more on a path every request takes.
        .unwrap_or_else(|| hex::encode(fastrand::u64(..).to_be_bytes()))
}

/// Runs a request to its answer; a panic is answered 500 and logged like
/// any other answer. (Not a layer of its own: a layer costs a route clone
/// and a boxed future on every request.)
fn caught<F: std::future::Future<Output = Response>>(answer: F) -> impl std::future::Future<Output = Response> {
    std::panic::AssertUnwindSafe(answer)
        .catch_unwind()
        .map(|r| r.unwrap_or_else(|_| ApiError::internal("handler panicked").into_response()))
}

/// Counts and logs an answer, and names its request id on it.
fn answered(state: &AppState, started: Instant, id: String, method: &'static str, route: &str, mut resp: Response) -> Response {
    // Taken out, not cloned: nothing after this reads it.
    let dept = resp.extensions_mut().remove::<LoggedDepartment>().map(|d| d.0).unwrap_or_default();
    let elapsed = started.elapsed();
    state.metrics.observe(route, method, resp.status(), &dept, elapsed.as_secs_f64());
    crate::logging::access(&crate::logging::AccessLine {
        request_id: &id,
        method,
        route,
        status: resp.status().as_u16(),
        department: &dept,
        micros: elapsed.as_micros() as u64,
    });
    // The id's own bytes become the header's: no copy.
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(id)) {
        resp.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    resp
}

/// The request method as a metrics label and log field: the methods HTTP
/// defines, anything else `other`. Used verbatim, a client's made-up
/// methods would each add a metrics series and fill the log.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Longest accepted `X-Operator` (a staff id), in characters.
pub const MAX_OPERATOR_CHARS: usize = 64;

/// The body length a request declares (`Content-Length`), if it does.
/// A body declared over a limit is refused before it is read: reading is
/// what sends `100 Continue`, and a client that waits for it then never
/// uploads what would only be thrown away.
pub fn declared_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
}

/// Largest body of the endpoints that read theirs whole (a verification,
/// a grant, a dispute: JSON documents of a few hundred bytes). It is
/// axum's default body limit, which their extractors apply as they read;
/// [`refused_body`] applies it before.
pub const DOCUMENT_BODY_LIMIT: usize = 2 << 20;

/// Refuses a request body at sight of its headers, before any of it is
/// read: one declared longer than `limit` (`413 payload_too_large`; see
/// [`declared_length`]), or one in a content coding (`Content-Encoding`
/// other than `identity`, `400 invalid_body`): the server decodes none,
/// and read as it is a compressed body would be refused line by line,
/// or a mislabelled one applied.
pub fn check_body(headers: &axum::http::HeaderMap, limit: Option<usize>) -> ApiResult<()> {
    if let Some(limit) = limit {
        if declared_length(headers).is_some_and(|n| n > limit as u64) {
            return Err(ApiError::payload_too_large(limit));
        }
    }
    let codings: Vec<String> = headers
        .get_all(axum::http::header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| String::from_utf8_lossy(v.as_bytes()).split(',').map(|c| c.trim().to_owned()).collect::<Vec<_>>())
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
        .collect();
    if !codings.is_empty() {
        // As sent, cut short: the message is no place for a long header.
        let named: String = codings.join(", ").chars().take(64).collect();
        return Err(ApiError::invalid_body(format!(
            "the request body is sent with Content-Encoding {named}, which the server does not decode; send it uncompressed"
        ))
        .with_details(serde_json::json!({"content_encoding": named})));
    }
    Ok(())
}

/// [`check_body`] for a request of the API: its refusal, if any. A
/// `GET` or `HEAD` reads no body; a body that streams is bounded by its
/// handler, not by [`DOCUMENT_BODY_LIMIT`]; a submission's body is judged
/// by its handler, after the provider check (whose refusal is audited
/// whatever the body).
fn refused_body(req: &Request) -> Option<Response> {
    use axum::http::Method;
    let p = req.uri().path();
    if matches!(*req.method(), Method::GET | Method::HEAD) || (p.starts_with("/v1/datasets/") && p.ends_with("/updates")) {
        return None;
    }
    let limit = (!streams(req)).then_some(DOCUMENT_BODY_LIMIT);
    check_body(req.headers(), limit).err().map(IntoResponse::into_response)
}

/// A free-text header (`X-Purpose`, `X-Operator`): percent-encoded or raw
/// UTF-8, trimmed; absent or blank is `None`. What would be stored in the
/// audit log must be stored as sent, so a value is refused rather than
/// altered: repeated, not UTF-8, holding control characters (a NUL or a
/// line break would forge or hide audit text), or longer than `max_chars`.
pub fn header_text(headers: &axum::http::HeaderMap, name: &'static str, max_chars: usize) -> ApiResult<Option<String>> {
    let mut values = headers.get_all(name).iter();
    let Some(raw) = values.next() else { return Ok(None) };
    let refuse = |why: String| ApiError::invalid_value(why).with_details(serde_json::json!({"header": name}));
    if values.next().is_some() {
        return Err(refuse(format!("{name} is given more than once; send it once")));
    }
    let decoded = percent_encoding::percent_decode(raw.as_bytes())
        .decode_utf8()
        .map_err(|_| refuse(format!("{name} is not UTF-8 (send UTF-8, percent-encoded or raw)")))?;
    if !decoded.chars().all(basedata_store::audit::fits_audit_text) {
        return Err(refuse(format!("{name} holds control or formatting characters")));
    }
    let t = decoded.trim();
    if t.chars().count() > max_chars {
        return Err(refuse(format!("{name} is limited to {max_chars} characters")));
    }
    Ok((!t.is_empty()).then(|| t.to_owned()))
}

/// The bearer token of a request, if it sent one. The scheme name is
/// case-insensitive (RFC 7235); two `Authorization` headers are refused
/// rather than one of them silently chosen.
fn bearer_token(headers: &axum::http::HeaderMap) -> Result<Option<&str>, &'static str> {
    let mut values = headers.get_all(axum::http::header::AUTHORIZATION).iter();
    let Some(v) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err("more than one Authorization header");
    }
    let v = v.to_str().map_err(|_| "the Authorization header is not ASCII")?;
    let (scheme, token) = v.trim_start().split_once(' ').unwrap_or((v, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("the Authorization scheme must be Bearer");
    }
    Ok(Some(token.trim()).filter(|t| !t.is_empty()))
}

async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    authenticated(&state, req, next, false).await
}

/// [`authenticate`], then the purpose ([`stated_purpose`]), as one layer:
/// the subject reads'.
async fn authenticate_with_purpose(State(state): State<AppState>, req: Request, next: Next) -> Response {
    authenticated(&state, req, next, true).await
}

/// Admits the request ([`admit`]), checks its purpose if `purpose`, and
/// runs the rest; the answer names the department for the access log.
async fn authenticated(state: &AppState, mut req: Request, next: Next, purpose: bool) -> Response {
    let peer = req.extensions().get::<axum::extract::ConnectInfo<crate::tls::TlsPeer>>().and_then(|c| c.0.subject.as_deref());
    let admitted = match admit(state, req.headers(), peer) {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let Admitted { permit, department, caller } = admitted;
    let resp = 'answer: {
        let caller = if purpose {
            match stated_purpose(state, req.headers(), &caller).await {
                Ok((caller, purpose)) => {
                    req.extensions_mut().insert(purpose);
                    caller
                }
                Err(resp) => break 'answer resp,
            }
        } else {
            caller
        };
        if let Some(refusal) = refused_body(&req) {
            break 'answer refusal;
        }
        req.extensions_mut().insert(caller);
        next.run(req).await
    };
    logged(department, held_while_sent(resp, permit))
}

/// The concurrency cap counts a request until its answer is produced; a
/// streamed answer (a batch comparison, a job's download), whose work goes
/// on while its body is sent, until that body is done with.
fn held_while_sent(resp: Response, permit: Option<tokio::sync::OwnedSemaphorePermit>) -> Response {
    use axum::body::HttpBody;
    match permit {
        Some(p) if resp.body().size_hint().exact().is_none() => resp.map(|body| crate::conn::Holding::body(body, p)),
        _ => resp,
    }
}

/// An answer that names the department, for the access log.
fn logged(department: String, mut resp: Response) -> Response {
    resp.extensions_mut().insert(LoggedDepartment(department));
    resp
}

/// A request's department, admitted within its limits.
struct Admitted {
    /// Held until the answer is produced, or a streamed answer sent: the
    /// concurrency cap counts requests in progress.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    department: String,
    caller: crate::auth::Caller,
}

/// Identifies the department of a request (its bearer token, and `peer`,
/// the verified client certificate's subject over mutual TLS) and admits
/// it within its limits. `Err` is the refusal to send.
fn admit(state: &AppState, headers: &axum::http::HeaderMap, peer: Option<&crate::tls::CertSubject>) -> Result<Admitted, Response> {
    let token = match bearer_token(headers) {
        Ok(t) => t,
        Err(why) => return Err(ApiError::unauthenticated(why).into_response()),
    };
    let department = match state.departments.identify(token, peer) {
        Ok(d) => d,
        Err(why) => return Err(ApiError::unauthenticated(why).into_response()),
    };
    let dept_id = department.id.clone();
    // Judged once the caller is known: a request without a valid token is
    // `unauthenticated` whatever else is wrong with it.
    let operator = match header_text(headers, "X-Operator", MAX_OPERATOR_CHARS) {
        Ok(o) => o,
        Err(e) => return Err(logged(dept_id, e.into_response())),
    };
    let permit = match department.limits.admit() {
        Ok(p) => p,
        Err(r) => {
            state.metrics.refused(&dept_id, r.reason);
            let resp = ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "overloaded",
                format!("{} of department {dept_id} exceeded; retry later", r.reason),
            )
            .with_retry_after(r.retry_after_secs)
            .into_response();
            return Err(logged(dept_id, resp));
        }
    };
    Ok(Admitted { permit, department: dept_id, caller: department.caller(operator) })
}

/// Longest accepted purpose statement, in characters.
pub const MAX_PURPOSE_CHARS: usize = 500;

/// The purpose rule: subject-data reads must say what they are for, and a
/// department with a purpose list may state only its purposes (a refusal
/// is audited). `Ok` is the caller admitted with the purpose code, and the
/// purpose as stated; `Err` is the refusal.
async fn stated_purpose(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    caller: &crate::auth::Caller,
) -> Result<(crate::auth::Caller, Purpose), Response> {
    let p = match header_text(headers, "X-Purpose", MAX_PURPOSE_CHARS) {
        Err(e) => return Err(e.into_response()),
        Ok(None) => return Err(ApiError::purpose_required().into_response()),
        Ok(Some(p)) => p,
    };
    match state.queries.admit_purpose(caller, &p).await {
        Ok(admitted) => Ok((admitted, Purpose(p))),
        Err(e) => Err(ApiError::from(e).into_response()),
    }
}

#[cfg(test)]
mod annual_tests;
#[cfg(test)]
mod tests;
