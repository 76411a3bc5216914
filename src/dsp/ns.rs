//! Noise suppression: WebRTC's noise suppressor (a Wiener filter on a noise estimate), from
//! `sonora`. RNNoise (`nnnoiseless`) was measured against it; see docs/dsp.md.

use sonora::config::{NoiseSuppression, NoiseSuppressionLevel};
use sonora::{AudioProcessing, Config};

use super::{DspError, blocks};

/// How hard the suppressor works (WebRTC's levels: about 6, 12, 18 and 21 dB of noise
/// reduction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsLevel {
    /// About 6 dB.
    Low,
    /// About 12 dB.
    Moderate,
    /// About 18 dB.
    High,
    /// About 21 dB.
    VeryHigh,
}

impl NsLevel {
    /// Parses a config value: `low`, `moderate`, `high` or `very_high`.
    pub fn parse(s: &str) -> Option<NsLevel> {
        Some(match s {
            "low" => NsLevel::Low,
            "moderate" => NsLevel::Moderate,
            "high" => NsLevel::High,
            "very_high" => NsLevel::VeryHigh,
            _ => return None,
        })
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NsLevel::Low => "low",
            NsLevel::Moderate => "moderate",
            NsLevel::High => "high",
            NsLevel::VeryHigh => "very_high",
        }
    }

    fn sonora(self) -> NoiseSuppressionLevel {
        match self {
            NsLevel::Low => NoiseSuppressionLevel::Low,
            NsLevel::Moderate => NoiseSuppressionLevel::Moderate,
            NsLevel::High => NoiseSuppressionLevel::High,
            NsLevel::VeryHigh => NoiseSuppressionLevel::VeryHigh,
        }
    }
}

/// One call's noise suppressor.
pub struct NoiseSuppressor {
    apm: AudioProcessing,
    block: usize,
    input: Vec<i16>,
}

impl std::fmt::Debug for NoiseSuppressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseSuppressor")
            .field("block", &self.block)
            .finish_non_exhaustive()
    }
}

impl NoiseSuppressor {
    /// A suppressor for mono audio at `rate` in frames of `frame_samples`.
    pub fn new(rate: u32, frame_samples: usize, level: NsLevel) -> Result<Self, DspError> {
        let (block, _) = blocks(rate, frame_samples)?;
        let config = Config {
            noise_suppression: Some(NoiseSuppression {
                level: level.sonora(),
                analyze_linear_aec_output_when_available: false,
            }),
            ..Config::default()
        };
        let apm = super::audio_processing(rate, config);
        Ok(NoiseSuppressor {
            apm,
            block,
            input: vec![0; block],
        })
    }

    /// Suppresses the noise in `frame`, in place.
    pub fn process(&mut self, frame: &mut [i16]) -> Result<(), DspError> {
        if !frame.len().is_multiple_of(self.block) {
            return Err(DspError::Length {
                expected: frame.len() - frame.len() % self.block,
                got: frame.len(),
            });
        }
        for c in frame.chunks_exact_mut(self.block) {
            super::capture_block(&mut self.apm, &mut self.input, c)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::chain::testsig::{Lcg, energy, speechlike, white};

    #[test]
    fn white_noise_is_reduced_and_speech_kept() {
        let mut rng = Lcg(3);
        let noise = white(&mut rng, 8000 * 4, 300.0);
        let mut ns = NoiseSuppressor::new(8000, 160, NsLevel::Moderate).expect("ns");
        let mut out = noise.clone();
        for f in out.chunks_exact_mut(160) {
            ns.process(f).expect("process");
        }
        let from = 8000 * 2;
        let reduction = 10.0 * (energy(&noise[from..]) / energy(&out[from..]).max(1.0)).log10();
        assert!(reduction >= 6.0, "noise reduced by {reduction:.1} dB only");

        // Loud speech-like bursts keep most of their energy.
        let speech = speechlike(&mut rng, 8000 * 4);
        let mut out = speech.clone();
        let mut ns = NoiseSuppressor::new(8000, 160, NsLevel::Moderate).expect("ns");
        for f in out.chunks_exact_mut(160) {
            ns.process(f).expect("process");
        }
        let loss = 10.0 * (energy(&speech[from..]) / energy(&out[from..]).max(1.0)).log10();
        assert!(loss <= 3.0, "speech attenuated by {loss:.1} dB");
    }

    #[test]
    fn levels_parse() {
        for l in [
            NsLevel::Low,
            NsLevel::Moderate,
            NsLevel::High,
            NsLevel::VeryHigh,
        ] {
            assert_eq!(NsLevel::parse(l.as_str()), Some(l));
        }
        assert_eq!(NsLevel::parse("max"), None);
    }
}
