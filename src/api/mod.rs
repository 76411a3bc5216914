//! HTTP API (axum): health, calls, outbound calls, hang-up, DTMF, blind transfer, and the
//! call records of finished calls.
//!
//! Every error is JSON: `{"error": "..."}` with a fitting status code (a transfer the far end
//! refused adds its SIP `"status"`). When a bearer token is configured, every route but
//! `/health` requires `Authorization: Bearer <token>`.
//!
//! No handler holds the call table's lock, or anything else, across an `.await`; SQLite and
//! transcript reads run on the blocking pool (`spawn_blocking`).

mod agents;
mod campaigns;
mod memory;
pub mod phone;
mod ratelimit;
mod webhooks;

pub use agents::AgentsApi;
pub use webhooks::WebhookApi;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::call::{AgentSpec, CallInfo};
use crate::call::{CallService, DialRequest};
use crate::call::{TransferError, TransferRequestError};
use crate::records::{CallRecord, RecordReader};
use crate::sip::CallHandle;

/// The most variables `POST /calls` accepts.
pub const MAX_VARIABLES: usize = 100;

/// The longest variable value `POST /calls` accepts, in bytes.
pub const MAX_VARIABLE_LEN: usize = 8192;

/// `GET /records` page size when `limit` is not given.
pub const DEFAULT_RECORDS_LIMIT: u32 = 50;

/// The largest `limit` `GET /records` accepts.
pub const MAX_RECORDS_LIMIT: u32 = 500;

/// API state.
#[derive(Clone)]
pub struct ApiState {
    /// The call layer.
    pub handle: CallService,
    /// Required bearer token, if any.
    pub token: Option<Arc<str>>,
    /// Agents by name, for `POST /calls`.
    pub agents: Arc<Vec<AgentSpec>>,
    /// The call records (read-only), for finished calls in `GET /calls/{id}` and for
    /// `GET /records`; `None` when records are not kept.
    pub records: Option<RecordReader>,
    /// The SIP runtime's counters (datagrams dropped, TCP limits), for `GET /metrics`.
    pub sip_counters: Option<Arc<crate::runtime::RuntimeCounters>>,
    /// Where `GET /sip` WebSockets join the SIP runtime; `None`: not served.
    pub sip_ws: Option<crate::runtime::ws::WsEntry>,
    /// The agents the browser phone lists (`GET /phone/config.json`).
    pub phone_agents: Arc<Vec<phone::PhoneAgent>>,
    /// The webhook outbox; `None` without `[[webhook]]`.
    pub webhooks: Option<WebhookApi>,
    /// Agents kept as data (`/agents`); `None` without call records.
    pub agents_db: Option<AgentsApi>,
    /// Outbound campaigns (`/campaigns`); `None` without call records.
    pub campaigns: Option<crate::campaigns::Campaigns>,
    /// Caller memory (`/memory/{number}`); `None` without call records.
    pub memory: Option<crate::call::postcall::CallerMemory>,
}

/// An API error: a status and a message, rendered as JSON.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// A SIP status to report with the error (`"status"`), e.g. the code a transfer got.
    sip_status: Option<u16>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            sip_status: None,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.sip_status {
            Some(s) => json!({ "error": self.message, "status": s }),
            None => json!({ "error": self.message }),
        };
        (self.status, Json(body)).into_response()
    }
}

/// Errors starting the API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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

/// The largest request body the API reads: its requests are small JSON objects. A larger
/// one is refused with 413 once this much has arrived (at once, if its Content-Length says
/// so).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/calls", get(list_calls).post(create_call))
        .route("/calls/:id", get(get_call))
        .route("/calls/:id/hangup", post(hangup_call))
        .route("/calls/:id/dtmf", post(send_dtmf))
        .route("/calls/:id/transfer", post(transfer_call))
        .route("/records", get(list_records))
        .route("/metrics", get(metrics))
        .route("/agents", get(agents::list).post(agents::create))
        .route(
            "/agents/:name",
            get(agents::get).put(agents::update).delete(agents::delete),
        )
        .route("/routes", get(agents::list_routes))
        .route(
            "/routes/:number",
            axum::routing::put(agents::set_route).delete(agents::delete_route),
        )
        .route(
            "/webhooks/endpoints",
            get(webhooks::list_endpoints).post(webhooks::create_endpoint),
        )
        .route(
            "/webhooks/endpoints/:name",
            delete(webhooks::delete_endpoint),
        )
        .route("/webhooks/deliveries", get(webhooks::list))
        .route("/webhooks/deliveries/:id", get(webhooks::get))
        .route(
            "/webhooks/deliveries/:id/redeliver",
            post(webhooks::redeliver),
        )
        .route("/memory/:number", get(memory::get).delete(memory::delete))
        .route(
            "/campaigns",
            get(campaigns::list)
                .post(campaigns::create)
                .layer(DefaultBodyLimit::max(campaigns::MAX_CAMPAIGN_BODY_BYTES)),
        )
        .route("/campaigns/:id", get(campaigns::get))
        .route("/campaigns/:id/pause", post(campaigns::pause))
        .route("/campaigns/:id/resume", post(campaigns::resume))
        .route("/campaigns/:id/cancel", post(campaigns::cancel))
        .route("/phone", get(phone::page))
        .route("/phone/config.json", get(phone::config))
        .route("/phone/transcript", get(phone::transcript))
        .route("/sip", get(phone::sip_websocket))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Binds and serves until the future resolves.
pub async fn serve(
    addr: SocketAddr,
    state: ApiState,
    limits: HttpLimits,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ApiStartError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ApiStartError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ApiStartError::Bind { addr, source })?;
    let limiter = (limits.rate_per_s > 0).then(|| {
        ratelimit::RateLimiter::new(limits.rate_per_s, limits.rate_burst, state.token.clone())
    });
    let app = router(state).layer(axum::middleware::from_fn_with_state(
        limiter,
        ratelimit::limit,
    ));
    let join = tokio::spawn(accept_loop(listener, app, limits));
    Ok((local, join))
}

/// Connection limits and timeouts of the HTTP API (`[http]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Most connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Most connections open at once from one IP address.
    pub max_per_source: usize,
    /// A request's headers must arrive within this long, and a keep-alive connection with
    /// no request for this long is closed (hyper's header-read timeout, which restarts after
    /// each response).
    pub idle_timeout: Duration,
    /// Requests a second each client (an API token, or a source address without one) may
    /// make; `0` = no limit. Beyond it: 429.
    pub rate_per_s: u32,
    /// How many requests a client may make at once before `rate_per_s` applies.
    pub rate_burst: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 256,
            max_per_source: 64,
            idle_timeout: Duration::from_secs(30),
            rate_per_s: 100,
            rate_burst: 200,
        }
    }
}

/// Accepts API connections within `limits` and serves each with hyper's HTTP/1.
async fn accept_loop(listener: tokio::net::TcpListener, app: Router, limits: HttpLimits) {
    let gate = crate::runtime::TcpGate::new(crate::runtime::TcpLimits {
        max_connections: limits.max_connections,
        max_per_source: limits.max_per_source,
        idle_timeout: limits.idle_timeout,
        message_timeout: limits.idle_timeout,
    });
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Some(slot) = gate.admit(peer.ip()) else {
                    // Closed at once (dropped): the client sees the connection end.
                    tracing::debug!(%peer, "HTTP connection refused: connection limit");
                    continue;
                };
                // The peer address, for the WebSocket upgrade of `/sip`.
                let service = hyper_util::service::TowerToHyperService::new(
                    app.clone().layer(axum::Extension(phone::PeerAddr(peer))),
                );
                tokio::spawn(async move {
                    let mut http = hyper::server::conn::http1::Builder::new();
                    http.timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(limits.idle_timeout)
                        .keep_alive(true);
                    let conn = http
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .with_upgrades();
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended");
                    }
                    drop(slot);
                });
            }
            Err(e) if crate::runtime::out_of_descriptors(&e) => {
                tracing::error!(
                    error = %e,
                    "out of file descriptors: an HTTP API connection could not be accepted \
                     (see the descriptor limit logged at start)"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
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

async fn health(State(state): State<ApiState>) -> Response {
    let dead = crate::runtime::health::dead();
    if !dead.is_empty() {
        // The SIP driver or a media worker died: voxline cannot serve calls (it is exiting).
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "failing", "dead": dead })),
        )
            .into_response();
    }
    let active = state.handle.calls.active_count();
    Json(json!({
        "status": "ok",
        "active_calls": active,
        "sip_driver": "running",
        "media_workers": "running",
    }))
    .into_response()
}

/// The request's JSON body, or a 400 saying what is wrong with it (413 for a body over
/// [`MAX_BODY_BYTES`], 415 without a JSON content type).
fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(req)| req).map_err(|e| {
        let status = match e.status() {
            s @ (StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE) => s,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, format!("invalid request body: {}", e.body_text()))
    })
}

/// `GET /metrics`: the Prometheus text exposition (same authorization as the other routes).
async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let active = state.handle.calls.active_count();
    let mut body = crate::call::metrics::Metrics::global().render(active as u64);
    if let Some(stack) = state.handle.stack_counters().await {
        render_sip_metrics(&mut body, &stack, state.sip_counters.as_deref());
    }
    if let Some(w) = &state.webhooks {
        webhooks::render_metrics(&mut body, w).await;
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

/// The SIP stack's and the SIP runtime's counters in the Prometheus text format.
fn render_sip_metrics(
    out: &mut String,
    stack: &crate::sip::StackCounters,
    runtime: Option<&crate::runtime::RuntimeCounters>,
) {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering;
    let load =
        |c: Option<&std::sync::atomic::AtomicU64>| c.map_or(0, |c| c.load(Ordering::Relaxed));
    let counters = [
        (
            "voxline_sip_messages_in_total",
            "SIP messages parsed.",
            stack.messages_in,
        ),
        (
            "voxline_sip_dropped_malformed_total",
            "SIP messages dropped as unparseable.",
            stack.dropped_malformed,
        ),
        (
            "voxline_sip_rejected_malformed_total",
            "Malformed SIP requests answered 400/501/513.",
            stack.rejected_malformed,
        ),
        (
            "voxline_sip_stray_responses_total",
            "SIP responses that matched no transaction.",
            stack.stray_responses,
        ),
        (
            "voxline_sip_retransmissions_absorbed_total",
            "Request retransmissions absorbed by server transactions.",
            stack.retransmissions_absorbed,
        ),
        (
            "voxline_sip_refused_at_limit_total",
            "Calls refused at limits.max_calls.",
            stack.refused_at_limit,
        ),
        (
            "voxline_sip_dropped_overload_total",
            "New SIP requests refused at limits.max_transactions (INVITE: 503).",
            stack.dropped_overload,
        ),
        (
            "voxline_sip_inbound_dropped_total",
            "UDP datagrams dropped because the SIP driver was behind.",
            load(runtime.map(|r| &r.inbound_dropped)),
        ),
        (
            "voxline_sip_send_errors_total",
            "SIP datagrams that could not be sent.",
            load(runtime.map(|r| &r.send_errors)),
        ),
        (
            "voxline_sip_tcp_refused_total",
            "TCP connections closed at the total or per-source limit.",
            load(runtime.map(|r| &r.tcp_refused)),
        ),
        (
            "voxline_sip_tcp_timed_out_total",
            "TCP connections closed idle or mid-message.",
            load(runtime.map(|r| &r.tcp_timed_out)),
        ),
        (
            "voxline_sip_tls_failed_total",
            "TLS handshakes that failed or timed out (certificate refused, not TLS, too slow).",
            load(runtime.map(|r| &r.tls_failed)),
        ),
        (
            "voxline_sip_ws_failed_total",
            "WebSocket handshakes refused (no 'sip' subprotocol, not WebSocket) or too slow.",
            load(runtime.map(|r| &r.ws_failed)),
        ),
        (
            "voxline_sip_transactions_started_total",
            "SIP server and client transactions created.",
            stack.transactions_started,
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    let gauges = [
        (
            "voxline_sip_server_transactions",
            "Live SIP server transactions.",
            stack.server_transactions,
        ),
        (
            "voxline_sip_client_transactions",
            "Live SIP client transactions.",
            stack.client_transactions,
        ),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
}

async fn list_calls(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Vec<CallInfo>>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(state.handle.calls.active()))
}

fn parse_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("call id must be a number, got {id:?}"),
        )
    })
}

/// An id in `GET /calls/{id}`: a live call's handle number, or a record id.
enum CallRef {
    Live(u64),
    Record(String),
}

/// A number is a call handle; `DIGITS-DIGITS` is a record id (`CallManager::record_id`).
fn parse_call_ref(id: &str) -> Result<CallRef, ApiError> {
    if let Ok(n) = id.parse() {
        return Ok(CallRef::Live(n));
    }
    let is_record_id = id.split_once('-').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    });
    if is_record_id {
        Ok(CallRef::Record(id.to_string()))
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("call id must be a number or a record id (PREFIX-N), got {id:?}"),
        ))
    }
}

async fn get_call(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers)?;
    let record_id = match parse_call_ref(&id)? {
        CallRef::Live(n) => {
            let live = state.handle.calls.get(n);
            if let Some(info) = live {
                let v = serde_json::to_value(info)
                    .map_err(|e| ApiError::internal(format!("cannot encode the call: {e}")))?;
                return Ok(Json(v));
            }
            n.to_string()
        }
        CallRef::Record(r) => r,
    };
    let Some(reader) = state.records.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no call {id}"),
        ));
    };
    let found = tokio::task::spawn_blocking(move || record_with_transcript(&reader, &record_id))
        .await
        .map_err(|e| ApiError::internal(format!("record lookup failed: {e}")))??;
    found
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no call {id}")))
}

/// A record as JSON with its transcript (blocking: SQLite and a file read). A record without
/// a transcript path has `"transcript": []`; one whose file cannot be read has `[]` and a
/// `"transcript_error"`.
fn record_with_transcript(
    reader: &RecordReader,
    id: &str,
) -> Result<Option<serde_json::Value>, ApiError> {
    let Some(record) = reader
        .get(id)
        .map_err(|e| ApiError::internal(e.to_string()))?
    else {
        return Ok(None);
    };
    let (entries, error) = match &record.transcript_path {
        None => (Vec::new(), None),
        Some(path) => match crate::records::read_transcript(path) {
            Ok(t) => (t.entries, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        },
    };
    let encode = |e: serde_json::Error| ApiError::internal(format!("cannot encode record: {e}"));
    let mut v = serde_json::to_value(&record).map_err(encode)?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "transcript".into(),
            serde_json::to_value(entries).map_err(encode)?,
        );
        if let Some(e) = error {
            obj.insert("transcript_error".into(), e.into());
        }
    }
    Ok(Some(v))
}

/// Query of `GET /records`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsQuery {
    /// Page size: 1 to [`MAX_RECORDS_LIMIT`] (default [`DEFAULT_RECORDS_LIMIT`]).
    pub limit: Option<u32>,
    /// Finished records to skip (default 0).
    pub offset: Option<u32>,
}

async fn list_records(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<RecordsQuery>, QueryRejection>,
) -> Result<Json<Vec<CallRecord>>, ApiError> {
    authorize(&state, &headers)?;
    let Query(q) = query.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid query: {}", e.body_text()),
        )
    })?;
    let limit = q.limit.unwrap_or(DEFAULT_RECORDS_LIMIT);
    if limit == 0 || limit > MAX_RECORDS_LIMIT {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("limit must be 1 to {MAX_RECORDS_LIMIT}, got {limit}"),
        ));
    }
    let offset = q.offset.unwrap_or(0);
    let Some(reader) = state.records.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "call records are not kept",
        ));
    };
    let page = tokio::task::spawn_blocking(move || finished_records(&reader, limit, offset))
        .await
        .map_err(|e| ApiError::internal(format!("records listing failed: {e}")))??;
    Ok(Json(page))
}

/// Finished records (ended, or cut off by a crash), newest first: `limit` of them after
/// skipping `offset` finished ones. Calls in progress are skipped.
fn finished_records(
    reader: &RecordReader,
    limit: u32,
    offset: u32,
) -> Result<Vec<CallRecord>, ApiError> {
    const CHUNK: u32 = 500;
    let (mut out, mut skipped, mut pos) = (Vec::new(), 0u32, 0u32);
    loop {
        let chunk = reader
            .list(CHUNK, pos)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        if chunk.is_empty() {
            return Ok(out);
        }
        pos = pos.saturating_add(CHUNK);
        for r in chunk {
            if r.ended_at.is_none() && !r.unfinished {
                continue;
            }
            if skipped < offset {
                skipped += 1;
                continue;
            }
            out.push(r);
            if out.len() >= limit as usize {
                return Ok(out);
            }
        }
    }
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
    /// Variables for the agent's instruction templates (`{{var.NAME}}`): string values only.
    pub variables: Option<serde_json::Map<String, serde_json::Value>>,
}

async fn create_call(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<CreateCall>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    authorize(&state, &headers)?;
    let req = json_body(body)?;
    check_target(&req.target).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let name = req.agent.as_deref().unwrap_or("hold");
    let mut agent = agent_by_name(&state, name)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, format!("unknown agent {name:?}")))?;
    agent.variables.extend(check_variables(req.variables)?);
    let (call, _done) = state
        .handle
        .dial(DialRequest {
            target: req.target,
            trunk: req.trunk,
            agent,
        })
        .await
        .map_err(dial_error)?;
    Ok((StatusCode::CREATED, Json(json!({ "id": call.0 }))))
}

/// The status of a failed dial: a name the request got wrong is the client's error, an
/// unresolvable target the network's, no port or descriptor (or a stopped runtime) ours for
/// now.
fn dial_error(e: crate::call::DialError) -> ApiError {
    use crate::call::DialError;
    let status = match &e {
        DialError::UnknownTrunk(_) => StatusCode::BAD_REQUEST,
        DialError::Resolve { .. } => StatusCode::BAD_GATEWAY,
        DialError::TrunkBusy(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError::new(status, e.to_string())
}

/// A dial target is a `sip:` or `sips:` URI with a host, and nothing that could break out of
/// the Request-URI or a header it is copied into (control characters, CR/LF, spaces, `<>"`).
fn check_target(target: &str) -> Result<(), &'static str> {
    if !(target.starts_with("sip:") || target.starts_with("sips:")) {
        return Err("target must be a sip: URI");
    }
    if target
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '<' | '>' | '"'))
    {
        return Err("target must not contain spaces, control characters, '<', '>' or '\"'");
    }
    match crate::sip::message::uri_host_port(target) {
        Some((host, _)) if !host.is_empty() => Ok(()),
        _ => Err("target has no host"),
    }
}

/// The agent of this name: voxline.toml's agents first (their names cannot be taken through
/// the API), then the newest version of an agent defined through the API.
pub async fn agent_by_name(state: &ApiState, name: &str) -> Result<Option<AgentSpec>, ApiError> {
    if let Some(a) = state.agents.iter().find(|a| a.name == name) {
        return Ok(Some(a.clone()));
    }
    match &state.agents_db {
        Some(db) => db.spec(name).await,
        None => Ok(None),
    }
}

/// Call variables as a request gives them (`{"name": "Ada"}`): at most [`MAX_VARIABLES`],
/// string values of at most [`MAX_VARIABLE_LEN`] bytes; errors start with `variables`.
fn check_variables(
    variables: Option<serde_json::Map<String, serde_json::Value>>,
) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let mut out = std::collections::BTreeMap::new();
    let variables = variables.unwrap_or_default();
    if variables.len() > MAX_VARIABLES {
        return Err(bad(format!(
            "at most {MAX_VARIABLES} variables, got {}",
            variables.len()
        )));
    }
    for (key, value) in variables {
        if key.is_empty() {
            return Err(bad("variables: a name is empty".into()));
        }
        let serde_json::Value::String(text) = value else {
            return Err(bad(format!(
                "variables.{key} must be a string, got {}",
                json_kind(&value)
            )));
        };
        if text.len() > MAX_VARIABLE_LEN {
            return Err(bad(format!(
                "variables.{key} is longer than {MAX_VARIABLE_LEN} bytes"
            )));
        }
        out.insert(key, text);
    }
    Ok(out)
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
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
    /// `rfc4733`, `info` or `inband`; when absent, the call's trunk's `dtmf` (RFC 4733
    /// without a trunk, in-band tones when the call has no telephone-event).
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
    let req = json_body(body)?;
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
    let method = match req.method.as_deref() {
        None => None,
        Some("rfc4733") => Some(crate::call::DtmfSendMethod::Rfc4733),
        Some("info") => Some(crate::call::DtmfSendMethod::Info),
        Some("inband") => Some(crate::call::DtmfSendMethod::InBand),
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("method must be rfc4733, info or inband, got {other:?}"),
            ));
        }
    };
    match state.handle.send_dtmf(CallHandle(id), digits, method).await {
        Ok(Ok(())) => Ok(Json(json!({ "id": id, "digits": req.digits }))),
        Ok(Err(e)) => {
            let status = match e {
                crate::call::DtmfError::NoCall(_) => StatusCode::NOT_FOUND,
                crate::call::DtmfError::MediaBusy => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::CONFLICT,
            };
            Err(ApiError::new(status, e.to_string()))
        }
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
        )),
    }
}

/// Body of `POST /calls/{id}/transfer`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferCall {
    /// A `sip:`/`sips:`/`tel:` URI, or a bare number completed with the call's remote host.
    pub target: String,
}

async fn transfer_call(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<TransferCall>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers)?;
    let id = parse_id(&id)?;
    let req = json_body(body)?;
    match state.handle.transfer(CallHandle(id), req.target).await {
        Ok(outcome) => Ok(Json(
            json!({ "transferred": true, "status": outcome.status }),
        )),
        Err(e) => Err(transfer_error(id, e)),
    }
}

/// The HTTP answer to a failed transfer.
fn transfer_error(id: u64, e: TransferRequestError) -> ApiError {
    let message = e.to_string();
    match e {
        TransferRequestError::Transfer(t) => match t {
            TransferError::NoSuchCall => {
                ApiError::new(StatusCode::NOT_FOUND, format!("no call {id}"))
            }
            TransferError::NotAnswered | TransferError::AlreadyTransferring => {
                ApiError::new(StatusCode::CONFLICT, message)
            }
            TransferError::InvalidTarget(_) => ApiError::new(StatusCode::BAD_REQUEST, message),
            TransferError::Rejected { status } => ApiError {
                sip_status: Some(status),
                ..ApiError::new(StatusCode::BAD_GATEWAY, message)
            },
            TransferError::CallEnded => ApiError::new(StatusCode::BAD_GATEWAY, message),
            TransferError::Stack(_) => ApiError::internal(message),
        },
        TransferRequestError::TimedOut => ApiError::new(StatusCode::GATEWAY_TIMEOUT, message),
        TransferRequestError::Runtime(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: serde_json::Value) -> Option<serde_json::Map<String, serde_json::Value>> {
        match v {
            serde_json::Value::Object(m) => Some(m),
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn variables_are_checked_and_kept() {
        let v = check_variables(vars(json!({"name": "Ada", "order": "42"}))).unwrap();
        assert_eq!(v.get("name").map(String::as_str), Some("Ada"));
        assert_eq!(v.get("order").map(String::as_str), Some("42"));
        assert_eq!(v.len(), 2);
        assert!(check_variables(None).unwrap().is_empty());
    }

    #[test]
    fn non_string_variables_are_refused_by_name() {
        for (v, kind) in [
            (json!({"n": 5}), "a number"),
            (json!({"n": null}), "null"),
            (json!({"n": ["x"]}), "an array"),
            (json!({"n": {"a": "b"}}), "an object"),
            (json!({"n": true}), "a boolean"),
        ] {
            let e = check_variables(vars(v)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(
                e.message,
                format!("variables.n must be a string, got {kind}")
            );
        }
        let long = json!({"big": "x".repeat(MAX_VARIABLE_LEN + 1)});
        let e = check_variables(vars(long)).unwrap_err();
        assert!(
            e.message.contains("variables.big is longer"),
            "{}",
            e.message
        );
    }

    #[test]
    fn call_refs_are_handles_or_record_ids() {
        assert!(matches!(parse_call_ref("42"), Ok(CallRef::Live(42))));
        assert!(
            matches!(parse_call_ref("1718000000-7"), Ok(CallRef::Record(r)) if r == "1718000000-7")
        );
        for bad in ["abc", "1-", "-1", "1-2-3", "a-1", ""] {
            assert!(parse_call_ref(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn transfer_errors_map_to_http_codes() {
        let code = |e: TransferRequestError| {
            let a = transfer_error(7, e);
            (a.status.as_u16(), a.sip_status)
        };
        use TransferError as T;
        assert_eq!(code(T::NoSuchCall.into()), (404, None));
        assert_eq!(code(T::NotAnswered.into()), (409, None));
        assert_eq!(code(T::AlreadyTransferring.into()), (409, None));
        assert_eq!(code(T::InvalidTarget("x".into()).into()), (400, None));
        assert_eq!(code(T::Rejected { status: 603 }.into()), (502, Some(603)));
        assert_eq!(code(T::CallEnded.into()), (502, None));
        assert_eq!(code(TransferRequestError::TimedOut), (504, None));
        assert_eq!(
            code(crate::runtime::RuntimeError::Stopped.into()),
            (503, None)
        );
    }
}
