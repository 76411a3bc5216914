//! In-band DTMF: key presses found in the audio itself (ITU-T Q.23 tones, Q.24 receiver).
//!
//! # How it works
//!
//! The audio is cut into half-blocks of 51 samples at 8 kHz (6.375 ms; the same duration at
//! other rates). On each half-block a Goertzel filter per DTMF frequency gives a complex DFT
//! value, referred to the absolute sample index so that half-blocks can be combined. Every
//! half-block closes an analysis *window* of the last two (102 samples, 12.75 ms, hop 6.375
//! ms), whose DFT value per frequency is the sum of its two halves'.
//!
//! A window is a *hit* for a key when, for the strongest row and column frequency:
//!
//! * both tones are loud enough (the configured minimum level, with a 6 dB allowance for
//!   windows only partly covered by the tone; the precise check is made per tone, below);
//! * the twist is within the limits plus a 3 dB allowance (precise check below);
//! * every other frequency of each group is at least 8 dB weaker (relative peak);
//! * the two tones carry at least 75% of the window's power: speech, music and noise spread
//!   their power over many frequencies, a DTMF key puts all of it in two (talk-off guard).
//!
//! Consecutive hits for the same key form a *tone*; it ends after `min_pause` without a hit
//! for it (shorter drop-outs are bridged), or when another key's hits reach `min_tone`. An
//! ended tone is reported as one [`DtmfDigit`] if it passes the precise checks, made over
//! the whole tone:
//!
//! * duration: the hits span at least `min_tone`;
//! * frequency: each tone's frequency, estimated from the phase advance of its DFT value from
//!   one half-block to the next (unambiguous to +-78 Hz), deviates from nominal by at most
//!   `max_frequency_deviation` (default 2.5%: between Q.24's "accept 1.5%" and
//!   "reject 3.5%");
//! * level and twist, from the tone's mean power corrected for the estimated frequency
//!   deviation: each tone at least `min_level_dbm0`; the low-group (row) tone at most
//!   `max_normal_twist_db` stronger than the high-group (column) tone ("normal twist",
//!   default 8 dB) and the high-group tone at most `max_reverse_twist_db` stronger than the
//!   low-group one ("reverse twist", default 4 dB).
//!
//! With the defaults, tones of 40 ms or more separated by pauses of 40 ms or more are each
//! reported once; tones of 23 ms or less are not reported; a drop-out of 10 ms or less does
//! not split a tone (Q.24 figures). The reported duration is accurate to about +-7 ms.

use std::f64::consts::PI;
use std::time::{Duration, Instant};

use super::{COLUMN_FREQUENCIES_HZ, DtmfDigit, DtmfMethod, KEYPAD, ROW_FREQUENCIES_HZ};

/// Peak amplitude, in 16-bit linear PCM, of a 0 dBm0 sine: 3.17 dB below the full-scale
/// sine of G.711 mu-law, whose peak decodes to 32124 (ITU-T G.711 §5).
pub const DBM0_PEAK_AMPLITUDE: f64 = 22_301.3;

/// Half-block length at 8 kHz, in samples: half of the 102-sample analysis window.
pub const HALF_BLOCK_AT_8K: usize = 51;

/// Default [`InbandConfig::min_level_dbm0`]: each tone at least -30 dBm0 (Q.24 receivers
/// must work down to about -25 dBm0 per tone).
pub const DEFAULT_MIN_LEVEL_DBM0: f64 = -30.0;

/// Default [`InbandConfig::max_normal_twist_db`] (ITU-T Q.24: 8 dB).
pub const DEFAULT_MAX_NORMAL_TWIST_DB: f64 = 8.0;

/// Default [`InbandConfig::max_reverse_twist_db`] (ITU-T Q.24: 4 dB).
pub const DEFAULT_MAX_REVERSE_TWIST_DB: f64 = 4.0;

/// Default [`InbandConfig::max_frequency_deviation`]: 2.5%, between the +-1.5% a Q.24
/// receiver must accept and the +-3.5% it must reject.
pub const DEFAULT_MAX_FREQUENCY_DEVIATION: f64 = 0.025;

/// Default [`InbandConfig::min_tone`]: with the +-7 ms measurement error, tones of 40 ms are
/// always accepted and tones of 23 ms always rejected.
pub const DEFAULT_MIN_TONE: Duration = Duration::from_millis(30);

/// Default [`InbandConfig::min_pause`]: pauses of 40 ms always separate two key presses and
/// drop-outs of 10 ms never do.
pub const DEFAULT_MIN_PAUSE: Duration = Duration::from_millis(30);

/// Share of a window's power the two tones must carry for a hit (the talk-off guard).
const MIN_TONE_POWER_SHARE: f64 = 0.75;

/// Every other frequency of a group must be this much weaker than the strongest (power
/// ratio, 8 dB).
const RELATIVE_PEAK: f64 = 6.31;

/// Window-level allowance on the minimum level (power ratio, 6 dB): windows at a tone's edges
/// hold only part of it.
const WINDOW_LEVEL_ALLOWANCE: f64 = 0.25;

/// Window-level allowance on the twist limits (power ratio, 3 dB); the exact limits are
/// checked over the whole tone.
const WINDOW_TWIST_ALLOWANCE: f64 = 2.0;

/// Settings of an [`InbandDetector`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InbandConfig {
    /// Sample rate of the audio: 8000, 16000, 32000 or 48000 Hz.
    pub sample_rate: u32,
    /// Minimum level of each of the two tones, in dBm0.
    pub min_level_dbm0: f64,
    /// How much stronger the low-group tone may be than the high-group one, in dB.
    pub max_normal_twist_db: f64,
    /// How much stronger the high-group tone may be than the low-group one, in dB.
    pub max_reverse_twist_db: f64,
    /// Largest accepted deviation of each tone from its nominal frequency, as a fraction.
    pub max_frequency_deviation: f64,
    /// Shortest tone reported (as measured, see the module documentation).
    pub min_tone: Duration,
    /// A tone ends after this long without it; shorter drop-outs are bridged.
    pub min_pause: Duration,
}

impl Default for InbandConfig {
    fn default() -> Self {
        Self {
            sample_rate: 8000,
            min_level_dbm0: DEFAULT_MIN_LEVEL_DBM0,
            max_normal_twist_db: DEFAULT_MAX_NORMAL_TWIST_DB,
            max_reverse_twist_db: DEFAULT_MAX_REVERSE_TWIST_DB,
            max_frequency_deviation: DEFAULT_MAX_FREQUENCY_DEVIATION,
            min_tone: DEFAULT_MIN_TONE,
            min_pause: DEFAULT_MIN_PAUSE,
        }
    }
}

/// Unusable [`InbandConfig`] values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InbandError {
    /// The sample rate is not 8000, 16000, 32000 or 48000 Hz.
    #[error("unsupported in-band DTMF sample rate {0} Hz (8000, 16000, 32000 or 48000)")]
    UnsupportedSampleRate(u32),
    /// A level, twist or deviation limit is not a finite number in range.
    #[error("in-band DTMF setting {name} = {value} is out of range")]
    OutOfRange {
        /// The setting's name.
        name: &'static str,
        /// Its value.
        value: f64,
    },
}

/// Finds DTMF key presses in 16-bit linear PCM audio (see the module documentation).
///
/// Feed the audio with [`process`](Self::process), in chunks of any size, as it comes; each
/// key press is returned once, shortly (about `min_pause`) after its tone ends.
#[derive(Debug)]
pub struct InbandDetector {
    config: InbandConfig,
    half_len: usize,
    bank: [Goertzel; 8],
    /// Per-tone minimum power (amplitude squared) from `min_level_dbm0`.
    min_power: f64,
    normal_twist: f64,
    reverse_twist: f64,
    min_hits: u32,
    end_misses: u32,
    /// Samples of the half-block being filled.
    buf: Vec<f64>,
    /// Index of the half-block being filled.
    half_index: u64,
    /// The last complete half-block.
    prev: Option<Half>,
    /// `(instant, sample index)`: the instant of one sample, to date the others.
    anchor: Option<(Instant, u64)>,
    tone: Option<Tone>,
    challenger: Option<Tone>,
}

impl InbandDetector {
    /// A detector with these settings.
    pub fn new(config: InbandConfig) -> Result<Self, InbandError> {
        let half_len = match config.sample_rate {
            8000 | 16000 | 32000 | 48000 => HALF_BLOCK_AT_8K * (config.sample_rate / 8000) as usize,
            other => return Err(InbandError::UnsupportedSampleRate(other)),
        };
        check_range("min_level_dbm0", config.min_level_dbm0, -80.0, 3.17)?;
        check_range("max_normal_twist_db", config.max_normal_twist_db, 0.0, 30.0)?;
        check_range(
            "max_reverse_twist_db",
            config.max_reverse_twist_db,
            0.0,
            30.0,
        )?;
        check_range(
            "max_frequency_deviation",
            config.max_frequency_deviation,
            0.0,
            0.05,
        )?;
        let fs = f64::from(config.sample_rate);
        let hop = half_len as f64 / fs;
        let min_hits = ((config.min_tone.as_secs_f64() / hop).ceil() as u32)
            .saturating_sub(1)
            .max(1);
        let end_misses = ((config.min_pause.as_secs_f64() / hop).ceil() as u32).max(1);
        let freqs = all_frequencies();
        let bank = freqs.map(|f| Goertzel::new(f, config.sample_rate));
        let min_amplitude = DBM0_PEAK_AMPLITUDE * db_to_amplitude(config.min_level_dbm0);
        Ok(Self {
            config,
            half_len,
            bank,
            min_power: min_amplitude * min_amplitude,
            normal_twist: db_to_power(config.max_normal_twist_db),
            reverse_twist: db_to_power(config.max_reverse_twist_db),
            min_hits,
            end_misses,
            buf: Vec::with_capacity(half_len),
            half_index: 0,
            prev: None,
            anchor: None,
            tone: None,
            challenger: None,
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &InbandConfig {
        &self.config
    }

    /// Feeds audio; `now` is the capture (or playout) time of `samples[0]`. Returns the key
    /// presses whose tones ended in it.
    pub fn process(&mut self, now: Instant, samples: &[i16]) -> Vec<DtmfDigit> {
        let consumed = self.half_index * self.half_len as u64 + self.buf.len() as u64;
        self.anchor = Some((now, consumed));
        let mut out = Vec::new();
        for &s in samples {
            self.buf.push(f64::from(s));
            if self.buf.len() == self.half_len
                && let Some(d) = self.close_half()
            {
                out.push(d);
            }
        }
        out
    }

    /// Ends the stream: reports a key press whose tone is still under way (or whose pause has
    /// not lasted `min_pause` yet), then forgets all state.
    pub fn flush(&mut self) -> Option<DtmfDigit> {
        let found = self.tone.take().and_then(|t| self.finish(&t));
        self.reset();
        found
    }

    /// Forgets all state (the next audio starts a new stream).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.half_index = 0;
        self.prev = None;
        self.anchor = None;
        self.tone = None;
        self.challenger = None;
    }

    /// Runs the filters over the half-block just filled, and the window it closes.
    fn close_half(&mut self) -> Option<DtmfDigit> {
        let start = self.half_index * self.half_len as u64;
        let energy = self.buf.iter().map(|x| x * x).sum();
        let mut z = [Complex::default(); 8];
        for (zi, g) in z.iter_mut().zip(&self.bank) {
            *zi = g.dft(&self.buf, start);
        }
        let cur = Half { z, energy };
        self.buf.clear();
        let window = self.half_index;
        self.half_index += 1;
        let prev = self.prev.replace(cur);
        let prev = prev?;
        let hit = self.classify(&prev, &cur);
        self.on_window(window, hit)
    }

    /// Whether the window made of two consecutive half-blocks is a hit, and for which key.
    fn classify(&self, a: &Half, b: &Half) -> Option<Hit> {
        let n = (2 * self.half_len) as f64;
        // Amplitude squared of each frequency: |Z| = A N / 2 for a sine of amplitude A.
        let mut power = [0.0; 8];
        for (p, (za, zb)) in power.iter_mut().zip(a.z.iter().zip(&b.z)) {
            *p = 4.0 * za.add(*zb).norm_sqr() / (n * n);
        }
        // invariant: `strongest` returns an index into its 4-entry slice, so `row` and `col`
        // are 0..=3 and every index below is within the 8 entries of `power` and `z`.
        let (row, col) = (strongest(&power[..4]), strongest(&power[4..]));
        let (pr, pc) = (power[row], power[4 + col]);
        let min = self.min_power * WINDOW_LEVEL_ALLOWANCE;
        if pr < min || pc < min {
            return None;
        }
        if pr > pc * self.normal_twist * WINDOW_TWIST_ALLOWANCE
            || pc > pr * self.reverse_twist * WINDOW_TWIST_ALLOWANCE
        {
            return None;
        }
        let others_weak = (0..4).all(|i| {
            (i == row || power[i] * RELATIVE_PEAK < pr)
                && (i == col || power[4 + i] * RELATIVE_PEAK < pc)
        });
        if !others_weak {
            return None;
        }
        // A sine of amplitude A has power A^2 / 2; the window's mean power is energy / N.
        let window_power = (a.energy + b.energy) / n;
        if (pr + pc) / 2.0 < MIN_TONE_POWER_SHARE * window_power {
            return None;
        }
        Some(Hit {
            row,
            col,
            power_row: pr,
            power_col: pc,
            corr_row: b.z[row].mul_conj(a.z[row]),
            corr_col: b.z[4 + col].mul_conj(a.z[4 + col]),
        })
    }

    /// Advances the tone state machine by one window.
    fn on_window(&mut self, window: u64, hit: Option<Hit>) -> Option<DtmfDigit> {
        let Some(tone) = self.tone.as_mut() else {
            self.tone = hit.map(|h| Tone::new(window, &h));
            return None;
        };
        match hit {
            Some(h) if tone.is_same_key(&h) => {
                tone.add(window, &h);
                self.challenger = None;
                return None;
            }
            Some(h) => match self.challenger.as_mut() {
                Some(c) if c.is_same_key(&h) => c.add(window, &h),
                _ => self.challenger = Some(Tone::new(window, &h)),
            },
            None => self.challenger = None,
        }
        tone.misses += 1;
        let challenger_ready = self
            .challenger
            .as_ref()
            .is_some_and(|c| c.hits >= self.min_hits);
        if tone.misses >= self.end_misses || challenger_ready {
            let ended = self.tone.take();
            self.tone = self.challenger.take();
            return ended.and_then(|t| self.finish(&t));
        }
        None
    }

    /// The key press of an ended tone, if it passes the whole-tone checks.
    fn finish(&self, t: &Tone) -> Option<DtmfDigit> {
        if t.hits < self.min_hits {
            return None;
        }
        let fs = f64::from(self.config.sample_rate);
        // invariant: `row` and `col` come from `classify`, 0..=3; the tables have 4 entries.
        let (f_row, f_col) = (
            f64::from(ROW_FREQUENCIES_HZ[t.row]),
            f64::from(COLUMN_FREQUENCIES_HZ[t.col]),
        );
        let hop = self.half_len as f64;
        let offset_row = t.corr_row.arg() * fs / (2.0 * PI * hop);
        let offset_col = t.corr_col.arg() * fs / (2.0 * PI * hop);
        let max_dev = self.config.max_frequency_deviation;
        if offset_row.abs() > max_dev * f_row || offset_col.abs() > max_dev * f_col {
            return None;
        }
        let n = 2.0 * hop;
        let hits = f64::from(t.hits);
        let pr = t.power_row / hits / window_gain(offset_row, n, fs).powi(2);
        let pc = t.power_col / hits / window_gain(offset_col, n, fs).powi(2);
        if pr < self.min_power || pc < self.min_power {
            return None;
        }
        if pr > pc * self.normal_twist || pc > pr * self.reverse_twist {
            return None;
        }
        let first_sample = t.first_window.saturating_sub(1) * self.half_len as u64;
        let end_sample = (t.last_window + 1) * self.half_len as u64;
        let duration_ms = (end_sample - first_sample) * 1000 / u64::from(self.config.sample_rate);
        Some(DtmfDigit {
            digit: KEYPAD[t.row][t.col],
            method: DtmfMethod::InBand,
            duration_ms: u32::try_from(duration_ms).unwrap_or(u32::MAX),
            at: self.instant_of(first_sample)?,
        })
    }

    /// The instant of sample number `index` of the stream.
    /// `None` only before the first [`process`](Self::process), when there is no tone.
    fn instant_of(&self, index: u64) -> Option<Instant> {
        let (at, anchor) = self.anchor?;
        let rate = u64::from(self.config.sample_rate);
        let to_duration = |samples: u64| {
            Duration::from_secs(samples / rate)
                + Duration::from_nanos((samples % rate) * 1_000_000_000 / rate)
        };
        Some(if index >= anchor {
            at + to_duration(index - anchor)
        } else {
            at.checked_sub(to_duration(anchor - index)).unwrap_or(at)
        })
    }
}

/// The eight DTMF frequencies: rows, then columns.
fn all_frequencies() -> [u32; 8] {
    let mut f = [0; 8];
    f[..4].copy_from_slice(&ROW_FREQUENCIES_HZ);
    f[4..].copy_from_slice(&COLUMN_FREQUENCIES_HZ);
    f
}

fn check_range(name: &'static str, value: f64, lo: f64, hi: f64) -> Result<(), InbandError> {
    if value.is_finite() && (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(InbandError::OutOfRange { name, value })
    }
}

fn db_to_power(db: f64) -> f64 {
    10f64.powf(db / 10.0)
}

fn db_to_amplitude(db: f64) -> f64 {
    10f64.powf(db / 20.0)
}

/// Index of the largest value.
fn strongest(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if let Some(b) = values.get(best)
            && v > b
        {
            best = i;
        }
    }
    best
}

/// Relative amplitude response of an `n`-sample rectangular-window DFT to a sine `offset_hz`
/// away from the bin frequency (1 at the bin frequency).
fn window_gain(offset_hz: f64, n: f64, fs: f64) -> f64 {
    let x = PI * offset_hz / fs;
    if x.abs() < 1e-9 {
        return 1.0;
    }
    ((n * x).sin() / (n * x.sin())).abs().max(1e-3)
}

/// A complex number, for DFT values.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Complex {
    re: f64,
    im: f64,
}

impl Complex {
    fn add(self, o: Complex) -> Complex {
        Complex {
            re: self.re + o.re,
            im: self.im + o.im,
        }
    }

    /// `self * conj(o)`.
    fn mul_conj(self, o: Complex) -> Complex {
        Complex {
            re: self.re * o.re + self.im * o.im,
            im: self.im * o.re - self.re * o.im,
        }
    }

    fn norm_sqr(self) -> f64 {
        self.re * self.re + self.im * self.im
    }

    fn arg(self) -> f64 {
        self.im.atan2(self.re)
    }
}

/// A Goertzel filter for one frequency.
#[derive(Debug, Clone, Copy)]
struct Goertzel {
    freq: u64,
    rate: u64,
    omega: f64,
    coeff: f64,
}

impl Goertzel {
    fn new(freq: u32, rate: u32) -> Self {
        let omega = 2.0 * PI * f64::from(freq) / f64::from(rate);
        Self {
            freq: u64::from(freq),
            rate: u64::from(rate),
            omega,
            coeff: 2.0 * omega.cos(),
        }
    }

    /// `sum x[m] exp(-j w (start + m))`: the DFT value of the block at `start` in the
    /// stream, referred to sample 0 of the stream so that blocks can be added.
    fn dft(&self, x: &[f64], start: u64) -> Complex {
        let (mut s1, mut s2) = (0.0, 0.0);
        for &v in x {
            let s = v + self.coeff * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        // y = s1 - exp(-jw) s2 = sum x[m] exp(jw (M-1-m)).
        let y = Complex {
            re: s1 - self.omega.cos() * s2,
            im: self.omega.sin() * s2,
        };
        // Multiply by exp(-jw (start + M - 1)); the phase is reduced exactly in integers.
        let last = start + x.len().saturating_sub(1) as u64;
        let cycles = (self.freq * (last % self.rate)) % self.rate;
        let phase = -2.0 * PI * cycles as f64 / self.rate as f64;
        let rot = Complex {
            re: phase.cos(),
            im: phase.sin(),
        };
        Complex {
            re: y.re * rot.re - y.im * rot.im,
            im: y.re * rot.im + y.im * rot.re,
        }
    }
}

/// The filter outputs of one half-block.
#[derive(Debug, Clone, Copy)]
struct Half {
    z: [Complex; 8],
    energy: f64,
}

/// One window's verdict: a key, with what the whole-tone checks need.
#[derive(Debug, Clone, Copy)]
struct Hit {
    row: usize,
    col: usize,
    power_row: f64,
    power_col: f64,
    corr_row: Complex,
    corr_col: Complex,
}

/// Consecutive hits for one key.
#[derive(Debug, Clone, Copy)]
struct Tone {
    row: usize,
    col: usize,
    first_window: u64,
    last_window: u64,
    hits: u32,
    misses: u32,
    power_row: f64,
    power_col: f64,
    corr_row: Complex,
    corr_col: Complex,
}

impl Tone {
    fn new(window: u64, h: &Hit) -> Self {
        Self {
            row: h.row,
            col: h.col,
            first_window: window,
            last_window: window,
            hits: 1,
            misses: 0,
            power_row: h.power_row,
            power_col: h.power_col,
            corr_row: h.corr_row,
            corr_col: h.corr_col,
        }
    }

    fn is_same_key(&self, h: &Hit) -> bool {
        self.row == h.row && self.col == h.col
    }

    fn add(&mut self, window: u64, h: &Hit) {
        self.last_window = window;
        self.hits += 1;
        self.misses = 0;
        self.power_row += h.power_row;
        self.power_col += h.power_col;
        self.corr_row = self.corr_row.add(h.corr_row);
        self.corr_col = self.corr_col.add(h.corr_col);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goertzel_matches_a_direct_dft_with_absolute_phase() {
        let x: Vec<f64> = (0..51)
            .map(|i| ((i * 37 % 101) as f64 - 50.0) * 10.0)
            .collect();
        for f in [697u32, 1633] {
            let g = Goertzel::new(f, 8000);
            for start in [0u64, 51, 123_456] {
                let z = g.dft(&x, start);
                let w = 2.0 * PI * f64::from(f) / 8000.0;
                let (mut re, mut im) = (0.0, 0.0);
                for (m, v) in x.iter().enumerate() {
                    let ph = -w * (start + m as u64) as f64;
                    re += v * ph.cos();
                    im += v * ph.sin();
                }
                assert!((z.re - re).abs() < 1e-6 * (1.0 + re.abs()), "{f} {start}");
                assert!((z.im - im).abs() < 1e-6 * (1.0 + im.abs()), "{f} {start}");
            }
        }
    }

    #[test]
    fn window_gain_is_one_on_bin_and_falls_off() {
        assert_eq!(window_gain(0.0, 102.0, 8000.0), 1.0);
        let g = window_gain(39.2, 102.0, 8000.0); // half a bin
        assert!((g - 0.637).abs() < 0.01, "{g}");
    }

    #[test]
    fn rejects_bad_settings() {
        let bad_rate = InbandConfig {
            sample_rate: 11025,
            ..InbandConfig::default()
        };
        assert_eq!(
            InbandDetector::new(bad_rate).err(),
            Some(InbandError::UnsupportedSampleRate(11025))
        );
        let nan = InbandConfig {
            min_level_dbm0: f64::NAN,
            ..InbandConfig::default()
        };
        assert!(InbandDetector::new(nan).is_err());
        let d = InbandDetector::new(InbandConfig::default()).unwrap();
        assert_eq!((d.min_hits, d.end_misses), (4, 5));
    }
}
