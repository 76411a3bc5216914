//! A realtime call's AI backend: connecting it before the answer, and what happens when it
//! is ready or cannot be reached.

use std::time::Instant;

use crate::sip::{CallHandle, SipStack};

use super::DEFAULT_RETRY_AFTER_S;
use super::manager::CallManager;
use super::{AgentKind, CallCommand};
use super::{agent, media, metrics};

/// Where a realtime call's backend connection stands.
#[derive(Debug)]
pub(super) enum BackendState {
    /// Not a realtime call, or not connecting yet.
    Idle,
    /// Connecting (the answer waits for it).
    Connecting,
    /// Connected; the media takes it when it starts.
    Ready(Box<media::BackendSetup>),
    /// The backend could not be reached; the fallback prompt plays.
    Failed,
    /// The media took the connection.
    Taken,
}

impl CallManager {
    /// Starts connecting a realtime call's backend; false if the call has no realtime agent,
    /// no negotiated media or no runtime.
    pub(super) fn connect_backend(&mut self, call: CallHandle) -> bool {
        let Some(commands) = self.commands.clone() else {
            return false;
        };
        let record_id = self.record_id(call);
        let Some(c) = self.calls.get_mut(&call) else {
            return false;
        };
        let (AgentKind::Ai(ra), Some(m)) = (&c.agent.kind, &c.media) else {
            return false;
        };
        let format = match agent::call_format(m) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(%call, error = %e, "no backend format for this codec");
                c.backend = BackendState::Failed;
                return false;
            }
        };
        c.backend = BackendState::Connecting;
        let ra = ra.clone();
        let mut parties = c.call_parties(record_id);
        let memory = self.memory.clone().filter(|_| ra.memory);
        tokio::spawn(async move {
            if let Some(m) = memory {
                parties.memory = m.recall(&parties.agent, &parties.caller).await;
            }
            let result = agent::connect(&ra, &parties, format)
                .await
                .map(|h| (h, format));
            let _ = commands
                .send(CallCommand::BackendReady { call, result })
                .await;
        });
        true
    }

    /// The backend connected or failed: answer, start the media, or fall back.
    pub(super) fn on_backend_ready(
        &mut self,
        now: Instant,
        stack: &mut SipStack,
        call: CallHandle,
        result: Result<
            (
                crate::agent::backend::BackendHandle,
                crate::agent::backend::AudioFormat,
            ),
            crate::agent::backend::BackendError,
        >,
    ) {
        let transcripts = self.media.transcripts_dir.clone();
        let record_id = self.record_id(call);
        let Some(c) = self.calls.get_mut(&call) else {
            // The call ended meanwhile; dropping the handle closes the session.
            return;
        };
        let fallback = match &c.agent.kind {
            AgentKind::Ai(ra) => ra.fallback.clone(),
            _ => return,
        };
        match result {
            Ok((handle, format)) => {
                tracing::info!(%call, ?format, "AI backend connected");
                c.backend = BackendState::Ready(Box::new(media::BackendSetup {
                    handle,
                    format,
                    parties: c.call_parties(record_id.clone()),
                    transcript: transcripts.map(|d| d.join(format!("{record_id}.jsonl"))),
                    memory: self.memory.clone(),
                    records: self.records.clone(),
                    redactor: self.redactor.clone(),
                }));
            }
            Err(e) => {
                tracing::warn!(%call, error = %e, "AI backend unreachable: falling back");
                metrics::Metrics::inc(&metrics::Metrics::global().backend_failures);
                match fallback {
                    agent::Fallback::Reject { code } => {
                        c.backend = BackendState::Failed;
                        if c.answered {
                            let _ = stack.hangup(now, call);
                        } else {
                            // A rate-limited backend: tell the caller's side when to retry.
                            let headers = match &e {
                                crate::agent::backend::BackendError::RateLimited {
                                    retry_after_s,
                                } => vec![(
                                    "Retry-After",
                                    retry_after_s.unwrap_or(DEFAULT_RETRY_AFTER_S).to_string(),
                                )],
                                _ => Vec::new(),
                            };
                            let _ = stack.respond_with(
                                now,
                                call,
                                code,
                                Some("AI backend unavailable"),
                                headers,
                                None,
                            );
                        }
                        return;
                    }
                    agent::Fallback::Prompt { .. } => c.backend = BackendState::Failed,
                }
            }
        }
        if c.answered {
            self.start_media(call);
        } else if c.answer_at.is_none() {
            let body = c.pending_answer.take();
            self.answer(now, stack, call, body);
        }
    }
}
