//! What the call layer tells a call's media (its [`crate::runtime::media::MediaCall`] part).

use std::time::Duration;

use crate::media::dtmf::Digit;
use crate::runtime::media::MediaLink;
use crate::sdp::NegotiatedMedia;

/// What the call manager, or the call's agent task, tells a call's media.
#[derive(Debug)]
#[non_exhaustive]
pub enum MediaControl {
    /// The session changed (re-INVITE/UPDATE): hold, resume, codec or address.
    Update(NegotiatedMedia),
    /// DTMF received by SIP INFO.
    InfoDtmf {
        /// Content-Type.
        content_type: String,
        /// Body.
        body: Vec<u8>,
    },
    /// Send DTMF in the media: RFC 4733 events, or in-band tones.
    SendDtmf {
        /// The digits.
        digits: Vec<Digit>,
        /// Each digit's length.
        duration: Duration,
        /// Tones in the audio (ITU-T Q.23) instead of RFC 4733 events.
        inband: bool,
    },
    /// The AI agent hangs up: end the call once its goodbye has played.
    AgentHangup,
}

/// A link to a call's media that does not own it.
pub type CallMediaLink = MediaLink<MediaControl>;
