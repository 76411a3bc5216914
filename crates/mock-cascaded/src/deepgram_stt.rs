//! A mock of Deepgram's live transcription (`GET /v1/listen`, WebSocket).
//!
//! Strict where Deepgram is: the key must come as `Authorization: Token KEY` (a `Bearer`
//! header is for temporary tokens and is refused), `encoding` needs `sample_rate`,
//! `utterance_end_ms` needs `interim_results=true` and is at least 1000, unknown query
//! parameters are refused (HTTP 400 with Deepgram's error body), control messages must be
//! text frames with a known `type`, and audio must be binary frames.
//!
//! It decodes the audio in the requested encoding and runs an energy VAD over 20 ms blocks,
//! in audio time: speech after [`SttMockConfig::vad_start_ms`] above
//! [`SttMockConfig::rms_threshold`]; interim results every 400 ms of speech; after
//! `endpointing` ms of silence a final result with `speech_final: true` carrying the
//! scripted transcript of that utterance; after `utterance_end_ms` an `UtteranceEnd`.
//! `Finalize` finalizes the utterance in progress at once (`from_finalize: true`).

use std::sync::Arc;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::Shared;

/// Query parameters Deepgram's live endpoint takes that the mock knows.
const KNOWN_PARAMS: &[&str] = &[
    "model",
    "language",
    "encoding",
    "sample_rate",
    "channels",
    "interim_results",
    "endpointing",
    "utterance_end_ms",
    "vad_events",
    "smart_format",
    "punctuate",
    "keyterm",
    "keywords",
    "diarize",
    "numerals",
    "profanity_filter",
    "redact",
    "tag",
    "mip_opt_out",
];

/// What the STT mock does.
#[derive(Debug, Clone)]
pub struct SttMockConfig {
    /// RMS (PCM16 scale) above which a 20 ms block is speech.
    pub rms_threshold: f64,
    /// Speech must last this long to start an utterance.
    pub vad_start_ms: u64,
    /// The transcripts of successive utterances (the n-th utterance of the server, over all
    /// connections, gets entry n modulo the length); empty: `utterance N`.
    pub utterances: Vec<String>,
}

impl Default for SttMockConfig {
    fn default() -> Self {
        SttMockConfig {
            rms_threshold: 500.0,
            vad_start_ms: 60,
            utterances: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Linear16,
    Mulaw,
    Alaw,
}

struct Params {
    encoding: Encoding,
    sample_rate: u32,
    endpointing_ms: Option<u64>,
    utterance_end_ms: Option<u64>,
    interim: bool,
}

fn deepgram_error(status: u16, message: &str) -> ErrorResponse {
    let body = json!({
        "err_code": if status == 401 { "INVALID_AUTH" } else { "Bad Request" },
        "err_msg": message,
        "request_id": "00000000-0000-0000-0000-000000000000",
    });
    let mut r = ErrorResponse::new(Some(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(message) {
        r.headers_mut().insert("dg-error", v);
    }
    r
}

fn check(key: &str, req: &Request) -> Result<Params, (u16, String)> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth.strip_prefix("Token ") != Some(key) {
        return Err((401, "Invalid credentials.".into()));
    }
    if req.uri().path() != "/v1/listen" {
        return Err((404, format!("no such endpoint {}", req.uri().path())));
    }
    let query = req.uri().query().unwrap_or("");
    let mut params = std::collections::HashMap::new();
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        if !KNOWN_PARAMS.contains(&k) {
            return Err((400, format!("Unknown query parameter: {k}")));
        }
        params.insert(k.to_owned(), v.to_owned());
    }
    let encoding = match params.get("encoding").map(String::as_str) {
        Some("linear16") => Encoding::Linear16,
        Some("mulaw") => Encoding::Mulaw,
        Some("alaw") => Encoding::Alaw,
        Some(other) => return Err((400, format!("the mock cannot decode encoding {other}"))),
        None => return Err((400, "the mock needs raw audio: set encoding".into())),
    };
    let sample_rate: u32 = match params.get("sample_rate").map(|s| s.parse()) {
        Some(Ok(r)) if (8000..=48000).contains(&r) => r,
        Some(_) => return Err((400, "sample_rate must be a number".into())),
        None => {
            return Err((400, "sample_rate is required when encoding is set".into()));
        }
    };
    if matches!(encoding, Encoding::Mulaw | Encoding::Alaw) && sample_rate != 8000 {
        return Err((400, "the mock decodes G.711 at 8000 Hz only".into()));
    }
    if params.get("channels").is_some_and(|c| c != "1") {
        return Err((400, "the mock takes one channel".into()));
    }
    let interim = match params.get("interim_results").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => return Err((400, format!("interim_results: {v} is not a boolean"))),
    };
    let endpointing_ms = match params.get("endpointing").map(String::as_str) {
        None => Some(10),
        Some("false") => None,
        Some(v) => Some(
            v.parse()
                .map_err(|_| (400, format!("endpointing: {v} is not a number")))?,
        ),
    };
    let utterance_end_ms = match params.get("utterance_end_ms") {
        None => None,
        Some(v) => {
            let ms: u64 = v
                .parse()
                .map_err(|_| (400, format!("utterance_end_ms: {v} is not a number")))?;
            if !interim {
                return Err((400, "utterance_end_ms requires interim_results=true".into()));
            }
            if ms < 1000 {
                return Err((400, "utterance_end_ms must be at least 1000".into()));
            }
            Some(ms)
        }
    };
    Ok(Params {
        encoding,
        sample_rate,
        endpointing_ms,
        utterance_end_ms,
        interim,
    })
}

pub(crate) async fn run(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(stream, shared.clone()).await {
                tracing::debug!(error = %e, "mock STT connection ended");
            }
        });
    }
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    if !shared.stt_accepting() {
        return Ok(());
    }
    let key = shared.key.clone();
    let mut params = None;
    let mut query = String::new();
    #[allow(clippy::result_large_err)] // tungstenite's callback contract
    let callback = |req: &Request, resp: Response| {
        query = req.uri().query().unwrap_or("").to_owned();
        match check(&key, req) {
            Ok(p) => {
                params = Some(p);
                Ok(resp)
            }
            Err((status, message)) => Err(deepgram_error(status, &message)),
        }
    };
    let accepted = tokio_tungstenite::accept_hdr_async(stream, callback).await;
    shared.rec().stt_queries.push(query);
    let ws = accepted.map_err(|e| e.to_string())?;
    let Some(params) = params else {
        return Err("no parameters".into());
    };
    shared.rec().stt_connections += 1;
    let mut drop_rx = shared.drop_tx.subscribe();
    let mut conn = Conn {
        shared,
        ws,
        p: params,
        pos_ms: 0,
        run_ms: 0,
        speech: None,
        silence_ms: 0,
        last_word_end_ms: None,
        since_interim_ms: 0,
    };
    loop {
        tokio::select! {
            msg = conn.ws.next() => match msg {
                None => return Ok(()),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(m)) => if !conn.on_message(m).await? {
                    return Ok(());
                },
            },
            _ = drop_rx.changed() => {
                // Cut without a closing handshake, like a network failure.
                return Ok(());
            }
        }
    }
}

struct Utterance {
    start_ms: u64,
    speech_ms: u64,
}

struct Conn {
    shared: Arc<Shared>,
    ws: WebSocketStream<TcpStream>,
    p: Params,
    /// Audio received on this connection, in ms.
    pos_ms: u64,
    /// Speech run before an utterance starts.
    run_ms: u64,
    speech: Option<Utterance>,
    silence_ms: u64,
    last_word_end_ms: Option<u64>,
    since_interim_ms: u64,
}

impl Conn {
    async fn on_message(&mut self, m: Message) -> Result<bool, String> {
        match m {
            Message::Binary(b) => {
                {
                    let mut rec = self.shared.rec();
                    rec.stt_audio_bytes += b.len() as u64;
                    rec.stt_audio.extend_from_slice(&b);
                }
                self.on_audio(&b).await?;
                Ok(true)
            }
            Message::Text(t) => {
                let v: Value = match serde_json::from_str(t.as_str()) {
                    Ok(v) => v,
                    Err(_) => return self.close_with(1008, "DATA-0000: text is not JSON").await,
                };
                let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
                self.shared.rec().stt_controls.push(kind.to_owned());
                match kind {
                    "KeepAlive" => Ok(true),
                    "Finalize" => {
                        self.finalize(true).await?;
                        Ok(true)
                    }
                    "CloseStream" => {
                        let md = json!({"type": "Metadata", "request_id": "mock",
                            "duration": self.pos_ms as f64 / 1000.0, "channels": 1});
                        self.send(md).await?;
                        let _ = self.ws.close(None).await;
                        Ok(false)
                    }
                    other => {
                        self.shared
                            .rec()
                            .errors
                            .push(format!("STT: unknown control message {other:?}"));
                        self.close_with(1008, "DATA-0000: unknown message type")
                            .await
                    }
                }
            }
            Message::Close(_) => Ok(false),
            _ => Ok(true),
        }
    }

    async fn close_with(&mut self, code: u16, reason: &str) -> Result<bool, String> {
        let _ = self
            .ws
            .close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.to_owned().into(),
            }))
            .await;
        Ok(false)
    }

    async fn send(&mut self, v: Value) -> Result<(), String> {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .map_err(|e| e.to_string())
    }

    fn samples(&self, b: &[u8]) -> Vec<i16> {
        match self.p.encoding {
            Encoding::Linear16 => b
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect(),
            Encoding::Mulaw => b
                .iter()
                .map(|c| voxline_mock_realtime::ulaw_decode(*c))
                .collect(),
            Encoding::Alaw => b
                .iter()
                .map(|c| voxline_mock_realtime::alaw_decode(*c))
                .collect(),
        }
    }

    async fn on_audio(&mut self, b: &[u8]) -> Result<(), String> {
        let samples = self.samples(b);
        let block = (self.p.sample_rate / 50) as usize;
        for chunk in samples.chunks(block.max(1)) {
            let ms = (chunk.len() as u64 * 1000) / u64::from(self.p.sample_rate);
            let rms = (chunk.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>()
                / chunk.len().max(1) as f64)
                .sqrt();
            let voiced = rms > self.shared.stt_cfg.rms_threshold;
            self.step(voiced, ms).await?;
            self.pos_ms += ms;
        }
        Ok(())
    }

    async fn step(&mut self, voiced: bool, ms: u64) -> Result<(), String> {
        if voiced {
            self.silence_ms = 0;
            match &mut self.speech {
                Some(u) => {
                    u.speech_ms += ms;
                    self.since_interim_ms += ms;
                    if self.p.interim && self.since_interim_ms >= 400 {
                        self.since_interim_ms = 0;
                        let words = (u.speech_ms / 400).max(1);
                        let start = u.start_ms;
                        let text = vec!["uh"; words as usize].join(" ");
                        self.results(start, self.pos_ms + ms, &text, false, false, false)
                            .await?;
                    }
                }
                None => {
                    self.run_ms += ms;
                    if self.run_ms >= self.shared.stt_cfg.vad_start_ms {
                        self.speech = Some(Utterance {
                            start_ms: (self.pos_ms + ms).saturating_sub(self.run_ms),
                            speech_ms: self.run_ms,
                        });
                        self.since_interim_ms = 0;
                    }
                }
            }
            return Ok(());
        }
        self.run_ms = 0;
        self.silence_ms += ms;
        if self.speech.is_some() {
            if let Some(ep) = self.p.endpointing_ms
                && self.silence_ms >= ep
            {
                self.finalize(false).await?;
            }
        } else if let (Some(ue), Some(end)) = (self.p.utterance_end_ms, self.last_word_end_ms)
            && self.pos_ms + ms >= end + ue
        {
            self.last_word_end_ms = None;
            let ev = json!({"type": "UtteranceEnd", "channel": [0, 1],
                "last_word_end": end as f64 / 1000.0});
            self.shared.rec().stt_sent.push(ev.clone());
            self.send(ev).await?;
        }
        Ok(())
    }

    /// Ends the utterance in progress with its scripted transcript.
    async fn finalize(&mut self, from_finalize: bool) -> Result<(), String> {
        let Some(u) = self.speech.take() else {
            if from_finalize {
                // Deepgram answers a Finalize with nothing to finish with an empty final.
                let at = self.pos_ms;
                self.results(at, at, "", true, false, true).await?;
            }
            return Ok(());
        };
        let text = self.shared.next_utterance();
        let end = self.pos_ms.saturating_sub(self.silence_ms);
        self.last_word_end_ms = Some(end);
        self.results(u.start_ms, end, &text, true, !from_finalize, from_finalize)
            .await
    }

    async fn results(
        &mut self,
        start_ms: u64,
        end_ms: u64,
        text: &str,
        is_final: bool,
        speech_final: bool,
        from_finalize: bool,
    ) -> Result<(), String> {
        let mut ev = json!({
            "type": "Results",
            "channel_index": [0, 1],
            "duration": end_ms.saturating_sub(start_ms) as f64 / 1000.0,
            "start": start_ms as f64 / 1000.0,
            "is_final": is_final,
            "speech_final": speech_final,
            "channel": {"alternatives": [{"transcript": text, "confidence": 0.99, "words": []}]},
            "metadata": {"request_id": "mock", "model_uuid": "mock"},
        });
        if from_finalize {
            ev["from_finalize"] = json!(true);
        }
        self.shared.rec().stt_sent.push(ev.clone());
        self.send(ev).await
    }
}

impl Shared {
    fn stt_accepting(&self) -> bool {
        self.stt_accepting.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn next_utterance(&self) -> String {
        let mut rec = self.rec();
        let n = rec.stt_utterances;
        rec.stt_utterances += 1;
        let script = &self.stt_cfg.utterances;
        if script.is_empty() {
            format!("utterance {}", n + 1)
        } else {
            script[(n as usize) % script.len()].clone()
        }
    }
}
