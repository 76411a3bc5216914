//! The play agent: plays a WAV file or a generated tone to the caller, then hangs up or
//! loops.
//!
//! A file must be PCM 16-bit, any number of channels (mixed down to mono by averaging) and
//! any sample rate (resampled to the call's rate with [`crate::dsp::resample`]). It is loaded,
//! mixed and resampled once, in [`Play::new`], which returns a [`PlayError`] naming the file
//! for anything wrong with it; playing never fails. Loading a long file takes a moment of CPU
//! and blocking I/O: construct the agent off the async runtime.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{AgentAction, FrameFormat, LocalAgent};
use crate::dsp::resample::{self, ResampleError};
use crate::dsp::wav::{self, WavError};

/// Largest WAV file [`Play::new`] loads (about 55 minutes of 16 kHz mono).
pub const MAX_FILE_BYTES: u64 = 100 * 1024 * 1024;

/// Sample value of a full-scale sine's peak: 0 dBFS.
pub const FULL_SCALE: f64 = 32767.0;

/// What to play.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaySpec {
    /// The sound.
    pub source: PlaySource,
    /// Start again at the end (forever) instead of hanging up.
    pub repeat: bool,
}

/// A sound to play.
#[derive(Debug, Clone, PartialEq)]
pub enum PlaySource {
    /// A PCM16 WAV file.
    File(PathBuf),
    /// A sine tone.
    Tone {
        /// Frequency in Hz, above 0 and below half the call's sample rate.
        hz: f64,
        /// Level in dBFS, at most 0. Full scale is a sine whose peak is [`FULL_SCALE`]
        /// (AES17), so the peak is `32767 * 10^(dbfs/20)` and the RMS that over sqrt(2).
        dbfs: f64,
        /// Length of one play (non-zero); a repeated tone plays without a break.
        duration: Duration,
    },
}

/// Why a [`Play`] agent could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlayError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("{}: {len} bytes is larger than the {MAX_FILE_BYTES}-byte limit", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// The file is not a usable WAV file (bad header, not PCM16).
    #[error("{}: {source}", path.display())]
    Wav {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: WavError,
    },
    /// The file holds no audio.
    #[error("{}: no audio in the data chunk", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file's rate cannot be converted to the call's.
    #[error("{}: {source}", path.display())]
    Resample {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ResampleError,
    },
    /// Tone parameters out of range.
    #[error("invalid tone: {0}")]
    Tone(String),
}

/// Plays a sound to the caller: see the module documentation.
#[derive(Debug, Clone)]
pub struct Play {
    sound: Sound,
    repeat: bool,
    frame: usize,
}

#[derive(Debug, Clone)]
enum Sound {
    /// A loaded file at the call's rate, mono, non-empty.
    Clip { samples: Vec<i16>, pos: usize },
    /// A sine generated on the fly.
    Tone {
        amplitude: f64,
        /// Phase advance per sample, radians.
        step: f64,
        phase: f64,
        /// Samples in one play.
        len: u64,
        /// Samples played in the current play.
        pos: u64,
    },
}

impl Play {
    /// Builds the agent for a call with `format`; loads, mixes down and resamples a file
    /// source.
    pub fn new(spec: &PlaySpec, format: FrameFormat) -> Result<Play, PlayError> {
        let sound = match &spec.source {
            PlaySource::File(path) => {
                let bytes = read_limited(path)?;
                return Play::from_wav_bytes(path, &bytes, spec.repeat, format);
            }
            PlaySource::Tone { hz, dbfs, duration } => {
                tone(*hz, *dbfs, *duration, format.sample_rate())?
            }
        };
        Ok(Play {
            sound,
            repeat: spec.repeat,
            frame: format.frame_samples(),
        })
    }

    /// Builds a file player from WAV bytes already in memory; `path` is only used in errors.
    pub fn from_wav_bytes(
        path: &Path,
        bytes: &[u8],
        repeat: bool,
        format: FrameFormat,
    ) -> Result<Play, PlayError> {
        let wav = wav::parse_pcm16(bytes).map_err(|source| PlayError::Wav {
            path: path.to_path_buf(),
            source,
        })?;
        let mono = wav::mix_to_mono(&wav.samples, wav.spec.channels());
        let samples = resample::resample_all(&mono, wav.spec.sample_rate(), format.sample_rate())
            .map_err(|source| PlayError::Resample {
            path: path.to_path_buf(),
            source,
        })?;
        if samples.is_empty() {
            return Err(PlayError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Play {
            sound: Sound::Clip { samples, pos: 0 },
            repeat,
            frame: format.frame_samples(),
        })
    }

    /// Samples in one play of the sound at the call's rate.
    pub fn len_samples(&self) -> u64 {
        match &self.sound {
            Sound::Clip { samples, .. } => samples.len() as u64,
            Sound::Tone { len, .. } => *len,
        }
    }

    /// Samples left before the end of the current play.
    fn remaining(&self) -> u64 {
        match &self.sound {
            Sound::Clip { samples, pos } => (samples.len() - *pos) as u64,
            Sound::Tone { len, pos, .. } => len - pos,
        }
    }

    /// Appends up to `n` samples of the current play (at most what remains).
    fn take(&mut self, n: usize, out: &mut Vec<i16>) -> usize {
        match &mut self.sound {
            Sound::Clip { samples, pos } => {
                let end = (*pos + n).min(samples.len());
                // invariant: pos <= samples.len() (it only advances to `end`), and end too.
                out.extend_from_slice(&samples[*pos..end]);
                let taken = end - *pos;
                *pos = end;
                taken
            }
            Sound::Tone {
                amplitude,
                step,
                phase,
                len,
                pos,
            } => {
                let taken = usize::try_from((*len - *pos).min(n as u64)).unwrap_or(n);
                for _ in 0..taken {
                    out.push((*amplitude * phase.sin()).round() as i16);
                    *phase += *step;
                    if *phase >= std::f64::consts::TAU {
                        *phase -= std::f64::consts::TAU;
                    }
                }
                *pos += taken as u64;
                taken
            }
        }
    }

    /// Starts the next play (the tone keeps its phase, so a repeated tone is continuous).
    fn rewind(&mut self) {
        match &mut self.sound {
            Sound::Clip { pos, .. } => *pos = 0,
            Sound::Tone { pos, .. } => *pos = 0,
        }
    }
}

impl LocalAgent for Play {
    /// Writes one frame of the sound; the last frame is padded with silence. With `repeat`
    /// the sound starts again within the same frame; without, the tick after the last frame
    /// returns [`AgentAction::HangUp`].
    fn on_frame(&mut self, _caller: &[i16], out: &mut Vec<i16>) -> AgentAction {
        if self.remaining() == 0 && !self.repeat {
            return AgentAction::HangUp;
        }
        let mut filled = 0;
        while filled < self.frame {
            if self.remaining() == 0 {
                if !self.repeat {
                    break;
                }
                self.rewind();
            }
            filled += self.take(self.frame - filled, out);
        }
        out.resize(out.len() + (self.frame - filled), 0);
        AgentAction::Continue
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>, PlayError> {
    let read_err = |source| PlayError::Read {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read_err)?.len();
    if len > MAX_FILE_BYTES {
        return Err(PlayError::TooLarge {
            path: path.to_path_buf(),
            len,
        });
    }
    std::fs::read(path).map_err(read_err)
}

fn tone(hz: f64, dbfs: f64, duration: Duration, rate: u32) -> Result<Sound, PlayError> {
    let nyquist = f64::from(rate) / 2.0;
    if !(hz.is_finite() && hz > 0.0 && hz < nyquist) {
        return Err(PlayError::Tone(format!(
            "frequency {hz} Hz must be above 0 and below {nyquist} Hz (half the call's rate)"
        )));
    }
    if !(dbfs.is_finite() && dbfs <= 0.0) {
        return Err(PlayError::Tone(format!(
            "level {dbfs} dBFS must be at most 0"
        )));
    }
    let len = (u128::from(rate) * duration.as_nanos() + 500_000_000) / 1_000_000_000;
    let len = u64::try_from(len).unwrap_or(u64::MAX);
    if len == 0 {
        return Err(PlayError::Tone(format!(
            "duration {duration:?} is shorter than one sample"
        )));
    }
    Ok(Sound::Tone {
        amplitude: FULL_SCALE * 10f64.powf(dbfs / 20.0),
        step: std::f64::consts::TAU * hz / f64::from(rate),
        phase: 0.0,
        len,
        pos: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt8k() -> FrameFormat {
        FrameFormat::new(8000, Duration::from_millis(20)).unwrap()
    }

    #[test]
    fn tone_errors() {
        let bad = [
            (0.0, -10.0, Duration::from_secs(1)),
            (4000.0, -10.0, Duration::from_secs(1)),
            (f64::NAN, -10.0, Duration::from_secs(1)),
            (440.0, 1.0, Duration::from_secs(1)),
            (440.0, -10.0, Duration::ZERO),
        ];
        for (hz, dbfs, duration) in bad {
            let spec = PlaySpec {
                source: PlaySource::Tone { hz, dbfs, duration },
                repeat: false,
            };
            assert!(
                matches!(Play::new(&spec, fmt8k()), Err(PlayError::Tone(_))),
                "{hz} {dbfs} {duration:?}"
            );
        }
    }

    #[test]
    fn clip_shorter_than_a_frame_loops_within_the_frame() {
        let mut bytes = wav::canonical_header(wav::Pcm16Spec::new(1, 8000).unwrap(), 6).to_vec();
        for s in [1i16, 2, 3] {
            bytes.extend_from_slice(&s.to_le_bytes());
        }
        let mut p = Play::from_wav_bytes(Path::new("x.wav"), &bytes, true, fmt8k()).unwrap();
        let mut out = Vec::new();
        assert_eq!(p.on_frame(&[], &mut out), AgentAction::Continue);
        assert_eq!(out.len(), 160);
        assert_eq!(&out[..7], &[1, 2, 3, 1, 2, 3, 1]);
    }
}
