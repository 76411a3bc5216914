//! Opus (RFC 6716) over RTP (RFC 7587): mono, VoIP application, in-band FEC on, through the
//! system libopus (`audiopus`).
//!
//! One RTP payload is one Opus packet. The RTP clock is always 48000 whatever the PCM rate
//! (RFC 7587 §4.1); the PCM rate here is one of 8000, 12000, 16000, 24000 or 48000 Hz. The
//! encoder always produces mono (allowed whatever `stereo` says, RFC 7587 §7.1) and the decoder
//! downmixes stereo packets.

use audiopus::coder::{Decoder as OpusDec, Encoder as OpusEnc};
use audiopus::{Application, Bitrate, Channels, SampleRate};

use super::{AudioDecoder, AudioEncoder, CodecError};
use crate::sdp::Codec;

/// The PCM sample rates libopus runs at, in Hz, lowest first (RFC 6716 §2).
pub const OPUS_SAMPLE_RATES: [u32; 5] = [8000, 12000, 16000, 24000, 48000];

/// The frame durations this encoder produces, in milliseconds (RFC 6716 §2.1.4 also has 2.5
/// and 5 ms, which cost too much header overhead over RTP).
pub const OPUS_FRAME_MS: [u32; 4] = [10, 20, 40, 60];

/// The packet loss, in percent, the encoder is told to expect by default. libopus only adds
/// in-band FEC (LBRR) data when this is above zero.
pub const OPUS_DEFAULT_EXPECTED_LOSS_PERCENT: u8 = 10;

/// The largest payload the encoder may produce, in bytes: the largest Opus frame
/// (RFC 6716 §3.2.1).
pub const OPUS_MAX_PAYLOAD_BYTES: usize = 1275;

/// The longest Opus packet, in milliseconds (RFC 6716 §3.2.5: 120 ms).
pub const OPUS_MAX_PACKET_MS: u32 = 120;

/// The RTP clock rate of Opus, whatever the PCM rate (RFC 7587 §4.1).
pub const OPUS_RTP_CLOCK_RATE: u32 = 48000;

/// The peer's Opus `a=fmtp` parameters that voxline acts on (RFC 7587 §7.1). Unknown, malformed
/// and out-of-range parameters are ignored, since every one of them is only a hint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpusFmtp {
    /// `maxplaybackrate`: the highest rate the peer plays back (8000..=48000). The encoder
    /// runs at the lowest Opus rate at or above it.
    pub max_playback_rate: Option<u32>,
    /// `sprop-maxcapturerate`: the highest rate the peer captures (8000..=48000). The decoder
    /// runs at the lowest Opus rate at or above it.
    pub sprop_max_capture_rate: Option<u32>,
    /// `maxaveragebitrate`: the highest average bitrate the peer wants, in bit/s
    /// (6000..=510000).
    pub max_average_bitrate: Option<u32>,
    /// `useinbandfec`: whether the peer's decoder uses in-band FEC. voxline's encoder sends FEC
    /// either way; this is informative.
    pub use_inband_fec: bool,
}

impl OpusFmtp {
    /// Parses the parameter list of an `a=fmtp` line (the text after the payload type),
    /// e.g. `"minptime=10; useinbandfec=1; maxplaybackrate=16000"`.
    pub fn parse(fmtp: &str) -> Self {
        let mut params = Self::default();
        for item in fmtp.split(';') {
            let Some((name, value)) = item.split_once('=') else {
                continue;
            };
            let name = name.trim();
            let value = value.trim();
            let number = value.parse::<u32>().ok();
            if name.eq_ignore_ascii_case("maxplaybackrate") {
                params.max_playback_rate = number.filter(|r| (8000..=48000).contains(r));
            } else if name.eq_ignore_ascii_case("sprop-maxcapturerate") {
                params.sprop_max_capture_rate = number.filter(|r| (8000..=48000).contains(r));
            } else if name.eq_ignore_ascii_case("maxaveragebitrate") {
                params.max_average_bitrate = number.filter(|r| (6000..=510_000).contains(r));
            } else if name.eq_ignore_ascii_case("useinbandfec") {
                params.use_inband_fec = value == "1";
            }
        }
        params
    }
}

/// Opus encoder: mono PCM frames to Opus packets, VoIP application, in-band FEC on.
pub struct OpusEncoder {
    inner: OpusEnc,
    sample_rate: u32,
    frame_samples: usize,
}

impl OpusEncoder {
    /// An encoder for `sample_rate` Hz PCM (one of [`OPUS_SAMPLE_RATES`]) producing
    /// `frame_ms` frames (one of [`OPUS_FRAME_MS`]), with in-band FEC on and
    /// [`OPUS_DEFAULT_EXPECTED_LOSS_PERCENT`] expected loss.
    pub fn new(sample_rate: u32, frame_ms: u32) -> Result<Self, CodecError> {
        let rate = opus_rate(sample_rate)?;
        if !OPUS_FRAME_MS.contains(&frame_ms) {
            return Err(CodecError::UnsupportedPtime {
                codec: Codec::Opus,
                ptime_ms: frame_ms,
            });
        }
        let mut inner = OpusEnc::new(rate, Channels::Mono, Application::Voip).map_err(opus_err)?;
        inner.set_inband_fec(true).map_err(opus_err)?;
        inner
            .set_packet_loss_perc(OPUS_DEFAULT_EXPECTED_LOSS_PERCENT)
            .map_err(opus_err)?;
        Ok(Self {
            inner,
            sample_rate,
            frame_samples: (sample_rate / 1000 * frame_ms) as usize,
        })
    }

    /// Caps the bitrate at `max_bps` bit/s (clamped to Opus's 6000..=510000) if the encoder's
    /// current bitrate is higher.
    pub fn limit_bitrate(&mut self, max_bps: u32) -> Result<(), CodecError> {
        let max = max_bps.clamp(6000, 510_000) as i32;
        let current = match self.inner.bitrate().map_err(opus_err)? {
            Bitrate::BitsPerSecond(bps) => bps,
            Bitrate::Max | Bitrate::Auto => i32::MAX,
        };
        if current > max {
            self.inner
                .set_bitrate(Bitrate::BitsPerSecond(max))
                .map_err(opus_err)?;
        }
        Ok(())
    }

    /// The encoder's current target bitrate in bit/s.
    pub fn bitrate(&self) -> Result<u32, CodecError> {
        match self.inner.bitrate().map_err(opus_err)? {
            Bitrate::BitsPerSecond(bps) => Ok(bps.max(0) as u32),
            Bitrate::Max | Bitrate::Auto => Err(CodecError::Opus("no explicit bitrate".into())),
        }
    }

    /// Tells the encoder how much packet loss to expect, in percent (for example from RTCP
    /// receiver reports); more loss makes it spend more on FEC. 0 turns FEC data off.
    pub fn set_expected_loss(&mut self, percent: u8) -> Result<(), CodecError> {
        self.inner
            .set_packet_loss_perc(percent.min(100))
            .map_err(opus_err)
    }

    /// Turns in-band FEC on or off (on by default).
    pub fn set_inband_fec(&mut self, enable: bool) -> Result<(), CodecError> {
        self.inner.set_inband_fec(enable).map_err(opus_err)
    }

    /// The encoder's algorithmic delay in samples at its sample rate: decoded audio lags the
    /// input by this much.
    pub fn lookahead(&self) -> Result<usize, CodecError> {
        self.inner.lookahead().map(|n| n as usize).map_err(opus_err)
    }
}

impl AudioEncoder for OpusEncoder {
    fn codec(&self) -> Codec {
        Codec::Opus
    }

    fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    fn frame_samples(&self) -> usize {
        self.frame_samples
    }

    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), CodecError> {
        if pcm.len() != self.frame_samples {
            return Err(CodecError::FrameSize {
                expected: self.frame_samples,
                got: pcm.len(),
            });
        }
        let start = out.len();
        out.resize(start + OPUS_MAX_PAYLOAD_BYTES, 0);
        let Some(dst) = out.get_mut(start..) else {
            return Err(CodecError::Opus("output buffer".into()));
        };
        match self.inner.encode(pcm, dst) {
            Ok(n) => {
                out.truncate(start + n);
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(opus_err(e))
            }
        }
    }
}

/// Opus decoder: Opus packets (mono or stereo) to mono PCM, with libopus's own loss
/// concealment and in-band FEC recovery.
///
/// `decode_fec` reports `false` when libopus could not use FEC: the next packet is CELT-only
/// or has no LBRR data, the last packet decoded was CELT-only, or `samples` is shorter than the
/// next packet's frame. When `samples` spans more than one frame, libopus conceals the earlier
/// part and only the last frame comes from the FEC data.
pub struct OpusDecoder {
    inner: OpusDec,
    rate: SampleRate,
    sample_rate: u32,
    /// Whether the last packet decoded was CELT-only: libopus then cannot use FEC data.
    last_celt_only: bool,
}

impl OpusDecoder {
    /// A decoder producing `sample_rate` Hz PCM (one of [`OPUS_SAMPLE_RATES`]).
    pub fn new(sample_rate: u32) -> Result<Self, CodecError> {
        let rate = opus_rate(sample_rate)?;
        Ok(Self {
            inner: OpusDec::new(rate, Channels::Mono).map_err(opus_err)?,
            rate,
            sample_rate,
            last_celt_only: false,
        })
    }

    /// Samples in 2.5 ms, the Opus frame granularity.
    fn granule(&self) -> usize {
        (self.sample_rate / 400) as usize
    }

    /// Samples in the longest Opus packet.
    fn max_samples(&self) -> usize {
        (self.sample_rate / 1000 * OPUS_MAX_PACKET_MS) as usize
    }

    fn check_gap(&self, samples: usize) -> Result<(), CodecError> {
        if !samples.is_multiple_of(self.granule()) || samples > self.max_samples() {
            return Err(CodecError::ConcealLength(samples));
        }
        Ok(())
    }

    /// Runs libopus on `payload` (`None`: a lost packet) into `samples` new samples of `out`.
    fn run(
        &mut self,
        payload: Option<&[u8]>,
        samples: usize,
        fec: bool,
        out: &mut Vec<i16>,
    ) -> Result<(), CodecError> {
        let start = out.len();
        out.resize(start + samples, 0);
        let Some(dst) = out.get_mut(start..) else {
            return Err(CodecError::Opus("output buffer".into()));
        };
        match self.inner.decode(payload, dst, fec) {
            Ok(n) => {
                out.truncate(start + n.min(samples));
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(opus_err(e))
            }
        }
    }
}

impl AudioDecoder for OpusDecoder {
    fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    fn payload_duration(&self, payload: &[u8]) -> Result<u32, CodecError> {
        if payload.is_empty() {
            return Err(CodecError::EmptyPayload);
        }
        // The RTP clock is 48000 Hz whatever the decoding rate (RFC 7587 §4.1); the TOC byte
        // and frame count give the duration of all the packet's frames (RFC 6716 §3.1).
        let ticks = audiopus::packet::nb_samples(payload, SampleRate::Hz48000).map_err(opus_err)?;
        if ticks == 0 || ticks > (OPUS_RTP_CLOCK_RATE / 1000 * OPUS_MAX_PACKET_MS) as usize {
            return Err(CodecError::Opus("invalid packet".into()));
        }
        u32::try_from(ticks).map_err(|_| CodecError::Opus("invalid packet".into()))
    }

    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError> {
        let Some(&toc) = payload.first() else {
            return Err(CodecError::EmptyPayload);
        };
        // libopus returns a negative error code for a malformed packet, which `audiopus` casts
        // to a huge usize: the bound check turns both into an error.
        let samples = audiopus::packet::nb_samples(payload, self.rate).map_err(opus_err)?;
        if samples == 0 || samples > self.max_samples() {
            return Err(CodecError::Opus("invalid packet".into()));
        }
        self.run(Some(payload), samples, false, out)?;
        self.last_celt_only = toc_is_celt_only(toc);
        Ok(())
    }

    fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) -> Result<(), CodecError> {
        if samples == 0 {
            return Ok(());
        }
        if samples > self.max_samples() {
            return Err(CodecError::ConcealLength(samples));
        }
        // libopus conceals whole 2.5 ms steps: round up, keep what was asked for.
        let start = out.len();
        let whole = samples.div_ceil(self.granule()) * self.granule();
        self.run(None, whole, false, out)?;
        out.truncate(start + samples);
        Ok(())
    }

    fn decode_fec(
        &mut self,
        next_payload: &[u8],
        samples: usize,
        out: &mut Vec<i16>,
    ) -> Result<bool, CodecError> {
        if samples == 0 || next_payload.is_empty() {
            return Ok(false);
        }
        self.check_gap(samples)?;
        let frame =
            audiopus::packet::samples_per_frame(next_payload, self.rate).map_err(opus_err)?;
        // libopus falls back to plain concealment in these cases; report them as "no FEC".
        if self.last_celt_only || frame > samples || !has_lbrr(next_payload) {
            return Ok(false);
        }
        self.run(Some(next_payload), samples, true, out)?;
        Ok(true)
    }
}

/// The Opus frame duration for a `ptime`: the longest of [`OPUS_FRAME_MS`] not above it.
pub(crate) fn frame_ms_for_ptime(ptime_ms: u32) -> Result<u32, CodecError> {
    OPUS_FRAME_MS
        .iter()
        .rev()
        .copied()
        .find(|&ms| ms <= ptime_ms)
        .ok_or(CodecError::UnsupportedPtime {
            codec: Codec::Opus,
            ptime_ms,
        })
}

/// The lowest Opus rate at or above `rate` (48000 if `None`).
pub(crate) fn supported_rate_at_least(rate: Option<u32>) -> u32 {
    let wanted = rate.unwrap_or(48000);
    OPUS_SAMPLE_RATES
        .iter()
        .copied()
        .find(|&r| r >= wanted)
        .unwrap_or(48000)
}

fn opus_rate(sample_rate: u32) -> Result<SampleRate, CodecError> {
    Ok(match sample_rate {
        8000 => SampleRate::Hz8000,
        12000 => SampleRate::Hz12000,
        16000 => SampleRate::Hz16000,
        24000 => SampleRate::Hz24000,
        48000 => SampleRate::Hz48000,
        other => return Err(CodecError::UnsupportedSampleRate(other)),
    })
}

fn opus_err(e: audiopus::Error) -> CodecError {
    CodecError::Opus(e.to_string())
}

/// Whether a TOC byte's configuration is CELT-only (RFC 6716 §3.1: configs 16..=31).
fn toc_is_celt_only(toc: u8) -> bool {
    toc >> 3 >= 16
}

/// Whether the first Opus frame of `packet` carries SILK LBRR (in-band FEC) data, read from
/// the LBRR flag in the SILK header bits (RFC 6716 §4.2.3). CELT-only packets have none.
fn has_lbrr(packet: &[u8]) -> bool {
    let Some(&toc) = packet.first() else {
        return false;
    };
    let config = toc >> 3;
    if config >= 16 {
        return false;
    }
    // SILK frames per Opus frame: 1 for 10 and 20 ms, 2 for 40 ms, 3 for 60 ms (§4.2.2).
    let silk_frames = if config >= 12 {
        1
    } else {
        match config % 4 {
            2 => 2,
            3 => 3,
            _ => 1,
        }
    };
    let channels = if toc & 0x04 != 0 { 2 } else { 1 };
    let Some(frame) = first_frame(packet) else {
        return false;
    };
    let mut rd = RangeDecoder::new(frame);
    let mut lbrr = false;
    for _ in 0..channels {
        for _ in 0..silk_frames {
            rd.bit(); // VAD flag
        }
        lbrr |= rd.bit();
    }
    lbrr
}

/// The bytes of the first frame of an Opus packet (RFC 6716 §3.2), or `None` if the packet is
/// malformed.
fn first_frame(packet: &[u8]) -> Option<&[u8]> {
    let toc = *packet.first()?;
    let rest = packet.get(1..)?;
    match toc & 0x03 {
        // One frame, or two of equal size: the first starts right after the TOC.
        0 | 1 => Some(rest),
        // Two frames: the first one's length comes first.
        2 => {
            let (len, used) = frame_length(rest)?;
            rest.get(used..used + len)
        }
        // Code 3: frame count byte, optional padding length, VBR lengths.
        _ => {
            let count_byte = *rest.first()?;
            let vbr = count_byte & 0x80 != 0;
            let padded = count_byte & 0x40 != 0;
            let mut pos = 1;
            if padded {
                loop {
                    let b = *rest.get(pos)?;
                    pos += 1;
                    if b != 255 {
                        break;
                    }
                }
            }
            if vbr {
                let (len, used) = frame_length(rest.get(pos..)?)?;
                rest.get(pos + used..pos + used + len)
            } else {
                rest.get(pos..)
            }
        }
    }
}

/// A frame length field (RFC 6716 §3.2.1): its value and how many bytes it took.
fn frame_length(data: &[u8]) -> Option<(usize, usize)> {
    let b0 = usize::from(*data.first()?);
    if b0 < 252 {
        Some((b0, 1))
    } else {
        let b1 = usize::from(*data.get(1)?);
        Some((b1 * 4 + b0, 2))
    }
}

/// Just enough of the Opus range decoder (RFC 6716 §4.1) to read the first equiprobable bits.
struct RangeDecoder<'a> {
    data: &'a [u8],
    pos: usize,
    rng: u32,
    val: u32,
    rem: u32,
}

impl<'a> RangeDecoder<'a> {
    fn new(data: &'a [u8]) -> Self {
        let mut rd = Self {
            data,
            pos: 0,
            rng: 128,
            val: 0,
            rem: 0,
        };
        rd.rem = rd.read_byte();
        rd.val = rd.rng - 1 - (rd.rem >> 1);
        rd.normalize();
        rd
    }

    /// The next byte, or 0 past the end (§4.1.1).
    fn read_byte(&mut self) -> u32 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        u32::from(b)
    }

    fn normalize(&mut self) {
        while self.rng <= 1 << 23 {
            self.rng <<= 8;
            let sym = self.rem;
            self.rem = self.read_byte();
            let sym = ((sym << 8) | self.rem) >> 1;
            self.val = ((self.val << 8) + (255 & !sym)) & 0x7FFF_FFFF;
        }
    }

    /// Decodes one bit of probability 1/2 (`ec_dec_bit_logp` with logp 1, §4.1.3.2).
    fn bit(&mut self) -> bool {
        let s = self.rng >> 1;
        let one = self.val < s;
        if one {
            self.rng = s;
        } else {
            self.val -= s;
            self.rng -= s;
        }
        self.normalize();
        one
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmtp_parsing() {
        let p = OpusFmtp::parse("minptime=10; useinbandfec=1; maxplaybackrate=16000");
        assert_eq!(p.max_playback_rate, Some(16000));
        assert!(p.use_inband_fec);
        assert_eq!(p.sprop_max_capture_rate, None);
        let p = OpusFmtp::parse("sprop-maxcapturerate=8000;maxaveragebitrate=20000;stereo=0");
        assert_eq!(p.sprop_max_capture_rate, Some(8000));
        assert_eq!(p.max_average_bitrate, Some(20000));
        assert!(!p.use_inband_fec);
        let p = OpusFmtp::parse("maxplaybackrate=96000;maxaveragebitrate=x;;=;garbage");
        assert_eq!(p, OpusFmtp::default());
    }

    #[test]
    fn rate_and_frame_choice() {
        assert_eq!(supported_rate_at_least(None), 48000);
        assert_eq!(supported_rate_at_least(Some(8000)), 8000);
        assert_eq!(supported_rate_at_least(Some(11025)), 12000);
        assert_eq!(supported_rate_at_least(Some(22050)), 24000);
        assert_eq!(frame_ms_for_ptime(20).unwrap(), 20);
        assert_eq!(frame_ms_for_ptime(30).unwrap(), 20);
        assert_eq!(frame_ms_for_ptime(60).unwrap(), 60);
        assert_eq!(frame_ms_for_ptime(100).unwrap(), 60);
        assert!(frame_ms_for_ptime(5).is_err());
        assert!(OpusEncoder::new(44100, 20).is_err());
        assert!(OpusEncoder::new(48000, 30).is_err());
        assert!(OpusDecoder::new(11025).is_err());
    }

    #[test]
    fn frame_parsing() {
        assert_eq!(first_frame(&[0x08, 1, 2, 3]), Some(&[1u8, 2, 3][..]));
        // Code 2: first frame 2 bytes long.
        assert_eq!(first_frame(&[0x0A, 2, 7, 8, 9]), Some(&[7u8, 8][..]));
        // Code 3, VBR, padded by 1 byte, first frame 1 byte.
        assert_eq!(first_frame(&[0x0B, 0xC2, 1, 1, 5, 6, 0]), Some(&[5u8][..]));
        // Code 3, CBR, no padding.
        assert_eq!(first_frame(&[0x0B, 0x02, 4, 4]), Some(&[4u8, 4][..]));
        // Truncated.
        assert_eq!(first_frame(&[0x0A, 9, 1]), None);
        assert_eq!(first_frame(&[0x0B]), None);
        assert_eq!(frame_length(&[252, 1]), Some((256, 2)));
        assert!(!has_lbrr(&[0xF8, 0xFF, 0xFF]));
        assert!(!has_lbrr(&[]));
    }

    #[test]
    fn bad_packets_are_errors() {
        let mut dec = OpusDecoder::new(16000).unwrap();
        let mut out = vec![1i16];
        assert_eq!(dec.decode(&[], &mut out), Err(CodecError::EmptyPayload));
        // Code 3 with a frame count of 0 is invalid (RFC 6716 §3.2.5).
        assert!(dec.decode(&[0x0B, 0x00], &mut out).is_err());
        // Code 2 whose first frame length runs past the end.
        assert!(dec.decode(&[0x0A, 200, 1], &mut out).is_err());
        assert_eq!(out, [1]);
        // Longer than any packet: refused.
        assert_eq!(
            dec.conceal(16 * 121, &mut out),
            Err(CodecError::ConcealLength(16 * 121))
        );
        assert_eq!(out, [1]);
        // Any other length: whole 2.5 ms steps, cut to what was asked.
        dec.conceal(7, &mut out).unwrap();
        assert_eq!(out.len(), 8);
        // The RTP duration of packets, at the 48 kHz RTP clock whatever the decoding rate:
        // a 20 ms SILK packet (TOC config 1, code 0), and three 20 ms CELT frames (code 3).
        assert_eq!(dec.payload_duration(&[0x08, 0]), Ok(960));
        assert_eq!(dec.payload_duration(&[0xF8 | 3, 3, 0, 0, 0]), Ok(2880));
        assert_eq!(dec.payload_duration(&[]), Err(CodecError::EmptyPayload));
        assert!(dec.payload_duration(&[0x0B, 0x00]).is_err());
    }
}
