//! What a connection hands each request to: the router, or — for a
//! counter's point verification, the hottest request there is — the same
//! steps called directly.
//!
//! The router spends on every request what a verification does not need:
//! a route lookup with its path parameters and matched path, a boxed
//! future and a service clone for each of its three layers, the request's
//! caller and purpose put into its extensions and cloned back out by the
//! extractors. [`Edge`] takes the two verification routes past all that
//! and runs the very functions the layers run, in the layers' order:
//! request id, panic catcher, JSON errors, time limit, admission, purpose,
//! handler, metrics and access log. So the answer, its headers, its audit
//! entry, its metrics and its log line are the router's (its tests hold
//! the two side by side). Anything the fast route does
//! not take exactly as the router would — another method, a query string,
//! a percent-encoded key, cluster mode with its read positions — goes to
//! the router.

use super::{answered, caught, json_errors, request_id, subjects, AppState, Purpose};
use axum::extract::{FromRequest, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use basedata_store::Subject;
use futures_util::future::Either;
use std::future::Future;
use std::time::Instant;

/// The router, and the state for the verification routes served beside
/// it (`None`: every request goes to the router).
#[derive(Clone)]
pub struct Edge {
    router: Router,
    fast: Option<AppState>,
}

impl Edge {
    /// `router` built over `state`, with the verification routes served
    /// beside it on a single node. In cluster mode every answer carries
    /// the node's read position, a layer of the router's: all requests go
    /// through it.
    pub fn new(router: Router, state: &AppState) -> Edge {
        Edge { router, fast: state.cluster.is_none().then(|| state.clone()) }
    }

    /// The answer to `req`, from a connection whose peer is `peer`.
    pub fn call(&self, mut req: Request, peer: &crate::tls::TlsPeer) -> impl Future<Output = Response> + Send + 'static {
        if let Some(state) = &self.fast {
            if let Some((subject, key)) = verification(&req) {
                let key = key.to_owned();
                // Boxed: hyper moves the future it is handed into its
                // own slot, and this one, the whole verification's state
                // machine, is large enough for the copy to show.
                return Either::Left(Box::pin(verify(state.clone(), req, peer.subject.clone(), subject, key)));
            }
        }
        req.extensions_mut().insert(axum::extract::ConnectInfo(peer.clone()));
        let answer = tower::ServiceExt::oneshot(self.router.clone(), req);
        Either::Right(async move {
            match answer.await {
                Ok(resp) => resp,
                Err(never) => match never {},
            }
        })
    }
}

/// The route templates, as the router names them in metrics and the log.
const PERSON_ROUTE: &str = "/v1/persons/{id}/verify";
const ENTITY_ROUTE: &str = "/v1/entities/{code}/verify";

/// The subject and the key in the path of a verification that the fast
/// route serves as the router would: `POST`, no query string (`id_type`
/// is left to the router's extractor) and a key of one segment with no
/// percent-encoding (which the router's path extractor would decode).
fn verification(req: &Request) -> Option<(Subject, &str)> {
    if req.method() != axum::http::Method::POST || req.uri().query().is_some() {
        return None;
    }
    let path = req.uri().path();
    let (subject, rest) = match path.strip_prefix("/v1/persons/") {
        Some(rest) => (Subject::Person, rest),
        None => (Subject::Entity, path.strip_prefix("/v1/entities/")?),
    };
    let key = rest.strip_suffix("/verify")?;
    (!key.is_empty() && !key.contains(['/', '%'])).then_some((subject, key))
}

/// A verification, through the steps the router's layers take.
async fn verify(
    state: AppState,
    req: Request,
    peer: Option<std::sync::Arc<crate::tls::CertSubject>>,
    subject: Subject,
    key: String,
) -> Response {
    // access_log
    let started = Instant::now();
    let id = request_id(req.headers());
    let route = if subject == Subject::Person { PERSON_ROUTE } else { ENTITY_ROUTE };
    let resp = caught(async {
        // api_edge: the time limit inside the JSON errors
        let limited = tokio::time::timeout(state.request_timeout, admitted(&state, req, peer.as_deref(), subject, key));
        let resp = match limited.await {
            Ok(resp) => resp,
            Err(_) => super::ApiError::unavailable("the request took too long and was abandoned").into_response(),
        };
        json_errors(resp).await
    })
    .await;
    answered(&state, started, &id, "POST", route, resp)
}

/// authenticate_with_purpose, then the handler.
async fn admitted(
    state: &AppState,
    req: Request,
    peer: Option<&crate::tls::CertSubject>,
    subject: Subject,
    key: String,
) -> Response {
    let super::Admitted { permit, department, caller } = match super::admit(state, req.headers(), peer) {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let resp = match super::stated_purpose(state, req.headers(), &caller).await {
        Ok((caller, purpose)) => handler(state, caller, purpose, subject, key, req).await,
        Err(resp) => resp,
    };
    drop(permit);
    super::logged(department, resp)
}

/// The verification handler with its extractors' work done here: the
/// body is read by the router's own extractor, so its limit and its
/// refusals are the router's.
async fn handler(state: &AppState, caller: crate::auth::Caller, purpose: Purpose, subject: Subject, key: String, req: Request) -> Response {
    let body = match axum::body::Bytes::from_request(req, state).await {
        Ok(b) => b,
        Err(rejection) => return rejection.into_response(),
    };
    let no_query = Query(subjects::IdTypeParam { id_type: None });
    subjects::verify_subject(State(state.clone()), Extension(caller), Extension(purpose), subject, key, no_query, body)
        .await
        .into_response()
}

#[cfg(test)]
mod tests;
