//! The OpenAI Realtime API client: one WebSocket per call, driven by one tokio task.
//!
//! [`connect`] opens the socket (`Authorization: Bearer KEY`, or `api-key: KEY` for Azure;
//! `?model=` on the URL), sends a GA `session.update`, waits for `session.updated`, asks for
//! the greeting if there is one, and spawns the task that moves audio and events between
//! the socket and the [`BackendHandle`]. Audio is carried untouched when the call is G.711
//! (`audio/pcmu` / `audio/pcma` both ways); other calls speak `audio/pcm` at 24 kHz, and a
//! PCM16 call at another rate is resampled with [`crate::dsp::resample`].
//!
//! If the connection drops mid-call and [`RealtimeConfig::reconnect`] is set, the task
//! reconnects (attempts at 0, 250 and 500 ms, all within [`RealtimeConfig::reconnect_budget`]),
//! re-sends the session and replays the conversation so far as text items, then reports
//! [`BackendEvent::Reconnected`]; otherwise, or if that fails, it reports a fatal
//! [`BackendEvent::Error`] and [`BackendEvent::Closed`].
//!
//! The API key lives in an [`ApiKey`], whose `Debug` is redacted; it is only ever written
//! into the upgrade request, which the client composes and sends itself (the WebSocket
//! library's own handshake logs the whole request at TRACE level), and never logged.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, trace, warn};

use super::protocol::{
    AudioInput, AudioOutput, CODE_CANCEL_NOT_ACTIVE, ClientEvent, ContentPart, FunctionTool, Item,
    MessageRole, NoiseReductionWire, PCM_RATE, ResponseParams, SESSION_TYPE_REALTIME, ServerEvent,
    Session, SessionAudio, Transcription, TurnDetection, WireFormat,
};
use crate::agent::backend::{
    AudioChunk, AudioFormat, BackendControl, BackendError, BackendEvent, BackendHandle,
    CONTROL_CHANNEL_CAPACITY, CallContext, EVENT_CHANNEL_CAPACITY, Role,
};
use crate::dsp::resample::Resampler;
use crate::dsp::wav::pcm16_from_le;

/// The OpenAI Realtime WebSocket endpoint.
pub const DEFAULT_URL: &str = "wss://api.openai.com/v1/realtime";

/// The default model (`?model=` on the URL).
pub const DEFAULT_MODEL: &str = "gpt-realtime";

/// The environment variable the caller usually reads the key from.
pub const DEFAULT_API_KEY_ENV: &str = "OPENAI_API_KEY";

/// Default limit for the TCP/TLS connect plus WebSocket upgrade, and again for the
/// `session.updated` answer.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default time allowed for reconnecting after a mid-call drop.
pub const DEFAULT_RECONNECT_BUDGET: Duration = Duration::from_secs(1);

/// Delays before each reconnection attempt, in milliseconds.
pub const RECONNECT_BACKOFF_MS: [u64; 3] = [0, 250, 500];

/// An API key. `Debug` prints `ApiKey(***)`; there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    /// Reads the key from environment variable `var` (`None` if unset or empty).
    pub fn from_env(var: &str) -> Option<ApiKey> {
        std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .map(ApiKey)
    }

    /// The key itself. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Input noise reduction (`audio.input.noise_reduction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseReduction {
    /// Off (`null`).
    #[default]
    None,
    /// For close-talking microphones: handsets and headsets, so most phone calls.
    NearField,
    /// For far-field microphones: speakerphones, conference rooms.
    FarField,
}

/// How the realtime client connects and configures its session.
#[derive(Debug, Clone, PartialEq)]
pub struct RealtimeConfig {
    /// WebSocket URL, `ws://` or `wss://` ([`DEFAULT_URL`]). `model=` is added to the query
    /// unless the URL already has `model=` or `deployment=`.
    pub url: String,
    /// Model, or the deployment name on Azure ([`DEFAULT_MODEL`]).
    pub model: String,
    /// Where the caller reads [`RealtimeConfig::api_key`] from (for messages only).
    pub api_key_env: String,
    /// The key, resolved by the caller; [`connect`] fails without it.
    pub api_key: Option<ApiKey>,
    /// Output voice (`marin`, `cedar`, `alloy`…); `None` keeps the server's default.
    pub voice: Option<String>,
    /// System instructions, a template: `{{caller}}`, `{{called}}`, `{{direction}}`,
    /// `{{time}}` (UTC) and `{{var.NAME}}` ([`CallContext::variables`]; empty if unset) are
    /// replaced; anything else is left as written.
    pub instructions: String,
    /// Sampling temperature. The GA session has no such field: a value here is ignored with
    /// a warning (kept so configurations written for the beta API still load).
    pub temperature: Option<f32>,
    /// Turn detection; `None` sends `null` (no automatic turns).
    pub turn_detection: Option<TurnDetection>,
    /// Caller transcription model (`gpt-4o-transcribe`, `whisper-1`…); `None` leaves it off.
    pub input_transcription: Option<String>,
    /// Input noise reduction.
    pub noise_reduction: NoiseReduction,
    /// Speak first: what to greet the caller with (a template like `instructions`).
    pub greeting: Option<String>,
    /// Azure OpenAI: send the key as `api-key` instead of `Authorization: Bearer`.
    pub azure: bool,
    /// Reconnect after a mid-call drop.
    pub reconnect: bool,
    /// Limit for connecting and again for the session setup ([`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Time allowed for a reconnection, all attempts included
    /// ([`DEFAULT_RECONNECT_BUDGET`]).
    pub reconnect_budget: Duration,
}

impl Default for RealtimeConfig {
    fn default() -> RealtimeConfig {
        RealtimeConfig {
            url: DEFAULT_URL.to_owned(),
            model: DEFAULT_MODEL.to_owned(),
            api_key_env: DEFAULT_API_KEY_ENV.to_owned(),
            api_key: None,
            voice: None,
            instructions: String::new(),
            temperature: None,
            turn_detection: Some(TurnDetection::ServerVad {
                threshold: None,
                prefix_padding_ms: None,
                silence_duration_ms: None,
                create_response: None,
                interrupt_response: None,
            }),
            input_transcription: None,
            noise_reduction: NoiseReduction::None,
            greeting: None,
            azure: false,
            reconnect: true,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            reconnect_budget: DEFAULT_RECONNECT_BUDGET,
        }
    }
}

/// Connects to the Realtime API for one call and starts the client task.
///
/// Returns once the server has answered `session.update` with `session.updated` (and the
/// greeting, if any, was requested). Errors: [`BackendError::Config`] (no key, bad URL),
/// [`BackendError::Connect`] (refused, DNS, TLS), [`BackendError::Timeout`],
/// [`BackendError::Unauthorized`] (HTTP 401/403), [`BackendError::RateLimited`] (HTTP 429),
/// [`BackendError::Http`], [`BackendError::SessionRejected`] (an `error` event answered the
/// session) and [`BackendError::Protocol`].
pub async fn connect(cfg: RealtimeConfig, ctx: CallContext) -> Result<BackendHandle, BackendError> {
    let api_key = cfg.api_key.clone().ok_or_else(|| {
        BackendError::Config(format!(
            "no API key for the realtime backend (set {})",
            cfg.api_key_env
        ))
    })?;
    let wire = wire_format(ctx.call_format)?;
    if cfg.temperature.is_some() {
        warn!("realtime: `temperature` is not part of the GA session and is ignored");
    }
    let now = SystemTime::now();
    let instructions = render_instructions(&cfg.instructions, &ctx, now);
    let session_json = session_update(&cfg, &ctx, &instructions).to_json();
    let target = Target::new(&cfg)?;
    let setup = Arc::new(Setup {
        target,
        api_key,
        session_json,
        azure: cfg.azure,
        connect_timeout: cfg.connect_timeout,
        reconnect: cfg.reconnect,
        reconnect_budget: cfg.reconnect_budget,
    });

    let mut ws = open_session(&setup, cfg.connect_timeout).await?;
    info!(host = %setup.target.host, model = %cfg.model, "realtime session ready");

    if let Some(greeting) = &cfg.greeting {
        let text = render_instructions(greeting, &ctx, now);
        let ev = ClientEvent::ResponseCreate {
            response: Some(ResponseParams {
                instructions: Some(greeting_instructions(&text)),
            }),
        };
        send(&mut ws, &ev)
            .await
            .map_err(|e| BackendError::Protocol(format!("cannot request the greeting: {e}")))?;
    }

    let (control_tx, control_rx) = mpsc::channel(CONTROL_CHANNEL_CAPACITY);
    let (event_tx, event_rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
    let client = Client::new(setup, ctx.call_format, wire, event_tx)?;
    tokio::spawn(client.run(ws, control_rx));
    Ok(BackendHandle {
        control: control_tx,
        events: event_rx,
    })
}

/// The format on the wire for a call format: G.711 as is, PCM16 at 24 kHz otherwise.
pub fn wire_format(call_format: AudioFormat) -> Result<AudioFormat, BackendError> {
    match call_format {
        AudioFormat::Pcmu8k | AudioFormat::Pcma8k => Ok(call_format),
        AudioFormat::Pcm16 { rate: 0 } => Err(BackendError::Config(
            "PCM16 call format with a zero sample rate".into(),
        )),
        AudioFormat::Pcm16 { .. } => Ok(AudioFormat::Pcm16 { rate: PCM_RATE }),
    }
}

/// The `session.update` event for this configuration and call (instructions already
/// rendered).
pub fn session_update(cfg: &RealtimeConfig, ctx: &CallContext, instructions: &str) -> ClientEvent {
    let format = match ctx.call_format {
        AudioFormat::Pcmu8k => WireFormat::Pcmu,
        AudioFormat::Pcma8k => WireFormat::Pcma,
        AudioFormat::Pcm16 { .. } => WireFormat::Pcm { rate: PCM_RATE },
    };
    let noise_reduction = match cfg.noise_reduction {
        NoiseReduction::None => None,
        NoiseReduction::NearField => Some(NoiseReductionWire { kind: "near_field" }),
        NoiseReduction::FarField => Some(NoiseReductionWire { kind: "far_field" }),
    };
    let tools: Vec<FunctionTool> = ctx
        .tools
        .iter()
        .map(|t| FunctionTool {
            kind: "function",
            name: t.name.clone(),
            description: t.description.clone(),
            parameters: t.parameters.clone(),
        })
        .collect();
    let has_tools = !tools.is_empty();
    ClientEvent::SessionUpdate {
        session: Session {
            kind: SESSION_TYPE_REALTIME,
            model: None,
            instructions: (!instructions.is_empty()).then(|| instructions.to_owned()),
            output_modalities: Some(vec!["audio".to_owned()]),
            audio: Some(SessionAudio {
                input: AudioInput {
                    format,
                    noise_reduction,
                    transcription: cfg.input_transcription.as_ref().map(|model| Transcription {
                        model: model.clone(),
                    }),
                    turn_detection: cfg.turn_detection.clone(),
                },
                output: AudioOutput {
                    format,
                    voice: cfg.voice.clone(),
                },
            }),
            tools: has_tools.then_some(tools),
            tool_choice: has_tools.then(|| "auto".to_owned()),
        },
    }
}

/// Renders an instructions template: `{{caller}}`, `{{called}}`, `{{direction}}`,
/// `{{time}}` (`now` as `YYYY-MM-DD HH:MM:SS UTC`) and `{{var.NAME}}` (empty if the call has
/// no such variable). Other `{{…}}` are left as written.
pub fn render_instructions(template: &str, ctx: &CallContext, now: SystemTime) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = after[..end].trim();
        match name {
            "caller" => out.push_str(&ctx.caller),
            "called" => out.push_str(&ctx.called),
            "direction" => out.push_str(&ctx.direction),
            "time" => out.push_str(&format_utc(now)),
            _ => match name.strip_prefix("var.") {
                Some(var) => {
                    if let Some(v) = ctx.variables.get(var) {
                        out.push_str(v);
                    }
                }
                None => out.push_str(&rest[start..start + 2 + end + 2]),
            },
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------
// Connection setup.

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where to connect, from the URL (with `model=` added).
#[derive(Debug)]
struct Target {
    /// `host:port`, for messages.
    host: String,
    /// The host to resolve and to name in TLS (no IPv6 brackets).
    connect_host: String,
    port: u16,
    tls: bool,
    /// The `Host` header (port only when not the scheme's default).
    host_header: String,
    /// The request target.
    path_and_query: String,
}

impl Target {
    fn new(cfg: &RealtimeConfig) -> Result<Target, BackendError> {
        let mut url = url::Url::parse(&cfg.url)
            .map_err(|e| BackendError::Config(format!("bad realtime URL: {e}")))?;
        let tls = match url.scheme() {
            "wss" => true,
            "ws" => false,
            other => {
                return Err(BackendError::Config(format!(
                    "realtime URL must be ws:// or wss://, not {other}://"
                )));
            }
        };
        let connect_host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err(BackendError::Config("realtime URL has no host".into())),
        };
        let host_str = url.host_str().unwrap_or_default().to_owned();
        let port = url
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let host_header = match url.port() {
            Some(p) => format!("{host_str}:{p}"),
            None => host_str.clone(),
        };
        let has_model = url
            .query_pairs()
            .any(|(k, _)| k == "model" || k == "deployment");
        if !has_model {
            url.query_pairs_mut().append_pair("model", &cfg.model);
        }
        let path_and_query = url[url::Position::BeforePath..url::Position::AfterQuery].to_owned();
        Ok(Target {
            host: format!("{host_str}:{port}"),
            connect_host,
            port,
            tls,
            host_header,
            path_and_query,
        })
    }
}

/// What (re)connecting needs.
struct Setup {
    target: Target,
    api_key: ApiKey,
    session_json: String,
    azure: bool,
    connect_timeout: Duration,
    reconnect: bool,
    reconnect_budget: Duration,
}

/// Connects, sends `session.update` and waits for `session.updated`; each of the two steps
/// gets `limit`.
async fn open_session(setup: &Setup, limit: Duration) -> Result<Ws, BackendError> {
    let (name, value) = if setup.azure {
        ("api-key", setup.api_key.expose().to_owned())
    } else {
        (
            "Authorization",
            format!("Bearer {}", setup.api_key.expose()),
        )
    };
    if !value
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return Err(BackendError::Config(
            "the API key is not a valid header value".into(),
        ));
    }
    let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
    let dialed = tokio::time::timeout(limit, dial(&setup.target, name, &value)).await;
    let mut ws = match dialed {
        Err(_) => {
            return Err(BackendError::Timeout {
                stage: "realtime connect",
                after_ms: limit_ms,
            });
        }
        Ok(r) => r?,
    };
    debug!(host = %setup.target.host, "realtime socket open; sending session.update");
    ws.send(Message::Text(setup.session_json.clone().into()))
        .await
        .map_err(|e| BackendError::Protocol(format!("cannot send session.update: {e}")))?;

    let deadline = Instant::now() + limit;
    loop {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => {
                return Err(BackendError::Timeout {
                    stage: "realtime session.updated",
                    after_ms: limit_ms,
                });
            }
            Ok(None) => {
                return Err(BackendError::Protocol(
                    "connection closed before session.updated".into(),
                ));
            }
            Ok(Some(Err(e))) => return Err(BackendError::Protocol(e.to_string())),
            Ok(Some(Ok(m))) => m,
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(frame) => {
                return Err(BackendError::Protocol(format!(
                    "server closed the connection during setup{}",
                    frame
                        .map(|f| format!(": {} {}", u16::from(f.code), f.reason))
                        .unwrap_or_default()
                )));
            }
            _ => continue,
        };
        match ServerEvent::parse(text.as_str()) {
            Ok(ServerEvent::SessionUpdated { .. }) => return Ok(ws),
            Ok(ServerEvent::Error { error }) => {
                return Err(BackendError::SessionRejected(format!(
                    "{}{}",
                    error.message,
                    error
                        .param
                        .map(|p| format!(" (param {p})"))
                        .unwrap_or_default()
                )));
            }
            Ok(_) => {}
            Err(e) => debug!(error = %e, "realtime: unparsed event during setup"),
        }
    }
}

/// Largest HTTP response head accepted at upgrade time.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Opens TCP (and TLS for `wss://`) and performs the WebSocket upgrade (RFC 6455 §4.1)
/// itself, so the request, which carries the key, never reaches a logger.
async fn dial(target: &Target, auth_name: &str, auth_value: &str) -> Result<Ws, BackendError> {
    let connect_err = |reason: String| BackendError::Connect {
        host: target.host.clone(),
        reason,
    };
    let tcp = TcpStream::connect((target.connect_host.as_str(), target.port))
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let mut stream = if target.tls {
        let name = ServerName::try_from(target.connect_host.clone())
            .map_err(|e| connect_err(format!("bad TLS server name: {e}")))?;
        let tls = TlsConnector::from(tls_config())
            .connect(name, tcp)
            .await
            .map_err(|e| connect_err(format!("TLS: {e}")))?;
        MaybeTlsStream::Rustls(tls)
    } else {
        MaybeTlsStream::Plain(tcp)
    };

    let key = tungstenite::handshake::client::generate_key();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n{auth_name}: {auth_value}\r\n\r\n",
        target.path_and_query, target.host_header
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| connect_err(e.to_string()))?;

    // Read the response head; bytes after it already belong to the WebSocket.
    let mut buf = Vec::with_capacity(1024);
    let head_len = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(BackendError::Protocol(
                "upgrade response head too long".into(),
            ));
        }
        let mut chunk = [0u8; 2048];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        if n == 0 {
            return Err(BackendError::Protocol(
                "connection closed during the WebSocket upgrade".into(),
            ));
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    };
    let rest = buf.split_off(head_len);
    let head = String::from_utf8_lossy(&buf);
    let response = UpgradeResponse::parse(&head)?;
    match response.status {
        101 => {}
        401 | 403 => {
            return Err(BackendError::Unauthorized {
                status: response.status,
            });
        }
        429 => {
            return Err(BackendError::RateLimited {
                retry_after_s: response
                    .header("retry-after")
                    .and_then(|v| v.trim().parse().ok()),
            });
        }
        status => return Err(BackendError::Http { status }),
    }
    let upgrade_ok = response
        .header("upgrade")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    let accept_ok = response.header("sec-websocket-accept").map(str::trim)
        == Some(tungstenite::handshake::derive_accept_key(key.as_bytes()).as_str());
    if !upgrade_ok || !accept_ok {
        return Err(BackendError::Protocol(
            "the server's 101 answer is not a valid WebSocket upgrade".into(),
        ));
    }
    Ok(WebSocketStream::from_partially_read(stream, rest, WsRole::Client, Some(ws_config())).await)
}

/// The status and headers of the upgrade response.
struct UpgradeResponse {
    status: u16,
    /// Lower-cased names.
    headers: Vec<(String, String)>,
}

impl UpgradeResponse {
    fn parse(head: &str) -> Result<UpgradeResponse, BackendError> {
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.split_whitespace();
        let status = match (parts.next(), parts.next().and_then(|s| s.parse().ok())) {
            (Some(v), Some(status)) if v.starts_with("HTTP/1.") => status,
            _ => {
                return Err(BackendError::Protocol(format!(
                    "not an HTTP response: {:?}",
                    status_line.chars().take(80).collect::<String>()
                )));
            }
        };
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Ok(UpgradeResponse { status, headers })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The TLS client configuration (Mozilla's roots via webpki-roots), built once.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let mut cfg = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(cfg)
        })
        .clone()
}

/// The `response.create` instructions for a greeting.
fn greeting_instructions(greeting: &str) -> String {
    format!("Greet the caller now. Say exactly this and nothing else: {greeting}")
}

async fn send(ws: &mut Ws, ev: &ClientEvent) -> Result<(), tungstenite::Error> {
    ws.send(Message::Text(ev.to_json().into())).await
}

/// Why a live session's connection ended from the far side (the client then reconnects if
/// allowed).
#[derive(Debug, thiserror::Error)]
enum ConnectionLost {
    /// The socket reached its end without a close frame.
    #[error("connection closed")]
    Ended,
    /// Reading or writing the WebSocket failed.
    #[error(transparent)]
    Socket(#[from] tungstenite::Error),
    /// The server sent a close frame.
    #[error("server closed the connection{}", .0.as_ref().map(|(code, reason)| format!(": {code} {reason}")).unwrap_or_default())]
    ClosedByServer(Option<(u16, String)>),
}

// ---------------------------------------------------------------------------------------
// The client task.

/// What the loop does next.
enum Flow {
    Continue,
    /// Close the session (Close command or the handle dropped).
    Stop,
    /// The event receiver is gone: stop without reporting.
    ReceiverGone,
    /// The socket failed; reconnect if allowed.
    Lost(ConnectionLost),
}

/// One utterance of the conversation, for replay after a reconnect.
#[derive(Debug)]
struct HistoryEntry {
    item_id: String,
    role: Role,
    text: Option<String>,
    /// The share of an interrupted assistant item the caller heard.
    heard: Option<f64>,
}

/// The assistant audio item being played.
#[derive(Debug)]
struct AudioItem {
    item_id: String,
    /// Wire bytes received for it.
    bytes: u64,
}

struct Client {
    setup: Arc<Setup>,
    events: mpsc::Sender<BackendEvent>,
    call_format: AudioFormat,
    wire: AudioFormat,
    /// Call rate → 24 kHz, for PCM16 calls at another rate.
    up: Option<Resampler>,
    /// 24 kHz → call rate.
    down: Option<Resampler>,
    active_response: Option<String>,
    /// `response.create`s waiting for the active response to finish.
    deferred: VecDeque<Option<ResponseParams>>,
    audio_item: Option<AudioItem>,
    /// call_id → function name, from `response.output_item.added`.
    functions: HashMap<String, String>,
    history: Vec<HistoryEntry>,
}

impl Client {
    fn new(
        setup: Arc<Setup>,
        call_format: AudioFormat,
        wire: AudioFormat,
        events: mpsc::Sender<BackendEvent>,
    ) -> Result<Client, BackendError> {
        let (up, down) = match call_format {
            AudioFormat::Pcm16 { rate } if rate != PCM_RATE => {
                let e =
                    |e: crate::dsp::resample::ResampleError| BackendError::Config(e.to_string());
                (
                    Some(Resampler::new(rate, PCM_RATE).map_err(e)?),
                    Some(Resampler::new(PCM_RATE, rate).map_err(e)?),
                )
            }
            _ => (None, None),
        };
        Ok(Client {
            setup,
            events,
            call_format,
            wire,
            up,
            down,
            active_response: None,
            deferred: VecDeque::new(),
            audio_item: None,
            functions: HashMap::new(),
            history: Vec::new(),
        })
    }

    async fn run(mut self, mut ws: Ws, mut control: mpsc::Receiver<BackendControl>) {
        loop {
            let flow = tokio::select! {
                msg = ws.next() => self.on_socket(msg, &mut ws).await,
                ctl = control.recv() => match ctl {
                    None | Some(BackendControl::Close) => Flow::Stop,
                    Some(c) => self.on_control(c, &mut ws).await,
                },
            };
            match flow {
                Flow::Continue => {}
                Flow::Stop => {
                    close(&mut ws).await;
                    let _ = self.events.send(BackendEvent::Closed).await;
                    debug!("realtime session closed");
                    return;
                }
                Flow::ReceiverGone => {
                    close(&mut ws).await;
                    return;
                }
                Flow::Lost(reason) => {
                    warn!(%reason, "realtime connection lost");
                    if !self.setup.reconnect {
                        self.fail(format!("realtime connection lost: {reason}"))
                            .await;
                        return;
                    }
                    match self.reconnect().await {
                        Ok(new_ws) => {
                            ws = new_ws;
                            info!("realtime session re-established");
                            if !self.emit(BackendEvent::Reconnected).await {
                                close(&mut ws).await;
                                return;
                            }
                        }
                        Err(e) => {
                            self.fail(format!(
                                "realtime connection lost ({reason}) and reconnecting failed: {e}"
                            ))
                            .await;
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Reports a fatal error and `Closed`.
    async fn fail(&self, message: String) {
        warn!(%message, "realtime backend gives up");
        let _ = self
            .events
            .send(BackendEvent::Error {
                message,
                fatal: true,
            })
            .await;
        let _ = self.events.send(BackendEvent::Closed).await;
    }

    async fn emit(&self, ev: BackendEvent) -> bool {
        self.events.send(ev).await.is_ok()
    }

    /// Reconnects within the budget, re-sends the session and replays the conversation.
    async fn reconnect(&mut self) -> Result<Ws, BackendError> {
        let start = Instant::now();
        let deadline = start + self.setup.reconnect_budget;
        let mut last = BackendError::Timeout {
            stage: "realtime reconnect",
            after_ms: u64::try_from(self.setup.reconnect_budget.as_millis()).unwrap_or(u64::MAX),
        };
        for (attempt, delay) in RECONNECT_BACKOFF_MS.iter().enumerate() {
            let at = Instant::now() + Duration::from_millis(*delay);
            if at >= deadline {
                break;
            }
            tokio::time::sleep_until(at).await;
            let left = deadline.saturating_duration_since(Instant::now());
            let limit = left.min(self.setup.connect_timeout);
            match open_session(&self.setup, limit).await {
                Ok(mut ws) => {
                    debug!(
                        attempt,
                        elapsed_ms = start.elapsed().as_millis() as u64,
                        "realtime reconnected"
                    );
                    self.reset_session_state();
                    for ev in self.replay_events() {
                        send(&mut ws, &ev)
                            .await
                            .map_err(|e| BackendError::Protocol(format!("replay failed: {e}")))?;
                    }
                    return Ok(ws);
                }
                Err(e) => {
                    debug!(attempt, error = %e, "realtime reconnect attempt failed");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Forgets what belonged to the old server session.
    fn reset_session_state(&mut self) {
        self.active_response = None;
        self.deferred.clear();
        self.audio_item = None;
        self.functions.clear();
        if let Some(r) = &mut self.up {
            r.reset();
        }
        if let Some(r) = &mut self.down {
            r.reset();
        }
    }

    /// The conversation so far as `conversation.item.create` events.
    fn replay_events(&self) -> Vec<ClientEvent> {
        self.history
            .iter()
            .filter_map(|h| {
                let text = h.text.as_deref()?;
                let text = match h.heard {
                    Some(share) => cut_text(text, share),
                    None => text.to_owned(),
                };
                if text.trim().is_empty() {
                    return None;
                }
                let (role, part) = match h.role {
                    Role::Caller => (MessageRole::User, ContentPart::InputText { text }),
                    Role::Agent => (MessageRole::Assistant, ContentPart::OutputText { text }),
                };
                Some(ClientEvent::ConversationItemCreate {
                    item: Item::Message {
                        role,
                        content: vec![part],
                    },
                })
            })
            .collect()
    }

    async fn on_socket(
        &mut self,
        msg: Option<Result<Message, tungstenite::Error>>,
        ws: &mut Ws,
    ) -> Flow {
        match msg {
            None => Flow::Lost(ConnectionLost::Ended),
            Some(Err(e)) => Flow::Lost(e.into()),
            Some(Ok(Message::Text(t))) => self.on_server(t.as_str(), ws).await,
            Some(Ok(Message::Close(frame))) => Flow::Lost(ConnectionLost::ClosedByServer(
                frame.map(|f| (u16::from(f.code), f.reason.to_string())),
            )),
            Some(Ok(_)) => Flow::Continue,
        }
    }

    async fn on_server(&mut self, text: &str, ws: &mut Ws) -> Flow {
        let ev = match ServerEvent::parse(text) {
            Ok(ev) => ev,
            Err(e) => {
                warn!(error = %e, "realtime: cannot parse a server event; ignored");
                return Flow::Continue;
            }
        };
        let out = match ev {
            ServerEvent::Error { error } => {
                if error.code.as_deref() == Some(CODE_CANCEL_NOT_ACTIVE) {
                    debug!("realtime: response.cancel found no active response");
                    return Flow::Continue;
                }
                warn!(code = ?error.code, param = ?error.param, message = %error.message, "realtime error event");
                let message = match &error.code {
                    Some(code) => format!("{code}: {}", error.message),
                    None => error.message,
                };
                BackendEvent::Error {
                    message,
                    fatal: false,
                }
            }
            ServerEvent::SessionCreated | ServerEvent::SessionUpdated { .. } => {
                return Flow::Continue;
            }
            ServerEvent::SpeechStarted { audio_start_ms, .. } => {
                BackendEvent::SpeechStarted { audio_start_ms }
            }
            ServerEvent::SpeechStopped { audio_end_ms, .. } => {
                BackendEvent::SpeechStopped { audio_end_ms }
            }
            ServerEvent::Committed { item_id } => {
                self.history_entry(&item_id, Role::Caller);
                return Flow::Continue;
            }
            ServerEvent::InputTranscriptionDelta { delta, .. } => {
                if delta.is_empty() {
                    return Flow::Continue;
                }
                BackendEvent::TranscriptDelta {
                    role: Role::Caller,
                    text: delta,
                }
            }
            ServerEvent::InputTranscriptionCompleted {
                item_id,
                transcript,
            } => {
                self.history_entry(&item_id, Role::Caller).text = Some(transcript.clone());
                BackendEvent::TranscriptFinal {
                    role: Role::Caller,
                    text: transcript,
                    item_id,
                }
            }
            ServerEvent::InputTranscriptionFailed { error, .. } => {
                warn!(message = %error.message, "realtime: caller transcription failed");
                BackendEvent::Error {
                    message: format!("caller transcription failed: {}", error.message),
                    fatal: false,
                }
            }
            ServerEvent::ResponseCreated { response } => {
                debug!(response = %response.id, "realtime response started");
                self.active_response = Some(response.id);
                BackendEvent::ResponseStarted
            }
            ServerEvent::ResponseDone { response } => {
                debug!(response = %response.id, status = ?response.status, "realtime response done");
                if self.active_response.as_deref() == Some(response.id.as_str()) {
                    self.active_response = None;
                }
                if !self.emit(BackendEvent::ResponseDone).await {
                    return Flow::ReceiverGone;
                }
                if self.active_response.is_none()
                    && let Some(params) = self.deferred.pop_front()
                {
                    let ev = ClientEvent::ResponseCreate { response: params };
                    if let Err(e) = send(ws, &ev).await {
                        return Flow::Lost(e.into());
                    }
                }
                return Flow::Continue;
            }
            ServerEvent::OutputItemAdded { item, .. } => {
                match item.kind.as_str() {
                    "message" => {
                        self.history_entry(&item.id, Role::Agent);
                        self.audio_item = Some(AudioItem {
                            item_id: item.id,
                            bytes: 0,
                        });
                    }
                    "function_call" => {
                        if let (Some(call_id), Some(name)) = (item.call_id, item.name) {
                            self.functions.insert(call_id, name);
                        }
                    }
                    _ => {}
                }
                return Flow::Continue;
            }
            ServerEvent::OutputAudioDelta { item_id, delta, .. } => {
                let bytes = match BASE64.decode(delta.as_bytes()) {
                    Ok(b) => b,
                    Err(e) => {
                        warn!(error = %e, "realtime: audio delta is not base64; dropped");
                        return Flow::Continue;
                    }
                };
                match &mut self.audio_item {
                    Some(a) if a.item_id == item_id => a.bytes += bytes.len() as u64,
                    _ => {
                        self.audio_item = Some(AudioItem {
                            item_id,
                            bytes: bytes.len() as u64,
                        });
                    }
                }
                match self.call_chunk(bytes, false) {
                    Some(chunk) => BackendEvent::Audio(chunk),
                    None => return Flow::Continue,
                }
            }
            ServerEvent::OutputAudioDone { .. } => match self.call_chunk(Vec::new(), true) {
                Some(chunk) => BackendEvent::Audio(chunk),
                None => return Flow::Continue,
            },
            ServerEvent::OutputAudioTranscriptDelta { delta, .. } => {
                BackendEvent::TranscriptDelta {
                    role: Role::Agent,
                    text: delta,
                }
            }
            ServerEvent::OutputAudioTranscriptDone {
                item_id,
                transcript,
            } => {
                self.history_entry(&item_id, Role::Agent).text = Some(transcript.clone());
                BackendEvent::TranscriptFinal {
                    role: Role::Agent,
                    text: transcript,
                    item_id,
                }
            }
            ServerEvent::FunctionCallArgumentsDone {
                call_id,
                name,
                arguments,
                ..
            } => {
                let name = name
                    .or_else(|| self.functions.get(&call_id).cloned())
                    .unwrap_or_default();
                self.functions.insert(call_id.clone(), name.clone());
                match serde_json::from_str::<serde_json::Value>(&arguments) {
                    Ok(arguments) => BackendEvent::ToolCall {
                        call_id,
                        name,
                        arguments,
                    },
                    Err(e) => {
                        warn!(tool = %name, error = %e, "realtime: tool arguments are not JSON");
                        let output = serde_json::json!({
                            "error": format!("arguments are not valid JSON: {e}")
                        })
                        .to_string();
                        if let Err(e) = self.tool_output(ws, call_id, output, true).await {
                            return Flow::Lost(e.into());
                        }
                        BackendEvent::Error {
                            message: format!("tool {name}: arguments are not valid JSON: {e}"),
                            fatal: false,
                        }
                    }
                }
            }
            ServerEvent::ItemTruncated {
                item_id,
                audio_end_ms,
            } => {
                debug!(item = %item_id, audio_end_ms, "realtime item truncated");
                return Flow::Continue;
            }
            ServerEvent::RateLimitsUpdated { rate_limits } => {
                for l in &rate_limits {
                    debug!(name = ?l.name, limit = ?l.limit, remaining = ?l.remaining,
                        reset_seconds = ?l.reset_seconds, "realtime rate limit");
                    if l.remaining == Some(0) {
                        warn!(name = ?l.name, reset_seconds = ?l.reset_seconds,
                            "realtime rate limit exhausted");
                    }
                }
                return Flow::Continue;
            }
            ServerEvent::Other => {
                trace!("realtime: event ignored");
                return Flow::Continue;
            }
        };
        if self.emit(out).await {
            Flow::Continue
        } else {
            Flow::ReceiverGone
        }
    }

    async fn on_control(&mut self, c: BackendControl, ws: &mut Ws) -> Flow {
        let respond = !matches!(c, BackendControl::ToolResultNoReply { .. });
        let result = match c {
            BackendControl::Audio(chunk) => {
                if chunk.format != self.call_format {
                    debug!(got = ?chunk.format, want = ?self.call_format, "realtime: audio in the wrong format dropped");
                    return Flow::Continue;
                }
                let Some(bytes) = self.wire_bytes(&chunk.data) else {
                    return Flow::Continue;
                };
                let ev = ClientEvent::InputAudioBufferAppend {
                    audio: BASE64.encode(&bytes),
                };
                send(ws, &ev).await
            }
            BackendControl::Interrupt { heard_ms } => self.interrupt(ws, heard_ms).await,
            BackendControl::ToolResult { call_id, output }
            | BackendControl::ToolResultNoReply { call_id, output } => {
                if !self.functions.contains_key(&call_id) {
                    warn!(call = %call_id, "realtime: result for an unknown tool call dropped");
                    let ok = self
                        .emit(BackendEvent::Error {
                            message: format!("no pending tool call {call_id} (after a reconnect?)"),
                            fatal: false,
                        })
                        .await;
                    return if ok {
                        Flow::Continue
                    } else {
                        Flow::ReceiverGone
                    };
                }
                self.tool_output(ws, call_id, output, respond).await
            }
            BackendControl::Say { instructions } => {
                self.request_response(
                    ws,
                    Some(ResponseParams {
                        instructions: Some(instructions),
                    }),
                )
                .await
            }
            BackendControl::Close => return Flow::Stop,
        };
        match result {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::Lost(e.into()),
        }
    }

    /// Barge-in: cancel the response in progress and truncate the audio item being played
    /// to what the caller heard (never beyond what was received).
    async fn interrupt(&mut self, ws: &mut Ws, heard_ms: u64) -> Result<(), tungstenite::Error> {
        if let Some(id) = &self.active_response {
            send(
                ws,
                &ClientEvent::ResponseCancel {
                    response_id: Some(id.clone()),
                },
            )
            .await?;
        }
        if let Some(r) = &mut self.down {
            r.reset();
        }
        let Some(item) = self.audio_item.take() else {
            return Ok(());
        };
        let received_ms = self.wire.duration_ms(item.bytes);
        let audio_end_ms = heard_ms.min(received_ms);
        debug!(item = %item.item_id, heard_ms, received_ms, "realtime: truncating");
        if let Some(h) = self.history.iter_mut().find(|h| h.item_id == item.item_id) {
            h.heard = Some(if received_ms == 0 {
                0.0
            } else {
                audio_end_ms as f64 / received_ms as f64
            });
        }
        send(
            ws,
            &ClientEvent::ConversationItemTruncate {
                item_id: item.item_id,
                content_index: 0,
                audio_end_ms,
            },
        )
        .await
    }

    async fn tool_output(
        &mut self,
        ws: &mut Ws,
        call_id: String,
        output: String,
        respond: bool,
    ) -> Result<(), tungstenite::Error> {
        self.functions.remove(&call_id);
        send(
            ws,
            &ClientEvent::ConversationItemCreate {
                item: Item::FunctionCallOutput { call_id, output },
            },
        )
        .await?;
        if !respond {
            return Ok(());
        }
        self.request_response(ws, None).await
    }

    /// Sends `response.create` now, or after the active response is done.
    async fn request_response(
        &mut self,
        ws: &mut Ws,
        params: Option<ResponseParams>,
    ) -> Result<(), tungstenite::Error> {
        if self.active_response.is_some() {
            self.deferred.push_back(params);
            return Ok(());
        }
        send(ws, &ClientEvent::ResponseCreate { response: params }).await
    }

    /// The history entry of `item_id`, created (in arrival order) if new.
    fn history_entry(&mut self, item_id: &str, role: Role) -> &mut HistoryEntry {
        let pos = match self.history.iter().position(|h| h.item_id == item_id) {
            Some(p) => p,
            None => {
                self.history.push(HistoryEntry {
                    item_id: item_id.to_owned(),
                    role,
                    text: None,
                    heard: None,
                });
                self.history.len() - 1
            }
        };
        // invariant: `pos` is an index found in, or just pushed to, `history`.
        &mut self.history[pos]
    }

    /// Call-format bytes → wire bytes (resampled for PCM16 calls not at 24 kHz).
    fn wire_bytes(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        let Some(up) = &mut self.up else {
            return Some(data.to_vec());
        };
        let mut out = Vec::new();
        if let Err(e) = up.process(&pcm16_from_le(data), &mut out) {
            warn!(error = %e, "realtime: resampling caller audio failed");
            return None;
        }
        (!out.is_empty()).then(|| pcm16_to_le(&out))
    }

    /// Wire bytes → a call-format chunk; `flush` ends the stream (end of an audio item).
    fn call_chunk(&mut self, data: Vec<u8>, flush: bool) -> Option<AudioChunk> {
        let data = match &mut self.down {
            None => {
                if data.is_empty() {
                    return None;
                }
                data
            }
            Some(down) => {
                let mut out = Vec::new();
                let r = if flush {
                    down.flush(&mut out)
                } else {
                    down.process(&pcm16_from_le(&data), &mut out)
                };
                if let Err(e) = r {
                    warn!(error = %e, "realtime: resampling agent audio failed");
                    return None;
                }
                if out.is_empty() {
                    return None;
                }
                pcm16_to_le(&out)
            }
        };
        Some(AudioChunk {
            format: self.call_format,
            data: Bytes::from(data),
        })
    }
}

async fn close(ws: &mut Ws) {
    let _ = tokio::time::timeout(Duration::from_millis(500), ws.close(None)).await;
}

fn pcm16_to_le(samples: &[i16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * 2);
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// The first `share` (0..=1) of `text`, cut back to a word boundary.
fn cut_text(text: &str, share: f64) -> String {
    if share >= 1.0 {
        return text.to_owned();
    }
    let chars = text.chars().count();
    let keep = ((chars as f64) * share.max(0.0)).floor() as usize;
    let cut: String = text.chars().take(keep).collect();
    if keep < chars && !text.chars().nth(keep).is_some_and(char::is_whitespace) {
        match cut.rfind(char::is_whitespace) {
            Some(p) => cut[..p].trim_end().to_owned(),
            None => String::new(),
        }
    } else {
        cut.trim_end().to_owned()
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian; times before 1970 print as 1970).
fn format_utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The WebSocket settings: an 8 KiB read buffer instead of the library's 128 KiB, which it
/// zero-fills before every read (13 % of voxline's CPU with 200 realtime calls) and which was
/// most of the memory per call; events are a few KiB at most, larger frames still work (the
/// buffer only sets how much is read per system call).
fn ws_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default().read_buffer_size(WS_READ_BUFFER)
}

/// Bytes read from the socket per read (see [`ws_config`]).
const WS_READ_BUFFER: usize = 8 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ctx() -> CallContext {
        CallContext {
            caller: "+15551230000".into(),
            called: "100".into(),
            direction: "inbound".into(),
            variables: BTreeMap::from([("lang".to_owned(), "fr".to_owned())]),
            call_format: AudioFormat::Pcmu8k,
            tools: vec![],
        }
    }

    #[test]
    fn templates() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let s = render_instructions(
            "From {{caller}} to {{ called }} ({{direction}}) at {{time}} in {{var.lang}}{{var.none}}; {{other}} {{open",
            &ctx(),
            now,
        );
        assert_eq!(
            s,
            "From +15551230000 to 100 (inbound) at 2023-11-14 22:13:20 UTC in fr; {{other}} {{open"
        );
        assert_eq!(format_utc(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            format_utc(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29 00:00:00 UTC"
        );
    }

    #[test]
    fn api_key_is_redacted() {
        let cfg = RealtimeConfig {
            api_key: Some(ApiKey::new("sk-secret-123")),
            ..RealtimeConfig::default()
        };
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("sk-secret-123"), "{dbg}");
        assert!(dbg.contains("ApiKey(***)"));
    }

    #[test]
    fn target_url() {
        let t = Target::new(&RealtimeConfig::default()).unwrap();
        assert_eq!(t.host, "api.openai.com:443");
        assert_eq!(t.host_header, "api.openai.com");
        assert_eq!(t.path_and_query, "/v1/realtime?model=gpt-realtime");
        assert!(t.tls);
        let t = Target::new(&RealtimeConfig {
            url: "ws://[::1]:8765/v1/realtime".into(),
            model: "m x".into(),
            ..RealtimeConfig::default()
        })
        .unwrap();
        assert_eq!((t.connect_host.as_str(), t.port), ("::1", 8765));
        assert_eq!(t.host_header, "[::1]:8765");
        assert_eq!(t.path_and_query, "/v1/realtime?model=m+x");
        let t = Target::new(&RealtimeConfig {
            url: "wss://x.openai.azure.com/openai/realtime?api-version=2025-04-01-preview&deployment=rt".into(),
            azure: true,
            ..RealtimeConfig::default()
        })
        .unwrap();
        assert!(!t.path_and_query.contains("model="));
        assert_eq!(t.host, "x.openai.azure.com:443");
        assert!(matches!(
            Target::new(&RealtimeConfig {
                url: "https://api.openai.com/v1/realtime".into(),
                ..RealtimeConfig::default()
            }),
            Err(BackendError::Config(_))
        ));
    }

    #[test]
    fn upgrade_response() {
        let r = UpgradeResponse::parse(
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 12\r\nX: a:b\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after"), Some("12"));
        assert_eq!(r.header("x"), Some("a:b"));
        assert!(UpgradeResponse::parse("SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    #[test]
    fn text_cut() {
        assert_eq!(cut_text("hello there world", 1.0), "hello there world");
        assert_eq!(cut_text("hello there world", 0.5), "hello");
        assert_eq!(cut_text("hello there world", 0.7), "hello there");
        assert_eq!(cut_text("hello", 0.5), "");
        assert_eq!(cut_text("hello", 0.0), "");
    }

    #[test]
    fn wire_formats() {
        assert_eq!(
            wire_format(AudioFormat::Pcma8k).unwrap(),
            AudioFormat::Pcma8k
        );
        assert_eq!(
            wire_format(AudioFormat::Pcm16 { rate: 16000 }).unwrap(),
            AudioFormat::Pcm16 { rate: 24000 }
        );
        assert!(wire_format(AudioFormat::Pcm16 { rate: 0 }).is_err());
    }
}
