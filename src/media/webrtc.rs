//! WebRTC transport for a call from a browser, sans-IO: ICE-lite, DTLS-SRTP and the WebRTC SDP
//! (`UDP/TLS/RTP/SAVPF`, BUNDLE, rtcp-mux) by str0m, bridged at the RTP level to the call's
//! [`MediaStream`](crate::media::stream::MediaStream), which keeps doing what it does for a
//! phone: jitter buffer, Opus or G.711, RFC 4733 DTMF, pacing, recording and barge-in.
//!
//! str0m rather than webrtc-rs: it is sans-IO like `sip`, `sdp` and `media` (time comes in as
//! `now`, datagrams in and out through calls, no tasks or sockets of its own), so a browser
//! call runs on the same media workers and virtual-clock tests as a phone call; webrtc-rs owns
//! tokio tasks and sockets. Its crypto is RustCrypto's (DTLS by `dimpl`), pure Rust.
//!
//! * [`WebRtcPeer::accept_offer`] answers a browser's offer: the codec is the first of the
//!   call's preferences the offer has (str0m is configured with that codec alone, plus
//!   telephone-event when offered, so the browser cannot send another), ICE-lite with one host
//!   candidate (the call's RTP socket), DTLS passive (`a=setup:passive`).
//! * The call's media stream is built from [`WebRtcPeer::negotiated`]: the codec with the
//!   offer's payload types, 20 ms, rtcp-mux, no SDES keys (DTLS-SRTP protects the packets);
//!   Opus at [`BROWSER_OPUS_RATE`].
//! * Datagrams from the socket go to [`WebRtcPeer::handle_datagram`]; what str0m decrypts comes
//!   out of [`WebRtcPeer::poll_output`] as [`WebRtcOutput::Rtp`], plain RTP packets for the
//!   stream's `handle_rtp` (from [`WebRtcPeer::media_source`], so that latching holds). The
//!   stream's RTP goes to [`WebRtcPeer::send_rtp`]; its RTCP is not sent (str0m reports).
//! * [`WebRtcOutput::Transmit`] datagrams go out of the same socket; [`WebRtcOutput::Connected`]
//!   and [`WebRtcOutput::Disconnected`] tell the call when ICE and DTLS are up and when the
//!   browser has gone.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::format::{Codec as RtcCodec, FormatParams};
use str0m::media::{Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

use crate::media::rtp::RtpPacket;
use crate::sdp::{
    Codec, CodecPrefs, DEFAULT_PTIME_MS, Direction, NegotiatedCodec, NegotiatedMedia, PayloadType,
};

/// The transport of a WebRTC media line (RFC 5764 §8, RFC 8827): offers with it go to
/// [`WebRtcPeer`] rather than to the SDES offer/answer of [`crate::sdp`].
pub const WEBRTC_PROTO: &str = "UDP/TLS/RTP/SAVPF";

/// Whether an SDP body offers WebRTC media (an audio line on `UDP/TLS/RTP/SAVPF`).
pub fn is_webrtc_offer(sdp: &[u8]) -> bool {
    std::str::from_utf8(sdp).is_ok_and(|text| {
        text.lines().any(|l| {
            let mut f = l.trim_end().split(' ');
            f.next().is_some_and(|m| m.starts_with("m=audio"))
                && f.nth(1)
                    .is_some_and(|p| p.eq_ignore_ascii_case(WEBRTC_PROTO))
        })
    })
}

/// Why a WebRTC offer cannot be answered, or the session fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebRtcError {
    /// The offer is not SDP str0m can read, or has no audio.
    #[error("unusable WebRTC offer: {0}")]
    Offer(String),
    /// No codec of the call's preferences is in the offer.
    #[error("no common audio codec in the WebRTC offer (offered: {0})")]
    NoCommonCodec(String),
    /// The local address is not one ICE can use.
    #[error("unusable ICE candidate {0}")]
    Candidate(SocketAddr),
    /// str0m refused an input (a state it cannot continue from).
    #[error("WebRTC session failed: {0}")]
    Session(String),
}

/// What the runtime must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebRtcOutput {
    /// Send `payload` to `to` from the call's socket.
    Transmit {
        /// Destination (the browser's candidate ICE chose).
        to: SocketAddr,
        /// The datagram (STUN, DTLS or SRTP).
        payload: Vec<u8>,
    },
    /// A decrypted RTP packet for the media stream's `handle_rtp`.
    Rtp(Vec<u8>),
    /// ICE and DTLS are up: media flows.
    Connected,
    /// The browser is gone (ICE disconnected or closed).
    Disconnected,
    /// Nothing more now: call [`WebRtcPeer::handle_timeout`] at this instant.
    Timeout(Instant),
}

/// A browser's WebRTC session (see the module documentation).
pub struct WebRtcPeer {
    rtc: Rtc,
    mid: Mid,
    local: SocketAddr,
    negotiated: NegotiatedMedia,
    out: VecDeque<WebRtcOutput>,
    connected: bool,
    closed: bool,
    /// Outgoing RTP packets the stream gave before ICE and DTLS were up (dropped, counted).
    dropped_before_connected: u64,
    /// Datagrams that were not STUN, DTLS or SRTP of this session, and decrypted packets
    /// that were not RTP we could read.
    dropped_malformed: u64,
}

impl std::fmt::Debug for WebRtcPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcPeer")
            .field("local", &self.local)
            .field("codec", &self.negotiated.codec.codec)
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

impl WebRtcPeer {
    /// Answers `offer` for media on the UDP socket bound at `local`: the answer SDP and the
    /// peer. The codec is the first of `prefs` that the offer has.
    pub fn accept_offer(
        now: Instant,
        offer: &str,
        local: SocketAddr,
        prefs: &CodecPrefs,
    ) -> Result<(WebRtcPeer, String), WebRtcError> {
        let parsed =
            SdpOffer::from_sdp_string(offer).map_err(|e| WebRtcError::Offer(e.to_string()))?;
        let offered = offered_audio(offer);
        if offered.is_empty() {
            return Err(WebRtcError::Offer("no audio line".into()));
        }
        let (codec, pt, fmtp) = prefs
            .iter()
            .find_map(|c| {
                offered
                    .iter()
                    .find(|f| f.codec == Some(c))
                    .map(|f| (c, f.pt, f.fmtp.clone()))
            })
            .ok_or_else(|| {
                WebRtcError::NoCommonCodec(
                    offered
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            })?;
        let te = offered.iter().find(|f| f.telephone_event).map(|f| f.pt);
        let fmtp = match codec {
            Codec::Opus => Some(browser_opus_fmtp(fmtp.as_deref())),
            _ => fmtp,
        };

        let mut cfg = RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs();
        cfg = match codec {
            Codec::Opus => cfg.enable_opus(true, false),
            Codec::Pcmu => cfg.enable_pcmu(true, false),
            Codec::Pcma => cfg.enable_pcma(true, false),
            Codec::G722 => cfg.enable_g722(true, false),
            // Not an audio codec: never chosen from the preferences.
            Codec::TelephoneEvent => cfg,
        };
        if let Some(pt) = te {
            cfg.codec_config().add_config(
                Pt::from(pt.get()),
                None,
                RtcCodec::Tele,
                Frequency::EIGHT_KHZ,
                None,
                FormatParams {
                    telephone_event_max: Some(16),
                    ..Default::default()
                },
            );
        }
        let mut rtc = cfg.build(now);
        let candidate = Candidate::host(local, "udp").map_err(|_| WebRtcError::Candidate(local))?;
        rtc.add_local_candidate(candidate);
        let answer = rtc
            .sdp_api()
            .accept_offer(parsed)
            .map_err(|e| WebRtcError::Offer(e.to_string()))?;
        let mid = audio_mid(&rtc, offer).ok_or_else(|| WebRtcError::Offer("no audio".into()))?;
        let negotiated = NegotiatedMedia {
            // The media stream's idea of the peer: the local address stands in for whatever
            // ICE chose, and every packet is handed to it from there (see media_source).
            remote_rtp: local,
            remote_rtcp: None,
            codec: NegotiatedCodec {
                codec,
                payload_type: pt,
                clock_rate: codec.clock_rate(),
                channels: codec.channels(),
                fmtp,
            },
            telephone_event: te,
            ptime_ms: DEFAULT_PTIME_MS,
            direction: Direction::SendRecv,
            rtcp_mux: true,
            remote_hold: false,
            srtp: None,
        };
        let mut peer = WebRtcPeer {
            rtc,
            mid,
            local,
            negotiated,
            out: VecDeque::new(),
            connected: false,
            closed: false,
            dropped_before_connected: 0,
            dropped_malformed: 0,
        };
        peer.drain();
        Ok((peer, answer.to_sdp_string()))
    }

    /// The session the call's media stream is built with.
    pub fn negotiated(&self) -> &NegotiatedMedia {
        &self.negotiated
    }

    /// The source address to give the media stream's `handle_rtp` with each
    /// [`WebRtcOutput::Rtp`] packet (the negotiated `remote_rtp`).
    pub fn media_source(&self) -> SocketAddr {
        self.negotiated.remote_rtp
    }

    /// Whether ICE and DTLS are up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// A datagram arrived on the call's socket from `source`. Anything str0m does not take
    /// (not STUN, DTLS or SRTP for this session) is dropped and counted.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, datagram: &[u8]) {
        let Ok(receive) = Receive::new(Protocol::Udp, source, self.local, datagram) else {
            self.dropped_malformed += 1;
            return;
        };
        let input = Input::Receive(now, receive);
        if !self.rtc.accepts(&input) {
            self.dropped_malformed += 1;
            return;
        }
        if let Err(e) = self.rtc.handle_input(input) {
            self.fail(&e.to_string());
        }
        self.drain();
    }

    /// Drives time.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            self.fail(&e.to_string());
        }
        self.drain();
    }

    /// Sends one plain RTP packet of the media stream (its `Transmit` with `rtcp: false`),
    /// protected by DTLS-SRTP; before the session is up it is dropped.
    pub fn send_rtp(&mut self, now: Instant, packet: &[u8]) {
        let Ok(p) = RtpPacket::parse(packet) else {
            return;
        };
        if !self.connected {
            self.dropped_before_connected += 1;
            return;
        }
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(self.mid, None) else {
            return;
        };
        let write = RtpWrite::new(
            Pt::from(p.payload_type.get()),
            SeqNo::from(u64::from(p.seq.0)),
            p.timestamp.0,
            now,
            p.payload.to_vec(),
        )
        .marker(p.marker);
        tx.write_rtp(write);
        self.drain();
    }

    /// Ends the session (the call hung up).
    pub fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.rtc.disconnect();
            self.drain();
        }
    }

    /// The next output: transmissions, packets and state changes first, then the deadline.
    pub fn poll_output(&mut self) -> WebRtcOutput {
        loop {
            if let Some(o) = self.out.pop_front() {
                return o;
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return WebRtcOutput::Timeout(t),
                // drain() leaves str0m at its timeout; anything else is taken in turn.
                Ok(other) => self.take(other),
                Err(e) => {
                    self.fail(&e.to_string());
                    return self.out.pop_front().unwrap_or(WebRtcOutput::Disconnected);
                }
            }
        }
    }

    /// Outgoing packets dropped as the session was not up yet.
    pub fn dropped_before_connected(&self) -> u64 {
        self.dropped_before_connected
    }

    /// Datagrams dropped: not STUN, DTLS or SRTP of this session, or not RTP we could read
    /// once decrypted.
    pub fn dropped_malformed(&self) -> u64 {
        self.dropped_malformed
    }

    /// Moves str0m's outputs into ours until it waits for time (its single-mutation rule:
    /// every input is followed by a full drain).
    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(_)) => return,
                Ok(o) => self.take(o),
                Err(e) => {
                    self.fail(&e.to_string());
                    return;
                }
            }
        }
    }

    fn take(&mut self, o: Output) {
        match o {
            Output::Timeout(_) => {}
            Output::Transmit(t) => self.out.push_back(WebRtcOutput::Transmit {
                to: t.destination,
                payload: t.contents.to_vec(),
            }),
            Output::Event(Event::Connected) => {
                self.connected = true;
                self.out.push_back(WebRtcOutput::Connected);
            }
            Output::Event(Event::IceConnectionStateChange(IceConnectionState::Disconnected))
            | Output::Event(Event::Closed) => {
                if !self.closed {
                    self.closed = true;
                    self.out.push_back(WebRtcOutput::Disconnected);
                }
            }
            Output::Event(Event::RtpPacket(p)) => {
                let mut bytes = Vec::with_capacity(12 + p.payload.len());
                let h = &p.header;
                bytes.push(0x80);
                bytes.push(u8::from(h.marker) << 7 | (*h.payload_type & 0x7f));
                bytes.extend_from_slice(&h.sequence_number.to_be_bytes());
                bytes.extend_from_slice(&h.timestamp.to_be_bytes());
                bytes.extend_from_slice(&(*h.ssrc).to_be_bytes());
                bytes.extend_from_slice(&p.payload);
                if RtpPacket::parse(&bytes).is_ok() {
                    self.out.push_back(WebRtcOutput::Rtp(bytes));
                } else {
                    self.dropped_malformed += 1;
                }
            }
            Output::Event(_) => {}
        }
    }

    fn fail(&mut self, reason: &str) {
        tracing::info!(reason, "WebRTC session failed");
        if !self.closed {
            self.closed = true;
            self.out.push_back(WebRtcOutput::Disconnected);
        }
    }
}

/// The Opus rate voxline runs a browser call's stream at (its `maxplaybackrate`): 24 kHz,
/// the rate AI backends take (OpenAI Realtime's PCM16), so no resampling. A browser offers no
/// `maxplaybackrate`, which would mean 48 kHz fullband: a band no backend hears, at a higher
/// encoding cost (docs/PERFORMANCE.md, "WebRTC").
pub const BROWSER_OPUS_RATE: u32 = 24_000;

/// The browser's Opus parameters with `maxplaybackrate` at most [`BROWSER_OPUS_RATE`].
fn browser_opus_fmtp(offered: Option<&str>) -> String {
    let is_rate = |p: &str| {
        p.split('=')
            .next()
            .is_some_and(|n| n.trim().eq_ignore_ascii_case("maxplaybackrate"))
    };
    let parts: Vec<&str> = offered
        .unwrap_or_default()
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let offered_rate = parts.iter().filter(|p| is_rate(p)).find_map(|p| {
        p.split_once('=')
            .and_then(|(_, v)| v.trim().parse::<u32>().ok())
    });
    let rate = offered_rate.map_or(BROWSER_OPUS_RATE, |r| r.min(BROWSER_OPUS_RATE));
    let mut out: Vec<String> = parts
        .into_iter()
        .filter(|p| !is_rate(p))
        .map(str::to_owned)
        .collect();
    out.push(format!("maxplaybackrate={rate}"));
    out.join(";")
}

/// One audio format of a WebRTC offer.
#[derive(Debug, Clone)]
struct OfferedFormat {
    pt: PayloadType,
    codec: Option<Codec>,
    telephone_event: bool,
    name: String,
    fmtp: Option<String>,
}

/// The formats of the offer's first WebRTC audio line, in its order.
fn offered_audio(offer: &str) -> Vec<OfferedFormat> {
    let mut in_audio = false;
    let mut order: Vec<u8> = Vec::new();
    let mut maps: Vec<(u8, String, u32)> = Vec::new();
    let mut fmtps: Vec<(u8, String)> = Vec::new();
    for line in offer.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            if in_audio {
                break;
            }
            let f: Vec<&str> = m.split(' ').collect();
            in_audio = f.first() == Some(&"audio")
                && f.get(2)
                    .is_some_and(|p| p.eq_ignore_ascii_case(WEBRTC_PROTO));
            if in_audio {
                order = f.iter().skip(3).filter_map(|p| p.parse().ok()).collect();
            }
        } else if in_audio {
            if let Some(v) = line.strip_prefix("a=rtpmap:") {
                let Some((pt, enc)) = v.split_once(' ') else {
                    continue;
                };
                let mut e = enc.split('/');
                let name = e.next().unwrap_or_default().to_owned();
                let rate = e.next().and_then(|r| r.parse().ok()).unwrap_or(0);
                if let Ok(pt) = pt.parse() {
                    maps.push((pt, name, rate));
                }
            } else if let Some(v) = line.strip_prefix("a=fmtp:")
                && let Some((pt, params)) = v.split_once(' ')
                && let Ok(pt) = pt.parse()
            {
                fmtps.push((pt, params.to_owned()));
            }
        }
    }
    order
        .into_iter()
        .filter_map(|n| {
            let pt = PayloadType::new(n)?;
            let (name, rate) = maps
                .iter()
                .find(|(p, _, _)| *p == n)
                .map(|(_, name, rate)| (name.clone(), *rate))
                .unwrap_or_else(|| (format!("PT {n}"), 0));
            let mapped = maps.iter().any(|(p, _, _)| *p == n);
            let codec = if mapped {
                Codec::from_rtpmap(&name, rate)
            } else {
                Codec::from_static_payload_type(pt)
            }
            .filter(|c| *c != Codec::TelephoneEvent);
            Some(OfferedFormat {
                pt,
                codec,
                telephone_event: name.eq_ignore_ascii_case("telephone-event") && rate == 8000,
                name: format!("{name}/{rate}"),
                fmtp: fmtps.iter().find(|(p, _)| *p == n).map(|(_, f)| f.clone()),
            })
        })
        .collect()
}

/// The mid of the offer's first audio line, as str0m knows it after the answer.
fn audio_mid(rtc: &Rtc, offer: &str) -> Option<Mid> {
    let mut in_audio = false;
    for line in offer.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            in_audio = m.starts_with("audio ");
        } else if in_audio && let Some(mid) = line.strip_prefix("a=mid:") {
            let mid = Mid::from(mid);
            return rtc
                .media(mid)
                .filter(|m| m.kind() == MediaKind::Audio)
                .map(|m| m.mid());
        }
    }
    None
}
