//! The API across a cluster: `GET /calls` lists every node's calls, and a hang-up, DTMF or
//! transfer named by record id reaches the node that handles the call (forwarded over HTTP
//! with the API token, its answer returned as is). See [`crate::cluster`].

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState, CallRef, parse_call_ref};
use crate::call::CallInfo;
use crate::cluster::FORWARDED_HEADER;
use crate::sip::CallHandle;

/// Where a control request for a call goes.
pub(super) enum Control {
    /// A call of this node.
    Local(CallHandle),
    /// A call another node handles: the answer to return (the owner's, or 502).
    Forwarded(Response),
}

/// This node's calls (with its node id in a cluster), then the other nodes' calls in
/// progress from the shared store. A store that cannot be read leaves the others out,
/// logged: the node's own calls are still listed.
pub(super) async fn list(state: &ApiState) -> Vec<CallInfo> {
    let mut calls = state.handle.calls.active();
    let Some(c) = &state.cluster else {
        return calls;
    };
    for call in &mut calls {
        call.node = Some(c.node.id().to_string());
    }
    match c.node.calls_elsewhere().await {
        Ok(records) => calls.extend(records.iter().map(CallInfo::from_record)),
        Err(e) => tracing::warn!(error = %e, "GET /calls: the other nodes' calls are not readable"),
    }
    calls
}

/// Resolves the `{id}` of `POST /calls/{id}/…`: a handle number is this node's call; a
/// record id is this node's call if it has it, else (in a cluster, for a request not
/// already forwarded) forwarded to the node that has it, with `body`, to `/calls/{id}/{verb}`.
pub(super) async fn control(
    state: &ApiState,
    headers: &HeaderMap,
    id: &str,
    verb: &str,
    body: serde_json::Value,
) -> Result<Control, ApiError> {
    let record_id = match parse_call_ref(id)? {
        CallRef::Live(n) => return Ok(Control::Local(CallHandle(n))),
        CallRef::Record(r) => r,
    };
    if let Some(info) = state
        .handle
        .calls
        .active()
        .into_iter()
        .find(|c| c.record_id == record_id)
    {
        return Ok(Control::Local(CallHandle(info.id)));
    }
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("no call {id}"));
    let Some(c) = &state.cluster else {
        return Err(not_found());
    };
    if headers.contains_key(FORWARDED_HEADER) {
        return Err(not_found());
    }
    let (node, url) = c
        .node
        .owner(&record_id)
        .await
        .map_err(|e| ApiError::internal(format!("call owner lookup failed: {e}")))?
        .ok_or_else(not_found)?;
    let path = format!("calls/{record_id}/{verb}");
    match c.forward.post(&node, &url, &path, &body).await {
        Ok(answer) => {
            let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
            tracing::info!(node = %node, record_id = %record_id, verb, status = answer.status, "control request forwarded to the call's node");
            Ok(Control::Forwarded(
                (status, Json(answer.body)).into_response(),
            ))
        }
        Err(e) => Err(ApiError::new(StatusCode::BAD_GATEWAY, e.to_string())),
    }
}

/// The transcript of a call another node handled, from that node (the file is on its
/// disk): `None` when this is a single node, the call was this node's, the other node is
/// gone, or it could not give the transcript (logged).
pub(super) async fn transcript_elsewhere(
    state: &ApiState,
    headers: &HeaderMap,
    record: &crate::records::CallRecord,
) -> Option<Vec<crate::records::TranscriptEntry>> {
    let c = state.cluster.as_ref()?;
    if headers.contains_key(FORWARDED_HEADER) {
        return None;
    }
    let node = record.node.as_deref()?;
    let url = match c.node.peer_url(node).await {
        Ok(Some(u)) => u,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(node, error = %e, "transcript: the node's address is not readable");
            return None;
        }
    };
    match c
        .forward
        .get(node, &url, &format!("calls/{}", record.id))
        .await
    {
        Ok(answer) if answer.status == 200 => {
            let entries = serde_json::from_value(answer.body.get("transcript")?.clone()).ok();
            tracing::debug!(node, record = %record.id, "transcript fetched from the call's node");
            entries
        }
        Ok(answer) => {
            tracing::warn!(
                node,
                status = answer.status,
                "transcript: the call's node did not give it"
            );
            None
        }
        Err(e) => {
            tracing::warn!(node, error = %e, "transcript: the call's node did not answer");
            None
        }
    }
}
