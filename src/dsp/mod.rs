//! DSP building blocks: WAV files, resampling, and the caller's voice chain ([`chain`]):
//! echo cancellation against voxline's own output ([`aec`]), noise suppression ([`ns`]),
//! voice activity detection ([`vad`]) and the speech turns taken from it ([`speech`]), with
//! echo leaking through the canceller told from the caller ([`leak`]).
//!
//! Like `sip`, `sdp` and `media`, this module touches no socket and reads no clock: every
//! entry point takes `now`, and the CPU time of each stage is measured with a
//! [`StageClock`] the caller provides.

pub mod aec;
pub mod chain;
pub mod leak;
pub mod ns;
pub mod resample;
pub mod speech;
pub mod vad;
pub mod wav;

use std::time::Instant;

/// The sample rates the voice chain runs at (those of WebRTC's audio processing module).
pub const CHAIN_RATES: [u32; 4] = [8000, 16_000, 32_000, 48_000];
/// The chain's processing block: 10 ms (WebRTC's audio processing module works in 10 ms
/// frames; a 20 ms call frame is two blocks).
pub const BLOCK_MS: u32 = 10;

/// A clock to time the chain's stages with (their CPU cost per call). The runtime gives the
/// monotonic clock; tests give a fake one.
pub trait StageClock {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// Errors of the voice chain's stages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DspError {
    /// The call's sample rate is not one the chain runs at ([`CHAIN_RATES`]).
    #[error("{0} Hz is not a rate the voice chain runs at (8000, 16000, 32000 or 48000 Hz)")]
    UnsupportedRate(u32),
    /// The call's frame is not a whole number of 10 ms blocks.
    #[error("a frame of {samples} samples at {rate} Hz is not a whole number of 10 ms blocks")]
    FrameSize {
        /// Samples in a frame.
        samples: usize,
        /// The rate.
        rate: u32,
    },
    /// The reference and capture frames differ in length, or are not the chain's frame.
    #[error("frame of {got} samples where the chain expects {expected}")]
    Length {
        /// The chain's frame length.
        expected: usize,
        /// What was given.
        got: usize,
    },
    /// The audio processing module refused a block.
    #[error("audio processing failed: {0}")]
    Processing(String),
}

/// Samples in one [`BLOCK_MS`] block at `rate`, and the number of blocks in a frame of
/// `frame_samples`: an error unless `rate` is in [`CHAIN_RATES`] and the frame is a whole
/// number of blocks.
pub fn blocks(rate: u32, frame_samples: usize) -> Result<(usize, usize), DspError> {
    if !CHAIN_RATES.contains(&rate) {
        return Err(DspError::UnsupportedRate(rate));
    }
    let block = (rate / 1000 * BLOCK_MS) as usize;
    if frame_samples == 0 || !frame_samples.is_multiple_of(block) {
        return Err(DspError::FrameSize {
            samples: frame_samples,
            rate,
        });
    }
    Ok((block, frame_samples / block))
}

/// WebRTC's audio processing module (sonora) for mono audio at `rate`, with `config`: the
/// echo canceller and the noise suppressor are each one of these.
fn audio_processing(rate: u32, config: sonora::Config) -> sonora::AudioProcessing {
    sonora::AudioProcessing::builder()
        .config(config)
        .capture_config(sonora::StreamConfig::new(rate, 1))
        .render_config(sonora::StreamConfig::new(rate, 1))
        .build()
}

/// Runs one capture `block` through `apm`, in place (`input` is the copy the API reads from:
/// it takes separate input and output buffers).
fn capture_block(
    apm: &mut sonora::AudioProcessing,
    input: &mut [i16],
    block: &mut [i16],
) -> Result<(), DspError> {
    input.copy_from_slice(block);
    apm.process_capture_i16(input, block)
        .map_err(|e| DspError::Processing(format!("{e:?}")))
}
