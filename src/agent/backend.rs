//! The seam between a call and an AI backend: what audio travels, which events come back,
//! which commands go out.
//!
//! A backend is started with [`CallContext`] (who is calling, in which audio format, with
//! which tools) and hands back a [`BackendHandle`]: two bounded channels. The call layer
//! sends [`BackendControl`]s (the caller's audio, barge-in, tool results) and reads
//! [`BackendEvent`]s (the agent's audio, speech detection, transcripts, tool calls). Nothing
//! here knows of SIP or RTP: audio is a byte buffer in an [`AudioFormat`].
//!
//! ## Barge-in contract
//!
//! When the caller interrupts (the backend's [`BackendEvent::SpeechStarted`], or voxline's
//! own VAD), the call layer stops playing the agent's audio, drops what it has buffered, and
//! sends [`BackendControl::Interrupt`] with `played_ms`: how far the caller got through all
//! the agent audio this backend delivered ([`BackendEvent::Audio`] since it started or since
//! [`BackendEvent::Switched`], in milliseconds of the call's format). The backend maps that
//! position onto its replies itself: the reply being heard is cut to what was heard, and
//! replies queued behind it (the backend may have started answering a new turn while an
//! earlier reply still played) are forgotten as never heard. It cancels the response in
//! progress.
//!
//! ## Tools
//!
//! [`BackendEvent::ToolCall`] asks the call layer to run a tool; it answers with
//! [`BackendControl::ToolResult`] carrying the same `call_id`, and the backend goes on
//! speaking with the result in mind.

use std::collections::BTreeMap;

use bytes::Bytes;
use tokio::sync::mpsc;

/// Capacity of [`BackendHandle::control`]: 256 commands, about five seconds of 20 ms audio
/// chunks. The call layer should `try_send` audio so a stalled backend never blocks a media
/// tick (a full channel then drops that chunk).
pub const CONTROL_CHANNEL_CAPACITY: usize = 256;

/// Capacity of [`BackendHandle::events`]. The backend waits (backpressure) when it is full.
pub const EVENT_CHANNEL_CAPACITY: usize = 256;

/// The audio that travels to and from a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioFormat {
    /// G.711 μ-law, 8 kHz, one byte per sample.
    Pcmu8k,
    /// G.711 A-law, 8 kHz, one byte per sample.
    Pcma8k,
    /// Signed 16-bit little-endian mono PCM at `rate` Hz.
    Pcm16 {
        /// Sample rate in Hz.
        rate: u32,
    },
}

impl AudioFormat {
    /// Sample rate in Hz.
    pub fn sample_rate(self) -> u32 {
        match self {
            AudioFormat::Pcmu8k | AudioFormat::Pcma8k => 8000,
            AudioFormat::Pcm16 { rate } => rate,
        }
    }

    /// Bytes per sample: 1 for G.711, 2 for PCM16.
    pub fn bytes_per_sample(self) -> u32 {
        match self {
            AudioFormat::Pcmu8k | AudioFormat::Pcma8k => 1,
            AudioFormat::Pcm16 { .. } => 2,
        }
    }

    /// Duration of `bytes` of audio in this format, in whole milliseconds (rounded down).
    pub fn duration_ms(self, bytes: u64) -> u64 {
        let per_second = u64::from(self.sample_rate()) * u64::from(self.bytes_per_sample());
        if per_second == 0 {
            return 0;
        }
        bytes.saturating_mul(1000) / per_second
    }

    /// True for the G.711 formats, which a backend may carry untouched end to end.
    pub fn is_g711(self) -> bool {
        matches!(self, AudioFormat::Pcmu8k | AudioFormat::Pcma8k)
    }
}

/// A piece of audio in a known format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioChunk {
    /// How `data` is encoded.
    pub format: AudioFormat,
    /// The audio: G.711 codes, or PCM16 little-endian samples for [`AudioFormat::Pcm16`].
    pub data: Bytes,
}

/// Who said something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The person on the phone.
    Caller,
    /// The AI agent.
    Agent,
}

/// What a backend reports to the call layer.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendEvent {
    /// Audio for the caller, in [`CallContext::call_format`].
    Audio(AudioChunk),
    /// The backend heard the caller start speaking (barge-in: stop playing, then send
    /// [`BackendControl::Interrupt`]). `audio_start_ms` counts from the start of the audio
    /// sent to the backend in this session.
    SpeechStarted {
        /// Where speech started in the audio sent so far, in milliseconds.
        audio_start_ms: u64,
    },
    /// The caller stopped speaking.
    SpeechStopped {
        /// Where speech ended in the audio sent so far, in milliseconds.
        audio_end_ms: u64,
    },
    /// Part of a transcript (the agent's as it speaks, or the caller's as it is
    /// transcribed).
    TranscriptDelta {
        /// Who is speaking.
        role: Role,
        /// The new text.
        text: String,
    },
    /// A finished transcript of one utterance.
    TranscriptFinal {
        /// Who spoke.
        role: Role,
        /// The whole utterance.
        text: String,
        /// The backend's id of the conversation item.
        item_id: String,
    },
    /// A final transcript already reported was cut short: the caller heard only `text` of it
    /// (empty: nothing). Same role and item id as the [`BackendEvent::TranscriptFinal`] it
    /// corrects.
    TranscriptCorrected {
        /// Who spoke.
        role: Role,
        /// What was heard.
        text: String,
        /// The item's id.
        item_id: String,
    },
    /// The agent wants a tool run; answer with [`BackendControl::ToolResult`].
    ToolCall {
        /// Echo this in the result.
        call_id: String,
        /// The tool's name (one of [`CallContext::tools`]).
        name: String,
        /// The arguments, parsed JSON.
        arguments: serde_json::Value,
    },
    /// How long the stages of a cascaded backend took for the reply to the caller's last
    /// turn (sent once per turn, with the reply's first audio).
    StageLatency {
        /// Last audio of the utterance sent to the STT → its final transcript, ms.
        stt_final_ms: Option<u64>,
        /// LLM request → first token, ms.
        llm_first_token_ms: Option<u64>,
        /// First TTS request → first audio, ms.
        tts_first_byte_ms: Option<u64>,
    },
    /// The agent started a response.
    ResponseStarted,
    /// The agent's response is complete (or was cancelled).
    ResponseDone,
    /// The connection to the backend dropped and was re-established; the conversation so
    /// far was replayed to the new session.
    Reconnected,
    /// The backend in use failed for good and the next one of the agent's chain took over
    /// with the conversation so far (its audio positions count from zero again).
    Switched {
        /// The failed backend (`realtime`, `cascaded`).
        from: String,
        /// The one now in use.
        to: String,
        /// Why the first one failed.
        reason: String,
    },
    /// Something went wrong. After a `fatal` error the backend sends [`BackendEvent::Closed`]
    /// and stops.
    Error {
        /// What happened (never contains credentials).
        message: String,
        /// True if the backend is gone.
        fatal: bool,
    },
    /// The backend has stopped; no more events follow.
    Closed,
}

/// What the call layer tells a backend.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendControl {
    /// The caller's audio, in [`CallContext::call_format`].
    Audio(AudioChunk),
    /// Barge-in: stop the current response and forget what the caller did not hear (see the
    /// module's barge-in contract).
    Interrupt {
        /// Milliseconds of this backend's delivered audio played out to the caller.
        played_ms: u64,
    },
    /// The result of a [`BackendEvent::ToolCall`].
    ToolResult {
        /// The call's id.
        call_id: String,
        /// The result, usually JSON text.
        output: String,
    },
    /// The result of a [`BackendEvent::ToolCall`] that needs no spoken reply (the agent hung
    /// up: its goodbye is already said, or asked for with [`BackendControl::Say`]). The result
    /// is added to the conversation; no response is requested.
    ToolResultNoReply {
        /// The call's id.
        call_id: String,
        /// The result, usually JSON text.
        output: String,
    },
    /// The caller's turn ended (voxline decided, the server's turn detection is off): commit
    /// the audio sent since the last turn and ask for a response.
    CommitTurn,
    /// Make the agent speak now, guided by `instructions` (a greeting, a goodbye).
    Say {
        /// What to say, or how.
        instructions: String,
    },
    /// End the session.
    Close,
}

/// The call layer's end of a running backend.
#[derive(Debug)]
pub struct BackendHandle {
    /// Commands to the backend (bounded, [`CONTROL_CHANNEL_CAPACITY`]).
    pub control: mpsc::Sender<BackendControl>,
    /// Events from the backend (bounded, [`EVENT_CHANNEL_CAPACITY`]); ends after
    /// [`BackendEvent::Closed`].
    pub events: mpsc::Receiver<BackendEvent>,
}

/// A tool the agent may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// The function's name.
    pub name: String,
    /// When and how to use it (the model reads this).
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// What a backend knows about the call it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct CallContext {
    /// The caller (a SIP URI user part or number, as the call layer chooses).
    pub caller: String,
    /// The number or user called.
    pub called: String,
    /// `"inbound"` or `"outbound"`.
    pub direction: String,
    /// Free variables for instruction templates (`{{var.NAME}}`).
    pub variables: BTreeMap<String, String>,
    /// What the agent remembers of the caller from earlier calls (`{{memory}}`); empty when
    /// nothing.
    pub memory: String,
    /// The audio format of [`BackendControl::Audio`] and [`BackendEvent::Audio`]: PCMU or
    /// PCMA when the call's codec is G.711 (carried through untouched), else PCM16 (24 kHz
    /// is what the Realtime API speaks; other rates are resampled by the client).
    pub call_format: AudioFormat,
    /// Tools the agent may call.
    pub tools: Vec<ToolSpec>,
    /// The conversation so far, oldest first: empty for a new call; after a switch between
    /// backends, what was said before it (the backend goes on from there).
    pub history: Vec<HistoryItem>,
}

/// One utterance of the conversation so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryItem {
    /// Who said it.
    pub role: Role,
    /// What was said (an agent's reply as far as the caller heard it).
    pub text: String,
}

/// Why a backend could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The configuration cannot work (bad URL, missing API key, unsupported format).
    #[error("invalid backend configuration: {0}")]
    Config(String),
    /// The TCP/TLS connection failed (refused, unreachable, DNS, TLS).
    #[error("cannot connect to {host}: {reason}")]
    Connect {
        /// Host and port (never the query string or credentials).
        host: String,
        /// The underlying error.
        reason: String,
    },
    /// No answer in time (connect, WebSocket upgrade or session setup).
    #[error("{stage} timed out after {after_ms} ms")]
    Timeout {
        /// What was being waited for.
        stage: &'static str,
        /// The limit, in milliseconds.
        after_ms: u64,
    },
    /// The server refused the credentials at upgrade time (HTTP 401 or 403).
    #[error("backend rejected the credentials (HTTP {status})")]
    Unauthorized {
        /// 401 or 403.
        status: u16,
    },
    /// The server is rate limiting (HTTP 429 at upgrade time).
    #[error("backend rate limit (HTTP 429){}", retry_after_s.map(|s| format!(", retry after {s} s")).unwrap_or_default())]
    RateLimited {
        /// The `Retry-After` header in seconds, if the server sent one.
        retry_after_s: Option<u64>,
    },
    /// Another HTTP status at upgrade time.
    #[error("backend refused the WebSocket upgrade (HTTP {status})")]
    Http {
        /// The status code.
        status: u16,
    },
    /// The server rejected the session configuration (an `error` event answered
    /// `session.update`).
    #[error("backend rejected the session: {0}")]
    SessionRejected(String),
    /// The server broke the protocol or closed the connection during setup.
    #[error("backend protocol error: {0}")]
    Protocol(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(AudioFormat::Pcmu8k.duration_ms(160), 20);
        assert_eq!(AudioFormat::Pcma8k.duration_ms(8000), 1000);
        assert_eq!(AudioFormat::Pcm16 { rate: 24000 }.duration_ms(960), 20);
        assert_eq!(AudioFormat::Pcm16 { rate: 24000 }.duration_ms(959), 19);
        assert_eq!(AudioFormat::Pcm16 { rate: 0 }.duration_ms(100), 0);
        assert!(AudioFormat::Pcma8k.is_g711());
        assert!(!AudioFormat::Pcm16 { rate: 8000 }.is_g711());
    }

    #[test]
    fn error_messages() {
        let e = BackendError::RateLimited {
            retry_after_s: Some(3),
        };
        assert_eq!(
            e.to_string(),
            "backend rate limit (HTTP 429), retry after 3 s"
        );
        let e = BackendError::Unauthorized { status: 401 };
        assert_eq!(e.to_string(), "backend rejected the credentials (HTTP 401)");
    }
}
