//! SIP over WebSocket (RFC 7118): the accept loop of the WS and WSS listeners and one task
//! per connection. Browsers' SIP stacks (JsSIP, SIP.js) open these connections; voxline
//! never opens one (a WebSocket client has no listening address: RFC 7118 §5).
//!
//! * The handshake must offer the `sip` subprotocol (RFC 7118 §4.1), and voxline answers with
//!   it; one that does not is refused with HTTP 400. It must finish within the message
//!   timeout, TLS first for WSS.
//! * Each WebSocket message, text or binary, carries one SIP message (§5); the bytes go to
//!   the stack as they are. A message of CRLFs only is a keepalive ping, answered with one
//!   CRLF (RFC 5626 §4.4.1, as SIP.js sends them). WebSocket pings are answered by the
//!   protocol layer.
//! * The TCP gate's limits apply: connections in all and per source, the idle timeout, and
//!   the largest SIP message as the largest WebSocket message.
//! * The HTTP listener upgrades `GET /sip` too ([`WsEntry`]): a page served by voxline
//!   reaches SIP on its own origin (its connections count against the HTTP limits).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::net::{Conn, Inbound};
use super::{RuntimeCounters, TCP_WRITE_QUEUE, bump};
use crate::sip::message::Limits;
use crate::sip::{Peer, Transport};

/// The WebSocket subprotocol of SIP (RFC 7118 §4.1, IANA registry).
pub const SIP_SUBPROTOCOL: &str = "sip";
/// The handshake header that names subprotocols (RFC 6455 §11.3.4).
const PROTOCOL_HEADER: &str = "sec-websocket-protocol";
/// The keepalive answer (RFC 5626 §4.4.1).
const PONG: &str = "\r\n";
/// How long a closing connection may take to write what is still queued.
const WS_DRAIN: Duration = Duration::from_secs(2);

/// Checks the handshake's subprotocols and answers with `sip`.
// The error type is tungstenite's handshake callback contract, not ours to shrink.
#[allow(clippy::result_large_err)]
fn choose_subprotocol(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    if !offers_sip(req.headers()) {
        let mut refusal = ErrorResponse::new(Some(
            "SIP over WebSocket needs the 'sip' subprotocol (RFC 7118)".to_owned(),
        ));
        *refusal.status_mut() = StatusCode::BAD_REQUEST;
        return Err(refusal);
    }
    resp.headers_mut()
        .insert(PROTOCOL_HEADER, HeaderValue::from_static(SIP_SUBPROTOCOL));
    Ok(resp)
}

/// How a WebSocket upgraded elsewhere (the HTTP listener's `/sip`) joins the SIP runtime:
/// the driver's queue, the message limits and the idle timeout of SIP connections.
#[derive(Debug, Clone)]
pub struct WsEntry {
    tx: mpsc::Sender<Inbound>,
    limits: Limits,
    idle: Duration,
    counters: Arc<RuntimeCounters>,
}

impl WsEntry {
    pub(crate) fn new(
        tx: mpsc::Sender<Inbound>,
        limits: Limits,
        idle: Duration,
        counters: Arc<RuntimeCounters>,
    ) -> WsEntry {
        WsEntry {
            tx,
            limits,
            idle,
            counters,
        }
    }

    /// The WebSocket settings for SIP: messages up to the SIP message limit.
    pub fn config(&self) -> WebSocketConfig {
        ws_config(&self.limits)
    }

    /// Counts a refused handshake (`voxline_sip_ws_failed_total`).
    pub fn refused(&self) {
        bump(&self.counters.ws_failed);
    }

    /// Serves a WebSocket whose handshake (with the `sip` subprotocol) is done, from `addr`,
    /// until it closes.
    pub async fn serve<S>(&self, ws: WebSocketStream<S>, addr: SocketAddr, transport: Transport)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        run(
            ws,
            addr,
            transport,
            self.idle,
            self.counters.clone(),
            self.tx.clone(),
        )
        .await;
    }
}

fn ws_config(limits: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(limits.max_message_bytes))
        .max_frame_size(Some(limits.max_message_bytes))
}

/// Whether a handshake request offers the `sip` subprotocol (RFC 7118 §4.1).
pub fn offers_sip(headers: &tokio_tungstenite::tungstenite::http::HeaderMap) -> bool {
    headers
        .get_all(PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case(SIP_SUBPROTOCOL))
}

/// The WebSocket handshake of an accepted connection (by `deadline`), then the connection
/// until it closes.
pub(super) async fn serve<S>(
    stream: S,
    conn: Conn,
    tx: mpsc::Sender<Inbound>,
    deadline: tokio::time::Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        addr,
        transport,
        limits,
        timeouts,
        counters,
        ..
    } = conn;
    let idle = timeouts.idle_timeout;
    let config = ws_config(&limits);
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, choose_subprotocol, Some(config));
    let ws = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            bump(&counters.ws_failed);
            tracing::info!(%addr, error = %e, "WebSocket handshake refused");
            return;
        }
        Err(_) => {
            bump(&counters.ws_failed);
            bump(&counters.tcp_timed_out);
            tracing::info!(%addr, "WebSocket handshake not done in time");
            return;
        }
    };
    run(ws, addr, transport, idle, counters, tx).await;
}

/// One SIP over WebSocket connection, after its handshake, until it closes.
async fn run<S>(
    ws: WebSocketStream<S>,
    addr: SocketAddr,
    transport: Transport,
    idle: Duration,
    counters: Arc<RuntimeCounters>,
    tx: mpsc::Sender<Inbound>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(TCP_WRITE_QUEUE);
    if tx
        .send(Inbound::TcpOpened {
            addr,
            tx: wtx.clone(),
        })
        .await
        .is_err()
    {
        return;
    }
    tracing::debug!(%addr, %transport, "SIP over WebSocket connection open");
    let (mut sink, mut source) = ws.split();
    let writer = tokio::spawn(async move {
        while let Some(bytes) = wrx.recv().await {
            // SIP is text; a message that is not UTF-8 (a binary body) goes as binary.
            let msg = match String::from_utf8(bytes) {
                Ok(text) => Message::Text(Utf8Bytes::from(text)),
                Err(e) => Message::binary(e.into_bytes()),
            };
            if sink.send(msg).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    loop {
        let next = match tokio::time::timeout(idle, source.next()).await {
            Err(_) => {
                bump(&counters.tcp_timed_out);
                tracing::debug!(%addr, "closing idle websocket connection");
                break;
            }
            Ok(None | Some(Err(_))) => break,
            Ok(Some(Ok(m))) => m,
        };
        let bytes: Vec<u8> = match next {
            Message::Text(t) => t.as_bytes().to_vec(),
            Message::Binary(b) => b.to_vec(),
            Message::Close(_) => break,
            // Answered by tungstenite; nothing for SIP.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        if !bytes.is_empty() && bytes.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            let _ = wtx.try_send(PONG.as_bytes().to_vec());
            continue;
        }
        let msg = Inbound::Message {
            peer: Peer { transport, addr },
            bytes,
        };
        if tx.send(msg).await.is_err() {
            break;
        }
    }
    // As for TCP: answers to what arrived before the close are queued by the driver before
    // it drops its sender; the writer then drains and stops, within WS_DRAIN.
    drop(wtx);
    let _ = tx.send(Inbound::TcpClosed { addr }).await;
    let mut writer = writer;
    if tokio::time::timeout(WS_DRAIN, &mut writer).await.is_err() {
        writer.abort();
    }
}
