//! In-band DTMF sending: ITU-T Q.23 dual tones written into the outgoing audio, for peers
//! that take key presses only as sound (a trunk with `dtmf = "inband"`, or a call without
//! `telephone-event`).
//!
//! [`ToneSender`] queues key presses and writes them frame by frame into caller-provided
//! PCM: each key is its row and column frequency for the asked duration, followed by
//! [`INTER_DIGIT_GAP`] of silence. The low-group (row) tone is [`ROW_LEVEL_DBM0`] and the
//! high-group (column) tone [`COLUMN_LEVEL_DBM0`]: 2 dB of normal twist, well inside what
//! Q.24 receivers accept (8 dB normal, 4 dB reverse), and loud enough for any receiver's
//! -25 dBm0 floor after G.711 companding. The phase of each oscillator runs on across frame
//! boundaries, so a tone has no clicks where frames meet.

use std::collections::VecDeque;
use std::f64::consts::TAU;
use std::time::Duration;

use super::Digit;
use super::inband::DBM0_PEAK_AMPLITUDE;
use super::rfc4733::{DEFAULT_INTER_DIGIT_GAP, MAX_SEND_DURATION};

/// Level of the low-group (row) tone, dBm0.
pub const ROW_LEVEL_DBM0: f64 = -7.0;
/// Level of the high-group (column) tone, dBm0 (2 dB above the row tone, like a telephone).
pub const COLUMN_LEVEL_DBM0: f64 = -5.0;
/// Silence after each tone (ITU-T Q.24 receivers need at least 40 ms).
pub const INTER_DIGIT_GAP: Duration = DEFAULT_INTER_DIGIT_GAP;
/// The most key presses waiting to be played.
pub const MAX_QUEUED: usize = 64;

/// Why a key press cannot be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToneError {
    /// Longer than [`MAX_SEND_DURATION`].
    #[error("key press of {0:?} is longer than the maximum of {MAX_SEND_DURATION:?}")]
    DurationTooLong(Duration),
    /// [`MAX_QUEUED`] key presses are already waiting.
    #[error("{MAX_QUEUED} key presses are already waiting to be played")]
    QueueFull,
    /// A sample rate of zero.
    #[error("sample rate must be positive")]
    ZeroSampleRate,
}

/// One sine oscillator.
#[derive(Debug, Clone, Copy)]
struct Oscillator {
    /// Phase in cycles, `[0, 1)`.
    phase: f64,
    /// Cycles per sample.
    step: f64,
    /// Peak amplitude in 16-bit PCM.
    amplitude: f64,
}

impl Oscillator {
    fn new(hz: u32, level_dbm0: f64, sample_rate: u32) -> Self {
        Oscillator {
            phase: 0.0,
            step: f64::from(hz) / f64::from(sample_rate),
            amplitude: DBM0_PEAK_AMPLITUDE * 10f64.powf(level_dbm0 / 20.0),
        }
    }

    fn next(&mut self) -> f64 {
        let v = self.amplitude * (TAU * self.phase).sin();
        self.phase = (self.phase + self.step).fract();
        v
    }
}

/// The key press being played.
#[derive(Debug, Clone, Copy)]
struct Playing {
    row: Oscillator,
    column: Oscillator,
    /// Tone samples still to write.
    tone_left: usize,
    /// Silence samples after the tone still to write.
    gap_left: usize,
}

/// Plays queued key presses as Q.23 tones into outgoing frames.
#[derive(Debug, Clone)]
pub struct ToneSender {
    sample_rate: u32,
    queue: VecDeque<(Digit, Duration)>,
    playing: Option<Playing>,
}

impl ToneSender {
    /// A sender for audio at `sample_rate` Hz.
    pub fn new(sample_rate: u32) -> Result<Self, ToneError> {
        if sample_rate == 0 {
            return Err(ToneError::ZeroSampleRate);
        }
        Ok(ToneSender {
            sample_rate,
            queue: VecDeque::new(),
            playing: None,
        })
    }

    /// Queues a key press of `duration` (after those already queued).
    pub fn send(&mut self, digit: Digit, duration: Duration) -> Result<(), ToneError> {
        if duration > MAX_SEND_DURATION {
            return Err(ToneError::DurationTooLong(duration));
        }
        if self.queue.len() >= MAX_QUEUED {
            return Err(ToneError::QueueFull);
        }
        self.queue.push_back((digit, duration));
        Ok(())
    }

    /// The sample rate it writes at.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// The same sender with nothing playing or queued.
    pub fn cleared(&self) -> Self {
        ToneSender {
            sample_rate: self.sample_rate,
            queue: VecDeque::new(),
            playing: None,
        }
    }

    /// Whether nothing is playing or queued.
    pub fn is_idle(&self) -> bool {
        self.playing.is_none() && self.queue.is_empty()
    }

    /// Writes the next `frame.len()` samples: tones and the silence after them, then silence
    /// once the queue runs dry. Returns `false`, leaving `frame` untouched, when idle.
    pub fn fill(&mut self, frame: &mut [i16]) -> bool {
        if self.is_idle() {
            return false;
        }
        for sample in frame.iter_mut() {
            *sample = self.next_sample();
        }
        true
    }

    fn next_sample(&mut self) -> i16 {
        loop {
            match self.playing.as_mut() {
                Some(p) if p.tone_left > 0 => {
                    p.tone_left -= 1;
                    let v = p.row.next() + p.column.next();
                    // The two peaks sum to at most -3.9 dBm0 + 3.17 dB: no clipping; the
                    // clamp only guards the conversion.
                    return v.round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16;
                }
                Some(p) if p.gap_left > 0 => {
                    p.gap_left -= 1;
                    return 0;
                }
                Some(_) => self.playing = None,
                None => match self.queue.pop_front() {
                    Some((digit, duration)) => self.playing = Some(self.start(digit, duration)),
                    None => return 0,
                },
            }
        }
    }

    fn start(&self, digit: Digit, duration: Duration) -> Playing {
        let (row_hz, column_hz) = digit.frequencies_hz();
        Playing {
            row: Oscillator::new(row_hz, ROW_LEVEL_DBM0, self.sample_rate),
            column: Oscillator::new(column_hz, COLUMN_LEVEL_DBM0, self.sample_rate),
            tone_left: samples(duration, self.sample_rate).max(1),
            gap_left: samples(INTER_DIGIT_GAP, self.sample_rate),
        }
    }
}

fn samples(d: Duration, rate: u32) -> usize {
    usize::try_from(crate::media::ticks_in(d, u64::from(rate))).unwrap_or(usize::MAX)
}
