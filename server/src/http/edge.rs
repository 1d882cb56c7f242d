//! What a connection hands each request to: the router, or — for a
//! counter's lookups and verifications of one subject and a provider's
//! submissions, the hottest requests there are — the same steps called
//! directly.
//!
//! The router spends on every request what these reads do not need: a
//! route lookup with its path parameters and matched path, a boxed future
//! and a service clone for each of its three layers, the request's caller
//! and purpose put into its extensions and cloned back out by the
//! extractors. [`Edge`] takes the four subject-read routes past all that
//! and runs the very functions the layers run, in the layers' order:
//! request id, panic catcher, JSON errors, time limit, admission, purpose,
//! body check, handler (with the router's own query and body extractors), metrics and
//! access log. So the answer, its headers, its audit entry, its metrics
//! and its log line are the router's (its tests hold the two side by
//! side). Anything the fast route does not take exactly as the router
//! would — another method, a path of another shape, a percent-encoded
//! key, cluster mode with its read positions — goes to the router.
//!
//! A submission (`POST /v1/datasets/{dataset}/updates`) goes the same way
//! through its own layers: request id, panic catcher, JSON errors (no
//! time limit: a submission streams), admission, handler, metrics and
//! access log.

use super::{answered, caught, json_errors, request_id, subjects, updates, within_time_limit, AppState, Purpose};
use crate::auth::Caller;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use basedata_store::Subject;
use futures_util::future::Either;
use std::future::Future;
use std::time::Instant;

/// The router, and the state for the subject reads served beside
/// it (`None`: every request goes to the router).
#[derive(Clone)]
pub struct Edge {
    router: Router,
    fast: Option<AppState>,
}

impl Edge {
    /// `router` built over `state`, with the subject reads served beside
    /// it on a single node. In cluster mode the authenticated answers
    /// carry the node's read position, a layer of the router's: all
    /// requests go through it.
    pub fn new(router: Router, state: &AppState) -> Edge {
        Edge { router, fast: state.cluster.is_none().then(|| state.clone()) }
    }

    /// The answer to `req`, from a connection whose peer is `peer`.
    pub fn call(&self, mut req: Request, peer: &crate::tls::TlsPeer) -> impl Future<Output = Response> + Send + 'static {
        if let Some(state) = &self.fast {
            // Boxed: hyper moves the future it is handed into its own
            // slot, and these, a whole request's state machine, are large
            // enough for the copy to show.
            if let Some((read, subject, key)) = subject_read(&req) {
                let key = key.to_owned();
                let fut: BoxedAnswer = Box::pin(serve(state.clone(), req, peer.subject.clone(), read, subject, key));
                return Either::Left(fut);
            }
            if let Some(dataset) = submission_of(req.method(), req.uri().path()) {
                let dataset = dataset.to_owned();
                let fut: BoxedAnswer = Box::pin(serve_submission(state.clone(), req, peer.subject.clone(), dataset));
                return Either::Left(fut);
            }
        }
        req.extensions_mut().insert(axum::extract::ConnectInfo(peer.clone()));
        let answer = tower::ServiceExt::oneshot(self.router.clone(), req);
        Either::Right(futures_util::FutureExt::map(answer, |r| match r {
            Ok(resp) => resp,
            Err(never) => match never {},
        }))
    }
}

/// An answer's future, as hyper is handed it.
type BoxedAnswer = std::pin::Pin<Box<dyn Future<Output = Response> + Send + 'static>>;

/// The subject reads served here.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Read {
    /// `GET /v1/persons/{id}`, `GET /v1/entities/{code}`
    Lookup,
    /// `POST /v1/persons/{id}/verify`, `POST /v1/entities/{code}/verify`
    Verify,
}

impl Read {
    /// The method, as the metrics and the log name it.
    fn method(self) -> &'static str {
        match self {
            Read::Lookup => "GET",
            Read::Verify => "POST",
        }
    }

    /// The route template, as the router names it in metrics and the log.
    fn route(self, subject: Subject) -> &'static str {
        match (self, subject) {
            (Read::Lookup, Subject::Person) => "/v1/persons/{id}",
            (Read::Lookup, Subject::Entity) => "/v1/entities/{code}",
            (Read::Verify, Subject::Person) => "/v1/persons/{id}/verify",
            (Read::Verify, Subject::Entity) => "/v1/entities/{code}/verify",
        }
    }
}

/// The read, subject and key in the path of a request that the fast route
/// serves as the router would: `GET` of a subject or `POST` of its
/// verification (`HEAD` and the rest are the router's), with a key of one
/// non-empty segment and no percent-encoding (which the router's path
/// extractor would decode).
fn subject_read(req: &Request) -> Option<(Read, Subject, &str)> {
    subject_read_of(req.method(), req.uri().path())
}

/// Whether `req` is one of the four subject reads (which change nothing
/// but their audit trail).
pub(super) fn is_subject_read(req: &Request) -> bool {
    subject_read(req).is_some()
}

fn subject_read_of<'p>(method: &axum::http::Method, path: &'p str) -> Option<(Read, Subject, &'p str)> {
    let read = match *method {
        axum::http::Method::GET => Read::Lookup,
        axum::http::Method::POST => Read::Verify,
        _ => return None,
    };
    let (subject, rest) = match path.strip_prefix("/v1/persons/") {
        Some(rest) => (Subject::Person, rest),
        None => (Subject::Entity, path.strip_prefix("/v1/entities/")?),
    };
    let key = match read {
        Read::Lookup => rest,
        Read::Verify => rest.strip_suffix("/verify")?,
    };
    (!key.is_empty() && !key.contains(['/', '%'])).then_some((read, subject, key))
}

/// The dataset of a provider's submission that the fast route serves as
/// the router would: `POST /v1/datasets/{dataset}/updates`, the dataset one
/// non-empty segment without percent-encoding.
fn submission_of<'p>(method: &axum::http::Method, path: &'p str) -> Option<&'p str> {
    if method != axum::http::Method::POST {
        return None;
    }
    let dataset = path.strip_prefix("/v1/datasets/")?.strip_suffix("/updates")?;
    (!dataset.is_empty() && !dataset.contains(['/', '%'])).then_some(dataset)
}

/// A submission, through the steps the router's layers take.
async fn serve_submission(
    state: AppState,
    req: Request,
    peer: Option<std::sync::Arc<crate::tls::CertSubject>>,
    dataset: String,
) -> Response {
    // access_log
    let started = Instant::now();
    let id = request_id(req.headers());
    // api_edge: JSON errors, and no time limit for a body that streams
    let resp = caught(async { json_errors(provided(&state, req, peer.as_deref(), dataset).await).await }).await;
    answered(&state, started, id, "POST", "/v1/datasets/{dataset}/updates", resp)
}

/// authenticate, then the handler.
async fn provided(state: &AppState, req: Request, peer: Option<&crate::tls::CertSubject>, dataset: String) -> Response {
    let super::Admitted { permit, department, caller } = match super::admit(state, req.headers(), peer) {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let (parts, body) = req.into_parts();
    let resp = updates::post_updates(State(state.clone()), Extension(caller), Path(dataset), parts.headers, body).await.into_response();
    super::logged(department, super::held_while_sent(resp, permit))
}

/// A subject read, through the steps the router's layers take.
async fn serve(
    state: AppState,
    req: Request,
    peer: Option<std::sync::Arc<crate::tls::CertSubject>>,
    read: Read,
    subject: Subject,
    key: String,
) -> Response {
    // access_log
    let started = Instant::now();
    let id = request_id(req.headers());
    let route = read.route(subject);
    let resp = caught(async {
        // api_edge: the time limit inside the JSON errors
        json_errors(within_time_limit(&state, false, admitted(&state, req, peer.as_deref(), read, subject, key)).await).await
    })
    .await;
    answered(&state, started, id, read.method(), route, resp)
}

/// authenticate_with_purpose, then the handler.
async fn admitted(
    state: &AppState,
    req: Request,
    peer: Option<&crate::tls::CertSubject>,
    read: Read,
    subject: Subject,
    key: String,
) -> Response {
    let super::Admitted { permit, department, caller } = match super::admit(state, req.headers(), peer) {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let resp = match super::stated_purpose(state, req.headers(), &caller).await {
        Ok((caller, purpose)) => match super::refused_body(&req) {
            Some(refusal) => refusal,
            None => handler(state, caller, purpose, read, subject, key, req).await,
        },
        Err(resp) => resp,
    };
    drop(permit);
    super::logged(department, resp)
}

/// The handler, with its extractors' work done here by the router's own
/// extractors (query string, then body), so that their refusals and the
/// body's limit are the router's.
async fn handler(state: &AppState, caller: Caller, purpose: Purpose, read: Read, subject: Subject, key: String, req: Request) -> Response {
    let (state, caller, purpose) = (State(state.clone()), Extension(caller), Extension(purpose));
    match read {
        Read::Lookup => match Query::try_from_uri(req.uri()) {
            Ok(q) => subjects::lookup_subject(state, caller, purpose, subject, key, q).await.into_response(),
            Err(rejection) => rejection.into_response(),
        },
        Read::Verify => {
            let q = match Query::try_from_uri(req.uri()) {
                Ok(q) => q,
                Err(rejection) => return rejection.into_response(),
            };
            match axum::body::Bytes::from_request(req, &state.0).await {
                Ok(body) => subjects::verify_subject(state, caller, purpose, subject, key, q, body).await.into_response(),
                Err(rejection) => rejection.into_response(),
            }
        }
    }
}

impl crate::conn::Serve for Edge {
    fn call(&self, req: Request, peer: &crate::tls::TlsPeer) -> impl Future<Output = Response> + Send + 'static + use<> {
        Edge::call(self, req, peer)
    }

    fn takes(&self, method: &axum::http::Method, path: &str) -> bool {
        self.fast.is_some() && (subject_read_of(method, path).is_some() || submission_of(method, path).is_some())
    }
}

#[cfg(test)]
mod tests;
