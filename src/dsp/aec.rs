//! Echo cancellation against voxline's own output: WebRTC's AEC3, from `sonora` (a pure-Rust
//! port of WebRTC's audio processing module).
//!
//! The reference (render) is exactly what voxline sent in a frame tick, as the far end
//! decodes it; the capture is the caller's frame of the same tick, after the jitter buffer.
//! AEC3 finds the bulk delay between them itself (its matched filters cover 0–500 ms and
//! more, see docs/dsp.md), adapts a linear filter to the echo path, and suppresses what the
//! filter leaves. It re-finds the delay and re-adapts when the path changes mid-call (a
//! transfer, a handset switched to speaker).
//!
//! AEC3 works at 16 kHz and more: for an 8 kHz call the module resamples the reference and
//! the capture to 16 kHz and back itself (its own resampler), so the chain hands it the
//! call's frames as they are.

use sonora::config::EchoCanceller as Aec3;
use sonora::{AudioProcessing, Config};

use super::{DspError, blocks};

/// A reference block quieter than this (dBFS) is silence (the agent is not talking).
pub const SILENT_REFERENCE_DBFS: f32 = -60.0;
/// After this long of silent reference there is no echo left to cancel (the longest delay
/// AEC3 covers, about 500 ms, plus the echo tail, with a margin: 800 ms measured slightly
/// worse on barge-in timing, docs/dsp.md), and the canceller rests: blocks go
/// through untouched and AEC3 is not called, until the reference has sound again. AEC3
/// sees the rest as no time at all: the render and capture it is given stay paired, and its
/// render history at the restart is the silence that led into the rest, as it would have
/// been. This is most of the canceller's cost on a call where the caller talks half the time.
pub const REST_AFTER_MS: u32 = 1200;

/// What the echo canceller reports about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AecMetrics {
    /// The echo return loss enhancement AEC3 estimates, in dB (`None` before it knows).
    pub erle_db: Option<f64>,
    /// The echo path's bulk delay AEC3 found, in ms (`None` before it found one).
    pub delay_ms: Option<i32>,
    /// Blocks the canceller rested through (the agent silent for [`REST_AFTER_MS`]).
    pub rested_blocks: u64,
}

/// One call's echo canceller.
pub struct EchoCanceller {
    apm: AudioProcessing,
    block: usize,
    /// The render path's output (AEC3 leaves the reference untouched; required by the API).
    render_out: Vec<i16>,
    /// The capture block's input (the API reads and writes different buffers).
    capture_in: Vec<i16>,
    /// Samples of silent reference in a row.
    quiet: usize,
    /// [`REST_AFTER_MS`] in samples.
    rest_after: usize,
    /// Blocks that were not processed (resting).
    rested: u64,
}

impl std::fmt::Debug for EchoCanceller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoCanceller")
            .field("block", &self.block)
            .finish_non_exhaustive()
    }
}

impl EchoCanceller {
    /// An echo canceller for mono audio at `rate`, fed frames of `frame_samples`.
    pub fn new(rate: u32, frame_samples: usize) -> Result<EchoCanceller, DspError> {
        let (block, _) = blocks(rate, frame_samples)?;
        let config = Config {
            echo_canceller: Some(Aec3::default()),
            ..Config::default()
        };
        let apm = super::audio_processing(rate, config);
        Ok(EchoCanceller {
            apm,
            block,
            render_out: vec![0; block],
            capture_in: vec![0; block],
            quiet: 0,
            rest_after: (rate / 1000 * REST_AFTER_MS) as usize,
            rested: 0,
        })
    }

    /// Removes the echo of `reference` (the audio sent in this tick) from `capture` (the
    /// caller's audio of this tick), in place. Both are one frame long.
    pub fn process(&mut self, reference: &[i16], capture: &mut [i16]) -> Result<(), DspError> {
        if reference.len() != capture.len() || !capture.len().is_multiple_of(self.block) {
            return Err(DspError::Length {
                expected: capture.len() - capture.len() % self.block,
                got: reference.len(),
            });
        }
        for (r, c) in reference
            .chunks_exact(self.block)
            .zip(capture.chunks_exact_mut(self.block))
        {
            if super::speech::level_dbfs(r) < SILENT_REFERENCE_DBFS {
                self.quiet = self.quiet.saturating_add(r.len());
            } else {
                self.quiet = 0;
            }
            if self.quiet > self.rest_after {
                self.rested += 1;
                continue;
            }
            self.apm
                .process_render_i16(r, &mut self.render_out)
                .map_err(|e| DspError::Processing(format!("{e:?}")))?;
            super::capture_block(&mut self.apm, &mut self.capture_in, c)?;
        }
        Ok(())
    }

    /// The canceller's own estimates.
    pub fn metrics(&self) -> AecMetrics {
        let s = self.apm.statistics();
        AecMetrics {
            erle_db: s.echo_return_loss_enhancement,
            delay_ms: s.delay_ms,
            rested_blocks: self.rested,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::chain::testsig::{Lcg, energy, speechlike};

    /// Runs `far` through an echo path of `delay` samples and `gain`, plus `near`, and
    /// returns the canceller's output and the canceller.
    fn run(far: &[i16], near: &[i16], delay: usize, gain: f32) -> (Vec<i16>, EchoCanceller) {
        let mut aec = EchoCanceller::new(8000, 160).expect("aec");
        let mut out = Vec::new();
        for (k, f) in far.chunks_exact(160).enumerate() {
            let mut cap: Vec<i16> = (0..160)
                .map(|i| {
                    let n = k * 160 + i;
                    let echo = if n >= delay {
                        far[n - delay] as f32 * gain
                    } else {
                        0.0
                    };
                    (echo + near[n] as f32).clamp(-32768.0, 32767.0) as i16
                })
                .collect();
            aec.process(f, &mut cap).expect("process");
            out.extend_from_slice(&cap);
        }
        (out, aec)
    }

    /// The ERLE (dB) of `out` from sample `from` on, against the echo of `far` through
    /// `delay` and `gain`.
    fn erle_from(far: &[i16], out: &[i16], delay: usize, gain: f32, from: usize) -> f64 {
        let echo: Vec<i16> = (from..far.len())
            .map(|n| (f32::from(far[n - delay]) * gain) as i16)
            .collect();
        10.0 * (energy(&echo) / energy(&out[from..]).max(1.0)).log10()
    }

    #[test]
    fn cancels_a_delayed_linear_echo_by_more_than_25_db_after_two_seconds() {
        let mut rng = Lcg(7);
        let far = speechlike(&mut rng, 8000 * 8);
        let silence = vec![0i16; far.len()];
        for delay_ms in [50, 200, 400] {
            let delay = delay_ms * 8;
            let (out, _) = run(&far, &silence, delay, 0.3);
            // Echo energy and residue from 2 s on.
            let erle = erle_from(&far, &out, delay, 0.3, 2 * 8000);
            assert!(erle >= 25.0, "delay {delay_ms} ms: ERLE {erle:.1} dB");
        }
    }

    #[test]
    fn resting_through_a_long_silence_keeps_the_echo_cancelled_after_it() {
        let mut rng = Lcg(8);
        // 6 s of agent audio, 4 s of silence, 4 s of agent audio again.
        let mut far = speechlike(&mut rng, 8000 * 6);
        far.extend(std::iter::repeat_n(0i16, 8000 * 4));
        far.extend(speechlike(&mut rng, 8000 * 4));
        let silence = vec![0i16; far.len()];
        let delay = 200 * 8;
        let (out, aec) = run(&far, &silence, delay, 0.3);
        // It rested through most of the silence: 4 s (and the last pause of the speech
        // before it, up to 250 ms) less the 1.2 s before resting.
        let rested = aec.metrics().rested_blocks;
        assert!(
            (270..=310).contains(&rested),
            "rested {rested} blocks of 10 ms"
        );
        // The echo after the rest is cancelled from its first second on.
        let erle = erle_from(&far, &out, delay, 0.3, 8000 * 10);
        assert!(erle >= 25.0, "ERLE after the rest {erle:.1} dB");
    }

    #[test]
    fn mismatched_frames_are_an_error() {
        let mut aec = EchoCanceller::new(8000, 160).expect("aec");
        let mut cap = vec![0i16; 160];
        assert!(matches!(
            aec.process(&[0; 80], &mut cap),
            Err(DspError::Length { .. })
        ));
        assert!(matches!(
            EchoCanceller::new(11_025, 110),
            Err(DspError::UnsupportedRate(11_025))
        ));
        assert!(matches!(
            EchoCanceller::new(8000, 100),
            Err(DspError::FrameSize { .. })
        ));
    }
}
