//! Speech turns from a VAD's probabilities: when the caller started talking (for barge-in:
//! only after a minimum of voiced time, so a cough or an "uh-huh" passes) and when they
//! stopped (for local turn-taking: after a stretch of silence).

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
        last_voiced: Instant,
    },
    Speaking {
        last_voiced: Instant,
    },
}

/// Turns per-frame speech probabilities into [`SpeechEvent`]s.
#[derive(Debug, Clone)]
pub struct SpeechDetector {
    cfg: SpeechConfig,
    state: State,
}

impl SpeechDetector {
    /// A detector in the quiet state.
    pub fn new(cfg: SpeechConfig) -> SpeechDetector {
        SpeechDetector {
            cfg,
            state: State::Quiet,
        }
    }

    /// Whether the caller is talking (started and not yet ended).
    pub fn is_speaking(&self) -> bool {
        matches!(self.state, State::Speaking { .. })
    }

    /// One frame of `len` that ended at `now`, with speech probability `prob`.
    pub fn handle_frame(&mut self, now: Instant, len: Duration, prob: f32) -> Option<SpeechEvent> {
        let voiced = prob >= self.cfg.threshold;
        match self.state {
            State::Quiet if voiced => {
                let start = now.checked_sub(len).unwrap_or(now);
                self.state = State::Onset {
                    start,
                    voiced: len,
                    last_voiced: now,
                };
                self.confirm()
            }
            State::Quiet => None,
            State::Onset {
                start,
                voiced: v,
                last_voiced,
            } => {
                if voiced {
                    self.state = State::Onset {
                        start,
                        voiced: v + len,
                        last_voiced: now,
                    };
                    self.confirm()
                } else {
                    if now.saturating_duration_since(last_voiced) > ONSET_GAP {
                        self.state = State::Quiet;
                    }
                    None
                }
            }
            State::Speaking { last_voiced } => {
                if voiced {
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

    /// From an onset: speech starts once it has been voiced for the minimum.
    fn confirm(&mut self) -> Option<SpeechEvent> {
        if let State::Onset {
            start,
            voiced,
            last_voiced,
        } = self.state
            && voiced >= self.cfg.min_speech
        {
            self.state = State::Speaking { last_voiced };
            return Some(SpeechEvent::Started { onset: start });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Duration = Duration::from_millis(20);

    /// Feeds `probs` as 20 ms frames from `t0`; returns (frame index, event).
    fn run(cfg: SpeechConfig, t0: Instant, probs: &[f32]) -> Vec<(usize, SpeechEvent)> {
        let mut d = SpeechDetector::new(cfg);
        probs
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                d.handle_frame(t0 + F * (i as u32 + 1), F, *p)
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
}
