//! Per-call SIP extensions: whether a call uses session timers (RFC 4028) and reliable
//! provisional responses (RFC 3262, `100rel`). Which a call uses depends on its peer — a
//! trunk's `session_timers` and `prack` settings — so they are set per call: with
//! [`super::OutgoingCall::options`] for calls we place, and with
//! [`super::SipStack::set_call_options`] for calls we receive, before the first response.

/// The option tag of reliable provisional responses (RFC 3262 §3).
pub const TAG_100REL: &str = "100rel";
/// The option tag of session timers (RFC 4028 §3).
pub const TAG_TIMER: &str = "timer";

/// How a call uses reliable provisional responses (RFC 3262).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Rel100 {
    /// Advertise `Supported: 100rel`. As UAS, send 1xx reliably when the peer requires it; as
    /// UAC, PRACK every reliable 1xx.
    #[default]
    Supported,
    /// As UAC, send `Require: 100rel`. As UAS, send 1xx reliably, and refuse an INVITE
    /// whose sender does not support 100rel with 421 Extension Required (§3).
    Required,
    /// Neither advertise nor use 100rel. As UAS, refuse `Require: 100rel` with 420 Bad
    /// Extension; as UAC, send no PRACK.
    Disabled,
}

/// The extensions one call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOptions {
    /// Session timers (RFC 4028): ask for them (with the stack's `session_expires`), honour
    /// the peer's, and refresh or end the call on expiry. `false`: no `Session-Expires` is
    /// sent, a peer's is ignored, and `timer` is not advertised.
    pub session_timers: bool,
    /// Reliable provisional responses.
    pub rel100: Rel100,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            session_timers: true,
            rel100: Rel100::Supported,
        }
    }
}

impl CallOptions {
    /// The `Supported` header value for this call's messages.
    pub fn supported(&self) -> String {
        let mut tags = Vec::with_capacity(2);
        if self.rel100 != Rel100::Disabled {
            tags.push(TAG_100REL);
        }
        if self.session_timers {
            tags.push(TAG_TIMER);
        }
        tags.join(", ")
    }

    /// Whether an inbound call's 1xx go reliably, given what its INVITE said.
    pub(crate) fn reliable_provisionals(&self, peer: PeerRel100) -> bool {
        match self.rel100 {
            Rel100::Supported => peer.requires,
            Rel100::Required => peer.supports || peer.requires,
            Rel100::Disabled => false,
        }
    }

    /// The refusal an inbound INVITE gets when its 100rel use and ours cannot meet:
    /// (status, header) — 420 with `Unsupported` or 421 with `Require`.
    pub(crate) fn rel100_refusal(&self, peer: PeerRel100) -> Option<(u16, (&'static str, String))> {
        match self.rel100 {
            // RFC 3261 §8.2.2.3: an extension the UAS does not support.
            Rel100::Disabled if peer.requires => Some((420, ("Unsupported", TAG_100REL.into()))),
            // RFC 3262 §3: the UAS insists on reliability the UAC does not support.
            Rel100::Required if !peer.supports && !peer.requires => {
                Some((421, ("Require", TAG_100REL.into())))
            }
            _ => None,
        }
    }
}

/// What an INVITE said about 100rel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct PeerRel100 {
    /// `Require: 100rel`.
    pub requires: bool,
    /// `Supported: 100rel`.
    pub supports: bool,
}
