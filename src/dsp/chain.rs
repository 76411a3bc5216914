//! One call's voice chain, between the jitter buffer and the AI backend: echo cancellation
//! against the audio voxline sent ([`super::aec`]), then noise suppression ([`super::ns`]),
//! then voice activity detection ([`super::vad`]) and speech turns ([`super::speech`]).
//! Each stage can be switched off; each stage's time is counted.

use std::time::{Duration, Instant};

use super::aec::{AecMetrics, EchoCanceller};
use super::leak::LeakGuard;
use super::ns::{NoiseSuppressor, NsLevel};
use super::speech::{SpeechConfig, SpeechDetector, SpeechEvent};
use super::vad::Vad;
use super::{DspError, StageClock, blocks};

/// Which stages run, and how.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChainConfig {
    /// Cancel the echo of voxline's own output.
    pub echo_cancellation: bool,
    /// Suppress noise at this level (`None`: off).
    pub noise_suppression: Option<NsLevel>,
    /// Detect speech (`None`: no VAD, so no local barge-in or turn-taking).
    pub speech: Option<SpeechConfig>,
}

impl Default for ChainConfig {
    /// What measured best (docs/dsp.md): echo cancellation on, noise suppression off (the
    /// models' own input noise reduction does it; ours costs CPU and colours speech for
    /// little SNR gain on telephone noise), VAD on with the default speech settings.
    fn default() -> Self {
        ChainConfig {
            echo_cancellation: true,
            noise_suppression: None,
            speech: Some(SpeechConfig::default()),
        }
    }
}

impl ChainConfig {
    /// Whether any stage runs.
    pub fn any(&self) -> bool {
        self.echo_cancellation || self.noise_suppression.is_some() || self.speech.is_some()
    }

    /// For the log: which stages are on.
    pub fn describe(&self) -> String {
        let mut v = Vec::new();
        if self.echo_cancellation {
            v.push("echo cancellation".to_owned());
        }
        if let Some(l) = self.noise_suppression {
            v.push(format!("noise suppression ({})", l.as_str()));
        }
        if let Some(s) = self.speech {
            v.push(format!(
                "VAD (min speech {} ms, end of turn after {} ms)",
                s.min_speech.as_millis(),
                s.end_silence.as_millis()
            ));
        }
        if v.is_empty() {
            "off".to_owned()
        } else {
            v.join(", ")
        }
    }
}

/// Time spent in each stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTimes {
    /// Echo cancellation.
    pub aec: Duration,
    /// Noise suppression.
    pub ns: Duration,
    /// VAD.
    pub vad: Duration,
}

impl StageTimes {
    /// All stages.
    pub fn total(&self) -> Duration {
        self.aec + self.ns + self.vad
    }
}

/// A chain's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ChainStats {
    /// Frames processed.
    pub frames: u64,
    /// Frames a stage failed on (passed on as they were).
    pub errors: u64,
    /// Time per stage.
    pub time: StageTimes,
    /// The echo canceller's estimates.
    pub aec: AecMetrics,
    /// Speech starts detected.
    pub speech_starts: u64,
    /// Frames taken for echo leaking through the canceller (not the caller).
    pub echo_frames: u64,
}

/// What one frame gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameOutcome {
    /// The VAD's speech probability (`None` without VAD).
    pub speech_prob: Option<f32>,
    /// A change in the caller's speech.
    pub event: Option<SpeechEvent>,
}

/// One call's chain.
#[derive(Debug)]
pub struct Chain {
    aec: Option<EchoCanceller>,
    ns: Option<NoiseSuppressor>,
    vad: Option<(Vad, SpeechDetector, LeakGuard)>,
    frame: Duration,
    stats: ChainStats,
    /// The caller's frame as it came in, before the canceller.
    raw: Vec<i16>,
}

impl Chain {
    /// A chain for mono audio at `rate` in frames of `frame_samples`. Errors if the rate or
    /// the frame does not suit the stages ([`super::blocks`]).
    pub fn new(cfg: &ChainConfig, rate: u32, frame_samples: usize) -> Result<Chain, DspError> {
        blocks(rate, frame_samples)?;
        let aec = if cfg.echo_cancellation {
            Some(EchoCanceller::new(rate, frame_samples)?)
        } else {
            None
        };
        let ns = match cfg.noise_suppression {
            Some(level) => Some(NoiseSuppressor::new(rate, frame_samples, level)?),
            None => None,
        };
        let vad = match cfg.speech {
            Some(s) => Some((
                Vad::new(rate, frame_samples)?,
                SpeechDetector::new(s),
                LeakGuard::new(rate, frame_samples)?,
            )),
            None => None,
        };
        Ok(Chain {
            aec,
            ns,
            vad,
            frame: Duration::from_micros(frame_samples as u64 * 1_000_000 / u64::from(rate)),
            stats: ChainStats::default(),
            raw: Vec::with_capacity(frame_samples),
        })
    }

    /// Processes the caller's frame `capture` in place, given `reference`, the audio sent in
    /// the same tick (as the far end decodes it), for the frame ending at `now`. A frame a
    /// stage fails on goes on as that stage left it, and is counted.
    pub fn process(
        &mut self,
        now: Instant,
        reference: &[i16],
        capture: &mut [i16],
        clock: &dyn StageClock,
    ) -> FrameOutcome {
        self.stats.frames += 1;
        let mut failed = false;
        let mut t = clock.now();
        self.raw.clear();
        self.raw.extend_from_slice(capture);
        if let Some(aec) = &mut self.aec {
            failed |= aec.process(reference, capture).is_err();
            let t2 = clock.now();
            self.stats.time.aec += t2.saturating_duration_since(t);
            t = t2;
        }
        if let Some(ns) = &mut self.ns {
            failed |= ns.process(capture).is_err();
            let t2 = clock.now();
            self.stats.time.ns += t2.saturating_duration_since(t);
            t = t2;
        }
        let mut out = FrameOutcome {
            speech_prob: None,
            event: None,
        };
        if let Some((vad, detector, guard)) = &mut self.vad {
            let level = super::speech::level_dbfs(capture);
            guard.push(reference, super::speech::level_dbfs(reference), &self.raw);
            // A loud output the canceller took little off, that follows the reference: echo
            // leaking through (the path changed), not the caller.
            let event = if level >= super::speech::MIN_LEVEL_DBFS
                && level > super::speech::level_dbfs(&self.raw) - super::leak::CANCELLED_DB
                && guard.is_echo()
            {
                self.stats.echo_frames += 1;
                out.speech_prob = Some(0.0);
                detector.handle_masked(now, self.frame)
            } else {
                // Frames too quiet to be speech skip the VAD (most of a call: the caller's
                // silence, and echo residue while the agent talks); its state copes with
                // the gaps as with WebRTC's periodic resets.
                let prob = if level < super::speech::MIN_LEVEL_DBFS {
                    Ok(0.0)
                } else {
                    vad.process(capture)
                };
                match prob {
                    Ok(p) => {
                        out.speech_prob = Some(p);
                        detector.handle_frame(now, self.frame, p, level)
                    }
                    Err(_) => {
                        failed = true;
                        None
                    }
                }
            };
            if matches!(event, Some(SpeechEvent::Started { .. })) {
                self.stats.speech_starts += 1;
            }
            out.event = event;
            self.stats.time.vad += clock.now().saturating_duration_since(t);
        }
        if failed {
            self.stats.errors += 1;
        }
        out
    }

    /// The counters, with the echo canceller's current estimates.
    pub fn stats(&self) -> ChainStats {
        let mut s = self.stats;
        if let Some(aec) = &self.aec {
            s.aec = aec.metrics();
        }
        s
    }
}

/// Synthetic signals for the stages' unit tests (the bench, tools/dsp_bench, uses speech).
#[cfg(test)]
pub(crate) mod testsig {
    /// A small deterministic generator.
    pub(crate) struct Lcg(pub u64);

    impl Lcg {
        /// Uniform in [-1, 1).
        pub(crate) fn next(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        }
    }

    /// White noise of `rms` (roughly).
    pub(crate) fn white(rng: &mut Lcg, len: usize, rms: f32) -> Vec<i16> {
        (0..len).map(|_| (rng.next() * rms * 1.73) as i16).collect()
    }

    /// Low-passed noise in 250 ms bursts with 125 ms pauses, with a pitch-like 120 Hz
    /// modulation: speech-shaped enough for the echo canceller and noise suppressor.
    pub(crate) fn speechlike(rng: &mut Lcg, len: usize) -> Vec<i16> {
        let mut y = 0f32;
        (0..len)
            .map(|n| {
                y = 0.7 * y + 0.3 * rng.next();
                let on = (n / 2000) % 3 != 2;
                let pitch =
                    0.6 + 0.4 * (n as f32 * 2.0 * std::f32::consts::PI * 120.0 / 8000.0).sin();
                if on { (y * pitch * 12_000.0) as i16 } else { 0 }
            })
            .collect()
    }

    /// Voiced syllables: 100–250 ms of harmonics of a pitch between 100 and 200 Hz, each
    /// harmonic weighted by a formant-like bump that moves from syllable to syllable, with
    /// 50–150 ms pauses. Spectrally like speech, unlike [`speechlike`].
    pub(crate) fn syllables(rng: &mut Lcg, len: usize) -> Vec<i16> {
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            let n = 800 + ((rng.next() + 1.0) * 600.0) as usize;
            let f0 = 150.0 + rng.next() * 50.0;
            let formant = 1200.0 + rng.next() * 900.0;
            let harmonics = (3400.0 / f0) as usize;
            for i in 0..n {
                let t = i as f32 / 8000.0;
                let env = (std::f32::consts::PI * i as f32 / n as f32).sin();
                let s: f32 = (1..=harmonics)
                    .map(|h| {
                        let f = f0 * h as f32;
                        let w = (-((f - formant) / 600.0).powi(2)).exp() + 0.2;
                        w * (2.0 * std::f32::consts::PI * f * t).sin()
                    })
                    .sum();
                v.push((s * env * 2500.0) as i16);
            }
            let gap = 400 + ((rng.next() + 1.0) * 400.0) as usize;
            v.extend(std::iter::repeat_n(0i16, gap));
        }
        v.truncate(len);
        v
    }

    /// Sum of squares.
    pub(crate) fn energy(x: &[i16]) -> f64 {
        x.iter().map(|s| f64::from(*s).powi(2)).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::testsig::{Lcg, speechlike};
    use super::*;

    /// A clock that moves 1 µs every time it is read.
    struct Ticking(Cell<Instant>);

    impl StageClock for Ticking {
        fn now(&self) -> Instant {
            let t = self.0.get() + Duration::from_micros(1);
            self.0.set(t);
            t
        }
    }

    #[test]
    fn each_stage_is_timed_and_a_stage_off_costs_nothing() {
        let t0 = Instant::now();
        let clock = Ticking(Cell::new(t0));
        let cfg = ChainConfig {
            echo_cancellation: true,
            noise_suppression: None,
            speech: Some(SpeechConfig::default()),
        };
        let mut chain = Chain::new(&cfg, 8000, 160).expect("chain");
        let mut rng = Lcg(5);
        let far = speechlike(&mut rng, 1600);
        for (k, f) in far.chunks_exact(160).enumerate() {
            let mut cap = f.to_vec();
            chain.process(
                t0 + Duration::from_millis(20 * k as u64),
                f,
                &mut cap,
                &clock,
            );
        }
        let s = chain.stats();
        assert_eq!(s.frames, 10);
        assert_eq!(s.time.aec, Duration::from_micros(10));
        assert_eq!(s.time.ns, Duration::ZERO);
        assert_eq!(s.time.vad, Duration::from_micros(10));
        assert_eq!(s.errors, 0);
    }

    #[test]
    fn a_wrong_frame_passes_through_and_is_counted() {
        let t0 = Instant::now();
        let clock = Ticking(Cell::new(t0));
        let mut chain = Chain::new(&ChainConfig::default(), 8000, 160).expect("chain");
        let mut cap = vec![100i16; 80];
        chain.process(t0, &[0; 160], &mut cap, &clock);
        assert_eq!(chain.stats().errors, 1);
        assert!(Chain::new(&ChainConfig::default(), 8000, 100).is_err());
    }
}
