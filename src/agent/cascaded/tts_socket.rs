//! Text to speech over WebSocket, where text streams in and audio streams out on one socket.
//!
//! * **Deepgram Aura** (`wss://…/v1/speak?model=…&encoding=…&sample_rate=…`): one socket per
//!   call ([`DeepgramSocket`]), dialled when the call starts and dialled again at the next
//!   reply if it closed in between. A reply's pieces go as `Speak`; `Flush` makes Deepgram
//!   speak what it holds: after a piece while the flush budget allows (Deepgram takes 20
//!   flushes a minute; [`FLUSH_RESERVE`] of them are kept for the ends of replies), and always
//!   at the end of the reply. Pieces between two flushes form one group, whose audio is told
//!   apart by `Flushed`. When a reply must end but the minute's flushes are spent (more than
//!   about ten replies a minute), voxline does not wait: once the socket has no audio due it
//!   opens a fresh one (its own budget), speaks the group's text again there and flushes. Audio comes back as binary frames in the call's own format (μ-law,
//!   A-law or PCM16 at the call's rate: nothing is resampled). A barge-in sends `Clear`; what
//!   arrives until `Cleared` is dropped.
//! * **ElevenLabs** stream-input
//!   (`wss://…/v1/text-to-speech/{voice}/stream-input?model_id=…&output_format=…`): one socket
//!   per reply, dialled when the reply starts (while the LLM is still thinking). Each piece goes
//!   with `flush: true`, so its audio starts at once; `{"text": ""}` ends the reply. The audio
//!   comes base64-encoded with the alignment of the characters it speaks, which becomes
//!   [`TtsEvent::Mark`]s at word starts: the session maps what the caller heard onto the text
//!   through them. A barge-in drops the socket.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};

use super::tts::{Converter, TtsConfig, TtsEvent};
use crate::agent::backend::{AudioChunk, AudioFormat, BackendError};
use crate::agent::ws::{self, Target, Ws};

/// Deepgram's limit: flushes per [`FLUSH_WINDOW`] on one socket.
pub const FLUSH_LIMIT: usize = 20;
/// The window of [`FLUSH_LIMIT`].
pub const FLUSH_WINDOW: Duration = Duration::from_secs(60);
/// Flushes kept for the ends of replies: a piece is flushed early only while more than this
/// many are left in the window.
pub const FLUSH_RESERVE: usize = 5;
/// Deepgram's limit on one `Speak` message's text, in characters.
pub const SPEAK_MAX_CHARS: usize = 2000;
/// Commands queued to a Deepgram socket at most.
const COMMAND_QUEUE: usize = 128;

/// Deepgram's `encoding` and `sample_rate` for audio in `format`.
fn deepgram_format(format: AudioFormat) -> (&'static str, u32) {
    super::stt::deepgram_encoding(format)
}

/// The URL of Deepgram's streaming TTS for `cfg` (`url` is the base, `ws://` or `wss://`).
pub fn deepgram_url(cfg: &TtsConfig, format: AudioFormat) -> Result<url::Url, BackendError> {
    let base = cfg.url.trim_end_matches('/');
    let mut url = url::Url::parse(&format!("{base}/v1/speak"))
        .map_err(|e| BackendError::Config(format!("TTS URL: {e}")))?;
    let (encoding, rate) = deepgram_format(format);
    url.query_pairs_mut()
        .append_pair("model", &cfg.voice)
        .append_pair("encoding", encoding)
        .append_pair("sample_rate", &rate.to_string());
    Ok(url)
}

/// Flush times on one socket, shared by the socket's task and the replies' speakers (the
/// speaker decides whether a piece is flushed; the task waits when the window is full).
#[derive(Debug, Default)]
pub struct FlushBudget {
    sent: Mutex<VecDeque<Instant>>,
}

impl FlushBudget {
    fn recent(q: &mut VecDeque<Instant>, now: Instant) -> usize {
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= FLUSH_WINDOW)
        {
            q.pop_front();
        }
        q.len()
    }

    /// Takes a flush for a piece if more than [`FLUSH_RESERVE`] are left.
    fn take_early(&self, now: Instant) -> bool {
        let mut q = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        if Self::recent(&mut q, now) + FLUSH_RESERVE < FLUSH_LIMIT {
            q.push_back(now);
            true
        } else {
            false
        }
    }

    /// Forgets the flushes sent (a new socket has its own budget).
    fn reset(&self) {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Takes a flush that must go (the end of a reply): `None` if it can go now, else when.
    fn take_or_wait(&self, now: Instant) -> Option<Instant> {
        let mut q = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        if Self::recent(&mut q, now) < FLUSH_LIMIT {
            q.push_back(now);
            None
        } else {
            q.front().map(|t| *t + FLUSH_WINDOW)
        }
    }
}

enum Cmd {
    /// A reply starts; its events go to `events`.
    Begin {
        reply: u64,
        events: mpsc::Sender<TtsEvent>,
    },
    /// A piece of text of group `seq`; `flush`: the group ends with it.
    Speak {
        reply: u64,
        seq: usize,
        text: String,
        flush: bool,
    },
    /// The reply's text is complete (`seq`: the group still open, flushed now).
    Finish { reply: u64, open: Option<usize> },
    /// The reply was cut short (barge-in).
    Cancel { reply: u64 },
}

/// One call's Deepgram TTS socket.
#[derive(Debug)]
pub struct DeepgramSocket {
    cmds: mpsc::Sender<Cmd>,
    budget: Arc<FlushBudget>,
    task: tokio::task::JoinHandle<()>,
    next_reply: u64,
}

impl Drop for DeepgramSocket {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

impl DeepgramSocket {
    /// Starts the socket's task for a call in `format`; it dials at once.
    pub fn start(cfg: TtsConfig, format: AudioFormat) -> DeepgramSocket {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let budget = Arc::new(FlushBudget::default());
        let task = tokio::spawn(
            DeepgramTask {
                cfg,
                format,
                budget: budget.clone(),
                ws: None,
                reply: None,
                clearing: false,
                flushes: 0,
            }
            .run(rx),
        );
        DeepgramSocket {
            cmds: tx,
            budget,
            task,
            next_reply: 0,
        }
    }

    /// A speaker for the next reply.
    pub fn reply(&mut self, events: mpsc::Sender<TtsEvent>) -> DeepgramReply {
        self.next_reply += 1;
        let reply = self.next_reply;
        let ok = self.cmds.try_send(Cmd::Begin { reply, events }).is_ok();
        DeepgramReply {
            cmds: self.cmds.clone(),
            budget: self.budget.clone(),
            reply,
            group: 0,
            open: false,
            finished: false,
            stopped: !ok,
        }
    }
}

/// The speaker side of one reply on a [`DeepgramSocket`].
#[derive(Debug)]
pub struct DeepgramReply {
    cmds: mpsc::Sender<Cmd>,
    budget: Arc<FlushBudget>,
    reply: u64,
    group: usize,
    /// Text was sent to the current group.
    open: bool,
    finished: bool,
    stopped: bool,
}

impl DeepgramReply {
    /// Sends a piece; the group it belongs to. `None` if the socket's queue is full.
    pub fn say(&mut self, text: String) -> Option<usize> {
        if self.stopped || self.finished {
            return None;
        }
        let seq = self.group;
        let flush = self.budget.take_early(Instant::now());
        let cmd = Cmd::Speak {
            reply: self.reply,
            seq,
            text,
            flush,
        };
        if self.cmds.try_send(cmd).is_err() {
            self.stopped = true;
            return None;
        }
        if flush {
            self.group += 1;
            self.open = false;
        } else {
            self.open = true;
        }
        Some(seq)
    }

    /// The reply's text is complete.
    pub fn finish(&mut self) {
        if self.finished || self.stopped {
            return;
        }
        self.finished = true;
        let open = self.open.then_some(self.group);
        if self
            .cmds
            .try_send(Cmd::Finish {
                reply: self.reply,
                open,
            })
            .is_err()
        {
            self.stopped = true;
        }
    }
}

impl Drop for DeepgramReply {
    fn drop(&mut self) {
        // The task knows whether anything of the reply is still to come: a reply already
        // spoken in full is not cleared.
        let _ = self.cmds.try_send(Cmd::Cancel { reply: self.reply });
    }
}

struct ActiveReply {
    id: u64,
    events: mpsc::Sender<TtsEvent>,
    /// Flushed groups whose audio is still coming, oldest first.
    flushed: VecDeque<usize>,
    /// The group with text sent but not flushed.
    open: Option<usize>,
    finished: bool,
    /// The end-of-reply flush of this group waits: for the budget, or for the socket to have
    /// no audio due so that a fresh one can take it.
    flush_at: Option<(Instant, usize)>,
    /// The text of the open group, spoken again on a fresh socket.
    open_text: Vec<String>,
    /// Last audio or message for this reply (the stall timer).
    active: Instant,
}

impl ActiveReply {
    fn done(&self) -> bool {
        self.finished && self.flushed.is_empty() && self.open.is_none() && self.flush_at.is_none()
    }
}

struct DeepgramTask {
    cfg: TtsConfig,
    format: AudioFormat,
    budget: Arc<FlushBudget>,
    ws: Option<Ws>,
    reply: Option<ActiveReply>,
    /// `Clear` was sent: drop what comes until `Cleared`.
    clearing: bool,
    /// Flushes sent on the current socket (Deepgram's `sequence_id` counts them).
    flushes: u64,
}

/// Sends one JSON message.
async fn send_json(ws: &mut Ws, v: &Value) -> Result<(), String> {
    ws.send(Message::text(v.to_string()))
        .await
        .map_err(|e| format!("TTS socket: {e}"))
}

impl DeepgramTask {
    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>) {
        // Dial at once, so the first reply finds the socket open.
        if let Err(e) = self.ensure_open().await {
            debug!(error = %e, "TTS socket: first dial failed; retried at the first reply");
        }
        loop {
            let stall = self
                .reply
                .as_ref()
                .filter(|r| !r.flushed.is_empty())
                .map(|r| r.active + self.cfg.timeout);
            let flush_at = self.reply.as_ref().and_then(|r| r.flush_at.map(|f| f.0));
            let wake = match (stall, flush_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None => {
                        if let Some(ws) = self.ws.as_mut() {
                            let _ = send_json(ws, &json!({"type": "Close"})).await;
                            ws::close(ws).await;
                        }
                        return;
                    }
                    Some(c) => self.on_cmd(c).await,
                },
                msg = next_message(&mut self.ws) => self.on_message(msg).await,
                _ = sleep_until(wake) => self.on_timer().await,
            }
        }
    }

    async fn ensure_open(&mut self) -> Result<(), BackendError> {
        if self.ws.is_some() {
            return Ok(());
        }
        let url = deepgram_url(&self.cfg, self.format)?;
        let target = Target::new(&url, "TTS")?;
        let key = self
            .cfg
            .api_key
            .as_ref()
            .map(|k| format!("Token {}", k.expose()));
        let headers: Vec<(&str, &str)> = key
            .as_deref()
            .map(|k| vec![("Authorization", k)])
            .unwrap_or_default();
        let limit = self.cfg.timeout;
        let ws = match tokio::time::timeout(limit, ws::dial(&target, &headers)).await {
            Err(_) => {
                return Err(BackendError::Timeout {
                    stage: "TTS connect",
                    after_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                });
            }
            Ok(r) => r?,
        };
        info!(host = %target.host, voice = %self.cfg.voice, "TTS socket open");
        self.ws = Some(ws);
        self.clearing = false;
        self.flushes = 0;
        Ok(())
    }

    async fn fail(&mut self, message: String, retryable: bool) {
        if let Some(r) = self.reply.take() {
            let seq = r.flushed.front().copied().or(r.open).unwrap_or(0);
            let _ = r
                .events
                .send(TtsEvent::Failed {
                    seq,
                    message,
                    retryable,
                })
                .await;
        }
    }

    async fn send(&mut self, v: Value) -> bool {
        let Some(ws) = self.ws.as_mut() else {
            return false;
        };
        match send_json(ws, &v).await {
            Ok(()) => true,
            Err(e) => {
                self.ws = None;
                self.fail(e, true).await;
                false
            }
        }
    }

    async fn flush(&mut self, seq: usize) {
        if self.send(json!({"type": "Flush"})).await {
            self.flushes += 1;
            if let Some(r) = self.reply.as_mut() {
                r.flushed.push_back(seq);
                r.active = Instant::now();
            }
        }
    }

    async fn on_cmd(&mut self, c: Cmd) {
        match c {
            Cmd::Begin { reply, events } => {
                if self.reply.is_some() {
                    // The last reply never ended: forget what it still had coming.
                    self.clear().await;
                }
                self.reply = Some(ActiveReply {
                    id: reply,
                    events,
                    flushed: VecDeque::new(),
                    open: None,
                    finished: false,
                    flush_at: None,
                    open_text: Vec::new(),
                    active: Instant::now(),
                });
                if let Err(e) = self.ensure_open().await {
                    let retryable = !matches!(
                        e,
                        BackendError::Unauthorized { .. } | BackendError::Config(_)
                    );
                    self.fail(format!("TTS: {e}"), retryable).await;
                }
            }
            Cmd::Speak {
                reply,
                seq,
                text,
                flush,
            } => {
                if self.reply.as_ref().map(|r| r.id) != Some(reply) {
                    return;
                }
                for part in split_chars(&text, SPEAK_MAX_CHARS) {
                    if !self.send(json!({"type": "Speak", "text": part})).await {
                        return;
                    }
                }
                if let Some(r) = self.reply.as_mut() {
                    r.open = Some(seq);
                    r.open_text.push(text);
                }
                if flush {
                    if let Some(r) = self.reply.as_mut() {
                        r.open = None;
                        r.open_text.clear();
                    }
                    self.flush(seq).await;
                }
            }
            Cmd::Finish { reply, open } => {
                let Some(r) = self.reply.as_mut().filter(|r| r.id == reply) else {
                    return;
                };
                r.finished = true;
                if let Some(seq) = open {
                    r.open = None;
                    r.flush_at = Some((Instant::now(), seq));
                    self.final_flush().await;
                }
                if self.reply.as_ref().is_some_and(ActiveReply::done) {
                    self.reply = None;
                }
            }
            Cmd::Cancel { reply } => {
                if self.reply.as_ref().map(|r| r.id) == Some(reply) {
                    self.reply = None;
                    self.clear().await;
                }
            }
        }
    }

    /// Sends the waiting end-of-reply flush if the budget allows; else, once no audio is due
    /// on this socket, moves to a fresh socket (its own budget) with the group's text; else
    /// waits (for a `Flushed`, or the budget's window).
    async fn final_flush(&mut self) {
        let now = Instant::now();
        let Some((_, seq)) = self.reply.as_ref().and_then(|r| r.flush_at) else {
            return;
        };
        let Some(at) = self.budget.take_or_wait(now) else {
            if let Some(r) = self.reply.as_mut() {
                r.flush_at = None;
                r.open_text.clear();
            }
            self.flush(seq).await;
            return;
        };
        let idle = self.reply.as_ref().is_some_and(|r| r.flushed.is_empty());
        if !idle {
            if let Some(r) = self.reply.as_mut() {
                r.flush_at = Some((at, seq));
            }
            return;
        }
        info!("TTS: Deepgram's flushes for this minute are spent; a fresh socket takes the reply");
        if let Some(mut ws) = self.ws.take() {
            ws::close(&mut ws).await;
        }
        self.budget.reset();
        if let Err(e) = self.ensure_open().await {
            self.fail(format!("TTS: {e}"), true).await;
            return;
        }
        let texts = self
            .reply
            .as_mut()
            .map(|r| std::mem::take(&mut r.open_text))
            .unwrap_or_default();
        for t in texts {
            for part in split_chars(&t, SPEAK_MAX_CHARS) {
                if !self.send(json!({"type": "Speak", "text": part})).await {
                    return;
                }
            }
        }
        if let Some(r) = self.reply.as_mut() {
            r.flush_at = None;
        }
        let _ = self.budget.take_or_wait(Instant::now());
        self.flush(seq).await;
    }

    /// Barge-in: Deepgram drops its text and audio; what it already sent is dropped here.
    async fn clear(&mut self) {
        self.reply = None;
        if self.ws.is_some() && self.send(json!({"type": "Clear"})).await {
            self.clearing = true;
        }
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        let Some(r) = self.reply.as_mut() else {
            return;
        };
        if let Some((at, _)) = r.flush_at
            && at <= now
        {
            self.final_flush().await;
            return;
        }
        if !r.flushed.is_empty() && now >= r.active + self.cfg.timeout {
            let ms = self.cfg.timeout.as_millis();
            // The socket may be wedged: a new one for the next reply.
            if let Some(mut ws) = self.ws.take() {
                ws::close(&mut ws).await;
            }
            self.fail(format!("TTS stalled for {ms} ms"), true).await;
        }
    }

    async fn on_message(&mut self, msg: Option<Result<Message, String>>) {
        let msg = match msg {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                self.ws = None;
                self.fail(e, true).await;
                return;
            }
            None => {
                self.ws = None;
                debug!("TTS socket closed");
                self.fail("the TTS socket closed".into(), true).await;
                return;
            }
        };
        match msg {
            Message::Binary(data) => {
                if self.clearing {
                    return;
                }
                let format = self.format;
                let Some(r) = self.reply.as_mut() else {
                    return;
                };
                let Some(seq) = r.flushed.front().copied().or(r.open) else {
                    return;
                };
                r.active = Instant::now();
                let ev = TtsEvent::Audio {
                    seq,
                    chunk: AudioChunk { format, data },
                };
                let _ = r.events.send(ev).await;
            }
            Message::Text(text) => self.on_json(text.as_str()).await,
            Message::Close(frame) => {
                self.ws = None;
                let reason = frame
                    .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                    .unwrap_or_default();
                let retryable = !reason.starts_with("1008");
                self.fail(format!("the TTS socket closed: {reason}"), retryable)
                    .await;
            }
            _ => {}
        }
    }

    async fn on_json(&mut self, text: &str) {
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => {
                warn!("TTS: a message that is not JSON ignored");
                return;
            }
        };
        match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "Metadata" => debug!(request = ?v.get("request_id"), "TTS socket metadata"),
            "Flushed" => {
                if self.clearing {
                    return;
                }
                let Some(r) = self.reply.as_mut() else {
                    return;
                };
                r.active = Instant::now();
                if let Some(seq) = r.flushed.pop_front() {
                    let _ = r.events.send(TtsEvent::PieceDone { seq }).await;
                }
                if r.flushed.is_empty() && r.flush_at.is_some() {
                    self.final_flush().await;
                }
                if self.reply.as_ref().is_some_and(ActiveReply::done) {
                    self.reply = None;
                }
            }
            "Cleared" => self.clearing = false,
            "Warning" => {
                let description = v.get("description").and_then(Value::as_str).unwrap_or("");
                let code = v.get("code").and_then(Value::as_str).unwrap_or("");
                warn!(code, description, "TTS warning");
            }
            "Error" => {
                let description = v.get("description").and_then(Value::as_str).unwrap_or("");
                self.fail(format!("TTS error: {description}"), true).await;
            }
            other => debug!(kind = other, "TTS: message ignored"),
        }
    }
}

/// The next message of `ws`, pending while there is none.
async fn next_message(ws: &mut Option<Ws>) -> Option<Result<Message, String>> {
    match ws.as_mut() {
        Some(ws) => ws.next().await.map(|r| r.map_err(|e| e.to_string())),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// `text` in parts of at most `max` characters.
fn split_chars(text: &str, max: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(max.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

// ---------------------------------------------------------------------------------------
// ElevenLabs.

/// ElevenLabs' `output_format` for a call in `format`, and the format that audio is in.
pub fn elevenlabs_format(format: AudioFormat) -> (String, AudioFormat) {
    match format {
        AudioFormat::Pcmu8k => ("ulaw_8000".into(), AudioFormat::Pcmu8k),
        AudioFormat::Pcm16 { rate } if [16_000, 22_050, 24_000, 44_100].contains(&rate) => {
            (format!("pcm_{rate}"), format)
        }
        // A-law and other rates: 16 kHz PCM, converted here.
        _ => ("pcm_16000".into(), AudioFormat::Pcm16 { rate: 16_000 }),
    }
}

/// The stream-input URL for `cfg` (`url` is the base, `ws://` or `wss://`).
pub fn elevenlabs_url(cfg: &TtsConfig, format: AudioFormat) -> Result<url::Url, BackendError> {
    let base = cfg.url.trim_end_matches('/');
    let mut url = url::Url::parse(&format!(
        "{base}/v1/text-to-speech/{}/stream-input",
        cfg.voice
    ))
    .map_err(|e| BackendError::Config(format!("TTS URL: {e}")))?;
    let (output, _) = elevenlabs_format(format);
    url.query_pairs_mut()
        .append_pair("model_id", &cfg.model)
        .append_pair("output_format", &output);
    Ok(url)
}

/// What a reply's ElevenLabs task is told.
#[derive(Debug)]
pub enum ElevenCmd {
    /// A piece of text.
    Say(String),
    /// The reply's text is complete.
    Finish,
}

/// Runs one reply on its own stream-input socket; everything is group 0.
pub async fn elevenlabs_reply(
    cfg: TtsConfig,
    format: AudioFormat,
    mut cmds: mpsc::Receiver<ElevenCmd>,
    events: mpsc::Sender<TtsEvent>,
) {
    let fail = |message: String, retryable: bool| TtsEvent::Failed {
        seq: 0,
        message,
        retryable,
    };
    let mut ws = match open_elevenlabs(&cfg, format).await {
        Ok(ws) => ws,
        Err(e) => {
            let retryable = !matches!(
                e,
                BackendError::Unauthorized { .. } | BackendError::Config(_)
            );
            let _ = events.send(fail(format!("TTS: {e}"), retryable)).await;
            return;
        }
    };
    // The first message opens the stream: a single space.
    if let Err(e) = send_json(&mut ws, &json!({"text": " "})).await {
        let _ = events.send(fail(e, true)).await;
        return;
    }
    let (_, source) = elevenlabs_format(format);
    let mut conv = match Converter::new(source, format) {
        Ok(c) => c,
        Err(e) => {
            let _ = events.send(fail(e, false)).await;
            return;
        }
    };
    let mut state = ElevenState {
        format,
        bytes: 0,
        chars: 0,
        prev_space: true,
    };
    let mut finished = false;
    let mut sent_text = false;
    let mut active = Instant::now();
    loop {
        let stall = (finished && sent_text).then_some(active + cfg.timeout);
        tokio::select! {
            cmd = cmds.recv(), if !finished => {
                let msg = match cmd {
                    Some(ElevenCmd::Say(text)) => {
                        sent_text = true;
                        // Text ends with a space; `flush` speaks it at once.
                        json!({"text": format!("{} ", text.trim_end()), "flush": true})
                    }
                    Some(ElevenCmd::Finish) | None => {
                        finished = true;
                        active = Instant::now();
                        if !sent_text {
                            // Nothing to say: close without asking for audio.
                            ws::close(&mut ws).await;
                            let _ = events.send(TtsEvent::PieceDone { seq: 0 }).await;
                            return;
                        }
                        json!({"text": ""})
                    }
                };
                if let Err(e) = send_json(&mut ws, &msg).await {
                    let _ = events.send(fail(e, true)).await;
                    return;
                }
            }
            msg = ws.next() => {
                active = Instant::now();
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = frame
                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1005, String::new()));
                        let _ = events
                            .send(fail(format!("the TTS socket closed: {code} {reason}"), code != 1008))
                            .await;
                        return;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        let _ = events.send(fail(format!("TTS socket: {e}"), true)).await;
                        return;
                    }
                    None => {
                        let _ = events.send(fail("the TTS socket closed".into(), true)).await;
                        return;
                    }
                };
                let v: Value = match serde_json::from_str(text.as_str()) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                match state.on_message(&v, &mut conv) {
                    Err(message) => {
                        let _ = events.send(fail(message, false)).await;
                        return;
                    }
                    Ok((out, last)) => {
                        for ev in out {
                            if events.send(ev).await.is_err() {
                                return;
                            }
                        }
                        if last {
                            ws::close(&mut ws).await;
                            let _ = events.send(TtsEvent::PieceDone { seq: 0 }).await;
                            return;
                        }
                    }
                }
            }
            _ = sleep_until(stall) => {
                let ms = cfg.timeout.as_millis();
                let _ = events.send(fail(format!("TTS stalled for {ms} ms"), true)).await;
                return;
            }
        }
    }
}

async fn open_elevenlabs(cfg: &TtsConfig, format: AudioFormat) -> Result<Ws, BackendError> {
    let url = elevenlabs_url(cfg, format)?;
    let target = Target::new(&url, "TTS")?;
    let key = cfg.api_key.as_ref().map(|k| k.expose().to_owned());
    let headers: Vec<(&str, &str)> = key
        .as_deref()
        .map(|k| vec![("xi-api-key", k)])
        .unwrap_or_default();
    match tokio::time::timeout(cfg.timeout, ws::dial(&target, &headers)).await {
        Err(_) => Err(BackendError::Timeout {
            stage: "TTS connect",
            after_ms: u64::try_from(cfg.timeout.as_millis()).unwrap_or(u64::MAX),
        }),
        Ok(r) => r,
    }
}

/// Where one ElevenLabs reply is: audio delivered and characters aligned so far.
struct ElevenState {
    format: AudioFormat,
    /// Audio delivered, bytes of the call's format.
    bytes: u64,
    /// Characters aligned so far.
    chars: usize,
    prev_space: bool,
}

impl ElevenState {
    /// One server message: the events it makes, and whether it was the last.
    fn on_message(
        &mut self,
        v: &Value,
        conv: &mut Converter,
    ) -> Result<(Vec<TtsEvent>, bool), String> {
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            let message = v
                .get("message")
                .and_then(Value::as_str)
                .or(err.as_str())
                .unwrap_or("unknown error");
            return Err(format!("TTS error: {message}"));
        }
        let last = v.get("isFinal").and_then(Value::as_bool) == Some(true);
        let mut out = Vec::new();
        let audio = v.get("audio").and_then(Value::as_str).unwrap_or("");
        if !audio.is_empty() {
            let raw = BASE64
                .decode(audio.as_bytes())
                .map_err(|e| format!("TTS audio is not base64: {e}"))?;
            let chunk_start = self.bytes;
            let data = conv.convert(&raw, last)?;
            let bytes_per_ms = u64::from(self.format.sample_rate())
                * u64::from(self.format.bytes_per_sample())
                / 1000;
            let alignment = v
                .get("alignment")
                .filter(|a| !a.is_null())
                .or_else(|| v.get("normalizedAlignment").filter(|a| !a.is_null()));
            if let Some(a) = alignment {
                let chars = a.get("chars").and_then(Value::as_array);
                let starts = a.get("charStartTimesMs").and_then(Value::as_array);
                if let (Some(chars), Some(starts)) = (chars, starts) {
                    for (c, t) in chars.iter().zip(starts) {
                        let c = c.as_str().unwrap_or("");
                        let t = t.as_f64().unwrap_or(0.0).max(0.0) as u64;
                        let space = c.chars().all(char::is_whitespace);
                        if !space && self.prev_space {
                            out.push(TtsEvent::Mark {
                                seq: 0,
                                at: chunk_start + t * bytes_per_ms,
                                chars: self.chars,
                            });
                        }
                        self.prev_space = space;
                        self.chars += c.chars().count();
                    }
                }
            }
            self.bytes += data.len() as u64;
            if !data.is_empty() {
                out.push(TtsEvent::Audio {
                    seq: 0,
                    chunk: AudioChunk {
                        format: self.format,
                        data,
                    },
                });
            }
        }
        Ok((out, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_budget_keeps_a_reserve_and_waits_when_full() {
        let b = FlushBudget::default();
        let t0 = Instant::now();
        let early = (0..30).filter(|_| b.take_early(t0)).count();
        assert_eq!(early, FLUSH_LIMIT - FLUSH_RESERVE);
        for _ in 0..FLUSH_RESERVE {
            assert_eq!(b.take_or_wait(t0), None);
        }
        assert_eq!(b.take_or_wait(t0), Some(t0 + FLUSH_WINDOW));
        // A minute later the window is empty again.
        assert!(b.take_early(t0 + FLUSH_WINDOW));
    }

    #[test]
    fn long_text_is_split_for_speak() {
        let t = "é".repeat(2500);
        let parts = split_chars(&t, SPEAK_MAX_CHARS);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].chars().count(), 2000);
        assert_eq!(parts[1].chars().count(), 500);
    }

    #[test]
    fn elevenlabs_alignment_becomes_word_marks() {
        let mut s = ElevenState {
            format: AudioFormat::Pcmu8k,
            bytes: 0,
            chars: 0,
            prev_space: true,
        };
        let mut conv = Converter::new(AudioFormat::Pcmu8k, AudioFormat::Pcmu8k).unwrap();
        // 100 ms of μ-law for "Hi there " (9 characters).
        let msg = json!({
            "audio": BASE64.encode(vec![0xffu8; 800]),
            "isFinal": null,
            "alignment": {
                "chars": ["H","i"," ","t","h","e","r","e"," "],
                "charStartTimesMs": [0, 10, 20, 30, 45, 60, 70, 80, 95],
                "charDurationsMs": [10, 10, 10, 15, 15, 10, 10, 15, 5]
            }
        });
        let (events, last) = s.on_message(&msg, &mut conv).unwrap();
        assert!(!last);
        let marks: Vec<(u64, usize)> = events
            .iter()
            .filter_map(|e| match e {
                TtsEvent::Mark { at, chars, .. } => Some((*at, *chars)),
                _ => None,
            })
            .collect();
        assert_eq!(marks, vec![(0, 0), (30 * 8, 3)]);
        // The next chunk's times count from its own start.
        let msg = json!({
            "audio": BASE64.encode(vec![0xffu8; 80]),
            "alignment": {"chars": ["y","o"], "charStartTimesMs": [0, 5], "charDurationsMs": [5, 5]}
        });
        let (events, _) = s.on_message(&msg, &mut conv).unwrap();
        assert!(events.contains(&TtsEvent::Mark {
            seq: 0,
            at: 800,
            chars: 9
        }));
        let end = json!({"audio": null, "isFinal": true});
        assert!(s.on_message(&end, &mut conv).unwrap().1);
        let err = json!({"error": "invalid_api_key", "message": "Invalid API key"});
        assert!(s.on_message(&err, &mut conv).is_err());
    }
}
