//! G.722 (ITU-T G.722, SB-ADPCM) at 64 kbit/s: RTP payload type 9, 16 kHz audio, one octet
//! per pair of samples, RTP clock 8000 (RFC 3551 §4.5.2).
//!
//! The ADPCM itself comes from the `audio-codec` crate (a pure-Rust port of the spandsp/CMU
//! G.722 code: QMF band split, 6-bit lower and 2-bit upper sub-band ADPCM). These wrappers add
//! the frame checks, caller-owned output buffers and loss concealment.
//!
//! Known deviation of that crate from G.722's reset state: its encoder starts with the
//! lower/upper quantiser scale factors at 128/32 and its decoder at 0/0 instead of 32/8. Both
//! are recomputed from the code stream after the first sample, so only the first samples of a
//! call differ slightly from a conforming codec.

use audio_codec::g722 as imp;
use audio_codec::{Decoder as _, Encoder as _};

use super::plc::Plc;
use super::{AudioDecoder, AudioEncoder, CodecError};
use crate::sdp::Codec;

/// The G.722 audio sample rate in Hz. The RTP clock is 8000 (RFC 3551 §4.5.2).
pub const G722_SAMPLE_RATE: u32 = 16000;

/// G.722 encoder: 16 kHz PCM to 64 kbit/s G.722, one octet per two samples.
pub struct G722Encoder {
    inner: imp::G722Encoder,
    frame_samples: usize,
}

impl G722Encoder {
    /// An encoder whose frames are `ptime_ms` long (only [`AudioEncoder::frame_samples`]
    /// depends on it; `encode` takes any even length).
    pub fn new(ptime_ms: u32) -> Self {
        Self {
            inner: imp::G722Encoder::new(),
            frame_samples: (G722_SAMPLE_RATE / 1000 * ptime_ms) as usize,
        }
    }
}

impl AudioEncoder for G722Encoder {
    fn codec(&self) -> Codec {
        Codec::G722
    }

    fn sample_rate(&self) -> u32 {
        G722_SAMPLE_RATE
    }

    fn frame_samples(&self) -> usize {
        self.frame_samples
    }

    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), CodecError> {
        if !pcm.len().is_multiple_of(2) {
            return Err(CodecError::FrameSize {
                expected: pcm.len() + 1,
                got: pcm.len(),
            });
        }
        let start = out.len();
        out.resize(start + pcm.len() / 2, 0);
        let Some(dst) = out.get_mut(start..) else {
            return Err(CodecError::G722("output buffer".into()));
        };
        match self.inner.encode_into(pcm, dst) {
            Ok(n) => {
                out.truncate(start + n);
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(CodecError::G722(format!("{e:?}")))
            }
        }
    }
}

/// G.722 decoder: 64 kbit/s G.722 to 16 kHz PCM, two samples per octet, with
/// waveform-repetition loss concealment.
///
/// During a loss the ADPCM state is left as it was, so after the loss the decoder re-adapts to
/// the encoder over the next few milliseconds (G.722 Appendix III/IV concealment is not done).
pub struct G722Decoder {
    inner: imp::G722Decoder,
    plc: Plc,
}

impl G722Decoder {
    /// A decoder in the reset state.
    pub fn new() -> Self {
        Self {
            inner: imp::G722Decoder::new(),
            plc: Plc::new(G722_SAMPLE_RATE),
        }
    }
}

impl Default for G722Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl AudioDecoder for G722Decoder {
    fn sample_rate(&self) -> u32 {
        G722_SAMPLE_RATE
    }

    fn payload_duration(&self, payload: &[u8]) -> Result<u32, CodecError> {
        // One octet per two 16 kHz samples, and the RTP clock runs at 8000 Hz (RFC 3551
        // §4.5.2): one tick per octet.
        match u32::try_from(payload.len()) {
            Ok(0) => Err(CodecError::EmptyPayload),
            Ok(n) => Ok(n),
            Err(_) => Err(CodecError::PayloadTooLong(payload.len())),
        }
    }

    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError> {
        let start = out.len();
        out.resize(start + payload.len() * 2, 0);
        let Some(dst) = out.get_mut(start..) else {
            return Err(CodecError::G722("output buffer".into()));
        };
        match self.inner.decode_into(payload, dst) {
            Ok(n) => {
                out.truncate(start + n);
                self.plc.after_decode(out, start);
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(CodecError::G722(format!("{e:?}")))
            }
        }
    }

    fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) -> Result<(), CodecError> {
        self.plc.conceal(samples, out);
        Ok(())
    }

    fn decode_fec(&mut self, _: &[u8], _: usize, _: &mut Vec<i16>) -> Result<bool, CodecError> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let mut enc = G722Encoder::new(20);
        assert_eq!(enc.frame_samples(), 320);
        assert_eq!(enc.sample_rate(), 16000);
        let mut payload = vec![0xEE];
        enc.encode(&[0; 320], &mut payload).unwrap();
        assert_eq!(payload.len(), 161);
        assert_eq!(payload[0], 0xEE);
        assert_eq!(
            enc.encode(&[0; 3], &mut payload),
            Err(CodecError::FrameSize {
                expected: 4,
                got: 3
            })
        );
        assert_eq!(payload.len(), 161);

        let mut dec = G722Decoder::new();
        let mut pcm = vec![5];
        dec.decode(&payload[1..], &mut pcm).unwrap();
        assert_eq!(pcm.len(), 321);
        assert_eq!(pcm[0], 5);
        dec.conceal(320, &mut pcm).unwrap();
        assert_eq!(pcm.len(), 641);
    }
}
