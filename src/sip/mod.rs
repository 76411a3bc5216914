//! SIP signalling core (sans-IO, RFC 3261).
//!
//! [`SipStack`] is the one object the runtime drives: feed it received bytes with
//! [`SipStack::handle_message`] and the time with [`SipStack::handle_timeout`], give it commands
//! (answer, hang up, place a call, register…), and drain [`SipStack::poll_output`] until it
//! returns [`Output::Timeout`]. Bodies are opaque bytes with a content type: this module knows
//! nothing of SDP or codecs.
//!
//! Inside: [`message`] (framing, limits, header access over `rsip`), [`transaction`] (the four
//! RFC 3261 §17 state machines), [`dialog`] (dialog state per call), [`registration`] (UAC
//! REGISTER), [`options`] (per-call 100rel and session timers), [`auth`] (digest),
//! [`resolve`] (RFC 3263 target selection) and [`stack`].

pub mod auth;
pub(crate) mod builder;
pub(crate) mod dialog;
pub mod message;
pub(crate) mod options;
pub mod registration;
pub mod resolve;
pub mod stack;
pub mod transaction;
pub(crate) mod transport;

use std::fmt;

pub use options::{CallOptions, Rel100};
pub use stack::{
    CallDirection, EndReason, IncomingCall, LimitResponse, OutgoingCall, Output, SipEvent,
    SipStack, StackConfig, StackCounters, StackError,
};
pub use transport::{Peer, Transmit, Transport};

/// A message body with its content type, opaque to the SIP layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// The Content-Type value, e.g. `application/sdp`.
    pub content_type: String,
    /// The bytes.
    pub data: Vec<u8>,
}

impl Body {
    /// A body of the given type.
    pub fn new(content_type: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        Body {
            content_type: content_type.into(),
            data: data.into(),
        }
    }
}

/// The SIP Call-ID of a dialog (RFC 3261 §20.8).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub(crate) String);

impl CallId {
    /// Wraps a Call-ID value.
    pub fn new(v: impl Into<String>) -> Self {
        Self(v.into())
    }

    /// The Call-ID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The stack's handle for one INVITE session (a call), from its first message to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallHandle(pub(crate) u64);

impl CallHandle {
    /// Wraps a raw value.
    pub const fn new(v: u64) -> Self {
        Self(v)
    }

    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for CallHandle {
    fn from(v: u64) -> Self {
        Self(v)
    }
}

impl fmt::Display for CallHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call#{}", self.0)
    }
}

/// The stack's handle for one registration binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistrationId(pub(crate) u64);

impl RegistrationId {
    /// Wraps a raw value.
    pub const fn new(v: u64) -> Self {
        Self(v)
    }

    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for RegistrationId {
    fn from(v: u64) -> Self {
        Self(v)
    }
}
