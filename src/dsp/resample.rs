//! Sample-rate conversion of mono PCM16, built on rubato's FFT resampler (fixed ratio, high
//! quality: anti-aliased, flat passband).
//!
//! [`Resampler`] is a stream: feed it input of any length with [`Resampler::process`] (for
//! example one 20 ms frame per tick) and it appends whatever output is ready; it consumes
//! input in 20 ms chunks internally, so output lags input by up to one chunk plus the filter
//! delay, which it trims from the start so output sample `k` lines up with input time
//! `k / to_hz`. [`Resampler::flush`] ends the stream: it emits the tail so the total output
//! is `round(input_len * to / from)` samples. [`resample_all`] does both for a whole clip.
//!
//! Equal rates pass the audio through untouched.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler as _};

/// Input chunk the streaming resampler works in, as a fraction of a second (1/50 = 20 ms,
/// the usual RTP ptime).
pub const CHUNKS_PER_SECOND: u32 = 50;

/// Highest sample rate accepted (8x 48 kHz). Guards against absurd rates from a bad file
/// header, for which the FFT sizes (up to the rate itself when the rates share no factor)
/// would need gigabytes.
pub const MAX_RATE: u32 = 384_000;

/// Why a resampler could not be built or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResampleError {
    /// Rates rubato cannot handle (zero, for example).
    #[error("cannot resample from {from} Hz to {to} Hz: {reason}")]
    Setup {
        /// Input rate.
        from: u32,
        /// Output rate.
        to: u32,
        /// rubato's reason.
        reason: String,
    },
    /// rubato reported an error while processing (a bug: buffers are sized from its own
    /// figures).
    #[error("resampling failed: {0}")]
    Process(String),
}

/// A streaming mono resampler from `from_hz` to `to_hz`.
pub struct Resampler {
    from: u32,
    to: u32,
    inner: Option<Box<Fft<f32>>>,
    /// Input not yet consumed (less than one chunk after each `process`).
    pending: Vec<f32>,
    /// Scratch output of one chunk.
    scratch: Vec<f32>,
    /// Output samples still to drop at the start (the filter delay).
    trim: usize,
    /// Input samples fed since the start of the stream.
    fed: u64,
    /// Output samples emitted since the start of the stream.
    emitted: u64,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("pending", &self.pending.len())
            .field("fed", &self.fed)
            .field("emitted", &self.emitted)
            .finish()
    }
}

impl Resampler {
    /// A resampler from `from_hz` to `to_hz` (both non-zero).
    pub fn new(from_hz: u32, to_hz: u32) -> Result<Resampler, ResampleError> {
        let setup = |reason: String| ResampleError::Setup {
            from: from_hz,
            to: to_hz,
            reason,
        };
        if from_hz == 0 || to_hz == 0 || from_hz > MAX_RATE || to_hz > MAX_RATE {
            return Err(setup(format!(
                "sample rates must be between 1 and {MAX_RATE} Hz"
            )));
        }
        let (inner, scratch, trim) = if from_hz == to_hz {
            (None, Vec::new(), 0)
        } else {
            let chunk = (from_hz / CHUNKS_PER_SECOND).max(1) as usize;
            let fft = Fft::<f32>::new(from_hz as usize, to_hz as usize, chunk, 1, FixedSync::Input)
                .map_err(|e| setup(e.to_string()))?;
            let scratch = vec![0.0; fft.output_frames_max()];
            let trim = fft.output_delay();
            (Some(Box::new(fft)), scratch, trim)
        };
        Ok(Resampler {
            from: from_hz,
            to: to_hz,
            inner,
            pending: Vec::new(),
            scratch,
            trim,
            fed: 0,
            emitted: 0,
        })
    }

    /// Input rate in Hz.
    pub fn from_hz(&self) -> u32 {
        self.from
    }

    /// Output rate in Hz.
    pub fn to_hz(&self) -> u32 {
        self.to
    }

    /// Feeds `input` and appends the output that is ready to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) -> Result<(), ResampleError> {
        self.fed += input.len() as u64;
        if self.inner.is_none() {
            out.extend_from_slice(input);
            self.emitted += input.len() as u64;
            return Ok(());
        }
        self.pending
            .extend(input.iter().map(|&s| f32::from(s) / 32768.0));
        loop {
            let need = match &self.inner {
                Some(r) => r.input_frames_next(),
                None => return Ok(()),
            };
            if self.pending.len() < need {
                return Ok(());
            }
            let used = self.run_chunk(need, None, out, u64::MAX)?;
            self.pending.drain(..used.min(self.pending.len()));
        }
    }

    /// Ends the stream: appends the remaining output to `out`, so the stream's total output
    /// is `round(input * to / from)` samples, and resets for a new stream.
    pub fn flush(&mut self, out: &mut Vec<i16>) -> Result<(), ResampleError> {
        let expected = (self.fed as u128 * u128::from(self.to) + u128::from(self.from) / 2)
            / u128::from(self.from);
        let expected = u64::try_from(expected).unwrap_or(u64::MAX);
        if self.inner.is_some() {
            let mut guard = 0;
            while self.emitted < expected {
                let need = match &self.inner {
                    Some(r) => r.input_frames_next(),
                    None => break,
                };
                // After `process` fewer than `need` samples are pending: run them as a
                // partial chunk (rubato treats the rest as silence), then pure silence.
                let have = self.pending.len().min(need);
                self.pending.resize(need, 0.0);
                self.run_chunk(need, Some(have), out, expected)?;
                self.pending.clear();
                // Each round emits a chunk of output once the delay is trimmed; bound the
                // loop anyway so a misbehaving resampler cannot spin forever.
                guard += 1;
                if guard > 1000 + expected {
                    return Err(ResampleError::Process("flush made no progress".into()));
                }
            }
        }
        self.reset();
        Ok(())
    }

    /// Drops buffered input and starts a new stream.
    pub fn reset(&mut self) {
        if let Some(r) = &mut self.inner {
            r.reset();
            self.trim = r.output_delay();
        }
        self.pending.clear();
        self.fed = 0;
        self.emitted = 0;
    }

    /// Runs one chunk of `need` pending samples (`valid` of them real, the rest zeros) and
    /// appends up to `limit - emitted` trimmed output samples. Returns the input consumed.
    fn run_chunk(
        &mut self,
        need: usize,
        valid: Option<usize>,
        out: &mut Vec<i16>,
        limit: u64,
    ) -> Result<usize, ResampleError> {
        let Some(r) = &mut self.inner else {
            return Ok(0);
        };
        let err = |e: &dyn std::fmt::Display| ResampleError::Process(e.to_string());
        let input = self
            .pending
            .get(..need)
            .ok_or_else(|| ResampleError::Process("input shorter than one chunk".into()))?;
        let input = InterleavedSlice::new(input, 1, need).map_err(|e| err(&e))?;
        let out_len = self.scratch.len();
        let mut output =
            InterleavedSlice::new_mut(&mut self.scratch, 1, out_len).map_err(|e| err(&e))?;
        let indexing = valid.map(|v| Indexing::new().partial_len(v));
        let (used, produced) = r
            .process_into_buffer(&input, &mut output, indexing.as_ref())
            .map_err(|e| err(&e))?;
        let produced = produced.min(self.scratch.len());
        let skip = self.trim.min(produced);
        self.trim -= skip;
        let room = usize::try_from(limit.saturating_sub(self.emitted)).unwrap_or(usize::MAX);
        let take = (produced - skip).min(room);
        // invariant: skip + take <= produced <= scratch.len().
        out.extend(
            self.scratch[skip..skip + take]
                .iter()
                .map(|&x| (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16),
        );
        self.emitted += take as u64;
        Ok(used)
    }
}

/// Resamples a whole mono clip from `from_hz` to `to_hz`; the output has
/// `round(input.len() * to / from)` samples.
pub fn resample_all(input: &[i16], from_hz: u32, to_hz: u32) -> Result<Vec<i16>, ResampleError> {
    let mut r = Resampler::new(from_hz, to_hz)?;
    let mut out = Vec::with_capacity(
        usize::try_from(input.len() as u64 * u64::from(to_hz) / u64::from(from_hz) + 1)
            .unwrap_or(0),
    );
    r.process(input, &mut out)?;
    r.flush(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f64, rate: u32, n: usize, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (amp * (2.0 * std::f64::consts::PI * hz * i as f64 / rate as f64).sin()) as i16
            })
            .collect()
    }

    /// Power of `hz` relative to the signal's total power (0..=1).
    fn goertzel_share(x: &[i16], hz: f64, rate: u32) -> f64 {
        let w = 2.0 * std::f64::consts::PI * hz / rate as f64;
        let c = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        let mut energy = 0.0;
        for &v in x {
            let v = f64::from(v);
            let s = v + c * s1 - s2;
            s2 = s1;
            s1 = s;
            energy += v * v;
        }
        let p = s1 * s1 + s2 * s2 - c * s1 * s2;
        2.0 * p / (x.len() as f64 * energy)
    }

    #[test]
    fn passthrough_at_equal_rates() {
        let x = tone(440.0, 8000, 1000, 10000.0);
        assert_eq!(resample_all(&x, 8000, 8000).unwrap(), x);
    }

    #[test]
    fn downsample_keeps_tone_and_length() {
        let x = tone(1000.0, 16000, 16000, 10000.0);
        let y = resample_all(&x, 16000, 8000).unwrap();
        assert_eq!(y.len(), 8000);
        let body = &y[400..7600];
        assert!(goertzel_share(body, 1000.0, 8000) > 0.95);
        let peak = body.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((9500..=10500).contains(&peak), "peak {peak}");
        // Aligned: the resampled sine starts near zero going up, like the input.
        let expect = tone(1000.0, 8000, 8000, 10000.0);
        let err: f64 = (400..7600)
            .map(|i| (f64::from(y[i]) - f64::from(expect[i])).abs())
            .sum::<f64>()
            / 7200.0;
        assert!(err < 300.0, "mean abs error {err}");
    }

    #[test]
    fn odd_rates_work() {
        let x = tone(440.0, 44100, 44100, 8000.0);
        let y = resample_all(&x, 44100, 8000).unwrap();
        assert_eq!(y.len(), 8000);
        assert!(goertzel_share(&y[400..7600], 440.0, 8000) > 0.95);
        let x = tone(440.0, 8000, 8001, 8000.0);
        let y = resample_all(&x, 8000, 24000).unwrap();
        assert_eq!(y.len(), 24003);
    }

    #[test]
    fn streaming_in_odd_pieces_equals_one_shot() {
        let x = tone(700.0, 16000, 12345, 9000.0);
        let whole = resample_all(&x, 16000, 8000).unwrap();
        let mut r = Resampler::new(16000, 8000).unwrap();
        let mut out = Vec::new();
        for piece in x.chunks(97) {
            r.process(piece, &mut out).unwrap();
        }
        r.flush(&mut out).unwrap();
        assert_eq!(out, whole);
        // Reusable after flush.
        let mut again = Vec::new();
        r.process(&x, &mut again).unwrap();
        r.flush(&mut again).unwrap();
        assert_eq!(again, whole);
    }

    #[test]
    fn bad_rates_are_errors() {
        assert!(matches!(
            Resampler::new(0, 8000),
            Err(ResampleError::Setup { from: 0, .. })
        ));
        assert!(resample_all(&[1, 2], 8000, 0).is_err());
        assert!(resample_all(&[1, 2], 0xffff_1f40, 8000).is_err());
    }
}
