//! Voice activity detection: WebRTC's RNN VAD (the one its AGC2 uses: a small recurrent
//! network on pitch and spectral features at 24 kHz), from `sonora-agc2`. It gives a speech
//! probability per 10 ms block; [`super::speech`] turns probabilities into speech turns.

use sonora_agc2::vad_wrapper::VoiceActivityDetectorWrapper;

use super::{DspError, blocks};

/// WebRTC resets this VAD every 1.5 s (for gain control, where a stale state costs little);
/// voxline never resets it: a reset mid-word makes the probability dip and would end a turn.
const NO_RESET_MS: i32 = 10 * (i32::MAX / 10);

/// One call's VAD.
pub struct Vad {
    vad: VoiceActivityDetectorWrapper,
    block: usize,
    input: Vec<f32>,
}

impl std::fmt::Debug for Vad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vad")
            .field("block", &self.block)
            .finish_non_exhaustive()
    }
}

impl Vad {
    /// A VAD for mono audio at `rate` in frames of `frame_samples`.
    pub fn new(rate: u32, frame_samples: usize) -> Result<Vad, DspError> {
        let (block, _) = blocks(rate, frame_samples)?;
        let rate_hz = i32::try_from(rate).map_err(|_| DspError::UnsupportedRate(rate))?;
        Ok(Vad {
            vad: VoiceActivityDetectorWrapper::with_reset_period(
                NO_RESET_MS,
                sonora_simd::detect_backend(),
                rate_hz,
            ),
            block,
            input: vec![0.0; block],
        })
    }

    /// The speech probability of `frame` (0–1): the highest of its 10 ms blocks, so that an
    /// onset late in the frame counts in this frame.
    pub fn process(&mut self, frame: &[i16]) -> Result<f32, DspError> {
        if !frame.len().is_multiple_of(self.block) || frame.is_empty() {
            return Err(DspError::Length {
                expected: self.block * (frame.len() / self.block).max(1),
                got: frame.len(),
            });
        }
        let mut p = 0f32;
        for c in frame.chunks_exact(self.block) {
            // The RNN VAD works on samples in the 16-bit range, as floats.
            for (d, s) in self.input.iter_mut().zip(c) {
                *d = f32::from(*s);
            }
            p = p.max(self.vad.analyze(&self.input));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::chain::testsig::{Lcg, white};
    use crate::dsp::speech::{SpeechConfig, SpeechDetector};

    #[test]
    fn silence_and_noise_are_not_speech() {
        let mut vad = Vad::new(8000, 160).expect("vad");
        for f in vec![0i16; 8000].chunks_exact(160) {
            assert!(vad.process(f).expect("vad") < 0.5);
        }
        let mut rng = Lcg(11);
        let noise = white(&mut rng, 8000 * 2, 1000.0);
        let probs: Vec<f32> = noise
            .chunks_exact(160)
            .map(|f| vad.process(f).expect("vad"))
            .collect();
        // Isolated frames may pass 0.5; never a run long enough to start speech.
        let speechy = probs.iter().filter(|p| **p >= 0.5).count();
        assert!(
            speechy <= 10,
            "{speechy} of 100 white-noise frames taken for speech: {probs:?}"
        );
        let mut detector = SpeechDetector::new(SpeechConfig::default());
        let t0 = std::time::Instant::now();
        let f = std::time::Duration::from_millis(20);
        for (i, p) in probs.iter().enumerate() {
            assert_eq!(
                detector.handle_frame(t0 + f * i as u32, f, *p, -30.0),
                None,
                "{probs:?}"
            );
        }
    }
}
