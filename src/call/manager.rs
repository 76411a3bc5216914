//! The call manager: one state per call, driven by SIP events and commands on the driver task.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::runtime::media::MediaStart;
use crate::runtime::rtp::{RtpPortError, RtpPorts, RtpSockets};
use crate::runtime::{Attached, CallHandler, Commands, WallClock};
use crate::sdp::{LocalMedia, NegotiatedMedia, SdpSession};
use crate::sip::{Body, CallHandle, EndReason, IncomingCall, SipEvent, SipStack};

use super::backend::BackendState;
use super::offer::{is_sdp, session_id};

use super::{
    AgentKind, AgentSpec, CallCommand, CallTable, DtmfSendMethod, DynamicRoutes, MediaPolicy,
    OutboundResult, Routes, SDP_CONTENT_TYPE, TrunkPolicy,
};
use super::{agent, control, media, metrics, transfer};

pub(super) struct CallState {
    pub(super) agent: AgentSpec,
    pub(super) sdp: SdpSession,
    pub(super) local: LocalMedia,
    /// The bound RTP/RTCP sockets until the media task takes them (held so the ports in the
    /// SDP stay ours).
    pub(super) sockets: Option<RtpSockets>,
    /// The media task's control queue, once it runs.
    pub(super) media_tx: Option<media::CallMediaHandle>,
    /// SIP Call-ID (names the recording).
    pub(super) call_id: String,
    pub(super) answer_at: Option<Instant>,
    pub(super) hangup_at: Option<Instant>,
    pub(super) pending_answer: Option<Body>,
    pub(super) answered: bool,
    pub(super) media: Option<NegotiatedMedia>,
    pub(super) notify: Option<tokio::sync::oneshot::Sender<OutboundResult>>,
    /// A blind transfer waiting for its outcome.
    pub(super) transfer: Option<transfer::PendingTransfer>,
    /// Outbound: the INVITE as sent and the next targets to try on 408/503 (RFC 3263 §4.3).
    pub(super) failover: Option<(crate::sip::OutgoingCall, Vec<crate::sip::Peer>)>,
    /// A realtime agent's backend connection.
    pub(super) backend: BackendState,
    /// Caller and called as the agent sees them.
    pub(super) parties: (String, String),
    /// The trunk the call came from or went out through.
    pub(super) trunk: Option<String>,
    /// How key presses are sent when no method is asked for (the trunk's `dtmf`).
    pub(super) dtmf: DtmfSendMethod,
    /// A browser call's WebRTC session, until its media starts (then the worker has it).
    pub(super) webrtc: Option<Box<crate::media::webrtc::WebRtcPeer>>,
    /// Whether the call's media is WebRTC (str0m's session, not this SDP session's).
    pub(super) is_webrtc: bool,
}

impl CallState {
    /// Who is on the call, as the agent and its tools see it.
    pub(super) fn call_parties(&self, record_id: String) -> agent::CallParties {
        agent::CallParties {
            record_id,
            agent: self.agent.name.clone(),
            memory: String::new(),
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

/// Owns the per-call state of every call and answers them.
pub struct CallManager {
    pub(super) routes: Routes,
    pub(super) media: MediaPolicy,
    pub(super) ports: RtpPorts,
    pub(super) calls: HashMap<CallHandle, CallState>,
    pub(super) table: CallTable,
    pub(super) ended_history: usize,
    pub(super) commands: Option<Commands<CallCommand>>,
    /// The media workers, once a runtime is attached.
    pub(super) media_pool: Option<media::CallMediaPool>,
    /// Where call records go (SQLite), if enabled.
    pub(super) records: Option<crate::records::RecordWriter>,
    /// The caller memory (`None`: no records database).
    pub(super) memory: Option<super::postcall::CallerMemory>,
    /// PII redaction of transcripts and analyses (`[redaction]`).
    pub(super) redactor: std::sync::Arc<crate::records::redact::Redactor>,
    /// Makes record ids unique across restarts: the process start time in Unix milliseconds.
    pub(super) record_prefix: u64,
    /// Whether `record_prefix` was given ([`CallManager::with_record_prefix`]).
    record_prefix_fixed: bool,
    /// Turns `now` into wall time; set by the runtime when it attaches (sans-IO tests run
    /// without it, at the Unix epoch).
    pub(super) wall: Option<WallClock>,
    /// Per-trunk call settings, in configuration order.
    pub(super) trunks: Vec<TrunkPolicy>,
    /// Each trunk's `max_calls_per_s` bucket: tokens and when they were counted.
    pub(super) trunk_rates: std::collections::HashMap<String, (f64, Instant)>,
    /// Routes set through the API, checked before `routes`.
    pub(super) dynamic_routes: DynamicRoutes,
}

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
            memory: None,
            redactor: Default::default(),
            record_prefix: 0,
            record_prefix_fixed: false,
            wall: None,
            trunks: Vec::new(),
            trunk_rates: std::collections::HashMap::new(),
            dynamic_routes: DynamicRoutes::default(),
        }
    }

    /// `now` as time since the Unix epoch.
    pub(super) fn unix(&self, now: Instant) -> Duration {
        self.wall.map(|w| w.unix(now)).unwrap_or_default()
    }

    /// Gives calls from or through these trunks their own settings (else the media policy's
    /// and the SIP stack's defaults apply).
    pub fn with_trunks(mut self, trunks: Vec<TrunkPolicy>) -> Self {
        self.trunks = trunks;
        self
    }

    /// Looks up incoming calls in `routes` (set through the API) before voxline.toml's.
    pub fn with_dynamic_routes(mut self, routes: DynamicRoutes) -> Self {
        self.dynamic_routes = routes;
        self
    }

    /// Record ids start with `prefix` (a cluster node's, unique among the nodes) instead of
    /// the time the runtime starts.
    pub fn with_record_prefix(mut self, prefix: u64) -> Self {
        self.record_prefix = prefix;
        self.record_prefix_fixed = true;
        self
    }

    /// Writes a record of every call (start, answer, end) through `writer`.
    pub fn with_records(mut self, writer: crate::records::RecordWriter) -> Self {
        self.records = Some(writer);
        self
    }

    /// Redacts transcripts and post-call analyses with `redactor`.
    pub fn with_redactor(
        mut self,
        redactor: std::sync::Arc<crate::records::redact::Redactor>,
    ) -> Self {
        self.redactor = redactor;
        self
    }

    /// Keeps what agents with `memory` remember of their callers in `memory`.
    pub fn with_memory(mut self, memory: super::postcall::CallerMemory) -> Self {
        self.memory = Some(memory);
        self
    }

    /// Handles one stack event.
    pub fn handle_event(&mut self, now: Instant, stack: &mut SipStack, ev: SipEvent) {
        match ev {
            SipEvent::IncomingCall(inc) => self.on_incoming(now, stack, inc),
            SipEvent::Acked { call, body } => self.on_acked(now, stack, call, body),
            SipEvent::Progress { call, status, body } => {
                tracing::debug!(%call, status, "call progress");
                if let Some(b) = body {
                    self.accept_answer(now, stack, call, &b);
                }
            }
            SipEvent::Answered { call, body } => self.on_answered(now, stack, call, body),
            SipEvent::Modify { call, body } => self.on_modify(now, stack, call, body),
            SipEvent::ModifyResult { call, status, body } => {
                if let (true, Some(b)) = ((200..300).contains(&status), body) {
                    self.accept_answer(now, stack, call, &b);
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
        let mut sdp = SdpSession::new(session_id(self.unix(now).as_secs(), port));
        let offer = sdp.create_offer(&local);
        spec.body = Some(Body::new(SDP_CONTENT_TYPE, offer));
        spec.local_ip = Some(local_ip);
        let (from, to) = (spec.from_uri.clone(), spec.to_uri.clone());
        let (from_party, to_party) = (from.clone(), to.clone());
        let retry_spec = spec.clone();
        let handle = stack.invite(now, spec);
        let call_id = stack.call_id(handle).map(|c| c.0).unwrap_or_default();
        self.insert_info(now, handle, &call_id, "outbound", from, to, &agent);
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
                webrtc: None,
                is_webrtc: false,
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

    pub(super) fn on_incoming(&mut self, now: Instant, stack: &mut SipStack, inc: IncomingCall) {
        let policy = self.trunk_from(inc.source.addr.ip()).cloned();
        if let Some(t) = &policy
            && let Some(reason) = self.trunk_refusal(now, &t.name, false)
        {
            // RFC 3261 §21.5.4: 503 with Retry-After, so the peer tries again (or elsewhere).
            tracing::info!(call = %inc.call, %reason, "INVITE refused: 503");
            let _ = stack.respond_with(
                now,
                inc.call,
                503,
                Some("Service Unavailable - trunk at its limit"),
                vec![("Retry-After", super::DEFAULT_RETRY_AFTER_S.to_string())],
                None,
            );
            return;
        }
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
        let dynamic = self.dynamic_routes.agent_for(called);
        let from_api = dynamic.is_some();
        let Some(agent) = dynamic.or_else(|| self.routes.agent_for(called).cloned()) else {
            tracing::info!(call = %inc.call, called, "no route for called number: 404");
            let _ = stack.respond(now, inc.call, 404, None);
            return;
        };
        // voxline.toml's agents have the trunks' sources in their lists already; an agent
        // reached through an API route takes a call from a trunk's sources too.
        let from_trunk = from_api
            && self
                .trunks
                .iter()
                .any(|t| t.sources.contains(inc.source.addr.ip()));
        if let Some(allow) = &agent.allow_from
            && !allow.contains(inc.source.addr.ip())
            && !from_trunk
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
        let mut sdp = SdpSession::new(session_id(self.unix(now).as_secs(), port));
        // Offer in the INVITE → answer now; no offer → our offer goes in the 200 (late offer).
        let mut webrtc = None;
        let (answer_body, media) = match &inc.body {
            // A browser's offer: ICE, DTLS-SRTP and the WebRTC SDP are str0m's.
            Some(b) if is_sdp(b) && crate::media::webrtc::is_webrtc_offer(&b.data) => {
                let offer = String::from_utf8_lossy(&b.data);
                let at = std::net::SocketAddr::new(ip, port);
                let prefs = browser_prefs(&local.codecs);
                match crate::media::webrtc::WebRtcPeer::accept_offer(now, &offer, at, &prefs) {
                    Ok((peer, answer)) => {
                        let media = peer.negotiated().clone();
                        webrtc = Some(Box::new(peer));
                        (
                            Body::new(SDP_CONTENT_TYPE, answer.into_bytes()),
                            Some(media),
                        )
                    }
                    Err(e) => {
                        tracing::info!(call = %inc.call, error = %e, "WebRTC offer rejected");
                        let _ = stack.respond_with(
                            now,
                            inc.call,
                            crate::sdp::STATUS_NOT_ACCEPTABLE_HERE,
                            Some("Not Acceptable Here - unusable WebRTC offer"),
                            Vec::new(),
                            None,
                        );
                        return;
                    }
                }
            }
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
            now,
            inc.call,
            &inc.call_id.0,
            "inbound",
            inc.from.clone(),
            inc.to.clone(),
            &agent,
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
                is_webrtc: webrtc.is_some(),
                webrtc,
            },
        );
        // A realtime agent connects its backend first, so an unreachable backend can still be
        // refused (the caller hears ringing meanwhile); with a late offer the format is not
        // known yet, and the connection waits for the ACK.
        let connecting = self
            .calls
            .get(&inc.call)
            .is_some_and(|c| c.media.is_some() && matches!(c.agent.kind, AgentKind::Ai(_)))
            && self.connect_backend(inc.call);
        if answer_at.is_none() && !connecting {
            self.answer(now, stack, inc.call, Some(answer_body));
        } else if let Some(c) = self.calls.get_mut(&inc.call) {
            c.pending_answer = Some(answer_body);
        }
    }

    pub(super) fn answer(
        &mut self,
        now: Instant,
        stack: &mut SipStack,
        call: CallHandle,
        body: Option<Body>,
    ) {
        if stack.respond(now, call, 200, body).is_ok() {
            if let Some(c) = self.calls.get_mut(&call) {
                c.answered = true;
            }
            // With the offer in the INVITE, media can flow from the 200 on.
            self.start_media(call);
            self.update_info(call, |i| {
                i.state = "answered";
                i.answered_at = Some(self.unix(now).as_secs_f64());
            });
            self.record_answered(call, now);
        }
    }

    pub(super) fn on_acked(
        &mut self,
        now: Instant,
        stack: &mut SipStack,
        call: CallHandle,
        body: Option<Body>,
    ) {
        if let Some(b) = body {
            self.accept_answer(now, stack, call, &b);
        }
        self.start_media(call);
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if let (Some(after), None) = (c.agent.hangup_after, c.hangup_at) {
            c.hangup_at = Some(now + after);
        }
    }

    pub(super) fn on_answered(
        &mut self,
        now: Instant,
        stack: &mut SipStack,
        call: CallHandle,
        body: Option<Body>,
    ) {
        match body {
            Some(b) => self.accept_answer(now, stack, call, &b),
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
            i.answered_at = Some(self.unix(now).as_secs_f64());
        });
        self.record_answered(call, now);
        self.start_media(call);
    }

    /// Starts the call's media task once the call is answered and the session negotiated.
    /// Without a runtime attached (sans-IO tests) there is no media task.
    pub(super) fn start_media(&mut self, call: CallHandle) {
        let (Some(commands), Some(pool)) = (self.commands.clone(), self.media_pool.clone()) else {
            return;
        };
        let recordings = self.media.recordings_dir.clone();
        let (rtp_timeout, jitter) = (self.media.rtp_timeout, self.media.jitter);
        let table = self.table.clone();
        // The recording is named after the call's start (whole Unix seconds).
        let started = table.read(call, |i| i.started_at as u64).unwrap_or(0);
        // Late offer or outbound: the backend format is known only now; the media starts
        // when the backend is ready.
        if self.calls.get(&call).is_some_and(|c| {
            c.answered
                && c.media.is_some()
                && matches!(c.agent.kind, AgentKind::Ai(_))
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
        let backend = if matches!(c.agent.kind, AgentKind::Ai(_)) {
            match std::mem::replace(&mut c.backend, BackendState::Taken) {
                BackendState::Ready(setup) => Some(*setup),
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
            (Some(dir), true) => Some(dir.join(recording_name(started, &c.call_id))),
            _ => None,
        };
        // An agent's own minimum, within the media maximum.
        let jitter = match c.agent.jitter_min {
            Some(min) => (min.min(jitter.1), jitter.1),
            None => jitter,
        };
        let start = MediaStart {
            call,
            sockets,
            negotiated,
            rtp_timeout,
            jitter,
            recording,
            webrtc: c.webrtc.take(),
        };
        let part = media::CallPartSpec {
            agent: c.agent.kind.clone(),
            table,
            commands,
            backend,
        };
        match media::spawn(&pool, start, part) {
            Ok(tx) => c.media_tx = Some(tx),
            Err(e) => tracing::error!(%call, error = %e, "cannot start media"),
        }
    }

    pub(super) fn on_ended(
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
            i.ended_at = Some(self.unix(now).as_secs_f64());
            i.end_reason = Some(reason_text);
        });
        self.record_finished(call, &reason, now);
        metrics::Metrics::inc(&metrics::Metrics::global().calls_ended);
        self.trim_table();
        if let Some(n) = c.notify.take() {
            let _ = n.send(OutboundResult {
                answered: c.answered,
                reason,
            });
        }
    }
}

impl CallHandler for CallManager {
    type Command = CallCommand;
    type Media = media::CallMedia;

    fn attach(&mut self, attached: Attached<CallCommand, media::CallMedia>) {
        let Attached {
            commands,
            media,
            wall,
        } = attached;
        self.commands = Some(commands);
        self.media_pool = Some(media);
        // Record ids stay unique across restarts: they start with the attach time, in
        // milliseconds (in seconds, a restart within the same second reused the ids of the
        // calls before it, and the new calls' records were refused as duplicates).
        if !self.record_prefix_fixed {
            self.record_prefix =
                u64::try_from(wall.unix(wall.instant()).as_millis()).unwrap_or(u64::MAX);
        }
        self.wall = Some(wall);
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
                if let Some(reason) = trunk
                    .as_deref()
                    .and_then(|t| self.trunk_refusal(now, t, true))
                {
                    tracing::info!(trunk = ?trunk, %reason, "outbound call refused by the trunk's limits");
                    let _ = reply.send(Err(super::DialError::TrunkBusy(reason)));
                    return;
                }
                let r = self
                    .dial_via(
                        now,
                        stack,
                        spec,
                        trunk.as_deref(),
                        agent,
                        Some(notify),
                        failover,
                    )
                    .map_err(super::DialError::Setup);
                let _ = reply.send(r);
            }
            CallCommand::Hangup { call, reply } => {
                let _ = reply.send(self.hangup(now, stack, call));
            }
            CallCommand::Drain { retry_after_s } => {
                if !stack.is_draining() {
                    tracing::info!(
                        active_calls = self.calls.len(),
                        retry_after_s,
                        "draining: new calls and OPTIONS get 503"
                    );
                }
                stack.drain(retry_after_s);
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
pub(super) fn party(value: &str) -> String {
    let uri = crate::sip::message::uri_of(value);
    crate::sip::message::uri_user(uri).unwrap_or(uri).to_owned()
}

/// A recording's file name: start time (Unix seconds) and the Call-ID, made file-system safe.
fn recording_name(secs: u64, call_id: &str) -> String {
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

/// A browser call's codec preference: Opus first when the call allows it at all (every
/// browser has it, and wideband is what a browser's microphone and the page's listener get
/// the most from), then the call's order.
fn browser_prefs(prefs: &crate::sdp::CodecPrefs) -> crate::sdp::CodecPrefs {
    use crate::sdp::Codec;
    let opus = prefs.contains(Codec::Opus).then_some(Codec::Opus);
    let rest = prefs.iter().filter(|c| *c != Codec::Opus);
    crate::sdp::CodecPrefs::new(opus.into_iter().chain(rest)).unwrap_or_else(|_| prefs.clone())
}
