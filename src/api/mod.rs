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
mod cluster;
pub mod console;
mod doc;
pub mod drain;
mod events;
mod history;
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
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi as _, ToSchema};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt as _};
use utoipa_axum::routes;

use crate::call::{AgentSpec, CallInfo};
use crate::call::{CallService, DialRequest};
use crate::call::{TransferError, TransferRequestError};
use crate::records::{CallRecord, RecordReader};
use crate::sip::CallHandle;

/// The most variables `POST /calls` accepts.
pub const MAX_VARIABLES: usize = 100;

/// The longest variable value `POST /calls` accepts, in bytes.
pub const MAX_VARIABLE_LEN: usize = 8192;

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
    /// `[pricing]`: the cost estimate of `GET /analytics`; `None`: no estimate.
    pub pricing: Option<Arc<crate::config::Pricing>>,
    /// The web console's sessions (the API accepts their cookie like the token).
    pub sessions: console::Sessions,
    /// `[recording_upload]`'s bucket: `GET /records/{id}/recording` serves an uploaded
    /// recording from it when the local file is gone.
    pub recordings_s3: Option<crate::storage::S3Client>,
    /// The drain request (`POST /drain`, SIGTERM with `--drain`).
    pub drain: drain::Drain,
    /// This node's cluster membership and its forwarder (`None`: a single node).
    pub cluster: Option<ClusterApi>,
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
        let body = doc::ErrorBody {
            error: self.message,
            status: self.sip_status,
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

/// The router, and the OpenAPI document of its operations (`GET /openapi.json`), which it
/// serves too.
pub fn router(state: ApiState, limits: &HttpLimits) -> Router {
    let (router, document) = OpenApiRouter::<ApiState>::with_openapi(doc::ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(drain::drain))
        .routes(routes!(list_calls, create_call))
        .routes(routes!(events::events))
        .routes(routes!(get_call))
        .routes(routes!(hangup_call))
        .routes(routes!(send_dtmf))
        .routes(routes!(transfer_call))
        .routes(routes!(history::list_records))
        .routes(routes!(history::recording))
        .routes(routes!(history::analytics))
        .routes(routes!(metrics))
        .routes(routes!(agents::list, agents::create))
        .routes(routes!(agents::get, agents::update, agents::delete))
        .routes(routes!(agents::list_routes))
        .routes(routes!(agents::set_route, agents::delete_route))
        .routes(routes!(webhooks::list_endpoints, webhooks::create_endpoint))
        .routes(routes!(webhooks::delete_endpoint))
        .routes(routes!(webhooks::list))
        .routes(routes!(webhooks::get))
        .routes(routes!(webhooks::redeliver))
        .routes(routes!(memory::get, memory::delete))
        .routes(
            routes!(campaigns::list, campaigns::create)
                .layer(DefaultBodyLimit::max(campaigns::MAX_CAMPAIGN_BODY_BYTES)),
        )
        .routes(routes!(campaigns::get))
        .routes(routes!(campaigns::pause))
        .routes(routes!(campaigns::resume))
        .routes(routes!(campaigns::cancel))
        .routes(routes!(phone::page))
        .routes(routes!(phone::config))
        .routes(routes!(phone::transcript))
        .routes(routes!(console::login))
        .routes(routes!(console::session))
        .routes(routes!(console::logout))
        .routes(routes!(console::pages::index))
        .routes(routes!(console::pages::app_js))
        .routes(routes!(console::pages::login_js))
        .routes(routes!(console::pages::css))
        // SIP over WebSocket: a protocol switch OpenAPI cannot describe (RFC 7118 is its
        // document), so the one route outside the OpenAPI document.
        .route("/sip", get(phone::sip_websocket))
        .split_for_parts();
    let document = doc::finish(
        document,
        doc::Security {
            token: state.token.is_some(),
            sessions: state.sessions.secured(),
        },
        limits.rate_per_s > 0,
    );
    let document: Arc<str> = match doc::to_json(&document) {
        Ok(json) => json.into(),
        // Serialising the document's own types cannot fail (string keys, no floats that are
        // not finite); were it to, the API still serves, and says so here.
        Err(e) => format!("{{\"error\": \"the OpenAPI document cannot be written: {e}\"}}").into(),
    };
    router
        .route(
            "/openapi.json",
            get(move || {
                let body = document.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        body.to_string(),
                    )
                }
            }),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// What the API needs of the cluster: the node (its store) and the forwarder of control
/// requests to the node that handles a call.
#[derive(Debug, Clone)]
pub struct ClusterApi {
    /// This node.
    pub node: crate::cluster::Node,
    /// Sends hang-ups, DTMF and transfers to their call's node.
    pub forward: crate::cluster::Forwarder,
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
    let sessions = state.sessions.clone();
    let app = router(state, &limits)
        .layer(axum::middleware::from_fn_with_state(
            sessions,
            console::csrf,
        ))
        .layer(axum::middleware::from_fn_with_state(
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

/// Whether the request may use the API: always when neither a token nor a console password
/// is configured; otherwise with the bearer token, or a live console session's cookie.
fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    if !state.sessions.secured() {
        return Ok(());
    }
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(g) = given {
        return match &state.token {
            Some(token) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
            _ => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid bearer token",
            )),
        };
    }
    let session = console::session_cookie(headers).is_some_and(|id| {
        state
            .sessions
            .check(id, std::time::Instant::now())
            .is_some()
    });
    if session {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token (or console session)",
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /health` when voxline serves calls (or is draining).
#[derive(Debug, Serialize, ToSchema)]
struct Healthy {
    /// `ok`; `draining` (with 503) once a drain is asked for.
    status: &'static str,
    /// Calls in progress.
    active_calls: usize,
    /// `running`.
    sip_driver: &'static str,
    /// `running`.
    media_workers: &'static str,
}

/// `GET /health` with 503.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Only its schema is used: the handler answers with its two parts.
enum HealthDown {
    /// Draining.
    Draining(Healthy),
    /// A part died.
    Failing(Failing),
}

/// `GET /health` when a part of voxline died (it is exiting).
#[derive(Debug, Serialize, ToSchema)]
struct Failing {
    /// `failing`.
    status: &'static str,
    /// The parts that died.
    dead: Vec<String>,
}

/// Whether voxline can serve calls (no token needed; not rate limited).
#[utoipa::path(get, path = "/health", tag = "service", responses(
    (status = 200, description = "voxline serves calls", body = Healthy),
    (status = 503, description = "draining (new calls are refused), or the SIP driver or a media worker died (voxline is exiting)", body = HealthDown),
))]
async fn health(State(state): State<ApiState>) -> Response {
    if state.drain.is_requested() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Healthy {
                status: "draining",
                active_calls: state.handle.calls.active_count(),
                sip_driver: "running",
                media_workers: "running",
            }),
        )
            .into_response();
    }
    let dead = crate::runtime::health::dead();
    if !dead.is_empty() {
        // The SIP driver or a media worker died: voxline cannot serve calls (it is exiting).
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Failing {
                status: "failing",
                dead,
            }),
        )
            .into_response();
    }
    Json(Healthy {
        status: "ok",
        active_calls: state.handle.calls.active_count(),
        sip_driver: "running",
        media_workers: "running",
    })
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
#[utoipa::path(get, path = "/metrics", tag = "service", responses(
    (status = 200, description = "Prometheus text exposition 0.0.4", body = String,
     content_type = "text/plain; version=0.0.4; charset=utf-8"),
))]
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
            "voxline_sip_refused_draining_total",
            "Calls refused because this node is draining.",
            stack.refused_draining,
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

/// The calls in progress.
#[utoipa::path(get, path = "/calls", tag = "calls", responses(
    (status = 200, description = "calls in progress", body = Vec<CallInfo>),
))]
async fn list_calls(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Vec<CallInfo>>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(cluster::list(&state).await))
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
    if !id.is_empty() && id.bytes().all(|c| c.is_ascii_digit()) {
        // A number, too large to be any call's handle.
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no call {id}"),
        ));
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

/// `GET /calls/{id}`: a call in progress, or a call's record.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
enum CallView {
    /// A call in progress (by its handle number).
    Live(Box<CallInfo>),
    /// A call's record with its transcript.
    Record(Box<RecordView>),
}

/// A record with its transcript.
#[derive(Debug, Serialize, ToSchema)]
struct RecordView {
    #[serde(flatten)]
    record: CallRecord,
    /// The transcript's lines (empty without one).
    transcript: Vec<crate::records::TranscriptEntry>,
    /// Why the transcript could not be read, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    transcript_error: Option<String>,
}

/// A call in progress (by handle number), or any call's record (by handle number or record
/// id), with its transcript.
#[utoipa::path(get, path = "/calls/{id}", tag = "calls",
    params(("id" = String, Path, pattern = "^[0-9]+(-[0-9]+)?$",
        description = "a call's handle number, or a record id (DIGITS-DIGITS)")),
    responses(
        (status = 200, description = "the call or its record", body = CallView),
        (status = 404, description = "no such call", body = doc::ErrorBody),
    ))]
async fn get_call(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<CallView>, ApiError> {
    authorize(&state, &headers)?;
    let record_id = match parse_call_ref(&id)? {
        CallRef::Live(n) => {
            if let Some(info) = state.handle.calls.get(n) {
                return Ok(Json(CallView::Live(Box::new(info))));
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
    let mut found =
        tokio::task::spawn_blocking(move || record_with_transcript(&reader, &record_id))
            .await
            .map_err(|e| ApiError::internal(format!("record lookup failed: {e}")))??;
    // In a cluster, the transcript of a call another node handled is a file on that node's
    // disk: it comes from that node (this node's own read stands if that node is gone).
    if let Some(view) = found
        .as_mut()
        .filter(|v| v.record.transcript_path.is_some())
        && let Some(entries) = cluster::transcript_elsewhere(&state, &headers, &view.record).await
    {
        view.transcript = entries;
        view.transcript_error = None;
    }
    found
        .map(|r| Json(CallView::Record(Box::new(r))))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no call {id}")))
}

/// A record with its transcript (blocking: SQLite and a file read). A record without a
/// transcript path has `"transcript": []`; one whose file cannot be read has `[]` and a
/// `"transcript_error"`.
fn record_with_transcript(reader: &RecordReader, id: &str) -> Result<Option<RecordView>, ApiError> {
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
    Ok(Some(RecordView {
        record,
        transcript: entries,
        transcript_error: error,
    }))
}

/// The query, or a 400 saying what is wrong with it.
fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query.map(|Query(q)| q).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid query: {}", e.body_text()),
        )
    })
}

/// Body of `POST /calls`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCall {
    /// SIP URI to call.
    #[schema(pattern = "^sips?:")]
    pub target: String,
    /// Agent name (default: `hold`).
    pub agent: Option<String>,
    /// Trunk name.
    pub trunk: Option<String>,
    /// Variables for the agent's instruction templates (`{{var.NAME}}`): string values only.
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    pub variables: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `POST /calls` answer.
#[derive(Debug, Serialize, ToSchema)]
struct CallCreated {
    /// The new call's handle number.
    id: u64,
}

/// Places an outbound call.
#[utoipa::path(post, path = "/calls", tag = "calls",
    request_body(content = CreateCall, example = json!({"target": "sip:100@127.0.0.1:9", "agent": "echo"})),
    responses(
    (status = 201, description = "the call is being placed", body = CallCreated),
    (status = 502, description = "the target's host cannot be resolved: the DNS failed", body = doc::ErrorBody),
    (status = 503, description = "the trunk is at its limits, or voxline cannot place calls now", body = doc::ErrorBody),
))]
async fn create_call(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<CreateCall>, JsonRejection>,
) -> Result<(StatusCode, Json<CallCreated>), ApiError> {
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
    Ok((StatusCode::CREATED, Json(CallCreated { id: call.0 })))
}

/// The status of a failed dial: a name the request got wrong is the client's error, an
/// unresolvable target the network's, no port or descriptor (or a stopped runtime) ours for
/// now.
fn dial_error(e: crate::call::DialError) -> ApiError {
    use crate::call::DialError;
    let status = match &e {
        DialError::UnknownTrunk(_)
        | DialError::InvalidTarget { .. }
        | DialError::NoSuchHost { .. } => StatusCode::BAD_REQUEST,
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

/// The agent that answered a recorded call: voxline.toml's of that name for a record
/// without a version, else that version of the API's agent.
pub async fn agent_of_record(
    state: &ApiState,
    name: &str,
    version: Option<u32>,
) -> Result<Option<AgentSpec>, ApiError> {
    match (version, &state.agents_db) {
        (None, _) => Ok(state.agents.iter().find(|a| a.name == name).cloned()),
        (Some(v), Some(db)) => db.spec_at(name, v).await,
        (Some(_), None) => Ok(None),
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

/// `POST /calls/{id}/hangup` answer.
#[derive(Debug, Serialize, ToSchema)]
struct HungUp {
    /// The call's handle number.
    id: u64,
    /// `true`.
    hangup: bool,
}

/// The path parameter of a call in progress.
const CALL_ID: &str = "a call's handle number on this node, or its record id (DIGITS-DIGITS), \
    which in a cluster reaches the node that handles the call";

/// Hangs up a call in progress.
#[utoipa::path(post, path = "/calls/{id}/hangup", tag = "calls",
    params(("id" = String, Path, pattern = "^[0-9]+(-[0-9]+)?$", description = CALL_ID)),
    responses(
        (status = 200, description = "the call is being hung up", body = HungUp),
        (status = 404, description = "no such call", body = doc::ErrorBody),
        (status = 503, description = "the call layer is not running", body = doc::ErrorBody),
    ))]
async fn hangup_call(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let id = match cluster::control(&state, &headers, &id, "hangup", serde_json::json!({})).await? {
        cluster::Control::Local(h) => h.0,
        cluster::Control::Forwarded(answer) => return Ok(answer),
    };
    let found = state
        .handle
        .hangup(CallHandle(id))
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    if found {
        Ok(Json(HungUp { id, hangup: true }).into_response())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no call {id}"),
        ))
    }
}

/// Body of `POST /calls/{id}/dtmf`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendDtmf {
    /// Digits: `0-9 * # A-D`.
    #[schema(pattern = "^[0-9*#A-D]{1,64}$")]
    pub digits: String,
    /// `rfc4733`, `info` or `inband`; when absent, the call's trunk's `dtmf` (RFC 4733
    /// without a trunk, in-band tones when the call has no telephone-event).
    #[schema(pattern = "^(rfc4733|info|inband)$")]
    pub method: Option<String>,
}

/// `POST /calls/{id}/dtmf` answer.
#[derive(Debug, Serialize, ToSchema)]
struct DtmfSent {
    /// The call's handle number.
    id: u64,
    /// The digits sent.
    digits: String,
}

/// Sends DTMF digits on a call in progress.
#[utoipa::path(post, path = "/calls/{id}/dtmf", tag = "calls",
    params(("id" = String, Path, pattern = "^[0-9]+(-[0-9]+)?$", description = CALL_ID)),
    request_body = SendDtmf,
    responses(
        (status = 200, description = "the digits are sent", body = DtmfSent),
        (status = 404, description = "no such call", body = doc::ErrorBody),
        (status = 409, description = "the call cannot send DTMF this way now", body = doc::ErrorBody),
        (status = 503, description = "the call's media is busy, or the call layer is not running", body = doc::ErrorBody),
    ))]
async fn send_dtmf(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<SendDtmf>, JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let req = json_body(body)?;
    let forward = serde_json::json!({ "digits": req.digits, "method": req.method });
    let id = match cluster::control(&state, &headers, &id, "dtmf", forward).await? {
        cluster::Control::Local(h) => h.0,
        cluster::Control::Forwarded(answer) => return Ok(answer),
    };
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
        Ok(Ok(())) => Ok(Json(DtmfSent {
            id,
            digits: req.digits,
        })
        .into_response()),
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
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferCall {
    /// A `sip:`/`sips:`/`tel:` URI, or a bare number completed with the call's remote host.
    #[schema(min_length = 1)]
    pub target: String,
}

/// `POST /calls/{id}/transfer` answer.
#[derive(Debug, Serialize, ToSchema)]
struct Transferred {
    /// `true`.
    transferred: bool,
    /// The final SIP status the transfer got.
    status: u16,
}

/// Blind-transfers a call in progress (REFER) and waits for the outcome.
#[utoipa::path(post, path = "/calls/{id}/transfer", tag = "calls",
    params(("id" = String, Path, pattern = "^[0-9]+(-[0-9]+)?$", description = CALL_ID)),
    request_body = TransferCall,
    responses(
        (status = 200, description = "the transfer succeeded", body = Transferred),
        (status = 404, description = "no such call", body = doc::ErrorBody),
        (status = 409, description = "the call is not answered, or is being transferred", body = doc::ErrorBody),
        (status = 502, description = "the far end refused the transfer (its SIP status in `status`), or the call ended", body = doc::ErrorBody),
        (status = 503, description = "the call layer is not running", body = doc::ErrorBody),
        (status = 504, description = "no outcome in time", body = doc::ErrorBody),
    ))]
async fn transfer_call(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<TransferCall>, JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let req = json_body(body)?;
    let forward = serde_json::json!({ "target": req.target });
    let id = match cluster::control(&state, &headers, &id, "transfer", forward).await? {
        cluster::Control::Local(h) => h.0,
        cluster::Control::Forwarded(answer) => return Ok(answer),
    };
    match state.handle.transfer(CallHandle(id), req.target).await {
        Ok(outcome) => Ok(Json(Transferred {
            transferred: true,
            status: outcome.status,
        })
        .into_response()),
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
    use serde_json::json;

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
            let e = parse_call_ref(bad).err().unwrap();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
        let e = parse_call_ref("300309252984390746130").err().unwrap();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
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
