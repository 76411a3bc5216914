//! G.711 passthrough helpers: which companding law a call uses, and byte/PCM conversion.

use crate::media::codec::g711::{alaw_decode, alaw_encode, ulaw_decode, ulaw_encode};
use crate::sdp::Codec;

/// The G.711 law of a call whose audio can pass through as bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Law {
    /// PCMU.
    Ulaw,
    /// PCMA.
    Alaw,
}

impl Law {
    /// The law of `codec`, `None` for codecs that are not G.711.
    pub fn of(codec: Codec) -> Option<Self> {
        match codec {
            Codec::Pcmu => Some(Self::Ulaw),
            Codec::Pcma => Some(Self::Alaw),
            _ => None,
        }
    }

    /// Compresses one sample.
    pub fn encode(self, pcm: i16) -> u8 {
        match self {
            Self::Ulaw => ulaw_encode(pcm),
            Self::Alaw => alaw_encode(pcm),
        }
    }

    /// Expands one code.
    pub fn decode(self, code: u8) -> i16 {
        match self {
            Self::Ulaw => ulaw_decode(code),
            Self::Alaw => alaw_decode(code),
        }
    }

    /// Appends the compression of `pcm` to `out` (the law chosen once, not per sample).
    pub fn encode_into<E: Extend<u8>>(self, pcm: &[i16], out: &mut E) {
        match self {
            Self::Ulaw => out.extend(pcm.iter().map(|&s| ulaw_encode(s))),
            Self::Alaw => out.extend(pcm.iter().map(|&s| alaw_encode(s))),
        }
    }

    /// Expands `codes` into `out`, sample for code (as far as both reach).
    pub fn decode_into(self, codes: &[u8], out: &mut [i16]) {
        let pairs = out.iter_mut().zip(codes);
        match self {
            Self::Ulaw => pairs.for_each(|(d, &c)| *d = ulaw_decode(c)),
            Self::Alaw => pairs.for_each(|(d, &c)| *d = alaw_decode(c)),
        }
    }

    /// The code of digital silence (PCM 0): 0xFF for μ-law, 0xD5 for A-law.
    pub fn silence(self) -> u8 {
        self.encode(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laws_and_silence() {
        assert_eq!(Law::of(Codec::Pcmu), Some(Law::Ulaw));
        assert_eq!(Law::of(Codec::Pcma), Some(Law::Alaw));
        assert_eq!(Law::of(Codec::G722), None);
        assert_eq!(Law::of(Codec::Opus), None);
        assert_eq!(Law::Ulaw.silence(), 0xFF);
        assert_eq!(Law::Alaw.silence(), 0xD5);
        // μ-law 0x7F is "negative zero": it decodes to 0, which re-encodes as 0xFF.
        assert_eq!(Law::Ulaw.decode(0x7F), 0);
        assert_eq!(Law::Ulaw.encode(Law::Ulaw.decode(0x7F)), 0xFF);
    }
}
