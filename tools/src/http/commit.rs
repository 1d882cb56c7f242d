//! Bridge from async handlers to the group committer: submit a job, wait
//! for its group to be durable, map refusals to `503 overloaded`.

use super::{ApiError, ApiResult, AppState};
use crate::auth::{Caller, Purpose};
use basedata_store::commit::{JobDone, SubmitError};
use basedata_store::{Action, AuditEvent, SubjectKey, Update, WriteBatch};

/// Submits updates and audit events and waits until they are durable.
pub async fn commit(state: &AppState, updates: Vec<Update>, events: Vec<AuditEvent>) -> ApiResult<JobDone> {
    commit_with(state, updates, events, WriteBatch::new()).await
}

/// [`commit`] with extra writes (governance state, job progress) in the
/// same atomic batch.
pub async fn commit_with(
    state: &AppState,
    updates: Vec<Update>,
    events: Vec<AuditEvent>,
    extra: WriteBatch,
) -> ApiResult<JobDone> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let had_updates = !updates.is_empty();
    state
        .committer
        .submit_with(updates, events, extra, Box::new(move |r| {
            let _ = tx.send(r);
        }))
        .map_err(|e| match e {
            SubmitError::Overloaded => ApiError::overloaded(),
            SubmitError::Closed => ApiError::unavailable("the server is shutting down"),
        })?;
    match rx.await {
        Ok(Ok(done)) => {
            if had_updates {
                // Wakes change-feed long polls.
                super::raise_to(&state.seq_tx, done.last_seq);
            }
            Ok(done)
        }
        Ok(Err(e)) => Err(ApiError::internal(e)),
        Err(_) => Err(ApiError::unavailable("the writer stopped")),
    }
}

/// An audit event for `caller` with the request's purpose.
pub fn event(caller: &Caller, purpose: Option<&Purpose>, action: Action, key: Option<SubjectKey>) -> AuditEvent {
    AuditEvent {
        department: caller.department.id.clone(),
        operator: caller.operator.clone(),
        purpose: purpose.map(|p| p.0.clone()).unwrap_or_default(),
        action,
        key,
        datasets: Vec::new(),
        fields: Vec::new(),
        outcome: String::new(),
        key_mapped: false,
    }
}

/// Records a refused request durably, then returns the refusal.
pub async fn deny(state: &AppState, mut ev: AuditEvent, err: ApiError) -> ApiError {
    ev.action = Action::Denied;
    ev.outcome = err.code.to_owned();
    match commit(state, Vec::new(), vec![ev]).await {
        Ok(_) => err,
        Err(e) => e,
    }
}
