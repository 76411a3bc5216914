//! The echo agent: the caller hears their own audio, optionally delayed (like Asterisk's
//! `Echo()` test application, plus a delay to make the round trip audible).

use std::collections::VecDeque;
use std::time::Duration;

use super::{AgentAction, FrameFormat, LocalAgent};

/// Sends back what the caller sends, `delay` later. Never hangs up.
#[derive(Debug, Clone)]
pub struct Echo {
    /// Exactly `delay_samples` samples between ticks: the audio still to send.
    line: VecDeque<i16>,
    delay_samples: usize,
}

impl Echo {
    /// An echo with `delay` (rounded to whole samples at the call's rate; zero returns each
    /// frame as it is).
    pub fn new(format: FrameFormat, delay: Duration) -> Echo {
        let delay_samples = usize::try_from(format.samples_in(delay)).unwrap_or(usize::MAX);
        // A delay beyond a minute is a configuration mistake; cap it so memory stays bounded.
        let delay_samples = delay_samples.min(60 * format.sample_rate() as usize);
        Echo {
            line: VecDeque::from(vec![0; delay_samples]),
            delay_samples,
        }
    }

    /// The delay in samples.
    pub fn delay_samples(&self) -> usize {
        self.delay_samples
    }
}

impl LocalAgent for Echo {
    fn on_frame(&mut self, caller: &[i16], out: &mut Vec<i16>) -> AgentAction {
        if self.delay_samples == 0 {
            out.extend_from_slice(caller);
            return AgentAction::Continue;
        }
        self.line.extend(caller);
        let n = caller.len().min(self.line.len());
        // Copied slice by slice (the ring's two halves), not sample by sample.
        let (a, b) = self.line.as_slices();
        let from_a = n.min(a.len());
        out.extend_from_slice(a.get(..from_a).unwrap_or_default());
        out.extend_from_slice(b.get(..n - from_a).unwrap_or_default());
        self.line.drain(..n);
        AgentAction::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_is_rounded_and_capped() {
        let f = FrameFormat::new(8000, Duration::from_millis(20)).unwrap();
        assert_eq!(
            Echo::new(f, Duration::from_millis(250)).delay_samples(),
            2000
        );
        assert_eq!(Echo::new(f, Duration::ZERO).delay_samples(), 0);
        assert_eq!(
            Echo::new(f, Duration::from_secs(3600)).delay_samples(),
            480_000
        );
    }
}
