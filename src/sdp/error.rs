//! Errors of SDP offer/answer, each mapped to the SIP response that should carry it.

/// SIP status code for a request whose body cannot be used at all (RFC 3261 §21.4.1).
pub const STATUS_BAD_REQUEST: u16 = 400;

/// SIP status code for an offer voxline cannot accept (RFC 3261 §21.4.26, RFC 3264 §6).
pub const STATUS_NOT_ACCEPTABLE_HERE: u16 = 488;

/// SIP status code for a local usage error (RFC 3261 §21.5.1).
pub const STATUS_SERVER_INTERNAL_ERROR: u16 = 500;

/// Why an SDP offer or answer could not be negotiated.
///
/// [`SdpError::status_code`] and [`SdpError::reason_phrase`] give the SIP response to send when
/// the SDP came in a request (an INVITE offer); for an answer in a response, the call layer
/// typically ends the call instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// No SDP body at all (empty or whitespace only).
    #[error("missing SDP body")]
    Missing,
    /// The body is not a usable session description; the string says what is wrong.
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// No usable audio stream: none offered, or every audio `m=` line is disabled (port 0), or
    /// the answer rejected our audio stream.
    #[error("no usable audio stream in SDP")]
    NoAudio,
    /// Audio was offered, but with no codec voxline is configured to use.
    #[error("no common audio codec (offered: {offered})")]
    NoCommonCodec {
        /// The offered formats, for logs and the Warning header, e.g. `"G729/8000 GSM/8000"`.
        offered: String,
    },
    /// The only audio streams use a transport voxline does not do (e.g. `RTP/SAVP`).
    #[error("unsupported media transport '{proto}'")]
    UnsupportedTransport {
        /// The `m=` line's proto field.
        proto: String,
    },
    /// The connection address is not a unicast IPv4/IPv6 address (a host name, a multicast
    /// group or a non-`IN` network type).
    #[error("unsupported connection address '{address}'")]
    UnsupportedAddress {
        /// The `c=` line's value.
        address: String,
    },
    /// SRTP is mandatory and the offer or answer has no keys (plain `RTP/AVP`).
    #[error("SRTP is mandatory and the peer offered plain RTP")]
    SrtpRequired,
    /// The peer asked for SRTP (`RTP/SAVP`) and SRTP is off here.
    #[error("the peer asked for SRTP (RTP/SAVP) and srtp is off")]
    SrtpOff,
    /// The peer's keys cannot be used: the first `a=crypto` line's reason (a suite not
    /// implemented, an MKI, ...), or an answer whose tag or suite is not one we offered.
    #[error("no usable a=crypto line: {0}")]
    Crypto(#[from] super::crypto::CryptoError),
    /// [`SdpSession::accept_answer`](super::SdpSession::accept_answer) was called without a
    /// preceding [`SdpSession::create_offer`](super::SdpSession::create_offer).
    #[error("no SDP offer is pending")]
    NoPendingOffer,
}

impl SdpError {
    /// The SIP status code to reject an offer with: 400 for a missing or malformed body, 488
    /// for a well-formed offer voxline cannot accept, 500 for a local usage error.
    pub fn status_code(&self) -> u16 {
        match self {
            SdpError::Missing | SdpError::Malformed(_) => STATUS_BAD_REQUEST,
            SdpError::NoAudio
            | SdpError::NoCommonCodec { .. }
            | SdpError::UnsupportedTransport { .. }
            | SdpError::UnsupportedAddress { .. }
            | SdpError::SrtpRequired
            | SdpError::SrtpOff
            | SdpError::Crypto(_) => STATUS_NOT_ACCEPTABLE_HERE,
            SdpError::NoPendingOffer => STATUS_SERVER_INTERNAL_ERROR,
        }
    }

    /// A reason phrase for the status line, e.g. `"Not Acceptable Here - no common codec"`.
    pub fn reason_phrase(&self) -> &'static str {
        match self {
            SdpError::Missing => "Bad Request - missing SDP",
            SdpError::Malformed(_) => "Bad Request - malformed SDP",
            SdpError::NoAudio => "Not Acceptable Here - no audio stream",
            SdpError::NoCommonCodec { .. } => "Not Acceptable Here - no common codec",
            SdpError::UnsupportedTransport { .. } => {
                "Not Acceptable Here - unsupported media transport"
            }
            SdpError::UnsupportedAddress { .. } => {
                "Not Acceptable Here - unsupported connection address"
            }
            SdpError::SrtpRequired => "Not Acceptable Here - SRTP required",
            SdpError::SrtpOff => "Not Acceptable Here - SRTP not enabled",
            SdpError::Crypto(_) => "Not Acceptable Here - no usable crypto",
            SdpError::NoPendingOffer => "Server Internal Error - no SDP offer pending",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes() {
        assert_eq!(SdpError::Missing.status_code(), 400);
        assert_eq!(SdpError::Malformed("x".into()).status_code(), 400);
        assert_eq!(SdpError::NoAudio.status_code(), 488);
        let e = SdpError::NoCommonCodec {
            offered: "G729/8000".into(),
        };
        assert_eq!(e.status_code(), 488);
        assert_eq!(e.reason_phrase(), "Not Acceptable Here - no common codec");
        assert_eq!(e.to_string(), "no common audio codec (offered: G729/8000)");
        assert_eq!(SdpError::NoPendingOffer.status_code(), 500);
    }
}
