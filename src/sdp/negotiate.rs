//! The offer/answer state of one SIP session: creating offers, answering offers and accepting
//! answers (RFC 3264), with the `o=` line's session version kept per RFC 3264 §8.

use std::net::{IpAddr, SocketAddr};

use sdp_types::{Attribute, Connection, Media, Origin, Session, Time};

use super::codec::{Codec, CodecPrefs, OPUS_FMTP, PayloadType, TELEPHONE_EVENT_FMTP};
use super::crypto::{
    CRYPTO_ATTRIBUTE, CryptoAttribute, CryptoError, LocalSrtp, NegotiatedSrtp, SrtpMode,
    first_usable,
};
use super::direction::Direction;
use super::error::SdpError;
use super::remote::{self, RTP_AVP, RTP_SAVP, RemoteStream};

/// Default packetisation interval in milliseconds (RFC 3551 §4.2: 20 ms for frame-less audio).
pub const DEFAULT_PTIME_MS: u32 = 20;

/// The `o=` user name voxline writes (RFC 4566 §5.2; `-` would also do).
pub const ORIGIN_USERNAME: &str = "voxline";

/// The `s=` session name voxline writes (RFC 4566 §5.3).
pub const SESSION_NAME: &str = "voxline";

/// What voxline offers or accepts for its single audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    /// The address advertised in `c=` and `o=`: the local or, behind NAT, the external IP.
    pub address: IpAddr,
    /// The local RTP port (RTCP is on the next port unless rtcp-mux is negotiated).
    pub rtp_port: u16,
    /// The packetisation interval we want to receive, in milliseconds (`a=ptime`).
    pub ptime_ms: u32,
    /// Whether to offer / accept RTP and RTCP on one port (RFC 5761).
    pub rtcp_mux: bool,
    /// The audio codecs, most preferred first.
    pub codecs: CodecPrefs,
    /// Whether to offer / accept RFC 4733 telephone-event (DTMF).
    pub telephone_event: bool,
    /// What we want to do: normally sendrecv; sendonly to put the peer on hold.
    pub direction: Direction,
    /// SRTP: the mode and our key; `None` is [`SrtpMode::Off`].
    pub srtp: Option<LocalSrtp>,
}

impl LocalMedia {
    /// Defaults for `address` and `rtp_port`: 20 ms, rtcp-mux offered, default codecs,
    /// telephone-event on, sendrecv, no SRTP.
    pub fn new(address: IpAddr, rtp_port: u16) -> Self {
        Self {
            address,
            rtp_port,
            ptime_ms: DEFAULT_PTIME_MS,
            rtcp_mux: true,
            codecs: CodecPrefs::default(),
            telephone_event: true,
            direction: Direction::SendRecv,
            srtp: None,
        }
    }

    /// The SRTP mode: off without keys.
    fn srtp_mode(&self) -> SrtpMode {
        self.srtp.as_ref().map_or(SrtpMode::Off, |s| s.mode)
    }
}

/// The codec both sides agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedCodec {
    /// The codec.
    pub codec: Codec,
    /// The payload type to send it with: the one the peer's SDP gave it (the offerer's number
    /// when we answer, RFC 3264 §6.1).
    pub payload_type: PayloadType,
    /// The RTP clock rate in Hz (see [`Codec::clock_rate`]).
    pub clock_rate: u32,
    /// The `a=rtpmap` channel count (see [`Codec::channels`]).
    pub channels: u8,
    /// The peer's `a=fmtp` parameters for this payload type (the text after the number), e.g.
    /// `"useinbandfec=1; maxplaybackrate=16000"` for Opus: they describe what the peer wants to
    /// receive.
    pub fmtp: Option<String>,
}

/// The outcome of an offer/answer exchange: everything the media layer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedMedia {
    /// Where to send RTP. The IP is `0.0.0.0`/`::` when the peer holds the call RFC 2543 style;
    /// `direction` then says not to send.
    pub remote_rtp: SocketAddr,
    /// Where to send RTCP: `None` with rtcp-mux, else the peer's `a=rtcp` (RFC 3605) or the RTP
    /// port + 1 (RFC 3550 §11). `None` too if the RTP port is 65535 and there is no `a=rtcp`.
    pub remote_rtcp: Option<SocketAddr>,
    /// The audio codec.
    pub codec: NegotiatedCodec,
    /// The peer's telephone-event payload type, if both sides do RFC 4733 DTMF.
    pub telephone_event: Option<PayloadType>,
    /// The packetisation interval to send with, in milliseconds.
    pub ptime_ms: u32,
    /// OUR direction: whether we send and/or receive.
    pub direction: Direction,
    /// Whether RTP and RTCP share the RTP port (RFC 5761).
    pub rtcp_mux: bool,
    /// Whether the peer has put us on hold: its SDP says it will not receive (sendonly,
    /// inactive, or the RFC 2543 `c=0.0.0.0`).
    pub remote_hold: bool,
    /// SRTP's suite and keys when the media is encrypted; `None` for plain RTP.
    pub srtp: Option<NegotiatedSrtp>,
}

/// The SDP side of one SIP session (dialog): our `o=` line and the state of our own offer.
///
/// The `o=` session version starts at the value given to the constructor and is incremented
/// whenever the SDP we produce differs from the previous one; an unchanged re-offer or answer
/// keeps it (RFC 3264 §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpSession {
    session_id: u64,
    version: u64,
    /// Our last SDP, written with session version 0, to detect changes.
    last_sdp: Option<String>,
    /// What our last offer contained, for [`SdpSession::accept_answer`].
    pending_offer: Option<OfferState>,
}

impl SdpSession {
    /// A session whose `o=` line has `session_id` and starts with version `session_id` (the
    /// usual practice of seeding both from one clock value).
    pub fn new(session_id: u64) -> Self {
        Self::with_version(session_id, session_id)
    }

    /// A session whose `o=` line has `session_id` and starts with `version`.
    pub fn with_version(session_id: u64, version: u64) -> Self {
        Self {
            session_id,
            version,
            last_sdp: None,
            pending_offer: None,
        }
    }

    /// The `o=` session id.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// The `o=` version of the SDP we produced last (or will produce first).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// An offer (RFC 3264 §5) with one RTP/AVP audio stream listing `local.codecs` in order
    /// (static payload types for G.711/G.722, 111 for Opus) and, if enabled, telephone-event on
    /// 101; with `a=ptime`, the direction, and `a=rtcp-mux` if enabled. With SRTP
    /// (`local.srtp`), one `a=crypto` line per suite of its `suites` (tags 1, 2, ...) with
    /// our key, on `RTP/SAVP` when mandatory and on `RTP/AVP` when optional (best effort: a
    /// peer without SRTP ignores the lines and answers plain).
    ///
    /// Use it for the initial INVITE and for re-INVITEs (hold: `local.direction = SendOnly`;
    /// resume: `SendRecv`). The offer stays pending for [`SdpSession::accept_answer`] until the
    /// next `create_offer` or [`SdpSession::answer`].
    pub fn create_offer(&mut self, local: &LocalMedia) -> Vec<u8> {
        let mut formats: Vec<(Codec, PayloadType)> = local
            .codecs
            .iter()
            .map(|c| (c, c.offer_payload_type()))
            .collect();
        if local.telephone_event {
            let te = Codec::TelephoneEvent;
            formats.push((te, te.offer_payload_type()));
        }
        let srtp = local.srtp.clone().filter(|s| s.mode != SrtpMode::Off);
        let crypto: Vec<CryptoAttribute> = srtp
            .iter()
            .flat_map(|s| {
                (1u32..)
                    .zip(s.suites.iter())
                    .map(|(tag, suite)| CryptoAttribute {
                        tag,
                        suite,
                        key: s.key.for_suite(suite),
                    })
            })
            .collect();
        let savp = local.srtp_mode() == SrtpMode::Mandatory;
        let media = audio_media(
            local.rtp_port,
            &formats,
            local.ptime_ms,
            local.direction,
            local.rtcp_mux,
            savp,
            &crypto,
        );
        self.pending_offer = Some(OfferState {
            codecs: local.codecs.clone(),
            telephone_event: local.telephone_event,
            ptime_ms: local.ptime_ms,
            rtcp_mux: local.rtcp_mux,
            direction: local.direction,
            srtp,
        });
        self.emit(local.address, vec![media])
    }

    /// Answers `offer` (RFC 3264 §6).
    ///
    /// The first enabled RTP/AVP audio stream with a usable codec is accepted; every other
    /// `m=` line is rejected with port 0, so the answer has the offer's `m=` lines in the same
    /// order. The codec is the first of `local.codecs` that the offer contains, answered with
    /// the offerer's payload type number; telephone-event is added when both sides have it.
    /// The direction is `local.direction` limited by the offer's (sendonly is answered
    /// recvonly, and so on); `c=0.0.0.0` counts as the peer not receiving. The offerer's ptime
    /// is used if it is 10, 20 or 30 ms; rtcp-mux only if offered and enabled locally.
    ///
    /// SRTP, by `local.srtp`'s mode: off refuses `RTP/SAVP` and ignores `a=crypto` on
    /// `RTP/AVP`; optional and mandatory take the offer's first usable `a=crypto` line and
    /// answer it with the same tag and suite and our key, on the offer's transport; mandatory
    /// refuses an offer without keys; optional answers plain RTP to a plain offer, and to an
    /// `RTP/AVP` offer whose lines it cannot use.
    ///
    /// Errors: a missing or unparseable body (status 400); no enabled audio stream, or none
    /// with a common codec, a supported transport, acceptable keys and a usable address (488).
    /// On error no SDP is produced and the session version is unchanged.
    pub fn answer(
        &mut self,
        offer: &[u8],
        local: &LocalMedia,
    ) -> Result<(Vec<u8>, NegotiatedMedia), SdpError> {
        let session = remote::parse_body(offer)?;
        let mut accepted: Option<(usize, Media, NegotiatedMedia)> = None;
        let mut first_error: Option<SdpError> = None;
        for (index, media) in session.medias.iter().enumerate() {
            if accepted.is_some() || !remote::is_audio(media) || media.port == 0 {
                continue;
            }
            match answer_stream(&session, media, local) {
                Ok((our_media, negotiated)) => accepted = Some((index, our_media, negotiated)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let Some((accepted_index, our_media, negotiated)) = accepted else {
            return Err(first_error.unwrap_or(SdpError::NoAudio));
        };
        let mut our_media = Some(our_media);
        let medias = session
            .medias
            .iter()
            .enumerate()
            .map(
                |(index, offered)| match our_media.take_if(|_| index == accepted_index) {
                    Some(media) => media,
                    None => rejected_media(offered),
                },
            )
            .collect();
        self.pending_offer = None;
        Ok((self.emit(local.address, medias), negotiated))
    }

    /// Takes the answer to our last [`SdpSession::create_offer`] (RFC 3264 §5 / §6 from the
    /// offerer's side).
    ///
    /// The answer's first `m=` line corresponds to our audio stream; its first format that we
    /// offered becomes the codec, sent with the payload type number the answer gives it.
    /// Errors as for [`SdpSession::answer`] (the stream rejected with port 0 is
    /// [`SdpError::NoAudio`]), and [`SdpError::NoPendingOffer`] without an offer. The same
    /// answer may be accepted again (e.g. in a 183 and then the 200).
    ///
    /// With SRTP offered, the answer's `a=crypto` must name a tag we offered with its suite
    /// ([`SdpError::Crypto`] if not); an answer without keys is plain RTP when we offered
    /// SRTP as optional and [`SdpError::SrtpRequired`] when mandatory.
    pub fn accept_answer(&mut self, answer: &[u8]) -> Result<NegotiatedMedia, SdpError> {
        let offer = self
            .pending_offer
            .as_ref()
            .ok_or(SdpError::NoPendingOffer)?;
        let session = remote::parse_body(answer)?;
        let media = session
            .medias
            .first()
            .filter(|m| remote::is_audio(m) && m.port != 0)
            .ok_or(SdpError::NoAudio)?;
        let stream = RemoteStream::read(&session, media)?;
        let chosen = stream
            .formats
            .iter()
            .find_map(|f| {
                let codec = f.codec.filter(|c| offer.codecs.contains(*c))?;
                Some(negotiated_codec(codec, f))
            })
            .ok_or_else(|| SdpError::NoCommonCodec {
                offered: stream.describe_formats(),
            })?;
        let telephone_event = offer
            .telephone_event
            .then(|| stream.find(Codec::TelephoneEvent).map(|f| f.pt))
            .flatten();
        let rtcp_mux = offer.rtcp_mux && stream.rtcp_mux;
        let srtp = answered_srtp(&stream, offer.srtp.as_ref())?;
        Ok(negotiated(
            &stream,
            chosen,
            telephone_event,
            stream.ptime_or(offer.ptime_ms),
            offer.direction.negotiate(stream.direction),
            rtcp_mux,
            offer.direction.sends() && !stream.direction.receives(),
            srtp,
        ))
    }

    /// Writes our SDP with `medias`, bumping the version if it differs from the previous one.
    fn emit(&mut self, address: IpAddr, medias: Vec<Media>) -> Vec<u8> {
        let mut session = Session::new(
            Origin {
                username: Some(ORIGIN_USERNAME.to_owned()),
                ..Origin::with_ip_addr(self.session_id, 0, address)
            },
            SESSION_NAME,
        );
        session.set_connection(Connection::from_ip_addr(address));
        session.add_time(Time::new(0, 0));
        session.add_medias(medias);
        let unversioned = session.to_string();
        if self
            .last_sdp
            .as_ref()
            .is_some_and(|last| *last != unversioned)
        {
            // A u64 version cannot realistically overflow; wrapping keeps this panic-free.
            self.version = self.version.wrapping_add(1);
        }
        self.last_sdp = Some(unversioned);
        session.origin.sess_version = self.version;
        session.to_string().into_bytes()
    }
}

/// What our pending offer contained.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OfferState {
    codecs: CodecPrefs,
    telephone_event: bool,
    ptime_ms: u32,
    rtcp_mux: bool,
    direction: Direction,
    srtp: Option<LocalSrtp>,
}

/// Negotiates one offered audio stream: our answer `m=` section and the outcome.
fn answer_stream(
    session: &Session,
    media: &Media,
    local: &LocalMedia,
) -> Result<(Media, NegotiatedMedia), SdpError> {
    let stream = RemoteStream::read(session, media)?;
    let chosen = local
        .codecs
        .iter()
        .find_map(|c| stream.find(c).map(|f| negotiated_codec(c, f)))
        .ok_or_else(|| SdpError::NoCommonCodec {
            offered: stream.describe_formats(),
        })?;
    let telephone_event = local
        .telephone_event
        .then(|| stream.find(Codec::TelephoneEvent).map(|f| f.pt))
        .flatten();
    let ptime_ms = stream.ptime_or(local.ptime_ms);
    let direction = local.direction.negotiate(stream.direction);
    let rtcp_mux = local.rtcp_mux && stream.rtcp_mux;
    let srtp = offered_srtp(&stream, local.srtp.as_ref())?;

    let mut formats = vec![(chosen.codec, chosen.payload_type)];
    if let Some(pt) = telephone_event {
        formats.push((Codec::TelephoneEvent, pt));
    }
    let our_crypto: Vec<CryptoAttribute> = srtp
        .iter()
        .map(|(theirs, ours)| CryptoAttribute {
            tag: theirs.tag,
            suite: theirs.suite,
            key: ours.key.for_suite(theirs.suite),
        })
        .collect();
    let our_media = audio_media(
        local.rtp_port,
        &formats,
        ptime_ms,
        direction,
        rtcp_mux,
        stream.savp,
        &our_crypto,
    );
    let outcome = negotiated(
        &stream,
        chosen,
        telephone_event,
        ptime_ms,
        direction,
        rtcp_mux,
        !stream.direction.receives(),
        srtp.map(|(theirs, ours)| NegotiatedSrtp {
            suite: theirs.suite,
            local: ours.key.for_suite(theirs.suite),
            remote: theirs.key,
        }),
    );
    Ok((our_media, outcome))
}

/// SRTP for an offered stream, by our mode (see [`SdpSession::answer`]): the peer's line we
/// take and our side, or `None` for plain RTP.
fn offered_srtp<'a>(
    stream: &RemoteStream,
    local: Option<&'a LocalSrtp>,
) -> Result<Option<(CryptoAttribute, &'a LocalSrtp)>, SdpError> {
    let Some(ours) = local.filter(|s| s.mode != SrtpMode::Off) else {
        return if stream.savp {
            Err(SdpError::SrtpOff)
        } else {
            Ok(None)
        };
    };
    if stream.crypto.is_empty() {
        return match (stream.savp, ours.mode) {
            (true, _) => Err(CryptoError::Malformed("RTP/SAVP without a=crypto").into()),
            (false, SrtpMode::Mandatory) => Err(SdpError::SrtpRequired),
            (false, _) => Ok(None),
        };
    }
    match first_usable(stream.crypto.iter().map(String::as_str), &ours.suites) {
        Ok(theirs) => Ok(Some((theirs, ours))),
        // Best effort: keys we cannot use on a plain offer leave it plain.
        Err(_) if !stream.savp && ours.mode == SrtpMode::Optional => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// SRTP from an answer to our offer (see [`SdpSession::accept_answer`]).
fn answered_srtp(
    stream: &RemoteStream,
    offered: Option<&LocalSrtp>,
) -> Result<Option<NegotiatedSrtp>, SdpError> {
    let Some(ours) = offered else {
        return if stream.savp || !stream.crypto.is_empty() {
            Err(CryptoError::Malformed("keys in the answer to an offer without SRTP").into())
        } else {
            Ok(None)
        };
    };
    let Some(line) = stream.crypto.first() else {
        return match ours.mode {
            SrtpMode::Mandatory => Err(SdpError::SrtpRequired),
            _ => Ok(None),
        };
    };
    let theirs = CryptoAttribute::parse(line)?;
    if ours.suites.by_tag(theirs.tag) != Some(theirs.suite) {
        return Err(CryptoError::Malformed("the answer's tag and suite were not offered").into());
    }
    Ok(Some(NegotiatedSrtp {
        suite: theirs.suite,
        local: ours.key.for_suite(theirs.suite),
        remote: theirs.key,
    }))
}

/// Builds the [`NegotiatedMedia`] for `stream` with the chosen format.
#[allow(clippy::too_many_arguments)]
fn negotiated(
    stream: &RemoteStream,
    codec: NegotiatedCodec,
    telephone_event: Option<PayloadType>,
    ptime_ms: u32,
    direction: Direction,
    rtcp_mux: bool,
    remote_hold: bool,
    srtp: Option<NegotiatedSrtp>,
) -> NegotiatedMedia {
    let remote_rtcp = if rtcp_mux {
        None
    } else {
        match stream.rtcp {
            Some((port, ip)) => Some(SocketAddr::new(ip.unwrap_or(stream.address), port)),
            None => stream
                .port
                .checked_add(1)
                .map(|port| SocketAddr::new(stream.address, port)),
        }
    };
    NegotiatedMedia {
        remote_rtp: SocketAddr::new(stream.address, stream.port),
        remote_rtcp,
        codec,
        telephone_event,
        ptime_ms,
        direction,
        rtcp_mux,
        remote_hold,
        srtp,
    }
}

/// The outcome for `codec`, found in the peer's SDP as `format`.
fn negotiated_codec(codec: Codec, format: &remote::RemoteFormat) -> NegotiatedCodec {
    NegotiatedCodec {
        codec,
        payload_type: format.pt,
        clock_rate: codec.clock_rate(),
        channels: codec.channels(),
        fmtp: format.fmtp.clone(),
    }
}

/// Our audio `m=` section: formats with rtpmap (and fmtp for Opus and telephone-event),
/// ptime, direction, optionally rtcp-mux, and the `a=crypto` lines, on `RTP/SAVP` if `savp`.
fn audio_media(
    port: u16,
    formats: &[(Codec, PayloadType)],
    ptime_ms: u32,
    direction: Direction,
    rtcp_mux: bool,
    savp: bool,
    crypto: &[CryptoAttribute],
) -> Media {
    let fmt = formats
        .iter()
        .map(|(_, pt)| pt.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let mut media = Media {
        media: remote::AUDIO.to_owned(),
        port,
        num_ports: None,
        proto: if savp { RTP_SAVP } else { RTP_AVP }.to_owned(),
        fmt,
        media_title: None,
        connections: Vec::new(),
        bandwidths: Vec::new(),
        key: None,
        attributes: Vec::new(),
    };
    for (codec, pt) in formats {
        let rtpmap = match codec.channels() {
            1 => format!("{pt} {}/{}", codec.encoding_name(), codec.clock_rate()),
            n => format!("{pt} {}/{}/{n}", codec.encoding_name(), codec.clock_rate()),
        };
        media.add_attribute(Attribute::with_value("rtpmap", rtpmap));
        let fmtp = match codec {
            Codec::Opus => Some(OPUS_FMTP),
            Codec::TelephoneEvent => Some(TELEPHONE_EVENT_FMTP),
            _ => None,
        };
        if let Some(params) = fmtp {
            media.add_attribute(Attribute::with_value("fmtp", format!("{pt} {params}")));
        }
    }
    media.add_attribute(Attribute::with_value("ptime", ptime_ms));
    media.add_attribute(Attribute::new(direction.as_str()));
    if rtcp_mux {
        media.add_attribute(Attribute::new("rtcp-mux"));
    }
    for c in crypto {
        media.add_attribute(Attribute::with_value(CRYPTO_ATTRIBUTE, c.value()));
    }
    media
}

/// A rejected copy of an offered `m=` line: port 0, same media type, transport and formats
/// (RFC 3264 §6).
fn rejected_media(offered: &Media) -> Media {
    Media {
        media: offered.media.clone(),
        port: 0,
        num_ports: None,
        proto: offered.proto.clone(),
        fmt: offered.fmt.clone(),
        media_title: None,
        connections: Vec::new(),
        bandwidths: Vec::new(),
        key: None,
        attributes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> LocalMedia {
        LocalMedia::new("192.0.2.10".parse().expect("ip"), 40000)
    }

    #[test]
    fn audio_media_lines() {
        let formats = [
            (Codec::Opus, PayloadType::new(96).expect("pt")),
            (Codec::TelephoneEvent, PayloadType::new(98).expect("pt")),
        ];
        let m = audio_media(5000, &formats, 30, Direction::RecvOnly, false, false, &[]);
        assert_eq!(m.fmt, "96 98");
        let attrs: Vec<String> = m
            .attributes
            .iter()
            .map(|a| match &a.value {
                Some(v) => format!("{}:{v}", a.attribute),
                None => a.attribute.clone(),
            })
            .collect();
        assert_eq!(
            attrs,
            [
                "rtpmap:96 opus/48000/2",
                "fmtp:96 minptime=10;useinbandfec=1",
                "rtpmap:98 telephone-event/8000",
                "fmtp:98 0-16",
                "ptime:30",
                "recvonly",
            ]
        );
    }

    #[test]
    fn rejected_media_keeps_type_and_formats() {
        let offered = Media::new(
            sdp_types::MediaType::Video,
            5002,
            sdp_types::TransportProto::RtpAvp,
            "31 34",
        );
        let r = rejected_media(&offered);
        assert_eq!(
            (r.media.as_str(), r.port, r.fmt.as_str()),
            ("video", 0, "31 34")
        );
    }

    #[test]
    fn version_bumps_only_on_change() {
        let mut s = SdpSession::with_version(7, 3);
        let mut l = local();
        s.create_offer(&l);
        assert_eq!(s.version(), 3);
        s.create_offer(&l);
        assert_eq!(s.version(), 3);
        l.direction = Direction::SendOnly;
        s.create_offer(&l);
        assert_eq!(s.version(), 4);
        assert_eq!(s.session_id(), 7);
    }

    #[test]
    fn accept_answer_needs_an_offer() {
        let mut s = SdpSession::new(1);
        assert_eq!(s.accept_answer(b"v=0\r\n"), Err(SdpError::NoPendingOffer));
    }
}
