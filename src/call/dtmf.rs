//! Sending key presses on a call: RFC 4733 events, SIP INFO or in-band tones.

use std::time::{Duration, Instant};

use crate::sip::{Body, CallHandle, SipStack};

use super::control;
use super::manager::CallManager;

/// How to send DTMF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfSendMethod {
    /// RFC 4733 telephone-event packets; in-band tones when the call has no
    /// `telephone-event` and the method was not asked for explicitly.
    Rfc4733,
    /// SIP INFO with `application/dtmf-relay`.
    Info,
    /// ITU-T Q.23 tones in the audio.
    InBand,
}

/// Why DTMF could not be sent on a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DtmfError {
    /// No such call (or it has ended).
    #[error("no call {0}")]
    NoCall(u64),
    /// The call is not answered yet: no media runs.
    #[error("the call has no media yet")]
    NoMedia,
    /// The call's media task has a full control queue.
    #[error("the media task is busy")]
    MediaBusy,
    /// RFC 4733 was asked for, and the peer did not accept telephone-event.
    #[error("the peer did not accept telephone-event (RFC 4733) on this call")]
    NoTelephoneEvent,
    /// SIP INFO could not be sent.
    #[error(transparent)]
    Sip(#[from] crate::sip::StackError),
}

/// How long each DTMF digit we send lasts.
pub const DTMF_DIGIT: Duration = Duration::from_millis(100);

impl CallManager {
    pub(super) fn send_dtmf(
        &mut self,
        now: Instant,
        stack: &mut SipStack,
        call: CallHandle,
        digits: Vec<crate::media::dtmf::Digit>,
        method: Option<DtmfSendMethod>,
    ) -> Result<(), DtmfError> {
        let c = self.calls.get(&call).ok_or(DtmfError::NoCall(call.0))?;
        let events = c
            .media
            .as_ref()
            .is_some_and(|m| m.telephone_event.is_some());
        let in_media = |inband: bool| {
            let tx = c.media_tx.as_ref().ok_or(DtmfError::NoMedia)?;
            tx.try_send(control::MediaControl::SendDtmf {
                digits: digits.clone(),
                duration: DTMF_DIGIT,
                inband,
            })
            .map_err(|_| DtmfError::MediaBusy)
        };
        match (method, method.unwrap_or(c.dtmf)) {
            (_, DtmfSendMethod::Rfc4733) if events => in_media(false),
            (Some(_), DtmfSendMethod::Rfc4733) => Err(DtmfError::NoTelephoneEvent),
            // The trunk's default, RFC 4733, without telephone-event: tones, as a phone would.
            (None, DtmfSendMethod::Rfc4733) | (_, DtmfSendMethod::InBand) => in_media(true),
            (_, DtmfSendMethod::Info) => {
                for d in digits {
                    let body = crate::media::dtmf::info::build_dtmf_relay(
                        d,
                        DTMF_DIGIT.as_millis() as u32,
                    );
                    stack.send_info(now, call, Body::new("application/dtmf-relay", body))?;
                }
                Ok(())
            }
        }
    }
}
