//! Mocks of the streaming TTS sockets, on one listener (which also serves OpenAI's
//! transcription session, [`crate::openai_stt`]):
//!
//! * **Deepgram Aura** (`GET /v1/speak`, WebSocket). The key as `Authorization: Token KEY`;
//!   `encoding` one of linear16, mulaw, alaw with a `sample_rate` valid for it (G.711 at
//!   8000); unknown query parameters refused with HTTP 400 and Deepgram's error body. A
//!   `Metadata` message on connect. Client messages must be JSON text frames: `Speak` with a
//!   `text` of 1 to 2000 characters (and no other field), `Flush`, `Clear`, `Close`;
//!   anything else closes the socket with 1008 and the reason. `Flush` turns the text since
//!   the last flush into audio (binary frames of 20 ms, [`TtsMockConfig::ms_per_char`] per
//!   character) followed by `Flushed` (`sequence_id` counts the socket's flushes from 0).
//!   More than 20 flushes in 60 s get a `Warning` and are not served. `Clear` drops the
//!   text held and the audio not yet sent, then answers `Cleared`. `Close` sends what is
//!   still due and closes with 1000.
//! * **ElevenLabs** stream-input (`GET /v1/text-to-speech/{voice_id}/stream-input`). The key
//!   as `xi-api-key`; `output_format` one of ulaw_8000, pcm_16000, pcm_22050, pcm_24000,
//!   pcm_44100; unknown query parameters refused (HTTP 400). The first message must be
//!   `{"text": " "}`; every later text must end with a space, and `{"text": ""}` ends the
//!   input. Text is spoken when `flush` is true, when 120 characters are held (the first step
//!   of the default `chunk_length_schedule`) and at the end: audio goes base64 in JSON
//!   messages of up to 200 ms, each with the `alignment` (and `normalizedAlignment`) of the
//!   characters it speaks, their times counted from the start of that message's audio. Each
//!   generation starts with [`ELEVEN_LEAD_MS`] of silence. After
//!   the end, `{"isFinal": true}` and a close with 1000. A protocol error gets
//!   `{"message", "error", "code": 1008}` and a close with 1008.
//!
//! Audio is paced by [`TtsMockConfig::first_byte_delay`] and [`TtsMockConfig::chunk_delay`],
//! so a client's `Clear` can arrive while audio is still due.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::Shared;
use crate::http::{TtsRequest, speech_tone};

/// Deepgram's flush limit per minute.
const DEEPGRAM_FLUSHES: usize = 20;
/// ElevenLabs' first `chunk_length_schedule` step.
const ELEVEN_FIRST_CHUNK: usize = 120;
/// Longest ElevenLabs audio message, ms.
const ELEVEN_CHUNK_MS: u64 = 200;
/// Silence before each ElevenLabs generation's speech (as real voices have), ms: the
/// alignment starts after it, so a client that maps heard audio to text proportionally
/// instead of through the alignment is off.
pub const ELEVEN_LEAD_MS: u64 = 300;

type Ws = WebSocketStream<TcpStream>;

pub(crate) async fn run(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(stream, shared).await {
                tracing::debug!(error = %e, "mock TTS socket ended");
            }
        });
    }
}

#[derive(Debug, Clone, Copy)]
enum Out {
    Mulaw,
    Alaw,
    Linear16,
}

enum Kind {
    Deepgram {
        out: Out,
        rate: u32,
    },
    Eleven {
        out: Out,
        rate: u32,
    },
    /// OpenAI's transcription session ([`crate::openai_stt`]).
    OpenAiStt,
}

fn error_response(status: u16, body: Value) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn query_pairs(req: &Request) -> Vec<(String, String)> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[allow(clippy::result_large_err)] // tungstenite's callback answers with it as is
fn check(key: &str, req: &Request) -> Result<Kind, ErrorResponse> {
    let path = req.uri().path();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let q = query_pairs(req);
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if path == "/v1/speak" {
        let dg = |status: u16, msg: &str| {
            error_response(
                status,
                json!({"err_code": if status == 401 { "INVALID_AUTH" } else { "INVALID_QUERY_PARAMETER" },
                    "err_msg": msg, "request_id": "mock"}),
            )
        };
        if header("authorization").strip_prefix("Token ") != Some(key) {
            return Err(dg(401, "Invalid credentials."));
        }
        const PARAMS: &[&str] = &["model", "encoding", "sample_rate", "mip_opt_out", "speed"];
        if let Some((k, _)) = q.iter().find(|(k, _)| !PARAMS.contains(&k.as_str())) {
            return Err(dg(400, &format!("Unknown query parameter: {k}")));
        }
        let (out, allowed): (Out, &[u32]) = match get("encoding").unwrap_or("linear16") {
            "linear16" => (Out::Linear16, &[8000, 16000, 24000, 32000, 48000]),
            "mulaw" => (Out::Mulaw, &[8000, 16000]),
            "alaw" => (Out::Alaw, &[8000, 16000]),
            other => return Err(dg(400, &format!("encoding {other} cannot be streamed"))),
        };
        let rate = match get("sample_rate").map(str::parse::<u32>) {
            None => 24000,
            Some(Ok(r)) => r,
            Some(Err(_)) => return Err(dg(400, "sample_rate must be a number")),
        };
        if !allowed.contains(&rate) {
            return Err(dg(400, &format!("sample_rate {rate} is not valid here")));
        }
        return Ok(Kind::Deepgram { out, rate });
    }
    if path == "/v1/realtime" {
        let oa = |status: u16, msg: &str| {
            error_response(
                status,
                json!({"error": {"message": msg, "type": "invalid_request_error", "code": null, "param": null}}),
            )
        };
        if header("authorization").strip_prefix("Bearer ") != Some(key) {
            return Err(oa(401, "Incorrect API key provided."));
        }
        if get("intent") != Some("transcription") {
            return Err(oa(
                400,
                "this mock serves transcription sessions: intent=transcription",
            ));
        }
        if let Some((k, _)) = q.iter().find(|(k, _)| k != "intent") {
            return Err(oa(
                400,
                &format!("unexpected query parameter {k} for a transcription session"),
            ));
        }
        return Ok(Kind::OpenAiStt);
    }
    let voice = path
        .strip_prefix("/v1/text-to-speech/")
        .and_then(|p| p.strip_suffix("/stream-input"));
    if let Some(voice) = voice {
        let el = |status: u16, msg: &str| {
            error_response(
                status,
                json!({"detail": {"status": "invalid_request", "message": msg}}),
            )
        };
        if voice.is_empty() || voice.contains('/') {
            return Err(el(404, "voice not found"));
        }
        if header("xi-api-key") != key {
            return Err(el(401, "Invalid API key"));
        }
        const PARAMS: &[&str] = &[
            "model_id",
            "output_format",
            "language_code",
            "enable_logging",
            "enable_ssml_parsing",
            "inactivity_timeout",
            "sync_alignment",
            "auto_mode",
            "apply_text_normalization",
            "seed",
        ];
        if let Some((k, _)) = q.iter().find(|(k, _)| !PARAMS.contains(&k.as_str())) {
            return Err(el(400, &format!("Unknown query parameter: {k}")));
        }
        let (out, rate) = match get("output_format").unwrap_or("mp3_44100_128") {
            "ulaw_8000" => (Out::Mulaw, 8000),
            "pcm_16000" => (Out::Linear16, 16000),
            "pcm_22050" => (Out::Linear16, 22050),
            "pcm_24000" => (Out::Linear16, 24000),
            "pcm_44100" => (Out::Linear16, 44100),
            other => {
                return Err(el(
                    400,
                    &format!("the mock serves raw audio only, not {other}"),
                ));
            }
        };
        return Ok(Kind::Eleven { out, rate });
    }
    Err(error_response(404, json!({"error": "no such endpoint"})))
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let key = shared.key.clone();
    let mut kind = None;
    let mut query = String::new();
    #[allow(clippy::result_large_err)] // tungstenite's callback contract
    let callback = |req: &Request, resp: Response| {
        query = req.uri().to_string();
        match check(&key, req) {
            Ok(k) => {
                kind = Some(k);
                Ok(resp)
            }
            Err(e) => Err(e),
        }
    };
    let accepted = tokio_tungstenite::accept_hdr_async(stream, callback).await;
    let ws = match accepted {
        Ok(ws) => ws,
        Err(e) => {
            shared
                .rec()
                .errors
                .push(format!("TTS socket refused: {query}"));
            return Err(e.to_string());
        }
    };
    if let Some(Kind::OpenAiStt) = kind {
        crate::openai_stt::serve(ws, shared, query).await;
        return Ok(());
    }
    shared.rec().tts_socket_connections += 1;
    match kind {
        Some(Kind::Deepgram { out, rate }) => {
            Pacer::new(ws, shared, out, rate, query).deepgram().await
        }
        Some(Kind::Eleven { out, rate }) => Pacer::new(ws, shared, out, rate, query).eleven().await,
        Some(Kind::OpenAiStt) | None => Err("no endpoint".into()),
    }
}

/// Messages due to the client, paced.
struct Pacer {
    ws: Ws,
    shared: Arc<Shared>,
    out: Out,
    rate: u32,
    query: String,
    due: VecDeque<Message>,
    next: Instant,
}

impl Pacer {
    fn new(ws: Ws, shared: Arc<Shared>, out: Out, rate: u32, query: String) -> Pacer {
        Pacer {
            ws,
            shared,
            out,
            rate,
            query,
            due: VecDeque::new(),
            next: Instant::now(),
        }
    }

    fn bytes_per_sample(&self) -> usize {
        match self.out {
            Out::Linear16 => 2,
            _ => 1,
        }
    }

    fn encode(&self, pcm: &[i16]) -> Vec<u8> {
        match self.out {
            Out::Mulaw => pcm
                .iter()
                .map(|s| voxline_mock_realtime::ulaw_encode(*s))
                .collect(),
            Out::Alaw => pcm
                .iter()
                .map(|s| voxline_mock_realtime::alaw_encode(*s))
                .collect(),
            Out::Linear16 => pcm.iter().flat_map(|s| s.to_le_bytes()).collect(),
        }
    }

    fn record(&self, provider: &'static str, text: &str) {
        self.shared.rec().tts.push(TtsRequest {
            provider,
            text: text.to_owned(),
            params: json!(self.query),
            at: Instant::now(),
        });
    }

    /// Queues `msgs`, the first after the first-byte delay.
    fn queue(&mut self, msgs: impl IntoIterator<Item = Message>) {
        if self.due.is_empty() {
            self.next = Instant::now() + self.shared.tts_cfg.first_byte_delay;
        }
        self.due.extend(msgs);
    }

    /// Sends the next due message once its time has come.
    async fn send_due(&mut self) -> Result<(), String> {
        if let Some(m) = self.due.pop_front() {
            self.ws.send(m).await.map_err(|e| e.to_string())?;
            self.next = Instant::now() + self.shared.tts_cfg.chunk_delay;
        }
        Ok(())
    }

    async fn refuse(&mut self, reason: String) -> Result<(), String> {
        self.shared.rec().errors.push(reason.clone());
        let _ = self
            .ws
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Policy,
                reason: reason.clone().into(),
            })))
            .await;
        Err(reason)
    }

    async fn deepgram(mut self) -> Result<(), String> {
        let meta = json!({"type": "Metadata", "request_id": "mock-request",
            "model_name": "aura-2-thalia-en", "model_version": "mock", "model_uuid": "mock"});
        self.ws
            .send(Message::text(meta.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        let mut text = String::new();
        let mut flushes: VecDeque<Instant> = VecDeque::new();
        let mut sequence = 0u64;
        let mut closing = false;
        loop {
            if closing && self.due.is_empty() {
                let _ = self.ws.send(Message::Close(None)).await;
                return Ok(());
            }
            let wake = self.next;
            tokio::select! {
                msg = self.ws.next() => {
                    let msg = match msg {
                        Some(Ok(m)) => m,
                        _ => return Ok(()),
                    };
                    let t = match msg {
                        Message::Text(t) => t,
                        Message::Close(_) => return Ok(()),
                        Message::Ping(_) | Message::Pong(_) => continue,
                        _ => return self.refuse("deepgram tts: messages must be JSON text".into()).await,
                    };
                    let v: Value = match serde_json::from_str(t.as_str()) {
                        Ok(v) => v,
                        Err(_) => return self.refuse("deepgram tts: a message is not JSON".into()).await,
                    };
                    let kind = v.get("type").and_then(Value::as_str).unwrap_or("").to_owned();
                    self.shared.rec().tts_socket_messages.push(kind.clone());
                    match kind.as_str() {
                        "Speak" => {
                            let only = v.as_object().is_some_and(|o| o.len() == 2);
                            let s = v.get("text").and_then(Value::as_str).unwrap_or("");
                            if !only || s.is_empty() || s.chars().count() > 2000 {
                                return self.refuse("deepgram tts: Speak takes a text of 1 to 2000 characters".into()).await;
                            }
                            if !text.is_empty() {
                                text.push(' ');
                            }
                            text.push_str(s);
                        }
                        "Flush" => {
                            let now = Instant::now();
                            while flushes.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
                                flushes.pop_front();
                            }
                            if flushes.len() >= DEEPGRAM_FLUSHES {
                                self.shared.rec().errors.push("deepgram tts: flush limit exceeded".into());
                                let w = json!({"type": "Warning", "description": "Flush limit of 20 per 60 seconds exceeded", "code": "FLUSH_LIMIT"});
                                self.ws.send(Message::text(w.to_string())).await.map_err(|e| e.to_string())?;
                                continue;
                            }
                            flushes.push_back(now);
                            let said = std::mem::take(&mut text);
                            let mut msgs = Vec::new();
                            if !said.is_empty() {
                                self.record("deepgram-ws", &said);
                                let pcm = speech_tone(&self.shared, &said, self.rate);
                                let bytes = self.encode(&pcm);
                                let per = (self.rate / 50) as usize * self.bytes_per_sample();
                                msgs.extend(bytes.chunks(per.max(1)).map(|c| Message::binary(c.to_vec())));
                            }
                            msgs.push(Message::text(json!({"type": "Flushed", "sequence_id": sequence}).to_string()));
                            sequence += 1;
                            self.queue(msgs);
                        }
                        "Clear" => {
                            text.clear();
                            self.due.clear();
                            let m = json!({"type": "Cleared", "sequence_id": sequence});
                            self.ws.send(Message::text(m.to_string())).await.map_err(|e| e.to_string())?;
                        }
                        "Close" => closing = true,
                        other => {
                            return self.refuse(format!("deepgram tts: unknown message type {other:?}")).await;
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake), if !self.due.is_empty() => self.send_due().await?,
            }
        }
    }

    /// Speech for `text` as ElevenLabs messages with alignment.
    fn eleven_audio(&self, text: &str) -> Vec<Message> {
        self.record("elevenlabs", text);
        let lead = vec![0i16; (u64::from(self.rate) * ELEVEN_LEAD_MS / 1000) as usize];
        let pcm: Vec<i16> = lead
            .into_iter()
            .chain(speech_tone(&self.shared, text, self.rate))
            .collect();
        let per_char = self.shared.tts_cfg.ms_per_char;
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let samples = (u64::from(self.rate) * ELEVEN_CHUNK_MS / 1000) as usize;
        let mut out = Vec::new();
        for (i, block) in pcm.chunks(samples.max(1)).enumerate() {
            let from = i as u64 * ELEVEN_CHUNK_MS;
            let to = from + ELEVEN_CHUNK_MS;
            let (mut cs, mut starts, mut durs) = (Vec::new(), Vec::new(), Vec::new());
            for (k, c) in chars.iter().enumerate() {
                let t = ELEVEN_LEAD_MS + k as u64 * per_char;
                if t >= from && t < to {
                    cs.push(c.clone());
                    starts.push(t - from);
                    durs.push(per_char);
                }
            }
            let alignment =
                json!({"chars": cs, "charStartTimesMs": starts, "charDurationsMs": durs});
            let m = json!({
                "audio": BASE64.encode(self.encode(block)),
                "isFinal": null,
                "normalizedAlignment": alignment,
                "alignment": alignment,
            });
            out.push(Message::text(m.to_string()));
        }
        out
    }

    async fn eleven(mut self) -> Result<(), String> {
        let mut text = String::new();
        let mut first = true;
        let mut ended = false;
        loop {
            if ended && self.due.is_empty() {
                let _ = self.ws.send(Message::Close(None)).await;
                return Ok(());
            }
            let wake = self.next;
            tokio::select! {
                msg = self.ws.next(), if !ended => {
                    let msg = match msg {
                        Some(Ok(m)) => m,
                        _ => return Ok(()),
                    };
                    let t = match msg {
                        Message::Text(t) => t,
                        Message::Close(_) => return Ok(()),
                        Message::Ping(_) | Message::Pong(_) => continue,
                        _ => return self.eleven_error("messages must be JSON text").await,
                    };
                    let v: Value = match serde_json::from_str(t.as_str()) {
                        Ok(v) => v,
                        Err(_) => return self.eleven_error("a message is not JSON").await,
                    };
                    self.shared.rec().tts_socket_messages.push(t.to_string());
                    let Some(s) = v.get("text").and_then(Value::as_str) else {
                        return self.eleven_error("every message needs text").await;
                    };
                    if first {
                        if s != " " {
                            return self.eleven_error("the first message's text must be a single space").await;
                        }
                        first = false;
                        continue;
                    }
                    if s.is_empty() {
                        ended = true;
                        let mut msgs = Vec::new();
                        if !text.trim().is_empty() {
                            msgs.extend(self.eleven_audio(&std::mem::take(&mut text)));
                        }
                        msgs.push(Message::text(json!({"audio": null, "isFinal": true}).to_string()));
                        self.queue(msgs);
                        continue;
                    }
                    if !s.ends_with(' ') {
                        return self.eleven_error("text must end with a space").await;
                    }
                    text.push_str(s);
                    let flush = v.get("flush").and_then(Value::as_bool) == Some(true);
                    if flush || text.chars().count() >= ELEVEN_FIRST_CHUNK {
                        let said = std::mem::take(&mut text);
                        let msgs = self.eleven_audio(&said);
                        self.queue(msgs);
                    }
                }
                _ = tokio::time::sleep_until(wake), if !self.due.is_empty() => self.send_due().await?,
            }
        }
    }

    async fn eleven_error(&mut self, message: &str) -> Result<(), String> {
        self.shared
            .rec()
            .errors
            .push(format!("elevenlabs: {message}"));
        let m = json!({"message": message, "error": "invalid_request", "code": 1008});
        let _ = self.ws.send(Message::text(m.to_string())).await;
        let _ = self
            .ws
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Policy,
                reason: message.to_owned().into(),
            })))
            .await;
        Err(message.to_owned())
    }
}
