//! G.711 (ITU-T G.711, 1988): PCMU (μ-law) and PCMA (A-law), RTP payload types 0 and 8
//! (RFC 3551 §4.5.14).
//!
//! Decoding is one lookup in a 256-entry table per sample, encoding one lookup in a table of
//! every 14-bit (μ-law, 16 KiB) or 13-bit (A-law, 8 KiB) linear value: a third of the time of
//! computing the code (`cargo bench --bench codecs`). The tables are built at compile time by
//! `const fn`s from the G.711 segment definition (the encoder's finds the segment with one
//! `leading_zeros`). Both directions are checked against the classic Sun Microsystems `g711.c`
//! in `tests/media/codec_g711.rs`.
//!
//! Samples are 16-bit linear PCM; G.711 itself works on 14-bit (μ-law) or 13-bit (A-law)
//! linear values, so the low 2 or 3 bits are dropped on encoding and zero on decoding.

use super::plc::Plc;
use super::{AudioDecoder, AudioEncoder, CodecError};
use crate::sdp::Codec;

/// The G.711 sample rate in Hz (RFC 3551 §4.5.14).
pub const G711_SAMPLE_RATE: u32 = 8000;

/// μ-law expansion: the 16-bit linear value of every μ-law code, built at compile time.
pub const ULAW_DECODE_TABLE: [i16; 256] = ulaw_table();

/// A-law expansion: the 16-bit linear value of every A-law code, built at compile time.
pub const ALAW_DECODE_TABLE: [i16; 256] = alaw_table();

/// μ-law compression of every 14-bit linear value, indexed by `(pcm >> 2) + 8192`.
const ULAW_ENCODE_TABLE: [u8; 1 << 14] = ulaw_encode_table();

/// A-law compression of every 13-bit linear value, indexed by `(pcm >> 3) + 4096`.
const ALAW_ENCODE_TABLE: [u8; 1 << 13] = alaw_encode_table();

/// Compresses one 16-bit linear sample to a μ-law code (G.711 Table 2).
pub const fn ulaw_encode(pcm: i16) -> u8 {
    // invariant: pcm >> 2 is in -8192..8192, so the index is in 0..16384, the table's length.
    ULAW_ENCODE_TABLE[((pcm >> 2) as i32 + 8192) as usize]
}

/// Compresses one 16-bit linear sample to an A-law code (G.711 Table 1).
pub const fn alaw_encode(pcm: i16) -> u8 {
    // invariant: pcm >> 3 is in -4096..4096, so the index is in 0..8192, the table's length.
    ALAW_ENCODE_TABLE[((pcm >> 3) as i32 + 4096) as usize]
}

/// Computes the μ-law code of a 16-bit linear sample (builds [`ULAW_ENCODE_TABLE`]).
const fn ulaw_compress(pcm: i16) -> u8 {
    // G.711 μ-law quantises 14-bit linear samples.
    let x = (pcm as i32) >> 2;
    let (magnitude, sign) = if x < 0 { (-x, 0x00) } else { (x, 0x80) };
    let magnitude = if magnitude > ULAW_CLIP {
        ULAW_CLIP
    } else {
        magnitude
    };
    // With the bias added, segment s covers [32 << s, 64 << s): the segment is the position
    // of the highest set bit, minus 5.
    let biased = magnitude + ULAW_BIAS;
    let segment = 31 - biased.leading_zeros() as i32 - 5;
    let code = if segment > 7 {
        0x7F
    } else {
        (segment << 4) | ((biased >> (segment + 1)) & 0x0F)
    };
    // Transmitted codes are inverted, with the sign bit set for positive samples.
    ((code as u8) ^ 0x7F) | sign
}

/// Expands one μ-law code to a 16-bit linear sample.
pub const fn ulaw_decode(code: u8) -> i16 {
    // invariant: a u8 index is always below the table's 256 entries.
    ULAW_DECODE_TABLE[code as usize]
}

/// Computes the A-law code of a 16-bit linear sample (builds [`ALAW_ENCODE_TABLE`]).
const fn alaw_compress(pcm: i16) -> u8 {
    // G.711 A-law quantises 13-bit linear samples; negative values are one's complement.
    let x = (pcm as i32) >> 3;
    let (magnitude, sign) = if x >= 0 { (x, 0x80) } else { (-x - 1, 0x00) };
    // Segment 0 covers [0, 32), segment s >= 1 covers [16 << s, 32 << s).
    let segment = if magnitude < 32 {
        0
    } else {
        31 - magnitude.leading_zeros() as i32 - 4
    };
    let mantissa = if segment < 2 {
        (magnitude >> 1) & 0x0F
    } else {
        (magnitude >> segment) & 0x0F
    };
    // Transmitted codes have the even bits inverted (XOR 0x55), sign bit set for positive.
    (((segment << 4) | mantissa) as u8 | sign) ^ 0x55
}

/// Expands one A-law code to a 16-bit linear sample.
pub const fn alaw_decode(code: u8) -> i16 {
    // invariant: a u8 index is always below the table's 256 entries.
    ALAW_DECODE_TABLE[code as usize]
}

/// Defines one G.711 law's encoder and decoder (the two laws differ only in their tables).
macro_rules! g711_codec {
    ($enc:ident, $dec:ident, $codec:expr, $encode:ident, $decode:ident, $law:literal) => {
        #[doc = concat!("G.711 ", $law, " encoder: 8000 Hz PCM to ", $law, ", one byte per sample.")]
        #[derive(Debug, Clone)]
        pub struct $enc {
            frame_samples: usize,
        }

        impl $enc {
            /// An encoder whose frames are `ptime_ms` long (only [`AudioEncoder::frame_samples`]
            /// depends on it; `encode` takes any length).
            pub fn new(ptime_ms: u32) -> Self {
                Self {
                    frame_samples: samples_for(ptime_ms),
                }
            }
        }

        impl AudioEncoder for $enc {
            fn codec(&self) -> Codec {
                $codec
            }

            fn sample_rate(&self) -> u32 {
                G711_SAMPLE_RATE
            }

            fn frame_samples(&self) -> usize {
                self.frame_samples
            }

            fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), CodecError> {
                out.extend(pcm.iter().map(|&s| $encode(s)));
                Ok(())
            }
        }

        #[doc = concat!("G.711 ", $law, " decoder: ", $law, " to 8000 Hz PCM, with waveform-repetition loss concealment.")]
        #[derive(Debug, Clone)]
        pub struct $dec {
            plc: Plc,
        }

        impl $dec {
            /// A decoder with empty concealment history.
            pub fn new() -> Self {
                Self {
                    plc: Plc::new(G711_SAMPLE_RATE),
                }
            }
        }

        impl Default for $dec {
            fn default() -> Self {
                Self::new()
            }
        }

        impl AudioDecoder for $dec {
            fn sample_rate(&self) -> u32 {
                G711_SAMPLE_RATE
            }

            fn payload_duration(&self, payload: &[u8]) -> Result<u32, CodecError> {
                // One octet per sample (RFC 3551 §4.5.14), any count.
                match u32::try_from(payload.len()) {
                    Ok(0) => Err(CodecError::EmptyPayload),
                    Ok(n) => Ok(n),
                    Err(_) => Err(CodecError::PayloadTooLong(payload.len())),
                }
            }

            fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError> {
                let start = out.len();
                out.extend(payload.iter().map(|&c| $decode(c)));
                self.plc.after_decode(out, start);
                Ok(())
            }

            fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) -> Result<(), CodecError> {
                self.plc.conceal(samples, out);
                Ok(())
            }

            fn decode_fec(&mut self, _: &[u8], _: usize, _: &mut Vec<i16>) -> Result<bool, CodecError> {
                Ok(false)
            }
        }
    };
}

g711_codec!(
    PcmuEncoder,
    PcmuDecoder,
    Codec::Pcmu,
    ulaw_encode,
    ulaw_decode,
    "μ-law"
);
g711_codec!(
    PcmaEncoder,
    PcmaDecoder,
    Codec::Pcma,
    alaw_encode,
    alaw_decode,
    "A-law"
);

/// The μ-law bias, in 14-bit units (G.711: the segment end points are 2^n - 33).
const ULAW_BIAS: i32 = 33;

/// The largest 14-bit magnitude μ-law represents: 8191 - 33 + 1 (segment 7, step 15, top).
const ULAW_CLIP: i32 = 8159;

/// Samples in `ptime_ms` at 8000 Hz.
fn samples_for(ptime_ms: u32) -> usize {
    (G711_SAMPLE_RATE / 1000 * ptime_ms) as usize
}

/// The linear value of μ-law `code`: with the code inverted, segment `e` and step `m`
/// decode to ±((2m + 33) · 2^e − 33) in 14-bit units, times 4 for 16 bits.
const fn ulaw_expand(code: u8) -> i16 {
    let v = !code;
    let segment = ((v >> 4) & 0x07) as i32;
    let step = (v & 0x0F) as i32;
    let magnitude = (((2 * step + 33) << segment) - 33) * 4;
    if v & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// The linear value of A-law `code`: with the even bits restored, segment 0 step `m` decodes
/// to ±(2m + 1) and segment `e` ≥ 1 to ±(2m + 33) · 2^(e−1), in 13-bit units, times 8.
const fn alaw_expand(code: u8) -> i16 {
    let v = code ^ 0x55;
    let segment = ((v >> 4) & 0x07) as i32;
    let step = (v & 0x0F) as i32;
    let magnitude = if segment == 0 {
        2 * step + 1
    } else {
        (2 * step + 33) << (segment - 1)
    } * 8;
    if v & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn ulaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        // invariant: code < 256, the table's length (and this runs at compile time).
        table[code] = ulaw_expand(code as u8);
        code += 1;
    }
    table
}

const fn alaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        // invariant: code < 256, the table's length (and this runs at compile time).
        table[code] = alaw_expand(code as u8);
        code += 1;
    }
    table
}

const fn ulaw_encode_table() -> [u8; 1 << 14] {
    let mut table = [0u8; 1 << 14];
    let mut i = 0;
    while i < 1 << 14 {
        // invariant: i < 16384, the table's length; (i - 8192) << 2 is a 16-bit sample whose
        // 14 significant bits are i - 8192 (this runs at compile time).
        table[i] = ulaw_compress(((i as i32 - 8192) << 2) as i16);
        i += 1;
    }
    table
}

const fn alaw_encode_table() -> [u8; 1 << 13] {
    let mut table = [0u8; 1 << 13];
    let mut i = 0;
    while i < 1 << 13 {
        // invariant: i < 8192, the table's length; (i - 4096) << 3 is a 16-bit sample whose
        // 13 significant bits are i - 4096 (this runs at compile time).
        table[i] = alaw_compress(((i as i32 - 4096) << 3) as i16);
        i += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_tables_match_the_computation_for_every_sample() {
        for pcm in i16::MIN..=i16::MAX {
            assert_eq!(ulaw_encode(pcm), ulaw_compress(pcm), "μ-law {pcm}");
            assert_eq!(alaw_encode(pcm), alaw_compress(pcm), "A-law {pcm}");
        }
    }

    #[test]
    fn reference_pairs() {
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
    }

    #[test]
    fn encoders_and_decoders_append() {
        let mut enc = PcmuEncoder::new(20);
        assert_eq!(enc.frame_samples(), 160);
        let mut bytes = vec![0x42];
        enc.encode(&[0, 32124, -32124], &mut bytes).unwrap();
        assert_eq!(bytes, [0x42, 0xFF, 0x80, 0x00]);
        let mut pcm = vec![7];
        PcmuDecoder::new().decode(&bytes[1..], &mut pcm).unwrap();
        assert_eq!(pcm, [7, 0, 32124, -32124]);

        let mut enc = PcmaEncoder::new(30);
        assert_eq!(enc.frame_samples(), 240);
        let mut bytes = Vec::new();
        enc.encode(&[8, -8, 32256], &mut bytes).unwrap();
        assert_eq!(bytes, [0xD5, 0x55, 0xAA]);
        let mut pcm = Vec::new();
        let mut dec = PcmaDecoder::new();
        dec.decode(&bytes, &mut pcm).unwrap();
        assert_eq!(pcm, [8, -8, 32256]);
        assert!(!dec.decode_fec(&bytes, 3, &mut pcm).unwrap());
        assert_eq!(pcm.len(), 3);
    }
}
