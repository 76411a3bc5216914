//! The HTTP mocks: OpenAI-compatible chat completions (streamed), OpenAI speech and Deepgram
//! Aura's REST endpoint.
//!
//! **Chat** (`POST /v1/chat/completions`), streamed; without streaming, Structured Outputs
//! only ([`crate::structured`]). Strict like OpenAI's server: `Authorization: Bearer`
//! (401 `invalid_api_key`), a JSON body (400), unknown top-level fields refused
//! ("Unrecognized request argument supplied"), `model` and a non-empty `messages` required,
//! roles checked, `tool_choice` only with `tools`, every `tool` message must answer a
//! `tool_calls` id of an assistant message before it, and every assistant tool call must be
//! answered before the next non-tool message. Replies follow the script
//! ([`ChatReply`]); the default repeats the caller: "You said: …". Text goes out one word
//! per chunk, tool calls with their arguments cut into three-character pieces, calls
//! interleaved, then `finish_reason` and `data: [DONE]`.
//!
//! **OpenAI speech** (`POST /v1/audio/speech`): Bearer auth, `model`, `input` (1 to 4096
//! characters), `voice` required, `response_format` one of OpenAI's; the mock serves `pcm`
//! (24 kHz PCM16) only, a tone of [`TtsMockConfig::ms_per_char`] per character, in 20 ms
//! chunks.
//!
//! **Deepgram speak** (`POST /v1/speak`): `Authorization: Token`, `model`, `encoding`
//! (`linear16`, `mulaw`, `alaw`) with a `sample_rate` Deepgram allows for it, `container`
//! `none`, and a JSON body `{"text": …}` (1 to 2000 characters, no other fields).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::Shared;

/// One scripted chat reply.
#[derive(Debug, Clone)]
pub enum ChatReply {
    /// Stream this text.
    Text(String),
    /// Call these tools (name, arguments), in parallel.
    Tools(Vec<(String, Value)>),
    /// Answer this HTTP status with an OpenAI error body.
    Status(u16),
}

/// What the chat mock does.
#[derive(Debug, Clone, Default)]
pub struct ChatMockConfig {
    /// Replies, one per request in order; after them, the default reply.
    pub script: Vec<ChatReply>,
    /// Pause between chunks.
    pub token_delay: Duration,
    /// Answers to non-streaming Structured Outputs requests, one per request in order (they
    /// do not take [`ChatMockConfig::script`]'s turns); after them, values made from the
    /// schema ([`crate::structured`]).
    pub analysis: Vec<crate::structured::AnalysisReply>,
}

/// What the TTS mocks do.
#[derive(Debug, Clone)]
pub struct TtsMockConfig {
    /// Audio per character of input.
    pub ms_per_char: u64,
    /// Pause before the first byte.
    pub first_byte_delay: Duration,
    /// Pause between 20 ms chunks (zero: as fast as possible).
    pub chunk_delay: Duration,
}

impl Default for TtsMockConfig {
    fn default() -> Self {
        TtsMockConfig {
            ms_per_char: 40,
            first_byte_delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
        }
    }
}

/// A chat request as received, with when its stream started and ended.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The body.
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
    /// When the last chunk went out (`None`: not yet, or refused).
    pub finished: Option<Instant>,
}

/// A TTS request as received.
#[derive(Debug, Clone)]
pub struct TtsRequest {
    /// `openai`, `deepgram`, `deepgram-ws` or `elevenlabs`.
    pub provider: &'static str,
    /// The text.
    pub text: String,
    /// The query (Deepgram) or body (OpenAI) parameters.
    pub params: Value,
    /// When it arrived.
    pub at: Instant,
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/audio/speech", post(openai_speech))
        .route("/v1/speak", post(deepgram_speak))
        .with_state(shared)
}

fn openai_error(status: u16, message: &str, code: Option<&str>) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error",
        "param": null, "code": code}});
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = (status, axum::Json(body)).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        r.headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("2"));
    }
    r
}

fn bearer_ok(shared: &Shared, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|k| k == shared.key)
}

/// The first thing wrong with a chat request, as OpenAI words it.
fn check_chat(body: &Value) -> Result<(), String> {
    const FIELDS: &[&str] = &[
        "model",
        "messages",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "user",
        "response_format",
        "n",
    ];
    let obj = body.as_object().ok_or("the body must be a JSON object")?;
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("Unrecognized request argument supplied: {k}"));
    }
    match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => {}
        _ => return Err("you must provide a model parameter".into()),
    }
    let msgs = match obj.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        _ => return Err("'messages' must be a non-empty array".into()),
    };
    if obj.get("stream").is_some_and(|s| !s.is_boolean()) {
        return Err("'stream' must be a boolean".into());
    }
    let tools = obj.get("tools");
    if let Some(t) = tools {
        let arr = t.as_array().ok_or("'tools' must be an array")?;
        for (i, tool) in arr.iter().enumerate() {
            if tool.get("type").and_then(Value::as_str) != Some("function") {
                return Err(format!("tools[{i}].type must be 'function'"));
            }
            let name = tool
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(format!("tools[{i}].function.name is invalid: {name:?}"));
            }
            if tool
                .pointer("/function/parameters")
                .is_some_and(|p| !p.is_object())
            {
                return Err(format!("tools[{i}].function.parameters must be an object"));
            }
        }
    }
    if obj.contains_key("tool_choice") && tools.is_none() {
        return Err("'tool_choice' is only allowed when 'tools' are specified".into());
    }
    // Tool messages answer the tool calls of the assistant message before them.
    let mut open: Vec<String> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        match role {
            "system" | "developer" | "user" => {
                if !open.is_empty() {
                    return Err(format!(
                        "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
                        open.join(", ")
                    ));
                }
                if !m.get("content").is_some_and(Value::is_string) {
                    return Err(format!("messages[{i}].content must be a string"));
                }
            }
            "assistant" => {
                if !open.is_empty() {
                    return Err(format!(
                        "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
                        open.join(", ")
                    ));
                }
                let calls = m.get("tool_calls").and_then(Value::as_array);
                let content = m.get("content");
                if calls.is_none() && !content.is_some_and(Value::is_string) {
                    return Err(format!(
                        "messages[{i}]: an assistant message needs content or tool_calls"
                    ));
                }
                for c in calls.into_iter().flatten() {
                    let id = c.get("id").and_then(Value::as_str).unwrap_or("");
                    let args = c
                        .pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if id.is_empty() || c.pointer("/function/name").is_none() {
                        return Err(format!("messages[{i}].tool_calls: id and name required"));
                    }
                    if serde_json::from_str::<Value>(args).is_err() {
                        return Err(format!(
                            "messages[{i}].tool_calls[{id}].function.arguments is not JSON"
                        ));
                    }
                    open.push(id.to_owned());
                }
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or("");
                match open.iter().position(|o| o == id) {
                    Some(p) => {
                        open.remove(p);
                    }
                    None => {
                        return Err(format!(
                            "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls' (messages[{i}], id {id:?})"
                        ));
                    }
                }
            }
            other => return Err(format!("messages[{i}].role {other:?} is not valid")),
        }
    }
    Ok(())
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if !bearer_ok(&shared, &headers) {
        return openai_error(401, "Incorrect API key provided.", Some("invalid_api_key"));
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return openai_error(400, &format!("We could not parse the JSON body: {e}"), None);
        }
    };
    let structured = |b: &Value| {
        b.get("stream") != Some(&Value::Bool(true)) && b.get("response_format").is_some()
    };
    let (index, seq) = {
        let mut rec = shared.rec();
        rec.chat.push(ChatRequest {
            body: body.clone(),
            at: Instant::now(),
            finished: None,
        });
        let same_kind = rec
            .chat
            .iter()
            .filter(|r| structured(&r.body) == structured(&body))
            .count();
        (rec.chat.len() - 1, same_kind - 1)
    };
    if let Err(message) =
        check_chat(&body).and_then(|()| crate::structured::check_response_format(&body))
    {
        shared.rec().errors.push(format!("chat: {message}"));
        return openai_error(400, &message, None);
    }
    if structured(&body) {
        return structured_reply(&shared, &body, seq, index);
    }
    if body.get("stream") != Some(&Value::Bool(true)) {
        return openai_error(
            400,
            "the mock serves stream=true, or Structured Outputs without streaming",
            None,
        );
    }
    let reply = shared.chat_cfg.script.get(seq).cloned().unwrap_or_else(|| {
        let last_user = body["messages"]
            .as_array()
            .and_then(|m| {
                m.iter()
                    .rev()
                    .find(|m| m["role"] == "user")
                    .and_then(|m| m["content"].as_str())
            })
            .unwrap_or("nothing");
        ChatReply::Text(format!("You said: {last_user}. What else can I do?"))
    });
    let chunks = match reply {
        ChatReply::Status(s) => return openai_error(s, "the mock was told to fail", None),
        ChatReply::Text(t) => text_chunks(&t),
        ChatReply::Tools(calls) => tool_chunks(&calls),
    };
    let delay = shared.chat_cfg.token_delay;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        for c in chunks {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let line = format!("data: {c}\n\n");
            if tx.send(Ok(Bytes::from(line))).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
        if let Some(r) = shared.rec().chat.get_mut(index) {
            r.finished = Some(Instant::now());
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The answer to a non-streaming Structured Outputs request (`seq`-th of its kind, `index`-th
/// request in all).
fn structured_reply(shared: &Shared, body: &Value, seq: usize, index: usize) -> Response {
    use crate::structured::{AnalysisReply, answer, completion, schema_of};
    let model = body["model"].as_str().unwrap_or("mock");
    let reply = shared
        .chat_cfg
        .analysis
        .get(seq)
        .cloned()
        .unwrap_or(AnalysisReply::Fill(Default::default()));
    let done = |r: Response| {
        if let Some(req) = shared.rec().chat.get_mut(index) {
            req.finished = Some(Instant::now());
        }
        r
    };
    match reply {
        AnalysisReply::Status(s) => openai_error(s, "the mock was told to fail", None),
        AnalysisReply::Refuse(text) => {
            done(axum::Json(completion(model, None, Some(text))).into_response())
        }
        AnalysisReply::Fill(fill) => {
            let content = match schema_of(body) {
                Some(schema) => match answer(body, schema, &fill) {
                    Ok(v) => v.to_string(),
                    Err(e) => {
                        shared.rec().errors.push(format!("chat: {e}"));
                        return openai_error(500, &e, None);
                    }
                },
                None => json!({}).to_string(),
            };
            done(axum::Json(completion(model, Some(content), None)).into_response())
        }
    }
}

fn chunk(delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "mock",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    })
}

fn text_chunks(text: &str) -> Vec<Value> {
    let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    let mut first = true;
    for word in text.split(' ') {
        let piece = if first {
            word.to_owned()
        } else {
            format!(" {word}")
        };
        first = false;
        out.push(chunk(json!({"content": piece}), None));
    }
    out.push(chunk(json!({}), Some("stop")));
    out
}

fn tool_chunks(calls: &[(String, Value)]) -> Vec<Value> {
    let mut out = vec![chunk(json!({"role": "assistant", "content": null}), None)];
    let args: Vec<Vec<char>> = calls
        .iter()
        .map(|(_, a)| a.to_string().chars().collect())
        .collect();
    for (i, (name, _)) in calls.iter().enumerate() {
        out.push(chunk(
            json!({"tool_calls": [{"index": i, "id": format!("call_mock_{i}"), "type": "function",
                "function": {"name": name, "arguments": ""}}]}),
            None,
        ));
    }
    // Arguments in three-character pieces, the calls interleaved.
    let longest = args.iter().map(Vec::len).max().unwrap_or(0);
    let mut at = 0;
    while at < longest {
        for (i, a) in args.iter().enumerate() {
            if at < a.len() {
                let piece: String = a[at..(at + 3).min(a.len())].iter().collect();
                out.push(chunk(
                    json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}),
                    None,
                ));
            }
        }
        at += 3;
    }
    out.push(chunk(json!({}), Some("tool_calls")));
    out
}

async fn openai_speech(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !bearer_ok(&shared, &headers) {
        return openai_error(401, "Incorrect API key provided.", Some("invalid_api_key"));
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return openai_error(400, &format!("We could not parse the JSON body: {e}"), None);
        }
    };
    const FIELDS: &[&str] = &[
        "model",
        "input",
        "voice",
        "response_format",
        "speed",
        "instructions",
        "stream_format",
    ];
    let Some(obj) = body.as_object() else {
        return openai_error(400, "the body must be a JSON object", None);
    };
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return openai_error(
            400,
            &format!("Unrecognized request argument supplied: {k}"),
            None,
        );
    }
    let text = obj.get("input").and_then(Value::as_str).unwrap_or("");
    let problem = if !obj.get("model").is_some_and(Value::is_string) {
        Some("you must provide a model parameter".to_owned())
    } else if !obj.get("voice").is_some_and(Value::is_string) {
        Some("'voice' is a required property".into())
    } else if text.is_empty() || text.chars().count() > 4096 {
        Some("'input' must be 1 to 4096 characters".into())
    } else {
        match obj.get("response_format").and_then(Value::as_str) {
            None | Some("mp3") | Some("opus") | Some("aac") | Some("flac") | Some("wav") => {
                Some("the mock serves response_format \"pcm\" only".into())
            }
            Some("pcm") => None,
            Some(other) => Some(format!(
                "'{other}' is not one of mp3, opus, aac, flac, wav, pcm"
            )),
        }
    };
    if let Some(p) = problem {
        shared.rec().errors.push(format!("openai speech: {p}"));
        return openai_error(400, &p, None);
    }
    shared.rec().tts.push(TtsRequest {
        provider: "openai",
        text: text.to_owned(),
        params: body.clone(),
        at: Instant::now(),
    });
    let pcm = speech_tone(&shared, text, 24000);
    let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
    audio_response(&shared, bytes, 24000 * 2 / 50, "application/octet-stream")
}

async fn deepgram_speak(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let dg_error = |status: u16, msg: &str| {
        let body = json!({"err_code": if status == 401 { "INVALID_AUTH" } else { "INVALID_QUERY_PARAMETER" },
            "err_msg": msg, "request_id": "mock"});
        (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            axum::Json(body),
        )
            .into_response()
    };
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth.strip_prefix("Token ") != Some(shared.key.as_str()) {
        return dg_error(401, "Invalid credentials.");
    }
    const PARAMS: &[&str] = &[
        "model",
        "encoding",
        "sample_rate",
        "container",
        "bit_rate",
        "callback",
        "mip_opt_out",
        "tag",
    ];
    if let Some(k) = q.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return dg_error(400, &format!("Unknown query parameter: {k}"));
    }
    let encoding = q.get("encoding").map(String::as_str).unwrap_or("linear16");
    let rate: u32 = match q.get("sample_rate").map(|r| r.parse::<u32>()) {
        None => 24000,
        Some(Ok(r)) => r,
        Some(Err(_)) => return dg_error(400, "sample_rate must be a number"),
    };
    let allowed: &[u32] = match encoding {
        "linear16" => &[8000, 16000, 24000, 32000, 48000],
        "mulaw" | "alaw" => &[8000, 16000],
        _ => return dg_error(400, &format!("the mock cannot produce encoding {encoding}")),
    };
    if !allowed.contains(&rate) {
        return dg_error(
            400,
            &format!("sample_rate {rate} is not valid for {encoding}"),
        );
    }
    if q.get("container").map(String::as_str) != Some("none") {
        return dg_error(
            400,
            "the mock serves raw audio only: container=none (the default is a WAV header)",
        );
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return dg_error(400, "the body is not JSON"),
    };
    let text = body.get("text").and_then(Value::as_str).unwrap_or("");
    let only_text = body.as_object().is_some_and(|o| o.len() == 1);
    if text.is_empty() || text.chars().count() > 2000 || !only_text {
        shared
            .rec()
            .errors
            .push("deepgram speak: body must be {\"text\": 1 to 2000 characters}".into());
        return dg_error(
            400,
            "the body must be {\"text\": …} with 1 to 2000 characters",
        );
    }
    shared.rec().tts.push(TtsRequest {
        provider: "deepgram",
        text: text.to_owned(),
        params: json!(q),
        at: Instant::now(),
    });
    let pcm = speech_tone(&shared, text, rate);
    let bytes: Vec<u8> = match encoding {
        "mulaw" => pcm
            .iter()
            .map(|s| voxline_mock_realtime::ulaw_encode(*s))
            .collect(),
        "alaw" => pcm
            .iter()
            .map(|s| voxline_mock_realtime::alaw_encode(*s))
            .collect(),
        _ => pcm.iter().flat_map(|s| s.to_le_bytes()).collect(),
    };
    let per_20ms = (rate / 50) as usize * if encoding == "linear16" { 2 } else { 1 };
    audio_response(&shared, bytes, per_20ms, "application/octet-stream")
}

/// The "speech" for `text`, [`TtsMockConfig::ms_per_char`] per character: syllables of
/// 200 ms (a harmonic tone whose pitch glides from 120 to 220 Hz, rising and falling in
/// level) with a short pause between them, so that it has speech's rhythm and spectrum
/// rather than a steady tone's.
pub(crate) fn speech_tone(shared: &Shared, text: &str, rate: u32) -> Vec<i16> {
    let ms = shared.tts_cfg.ms_per_char * text.chars().count() as u64;
    let n = (u64::from(rate) * ms / 1000) as usize;
    let syllable = rate as usize / 5;
    let mut phase = 0f64;
    (0..n)
        .map(|i| {
            let k = i % syllable;
            let x = k as f64 / syllable as f64;
            let pitch = 120.0 + 100.0 * x;
            phase += 2.0 * std::f64::consts::PI * pitch / f64::from(rate);
            // 160 ms voiced, 40 ms pause.
            let env = if x < 0.8 {
                (std::f64::consts::PI * x / 0.8).sin()
            } else {
                0.0
            };
            let v: f64 = (1..=8)
                .map(|h| (phase * f64::from(h)).sin() / f64::from(h))
                .sum();
            (v * env * 1500.0).round().clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

fn audio_response(shared: &Shared, bytes: Vec<u8>, chunk: usize, mime: &'static str) -> Response {
    let first = shared.tts_cfg.first_byte_delay;
    let every = shared.tts_cfg.chunk_delay;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        if !first.is_zero() {
            tokio::time::sleep(first).await;
        }
        for c in bytes.chunks(chunk.max(1)) {
            if tx.send(Ok(Bytes::copy_from_slice(c))).await.is_err() {
                return;
            }
            if !every.is_zero() {
                tokio::time::sleep(every).await;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .status(200)
        .header("content-type", mime)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
