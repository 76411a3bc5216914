//! A mock of OpenAI's Realtime API in a transcription session
//! (`GET /v1/realtime?intent=transcription`, WebSocket), served on the TTS sockets' listener.
//!
//! Strict where the API is: the key as `Authorization: Bearer KEY`; `intent=transcription`
//! and no `model` in the URL (a model URL opens a conversation session); `session.created`
//! first; a `session.update` whose `session.type` is `transcription`, with only the fields a
//! transcription session has (`audio.input.format` one of `audio/pcmu`, `audio/pcma`,
//! `audio/pcm` at 24 000 Hz; `transcription.model` a transcription model;
//! `turn_detection` `server_vad`, `semantic_vad` or null; `noise_reduction`), answered with
//! `session.updated`, else an `error` event. Audio before the session is set up, or not
//! base64, is an error too.
//!
//! Appended audio runs through the same energy VAD as the Deepgram mock (in audio time):
//! `input_audio_buffer.speech_started`, then after `silence_duration_ms` of quiet
//! `speech_stopped`, `committed`, one `…input_audio_transcription.delta` per word and
//! `…completed` with the scripted utterance. `input_audio_buffer.commit` commits at once;
//! with less than 100 ms of audio since the last commit it is refused with
//! `input_audio_buffer_commit_empty`.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::Shared;

/// Transcription models the mock takes.
const MODELS: &[&str] = &[
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o-transcribe-latest",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Pcmu,
    Pcma,
    Pcm24k,
}

impl Format {
    fn rate(self) -> u64 {
        match self {
            Format::Pcm24k => 24_000,
            _ => 8_000,
        }
    }
}

struct Conn {
    shared: Arc<Shared>,
    ws: WebSocketStream<TcpStream>,
    format: Option<Format>,
    silence_limit_ms: u64,
    /// Audio received, ms.
    pos_ms: u64,
    /// Audio since the last commit, ms.
    uncommitted_ms: u64,
    run_ms: u64,
    speech_start: Option<u64>,
    silence_ms: u64,
    items: u64,
    events: u64,
    last_item: Option<String>,
}

/// Serves one accepted connection.
pub(crate) async fn serve(ws: WebSocketStream<TcpStream>, shared: Arc<Shared>, query: String) {
    {
        let mut rec = shared.rec();
        rec.stt_connections += 1;
        rec.stt_queries.push(query);
    }
    let mut drop_rx = shared.drop_tx.subscribe();
    let mut c = Conn {
        shared,
        ws,
        format: None,
        silence_limit_ms: 500,
        pos_ms: 0,
        uncommitted_ms: 0,
        run_ms: 0,
        speech_start: None,
        silence_ms: 0,
        items: 0,
        events: 0,
        last_item: None,
    };
    let created = json!({"type": "session.created", "session": {
        "type": "transcription", "object": "realtime.transcription_session", "id": "sess_mock",
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
            "transcription": null, "turn_detection": null, "noise_reduction": null}}}});
    if c.send(created).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            msg = c.ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if c.on_text(t.as_str()).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(Message::Binary(_))) => {
                    c.shared.rec().errors.push("openai stt: binary frames are not events".into());
                    if c.error("invalid_request_error", "invalid_event", "Binary messages are not supported.").await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
            },
            _ = drop_rx.changed() => return,
        }
    }
}

fn bad(param: &str, message: &str) -> Result<(), (String, String)> {
    Err((param.to_owned(), message.to_owned()))
}

/// Checks a transcription `session` object; the format and silence it sets.
fn check_session(s: &Value) -> Result<(Format, u64), (String, String)> {
    let obj = s
        .as_object()
        .ok_or(("session".to_owned(), "must be an object".to_owned()))?;
    for k in obj.keys() {
        if !["type", "audio", "include"].contains(&k.as_str()) {
            bad(
                &format!("session.{k}"),
                "Unknown parameter for a transcription session.",
            )?;
        }
    }
    if s.get("type").and_then(Value::as_str) != Some("transcription") {
        bad(
            "session.type",
            "This connection is a transcription session: type must be 'transcription'.",
        )?;
    }
    let input = s.pointer("/audio/input").cloned().unwrap_or(json!({}));
    if let Some(o) = s.get("audio").and_then(Value::as_object)
        && let Some(k) = o.keys().find(|k| *k != "input")
    {
        bad(
            &format!("session.audio.{k}"),
            "A transcription session has no output audio.",
        )?;
    }
    let Some(io) = input.as_object() else {
        return Err(("session.audio.input".into(), "must be an object".into()));
    };
    for k in io.keys() {
        if ![
            "format",
            "transcription",
            "turn_detection",
            "noise_reduction",
        ]
        .contains(&k.as_str())
        {
            bad(&format!("session.audio.input.{k}"), "Unknown parameter.")?;
        }
    }
    let format = match input.pointer("/format/type").and_then(Value::as_str) {
        Some("audio/pcmu") => Format::Pcmu,
        Some("audio/pcma") => Format::Pcma,
        Some("audio/pcm") => {
            if input.pointer("/format/rate").and_then(Value::as_u64) != Some(24_000) {
                bad(
                    "session.audio.input.format.rate",
                    "Only a 24000 Hz rate is supported.",
                )?;
            }
            Format::Pcm24k
        }
        _ => {
            return Err((
                "session.audio.input.format".into(),
                "format.type must be audio/pcm, audio/pcmu or audio/pcma".into(),
            ));
        }
    };
    let model = input
        .pointer("/transcription/model")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !MODELS.contains(&model) {
        bad(
            "session.audio.input.transcription.model",
            "Invalid transcription model.",
        )?;
    }
    let silence = match input.get("turn_detection") {
        Some(Value::Null) => 0,
        Some(td) => match td.get("type").and_then(Value::as_str) {
            Some("server_vad") => td
                .get("silence_duration_ms")
                .and_then(Value::as_u64)
                .unwrap_or(500),
            Some("semantic_vad") => 500,
            _ => {
                return Err((
                    "session.audio.input.turn_detection.type".into(),
                    "must be server_vad or semantic_vad".into(),
                ));
            }
        },
        None => 500,
    };
    if let Some(nr) = input.get("noise_reduction")
        && !nr.is_null()
        && !matches!(
            nr.get("type").and_then(Value::as_str),
            Some("near_field" | "far_field")
        )
    {
        bad(
            "session.audio.input.noise_reduction.type",
            "must be near_field or far_field",
        )?;
    }
    Ok((format, silence))
}

impl Conn {
    async fn send(&mut self, mut v: Value) -> Result<(), String> {
        self.events += 1;
        v["event_id"] = json!(format!("event_{:04}", self.events));
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .map_err(|e| e.to_string())
    }

    async fn error(&mut self, kind: &str, code: &str, message: &str) -> Result<(), String> {
        self.send(
            json!({"type": "error", "error": {"type": kind, "code": code,
            "message": message, "param": null, "event_id": null}}),
        )
        .await
    }

    async fn refuse(&mut self, param: &str, message: &str) -> Result<(), String> {
        self.shared
            .rec()
            .errors
            .push(format!("openai stt: {param}: {message}"));
        self.send(
            json!({"type": "error", "error": {"type": "invalid_request_error",
            "code": "invalid_value", "message": message, "param": param, "event_id": null}}),
        )
        .await
    }

    async fn on_text(&mut self, t: &str) -> Result<(), String> {
        let Ok(v) = serde_json::from_str::<Value>(t) else {
            return self.refuse("", "The message is not valid JSON.").await;
        };
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        self.shared.rec().stt_controls.push(kind.clone());
        match kind.as_str() {
            "session.update" => {
                let session = v.get("session").cloned().unwrap_or(Value::Null);
                match check_session(&session) {
                    Ok((format, silence)) => {
                        self.format = Some(format);
                        self.silence_limit_ms = silence;
                        self.send(json!({"type": "session.updated", "session": session}))
                            .await
                    }
                    Err((param, message)) => self.refuse(&param, &message).await,
                }
            }
            "input_audio_buffer.append" => {
                let Some(format) = self.format else {
                    return self
                        .refuse(
                            "type",
                            "Set the transcription session up before sending audio.",
                        )
                        .await;
                };
                let Some(b64) = v.get("audio").and_then(Value::as_str) else {
                    return self
                        .refuse("audio", "Missing required parameter: 'audio'.")
                        .await;
                };
                let Ok(bytes) = BASE64.decode(b64.as_bytes()) else {
                    return self.refuse("audio", "Invalid base64 audio.").await;
                };
                {
                    let mut rec = self.shared.rec();
                    rec.stt_audio_bytes += bytes.len() as u64;
                    rec.stt_audio.extend_from_slice(&bytes);
                }
                let samples: Vec<i16> = match format {
                    Format::Pcmu => bytes
                        .iter()
                        .map(|b| voxline_mock_realtime::ulaw_decode(*b))
                        .collect(),
                    Format::Pcma => bytes
                        .iter()
                        .map(|b| voxline_mock_realtime::alaw_decode(*b))
                        .collect(),
                    Format::Pcm24k => bytes
                        .chunks_exact(2)
                        .map(|c| i16::from_le_bytes([c[0], c[1]]))
                        .collect(),
                };
                let block = (format.rate() / 50) as usize;
                for chunk in samples.chunks(block) {
                    let ms = chunk.len() as u64 * 1000 / format.rate();
                    let rms = (chunk.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>()
                        / chunk.len().max(1) as f64)
                        .sqrt();
                    self.step(rms > self.shared.stt_cfg.rms_threshold, ms)
                        .await?;
                    self.pos_ms += ms;
                    self.uncommitted_ms += ms;
                }
                Ok(())
            }
            "input_audio_buffer.commit" => {
                if self.uncommitted_ms < 100 {
                    return self
                        .error(
                            "invalid_request_error",
                            "input_audio_buffer_commit_empty",
                            "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio.",
                        )
                        .await;
                }
                let had_speech = self.speech_start.take().is_some();
                self.commit(had_speech).await
            }
            "input_audio_buffer.clear" => {
                self.uncommitted_ms = 0;
                self.speech_start = None;
                self.send(json!({"type": "input_audio_buffer.cleared"}))
                    .await
            }
            other => {
                let message = format!(
                    "Invalid value: '{other}'. Supported values are: 'session.update', 'input_audio_buffer.append', 'input_audio_buffer.commit', 'input_audio_buffer.clear'."
                );
                self.refuse("type", &message).await
            }
        }
    }

    async fn step(&mut self, voiced: bool, ms: u64) -> Result<(), String> {
        let vad = self.silence_limit_ms > 0;
        if voiced {
            self.silence_ms = 0;
            if self.speech_start.is_none() {
                self.run_ms += ms;
                if self.run_ms >= self.shared.stt_cfg.vad_start_ms {
                    let start = (self.pos_ms + ms).saturating_sub(self.run_ms);
                    self.speech_start = Some(start);
                    if vad {
                        let item = format!("item_{:03}", self.items + 1);
                        self.send(json!({"type": "input_audio_buffer.speech_started",
                            "audio_start_ms": start, "item_id": item}))
                            .await?;
                    }
                }
            }
            return Ok(());
        }
        self.run_ms = 0;
        self.silence_ms += ms;
        if vad && self.speech_start.is_some() && self.silence_ms >= self.silence_limit_ms {
            self.speech_start = None;
            let item = format!("item_{:03}", self.items + 1);
            let end = (self.pos_ms + ms).saturating_sub(self.silence_ms);
            self.send(json!({"type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": end, "item_id": item}))
                .await?;
            self.commit(true).await?;
        }
        Ok(())
    }

    /// Commits the buffer as an item and transcribes it (the scripted utterance if it held
    /// speech, else nothing).
    async fn commit(&mut self, speech: bool) -> Result<(), String> {
        self.items += 1;
        self.uncommitted_ms = 0;
        let item = format!("item_{:03}", self.items);
        let previous = self.last_item.replace(item.clone());
        self.send(json!({"type": "input_audio_buffer.committed",
            "previous_item_id": previous, "item_id": item}))
            .await?;
        let text = if speech {
            self.shared.next_utterance()
        } else {
            String::new()
        };
        for (i, word) in text.split_inclusive(' ').enumerate() {
            self.send(
                json!({"type": "conversation.item.input_audio_transcription.delta",
                "item_id": item, "content_index": 0, "delta": word, "index": i}),
            )
            .await?;
        }
        let done = json!({"type": "conversation.item.input_audio_transcription.completed",
            "item_id": item, "content_index": 0, "transcript": text,
            "usage": {"type": "duration", "seconds": 1}});
        self.shared.rec().stt_sent.push(done.clone());
        self.send(done).await
    }
}
