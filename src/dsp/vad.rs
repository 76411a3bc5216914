//! Voice activity detection: `earshot`, a small pure-Rust network on mel features of 16 ms
//! blocks at 16 kHz (the weights are in the crate). An 8 kHz call is resampled to 16 kHz for
//! it (rubato, [`super::resample`]); a 16 kHz call goes straight in. It gives a speech
//! probability per block; [`super::speech`] turns probabilities into speech turns.
//!
//! Chosen over WebRTC's RNN VAD (sonora-agc2, used before) and RNNoise's voice probability
//! by the measurements in docs/dsp.md ("Candidates"): it finds the most speech frames (98 %
//! against 88 and 92 %) for a quarter and a tenth of their CPU. Like them it takes some
//! steady noises for speech (white noise at -30 dBFS); [`super::speech`] does not trust the
//! VAD alone for that reason.

use earshot::{DefaultPredictor, Detector};

use super::resample::Resampler;
use super::{DspError, blocks};

/// The rate earshot works at.
pub const VAD_RATE: u32 = 16_000;
/// Samples in one of earshot's blocks (16 ms at 16 kHz).
pub const VAD_BLOCK: usize = 256;

/// One call's VAD.
pub struct Vad {
    detector: Box<Detector<DefaultPredictor>>,
    /// From the call's rate to [`VAD_RATE`] (`None` at 16 kHz).
    resampler: Option<Resampler>,
    /// Samples at [`VAD_RATE`] not yet in a block.
    pending: Vec<i16>,
    block: usize,
    /// The probability of the last block.
    last: f32,
}

impl std::fmt::Debug for Vad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vad")
            .field("block", &self.block)
            .field("resampled", &self.resampler.is_some())
            .finish_non_exhaustive()
    }
}

impl Vad {
    /// A VAD for mono audio at `rate` in frames of `frame_samples`.
    pub fn new(rate: u32, frame_samples: usize) -> Result<Vad, DspError> {
        let (block, _) = blocks(rate, frame_samples)?;
        let resampler = if rate == VAD_RATE {
            None
        } else {
            Some(Resampler::new(rate, VAD_RATE).map_err(|e| DspError::Processing(e.to_string()))?)
        };
        Ok(Vad {
            detector: Detector::default_boxed(),
            resampler,
            pending: Vec::with_capacity(4 * VAD_BLOCK),
            block,
            last: 0.0,
        })
    }

    /// The speech probability of `frame` (0–1): the highest of the blocks that ended in it,
    /// so that an onset late in the frame counts in this frame (a frame in which no block
    /// ended keeps the last block's).
    pub fn process(&mut self, frame: &[i16]) -> Result<f32, DspError> {
        if !frame.len().is_multiple_of(self.block) || frame.is_empty() {
            return Err(DspError::Length {
                expected: self.block * (frame.len() / self.block).max(1),
                got: frame.len(),
            });
        }
        match &mut self.resampler {
            Some(r) => r
                .process(frame, &mut self.pending)
                .map_err(|e| DspError::Processing(e.to_string()))?,
            None => self.pending.extend_from_slice(frame),
        }
        let mut best: Option<f32> = None;
        let mut used = 0;
        while self.pending.len() - used >= VAD_BLOCK {
            let p = self
                .detector
                .predict_i16(&self.pending[used..used + VAD_BLOCK]);
            best = Some(best.map_or(p, |b| b.max(p)));
            used += VAD_BLOCK;
        }
        self.pending.drain(..used);
        if let Some(b) = best {
            self.last = b;
        }
        Ok(self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::chain::testsig::{Lcg, white};
    use crate::dsp::speech::{SpeechConfig, SpeechDetector};

    #[test]
    fn silence_and_line_noise_are_not_speech_and_loud_steady_noise_never_starts_speech() {
        let mut vad = Vad::new(8000, 160).expect("vad");
        for f in vec![0i16; 8000].chunks_exact(160) {
            assert!(vad.process(f).expect("vad") < 0.5);
        }
        // Line hiss at -41 dBFS: isolated frames at most. (After digital silence earshot
        // takes even this for speech for as long as it lasts; the chain never gives it frames
        // quieter than -55 dBFS, see `chain`.)
        let mut vad = Vad::new(8000, 160).expect("vad");
        let mut rng = Lcg(11);
        let noise = white(&mut rng, 8000 * 2, 300.0);
        let probs: Vec<f32> = noise
            .chunks_exact(160)
            .map(|f| vad.process(f).expect("vad"))
            .collect();
        let speechy = probs.iter().filter(|p| **p >= 0.5).count();
        assert!(
            speechy <= 10,
            "{speechy} of 100 white-noise frames taken for speech: {probs:?}"
        );
        // At -30 dBFS earshot takes white noise for speech (docs/dsp.md, "Candidates"); at a
        // steady level it never rises above the noise floor, so speech never starts.
        let noise = white(&mut rng, 8000 * 4, 1000.0);
        let mut detector = SpeechDetector::new(SpeechConfig::default());
        let t0 = std::time::Instant::now();
        let f = std::time::Duration::from_millis(20);
        for (i, frame) in noise.chunks_exact(160).enumerate() {
            let p = vad.process(frame).expect("vad");
            let level = crate::dsp::speech::level_dbfs(frame);
            assert_eq!(
                detector.handle_frame(t0 + f * i as u32, f, p, level),
                None,
                "frame {i}: p {p}, {level} dBFS"
            );
        }
    }
}
