//! AI agents on calls: what a realtime agent is configured with, who may reach it, what
//! happens when its backend is down, and the per-call task that runs its tools and writes its
//! transcript.
//!
//! A call to a realtime agent connects to the backend *before* it is answered (the caller
//! hears ringing meanwhile), so an unreachable backend can still be refused with a SIP status
//! ([`Fallback::Reject`]) or answered with a recorded prompt ([`Fallback::Prompt`]). Once the
//! call's media runs, the media worker's [`Bridge`](super::bridge::Bridge) carries the audio
//! and hands everything else to [`run_agent_task`] as [`Notice`]s.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::mpsc;

use super::bridge::Notice;
use super::control::{CallMediaLink, MediaControl};
use super::postcall::CallerMemory;
use super::tools::{self, AgentTools, ToolCallContext, ToolRequest};
use super::{CallCommand, CallTable};
use crate::agent::BackendConfig;
use crate::agent::PlaySpec;
use crate::agent::backend::{AudioFormat, BackendControl, CallContext, HistoryItem};
use crate::records::{Role as RecRole, ToolCallRecord, TranscriptEntry, TranscriptWriter, UnixMs};
use crate::runtime::Commands;
use crate::sdp::{Codec, NegotiatedMedia};
use crate::sip::CallHandle;

/// Capacity of the bridge → agent task queue.
pub const NOTICE_QUEUE: usize = 1024;

/// An AI agent: a realtime (speech-to-speech) or cascaded backend.
#[derive(Debug, Clone, PartialEq)]
pub struct AiAgent {
    /// The backends, in the order they are tried (API keys resolved): the first that
    /// connects answers the call, and when it fails mid-call the next takes over.
    pub backends: Vec<BackendConfig>,
    /// What the caller hears (text and espeak-ng voice) while the next backend connects.
    pub switch_prompt: Option<(String, String)>,
    /// The tools it may call.
    pub tools: AgentTools,
    /// What happens when the backend cannot be reached, or drops for good mid-call.
    pub fallback: Fallback,
    /// The voice chain on its calls, and who decides barge-in and turns.
    pub voice: super::bridge::Voice,
    /// Remember callers across calls (`memory`): `{{memory}}` is filled before the backend
    /// connects, and the summary of the analysis is kept.
    pub memory: bool,
    /// The post-call analysis, if any.
    pub analysis: Option<crate::agent::analysis::AnalysisConfig>,
}

/// What to do when the backend is unreachable before the answer, or lost mid-call.
#[derive(Debug, Clone, PartialEq)]
pub enum Fallback {
    /// Refuse the call with this SIP status (before the answer); mid-call: hang up.
    Reject {
        /// The status code (e.g. 503, 480).
        code: u16,
    },
    /// Answer (or, mid-call, go on) with a prompt, then hang up or transfer.
    Prompt {
        /// The prompt (a WAV file or a tone); `None`: no prompt, go straight to the transfer.
        prompt: Option<PlaySpec>,
        /// Transfer here after the prompt instead of hanging up.
        transfer_to: Option<String>,
    },
}

impl Default for Fallback {
    fn default() -> Self {
        Fallback::Reject { code: 503 }
    }
}

/// Source addresses allowed to reach an agent: IP networks (address and prefix length).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllowList {
    nets: Vec<(IpAddr, u8)>,
}

impl AllowList {
    /// A list of networks. A prefix longer than the address is clamped to the address length.
    pub fn new(nets: impl IntoIterator<Item = (IpAddr, u8)>) -> AllowList {
        AllowList {
            nets: nets
                .into_iter()
                .map(|(ip, p)| (ip, p.min(if ip.is_ipv4() { 32 } else { 128 })))
                .collect(),
        }
    }

    /// Loopback only (`127.0.0.0/8` and `::1`).
    pub fn loopback() -> AllowList {
        AllowList::new([
            (IpAddr::from([127, 0, 0, 0]), 8),
            (IpAddr::from(std::net::Ipv6Addr::LOCALHOST), 128),
        ])
    }

    /// Whether `ip` is in one of the networks (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.nets.iter().any(|(net, prefix)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                u32::from(*n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
                u128::from(*n) & mask == u128::from(a) & mask
            }
            _ => false,
        })
    }

    /// The networks, as `addr/prefix` text (for logs).
    pub fn describe(&self) -> String {
        self.nets
            .iter()
            .map(|(ip, p)| format!("{ip}/{p}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The backend audio format for a negotiated session: G.711 carried untouched, anything else
/// as PCM16 at the media stream's rate (the realtime client resamples).
pub fn call_format(negotiated: &NegotiatedMedia) -> Result<AudioFormat, String> {
    match negotiated.codec.codec {
        Codec::Pcmu => Ok(AudioFormat::Pcmu8k),
        Codec::Pcma => Ok(AudioFormat::Pcma8k),
        _ => crate::media::stream::MediaStream::pcm_rate(negotiated)
            .map(|rate| AudioFormat::Pcm16 { rate })
            .map_err(|e| e.to_string()),
    }
}

/// Who is on the call, for the backend's instructions and the tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallParties {
    /// The record id (tools see it as the call id).
    pub record_id: String,
    /// The agent's name (the caller's memory is per agent).
    pub agent: String,
    /// Caller (user part or number).
    pub caller: String,
    /// Called (user part or number).
    pub called: String,
    /// `inbound` / `outbound`.
    pub direction: &'static str,
    /// Call variables.
    pub variables: BTreeMap<String, String>,
    /// What the agent remembers of the caller (`{{memory}}`), filled in before the backend
    /// connects when the agent has memory.
    pub memory: String,
}

/// Connects the backend for one call (before it is answered).
pub async fn connect(
    agent: &AiAgent,
    parties: &CallParties,
    format: AudioFormat,
) -> Result<crate::agent::backend::BackendHandle, crate::agent::backend::BackendError> {
    let ctx = CallContext {
        caller: parties.caller.clone(),
        called: parties.called.clone(),
        direction: parties.direction.to_owned(),
        variables: parties.variables.clone(),
        memory: parties.memory.clone(),
        call_format: format,
        tools: agent.tools.specs(),
        history: Vec::new(),
    };
    crate::agent::connect(&agent.backends, agent.switch_prompt.clone(), ctx).await
}

/// What the per-call agent task needs.
pub struct AgentTaskSpec {
    /// The call.
    pub call: CallHandle,
    /// The agent.
    pub agent: Arc<AiAgent>,
    /// Who is on the call.
    pub parties: CallParties,
    /// Tool results go here.
    pub control: mpsc::Sender<BackendControl>,
    /// From the bridge.
    pub notices: mpsc::Receiver<Notice>,
    /// The call's media worker (hang-up after goodbye, DTMF).
    pub media: CallMediaLink,
    /// The driver (transfers).
    pub commands: Commands<CallCommand>,
    /// The call table (turns, tool calls).
    pub table: CallTable,
    /// Where the transcript goes.
    pub transcript: Option<PathBuf>,
    /// When the call was answered (transcript and tool times count from here).
    pub origin: Instant,
    /// The caller memory (agents with `memory`).
    pub memory: Option<CallerMemory>,
    /// The records, for the post-call analysis.
    pub records: Option<crate::records::RecordWriter>,
    /// PII redaction of the transcript and the analysis.
    pub redactor: Arc<crate::records::redact::Redactor>,
}

/// Runs until the bridge goes away (the call ended): writes transcript lines, runs tools and
/// returns their results to the backend, and records turns and tool calls in the call table.
pub async fn run_agent_task(spec: AgentTaskSpec) {
    let AgentTaskSpec {
        call,
        agent,
        parties,
        control,
        mut notices,
        media,
        commands,
        table,
        transcript,
        origin,
        memory,
        records,
        redactor,
    } = spec;
    // The conversation as the post-call analysis reads it: final texts, corrections applied.
    let mut conversation: Vec<(Option<String>, HistoryItem)> = Vec::new();
    let mut writer = transcript.and_then(|path| match TranscriptWriter::create(&path) {
        Ok(w) => Some(w.with_redactor(redactor.clone())),
        Err(e) => {
            tracing::warn!(%call, error = %e, "cannot write the transcript");
            None
        }
    });
    let since = |t: Instant| t.saturating_duration_since(origin).as_millis() as u64;
    let ctx = ToolCallContext {
        id: parties.record_id.clone(),
        caller: parties.caller.clone(),
        called: parties.called.clone(),
        direction: parties.direction.to_owned(),
        variables: parties.variables.clone(),
    };
    while let Some(n) = notices.recv().await {
        let now = Instant::now();
        match n {
            Notice::Transcript {
                role,
                text,
                item_id,
                corrects,
            } => {
                let role = match role {
                    crate::agent::backend::Role::Caller => RecRole::Caller,
                    crate::agent::backend::Role::Agent => RecRole::Agent,
                };
                tracing::debug!(%call, ?role, %text, corrects, "transcript");
                if agent.analysis.is_some() {
                    let corrected = corrects
                        .then(|| {
                            conversation
                                .iter_mut()
                                .rev()
                                .find(|(id, _)| id.is_some() && *id == item_id)
                        })
                        .flatten();
                    match corrected {
                        Some((_, item)) => item.text = text.clone(),
                        None => conversation.push((
                            item_id.clone(),
                            HistoryItem {
                                role: match role {
                                    RecRole::Caller => crate::agent::backend::Role::Caller,
                                    _ => crate::agent::backend::Role::Agent,
                                },
                                text: text.clone(),
                            },
                        )),
                    }
                }
                append(&mut writer, since(now), role, text, item_id, corrects);
            }
            Notice::System(text) => {
                append(&mut writer, since(now), RecRole::System, text, None, false)
            }
            Notice::Switched(s) => {
                tracing::warn!(%call, from = %s.from, to = %s.to, reason = %s.reason, "switched to the next backend");
                append(
                    &mut writer,
                    since(now),
                    RecRole::System,
                    format!("backend switched from {} to {}: {}", s.from, s.to, s.reason),
                    None,
                    false,
                );
                table.update(call, |i| i.backend_switches.push(s));
            }
            Notice::Turn(t) => {
                super::metrics::Metrics::global().turn(&t);
                table.update(call, |i| i.turns.push(t));
            }
            Notice::ToolCall {
                call_id,
                name,
                arguments,
            } => {
                append(
                    &mut writer,
                    since(now),
                    RecRole::System,
                    format!("tool call {name} {arguments}"),
                    None,
                    false,
                );
                let job = ToolJob {
                    call,
                    agent: agent.clone(),
                    ctx: ctx.clone(),
                    control: control.clone(),
                    media: media.clone(),
                    commands: commands.clone(),
                    table: table.clone(),
                    started_ms: since(now),
                    memory: memory.clone(),
                    parties: parties.clone(),
                };
                // Tools run concurrently: a slow HTTP tool must not hold up transcripts.
                tokio::spawn(job.run(call_id, name, arguments));
            }
        }
    }
    if let Some(w) = writer
        && let Err(e) = w.close()
    {
        tracing::warn!(%call, error = %e, "transcript not closed cleanly");
    }
    if agent.analysis.is_some() {
        let conversation = conversation.into_iter().map(|(_, item)| item).collect();
        super::postcall::analyze_call(agent, parties, conversation, memory, records, redactor)
            .await;
    }
}

struct ToolJob {
    call: CallHandle,
    agent: Arc<AiAgent>,
    ctx: ToolCallContext,
    control: mpsc::Sender<BackendControl>,
    media: CallMediaLink,
    commands: Commands<CallCommand>,
    table: CallTable,
    started_ms: u64,
    memory: Option<CallerMemory>,
    parties: CallParties,
}

impl ToolJob {
    async fn run(self, call_id: String, name: String, arguments: serde_json::Value) {
        let call = self.call;
        let t0 = Instant::now();
        let (result, reply, after) =
            match tools::parse_request(&self.agent.tools, &name, &arguments) {
                Err(e) => (Err(e.to_string()), true, None),
                Ok(req) => self.execute(req, &arguments).await,
            };
        let output = match &result {
            Ok(out) => out.clone(),
            Err(e) => serde_json::json!({ "error": e }).to_string(),
        };
        tracing::info!(%call, tool = %name, ok = result.is_ok(), "tool call");
        let m = super::metrics::Metrics::global();
        super::metrics::Metrics::inc(&m.tool_calls);
        if result.is_err() {
            super::metrics::Metrics::inc(&m.tool_errors);
        }
        let control = if reply {
            BackendControl::ToolResult {
                call_id,
                output: output.clone(),
            }
        } else {
            BackendControl::ToolResultNoReply {
                call_id,
                output: output.clone(),
            }
        };
        if self.control.send(control).await.is_err() {
            tracing::debug!(%call, tool = %name, "backend gone before the tool result");
        }
        // After the result, so that the conversation has it before any goodbye is asked for.
        if let Some(m) = after
            && self.media.try_send(m).is_err()
        {
            tracing::warn!(%call, tool = %name, "the media worker is busy: tool action dropped");
        }
        let record = ToolCallRecord {
            name,
            arguments: arguments.to_string(),
            output: result.as_ref().ok().cloned(),
            error: result.err(),
            started_ms: self.started_ms,
            duration_ms: t0.elapsed().as_millis() as u64,
        };
        self.table.update(call, |i| i.tool_calls.push(record));
    }

    /// Runs a parsed request: the output (or error), whether the backend should respond to
    /// it (not after a hang-up: the goodbye is already said or asked for), and what to tell
    /// the media once the result is sent.
    async fn execute(
        &self,
        req: ToolRequest,
        arguments: &serde_json::Value,
    ) -> (Result<String, String>, bool, Option<MediaControl>) {
        let (result, reply) = match req {
            ToolRequest::HangUp { reason } => {
                tracing::info!(call = %self.call, reason = reason.as_deref().unwrap_or(""), "the agent hangs up");
                return (
                    Ok(
                        serde_json::json!({ "status": "ending the call after your goodbye" })
                            .to_string(),
                    ),
                    false,
                    Some(MediaControl::AgentHangup),
                );
            }
            ToolRequest::SendDtmf { digits } => {
                let text: String = digits.iter().map(|d| d.as_char()).collect();
                // Through the call manager, which sends them the call's way (its trunk's
                // `dtmf`: RFC 4733, INFO or in-band).
                let (tx, rx) = tokio::sync::oneshot::channel();
                let cmd = CallCommand::SendDtmf {
                    call: self.call,
                    digits,
                    method: None,
                    reply: tx,
                };
                if self.commands.send(cmd).await.is_err() {
                    return (Err("voxline is shutting down".into()), true, None);
                }
                match rx.await {
                    Ok(Ok(())) => (Ok(serde_json::json!({ "sent": text }).to_string()), true),
                    Ok(Err(e)) => (Err(e.to_string()), true),
                    Err(_) => (Err("voxline is shutting down".into()), true),
                }
            }
            ToolRequest::Transfer { uri } => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let cmd = CallCommand::Transfer {
                    call: self.call,
                    target: uri.clone(),
                    reply: tx,
                };
                if self.commands.send(cmd).await.is_err() {
                    return (Err("voxline is shutting down".into()), true, None);
                }
                match rx.await {
                    Ok(Ok(outcome)) => (
                        Ok(serde_json::json!({ "transferred": true, "target": uri, "status": outcome.status })
                            .to_string()),
                        // The call is being handed over: nothing more to say.
                        false,
                    ),
                    Ok(Err(e)) => (
                        Err(format!("transfer to {uri} failed: {e}; the call is still yours")),
                        true,
                    ),
                    Err(_) => (Err("the call ended during the transfer".into()), true),
                }
            }
            ToolRequest::Http(name) => {
                let Some(tool) = self.agent.tools.http_tool(&name) else {
                    return (Err(format!("no tool {name}")), true, None);
                };
                let client = match http_client() {
                    Ok(c) => c,
                    Err(e) => return (Err(e.to_string()), true, None),
                };
                match tools::run_http(client, tool, &self.ctx, arguments).await {
                    Ok(out) => (Ok(out), true),
                    Err(e) => (Err(e.to_string()), true),
                }
            }
            ToolRequest::Remember { fact } => match &self.memory {
                Some(m) => match m.note(&self.parties, fact.clone()).await {
                    Ok(()) => (
                        Ok(serde_json::json!({ "remembered": fact }).to_string()),
                        true,
                    ),
                    Err(e) => {
                        tracing::error!(call = %self.call, error = %e, "a fact was not stored");
                        (Err("the fact could not be stored".into()), true)
                    }
                },
                None => (Err("voxline keeps no records, so no memory".into()), true),
            },
            ToolRequest::Unknown(name) => (Err(format!("unknown tool {name}")), true),
        };
        (result, reply, None)
    }
}

/// One HTTP client for all tool calls and analyses (connection reuse).
pub(super) fn http_client() -> Result<&'static reqwest::Client, tools::ToolError> {
    static CLIENT: OnceLock<Result<reqwest::Client, tools::ToolError>> = OnceLock::new();
    CLIENT
        .get_or_init(tools::http_client)
        .as_ref()
        .map_err(Clone::clone)
}

fn append(
    writer: &mut Option<TranscriptWriter>,
    t_ms: u64,
    role: RecRole,
    text: String,
    item_id: Option<String>,
    corrects: bool,
) {
    let Some(w) = writer.as_mut() else {
        return;
    };
    let entry = TranscriptEntry {
        t_ms,
        at: UnixMs::now(),
        role,
        text,
        is_final: true,
        item_id,
        corrects,
    };
    if let Err(e) = w.append(&entry) {
        tracing::warn!(error = %e, "transcript line not written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_networks() {
        let l = AllowList::new([
            ("10.0.0.0".parse().unwrap(), 8),
            ("2001:db8::".parse().unwrap(), 32),
            ("192.0.2.7".parse().unwrap(), 32),
        ]);
        assert!(l.contains("10.200.1.1".parse().unwrap()));
        assert!(!l.contains("11.0.0.1".parse().unwrap()));
        assert!(l.contains("192.0.2.7".parse().unwrap()));
        assert!(!l.contains("192.0.2.8".parse().unwrap()));
        assert!(l.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!l.contains("2001:db9::1".parse().unwrap()));
        assert!(l.contains("::ffff:10.1.2.3".parse().unwrap()));
        let lo = AllowList::loopback();
        assert!(lo.contains("127.0.0.1".parse().unwrap()));
        assert!(lo.contains("::1".parse().unwrap()));
        assert!(!lo.contains("192.168.1.1".parse().unwrap()));
        let any = AllowList::new([("0.0.0.0".parse().unwrap(), 0)]);
        assert!(any.contains("203.0.113.9".parse().unwrap()));
    }
}
