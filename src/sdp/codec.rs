//! Audio codecs voxline can negotiate, RTP payload types and the ordered codec preference.

use std::fmt;
use std::str::FromStr;

/// Highest RTP payload type: the PT field is 7 bits (RFC 3550 §5.1).
pub const MAX_PAYLOAD_TYPE: u8 = 127;

/// First dynamic RTP payload type (RFC 3551 §6: 96-127 are dynamic).
pub const FIRST_DYNAMIC_PAYLOAD_TYPE: u8 = 96;

/// Dynamic payload type voxline offers Opus on (any of 96-127 is allowed, RFC 3551 §6;
/// 111 is what most WebRTC and SIP stacks use).
pub const OPUS_OFFER_PAYLOAD_TYPE: PayloadType = PayloadType(111);

/// Dynamic payload type voxline offers telephone-event on (RFC 4733 §7; 101 is customary).
pub const TELEPHONE_EVENT_OFFER_PAYLOAD_TYPE: PayloadType = PayloadType(101);

/// The `a=fmtp` parameters voxline sends for Opus: receiver-side in-band FEC and 10 ms minimum
/// packetisation (RFC 7587 §6.1).
pub const OPUS_FMTP: &str = "minptime=10;useinbandfec=1";

/// The `a=fmtp` event list voxline sends for telephone-event: DTMF digits 0-9, *, #, A-D and
/// flash (events 0-16, RFC 4733 §3.2 and §7.1.1).
pub const TELEPHONE_EVENT_FMTP: &str = "0-16";

/// An RTP payload type: a 7-bit number, 0..=127 (RFC 3550 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PayloadType(u8);

impl PayloadType {
    /// The payload type `pt`, or `None` if it does not fit the 7-bit field (> 127).
    pub const fn new(pt: u8) -> Option<Self> {
        if pt <= MAX_PAYLOAD_TYPE {
            Some(Self(pt))
        } else {
            None
        }
    }

    /// The numeric value, 0..=127.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// Whether this is a dynamic payload type (96-127, RFC 3551 §6).
    pub const fn is_dynamic(self) -> bool {
        self.0 >= FIRST_DYNAMIC_PAYLOAD_TYPE
    }
}

impl fmt::Display for PayloadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl TryFrom<u8> for PayloadType {
    type Error = InvalidPayloadType;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        Self::new(value).ok_or(InvalidPayloadType(value))
    }
}

/// A number that is not a valid RTP payload type (it is above 127).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("RTP payload type {0} is out of range 0-127")]
pub struct InvalidPayloadType(pub u8);

/// An audio codec (or, for [`Codec::TelephoneEvent`], the RFC 4733 DTMF payload) that voxline
/// can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 mu-law (RFC 3551 §4.5.14), static payload type 0.
    Pcmu,
    /// G.711 A-law (RFC 3551 §4.5.14), static payload type 8.
    Pcma,
    /// G.722 wideband (RFC 3551 §4.5.2), static payload type 9.
    G722,
    /// Opus (RFC 7587), dynamic payload type.
    Opus,
    /// DTMF named telephone events (RFC 4733), dynamic payload type.
    TelephoneEvent,
}

impl Codec {
    /// Every codec voxline knows, in no particular order.
    pub const ALL: [Codec; 5] = [
        Codec::Pcmu,
        Codec::Pcma,
        Codec::G722,
        Codec::Opus,
        Codec::TelephoneEvent,
    ];

    /// The encoding name used in `a=rtpmap` (RFC 3551 §6 table 4, RFC 7587 §7, RFC 4733 §7).
    pub const fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
            Codec::Opus => "opus",
            Codec::TelephoneEvent => "telephone-event",
        }
    }

    /// The RTP clock rate in Hz.
    ///
    /// G.722 samples at 16 kHz but its RTP clock is 8000 for historical reasons
    /// (RFC 3551 §4.5.2); Opus always uses 48000 (RFC 7587 §4.1).
    pub const fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::G722 | Codec::TelephoneEvent => 8000,
            Codec::Opus => 48000,
        }
    }

    /// The channel count of the `a=rtpmap` encoding: 2 for Opus (RFC 7587 §7 mandates
    /// `opus/48000/2` even for mono streams), 1 for the others.
    pub const fn channels(self) -> u8 {
        match self {
            Codec::Opus => 2,
            _ => 1,
        }
    }

    /// The static payload type assigned by RFC 3551 §6 table 4, if any.
    pub const fn static_payload_type(self) -> Option<PayloadType> {
        match self {
            Codec::Pcmu => Some(PayloadType(0)),
            Codec::Pcma => Some(PayloadType(8)),
            Codec::G722 => Some(PayloadType(9)),
            Codec::Opus | Codec::TelephoneEvent => None,
        }
    }

    /// The payload type voxline uses for this codec in its own offers: the static one, or
    /// [`OPUS_OFFER_PAYLOAD_TYPE`] / [`TELEPHONE_EVENT_OFFER_PAYLOAD_TYPE`].
    pub const fn offer_payload_type(self) -> PayloadType {
        match self {
            Codec::Pcmu => PayloadType(0),
            Codec::Pcma => PayloadType(8),
            Codec::G722 => PayloadType(9),
            Codec::Opus => OPUS_OFFER_PAYLOAD_TYPE,
            Codec::TelephoneEvent => TELEPHONE_EVENT_OFFER_PAYLOAD_TYPE,
        }
    }

    /// Whether this is an audio codec (everything except [`Codec::TelephoneEvent`]).
    pub const fn is_audio(self) -> bool {
        !matches!(self, Codec::TelephoneEvent)
    }

    /// The codec an `a=rtpmap` encoding name and clock rate denote, compared
    /// case-insensitively (RFC 4855 §3: media subtype names are case-insensitive).
    ///
    /// The clock rate must match [`Codec::clock_rate`]; for example `telephone-event/48000`
    /// is not recognised (voxline only does RFC 4733 events on an 8 kHz clock).
    pub fn from_rtpmap(encoding_name: &str, clock_rate: u32) -> Option<Codec> {
        let codec = encoding_name.parse::<Codec>().ok()?;
        (codec.clock_rate() == clock_rate).then_some(codec)
    }

    /// The codec a static payload type denotes when no `a=rtpmap` names it (RFC 3551 §6).
    pub const fn from_static_payload_type(pt: PayloadType) -> Option<Codec> {
        match pt.0 {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            9 => Some(Codec::G722),
            _ => None,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encoding_name())
    }
}

impl FromStr for Codec {
    type Err = UnknownCodec;

    /// Accepts the encoding names `PCMU`, `PCMA`, `G722`, `opus` and `telephone-event` in any
    /// letter case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Codec::ALL
            .into_iter()
            .find(|c| c.encoding_name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownCodec(s.to_owned()))
    }
}

/// A codec name voxline does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown codec '{0}' (known: PCMU, PCMA, G722, opus, telephone-event)")]
pub struct UnknownCodec(pub String);

/// The audio codecs voxline offers or accepts, most preferred first.
///
/// Never empty, never contains [`Codec::TelephoneEvent`] (DTMF is switched on separately with
/// [`LocalMedia::telephone_event`](super::LocalMedia::telephone_event)) and never lists a codec
/// twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecPrefs(Vec<Codec>);

impl CodecPrefs {
    /// Preferences from an ordered list. Duplicates are dropped (the first occurrence keeps its
    /// place); an empty list or one containing telephone-event is an error.
    pub fn new(codecs: impl IntoIterator<Item = Codec>) -> Result<Self, CodecPrefsError> {
        let mut list: Vec<Codec> = Vec::new();
        for codec in codecs {
            if !codec.is_audio() {
                return Err(CodecPrefsError::NotAudio(codec));
            }
            if !list.contains(&codec) {
                list.push(codec);
            }
        }
        if list.is_empty() {
            return Err(CodecPrefsError::Empty);
        }
        Ok(Self(list))
    }

    /// The codecs, most preferred first.
    pub fn as_slice(&self) -> &[Codec] {
        &self.0
    }

    /// Iterates over the codecs, most preferred first.
    pub fn iter(&self) -> impl Iterator<Item = Codec> + '_ {
        self.0.iter().copied()
    }

    /// Whether `codec` is in the list.
    pub fn contains(&self, codec: Codec) -> bool {
        self.0.contains(&codec)
    }
}

impl Default for CodecPrefs {
    /// `[PCMU, PCMA, G722, Opus]`: G.711 first, because every SIP trunk and PBX speaks it.
    fn default() -> Self {
        Self(vec![Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus])
    }
}

impl FromStr for CodecPrefs {
    type Err = CodecPrefsError;

    /// Parses a comma-separated list such as `"opus, pcmu,PCMA"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let codecs = s
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| part.parse::<Codec>().map_err(CodecPrefsError::Unknown))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(codecs)
    }
}

/// Why a codec preference list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecPrefsError {
    /// The list had no codec.
    #[error("the codec list is empty")]
    Empty,
    /// The list named a payload format that is not an audio codec (telephone-event).
    #[error("{0} is not an audio codec; enable DTMF with telephone_event instead")]
    NotAudio(Codec),
    /// The list named an unknown codec.
    #[error(transparent)]
    Unknown(#[from] UnknownCodec),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_type_range() {
        assert_eq!(PayloadType::new(0).map(PayloadType::get), Some(0));
        assert_eq!(PayloadType::new(127).map(PayloadType::get), Some(127));
        assert_eq!(PayloadType::new(128), None);
        assert_eq!(PayloadType::try_from(200), Err(InvalidPayloadType(200)));
        assert_eq!(
            PayloadType::new(101).map(|p| p.to_string()).as_deref(),
            Some("101")
        );
        assert!(OPUS_OFFER_PAYLOAD_TYPE.is_dynamic());
        assert!(!PayloadType(9).is_dynamic());
    }

    #[test]
    fn codec_parameters() {
        assert_eq!(Codec::G722.clock_rate(), 8000);
        assert_eq!(Codec::Opus.clock_rate(), 48000);
        assert_eq!(Codec::TelephoneEvent.clock_rate(), 8000);
        assert_eq!(Codec::Opus.channels(), 2);
        assert_eq!(Codec::Pcma.channels(), 1);
        assert_eq!(Codec::Pcmu.static_payload_type(), PayloadType::new(0));
        assert_eq!(Codec::Pcma.static_payload_type(), PayloadType::new(8));
        assert_eq!(Codec::G722.static_payload_type(), PayloadType::new(9));
        assert_eq!(Codec::Opus.static_payload_type(), None);
    }

    #[test]
    fn codec_from_str_is_case_insensitive() {
        assert_eq!("pcmu".parse::<Codec>(), Ok(Codec::Pcmu));
        assert_eq!("PCMU".parse::<Codec>(), Ok(Codec::Pcmu));
        assert_eq!("g722".parse::<Codec>(), Ok(Codec::G722));
        assert_eq!("OPUS".parse::<Codec>(), Ok(Codec::Opus));
        assert_eq!("pcma".parse::<Codec>(), Ok(Codec::Pcma));
        assert_eq!(
            "Telephone-Event".parse::<Codec>(),
            Ok(Codec::TelephoneEvent)
        );
        assert_eq!(
            "g729".parse::<Codec>(),
            Err(UnknownCodec("g729".to_owned()))
        );
    }

    #[test]
    fn codec_from_rtpmap_checks_clock_rate() {
        assert_eq!(Codec::from_rtpmap("OPUS", 48000), Some(Codec::Opus));
        assert_eq!(Codec::from_rtpmap("opus", 8000), None);
        assert_eq!(
            Codec::from_rtpmap("telephone-event", 8000),
            Some(Codec::TelephoneEvent)
        );
        assert_eq!(Codec::from_rtpmap("telephone-event", 48000), None);
        assert_eq!(Codec::from_rtpmap("G722", 16000), None);
    }

    #[test]
    fn prefs_default_and_parse() {
        assert_eq!(
            CodecPrefs::default().as_slice(),
            &[Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus]
        );
        let prefs: CodecPrefs = "opus, pcmu,PCMU".parse().expect("valid list");
        assert_eq!(prefs.as_slice(), &[Codec::Opus, Codec::Pcmu]);
        assert_eq!("".parse::<CodecPrefs>(), Err(CodecPrefsError::Empty));
        assert_eq!(
            "pcmu,telephone-event".parse::<CodecPrefs>(),
            Err(CodecPrefsError::NotAudio(Codec::TelephoneEvent))
        );
        assert!(matches!(
            "pcmu,gsm".parse::<CodecPrefs>(),
            Err(CodecPrefsError::Unknown(_))
        ));
    }
}
