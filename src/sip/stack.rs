//! The SIP stack: transactions, dialogs and registrations behind one sans-IO object.
//!
//! Drive contract: after [`SipStack::handle_message`], [`SipStack::handle_timeout`] or any
//! command, call [`SipStack::poll_output`] until it returns [`Output::Timeout`], sending each
//! [`Output::Transmit`] and handling each [`Output::Event`]. Call `handle_timeout` at (or after)
//! the returned deadline.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::auth::{Credentials, DigestClient, select_challenge};
use super::builder::{
    ACCEPT, ALLOW, RequestSpec, SUPPORTED, build_request, build_response, reason_phrase,
};
use super::dialog::{Dialog, DialogId, Role, record_routes};
use super::message::{self, BRANCH_MAGIC_COOKIE, Limits, Method, Msg};
use super::options::{CallOptions, PeerRel100, Rel100, TAG_100REL};
use super::registration::{
    Registration, RegistrationAction, RegistrationConfig, RegistrationState,
};
use super::transaction::{
    ClientState, ClientTransaction, ServerState, ServerTransaction, TimerConfig, TxAction, TxKind,
};
use super::transport::{Peer, Transmit, Transport};
use super::{Body, CallHandle, CallId, RegistrationId};

/// The longest a session-timer expiry waits before the interval ends (RFC 4028 §10).
pub const SESSION_EXPIRY_MARGIN: Duration = Duration::from_secs(32);
/// The smallest Min-SE (RFC 4028 §5).
pub const MIN_SE_FLOOR: Duration = Duration::from_secs(90);
/// The most INVITEs sent for one call while answering digest challenges.
pub const MAX_AUTH_ATTEMPTS: u32 = 3;
/// How long the stack keeps an ended call's identifiers to absorb late messages.
pub const ENDED_LINGER: Duration = Duration::from_secs(4);
/// Default [`StackConfig::max_transactions`]. A non-INVITE transaction over UDP lives 64·T1
/// = 32 s after its response (RFC 3261 §17.2.2, Timer J), so half of this admits about 500
/// new out-of-dialog requests a second, sustained.
pub const DEFAULT_MAX_TRANSACTIONS: usize = 32_768;
/// `Retry-After` (RFC 3261 §20.33) of the stateless 503 an INVITE gets under overload.
pub const OVERLOAD_RETRY_AFTER_S: u32 = 5;
/// A map whose capacity exceeds this many times its length (and [`SHRINK_MIN`]) is shrunk,
/// so that memory taken by a burst of transactions goes back once they end.
const SHRINK_FACTOR: usize = 4;
/// Maps smaller than this are never shrunk.
const SHRINK_MIN: usize = 1024;

/// What to answer when the call limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitResponse {
    /// 486 Busy Here.
    Busy,
    /// 503 Service Unavailable with Retry-After (RFC 3261 §21.5.4).
    Unavailable {
        /// Seconds in Retry-After.
        retry_after_s: u32,
    },
}

/// Stack configuration.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// T1, T2, T4.
    pub timers: TimerConfig,
    /// Message size and header count limits.
    pub limits: Limits,
    /// User-Agent / Server value.
    pub user_agent: String,
    /// Listening addresses, per transport (their ports go into Via and Contact).
    pub listen: Vec<(Transport, SocketAddr)>,
    /// The IP to advertise (an external IP behind NAT); otherwise derived per message.
    pub advertised_ip: Option<IpAddr>,
    /// The IP to advertise towards non-loopback peers when nothing better is known.
    pub default_ip: IpAddr,
    /// The most concurrent calls.
    pub max_calls: usize,
    /// What to answer beyond `max_calls`.
    pub at_limit: LimitResponse,
    /// Our session interval (RFC 4028), `None` to not ask for session timers.
    pub session_expires: Option<Duration>,
    /// Our Min-SE.
    pub min_se: Duration,
    /// The extensions of calls that get no options of their own (neither
    /// [`OutgoingCall::options`] nor [`SipStack::set_call_options`]).
    pub call_options: CallOptions,
    /// The most live server transactions. At the limit a new INVITE gets a stateless 503 and
    /// other new requests are dropped; out-of-dialog requests other than INVITE (OPTIONS,
    /// REGISTER, garbage-like traffic) may fill only half, so that a flood of them leaves
    /// room for calls and for the BYEs that end them.
    pub max_transactions: usize,
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            timers: TimerConfig::default(),
            limits: Limits::default(),
            user_agent: "voxline".to_string(),
            listen: vec![(
                Transport::Udp,
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060),
            )],
            advertised_ip: None,
            default_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            max_calls: 1000,
            at_limit: LimitResponse::Unavailable { retry_after_s: 30 },
            session_expires: Some(Duration::from_secs(1800)),
            min_se: MIN_SE_FLOOR,
            call_options: CallOptions::default(),
            max_transactions: DEFAULT_MAX_TRANSACTIONS,
        }
    }
}

/// One output of the stack.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Bytes to send.
    Transmit(Transmit),
    /// Something for the call layer.
    Event(SipEvent),
    /// Nothing more now; call `handle_timeout` at this instant.
    Timeout(Instant),
}

/// Which way a call was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallDirection {
    /// The peer called us.
    Inbound,
    /// We called the peer.
    Outbound,
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The peer sent BYE.
    RemoteBye,
    /// We sent BYE.
    LocalBye,
    /// The caller cancelled before answer.
    Cancelled,
    /// We rejected or stopped the inbound call with this final status.
    Rejected(u16),
    /// The outbound call failed with this final status (408 for no answer at all).
    Failed(u16),
    /// The ACK for our 2xx never came (RFC 3261 §13.3.1.4); we sent BYE.
    AckTimeout,
    /// The session timer expired without refresh (RFC 4028 §10); we sent BYE.
    SessionExpired,
    /// An in-dialog request timed out or got 481/408 (RFC 5057); we ended the dialog.
    DialogLost(u16),
}

/// A new inbound call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCall {
    /// The handle to answer with.
    pub call: CallHandle,
    /// Call-ID.
    pub call_id: CallId,
    /// Request-URI.
    pub request_uri: String,
    /// From value.
    pub from: String,
    /// To value.
    pub to: String,
    /// Where it came from.
    pub source: Peer,
    /// The offer, if any (none: late offer).
    pub body: Option<Body>,
}

/// Events for the call layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipEvent {
    /// A new INVITE: answer with [`SipStack::respond`].
    IncomingCall(IncomingCall),
    /// The ACK for our 2xx arrived (initial INVITE or re-INVITE); a late-offer answer is in it.
    Acked {
        /// Call.
        call: CallHandle,
        /// The ACK's body.
        body: Option<Body>,
    },
    /// Provisional response to our INVITE.
    Progress {
        /// Call.
        call: CallHandle,
        /// Status (180, 183…).
        status: u16,
        /// Early media answer, if any.
        body: Option<Body>,
    },
    /// Our INVITE was answered (and ACKed).
    Answered {
        /// Call.
        call: CallHandle,
        /// The answer.
        body: Option<Body>,
    },
    /// The peer sent a re-INVITE or UPDATE with (or without) an offer: answer with
    /// [`SipStack::respond_modify`].
    Modify {
        /// Call.
        call: CallHandle,
        /// The offer, if any.
        body: Option<Body>,
    },
    /// The result of our re-INVITE.
    ModifyResult {
        /// Call.
        call: CallHandle,
        /// Final status.
        status: u16,
        /// The answer, on 2xx.
        body: Option<Body>,
    },
    /// INFO received (answered 200 already), e.g. DTMF relay.
    Info {
        /// Call.
        call: CallHandle,
        /// The body.
        body: Option<Body>,
    },
    /// Progress of a REFER we sent (the REFER's own response, then NOTIFY sipfrags).
    ReferProgress {
        /// Call.
        call: CallHandle,
        /// The status: the REFER's response code, or the sipfrag's status code.
        status: u16,
        /// True when no more reports will come.
        done: bool,
    },
    /// The call is over.
    Ended {
        /// Call.
        call: CallHandle,
        /// Why.
        reason: EndReason,
    },
    /// A registration changed state.
    Registration {
        /// Which.
        id: RegistrationId,
        /// Its new state.
        state: RegistrationState,
    },
}

/// An outbound call to place.
#[derive(Debug, Clone)]
pub struct OutgoingCall {
    /// Request-URI.
    pub request_uri: String,
    /// Our From URI (`sip:voxline@host`).
    pub from_uri: String,
    /// Display name in From.
    pub from_display: Option<String>,
    /// To URI.
    pub to_uri: String,
    /// Where to send the INVITE.
    pub next_hop: Peer,
    /// Route values (outbound proxy, `;lr`).
    pub routes: Vec<String>,
    /// The offer.
    pub body: Option<Body>,
    /// Credentials for 401/407 challenges.
    pub credentials: Option<Credentials>,
    /// The local IP to advertise, if the caller knows better than the stack.
    pub local_ip: Option<IpAddr>,
    /// Extra headers.
    pub extra_headers: Vec<(&'static str, String)>,
    /// The extensions this call uses (its trunk's); `None`: the stack's
    /// [`StackConfig::call_options`].
    pub options: Option<CallOptions>,
}

/// Command errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StackError {
    /// No such call (ended or never existed).
    #[error("no such call {0}")]
    NoSuchCall(CallHandle),
    /// The call is not in a state that allows this.
    #[error("{0} cannot do this in its current state")]
    BadState(CallHandle),
    /// Another offer/answer exchange is in progress (RFC 3261 §14.1).
    #[error("a re-INVITE is already pending on {0}")]
    Pending(CallHandle),
    /// No such registration.
    #[error("no such registration")]
    NoSuchRegistration,
    /// A status code outside 100–699 or wrong for the request.
    #[error("status {0} not allowed here")]
    BadStatus(u16),
    /// The stack refused the call with this status (see [`SipStack::set_call_options`]).
    #[error("refused with {0}")]
    Refused(u16),
}

/// Counters for metrics: what was received, dropped, rejected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackCounters {
    /// Messages parsed successfully.
    pub messages_in: u64,
    /// Messages dropped as unparseable, without a reply.
    pub dropped_malformed: u64,
    /// Malformed requests answered with 400/501/513.
    pub rejected_malformed: u64,
    /// Responses that matched no transaction.
    pub stray_responses: u64,
    /// Request retransmissions absorbed by server transactions.
    pub retransmissions_absorbed: u64,
    /// Calls refused at the call limit.
    pub refused_at_limit: u64,
    /// New requests refused because [`StackConfig::max_transactions`] were live: INVITEs
    /// answered 503 without state, other requests dropped (their senders retransmit).
    pub dropped_overload: u64,
    /// Live server transactions (a gauge, read when the counters are taken).
    pub server_transactions: u64,
    /// Live client transactions (a gauge).
    pub client_transactions: u64,
    /// Server and client transactions created since the start.
    pub transactions_started: u64,
}

// ----- internal types -----

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ServerKey {
    Rfc3261 {
        branch: String,
        sent_by: String,
        method: u8,
    },
    Rfc2543 {
        call_id: String,
        from_tag: String,
        cseq: u32,
        via: String,
        method: u8,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    branch: String,
    /// The method as its enum discriminant (`rsip::Method` is not `Hash`).
    method: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum TimerRef {
    Server(u64),
    Client(u64),
    Call(CallHandle),
    Reg(RegistrationId),
}

#[derive(Debug)]
struct ServerEntry {
    tx: ServerTransaction,
    key: ServerKey,
    peer: Peer,
    req: Msg,
    call: Option<CallHandle>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Invite(CallHandle),
    ReInvite(CallHandle),
    Bye(CallHandle),
    Cancel,
    Refer(CallHandle),
    Update(CallHandle),
    Other,
    /// An OPTIONS keepalive/qualify probe.
    Keepalive,
    Register(RegistrationId),
}

#[derive(Debug)]
struct ClientEntry {
    tx: ClientTransaction,
    key: ClientKey,
    peer: Peer,
    purpose: Purpose,
    /// For INVITE: what a non-2xx ACK needs (§17.1.1.3).
    ack_template: Option<AckTemplate>,
    /// For INVITE: the ACK sent for the 2xx, resent on 2xx retransmissions.
    ack_2xx: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
struct AckTemplate {
    uri: String,
    via: String,
    from: String,
    to: String,
    call_id: String,
    cseq: u32,
    routes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// Before a final response.
    Early,
    /// 2xx sent or received, dialog confirmed (UAS waits for ACK in `pending_2xx`).
    Confirmed,
    /// BYE sent, waiting for its response.
    Ending,
    /// Over; kept briefly.
    Ended,
}

#[derive(Debug, Clone)]
struct Retransmit {
    bytes: Vec<u8>,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

#[derive(Debug, Clone)]
struct SessionTimer {
    interval: Duration,
    we_refresh: bool,
    deadline: Instant,
}

#[derive(Debug)]
struct UacInvite {
    spec: OutgoingCall,
    client: u64,
    cseq: u32,
    digest: DigestClient,
    auth_attempts: u32,
    got_provisional: bool,
    hangup_requested: bool,
    acked_prack: Vec<u32>,
}

#[derive(Debug)]
struct Call {
    direction: CallDirection,
    state: CallState,
    dialog: Dialog,
    /// UAS: the server transaction of the INVITE being answered (initial or re-INVITE).
    server_invite: Option<u64>,
    /// UAS: the UPDATE awaiting the TU's answer.
    server_update: Option<u64>,
    /// UAS: 2xx retransmission until the ACK (§13.3.1.4).
    pending_2xx: Option<Retransmit>,
    /// UAS: a reliable provisional response awaiting PRACK (RFC 3262 §3).
    reliable: Option<(u32, Retransmit)>,
    rseq: u32,
    /// UAS: what the INVITE said about 100rel.
    peer_rel100: PeerRel100,
    /// The extensions this call uses.
    options: CallOptions,
    /// UAC state of the initial INVITE.
    uac: Option<UacInvite>,
    /// Our outstanding re-INVITE.
    client_reinvite: Option<u64>,
    session: Option<SessionTimer>,
    peer_allows_update: bool,
    last_local_body: Option<Body>,
    bye_after_ack: bool,
    linger_until: Option<Instant>,
    initial_ack_seen: bool,
}

/// The sans-IO SIP stack.
#[derive(Debug)]
pub struct SipStack {
    config: StackConfig,
    rng: StdRng,
    now: Instant,
    out: VecDeque<Output>,
    timers: BinaryHeap<Reverse<(Instant, TimerRef)>>,
    next_id: u64,
    servers: HashMap<u64, ServerEntry>,
    server_index: HashMap<ServerKey, u64>,
    clients: HashMap<u64, ClientEntry>,
    client_index: HashMap<ClientKey, u64>,
    calls: HashMap<CallHandle, Call>,
    dialogs: HashMap<(String, String), CallHandle>,
    /// UAS calls by (Call-ID, From tag) before/after the To tag is known to the peer.
    uas_index: HashMap<(String, String), CallHandle>,
    regs: HashMap<RegistrationId, Registration>,
    active_calls: usize,
    counters: StackCounters,
    /// New requests are being refused (see [`StackConfig::max_transactions`]).
    overloaded: bool,
}

impl SipStack {
    /// A new stack. `seed` seeds tags, branches and Call-IDs (tests pass a fixed seed).
    pub fn new(config: StackConfig, seed: u64, now: Instant) -> Self {
        SipStack {
            config,
            rng: StdRng::seed_from_u64(seed),
            now,
            out: VecDeque::new(),
            timers: BinaryHeap::new(),
            next_id: 1,
            servers: HashMap::new(),
            server_index: HashMap::new(),
            clients: HashMap::new(),
            client_index: HashMap::new(),
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            uas_index: HashMap::new(),
            regs: HashMap::new(),
            active_calls: 0,
            counters: StackCounters::default(),
            overloaded: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &StackConfig {
        &self.config
    }

    /// Counters for metrics.
    pub fn counters(&self) -> StackCounters {
        StackCounters {
            server_transactions: self.servers.len() as u64,
            client_transactions: self.clients.len() as u64,
            ..self.counters
        }
    }

    /// Calls not yet ended.
    pub fn active_calls(&self) -> usize {
        self.active_calls
    }

    /// The IP our Contact advertises in a call's dialog (for the SDP `c=` line).
    pub fn local_ip(&self, call: CallHandle) -> Option<IpAddr> {
        self.calls
            .get(&call)
            .and_then(|c| contact_ip(&c.dialog.local_contact))
    }

    /// Live transactions (server, client), for tests and metrics.
    pub fn transaction_count(&self) -> (usize, usize) {
        (self.servers.len(), self.clients.len())
    }

    /// The SIP Call-ID of a call.
    pub fn call_id(&self, call: CallHandle) -> Option<CallId> {
        self.calls
            .get(&call)
            .map(|c| CallId(c.dialog.id.call_id.clone()))
    }

    /// The next output. Poll until [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        // Drop stale heap entries whose owner is gone, so the deadline is meaningful.
        while let Some(Reverse((t, r))) = self.timers.peek().copied() {
            if self.owner_deadline(r).is_some() {
                return Output::Timeout(t);
            }
            self.timers.pop();
        }
        Output::Timeout(self.now + Duration::from_secs(3600))
    }

    /// Feeds a received message (a UDP datagram, or one message framed from a TCP stream).
    pub fn handle_message(&mut self, now: Instant, peer: Peer, bytes: &[u8]) {
        self.now = now;
        let msg = match message::parse(bytes, &self.config.limits) {
            Ok(m) => m,
            Err(rej) => {
                match rej.reply {
                    Some(reply) => {
                        self.counters.rejected_malformed += 1;
                        tracing::debug!(%peer, error = %rej.error, "rejected malformed request");
                        self.send(peer, reply);
                    }
                    None => {
                        self.counters.dropped_malformed += 1;
                        tracing::trace!(%peer, error = %rej.error, "dropped malformed message");
                    }
                }
                return;
            }
        };
        self.counters.messages_in += 1;
        if msg.request().is_some() {
            self.on_request(now, peer, msg);
        } else {
            self.on_response(now, peer, msg);
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.compact_timers();
        let mut due = Vec::new();
        while let Some(Reverse((t, r))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            due.push(r);
        }
        due.sort();
        due.dedup();
        for r in due {
            match r {
                TimerRef::Server(id) => self.server_timeout(now, id),
                TimerRef::Client(id) => self.client_timeout(now, id),
                TimerRef::Call(h) => self.call_timeout(now, h),
                TimerRef::Reg(id) => self.reg_timeout(now, id),
            }
        }
        self.shrink_after_burst();
    }

    // ===== UAS commands =====

    /// Answers the initial INVITE of an inbound call: 1xx (180/183), 2xx (with the answer, or
    /// with an offer for a late-offer INVITE) or 3xx–6xx to reject.
    pub fn respond(
        &mut self,
        now: Instant,
        call: CallHandle,
        status: u16,
        body: Option<Body>,
    ) -> Result<(), StackError> {
        self.respond_with(now, call, status, None, Vec::new(), body)
    }

    /// Like [`Self::respond`] with a reason phrase and extra headers.
    pub fn respond_with(
        &mut self,
        now: Instant,
        handle: CallHandle,
        status: u16,
        reason: Option<&str>,
        extra: Vec<(&'static str, String)>,
        body: Option<Body>,
    ) -> Result<(), StackError> {
        self.now = now;
        if !(101..700).contains(&status) {
            return Err(StackError::BadStatus(status));
        }
        let call = self.unanswered_inbound(handle)?;
        let tx_id = call.server_invite.ok_or(StackError::BadState(handle))?;
        self.respond_invite_tx(now, handle, tx_id, status, reason, extra, body, true);
        Ok(())
    }

    /// Gives an inbound call its own extensions (its trunk's), replacing the stack's
    /// [`StackConfig::call_options`]. Call it on [`SipEvent::IncomingCall`], before the first
    /// response. When the INVITE's 100rel use cannot meet `options` the stack refuses the call
    /// itself — 420 (it requires 100rel, `options` disable it) or 421 (`options` require
    /// 100rel, it does not support it) — and returns `Err(Refused(status))`.
    pub fn set_call_options(
        &mut self,
        now: Instant,
        handle: CallHandle,
        options: CallOptions,
    ) -> Result<(), StackError> {
        self.now = now;
        let call = self.unanswered_inbound(handle)?;
        call.options = options;
        match options.rel100_refusal(call.peer_rel100) {
            Some((status, header)) => {
                self.respond_with(now, handle, status, None, vec![header], None)?;
                Err(StackError::Refused(status))
            }
            None => Ok(()),
        }
    }

    /// An inbound call not answered yet: what the initial-INVITE commands act on.
    fn unanswered_inbound(&mut self, handle: CallHandle) -> Result<&mut Call, StackError> {
        let call = self
            .calls
            .get_mut(&handle)
            .ok_or(StackError::NoSuchCall(handle))?;
        if call.direction != CallDirection::Inbound || call.state != CallState::Early {
            return Err(StackError::BadState(handle));
        }
        Ok(call)
    }

    /// Answers the peer's re-INVITE or UPDATE reported by [`SipEvent::Modify`].
    pub fn respond_modify(
        &mut self,
        now: Instant,
        handle: CallHandle,
        status: u16,
        body: Option<Body>,
    ) -> Result<(), StackError> {
        self.now = now;
        let call = self
            .calls
            .get_mut(&handle)
            .ok_or(StackError::NoSuchCall(handle))?;
        if let Some(tx_id) = call.server_update.take() {
            if (200..300).contains(&status)
                && let Some(b) = &body
            {
                call.last_local_body = Some(b.clone());
            }
            let extra = self.session_headers(handle, false);
            self.respond_server(now, tx_id, status, None, extra, body.as_ref(), Some(handle));
            return Ok(());
        }
        let tx_id = call.server_invite.ok_or(StackError::BadState(handle))?;
        if call.state != CallState::Confirmed {
            return Err(StackError::BadState(handle));
        }
        self.respond_invite_tx(now, handle, tx_id, status, None, Vec::new(), body, false);
        Ok(())
    }

    // ===== commands for either side =====

    /// Ends a call the right way for its state: BYE when confirmed, CANCEL for our INVITE
    /// before answer, 480 for an unanswered inbound INVITE.
    pub fn hangup(&mut self, now: Instant, handle: CallHandle) -> Result<(), StackError> {
        self.now = now;
        let call = self
            .calls
            .get_mut(&handle)
            .ok_or(StackError::NoSuchCall(handle))?;
        match (call.direction, call.state) {
            (_, CallState::Ended | CallState::Ending) => Ok(()),
            (CallDirection::Inbound, CallState::Early) => self.respond(now, handle, 480, None),
            (CallDirection::Outbound, CallState::Early) => {
                let Some(uac) = call.uac.as_mut() else {
                    return Err(StackError::BadState(handle));
                };
                uac.hangup_requested = true;
                if uac.got_provisional {
                    self.send_cancel(now, handle);
                }
                Ok(())
            }
            (_, CallState::Confirmed) => {
                if call.pending_2xx.is_some() && !call.initial_ack_seen {
                    // §15: no BYE before the ACK for our 2xx (or its timeout).
                    call.bye_after_ack = true;
                    return Ok(());
                }
                self.send_bye(now, handle, EndReason::LocalBye);
                Ok(())
            }
        }
    }

    /// Sends a re-INVITE with a new offer (hold, resume, codec change, refresh).
    pub fn reinvite(
        &mut self,
        now: Instant,
        handle: CallHandle,
        body: Body,
    ) -> Result<(), StackError> {
        self.now = now;
        let call = self
            .calls
            .get(&handle)
            .ok_or(StackError::NoSuchCall(handle))?;
        if call.state != CallState::Confirmed || call.pending_2xx.is_some() {
            return Err(StackError::BadState(handle));
        }
        if call.client_reinvite.is_some() || call.server_invite.is_some() {
            return Err(StackError::Pending(handle));
        }
        self.send_reinvite(now, handle, Some(body));
        Ok(())
    }

    /// Sends INFO with a body (for example `application/dtmf-relay`).
    pub fn send_info(
        &mut self,
        now: Instant,
        handle: CallHandle,
        body: Body,
    ) -> Result<(), StackError> {
        self.now = now;
        self.in_dialog_request(
            now,
            handle,
            Method::Info,
            Vec::new(),
            Some(&body),
            Purpose::Other,
        )
    }

    /// Sends REFER for a blind transfer to `target` (RFC 3515). Progress comes as
    /// [`SipEvent::ReferProgress`].
    pub fn refer(
        &mut self,
        now: Instant,
        handle: CallHandle,
        target: &str,
    ) -> Result<(), StackError> {
        self.now = now;
        let call = self
            .calls
            .get(&handle)
            .ok_or(StackError::NoSuchCall(handle))?;
        if call.state != CallState::Confirmed {
            return Err(StackError::BadState(handle));
        }
        let referred_by = format!("<{}>", message::uri_of(&call.dialog.local_uri));
        let extra = vec![
            ("Refer-To", format!("<{target}>")),
            ("Referred-By", referred_by),
        ];
        self.in_dialog_request(
            now,
            handle,
            Method::Refer,
            extra,
            None,
            Purpose::Refer(handle),
        )
    }

    // ===== UAC =====

    /// Places an outbound call. Its progress comes as events for the returned handle.
    pub fn invite(&mut self, now: Instant, spec: OutgoingCall) -> CallHandle {
        self.now = now;
        let handle = self.new_call_handle();
        let local_tag = self.new_tag();
        let local_addr = self.local_addr(
            spec.next_hop.transport,
            spec.next_hop.addr.ip(),
            spec.local_ip,
        );
        let call_id = format!("{}@{}", self.random_hex(16), local_addr.ip());
        let from = match &spec.from_display {
            Some(d) => format!(
                "\"{}\" <{}>;tag={local_tag}",
                d.replace('"', ""),
                spec.from_uri
            ),
            None => format!("<{}>;tag={local_tag}", spec.from_uri),
        };
        let contact = contact_for(local_addr, spec.next_hop.transport);
        let dialog = Dialog {
            id: DialogId {
                call_id: call_id.clone(),
                local_tag: local_tag.clone(),
                remote_tag: String::new(),
            },
            role: Role::Uac,
            local_uri: from,
            remote_uri: format!("<{}>", spec.to_uri),
            local_seq: 1,
            remote_seq: None,
            remote_target: spec.request_uri.clone(),
            route_set: spec.routes.clone(),
            local_contact: contact,
            peer: spec.next_hop,
        };
        self.dialogs.insert((call_id, local_tag), handle);
        let call = Call {
            direction: CallDirection::Outbound,
            state: CallState::Early,
            dialog,
            server_invite: None,
            server_update: None,
            pending_2xx: None,
            reliable: None,
            rseq: 0,
            peer_rel100: PeerRel100::default(),
            options: spec.options.unwrap_or(self.config.call_options),
            uac: None,
            client_reinvite: None,
            session: None,
            peer_allows_update: false,
            last_local_body: spec.body.clone(),
            bye_after_ack: false,
            linger_until: None,
            initial_ack_seen: true,
        };
        self.calls.insert(handle, call);
        self.active_calls += 1;
        let client = self.send_initial_invite(now, handle, &spec, 1, None);
        if let Some(call) = self.calls.get_mut(&handle) {
            call.uac = Some(UacInvite {
                spec,
                client,
                cseq: 1,
                digest: DigestClient::new(),
                auth_attempts: 0,
                got_provisional: false,
                hangup_requested: false,
                acked_prack: Vec::new(),
            });
        }
        handle
    }

    /// Starts a registration; it refreshes itself until [`Self::unregister`].
    pub fn register(&mut self, now: Instant, config: RegistrationConfig) -> RegistrationId {
        self.now = now;
        self.next_id += 1;
        let id = RegistrationId(self.next_id);
        let call_id = format!("{}@{}", self.random_hex(16), config.local_addr.ip());
        let tag = self.new_tag();
        let reg = Registration::new(id, config, call_id, tag, now);
        self.regs.insert(id, reg);
        self.send_register(now, id);
        id
    }

    /// Sends an out-of-dialog OPTIONS to `peer` (keepalive / qualify, RFC 3261 §11). It keeps
    /// NAT bindings open; a probe that gets no answer is logged.
    #[doc(alias = "qualify")]
    pub fn send_options(&mut self, now: Instant, peer: Peer, uri: &str) {
        self.now = now;
        let branch = self.new_branch();
        let local = self.local_addr(peer.transport, peer.addr.ip(), None);
        let call_id = format!("{}@{}", self.random_hex(16), local.ip());
        let from = format!(
            "<sip:voxline@{}>;tag={}",
            fmt_host_port(local),
            self.new_tag()
        );
        let to = format!("<{uri}>");
        let bytes = build_request(&RequestSpec {
            method: Method::Options,
            uri,
            via: via_value(peer.transport, local, &branch),
            from: &from,
            to: &to,
            call_id: &call_id,
            cseq: 1,
            contact: None,
            routes: &[],
            extra: vec![("Accept", "application/sdp".to_string())],
            body: None,
            user_agent: &self.config.user_agent,
        });
        self.start_client(
            now,
            peer,
            Method::Options,
            branch,
            bytes,
            Purpose::Keepalive,
            None,
        );
    }

    /// Removes a binding (REGISTER with Expires: 0).
    pub fn unregister(&mut self, now: Instant, id: RegistrationId) -> Result<(), StackError> {
        self.now = now;
        let reg = self
            .regs
            .get_mut(&id)
            .ok_or(StackError::NoSuchRegistration)?;
        reg.unregistering = true;
        if matches!(
            reg.state,
            RegistrationState::Registered { .. } | RegistrationState::Registering
        ) {
            self.send_register(now, id);
        } else {
            reg.next_send = None;
        }
        Ok(())
    }

    /// The current state of a registration.
    pub fn registration_state(&self, id: RegistrationId) -> Option<&RegistrationState> {
        self.regs.get(&id).map(|r| &r.state)
    }

    // ===== request handling =====

    fn on_request(&mut self, now: Instant, peer: Peer, mut msg: Msg) {
        annotate_via(&mut msg, peer);
        let Some(method) = msg.request().map(|r| r.method) else {
            return;
        };
        match method {
            Method::Ack => return self.on_ack(now, peer, msg),
            Method::Cancel => return self.on_cancel(now, peer, msg),
            _ => {}
        }
        let key = server_key(&msg, method);
        if let Some(id) = self.server_index.get(&key).copied() {
            self.counters.retransmissions_absorbed += 1;
            if let Some(e) = self.servers.get_mut(&id) {
                let acts = e.tx.handle_retransmission();
                let p = e.peer;
                self.apply_server_actions(id, p, acts);
            }
            return;
        }
        if !self.admit(method, msg.to_tag.is_some()) {
            self.refuse_overloaded(now, peer, &msg, method);
            return;
        }
        let kind = if method == Method::Invite {
            TxKind::Invite
        } else {
            TxKind::NonInvite
        };
        let tx = ServerTransaction::new(kind, peer.transport.is_reliable(), self.config.timers);
        let id = self.alloc_id();
        self.server_index.insert(key.clone(), id);
        self.counters.transactions_started += 1;
        self.servers.insert(
            id,
            ServerEntry {
                tx,
                key,
                peer,
                req: msg,
                call: None,
            },
        );

        let Some(entry) = self.servers.get(&id) else {
            return;
        };
        let to_tag = entry.req.to_tag.clone();
        if method == Method::Invite {
            // 100 Trying at once (§17.2.1), so the peer stops retransmitting.
            self.respond_server(now, id, 100, None, Vec::new(), None, None);
        }
        match to_tag {
            Some(tag) => self.on_in_dialog_request(now, id, method, tag),
            None => self.on_out_of_dialog_request(now, id, method),
        }
    }

    /// Whether a new request may start a server transaction (see
    /// [`StackConfig::max_transactions`]).
    fn admit(&mut self, method: Method, in_dialog: bool) -> bool {
        let live = self.servers.len();
        let max = self.config.max_transactions;
        let admitted = if in_dialog || method == Method::Invite {
            live < max
        } else {
            live < max / 2
        };
        if !admitted && !self.overloaded {
            self.overloaded = true;
            tracing::warn!(
                live,
                max_transactions = max,
                "SIP overload: new requests are dropped (INVITE: 503) until transactions end"
            );
        }
        admitted
    }

    /// A request refused under overload: 503 without state for an INVITE (so that a caller's
    /// proxy tries elsewhere at once), nothing for the rest.
    fn refuse_overloaded(&mut self, now: Instant, peer: Peer, msg: &Msg, method: Method) {
        self.now = now;
        self.counters.dropped_overload += 1;
        if method == Method::Invite {
            let tag = self.new_tag();
            let extra = vec![
                ("Retry-After", OVERLOAD_RETRY_AFTER_S.to_string()),
                ("Server", self.config.user_agent.clone()),
            ];
            let bytes = build_response(msg, 503, reason_phrase(503), Some(&tag), &extra, None);
            self.send(peer, bytes);
        }
    }

    /// Gives memory back after a burst: shrinks the transaction maps and the timer heap when
    /// they are mostly empty, and notes the end of an overload.
    fn shrink_after_burst(&mut self) {
        fn oversized(len: usize, capacity: usize) -> bool {
            capacity > SHRINK_MIN && capacity > len.saturating_mul(SHRINK_FACTOR)
        }
        if oversized(self.servers.len(), self.servers.capacity()) {
            self.servers.shrink_to(self.servers.len() * 2);
            self.server_index.shrink_to(self.server_index.len() * 2);
        }
        if oversized(self.clients.len(), self.clients.capacity()) {
            self.clients.shrink_to(self.clients.len() * 2);
            self.client_index.shrink_to(self.client_index.len() * 2);
        }
        if oversized(self.timers.len(), self.timers.capacity()) {
            self.timers.shrink_to(self.timers.len() * 2);
        }
        if oversized(self.out.len(), self.out.capacity()) {
            self.out.shrink_to(self.out.len() * 2);
        }
        if self.overloaded && self.servers.len() < self.config.max_transactions / 4 {
            self.overloaded = false;
            tracing::info!(
                live = self.servers.len(),
                dropped_total = self.counters.dropped_overload,
                "SIP overload over"
            );
        }
    }

    fn on_out_of_dialog_request(&mut self, now: Instant, id: u64, method: Method) {
        match method {
            Method::Invite => self.on_initial_invite(now, id),
            Method::Options => {
                if self.refuse_unsupported(now, id) {
                    return;
                }
                let extra = vec![
                    ("Allow", ALLOW.to_string()),
                    ("Accept", ACCEPT.to_string()),
                    ("Supported", SUPPORTED.to_string()),
                ];
                self.respond_server(now, id, 200, None, extra, None, None);
            }
            Method::Bye
            | Method::Info
            | Method::Update
            | Method::PRack
            | Method::Notify
            | Method::Refer => {
                self.respond_server(now, id, 481, None, Vec::new(), None, None);
            }
            _ => {
                let extra = vec![("Allow", ALLOW.to_string())];
                self.respond_server(now, id, 405, None, extra, None, None);
            }
        }
    }

    /// The UAS checks of RFC 3261 §8.2.2 that do not depend on the method: a Request-URI of
    /// a scheme voxline serves (416), and only extensions it supports in Require (420, with
    /// Unsupported; Proxy-Require is for proxies). Answers and returns true when one fails.
    fn refuse_unsupported(&mut self, now: Instant, id: u64) -> bool {
        let Some(req) = self.servers.get(&id).map(|e| &e.req) else {
            return true;
        };
        let uri = req.request().map(|r| r.uri.to_string()).unwrap_or_default();
        if !(uri.starts_with("sip:") || uri.starts_with("sips:") || uri.starts_with("tel:")) {
            self.respond_server(now, id, 416, None, Vec::new(), None, None);
            return true;
        }
        let unsupported: Vec<String> = message::headers_named(req.headers(), "Require")
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_string())
            .filter(|t| {
                !t.is_empty()
                    && !t.eq_ignore_ascii_case("100rel")
                    && !t.eq_ignore_ascii_case("timer")
            })
            .collect();
        if !unsupported.is_empty() {
            let extra = vec![("Unsupported", unsupported.join(", "))];
            self.respond_server(now, id, 420, None, extra, None, None);
            return true;
        }
        false
    }

    fn on_initial_invite(&mut self, now: Instant, id: u64) {
        let Some(entry) = self.servers.get(&id) else {
            return;
        };
        let req = &entry.req;
        let peer = entry.peer;
        let from_tag = req.from_tag.clone().unwrap_or_default();
        // A retransmission arriving after the transaction is gone, or a merged request.
        if let Some(h) = self
            .uas_index
            .get(&(req.call_id.clone(), from_tag.clone()))
            .copied()
        {
            let same_seq =
                self.calls.get(&h).and_then(|c| c.dialog.remote_seq) == Some(req.cseq.seq);
            if same_seq {
                // Absorb: the 2xx is being retransmitted by the call anyway.
                self.forget_server(id);
                return;
            }
            self.respond_server(now, id, 482, None, Vec::new(), None, None);
            return;
        }
        // Max-Forwards (§16.3 step 3 applies to UAs answering as endpoints: 483 at zero).
        if req
            .header("Max-Forwards")
            .and_then(|v| v.trim().parse::<u32>().ok())
            == Some(0)
        {
            self.respond_server(now, id, 483, None, Vec::new(), None, None);
            return;
        }
        if self.refuse_unsupported(now, id) {
            return;
        }
        let Some(req) = self.servers.get(&id).map(|e| &e.req) else {
            return;
        };
        // Content processing (§8.2.3): a body voxline cannot read gets 415, a request that
        // accepts no answer voxline can give gets 406; both say what voxline accepts.
        let body_type_ok = req.body().is_empty()
            || req
                .content_type()
                .is_some_and(|t| message::media_type_is(t, ACCEPT));
        let accept_ok = message::headers_named(req.headers(), "Accept")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .fold(None, |ok: Option<bool>, t| {
                let this = ["application/sdp", "application/*", "*/*"]
                    .iter()
                    .any(|m| message::media_type_is(t, m));
                Some(ok.unwrap_or(false) || this)
            })
            .unwrap_or(true);
        if !body_type_ok || !accept_ok {
            let status = if body_type_ok { 406 } else { 415 };
            let extra = vec![("Accept", ACCEPT.to_string())];
            self.respond_server(now, id, status, None, extra, None, None);
            return;
        }
        // Session-Expires below our Min-SE: 422 (RFC 4028 §8.1).
        if let Some(se) = session_expires(req)
            && Duration::from_secs(u64::from(se.0)) < self.config.min_se
        {
            let extra = vec![("Min-SE", self.config.min_se.as_secs().to_string())];
            self.respond_server(now, id, 422, None, extra, None, None);
            return;
        }
        if self.active_calls >= self.config.max_calls {
            self.counters.refused_at_limit += 1;
            match self.config.at_limit {
                LimitResponse::Busy => {
                    self.respond_server(now, id, 486, None, Vec::new(), None, None)
                }
                LimitResponse::Unavailable { retry_after_s } => {
                    let extra = vec![("Retry-After", retry_after_s.to_string())];
                    self.respond_server(now, id, 503, None, extra, None, None)
                }
            }
            return;
        }
        let Some(entry) = self.servers.get(&id) else {
            return;
        };
        let req = entry.req.clone();
        let handle = self.new_call_handle();
        let local_tag = self.new_tag();
        let to_value = req.header("To").unwrap_or_default().to_string();
        let from_value = req.header("From").unwrap_or_default().to_string();
        let request_uri = req.request().map(|r| r.uri.to_string()).unwrap_or_default();
        let req_host_ip =
            message::uri_host_port(&request_uri).and_then(|(h, _)| h.parse::<IpAddr>().ok());
        let local_addr = self.local_addr(
            peer.transport,
            peer.addr.ip(),
            req_host_ip.filter(|ip| !ip.is_unspecified()),
        );
        let remote_target = req
            .header("Contact")
            .map(message::uri_of)
            .unwrap_or_default()
            .to_string();
        let dialog = Dialog {
            id: DialogId {
                call_id: req.call_id.clone(),
                local_tag: local_tag.clone(),
                remote_tag: from_tag.clone(),
            },
            role: Role::Uas,
            local_uri: format!("{to_value};tag={local_tag}"),
            remote_uri: from_value.clone(),
            local_seq: self.rng.gen_range(1..10_000),
            remote_seq: Some(req.cseq.seq),
            remote_target: if remote_target.is_empty() {
                format!("sip:{}", peer.addr)
            } else {
                remote_target
            },
            route_set: record_routes(&req),
            local_contact: contact_for(local_addr, peer.transport),
            peer,
        };
        let body = (!req.body().is_empty()).then(|| {
            Body::new(
                req.content_type().unwrap_or("application/sdp"),
                req.body().to_vec(),
            )
        });
        let rel100 = PeerRel100 {
            requires: req.has_option("Require", TAG_100REL),
            supports: req.has_option("Supported", TAG_100REL),
        };
        let call = Call {
            direction: CallDirection::Inbound,
            state: CallState::Early,
            dialog,
            server_invite: Some(id),
            server_update: None,
            pending_2xx: None,
            reliable: None,
            rseq: self.rng.gen_range(1..10_000),
            peer_rel100: rel100,
            options: self.config.call_options,
            uac: None,
            client_reinvite: None,
            session: None,
            peer_allows_update: req.has_option("Allow", "UPDATE"),
            last_local_body: None,
            bye_after_ack: false,
            linger_until: None,
            initial_ack_seen: false,
        };
        self.calls.insert(handle, call);
        self.active_calls += 1;
        self.dialogs
            .insert((req.call_id.clone(), local_tag), handle);
        self.uas_index
            .insert((req.call_id.clone(), from_tag), handle);
        if let Some(e) = self.servers.get_mut(&id) {
            e.call = Some(handle);
        }
        if let Some((status, header)) = self.config.call_options.rel100_refusal(rel100) {
            let _ = self.respond_with(now, handle, status, None, vec![header], None);
            return;
        }
        self.event(SipEvent::IncomingCall(IncomingCall {
            call: handle,
            call_id: CallId(req.call_id.clone()),
            request_uri,
            from: from_value,
            to: to_value,
            source: peer,
            body,
        }));
    }

    fn on_in_dialog_request(&mut self, now: Instant, id: u64, method: Method, to_tag: String) {
        let Some(entry) = self.servers.get(&id) else {
            return;
        };
        let key = (entry.req.call_id.clone(), to_tag);
        let Some(handle) = self.dialogs.get(&key).copied() else {
            self.respond_server(now, id, 481, None, Vec::new(), None, None);
            return;
        };
        let seq = entry.req.cseq.seq;
        let Some(call) = self.calls.get_mut(&handle) else {
            self.respond_server(now, id, 481, None, Vec::new(), None, None);
            return;
        };
        if call.state == CallState::Ended {
            self.respond_server(now, id, 481, None, Vec::new(), None, None);
            return;
        }
        if !call.dialog.accept_remote_seq(seq, false) {
            // §12.2.2: lower CSeq than the last one.
            self.respond_server(
                now,
                id,
                500,
                Some("Server Internal Error - CSeq out of order"),
                Vec::new(),
                None,
                None,
            );
            return;
        }
        if let Some(e) = self.servers.get_mut(&id) {
            e.call = Some(handle);
        }
        match method {
            Method::Bye => self.on_bye(now, id, handle),
            Method::Invite => self.on_reinvite(now, id, handle),
            Method::Update => self.on_update(now, id, handle),
            Method::Info => {
                let body = self.request_body(id);
                self.respond_server(now, id, 200, None, Vec::new(), None, Some(handle));
                self.event(SipEvent::Info { call: handle, body });
            }
            Method::Options => {
                let extra = vec![
                    ("Allow", ALLOW.to_string()),
                    ("Supported", self.supported(handle)),
                ];
                self.respond_server(now, id, 200, None, extra, None, Some(handle));
            }
            Method::Notify => self.on_notify(now, id, handle),
            Method::PRack => self.on_prack(now, id, handle),
            _ => {
                let extra = vec![("Allow", ALLOW.to_string())];
                self.respond_server(now, id, 405, None, extra, None, Some(handle));
            }
        }
    }

    fn on_bye(&mut self, now: Instant, id: u64, handle: CallHandle) {
        self.respond_server(now, id, 200, None, Vec::new(), None, Some(handle));
        // A pending INVITE (initial with early dialog, or re-INVITE) gets 487 (§15.1.2).
        if let Some(tx) = self
            .calls
            .get_mut(&handle)
            .and_then(|c| c.server_invite.take())
        {
            self.respond_server(now, tx, 487, None, Vec::new(), None, Some(handle));
        }
        self.end_call(now, handle, EndReason::RemoteBye);
    }

    fn on_reinvite(&mut self, now: Instant, id: u64, handle: CallHandle) {
        let Some(call) = self.calls.get(&handle) else {
            return;
        };
        if call.client_reinvite.is_some() {
            // Glare (§14.1): 491.
            self.respond_server(now, id, 491, None, Vec::new(), None, Some(handle));
            return;
        }
        if call.server_invite.is_some() || call.pending_2xx.is_some() {
            // §14.2: 500 with Retry-After when our previous answer is still outstanding.
            let retry = self.rng.gen_range(0..10).to_string();
            self.respond_server(
                now,
                id,
                500,
                None,
                vec![("Retry-After", retry)],
                None,
                Some(handle),
            );
            return;
        }
        let req = self.servers.get(&id).map(|e| e.req.clone());
        let Some(req) = req else { return };
        let peer_session = session_expires(&req);
        let body = (!req.body().is_empty()).then(|| {
            Body::new(
                req.content_type().unwrap_or("application/sdp"),
                req.body().to_vec(),
            )
        });
        if let Some(call) = self.calls.get_mut(&handle) {
            call.dialog.refresh_target(&req);
            call.server_invite = Some(id);
        }
        self.refresh_session(now, handle, peer_session, false);
        self.event(SipEvent::Modify { call: handle, body });
    }

    fn on_update(&mut self, now: Instant, id: u64, handle: CallHandle) {
        let req = self.servers.get(&id).map(|e| e.req.clone());
        let Some(req) = req else { return };
        let peer_session = session_expires(&req);
        if let Some(call) = self.calls.get_mut(&handle) {
            call.dialog.refresh_target(&req);
        }
        self.refresh_session(now, handle, peer_session, false);
        if req.body().is_empty() {
            // A session refresh without an offer (RFC 4028 §9).
            let extra = self.session_headers(handle, false);
            self.respond_server(now, id, 200, None, extra, None, Some(handle));
            return;
        }
        if let Some(call) = self.calls.get_mut(&handle) {
            if call.server_update.is_some() || call.client_reinvite.is_some() {
                self.respond_server(now, id, 491, None, Vec::new(), None, Some(handle));
                return;
            }
            call.server_update = Some(id);
        }
        let body = Some(Body::new(
            req.content_type().unwrap_or("application/sdp"),
            req.body().to_vec(),
        ));
        self.event(SipEvent::Modify { call: handle, body });
    }

    fn on_notify(&mut self, now: Instant, id: u64, handle: CallHandle) {
        let req = self.servers.get(&id).map(|e| e.req.clone());
        let Some(req) = req else { return };
        let is_refer = req
            .header("Event")
            .or_else(|| req.header("o"))
            .map(|e| e.trim().to_ascii_lowercase().starts_with("refer"))
            .unwrap_or(false);
        if !is_refer {
            self.respond_server(now, id, 489, None, Vec::new(), None, Some(handle));
            return;
        }
        self.respond_server(now, id, 200, None, Vec::new(), None, Some(handle));
        let frag = String::from_utf8_lossy(req.body()).to_string();
        let status = frag
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("SIP/2.0 "))
            .and_then(|l| l.get(..3))
            .and_then(|c| c.parse::<u16>().ok());
        let terminated = req
            .header("Subscription-State")
            .map(|s| s.trim().to_ascii_lowercase().starts_with("terminated"))
            .unwrap_or(false);
        if let Some(status) = status {
            self.event(SipEvent::ReferProgress {
                call: handle,
                status,
                done: terminated || status >= 200,
            });
        }
    }

    fn on_prack(&mut self, now: Instant, id: u64, handle: CallHandle) {
        let rack = self
            .servers
            .get(&id)
            .and_then(|e| e.req.header("RAck").map(str::to_string));
        let rseq = rack
            .as_deref()
            .and_then(|r| r.split_whitespace().next())
            .and_then(|s| s.parse::<u32>().ok());
        let matched = self
            .calls
            .get_mut(&handle)
            .and_then(|c| match (&c.reliable, rseq) {
                (Some((pending, _)), Some(r)) if *pending == r => c.reliable.take(),
                _ => None,
            })
            .is_some();
        let code = if matched { 200 } else { 481 };
        self.respond_server(now, id, code, None, Vec::new(), None, Some(handle));
    }

    fn on_ack(&mut self, now: Instant, peer: Peer, mut msg: Msg) {
        // ACK for a non-2xx final response: same branch as the INVITE (§17.2.1).
        let key = server_key(&msg, Method::Invite);
        if let Some(id) = self.server_index.get(&key).copied()
            && let Some(e) = self.servers.get_mut(&id)
            && e.tx.state() == ServerState::Completed
        {
            let acts = e.tx.handle_ack(now);
            let p = e.peer;
            self.apply_server_actions(id, p, acts);
            return;
        }
        // ACK for a 2xx: a new transaction-less request within the dialog (§13.3.1.4).
        let Some(tag) = msg.to_tag.clone() else {
            return;
        };
        let Some(handle) = self.dialogs.get(&(msg.call_id.clone(), tag)).copied() else {
            return;
        };
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if call.pending_2xx.is_none() {
            return; // a retransmitted ACK
        }
        call.pending_2xx = None;
        call.initial_ack_seen = true;
        call.dialog.refresh_target(&msg);
        if peer.transport == Transport::Tcp {
            call.dialog.peer = peer;
        }
        let body_bytes = std::mem::take(match &mut msg.inner {
            rsip::SipMessage::Request(r) => &mut r.body,
            rsip::SipMessage::Response(r) => &mut r.body,
        });
        let body = (!body_bytes.is_empty())
            .then(|| Body::new(msg.content_type().unwrap_or("application/sdp"), body_bytes));
        let bye = call.bye_after_ack;
        self.event(SipEvent::Acked { call: handle, body });
        if bye {
            self.send_bye(now, handle, EndReason::LocalBye);
        }
    }

    fn on_cancel(&mut self, now: Instant, peer: Peer, msg: Msg) {
        let invite_key = server_key(&msg, Method::Invite);
        let cancel_key = server_key(&msg, Method::Cancel);
        if let Some(id) = self.server_index.get(&cancel_key).copied() {
            // Retransmitted CANCEL.
            if let Some(e) = self.servers.get_mut(&id) {
                let acts = e.tx.handle_retransmission();
                let p = e.peer;
                self.apply_server_actions(id, p, acts);
            }
            return;
        }
        let tx = ServerTransaction::new(
            TxKind::NonInvite,
            peer.transport.is_reliable(),
            self.config.timers,
        );
        let cid = self.alloc_id();
        self.server_index.insert(cancel_key.clone(), cid);
        self.counters.transactions_started += 1;
        self.servers.insert(
            cid,
            ServerEntry {
                tx,
                key: cancel_key,
                peer,
                req: msg,
                call: None,
            },
        );
        let Some(invite_id) = self.server_index.get(&invite_key).copied() else {
            self.respond_server(now, cid, 481, None, Vec::new(), None, None);
            return;
        };
        // §9.2: 200 to the CANCEL; 487 to the INVITE if it has no final response yet.
        let (is_final, handle, to_tag) = match self.servers.get(&invite_id) {
            Some(e) => (
                e.tx.is_final(),
                e.call,
                e.call
                    .and_then(|h| self.calls.get(&h))
                    .map(|c| c.dialog.id.local_tag.clone()),
            ),
            None => (true, None, None),
        };
        self.respond_server_tagged(now, cid, 200, None, Vec::new(), None, to_tag.as_deref());
        if is_final {
            return; // CANCEL raced the final response: nothing else changes.
        }
        self.respond_server(now, invite_id, 487, None, Vec::new(), None, handle);
        if let Some(h) = handle {
            if let Some(c) = self.calls.get_mut(&h) {
                c.server_invite = None;
                c.reliable = None;
            }
            self.end_call(now, h, EndReason::Cancelled);
        }
    }

    // ===== response handling =====

    fn on_response(&mut self, now: Instant, peer: Peer, msg: Msg) {
        let Some(branch) = msg.via.branch.clone() else {
            self.counters.stray_responses += 1;
            return;
        };
        let key = ClientKey {
            branch,
            method: msg.cseq.method as u8,
        };
        let Some(id) = self.client_index.get(&key).copied() else {
            self.counters.stray_responses += 1;
            return;
        };
        let code = msg.status().unwrap_or(0);
        let Some(entry) = self.clients.get_mut(&id) else {
            return;
        };
        let acts = entry.tx.handle_response(now, code);
        let (purpose, tx_peer) = (entry.purpose, entry.peer);
        let is_invite = entry.tx.kind() == TxKind::Invite;
        let mut pass_up = false;
        for a in acts {
            match a {
                TxAction::PassUp => pass_up = true,
                TxAction::Send(b) => self.send(tx_peer, b),
                _ => {}
            }
        }
        if is_invite && (300..700).contains(&code) && pass_up {
            // Build and store the ACK for the non-2xx (§17.1.1.3).
            if let Some(ack) = self.non_2xx_ack(id, &msg)
                && let Some(e) = self.clients.get_mut(&id)
            {
                let act = e.tx.set_ack(ack);
                let p = e.peer;
                if let TxAction::Send(b) = act {
                    self.send(p, b);
                }
            }
        }
        self.schedule_client(id);
        if !pass_up {
            // Absorbed by the transaction (a 2xx retransmission to INVITE is passed up in the
            // Accepted state, RFC 6026).
            return;
        }
        match purpose {
            Purpose::Invite(h) => self.on_invite_response(now, id, h, msg),
            Purpose::ReInvite(h) => self.on_reinvite_response(now, id, h, msg),
            // The call ended for the TU when the BYE was sent; its response changes nothing.
            Purpose::Bye(_) => {}
            Purpose::Refer(h) => {
                if code >= 200 {
                    self.event(SipEvent::ReferProgress {
                        call: h,
                        status: code,
                        done: !(200..300).contains(&code),
                    });
                }
            }
            Purpose::Update(h) => {
                if (200..300).contains(&code) {
                    let se = session_expires(&msg);
                    self.refresh_session(now, h, se, true);
                } else if code == 408 || code == 481 {
                    self.send_bye(now, h, EndReason::DialogLost(code));
                }
            }
            Purpose::Register(rid) => self.on_register_response(now, rid, msg),
            Purpose::Keepalive => {
                tracing::debug!(%peer, code, "OPTIONS keepalive answered");
            }
            Purpose::Cancel | Purpose::Other => {}
        }
    }

    fn on_invite_response(&mut self, now: Instant, client_id: u64, handle: CallHandle, msg: Msg) {
        let code = msg.status().unwrap_or(0);
        let Some(call) = self.calls.get_mut(&handle) else {
            // The call is gone; a 2xx still needs ACK and BYE (§13.2.2.4).
            return;
        };
        let body = (!msg.body().is_empty()).then(|| {
            Body::new(
                msg.content_type().unwrap_or("application/sdp"),
                msg.body().to_vec(),
            )
        });
        match code {
            100 => {
                if let Some(uac) = call.uac.as_mut() {
                    uac.got_provisional = true;
                    if uac.hangup_requested {
                        self.send_cancel(now, handle);
                    }
                }
            }
            101..=199 => {
                if let Some(tag) = &msg.to_tag
                    && call.dialog.id.remote_tag.is_empty()
                {
                    call.dialog.id.remote_tag = tag.clone();
                    call.dialog.remote_uri = msg.header("To").unwrap_or_default().to_string();
                    call.dialog.refresh_target(&msg);
                    let mut rr = record_routes(&msg);
                    if !rr.is_empty() {
                        rr.reverse();
                        call.dialog.route_set = rr;
                    }
                }
                let mut send_prack = None;
                if msg.has_option("Require", TAG_100REL)
                    && call.options.rel100 != Rel100::Disabled
                    && let Some(rseq) = msg
                        .header("RSeq")
                        .and_then(|v| v.trim().parse::<u32>().ok())
                    && let Some(uac) = call.uac.as_mut()
                {
                    if uac.acked_prack.contains(&rseq) {
                        // RFC 3262 §4: a retransmitted reliable provisional is discarded.
                        return;
                    }
                    uac.acked_prack.push(rseq);
                    send_prack = Some(format!("{rseq} {} INVITE", msg.cseq.seq));
                }
                let mut cancel = false;
                if let Some(uac) = call.uac.as_mut() {
                    uac.got_provisional = true;
                    cancel = uac.hangup_requested;
                }
                if let Some(rack) = send_prack {
                    let _ = self.in_dialog_request(
                        now,
                        handle,
                        Method::PRack,
                        vec![("RAck", rack)],
                        None,
                        Purpose::Other,
                    );
                }
                if cancel {
                    self.send_cancel(now, handle);
                } else {
                    self.event(SipEvent::Progress {
                        call: handle,
                        status: code,
                        body,
                    });
                }
            }
            200..=299 => {
                let first = call.state == CallState::Early;
                let same_fork = call.dialog.id.remote_tag.is_empty()
                    || msg.to_tag.as_deref() == Some(call.dialog.id.remote_tag.as_str());
                if !first {
                    if !same_fork {
                        // A 2xx from another fork: ACK it and end that dialog (§13.2.2.4).
                        self.ack_and_bye_fork(now, handle, &msg);
                        return;
                    }
                    if let Some(ack) = self.clients.get(&client_id).and_then(|e| e.ack_2xx.clone())
                        && let Some(p) = self.clients.get(&client_id).map(|e| e.peer)
                    {
                        self.send(p, ack); // 2xx retransmission: resend the ACK (§13.2.2.4)
                    }
                    return;
                }
                if let Some(tag) = &msg.to_tag {
                    call.dialog.id.remote_tag = tag.clone();
                }
                call.dialog.remote_uri = msg.header("To").unwrap_or_default().to_string();
                call.dialog.refresh_target(&msg);
                let mut rr = record_routes(&msg);
                rr.reverse();
                if !rr.is_empty() || call.dialog.route_set.is_empty() {
                    call.dialog.route_set = rr;
                }
                call.dialog.remote_seq = None;
                call.state = CallState::Confirmed;
                call.peer_allows_update = msg.has_option("Allow", "UPDATE");
                let hangup = call
                    .uac
                    .as_ref()
                    .map(|u| u.hangup_requested)
                    .unwrap_or(false);
                let cseq = msg.cseq.seq;
                // ACK for the 2xx: a new transaction-less request (§13.2.2.4).
                let ack = self.build_in_dialog(handle, Method::Ack, cseq, Vec::new(), None);
                if let Some((peer, bytes)) = ack {
                    self.send(peer, bytes.clone());
                    if let Some(e) = self.clients.get_mut(&client_id) {
                        e.ack_2xx = Some(bytes);
                    }
                }
                let se = session_expires(&msg);
                if let Some((secs, refresher)) = se {
                    let we_refresh = refresher.as_deref() != Some("uas");
                    self.start_session(
                        now,
                        handle,
                        Duration::from_secs(u64::from(secs)),
                        we_refresh,
                    );
                }
                if hangup {
                    // We cancelled, but the 2xx won the race: ACK then BYE (§9.1).
                    self.send_bye(now, handle, EndReason::Cancelled);
                } else {
                    self.event(SipEvent::Answered { call: handle, body });
                }
            }
            401 | 407 => {
                let header = if code == 401 {
                    "WWW-Authenticate"
                } else {
                    "Proxy-Authenticate"
                };
                let values: Vec<&str> = message::headers_named(msg.headers(), header).collect();
                let challenge = select_challenge(&values);
                let Some(uac) = call.uac.as_mut() else { return };
                // One retry per challenge; a stale nonce may be retried, a few times at most.
                let retry = match (&challenge, &uac.spec.credentials) {
                    (Some(c), Some(_)) => {
                        uac.auth_attempts == 0 || (c.stale && uac.auth_attempts < MAX_AUTH_ATTEMPTS)
                    }
                    _ => false,
                };
                if !retry || uac.hangup_requested {
                    self.fail_call(now, handle, code);
                    return;
                }
                uac.auth_attempts += 1;
                if let Some(c) = challenge {
                    uac.digest.set_challenge(c);
                }
                uac.cseq += 1;
                let cseq = uac.cseq;
                // §12.1.2: the dialog's local CSeq starts at the INVITE's that creates it.
                call.dialog.local_seq = cseq;
                let spec = uac.spec.clone();
                let cnonce = self.random_hex(16);
                let auth = {
                    let Some(call) = self.calls.get_mut(&handle) else {
                        return;
                    };
                    let Some(uac) = call.uac.as_mut() else { return };
                    let creds = spec.credentials.as_ref();
                    creds.and_then(|cr| {
                        uac.digest.authorization(
                            cr,
                            "INVITE",
                            &spec.request_uri,
                            spec.body.as_ref().map(|b| b.data.as_slice()).unwrap_or(b""),
                            &cnonce,
                        )
                    })
                };
                let name = if code == 401 {
                    "Authorization"
                } else {
                    "Proxy-Authorization"
                };
                let new_client =
                    self.send_initial_invite(now, handle, &spec, cseq, auth.map(|a| (name, a)));
                if let Some(u) = self.calls.get_mut(&handle).and_then(|c| c.uac.as_mut()) {
                    u.client = new_client;
                    u.got_provisional = false;
                }
            }
            _ => self.fail_call(now, handle, code),
        }
    }

    /// ACKs a 2xx from a second fork of our INVITE and sends BYE on that dialog at once
    /// (RFC 3261 §13.2.2.4: only one dialog is kept).
    fn ack_and_bye_fork(&mut self, now: Instant, handle: CallHandle, msg: &Msg) {
        let Some(call) = self.calls.get(&handle) else {
            return;
        };
        let mut fork = call.dialog.clone();
        fork.id.remote_tag = msg.to_tag.clone().unwrap_or_default();
        fork.remote_uri = msg.header("To").unwrap_or_default().to_string();
        fork.refresh_target(msg);
        let mut rr = record_routes(msg);
        rr.reverse();
        fork.route_set = rr;
        let peer = fork.next_hop();
        let local_addr = self.local_addr(
            peer.transport,
            peer.addr.ip(),
            contact_ip(&fork.local_contact),
        );
        for (method, seq) in [(Method::Ack, msg.cseq.seq), (Method::Bye, msg.cseq.seq + 1)] {
            let branch = self.new_branch();
            let bytes = build_request(&RequestSpec {
                method,
                uri: &fork.remote_target,
                via: via_value(peer.transport, local_addr, &branch),
                from: &fork.local_uri,
                to: &fork.remote_uri,
                call_id: &fork.id.call_id,
                cseq: seq,
                contact: None,
                routes: fork.routes(),
                extra: Vec::new(),
                body: None,
                user_agent: &self.config.user_agent,
            });
            if method == Method::Ack {
                self.send(peer, bytes);
            } else {
                self.start_client(now, peer, method, branch, bytes, Purpose::Other, None);
            }
        }
    }

    fn on_reinvite_response(&mut self, now: Instant, client_id: u64, handle: CallHandle, msg: Msg) {
        let code = msg.status().unwrap_or(0);
        if code < 200 {
            return;
        }
        let body = (!msg.body().is_empty()).then(|| {
            Body::new(
                msg.content_type().unwrap_or("application/sdp"),
                msg.body().to_vec(),
            )
        });
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if call.client_reinvite == Some(client_id) {
            call.client_reinvite = None;
        } else if (200..300).contains(&code) {
            // Retransmitted 2xx: resend ACK.
            if let Some((p, b)) = self
                .clients
                .get(&client_id)
                .and_then(|e| e.ack_2xx.clone().map(|b| (e.peer, b)))
            {
                self.send(p, b);
            }
            return;
        }
        if (200..300).contains(&code) {
            call.dialog.refresh_target(&msg);
            let ack = self.build_in_dialog(handle, Method::Ack, msg.cseq.seq, Vec::new(), None);
            if let Some((peer, bytes)) = ack {
                self.send(peer, bytes.clone());
                if let Some(e) = self.clients.get_mut(&client_id) {
                    e.ack_2xx = Some(bytes);
                }
            }
            let se = session_expires(&msg);
            self.refresh_session(now, handle, se, true);
        } else if code == 408 || code == 481 {
            // RFC 5057 §5.1: the dialog is gone.
            self.send_bye(now, handle, EndReason::DialogLost(code));
        }
        self.event(SipEvent::ModifyResult {
            call: handle,
            status: code,
            body,
        });
    }

    fn on_register_response(&mut self, now: Instant, rid: RegistrationId, msg: Msg) {
        let Some(reg) = self.regs.get_mut(&rid) else {
            return;
        };
        match reg.handle_response(now, &msg) {
            RegistrationAction::SendAgain => self.send_register(now, rid),
            RegistrationAction::Report(state) => {
                self.schedule(TimerRef::Reg(rid), reg_deadline(self.regs.get(&rid)));
                self.event(SipEvent::Registration { id: rid, state });
            }
            RegistrationAction::Nothing => {}
        }
    }

    // ===== timers =====

    fn server_timeout(&mut self, now: Instant, id: u64) {
        let Some(e) = self.servers.get_mut(&id) else {
            return;
        };
        let acts = e.tx.handle_timeout(now);
        let p = e.peer;
        let call = e.call;
        let is_invite = e.tx.kind() == TxKind::Invite;
        for a in &acts {
            if *a == TxAction::TimedOut && is_invite {
                // Timer H: the ACK for our non-2xx never came. The call is over anyway.
                if let Some(h) = call {
                    self.end_call(now, h, EndReason::Rejected(0));
                }
            }
        }
        self.apply_server_actions(id, p, acts);
    }

    fn client_timeout(&mut self, now: Instant, id: u64) {
        let Some(e) = self.clients.get_mut(&id) else {
            return;
        };
        let acts = e.tx.handle_timeout(now);
        let (p, purpose) = (e.peer, e.purpose);
        let mut terminated = false;
        for a in acts {
            match a {
                TxAction::Send(b) => self.send(p, b),
                TxAction::TimedOut => match purpose {
                    Purpose::Invite(h) => {
                        if self
                            .calls
                            .get(&h)
                            .is_some_and(|c| c.state == CallState::Early)
                        {
                            self.fail_call(now, h, 408);
                        }
                    }
                    Purpose::ReInvite(h) => {
                        if let Some(c) = self.calls.get_mut(&h) {
                            c.client_reinvite = None;
                        }
                        self.event(SipEvent::ModifyResult {
                            call: h,
                            status: 408,
                            body: None,
                        });
                        self.send_bye(now, h, EndReason::DialogLost(408));
                    }
                    Purpose::Bye(_) => {} // the call already ended when the BYE was sent
                    Purpose::Refer(h) => self.event(SipEvent::ReferProgress {
                        call: h,
                        status: 408,
                        done: true,
                    }),
                    Purpose::Update(h) => self.send_bye(now, h, EndReason::DialogLost(408)),
                    Purpose::Register(rid) => {
                        if let Some(reg) = self.regs.get_mut(&rid)
                            && let RegistrationAction::Report(state) =
                                reg.handle_timeout_failure(now)
                        {
                            self.schedule(TimerRef::Reg(rid), reg_deadline(self.regs.get(&rid)));
                            self.event(SipEvent::Registration { id: rid, state });
                        }
                    }
                    Purpose::Keepalive => {
                        tracing::warn!(%p, "OPTIONS keepalive got no answer: peer unreachable?");
                    }
                    Purpose::Cancel | Purpose::Other => {}
                },
                TxAction::Terminated => terminated = true,
                TxAction::PassUp => {}
            }
        }
        if terminated {
            if let Some(e) = self.clients.remove(&id) {
                self.client_index.remove(&e.key);
            }
        } else {
            self.schedule_client(id);
        }
    }

    fn call_timeout(&mut self, now: Instant, handle: CallHandle) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if let Some(until) = call.linger_until {
            if now >= until {
                let key = (
                    call.dialog.id.call_id.clone(),
                    call.dialog.id.local_tag.clone(),
                );
                let ukey = (
                    call.dialog.id.call_id.clone(),
                    call.dialog.id.remote_tag.clone(),
                );
                self.dialogs.remove(&key);
                if self.uas_index.get(&ukey) == Some(&handle) {
                    self.uas_index.remove(&ukey);
                }
                self.calls.remove(&handle);
            }
            return;
        }
        let peer = call.dialog.next_hop();
        let mut resend = Vec::new();
        let mut ack_timeout = false;
        if let Some(r) = call.pending_2xx.as_mut() {
            if now >= r.give_up {
                ack_timeout = true;
            } else if now >= r.next {
                resend.push(r.bytes.clone());
                r.interval = (r.interval * 2).min(self.config.timers.t2);
                r.next = now + r.interval;
            }
        }
        let mut prack_timeout = false;
        if let Some((_, r)) = call.reliable.as_mut() {
            if now >= r.give_up {
                prack_timeout = true;
            } else if now >= r.next {
                resend.push(r.bytes.clone());
                r.interval *= 2; // RFC 3262 §3: doubling, like Timer A
                r.next = now + r.interval;
            }
        }
        let mut refresh = false;
        let mut expired = false;
        if let Some(s) = &call.session
            && now >= s.deadline
        {
            if s.we_refresh {
                refresh = true
            } else {
                expired = true
            }
        }
        // 2xx and reliable 1xx go back the way the INVITE came (§17.2.1 response routing).
        let p = if call.direction == CallDirection::Inbound {
            call.dialog.peer
        } else {
            peer
        };
        for b in resend {
            self.send(p, b);
        }
        if ack_timeout {
            if let Some(c) = self.calls.get_mut(&handle) {
                c.pending_2xx = None;
            }
            self.send_bye(now, handle, EndReason::AckTimeout);
        } else if prack_timeout {
            if let Some(c) = self.calls.get_mut(&handle) {
                c.reliable = None;
            }
            // RFC 3262 §3: no PRACK after 64·T1 — reject the INVITE with 5xx.
            if self
                .calls
                .get(&handle)
                .is_some_and(|c| c.state == CallState::Early)
            {
                let _ = self.respond_with(
                    now,
                    handle,
                    504,
                    Some("Server Time-out - no PRACK"),
                    Vec::new(),
                    None,
                );
            }
        }
        if expired {
            self.send_bye(now, handle, EndReason::SessionExpired);
        } else if refresh {
            self.session_refresh(now, handle);
        }
        self.schedule_call(handle);
    }

    fn reg_timeout(&mut self, now: Instant, id: RegistrationId) {
        let due = self
            .regs
            .get(&id)
            .and_then(|r| r.next_send)
            .is_some_and(|t| t <= now);
        if due {
            self.send_register(now, id);
        }
    }

    // ===== sending helpers =====

    #[allow(clippy::too_many_arguments)]
    fn respond_invite_tx(
        &mut self,
        now: Instant,
        handle: CallHandle,
        tx_id: u64,
        status: u16,
        reason: Option<&str>,
        mut extra: Vec<(&'static str, String)>,
        body: Option<Body>,
        initial: bool,
    ) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let contact = call.dialog.local_contact.clone();
        let mut reliable = false;
        if (101..200).contains(&status) || (200..300).contains(&status) {
            extra.push(("Contact", contact));
            extra.push(("Allow", ALLOW.to_string()));
            extra.push(("Supported", call.options.supported()));
        }
        if (101..200).contains(&status)
            && initial
            && call.options.reliable_provisionals(call.peer_rel100)
        {
            if call.reliable.is_some() {
                return; // RFC 3262 §3: one unacknowledged reliable provisional at a time.
            }
            call.rseq += 1;
            extra.push(("Require", "100rel".to_string()));
            extra.push(("RSeq", call.rseq.to_string()));
            reliable = true;
        }
        if let Some(b) = &body
            && (200..300).contains(&status)
        {
            call.last_local_body = Some(b.clone());
        }
        let rseq = call.rseq;
        if (200..300).contains(&status) {
            if initial {
                let se = self
                    .servers
                    .get(&tx_id)
                    .and_then(|e| session_expires(&e.req));
                let supports_timer = self
                    .servers
                    .get(&tx_id)
                    .is_some_and(|e| e.req.has_option("Supported", "timer"));
                self.negotiate_session_uas(now, handle, se, supports_timer);
            }
            extra.extend(self.session_headers(handle, false));
        }
        let local_tag = self
            .calls
            .get(&handle)
            .map(|c| c.dialog.id.local_tag.clone());
        let bytes = self.response_bytes(
            tx_id,
            status,
            reason,
            &extra,
            body.as_ref(),
            local_tag.as_deref(),
        );
        let Some(bytes) = bytes else { return };
        let t1 = self.config.timers.t1;
        let give_up = now + self.config.timers.t1x64();
        let reliable_tx = !self
            .servers
            .get(&tx_id)
            .is_some_and(|e| e.peer.transport.is_reliable());
        if let Some(e) = self.servers.get_mut(&tx_id) {
            let acts = e.tx.send_response(now, status, bytes.clone());
            let p = e.peer;
            self.apply_server_actions(tx_id, p, acts);
        }
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if reliable && reliable_tx {
            call.reliable = Some((
                rseq,
                Retransmit {
                    bytes: bytes.clone(),
                    next: now + t1,
                    interval: t1,
                    give_up,
                },
            ));
        } else if reliable {
            call.reliable = Some((
                rseq,
                Retransmit {
                    bytes: bytes.clone(),
                    next: give_up,
                    interval: t1,
                    give_up,
                },
            ));
        }
        if status >= 200 {
            call.server_invite = None;
            call.reliable = None;
        }
        match status {
            200..=299 => {
                call.state = CallState::Confirmed;
                // UAS core retransmits the 2xx until the ACK (§13.3.1.4); on TCP only the give-up.
                let next = if reliable_tx { now + t1 } else { give_up };
                call.pending_2xx = Some(Retransmit {
                    bytes,
                    next,
                    interval: t1,
                    give_up,
                });
            }
            300..=699 if initial => {
                self.end_call(now, handle, EndReason::Rejected(status));
            }
            _ => {}
        }
        self.schedule_call(handle);
    }

    fn response_bytes(
        &self,
        tx_id: u64,
        status: u16,
        reason: Option<&str>,
        extra: &[(&'static str, String)],
        body: Option<&Body>,
        to_tag: Option<&str>,
    ) -> Option<Vec<u8>> {
        let e = self.servers.get(&tx_id)?;
        let mut all = extra.to_vec();
        all.push(("Server", self.config.user_agent.clone()));
        let reason = reason.unwrap_or_else(|| reason_phrase(status));
        Some(build_response(&e.req, status, reason, to_tag, &all, body))
    }

    /// Responds on a server transaction; the To tag is the call's local tag, or a fresh one.
    #[allow(clippy::too_many_arguments)]
    fn respond_server(
        &mut self,
        now: Instant,
        tx_id: u64,
        status: u16,
        reason: Option<&str>,
        extra: Vec<(&'static str, String)>,
        body: Option<&Body>,
        call: Option<CallHandle>,
    ) {
        let tag = match call.and_then(|h| self.calls.get(&h)) {
            Some(c) => Some(c.dialog.id.local_tag.clone()),
            None if status > 100 => Some(self.new_tag()),
            None => None,
        };
        self.respond_server_tagged(now, tx_id, status, reason, extra, body, tag.as_deref());
    }

    #[allow(clippy::too_many_arguments)]
    fn respond_server_tagged(
        &mut self,
        now: Instant,
        tx_id: u64,
        status: u16,
        reason: Option<&str>,
        extra: Vec<(&'static str, String)>,
        body: Option<&Body>,
        to_tag: Option<&str>,
    ) {
        let Some(bytes) = self.response_bytes(tx_id, status, reason, &extra, body, to_tag) else {
            return;
        };
        if let Some(e) = self.servers.get_mut(&tx_id) {
            let acts = e.tx.send_response(now, status, bytes);
            if e.tx.kind() == TxKind::NonInvite && e.tx.is_final() {
                // From here on the transaction only resends its response (§17.2.2): the
                // parsed request is not needed for the 32 s it lingers over UDP.
                e.req.strip();
            }
            let p = e.peer;
            self.apply_server_actions(tx_id, p, acts);
        }
    }

    fn apply_server_actions(&mut self, id: u64, peer: Peer, acts: Vec<TxAction>) {
        let mut terminated = false;
        for a in acts {
            match a {
                TxAction::Send(b) => self.send(peer, b),
                TxAction::Terminated => terminated = true,
                TxAction::TimedOut | TxAction::PassUp => {}
            }
        }
        if terminated {
            self.forget_server(id);
        } else {
            let d = self.servers.get(&id).and_then(|e| e.tx.deadline());
            self.schedule(TimerRef::Server(id), d);
        }
    }

    fn forget_server(&mut self, id: u64) {
        if let Some(e) = self.servers.remove(&id) {
            self.server_index.remove(&e.key);
            if let Some(h) = e.call
                && let Some(c) = self.calls.get_mut(&h)
                && c.server_invite == Some(id)
                && e.tx.is_final()
            {
                c.server_invite = None;
            }
        }
    }

    fn send_initial_invite(
        &mut self,
        now: Instant,
        handle: CallHandle,
        spec: &OutgoingCall,
        cseq: u32,
        auth: Option<(&'static str, String)>,
    ) -> u64 {
        let branch = self.new_branch();
        let Some(call) = self.calls.get(&handle) else {
            return 0;
        };
        let local_addr = self.local_addr(
            spec.next_hop.transport,
            spec.next_hop.addr.ip(),
            spec.local_ip,
        );
        let via = via_value(spec.next_hop.transport, local_addr, &branch);
        let options = call.options;
        let mut extra: Vec<(&'static str, String)> = vec![
            ("Allow", ALLOW.to_string()),
            ("Supported", options.supported()),
        ];
        if options.rel100 == Rel100::Required {
            extra.push(("Require", TAG_100REL.to_string()));
        }
        if let Some(se) = self
            .config
            .session_expires
            .filter(|_| options.session_timers)
        {
            extra.push(("Session-Expires", se.as_secs().to_string()));
            extra.push(("Min-SE", self.config.min_se.as_secs().to_string()));
        }
        extra.extend(spec.extra_headers.iter().cloned());
        if let Some(a) = auth {
            extra.push(a);
        }
        let to = format!("<{}>", spec.to_uri);
        let bytes = build_request(&RequestSpec {
            method: Method::Invite,
            uri: &spec.request_uri,
            via: via.clone(),
            from: &call.dialog.local_uri,
            to: &to,
            call_id: &call.dialog.id.call_id,
            cseq,
            contact: Some(&call.dialog.local_contact),
            routes: &spec.routes,
            extra,
            body: spec.body.as_ref(),
            user_agent: &self.config.user_agent,
        });
        let template = AckTemplate {
            uri: spec.request_uri.clone(),
            via,
            from: call.dialog.local_uri.clone(),
            to,
            call_id: call.dialog.id.call_id.clone(),
            cseq,
            routes: spec.routes.clone(),
        };
        self.start_client(
            now,
            spec.next_hop,
            Method::Invite,
            branch,
            bytes,
            Purpose::Invite(handle),
            Some(template),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn start_client(
        &mut self,
        now: Instant,
        peer: Peer,
        method: Method,
        branch: String,
        bytes: Vec<u8>,
        purpose: Purpose,
        ack_template: Option<AckTemplate>,
    ) -> u64 {
        let kind = if method == Method::Invite {
            TxKind::Invite
        } else {
            TxKind::NonInvite
        };
        let tx = ClientTransaction::new(
            kind,
            bytes.clone(),
            peer.transport.is_reliable(),
            self.config.timers,
            now,
        );
        let id = self.alloc_id();
        let key = ClientKey {
            branch,
            method: method as u8,
        };
        self.client_index.insert(key.clone(), id);
        self.counters.transactions_started += 1;
        self.clients.insert(
            id,
            ClientEntry {
                tx,
                key,
                peer,
                purpose,
                ack_template,
                ack_2xx: None,
            },
        );
        self.send(peer, bytes);
        self.schedule_client(id);
        id
    }

    fn non_2xx_ack(&self, id: u64, resp: &Msg) -> Option<Vec<u8>> {
        let t = self.clients.get(&id)?.ack_template.as_ref()?;
        let to = resp.header("To").unwrap_or(&t.to);
        Some(self.template_request(t, Method::Ack, to))
    }

    /// A request that shares the INVITE's Request-URI, top Via, From, Call-ID, CSeq number and
    /// Route: the ACK for a non-2xx (§17.1.1.3) and CANCEL (§9.1).
    fn template_request(&self, t: &AckTemplate, method: Method, to: &str) -> Vec<u8> {
        build_request(&RequestSpec {
            method,
            uri: &t.uri,
            via: t.via.clone(),
            from: &t.from,
            to,
            call_id: &t.call_id,
            cseq: t.cseq,
            contact: None,
            routes: &t.routes,
            extra: Vec::new(),
            body: None,
            user_agent: &self.config.user_agent,
        })
    }

    fn send_cancel(&mut self, now: Instant, handle: CallHandle) {
        let Some(uac) = self.calls.get(&handle).and_then(|c| c.uac.as_ref()) else {
            return;
        };
        let Some(e) = self.clients.get(&uac.client) else {
            return;
        };
        if e.tx.state() != ClientState::Proceeding && e.tx.state() != ClientState::Calling {
            return;
        }
        let Some(t) = e.ack_template.clone() else {
            return;
        };
        let peer = e.peer;
        // §9.1: same Request-URI, Call-ID, From, To, CSeq number, top Via and Route.
        let bytes = self.template_request(&t, Method::Cancel, &t.to);
        let branch = e.key.branch.clone();
        if self.client_index.contains_key(&ClientKey {
            branch: branch.clone(),
            method: Method::Cancel as u8,
        }) {
            return;
        }
        let invite_id = uac.client;
        self.start_client(
            now,
            peer,
            Method::Cancel,
            branch,
            bytes,
            Purpose::Cancel,
            None,
        );
        // §9.1: the INVITE gets 64·T1 more for its final response (normally a 487).
        if let Some(e) = self.clients.get_mut(&invite_id) {
            e.tx.cancel_sent(now);
        }
        self.schedule_client(invite_id);
    }

    fn send_bye(&mut self, now: Instant, handle: CallHandle, reason: EndReason) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if matches!(call.state, CallState::Ending | CallState::Ended) {
            return;
        }
        call.state = CallState::Ending;
        call.pending_2xx = None;
        call.session = None;
        let _ = self.in_dialog_request(
            now,
            handle,
            Method::Bye,
            Vec::new(),
            None,
            Purpose::Bye(handle),
        );
        // The call is over for the TU now; the BYE transaction finishes on its own.
        self.end_call(now, handle, reason);
    }

    fn send_reinvite(&mut self, now: Instant, handle: CallHandle, body: Option<Body>) {
        let mut extra = self.session_headers(handle, true);
        extra.push(("Allow", ALLOW.to_string()));
        extra.push(("Supported", self.supported(handle)));
        if let Some(c) = self.calls.get_mut(&handle)
            && let Some(b) = &body
        {
            c.last_local_body = Some(b.clone());
        }
        let body = body.or_else(|| {
            self.calls
                .get(&handle)
                .and_then(|c| c.last_local_body.clone())
        });
        let seq = self
            .calls
            .get_mut(&handle)
            .map(|c| c.dialog.next_seq())
            .unwrap_or(1);
        let Some((peer, bytes)) =
            self.build_in_dialog(handle, Method::Invite, seq, extra, body.as_ref())
        else {
            return;
        };
        let branch = extract_branch(&bytes);
        // A non-2xx final response (491, 488…) must be ACKed too (§17.1.1.3).
        let template = self.calls.get(&handle).map(|c| AckTemplate {
            uri: c.dialog.remote_target.clone(),
            via: top_via(&bytes).unwrap_or_default(),
            from: c.dialog.local_uri.clone(),
            to: c.dialog.remote_uri.clone(),
            call_id: c.dialog.id.call_id.clone(),
            cseq: seq,
            routes: c.dialog.route_set.clone(),
        });
        let id = self.start_client(
            now,
            peer,
            Method::Invite,
            branch,
            bytes,
            Purpose::ReInvite(handle),
            template,
        );
        if let Some(c) = self.calls.get_mut(&handle) {
            c.client_reinvite = Some(id);
        }
    }

    fn in_dialog_request(
        &mut self,
        now: Instant,
        handle: CallHandle,
        method: Method,
        extra: Vec<(&'static str, String)>,
        body: Option<&Body>,
        purpose: Purpose,
    ) -> Result<(), StackError> {
        let call = self
            .calls
            .get_mut(&handle)
            .ok_or(StackError::NoSuchCall(handle))?;
        if call.state == CallState::Ended {
            return Err(StackError::BadState(handle));
        }
        let seq = call.dialog.next_seq();
        let (peer, bytes) = self
            .build_in_dialog(handle, method, seq, extra, body)
            .ok_or(StackError::BadState(handle))?;
        let branch = extract_branch(&bytes);
        self.start_client(now, peer, method, branch, bytes, purpose, None);
        Ok(())
    }

    fn build_in_dialog(
        &mut self,
        handle: CallHandle,
        method: Method,
        seq: u32,
        extra: Vec<(&'static str, String)>,
        body: Option<&Body>,
    ) -> Option<(Peer, Vec<u8>)> {
        let branch = self.new_branch();
        let call = self.calls.get(&handle)?;
        let d = &call.dialog;
        let peer = d.next_hop();
        let local_addr =
            self.local_addr(peer.transport, peer.addr.ip(), contact_ip(&d.local_contact));
        let via = via_value(peer.transport, local_addr, &branch);
        let contact = matches!(method, Method::Invite | Method::Update | Method::Refer)
            .then_some(d.local_contact.as_str());
        let bytes = build_request(&RequestSpec {
            method,
            uri: &d.remote_target,
            via,
            from: &d.local_uri,
            to: &d.remote_uri,
            call_id: &d.id.call_id,
            cseq: seq,
            contact,
            routes: d.routes(),
            extra,
            body,
            user_agent: &self.config.user_agent,
        });
        Some((peer, bytes))
    }

    fn send_register(&mut self, now: Instant, id: RegistrationId) {
        let cnonce = self.random_hex(16);
        let branch = self.new_branch();
        let Some(reg) = self.regs.get_mut(&id) else {
            return;
        };
        reg.cseq += 1;
        reg.next_send = None;
        if !reg.unregistering {
            reg.state = RegistrationState::Registering;
        }
        let auth = reg.authorization(&cnonce);
        let via = via_value(reg.config.next_hop.transport, reg.contact_addr, &branch);
        let from = format!("<{}>;tag={}", reg.config.aor, reg.from_tag);
        let to = format!("<{}>", reg.config.aor);
        let mut extra: Vec<(&'static str, String)> =
            vec![("Expires", reg.expires_to_send().to_string())];
        extra.push(("Allow", ALLOW.to_string()));
        if let Some(a) = auth {
            extra.push(a);
        }
        let contact = reg.contact();
        let bytes = build_request(&RequestSpec {
            method: Method::Register,
            uri: &reg.config.registrar,
            via,
            from: &from,
            to: &to,
            call_id: &reg.call_id,
            cseq: reg.cseq,
            contact: Some(&contact),
            routes: &reg.config.routes,
            extra,
            body: None,
            user_agent: &self.config.user_agent,
        });
        let peer = reg.config.next_hop;
        self.start_client(
            now,
            peer,
            Method::Register,
            branch,
            bytes,
            Purpose::Register(id),
            None,
        );
    }

    // ===== session timers (RFC 4028) =====

    fn negotiate_session_uas(
        &mut self,
        now: Instant,
        handle: CallHandle,
        peer_se: Option<(u32, Option<String>)>,
        supports_timer: bool,
    ) {
        let (interval, we_refresh) = match peer_se {
            Some((secs, refresher)) => {
                let we = match refresher.as_deref() {
                    Some("uas") => true,
                    Some(_) => false,
                    None => !supports_timer, // §9: choose; a peer that supports timers refreshes
                };
                (Duration::from_secs(u64::from(secs)), we)
            }
            None => match self.config.session_expires {
                Some(ours) => (ours, true),
                None => return,
            },
        };
        self.start_session(now, handle, interval, we_refresh);
    }

    fn start_session(
        &mut self,
        now: Instant,
        handle: CallHandle,
        interval: Duration,
        we_refresh: bool,
    ) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if !call.options.session_timers {
            return; // this call's peer gets no session timers (a trunk's `session_timers`)
        }
        call.session = Some(SessionTimer {
            interval,
            we_refresh,
            deadline: session_deadline(now, interval, we_refresh),
        });
        self.schedule_call(handle);
    }

    fn refresh_session(
        &mut self,
        now: Instant,
        handle: CallHandle,
        se: Option<(u32, Option<String>)>,
        we_sent: bool,
    ) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let Some(s) = call.session.as_mut() else {
            if let Some((secs, refresher)) = se {
                // `refresher` names a role in this transaction: uac is whoever sent the request.
                let we = match refresher.as_deref() {
                    Some("uac") => we_sent,
                    Some("uas") => !we_sent,
                    _ => false,
                };
                self.start_session(now, handle, Duration::from_secs(u64::from(secs)), we);
            }
            return;
        };
        if let Some((secs, _)) = se {
            s.interval = Duration::from_secs(u64::from(secs));
        }
        s.deadline = session_deadline(now, s.interval, s.we_refresh);
        self.schedule_call(handle);
    }

    fn session_refresh(&mut self, now: Instant, handle: CallHandle) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if let Some(s) = call.session.as_mut() {
            // Until the refresh succeeds, the peer's expiry rule applies to us too.
            s.deadline = now + s.interval / 2;
        }
        if call.client_reinvite.is_some() || call.server_invite.is_some() {
            return;
        }
        if call.peer_allows_update {
            let extra = self.session_headers(handle, true);
            let _ = self.in_dialog_request(
                now,
                handle,
                Method::Update,
                extra,
                None,
                Purpose::Update(handle),
            );
        } else {
            self.send_reinvite(now, handle, None);
        }
    }

    /// The `Supported` value for a message of this call.
    fn supported(&self, handle: CallHandle) -> String {
        self.calls.get(&handle).map_or_else(
            || self.config.call_options.supported(),
            |c| c.options.supported(),
        )
    }

    /// Session-Expires (and Require: timer) for a message of this call. `refresher` names a
    /// role in the transaction carrying the header (RFC 4028 §4): `we_are_uac` is true for
    /// requests we send, false for our responses.
    fn session_headers(&self, handle: CallHandle, we_are_uac: bool) -> Vec<(&'static str, String)> {
        let Some(call) = self.calls.get(&handle) else {
            return Vec::new();
        };
        let Some(s) = &call.session else {
            return Vec::new();
        };
        let refresher = if s.we_refresh == we_are_uac {
            "uac"
        } else {
            "uas"
        };
        let mut v = vec![(
            "Session-Expires",
            format!("{};refresher={refresher}", s.interval.as_secs()),
        )];
        if !we_are_uac && !s.we_refresh {
            // The peer refreshes, so it supports timers: say we rely on it (§9).
            v.push(("Require", "timer".to_string()));
        }
        v
    }

    // ===== call bookkeeping =====

    fn end_call(&mut self, now: Instant, handle: CallHandle, reason: EndReason) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if call.state == CallState::Ended {
            return;
        }
        call.state = CallState::Ended;
        call.pending_2xx = None;
        call.reliable = None;
        call.session = None;
        call.linger_until = Some(now + ENDED_LINGER);
        self.active_calls = self.active_calls.saturating_sub(1);
        self.schedule_call(handle);
        self.event(SipEvent::Ended {
            call: handle,
            reason,
        });
    }

    fn fail_call(&mut self, now: Instant, handle: CallHandle, status: u16) {
        let cancelled = self
            .calls
            .get(&handle)
            .and_then(|c| c.uac.as_ref())
            .is_some_and(|u| u.hangup_requested);
        // After our CANCEL, a 487 or no final response at all (§9.1) means "cancelled".
        let reason = if cancelled && matches!(status, 487 | 408) {
            EndReason::Cancelled
        } else {
            EndReason::Failed(status)
        };
        self.end_call(now, handle, reason);
    }

    fn request_body(&self, id: u64) -> Option<Body> {
        let e = self.servers.get(&id)?;
        (!e.req.body().is_empty()).then(|| {
            Body::new(
                e.req.content_type().unwrap_or("application/octet-stream"),
                e.req.body().to_vec(),
            )
        })
    }

    // ===== timer plumbing =====

    fn schedule(&mut self, r: TimerRef, at: Option<Instant>) {
        if let Some(t) = at {
            self.timers.push(Reverse((t, r)));
        }
    }

    fn schedule_client(&mut self, id: u64) {
        let d = self.clients.get(&id).and_then(|e| e.tx.deadline());
        self.schedule(TimerRef::Client(id), d);
    }

    fn schedule_call(&mut self, h: CallHandle) {
        let d = self.calls.get(&h).and_then(call_deadline);
        self.schedule(TimerRef::Call(h), d);
    }

    /// Drops heap entries that no longer match their owner's deadline once they outnumber
    /// the live owners four to one (a long session-timer entry of an ended call would
    /// otherwise stay until it fires).
    fn compact_timers(&mut self) {
        let live = self.servers.len() + self.clients.len() + self.calls.len() + self.regs.len();
        if self.timers.len() <= 1024 || self.timers.len() <= 4 * live {
            return;
        }
        let mut entries: Vec<(Instant, TimerRef)> = std::mem::take(&mut self.timers)
            .into_iter()
            .map(|Reverse(e)| e)
            .collect();
        entries.retain(|(t, r)| self.owner_deadline(*r) == Some(*t));
        entries.sort();
        entries.dedup();
        self.timers = entries.into_iter().map(Reverse).collect();
    }

    fn owner_deadline(&self, r: TimerRef) -> Option<Instant> {
        match r {
            TimerRef::Server(id) => self.servers.get(&id).and_then(|e| e.tx.deadline()),
            TimerRef::Client(id) => self.clients.get(&id).and_then(|e| e.tx.deadline()),
            TimerRef::Call(h) => self.calls.get(&h).and_then(call_deadline),
            TimerRef::Reg(id) => reg_deadline(self.regs.get(&id)),
        }
    }

    // ===== small helpers =====

    fn send(&mut self, peer: Peer, payload: Vec<u8>) {
        self.out
            .push_back(Output::Transmit(Transmit { peer, payload }));
    }

    fn event(&mut self, e: SipEvent) {
        self.out.push_back(Output::Event(e));
    }

    fn alloc_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn new_call_handle(&mut self) -> CallHandle {
        CallHandle(self.alloc_id())
    }

    fn random_hex(&mut self, n: usize) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        (0..n)
            .map(|_| HEX[self.rng.gen_range(0..16)] as char)
            .collect()
    }

    fn new_tag(&mut self) -> String {
        self.random_hex(10)
    }

    fn new_branch(&mut self) -> String {
        format!("{BRANCH_MAGIC_COOKIE}{}", self.random_hex(16))
    }

    /// Our address towards `dest`: the configured advertised IP, else a specific listen IP,
    /// else the hint, else loopback for loopback peers, else the default IP.
    fn local_addr(&self, transport: Transport, dest: IpAddr, hint: Option<IpAddr>) -> SocketAddr {
        let listen = self
            .config
            .listen
            .iter()
            .find(|(t, _)| *t == transport)
            .or_else(|| self.config.listen.first())
            .map(|(_, a)| *a)
            .unwrap_or_else(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060));
        let ip = if let Some(ip) = self.config.advertised_ip {
            ip
        } else if !listen.ip().is_unspecified() {
            listen.ip()
        } else if let Some(h) = hint {
            h
        } else if dest.is_loopback() {
            dest
        } else {
            self.config.default_ip
        };
        SocketAddr::new(ip, listen.port())
    }
}

// ----- free helpers -----

fn call_deadline(c: &Call) -> Option<Instant> {
    if let Some(l) = c.linger_until {
        return Some(l);
    }
    [
        c.pending_2xx.as_ref().map(|r| r.next.min(r.give_up)),
        c.reliable.as_ref().map(|(_, r)| r.next.min(r.give_up)),
        c.session.as_ref().map(|s| s.deadline),
    ]
    .into_iter()
    .flatten()
    .min()
}

fn reg_deadline(r: Option<&Registration>) -> Option<Instant> {
    r.and_then(|r| r.next_send)
}

fn session_deadline(now: Instant, interval: Duration, we_refresh: bool) -> Instant {
    if we_refresh {
        now + interval / 2 // RFC 4028 §10: refresh at half the interval
    } else {
        now + interval - SESSION_EXPIRY_MARGIN.min(interval / 3)
    }
}

/// Session-Expires value and refresher param (RFC 4028 §4), also in compact form `x`.
fn session_expires(msg: &Msg) -> Option<(u32, Option<String>)> {
    let v = msg.header("Session-Expires")?;
    let secs = v.split(';').next()?.trim().parse::<u32>().ok()?;
    let refresher = message::param_in(v.find(';').map(|i| &v[i..]).unwrap_or(""), "refresher")
        .map(|r| r.to_ascii_lowercase());
    Some((secs, refresher))
}

fn server_key(msg: &Msg, method: Method) -> ServerKey {
    match &msg.via.branch {
        Some(b) if b.starts_with(BRANCH_MAGIC_COOKIE) => ServerKey::Rfc3261 {
            branch: b.clone(),
            sent_by: format!("{}:{}", msg.via.host, msg.via.port.unwrap_or(5060)),
            method: method as u8,
        },
        _ => ServerKey::Rfc2543 {
            // RFC 3261 §17.2.3 fallback: Request-URI is folded into the Via/Call-ID/tags tuple.
            call_id: msg.call_id.clone(),
            from_tag: msg.from_tag.clone().unwrap_or_default(),
            cseq: msg.cseq.seq,
            via: format!("{}:{}", msg.via.host, msg.via.port.unwrap_or(5060)),
            method: method as u8,
        },
    }
}

/// Adds `received` and fills `rport` on the top Via of a request (RFC 3261 §18.2.1, RFC 3581 §4).
fn annotate_via(msg: &mut Msg, peer: Peer) {
    let ip = peer.addr.ip();
    let mut v = msg.via_raw.clone();
    let first_end = message::split_list(&v)
        .first()
        .map(|f| f.len())
        .unwrap_or(v.len());
    let (first, rest) = v.split_at(first_end.min(v.len()));
    let mut first = first.to_string();
    let rest = rest.to_string();
    let host_is_ip = msg.via.host.parse::<IpAddr>().ok();
    let mut changed = false;
    if msg.via.rport == Some(None) {
        first = replace_flag_param(&first, "rport", &format!("rport={}", peer.addr.port()));
        msg.via.rport = Some(Some(peer.addr.port()));
        changed = true;
    }
    if (host_is_ip != Some(ip) || msg.via.rport.is_some()) && msg.via.received.is_none() {
        first.push_str(&format!(";received={ip}"));
        msg.via.received = Some(ip);
        changed = true;
    }
    if changed {
        v = format!("{first}{rest}");
        msg.via_raw = v;
    }
}

fn replace_flag_param(via: &str, flag: &str, with: &str) -> String {
    let mut out = String::with_capacity(via.len() + 8);
    for (i, part) in via.split(';').enumerate() {
        if i > 0 {
            out.push(';');
        }
        if i > 0 && part.trim().eq_ignore_ascii_case(flag) {
            out.push_str(with);
        } else {
            out.push_str(part);
        }
    }
    out
}

fn via_value(transport: Transport, addr: SocketAddr, branch: &str) -> String {
    format!(
        "SIP/2.0/{} {};branch={branch};rport",
        transport.via_token(),
        fmt_host_port(addr)
    )
}

fn contact_for(addr: SocketAddr, transport: Transport) -> String {
    match transport {
        Transport::Udp => format!("<sip:voxline@{}>", fmt_host_port(addr)),
        Transport::Tcp => format!("<sip:voxline@{};transport=tcp>", fmt_host_port(addr)),
    }
}

fn contact_ip(contact: &str) -> Option<IpAddr> {
    message::uri_host_port(message::uri_of(contact)).and_then(|(h, _)| h.parse().ok())
}

fn fmt_host_port(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

fn extract_branch(bytes: &[u8]) -> String {
    top_via(bytes)
        .and_then(|v| message::parse_via(&v))
        .and_then(|v| v.branch)
        .unwrap_or_default()
}

/// The top Via value of a message we built.
fn top_via(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .find_map(|l| l.strip_prefix("Via:"))
        .map(|v| v.trim().to_string())
}
