//! DSP building blocks: WAV, resampling (and later noise suppression, echo cancellation, VAD).

pub mod resample;
pub mod wav;
