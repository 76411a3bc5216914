//! The session's audio path: call-format audio to the wire format and back. G.711 passes
//! through as it is; PCM16 at a call rate other than 24 kHz is resampled both ways.

use bytes::Bytes;
use tracing::warn;

use crate::agent::backend::{AudioChunk, AudioFormat, BackendError};
use crate::dsp::resample::{ResampleError, Resampler};
use crate::dsp::wav::pcm16_from_le;

use super::PCM_RATE;

/// Converts one session's audio between the call's format and the wire's.
pub(super) struct AudioPath {
    call_format: AudioFormat,
    /// Call rate → 24 kHz, for PCM16 calls at another rate.
    up: Option<Resampler>,
    /// 24 kHz → call rate.
    down: Option<Resampler>,
}

impl AudioPath {
    /// The path for a call in `call_format`.
    pub(super) fn new(call_format: AudioFormat) -> Result<Self, BackendError> {
        let (up, down) = match call_format {
            AudioFormat::Pcm16 { rate } if rate != PCM_RATE => {
                let e = |e: ResampleError| BackendError::Config(e.to_string());
                (
                    Some(Resampler::new(rate, PCM_RATE).map_err(e)?),
                    Some(Resampler::new(PCM_RATE, rate).map_err(e)?),
                )
            }
            _ => (None, None),
        };
        Ok(Self {
            call_format,
            up,
            down,
        })
    }

    /// The call's audio format.
    pub(super) fn call_format(&self) -> AudioFormat {
        self.call_format
    }

    /// Forgets the audio in flight both ways (a new server session).
    pub(super) fn reset(&mut self) {
        if let Some(r) = &mut self.up {
            r.reset();
        }
        self.reset_down();
    }

    /// Forgets the agent's audio in flight (barge-in).
    pub(super) fn reset_down(&mut self) {
        if let Some(r) = &mut self.down {
            r.reset();
        }
    }

    /// Call-format bytes → wire bytes (resampled for PCM16 calls not at 24 kHz).
    pub(super) fn wire_bytes(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        let Some(up) = &mut self.up else {
            return Some(data.to_vec());
        };
        let mut out = Vec::new();
        if let Err(e) = up.process(&pcm16_from_le(data), &mut out) {
            warn!(error = %e, "realtime: resampling caller audio failed");
            return None;
        }
        (!out.is_empty()).then(|| pcm16_to_le(&out))
    }

    /// Wire bytes → a call-format chunk; `flush` ends the stream (end of an audio item).
    pub(super) fn call_chunk(&mut self, data: Vec<u8>, flush: bool) -> Option<AudioChunk> {
        let data = match &mut self.down {
            None => {
                if data.is_empty() {
                    return None;
                }
                data
            }
            Some(down) => {
                let mut out = Vec::new();
                let r = if flush {
                    down.flush(&mut out)
                } else {
                    down.process(&pcm16_from_le(&data), &mut out)
                };
                if let Err(e) = r {
                    warn!(error = %e, "realtime: resampling agent audio failed");
                    return None;
                }
                if out.is_empty() {
                    return None;
                }
                pcm16_to_le(&out)
            }
        };
        Some(AudioChunk {
            format: self.call_format,
            data: Bytes::from(data),
        })
    }
}

/// Samples as little-endian PCM16 bytes.
fn pcm16_to_le(samples: &[i16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * 2);
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}
