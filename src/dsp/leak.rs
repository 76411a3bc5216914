//! Echo leaking through the canceller, told from the caller: when the echo path changes
//! (a transfer, a handset switched to speaker) AEC3 takes two to three seconds to re-find
//! the delay and re-converge (docs/dsp.md), and meanwhile the agent's echo comes through
//! almost at full level, loud enough and speech enough for any VAD.
//!
//! What gives it away is its time-frequency pattern: the capture (what came back, before the
//! canceller) is then mostly the reference (what voxline sent) through a short impulse
//! response, so its log spectrum, band by band and frame by frame, follows the reference's
//! at the echo delay; and the canceller takes little off it. The chain masks a frame from the
//! VAD when both hold ([`LeakGuard::is_echo`], and less than [`CANCELLED_DB`] cancelled). A caller's own speech has other
//! formants, pitch and timing, even over the agent, and follows it far less. This is a
//! coherence test in the manner of a double-talk detector, on [`BANDS`] bands over
//! [`WINDOW`] frames (160 points, where a level track alone has too few to tell), at every
//! delay up to [`MAX_LAG`] frames.

use std::collections::VecDeque;
use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use super::DspError;

/// Frames the correlation looks at (with 20 ms frames, 200 ms).
pub const WINDOW: usize = 10;
/// The longest echo delay looked for, in frames (with 20 ms frames, 600 ms: more than
/// AEC3's own range).
pub const MAX_LAG: usize = 30;
/// Bands of the spectra, evenly spread over [`LOW_HZ`]–[`HIGH_HZ`].
pub const BANDS: usize = 16;
/// The lowest frequency looked at.
pub const LOW_HZ: f32 = 250.0;
/// The highest frequency looked at (the telephone band).
pub const HIGH_HZ: f32 = 3750.0;
/// Correlation of the log spectra from which the output is taken for echo.
pub const LEAK_CORRELATION: f32 = 0.7;
/// Reference entries kept: one per half frame, for [`WINDOW`] frames at every delay up to
/// [`MAX_LAG`] frames.
const REFERENCE_ENTRIES: usize = 2 * (WINDOW - 1) + 1 + 2 * MAX_LAG;
/// A canceller that takes at least this much (dB) off the capture is working: what it lets
/// through is the caller, not a leak.
pub const CANCELLED_DB: f32 = 10.0;
/// Points compared: every band of every frame of the window.
const POINTS: usize = WINDOW * BANDS;
/// Band energies below this (dB re full scale) count as this.
const FLOOR_DB: f32 = -80.0;
/// A reference frame this quiet (dBFS) is silence: windows of mostly silent reference are
/// not compared (a silent agent leaks nothing).
const SILENT_REFERENCE_DBFS: f32 = -50.0;

/// Tells echo leaking through the canceller from the caller, frame by frame.
pub struct LeakGuard {
    fft: Arc<dyn RealToComplex<f32>>,
    input: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    window: Vec<f32>,
    /// Bin ranges of the bands.
    bands: Vec<(usize, usize)>,
    /// The reference's band log-energies and whether it was loud, one entry per half frame
    /// (each over the frame length ending there), newest last.
    reference: VecDeque<([f32; BANDS], bool)>,
    /// The previous reference frame (for the half-frame-shifted spectrum).
    previous: Vec<i16>,
    /// A frame-long buffer.
    joined: Vec<i16>,
    /// The capture's band log-energies, newest last.
    capture: VecDeque<[f32; BANDS]>,
}

impl std::fmt::Debug for LeakGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeakGuard")
            .field("bands", &self.bands)
            .finish_non_exhaustive()
    }
}

impl LeakGuard {
    /// A guard for frames of `frame_samples` at `rate`.
    pub fn new(rate: u32, frame_samples: usize) -> Result<LeakGuard, DspError> {
        super::blocks(rate, frame_samples)?;
        let n = frame_samples.next_power_of_two();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(n);
        let hz_per_bin = rate as f32 / n as f32;
        let bin = |hz: f32| ((hz / hz_per_bin).round() as usize).clamp(1, n / 2);
        let step = (HIGH_HZ.min(rate as f32 / 2.0) - LOW_HZ) / BANDS as f32;
        let bands = (0..BANDS)
            .map(|b| {
                let lo = bin(LOW_HZ + step * b as f32);
                let hi = bin(LOW_HZ + step * (b + 1) as f32).max(lo + 1);
                (lo, hi)
            })
            .collect();
        // A Hann window over the frame (zero-padded to the FFT size).
        let window = (0..frame_samples)
            .map(|i| {
                let x = std::f32::consts::PI * i as f32 / frame_samples as f32;
                x.sin() * x.sin()
            })
            .collect();
        Ok(LeakGuard {
            input: vec![0.0; n],
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            fft,
            window,
            bands,
            reference: VecDeque::with_capacity(REFERENCE_ENTRIES),
            previous: vec![0; frame_samples],
            joined: vec![0; frame_samples],
            capture: VecDeque::with_capacity(WINDOW),
        })
    }

    /// One frame: what was sent (the reference, with its level in dBFS) and what came back
    /// (the capture, before the canceller). Keeps their spectra; see [`Self::is_echo`].
    pub fn push(&mut self, reference: &[i16], reference_dbfs: f32, capture: &[i16]) {
        // Two reference entries per frame: the frame shifted back by half a frame, and the
        // frame itself, so that some entry is within a quarter frame of any echo delay.
        let half = reference.len() / 2;
        if self.previous.len() == reference.len() && self.joined.len() == reference.len() {
            self.joined[..reference.len() - half].copy_from_slice(&self.previous[half..]);
            self.joined[reference.len() - half..].copy_from_slice(&reference[..half]);
        }
        let shifted = std::mem::take(&mut self.joined);
        let r_half = self.band_energies(&shifted);
        let loud_half = super::speech::level_dbfs(&shifted) > SILENT_REFERENCE_DBFS;
        self.joined = shifted;
        let r = self.band_energies(reference);
        for entry in [
            (r_half, loud_half),
            (r, reference_dbfs > SILENT_REFERENCE_DBFS),
        ] {
            if self.reference.len() == REFERENCE_ENTRIES {
                self.reference.pop_front();
            }
            self.reference.push_back(entry);
        }
        self.previous.clear();
        self.previous.extend_from_slice(reference);
        let c = self.band_energies(capture);
        if self.capture.len() == WINDOW {
            self.capture.pop_front();
        }
        self.capture.push_back(c);
    }

    /// Whether the capture's last [`WINDOW`] frames follow the reference's at some delay
    /// up to [`MAX_LAG`] frames: echo, not the caller.
    pub fn is_echo(&self) -> bool {
        if self.capture.len() < WINDOW {
            return false;
        }
        let mut out_centred = [0f32; POINTS];
        centred(self.capture.iter(), &mut out_centred);
        let mut ref_centred = [0f32; POINTS];
        let n = self.reference.len();
        // At delay `h` half frames, output frame j (of WINDOW, oldest first) pairs with the
        // reference entry 2·(WINDOW-1-j) + h entries before the newest.
        let span = 2 * (WINDOW - 1) + 1;
        for h in 0..=(2 * MAX_LAG).min(n.saturating_sub(span)) {
            let entries = (0..WINDOW).map(|j| &self.reference[n - 1 - h - 2 * (WINDOW - 1 - j)]);
            // The agent must have been talking for most of the window.
            if entries.clone().filter(|(_, loud)| *loud).count() < WINDOW / 2 {
                continue;
            }
            centred(entries.map(|(e, _)| e), &mut ref_centred);
            if correlation(&ref_centred, &out_centred) >= LEAK_CORRELATION {
                return true;
            }
        }
        false
    }

    /// The band log-energies of a frame (dB re full scale, floored).
    fn band_energies(&mut self, frame: &[i16]) -> [f32; BANDS] {
        for (d, (s, w)) in self.input.iter_mut().zip(frame.iter().zip(&self.window)) {
            *d = f32::from(*s) / 32768.0 * w;
        }
        let n = frame.len().min(self.input.len());
        self.input[n..].iter_mut().for_each(|x| *x = 0.0);
        let mut out = [FLOOR_DB; BANDS];
        if self
            .fft
            .process_with_scratch(&mut self.input, &mut self.spectrum, &mut self.scratch)
            .is_err()
        {
            return out;
        }
        for (o, (lo, hi)) in out.iter_mut().zip(&self.bands) {
            let e: f32 = self.spectrum[*lo..*hi].iter().map(|c| c.norm_sqr()).sum();
            *o = (10.0 * (e / (hi - lo) as f32).max(1e-12).log10()).max(FLOOR_DB);
        }
        out
    }
}

/// The window's band energies with each band's mean over the window removed (the average
/// spectral shape, which any two telephone signals share) and each frame's mean over the
/// bands, flattened.
fn centred<'a>(frames: impl Iterator<Item = &'a [f32; BANDS]> + Clone, out: &mut [f32; POINTS]) {
    let mut mean = [0f32; BANDS];
    let mut count = 0f32;
    for f in frames.clone() {
        for (m, v) in mean.iter_mut().zip(f) {
            *m += v;
        }
        count += 1.0;
    }
    mean.iter_mut().for_each(|m| *m /= count.max(1.0));
    // Then each frame's mean over the bands (its level): what is compared is how the
    // spectrum's shape moves, which a caller's voice shares with the agent's far less than
    // the rise and fall of syllables.
    for (row, f) in out.chunks_exact_mut(BANDS).zip(frames) {
        for ((d, v), m) in row.iter_mut().zip(f).zip(mean) {
            *d = v - m;
        }
        let level = row.iter().sum::<f32>() / BANDS as f32;
        row.iter_mut().for_each(|d| *d -= level);
    }
}

/// Pearson correlation of two centred vectors (0 when either is flat).
fn correlation(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa <= f32::EPSILON || bb <= f32::EPSILON {
        return 0.0;
    }
    ab / (aa * bb).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::chain::testsig::{Lcg, syllables};
    use crate::dsp::speech::level_dbfs;

    #[test]
    fn a_delayed_filtered_copy_of_the_reference_is_echo_at_any_delay() {
        let reference = syllables(&mut Lcg(9), 8000 * 6);
        for delay in [0usize, 37, 1600, 4000 + 91] {
            let echo: Vec<i16> = (0..reference.len())
                .map(|n| {
                    let a = n
                        .checked_sub(delay)
                        .map_or(0.0, |i| f32::from(reference[i]));
                    let b = n
                        .checked_sub(delay + 3)
                        .map_or(0.0, |i| f32::from(reference[i]));
                    (0.4 * a + 0.2 * b) as i16
                })
                .collect();
            let mut g = LeakGuard::new(8000, 160).expect("guard");
            let (mut flagged, mut loud) = (0, 0);
            for k in 0..300 {
                let r = &reference[k * 160..(k + 1) * 160];
                let e = &echo[k * 160..(k + 1) * 160];
                g.push(r, level_dbfs(r), e);
                if k >= 60 && level_dbfs(e) > -40.0 {
                    loud += 1;
                    flagged += usize::from(g.is_echo());
                }
            }
            assert!(
                flagged * 10 >= loud * 8,
                "delay {delay}: {flagged} of {loud} loud echo frames flagged"
            );
        }
    }

    #[test]
    fn nothing_is_echo_while_the_agent_is_silent() {
        let caller = syllables(&mut Lcg(5), 8000 * 4);
        let mut g = LeakGuard::new(8000, 160).expect("guard");
        for k in 0..200 {
            g.push(&[0; 160], -120.0, &caller[k * 160..(k + 1) * 160]);
            assert!(!g.is_echo(), "frame {k}");
        }
    }
}
