//! Transactions (RFC 3261 §17, with the RFC 6026 fixes for INVITE 2xx handling).
//!
//! Four state machines, all sans-IO: the owner feeds responses or requests and the current
//! time, and asks [`ClientTransaction::deadline`] / [`ServerTransaction::deadline`] when to call
//! `handle_timeout` next. Each call returns what to do, as [`TxAction`]s; the owner sends bytes
//! and informs the transaction user (TU). Nothing here reads the clock or touches a socket.
//!
//! | machine | states | timers |
//! |---|---|---|
//! | client INVITE (§17.1.1) | Calling → Proceeding → Completed / Accepted → Terminated | A, B, D, M |
//! | client non-INVITE (§17.1.2) | Trying → Proceeding → Completed → Terminated | E, F, K |
//! | server INVITE (§17.2.1) | Proceeding → Completed → Confirmed / Accepted → Terminated | G, H, I, L |
//! | server non-INVITE (§17.2.2) | Trying → Proceeding → Completed → Terminated | J |

mod client;
mod server;

use std::time::Duration;

pub use client::{ClientState, ClientTransaction};
pub use server::{ServerState, ServerTransaction};

/// T1: round-trip time estimate, default 500 ms (RFC 3261 §17.1.1.1, Table 4).
pub const DEFAULT_T1: Duration = Duration::from_millis(500);
/// T2: the longest retransmit interval for non-INVITE requests and INVITE responses, 4 s.
pub const DEFAULT_T2: Duration = Duration::from_secs(4);
/// T4: the longest time a message stays in the network, 5 s.
pub const DEFAULT_T4: Duration = Duration::from_secs(5);
/// Timer D on an unreliable transport: at least 32 s (RFC 3261 §17.1.1.2).
pub const TIMER_D_UNRELIABLE: Duration = Duration::from_secs(32);

/// The base timers, configurable (RFC 3261 §17: "T1 … MAY be changed").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// T1.
    pub t1: Duration,
    /// T2.
    pub t2: Duration,
    /// T4.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: DEFAULT_T1,
            t2: DEFAULT_T2,
            t4: DEFAULT_T4,
        }
    }
}

impl TimerConfig {
    /// 64·T1: Timers B, F, H, J, L, M and the 2xx/ACK give-up time.
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }
}

/// What a transaction asks its owner to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxAction {
    /// Send these bytes to the transaction's peer (a retransmission or a stored reply).
    Send(Vec<u8>),
    /// Give this message to the transaction user.
    PassUp,
    /// The transaction timed out (Timer B, F or H): tell the TU.
    TimedOut,
    /// The transaction is over and may be forgotten.
    Terminated,
}

/// Whether a transaction serves an INVITE or another method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxKind {
    /// INVITE.
    Invite,
    /// Any other method (ACK never has a transaction of its own).
    NonInvite,
}
