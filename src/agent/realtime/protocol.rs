//! Serde types for the OpenAI Realtime API (GA protocol) events voxline sends and reads.
//!
//! Only what the client uses is modelled. Client events serialize to the GA shapes
//! (`session.type = "realtime"`, audio settings under `session.audio.input` /
//! `session.audio.output`, formats as objects such as `{"type":"audio/pcmu"}`); server events
//! deserialize from the GA names (`response.output_audio.delta`, not the beta
//! `response.audio.delta`). Unknown server event types parse as [`ServerEvent::Other`];
//! unknown fields are ignored.
//!
//! The mock server ([`super::mock`]) deliberately does not use these types: it checks the
//! JSON the client sends against its own reading of the GA reference, so a mistake here
//! shows up as an `error` event in the tests instead of being mirrored.

use serde::{Deserialize, Serialize};

/// `session.type` for a speech-to-speech session.
pub const SESSION_TYPE_REALTIME: &str = "realtime";

/// The only PCM sample rate the Realtime API accepts (`audio/pcm` `rate`).
pub const PCM_RATE: u32 = 24_000;

/// An event the client sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum ClientEvent {
    /// `session.update`: configure the session.
    #[serde(rename = "session.update")]
    SessionUpdate {
        /// The fields to set.
        session: Session,
    },
    /// `input_audio_buffer.append`: caller audio, base64 in the session's input format.
    #[serde(rename = "input_audio_buffer.append")]
    InputAudioBufferAppend {
        /// Base64 of the audio bytes.
        audio: String,
    },
    /// `input_audio_buffer.commit`: the caller's turn ended (turns decided by the client,
    /// with the server's turn detection off).
    #[serde(rename = "input_audio_buffer.commit")]
    InputAudioBufferCommit,
    /// `response.create`: ask the model to respond.
    #[serde(rename = "response.create")]
    ResponseCreate {
        /// Per-response overrides.
        #[serde(skip_serializing_if = "Option::is_none")]
        response: Option<ResponseParams>,
    },
    /// `response.cancel`: stop the response in progress.
    #[serde(rename = "response.cancel")]
    ResponseCancel {
        /// The response to cancel (the active one if absent).
        #[serde(skip_serializing_if = "Option::is_none")]
        response_id: Option<String>,
    },
    /// `conversation.item.create`: add an item (history replay, a tool's output).
    #[serde(rename = "conversation.item.create")]
    ConversationItemCreate {
        /// The item.
        item: Item,
    },
    /// `conversation.item.truncate`: trim an assistant audio item to what was heard.
    #[serde(rename = "conversation.item.truncate")]
    ConversationItemTruncate {
        /// The assistant message item.
        item_id: String,
        /// The content part; always 0.
        content_index: u32,
        /// Audio kept, in milliseconds; the server rejects more than the item has.
        audio_end_ms: u64,
    },
    /// `conversation.item.delete`: remove an item (an assistant reply the caller never
    /// heard).
    #[serde(rename = "conversation.item.delete")]
    ConversationItemDelete {
        /// The item.
        item_id: String,
    },
}

/// The `session` object of `session.update` (GA shape).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    /// Always [`SESSION_TYPE_REALTIME`].
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The model (already chosen by the URL; sent for clarity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// System instructions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// `["audio"]`: answer with audio (plus its transcript).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_modalities: Option<Vec<String>>,
    /// Audio input and output settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio: Option<SessionAudio>,
    /// Function tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<FunctionTool>>,
    /// `"auto"` when tools are given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<String>,
}

/// `session.audio`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionAudio {
    /// `session.audio.input`.
    pub input: AudioInput,
    /// `session.audio.output`.
    pub output: AudioOutput,
}

/// `session.audio.input`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AudioInput {
    /// The format of `input_audio_buffer.append` audio.
    pub format: WireFormat,
    /// `null` turns noise reduction off.
    pub noise_reduction: Option<NoiseReductionWire>,
    /// Caller transcription; absent leaves it off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcription: Option<Transcription>,
    /// `null` turns turn detection off (the client must then ask for responses).
    pub turn_detection: Option<TurnDetection>,
}

/// `session.audio.output`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AudioOutput {
    /// The format of `response.output_audio.delta` audio.
    pub format: WireFormat,
    /// The voice (`alloy`, `marin`, `cedar`…); absent keeps the server's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
}

/// An audio format object (`{"type":"audio/pcmu"}`, `{"type":"audio/pcm","rate":24000}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum WireFormat {
    /// 16-bit little-endian mono PCM; `rate` is always 24000.
    #[serde(rename = "audio/pcm")]
    Pcm {
        /// Sample rate ([`PCM_RATE`]).
        rate: u32,
    },
    /// G.711 μ-law, 8 kHz.
    #[serde(rename = "audio/pcmu")]
    Pcmu,
    /// G.711 A-law, 8 kHz.
    #[serde(rename = "audio/pcma")]
    Pcma,
}

/// `audio.input.noise_reduction` when on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NoiseReductionWire {
    /// `near_field` or `far_field`.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// `audio.input.transcription`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transcription {
    /// The transcription model (`gpt-4o-transcribe`, `gpt-4o-mini-transcribe`,
    /// `whisper-1`…).
    pub model: String,
}

/// `audio.input.turn_detection`: how the server decides the caller finished a turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TurnDetection {
    /// Voice activity detection on volume.
    ServerVad {
        /// Activation threshold 0.0–1.0 (server default 0.5).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        threshold: Option<f32>,
        /// Audio kept before detected speech, ms (server default 300).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix_padding_ms: Option<u32>,
        /// Silence that ends a turn, ms (server default 500).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        silence_duration_ms: Option<u32>,
        /// Respond automatically at the end of a turn (server default true).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        create_response: Option<bool>,
        /// Cancel the response in progress when the caller starts speaking (server
        /// default true).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interrupt_response: Option<bool>,
    },
    /// A turn-detection model estimates when the caller is done.
    SemanticVad {
        /// `low`, `medium`, `high` or `auto` (server default `auto`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        eagerness: Option<String>,
        /// Respond automatically at the end of a turn.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        create_response: Option<bool>,
        /// Cancel the response in progress when the caller starts speaking.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interrupt_response: Option<bool>,
    },
}

/// A function tool in `session.tools`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionTool {
    /// Always `"function"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The function's name.
    pub name: String,
    /// What it does and when to call it.
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
}

/// The `response` object of `response.create`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResponseParams {
    /// Instructions for this response only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
}

/// A conversation item the client creates.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Item {
    /// A message (history replay).
    Message {
        /// `user` or `assistant`.
        role: MessageRole,
        /// Its content parts.
        content: Vec<ContentPart>,
    },
    /// The result of a function call.
    FunctionCallOutput {
        /// The call's id.
        call_id: String,
        /// Free text (usually JSON).
        output: String,
    },
}

/// The role of a message item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageRole {
    /// The caller.
    User,
    /// The model.
    Assistant,
}

/// A content part of a message item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// User text.
    InputText {
        /// The text.
        text: String,
    },
    /// Assistant text.
    OutputText {
        /// The text.
        text: String,
    },
}

/// An event the server sends (the ones the client acts on).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type")]
pub enum ServerEvent {
    /// `error`.
    #[serde(rename = "error")]
    Error {
        /// What went wrong.
        error: ErrorBody,
    },
    /// `session.created`: the first event of a connection.
    #[serde(rename = "session.created")]
    SessionCreated,
    /// `session.updated`: the effective configuration after `session.update`.
    #[serde(rename = "session.updated")]
    SessionUpdated {
        /// The session.
        #[serde(default)]
        session: serde_json::Value,
    },
    /// `input_audio_buffer.speech_started`.
    #[serde(rename = "input_audio_buffer.speech_started")]
    SpeechStarted {
        /// Where speech starts in the audio appended so far, ms.
        audio_start_ms: u64,
        /// The user item that speech will become.
        #[serde(default)]
        item_id: Option<String>,
    },
    /// `input_audio_buffer.speech_stopped`.
    #[serde(rename = "input_audio_buffer.speech_stopped")]
    SpeechStopped {
        /// Where speech ended, ms.
        audio_end_ms: u64,
        /// The user item.
        #[serde(default)]
        item_id: Option<String>,
    },
    /// `input_audio_buffer.committed`: a user audio item was created.
    #[serde(rename = "input_audio_buffer.committed")]
    Committed {
        /// The new user item.
        item_id: String,
    },
    /// `conversation.item.input_audio_transcription.delta`.
    #[serde(rename = "conversation.item.input_audio_transcription.delta")]
    InputTranscriptionDelta {
        /// The user item.
        item_id: String,
        /// New text.
        #[serde(default)]
        delta: String,
    },
    /// `conversation.item.input_audio_transcription.completed`.
    #[serde(rename = "conversation.item.input_audio_transcription.completed")]
    InputTranscriptionCompleted {
        /// The user item.
        item_id: String,
        /// The transcript.
        transcript: String,
    },
    /// `conversation.item.input_audio_transcription.failed`.
    #[serde(rename = "conversation.item.input_audio_transcription.failed")]
    InputTranscriptionFailed {
        /// The user item.
        item_id: String,
        /// Why.
        error: ErrorBody,
    },
    /// `response.created`.
    #[serde(rename = "response.created")]
    ResponseCreated {
        /// The response.
        response: ResponseInfo,
    },
    /// `response.done`.
    #[serde(rename = "response.done")]
    ResponseDone {
        /// The response, with its final status.
        response: ResponseInfo,
    },
    /// `response.output_item.added`.
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded {
        /// The response.
        response_id: String,
        /// The new item.
        item: OutputItem,
    },
    /// `response.output_audio.delta` (GA name of the beta `response.audio.delta`).
    #[serde(rename = "response.output_audio.delta")]
    OutputAudioDelta {
        /// The response.
        response_id: String,
        /// The assistant message item.
        item_id: String,
        /// Base64 audio in the session's output format.
        delta: String,
    },
    /// `response.output_audio.done`.
    #[serde(rename = "response.output_audio.done")]
    OutputAudioDone {
        /// The item.
        item_id: String,
    },
    /// `response.output_audio_transcript.delta`.
    #[serde(rename = "response.output_audio_transcript.delta")]
    OutputAudioTranscriptDelta {
        /// The item.
        item_id: String,
        /// New text.
        delta: String,
    },
    /// `response.output_audio_transcript.done`.
    #[serde(rename = "response.output_audio_transcript.done")]
    OutputAudioTranscriptDone {
        /// The item.
        item_id: String,
        /// The whole transcript.
        transcript: String,
    },
    /// `response.function_call_arguments.done`.
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone {
        /// The call's id.
        call_id: String,
        /// The function-call item.
        item_id: String,
        /// The function's name (some versions of the reference list it here; it is also
        /// on the item in `response.output_item.added`).
        #[serde(default)]
        name: Option<String>,
        /// The arguments, a JSON string.
        arguments: String,
    },
    /// `conversation.item.truncated`.
    #[serde(rename = "conversation.item.truncated")]
    ItemTruncated {
        /// The item.
        item_id: String,
        /// Audio kept, ms.
        audio_end_ms: u64,
    },
    /// `conversation.item.deleted`.
    #[serde(rename = "conversation.item.deleted")]
    ItemDeleted {
        /// The item.
        item_id: String,
    },
    /// `rate_limits.updated`.
    #[serde(rename = "rate_limits.updated")]
    RateLimitsUpdated {
        /// The limits.
        #[serde(default)]
        rate_limits: Vec<RateLimit>,
    },
    /// Any other event type.
    #[serde(other)]
    Other,
}

/// The `error` object of an `error` event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ErrorBody {
    /// `invalid_request_error`, `server_error`…
    #[serde(rename = "type", default)]
    pub kind: String,
    /// A machine-readable code, if any.
    #[serde(default)]
    pub code: Option<String>,
    /// What went wrong.
    #[serde(default)]
    pub message: String,
    /// The offending parameter, if any.
    #[serde(default)]
    pub param: Option<String>,
    /// The client event that caused it, if any.
    #[serde(default)]
    pub event_id: Option<String>,
}

/// The `response` object of `response.created` / `response.done`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ResponseInfo {
    /// `resp_…`.
    pub id: String,
    /// `in_progress`, `completed`, `cancelled`, `failed`, `incomplete`.
    #[serde(default)]
    pub status: Option<String>,
}

/// The item of `response.output_item.added`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OutputItem {
    /// The item id.
    pub id: String,
    /// `message`, `function_call`…
    #[serde(rename = "type")]
    pub kind: String,
    /// `assistant` for messages.
    #[serde(default)]
    pub role: Option<String>,
    /// For function calls.
    #[serde(default)]
    pub call_id: Option<String>,
    /// For function calls.
    #[serde(default)]
    pub name: Option<String>,
}

/// One entry of `rate_limits.updated`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RateLimit {
    /// `requests` or `tokens`.
    #[serde(default)]
    pub name: Option<String>,
    /// The limit.
    #[serde(default)]
    pub limit: Option<u64>,
    /// What remains.
    #[serde(default)]
    pub remaining: Option<u64>,
    /// Seconds until it resets.
    #[serde(default)]
    pub reset_seconds: Option<f64>,
}

/// The error code the server sends for `response.cancel` with no response in progress.
pub const CODE_CANCEL_NOT_ACTIVE: &str = "response_cancel_not_active";

impl ClientEvent {
    /// The event as JSON text.
    pub fn to_json(&self) -> String {
        // invariant: every field is a string, number, bool, Value or a struct of those;
        // serializing such a value to a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl ServerEvent {
    /// Parses one server event.
    pub fn parse(text: &str) -> Result<ServerEvent, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn to_value(e: &ClientEvent) -> Value {
        serde_json::from_str(&e.to_json()).unwrap()
    }

    #[test]
    fn session_update_ga_shape() {
        let e = ClientEvent::SessionUpdate {
            session: Session {
                kind: SESSION_TYPE_REALTIME,
                model: None,
                instructions: Some("hi".into()),
                output_modalities: Some(vec!["audio".into()]),
                audio: Some(SessionAudio {
                    input: AudioInput {
                        format: WireFormat::Pcmu,
                        noise_reduction: None,
                        transcription: None,
                        turn_detection: Some(TurnDetection::SemanticVad {
                            eagerness: Some("low".into()),
                            create_response: None,
                            interrupt_response: None,
                        }),
                    },
                    output: AudioOutput {
                        format: WireFormat::Pcm { rate: PCM_RATE },
                        voice: Some("marin".into()),
                    },
                }),
                tools: None,
                tool_choice: None,
            },
        };
        assert_eq!(
            to_value(&e),
            json!({"type": "session.update", "session": {
                "type": "realtime", "instructions": "hi", "output_modalities": ["audio"],
                "audio": {
                    "input": {"format": {"type": "audio/pcmu"}, "noise_reduction": null,
                              "turn_detection": {"type": "semantic_vad", "eagerness": "low"}},
                    "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}
                }
            }})
        );
    }

    #[test]
    fn items_and_truncate() {
        let e = ClientEvent::ConversationItemCreate {
            item: Item::Message {
                role: MessageRole::Assistant,
                content: vec![ContentPart::OutputText { text: "x".into() }],
            },
        };
        assert_eq!(
            to_value(&e),
            json!({"type": "conversation.item.create", "item": {"type": "message",
                "role": "assistant", "content": [{"type": "output_text", "text": "x"}]}})
        );
        let e = ClientEvent::ConversationItemCreate {
            item: Item::FunctionCallOutput {
                call_id: "c".into(),
                output: "{}".into(),
            },
        };
        assert_eq!(
            to_value(&e),
            json!({"type": "conversation.item.create",
                   "item": {"type": "function_call_output", "call_id": "c", "output": "{}"}})
        );
        let e = ClientEvent::ConversationItemTruncate {
            item_id: "i".into(),
            content_index: 0,
            audio_end_ms: 1500,
        };
        assert_eq!(
            to_value(&e),
            json!({"type": "conversation.item.truncate", "item_id": "i", "content_index": 0,
                   "audio_end_ms": 1500})
        );
        assert_eq!(
            to_value(&ClientEvent::ResponseCreate { response: None }),
            json!({"type": "response.create"})
        );
    }

    #[test]
    fn server_events_parse() {
        let e = ServerEvent::parse(
            r#"{"type":"response.output_audio.delta","event_id":"e","response_id":"r",
               "item_id":"i","output_index":0,"content_index":0,"delta":"AAA="}"#,
        )
        .unwrap();
        assert_eq!(
            e,
            ServerEvent::OutputAudioDelta {
                response_id: "r".into(),
                item_id: "i".into(),
                delta: "AAA=".into()
            }
        );
        // The beta name is not the GA event.
        assert_eq!(
            ServerEvent::parse(r#"{"type":"response.audio.delta","delta":"x"}"#).unwrap(),
            ServerEvent::Other
        );
        let e = ServerEvent::parse(
            r#"{"type":"error","event_id":"e","error":{"type":"invalid_request_error",
               "code":"unknown_parameter","message":"Unknown parameter","param":"session.x"}}"#,
        )
        .unwrap();
        let ServerEvent::Error { error } = e else {
            panic!("not an error")
        };
        assert_eq!(error.code.as_deref(), Some("unknown_parameter"));
        assert_eq!(error.param.as_deref(), Some("session.x"));
        assert!(ServerEvent::parse(r#"{"type":"response.done"}"#).is_err());
    }
}
