//! The cascaded backend: streaming speech-to-text, an LLM and streaming text-to-speech,
//! behind the same [`backend`](crate::agent::backend) seam as the realtime one (so calls,
//! tools, records, transcripts, the API and metrics work with either). Nothing here knows of
//! SIP or RTP.
//!
//! * [`stt`]: Deepgram's live protocol over WebSocket, fed the call's audio untouched.
//! * [`chat`]: an OpenAI-compatible Chat Completions endpoint, streamed, with tool calls.
//! * [`tts`]: OpenAI speech (PCM 24 kHz) or Deepgram Aura (the call's own format) over HTTP.
//! * [`session`]: one call's conversation: turns, replies cut into clauses that are spoken
//!   while the LLM still writes, tools, and barge-in that trims the history to what the
//!   caller heard.
//!
//! [`connect`] opens the STT stream before the call is answered (an unreachable provider can
//! still be refused with a SIP status), then starts the session task.

pub mod chat;
pub mod session;
pub mod stt;
pub mod stt_openai;
pub mod tts;
pub mod tts_socket;

use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::mpsc;

use super::backend::{
    BackendError, BackendHandle, CONTROL_CHANNEL_CAPACITY, CallContext, EVENT_CHANNEL_CAPACITY,
};
pub use super::realtime::ApiKey;
use chat::ChatConfig;
use stt::SttConfig;
use tts::TtsConfig;

/// Who ends the caller's turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnEnd {
    /// voxline's VAD (a [`CommitTurn`](super::backend::BackendControl::CommitTurn) after its
    /// silence window) together with the STT's final transcript; the STT's utterance end
    /// alone also ends a turn (a safety net).
    VadAndStt,
    /// The STT's endpointing alone (`speech_final`, or the utterance end).
    Stt,
}

/// How one cascaded agent reaches its providers and behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct CascadedConfig {
    /// Speech to text.
    pub stt: SttConfig,
    /// The LLM.
    pub llm: ChatConfig,
    /// Text to speech.
    pub tts: TtsConfig,
    /// System instructions, a template (see
    /// [`render_instructions`](super::realtime::render_instructions)).
    pub instructions: String,
    /// What the agent says first, spoken as written (a template too); `None`: it waits.
    pub greeting: Option<String>,
    /// Who ends the caller's turn.
    pub turn_end: TurnEnd,
}

/// Connects the STT stream for one call and starts the session.
pub async fn connect(cfg: CascadedConfig, ctx: CallContext) -> Result<BackendHandle, BackendError> {
    let client = http_client()?;
    let stt = stt::connect(cfg.stt.clone(), ctx.call_format).await?;
    let (control_tx, control_rx) = mpsc::channel(CONTROL_CHANNEL_CAPACITY);
    let (event_tx, event_rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
    let session = session::Session::new(cfg, ctx, client, event_tx, std::time::SystemTime::now());
    tokio::spawn(session.run(control_rx, stt));
    Ok(BackendHandle {
        control: control_tx,
        events: event_rx,
    })
}

/// One HTTP client for every cascaded call (connection reuse to the LLM and TTS).
fn http_client() -> Result<reqwest::Client, BackendError> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .pool_idle_timeout(Duration::from_secs(90))
                .tcp_nodelay(true)
                .build()
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(BackendError::Config)
}
