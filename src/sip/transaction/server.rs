//! Server transactions (RFC 3261 §17.2, RFC 6026).

use std::time::{Duration, Instant};

use super::{TimerConfig, TxAction, TxKind};

/// The states of a server transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE received, no response yet (§17.2.2).
    Trying,
    /// A provisional response was sent (for INVITE, the initial state, §17.2.1).
    Proceeding,
    /// A final response was sent (non-2xx for INVITE); retransmitting it / absorbing requests.
    Completed,
    /// INVITE: the ACK for a non-2xx arrived; absorbing ACKs for Timer I.
    Confirmed,
    /// INVITE: a 2xx was sent (RFC 6026 §8.7, Timer L); the TU retransmits the 2xx.
    Accepted,
    /// Over.
    Terminated,
}

/// A server transaction: absorbs request retransmissions and retransmits its responses.
#[derive(Debug, Clone)]
pub struct ServerTransaction {
    kind: TxKind,
    state: ServerState,
    reliable: bool,
    timers: TimerConfig,
    last_response: Option<Vec<u8>>,
    /// Timer G: next retransmission of a non-2xx final response to INVITE.
    retransmit: Option<(Instant, Duration)>,
    /// Timer H: give up waiting for the ACK.
    timeout: Option<Instant>,
    /// Timer I, J or L.
    linger: Option<Instant>,
}

impl ServerTransaction {
    /// Starts a transaction for a request received at `now`.
    pub fn new(kind: TxKind, reliable: bool, timers: TimerConfig) -> Self {
        ServerTransaction {
            kind,
            state: match kind {
                TxKind::Invite => ServerState::Proceeding,
                TxKind::NonInvite => ServerState::Trying,
            },
            reliable,
            timers,
            last_response: None,
            retransmit: None,
            timeout: None,
            linger: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// The kind.
    pub fn kind(&self) -> TxKind {
        self.kind
    }

    /// Whether a final response has been sent.
    pub fn is_final(&self) -> bool {
        !matches!(self.state, ServerState::Trying | ServerState::Proceeding)
    }

    /// The earliest time `handle_timeout` must be called, if any.
    pub fn deadline(&self) -> Option<Instant> {
        [self.retransmit.map(|r| r.0), self.timeout, self.linger]
            .into_iter()
            .flatten()
            .min()
    }

    /// The TU sends a response with `code`, serialised as `bytes`. Returns what to send (the
    /// response itself, unless the transaction is already past the point of sending it).
    pub fn send_response(&mut self, now: Instant, code: u16, bytes: Vec<u8>) -> Vec<TxAction> {
        if self.is_final() {
            return Vec::new(); // §17.2.1: a final response is sent once; later ones are dropped.
        }
        let out = vec![TxAction::Send(bytes.clone())];
        self.last_response = Some(bytes);
        match (self.kind, code) {
            (_, 100..=199) => {
                self.state = ServerState::Proceeding;
            }
            (TxKind::Invite, 200..=299) => {
                self.state = ServerState::Accepted;
                self.linger = Some(now + self.timers.t1x64()); // Timer L
            }
            (TxKind::Invite, _) => {
                self.state = ServerState::Completed;
                if !self.reliable {
                    self.retransmit = Some((now + self.timers.t1, self.timers.t1)); // Timer G
                }
                self.timeout = Some(now + self.timers.t1x64()); // Timer H
            }
            (TxKind::NonInvite, _) => {
                self.state = ServerState::Completed;
                // Timer J = 64·T1 unreliable, zero reliable (§17.2.2).
                self.linger = Some(
                    now + if self.reliable {
                        Duration::ZERO
                    } else {
                        self.timers.t1x64()
                    },
                );
            }
        }
        out
    }

    /// A retransmission of the request arrived: resend the last response, if any
    /// (§17.2.1, §17.2.2). In Accepted the retransmission is absorbed (RFC 6026 §8.7).
    pub fn handle_retransmission(&mut self) -> Vec<TxAction> {
        match self.state {
            ServerState::Proceeding | ServerState::Completed => self
                .last_response
                .clone()
                .map(TxAction::Send)
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The ACK for a non-2xx final response arrived (§17.2.1): Confirmed, Timer I.
    pub fn handle_ack(&mut self, now: Instant) -> Vec<TxAction> {
        if self.state == ServerState::Completed {
            self.state = ServerState::Confirmed;
            self.retransmit = None;
            self.timeout = None;
            self.linger = Some(
                now + if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                },
            );
        }
        Vec::new()
    }

    /// Fires due timers.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<TxAction> {
        let mut out = Vec::new();
        if let Some(t) = self.timeout
            && now >= t
        {
            // Timer H: the ACK never came.
            self.timeout = None;
            self.retransmit = None;
            self.state = ServerState::Terminated;
            out.push(TxAction::TimedOut);
            out.push(TxAction::Terminated);
            return out;
        }
        if let Some(t) = self.linger
            && now >= t
        {
            self.linger = None;
            self.state = ServerState::Terminated;
            out.push(TxAction::Terminated);
            return out;
        }
        if let Some((t, interval)) = self.retransmit
            && now >= t
        {
            let next = (interval * 2).min(self.timers.t2); // Timer G: min(2·G, T2)
            self.retransmit = Some((now + next, next));
            if let Some(r) = &self.last_response {
                out.push(TxAction::Send(r.clone()));
            }
        }
        out
    }
}
