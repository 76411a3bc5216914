//! Speech turns from a VAD's probabilities and the frames' levels: when the caller started
//! talking (for barge-in: only after a minimum speech time, so a cough or a short "mm" passes)
//! and when they stopped (for local turn-taking: after a stretch of silence).
//!
//! A VAD is sure of speech only 40–180 ms after it starts (it needs a few pitch
//! periods), so the onset is taken from the level instead: speech is timed from the frame
//! where the level rose above the noise floor, and confirmed by the VAD (voiced, in frames
//! above the floor, for at least a quarter of the minimum). A barge-in is thus decided at
//! the minimum speech time after the onset, not after the VAD's latency plus the minimum.
//! A sound the VAD never calls speech (a door) never starts speech however loud, and a
//! steady noise the VAD takes for speech (pink noise, a fan) never rises above the floor.

use std::time::{Duration, Instant};

/// Default probability from which a block counts as voiced.
pub const DEFAULT_THRESHOLD: f32 = 0.5;
/// Default voiced time before speech counts as started (barge-in).
pub const DEFAULT_MIN_SPEECH: Duration = Duration::from_millis(200);
/// Default silence after speech before the turn counts as ended (local turn-taking).
pub const DEFAULT_END_SILENCE: Duration = Duration::from_millis(500);
/// An unvoiced stretch this long or shorter inside an onset (between syllables) does not
/// restart it; a longer one does.
pub const ONSET_GAP: Duration = Duration::from_millis(100);
/// An onset is confirmed as speech once the VAD called at least this fraction (1/n) of the
/// minimum speech time voiced (with 200 ms, 50 ms: three 20 ms frames). A fifth (two frames)
/// let the agent's echo start speech in end-to-end calls (2 of 4 runs of tests/realtime).
pub const VOICED_SHARE: u32 = 4;
/// At the moment of decision the caller may be between two sounds for up to this long (a
/// stop consonant, a breath between words): speech that started still starts. A sound
/// that ended earlier than this before the minimum speech time (a cough) does not.
pub const DECISION_GAP: Duration = Duration::from_millis(20);
/// The longest run of masked frames (echo leaking, see [`SpeechDetector::handle_masked`])
/// right before an onset that is taken as the onset's start: a caller's voice rising over the
/// agent's echo first looks like echo (the capture still follows the reference). A longer
/// run is a leak.
pub const MASKED_ONSET: Duration = Duration::from_millis(60);
/// Once speech started, a voiced frame counts only this far above the noise floor: a steady
/// noise the VAD takes for speech (hiss, a fan) does not hold the turn open.
pub const VOICED_MARGIN_DB: f32 = 6.0;
/// A frame this far above the noise floor is sound (a possible onset).
pub const ONSET_MARGIN_DB: f32 = 9.0;
/// Frames quieter than this are never sound (dBFS).
pub const MIN_LEVEL_DBFS: f32 = -55.0;
/// How fast the noise floor estimate rises towards a louder steady level (it falls at once).
pub const FLOOR_RISE_DB_PER_S: f32 = 3.0;

/// How speech turns are decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeechConfig {
    /// A frame whose speech probability reaches this is voiced.
    pub threshold: f32,
    /// Voiced time before speech counts as started.
    pub min_speech: Duration,
    /// Silence after speech before the turn counts as ended.
    pub end_silence: Duration,
}

impl Default for SpeechConfig {
    fn default() -> Self {
        SpeechConfig {
            threshold: DEFAULT_THRESHOLD,
            min_speech: DEFAULT_MIN_SPEECH,
            end_silence: DEFAULT_END_SILENCE,
        }
    }
}

/// A change in the caller's speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeechEvent {
    /// The caller has been talking for the minimum speech time.
    Started {
        /// When the first voiced frame began.
        onset: Instant,
    },
    /// The caller was silent for the end-of-turn silence.
    Ended {
        /// The end of the last voiced frame.
        last_voiced: Instant,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Quiet,
    Onset {
        start: Instant,
        voiced: Duration,
        /// Time in frames with sound.
        sound: Duration,
        /// Time in masked frames (echo leaking).
        masked: Duration,
        last_sound: Instant,
    },
    Speaking {
        last_voiced: Instant,
    },
}

impl State {
    /// A new onset from `start`, whose first sound frame of `len` ended at `now` (`voiced`
    /// of it voiced).
    fn onset(start: Instant, now: Instant, len: Duration, voiced: Duration) -> State {
        State::Onset {
            start,
            voiced,
            sound: len,
            masked: Duration::ZERO,
            last_sound: now,
        }
    }
}

/// Turns per-frame speech probabilities into [`SpeechEvent`]s.
#[derive(Debug, Clone)]
pub struct SpeechDetector {
    cfg: SpeechConfig,
    state: State,
    /// Noise floor estimate, dBFS (`None` before the first frame, which sets it).
    floor: Option<f32>,
    /// The start and end of the run of masked frames up to the last frame, if it was masked.
    masked_run: Option<(Instant, Instant)>,
}

impl SpeechDetector {
    /// A detector in the quiet state.
    pub fn new(cfg: SpeechConfig) -> SpeechDetector {
        SpeechDetector {
            cfg,
            state: State::Quiet,
            floor: None,
            masked_run: None,
        }
    }

    /// One frame of `len` that ended at `now`, with speech probability `prob` and level
    /// `level_dbfs` (its RMS; see [`level_dbfs`]).
    pub fn handle_frame(
        &mut self,
        now: Instant,
        len: Duration,
        prob: f32,
        level_dbfs: f32,
    ) -> Option<SpeechEvent> {
        let voiced = prob >= self.cfg.threshold;
        let floor = self.floor.unwrap_or(level_dbfs);
        let sound = level_dbfs > floor + ONSET_MARGIN_DB && level_dbfs > MIN_LEVEL_DBFS;
        self.floor = Some(if level_dbfs < floor {
            level_dbfs
        } else {
            floor + FLOOR_RISE_DB_PER_S * len.as_secs_f32()
        });
        // Voiced time counts towards an onset only in frames with sound: a steady noise the
        // VAD takes for speech (pink noise, a fan) never rises above the floor.
        let v = if voiced && sound { len } else { Duration::ZERO };
        let masked_run = self.masked_run.take();
        match self.state {
            State::Quiet if sound => {
                let begin = now.checked_sub(len).unwrap_or(now);
                let start = match masked_run {
                    Some((from, to))
                        if to == begin && begin.saturating_duration_since(from) <= MASKED_ONSET =>
                    {
                        from
                    }
                    _ => begin,
                };
                self.state = State::onset(start, now, len, v);
                self.confirm(now)
            }
            State::Quiet => None,
            State::Onset {
                start,
                voiced: total,
                sound: heard,
                masked: leaked,
                last_sound,
            } => {
                if sound {
                    // A steady sound the VAD never calls speech: time a new onset from here.
                    let stale = total.is_zero()
                        && now.saturating_duration_since(start) > self.cfg.min_speech * 3;
                    self.state = if stale {
                        State::onset(now.checked_sub(len).unwrap_or(now), now, len, v)
                    } else {
                        State::Onset {
                            start,
                            voiced: total + v,
                            sound: heard + len,
                            masked: leaked,
                            last_sound: now,
                        }
                    };
                    self.confirm(now)
                } else if now.saturating_duration_since(last_sound) > ONSET_GAP {
                    self.state = State::Quiet;
                    None
                } else {
                    self.confirm(now)
                }
            }
            State::Speaking { last_voiced } => {
                if voiced && level_dbfs > floor + VOICED_MARGIN_DB {
                    self.state = State::Speaking { last_voiced: now };
                    None
                } else if now.saturating_duration_since(last_voiced) >= self.cfg.end_silence {
                    self.state = State::Quiet;
                    Some(SpeechEvent::Ended { last_voiced })
                } else {
                    None
                }
            }
        }
    }

    /// One frame of `len` that ended at `now` that is known not to be the caller (echo
    /// leaking through the canceller): neither voiced nor sound, and the noise floor keeps
    /// its estimate.
    ///
    /// A second masked frame ends an onset in progress that has voiced frames. An onset right after
    /// at most [`MASKED_ONSET`] of masked frames is timed from their start.
    pub fn handle_masked(&mut self, now: Instant, len: Duration) -> Option<SpeechEvent> {
        let floor = self.floor;
        // Echo inside an onset the VAD already called speech, more than a stray frame of it:
        // that speech was most likely the leak's first frames (the guard needs a few to be
        // sure), and the onset starts again from the next sound. Before any voiced frame, or
        // for a single frame, it is more likely a caller's onset over the agent (the VAD lags
        // the level; the guard sometimes flags a frame of a caller), and it goes on.
        if let State::Onset {
            voiced,
            ref mut masked,
            ..
        } = self.state
        {
            *masked += len;
            if !voiced.is_zero() && *masked > len {
                self.state = State::Quiet;
            }
        }
        let run = match self.masked_run {
            Some((from, to)) if Some(to) == now.checked_sub(len) => (from, now),
            _ => (now.checked_sub(len).unwrap_or(now), now),
        };
        let ev = self.handle_frame(now, len, 0.0, MIN_LEVEL_DBFS - 1.0);
        self.floor = floor;
        self.masked_run = Some(run);
        ev
    }

    /// From an onset: speech starts once the minimum speech time has passed since the onset,
    /// at least half of the time since had sound (speech is mostly continuous; leaking echo
    /// residue comes in scattered bursts), the VAD called at least a
    /// [`VOICED_SHARE`]th of the minimum voiced, and the caller made a sound in this frame
    /// or up to [`DECISION_GAP`] before it.
    fn confirm(&mut self, now: Instant) -> Option<SpeechEvent> {
        if let State::Onset {
            start,
            voiced,
            sound,
            last_sound,
            ..
        } = self.state
            && now.saturating_duration_since(start) >= self.cfg.min_speech
            && voiced >= self.cfg.min_speech / VOICED_SHARE
            && sound * 2 >= now.saturating_duration_since(start)
            && now.saturating_duration_since(last_sound) <= DECISION_GAP
        {
            self.state = State::Speaking {
                last_voiced: last_sound,
            };
            return Some(SpeechEvent::Started { onset: start });
        }
        None
    }
}

/// The RMS level of `frame` in dBFS (-120 for digital silence).
pub fn level_dbfs(frame: &[i16]) -> f32 {
    if frame.is_empty() {
        return -120.0;
    }
    let e: f64 = frame.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / frame.len() as f64;
    if e <= 0.0 {
        return -120.0;
    }
    (10.0 * (e / (32768.0f64 * 32768.0)).log10()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Duration = Duration::from_millis(20);

    /// Feeds `probs` as 20 ms frames from `t0`; returns (frame index, event).
    fn run(cfg: SpeechConfig, t0: Instant, probs: &[f32]) -> Vec<(usize, SpeechEvent)> {
        let mut d = SpeechDetector::new(cfg);
        // The line before: quiet (the first frame sets the noise floor).
        d.handle_frame(t0, F, 0.0, -70.0);
        probs
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                // Voiced frames are loud, the rest quiet.
                let level = if *p >= 0.5 { -20.0 } else { -70.0 };
                d.handle_frame(t0 + F * (i as u32 + 1), F, *p, level)
                    .map(|e| (i, e))
            })
            .collect()
    }

    #[test]
    fn speech_starts_after_the_minimum_and_ends_after_the_silence() {
        let t0 = Instant::now();
        let mut p = vec![0.0; 5];
        p.extend([0.9; 30]);
        p.extend([0.1; 30]);
        let ev = run(SpeechConfig::default(), t0, &p);
        // Voiced from frame 5 (its start is t0 + 100 ms); 200 ms = 10 frames: frame 14.
        assert_eq!(
            ev[0],
            (
                14,
                SpeechEvent::Started {
                    onset: t0 + Duration::from_millis(100)
                }
            )
        );
        // Last voiced frame 34 ends at 700 ms; 500 ms of silence: frame 59 ends at 1200 ms.
        assert_eq!(
            ev[1],
            (
                59,
                SpeechEvent::Ended {
                    last_voiced: t0 + Duration::from_millis(700)
                }
            )
        );
        assert_eq!(ev.len(), 2);
    }

    #[test]
    fn a_short_cough_does_not_start_speech_and_short_gaps_do_not_restart_an_onset() {
        let t0 = Instant::now();
        let mut cough = vec![0.9; 8];
        cough.extend([0.0; 20]);
        assert!(run(SpeechConfig::default(), t0, &cough).is_empty());
        // Syllables with 60 ms gaps: voiced time adds up across them.
        let mut syl = Vec::new();
        for _ in 0..4 {
            syl.extend([0.9; 4]);
            syl.extend([0.0; 3]);
        }
        let ev = run(SpeechConfig::default(), t0, &syl);
        assert!(matches!(ev[..], [(_, SpeechEvent::Started { onset })] if onset == t0));
    }

    #[test]
    fn a_pause_at_the_moment_of_decision_does_not_delay_it_but_a_longer_silence_does() {
        let t0 = Instant::now();
        // Speech for 9 frames (180 ms), a 40 ms pause, then more: frame 9 ends 200 ms after
        // the onset and follows a sound by one frame, so speech starts there.
        let mut probs = vec![0.9; 9];
        probs.extend([0.0; 2]);
        probs.extend([0.9; 5]);
        let ev = run(SpeechConfig::default(), t0, &probs);
        assert!(matches!(ev[..], [(9, SpeechEvent::Started { onset })] if onset == t0));
        // 160 ms of sound, then 40 ms of silence at the decision: not yet speech; it starts
        // only when the sound resumes (frame 10).
        let mut probs = vec![0.9; 8];
        probs.extend([0.0; 2]);
        probs.extend([0.9; 3]);
        let ev = run(SpeechConfig::default(), t0, &probs);
        assert!(matches!(ev[..], [(10, SpeechEvent::Started { onset })] if onset == t0));
    }

    #[test]
    fn an_onset_right_after_a_short_masked_run_is_timed_from_it_but_not_after_a_leak() {
        let t0 = Instant::now();
        let at = |i: u32| t0 + F * (i + 1);
        for (masked, onset_frame) in [(2u32, 10u32), (3, 9), (4, 12)] {
            let mut d = SpeechDetector::new(SpeechConfig::default());
            let first = 12 - masked;
            let mut started = None;
            for i in 0..40 {
                let ev = if i < first {
                    d.handle_frame(at(i), F, 0.0, -70.0)
                } else if i < 12 {
                    d.handle_masked(at(i), F)
                } else {
                    d.handle_frame(at(i), F, 0.9, -20.0)
                };
                if let Some(SpeechEvent::Started { onset }) = ev {
                    started = Some(onset);
                }
            }
            // Up to 60 ms of masked frames: the onset is the first masked frame's start;
            // 80 ms is a leak, and the onset is the first unmasked frame's.
            assert_eq!(
                started,
                Some(t0 + F * onset_frame),
                "{masked} masked frames"
            );
        }
    }

    #[test]
    fn a_steady_noise_the_vad_calls_speech_never_starts_speech_but_speech_over_it_does() {
        let t0 = Instant::now();
        let mut d = SpeechDetector::new(SpeechConfig::default());
        let at = |i: u32| t0 + F * (i + 1);
        // Pink noise at -35 dBFS (±1 dB), every frame voiced, for 10 s.
        let mut events = Vec::new();
        for i in 0..500 {
            let level = -35.0 + if i % 3 == 0 { 1.0 } else { -1.0 };
            events.extend(d.handle_frame(at(i), F, 0.9, level));
        }
        assert!(events.is_empty(), "{events:?}");
        // The caller talks over it at -20 dBFS: speech starts 200 ms after.
        for i in 500..520 {
            events.extend(d.handle_frame(at(i), F, 0.9, -20.0));
        }
        assert_eq!(
            events,
            vec![SpeechEvent::Started {
                onset: t0 + F * 500
            }]
        );
    }

    #[test]
    fn a_turn_ends_in_a_steady_noise_the_vad_calls_speech() {
        let t0 = Instant::now();
        let mut d = SpeechDetector::new(SpeechConfig::default());
        let at = |i: u32| t0 + F * (i + 1);
        let mut events = Vec::new();
        for i in 0..5 {
            events.extend(d.handle_frame(at(i), F, 0.0, -45.0));
        }
        // The caller talks for a second, then hiss at -45 dBFS the VAD calls speech.
        for i in 5..55 {
            events.extend(d.handle_frame(at(i), F, 0.9, -20.0));
        }
        for i in 55..200 {
            let level = -45.0 + if i % 2 == 0 { 1.5 } else { -1.5 };
            events.extend(d.handle_frame(at(i), F, 0.9, level));
        }
        assert_eq!(
            events,
            vec![
                SpeechEvent::Started { onset: t0 + F * 5 },
                SpeechEvent::Ended {
                    last_voiced: at(54)
                }
            ]
        );
    }

    #[test]
    fn the_onset_is_timed_from_the_level_and_confirmed_by_the_vad() {
        let t0 = Instant::now();
        let mut d = SpeechDetector::new(SpeechConfig::default());
        let at = |i: u32| t0 + F * (i + 1);
        // Quiet line, then sound from frame 10 that the VAD calls speech only from frame 14.
        for i in 0..10 {
            assert_eq!(d.handle_frame(at(i), F, 0.0, -70.0), None);
        }
        let mut started = None;
        for i in 10..40 {
            let p = if i >= 14 { 0.9 } else { 0.1 };
            if let Some(e) = d.handle_frame(at(i), F, p, -25.0) {
                started = Some((i, e));
                break;
            }
        }
        // 200 ms after the onset at frame 10's start: the frame ending at 300 ms (frame 19).
        assert_eq!(
            started,
            Some((
                19,
                SpeechEvent::Started {
                    onset: t0 + Duration::from_millis(200)
                }
            ))
        );
    }

    #[test]
    fn loud_sound_the_vad_never_calls_speech_never_starts_speech() {
        let t0 = Instant::now();
        let mut d = SpeechDetector::new(SpeechConfig::default());
        for i in 0..500u32 {
            assert_eq!(d.handle_frame(t0 + F * (i + 1), F, 0.2, -10.0), None);
        }
        assert_eq!(level_dbfs(&[0; 160]), -120.0);
        assert!((level_dbfs(&[16384; 160]) + 6.02).abs() < 0.01);
    }
}
