//! Reading a peer's SDP: the per-stream facts offer/answer needs, with session-level defaults
//! applied (media-level `c=` and direction attributes override session-level ones, RFC 4566
//! §5.7 and §6).

use std::net::IpAddr;

use sdp_types::{AddrType, Connection, Media, NetType, Rtcp, RtpMap, Session};

use super::codec::{Codec, PayloadType};
use super::crypto::CRYPTO_ATTRIBUTE;
use super::direction::Direction;
use super::error::SdpError;

/// Plain RTP over UDP (RFC 3551 §3).
pub const RTP_AVP: &str = "RTP/AVP";

/// SRTP over UDP (RFC 3711 §12), keyed by `a=crypto` (RFC 4568).
pub const RTP_SAVP: &str = "RTP/SAVP";

/// The `m=` media type voxline negotiates (RFC 4566 §5.14).
pub const AUDIO: &str = "audio";

/// Packetisation intervals voxline honours from a peer's `a=ptime` (RFC 4566 §6); any other
/// value is ignored in favour of the local one.
pub const ACCEPTED_PTIMES_MS: [u32; 3] = [10, 20, 30];

/// Parses an SDP body: a missing body is [`SdpError::Missing`], a syntax error
/// [`SdpError::Malformed`]. LF-only line endings are accepted as well as CRLF.
pub fn parse_body(body: &[u8]) -> Result<Session, SdpError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(SdpError::Missing);
    }
    Session::parse(body).map_err(|e| SdpError::Malformed(e.to_string()))
}

/// One payload format of a remote `m=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFormat {
    /// The payload type number the peer used.
    pub pt: PayloadType,
    /// The codec it denotes, if voxline knows it.
    pub codec: Option<Codec>,
    /// Human-readable encoding, e.g. `"G729/8000"` or `"PT 96"`, for error messages.
    pub label: String,
    /// The peer's `a=fmtp` parameters for this payload type (the text after the number).
    pub fmtp: Option<String>,
}

/// An RTP/AVP audio stream of a peer's SDP, with everything offer/answer looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteStream {
    /// The RTP port of the `m=` line.
    pub port: u16,
    /// The payload formats, in the peer's order of preference.
    pub formats: Vec<RemoteFormat>,
    /// The effective connection address.
    pub address: IpAddr,
    /// The effective direction, with an unspecified connection address (`c=0.0.0.0`, RFC 3264
    /// §8.4 / RFC 2543 hold) folded in as "the peer does not receive".
    pub direction: Direction,
    /// The peer's `a=ptime`, if any and parseable.
    pub ptime_ms: Option<u32>,
    /// The peer's `a=rtcp` (RFC 3605): port and optional address.
    pub rtcp: Option<(u16, Option<IpAddr>)>,
    /// Whether the peer's stream carries `a=rtcp-mux` (RFC 5761 §5.1.1).
    pub rtcp_mux: bool,
    /// Whether the transport is `RTP/SAVP` (SRTP required) rather than `RTP/AVP`.
    pub savp: bool,
    /// The `a=crypto` values, in the peer's order of preference.
    pub crypto: Vec<String>,
}

impl RemoteStream {
    /// Reads `media` (an enabled `m=audio` line) of `session`.
    ///
    /// Checks the transport first ([`SdpError::UnsupportedTransport`]), then the format list
    /// ([`SdpError::Malformed`]), then the connection address.
    pub fn read(session: &Session, media: &Media) -> Result<Self, SdpError> {
        let savp = media.proto.eq_ignore_ascii_case(RTP_SAVP);
        if !savp && !media.proto.eq_ignore_ascii_case(RTP_AVP) {
            return Err(SdpError::UnsupportedTransport {
                proto: media.proto.clone(),
            });
        }
        let formats = read_formats(media)?;
        let address = effective_address(session, media)?;
        let mut direction = effective_direction(session, media);
        if address.is_unspecified() {
            direction = Direction::from_flags(direction.sends(), false);
        }
        let ptime_ms = media
            .get_first_attribute_value("ptime")
            .flatten()
            .and_then(parse_ptime);
        let rtcp = media
            .get_first_attribute_value("rtcp")
            .flatten()
            .and_then(|v| v.trim().parse::<Rtcp>().ok())
            .map(|r| {
                let ip = match r.try_address() {
                    Some(Ok(a)) => Some(a.ip),
                    _ => None,
                };
                (r.port, ip)
            });
        Ok(Self {
            port: media.port,
            formats,
            address,
            direction,
            ptime_ms,
            rtcp,
            rtcp_mux: media.has_attribute("rtcp-mux"),
            savp,
            crypto: media
                .get_attribute_values(CRYPTO_ATTRIBUTE)
                .flatten()
                .map(|v| v.trim().to_owned())
                .collect(),
        })
    }

    /// The peer's `a=ptime` if it is one voxline accepts (10/20/30 ms), else `fallback`.
    pub fn ptime_or(&self, fallback: u32) -> u32 {
        self.ptime_ms
            .filter(|p| ACCEPTED_PTIMES_MS.contains(p))
            .unwrap_or(fallback)
    }

    /// The first format denoting `codec`.
    pub fn find(&self, codec: Codec) -> Option<&RemoteFormat> {
        self.formats.iter().find(|f| f.codec == Some(codec))
    }

    /// The formats as text, e.g. `"G729/8000, GSM/8000"`.
    pub fn describe_formats(&self) -> String {
        self.formats
            .iter()
            .map(|f| f.label.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Whether `media` is an audio `m=` line (RFC 4566 §5.14; case-insensitive).
pub fn is_audio(media: &Media) -> bool {
    media.media.eq_ignore_ascii_case(AUDIO)
}

/// Reads the `m=` line's payload types and resolves each through `a=rtpmap`, falling back to
/// the static assignments of RFC 3551 §6.
fn read_formats(media: &Media) -> Result<Vec<RemoteFormat>, SdpError> {
    let rtpmaps: Vec<RtpMap> = media
        .get_attribute_values("rtpmap")
        .flatten()
        .filter_map(|v| v.trim().parse::<RtpMap>().ok())
        .collect();
    let fmtps: Vec<(u8, &str)> = media
        .get_attribute_values("fmtp")
        .flatten()
        .filter_map(|v| {
            let (pt, params) = v.trim().split_once(' ')?;
            Some((pt.parse::<u8>().ok()?, params.trim()))
        })
        .collect();

    let mut formats = Vec::new();
    for token in media.fmt.split_ascii_whitespace() {
        let pt = token
            .parse::<u8>()
            .ok()
            .and_then(PayloadType::new)
            .ok_or_else(|| {
                SdpError::Malformed(format!("invalid RTP payload type '{token}' in m= line"))
            })?;
        let rtpmap = rtpmaps.iter().find(|r| r.payload_type == pt.get());
        let (codec, label) = match rtpmap {
            Some(r) => {
                let mut label = format!("{}/{}", r.encoding_name, r.clock_rate);
                if let Some(params) = &r.encoding_params {
                    label.push('/');
                    label.push_str(params);
                }
                (Codec::from_rtpmap(&r.encoding_name, r.clock_rate), label)
            }
            None => (
                Codec::from_static_payload_type(pt),
                static_label(pt).map_or_else(|| format!("PT {pt}"), str::to_owned),
            ),
        };
        let fmtp = fmtps
            .iter()
            .find(|(p, _)| *p == pt.get())
            .map(|(_, params)| (*params).to_owned());
        formats.push(RemoteFormat {
            pt,
            codec,
            label,
            fmtp,
        });
    }
    if formats.is_empty() {
        return Err(SdpError::Malformed("m= line lists no format".to_owned()));
    }
    Ok(formats)
}

/// The RFC 3551 §6 table 4 names of static audio payload types, for messages.
fn static_label(pt: PayloadType) -> Option<&'static str> {
    Some(match pt.get() {
        0 => "PCMU/8000",
        3 => "GSM/8000",
        4 => "G723/8000",
        5 => "DVI4/8000",
        6 => "DVI4/16000",
        7 => "LPC/8000",
        8 => "PCMA/8000",
        9 => "G722/8000",
        10 => "L16/44100/2",
        11 => "L16/44100",
        12 => "QCELP/8000",
        13 => "CN/8000",
        14 => "MPA/90000",
        15 => "G728/8000",
        16 => "DVI4/11025",
        17 => "DVI4/22050",
        18 => "G729/8000",
        _ => return None,
    })
}

/// The media-level `c=` if present, else the session-level one (RFC 4566 §5.7), as a unicast
/// IP address.
fn effective_address(session: &Session, media: &Media) -> Result<IpAddr, SdpError> {
    let connection = media
        .connections
        .first()
        .or(session.connection.as_ref())
        .ok_or_else(|| SdpError::Malformed("no c= line for the audio stream".to_owned()))?;
    connection_ip(connection)
}

/// A `c=` line's address, if it is a unicast `IN IP4` / `IN IP6` address.
fn connection_ip(connection: &Connection) -> Result<IpAddr, SdpError> {
    let unsupported = || SdpError::UnsupportedAddress {
        address: format!(
            "{} {} {}",
            connection.nettype.as_str(),
            connection.addrtype.as_str(),
            connection.connection_address
        ),
    };
    if connection.nettype != NetType::In {
        return Err(unsupported());
    }
    let address = connection.try_address().map_err(|_| unsupported())?;
    let family_matches = matches!(
        (&connection.addrtype, address.ip),
        (AddrType::Ip4, IpAddr::V4(_)) | (AddrType::Ip6, IpAddr::V6(_))
    );
    if !family_matches || address.ip.is_multicast() {
        return Err(unsupported());
    }
    Ok(address.ip)
}

/// The first direction attribute at media level, else at session level, else sendrecv
/// (RFC 3264 §5.1).
fn effective_direction(session: &Session, media: &Media) -> Direction {
    let find = |attrs: &[sdp_types::Attribute]| {
        attrs
            .iter()
            .filter(|a| a.value.is_none())
            .find_map(|a| a.attribute.parse::<Direction>().ok())
    };
    find(&media.attributes)
        .or_else(|| find(&session.attributes))
        .unwrap_or_default()
}

/// Parses an `a=ptime` value in milliseconds; fractional values (RFC 4566 allows them) are
/// rounded.
fn parse_ptime(value: &str) -> Option<u32> {
    let value = value.trim();
    if let Ok(ms) = value.parse::<u32>() {
        return Some(ms);
    }
    let ms = value.parse::<f64>().ok()?;
    if ms.is_finite() && ms > 0.0 && ms < f64::from(u16::MAX) {
        // Range-checked above: the rounded value fits a u32 exactly.
        Some(ms.round() as u32)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Session {
        parse_body(s.as_bytes()).expect("test SDP parses")
    }

    #[test]
    fn missing_and_malformed_bodies() {
        assert_eq!(parse_body(b""), Err(SdpError::Missing));
        assert_eq!(parse_body(b" \r\n"), Err(SdpError::Missing));
        assert!(matches!(parse_body(b"hello"), Err(SdpError::Malformed(_))));
    }

    #[test]
    fn ptime_parsing() {
        assert_eq!(parse_ptime("20"), Some(20));
        assert_eq!(parse_ptime(" 30 "), Some(30));
        assert_eq!(parse_ptime("20.0"), Some(20));
        assert_eq!(parse_ptime("-5"), None);
        assert_eq!(parse_ptime("abc"), None);
    }

    #[test]
    fn media_level_overrides_session_level() {
        let s = parse(
            "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\na=sendonly\n\
             m=audio 4000 RTP/AVP 0\nc=IN IP6 2001:db8::7\na=recvonly\n\
             m=audio 4002 RTP/AVP 0\n",
        );
        let first = RemoteStream::read(&s, &s.medias[0]).expect("first stream");
        assert_eq!(first.address, "2001:db8::7".parse::<IpAddr>().expect("ip"));
        assert_eq!(first.direction, Direction::RecvOnly);
        let second = RemoteStream::read(&s, &s.medias[1]).expect("second stream");
        assert_eq!(second.address, "10.0.0.1".parse::<IpAddr>().expect("ip"));
        assert_eq!(second.direction, Direction::SendOnly);
    }

    #[test]
    fn unspecified_address_means_peer_does_not_receive() {
        let s = parse("v=0\nc=IN IP4 0.0.0.0\nm=audio 4000 RTP/AVP 0\n");
        let stream = RemoteStream::read(&s, &s.medias[0]).expect("stream");
        assert_eq!(stream.direction, Direction::SendOnly);
    }

    #[test]
    fn formats_resolve_static_and_dynamic() {
        let s = parse(
            "v=0\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVP 18 8 96 97\n\
             a=rtpmap:96 OPUS/48000/2\na=fmtp:96 useinbandfec=1; stereo=0\n\
             a=rtpmap:97 speex/16000\n",
        );
        let stream = RemoteStream::read(&s, &s.medias[0]).expect("stream");
        let codecs: Vec<_> = stream.formats.iter().map(|f| f.codec).collect();
        assert_eq!(codecs, [None, Some(Codec::Pcma), Some(Codec::Opus), None]);
        assert_eq!(
            stream.describe_formats(),
            "G729/8000, PCMA/8000, OPUS/48000/2, speex/16000"
        );
        assert_eq!(
            stream.find(Codec::Opus).and_then(|f| f.fmtp.as_deref()),
            Some("useinbandfec=1; stereo=0")
        );
    }

    #[test]
    fn bad_payload_type_is_malformed() {
        let s = parse("v=0\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVP 0 200\n");
        assert!(matches!(
            RemoteStream::read(&s, &s.medias[0]),
            Err(SdpError::Malformed(_))
        ));
    }

    #[test]
    fn hostnames_and_multicast_are_unsupported() {
        for c in [
            "IN IP4 pbx.example.com",
            "IN IP4 224.2.1.1/127",
            "IN IP6 10.0.0.1",
            "ATM NSAP 47.0005",
        ] {
            let s = parse(&format!("v=0\nc={c}\nm=audio 4000 RTP/AVP 0\n"));
            assert!(
                matches!(
                    RemoteStream::read(&s, &s.medias[0]),
                    Err(SdpError::UnsupportedAddress { .. })
                ),
                "{c}"
            );
        }
    }

    #[test]
    fn rtcp_attribute_with_and_without_address() {
        let s = parse(
            "v=0\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVP 0\na=rtcp:5001\n\
             m=audio 4002 RTP/AVP 0\na=rtcp:6001 IN IP4 192.0.2.9\n",
        );
        let a = RemoteStream::read(&s, &s.medias[0]).expect("a");
        assert_eq!(a.rtcp, Some((5001, None)));
        let b = RemoteStream::read(&s, &s.medias[1]).expect("b");
        assert_eq!(b.rtcp, Some((6001, Some("192.0.2.9".parse().expect("ip")))));
    }
}
