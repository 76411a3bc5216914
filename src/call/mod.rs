//! Call orchestration: joins a SIP dialog, its SDP negotiation and the agent that answers it.
//!
//! [`CallManager`] reacts to [`SipEvent`]s, answers and places calls through the [`SipStack`]
//! it is handed, and keeps its own deadlines (ring time, hang-up time) that the runtime polls
//! with [`CallManager::poll_timeout`]. It reads no clock itself.

pub mod agent;
mod backend;
pub mod bridge;
pub(crate) mod control;
mod dtmf;
mod manager;
pub(crate) mod media;
pub(crate) mod metrics;
mod offer;
pub mod postcall;
mod route;
mod service;
mod table;
mod tick;
pub mod tools;
mod transfer;

use crate::sip::{CallHandle, EndReason};

pub use bridge::{BargeIn, Voice};
pub use dtmf::{DTMF_DIGIT, DtmfError, DtmfSendMethod};
pub use manager::CallManager;
pub use route::{
    AgentKind, AgentSpec, DynamicRoutes, MediaPolicy, Routes, TrunkPolicy, valid_route_pattern,
};
pub use service::{CallService, DialError, DialRequest, TrunkSpec};
pub use service::{TRANSFER_TIMEOUT, TransferRequestError};
pub use table::{CallInfo, CallTable};
pub use transfer::{TransferError, TransferOutcome, TransferTarget};

/// The content type of SDP bodies (RFC 4566 §8.1).
pub const SDP_CONTENT_TYPE: &str = "application/sdp";

/// How an outbound call ended, reported to whoever placed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundResult {
    /// Whether it was answered.
    pub answered: bool,
    /// Why it ended.
    pub reason: EndReason,
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
        reply: tokio::sync::oneshot::Sender<Result<CallHandle, DialError>>,
    },
    /// Start draining: new calls and OPTIONS probes get 503 with this Retry-After
    /// ([`crate::sip::SipStack::drain`]); calls in progress go on.
    Drain {
        /// Seconds.
        retry_after_s: u32,
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

/// `Retry-After` (RFC 3261 §20.33) sent with the fallback status when the AI backend rate
/// limits without saying for how long.
pub const DEFAULT_RETRY_AFTER_S: u64 = 5;
