//! A stream's SDES-SRTP state: the contexts of both directions (when the session has keys),
//! the buffer incoming datagrams are decrypted in, and the drop counters, which outlive
//! rekeying and a change to plain RTP.

use crate::media::srtp::{SrtpContext, SrtpError};
use crate::sdp::NegotiatedSrtp;

/// See the module documentation.
#[derive(Default)]
pub(super) struct Secure {
    /// Ours protects what we send, the peer's unprotects what arrives.
    contexts: Option<(SrtpContext, SrtpContext)>,
    /// Where an incoming datagram is decrypted (reused).
    buf: Vec<u8>,
    /// Packets that failed authentication (tampered, another key, too short).
    pub(super) auth_failed: u64,
    /// Packets dropped as replays.
    pub(super) replayed: u64,
}

fn contexts(keys: &NegotiatedSrtp) -> (SrtpContext, SrtpContext) {
    (
        SrtpContext::new(keys.suite, &keys.local),
        SrtpContext::new(keys.suite, &keys.remote),
    )
}

impl Secure {
    /// The state for a session with `keys` (plain RTP without).
    pub(super) fn new(keys: Option<&NegotiatedSrtp>) -> Secure {
        Secure {
            contexts: keys.map(contexts),
            ..Secure::default()
        }
    }

    /// Whether the media is SRTP.
    pub(super) fn is_on(&self) -> bool {
        self.contexts.is_some()
    }

    /// The suite, when the media is SRTP.
    pub(super) fn suite(&self) -> Option<crate::sdp::SrtpSuite> {
        self.contexts.as_ref().map(|(tx, _)| tx.suite())
    }

    /// A re-INVITE changed the session from `old` to `new`: the same keys carry on; a
    /// changed key (or suite) starts that direction over (rekeying); keys appearing or going
    /// start or stop SRTP.
    pub(super) fn update(&mut self, old: Option<&NegotiatedSrtp>, new: Option<&NegotiatedSrtp>) {
        match (old, new, self.contexts.as_mut()) {
            (Some(a), Some(b), Some(_)) if a == b => {}
            (Some(a), Some(b), Some((tx, rx))) => {
                if a.suite != b.suite || a.local != b.local {
                    *tx = SrtpContext::new(b.suite, &b.local);
                }
                if a.suite != b.suite || a.remote != b.remote {
                    *rx = SrtpContext::new(b.suite, &b.remote);
                }
            }
            (_, new, _) => self.contexts = new.map(contexts),
        }
    }

    /// Protects an outgoing datagram in place; `false` if the context refuses (it does not,
    /// with the keys voxline accepts, before 2^48 packets).
    pub(super) fn protect(&mut self, packet: &mut Vec<u8>, rtcp: bool) -> bool {
        let Some((tx, _)) = self.contexts.as_mut() else {
            return true;
        };
        let result = if rtcp {
            tx.protect_rtcp(packet)
        } else {
            tx.protect_rtp(packet)
        };
        result.is_ok()
    }

    /// Authenticates and decrypts `datagram` into the buffer, which it hands out (give it
    /// back with [`Secure::put_back`]); `None`, counted, for a packet to drop.
    pub(super) fn unprotect(&mut self, datagram: &[u8], rtcp: bool) -> Option<Vec<u8>> {
        let (_, rx) = self.contexts.as_mut()?;
        let mut plain = std::mem::take(&mut self.buf);
        plain.clear();
        plain.extend_from_slice(datagram);
        let result = if rtcp {
            rx.unprotect_rtcp(&mut plain)
        } else {
            rx.unprotect_rtp(&mut plain)
        };
        match result {
            Ok(()) => Some(plain),
            Err(e) => {
                match e {
                    SrtpError::Replayed => self.replayed += 1,
                    _ => self.auth_failed += 1,
                }
                self.buf = plain;
                None
            }
        }
    }

    /// Takes back the buffer [`Secure::unprotect`] handed out.
    pub(super) fn put_back(&mut self, buf: Vec<u8>) {
        self.buf = buf;
    }
}
