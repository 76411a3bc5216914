//! Streaming speech-to-text: Deepgram's live protocol (`/v1/listen` over WebSocket), and
//! OpenAI's Realtime transcription session ([`super::stt_openai`]) through the same client:
//! reconnection, replay and the events are shared; the wire messages are the provider's.
//!
//! The call's audio goes up as it is wherever Deepgram takes the call's format: μ-law and
//! A-law at 8 kHz (`encoding=mulaw|alaw&sample_rate=8000`), PCM16 at the call's rate
//! (`encoding=linear16`). Results come back as interim and final transcripts
//! (`is_final`, `speech_final` after `endpointing` ms of silence) and `UtteranceEnd` events
//! (`utterance_end_ms` after the last word). The client sends `KeepAlive` when no audio went
//! up for [`KEEPALIVE_AFTER`] (a call on hold sends none; Deepgram closes an idle stream after
//! ten seconds), `Finalize` when voxline's VAD ends a turn before Deepgram did, and
//! `CloseStream` at the end.
//!
//! **Reconnection without losing audio.** The client keeps the audio Deepgram has not
//! finalized yet (up to [`MAX_REPLAY`]). If the socket drops, it reconnects (attempts at 0,
//! 250 and 500 ms within the budget), sends that audio again, then what arrived meanwhile
//! (buffered, never dropped below the bound), and maps the new connection's timestamps back
//! onto the call's audio.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};

use super::ApiKey;
use super::stt_openai::{OpenAiStt, session_update};
use crate::agent::backend::{AudioFormat, BackendError};
use crate::agent::ws::{self, ConnectionLost, Target, Ws};

/// Deepgram's streaming endpoint.
pub const DEFAULT_DEEPGRAM_STT_URL: &str = "wss://api.deepgram.com/v1/listen";
/// The default model.
pub const DEFAULT_DEEPGRAM_STT_MODEL: &str = "nova-3";
/// Deepgram's `endpointing` default here: silence before `speech_final`.
pub const DEFAULT_ENDPOINTING_MS: u32 = 300;
/// `utterance_end_ms`: Deepgram's gap after the last word before `UtteranceEnd` (its minimum
/// is 1000).
pub const DEFAULT_UTTERANCE_END_MS: u32 = 1000;
/// Send `KeepAlive` after this long without audio (Deepgram's guide: every 3 to 5 s; it closes
/// the stream after 10 s).
pub const KEEPALIVE_AFTER: Duration = Duration::from_secs(4);
/// Most audio kept for replay after a reconnect.
pub const MAX_REPLAY: Duration = Duration::from_secs(30);
/// Capacity of the audio queue into the client.
pub const STT_QUEUE: usize = 512;
/// Delays before each reconnection attempt, in milliseconds.
pub const RECONNECT_BACKOFF_MS: [u64; 3] = [0, 250, 500];

/// Which STT protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SttProvider {
    /// Deepgram's live transcription.
    Deepgram,
    /// OpenAI's Realtime API in a transcription session.
    OpenAi,
}

/// How to reach the STT provider.
#[derive(Debug, Clone, PartialEq)]
pub struct SttConfig {
    /// The protocol.
    pub provider: SttProvider,
    /// WebSocket URL ([`DEFAULT_DEEPGRAM_STT_URL`]).
    pub url: String,
    /// Model ([`DEFAULT_DEEPGRAM_STT_MODEL`]).
    pub model: String,
    /// Language (`language=`), `None`: the model's default.
    pub language: Option<String>,
    /// The key, sent as `Authorization: Token KEY` (Deepgram) or `Bearer KEY` (OpenAI).
    pub api_key: ApiKey,
    /// `endpointing` in ms (OpenAI: the server VAD's `silence_duration_ms`).
    pub endpointing_ms: u32,
    /// `utterance_end_ms` (Deepgram only).
    pub utterance_end_ms: u32,
    /// Limit for connecting.
    pub connect_timeout: Duration,
    /// Time allowed for reconnecting, all attempts included.
    pub reconnect_budget: Duration,
}

/// What the STT client reports.
#[derive(Debug, Clone, PartialEq)]
pub enum SttEvent {
    /// A provisional transcript of the words so far.
    Interim(String),
    /// A final transcript of a stretch of audio.
    Final {
        /// The words (may be empty).
        text: String,
        /// Deepgram's endpointing found the end of speech.
        speech_final: bool,
        /// The answer to a `Finalize`.
        from_finalize: bool,
        /// Where the transcribed audio ends in the call's audio sent so far, in ms.
        end_ms: u64,
    },
    /// Deepgram found a gap of `utterance_end_ms` after the last word.
    UtteranceEnd,
    /// The connection dropped and was re-established; the unfinalized audio was sent again.
    Reconnected,
    /// The client gave up (reconnecting failed, or the server refused the stream).
    Failed(String),
}

/// Commands to the STT client.
#[derive(Debug)]
pub enum SttInput {
    /// Caller audio in the call's format.
    Audio(Bytes),
    /// Finish the audio so far now (`Finalize`).
    Finalize,
}

/// The session's end of a running STT client.
#[derive(Debug)]
pub struct SttHandle {
    /// Audio and commands (bounded, [`STT_QUEUE`]).
    pub input: mpsc::Sender<SttInput>,
    /// Results.
    pub events: mpsc::Receiver<SttEvent>,
}

/// The `encoding` and `sample_rate` Deepgram gets for a call format.
pub fn deepgram_encoding(format: AudioFormat) -> (&'static str, u32) {
    match format {
        AudioFormat::Pcmu8k => ("mulaw", 8000),
        AudioFormat::Pcma8k => ("alaw", 8000),
        AudioFormat::Pcm16 { rate } => ("linear16", rate),
    }
}

/// The listen URL for a call format.
pub fn listen_url(cfg: &SttConfig, format: AudioFormat) -> Result<url::Url, BackendError> {
    let mut url =
        url::Url::parse(&cfg.url).map_err(|e| BackendError::Config(format!("bad STT URL: {e}")))?;
    let (encoding, rate) = deepgram_encoding(format);
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("model", &cfg.model);
        q.append_pair("encoding", encoding);
        q.append_pair("sample_rate", &rate.to_string());
        q.append_pair("channels", "1");
        q.append_pair("interim_results", "true");
        q.append_pair("endpointing", &cfg.endpointing_ms.to_string());
        q.append_pair("utterance_end_ms", &cfg.utterance_end_ms.to_string());
        q.append_pair("smart_format", "true");
        if let Some(lang) = &cfg.language {
            q.append_pair("language", lang);
        }
    }
    Ok(url)
}

/// Connects to the STT provider for one call and starts the client task.
pub async fn connect(cfg: SttConfig, format: AudioFormat) -> Result<SttHandle, BackendError> {
    let url = match cfg.provider {
        SttProvider::Deepgram => listen_url(&cfg, format)?,
        SttProvider::OpenAi => url::Url::parse(&cfg.url)
            .map_err(|e| BackendError::Config(format!("bad STT URL: {e}")))?,
    };
    let target = Target::new(&url, "STT")?;
    let mut ws = open(&target, &cfg, cfg.connect_timeout).await?;
    let openai = setup(&mut ws, &cfg, format).await?;
    info!(host = %target.host, model = %cfg.model, "STT stream open");
    let (input_tx, input_rx) = mpsc::channel(STT_QUEUE);
    let (event_tx, event_rx) = mpsc::channel(STT_QUEUE);
    let client = Client {
        target,
        cfg,
        format,
        events: event_tx,
        replay: VecDeque::new(),
        sent_ms: 0,
        conn_base_ms: 0,
        finalized_ms: 0,
        last_audio: Instant::now(),
        openai,
    };
    tokio::spawn(client.run(ws, input_rx));
    Ok(SttHandle {
        input: input_tx,
        events: event_rx,
    })
}

async fn open(target: &Target, cfg: &SttConfig, limit: Duration) -> Result<Ws, BackendError> {
    let auth = match cfg.provider {
        SttProvider::Deepgram => format!("Token {}", cfg.api_key.expose()),
        SttProvider::OpenAi => format!("Bearer {}", cfg.api_key.expose()),
    };
    match tokio::time::timeout(limit, ws::dial(target, &[("Authorization", &auth)])).await {
        Err(_) => Err(BackendError::Timeout {
            stage: "STT connect",
            after_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
        }),
        Ok(r) => r,
    }
}

/// Sets a new connection up: nothing for Deepgram (the URL says it all), the transcription
/// session for OpenAI (whose state per connection it returns).
async fn setup(
    ws: &mut Ws,
    cfg: &SttConfig,
    format: AudioFormat,
) -> Result<Option<OpenAiStt>, BackendError> {
    match cfg.provider {
        SttProvider::Deepgram => Ok(None),
        SttProvider::OpenAi => {
            let update = session_update(cfg, format);
            ws.send(Message::text(update))
                .await
                .map_err(|e| BackendError::Protocol(format!("STT session setup failed: {e}")))?;
            Ok(Some(OpenAiStt::new(format)?))
        }
    }
}

struct Client {
    target: Target,
    cfg: SttConfig,
    format: AudioFormat,
    events: mpsc::Sender<SttEvent>,
    /// Audio sent but not yet finalized: (position in the call's audio in ms, bytes).
    replay: VecDeque<(u64, Bytes)>,
    /// The call's audio sent so far, in ms.
    sent_ms: u64,
    /// Where the current connection's audio starts in the call's audio.
    conn_base_ms: u64,
    /// The call's audio Deepgram has finalized, in ms.
    finalized_ms: u64,
    last_audio: Instant,
    /// OpenAI's per-connection state (`None` for Deepgram).
    openai: Option<OpenAiStt>,
}

enum Flow {
    Continue,
    Stop,
    Lost(ConnectionLost),
}

impl Client {
    async fn run(mut self, mut ws: Ws, mut input: mpsc::Receiver<SttInput>) {
        loop {
            let keepalive = self.last_audio + KEEPALIVE_AFTER;
            let flow = tokio::select! {
                msg = ws.next() => self.on_socket(msg).await,
                cmd = input.recv() => match cmd {
                    None => Flow::Stop,
                    Some(c) => self.on_input(&mut ws, c).await,
                },
                _ = tokio::time::sleep_until(keepalive) => {
                    self.last_audio = Instant::now();
                    // OpenAI's sessions do not time out on silence.
                    if self.openai.is_some() {
                        Flow::Continue
                    } else {
                        send_text(&mut ws, r#"{"type":"KeepAlive"}"#).await
                    }
                }
            };
            match flow {
                Flow::Continue => {}
                Flow::Stop => {
                    // Deepgram answers CloseStream with the last results and closes; nobody
                    // waits for them any more.
                    if self.openai.is_none() {
                        let _ = send_text(&mut ws, r#"{"type":"CloseStream"}"#).await;
                    }
                    ws::close(&mut ws).await;
                    debug!("STT stream closed");
                    return;
                }
                Flow::Lost(reason) => {
                    warn!(%reason, "STT connection lost");
                    match self.reconnect(&mut input).await {
                        Ok(new_ws) => {
                            ws = new_ws;
                            info!("STT stream re-established");
                            if self.events.send(SttEvent::Reconnected).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = self
                                .events
                                .send(SttEvent::Failed(format!(
                                    "STT connection lost ({reason}) and reconnecting failed: {e}"
                                )))
                                .await;
                            return;
                        }
                    }
                }
            }
        }
    }

    async fn on_input(&mut self, ws: &mut Ws, cmd: SttInput) -> Flow {
        match cmd {
            SttInput::Audio(bytes) => {
                self.remember(bytes.clone());
                self.last_audio = Instant::now();
                let Some(msg) = audio_message(&mut self.openai, bytes) else {
                    return Flow::Continue;
                };
                match ws.send(msg).await {
                    Ok(()) => Flow::Continue,
                    Err(e) => Flow::Lost(e.into()),
                }
            }
            SttInput::Finalize => match &mut self.openai {
                Some(o) => match ws.send(Message::text(o.commit())).await {
                    Ok(()) => Flow::Continue,
                    Err(e) => Flow::Lost(e.into()),
                },
                None => send_text(ws, r#"{"type":"Finalize"}"#).await,
            },
        }
    }

    /// Keeps sent audio for replay, within [`MAX_REPLAY`].
    fn remember(&mut self, bytes: Bytes) {
        let ms = self.format.duration_ms(bytes.len() as u64);
        self.replay.push_back((self.sent_ms, bytes));
        self.sent_ms += ms;
        let max = u64::try_from(MAX_REPLAY.as_millis()).unwrap_or(u64::MAX);
        while self
            .replay
            .front()
            .is_some_and(|(at, _)| self.sent_ms.saturating_sub(*at) > max)
        {
            self.replay.pop_front();
        }
    }

    async fn on_socket(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Flow {
        let text = match msg {
            None => return Flow::Lost(ConnectionLost::Ended),
            Some(Err(e)) => return Flow::Lost(e.into()),
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => {
                return Flow::Lost(ConnectionLost::ClosedByServer(
                    frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                ));
            }
            Some(Ok(_)) => return Flow::Continue,
        };
        let v: Value = match serde_json::from_str(text.as_str()) {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "STT: a message is not JSON; ignored");
                return Flow::Continue;
            }
        };
        if let Some(o) = &mut self.openai {
            let Some((ev, finalized)) = o.on_message(&v, self.conn_base_ms, self.sent_ms) else {
                return Flow::Continue;
            };
            if let Some(end) = finalized {
                self.finalized(end);
            }
            return if self.events.send(ev).await.is_err() {
                Flow::Stop
            } else {
                Flow::Continue
            };
        }
        let ev = match v.get("type").and_then(Value::as_str) {
            Some("Results") => {
                let text = v
                    .pointer("/channel/alternatives/0/transcript")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let is_final = v.get("is_final").and_then(Value::as_bool).unwrap_or(false);
                if is_final {
                    let start = v.get("start").and_then(Value::as_f64).unwrap_or(0.0);
                    let duration = v.get("duration").and_then(Value::as_f64).unwrap_or(0.0);
                    let end = self.conn_base_ms + ((start + duration) * 1000.0).round() as u64;
                    self.finalized(end);
                    SttEvent::Final {
                        text,
                        speech_final: v
                            .get("speech_final")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                        from_finalize: v
                            .get("from_finalize")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                        end_ms: end,
                    }
                } else if text.is_empty() {
                    return Flow::Continue;
                } else {
                    SttEvent::Interim(text)
                }
            }
            Some("UtteranceEnd") => SttEvent::UtteranceEnd,
            Some("Metadata") | Some("SpeechStarted") => return Flow::Continue,
            Some(other) => {
                debug!(kind = other, "STT: message ignored");
                return Flow::Continue;
            }
            None => {
                warn!("STT: a message without a type; ignored");
                return Flow::Continue;
            }
        };
        if self.events.send(ev).await.is_err() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    /// Deepgram finalized the call's audio up to `end_ms`: that audio needs no replay.
    fn finalized(&mut self, end_ms: u64) {
        self.finalized_ms = self.finalized_ms.max(end_ms);
        while let Some((at, bytes)) = self.replay.front() {
            let ms = self.format.duration_ms(bytes.len() as u64);
            if at + ms <= self.finalized_ms {
                self.replay.pop_front();
            } else {
                break;
            }
        }
    }

    /// Reconnects within the budget and sends the unfinalized audio again; audio arriving
    /// meanwhile is kept (up to [`MAX_REPLAY`]) and sent after it.
    async fn reconnect(
        &mut self,
        input: &mut mpsc::Receiver<SttInput>,
    ) -> Result<Ws, BackendError> {
        let start = Instant::now();
        let deadline = start + self.cfg.reconnect_budget;
        let mut last = BackendError::Timeout {
            stage: "STT reconnect",
            after_ms: u64::try_from(self.cfg.reconnect_budget.as_millis()).unwrap_or(u64::MAX),
        };
        for (attempt, delay) in RECONNECT_BACKOFF_MS.iter().enumerate() {
            let at = Instant::now() + Duration::from_millis(*delay);
            if at >= deadline {
                break;
            }
            // Keep taking the caller's audio while waiting: it is buffered, not lost.
            let mut buffered = Vec::new();
            while Instant::now() < at {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    cmd = input.recv() => match cmd {
                        Some(SttInput::Audio(b)) => buffered.push(b),
                        Some(SttInput::Finalize) => {}
                        None => break,
                    }
                }
            }
            for b in buffered {
                self.remember(b);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let limit = left.min(self.cfg.connect_timeout);
            let opened = match open(&self.target, &self.cfg, limit).await {
                Ok(mut ws) => setup(&mut ws, &self.cfg, self.format)
                    .await
                    .map(|o| (ws, o)),
                Err(e) => Err(e),
            };
            match opened {
                Ok((mut ws, openai)) => {
                    self.openai = openai;
                    // Audio that arrived during the attempt.
                    while let Ok(SttInput::Audio(b)) = input.try_recv() {
                        self.remember(b);
                    }
                    self.conn_base_ms = self.replay.front().map_or(self.sent_ms, |(at, _)| *at);
                    debug!(
                        attempt,
                        replay_ms = self.sent_ms - self.conn_base_ms,
                        elapsed_ms = start.elapsed().as_millis() as u64,
                        "STT reconnected; replaying unfinalized audio"
                    );
                    let replay: Vec<Bytes> = self.replay.iter().map(|(_, b)| b.clone()).collect();
                    for b in replay {
                        let Some(msg) = audio_message(&mut self.openai, b) else {
                            continue;
                        };
                        ws.send(msg)
                            .await
                            .map_err(|e| BackendError::Protocol(format!("replay failed: {e}")))?;
                    }
                    self.last_audio = Instant::now();
                    return Ok(ws);
                }
                Err(e) => {
                    debug!(attempt, error = %e, "STT reconnect attempt failed");
                    last = e;
                }
            }
        }
        Err(last)
    }
}

/// The message carrying `bytes` of the call's audio: binary for Deepgram, an append for
/// OpenAI (`None` when the resampler has nothing to give yet).
fn audio_message(openai: &mut Option<OpenAiStt>, bytes: Bytes) -> Option<Message> {
    match openai {
        None => Some(Message::Binary(bytes)),
        Some(o) => o.append(&bytes).map(Message::text),
    }
}

async fn send_text(ws: &mut Ws, text: &'static str) -> Flow {
    match ws.send(Message::Text(text.into())).await {
        Ok(()) => Flow::Continue,
        Err(e) => Flow::Lost(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_url_asks_for_the_calls_own_format() {
        let cfg = SttConfig {
            provider: SttProvider::Deepgram,
            url: DEFAULT_DEEPGRAM_STT_URL.into(),
            model: "nova-3".into(),
            language: Some("en-US".into()),
            api_key: ApiKey::new("k"),
            endpointing_ms: 300,
            utterance_end_ms: 1000,
            connect_timeout: Duration::from_secs(5),
            reconnect_budget: Duration::from_secs(2),
        };
        let u = listen_url(&cfg, AudioFormat::Pcmu8k).unwrap();
        let q: std::collections::HashMap<_, _> = u.query_pairs().into_owned().collect();
        assert_eq!(q["encoding"], "mulaw");
        assert_eq!(q["sample_rate"], "8000");
        assert_eq!(q["interim_results"], "true");
        assert_eq!(q["language"], "en-US");
        let u = listen_url(&cfg, AudioFormat::Pcm16 { rate: 16000 }).unwrap();
        assert!(u.as_str().contains("encoding=linear16&sample_rate=16000"));
        assert_eq!(deepgram_encoding(AudioFormat::Pcma8k), ("alaw", 8000));
    }
}
