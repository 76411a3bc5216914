//! SDP offer/answer (RFC 3264) and audio codec negotiation, sans-IO.
//!
//! The `sip` layer hands message bodies over as opaque bytes; the call layer feeds them to an
//! [`SdpSession`] (one per dialog) and gives the resulting [`NegotiatedMedia`] to the media
//! layer. Parsing and printing use the `sdp-types` crate; this module only decides.
//!
//! * Outgoing call: [`SdpSession::create_offer`] for the INVITE, then
//!   [`SdpSession::accept_answer`] on the 183/200 body.
//! * Incoming call or re-INVITE: [`SdpSession::answer`]; on error, reject the request with
//!   [`SdpError::status_code`] and [`SdpError::reason_phrase`].
//!
//! voxline negotiates exactly one RTP/AVP or RTP/SAVP (SDES-keyed SRTP) audio stream; see `docs/sdp.md` for the rules
//! followed and what is not covered.
//!
//! ```
//! use voxline::sdp::{Codec, LocalMedia, SdpSession};
//!
//! let local = LocalMedia::new("192.0.2.10".parse().unwrap(), 40000);
//! let offer = b"v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\n\
//!               t=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
//! let (answer, media) = SdpSession::new(42).answer(offer, &local).unwrap();
//! assert_eq!(media.codec.codec, Codec::Pcmu);
//! assert_eq!(media.remote_rtp, "198.51.100.7:6000".parse().unwrap());
//! assert!(String::from_utf8(answer).unwrap().contains("m=audio 40000 RTP/AVP 0\r\n"));
//! ```

mod codec;
mod crypto;
mod direction;
mod error;
mod negotiate;
mod remote;

pub use codec::{
    Codec, CodecPrefs, CodecPrefsError, FIRST_DYNAMIC_PAYLOAD_TYPE, InvalidPayloadType,
    MAX_PAYLOAD_TYPE, OPUS_FMTP, OPUS_OFFER_PAYLOAD_TYPE, PayloadType, TELEPHONE_EVENT_FMTP,
    TELEPHONE_EVENT_OFFER_PAYLOAD_TYPE, UnknownCodec,
};
pub use crypto::{
    CRYPTO_ATTRIBUTE, CryptoAttribute, CryptoError, GCM_MASTER_SALT_LEN, GCM_TAG_LEN, LocalSrtp,
    MASTER_KEY_LEN, MASTER_SALT_LEN, MasterKey, NegotiatedSrtp, OFFERED_SUITES, SrtpMode,
    SrtpSuite, SrtpSuites, first_usable,
};
pub use direction::{Direction, UnknownDirection};
pub use error::{
    STATUS_BAD_REQUEST, STATUS_NOT_ACCEPTABLE_HERE, STATUS_SERVER_INTERNAL_ERROR, SdpError,
};
pub use negotiate::{
    DEFAULT_PTIME_MS, LocalMedia, NegotiatedCodec, NegotiatedMedia, ORIGIN_USERNAME, SESSION_NAME,
    SdpSession,
};
pub use remote::{ACCEPTED_PTIMES_MS, AUDIO, RTP_AVP, RTP_SAVP};
