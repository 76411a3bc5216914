//! SDP offer/answer on a call: our media, the peer's answer, and re-INVITE/UPDATE changes.

use std::net::IpAddr;
use std::time::Instant;

use crate::sdp::{
    Direction, LocalMedia, LocalSrtp, MASTER_KEY_LEN, MASTER_SALT_LEN, MasterKey, SrtpMode,
};
use crate::sip::{Body, CallHandle, SipStack};

use super::control;
use super::manager::CallManager;
use super::{DtmfSendMethod, SDP_CONTENT_TYPE, TrunkPolicy};

impl CallManager {
    pub(super) fn on_modify(
        &mut self,
        now: Instant,
        stack: &mut SipStack,
        call: CallHandle,
        body: Option<Body>,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            let _ = stack.respond_modify(now, call, 481, None);
            return;
        };
        if c.is_webrtc {
            // The WebRTC session (ICE, DTLS, its SDP) is str0m's and is not renegotiated: the
            // session stays as it was (RFC 3261 §14.2).
            tracing::info!(%call, "re-INVITE or UPDATE of a WebRTC call refused");
            let _ = stack.respond_modify(now, call, crate::sdp::STATUS_NOT_ACCEPTABLE_HERE, None);
            return;
        }
        let result = match &body {
            Some(b) if is_sdp(b) => c.sdp.answer(&b.data, &c.local).map(|(a, m)| (a, Some(m))),
            Some(_) => {
                let _ = stack.respond_modify(now, call, 415, None);
                return;
            }
            // A re-INVITE without an offer: we offer in the 200 (RFC 3261 §14.2).
            None => Ok((c.sdp.create_offer(&c.local), None)),
        };
        match result {
            Ok((sdp, media)) => {
                if let Some(m) = media {
                    let hold = m.remote_hold;
                    tracing::info!(%call, hold, direction = %m.direction, "session modified");
                    c.media = Some(m);
                    self.update_info(call, |i| i.on_hold = hold);
                    self.media_changed(call);
                }
                let _ =
                    stack.respond_modify(now, call, 200, Some(Body::new(SDP_CONTENT_TYPE, sdp)));
            }
            Err(e) => {
                let _ = stack.respond_modify(now, call, e.status_code(), None);
            }
        }
    }

    /// The peer's answer to our offer. An unusable answer to the call's first offer (no
    /// common codec, or no keys when SRTP is mandatory) ends the call: CANCEL while early, BYE
    /// once answered (RFC 3261 §13.2.1 lets the UAC do no better). An unusable answer to a
    /// re-offer leaves the session as it was.
    pub(super) fn accept_answer(
        &mut self,
        now: Instant,
        stack: &mut SipStack,
        call: CallHandle,
        body: &Body,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        match c.sdp.accept_answer(&body.data) {
            Ok(m) => {
                let codec = m.codec.codec.to_string();
                c.media = Some(m);
                self.update_info(call, |i| i.codec = Some(codec));
                self.media_changed(call);
            }
            Err(e) if c.media.is_none() => {
                tracing::warn!(%call, error = %e, "unusable SDP answer; ending the call");
                let _ = stack.hangup(now, call);
            }
            Err(e) => tracing::warn!(%call, error = %e, "unusable SDP answer to a re-offer"),
        }
    }

    /// The negotiated session changed: tell the running media task.
    pub(super) fn media_changed(&mut self, call: CallHandle) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if let (Some(tx), Some(m)) = (&c.media_tx, &c.media)
            && tx
                .try_send(control::MediaControl::Update(m.clone()))
                .is_err()
        {
            tracing::warn!(%call, "media task not taking updates");
        }
    }

    /// Our media for a call: its trunk's codecs, DTMF and SRTP modes, else the media
    /// policy's; with SRTP, a fresh key for the call.
    pub(super) fn local_media(
        &self,
        address: IpAddr,
        port: u16,
        trunk: Option<&TrunkPolicy>,
    ) -> LocalMedia {
        LocalMedia {
            address,
            rtp_port: port,
            ptime_ms: self.media.ptime_ms,
            rtcp_mux: self.media.rtcp_mux,
            codecs: trunk.map_or_else(|| self.media.codecs.clone(), |t| t.codecs.clone()),
            telephone_event: self.media.telephone_event
                && trunk.is_none_or(|t| t.dtmf == DtmfSendMethod::Rfc4733),
            direction: Direction::SendRecv,
            srtp: match trunk.map_or(self.media.srtp, |t| t.srtp) {
                SrtpMode::Off => None,
                mode => Some(LocalSrtp {
                    mode,
                    suites: trunk
                        .map_or_else(|| self.media.srtp_suites.clone(), |t| t.srtp_suites.clone()),
                    key: fresh_key(),
                }),
            },
        }
    }
}

pub(super) fn is_sdp(b: &Body) -> bool {
    crate::sip::message::media_type_is(&b.content_type, SDP_CONTENT_TYPE)
}

/// A new SRTP master key and salt from the operating system's random source (through rand's
/// thread-local CSPRNG, which it seeds).
fn fresh_key() -> MasterKey {
    use rand::RngCore as _;
    let mut key = [0u8; MASTER_KEY_LEN];
    let mut salt = [0u8; MASTER_SALT_LEN];
    let mut rng = rand::thread_rng();
    rng.fill_bytes(&mut key);
    rng.fill_bytes(&mut salt);
    MasterKey::new(key, salt)
}

/// An SDP session id (`o=` line) from the time in Unix seconds and our RTP port.
pub(super) fn session_id(secs: u64, port: u16) -> u64 {
    // Any unique-enough number works (RFC 4566 §5.2 suggests an NTP timestamp).
    secs * 100_000 + u64::from(port)
}
