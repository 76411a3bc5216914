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
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, info, trace, warn};

use super::protocol::{
    AudioInput, AudioOutput, CODE_CANCEL_NOT_ACTIVE, ClientEvent, ContentPart, FunctionTool, Item,
    MessageRole, NoiseReductionWire, PCM_RATE, ResponseParams, SESSION_TYPE_REALTIME, ServerEvent,
    Session, SessionAudio, Transcription, TurnDetection, WireFormat,
};
use crate::agent::backend::{
    AudioFormat, BackendControl, BackendError, BackendEvent, BackendHandle,
    CONTROL_CHANNEL_CAPACITY, CallContext, EVENT_CHANNEL_CAPACITY, Role,
};

mod audio;
mod connect;
mod session;
#[cfg(test)]
mod tests;

use audio::AudioPath;
use connect::*;
use session::*;

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
    let target = target(&cfg)?;
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

    let (control_tx, control_rx) = mpsc::channel(CONTROL_CHANNEL_CAPACITY);
    let (event_tx, event_rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
    let mut client = Client::new(setup, ctx.call_format, wire, event_tx)?;
    if ctx.history.is_empty() {
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
    } else {
        // Another backend had the call: go on from its conversation (no greeting).
        client.history = ctx
            .history
            .iter()
            .enumerate()
            .map(|(i, h)| HistoryEntry {
                item_id: format!("earlier-{i}"),
                role: h.role,
                text: Some(h.text.clone()),
                heard: None,
            })
            .collect();
        for ev in client.replay_events() {
            send(&mut ws, &ev).await.map_err(|e| {
                BackendError::Protocol(format!("cannot send the conversation so far: {e}"))
            })?;
        }
        debug!(
            items = client.history.len(),
            "realtime: conversation so far sent"
        );
    }
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
/// `{{time}}` (`now` as `YYYY-MM-DD HH:MM:SS UTC`), `{{memory}}` (what the agent remembers of
/// the caller; empty if nothing) and `{{var.NAME}}` (empty if the call has no such variable).
/// Other `{{…}}` are left as written.
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
            "memory" => out.push_str(&ctx.memory),
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
