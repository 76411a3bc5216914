//! Audio codecs behind one pair of traits, sans-IO: PCMU and PCMA (G.711), G.722 and Opus.
//!
//! * [`encoder_for`] and [`decoder_for`] build the codec the SDP layer negotiated
//!   ([`NegotiatedCodec`]).
//! * [`AudioEncoder::encode`] turns one frame of 16-bit mono PCM at
//!   [`AudioEncoder::sample_rate`] into one RTP payload; [`AudioDecoder::decode`] does the
//!   reverse. Both append to a buffer the caller owns and reuses, so once that buffer has grown
//!   to a frame the hot path allocates nothing.
//! * A lost packet is filled with [`AudioDecoder::conceal`] (packet loss concealment) or, for
//!   Opus when the packet after it has arrived, with [`AudioDecoder::decode_fec`] (in-band
//!   forward error correction, RFC 7587 §3.3).
//!
//! The PCM rate is the codec's own: 8000 Hz for G.711, 16000 Hz for G.722 (whose RTP clock is
//! nevertheless 8000, RFC 3551 §4.5.2), and for Opus one of 8000, 12000, 16000, 24000 or 48000
//! (RFC 7587's RTP clock is always 48000). Resampling to and from the agent's rate is the
//! caller's business.
//!
//! G.711 is implemented here ([`g711`]); G.722 uses the `audio-codec` crate and Opus the system
//! libopus through `audiopus`.

pub mod g711;
pub(crate) mod g722;
pub(crate) mod opus;
mod plc;

use crate::sdp::{Codec, NegotiatedCodec};

pub use g711::{PcmaDecoder, PcmaEncoder, PcmuDecoder, PcmuEncoder};
pub use g722::{G722Decoder, G722Encoder};
pub use opus::{OpusDecoder, OpusEncoder, OpusFmtp};

/// The longest packetisation interval accepted, in milliseconds: RFC 3551 §4.2 asks receivers
/// to accept packets of up to 200 ms.
pub const MAX_PTIME_MS: u32 = 200;

/// Turns PCM frames into RTP payloads of one codec.
pub trait AudioEncoder: Send {
    /// The codec this encoder produces.
    fn codec(&self) -> Codec;

    /// The PCM sample rate `encode` expects, in Hz (not the RTP clock rate).
    fn sample_rate(&self) -> u32;

    /// The number of PCM samples in one frame (one RTP packet) at [`Self::sample_rate`]:
    /// what the caller should pass to `encode` each time.
    fn frame_samples(&self) -> usize;

    /// Encodes `pcm` (mono, at [`Self::sample_rate`]) and appends the payload to `out`.
    ///
    /// G.711 takes any number of samples and G.722 any even number; Opus takes exactly
    /// [`Self::frame_samples`].
    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), CodecError>;
}

/// Turns RTP payloads of one codec back into PCM, and fills the gaps left by lost packets.
pub trait AudioDecoder: Send {
    /// The PCM sample rate the decoder produces, in Hz (not the RTP clock rate).
    fn sample_rate(&self) -> u32;

    /// How much audio `payload` holds, in ticks of the codec's RTP clock (8000 Hz for G.711
    /// and G.722, 48000 Hz for Opus): what its packet covers on the RTP timeline, whatever
    /// packetisation the sender chose.
    ///
    /// An empty payload, or one whose length cannot be audio of this codec, is an error.
    fn payload_duration(&self, payload: &[u8]) -> Result<u32, CodecError>;

    /// Decodes one RTP payload and appends the PCM (mono, at [`Self::sample_rate`]) to `out`.
    ///
    /// A payload that cannot be decoded is an error and leaves `out` as it was.
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError>;

    /// Appends `samples` samples of packet loss concealment for a lost packet to `out`.
    ///
    /// Opus uses libopus's own concealment (decoding a missing packet) in steps of 2.5 ms,
    /// the last one cut to `samples`. G.711 and G.722 repeat the last pitch period and fade it out
    /// over 60 ms of consecutive loss, a simplified ITU-T G.711 Appendix I.
    fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) -> Result<(), CodecError>;

    /// Recovers the `samples` samples lost just before `next_payload` from the in-band FEC data
    /// that `next_payload` carries, and appends them to `out`.
    ///
    /// Returns `Ok(true)` if it did. Returns `Ok(false)` and leaves `out` as it was when
    /// `next_payload` carries no FEC data for it (always for G.711 and G.722); the caller then
    /// uses [`Self::conceal`]. Either way the caller decodes `next_payload` itself afterwards.
    fn decode_fec(
        &mut self,
        next_payload: &[u8],
        samples: usize,
        out: &mut Vec<i16>,
    ) -> Result<bool, CodecError>;
}

/// Builds the encoder for a negotiated codec, with frames of `ptime_ms` milliseconds.
///
/// Opus frames are 10, 20, 40 or 60 ms: the longest of these not above `ptime_ms` is used (so a
/// `ptime` of 30 gives 20 ms frames: `ptime` only states a preference, RFC 4566 §6). The Opus
/// encoding rate and bitrate follow the peer's `maxplaybackrate` and `maxaveragebitrate`
/// (RFC 7587 §7.1, see [`OpusFmtp`]).
pub fn encoder_for(
    codec: &NegotiatedCodec,
    ptime_ms: u32,
) -> Result<Box<dyn AudioEncoder>, CodecError> {
    if ptime_ms == 0 || ptime_ms > MAX_PTIME_MS {
        return Err(CodecError::UnsupportedPtime {
            codec: codec.codec,
            ptime_ms,
        });
    }
    match codec.codec {
        Codec::Pcmu => Ok(Box::new(PcmuEncoder::new(ptime_ms))),
        Codec::Pcma => Ok(Box::new(PcmaEncoder::new(ptime_ms))),
        Codec::G722 => Ok(Box::new(G722Encoder::new(ptime_ms))),
        Codec::Opus => {
            let fmtp = OpusFmtp::parse(codec.fmtp.as_deref().unwrap_or(""));
            let frame_ms = opus::frame_ms_for_ptime(ptime_ms)?;
            let rate = opus::supported_rate_at_least(fmtp.max_playback_rate);
            let mut encoder = OpusEncoder::new(rate, frame_ms)?;
            if let Some(max) = fmtp.max_average_bitrate {
                encoder.limit_bitrate(max)?;
            }
            Ok(Box::new(encoder))
        }
        Codec::TelephoneEvent => Err(CodecError::NotAudio(codec.codec)),
    }
}

/// Builds the decoder for a negotiated codec.
///
/// Opus decodes at the lowest supported rate not below the peer's `sprop-maxcapturerate`, and
/// at 48000 Hz if the peer gave none ([`OpusFmtp`]).
pub fn decoder_for(codec: &NegotiatedCodec) -> Result<Box<dyn AudioDecoder>, CodecError> {
    match codec.codec {
        Codec::Pcmu => Ok(Box::new(PcmuDecoder::new())),
        Codec::Pcma => Ok(Box::new(PcmaDecoder::new())),
        Codec::G722 => Ok(Box::new(G722Decoder::new())),
        Codec::Opus => {
            let fmtp = OpusFmtp::parse(codec.fmtp.as_deref().unwrap_or(""));
            let rate = opus::supported_rate_at_least(fmtp.sprop_max_capture_rate);
            Ok(Box::new(OpusDecoder::new(rate)?))
        }
        Codec::TelephoneEvent => Err(CodecError::NotAudio(codec.codec)),
    }
}

/// Why a codec could not be built or could not encode or decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The payload format is not an audio codec (telephone-event goes to the DTMF code).
    #[error("{0:?} is not an audio codec")]
    NotAudio(Codec),
    /// The packetisation interval is not usable with this codec.
    #[error("ptime {ptime_ms} ms is not supported for {codec:?}")]
    UnsupportedPtime {
        /// The codec.
        codec: Codec,
        /// The requested interval.
        ptime_ms: u32,
    },
    /// The PCM sample rate is not one the codec can run at.
    #[error("sample rate {0} Hz is not supported")]
    UnsupportedSampleRate(u32),
    /// `encode` was given the wrong number of samples.
    #[error("expected {expected} PCM samples, got {got}")]
    FrameSize {
        /// What the codec needs (for G.722: an even number, reported as `got + 1`).
        expected: usize,
        /// What it was given.
        got: usize,
    },
    /// A concealment or FEC length that the codec cannot produce (Opus: not a multiple of
    /// 2.5 ms, or more than 120 ms).
    #[error("cannot conceal {0} samples")]
    ConcealLength(usize),
    /// The payload is empty.
    #[error("empty payload")]
    EmptyPayload,
    /// The payload is longer than any packet can be.
    #[error("payload of {0} bytes is too long")]
    PayloadTooLong(usize),
    /// libopus refused: a malformed packet, or a bad parameter.
    #[error("opus: {0}")]
    Opus(String),
    /// The G.722 implementation refused its input.
    #[error("g722: {0}")]
    G722(String),
}
