//! Client transactions (RFC 3261 §17.1).

use std::time::{Duration, Instant};

use super::{TIMER_D_UNRELIABLE, TimerConfig, TxAction, TxKind};

/// The states of a client transaction (INVITE and non-INVITE share the names they share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, nothing heard yet (§17.1.1.2).
    Calling,
    /// Non-INVITE sent, nothing heard yet (§17.1.2.2).
    Trying,
    /// A provisional response arrived.
    Proceeding,
    /// A final response arrived (non-2xx for INVITE); absorbing retransmissions.
    Completed,
    /// INVITE got a 2xx; absorbing 2xx retransmissions for the TU (RFC 6026 §8.4, Timer M).
    Accepted,
    /// Over.
    Terminated,
}

/// A client transaction: retransmits its request and filters the responses.
#[derive(Debug, Clone)]
pub struct ClientTransaction {
    kind: TxKind,
    state: ClientState,
    reliable: bool,
    timers: TimerConfig,
    request: Vec<u8>,
    ack: Option<Vec<u8>>,
    /// Timer A or E: next retransmission and the current interval.
    retransmit: Option<(Instant, Duration)>,
    /// Timer B or F.
    timeout: Option<Instant>,
    /// Timer D, K or M.
    linger: Option<Instant>,
    /// It ended on a transport error rather than a timer.
    transport_failed: bool,
}

impl ClientTransaction {
    /// Starts a transaction whose request (`request`) has just been sent at `now`.
    pub fn new(
        kind: TxKind,
        request: Vec<u8>,
        reliable: bool,
        timers: TimerConfig,
        now: Instant,
    ) -> Self {
        let retransmit = (!reliable).then_some((now + timers.t1, timers.t1));
        ClientTransaction {
            kind,
            state: match kind {
                TxKind::Invite => ClientState::Calling,
                TxKind::NonInvite => ClientState::Trying,
            },
            reliable,
            timers,
            request,
            ack: None,
            retransmit,
            timeout: Some(now + timers.t1x64()),
            linger: None,
            transport_failed: false,
        }
    }

    /// The current state.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// The kind.
    pub fn kind(&self) -> TxKind {
        self.kind
    }

    /// The request this transaction carries.
    pub fn request(&self) -> &[u8] {
        &self.request
    }

    /// The earliest time `handle_timeout` must be called, if any.
    pub fn deadline(&self) -> Option<Instant> {
        [self.retransmit.map(|r| r.0), self.timeout, self.linger]
            .into_iter()
            .flatten()
            .min()
    }

    /// Feeds a response with status `code`. For a non-2xx final response to an INVITE the
    /// owner must build the ACK (RFC 3261 §17.1.1.3) and hand it over with [`Self::set_ack`]
    /// when the returned actions contain `PassUp`.
    pub fn handle_response(&mut self, now: Instant, code: u16) -> Vec<TxAction> {
        match self.kind {
            TxKind::Invite => self.invite_response(now, code),
            TxKind::NonInvite => self.non_invite_response(now, code),
        }
    }

    /// Stores (and sends) the ACK for a non-2xx final response.
    pub fn set_ack(&mut self, ack: Vec<u8>) -> TxAction {
        self.ack = Some(ack.clone());
        TxAction::Send(ack)
    }

    /// A CANCEL for this INVITE was sent: without a final response within 64·T1 the
    /// transaction times out, even in Proceeding (RFC 3261 §9.1).
    pub fn cancel_sent(&mut self, now: Instant) {
        if matches!(self.state, ClientState::Calling | ClientState::Proceeding)
            && self.timeout.is_none()
        {
            self.timeout = Some(now + self.timers.t1x64());
        }
    }

    /// The connection the request went on failed or closed before any response: the
    /// transaction times out at once (RFC 3261 §8.1.3.1: a transport error is treated like a
    /// 503, and the caller fails over as it does after Timer B or F). True if it will; a
    /// transaction that already heard a response waits for its timers as usual.
    pub fn transport_error(&mut self, now: Instant) -> bool {
        if matches!(self.state, ClientState::Calling | ClientState::Trying) {
            self.timeout = Some(now);
            self.transport_failed = true;
            true
        } else {
            false
        }
    }

    /// Whether it ended on a transport error (its `TimedOut` then stands for a 503).
    pub fn transport_failed(&self) -> bool {
        self.transport_failed
    }

    /// Fires due timers.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<TxAction> {
        let mut out = Vec::new();
        if let Some(t) = self.timeout
            && now >= t
        {
            // Timer B / F.
            self.timeout = None;
            self.retransmit = None;
            self.state = ClientState::Terminated;
            out.push(TxAction::TimedOut);
            out.push(TxAction::Terminated);
            return out;
        }
        if let Some(t) = self.linger
            && now >= t
        {
            // Timer D / K / M.
            self.linger = None;
            self.state = ClientState::Terminated;
            out.push(TxAction::Terminated);
            return out;
        }
        if let Some((t, interval)) = self.retransmit
            && now >= t
        {
            let next = match self.kind {
                // Timer A doubles without bound (§17.1.1.2).
                TxKind::Invite => interval * 2,
                // Timer E doubles up to T2; in Proceeding it is T2 (§17.1.2.2).
                TxKind::NonInvite if self.state == ClientState::Proceeding => self.timers.t2,
                TxKind::NonInvite => (interval * 2).min(self.timers.t2),
            };
            self.retransmit = Some((now + next, next));
            out.push(TxAction::Send(self.request.clone()));
        }
        out
    }

    fn invite_response(&mut self, now: Instant, code: u16) -> Vec<TxAction> {
        match (self.state, code) {
            (ClientState::Calling | ClientState::Proceeding, 100..=199) => {
                self.state = ClientState::Proceeding;
                self.retransmit = None; // Timer A stops in Proceeding.
                self.timeout = None; // Timer B applies in Calling only; the TU may CANCEL.
                vec![TxAction::PassUp]
            }
            (ClientState::Calling | ClientState::Proceeding, 200..=299) => {
                // RFC 6026 §8.4: Accepted, Timer M = 64·T1; 2xx retransmissions go to the TU.
                self.state = ClientState::Accepted;
                self.retransmit = None;
                self.timeout = None;
                self.linger = Some(now + self.timers.t1x64());
                vec![TxAction::PassUp]
            }
            (ClientState::Calling | ClientState::Proceeding, 300..=699) => {
                self.state = ClientState::Completed;
                self.retransmit = None;
                self.timeout = None;
                self.linger = Some(
                    now + if self.reliable {
                        Duration::ZERO
                    } else {
                        TIMER_D_UNRELIABLE
                    },
                );
                vec![TxAction::PassUp]
            }
            (ClientState::Accepted, 200..=299) => vec![TxAction::PassUp],
            (ClientState::Completed, 300..=699) => {
                // Retransmitted final response: resend the ACK, do not pass up.
                self.ack.clone().map(TxAction::Send).into_iter().collect()
            }
            _ => Vec::new(),
        }
    }

    fn non_invite_response(&mut self, now: Instant, code: u16) -> Vec<TxAction> {
        match (self.state, code) {
            (ClientState::Trying | ClientState::Proceeding, 100..=199) => {
                self.state = ClientState::Proceeding;
                vec![TxAction::PassUp]
            }
            (ClientState::Trying | ClientState::Proceeding, 200..=699) => {
                self.state = ClientState::Completed;
                self.retransmit = None;
                self.timeout = None;
                // Timer K = T4 on unreliable transports, zero on reliable (§17.1.2.2).
                self.linger = Some(
                    now + if self.reliable {
                        Duration::ZERO
                    } else {
                        self.timers.t4
                    },
                );
                vec![TxAction::PassUp]
            }
            _ => Vec::new(), // retransmissions in Completed are absorbed
        }
    }
}
