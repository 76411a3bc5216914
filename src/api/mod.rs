//! HTTP API (axum): health, calls, outbound calls, hang-up.
//!
//! Every error is JSON: `{"error": "..."}` with a fitting status code. When a bearer token is
//! configured, every route but `/health` requires `Authorization: Bearer <token>`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::call::{AgentSpec, CallInfo};
use crate::call::{CallService, DialRequest};
use crate::sip::CallHandle;

/// API state.
#[derive(Clone)]
pub struct ApiState {
    /// The call layer.
    pub handle: CallService,
    /// Required bearer token, if any.
    pub token: Option<Arc<str>>,
    /// Agents by name, for `POST /calls`.
    pub agents: Arc<Vec<AgentSpec>>,
}

/// An API error: a status and a message, rendered as JSON.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// Errors starting the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiStartError {
    /// Cannot bind.
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
}

/// The router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/calls", get(list_calls).post(create_call))
        .route("/calls/:id", get(get_call))
        .route("/calls/:id/hangup", post(hangup_call))
        .route("/calls/:id/dtmf", post(send_dtmf))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(state)
}

/// Binds and serves until the future resolves.
pub async fn serve(
    addr: SocketAddr,
    state: ApiState,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ApiStartError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ApiStartError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ApiStartError::Bind { addr, source })?;
    let app = router(state);
    let join = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok((local, join))
}

fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.token else {
        return Ok(());
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid bearer token",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn health(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let active = state
        .handle
        .calls
        .lock()
        .map(|t| t.values().filter(|c| c.state != "ended").count())
        .unwrap_or(0);
    Json(json!({ "status": "ok", "active_calls": active }))
}

async fn list_calls(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Vec<CallInfo>>, ApiError> {
    authorize(&state, &headers)?;
    let mut calls: Vec<CallInfo> = state
        .handle
        .calls
        .lock()
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "call table unavailable"))?
        .values()
        .filter(|c| c.state != "ended")
        .cloned()
        .collect();
    calls.sort_by_key(|c| c.id);
    Ok(Json(calls))
}

fn parse_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("call id must be a number, got {id:?}"),
        )
    })
}

async fn get_call(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<CallInfo>, ApiError> {
    authorize(&state, &headers)?;
    let id = parse_id(&id)?;
    let t =
        state.handle.calls.lock().map_err(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "call table unavailable")
        })?;
    t.get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no call {id}")))
}

/// Body of `POST /calls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCall {
    /// SIP URI to call.
    pub target: String,
    /// Agent name (default: `hold`).
    pub agent: Option<String>,
    /// Trunk name.
    pub trunk: Option<String>,
}

async fn create_call(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<CreateCall>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    authorize(&state, &headers)?;
    let Json(req) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {}", e.body_text()),
        )
    })?;
    if !(req.target.starts_with("sip:") || req.target.starts_with("sips:")) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "target must be a sip: URI",
        ));
    }
    let agent_name = req.agent.as_deref().unwrap_or("hold");
    let agent = state
        .agents
        .iter()
        .find(|a| a.name == agent_name)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("unknown agent {agent_name:?}"),
            )
        })?;
    let (call, _done) = state
        .handle
        .dial(DialRequest {
            target: req.target,
            trunk: req.trunk,
            agent,
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()))?;
    Ok((StatusCode::CREATED, Json(json!({ "id": call.0 }))))
}

async fn hangup_call(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers)?;
    let id = parse_id(&id)?;
    let found = state
        .handle
        .hangup(CallHandle(id))
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    if found {
        Ok(Json(json!({ "id": id, "hangup": true })))
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no call {id}"),
        ))
    }
}

/// Body of `POST /calls/{id}/dtmf`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendDtmf {
    /// Digits: `0-9 * # A-D`.
    pub digits: String,
    /// `rfc4733` (default) or `info`.
    pub method: Option<String>,
}

async fn send_dtmf(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<SendDtmf>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers)?;
    let id = parse_id(&id)?;
    let Json(req) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {}", e.body_text()),
        )
    })?;
    let digits: Vec<crate::media::dtmf::Digit> = req
        .digits
        .chars()
        .map(|c| {
            crate::media::dtmf::Digit::from_char(c).ok_or_else(|| {
                ApiError::new(StatusCode::BAD_REQUEST, format!("not a DTMF digit: {c:?}"))
            })
        })
        .collect::<Result<_, _>>()?;
    if digits.is_empty() || digits.len() > 64 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "digits must hold 1 to 64 DTMF digits",
        ));
    }
    let method = match req.method.as_deref().unwrap_or("rfc4733") {
        "rfc4733" => crate::call::DtmfSendMethod::Rfc4733,
        "info" => crate::call::DtmfSendMethod::Info,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("method must be rfc4733 or info, got {other:?}"),
            ));
        }
    };
    match state.handle.send_dtmf(CallHandle(id), digits, method).await {
        Ok(Ok(())) => Ok(Json(json!({ "id": id, "digits": req.digits }))),
        Ok(Err(e)) if e.starts_with("no call") => Err(ApiError::new(StatusCode::NOT_FOUND, e)),
        Ok(Err(e)) => Err(ApiError::new(StatusCode::CONFLICT, e)),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
        )),
    }
}
