//! The second STT provider: OpenAI's Realtime API in a transcription session
//! (`wss://api.openai.com/v1/realtime?intent=transcription`).
//!
//! Why this one: it takes G.711 as it is (`audio/pcmu`, `audio/pcma`), so a phone call's
//! audio goes up untouched as with Deepgram; its server VAD ends utterances the way
//! Deepgram's endpointing does; and a cascaded agent can then run on one OpenAI key for all
//! three stages (with the OpenAI TTS). It speaks the Realtime protocol voxline already
//! implements for its speech-to-speech backend, so its events are well understood.
//!
//! The session is set up with one `session.update` (`type: "transcription"`, the input
//! format, the transcription model and language, `server_vad` with `silence_duration_ms`
//! from `endpointing_ms`). Audio goes as `input_audio_buffer.append` (base64; PCM at another
//! rate than 24 kHz is resampled, the only PCM rate the API takes). Results map onto
//! [`SttEvent`]s: `…input_audio_transcription.delta` → `Interim` (the item's text so far),
//! `…completed` → `Final` with `speech_final` (the server VAD ended the utterance, or the
//! client committed it). voxline's `Finalize` becomes `input_audio_buffer.commit`; an empty
//! buffer's refusal (`input_audio_buffer_commit_empty`) answers it with an empty final.
//! Reconnection and replay are the shared client's ([`super::stt`]).

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use tracing::{debug, warn};

use super::stt::{SttConfig, SttEvent};
use crate::agent::backend::{AudioFormat, BackendError};
use crate::dsp::resample::Resampler;

/// OpenAI's transcription endpoint.
pub const DEFAULT_OPENAI_STT_URL: &str = "wss://api.openai.com/v1/realtime?intent=transcription";
/// The default transcription model.
pub const DEFAULT_OPENAI_STT_MODEL: &str = "gpt-4o-transcribe";
/// The only PCM rate the Realtime API takes.
pub const OPENAI_PCM_RATE: u32 = 24_000;
/// Items whose state is kept (their text so far and where they end).
const ITEMS: usize = 64;

/// The `audio.input.format` object for a call format.
pub fn input_format(format: AudioFormat) -> Value {
    match format {
        AudioFormat::Pcmu8k => json!({"type": "audio/pcmu"}),
        AudioFormat::Pcma8k => json!({"type": "audio/pcma"}),
        AudioFormat::Pcm16 { .. } => json!({"type": "audio/pcm", "rate": OPENAI_PCM_RATE}),
    }
}

/// The `session.update` that makes the connection a transcription session.
pub fn session_update(cfg: &SttConfig, format: AudioFormat) -> String {
    let mut transcription = json!({"model": cfg.model});
    if let Some(lang) = &cfg.language {
        transcription["language"] = json!(lang);
    }
    json!({
        "type": "session.update",
        "session": {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": input_format(format),
                    "transcription": transcription,
                    "turn_detection": {
                        "type": "server_vad",
                        "silence_duration_ms": cfg.endpointing_ms,
                    },
                    // voxline's own chain cleans the audio when it runs.
                    "noise_reduction": null,
                },
            },
        },
    })
    .to_string()
}

#[derive(Debug, Default)]
struct Item {
    text: String,
    /// Where its audio ends, in the call's audio (ms).
    end_ms: Option<u64>,
    /// Committed by the client (a `Finalize`).
    client_commit: bool,
}

/// One connection's state.
pub struct OpenAiStt {
    format: AudioFormat,
    resampler: Option<Resampler>,
    items: HashMap<String, Item>,
    order: Vec<String>,
    /// A commit was sent and its `committed` has not come yet.
    commit_pending: bool,
    samples: Vec<i16>,
    out: Vec<i16>,
}

impl OpenAiStt {
    /// State for a new connection carrying audio in `format`.
    pub fn new(format: AudioFormat) -> Result<OpenAiStt, BackendError> {
        let resampler = match format {
            AudioFormat::Pcm16 { rate } if rate != OPENAI_PCM_RATE => Some(
                Resampler::new(rate, OPENAI_PCM_RATE)
                    .map_err(|e| BackendError::Config(format!("STT resampler: {e}")))?,
            ),
            _ => None,
        };
        Ok(OpenAiStt {
            format,
            resampler,
            items: HashMap::new(),
            order: Vec::new(),
            commit_pending: false,
            samples: Vec::new(),
            out: Vec::new(),
        })
    }

    /// The `input_audio_buffer.append` for the call's `bytes`.
    pub fn append(&mut self, bytes: &[u8]) -> Option<String> {
        let wire: Vec<u8> = match (&mut self.resampler, self.format) {
            (Some(r), AudioFormat::Pcm16 { .. }) => {
                self.samples.clear();
                self.samples.extend(
                    bytes
                        .chunks_exact(2)
                        .map(|c| i16::from_le_bytes([c[0], c[1]])),
                );
                self.out.clear();
                if let Err(e) = r.process(&self.samples, &mut self.out) {
                    warn!(error = %e, "STT: resampling failed; a chunk is dropped");
                    return None;
                }
                self.out.iter().flat_map(|s| s.to_le_bytes()).collect()
            }
            _ => bytes.to_vec(),
        };
        if wire.is_empty() {
            return None;
        }
        Some(
            json!({"type": "input_audio_buffer.append", "audio": BASE64.encode(&wire)}).to_string(),
        )
    }

    /// The message for voxline's `Finalize`.
    pub fn commit(&mut self) -> String {
        self.commit_pending = true;
        json!({"type": "input_audio_buffer.commit"}).to_string()
    }

    fn item(&mut self, id: &str) -> &mut Item {
        if !self.items.contains_key(id) {
            if self.order.len() >= ITEMS {
                let old = self.order.remove(0);
                self.items.remove(&old);
            }
            self.order.push(id.to_owned());
        }
        self.items.entry(id.to_owned()).or_default()
    }

    /// A server message: the event it makes, and the call's audio it finalized (ms).
    /// `base_ms` is where this connection's audio starts in the call's audio, `sent_ms` how
    /// much of it was sent so far.
    pub fn on_message(
        &mut self,
        v: &Value,
        base_ms: u64,
        sent_ms: u64,
    ) -> Option<(SttEvent, Option<u64>)> {
        let id = v
            .get("item_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "input_audio_buffer.speech_stopped" => {
                let end = v.get("audio_end_ms").and_then(Value::as_u64).unwrap_or(0);
                self.item(&id).end_ms = Some(base_ms + end);
                None
            }
            "input_audio_buffer.committed" => {
                let client = std::mem::take(&mut self.commit_pending);
                let item = self.item(&id);
                if item.end_ms.is_none() {
                    // Committed by the client: everything sent so far.
                    item.end_ms = Some(sent_ms);
                    item.client_commit = client;
                }
                None
            }
            "conversation.item.input_audio_transcription.delta" => {
                let delta = v.get("delta").and_then(Value::as_str).unwrap_or("");
                let item = self.item(&id);
                item.text.push_str(delta);
                let text = item.text.trim().to_owned();
                (!text.is_empty()).then_some((SttEvent::Interim(text), None))
            }
            "conversation.item.input_audio_transcription.completed" => {
                let text = v
                    .get("transcript")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                let item = self.items.remove(&id).unwrap_or_default();
                self.order.retain(|o| *o != id);
                let end = item.end_ms.unwrap_or(sent_ms);
                Some((
                    SttEvent::Final {
                        text,
                        speech_final: true,
                        from_finalize: item.client_commit,
                        end_ms: end,
                    },
                    Some(end),
                ))
            }
            "conversation.item.input_audio_transcription.failed" => {
                let message = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                warn!(%message, "STT: a transcription failed");
                let item = self.items.remove(&id).unwrap_or_default();
                self.order.retain(|o| *o != id);
                let end = item.end_ms.unwrap_or(sent_ms);
                Some((
                    SttEvent::Final {
                        text: String::new(),
                        speech_final: true,
                        from_finalize: item.client_commit,
                        end_ms: end,
                    },
                    Some(end),
                ))
            }
            "error" => {
                let code = v
                    .pointer("/error/code")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let message = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if code == "input_audio_buffer_commit_empty" && self.commit_pending {
                    // Nothing left to transcribe: the Finalize is answered with nothing.
                    self.commit_pending = false;
                    return Some((
                        SttEvent::Final {
                            text: String::new(),
                            speech_final: true,
                            from_finalize: true,
                            end_ms: sent_ms,
                        },
                        None,
                    ));
                }
                warn!(code, %message, "STT: the server reported an error");
                None
            }
            other => {
                debug!(kind = other, "STT: message ignored");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::realtime::ApiKey;
    use std::time::Duration;

    fn cfg() -> SttConfig {
        SttConfig {
            provider: super::super::stt::SttProvider::OpenAi,
            url: DEFAULT_OPENAI_STT_URL.into(),
            model: DEFAULT_OPENAI_STT_MODEL.into(),
            language: Some("en".into()),
            api_key: ApiKey::new("k"),
            endpointing_ms: 400,
            utterance_end_ms: 1000,
            connect_timeout: Duration::from_secs(5),
            reconnect_budget: Duration::from_secs(2),
        }
    }

    #[test]
    fn the_session_is_a_transcription_session_in_the_calls_format() {
        let v: Value = serde_json::from_str(&session_update(&cfg(), AudioFormat::Pcma8k)).unwrap();
        assert_eq!(v["session"]["type"], "transcription");
        let input = &v["session"]["audio"]["input"];
        assert_eq!(input["format"]["type"], "audio/pcma");
        assert_eq!(input["transcription"]["model"], "gpt-4o-transcribe");
        assert_eq!(input["transcription"]["language"], "en");
        assert_eq!(input["turn_detection"]["silence_duration_ms"], 400);
        let v: Value =
            serde_json::from_str(&session_update(&cfg(), AudioFormat::Pcm16 { rate: 16000 }))
                .unwrap();
        assert_eq!(v["session"]["audio"]["input"]["format"]["rate"], 24000);
    }

    #[test]
    fn events_map_to_interims_and_finals_at_the_utterance_end() {
        let mut s = OpenAiStt::new(AudioFormat::Pcmu8k).unwrap();
        let ev = |t: &str, rest: Value| {
            let mut v = rest;
            v["type"] = json!(t);
            v
        };
        // This connection's audio starts 2 s into the call.
        assert!(
            s.on_message(
                &ev(
                    "input_audio_buffer.speech_stopped",
                    json!({"item_id": "i1", "audio_end_ms": 1500})
                ),
                2000,
                4000
            )
            .is_none()
        );
        let (e, _) = s
            .on_message(
                &ev(
                    "conversation.item.input_audio_transcription.delta",
                    json!({"item_id": "i1", "delta": "hello "}),
                ),
                2000,
                4000,
            )
            .unwrap();
        assert_eq!(e, SttEvent::Interim("hello".into()));
        let (e, fin) = s
            .on_message(
                &ev(
                    "conversation.item.input_audio_transcription.completed",
                    json!({"item_id": "i1", "transcript": "Hello there."}),
                ),
                2000,
                4100,
            )
            .unwrap();
        assert_eq!(
            e,
            SttEvent::Final {
                text: "Hello there.".into(),
                speech_final: true,
                from_finalize: false,
                end_ms: 3500
            }
        );
        assert_eq!(fin, Some(3500));
        // A Finalize on an empty buffer is answered with an empty final.
        s.commit();
        let (e, _) = s
            .on_message(
                &ev("error", json!({"error": {"type": "invalid_request_error", "code": "input_audio_buffer_commit_empty", "message": "buffer too small"}})),
                2000,
                5000,
            )
            .unwrap();
        assert!(
            matches!(e, SttEvent::Final { from_finalize: true, ref text, .. } if text.is_empty())
        );
    }

    #[test]
    fn pcm_at_16k_goes_up_at_24k() {
        let mut s = OpenAiStt::new(AudioFormat::Pcm16 { rate: 16000 }).unwrap();
        let mut total = 0;
        for _ in 0..50 {
            let m = s.append(&[0u8; 640]).unwrap_or_default();
            if m.is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&m).unwrap();
            total += BASE64.decode(v["audio"].as_str().unwrap()).unwrap().len();
        }
        // One second at 16 kHz becomes about one second at 24 kHz (48 000 bytes), less the
        // resampler's delay.
        assert!((44_000..=48_000).contains(&total), "{total}");
    }
}
