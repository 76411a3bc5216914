//! The absolute frame schedule of a stream and its RTP timestamp clock.

use std::time::{Duration, Instant};

use crate::media::rtp::RtpTimestamp;

/// The frame geometry of the negotiated codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    /// PCM rate of the encoder and decoder, in Hz.
    pub sample_rate: u32,
    /// PCM samples per frame at `sample_rate`.
    pub frame_samples: usize,
    /// The RTP clock rate, in Hz.
    pub clock_rate: u32,
    /// Frame duration in nanoseconds.
    pub frame_ns: u64,
    /// RTP timestamp units per frame.
    pub ticks_per_frame: u32,
}

impl Layout {
    /// The layout of frames of `frame_samples` at `sample_rate` on an RTP clock of `clock_rate`;
    /// `None` if a rate is zero or the frame is empty.
    pub fn new(sample_rate: u32, frame_samples: usize, clock_rate: u32) -> Option<Self> {
        if sample_rate == 0 || clock_rate == 0 || frame_samples == 0 {
            return None;
        }
        let samples = u64::try_from(frame_samples).ok()?;
        let frame_ns = samples.checked_mul(1_000_000_000)? / u64::from(sample_rate);
        let ticks = samples.checked_mul(u64::from(clock_rate))? / u64::from(sample_rate);
        Some(Self {
            sample_rate,
            frame_samples,
            clock_rate,
            frame_ns,
            ticks_per_frame: u32::try_from(ticks).ok().filter(|t| *t > 0)?,
        })
    }

    /// The frame duration.
    pub fn frame(&self) -> Duration {
        Duration::from_nanos(self.frame_ns)
    }

    /// PCM samples in `d` at the sample rate (rounded down).
    pub fn samples_in(&self, d: Duration) -> usize {
        let n = crate::media::ticks_in(d, u64::from(self.sample_rate));
        usize::try_from(n).unwrap_or(usize::MAX)
    }
}

/// Tick `n` is due at `anchor + n × frame`; its RTP timestamp is `ts_anchor + n × ticks per
/// frame`. Both are computed from the anchor, never accumulated, so nothing drifts.
#[derive(Debug, Clone)]
pub(super) struct TickClock {
    anchor: Instant,
    ts_anchor: u32,
    layout: Layout,
    /// The next tick to process.
    next: u64,
}

impl TickClock {
    /// Tick 0 at `anchor`, with RTP timestamp `ts0`.
    pub fn new(anchor: Instant, layout: Layout, ts0: u32) -> Self {
        Self {
            anchor,
            ts_anchor: ts0,
            layout,
            next: 0,
        }
    }

    /// When tick `n` is due; `None` beyond what an `Instant` can hold.
    pub fn tick_time(&self, n: u64) -> Option<Instant> {
        let ns = self.layout.frame_ns.checked_mul(n)?;
        self.anchor.checked_add(Duration::from_nanos(ns))
    }

    /// The index of the next tick to process.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// When the next tick is due.
    pub fn next_time(&self) -> Option<Instant> {
        self.tick_time(self.next)
    }

    /// Marks the next tick as processed.
    pub fn advance(&mut self) {
        self.next += 1;
    }

    /// The RTP timestamp of tick `n`.
    pub fn ts_at_tick(&self, n: u64) -> RtpTimestamp {
        let offset = n.wrapping_mul(u64::from(self.layout.ticks_per_frame));
        RtpTimestamp(self.ts_anchor.wrapping_add(offset as u32))
    }

    /// The RTP timestamp at any instant (equal to [`Self::ts_at_tick`] at tick times).
    pub fn ts_at(&self, t: Instant) -> RtpTimestamp {
        let rate = u64::from(self.layout.clock_rate);
        if t >= self.anchor {
            let ticks = crate::media::ticks_in(t - self.anchor, rate);
            RtpTimestamp(self.ts_anchor.wrapping_add(ticks as u32))
        } else {
            let ticks = crate::media::ticks_in(self.anchor - t, rate);
            RtpTimestamp(self.ts_anchor.wrapping_sub(ticks as u32))
        }
    }

    /// Switches to a new layout (codec or ptime change) from the next tick on: that tick keeps
    /// its due time and timestamp and becomes tick 0 of the new schedule.
    pub fn reanchor(&mut self, layout: Layout) {
        if let Some(at) = self.next_time() {
            self.ts_anchor = self.ts_at_tick(self.next).0;
            self.anchor = at;
            self.next = 0;
        }
        self.layout = layout;
    }

    /// The current layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g722_layout_uses_the_8k_clock() {
        let l = Layout::new(16000, 320, 8000).unwrap();
        assert_eq!(l.ticks_per_frame, 160);
        assert_eq!(l.frame(), Duration::from_millis(20));
        let o = Layout::new(16000, 320, 48000).unwrap();
        assert_eq!(o.ticks_per_frame, 960);
        assert!(Layout::new(0, 160, 8000).is_none());
    }

    #[test]
    fn schedule_is_absolute_and_timestamps_agree() {
        let t0 = Instant::now();
        let l = Layout::new(8000, 160, 8000).unwrap();
        let mut c = TickClock::new(t0, l, u32::MAX - 100);
        assert_eq!(c.tick_time(30_000), Some(t0 + Duration::from_secs(600)));
        assert_eq!(c.ts_at_tick(1), RtpTimestamp(59));
        for n in [0u64, 1, 7, 1000] {
            assert_eq!(c.ts_at(c.tick_time(n).unwrap()), c.ts_at_tick(n));
        }
        c.advance();
        c.advance();
        let at = c.next_time().unwrap();
        let ts = c.ts_at_tick(2);
        c.reanchor(Layout::new(16000, 320, 8000).unwrap());
        assert_eq!(c.next(), 0);
        assert_eq!(c.next_time(), Some(at));
        assert_eq!(c.ts_at_tick(0), ts);
        assert_eq!(c.ts_at_tick(1), ts.add(160));
    }
}
