//! The browser phone: `GET /phone` (one HTML page, no build step), `GET /phone/config.json`
//! (the agents a page may call and how to dial them), `GET /phone/transcript?call_id=` (the
//! live transcript of the page's own call), and `GET /sip`, SIP over WebSocket (RFC 7118) on
//! the HTTP listener, so that the page reaches SIP on its own origin.
//!
//! None of these needs the API token: a page cannot hold it. What they give away is what SIP
//! itself offers a caller: the agents' names and numbers (the routes), and a call's
//! transcript to whoever knows its Call-ID, which the page makes up (128 random bits).
//! Browser calls go through the same call path as phone calls: routes, agents, records,
//! recordings, barge-in.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use utoipa::{IntoParams, ToSchema};

use super::doc::ErrorBody;
use super::{ApiError, ApiState};
use crate::records::transcript::{Role, read_transcript};
use crate::sip::Transport;

/// The page itself.
const PAGE: &str = include_str!("phone.html");

/// The WebSocket version RFC 6455 §4.1 requires.
const WS_VERSION: &str = "13";

/// The peer of an HTTP connection, put on each of its requests by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// One agent a page may call, and the user part that reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PhoneAgent {
    /// The agent's name.
    pub agent: String,
    /// What to dial: `sip:<dial>@<host>`.
    pub dial: String,
}

/// What the page is told (`GET /phone/config.json`).
#[derive(Debug, Clone, Serialize, ToSchema)]
struct PhoneConfig<'a> {
    /// The WebSocket path on this origin.
    websocket_path: &'static str,
    /// The agents, in route order.
    agents: &'a [PhoneAgent],
}

/// The browser phone's page.
#[utoipa::path(get, path = "/phone", operation_id = "phone_page", tag = "service", responses(
    (status = 200, description = "the page", body = String, content_type = "text/html; charset=utf-8"),
))]
pub(super) async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

/// The agents the browser phone may call, and where its SIP WebSocket is.
#[utoipa::path(get, path = "/phone/config.json", operation_id = "phone_config", tag = "service", responses(
    (status = 200, description = "the phone's settings", body = PhoneConfig),
))]
pub(super) async fn config(State(state): State<ApiState>) -> Response {
    let agents: &[PhoneAgent] = &state.phone_agents;
    Json(PhoneConfig {
        websocket_path: "/sip",
        agents,
    })
    .into_response()
}

/// `GET /phone/transcript` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TranscriptQuery {
    /// The page's call's Call-ID (at least 16 characters).
    #[param(min_length = 16)]
    call_id: String,
}

/// One transcript line for the page.
#[derive(Debug, Serialize, ToSchema)]
struct Line {
    /// `caller`, `agent` or `system`.
    role: &'static str,
    /// What was said.
    text: String,
}

/// The live transcript of the page's call.
#[derive(Debug, Serialize, ToSchema)]
struct PhoneTranscript {
    /// The call's state.
    state: &'static str,
    /// The final lines so far.
    lines: Vec<Line>,
}

/// The live transcript of a call in progress, by its Call-ID (no token: the page's own call).
#[utoipa::path(get, path = "/phone/transcript", operation_id = "phone_transcript", tag = "service", params(TranscriptQuery),
    responses(
        (status = 200, description = "the call's transcript so far", body = PhoneTranscript),
        (status = 404, description = "no such call in progress", body = ErrorBody),
    ))]
pub(super) async fn transcript(
    State(state): State<ApiState>,
    q: Result<Query<TranscriptQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = super::query(q)?;
    // A made-up Call-ID of the page is long; a short one is a guess.
    if q.call_id.len() < 16 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "call_id too short"));
    }
    let Some(call) = state
        .handle
        .calls
        .all()
        .into_iter()
        .find(|c| c.call_id == q.call_id)
    else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such call"));
    };
    let lines: Vec<Line> = match &call.transcript {
        None => Vec::new(),
        Some(path) => {
            let path = path.clone();
            let read = tokio::task::spawn_blocking(move || read_transcript(path))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
            match read {
                Ok(t) => t
                    .entries
                    .into_iter()
                    .filter(|e| e.is_final && !e.text.is_empty())
                    .map(|e| Line {
                        role: match e.role {
                            Role::Caller => "caller",
                            Role::Agent => "agent",
                            Role::System => "system",
                        },
                        text: e.text,
                    })
                    .collect(),
                Err(_) => Vec::new(),
            }
        }
    };
    Ok(Json(PhoneTranscript {
        state: call.state,
        lines,
    })
    .into_response())
}

/// `GET /sip`: the RFC 6455 handshake with the `sip` subprotocol, then the connection joins
/// the SIP runtime as a [`Transport::Ws`] one.
pub(super) async fn sip_websocket(
    State(state): State<ApiState>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, ApiError> {
    let Some(entry) = state.sip_ws.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "SIP over WebSocket is not running",
        ));
    };
    let refuse = |why: &str| {
        entry.refused();
        ApiError::new(StatusCode::BAD_REQUEST, why)
    };
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err(refuse("not a WebSocket upgrade"));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != WS_VERSION)
    {
        return Err(refuse("WebSocket version 13 needed"));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(refuse("no Sec-WebSocket-Key"));
    };
    if !crate::runtime::ws::offers_sip(&headers) {
        return Err(refuse(
            "SIP over WebSocket needs the 'sip' subprotocol (RFC 7118)",
        ));
    }
    let accept = derive_accept_key(key.as_bytes());
    let config = entry.config();
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let io = hyper_util::rt::TokioIo::new(upgraded);
                let ws = WebSocketStream::from_raw_socket(io, WsRole::Server, Some(config)).await;
                entry.serve(ws, peer, Transport::Ws).await;
            }
            Err(e) => tracing::info!(%peer, error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(crate::runtime::ws::SIP_SUBPROTOCOL),
    );
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    Ok(resp)
}

/// The page's directory from the routes: each agent once, in route order, with the first
/// exact number routed to it, or its own name when a catch-all route reaches it.
pub fn directory<'a>(
    routes: impl IntoIterator<Item = (&'a crate::config::RoutePattern, &'a str)>,
) -> Arc<Vec<PhoneAgent>> {
    use crate::config::RoutePattern;
    let mut out: Vec<PhoneAgent> = Vec::new();
    for (pattern, agent) in routes {
        if out.iter().any(|a| a.agent == agent) {
            continue;
        }
        let dial = match pattern {
            RoutePattern::Exact(n) => n.clone(),
            RoutePattern::Any => agent.to_owned(),
            RoutePattern::Prefix(p) if p.is_empty() => agent.to_owned(),
            RoutePattern::Prefix(_) => continue,
        };
        out.push(PhoneAgent {
            agent: agent.to_owned(),
            dial,
        });
    }
    Arc::new(out)
}
