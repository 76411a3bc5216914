//! One call's cascaded conversation, run by one tokio task.
//!
//! * **Turns.** Final transcripts gather into the caller's utterance. The turn ends as
//!   [`TurnEnd`] says: with voxline's VAD, at its `CommitTurn` once the STT has a final
//!   transcript (if the STT has not endpointed yet, the session sends `Finalize` and ends the
//!   turn at the answer); the STT's utterance end alone also ends it.
//! * **Replies.** The utterance joins the history and one LLM round starts. Its text is cut
//!   into clauses ([`Chunker`]); each clause goes to the TTS as soon as it is complete, so the
//!   first audio plays while the LLM still writes, and audio goes to the call as it arrives.
//!   A round that calls tools reports them; when every result is back and one asks for a
//!   reply, the next round starts.
//! * **Barge-in.** [`BackendControl::Interrupt`] cancels the LLM stream and the TTS request
//!   in flight, and trims the assistant's messages in the history to what the caller heard.
//!   `played_ms` tells how far the caller got through all the audio delivered; replies
//!   delivered earlier may still be playing, so each reply remembers where its audio starts.
//!   The reply being heard keeps what was heard (its audio walked through its clauses in
//!   order, each clause's text counting in proportion to its audio); replies behind it keep
//!   nothing.
//! * **Failures.** A provider that fails for good (the STT cannot reconnect, the LLM or TTS
//!   answers an error or times out) ends the session with a fatal
//!   [`BackendEvent::Error`]; the call layer then falls back.

use std::collections::HashSet;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::chat::{self, ChatMessage, LlmEvent, ToolCall};
use super::stt::{SttEvent, SttHandle, SttInput};
use super::tts::{Speaker, TtsEvent, TtsProvider};
use super::tts_socket::DeepgramSocket;
use super::{CascadedConfig, TurnEnd};
use crate::agent::backend::{
    AudioFormat, BackendControl, BackendEvent, CallContext, Role, ToolSpec,
};
use crate::agent::realtime::render_instructions;
use crate::agent::text::{Chunker, cut_text};

/// Queue of one round's LLM events.
const LLM_QUEUE: usize = 256;
/// Queue of one reply's TTS events.
const TTS_QUEUE: usize = 256;

/// The state of one call's conversation.
pub struct Session {
    cfg: CascadedConfig,
    format: AudioFormat,
    tools: Vec<ToolSpec>,
    client: reqwest::Client,
    events: mpsc::Sender<BackendEvent>,
    system: String,
    greeting: Option<String>,
    history: Vec<ChatMessage>,
    /// Final transcripts of the caller's turn so far.
    caller_text: String,
    /// The STT endpointed after the last words (`speech_final`).
    endpointed: bool,
    /// voxline's VAD ended the turn; waiting for the STT's final words.
    vad_ended: bool,
    /// A turn ended while a reply was running: answer it next.
    turn_waiting: bool,
    /// Tool calls whose results are due, and whether one of them asked for a reply.
    tools_pending: HashSet<String>,
    tools_want_reply: bool,
    /// A `Say` that waits for the running reply.
    say_waiting: Option<String>,
    reply: Option<Reply>,
    /// The last replies whose audio was all delivered (oldest first): they may still be
    /// playing, so a barge-in can still trim them.
    delivered_replies: std::collections::VecDeque<Spoken>,
    /// Audio delivered to the call so far, bytes of the call's format.
    delivered: u64,
    /// The call's Deepgram TTS socket (`None` for other providers).
    tts_socket: Option<DeepgramSocket>,
    caller_items: u64,
    agent_items: u64,
    /// The caller's audio sent to the STT so far, in ms.
    input_ms: u64,
    /// When audio positions were sent to the STT: (position in ms, instant), newest last.
    input_marks: std::collections::VecDeque<(u64, Instant)>,
    /// The STT latency of the current caller turn's last final transcript.
    stt_final_ms: Option<u64>,
    /// The stage figures wait for the reply to this turn.
    timings_due: bool,
}

/// Input positions remembered to time the STT (ten seconds of 20 ms frames).
const INPUT_MARKS: usize = 512;

/// One LLM round (or a scripted text) being spoken.
struct Reply {
    item: String,
    llm: Option<(JoinHandle<()>, mpsc::Receiver<LlmEvent>)>,
    chunker: Chunker,
    speaker: Speaker,
    tts: mpsc::Receiver<TtsEvent>,
    pieces: Vec<Piece>,
    /// The LLM has finished (or there is none); its message is in the history at `history_at`.
    llm_done: bool,
    history_at: Option<usize>,
    /// Where its audio starts in the audio delivered ([`Session::delivered`]).
    start: u64,
    started: Instant,
    first_token: Option<Instant>,
    /// When the first piece went to the TTS.
    first_said: Option<Instant>,
    first_audio: Option<Instant>,
}

struct Piece {
    text: String,
    bytes: u64,
    done: bool,
    /// Word starts from the provider's alignment: (byte of the audio, characters before).
    marks: Vec<(u64, usize)>,
}

/// A reply delivered to the call, maybe still playing.
struct Spoken {
    item: String,
    pieces: Vec<Piece>,
    history_at: Option<usize>,
    start: u64,
}

/// Delivered replies remembered for barge-in.
const DELIVERED_REPLIES: usize = 8;

enum Step {
    Continue,
    Stop,
    Fail(String),
}

impl Session {
    /// A session for the call in `ctx`; `now` renders `{{time}}` in the templates.
    pub fn new(
        cfg: CascadedConfig,
        ctx: CallContext,
        client: reqwest::Client,
        events: mpsc::Sender<BackendEvent>,
        now: SystemTime,
    ) -> Session {
        let system = render_instructions(&cfg.instructions, &ctx, now);
        let greeting = cfg
            .greeting
            .as_ref()
            .map(|g| render_instructions(g, &ctx, now));
        // Another backend had the call: go on from its conversation, without a greeting.
        let history: Vec<ChatMessage> = ctx
            .history
            .iter()
            .map(|h| match h.role {
                Role::Caller => ChatMessage::User(h.text.clone()),
                Role::Agent => ChatMessage::Assistant {
                    content: Some(h.text.clone()),
                    tool_calls: Vec::new(),
                },
            })
            .collect();
        let greeting = greeting.filter(|_| history.is_empty());
        // Deepgram's socket is dialled now, so the greeting finds it open.
        let tts_socket = (cfg.tts.provider == TtsProvider::DeepgramWs)
            .then(|| DeepgramSocket::start(cfg.tts.clone(), ctx.call_format));
        Session {
            format: ctx.call_format,
            tools: ctx.tools,
            cfg,
            client,
            events,
            system,
            greeting,
            history,
            caller_text: String::new(),
            endpointed: false,
            vad_ended: false,
            turn_waiting: false,
            tools_pending: HashSet::new(),
            tools_want_reply: false,
            say_waiting: None,
            reply: None,
            delivered_replies: std::collections::VecDeque::new(),
            delivered: 0,
            tts_socket,
            caller_items: 0,
            agent_items: 0,
            input_ms: 0,
            input_marks: std::collections::VecDeque::with_capacity(INPUT_MARKS),
            stt_final_ms: None,
            timings_due: false,
        }
    }

    /// Runs until the call layer closes the session or a provider fails for good.
    pub async fn run(mut self, mut control: mpsc::Receiver<BackendControl>, mut stt: SttHandle) {
        if let Some(g) = self.greeting.take() {
            self.speak_scripted(g);
        }
        loop {
            let step = tokio::select! {
                c = control.recv() => match c {
                    None | Some(BackendControl::Close) => Step::Stop,
                    Some(c) => self.on_control(c, &stt.input).await,
                },
                ev = stt.events.recv() => match ev {
                    None => Step::Fail("the STT client stopped".into()),
                    Some(ev) => self.on_stt(ev).await,
                },
                ev = next_reply_event(&mut self.reply) => match ev {
                    ReplyEvent::Llm(ev) => self.on_llm(ev).await,
                    ReplyEvent::Tts(ev) => self.on_tts(ev).await,
                },
            };
            match step {
                Step::Continue => {}
                Step::Stop => {
                    self.cancel_reply();
                    let _ = self.events.send(BackendEvent::Closed).await;
                    debug!("cascaded session closed");
                    return;
                }
                Step::Fail(message) => {
                    warn!(%message, "cascaded backend gives up");
                    self.cancel_reply();
                    let _ = self
                        .events
                        .send(BackendEvent::Error {
                            message,
                            fatal: true,
                        })
                        .await;
                    let _ = self.events.send(BackendEvent::Closed).await;
                    return;
                }
            }
        }
    }

    async fn emit(&self, ev: BackendEvent) -> Step {
        if self.events.send(ev).await.is_err() {
            Step::Stop
        } else {
            Step::Continue
        }
    }

    async fn on_control(&mut self, c: BackendControl, stt: &mpsc::Sender<SttInput>) -> Step {
        match c {
            BackendControl::Audio(chunk) => {
                if chunk.format != self.format {
                    return Step::Continue;
                }
                self.input_ms += self.format.duration_ms(chunk.data.len() as u64);
                if self.input_marks.len() == INPUT_MARKS {
                    self.input_marks.pop_front();
                }
                self.input_marks.push_back((self.input_ms, Instant::now()));
                if stt.try_send(SttInput::Audio(chunk.data)).is_err() {
                    debug!("cascaded: the STT queue is full; caller audio dropped");
                }
                Step::Continue
            }
            BackendControl::CommitTurn => {
                if self.endpointed && !self.caller_text.trim().is_empty() {
                    self.end_turn().await
                } else {
                    // The STT has not finished the words yet: ask it to, and end the turn at
                    // its answer.
                    self.vad_ended = true;
                    let _ = stt.try_send(SttInput::Finalize);
                    Step::Continue
                }
            }
            BackendControl::Interrupt { played_ms } => self.interrupt(played_ms).await,
            BackendControl::ToolResult { call_id, output } => {
                self.tool_result(call_id, output, true).await
            }
            BackendControl::ToolResultNoReply { call_id, output } => {
                self.tool_result(call_id, output, false).await
            }
            BackendControl::Say { instructions } => {
                if self.reply.is_some() {
                    self.say_waiting = Some(instructions);
                    Step::Continue
                } else {
                    self.start_round(Some(instructions)).await
                }
            }
            BackendControl::Close => Step::Stop,
        }
    }

    async fn on_stt(&mut self, ev: SttEvent) -> Step {
        match ev {
            SttEvent::Interim(text) => {
                self.endpointed = false;
                self.emit(BackendEvent::TranscriptDelta {
                    role: Role::Caller,
                    text,
                })
                .await
            }
            SttEvent::Final {
                text,
                speech_final,
                from_finalize,
                end_ms,
            } => {
                let text = text.trim();
                if !text.is_empty() {
                    // When the audio ending where this transcript ends was sent.
                    let i = self.input_marks.partition_point(|(p, _)| *p < end_ms);
                    if let Some((_, at)) = self.input_marks.get(i) {
                        self.stt_final_ms =
                            Some(at.elapsed().as_millis().try_into().unwrap_or(u64::MAX));
                    }
                    if !self.caller_text.is_empty() {
                        self.caller_text.push(' ');
                    }
                    self.caller_text.push_str(text);
                }
                self.endpointed = speech_final || (self.endpointed && text.is_empty());
                let ends = match self.cfg.turn_end {
                    TurnEnd::VadAndStt => self.vad_ended && (speech_final || from_finalize),
                    TurnEnd::Stt => speech_final,
                };
                if ends && !self.caller_text.trim().is_empty() {
                    self.end_turn().await
                } else {
                    Step::Continue
                }
            }
            SttEvent::UtteranceEnd => {
                if self.caller_text.trim().is_empty() {
                    Step::Continue
                } else {
                    self.end_turn().await
                }
            }
            SttEvent::Reconnected => self.emit(BackendEvent::Reconnected).await,
            SttEvent::Failed(message) => Step::Fail(message),
        }
    }

    /// The caller's turn is over: it joins the history and gets a reply.
    async fn end_turn(&mut self) -> Step {
        let text = std::mem::take(&mut self.caller_text);
        self.endpointed = false;
        self.vad_ended = false;
        self.caller_items += 1;
        let item_id = format!("caller-{}", self.caller_items);
        info!(chars = text.len(), "cascaded: caller turn ended");
        if self.cfg.turn_end == TurnEnd::Stt
            && let Step::Stop = self
                .emit(BackendEvent::SpeechStopped {
                    audio_end_ms: self.input_ms,
                })
                .await
        {
            return Step::Stop;
        }
        if let Step::Stop = self
            .emit(BackendEvent::TranscriptFinal {
                role: Role::Caller,
                text: text.clone(),
                item_id,
            })
            .await
        {
            return Step::Stop;
        }
        self.history.push(ChatMessage::User(text));
        self.timings_due = true;
        if self.reply.is_some() || !self.tools_pending.is_empty() {
            self.turn_waiting = true;
            return Step::Continue;
        }
        self.start_round(None).await
    }

    fn new_reply(&mut self) -> (Reply, String) {
        self.agent_items += 1;
        let item = format!("agent-{}", self.agent_items);
        let (tx, rx) = mpsc::channel(TTS_QUEUE);
        let speaker = Speaker::start(
            self.client.clone(),
            self.cfg.tts.clone(),
            self.format,
            tx,
            self.tts_socket.as_mut(),
        );
        (
            Reply {
                item: item.clone(),
                llm: None,
                chunker: Chunker::new(),
                speaker,
                tts: rx,
                pieces: Vec::new(),
                llm_done: false,
                history_at: None,
                start: self.delivered,
                started: Instant::now(),
                first_token: None,
                first_said: None,
                first_audio: None,
            },
            item,
        )
    }

    /// Speaks `text` as written (the greeting).
    fn speak_scripted(&mut self, text: String) {
        let (mut reply, _) = self.new_reply();
        let mut pieces = Vec::new();
        reply.chunker.push(&text, &mut pieces);
        pieces.extend(reply.chunker.finish());
        for p in pieces {
            say(&mut reply, p);
        }
        reply.speaker.finish();
        reply.llm_done = true;
        self.history.push(ChatMessage::Assistant {
            content: Some(text),
            tool_calls: Vec::new(),
        });
        reply.history_at = Some(self.history.len() - 1);
        self.reply = Some(reply);
        // ResponseStarted goes out before any audio: the events channel is in order, and the
        // speaker's first audio can only arrive after this returns to the loop.
        let _ = self.events.try_send(BackendEvent::ResponseStarted);
    }

    /// Starts an LLM round over the history (`extra`: one-off instructions, such as a
    /// goodbye).
    async fn start_round(&mut self, extra: Option<String>) -> Step {
        let mut messages = Vec::with_capacity(self.history.len() + 2);
        if !self.system.is_empty() {
            messages.push(ChatMessage::System(self.system.clone()));
        }
        messages.extend(self.history.iter().cloned());
        if let Some(x) = extra {
            messages.push(ChatMessage::System(x));
        }
        let body = chat::request_body(&self.cfg.llm, &messages, &self.tools);
        let (tx, rx) = mpsc::channel(LLM_QUEUE);
        let task = tokio::spawn(chat::stream(
            self.client.clone(),
            self.cfg.llm.clone(),
            body,
            tx,
        ));
        let (mut reply, _) = self.new_reply();
        reply.llm = Some((task, rx));
        self.reply = Some(reply);
        self.emit(BackendEvent::ResponseStarted).await
    }

    async fn on_llm(&mut self, ev: Option<LlmEvent>) -> Step {
        let Some(reply) = self.reply.as_mut() else {
            return Step::Continue;
        };
        let Some(ev) = ev else {
            reply.llm = None;
            return Step::Fail("the LLM request stopped without an answer".into());
        };
        match ev {
            LlmEvent::FirstToken => {
                reply.first_token = Some(Instant::now());
                debug!(
                    ttft_ms = reply.started.elapsed().as_millis() as u64,
                    "cascaded: LLM first token"
                );
                Step::Continue
            }
            LlmEvent::Text(t) => {
                let mut pieces = Vec::new();
                reply.chunker.push(&t, &mut pieces);
                for p in pieces {
                    say(reply, p);
                }
                Step::Continue
            }
            LlmEvent::Done {
                tool_calls,
                finish_reason,
            } => {
                reply.llm = None;
                if let Some(p) = reply.chunker.finish() {
                    say(reply, p);
                }
                reply.speaker.finish();
                reply.llm_done = true;
                let text = spoken_text(&reply.pieces);
                debug!(
                    ?finish_reason,
                    tools = tool_calls.len(),
                    "cascaded: LLM done"
                );
                self.history.push(ChatMessage::Assistant {
                    content: (!text.is_empty()).then_some(text),
                    tool_calls: tool_calls.clone(),
                });
                reply.history_at = Some(self.history.len() - 1);
                for call in tool_calls {
                    if let Step::Stop = self.tool_call(call).await {
                        return Step::Stop;
                    }
                }
                self.maybe_finish().await
            }
            LlmEvent::Failed(e) => {
                reply.llm = None;
                Step::Fail(e.to_string())
            }
        }
    }

    async fn tool_call(&mut self, call: ToolCall) -> Step {
        let arguments = match serde_json::from_str::<serde_json::Value>(&call.arguments) {
            Ok(v) => v,
            Err(e) => {
                warn!(tool = %call.name, error = %e, "cascaded: tool arguments are not JSON");
                // The model gets the error as the result, as the realtime client does.
                self.history.push(ChatMessage::Tool {
                    call_id: call.id,
                    content: serde_json::json!({
                        "error": format!("arguments are not valid JSON: {e}")
                    })
                    .to_string(),
                });
                self.tools_want_reply = true;
                return Step::Continue;
            }
        };
        self.tools_pending.insert(call.id.clone());
        self.emit(BackendEvent::ToolCall {
            call_id: call.id,
            name: call.name,
            arguments,
        })
        .await
    }

    async fn tool_result(&mut self, call_id: String, output: String, reply: bool) -> Step {
        if !self.tools_pending.remove(&call_id) {
            return self
                .emit(BackendEvent::Error {
                    message: format!("no pending tool call {call_id}"),
                    fatal: false,
                })
                .await;
        }
        self.history.push(ChatMessage::Tool {
            call_id,
            content: output,
        });
        self.tools_want_reply |= reply;
        self.next_round().await
    }

    async fn on_tts(&mut self, ev: Option<TtsEvent>) -> Step {
        let Some(reply) = self.reply.as_mut() else {
            return Step::Continue;
        };
        let Some(ev) = ev else {
            return Step::Fail("the TTS stopped".into());
        };
        match ev {
            TtsEvent::Audio { seq, chunk } => {
                if let Some(p) = reply.pieces.get_mut(seq) {
                    p.bytes += chunk.data.len() as u64;
                }
                self.delivered += chunk.data.len() as u64;
                let mut timings = None;
                if reply.first_audio.is_none() {
                    let now = Instant::now();
                    reply.first_audio = Some(now);
                    let ms = |a: Instant, b: Instant| {
                        u64::try_from(b.saturating_duration_since(a).as_millis()).ok()
                    };
                    let llm = reply.first_token.and_then(|t| ms(reply.started, t));
                    let tts = reply.first_said.and_then(|t| ms(t, now));
                    debug!(?llm, ?tts, stt = ?self.stt_final_ms, "cascaded: first TTS audio");
                    if std::mem::take(&mut self.timings_due) {
                        timings = Some(BackendEvent::StageLatency {
                            stt_final_ms: self.stt_final_ms.take(),
                            llm_first_token_ms: llm,
                            tts_first_byte_ms: tts,
                        });
                    }
                }
                if let Some(t) = timings
                    && let Step::Stop = self.emit(t).await
                {
                    return Step::Stop;
                }
                self.emit(BackendEvent::Audio(chunk)).await
            }
            TtsEvent::Mark { seq, at, chars } => {
                if let Some(p) = reply.pieces.get_mut(seq) {
                    p.marks.push((at, chars));
                }
                Step::Continue
            }
            TtsEvent::PieceDone { seq } => {
                if let Some(p) = reply.pieces.get_mut(seq) {
                    p.done = true;
                }
                self.maybe_finish().await
            }
            TtsEvent::Failed { message, .. } => Step::Fail(message),
        }
    }

    /// Ends the reply once the LLM is done and every piece has been spoken.
    async fn maybe_finish(&mut self) -> Step {
        let done = self
            .reply
            .as_ref()
            .is_some_and(|r| r.llm_done && r.pieces.iter().all(|p| p.done));
        if !done {
            return Step::Continue;
        }
        let Some(reply) = self.reply.take() else {
            return Step::Continue;
        };
        let text = spoken_text(&reply.pieces);
        if !text.is_empty()
            && let Step::Stop = self
                .emit(BackendEvent::TranscriptFinal {
                    role: Role::Agent,
                    text,
                    item_id: reply.item.clone(),
                })
                .await
        {
            return Step::Stop;
        }
        if self.delivered_replies.len() == DELIVERED_REPLIES {
            self.delivered_replies.pop_front();
        }
        self.delivered_replies.push_back(Spoken {
            item: reply.item,
            pieces: reply.pieces,
            history_at: reply.history_at,
            start: reply.start,
        });
        if let Step::Stop = self.emit(BackendEvent::ResponseDone).await {
            return Step::Stop;
        }
        self.next_round().await
    }

    /// After a reply or a tool result: answer what waits (tool results, a caller turn, a
    /// `Say`), one round at a time.
    async fn next_round(&mut self) -> Step {
        if self.reply.is_some() || !self.tools_pending.is_empty() {
            return Step::Continue;
        }
        if std::mem::take(&mut self.tools_want_reply) || std::mem::take(&mut self.turn_waiting) {
            self.turn_waiting = false;
            return self.start_round(None).await;
        }
        if let Some(x) = self.say_waiting.take() {
            return self.start_round(Some(x)).await;
        }
        Step::Continue
    }

    /// Barge-in: stop the reply being generated, and keep in the history only what the
    /// caller heard of it and of the delivered replies still playing.
    async fn interrupt(&mut self, played_ms: u64) -> Step {
        let played = self.format.duration_ms(self.delivered).min(played_ms);
        let mut replies: Vec<(Spoken, bool)> = self
            .delivered_replies
            .drain(..)
            .map(|r| (r, false))
            .collect();
        if let Some(mut reply) = self.reply.take() {
            if let Some((task, _)) = reply.llm.take() {
                task.abort();
            }
            // Dropping the speaker cancels the TTS request in flight.
            let Reply {
                item,
                pieces,
                history_at,
                start,
                ..
            } = reply;
            let spoken = Spoken {
                item,
                pieces,
                history_at,
                start,
            };
            replies.push((spoken, true));
        }
        for (spoken, active) in replies {
            let start = self.format.duration_ms(spoken.start);
            let total: u64 = spoken.pieces.iter().map(|p| p.bytes).sum();
            let end = self.format.duration_ms(spoken.start + total);
            if !active && played >= end {
                // Heard to the end.
                continue;
            }
            let heard_ms = played.saturating_sub(start);
            let heard = heard_text(&spoken.pieces, self.format, heard_ms);
            debug!(
                played_ms,
                heard_ms,
                heard_chars = heard.len(),
                active,
                "cascaded: barge-in"
            );
            if let Step::Stop = self.keep_heard(spoken, heard, active).await {
                return Step::Stop;
            }
        }
        Step::Continue
    }

    /// Trims a reply's message in the history to `heard` and reports it: an active reply has
    /// no transcript line yet (it gets one, and its response ends); a delivered one has its
    /// whole text, which is corrected.
    async fn keep_heard(&mut self, spoken: Spoken, heard: String, active: bool) -> Step {
        match spoken.history_at {
            Some(i) => {
                if let Some(ChatMessage::Assistant { content, .. }) = self.history.get_mut(i) {
                    *content = (!heard.is_empty()).then(|| heard.clone());
                }
            }
            None if !heard.is_empty() => self.history.push(ChatMessage::Assistant {
                content: Some(heard.clone()),
                tool_calls: Vec::new(),
            }),
            None => {}
        }
        let ev = if active {
            (!heard.is_empty()).then(|| BackendEvent::TranscriptFinal {
                role: Role::Agent,
                text: heard,
                item_id: spoken.item,
            })
        } else {
            Some(BackendEvent::TranscriptCorrected {
                role: Role::Agent,
                text: heard,
                item_id: spoken.item,
            })
        };
        if let Some(ev) = ev
            && let Step::Stop = self.emit(ev).await
        {
            return Step::Stop;
        }
        if active {
            self.emit(BackendEvent::ResponseDone).await
        } else {
            Step::Continue
        }
    }

    fn cancel_reply(&mut self) {
        if let Some(mut r) = self.reply.take()
            && let Some((task, _)) = r.llm.take()
        {
            task.abort();
        }
    }
}

fn say(reply: &mut Reply, text: String) {
    match reply.speaker.say(text.clone()) {
        Some(seq) => {
            reply.first_said.get_or_insert_with(Instant::now);
            match reply.pieces.get_mut(seq) {
                // A streaming socket speaks it with the piece before (as the provider sees
                // the text: joined by a space).
                Some(p) => {
                    p.text.push(' ');
                    p.text.push_str(&text);
                }
                None => reply.pieces.push(Piece {
                    text,
                    bytes: 0,
                    done: false,
                    marks: Vec::new(),
                }),
            }
        }
        None => warn!("cascaded: the TTS queue is full; a piece of the reply is not spoken"),
    }
}

/// The text of the pieces, joined.
fn spoken_text(pieces: &[Piece]) -> String {
    pieces
        .iter()
        .map(|p| p.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the caller heard of `pieces` after `heard_ms` of their audio: whole pieces, then of
/// the next one the words that started before that point (from the provider's alignment),
/// or without alignment its share in proportion to its audio received so far.
fn heard_text(pieces: &[Piece], format: AudioFormat, heard_ms: u64) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut left = heard_ms;
    for p in pieces {
        let ms = format.duration_ms(p.bytes);
        if ms == 0 {
            break;
        }
        if left >= ms && p.done {
            out.push(p.text.clone());
            left -= ms;
            continue;
        }
        let cut = if p.marks.is_empty() {
            cut_text(&p.text, left as f64 / ms as f64)
        } else {
            // The word being spoken at that point is left out, as `cut_text` does.
            let at = left * u64::from(format.sample_rate()) * u64::from(format.bytes_per_sample())
                / 1000;
            let chars = p
                .marks
                .iter()
                .take_while(|(b, _)| *b <= at)
                .last()
                .map_or(0, |(_, c)| *c);
            p.text
                .chars()
                .take(chars)
                .collect::<String>()
                .trim_end()
                .to_owned()
        };
        if !cut.is_empty() {
            out.push(cut);
        }
        break;
    }
    out.join(" ")
}

enum ReplyEvent {
    Llm(Option<LlmEvent>),
    Tts(Option<TtsEvent>),
}

/// The next event of the running reply (its LLM round or its speaker); pending without one.
async fn next_reply_event(reply: &mut Option<Reply>) -> ReplyEvent {
    let Some(r) = reply.as_mut() else {
        return std::future::pending().await;
    };
    match r.llm.as_mut() {
        Some((_, llm)) => tokio::select! {
            ev = llm.recv() => ReplyEvent::Llm(ev),
            ev = r.tts.recv() => ReplyEvent::Tts(ev),
        },
        None => ReplyEvent::Tts(r.tts.recv().await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heard_text_follows_the_alignment_marks() {
        // 1 s of μ-law for "Your balance is forty two dollars." with word starts.
        let text = "Your balance is forty two dollars.";
        let starts = [0usize, 5, 13, 16, 22, 26];
        let marks = starts
            .iter()
            .enumerate()
            .map(|(i, c)| (i as u64 * 1300, *c))
            .collect();
        let pieces = vec![Piece {
            text: text.into(),
            bytes: 8000,
            done: true,
            marks,
        }];
        let f = AudioFormat::Pcmu8k;
        assert_eq!(heard_text(&pieces, f, 0), "");
        // 300 ms = 2400 bytes: "balance" (from byte 1300) is being spoken.
        assert_eq!(heard_text(&pieces, f, 300), "Your");
        // 500 ms = 4000 bytes: "forty" started at 3900.
        assert_eq!(heard_text(&pieces, f, 500), "Your balance is");
        assert_eq!(heard_text(&pieces, f, 1000), text);
    }

    #[test]
    fn heard_text_follows_the_audio() {
        let pieces = vec![
            Piece {
                text: "Your balance is forty two dollars.".into(),
                bytes: 8000, // 1 s of μ-law
                done: true,
                marks: Vec::new(),
            },
            Piece {
                text: "Anything else I can help with today?".into(),
                bytes: 16000,
                done: true,
                marks: Vec::new(),
            },
        ];
        let f = AudioFormat::Pcmu8k;
        assert_eq!(heard_text(&pieces, f, 0), "");
        assert_eq!(heard_text(&pieces, f, 500), "Your balance is");
        assert_eq!(
            heard_text(&pieces, f, 1000),
            "Your balance is forty two dollars."
        );
        assert_eq!(
            heard_text(&pieces, f, 2000),
            "Your balance is forty two dollars. Anything else I"
        );
        assert_eq!(
            heard_text(&pieces, f, 9000),
            "Your balance is forty two dollars. Anything else I can help with today?"
        );
    }
}
