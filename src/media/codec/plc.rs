//! Packet loss concealment for the waveform codecs (G.711, G.722) by pitch-period repetition:
//! a simplified ITU-T G.711 Appendix I.
//!
//! On the first lost packet the pitch period of the last good audio is estimated by normalised
//! autocorrelation; the last period is then repeated, at full level for the first 10 ms of the
//! loss and fading linearly to silence at 60 ms. When good audio returns, its first 4 ms are
//! cross-faded from the continued repetition. Unlike Appendix I, output is not delayed, the
//! repeated segment stays one period long, and the loss start is not overlap-added.

/// How much decoded audio is kept for the pitch search, in milliseconds.
const HISTORY_MS: usize = 30;
/// The lowest pitch searched for, in Hz (longest period ≈ 15 ms).
const MIN_PITCH_HZ: usize = 66;
/// The highest pitch searched for, in Hz (shortest period 2.5 ms).
const MAX_PITCH_HZ: usize = 400;
/// The autocorrelation window, in milliseconds.
const WINDOW_MS: usize = 10;
/// Concealment stays at full level this long, in milliseconds (G.711 Appendix I: 10 ms).
const FULL_LEVEL_MS: usize = 10;
/// Concealment has faded to silence after this long, in milliseconds (Appendix I: 60 ms).
const SILENT_AFTER_MS: usize = 60;
/// The cross-fade from concealment back into decoded audio, in milliseconds.
const CROSSFADE_MS: usize = 4;

/// Concealment state for one decoder.
#[derive(Debug, Clone)]
pub(crate) struct Plc {
    /// The last `HISTORY_MS` of decoded audio: a ring whose oldest sample is at `oldest`
    /// (each frame is written once, not shifted along); rotated to oldest-first when a loss
    /// starts, so concealment reads it in order.
    history: Vec<i16>,
    /// Where the oldest sample of `history` is.
    oldest: usize,
    /// Whether `history` has seen any decoded audio yet.
    primed: bool,
    /// Samples concealed in the current loss burst; 0 when not in a loss.
    lost: usize,
    /// The repeated pitch period during a loss, in samples.
    period: usize,
    /// The next sample of the repeated period.
    phase: usize,
    min_lag: usize,
    max_lag: usize,
    window: usize,
    full_level: usize,
    silent_after: usize,
    crossfade: usize,
}

impl Plc {
    /// State for audio at `sample_rate` Hz.
    pub(crate) fn new(sample_rate: u32) -> Self {
        let per_ms = (sample_rate / 1000) as usize;
        let rate = sample_rate as usize;
        Self {
            history: vec![0; HISTORY_MS * per_ms],
            oldest: 0,
            primed: false,
            lost: 0,
            period: 1,
            phase: 0,
            min_lag: rate / MAX_PITCH_HZ,
            max_lag: rate / MIN_PITCH_HZ,
            window: WINDOW_MS * per_ms,
            full_level: FULL_LEVEL_MS * per_ms,
            silent_after: SILENT_AFTER_MS * per_ms,
            crossfade: CROSSFADE_MS * per_ms,
        }
    }

    /// Appends `samples` concealment samples to `out`.
    pub(crate) fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) {
        if !self.primed {
            out.resize(out.len() + samples, 0);
            return;
        }
        if self.lost == 0 {
            // Oldest first for the pitch search and the repetition (no audio is recorded
            // until the loss ends).
            self.history.rotate_left(self.oldest);
            self.oldest = 0;
            self.period = self.estimate_period();
            self.phase = 0;
        }
        out.reserve(samples);
        for _ in 0..samples {
            let s = self.next_repeated();
            out.push(s);
        }
    }

    /// Called after good audio has been appended to `out` from index `start`: ends a loss
    /// burst with a cross-fade, then records the audio as history.
    pub(crate) fn after_decode(&mut self, out: &mut [i16], start: usize) {
        let Some(fresh) = out.get_mut(start..) else {
            return;
        };
        if self.lost > 0 {
            if self.primed {
                let n = self.crossfade.min(fresh.len());
                for (i, sample) in fresh.iter_mut().take(n).enumerate() {
                    let concealed = i64::from(self.next_repeated());
                    let w = (i + 1) as i64;
                    let total = (n + 1) as i64;
                    let mixed = (concealed * (total - w) + i64::from(*sample) * w) / total;
                    *sample = mixed as i16;
                }
            }
            self.lost = 0;
        }
        self.record(fresh);
    }

    /// Appends decoded audio to the history.
    fn record(&mut self, audio: &[i16]) {
        if audio.is_empty() {
            return;
        }
        self.primed = true;
        let keep = self.history.len();
        // invariant: the slices below stay in bounds by the comparisons with `keep` and
        // `oldest < keep`.
        if audio.len() >= keep {
            self.history.copy_from_slice(&audio[audio.len() - keep..]);
            self.oldest = 0;
        } else {
            let first = (keep - self.oldest).min(audio.len());
            self.history[self.oldest..self.oldest + first].copy_from_slice(&audio[..first]);
            let rest = audio.len() - first;
            self.history[..rest].copy_from_slice(&audio[first..]);
            self.oldest += audio.len();
            if self.oldest >= keep {
                self.oldest -= keep;
            }
        }
    }

    /// The next sample of the faded repetition; advances the loss position.
    fn next_repeated(&mut self) -> i16 {
        let len = self.history.len();
        // invariant: 1 <= period <= max_lag < history length, and phase < period.
        let s = i64::from(self.history[len - self.period + self.phase]);
        self.phase = (self.phase + 1) % self.period;
        let n = self.lost;
        self.lost = self.lost.saturating_add(1);
        if n < self.full_level {
            s as i16
        } else if n >= self.silent_after {
            0
        } else {
            let fade = (self.silent_after - self.full_level) as i64;
            (s * (self.silent_after - n) as i64 / fade) as i16
        }
    }

    /// The lag in `[min_lag, max_lag]` with the highest normalised autocorrelation over the
    /// last `window` samples; `max_lag` if nothing correlates (noise or silence).
    fn estimate_period(&self) -> usize {
        let h = &self.history;
        // invariant: history (30 ms) > window (10 ms) + max_lag (at most 15.2 ms), so every
        // slice below is in bounds.
        let end = h.len();
        let begin = end - self.window;
        let recent = &h[begin..end];
        let mut best = self.max_lag;
        let mut best_score = 0.0f64;
        for lag in self.min_lag..=self.max_lag {
            let past = &h[begin - lag..end - lag];
            let (mut corr, mut energy) = (0i64, 0i64);
            for (&a, &b) in recent.iter().zip(past) {
                corr += i64::from(a) * i64::from(b);
                energy += i64::from(b) * i64::from(b);
            }
            if corr <= 0 || energy == 0 {
                continue;
            }
            let c = corr as f64;
            let score = c * c / energy as f64;
            if score > best_score {
                best_score = score;
                best = lag;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: f64, from: usize, n: usize) -> Vec<i16> {
        (from..from + n)
            .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * freq * i as f64 / rate).sin()) as i16)
            .collect()
    }

    fn snr_db(reference: &[i16], test: &[i16]) -> f64 {
        let (mut sig, mut err) = (0.0, 0.0);
        for (&r, &t) in reference.iter().zip(test) {
            sig += f64::from(r) * f64::from(r);
            err += (f64::from(r) - f64::from(t)).powi(2);
        }
        10.0 * (sig / err.max(1e-9)).log10()
    }

    #[test]
    fn repeats_the_pitch_period_of_a_tone() {
        let mut plc = Plc::new(8000);
        let good = tone(250.0, 8000.0, 0, 480);
        let mut out = good.clone();
        plc.after_decode(&mut out, 0);
        assert_eq!(plc.estimate_period(), 32);
        // The first 10 ms of concealment continue the tone at full level.
        plc.conceal(80, &mut out);
        let expected = tone(250.0, 8000.0, 480, 80);
        assert!(snr_db(&expected, &out[480..]) > 30.0);
    }

    #[test]
    fn fades_to_silence_after_60_ms() {
        let mut plc = Plc::new(16000);
        let mut out = tone(200.0, 16000.0, 0, 320);
        plc.after_decode(&mut out, 0);
        plc.conceal(1600, &mut out);
        let concealed = &out[320..];
        let peak = |s: &[i16]| s.iter().map(|x| x.unsigned_abs()).max().unwrap_or(0);
        assert!(peak(&concealed[..160]) > 7000);
        assert!(peak(&concealed[480..640]) < peak(&concealed[160..320]));
        assert_eq!(peak(&concealed[960..]), 0);
    }

    #[test]
    fn history_ring_conceals_like_audio_recorded_in_one_piece() {
        // 50-sample frames wrap the 240-sample ring at different offsets; the concealment
        // must equal that of a history written in one piece, across two losses.
        let audio = tone(233.0, 8000.0, 0, 1000);
        let mut ring = Plc::new(8000);
        for chunk in audio[..650].chunks(50) {
            let mut c = chunk.to_vec();
            ring.after_decode(&mut c, 0);
        }
        let mut whole = Plc::new(8000);
        let mut w = audio[..650].to_vec();
        whole.after_decode(&mut w, 0);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        ring.conceal(160, &mut a);
        whole.conceal(160, &mut b);
        assert_eq!(a, b);
        assert!(a.iter().any(|&x| x != 0));
        for chunk in audio[650..1000].chunks(70) {
            let (mut c, mut d) = (chunk.to_vec(), chunk.to_vec());
            ring.after_decode(&mut c, 0);
            whole.after_decode(&mut d, 0);
            assert_eq!(c, d, "the same cross-fade");
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        ring.conceal(200, &mut a);
        whole.conceal(200, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn silence_before_any_audio_and_crossfade_after_a_loss() {
        let mut plc = Plc::new(8000);
        let mut out = Vec::new();
        plc.conceal(160, &mut out);
        assert_eq!(out, vec![0; 160]);

        let mut plc = Plc::new(8000);
        let mut out = vec![10_000i16; 240];
        plc.after_decode(&mut out, 0);
        plc.conceal(800, &mut out); // 100 ms: faded to silence
        let start = out.len();
        out.extend(std::iter::repeat_n(10_000i16, 160));
        plc.after_decode(&mut out, start);
        // The first good samples ramp up from silence instead of jumping.
        assert!(out[start] < 1000);
        assert!(out[start + 16] > out[start + 8]);
        assert_eq!(out[start + 40], 10_000);
        assert_eq!(plc.lost, 0);
    }
}
