//! Call orchestration: joins a SIP dialog, its SDP negotiation and the agent that answers it.
//!
//! [`CallManager`] reacts to [`SipEvent`]s, answers and places calls through the [`SipStack`]
//! it is handed, and keeps its own deadlines (ring time, hang-up time) that the runtime polls
//! with [`CallManager::poll_timeout`]. It reads no clock itself.

pub mod agent;
pub mod bridge;
pub mod control;
pub mod media;
pub mod metrics;
mod service;
mod tick;
pub mod tools;
mod transfer;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::sdp::{CodecPrefs, Direction, LocalMedia, NegotiatedMedia, SdpSession};
use crate::sip::{Body, CallHandle, EndReason, IncomingCall, SipEvent, SipStack};

pub use service::{CallService, DialError, DialRequest, TrunkSpec};
pub use service::{TRANSFER_TIMEOUT, TransferRequestError};
pub use transfer::{TransferError, TransferOutcome, TransferTarget};

use crate::runtime::rtp::{RtpPortError, RtpPorts, RtpSockets};
use crate::runtime::{CallHandler, Commands};

/// The content type of SDP bodies (RFC 4566 §8.1).
pub const SDP_CONTENT_TYPE: &str = "application/sdp";

/// Which built-in agent answers the audio.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentKind {
    /// Answers and holds: sends silence, listens.
    Hold,
    /// Plays the caller's audio back after `delay`.
    Echo {
        /// Extra delay.
        delay: Duration,
    },
    /// Plays a file or a tone, then hangs up (or loops).
    Play(crate::agent::PlaySpec),
    /// A realtime AI backend (OpenAI Realtime or compatible).
    Realtime(Arc<agent::RealtimeAgent>),
}

/// An agent as the call layer uses it: how it answers and what it does with the audio.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSpec {
    /// The agent's name (for logs and the API).
    pub name: String,
    /// Ring this long before answering.
    pub answer_after: Duration,
    /// Hang up this long after the call is confirmed, if set.
    pub hangup_after: Option<Duration>,
    /// What answers the audio.
    pub kind: AgentKind,
    /// Record the call (two-channel WAV).
    pub record: bool,
    /// Variables of this call for the agent's instruction templates (`{{var.NAME}}`): set by
    /// `POST /calls` for an outbound call; empty otherwise.
    pub variables: std::collections::BTreeMap<String, String>,
    /// Sources allowed to call this agent (`None`: anyone). A caller from elsewhere gets 403.
    pub allow_from: Option<agent::AllowList>,
    /// The jitter buffer's minimum delay on this agent's calls, if not the media default.
    pub jitter_min: Option<Duration>,
}

impl AgentSpec {
    /// The built-in `hold` agent: answers at once and holds the call until the far end hangs up.
    pub fn hold() -> Self {
        AgentSpec {
            name: "hold".into(),
            answer_after: Duration::ZERO,
            hangup_after: None,
            kind: AgentKind::Hold,
            record: false,
            variables: Default::default(),
            allow_from: None,
            jitter_min: None,
        }
    }

    /// The built-in `echo` agent.
    pub fn echo() -> Self {
        AgentSpec {
            name: "echo".into(),
            kind: AgentKind::Echo {
                delay: Duration::ZERO,
            },
            ..AgentSpec::hold()
        }
    }
}

/// Routing of called numbers to agents: first match wins.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    entries: Vec<(String, AgentSpec)>,
}

impl Routes {
    /// Adds a route: an exact user, a prefix ending in `*`, or `*`.
    pub fn push(&mut self, pattern: impl Into<String>, agent: AgentSpec) {
        self.entries.push((pattern.into(), agent));
    }

    /// The agent for a called user part (empty for none).
    pub fn agent_for(&self, called: &str) -> Option<&AgentSpec> {
        self.entries
            .iter()
            .find(|(p, _)| pattern_matches(p, called))
            .map(|(_, a)| a)
    }
}

fn pattern_matches(pattern: &str, called: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => called.starts_with(prefix),
        None => pattern == called,
    }
}

/// Media settings the call layer offers and accepts.
#[derive(Debug, Clone)]
pub struct MediaPolicy {
    /// Codec preference.
    pub codecs: CodecPrefs,
    /// Offer/accept telephone-event.
    pub telephone_event: bool,
    /// Packet time.
    pub ptime_ms: u32,
    /// Offer/accept rtcp-mux.
    pub rtcp_mux: bool,
    /// An external IP for the SDP `c=` line (NAT), overriding the signalling address.
    pub external_ip: Option<IpAddr>,
    /// Give up (CANCEL) on an outbound call not answered within this time.
    pub no_answer_timeout: Option<Duration>,
    /// Hang up when no RTP arrives for this long.
    pub rtp_timeout: Option<Duration>,
    /// Jitter-buffer bounds (min, max).
    pub jitter: (Duration, Duration),
    /// Where recordings go (`data_dir/recordings`); `None` disables recording.
    pub recordings_dir: Option<std::path::PathBuf>,
    /// Where AI agents' transcripts go (`data_dir/transcripts`); `None`: no transcripts.
    pub transcripts_dir: Option<std::path::PathBuf>,
}

impl Default for MediaPolicy {
    fn default() -> Self {
        MediaPolicy {
            codecs: CodecPrefs::default(),
            telephone_event: true,
            ptime_ms: 20,
            rtcp_mux: true,
            external_ip: None,
            no_answer_timeout: Some(Duration::from_secs(60)),
            rtp_timeout: Some(Duration::from_secs(30)),
            jitter: (Duration::from_millis(20), Duration::from_millis(200)),
            recordings_dir: None,
            transcripts_dir: None,
        }
    }
}

/// A call as shown by the HTTP API.
#[derive(Debug, Clone, Serialize)]
pub struct CallInfo {
    /// The stack's handle number.
    pub id: u64,
    /// The id of the call's record in the database (`{prefix}-{id}`), usable with
    /// `GET /calls/{record_id}` after the call left this table.
    pub record_id: String,
    /// SIP Call-ID.
    pub call_id: String,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// From / caller.
    pub from: String,
    /// To / called.
    pub to: String,
    /// The agent.
    pub agent: String,
    /// `ringing`, `answered`, `ended`.
    pub state: &'static str,
    /// The negotiated codec, once known.
    pub codec: Option<String>,
    /// Whether the peer has put us on hold.
    pub on_hold: bool,
    /// Seconds since the epoch when the call started.
    pub started_at: f64,
    /// Seconds since the epoch when it was answered.
    pub answered_at: Option<f64>,
    /// Seconds since the epoch when it ended.
    pub ended_at: Option<f64>,
    /// Why it ended.
    pub end_reason: Option<String>,
    /// DTMF digits received, in order.
    pub dtmf: Vec<String>,
    /// The recording's path, if the call is recorded.
    pub recording: Option<String>,
    /// Media statistics (updated every second while the call runs).
    pub media: Option<crate::media::stream::MediaStats>,
    /// The AI agent's transcript file, if it writes one.
    pub transcript: Option<String>,
    /// Latency figures of each conversational turn (AI agents).
    pub turns: Vec<crate::records::TurnLatency>,
    /// Tools the AI agent called.
    pub tool_calls: Vec<crate::records::ToolCallRecord>,
    /// The last blind transfer: `"TARGET -> STATUS"` (`"sip:200@pbx -> 200"`), `-> pending`
    /// while waiting, `-> call ended` if the call ended first.
    pub transfer: Option<String>,
}

/// The table of calls shared with the HTTP API. The lock is only held for short, synchronous
/// updates and reads, never across an `.await`.
pub type CallTable = Arc<Mutex<HashMap<u64, CallInfo>>>;

/// How an outbound call ended, reported to whoever placed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundResult {
    /// Whether it was answered.
    pub answered: bool,
    /// Why it ended.
    pub reason: EndReason,
}

struct CallState {
    agent: AgentSpec,
    sdp: SdpSession,
    local: LocalMedia,
    /// The bound RTP/RTCP sockets until the media task takes them (held so the ports in the
    /// SDP stay ours).
    sockets: Option<RtpSockets>,
    /// The media task's control queue, once it runs.
    media_tx: Option<media::CallMediaHandle>,
    /// SIP Call-ID (names the recording).
    call_id: String,
    answer_at: Option<Instant>,
    hangup_at: Option<Instant>,
    pending_answer: Option<Body>,
    answered: bool,
    media: Option<NegotiatedMedia>,
    notify: Option<tokio::sync::oneshot::Sender<OutboundResult>>,
    /// A blind transfer waiting for its outcome.
    transfer: Option<transfer::PendingTransfer>,
    /// Outbound: the INVITE as sent and the next targets to try on 408/503 (RFC 3263 §4.3).
    failover: Option<(crate::sip::OutgoingCall, Vec<crate::sip::Peer>)>,
    /// A realtime agent's backend connection.
    backend: BackendState,
    /// Caller and called as the agent sees them.
    parties: (String, String),
    /// The trunk the call came from or went out through.
    trunk: Option<String>,
    /// How key presses are sent when no method is asked for (the trunk's `dtmf`).
    dtmf: DtmfSendMethod,
}

impl CallState {
    /// Who is on the call, as the agent and its tools see it.
    fn call_parties(&self, record_id: String) -> agent::CallParties {
        agent::CallParties {
            record_id,
            caller: self.parties.0.clone(),
            called: self.parties.1.clone(),
            // Only outbound calls carry a failover plan.
            direction: if self.failover.is_some() {
                "outbound"
            } else {
                "inbound"
            },
            variables: self.agent.variables.clone(),
        }
    }
}

/// Where a realtime call's backend connection stands.
#[derive(Debug)]
enum BackendState {
    /// Not a realtime call, or not connecting yet.
    Idle,
    /// Connecting (the answer waits for it).
    Connecting,
    /// Connected; the media takes it when it starts.
    Ready(media::BackendSetup),
    /// The backend could not be reached; the fallback prompt plays.
    Failed,
    /// The media took the connection.
    Taken,
}

/// Owns the per-call state of every call and answers them.
pub struct CallManager {
    routes: Routes,
    media: MediaPolicy,
    ports: RtpPorts,
    calls: HashMap<CallHandle, CallState>,
    table: CallTable,
    ended_history: usize,
    commands: Option<Commands<CallCommand>>,
    /// The media workers, once a runtime is attached.
    media_pool: Option<media::CallMediaPool>,
    /// Where call records go (SQLite), if enabled.
    records: Option<crate::records::RecordWriter>,
    /// Makes record ids unique across restarts: the process start time in Unix seconds.
    record_prefix: u64,
    /// Per-trunk call settings, in configuration order.
    trunks: Vec<TrunkPolicy>,
}

/// A trunk's call settings, for the calls that come from it or go out through it.
#[derive(Debug, Clone)]
pub struct TrunkPolicy {
    /// The trunk's name (an outbound call names its trunk).
    pub name: String,
    /// Sources whose calls belong to it; the first trunk that matches a call's source wins.
    pub sources: agent::AllowList,
    /// The codecs it offers and accepts, most preferred first.
    pub codecs: CodecPrefs,
    /// How key presses are sent when the API or the agent's tool names no method. Only
    /// [`DtmfSendMethod::Rfc4733`] offers and accepts `telephone-event` (with the media
    /// policy's `telephone_event`); the others leave it out of the SDP, so the trunk sends
    /// its digits the same way (or in-band).
    pub dtmf: DtmfSendMethod,
    /// The SIP extensions (session timers, 100rel) its calls use.
    pub sip: crate::sip::CallOptions,
}

/// Commands for the call layer (from the API, the CLI and the call layer's own tasks).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a dial is rare; boxing buys nothing measurable
pub enum CallCommand {
    /// Place a call to resolved peers (tried in order on 408/503).
    Dial {
        /// The INVITE to send to the first peer.
        spec: crate::sip::OutgoingCall,
        /// The remaining peers.
        failover: Vec<crate::sip::Peer>,
        /// The agent.
        agent: AgentSpec,
        /// The trunk the call goes through, by name: its media settings apply.
        trunk: Option<String>,
        /// Learns how the call ended.
        notify: tokio::sync::oneshot::Sender<OutboundResult>,
        /// Gets the handle.
        reply: tokio::sync::oneshot::Sender<Result<CallHandle, RtpPortError>>,
    },
    /// Hang up a call.
    Hangup {
        /// Which.
        call: CallHandle,
        /// Whether it existed.
        reply: tokio::sync::oneshot::Sender<bool>,
    },
    /// A call's media task asks to end the call (agent finished, RTP timeout).
    MediaHangup {
        /// Which.
        call: CallHandle,
        /// Why (for the log).
        reason: String,
    },
    /// A realtime call's backend connected, or failed to.
    BackendReady {
        /// Which.
        call: CallHandle,
        /// The connection and its audio format, or why not.
        result: Result<
            (
                crate::agent::backend::BackendHandle,
                crate::agent::backend::AudioFormat,
            ),
            crate::agent::backend::BackendError,
        >,
    },
    /// Send DTMF digits on a call.
    SendDtmf {
        /// Which.
        call: CallHandle,
        /// The digits.
        digits: Vec<crate::media::dtmf::Digit>,
        /// RFC 4733, SIP INFO or in-band tones; `None`: the call's trunk's `dtmf` (RFC 4733
        /// without a trunk).
        method: Option<DtmfSendMethod>,
        /// Ok, or why not.
        reply: tokio::sync::oneshot::Sender<Result<(), DtmfError>>,
    },
    /// Blind transfer (REFER) of an answered call; the reply comes with the final outcome.
    Transfer {
        /// Which.
        call: CallHandle,
        /// A `sip:`/`sips:`/`tel:` URI or a bare number (see [`TransferTarget::parse`]).
        target: String,
        /// The final NOTIFY's 2xx, or why not.
        reply: tokio::sync::oneshot::Sender<Result<TransferOutcome, TransferError>>,
    },
}

/// How to send DTMF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfSendMethod {
    /// RFC 4733 telephone-event packets; in-band tones when the call has no
    /// `telephone-event` and the method was not asked for explicitly.
    Rfc4733,
    /// SIP INFO with `application/dtmf-relay`.
    Info,
    /// ITU-T Q.23 tones in the audio.
    InBand,
}

/// Why DTMF could not be sent on a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DtmfError {
    /// No such call (or it has ended).
    #[error("no call {0}")]
    NoCall(u64),
    /// The call is not answered yet: no media runs.
    #[error("the call has no media yet")]
    NoMedia,
    /// The call's media task has a full control queue.
    #[error("the media task is busy")]
    MediaBusy,
    /// RFC 4733 was asked for, and the peer did not accept telephone-event.
    #[error("the peer did not accept telephone-event (RFC 4733) on this call")]
    NoTelephoneEvent,
    /// SIP INFO could not be sent.
    #[error(transparent)]
    Sip(#[from] crate::sip::StackError),
}

/// `Retry-After` (RFC 3261 §20.33) sent with the fallback status when the AI backend rate
/// limits without saying for how long.
pub const DEFAULT_RETRY_AFTER_S: u64 = 5;

/// How long each DTMF digit we send lasts.
pub const DTMF_DIGIT: Duration = Duration::from_millis(100);

impl CallManager {
    /// A manager with these routes, media policy and RTP port pool.
    pub fn new(routes: Routes, media: MediaPolicy, ports: RtpPorts, table: CallTable) -> Self {
        CallManager {
            routes,
            media,
            ports,
            calls: HashMap::new(),
            table,
            ended_history: 1000,
            commands: None,
            media_pool: None,
            records: None,
            record_prefix: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            trunks: Vec::new(),
        }
    }

    /// Gives calls from or through these trunks their own settings (else the media policy's
    /// and the SIP stack's defaults apply).
    pub fn with_trunks(mut self, trunks: Vec<TrunkPolicy>) -> Self {
        self.trunks = trunks;
        self
    }

    /// The trunk a call from `source` belongs to: the first whose sources contain it.
    fn trunk_from(&self, source: IpAddr) -> Option<&TrunkPolicy> {
        self.trunks.iter().find(|t| t.sources.contains(source))
    }

    /// The trunk named `name`.
    fn trunk_named(&self, name: Option<&str>) -> Option<&TrunkPolicy> {
        name.and_then(|n| self.trunks.iter().find(|t| t.name == n))
    }

    /// Writes a record of every call (start, answer, end) through `writer`.
    pub fn with_records(mut self, writer: crate::records::RecordWriter) -> Self {
        self.records = Some(writer);
        self
    }

    /// The id of a call's record.
    pub fn record_id(&self, call: CallHandle) -> String {
        format!("{}-{}", self.record_prefix, call.0)
    }

    fn record(&self, op: crate::records::RecordOp) {
        if let Some(w) = &self.records
            && let Err(e) = w.send(op)
        {
            tracing::warn!(error = %e, "call record not written");
        }
    }

    fn record_answered(&self, call: CallHandle) {
        metrics::Metrics::inc(&metrics::Metrics::global().calls_answered);
        self.record(crate::records::RecordOp::Answered {
            id: self.record_id(call),
            at: crate::records::UnixMs::now(),
        });
    }

    /// The final record of a call, from the call table.
    fn record_finished(&self, call: CallHandle, reason: &EndReason) {
        if self.records.is_none() {
            return;
        }
        let Some(info) = self.table.lock().ok().and_then(|t| t.get(&call.0).cloned()) else {
            return;
        };
        use crate::records::{CallRecord, Direction as RecDirection, RecordOp, UnixMs};
        let ms = |secs: f64| UnixMs((secs * 1000.0) as i64);
        let direction = if info.direction == "outbound" {
            RecDirection::Outbound
        } else {
            RecDirection::Inbound
        };
        let mut r = CallRecord::started(
            self.record_id(call),
            info.call_id.clone(),
            info.from.clone(),
            info.to.clone(),
            direction,
            info.agent.clone(),
            ms(info.started_at),
        );
        r.answered_at = info.answered_at.map(ms);
        r.ended_at = Some(info.ended_at.map(ms).unwrap_or_else(UnixMs::now));
        r.end_reason = Some(format!("{reason:?}"));
        r.sip_code = match reason {
            EndReason::Rejected(c) | EndReason::Failed(c) | EndReason::DialogLost(c) if *c > 0 => {
                Some(*c)
            }
            EndReason::Cancelled => Some(487),
            _ => None,
        };
        r.codec = info.codec.clone();
        if let Some(m) = &info.media {
            r.jitter_ms = Some(m.jitter_ms);
            r.mos = Some(m.mos);
            let expected = m.packets_lost + m.packets_received;
            r.loss_percent =
                (expected > 0).then(|| m.packets_lost as f64 * 100.0 / expected as f64);
        }
        r.recording_path = info.recording.clone();
        r.transcript_path = info.transcript.clone();
        r.turn_latencies = info.turns.clone();
        r.tool_calls = info.tool_calls.clone();
        r.transfer = info.transfer.clone();
        self.record(RecordOp::Finished(Box::new(r)));
    }

    /// Handles one stack event.
    pub fn handle_event(&mut self, now: Instant, stack: &mut SipStack, ev: SipEvent) {
        match ev {
            SipEvent::IncomingCall(inc) => self.on_incoming(now, stack, inc),
            SipEvent::Acked { call, body } => self.on_acked(now, stack, call, body),
            SipEvent::Progress { call, status, body } => {
                tracing::debug!(%call, status, "call progress");
                if let Some(b) = body {
                    self.accept_answer(stack, call, &b);
                }
            }
            SipEvent::Answered { call, body } => self.on_answered(now, stack, call, body),
            SipEvent::Modify { call, body } => self.on_modify(now, stack, call, body),
            SipEvent::ModifyResult { call, status, body } => {
                if let (true, Some(b)) = ((200..300).contains(&status), body) {
                    self.accept_answer(stack, call, &b);
                }
            }
            SipEvent::Info { call, body } => {
                if let Some(b) = body {
                    tracing::debug!(%call, content_type = %b.content_type, "INFO received");
                    if let Some(tx) = self.calls.get(&call).and_then(|c| c.media_tx.as_ref()) {
                        let _ = tx.try_send(control::MediaControl::InfoDtmf {
                            content_type: b.content_type,
                            body: b.data,
                        });
                    }
                }
            }
            SipEvent::ReferProgress { call, status, done } => {
                self.on_refer_progress(now, stack, call, status, done);
            }
            SipEvent::Ended { call, reason } => self.on_ended(now, stack, call, reason),
            SipEvent::Registration { id, state } => {
                tracing::info!(registration = id.0, ?state, "registration state");
            }
        }
    }

    /// Places an outbound call: builds the offer and sends the INVITE. `notify` learns how it
    /// ended; `failover` lists the next targets for a 408 or 503. The offer's address is
    /// `spec.local_ip` (or the configured external IP).
    pub fn dial(
        &mut self,
        now: Instant,
        stack: &mut SipStack,
        spec: crate::sip::OutgoingCall,
        agent: AgentSpec,
        notify: Option<tokio::sync::oneshot::Sender<OutboundResult>>,
        failover: Vec<crate::sip::Peer>,
    ) -> Result<CallHandle, RtpPortError> {
        self.dial_via(now, stack, spec, None, agent, notify, failover)
    }

    /// [`Self::dial`] through the trunk named `trunk`, whose media settings (codecs) the
    /// offer then follows.
    #[allow(clippy::too_many_arguments)] // the dial's parts, as the command carries them
    pub fn dial_via(
        &mut self,
        now: Instant,
        stack: &mut SipStack,
        mut spec: crate::sip::OutgoingCall,
        trunk: Option<&str>,
        agent: AgentSpec,
        notify: Option<tokio::sync::oneshot::Sender<OutboundResult>>,
        failover: Vec<crate::sip::Peer>,
    ) -> Result<CallHandle, RtpPortError> {
        let local_ip = spec.local_ip.unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let sockets = self.ports.allocate(true)?;
        let port = sockets.port;
        let policy = self.trunk_named(trunk);
        let dtmf = policy.map_or(DtmfSendMethod::Rfc4733, |t| t.dtmf);
        spec.options = policy.map(|t| t.sip);
        let local = self.local_media(self.media.external_ip.unwrap_or(local_ip), port, policy);
        let trunk = policy.map(|t| t.name.clone());
        let mut sdp = SdpSession::new(session_id(port));
        let offer = sdp.create_offer(&local);
        spec.body = Some(Body::new(SDP_CONTENT_TYPE, offer));
        spec.local_ip = Some(local_ip);
        let (from, to) = (spec.from_uri.clone(), spec.to_uri.clone());
        let (from_party, to_party) = (from.clone(), to.clone());
        let retry_spec = spec.clone();
        let handle = stack.invite(now, spec);
        let call_id = stack.call_id(handle).map(|c| c.0).unwrap_or_default();
        self.insert_info(handle, &call_id, "outbound", from, to, &agent.name);
        self.calls.insert(
            handle,
            CallState {
                agent,
                sdp,
                local,
                sockets: Some(sockets),
                media_tx: None,
                call_id: call_id.clone(),
                answer_at: None,
                // Ring timeout: hang up (CANCEL) if nobody answers in time.
                hangup_at: self.media.no_answer_timeout.map(|d| now + d),
                pending_answer: None,
                answered: false,
                media: None,
                notify,
                transfer: None,
                failover: Some((retry_spec, failover)),
                backend: BackendState::Idle,
                parties: (party(&from_party), party(&to_party)),
                trunk,
                dtmf,
            },
        );
        Ok(handle)
    }

    /// Hangs up a call (API or shutdown).
    pub fn hangup(&mut self, now: Instant, stack: &mut SipStack, call: CallHandle) -> bool {
        stack.hangup(now, call).is_ok()
    }

    /// Hangs up every call (graceful shutdown).
    pub fn hangup_all(&mut self, now: Instant, stack: &mut SipStack) {
        let handles: Vec<CallHandle> = self.calls.keys().copied().collect();
        for h in handles {
            let _ = stack.hangup(now, h);
        }
    }

    /// Calls in progress.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is in progress.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The earliest deadline of any call.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.calls
            .values()
            .flat_map(|c| [c.answer_at, c.hangup_at])
            .flatten()
            .min()
    }

    /// Fires due deadlines.
    pub fn handle_timeout(&mut self, now: Instant, stack: &mut SipStack) {
        let mut answer = Vec::new();
        let mut hang = Vec::new();
        for (h, c) in self.calls.iter_mut() {
            if c.answer_at.is_some_and(|t| t <= now) {
                c.answer_at = None;
                // A backend still connecting answers when it is ready.
                if !matches!(c.backend, BackendState::Connecting) {
                    answer.push((*h, c.pending_answer.take()));
                }
            }
            if c.hangup_at.is_some_and(|t| t <= now) {
                c.hangup_at = None;
                hang.push(*h);
            }
        }
        for (h, body) in answer {
            self.answer(now, stack, h, body);
        }
        for h in hang {
            tracing::info!(call = %h, "agent hangs up");
            let _ = stack.hangup(now, h);
        }
    }

    fn on_incoming(&mut self, now: Instant, stack: &mut SipStack, inc: IncomingCall) {
        let policy = self.trunk_from(inc.source.addr.ip()).cloned();
        if let Some(t) = &policy
            && let Err(e) = stack.set_call_options(now, inc.call, t.sip)
        {
            // The stack refused the INVITE itself (100rel: 420/421).
            tracing::info!(call = %inc.call, trunk = %t.name, error = %e, "INVITE refused by the trunk's SIP options");
            return;
        }
        let called = crate::sip::message::uri_user(&inc.request_uri)
            .or_else(|| crate::sip::message::uri_user(crate::sip::message::uri_of(&inc.to)))
            .unwrap_or("");
        let Some(agent) = self.routes.agent_for(called).cloned() else {
            tracing::info!(call = %inc.call, called, "no route for called number: 404");
            let _ = stack.respond(now, inc.call, 404, None);
            return;
        };
        if let Some(allow) = &agent.allow_from
            && !allow.contains(inc.source.addr.ip())
        {
            tracing::info!(
                call = %inc.call,
                source = %inc.source,
                agent = %agent.name,
                allowed = %allow.describe(),
                "caller's source is not allowed to reach this agent: 403 (see allow_from)"
            );
            metrics::Metrics::inc(&metrics::Metrics::global().calls_forbidden);
            let _ = stack.respond_with(now, inc.call, 403, Some("Forbidden"), Vec::new(), None);
            return;
        }
        let sockets = match self.ports.allocate(true) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(call = %inc.call, error = %e, "cannot open the call's RTP sockets: 503");
                let _ = stack.respond_with(
                    now,
                    inc.call,
                    503,
                    Some("Service Unavailable - no media port"),
                    vec![("Retry-After", "5".into())],
                    None,
                );
                return;
            }
        };
        let ip = self
            .media
            .external_ip
            .or_else(|| stack.local_ip(inc.call))
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let port = sockets.port;
        let dtmf = policy.as_ref().map_or(DtmfSendMethod::Rfc4733, |t| t.dtmf);
        let local = self.local_media(ip, port, policy.as_ref());
        let mut sdp = SdpSession::new(session_id(port));
        // Offer in the INVITE → answer now; no offer → our offer goes in the 200 (late offer).
        let (answer_body, media) = match &inc.body {
            Some(b) if is_sdp(b) => match sdp.answer(&b.data, &local) {
                Ok((answer, media)) => (Body::new(SDP_CONTENT_TYPE, answer), Some(media)),
                Err(e) => {
                    tracing::info!(call = %inc.call, error = %e, "offer rejected");
                    let _ = stack.respond_with(
                        now,
                        inc.call,
                        e.status_code(),
                        Some(e.reason_phrase()),
                        Vec::new(),
                        None,
                    );
                    return;
                }
            },
            Some(b) => {
                tracing::info!(call = %inc.call, content_type = %b.content_type, "unsupported body type: 415");
                let _ = stack.respond_with(
                    now,
                    inc.call,
                    415,
                    None,
                    vec![("Accept", SDP_CONTENT_TYPE.into())],
                    None,
                );
                return;
            }
            None => (Body::new(SDP_CONTENT_TYPE, sdp.create_offer(&local)), None),
        };
        tracing::info!(call = %inc.call, call_id = %inc.call_id, from = %inc.from, to = %inc.to, source = %inc.source, agent = %agent.name, "incoming call");
        self.insert_info(
            inc.call,
            &inc.call_id.0,
            "inbound",
            inc.from.clone(),
            inc.to.clone(),
            &agent.name,
        );
        let _ = stack.respond(now, inc.call, 180, None);
        let answer_at = (!agent.answer_after.is_zero()).then(|| now + agent.answer_after);
        self.update_info(inc.call, |i| {
            i.codec = media.as_ref().map(|m| m.codec.codec.to_string())
        });
        self.calls.insert(
            inc.call,
            CallState {
                agent,
                sdp,
                local,
                sockets: Some(sockets),
                media_tx: None,
                call_id: inc.call_id.0.clone(),
                answer_at,
                hangup_at: None,
                pending_answer: None,
                answered: false,
                media,
                notify: None,
                transfer: None,
                failover: None,
                backend: BackendState::Idle,
                parties: (party(&inc.from), called.to_owned()),
                trunk: policy.map(|t| t.name),
                dtmf,
            },
        );
        // A realtime agent connects its backend first, so an unreachable backend can still be
        // refused (the caller hears ringing meanwhile); with a late offer the format is not
        // known yet, and the connection waits for the ACK.
        let connecting =
            self.calls.get(&inc.call).is_some_and(|c| {
                c.media.is_some() && matches!(c.agent.kind, AgentKind::Realtime(_))
            }) && self.connect_backend(inc.call);
        if answer_at.is_none() && !connecting {
            self.answer(now, stack, inc.call, Some(answer_body));
        } else if let Some(c) = self.calls.get_mut(&inc.call) {
            c.pending_answer = Some(answer_body);
        }
    }

    /// Starts connecting a realtime call's backend; false if the call has no realtime agent,
    /// no negotiated media or no runtime.
    fn connect_backend(&mut self, call: CallHandle) -> bool {
        let Some(commands) = self.commands.clone() else {
            return false;
        };
        let record_id = self.record_id(call);
        let Some(c) = self.calls.get_mut(&call) else {
            return false;
        };
        let (AgentKind::Realtime(ra), Some(m)) = (&c.agent.kind, &c.media) else {
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
        let parties = c.call_parties(record_id);
        tokio::spawn(async move {
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
    fn on_backend_ready(
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
            AgentKind::Realtime(ra) => ra.fallback.clone(),
            _ => return,
        };
        match result {
            Ok((handle, format)) => {
                tracing::info!(%call, ?format, "AI backend connected");
                c.backend = BackendState::Ready(media::BackendSetup {
                    handle,
                    format,
                    parties: c.call_parties(record_id.clone()),
                    transcript: transcripts.map(|d| d.join(format!("{record_id}.jsonl"))),
                });
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

    fn answer(&mut self, now: Instant, stack: &mut SipStack, call: CallHandle, body: Option<Body>) {
        if stack.respond(now, call, 200, body).is_ok() {
            if let Some(c) = self.calls.get_mut(&call) {
                c.answered = true;
            }
            // With the offer in the INVITE, media can flow from the 200 on.
            self.start_media(call);
            self.update_info(call, |i| {
                i.state = "answered";
                i.answered_at = Some(epoch_now());
            });
            self.record_answered(call);
        }
    }

    fn on_acked(
        &mut self,
        now: Instant,
        stack: &mut SipStack,
        call: CallHandle,
        body: Option<Body>,
    ) {
        if let Some(b) = body {
            self.accept_answer(stack, call, &b);
        }
        self.start_media(call);
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if let (Some(after), None) = (c.agent.hangup_after, c.hangup_at) {
            c.hangup_at = Some(now + after);
        }
    }

    fn on_answered(
        &mut self,
        now: Instant,
        stack: &mut SipStack,
        call: CallHandle,
        body: Option<Body>,
    ) {
        match body {
            Some(b) => self.accept_answer(stack, call, &b),
            None => tracing::warn!(%call, "2xx without an answer"),
        }
        tracing::info!(%call, "outbound call answered");
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        c.answered = true;
        c.hangup_at = c.agent.hangup_after.map(|after| now + after);
        self.update_info(call, |i| {
            i.state = "answered";
            i.answered_at = Some(epoch_now());
        });
        self.record_answered(call);
        self.start_media(call);
    }

    fn on_modify(
        &mut self,
        now: Instant,
        stack: &mut SipStack,
        call: CallHandle,
        body: Option<Body>,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            let _ = stack.respond_modify(now, call, 481, None);
            return;
        };
        let result = match &body {
            Some(b) if is_sdp(b) => c.sdp.answer(&b.data, &c.local).map(|(a, m)| (a, Some(m))),
            Some(_) => {
                let _ = stack.respond_modify(now, call, 415, None);
                return;
            }
            // A re-INVITE without an offer: we offer in the 200 (RFC 3261 §14.2).
            None => Ok((c.sdp.create_offer(&c.local), None)),
        };
        match result {
            Ok((sdp, media)) => {
                if let Some(m) = media {
                    let hold = m.remote_hold;
                    tracing::info!(%call, hold, direction = %m.direction, "session modified");
                    c.media = Some(m);
                    self.update_info(call, |i| i.on_hold = hold);
                    self.media_changed(call);
                }
                let _ =
                    stack.respond_modify(now, call, 200, Some(Body::new(SDP_CONTENT_TYPE, sdp)));
            }
            Err(e) => {
                let _ = stack.respond_modify(now, call, e.status_code(), None);
            }
        }
    }

    fn accept_answer(&mut self, _stack: &mut SipStack, call: CallHandle, body: &Body) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        match c.sdp.accept_answer(&body.data) {
            Ok(m) => {
                let codec = m.codec.codec.to_string();
                c.media = Some(m);
                self.update_info(call, |i| i.codec = Some(codec));
                self.media_changed(call);
            }
            Err(e) => tracing::warn!(%call, error = %e, "unusable SDP answer"),
        }
    }

    /// The negotiated session changed: tell the running media task.
    fn media_changed(&mut self, call: CallHandle) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if let (Some(tx), Some(m)) = (&c.media_tx, &c.media)
            && tx
                .try_send(control::MediaControl::Update(m.clone()))
                .is_err()
        {
            tracing::warn!(%call, "media task not taking updates");
        }
    }

    /// Starts the call's media task once the call is answered and the session negotiated.
    /// Without a runtime attached (sans-IO tests) there is no media task.
    fn start_media(&mut self, call: CallHandle) {
        let (Some(commands), Some(pool)) = (self.commands.clone(), self.media_pool.clone()) else {
            return;
        };
        let recordings = self.media.recordings_dir.clone();
        let (rtp_timeout, jitter) = (self.media.rtp_timeout, self.media.jitter);
        let table = self.table.clone();
        // Late offer or outbound: the backend format is known only now; the media starts
        // when the backend is ready.
        if self.calls.get(&call).is_some_and(|c| {
            c.answered
                && c.media.is_some()
                && matches!(c.agent.kind, AgentKind::Realtime(_))
                && matches!(c.backend, BackendState::Idle)
        }) {
            self.connect_backend(call);
            return;
        }
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.media_tx.is_some() || !c.answered {
            return;
        }
        let Some(negotiated) = c.media.clone() else {
            return;
        };
        let Some(sockets) = c.sockets.take() else {
            return;
        };
        let backend = if matches!(c.agent.kind, AgentKind::Realtime(_)) {
            match std::mem::replace(&mut c.backend, BackendState::Taken) {
                BackendState::Ready(setup) => Some(setup),
                BackendState::Failed => None,
                other => {
                    c.backend = other;
                    return;
                }
            }
        } else {
            None
        };
        let recording = match (&recordings, c.agent.record) {
            (Some(dir), true) => Some(dir.join(recording_name(&c.call_id))),
            _ => None,
        };
        // An agent's own minimum, within the media maximum.
        let jitter = match c.agent.jitter_min {
            Some(min) => (min.min(jitter.1), jitter.1),
            None => jitter,
        };
        let spec = media::MediaTaskSpec {
            call,
            sockets,
            negotiated,
            agent: c.agent.kind.clone(),
            recording,
            rtp_timeout,
            jitter,
            table,
            commands,
            backend,
        };
        match media::spawn(&pool, spec) {
            Ok(tx) => c.media_tx = Some(tx),
            Err(e) => tracing::error!(%call, error = %e, "cannot start media"),
        }
    }

    fn send_dtmf(
        &mut self,
        now: Instant,
        stack: &mut SipStack,
        call: CallHandle,
        digits: Vec<crate::media::dtmf::Digit>,
        method: Option<DtmfSendMethod>,
    ) -> Result<(), DtmfError> {
        let c = self.calls.get(&call).ok_or(DtmfError::NoCall(call.0))?;
        let events = c
            .media
            .as_ref()
            .is_some_and(|m| m.telephone_event.is_some());
        let in_media = |inband: bool| {
            let tx = c.media_tx.as_ref().ok_or(DtmfError::NoMedia)?;
            tx.try_send(control::MediaControl::SendDtmf {
                digits: digits.clone(),
                duration: DTMF_DIGIT,
                inband,
            })
            .map_err(|_| DtmfError::MediaBusy)
        };
        match (method, method.unwrap_or(c.dtmf)) {
            (_, DtmfSendMethod::Rfc4733) if events => in_media(false),
            (Some(_), DtmfSendMethod::Rfc4733) => Err(DtmfError::NoTelephoneEvent),
            // The trunk's default, RFC 4733, without telephone-event: tones, as a phone would.
            (None, DtmfSendMethod::Rfc4733) | (_, DtmfSendMethod::InBand) => in_media(true),
            (_, DtmfSendMethod::Info) => {
                for d in digits {
                    let body = crate::media::dtmf::info::build_dtmf_relay(
                        d,
                        DTMF_DIGIT.as_millis() as u32,
                    );
                    stack.send_info(now, call, Body::new("application/dtmf-relay", body))?;
                }
                Ok(())
            }
        }
    }

    fn on_ended(
        &mut self,
        now: Instant,
        stack: &mut SipStack,
        call: CallHandle,
        reason: EndReason,
    ) {
        let Some(mut c) = self.calls.remove(&call) else {
            return;
        };
        self.end_pending_transfer(call, c.transfer.take());
        // RFC 3263 §4.3: on a timeout or 503, try the next target with a new INVITE.
        if let (EndReason::Failed(408 | 503), Some((spec, rest))) = (&reason, c.failover.take())
            && let Some((next, rest)) = rest.split_first()
        {
            tracing::info!(%call, status = ?reason, next = %next, "trying next target");
            let mut spec = spec;
            spec.next_hop = *next;
            self.update_info(call, |i| i.state = "ended");
            if let Ok(h) = self.dial_via(
                now,
                stack,
                spec,
                c.trunk.as_deref(),
                c.agent.clone(),
                c.notify.take(),
                rest.to_vec(),
            ) {
                tracing::debug!(old = %call, new = %h, "failover call placed");
                return;
            }
        }
        tracing::info!(%call, ?reason, agent = %c.agent.name, "call ended");
        let reason_text = format!("{reason:?}");
        self.update_info(call, |i| {
            i.state = "ended";
            i.ended_at = Some(epoch_now());
            i.end_reason = Some(reason_text);
        });
        self.record_finished(call, &reason);
        metrics::Metrics::inc(&metrics::Metrics::global().calls_ended);
        self.trim_table();
        if let Some(n) = c.notify.take() {
            let _ = n.send(OutboundResult {
                answered: c.answered,
                reason,
            });
        }
    }

    /// Our media for a call: its trunk's codecs and DTMF mode, else the media policy's.
    fn local_media(&self, address: IpAddr, port: u16, trunk: Option<&TrunkPolicy>) -> LocalMedia {
        LocalMedia {
            address,
            rtp_port: port,
            ptime_ms: self.media.ptime_ms,
            rtcp_mux: self.media.rtcp_mux,
            codecs: trunk.map_or_else(|| self.media.codecs.clone(), |t| t.codecs.clone()),
            telephone_event: self.media.telephone_event
                && trunk.is_none_or(|t| t.dtmf == DtmfSendMethod::Rfc4733),
            direction: Direction::SendRecv,
        }
    }

    fn insert_info(
        &self,
        call: CallHandle,
        call_id: &str,
        direction: &'static str,
        from: String,
        to: String,
        agent: &str,
    ) {
        let info = CallInfo {
            id: call.0,
            record_id: self.record_id(call),
            call_id: call_id.to_string(),
            direction,
            from,
            to,
            agent: agent.to_string(),
            state: "ringing",
            codec: None,
            on_hold: false,
            started_at: epoch_now(),
            answered_at: None,
            ended_at: None,
            end_reason: None,
            dtmf: Vec::new(),
            recording: None,
            media: None,
            transcript: None,
            turns: Vec::new(),
            tool_calls: Vec::new(),
            transfer: None,
        };
        let record = crate::records::CallRecord::started(
            self.record_id(call),
            info.call_id.clone(),
            info.from.clone(),
            info.to.clone(),
            if direction == "outbound" {
                crate::records::Direction::Outbound
            } else {
                crate::records::Direction::Inbound
            },
            agent,
            crate::records::UnixMs::now(),
        );
        if let Ok(mut t) = self.table.lock() {
            t.insert(call.0, info);
        }
        metrics::Metrics::inc(&metrics::Metrics::global().calls_started);
        self.record(crate::records::RecordOp::Started(Box::new(record)));
    }

    fn update_info(&self, call: CallHandle, f: impl FnOnce(&mut CallInfo)) {
        if let Ok(mut t) = self.table.lock()
            && let Some(i) = t.get_mut(&call.0)
        {
            f(i);
        }
    }

    /// Keeps at most `ended_history` ended calls in the API table.
    fn trim_table(&self) {
        if let Ok(mut t) = self.table.lock() {
            let ended = t.values().filter(|i| i.state == "ended").count();
            if ended > self.ended_history {
                let mut olds: Vec<(f64, u64)> = t
                    .values()
                    .filter(|i| i.state == "ended")
                    .map(|i| (i.ended_at.unwrap_or(0.0), i.id))
                    .collect();
                olds.sort_by(|a, b| a.0.total_cmp(&b.0));
                for (_, id) in olds.into_iter().take(ended - self.ended_history) {
                    t.remove(&id);
                }
            }
        }
    }
}

impl CallHandler for CallManager {
    type Command = CallCommand;
    type Media = media::CallMedia;

    fn attach(&mut self, commands: Commands<CallCommand>, media: media::CallMediaPool) {
        self.commands = Some(commands);
        self.media_pool = Some(media);
    }

    fn handle_event(&mut self, now: Instant, stack: &mut SipStack, event: SipEvent) {
        CallManager::handle_event(self, now, stack, event);
    }

    fn handle_command(&mut self, now: Instant, stack: &mut SipStack, command: CallCommand) {
        match command {
            CallCommand::Dial {
                spec,
                failover,
                agent,
                trunk,
                notify,
                reply,
            } => {
                let r = self.dial_via(
                    now,
                    stack,
                    spec,
                    trunk.as_deref(),
                    agent,
                    Some(notify),
                    failover,
                );
                let _ = reply.send(r);
            }
            CallCommand::Hangup { call, reply } => {
                let _ = reply.send(self.hangup(now, stack, call));
            }
            CallCommand::MediaHangup { call, reason } => {
                tracing::info!(%call, %reason, "hanging up");
                let _ = stack.hangup(now, call);
            }
            CallCommand::BackendReady { call, result } => {
                self.on_backend_ready(now, stack, call, result);
            }
            CallCommand::SendDtmf {
                call,
                digits,
                method,
                reply,
            } => {
                let _ = reply.send(self.send_dtmf(now, stack, call, digits, method));
            }
            CallCommand::Transfer {
                call,
                target,
                reply,
            } => self.transfer(now, stack, call, &target, reply),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        CallManager::poll_timeout(self)
    }

    fn handle_timeout(&mut self, now: Instant, stack: &mut SipStack) {
        CallManager::handle_timeout(self, now, stack);
    }

    fn hangup_all(&mut self, now: Instant, stack: &mut SipStack) {
        CallManager::hangup_all(self, now, stack);
    }

    fn is_idle(&self) -> bool {
        self.is_empty()
    }
}

/// The user part (or number) of a From/To value, or the value itself.
fn party(value: &str) -> String {
    let uri = crate::sip::message::uri_of(value);
    crate::sip::message::uri_user(uri).unwrap_or(uri).to_owned()
}

fn is_sdp(b: &Body) -> bool {
    crate::sip::message::media_type_is(&b.content_type, SDP_CONTENT_TYPE)
}

/// A recording's file name: start time (Unix seconds) and the Call-ID, made file-system safe.
fn recording_name(call_id: &str) -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let safe: String = call_id
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ch == '-' || ch == '.' {
                ch
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    format!("{secs}-{safe}.wav")
}

fn session_id(port: u16) -> u64 {
    // Any unique-enough number works (RFC 4566 §5.2 suggests an NTP timestamp).
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    secs * 100_000 + u64::from(port)
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
