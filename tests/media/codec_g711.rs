//! G.711 PCMU/PCMA against reference values: known code/value pairs from G.711, the classic
//! Sun Microsystems `g711.c` (re-written below, independently of voxline's table-driven code)
//! for every code and every 16-bit input, and the codec's structural properties.

use voxline::media::codec::g711::{
    ALAW_DECODE_TABLE, ULAW_DECODE_TABLE, alaw_decode, alaw_encode, ulaw_decode, ulaw_encode,
};
use voxline::media::codec::{AudioDecoder, AudioEncoder, PcmaDecoder, PcmuEncoder};

/// The Sun `g711.c` reference (public domain, Sun Microsystems 1990s), as written there:
/// segment search over the segment end points, bias added before the search for μ-law.
mod sun {
    const SIGN_BIT: i32 = 0x80;
    const QUANT_MASK: i32 = 0x0F;
    const SEG_SHIFT: i32 = 4;
    const SEG_MASK: i32 = 0x70;
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 8159;
    const SEG_AEND: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    const SEG_UEND: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];

    fn search(val: i32, table: &[i32; 8]) -> i32 {
        for (i, &end) in table.iter().enumerate() {
            if val <= end {
                return i as i32;
            }
        }
        8
    }

    pub fn linear2alaw(pcm: i16) -> u8 {
        let mut pcm_val = i32::from(pcm) >> 3;
        let mask;
        if pcm_val >= 0 {
            mask = 0xD5;
        } else {
            mask = 0x55;
            pcm_val = -pcm_val - 1;
        }
        let seg = search(pcm_val, &SEG_AEND);
        if seg >= 8 {
            return (0x7F ^ mask) as u8;
        }
        let mut aval = seg << SEG_SHIFT;
        if seg < 2 {
            aval |= (pcm_val >> 1) & QUANT_MASK;
        } else {
            aval |= (pcm_val >> seg) & QUANT_MASK;
        }
        (aval ^ mask) as u8
    }

    pub fn alaw2linear(a_val: u8) -> i16 {
        let a_val = i32::from(a_val) ^ 0x55;
        let mut t = (a_val & QUANT_MASK) << 4;
        let seg = (a_val & SEG_MASK) >> SEG_SHIFT;
        match seg {
            0 => t += 8,
            1 => t += 0x108,
            _ => {
                t += 0x108;
                t <<= seg - 1;
            }
        }
        (if a_val & SIGN_BIT != 0 { t } else { -t }) as i16
    }

    pub fn linear2ulaw(pcm: i16) -> u8 {
        let mut pcm_val = i32::from(pcm) >> 2;
        let mask;
        if pcm_val < 0 {
            pcm_val = -pcm_val;
            mask = 0x7F;
        } else {
            mask = 0xFF;
        }
        if pcm_val > CLIP {
            pcm_val = CLIP;
        }
        pcm_val += BIAS >> 2;
        let seg = search(pcm_val, &SEG_UEND);
        if seg >= 8 {
            return (0x7F ^ mask) as u8;
        }
        let uval = (seg << 4) | ((pcm_val >> (seg + 1)) & 0xF);
        (uval ^ mask) as u8
    }

    pub fn ulaw2linear(u_val: u8) -> i16 {
        let u_val = !i32::from(u_val) & 0xFF;
        let mut t = ((u_val & QUANT_MASK) << 3) + BIAS;
        t <<= (u_val & SEG_MASK) >> SEG_SHIFT;
        (if u_val & SIGN_BIT != 0 {
            BIAS - t
        } else {
            t - BIAS
        }) as i16
    }
}

#[test]
fn ulaw_reference_pairs() {
    assert_eq!(ulaw_decode(0xFF), 0);
    assert_eq!(ulaw_decode(0x00), -32124);
    assert_eq!(ulaw_decode(0x80), 32124);
    // Negative zero, and the smallest steps either side of zero.
    assert_eq!(ulaw_decode(0x7F), 0);
    assert_eq!(ulaw_decode(0xFE), 8);
    assert_eq!(ulaw_decode(0x7E), -8);
    // The first and last steps of segment 7 and of segment 1.
    assert_eq!(ulaw_decode(0x8F), 16764);
    assert_eq!(ulaw_decode(0xEF), 132);
    assert_eq!(ulaw_encode(0), 0xFF);
    assert_eq!(ulaw_encode(32124), 0x80);
    assert_eq!(ulaw_encode(-32124), 0x00);
    assert_eq!(ulaw_encode(i16::MAX), 0x80);
    assert_eq!(ulaw_encode(i16::MIN), 0x00);
}

#[test]
fn alaw_reference_pairs() {
    assert_eq!(alaw_decode(0xD5), 8);
    assert_eq!(alaw_decode(0x55), -8);
    assert_eq!(alaw_decode(0xAA), 32256);
    assert_eq!(alaw_decode(0x2A), -32256);
    assert_eq!(alaw_decode(0xD4), 24);
    assert_eq!(alaw_decode(0xC5), 264);
    assert_eq!(alaw_encode(0), 0xD5);
    assert_eq!(alaw_encode(-1), 0x55);
    assert_eq!(alaw_encode(32256), 0xAA);
    assert_eq!(alaw_encode(-32256), 0x2A);
    assert_eq!(alaw_encode(i16::MAX), 0xAA);
    assert_eq!(alaw_encode(i16::MIN), 0x2A);
}

#[test]
fn decode_tables_match_sun_reference() {
    for code in 0..=255u8 {
        assert_eq!(
            ULAW_DECODE_TABLE[usize::from(code)],
            sun::ulaw2linear(code),
            "u-law code {code:#04x}"
        );
        assert_eq!(ulaw_decode(code), sun::ulaw2linear(code));
        assert_eq!(
            ALAW_DECODE_TABLE[usize::from(code)],
            sun::alaw2linear(code),
            "A-law code {code:#04x}"
        );
        assert_eq!(alaw_decode(code), sun::alaw2linear(code));
    }
}

#[test]
fn encoders_match_sun_reference_for_every_input() {
    for pcm in i16::MIN..=i16::MAX {
        assert_eq!(ulaw_encode(pcm), sun::linear2ulaw(pcm), "u-law of {pcm}");
        assert_eq!(alaw_encode(pcm), sun::linear2alaw(pcm), "A-law of {pcm}");
    }
}

#[test]
fn reencoding_a_decoded_code_is_stable() {
    for code in 0..=255u8 {
        let u = ulaw_decode(code);
        assert_eq!(ulaw_decode(ulaw_encode(u)), u, "u-law code {code:#04x}");
        let a = alaw_decode(code);
        assert_eq!(alaw_decode(alaw_encode(a)), a, "A-law code {code:#04x}");
        // A-law has no negative zero, so every code is its own fixed point.
        assert_eq!(alaw_encode(a), code);
    }
    // μ-law has two zeros (0xFF and 0x7F); every other code is a fixed point.
    for code in (0..=255u8).filter(|&c| c != 0x7F) {
        assert_eq!(
            ulaw_encode(ulaw_decode(code)),
            code,
            "u-law code {code:#04x}"
        );
    }
}

#[test]
fn quantisation_is_monotonic_and_symmetric() {
    let mut last_u = i32::MIN;
    let mut last_a = i32::MIN;
    for pcm in i16::MIN..=i16::MAX {
        let u = i32::from(ulaw_decode(ulaw_encode(pcm)));
        let a = i32::from(alaw_decode(alaw_encode(pcm)));
        assert!(u >= last_u, "u-law not monotonic at {pcm}");
        assert!(a >= last_a, "A-law not monotonic at {pcm}");
        last_u = u;
        last_a = a;
    }
    // Decoded values, sorted by their linear value, rise strictly within each sign.
    let mut u: Vec<i16> = ULAW_DECODE_TABLE.to_vec();
    u.sort_unstable();
    u.dedup();
    assert_eq!(u.len(), 255); // 256 codes, two of them zero
    let mut a: Vec<i16> = ALAW_DECODE_TABLE.to_vec();
    a.sort_unstable();
    a.dedup();
    assert_eq!(a.len(), 256);
    for code in 0..=127u8 {
        assert_eq!(ulaw_decode(code), -ulaw_decode(code | 0x80));
        assert_eq!(alaw_decode(code), -alaw_decode(code | 0x80));
    }
}

#[test]
fn quantisation_error_is_below_one_step() {
    // The step of a μ-law code in segment e is 8 << e and of an A-law code 16 << max(e - 1, 0)
    // (16-bit units). Encoding truncates, so the error stays below one step of the code chosen.
    for pcm in -32000i16..=32000 {
        let code = ulaw_encode(pcm);
        let step = 8 << ((!code >> 4) & 7);
        let err = (i32::from(ulaw_decode(code)) - i32::from(pcm)).abs();
        assert!(err < step, "u-law error {err} at {pcm}, step {step}");

        let code = alaw_encode(pcm);
        let segment = ((code ^ 0x55) >> 4) & 7;
        let step = 16 << segment.saturating_sub(1);
        let err = (i32::from(alaw_decode(code)) - i32::from(pcm)).abs();
        assert!(err < step, "A-law error {err} at {pcm}, step {step}");
    }
}

#[test]
fn codec_objects_use_the_tables() {
    let pcm: Vec<i16> = (0..160)
        .map(|i| ((i * 409) % 65536 - 32768) as i16)
        .collect();
    let mut enc = PcmuEncoder::new(20);
    let mut payload = Vec::new();
    enc.encode(&pcm, &mut payload).unwrap();
    let expected: Vec<u8> = pcm.iter().map(|&s| sun::linear2ulaw(s)).collect();
    assert_eq!(payload, expected);

    let codes: Vec<u8> = (0..=255).collect();
    let mut dec = PcmaDecoder::new();
    let mut out = Vec::with_capacity(256);
    dec.decode(&codes, &mut out).unwrap();
    let expected: Vec<i16> = codes.iter().map(|&c| sun::alaw2linear(c)).collect();
    assert_eq!(out, expected);
}
