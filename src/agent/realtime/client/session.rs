//! The client task of one live session: audio up and down (through [`AudioPath`]), server
//! events, barge-in truncation, tools, and reconnection with replay.

use super::*;

// ---------------------------------------------------------------------------------------
// The client task.

/// What the loop does next.
pub(super) enum Flow {
    Continue,
    /// Close the session (Close command or the handle dropped).
    Stop,
    /// The event receiver is gone: stop without reporting.
    ReceiverGone,
    /// The socket failed; reconnect if allowed.
    Lost(ConnectionLost),
}

/// One utterance of the conversation, for replay after a reconnect.
#[derive(Debug)]
pub(super) struct HistoryEntry {
    pub(super) item_id: String,
    pub(super) role: Role,
    pub(super) text: Option<String>,
    /// The share of an interrupted assistant item the caller heard.
    pub(super) heard: Option<f64>,
}

/// An assistant audio item delivered to the call, maybe still playing.
#[derive(Debug)]
pub(super) struct AudioItem {
    pub(super) item_id: String,
    /// Wire bytes received for it.
    pub(super) bytes: u64,
    /// Where its audio starts in the call-format audio delivered ([`Client::delivered`]).
    pub(super) start: u64,
    /// Call-format bytes delivered for it.
    pub(super) delivered: u64,
}

/// Assistant items remembered for barge-in: a reply and the ones queued behind it.
const PLAYING_ITEMS: usize = 16;
/// Items whose late audio is dropped after a barge-in.
const SILENCED_ITEMS: usize = 16;

pub(super) struct Client {
    pub(super) setup: Arc<Setup>,
    pub(super) events: mpsc::Sender<BackendEvent>,
    pub(super) wire: AudioFormat,
    pub(super) audio: AudioPath,
    pub(super) active_response: Option<String>,
    /// `response.create`s waiting for the active response to finish.
    pub(super) deferred: VecDeque<Option<ResponseParams>>,
    /// The assistant audio items delivered since the last barge-in, oldest first.
    pub(super) playing: VecDeque<AudioItem>,
    /// Call-format audio bytes delivered to the call since the backend started (the
    /// position [`BackendControl::Interrupt`]'s `played_ms` counts on; never reset).
    pub(super) delivered: u64,
    /// Items cut by a barge-in: audio still arriving for them is dropped.
    pub(super) silenced: VecDeque<String>,
    /// call_id → function name, from `response.output_item.added`.
    pub(super) functions: HashMap<String, String>,
    pub(super) history: Vec<HistoryEntry>,
}

impl Client {
    pub(super) fn new(
        setup: Arc<Setup>,
        call_format: AudioFormat,
        wire: AudioFormat,
        events: mpsc::Sender<BackendEvent>,
    ) -> Result<Client, BackendError> {
        Ok(Client {
            setup,
            events,
            wire,
            audio: AudioPath::new(call_format)?,
            active_response: None,
            deferred: VecDeque::new(),
            playing: VecDeque::new(),
            delivered: 0,
            silenced: VecDeque::new(),
            functions: HashMap::new(),
            history: Vec::new(),
        })
    }

    pub(super) async fn run(mut self, mut ws: Ws, mut control: mpsc::Receiver<BackendControl>) {
        loop {
            let flow = tokio::select! {
                msg = ws.next() => self.on_socket(msg, &mut ws).await,
                ctl = control.recv() => match ctl {
                    None | Some(BackendControl::Close) => Flow::Stop,
                    Some(c) => self.on_control(c, &mut ws).await,
                },
            };
            match flow {
                Flow::Continue => {}
                Flow::Stop => {
                    close(&mut ws).await;
                    let _ = self.events.send(BackendEvent::Closed).await;
                    debug!("realtime session closed");
                    return;
                }
                Flow::ReceiverGone => {
                    close(&mut ws).await;
                    return;
                }
                Flow::Lost(reason) => {
                    warn!(%reason, "realtime connection lost");
                    if !self.setup.reconnect {
                        self.fail(format!("realtime connection lost: {reason}"))
                            .await;
                        return;
                    }
                    match self.reconnect().await {
                        Ok(new_ws) => {
                            ws = new_ws;
                            info!("realtime session re-established");
                            if !self.emit(BackendEvent::Reconnected).await {
                                close(&mut ws).await;
                                return;
                            }
                        }
                        Err(e) => {
                            self.fail(format!(
                                "realtime connection lost ({reason}) and reconnecting failed: {e}"
                            ))
                            .await;
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Reports a fatal error and `Closed`.
    pub(super) async fn fail(&self, message: String) {
        warn!(%message, "realtime backend gives up");
        let _ = self
            .events
            .send(BackendEvent::Error {
                message,
                fatal: true,
            })
            .await;
        let _ = self.events.send(BackendEvent::Closed).await;
    }

    pub(super) async fn emit(&self, ev: BackendEvent) -> bool {
        self.events.send(ev).await.is_ok()
    }

    /// Reconnects within the budget, re-sends the session and replays the conversation.
    pub(super) async fn reconnect(&mut self) -> Result<Ws, BackendError> {
        let start = Instant::now();
        let deadline = start + self.setup.reconnect_budget;
        let mut last = BackendError::Timeout {
            stage: "realtime reconnect",
            after_ms: u64::try_from(self.setup.reconnect_budget.as_millis()).unwrap_or(u64::MAX),
        };
        for (attempt, delay) in RECONNECT_BACKOFF_MS.iter().enumerate() {
            let at = Instant::now() + Duration::from_millis(*delay);
            if at >= deadline {
                break;
            }
            tokio::time::sleep_until(at).await;
            let left = deadline.saturating_duration_since(Instant::now());
            let limit = left.min(self.setup.connect_timeout);
            match open_session(&self.setup, limit).await {
                Ok(mut ws) => {
                    debug!(
                        attempt,
                        elapsed_ms = start.elapsed().as_millis() as u64,
                        "realtime reconnected"
                    );
                    self.reset_session_state();
                    for ev in self.replay_events() {
                        send(&mut ws, &ev)
                            .await
                            .map_err(|e| BackendError::Protocol(format!("replay failed: {e}")))?;
                    }
                    return Ok(ws);
                }
                Err(e) => {
                    debug!(attempt, error = %e, "realtime reconnect attempt failed");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Forgets what belonged to the old server session.
    pub(super) fn reset_session_state(&mut self) {
        self.active_response = None;
        self.deferred.clear();
        self.playing.clear();
        self.silenced.clear();
        self.functions.clear();
        self.audio.reset();
    }

    /// The conversation so far as `conversation.item.create` events.
    pub(super) fn replay_events(&self) -> Vec<ClientEvent> {
        self.history
            .iter()
            .filter_map(|h| {
                let text = h.text.as_deref()?;
                let text = match h.heard {
                    Some(share) => cut_text(text, share),
                    None => text.to_owned(),
                };
                if text.trim().is_empty() {
                    return None;
                }
                let (role, part) = match h.role {
                    Role::Caller => (MessageRole::User, ContentPart::InputText { text }),
                    Role::Agent => (MessageRole::Assistant, ContentPart::OutputText { text }),
                };
                Some(ClientEvent::ConversationItemCreate {
                    item: Item::Message {
                        role,
                        content: vec![part],
                    },
                })
            })
            .collect()
    }

    pub(super) async fn on_socket(
        &mut self,
        msg: Option<Result<Message, tungstenite::Error>>,
        ws: &mut Ws,
    ) -> Flow {
        match msg {
            None => Flow::Lost(ConnectionLost::Ended),
            Some(Err(e)) => Flow::Lost(e.into()),
            Some(Ok(Message::Text(t))) => self.on_server(t.as_str(), ws).await,
            Some(Ok(Message::Close(frame))) => Flow::Lost(ConnectionLost::ClosedByServer(
                frame.map(|f| (u16::from(f.code), f.reason.to_string())),
            )),
            Some(Ok(_)) => Flow::Continue,
        }
    }

    pub(super) async fn on_server(&mut self, text: &str, ws: &mut Ws) -> Flow {
        let ev = match ServerEvent::parse(text) {
            Ok(ev) => ev,
            Err(e) => {
                warn!(error = %e, "realtime: cannot parse a server event; ignored");
                return Flow::Continue;
            }
        };
        let out = match ev {
            ServerEvent::Error { error } => {
                if error.code.as_deref() == Some(CODE_CANCEL_NOT_ACTIVE) {
                    debug!("realtime: response.cancel found no active response");
                    return Flow::Continue;
                }
                warn!(code = ?error.code, param = ?error.param, message = %error.message, "realtime error event");
                let message = match &error.code {
                    Some(code) => format!("{code}: {}", error.message),
                    None => error.message,
                };
                BackendEvent::Error {
                    message,
                    fatal: false,
                }
            }
            ServerEvent::SessionCreated | ServerEvent::SessionUpdated { .. } => {
                return Flow::Continue;
            }
            ServerEvent::SpeechStarted { audio_start_ms, .. } => {
                BackendEvent::SpeechStarted { audio_start_ms }
            }
            ServerEvent::SpeechStopped { audio_end_ms, .. } => {
                BackendEvent::SpeechStopped { audio_end_ms }
            }
            ServerEvent::Committed { item_id } => {
                self.history_entry(&item_id, Role::Caller);
                return Flow::Continue;
            }
            ServerEvent::InputTranscriptionDelta { delta, .. } => {
                if delta.is_empty() {
                    return Flow::Continue;
                }
                BackendEvent::TranscriptDelta {
                    role: Role::Caller,
                    text: delta,
                }
            }
            ServerEvent::InputTranscriptionCompleted {
                item_id,
                transcript,
            } => {
                self.history_entry(&item_id, Role::Caller).text = Some(transcript.clone());
                BackendEvent::TranscriptFinal {
                    role: Role::Caller,
                    text: transcript,
                    item_id,
                }
            }
            ServerEvent::InputTranscriptionFailed { error, .. } => {
                warn!(message = %error.message, "realtime: caller transcription failed");
                BackendEvent::Error {
                    message: format!("caller transcription failed: {}", error.message),
                    fatal: false,
                }
            }
            ServerEvent::ResponseCreated { response } => {
                debug!(response = %response.id, "realtime response started");
                self.active_response = Some(response.id);
                BackendEvent::ResponseStarted
            }
            ServerEvent::ResponseDone { response } => {
                debug!(response = %response.id, status = ?response.status, "realtime response done");
                if self.active_response.as_deref() == Some(response.id.as_str()) {
                    self.active_response = None;
                }
                if !self.emit(BackendEvent::ResponseDone).await {
                    return Flow::ReceiverGone;
                }
                if self.active_response.is_none()
                    && let Some(params) = self.deferred.pop_front()
                {
                    let ev = ClientEvent::ResponseCreate { response: params };
                    if let Err(e) = send(ws, &ev).await {
                        return Flow::Lost(e.into());
                    }
                }
                return Flow::Continue;
            }
            ServerEvent::OutputItemAdded { item, .. } => {
                match item.kind.as_str() {
                    "message" => {
                        self.history_entry(&item.id, Role::Agent);
                        self.playing_item(&item.id);
                    }
                    "function_call" => {
                        if let (Some(call_id), Some(name)) = (item.call_id, item.name) {
                            self.functions.insert(call_id, name);
                        }
                    }
                    _ => {}
                }
                return Flow::Continue;
            }
            ServerEvent::OutputAudioDelta { item_id, delta, .. } => {
                let bytes = match BASE64.decode(delta.as_bytes()) {
                    Ok(b) => b,
                    Err(e) => {
                        warn!(error = %e, "realtime: audio delta is not base64; dropped");
                        return Flow::Continue;
                    }
                };
                if self.silenced.contains(&item_id) {
                    trace!(item = %item_id, "realtime: audio of an interrupted item dropped");
                    return Flow::Continue;
                }
                self.playing_item(&item_id).bytes += bytes.len() as u64;
                match self.audio.call_chunk(bytes, false) {
                    Some(chunk) => self.deliver(&item_id, chunk),
                    None => return Flow::Continue,
                }
            }
            ServerEvent::OutputAudioDone { item_id, .. } => {
                if self.silenced.contains(&item_id) {
                    return Flow::Continue;
                }
                match self.audio.call_chunk(Vec::new(), true) {
                    Some(chunk) => self.deliver(&item_id, chunk),
                    None => return Flow::Continue,
                }
            }
            ServerEvent::OutputAudioTranscriptDelta { delta, .. } => {
                BackendEvent::TranscriptDelta {
                    role: Role::Agent,
                    text: delta,
                }
            }
            ServerEvent::OutputAudioTranscriptDone {
                item_id,
                transcript,
            } => {
                self.history_entry(&item_id, Role::Agent).text = Some(transcript.clone());
                BackendEvent::TranscriptFinal {
                    role: Role::Agent,
                    text: transcript,
                    item_id,
                }
            }
            ServerEvent::FunctionCallArgumentsDone {
                call_id,
                name,
                arguments,
                ..
            } => {
                let name = name
                    .or_else(|| self.functions.get(&call_id).cloned())
                    .unwrap_or_default();
                self.functions.insert(call_id.clone(), name.clone());
                match serde_json::from_str::<serde_json::Value>(&arguments) {
                    Ok(arguments) => BackendEvent::ToolCall {
                        call_id,
                        name,
                        arguments,
                    },
                    Err(e) => {
                        warn!(tool = %name, error = %e, "realtime: tool arguments are not JSON");
                        let output = serde_json::json!({
                            "error": format!("arguments are not valid JSON: {e}")
                        })
                        .to_string();
                        if let Err(e) = self.tool_output(ws, call_id, output, true).await {
                            return Flow::Lost(e.into());
                        }
                        BackendEvent::Error {
                            message: format!("tool {name}: arguments are not valid JSON: {e}"),
                            fatal: false,
                        }
                    }
                }
            }
            ServerEvent::ItemTruncated {
                item_id,
                audio_end_ms,
            } => {
                debug!(item = %item_id, audio_end_ms, "realtime item truncated");
                return Flow::Continue;
            }
            ServerEvent::ItemDeleted { item_id } => {
                debug!(item = %item_id, "realtime item deleted");
                return Flow::Continue;
            }
            ServerEvent::RateLimitsUpdated { rate_limits } => {
                for l in &rate_limits {
                    debug!(name = ?l.name, limit = ?l.limit, remaining = ?l.remaining,
                        reset_seconds = ?l.reset_seconds, "realtime rate limit");
                    if l.remaining == Some(0) {
                        warn!(name = ?l.name, reset_seconds = ?l.reset_seconds,
                            "realtime rate limit exhausted");
                    }
                }
                return Flow::Continue;
            }
            ServerEvent::Other => {
                trace!("realtime: event ignored");
                return Flow::Continue;
            }
        };
        if self.emit(out).await {
            Flow::Continue
        } else {
            Flow::ReceiverGone
        }
    }

    pub(super) async fn on_control(&mut self, c: BackendControl, ws: &mut Ws) -> Flow {
        let respond = !matches!(c, BackendControl::ToolResultNoReply { .. });
        let result = match c {
            BackendControl::Audio(chunk) => {
                if chunk.format != self.audio.call_format() {
                    debug!(got = ?chunk.format, want = ?self.audio.call_format(), "realtime: audio in the wrong format dropped");
                    return Flow::Continue;
                }
                let Some(bytes) = self.audio.wire_bytes(&chunk.data) else {
                    return Flow::Continue;
                };
                let ev = ClientEvent::InputAudioBufferAppend {
                    audio: BASE64.encode(&bytes),
                };
                send(ws, &ev).await
            }
            BackendControl::Interrupt { played_ms } => self.interrupt(ws, played_ms).await,
            BackendControl::ToolResult { call_id, output }
            | BackendControl::ToolResultNoReply { call_id, output } => {
                if !self.functions.contains_key(&call_id) {
                    warn!(call = %call_id, "realtime: result for an unknown tool call dropped");
                    let ok = self
                        .emit(BackendEvent::Error {
                            message: format!("no pending tool call {call_id} (after a reconnect?)"),
                            fatal: false,
                        })
                        .await;
                    return if ok {
                        Flow::Continue
                    } else {
                        Flow::ReceiverGone
                    };
                }
                self.tool_output(ws, call_id, output, respond).await
            }
            BackendControl::CommitTurn => {
                match send(ws, &ClientEvent::InputAudioBufferCommit).await {
                    Ok(()) => self.request_response(ws, None).await,
                    Err(e) => Err(e),
                }
            }
            BackendControl::Say { instructions } => {
                self.request_response(
                    ws,
                    Some(ResponseParams {
                        instructions: Some(instructions),
                    }),
                )
                .await
            }
            BackendControl::Close => return Flow::Stop,
        };
        match result {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::Lost(e.into()),
        }
    }

    /// The entry of `item_id` among the items playing (added at its end if new).
    fn playing_item(&mut self, item_id: &str) -> &mut AudioItem {
        let i = match self.playing.iter().position(|a| a.item_id == item_id) {
            Some(i) => i,
            None => {
                if self.playing.len() == PLAYING_ITEMS {
                    self.playing.pop_front();
                }
                self.playing.push_back(AudioItem {
                    item_id: item_id.to_owned(),
                    bytes: 0,
                    start: self.delivered,
                    delivered: 0,
                });
                self.playing.len() - 1
            }
        };
        &mut self.playing[i]
    }

    /// Counts `chunk` as `item_id`'s audio delivered to the call.
    fn deliver(&mut self, item_id: &str, chunk: crate::agent::backend::AudioChunk) -> BackendEvent {
        let n = chunk.data.len() as u64;
        self.playing_item(item_id).delivered += n;
        self.delivered += n;
        BackendEvent::Audio(chunk)
    }

    /// Barge-in: cancel the response in progress; the item the caller was hearing when
    /// `played_ms` of the delivered audio had played is truncated to what was heard (never
    /// beyond what was received), and the replies queued behind it, never heard, are deleted.
    pub(super) async fn interrupt(
        &mut self,
        ws: &mut Ws,
        played_ms: u64,
    ) -> Result<(), tungstenite::Error> {
        if let Some(id) = &self.active_response {
            send(
                ws,
                &ClientEvent::ResponseCancel {
                    response_id: Some(id.clone()),
                },
            )
            .await?;
        }
        self.audio.reset_down();
        let call = self.audio.call_format();
        let played = call.duration_ms(self.delivered).min(played_ms);
        for item in std::mem::take(&mut self.playing) {
            let start_ms = call.duration_ms(item.start);
            let end_ms = call.duration_ms(item.start + item.delivered);
            let received_ms = self.wire.duration_ms(item.bytes);
            if played >= end_ms && item.delivered > 0 && self.active_response.is_none() {
                // Heard to the end, and no more audio is coming for it.
                continue;
            }
            if self.silenced.len() == SILENCED_ITEMS {
                self.silenced.pop_front();
            }
            self.silenced.push_back(item.item_id.clone());
            let heard_ms = played.saturating_sub(start_ms).min(received_ms);
            if let Some(h) = self.history.iter_mut().find(|h| h.item_id == item.item_id) {
                h.heard = Some(if received_ms == 0 {
                    0.0
                } else {
                    heard_ms as f64 / received_ms as f64
                });
            }
            if played <= start_ms {
                debug!(item = %item.item_id, received_ms, "realtime: deleting a reply never heard");
                send(
                    ws,
                    &ClientEvent::ConversationItemDelete {
                        item_id: item.item_id,
                    },
                )
                .await?;
                continue;
            }
            debug!(item = %item.item_id, heard_ms, received_ms, "realtime: truncating");
            send(
                ws,
                &ClientEvent::ConversationItemTruncate {
                    item_id: item.item_id,
                    content_index: 0,
                    audio_end_ms: heard_ms,
                },
            )
            .await?;
        }
        Ok(())
    }

    pub(super) async fn tool_output(
        &mut self,
        ws: &mut Ws,
        call_id: String,
        output: String,
        respond: bool,
    ) -> Result<(), tungstenite::Error> {
        self.functions.remove(&call_id);
        send(
            ws,
            &ClientEvent::ConversationItemCreate {
                item: Item::FunctionCallOutput { call_id, output },
            },
        )
        .await?;
        if !respond {
            return Ok(());
        }
        self.request_response(ws, None).await
    }

    /// Sends `response.create` now, or after the active response is done.
    pub(super) async fn request_response(
        &mut self,
        ws: &mut Ws,
        params: Option<ResponseParams>,
    ) -> Result<(), tungstenite::Error> {
        if self.active_response.is_some() {
            self.deferred.push_back(params);
            return Ok(());
        }
        send(ws, &ClientEvent::ResponseCreate { response: params }).await
    }

    /// The history entry of `item_id`, created (in arrival order) if new.
    pub(super) fn history_entry(&mut self, item_id: &str, role: Role) -> &mut HistoryEntry {
        let pos = match self.history.iter().position(|h| h.item_id == item_id) {
            Some(p) => p,
            None => {
                self.history.push(HistoryEntry {
                    item_id: item_id.to_owned(),
                    role,
                    text: None,
                    heard: None,
                });
                self.history.len() - 1
            }
        };
        // invariant: `pos` is an index found in, or just pushed to, `history`.
        &mut self.history[pos]
    }
}

pub(super) use crate::agent::ws::close;

pub(super) use crate::agent::text::cut_text;
