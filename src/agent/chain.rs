//! Fallback between backends in the middle of a call: an agent lists backends in order (for
//! example realtime, then cascaded); when the one in use fails for good, the next one takes
//! over the same call with the conversation so far.
//!
//! The chain is itself a backend behind the [`backend`](super::backend) seam: one task holds
//! the backend in use, passes the call layer's commands to it and its events back, and keeps
//! the conversation (the final transcripts, corrected by barge-ins). A backend fails for good
//! when it reports a fatal [`BackendEvent::Error`] or closes without being asked to (its own
//! reconnection has already been tried by then). The chain then:
//!
//! 1. ends the response that was playing (the call layer stops waiting for it) and forgets
//!    the failed backend's tool calls (their results would name calls the next backend never
//!    made);
//! 2. says the agent's switch prompt ("One moment, please.", espeak-ng on this machine), the
//!    one thing the caller hears while
//! 3. it connects the next backend with [`CallContext::history`] holding the conversation, so it
//!    goes on where the last one stopped (a realtime backend gets it as conversation items, a
//!    cascaded one as chat history);
//!    If the caller spoke last (the failed backend never answered), the new one is asked to
//!    answer now ([`ANSWER_LAST`]).
//! 4. reports [`BackendEvent::Switched`], which the call layer writes into the transcript,
//!    the call record and the metrics.
//!
//! When the last backend fails too, the chain reports the fatal error and closes: the
//! agent's final fallback (a prompt, a transfer or a hang-up) takes over.

use std::collections::HashSet;

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::BackendConfig;
use super::backend::{
    BackendControl, BackendError, BackendEvent, BackendHandle, CONTROL_CHANNEL_CAPACITY,
    CallContext, EVENT_CHANNEL_CAPACITY, HistoryItem, Role,
};

/// Connects the first backend of `chain` that answers (before the call is answered, a
/// failing backend is skipped), then starts the chain's task. Errors: the last backend's
/// error when none connects, or [`BackendError::Config`] for an empty chain.
pub async fn connect(
    chain: Vec<BackendConfig>,
    switch_prompt: Option<(String, String)>,
    ctx: CallContext,
) -> Result<BackendHandle, BackendError> {
    let mut last = BackendError::Config("no backend configured".into());
    for (i, cfg) in chain.iter().enumerate() {
        match super::connect_one(cfg, ctx.clone()).await {
            Ok(inner) => {
                if i > 0 {
                    info!(
                        backend = cfg.kind(),
                        "the first backends are down: using a later one"
                    );
                }
                let (control_tx, control_rx) = mpsc::channel(CONTROL_CHANNEL_CAPACITY);
                let (event_tx, event_rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
                let task = Chain {
                    chain,
                    switch_prompt,
                    at: i,
                    ctx,
                    events: event_tx,
                    history: Vec::new(),
                    responding: false,
                    tools: HashSet::new(),
                };
                tokio::spawn(task.run(inner, control_rx));
                return Ok(BackendHandle {
                    control: control_tx,
                    events: event_rx,
                });
            }
            Err(e) => {
                warn!(backend = cfg.kind(), error = %e, "backend unreachable");
                last = e;
            }
        }
    }
    Err(last)
}

/// What a backend that takes over is asked when the caller's last words got no answer.
pub const ANSWER_LAST: &str =
    "Continue the conversation: answer the caller's last message now, briefly.";

struct Chain {
    chain: Vec<BackendConfig>,
    /// Said (text, espeak-ng voice) while the next backend connects.
    switch_prompt: Option<(String, String)>,
    /// The backend in use.
    at: usize,
    ctx: CallContext,
    events: mpsc::Sender<BackendEvent>,
    /// The conversation so far: (role, item id, text).
    history: Vec<(Role, String, String)>,
    /// A response is in progress (between `ResponseStarted` and `ResponseDone`).
    responding: bool,
    /// Tool calls of the backend in use whose results are due.
    tools: HashSet<String>,
}

enum Next {
    Continue,
    /// The call layer closed the session (or went away).
    Stop,
    /// The backend in use failed for good.
    Failed(String),
}

impl Chain {
    async fn run(mut self, mut inner: BackendHandle, mut control: mpsc::Receiver<BackendControl>) {
        loop {
            let next = tokio::select! {
                c = control.recv() => match c {
                    None | Some(BackendControl::Close) => {
                        let _ = inner.control.send(BackendControl::Close).await;
                        Next::Stop
                    }
                    Some(c) => self.forward(&inner, c).await,
                },
                ev = inner.events.recv() => match ev {
                    None => Next::Failed("the backend stopped".into()),
                    Some(ev) => self.on_event(ev).await,
                },
            };
            match next {
                Next::Continue => {}
                Next::Stop => {
                    // Pass on what the backend still says while closing (its `Closed`).
                    while let Some(ev) = inner.events.recv().await {
                        let closed = ev == BackendEvent::Closed;
                        let _ = self.events.send(ev).await;
                        if closed {
                            return;
                        }
                    }
                    let _ = self.events.send(BackendEvent::Closed).await;
                    return;
                }
                Next::Failed(reason) => match self.switch(&reason).await {
                    Some(h) => inner = h,
                    None => {
                        let _ = self
                            .events
                            .send(BackendEvent::Error {
                                message: reason,
                                fatal: true,
                            })
                            .await;
                        let _ = self.events.send(BackendEvent::Closed).await;
                        return;
                    }
                },
            }
        }
    }

    async fn forward(&mut self, inner: &BackendHandle, c: BackendControl) -> Next {
        if let BackendControl::ToolResult { call_id, .. }
        | BackendControl::ToolResultNoReply { call_id, .. } = &c
            && !self.tools.remove(call_id)
        {
            // A call the failed backend made: the one in use never heard of it.
            warn!(call = %call_id, "tool result for a backend that is gone: dropped");
            return Next::Continue;
        }
        let audio = matches!(c, BackendControl::Audio(_));
        let sent = if audio {
            // Audio must never block a media tick: a full queue drops the chunk.
            match inner.control.try_send(c) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        } else {
            inner.control.send(c).await.is_ok()
        };
        if sent {
            Next::Continue
        } else {
            Next::Failed("the backend stopped taking commands".into())
        }
    }

    async fn on_event(&mut self, ev: BackendEvent) -> Next {
        match &ev {
            BackendEvent::Error {
                fatal: true,
                message,
            } => {
                return Next::Failed(message.clone());
            }
            BackendEvent::Closed => return Next::Failed("the backend closed".into()),
            BackendEvent::ResponseStarted => self.responding = true,
            BackendEvent::ResponseDone => self.responding = false,
            BackendEvent::ToolCall { call_id, .. } => {
                self.tools.insert(call_id.clone());
            }
            BackendEvent::TranscriptFinal {
                role,
                text,
                item_id,
            }
            | BackendEvent::TranscriptCorrected {
                role,
                text,
                item_id,
            } => {
                // A correction replaces the item's text (the reply as heard).
                match self
                    .history
                    .iter()
                    .position(|(r, id, _)| r == role && id == item_id)
                {
                    Some(i) if text.is_empty() => {
                        self.history.remove(i);
                    }
                    Some(i) => {
                        if let Some(h) = self.history.get_mut(i) {
                            h.2 = text.clone();
                        }
                    }
                    None if !text.is_empty() => {
                        self.history.push((*role, item_id.clone(), text.clone()));
                    }
                    None => {}
                }
            }
            _ => {}
        }
        if self.events.send(ev).await.is_err() {
            Next::Stop
        } else {
            Next::Continue
        }
    }

    /// The short local prompt while switching (a reply of its own: it can be interrupted).
    async fn say_switch_prompt(&mut self) {
        let Some((text, voice)) = self.switch_prompt.clone() else {
            return;
        };
        match super::cascaded::tts::speak_local(&voice, &text, self.ctx.call_format).await {
            Ok(data) => {
                let chunk = super::backend::AudioChunk {
                    format: self.ctx.call_format,
                    data,
                };
                for ev in [
                    BackendEvent::ResponseStarted,
                    BackendEvent::Audio(chunk),
                    BackendEvent::ResponseDone,
                ] {
                    let _ = self.events.send(ev).await;
                }
            }
            Err(e) => warn!(error = %e, "the switch prompt cannot be spoken"),
        }
    }

    /// Connects the next backend that answers, with the conversation so far.
    async fn switch(&mut self, reason: &str) -> Option<BackendHandle> {
        if self.responding {
            self.responding = false;
            let _ = self.events.send(BackendEvent::ResponseDone).await;
        }
        self.tools.clear();
        let from = self.chain.get(self.at).map_or("?", BackendConfig::kind);
        let mut ctx = self.ctx.clone();
        ctx.history = self
            .history
            .iter()
            .map(|(role, _, text)| HistoryItem {
                role: *role,
                text: text.clone(),
            })
            .collect();
        if self.at + 1 < self.chain.len() {
            self.say_switch_prompt().await;
        }
        while self.at + 1 < self.chain.len() {
            self.at += 1;
            let cfg = &self.chain[self.at];
            let to = cfg.kind();
            warn!(from, to, %reason, "backend failed mid-call: switching");
            match super::connect_one(cfg, ctx.clone()).await {
                Ok(h) => {
                    // The caller spoke last and the failed backend never answered: the next
                    // one answers now rather than wait for the caller to speak again.
                    if ctx.history.last().is_some_and(|h| h.role == Role::Caller) {
                        let say = BackendControl::Say {
                            instructions: ANSWER_LAST.to_owned(),
                        };
                        if h.control.send(say).await.is_err() {
                            warn!(backend = to, "the next backend closed at once");
                        }
                    }
                    let ev = BackendEvent::Switched {
                        from: from.to_owned(),
                        to: to.to_owned(),
                        reason: reason.to_owned(),
                    };
                    if self.events.send(ev).await.is_err() {
                        return None;
                    }
                    return Some(h);
                }
                Err(e) => warn!(backend = to, error = %e, "the next backend is unreachable too"),
            }
        }
        None
    }
}
