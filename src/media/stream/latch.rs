//! Symmetric RTP (RFC 4961 practice, "latching"): the peer's media is sent to the address its
//! packets come from, which behind a NAT is not the one in its SDP.
//!
//! An address is adopted after [`LATCH_PACKETS`] consecutive valid packets (negotiated payload
//! type) with the same SSRC from it, and only while the latching window is open (after the
//! stream starts or the session is updated). Before anything is latched and while the window
//! is open, packets from any address are played; once latched, or once the window has closed,
//! packets from any other address are dropped (anti-hijack).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::media::rtp::Ssrc;
use crate::sdp::NegotiatedMedia;

/// Consecutive valid packets with one SSRC from one address that latch it.
pub const LATCH_PACKETS: u32 = 2;

/// What to do with an RTP datagram from some address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    /// From the peer (or the window is open and nothing is latched yet): process it.
    Pass,
    /// From another address while the window is open: it may latch if valid; the caller
    /// checks it and calls [`Latch::observe`].
    Candidate,
    /// From another address: drop it.
    Foreign,
}

/// The latching state of one stream.
#[derive(Debug, Clone)]
pub(super) struct Latch {
    rtp: Option<SocketAddr>,
    rtcp: Option<SocketAddr>,
    open_until: Instant,
    candidate: Option<(SocketAddr, Ssrc, u32)>,
}

impl Latch {
    /// Nothing latched; the window is open for `window` from `now`.
    pub fn new(now: Instant, window: Duration) -> Self {
        Self {
            rtp: None,
            rtcp: None,
            open_until: now.checked_add(window).unwrap_or(now),
            candidate: None,
        }
    }

    /// Re-opens the window; forgets the latched addresses if the peer's SDP address changed.
    pub fn reopen(&mut self, now: Instant, window: Duration, remote_changed: bool) {
        if remote_changed {
            self.rtp = None;
            self.rtcp = None;
        }
        self.candidate = None;
        self.open_until = now.checked_add(window).unwrap_or(now);
    }

    /// Whether latching is allowed at `now`.
    pub fn is_open(&self, now: Instant) -> bool {
        now < self.open_until
    }

    /// The latched RTP address, if any.
    pub fn latched(&self) -> Option<SocketAddr> {
        self.rtp
    }

    /// Where to send RTP: the latched address, else the SDP one.
    pub fn rtp_peer(&self, neg: &NegotiatedMedia) -> SocketAddr {
        self.rtp.unwrap_or(neg.remote_rtp)
    }

    /// Where to send RTCP: the RTP address with rtcp-mux; else an address latched from RTCP,
    /// else the latched RTP address's port + 1 when it differs from the SDP's, else the SDP
    /// RTCP address.
    pub fn rtcp_peer(&self, neg: &NegotiatedMedia) -> Option<SocketAddr> {
        if neg.rtcp_mux {
            return Some(self.rtp_peer(neg));
        }
        if let Some(a) = self.rtcp {
            return Some(a);
        }
        match self.rtp {
            Some(a) if a != neg.remote_rtp => {
                let port = a.port().checked_add(1)?;
                Some(SocketAddr::new(a.ip(), port))
            }
            _ => neg.remote_rtcp,
        }
    }

    /// Classifies an RTP datagram from `source`.
    pub fn admit_rtp(&self, now: Instant, source: SocketAddr, neg: &NegotiatedMedia) -> Admit {
        match self.rtp {
            Some(a) if a == source => Admit::Pass,
            Some(_) if self.is_open(now) => Admit::Candidate,
            Some(_) => Admit::Foreign,
            None if self.is_open(now) || source == neg.remote_rtp => Admit::Pass,
            None => Admit::Foreign,
        }
    }

    /// Records a valid packet (negotiated payload type) with `ssrc` from `source`; returns the
    /// address if this packet latched it.
    pub fn observe(&mut self, now: Instant, source: SocketAddr, ssrc: Ssrc) -> Option<SocketAddr> {
        if !self.is_open(now) || self.rtp == Some(source) {
            return None;
        }
        let count = match self.candidate {
            Some((a, s, n)) if a == source && s == ssrc => n + 1,
            _ => 1,
        };
        self.candidate = Some((source, ssrc, count));
        if count < LATCH_PACKETS {
            return None;
        }
        self.candidate = None;
        if self.rtp.is_some_and(|old| old.ip() != source.ip()) {
            // A new host: its RTCP address is not the old one's.
            self.rtcp = None;
        }
        self.rtp = Some(source);
        Some(source)
    }

    /// Whether an RTCP datagram from `source` is accepted: from the RTCP peer, from the RTP
    /// peer's host, or from anywhere while the window is open. Without rtcp-mux, a packet
    /// from the RTP peer's host latches its RTCP address while the window is open.
    pub fn admit_rtcp(
        &mut self,
        now: Instant,
        source: SocketAddr,
        neg: &NegotiatedMedia,
        via_rtp_socket: bool,
    ) -> bool {
        if via_rtp_socket {
            return source == self.rtp_peer(neg) || self.is_open(now);
        }
        if Some(source) == self.rtcp_peer(neg) {
            return true;
        }
        if source.ip() == self.rtp_peer(neg).ip() {
            if self.is_open(now) {
                self.rtcp = Some(source);
            }
            return true;
        }
        self.is_open(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::{Codec, Direction, NegotiatedCodec, PayloadType};

    fn neg(mux: bool) -> NegotiatedMedia {
        NegotiatedMedia {
            remote_rtp: "10.0.0.5:4000".parse().unwrap(),
            remote_rtcp: (!mux).then(|| "10.0.0.5:4001".parse().unwrap()),
            codec: NegotiatedCodec {
                codec: Codec::Pcmu,
                payload_type: PayloadType::new(0).unwrap(),
                clock_rate: 8000,
                channels: 1,
                fmtp: None,
            },
            telephone_event: None,
            ptime_ms: 20,
            direction: Direction::SendRecv,
            rtcp_mux: mux,
            remote_hold: false,
            srtp: None,
        }
    }

    #[test]
    fn latches_after_two_packets_with_one_ssrc() {
        let t0 = Instant::now();
        let n = neg(false);
        let mut l = Latch::new(t0, Duration::from_secs(5));
        let nat: SocketAddr = "203.0.113.7:5555".parse().unwrap();
        assert_eq!(l.admit_rtp(t0, nat, &n), Admit::Pass);
        assert_eq!(l.observe(t0, nat, Ssrc(1)), None);
        assert_eq!(
            l.observe(t0, nat, Ssrc(2)),
            None,
            "SSRC differs: count restarts"
        );
        assert_eq!(l.observe(t0, nat, Ssrc(2)), Some(nat));
        assert_eq!(l.rtp_peer(&n), nat);
        assert_eq!(l.rtcp_peer(&n), Some("203.0.113.7:5556".parse().unwrap()));
        let later = t0 + Duration::from_secs(6);
        let other: SocketAddr = "198.51.100.1:6000".parse().unwrap();
        assert_eq!(l.admit_rtp(later, other, &n), Admit::Foreign);
        assert_eq!(l.admit_rtp(t0, other, &n), Admit::Candidate);
        assert_eq!(l.admit_rtp(later, nat, &n), Admit::Pass);
    }

    #[test]
    fn unlatched_after_window_only_the_sdp_address_passes() {
        let t0 = Instant::now();
        let n = neg(true);
        let l = Latch::new(t0, Duration::from_secs(5));
        let later = t0 + Duration::from_secs(5);
        assert_eq!(l.admit_rtp(later, n.remote_rtp, &n), Admit::Pass);
        let nat: SocketAddr = "203.0.113.7:5555".parse().unwrap();
        assert_eq!(l.admit_rtp(later, nat, &n), Admit::Foreign);
        assert_eq!(l.rtcp_peer(&n), Some(n.remote_rtp));
    }

    #[test]
    fn rtcp_address_latches_from_the_rtp_host() {
        let t0 = Instant::now();
        let n = neg(false);
        let mut l = Latch::new(t0, Duration::from_secs(5));
        let odd: SocketAddr = "10.0.0.5:4999".parse().unwrap();
        assert!(l.admit_rtcp(t0, odd, &n, false));
        assert_eq!(l.rtcp_peer(&n), Some(odd));
        let later = t0 + Duration::from_secs(9);
        assert!(!l.admit_rtcp(later, "192.0.2.9:1".parse().unwrap(), &n, false));
        l.reopen(later, Duration::from_secs(5), true);
        assert_eq!(l.rtcp_peer(&n), n.remote_rtcp);
        assert!(l.is_open(later));
    }
}
