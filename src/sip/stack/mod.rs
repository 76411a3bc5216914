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
use super::dialog::{Dialog, DialogId, record_routes};
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

mod alias;
mod calls;
mod in_dialog;
mod requests;
mod responses;
mod send;
mod session_timer;
mod timers;
mod uac;
mod uas;

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
    /// The connection of a WebSocket client (a browser tab) closed: no BYE can reach it, so
    /// the call ended at once (RFC 7118 §5: the client is reachable only over it).
    ConnectionClosed,
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
    /// Calls refused because the node is draining ([`SipStack::drain`]).
    pub refused_draining: u64,
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
    /// Draining: new calls and OPTIONS probes get 503 with this Retry-After (seconds).
    draining: Option<u32>,
    /// RFC 5923 connection aliases: a TLS client's advertised address → the address of the
    /// connection it opened (see `alias.rs`).
    aliases: HashMap<SocketAddr, SocketAddr>,
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
            draining: None,
            aliases: HashMap::new(),
        }
    }

    /// Starts draining this node: from now on an out-of-dialog OPTIONS (a load balancer's
    /// probe, such as Kamailio's dispatcher) and a new INVITE are answered 503 Service
    /// Unavailable with `Retry-After: retry_after_s` (RFC 3261 §21.5.4, §20.33), so the
    /// balancer stops sending and fails the call over. Calls in progress and their in-dialog
    /// requests are served as before. There is no way back: a drained node exits.
    pub fn drain(&mut self, retry_after_s: u32) {
        self.draining = Some(retry_after_s);
    }

    /// Whether [`SipStack::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.is_some()
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

    /// The connection to `peer` failed (a refused connect, a TLS certificate that does not
    /// verify) or closed: client transactions sent there that have heard nothing end now as
    /// if their timer had fired (RFC 3261 §8.1.3.1), so a call fails over at once instead of
    /// after 64·T1. The calls of a WebSocket client on that connection end
    /// ([`EndReason::ConnectionClosed`]).
    pub fn handle_transport_error(&mut self, now: Instant, peer: Peer) {
        self.now = now;
        self.forget_aliases(peer);
        let ids: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, e)| e.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if self
                .clients
                .get_mut(&id)
                .is_some_and(|e| e.tx.transport_error(now))
            {
                self.client_timeout(now, id);
            }
        }
        if peer.transport.is_reliable() && !peer.transport.is_websocket() {
            for c in self.calls.values_mut() {
                if c.dialog.peer == peer && c.state != CallState::Ended {
                    c.dialog.connection_closed();
                }
            }
        }
        if peer.transport.is_websocket() {
            let calls: Vec<CallHandle> = self
                .calls
                .iter()
                .filter(|(_, c)| c.dialog.peer == peer && c.state != CallState::Ended)
                .map(|(h, _)| *h)
                .collect();
            for h in calls {
                self.end_call(now, h, EndReason::ConnectionClosed);
            }
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

/// Our Via. Over TLS it carries `alias` (RFC 5923 §5): the server may send its requests
/// back over the connection voxline opened, which is what reaches voxline behind NAT or
/// without a TLS listener of its own.
fn via_value(transport: Transport, addr: SocketAddr, branch: &str) -> String {
    let alias = if transport == Transport::Tls {
        ";alias"
    } else {
        ""
    };
    format!(
        "SIP/2.0/{} {};branch={branch};rport{alias}",
        transport.via_token(),
        fmt_host_port(addr)
    )
}

fn contact_for(addr: SocketAddr, transport: Transport) -> String {
    match transport {
        Transport::Udp => format!("<sip:voxline@{}>", fmt_host_port(addr)),
        Transport::Tcp => format!("<sip:voxline@{};transport=tcp>", fmt_host_port(addr)),
        // `transport=tls` rather than a sips: URI: what trunks (Twilio, Telnyx, Asterisk)
        // expect on a sip: dialog over TLS; RFC 5630 keeps it valid, if deprecated.
        Transport::Tls => format!("<sip:voxline@{};transport=tls>", fmt_host_port(addr)),
        Transport::Ws => format!("<sip:voxline@{};transport=ws>", fmt_host_port(addr)),
        Transport::Wss => format!("<sip:voxline@{};transport=wss>", fmt_host_port(addr)),
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
