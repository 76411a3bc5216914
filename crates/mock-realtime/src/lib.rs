//! A local mock of the OpenAI Realtime API (GA protocol), for tests and for the
//! `voxline-mock-realtime` tool.
//!
//! It speaks enough of the protocol to catch client mistakes, and is strict where the real
//! server is: it checks the `Authorization: Bearer` (or Azure `api-key`) header and the
//! `model` query parameter at upgrade time, and refuses beta clients (`OpenAI-Beta`
//! header); it validates every client event field by field against the GA reference
//! (unknown or beta field names such as `session.input_audio_format`, `session.voice` or
//! `session.temperature` get an `error` event with code `unknown_parameter`, like the real
//! server); it decodes appended audio in the session's input format and runs an energy VAD
//! (speech after [`MockConfig::vad_start_ms`] above [`MockConfig::vad_rms_threshold`], end
//! after the session's `silence_duration_ms` of quiet), then commits, optionally
//! "transcribes" (`caller said N ms`) and responds with audio in the session's output format
//! in [`MockConfig::chunk_ms`] deltas, paced in real time if [`MockConfig::pace`]; it can
//! answer a scripted turn with a function call and then waits for its
//! `function_call_output` and `response.create`; it rejects a `conversation.item.truncate`
//! beyond the audio it has sent for that item and records the ones it accepts, and it
//! deletes items on `conversation.item.delete` (an unknown item is an error).
//!
//! It deliberately does not reuse `voxline::agent::realtime::protocol`: it reads the client's JSON with its
//! own rules, and has its own G.711 codec, so a mistake on the client side is not mirrored.
//!
//! Everything received and decided is recorded for assertions ([`MockServer::received_events`],
//! [`MockServer::sessions`], [`MockServer::audio_received_bytes`], [`MockServer::truncations`],
//! …), and [`MockServer::drop_connections`] cuts every connection without a closing
//! handshake.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tracing::{debug, warn};

use voxline::dsp::resample::resample_all;

/// The mock's output sample rate for `audio/pcm` (the only rate the GA API allows).
pub const PCM_RATE: u32 = 24_000;

/// Session fields of the beta protocol that the GA session rejects.
pub const BETA_SESSION_FIELDS: &[&str] = &[
    "modalities",
    "voice",
    "input_audio_format",
    "output_audio_format",
    "input_audio_transcription",
    "input_audio_noise_reduction",
    "turn_detection",
    "temperature",
    "max_response_output_tokens",
    "speed",
];

/// What the mock does.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// The key the client must present.
    pub api_key: String,
    /// Expect the key in an `api-key` header (Azure) instead of `Authorization: Bearer`.
    pub azure: bool,
    /// Refuse every upgrade with this HTTP status (401, 429…).
    pub reject_status: Option<u16>,
    /// RMS (PCM16 scale) above which a 10 ms frame counts as speech.
    pub vad_rms_threshold: f64,
    /// Speech must last this long before `speech_started`.
    pub vad_start_ms: u64,
    /// The audio of every reply: mono PCM16 at 24 kHz.
    pub reply_pcm24k: Vec<i16>,
    /// The transcript of every reply.
    pub reply_text: String,
    /// Audio per `response.output_audio.delta`, ms.
    pub chunk_ms: u64,
    /// Send deltas in real time (one per `chunk_ms`) instead of all at once.
    pub pace: bool,
    /// Answer a user turn with a function call.
    pub tool_call: Option<ToolScript>,
}

/// A scripted function call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolScript {
    /// The user turn (1 = the first committed utterance) answered with the call.
    pub on_turn: u32,
    /// The function's name.
    pub name: String,
    /// The arguments string, sent as is (may be invalid JSON on purpose).
    pub arguments: String,
}

impl Default for MockConfig {
    fn default() -> MockConfig {
        MockConfig {
            api_key: "sk-mock".to_owned(),
            azure: false,
            reject_status: None,
            vad_rms_threshold: 1000.0,
            vad_start_ms: 60,
            reply_pcm24k: tone(440.0, 8000.0, 1000, PCM_RATE),
            reply_text: "Hello from the mock realtime server".to_owned(),
            chunk_ms: 40,
            pace: false,
            tool_call: None,
        }
    }
}

/// A truncation the mock accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// The assistant item.
    pub item_id: String,
    /// The `audio_end_ms` the client sent.
    pub audio_end_ms: u64,
    /// How much audio of that item the mock had sent, ms.
    pub audio_sent_ms: u64,
}

/// A running mock server. Dropping it stops accepting and cuts every connection.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl MockServer {
    /// Starts on `127.0.0.1` with an ephemeral port.
    pub async fn start(cfg: MockConfig) -> std::io::Result<MockServer> {
        MockServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).await
    }

    /// Starts on `addr`.
    pub async fn bind(addr: SocketAddr, cfg: MockConfig) -> std::io::Result<MockServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let reply_8k = resample_all(&cfg.reply_pcm24k, PCM_RATE, 8000).unwrap_or_default();
        let (drop_tx, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            cfg,
            reply_8k,
            rec: Mutex::new(Recorded::default()),
            drop_tx,
            accepting: AtomicBool::new(true),
            ids: AtomicU64::new(1),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(MockServer {
            addr,
            shared,
            accept,
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR/v1/realtime`.
    pub fn url(&self) -> String {
        format!("ws://{}/v1/realtime", self.addr)
    }

    /// Every client event received (parsed JSON, invalid ones too), in order.
    pub fn received_events(&self) -> Vec<Value> {
        self.shared.rec().events.clone()
    }

    /// The received events of one `type`.
    pub fn received_of_type(&self, kind: &str) -> Vec<Value> {
        self.shared
            .rec()
            .events
            .iter()
            .filter(|e| e.get("type").and_then(Value::as_str) == Some(kind))
            .cloned()
            .collect()
    }

    /// The `session` objects of the `session.update`s the mock accepted, in order.
    pub fn sessions(&self) -> Vec<Value> {
        self.shared.rec().sessions.clone()
    }

    /// All appended input audio, base64-decoded, across connections.
    pub fn audio_received_bytes(&self) -> Vec<u8> {
        self.shared.rec().audio_in.clone()
    }

    /// All output audio sent, decoded, across connections.
    pub fn audio_sent_bytes(&self) -> Vec<u8> {
        self.shared.rec().audio_out.clone()
    }

    /// The truncations accepted.
    pub fn truncations(&self) -> Vec<Truncation> {
        self.shared.rec().truncations.clone()
    }

    /// The items deleted with `conversation.item.delete`.
    pub fn deletions(&self) -> Vec<String> {
        self.shared.rec().deletions.clone()
    }

    /// The `error` objects the mock sent.
    pub fn errors_sent(&self) -> Vec<Value> {
        self.shared.rec().errors.clone()
    }

    /// `(call_id, output)` of the function outputs received.
    pub fn tool_outputs(&self) -> Vec<(String, String)> {
        self.shared.rec().tool_outputs.clone()
    }

    /// The items of the accepted `conversation.item.create`s.
    pub fn items_created(&self) -> Vec<Value> {
        self.shared.rec().items_created.clone()
    }

    /// How often the server VAD heard the caller start talking
    /// (`input_audio_buffer.speech_started` sent).
    pub fn speech_starts(&self) -> u64 {
        self.shared.rec().speech_starts
    }

    /// WebSocket upgrades accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.rec().connections
    }

    /// Cuts every open connection at once, without a closing handshake.
    pub fn drop_connections(&self) {
        self.shared.drop_tx.send_modify(|g| *g += 1);
    }

    /// Stop (or resume) accepting: new TCP connections are closed at once.
    pub fn set_accepting(&self, on: bool) {
        self.shared.accepting.store(on, Ordering::SeqCst);
    }

    /// Waits until `cond` holds (checked every 10 ms), at most `limit`. Returns whether it
    /// held.
    pub async fn wait_until(&self, limit: Duration, cond: impl Fn(&MockServer) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.accept.abort();
        self.drop_connections();
    }
}

/// `ms` of a sine at `hz` with peak `amplitude`, at `rate` Hz.
pub fn tone(hz: f64, amplitude: f64, ms: u64, rate: u32) -> Vec<i16> {
    let n = u64::from(rate) * ms / 1000;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            (amplitude * (2.0 * std::f64::consts::PI * hz * t).sin()).round() as i16
        })
        .collect()
}

/// G.711 μ-law encoding of one sample (on the 14-bit magnitude, bias 33, as in the ITU-T
/// reference code).
pub fn ulaw_encode(pcm: i16) -> u8 {
    const BIAS: i32 = 0x84 >> 2;
    const CLIP: i32 = 8159;
    let mut s = i32::from(pcm) >> 2;
    let mask = if s < 0 {
        s = -s;
        0x7f
    } else {
        0xff
    };
    s = s.min(CLIP) + BIAS;
    let mut segment = 0;
    while segment < 8 && s >= (0x40 << segment) {
        segment += 1;
    }
    if segment >= 8 {
        return (0x7f ^ mask) as u8;
    }
    (((segment << 4) | ((s >> (segment + 1)) & 0x0f)) ^ mask) as u8
}

/// G.711 μ-law decoding of one code.
pub fn ulaw_decode(code: u8) -> i16 {
    let c = !code;
    let sign = c & 0x80;
    let exponent = i32::from((c >> 4) & 0x07);
    let mantissa = i32::from(c & 0x0f);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

/// G.711 A-law encoding of one sample.
pub fn alaw_encode(pcm: i16) -> u8 {
    let mut s = i32::from(pcm);
    let sign = if s >= 0 {
        0x80
    } else {
        s = -s - 1;
        0
    };
    s = s.min(32767) >> 3;
    let code = if s < 32 {
        s >> 1
    } else {
        let mut exponent = 1;
        while exponent < 7 && s >= (64 << (exponent - 1)) {
            exponent += 1;
        }
        (exponent << 4) | ((s >> exponent) & 0x0f)
    };
    ((sign | code) as u8) ^ 0x55
}

/// G.711 A-law decoding of one code.
pub fn alaw_decode(code: u8) -> i16 {
    let c = code ^ 0x55;
    let sign = c & 0x80;
    let exponent = i32::from((c >> 4) & 0x07);
    let mantissa = i32::from(c & 0x0f);
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    (if sign != 0 { magnitude } else { -magnitude }) as i16
}

// ---------------------------------------------------------------------------------------
// Shared state.

#[derive(Debug)]
struct Shared {
    cfg: MockConfig,
    /// The reply resampled to 8 kHz for the G.711 formats.
    reply_8k: Vec<i16>,
    rec: Mutex<Recorded>,
    drop_tx: watch::Sender<u64>,
    accepting: AtomicBool,
    ids: AtomicU64,
}

impl Shared {
    fn rec(&self) -> MutexGuard<'_, Recorded> {
        // A panic while holding the lock cannot leave the records inconsistent (each update
        // is one push), so a poisoned lock is still usable.
        self.rec.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn id(&self, prefix: &str) -> String {
        format!("{prefix}_{:06}", self.ids.fetch_add(1, Ordering::Relaxed))
    }
}

#[derive(Debug, Default)]
struct Recorded {
    events: Vec<Value>,
    sessions: Vec<Value>,
    audio_in: Vec<u8>,
    audio_out: Vec<u8>,
    truncations: Vec<Truncation>,
    deletions: Vec<String>,
    errors: Vec<Value>,
    tool_outputs: Vec<(String, String)>,
    items_created: Vec<Value>,
    connections: u64,
    speech_starts: u64,
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "mock realtime: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !shared.accepting.load(Ordering::SeqCst) {
            drop(stream);
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(stream, shared).await {
                debug!(%peer, error = %e, "mock realtime: connection ended");
            }
        });
    }
}

/// Checks the upgrade request (auth header, model, no beta header).
fn check_upgrade(cfg: &MockConfig, req: &Request) -> Result<(), (u16, String)> {
    if let Some(status) = cfg.reject_status {
        return Err((status, format!("mock configured to refuse with {status}")));
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let authorized = if cfg.azure {
        header("api-key") == Some(cfg.api_key.as_str())
    } else {
        header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|k| k == cfg.api_key)
    };
    if !authorized {
        return Err((401, "Incorrect API key provided.".into()));
    }
    if header("openai-beta").is_some() {
        return Err((
            400,
            "this mock speaks the GA protocol only; do not send OpenAI-Beta".into(),
        ));
    }
    let query = req.uri().query().unwrap_or("");
    let has_model = query
        .split('&')
        .any(|kv| kv.starts_with("model=") || kv.starts_with("deployment="));
    if !has_model {
        return Err((400, "missing required query parameter: model".into()));
    }
    Ok(())
}

fn error_response(status: u16, message: &str) -> ErrorResponse {
    let body = json!({"error": {"message": message, "type": "invalid_request_error"}});
    let mut r = ErrorResponse::new(Some(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    if status == 429 {
        r.headers_mut()
            .insert("retry-after", HeaderValue::from_static("7"));
    }
    r
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) -> Result<(), String> {
    // Like a real server: small events go out at once (without it, Nagle holds the burst of
    // events that ends a turn until the client's next audio append acknowledges the first).
    let _ = stream.set_nodelay(true);
    let cfg = shared.cfg.clone();
    // The error type is tungstenite's callback contract.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| match check_upgrade(&cfg, req) {
        Ok(()) => Ok(resp),
        Err((status, message)) => Err(error_response(status, &message)),
    };
    let ws = tokio_tungstenite::accept_hdr_async(stream, callback)
        .await
        .map_err(|e| e.to_string())?;
    shared.rec().connections += 1;
    let mut drop_rx = shared.drop_tx.subscribe();
    let mut conn = Conn::new(shared, ws);
    conn.send_session_created().await?;
    loop {
        let next_at = conn.response.as_ref().map(|r| r.next_at);
        tokio::select! {
            msg = conn.ws.next() => match msg {
                None => return Ok(()),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(Message::Text(t))) => conn.on_text(t.as_str()).await?,
                Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => {}
            },
            _ = drop_rx.changed() => {
                debug!("mock realtime: dropping the connection");
                return Ok(());
            }
            _ = sleep_until_opt(next_at) => conn.step_response().await?,
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

// ---------------------------------------------------------------------------------------
// One connection.

/// A client-event rejection: becomes an `error` event.
#[derive(Debug)]
struct Reject {
    code: &'static str,
    message: String,
    param: Option<String>,
}

impl Reject {
    fn new(code: &'static str, message: impl Into<String>, param: Option<&str>) -> Reject {
        Reject {
            code,
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }
}

type Checked<T = ()> = Result<T, Reject>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fmt {
    Pcm,
    Pcmu,
    Pcma,
}

impl Fmt {
    fn rate(self) -> u32 {
        match self {
            Fmt::Pcm => PCM_RATE,
            Fmt::Pcmu | Fmt::Pcma => 8000,
        }
    }

    fn bytes_per_ms(self) -> u64 {
        match self {
            Fmt::Pcm => 48,
            Fmt::Pcmu | Fmt::Pcma => 8,
        }
    }

    fn decode(self, bytes: &[u8]) -> Vec<i16> {
        match self {
            Fmt::Pcm => bytes
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect(),
            Fmt::Pcmu => bytes.iter().map(|&c| ulaw_decode(c)).collect(),
            Fmt::Pcma => bytes.iter().map(|&c| alaw_decode(c)).collect(),
        }
    }

    fn encode(self, samples: &[i16]) -> Vec<u8> {
        match self {
            Fmt::Pcm => samples.iter().flat_map(|s| s.to_le_bytes()).collect(),
            Fmt::Pcmu => samples.iter().map(|&s| ulaw_encode(s)).collect(),
            Fmt::Pcma => samples.iter().map(|&s| alaw_encode(s)).collect(),
        }
    }
}

/// Turn detection as configured.
#[derive(Debug, Clone, Copy)]
struct Turns {
    silence_ms: u64,
    prefix_ms: u64,
    create_response: bool,
    interrupt_response: bool,
}

#[derive(Debug, Default)]
struct Vad {
    /// 10 ms frames seen.
    total_ms: u64,
    leftover: Vec<i16>,
    speaking: bool,
    loud_ms: u64,
    first_loud_ms: u64,
    quiet_ms: u64,
    start_ms: u64,
    item_id: String,
    /// Audio appended since the last commit.
    uncommitted: bool,
}

#[derive(Debug)]
enum ItemKind {
    User,
    /// An assistant audio message and how much of its audio was sent.
    Assistant {
        sent_bytes: u64,
        fmt: Fmt,
    },
    FunctionCall,
    FunctionCallOutput {
        output: String,
    },
    Other,
}

#[derive(Debug)]
struct ActiveResponse {
    id: String,
    item_id: String,
    chunks: VecDeque<Vec<u8>>,
    words: VecDeque<String>,
    transcript: String,
    full_text: String,
    next_at: Instant,
}

struct Conn {
    shared: Arc<Shared>,
    ws: WebSocketStream<TcpStream>,
    /// The effective session (GA shape).
    session: Value,
    input: Fmt,
    output: Fmt,
    turns: Option<Turns>,
    transcribe: bool,
    vad: Vad,
    user_turns: u32,
    items: HashMap<String, ItemKind>,
    last_item: Option<String>,
    response: Option<ActiveResponse>,
    pending_calls: HashSet<String>,
}

impl Conn {
    fn new(shared: Arc<Shared>, ws: WebSocketStream<TcpStream>) -> Conn {
        let session = json!({
            "type": "realtime",
            "object": "realtime.session",
            "id": shared.id("sess"),
            "model": "gpt-realtime",
            "output_modalities": ["audio"],
            "instructions": "",
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": PCM_RATE},
                    "transcription": null,
                    "noise_reduction": null,
                    "turn_detection": {
                        "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                        "silence_duration_ms": 500, "create_response": true,
                        "interrupt_response": true, "idle_timeout_ms": null
                    }
                },
                "output": {
                    "format": {"type": "audio/pcm", "rate": PCM_RATE},
                    "voice": "alloy",
                    "speed": 1.0
                }
            }
        });
        let mut c = Conn {
            shared,
            ws,
            session,
            input: Fmt::Pcm,
            output: Fmt::Pcm,
            turns: None,
            transcribe: false,
            vad: Vad::default(),
            user_turns: 0,
            items: HashMap::new(),
            last_item: None,
            response: None,
            pending_calls: HashSet::new(),
        };
        c.apply_session();
        c
    }

    async fn send(&mut self, mut ev: Value) -> Result<(), String> {
        if let Some(o) = ev.as_object_mut() {
            o.insert("event_id".into(), Value::String(self.shared.id("event")));
        }
        self.ws
            .send(Message::Text(ev.to_string().into()))
            .await
            .map_err(|e| e.to_string())
    }

    async fn send_error(
        &mut self,
        r: Reject,
        client_event_id: Option<String>,
    ) -> Result<(), String> {
        let error = json!({
            "type": "invalid_request_error",
            "code": r.code,
            "message": r.message,
            "param": r.param,
            "event_id": client_event_id,
        });
        debug!(%error, "mock realtime: rejecting a client event");
        self.shared.rec().errors.push(error.clone());
        self.send(json!({"type": "error", "error": error})).await
    }

    async fn send_session_created(&mut self) -> Result<(), String> {
        let session = self.session.clone();
        self.send(json!({"type": "session.created", "session": session}))
            .await
    }

    async fn on_text(&mut self, text: &str) -> Result<(), String> {
        let ev: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return self
                    .send_error(
                        Reject::new("invalid_json", format!("invalid JSON: {e}"), None),
                        None,
                    )
                    .await;
            }
        };
        self.shared.rec().events.push(ev.clone());
        let event_id = ev
            .get("event_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Err(r) = self.dispatch(&ev).await {
            let r = match r {
                Dispatch::Reject(r) => r,
                Dispatch::Io(e) => return Err(e),
            };
            self.send_error(r, event_id).await?;
        }
        Ok(())
    }

    async fn dispatch(&mut self, ev: &Value) -> Result<(), Dispatch> {
        let obj = ev
            .as_object()
            .ok_or_else(|| Reject::new("invalid_type", "an event must be a JSON object", None))?;
        let kind = obj
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Reject::new(
                    "missing_required_parameter",
                    "Missing required parameter: 'type'.",
                    Some("type"),
                )
            })?
            .to_owned();
        if let Some(id) = obj.get("event_id")
            && !id.is_string()
        {
            return Err(invalid_type("event_id", "a string").into());
        }
        match kind.as_str() {
            "session.update" => {
                allow_keys(obj, "", &["type", "event_id", "session"])?;
                let session = obj.get("session").ok_or_else(|| missing("session"))?;
                validate_session(session)?;
                self.shared.rec().sessions.push(session.clone());
                merge(&mut self.session, session);
                self.apply_session();
                let s = self.session.clone();
                self.send(json!({"type": "session.updated", "session": s}))
                    .await?;
            }
            "input_audio_buffer.append" => {
                allow_keys(obj, "", &["type", "event_id", "audio"])?;
                let audio = obj
                    .get("audio")
                    .ok_or_else(|| missing("audio"))?
                    .as_str()
                    .ok_or_else(|| invalid_type("audio", "a base64 string"))?;
                let bytes = BASE64.decode(audio.as_bytes()).map_err(|e| {
                    Reject::new(
                        "invalid_value",
                        format!("Invalid 'audio': not base64 ({e})."),
                        Some("audio"),
                    )
                })?;
                if self.input == Fmt::Pcm && bytes.len() % 2 != 0 {
                    return Err(Reject::new(
                        "invalid_value",
                        "Invalid 'audio': PCM16 audio must be a whole number of samples.",
                        Some("audio"),
                    )
                    .into());
                }
                self.shared.rec().audio_in.extend_from_slice(&bytes);
                self.on_audio(&bytes).await?;
            }
            "input_audio_buffer.commit" => {
                allow_keys(obj, "", &["type", "event_id"])?;
                if !self.vad.uncommitted {
                    return Err(Reject::new(
                        "input_audio_buffer_commit_empty",
                        "Error committing input audio buffer: buffer is empty.",
                        None,
                    )
                    .into());
                }
                let item = self.shared.id("item");
                self.commit(item).await?;
            }
            "input_audio_buffer.clear" => {
                allow_keys(obj, "", &["type", "event_id"])?;
                self.vad.uncommitted = false;
                self.vad.speaking = false;
                self.send(json!({"type": "input_audio_buffer.cleared"}))
                    .await?;
            }
            "response.create" => {
                allow_keys(obj, "", &["type", "event_id", "response"])?;
                if let Some(r) = obj.get("response") {
                    validate_response_params(r)?;
                }
                if self.response.is_some() {
                    return Err(Reject::new(
                        "conversation_already_has_active_response",
                        "Conversation already has an active response in progress.",
                        None,
                    )
                    .into());
                }
                self.start_audio_response().await?;
            }
            "response.cancel" => {
                allow_keys(obj, "", &["type", "event_id", "response_id"])?;
                let wanted = match obj.get("response_id") {
                    None => None,
                    Some(v) => Some(
                        v.as_str()
                            .ok_or_else(|| invalid_type("response_id", "a string"))?
                            .to_owned(),
                    ),
                };
                let active = self.response.as_ref().map(|r| r.id.clone());
                match (active, wanted) {
                    (None, _) => {
                        return Err(Reject::new(
                            "response_cancel_not_active",
                            "Cancellation failed: no active response found",
                            None,
                        )
                        .into());
                    }
                    (Some(a), Some(w)) if a != w => {
                        return Err(Reject::new(
                            "response_cancel_not_active",
                            format!("Cancellation failed: response {w} is not active"),
                            Some("response_id"),
                        )
                        .into());
                    }
                    _ => self.finish_response("cancelled").await?,
                }
            }
            "conversation.item.create" => {
                allow_keys(obj, "", &["type", "event_id", "previous_item_id", "item"])?;
                let item = obj.get("item").ok_or_else(|| missing("item"))?;
                let kind = validate_item(item, &self.pending_calls)?;
                let id = item
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| self.shared.id("item"));
                if let ItemKind::FunctionCallOutput { output } = &kind {
                    let call_id = item
                        .get("call_id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    self.pending_calls.remove(&call_id);
                    self.shared
                        .rec()
                        .tool_outputs
                        .push((call_id, output.clone()));
                }
                self.shared.rec().items_created.push(item.clone());
                let mut created = item.clone();
                if let Some(o) = created.as_object_mut() {
                    o.insert("id".into(), Value::String(id.clone()));
                    o.insert("object".into(), Value::String("realtime.item".into()));
                    o.insert("status".into(), Value::String("completed".into()));
                }
                let previous = self.last_item.clone();
                self.items.insert(id.clone(), kind);
                self.last_item = Some(id);
                self.send(json!({"type": "conversation.item.added", "previous_item_id": previous, "item": created}))
                    .await?;
                self.send(json!({"type": "conversation.item.done", "previous_item_id": previous, "item": created}))
                    .await?;
            }
            "conversation.item.truncate" => {
                allow_keys(
                    obj,
                    "",
                    &[
                        "type",
                        "event_id",
                        "item_id",
                        "content_index",
                        "audio_end_ms",
                    ],
                )?;
                let item_id = obj
                    .get("item_id")
                    .ok_or_else(|| missing("item_id"))?
                    .as_str()
                    .ok_or_else(|| invalid_type("item_id", "a string"))?
                    .to_owned();
                let content_index = obj
                    .get("content_index")
                    .ok_or_else(|| missing("content_index"))?
                    .as_u64()
                    .ok_or_else(|| invalid_type("content_index", "an integer"))?;
                let audio_end_ms = obj
                    .get("audio_end_ms")
                    .ok_or_else(|| missing("audio_end_ms"))?
                    .as_u64()
                    .ok_or_else(|| invalid_type("audio_end_ms", "a non-negative integer"))?;
                let sent_ms = match self.items.get(&item_id) {
                    Some(ItemKind::Assistant { sent_bytes, fmt }) => {
                        sent_bytes / fmt.bytes_per_ms()
                    }
                    Some(_) => {
                        return Err(Reject::new(
                            "invalid_value",
                            "Only assistant messages can be truncated.",
                            Some("item_id"),
                        )
                        .into());
                    }
                    None => {
                        return Err(Reject::new(
                            "invalid_value",
                            format!("Item with item_id not found: {item_id}"),
                            Some("item_id"),
                        )
                        .into());
                    }
                };
                if content_index != 0 {
                    return Err(Reject::new(
                        "invalid_value",
                        "Invalid 'content_index': the item has one audio part (0).",
                        Some("content_index"),
                    )
                    .into());
                }
                if audio_end_ms > sent_ms {
                    return Err(Reject::new(
                        "invalid_value",
                        format!(
                            "Audio content of {sent_ms}ms is already shorter than {audio_end_ms}ms"
                        ),
                        Some("audio_end_ms"),
                    )
                    .into());
                }
                self.shared.rec().truncations.push(Truncation {
                    item_id: item_id.clone(),
                    audio_end_ms,
                    audio_sent_ms: sent_ms,
                });
                self.send(
                    json!({"type": "conversation.item.truncated", "item_id": item_id,
                    "content_index": 0, "audio_end_ms": audio_end_ms}),
                )
                .await?;
            }
            "conversation.item.delete" => {
                allow_keys(obj, "", &["type", "event_id", "item_id"])?;
                let item_id = obj
                    .get("item_id")
                    .ok_or_else(|| missing("item_id"))?
                    .as_str()
                    .ok_or_else(|| invalid_type("item_id", "a string"))?
                    .to_owned();
                if self.items.remove(&item_id).is_none() {
                    return Err(Reject::new(
                        "invalid_value",
                        format!("Item with item_id not found: {item_id}"),
                        Some("item_id"),
                    )
                    .into());
                }
                if self.last_item.as_deref() == Some(item_id.as_str()) {
                    self.last_item = None;
                }
                self.shared.rec().deletions.push(item_id.clone());
                self.send(json!({"type": "conversation.item.deleted", "item_id": item_id}))
                    .await?;
            }
            "output_audio_buffer.clear" => {
                return Err(Reject::new(
                    "invalid_value",
                    "output_audio_buffer.clear is only for WebRTC and SIP connections.",
                    Some("type"),
                )
                .into());
            }
            other => {
                return Err(Reject::new(
                    "invalid_value",
                    format!("Invalid value: '{other}'. Not a GA client event this mock knows."),
                    Some("type"),
                )
                .into());
            }
        }
        Ok(())
    }

    /// Derives the working settings from the effective session.
    fn apply_session(&mut self) {
        let input = &self.session["audio"]["input"];
        self.input = fmt_of(&input["format"]);
        self.output = fmt_of(&self.session["audio"]["output"]["format"]);
        self.transcribe = input["transcription"].is_object();
        let td = &input["turn_detection"];
        self.turns = match td["type"].as_str() {
            Some("server_vad") => Some(Turns {
                silence_ms: td["silence_duration_ms"].as_u64().unwrap_or(500),
                prefix_ms: td["prefix_padding_ms"].as_u64().unwrap_or(300),
                create_response: td["create_response"].as_bool().unwrap_or(true),
                interrupt_response: td["interrupt_response"].as_bool().unwrap_or(true),
            }),
            Some("semantic_vad") => Some(Turns {
                silence_ms: match td["eagerness"].as_str() {
                    Some("low") => 1000,
                    Some("high") => 250,
                    _ => 500,
                },
                prefix_ms: 300,
                create_response: td["create_response"].as_bool().unwrap_or(true),
                interrupt_response: td["interrupt_response"].as_bool().unwrap_or(true),
            }),
            _ => None,
        };
    }

    /// Energy VAD over 10 ms frames.
    async fn on_audio(&mut self, bytes: &[u8]) -> Result<(), String> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.vad.uncommitted = true;
        let mut samples = std::mem::take(&mut self.vad.leftover);
        samples.extend(self.input.decode(bytes));
        let frame = (self.input.rate() / 100) as usize;
        let mut chunks = samples.chunks_exact(frame);
        let mut frames = Vec::new();
        for f in &mut chunks {
            let energy: f64 = f.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
            frames.push((energy / frame as f64).sqrt());
        }
        self.vad.leftover = chunks.remainder().to_vec();
        let threshold = self.shared.cfg.vad_rms_threshold;
        let start_ms = self.shared.cfg.vad_start_ms.max(10);
        for rms in frames {
            let frame_start = self.vad.total_ms;
            self.vad.total_ms += 10;
            let Some(turns) = self.turns else { continue };
            let loud = rms > threshold;
            if !self.vad.speaking {
                if loud {
                    if self.vad.loud_ms == 0 {
                        self.vad.first_loud_ms = frame_start;
                    }
                    self.vad.loud_ms += 10;
                    if self.vad.loud_ms >= start_ms {
                        self.vad.speaking = true;
                        self.vad.quiet_ms = 0;
                        self.vad.start_ms = self.vad.first_loud_ms.saturating_sub(turns.prefix_ms);
                        self.vad.item_id = self.shared.id("item");
                        let (start, item) = (self.vad.start_ms, self.vad.item_id.clone());
                        self.shared.rec().speech_starts += 1;
                        self.send(json!({"type": "input_audio_buffer.speech_started",
                            "audio_start_ms": start, "item_id": item}))
                            .await?;
                        if turns.interrupt_response && self.response.is_some() {
                            self.finish_response("cancelled").await?;
                        }
                    }
                } else {
                    self.vad.loud_ms = 0;
                }
            } else {
                if loud {
                    self.vad.quiet_ms = 0;
                } else {
                    self.vad.quiet_ms += 10;
                }
                if self.vad.quiet_ms >= turns.silence_ms {
                    self.vad.speaking = false;
                    self.vad.loud_ms = 0;
                    let end = self.vad.total_ms;
                    let item = self.vad.item_id.clone();
                    self.send(json!({"type": "input_audio_buffer.speech_stopped",
                        "audio_end_ms": end, "item_id": item}))
                        .await?;
                    let spoken = end.saturating_sub(self.vad.start_ms);
                    self.commit(item.clone()).await?;
                    if self.transcribe {
                        self.send(
                            json!({"type": "conversation.item.input_audio_transcription.completed",
                            "item_id": item, "content_index": 0,
                            "transcript": format!("caller said {spoken} ms"),
                            "usage": {"type": "duration", "seconds": spoken as f64 / 1000.0}}),
                        )
                        .await?;
                    }
                    if turns.create_response && self.response.is_none() {
                        let tool = self
                            .shared
                            .cfg
                            .tool_call
                            .clone()
                            .filter(|t| t.on_turn == self.user_turns);
                        match tool {
                            Some(t) => self.function_call_response(&t).await?,
                            None => self.start_audio_response().await?,
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn commit(&mut self, item_id: String) -> Result<(), String> {
        self.vad.uncommitted = false;
        self.user_turns += 1;
        let previous = self.last_item.replace(item_id.clone());
        self.items.insert(item_id.clone(), ItemKind::User);
        self.send(json!({"type": "input_audio_buffer.committed",
            "previous_item_id": previous, "item_id": item_id}))
            .await?;
        let item = json!({"id": item_id, "object": "realtime.item", "type": "message",
            "role": "user", "status": "completed",
            "content": [{"type": "input_audio", "transcript": null}]});
        self.send(
            json!({"type": "conversation.item.added", "previous_item_id": previous, "item": item}),
        )
        .await?;
        self.send(
            json!({"type": "conversation.item.done", "previous_item_id": previous, "item": item}),
        )
        .await
    }

    async fn function_call_response(&mut self, t: &ToolScript) -> Result<(), String> {
        let response_id = self.shared.id("resp");
        let item_id = self.shared.id("item");
        let call_id = self.shared.id("call");
        self.send(
            json!({"type": "response.created", "response": {"id": response_id,
            "object": "realtime.response", "status": "in_progress", "output": []}}),
        )
        .await?;
        let mut item = json!({"id": item_id, "object": "realtime.item", "type": "function_call",
            "status": "in_progress", "call_id": call_id, "name": t.name, "arguments": ""});
        self.send(
            json!({"type": "response.output_item.added", "response_id": response_id,
            "output_index": 0, "item": item}),
        )
        .await?;
        self.send(json!({"type": "response.function_call_arguments.delta",
            "response_id": response_id, "item_id": item_id, "output_index": 0,
            "call_id": call_id, "delta": t.arguments}))
            .await?;
        self.send(json!({"type": "response.function_call_arguments.done",
            "response_id": response_id, "item_id": item_id, "output_index": 0,
            "call_id": call_id, "name": t.name, "arguments": t.arguments}))
            .await?;
        item["status"] = json!("completed");
        item["arguments"] = json!(t.arguments);
        self.send(
            json!({"type": "response.output_item.done", "response_id": response_id,
            "output_index": 0, "item": item}),
        )
        .await?;
        self.last_item = Some(item_id.clone());
        self.items.insert(item_id, ItemKind::FunctionCall);
        self.pending_calls.insert(call_id);
        self.send(
            json!({"type": "response.done", "response": {"id": response_id,
            "object": "realtime.response", "status": "completed", "output": [item]}}),
        )
        .await
    }

    async fn start_audio_response(&mut self) -> Result<(), String> {
        let response_id = self.shared.id("resp");
        let item_id = self.shared.id("item");
        let fmt = self.output;
        let samples = match fmt {
            Fmt::Pcm => &self.shared.cfg.reply_pcm24k,
            Fmt::Pcmu | Fmt::Pcma => &self.shared.reply_8k,
        };
        let bytes = fmt.encode(samples);
        let chunk = (fmt.bytes_per_ms() * self.shared.cfg.chunk_ms.max(1)) as usize;
        let chunks: VecDeque<Vec<u8>> = bytes.chunks(chunk).map(<[u8]>::to_vec).collect();
        let mut text = self.shared.cfg.reply_text.clone();
        if let Some(ItemKind::FunctionCallOutput { output }) =
            self.last_item.as_ref().and_then(|i| self.items.get(i))
        {
            text = format!("{text} (tool result: {output})");
        }
        let words = text.split_inclusive(' ').map(str::to_owned).collect();
        self.send(
            json!({"type": "response.created", "response": {"id": response_id,
            "object": "realtime.response", "status": "in_progress", "output": []}}),
        )
        .await?;
        self.last_item = Some(item_id.clone());
        self.items
            .insert(item_id.clone(), ItemKind::Assistant { sent_bytes: 0, fmt });
        self.send(
            json!({"type": "response.output_item.added", "response_id": response_id,
            "output_index": 0, "item": {"id": item_id, "object": "realtime.item",
            "type": "message", "role": "assistant", "status": "in_progress", "content": []}}),
        )
        .await?;
        self.send(
            json!({"type": "response.content_part.added", "response_id": response_id,
            "item_id": item_id, "output_index": 0, "content_index": 0,
            "part": {"type": "output_audio", "transcript": ""}}),
        )
        .await?;
        self.response = Some(ActiveResponse {
            id: response_id,
            item_id,
            chunks,
            words,
            transcript: String::new(),
            full_text: text,
            next_at: Instant::now(),
        });
        if !self.shared.cfg.pace {
            while self.response.is_some() {
                self.step_response().await?;
            }
        }
        Ok(())
    }

    /// Sends the next audio delta (and a transcript word), or finishes the response.
    async fn step_response(&mut self) -> Result<(), String> {
        let pace = Duration::from_millis(self.shared.cfg.chunk_ms.max(1));
        let Some(r) = &mut self.response else {
            return Ok(());
        };
        let Some(chunk) = r.chunks.pop_front() else {
            return self.finish_response("completed").await;
        };
        r.next_at += pace;
        let word = r.words.pop_front();
        if let Some(w) = &word {
            r.transcript.push_str(w);
        }
        let (response_id, item_id) = (r.id.clone(), r.item_id.clone());
        if let Some(ItemKind::Assistant { sent_bytes, .. }) = self.items.get_mut(&item_id) {
            *sent_bytes += chunk.len() as u64;
        }
        self.shared.rec().audio_out.extend_from_slice(&chunk);
        self.send(
            json!({"type": "response.output_audio.delta", "response_id": response_id,
            "item_id": item_id, "output_index": 0, "content_index": 0,
            "delta": BASE64.encode(&chunk)}),
        )
        .await?;
        if let Some(w) = word {
            self.send(json!({"type": "response.output_audio_transcript.delta",
                "response_id": response_id, "item_id": item_id, "output_index": 0,
                "content_index": 0, "delta": w}))
                .await?;
        }
        Ok(())
    }

    async fn finish_response(&mut self, status: &str) -> Result<(), String> {
        let Some(r) = self.response.take() else {
            return Ok(());
        };
        let transcript = if status == "completed" {
            r.full_text.clone()
        } else {
            r.transcript.trim_end().to_owned()
        };
        let (rid, iid) = (r.id.clone(), r.item_id.clone());
        self.send(
            json!({"type": "response.output_audio.done", "response_id": rid,
            "item_id": iid, "output_index": 0, "content_index": 0}),
        )
        .await?;
        self.send(
            json!({"type": "response.output_audio_transcript.done", "response_id": rid,
            "item_id": iid, "output_index": 0, "content_index": 0, "transcript": transcript}),
        )
        .await?;
        let part = json!({"type": "output_audio", "transcript": transcript});
        self.send(
            json!({"type": "response.content_part.done", "response_id": rid,
            "item_id": iid, "output_index": 0, "content_index": 0, "part": part}),
        )
        .await?;
        let item_status = if status == "completed" {
            "completed"
        } else {
            "incomplete"
        };
        let item = json!({"id": iid, "object": "realtime.item", "type": "message",
            "role": "assistant", "status": item_status, "content": [part]});
        self.send(
            json!({"type": "response.output_item.done", "response_id": rid,
            "output_index": 0, "item": item}),
        )
        .await?;
        let mut response = json!({"id": rid, "object": "realtime.response", "status": status,
            "output": [item]});
        if status == "cancelled" {
            response["status_details"] = json!({"type": "cancelled", "reason": "client_cancelled"});
        }
        self.send(json!({"type": "response.done", "response": response}))
            .await
    }
}

/// Why dispatching failed: a rejection to report, or a dead socket.
enum Dispatch {
    Reject(Reject),
    Io(String),
}

impl From<Reject> for Dispatch {
    fn from(r: Reject) -> Dispatch {
        Dispatch::Reject(r)
    }
}

impl From<String> for Dispatch {
    fn from(e: String) -> Dispatch {
        Dispatch::Io(e)
    }
}

// ---------------------------------------------------------------------------------------
// Validation of client JSON against the GA reference.

fn path_of(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_owned()
    } else {
        format!("{base}.{key}")
    }
}

fn missing(param: &str) -> Reject {
    Reject::new(
        "missing_required_parameter",
        format!("Missing required parameter: '{param}'."),
        Some(param),
    )
}

fn invalid_type(param: &str, want: &str) -> Reject {
    Reject::new(
        "invalid_type",
        format!("Invalid type for '{param}': expected {want}."),
        Some(param),
    )
}

fn invalid_value(param: &str, got: &Value, allowed: &[&str]) -> Reject {
    Reject::new(
        "invalid_value",
        format!(
            "Invalid value: {got}. Supported values are: {}.",
            allowed
                .iter()
                .map(|a| format!("'{a}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(param),
    )
}

/// Rejects keys of `obj` not in `allowed` (`base` is the object's path).
fn allow_keys(obj: &Map<String, Value>, base: &str, allowed: &[&str]) -> Checked {
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            let param = path_of(base, key);
            let hint = if base == "session" && BETA_SESSION_FIELDS.contains(&key.as_str()) {
                " (a beta Realtime field; the GA session puts audio settings under session.audio)"
            } else {
                ""
            };
            return Err(Reject::new(
                "unknown_parameter",
                format!("Unknown parameter: '{param}'.{hint}"),
                Some(&param),
            ));
        }
    }
    Ok(())
}

fn object<'a>(v: &'a Value, path: &str) -> Checked<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| invalid_type(path, "an object"))
}

fn opt_string(obj: &Map<String, Value>, base: &str, key: &str) -> Checked {
    match obj.get(key) {
        None | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(invalid_type(&path_of(base, key), "a string")),
    }
}

fn opt_bool(obj: &Map<String, Value>, base: &str, key: &str) -> Checked {
    match obj.get(key) {
        None | Some(Value::Bool(_)) => Ok(()),
        Some(_) => Err(invalid_type(&path_of(base, key), "a boolean")),
    }
}

fn opt_uint(obj: &Map<String, Value>, base: &str, key: &str) -> Checked {
    match obj.get(key) {
        None => Ok(()),
        Some(v) if v.is_u64() => Ok(()),
        Some(_) => Err(invalid_type(&path_of(base, key), "a non-negative integer")),
    }
}

fn one_of(obj: &Map<String, Value>, base: &str, key: &str, allowed: &[&str]) -> Checked {
    match obj.get(key) {
        None => Ok(()),
        Some(v) => match v.as_str() {
            Some(s) if allowed.contains(&s) => Ok(()),
            _ => Err(invalid_value(&path_of(base, key), v, allowed)),
        },
    }
}

fn validate_session(v: &Value) -> Checked {
    let s = object(v, "session")?;
    allow_keys(
        s,
        "session",
        &[
            "type",
            "model",
            "instructions",
            "output_modalities",
            "audio",
            "tools",
            "tool_choice",
            "max_output_tokens",
            "include",
            "tracing",
            "truncation",
            "prompt",
        ],
    )?;
    match s.get("type") {
        None => return Err(missing("session.type")),
        Some(t) if t.as_str() == Some("realtime") => {}
        Some(t) => return Err(invalid_value("session.type", t, &["realtime"])),
    }
    opt_string(s, "session", "model")?;
    opt_string(s, "session", "instructions")?;
    if let Some(m) = s.get("output_modalities") {
        let list = m
            .as_array()
            .ok_or_else(|| invalid_type("session.output_modalities", "an array"))?;
        let ok = list.len() == 1
            && list
                .first()
                .and_then(Value::as_str)
                .is_some_and(|x| x == "audio" || x == "text");
        if !ok {
            return Err(Reject::new(
                "invalid_value",
                "Invalid 'session.output_modalities': use [\"audio\"] or [\"text\"].",
                Some("session.output_modalities"),
            ));
        }
    }
    if let Some(a) = s.get("audio") {
        let a = object(a, "session.audio")?;
        allow_keys(a, "session.audio", &["input", "output"])?;
        if let Some(i) = a.get("input") {
            let i = object(i, "session.audio.input")?;
            allow_keys(
                i,
                "session.audio.input",
                &[
                    "format",
                    "noise_reduction",
                    "transcription",
                    "turn_detection",
                ],
            )?;
            if let Some(f) = i.get("format") {
                validate_format(f, "session.audio.input.format")?;
            }
            match i.get("noise_reduction") {
                None | Some(Value::Null) => {}
                Some(n) => {
                    let p = "session.audio.input.noise_reduction";
                    let n = object(n, p)?;
                    allow_keys(n, p, &["type"])?;
                    one_of(n, p, "type", &["near_field", "far_field"])?;
                }
            }
            match i.get("transcription") {
                None | Some(Value::Null) => {}
                Some(t) => {
                    let p = "session.audio.input.transcription";
                    let t = object(t, p)?;
                    allow_keys(t, p, &["model", "language", "prompt"])?;
                    opt_string(t, p, "model")?;
                    opt_string(t, p, "language")?;
                    opt_string(t, p, "prompt")?;
                }
            }
            match i.get("turn_detection") {
                None | Some(Value::Null) => {}
                Some(t) => validate_turn_detection(t)?,
            }
        }
        if let Some(o) = a.get("output") {
            let p = "session.audio.output";
            let o = object(o, p)?;
            allow_keys(o, p, &["format", "voice", "speed"])?;
            if let Some(f) = o.get("format") {
                validate_format(f, "session.audio.output.format")?;
            }
            match o.get("voice") {
                None | Some(Value::String(_)) => {}
                Some(Value::Object(v)) if v.get("id").is_some_and(Value::is_string) => {}
                Some(_) => return Err(invalid_type("session.audio.output.voice", "a string")),
            }
            if let Some(sp) = o.get("speed") {
                let ok = sp.as_f64().is_some_and(|x| (0.25..=1.5).contains(&x));
                if !ok {
                    return Err(invalid_type(
                        "session.audio.output.speed",
                        "a number 0.25–1.5",
                    ));
                }
            }
        }
    }
    if let Some(t) = s.get("tools") {
        validate_tools(t, "session.tools")?;
    }
    if let Some(tc) = s.get("tool_choice") {
        if let Some(x) = tc.as_str() {
            if !["auto", "none", "required"].contains(&x) {
                return Err(invalid_value(
                    "session.tool_choice",
                    tc,
                    &["auto", "none", "required"],
                ));
            }
        } else if !tc.is_object() {
            return Err(invalid_type("session.tool_choice", "a string or an object"));
        }
    }
    Ok(())
}

fn validate_format(v: &Value, path: &str) -> Checked {
    let f = v
        .as_object()
        .ok_or_else(|| invalid_type(path, "an object like {\"type\": \"audio/pcmu\"}"))?;
    match f.get("type").and_then(Value::as_str) {
        Some("audio/pcm") => {
            allow_keys(f, path, &["type", "rate"])?;
            match f.get("rate") {
                None => Ok(()),
                Some(r) if r.as_u64() == Some(u64::from(PCM_RATE)) => Ok(()),
                Some(r) => Err(invalid_value(&path_of(path, "rate"), r, &["24000"])),
            }
        }
        Some("audio/pcmu") | Some("audio/pcma") => allow_keys(f, path, &["type"]),
        _ => Err(invalid_value(
            &path_of(path, "type"),
            f.get("type").unwrap_or(&Value::Null),
            &["audio/pcm", "audio/pcmu", "audio/pcma"],
        )),
    }
}

fn validate_turn_detection(v: &Value) -> Checked {
    let p = "session.audio.input.turn_detection";
    let t = object(v, p)?;
    match t.get("type").and_then(Value::as_str) {
        Some("server_vad") => {
            allow_keys(
                t,
                p,
                &[
                    "type",
                    "threshold",
                    "prefix_padding_ms",
                    "silence_duration_ms",
                    "create_response",
                    "interrupt_response",
                    "idle_timeout_ms",
                ],
            )?;
            if let Some(th) = t.get("threshold")
                && !th.as_f64().is_some_and(|x| (0.0..=1.0).contains(&x))
            {
                return Err(invalid_type(&path_of(p, "threshold"), "a number 0.0–1.0"));
            }
            opt_uint(t, p, "prefix_padding_ms")?;
            opt_uint(t, p, "silence_duration_ms")?;
            if !t.get("idle_timeout_ms").is_some_and(Value::is_null) {
                opt_uint(t, p, "idle_timeout_ms")?;
            }
        }
        Some("semantic_vad") => {
            allow_keys(
                t,
                p,
                &["type", "eagerness", "create_response", "interrupt_response"],
            )?;
            one_of(t, p, "eagerness", &["low", "medium", "high", "auto"])?;
        }
        _ => {
            return Err(invalid_value(
                &path_of(p, "type"),
                t.get("type").unwrap_or(&Value::Null),
                &["server_vad", "semantic_vad"],
            ));
        }
    }
    opt_bool(t, p, "create_response")?;
    opt_bool(t, p, "interrupt_response")
}

fn validate_tools(v: &Value, path: &str) -> Checked {
    let list = v.as_array().ok_or_else(|| invalid_type(path, "an array"))?;
    for (i, tool) in list.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let t = object(tool, &p)?;
        match t.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some("mcp") => continue,
            _ => {
                return Err(invalid_value(
                    &path_of(&p, "type"),
                    t.get("type").unwrap_or(&Value::Null),
                    &["function", "mcp"],
                ));
            }
        }
        allow_keys(t, &p, &["type", "name", "description", "parameters"])?;
        match t.get("name") {
            Some(Value::String(n)) if !n.is_empty() => {}
            Some(_) => return Err(invalid_type(&path_of(&p, "name"), "a non-empty string")),
            None => return Err(missing(&path_of(&p, "name"))),
        }
        opt_string(t, &p, "description")?;
        if let Some(params) = t.get("parameters")
            && !params.is_object()
        {
            return Err(invalid_type(
                &path_of(&p, "parameters"),
                "a JSON Schema object",
            ));
        }
    }
    Ok(())
}

fn validate_response_params(v: &Value) -> Checked {
    let p = "response";
    let r = object(v, p)?;
    allow_keys(
        r,
        p,
        &[
            "instructions",
            "output_modalities",
            "conversation",
            "input",
            "metadata",
            "tools",
            "tool_choice",
            "max_output_tokens",
            "audio",
            "prompt",
        ],
    )?;
    opt_string(r, p, "instructions")?;
    if let Some(t) = r.get("tools") {
        validate_tools(t, "response.tools")?;
    }
    if let Some(a) = r.get("audio") {
        let a = object(a, "response.audio")?;
        allow_keys(a, "response.audio", &["output"])?;
        if let Some(o) = a.get("output") {
            let o = object(o, "response.audio.output")?;
            allow_keys(o, "response.audio.output", &["format", "voice"])?;
            if let Some(f) = o.get("format") {
                validate_format(f, "response.audio.output.format")?;
            }
        }
    }
    Ok(())
}

/// Validates a `conversation.item.create` item; `pending` holds the open function calls.
fn validate_item(v: &Value, pending: &HashSet<String>) -> Checked<ItemKind> {
    let p = "item";
    let it = object(v, p)?;
    match it.get("type").and_then(Value::as_str) {
        Some("message") => {
            allow_keys(
                it,
                p,
                &["type", "id", "object", "status", "role", "content"],
            )?;
            let role = it
                .get("role")
                .ok_or_else(|| missing("item.role"))?
                .as_str()
                .unwrap_or("");
            let allowed: &[&str] = match role {
                "user" => &["input_text", "input_audio", "input_image"],
                "assistant" => &["output_text", "output_audio"],
                "system" => &["input_text"],
                _ => {
                    return Err(invalid_value(
                        "item.role",
                        it.get("role").unwrap_or(&Value::Null),
                        &["user", "assistant", "system"],
                    ));
                }
            };
            let content = it
                .get("content")
                .ok_or_else(|| missing("item.content"))?
                .as_array()
                .ok_or_else(|| invalid_type("item.content", "an array"))?;
            for (i, part) in content.iter().enumerate() {
                let pp = format!("item.content[{i}]");
                let part = object(part, &pp)?;
                let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
                if !allowed.contains(&kind) {
                    return Err(invalid_value(
                        &path_of(&pp, "type"),
                        part.get("type").unwrap_or(&Value::Null),
                        allowed,
                    ));
                }
                match kind {
                    "input_text" | "output_text" => {
                        allow_keys(part, &pp, &["type", "text"])?;
                        if !part.get("text").is_some_and(Value::is_string) {
                            return Err(invalid_type(&path_of(&pp, "text"), "a string"));
                        }
                    }
                    "input_audio" | "output_audio" => {
                        allow_keys(part, &pp, &["type", "audio", "transcript"])?;
                    }
                    _ => allow_keys(part, &pp, &["type", "image_url", "detail"])?,
                }
            }
            Ok(match role {
                "user" => ItemKind::User,
                _ => ItemKind::Other,
            })
        }
        Some("function_call_output") => {
            allow_keys(
                it,
                p,
                &["type", "id", "object", "status", "call_id", "output"],
            )?;
            let call_id = it
                .get("call_id")
                .ok_or_else(|| missing("item.call_id"))?
                .as_str()
                .ok_or_else(|| invalid_type("item.call_id", "a string"))?;
            let output = it
                .get("output")
                .ok_or_else(|| missing("item.output"))?
                .as_str()
                .ok_or_else(|| invalid_type("item.output", "a string"))?;
            if !pending.contains(call_id) {
                return Err(Reject::new(
                    "invalid_value",
                    format!("No function call with call_id {call_id} awaits output."),
                    Some("item.call_id"),
                ));
            }
            Ok(ItemKind::FunctionCallOutput {
                output: output.to_owned(),
            })
        }
        Some("function_call") => {
            allow_keys(
                it,
                p,
                &[
                    "type",
                    "id",
                    "object",
                    "status",
                    "call_id",
                    "name",
                    "arguments",
                ],
            )?;
            Ok(ItemKind::FunctionCall)
        }
        _ => Err(invalid_value(
            "item.type",
            it.get("type").unwrap_or(&Value::Null),
            &["message", "function_call", "function_call_output"],
        )),
    }
}

/// The format of a (validated) format object; PCM if absent.
fn fmt_of(v: &Value) -> Fmt {
    match v["type"].as_str() {
        Some("audio/pcmu") => Fmt::Pcmu,
        Some("audio/pcma") => Fmt::Pcma,
        _ => Fmt::Pcm,
    }
}

/// GA update semantics: objects merge key by key, anything else replaces.
fn merge(base: &mut Value, update: &Value) {
    match (base, update) {
        (Value::Object(b), Value::Object(u)) => {
            for (k, v) in u {
                match b.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, u) => *b = u.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_round_trips() {
        for s in [-32768i16, -12345, -1000, -1, 0, 1, 1000, 12345, 32767] {
            let u = ulaw_decode(ulaw_encode(s));
            let a = alaw_decode(alaw_encode(s));
            let tol = (i32::from(s).abs() / 16).max(16);
            assert!(
                (i32::from(u) - i32::from(s)).abs() <= tol,
                "ulaw {s} -> {u}"
            );
            assert!(
                (i32::from(a) - i32::from(s)).abs() <= tol,
                "alaw {s} -> {a}"
            );
        }
        // Reference points of G.711: μ-law 0xFF is 0, A-law 0xD5 is +8.
        assert_eq!(ulaw_decode(0xff), 0);
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(alaw_decode(0xd5), 8);
        assert_eq!(alaw_encode(0), 0xd5);
    }

    #[test]
    fn session_validation() {
        let ok = json!({"type": "realtime", "instructions": "x",
            "audio": {"input": {"format": {"type": "audio/pcmu"}, "noise_reduction": null,
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}},
              "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}},
            "tools": [{"type": "function", "name": "f", "description": "d", "parameters": {}}]});
        validate_session(&ok).unwrap();
        let beta = json!({"type": "realtime", "input_audio_format": "g711_ulaw"});
        let r = validate_session(&beta).unwrap_err();
        assert_eq!(r.code, "unknown_parameter");
        assert_eq!(r.param.as_deref(), Some("session.input_audio_format"));
        let r = validate_session(&json!({"instructions": "x"})).unwrap_err();
        assert_eq!(r.code, "missing_required_parameter");
        let r = validate_session(&json!({"type": "realtime",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}))
        .unwrap_err();
        assert_eq!(r.param.as_deref(), Some("session.audio.input.format.rate"));
        let r = validate_session(&json!({"type": "realtime",
            "audio": {"input": {"turn_detection": {"type": "semantic_vad", "threshold": 0.5}}}}))
        .unwrap_err();
        assert_eq!(r.code, "unknown_parameter");
        let r = validate_session(&json!({"type": "realtime", "temperature": 0.8})).unwrap_err();
        assert_eq!(r.param.as_deref(), Some("session.temperature"));
    }

    #[test]
    fn item_validation() {
        let pending = HashSet::from(["call_1".to_owned()]);
        validate_item(
            &json!({"type": "message", "role": "assistant",
                "content": [{"type": "output_text", "text": "hi"}]}),
            &pending,
        )
        .unwrap();
        let r = validate_item(
            &json!({"type": "message", "role": "assistant",
                "content": [{"type": "input_text", "text": "hi"}]}),
            &pending,
        )
        .unwrap_err();
        assert_eq!(r.param.as_deref(), Some("item.content[0].type"));
        assert!(
            validate_item(
                &json!({"type": "function_call_output", "call_id": "call_2", "output": "x"}),
                &pending
            )
            .is_err()
        );
    }

    #[test]
    fn merging() {
        let mut base = json!({"a": {"b": 1, "c": 2}, "d": 3});
        merge(&mut base, &json!({"a": {"b": 5}, "d": null}));
        assert_eq!(base, json!({"a": {"b": 5, "c": 2}, "d": null}));
    }
}
