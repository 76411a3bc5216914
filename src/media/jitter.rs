//! Adaptive jitter buffer, sans-IO.
//!
//! The caller [`push`](JitterBuffer::push)es every RTP packet it accepted (payload, sequence
//! number, timestamp, marker) with its arrival time, and calls [`pop`](JitterBuffer::pop)
//! once per frame from its absolute-clock pacer; each `pop` says what to play for that frame
//! as a [`Playout`]: a payload to decode, two payloads to decode into one frame's time
//! ([`Playout::Compress`]), a frame to conceal, or silence / comfort noise. No codec work
//! happens here; payloads are borrowed from the buffer until the next call.
//!
//! # How the delay adapts
//!
//! For each packet the buffer computes its relative transit `r = arrival - timestamp` (in
//! RTP ticks); the smallest `r` over the last [`JitterConfig::window`] packets is the
//! *base*, the transit of the fastest packet. A packet's extra delay is `d = r - base`. The
//! *target delay* is a high quantile ([`JitterConfig::quantile`]) of the recent `d` plus half
//! a frame (every packet's own `d` + half a frame at least), clamped to `min_delay..=max_delay`: it grows at once when a packet needs more
//! (grow fast) and decays towards the quantile by [`SHRINK_RATE`] of the difference every
//! [`SHRINK_EVERY`] packets (shrink slowly).
//!
//! The *current delay* of the frame being played is `now - timestamp - base`. At a talkspurt
//! start (after silence, or the first packet) playout starts exactly at the target. During
//! speech, when the current delay leaves `target - frame/4 ..= target + frame` the buffer
//! corrects by one frame at a time, at most every [`JitterConfig::adjust_interval`] frames:
//! [`Playout::Conceal`] with [`ConcealCause::Stretch`] (hold back one frame: the caller
//! time-stretches or conceals) or [`Playout::Compress`] (two frames in one slot: the caller
//! time-compresses or drops one). Clock drift needs nothing else: a sender clock that runs
//! fast makes `r` fall, the base follows, and the excess shows as current delay above the
//! target, which is removed a frame at a time (and added back for a slow sender). The drift
//! is also estimated for the stats.
//!
//! A missing frame is concealed ([`ConcealCause::Missing`]); after
//! [`JitterConfig::max_conceal_frames`] in a row the buffer emits [`Playout::Silence`] until
//! audio resumes, which then starts like a talkspurt. A gap in timestamps with contiguous
//! sequence numbers, or a marker bit, is the sender's own silence (DTX) and gives silence, not
//! concealment. Duplicates and packets whose slot has already been played are counted and
//! dropped.
//!
//! The remote packetisation must equal [`JitterConfig::frame`] (the negotiated ptime); a
//! stream with other frame sizes plays with silence gaps.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::media::rtp::{RtpTimestamp, SeqNo, ticks_to_duration};
use crate::media::spares::Spares;

/// Spent payload buffers kept for the next packets: one packet in and one out per frame is
/// the steady state; a burst's extra buffers are freed.
const PAYLOAD_SPARES: usize = 4;

/// Observations between two evaluations of the delay quantile for shrinking the target.
pub const SHRINK_EVERY: u64 = 10;

/// Fraction of the gap between the target and the quantile removed at each evaluation
/// (every [`SHRINK_EVERY`] packets: with 20 ms frames a time constant of about 7 s).
pub const SHRINK_RATE: f64 = 0.03;

/// The current delay may fall below the target by `frame / LOW_SLACK_DIVISOR` before a frame
/// is inserted: the target is the delay quantile plus half a frame, so playout keeps a quarter
/// frame of margin over the delays it covers.
pub const LOW_SLACK_DIVISOR: i64 = 4;

/// A sequence-number jump (either way) beyond which the buffer assumes a new stream.
pub const RESYNC_SEQ_JUMP: i64 = 1000;

/// A change of relative transit beyond which the buffer assumes a new timeline (a sender
/// that restarted its timestamps).
pub const RESYNC_TRANSIT: Duration = Duration::from_secs(3);

/// Interval of arrival time between two clock-drift estimates.
pub const DRIFT_PERIOD: Duration = Duration::from_secs(20);

/// Jitter-buffer settings.
#[derive(Debug, Clone, PartialEq)]
pub struct JitterConfig {
    /// RTP clock rate in Hz.
    pub clock_rate: u32,
    /// Frame duration: the ptime of the stream and the period of `pop`.
    pub frame: Duration,
    /// Lowest target delay (default 20 ms).
    pub min_delay: Duration,
    /// Highest target delay (default 200 ms).
    pub max_delay: Duration,
    /// Consecutive concealed frames after which the buffer plays silence (default 5).
    pub max_conceal_frames: u32,
    /// Packets held at most; the oldest is dropped beyond (default: 1 s + max delay).
    pub capacity: usize,
    /// Packets in the delay statistics window (default 250: 5 s of 20 ms frames).
    pub window: usize,
    /// Quantile of the extra delay the target covers (default 0.98).
    pub quantile: f64,
    /// Least frames between two one-frame corrections (default 3).
    pub adjust_interval: u32,
}

impl JitterConfig {
    /// Defaults for a stream at `clock_rate` with `frame`-long packets.
    pub fn new(clock_rate: u32, frame: Duration) -> Self {
        let max_delay = Duration::from_millis(200);
        let capacity = if frame.is_zero() {
            0
        } else {
            usize::try_from((Duration::from_secs(1) + max_delay).as_nanos() / frame.as_nanos())
                .unwrap_or(usize::MAX)
        };
        Self {
            clock_rate,
            frame,
            min_delay: Duration::from_millis(20),
            max_delay,
            max_conceal_frames: 5,
            capacity,
            window: 250,
            quantile: 0.98,
            adjust_interval: 3,
        }
    }
}

/// A [`JitterConfig`] that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JitterConfigError {
    /// Clock rate 0, or a frame shorter than one RTP tick.
    #[error("frame must be at least one tick of a non-zero clock rate")]
    Frame,
    /// `min_delay > max_delay`.
    #[error("min_delay exceeds max_delay")]
    DelayRange,
    /// Capacity under 2 packets or an empty window.
    #[error("capacity must be at least 2 and window at least 1")]
    Size,
    /// Quantile outside (0, 1].
    #[error("quantile must be in (0, 1]")]
    Quantile,
}

/// One frame to decode, borrowed from the buffer until the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The RTP payload.
    pub payload: &'a [u8],
    /// Its RTP timestamp.
    pub ts: RtpTimestamp,
    /// Its sequence number.
    pub seq: SeqNo,
    /// Its marker bit.
    pub marker: bool,
}

/// Why [`Playout::Conceal`] asks for a synthesised frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConcealCause {
    /// The packet for this slot is missing (lost, or not there in time).
    Missing,
    /// Inserted on purpose to grow the delay: stretch the previous audio by one frame.
    Stretch,
}

/// What to play for one frame slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playout<'a> {
    /// Decode and play this frame.
    Frame(Frame<'a>),
    /// Decode both frames and play them in one slot (time-compress, or drop one): the buffer
    /// is reducing its delay by one frame.
    Compress(Frame<'a>, Frame<'a>),
    /// Synthesise `samples` RTP ticks of audio (packet-loss concealment or time stretch).
    Conceal {
        /// Ticks to synthesise (one frame).
        samples: u32,
        /// Why.
        cause: ConcealCause,
        /// The next frame, if already buffered: a decoder with in-band FEC (Opus) can
        /// recover the missing frame from it. It stays in the buffer.
        next: Option<Frame<'a>>,
    },
    /// Nothing to play: silence or comfort noise for `samples` ticks (before the stream starts,
    /// in the sender's silence, or after a long gap).
    Silence {
        /// Ticks of silence (one frame).
        samples: u32,
    },
}

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Stored for playout.
    Queued,
    /// Already received: dropped.
    Duplicate,
    /// Its slot was already played or concealed: dropped (it still counts for the delay
    /// estimate).
    Late,
}

/// Jitter-buffer statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JitterStats {
    /// Current target delay.
    pub target_delay: Duration,
    /// Delay (from the fastest possible arrival) of the last frame played.
    pub current_delay: Duration,
    /// Sum of the delays of all frames played (for averages over an interval).
    pub played_delay_total: Duration,
    /// Calls to `pop`.
    pub frames: u64,
    /// Frames played (a compress counts two).
    pub played: u64,
    /// Frames concealed because their packet was missing.
    pub concealed: u64,
    /// Frames inserted to grow the delay ([`ConcealCause::Stretch`]).
    pub expanded: u64,
    /// Compressions (each removes one frame of delay).
    pub compressed: u64,
    /// Silence frames.
    pub silence: u64,
    /// Packets queued.
    pub queued: u64,
    /// Packets dropped as late (on push or when found stale at pop).
    pub late: u64,
    /// Duplicate packets dropped.
    pub duplicate: u64,
    /// Packets dropped because the buffer was full.
    pub overflow: u64,
    /// Concealments with nothing at all buffered.
    pub underruns: u64,
    /// New streams (explicit, or a detected sequence/timestamp discontinuity).
    pub resyncs: u64,
    /// Packets thrown away by a resync.
    pub flushed: u64,
    /// Packets in the buffer now.
    pub buffered: usize,
    /// Estimated sender clock drift in parts per million (positive: sender fast).
    pub drift_ppm: f64,
}

impl JitterStats {
    /// Concealed frames / (played + concealed): the share of speech frames that had to be
    /// synthesised because their packet was missing (stretch frames and silence excluded).
    pub fn concealment_ratio(&self) -> f64 {
        let total = self.played + self.concealed;
        if total == 0 {
            0.0
        } else {
            self.concealed as f64 / total as f64
        }
    }
}

/// The adaptive jitter buffer of one received stream.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    spf: i64,
    min_delay: i64,
    max_delay: i64,
    resync_transit: i64,
    epoch: Option<Instant>,
    reference: Option<Reference>,
    seen: u64,
    queue: VecDeque<Entry>,
    /// Spent payload buffers for the next packets (a few; more after a burst are freed).
    pool: Spares<Vec<u8>, PAYLOAD_SPARES>,
    out: [Option<Entry>; 2],
    est: Estimator,
    target: i64,
    state: State,
    played_until: Option<i64>,
    last_played_seq: Option<i64>,
    consecutive_conceal: u32,
    since_adjust: u32,
    stats: JitterStats,
    delay_total_ticks: u64,
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new(cfg: JitterConfig) -> Result<Self, JitterConfigError> {
        let rate = i64::from(cfg.clock_rate);
        let ticks = |d: Duration| -> i64 {
            i64::try_from(d.as_nanos() * u128::from(cfg.clock_rate) / 1_000_000_000)
                .unwrap_or(i64::MAX)
        };
        let spf = ticks(cfg.frame);
        if rate == 0 || spf < 1 || spf > i64::from(u32::MAX) {
            return Err(JitterConfigError::Frame);
        }
        if cfg.min_delay > cfg.max_delay {
            return Err(JitterConfigError::DelayRange);
        }
        if cfg.capacity < 2 || cfg.window < 1 {
            return Err(JitterConfigError::Size);
        }
        if !(cfg.quantile > 0.0 && cfg.quantile <= 1.0) {
            return Err(JitterConfigError::Quantile);
        }
        let min_delay = ticks(cfg.min_delay);
        let max_delay = ticks(cfg.max_delay);
        Ok(Self {
            spf,
            min_delay,
            max_delay,
            resync_transit: ticks(RESYNC_TRANSIT),
            epoch: None,
            reference: None,
            seen: 0,
            queue: VecDeque::with_capacity(cfg.capacity),
            pool: Spares::default(),
            out: [None, None],
            est: Estimator::new(cfg.window, ticks(DRIFT_PERIOD)),
            target: min_delay,
            state: State::Silence,
            played_until: None,
            last_played_seq: None,
            consecutive_conceal: 0,
            since_adjust: 0,
            stats: JitterStats::default(),
            delay_total_ticks: 0,
            cfg,
        })
    }

    /// Stores a packet that arrived at `now`.
    pub fn push(
        &mut self,
        now: Instant,
        seq: SeqNo,
        ts: RtpTimestamp,
        marker: bool,
        payload: &[u8],
    ) -> Pushed {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = self.ticks_since(epoch, now);

        let (mut ext_seq, mut ext_ts) = self.unwrap(seq, ts);
        let seq_jump = self
            .reference
            .is_some_and(|r| (ext_seq - r.ext_seq).abs() > RESYNC_SEQ_JUMP);
        let transit_jump = self
            .est
            .base
            .is_some_and(|b| (arrival - ext_ts - b).abs() > self.resync_transit);
        if seq_jump || transit_jump {
            self.new_stream();
            (ext_seq, ext_ts) = self.unwrap(seq, ts);
        }
        if self.is_duplicate(ext_seq) {
            self.stats.duplicate += 1;
            return Pushed::Duplicate;
        }
        match self.reference {
            Some(r) if r.ext_seq >= ext_seq => {}
            _ => {
                self.reference = Some(Reference {
                    ext_seq,
                    ext_ts,
                    seq,
                    ts,
                })
            }
        }

        self.observe(arrival, arrival - ext_ts);

        let half = self.spf / 2;
        let late_seq = self.last_played_seq.is_some_and(|s| ext_seq <= s);
        let late_ts = self.played_until.is_some_and(|u| ext_ts < u - half);
        if late_seq || late_ts {
            self.stats.late += 1;
            return Pushed::Late;
        }

        let mut pos = self.queue.len();
        while pos > 0 {
            let Some(prev) = self.queue.get(pos - 1) else {
                break;
            };
            if prev.seq == ext_seq {
                self.stats.duplicate += 1;
                return Pushed::Duplicate;
            }
            if prev.seq < ext_seq {
                break;
            }
            pos -= 1;
        }
        if self.queue.len() >= self.cfg.capacity {
            if let Some(old) = self.queue.pop_front() {
                self.pool.put(old.payload);
            }
            self.stats.overflow += 1;
            pos = pos.saturating_sub(1);
        }
        let mut buf = self.pool.take().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(payload);
        self.queue.insert(
            pos,
            Entry {
                seq: ext_seq,
                ts: ext_ts,
                raw_seq: seq,
                raw_ts: ts,
                marker,
                payload: buf,
            },
        );
        self.stats.queued += 1;
        Pushed::Queued
    }

    /// What to play for the frame slot starting at `now`; call once per frame.
    pub fn pop(&mut self, now: Instant) -> Playout<'_> {
        for slot in &mut self.out {
            if let Some(e) = slot.take() {
                self.pool.put(e.payload);
            }
        }
        self.stats.frames += 1;
        self.since_adjust = self.since_adjust.saturating_add(1);
        let samples = u32::try_from(self.spf).unwrap_or(u32::MAX);
        let (Some(epoch), Some(base)) = (self.epoch, self.est.base) else {
            self.stats.silence += 1;
            return Playout::Silence { samples };
        };
        let arrival = self.ticks_since(epoch, now);
        let ideal = arrival - base - self.target;
        let half = self.spf / 2;
        let slack = self.spf / LOW_SLACK_DIVISOR;
        self.drop_stale(ideal);

        let Some(p) = self.played_until.filter(|_| self.state == State::Speech) else {
            // Silence: start the next talkspurt when its first packet reaches the target.
            if self.queue.front().is_some_and(|f| f.ts <= ideal + slack) {
                return self.play_front(arrival, base);
            }
            self.stats.silence += 1;
            return Playout::Silence { samples };
        };

        let front = self.queue.front().map(|f| (f.seq, f.ts, f.marker));
        match front {
            Some((seq, ts, _)) if ts < p + half => {
                let err = ideal - p;
                let may_adjust = self.since_adjust >= self.cfg.adjust_interval;
                let contiguous = self
                    .queue
                    .get(1)
                    .is_some_and(|s| s.seq == seq + 1 && s.ts < p + self.spf + half);
                if may_adjust && err > self.spf && contiguous {
                    self.compress(arrival, base)
                } else if may_adjust && err < -slack {
                    self.since_adjust = 0;
                    self.stats.expanded += 1;
                    Playout::Conceal {
                        samples,
                        cause: ConcealCause::Stretch,
                        next: self.queue.front().map(Entry::frame),
                    }
                } else {
                    self.play_front(arrival, base)
                }
            }
            front => {
                let sender_silence = front.is_some_and(|(seq, _, marker)| {
                    marker || self.last_played_seq.is_some_and(|s| seq == s + 1)
                });
                self.consecutive_conceal += 1;
                if sender_silence || self.consecutive_conceal > self.cfg.max_conceal_frames {
                    self.state = State::Silence;
                    self.stats.silence += 1;
                    return Playout::Silence { samples };
                }
                if self.queue.is_empty() {
                    self.stats.underruns += 1;
                }
                self.stats.concealed += 1;
                self.played_until = Some(p + self.spf);
                let next_slot = p + self.spf + half;
                Playout::Conceal {
                    samples,
                    cause: ConcealCause::Missing,
                    next: self
                        .queue
                        .front()
                        .filter(|f| f.ts < next_slot)
                        .map(Entry::frame),
                }
            }
        }
    }

    /// Starts a new stream (e.g. after an SSRC change): drops what is buffered, forgets the
    /// sequence and timestamp origin and the transit base, keeps the target delay and the
    /// jitter history. The next packet starts like a talkspurt.
    pub fn new_stream(&mut self) {
        while let Some(e) = self.queue.pop_front() {
            self.pool.put(e.payload);
            self.stats.flushed += 1;
        }
        self.reference = None;
        self.seen = 0;
        self.est.reset_base();
        self.state = State::Silence;
        self.played_until = None;
        self.last_played_seq = None;
        self.consecutive_conceal = 0;
        self.stats.resyncs += 1;
    }

    /// The statistics.
    pub fn stats(&self) -> JitterStats {
        let mut s = self.stats;
        s.target_delay = self.duration(self.target);
        s.played_delay_total = self.duration(i64::try_from(self.delay_total_ticks).unwrap_or(0));
        s.buffered = self.queue.len();
        s.drift_ppm = self.est.drift_ppm;
        s
    }

    /// The configuration.
    pub fn config(&self) -> &JitterConfig {
        &self.cfg
    }

    fn ticks_since(&self, epoch: Instant, now: Instant) -> i64 {
        let ns = now.saturating_duration_since(epoch).as_nanos();
        i64::try_from(ns * u128::from(self.cfg.clock_rate) / 1_000_000_000).unwrap_or(i64::MAX)
    }

    fn duration(&self, ticks: i64) -> Duration {
        ticks_to_duration(u64::try_from(ticks).unwrap_or(0), self.cfg.clock_rate)
    }

    fn unwrap(&self, seq: SeqNo, ts: RtpTimestamp) -> (i64, i64) {
        match self.reference {
            Some(r) => (
                r.ext_seq + i64::from(seq.delta(r.seq)),
                r.ext_ts + i64::from(ts.delta(r.ts)),
            ),
            None => (i64::from(seq.0), i64::from(ts.0)),
        }
    }

    /// Checks and records `ext_seq` in the 64-packet window behind the highest one.
    fn is_duplicate(&mut self, ext_seq: i64) -> bool {
        let Some(r) = self.reference else {
            self.seen = 1;
            return false;
        };
        let behind = r.ext_seq - ext_seq;
        if behind < 0 {
            let shift = -behind;
            self.seen = if shift >= 64 {
                1
            } else {
                (self.seen << shift) | 1
            };
            false
        } else if behind < 64 {
            let bit = 1u64 << behind;
            let dup = self.seen & bit != 0;
            self.seen |= bit;
            dup
        } else {
            false
        }
    }

    fn observe(&mut self, arrival: i64, transit: i64) {
        let d = self.est.observe(arrival, transit);
        let half = self.spf / 2;
        let wanted = (d + half).clamp(self.min_delay, self.max_delay);
        if wanted > self.target {
            self.target = wanted;
        } else if self.target > self.min_delay && self.est.count.is_multiple_of(SHRINK_EVERY) {
            // (At the minimum there is nothing to shrink, and the quantile is not computed.)
            let q = self.est.quantile(self.cfg.quantile);
            let raw = (q + half).clamp(self.min_delay, self.max_delay);
            if raw < self.target {
                let step = ((self.target - raw) as f64 * SHRINK_RATE).ceil() as i64;
                self.target = (self.target - step.max(1)).max(raw);
            }
        }
    }

    /// Drops packets that can no longer be played: already played or concealed sequence
    /// numbers or timestamps, and (in silence) packets more than the maximum delay behind
    /// where playout should be, as after a long outage.
    fn drop_stale(&mut self, ideal: i64) {
        let half = self.spf / 2;
        while let Some(f) = self.queue.front() {
            let played = self.last_played_seq.is_some_and(|s| f.seq <= s)
                || self.played_until.is_some_and(|u| f.ts < u - half);
            let outage = self.state == State::Silence && f.ts < ideal - self.max_delay;
            if !(played || outage) {
                break;
            }
            if let Some(e) = self.queue.pop_front() {
                self.pool.put(e.payload);
            }
            self.stats.late += 1;
        }
    }

    fn take_front(&mut self, arrival: i64, base: i64) -> Option<Entry> {
        let e = self.queue.pop_front()?;
        self.state = State::Speech;
        self.consecutive_conceal = 0;
        self.played_until = Some(e.ts + self.spf);
        self.last_played_seq = Some(e.seq);
        let delay = (arrival - e.ts - base).max(0);
        self.stats.current_delay = self.duration(delay);
        self.delay_total_ticks += u64::try_from(delay).unwrap_or(0);
        self.stats.played += 1;
        Some(e)
    }

    fn play_front(&mut self, arrival: i64, base: i64) -> Playout<'_> {
        self.out[0] = self.take_front(arrival, base);
        match &self.out[0] {
            Some(e) => Playout::Frame(e.frame()),
            // invariant: callers check the queue is not empty; silence is the safe answer.
            None => Playout::Silence {
                samples: u32::try_from(self.spf).unwrap_or(u32::MAX),
            },
        }
    }

    fn compress(&mut self, arrival: i64, base: i64) -> Playout<'_> {
        self.out[0] = self.take_front(arrival, base);
        // The second frame is played in the same slot: same arrival time.
        self.out[1] = self.take_front(arrival + self.spf, base);
        self.since_adjust = 0;
        self.stats.compressed += 1;
        match (&self.out[0], &self.out[1]) {
            (Some(a), Some(b)) => Playout::Compress(a.frame(), b.frame()),
            (Some(a), None) => Playout::Frame(a.frame()),
            // invariant: callers check two frames are queued.
            _ => Playout::Silence {
                samples: u32::try_from(self.spf).unwrap_or(u32::MAX),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Playing frames or concealing them.
    Speech,
    /// Before the first packet, in the sender's silence, or after a long gap.
    Silence,
}

/// The highest packet seen: origin for unwrapping sequence numbers and timestamps.
#[derive(Debug, Clone, Copy)]
struct Reference {
    ext_seq: i64,
    ext_ts: i64,
    seq: SeqNo,
    ts: RtpTimestamp,
}

#[derive(Debug, Clone)]
struct Entry {
    seq: i64,
    ts: i64,
    raw_seq: SeqNo,
    raw_ts: RtpTimestamp,
    marker: bool,
    payload: Vec<u8>,
}

impl Entry {
    fn frame(&self) -> Frame<'_> {
        Frame {
            payload: &self.payload,
            ts: self.raw_ts,
            seq: self.raw_seq,
            marker: self.marker,
        }
    }
}

/// Transit statistics: sliding minimum (the base), a ring of extra delays for the quantile,
/// and the drift of the base.
#[derive(Debug, Clone)]
struct Estimator {
    window: usize,
    count: u64,
    /// Monotonic deque of (observation index, transit) for the sliding minimum.
    mins: VecDeque<(u64, i64)>,
    base: Option<i64>,
    ring: Vec<i64>,
    /// The ring slot the next observation overwrites once the ring is full.
    next_slot: usize,
    scratch: Vec<i64>,
    drift_period: i64,
    drift_mark: Option<(i64, i64)>,
    drift_ppm: f64,
}

impl Estimator {
    fn new(window: usize, drift_period: i64) -> Self {
        Self {
            window,
            count: 0,
            mins: VecDeque::with_capacity(window),
            base: None,
            ring: Vec::with_capacity(window),
            next_slot: 0,
            scratch: Vec::with_capacity(window),
            drift_period,
            drift_mark: None,
            drift_ppm: 0.0,
        }
    }

    fn reset_base(&mut self) {
        self.mins.clear();
        self.base = None;
        self.drift_mark = None;
    }

    /// Records one transit; returns its extra delay over the base.
    fn observe(&mut self, arrival: i64, transit: i64) -> i64 {
        let idx = self.count;
        self.count += 1;
        while self.mins.back().is_some_and(|&(_, t)| t >= transit) {
            self.mins.pop_back();
        }
        self.mins.push_back((idx, transit));
        let window = self.window as u64;
        while self.mins.front().is_some_and(|&(i, _)| i + window <= idx) {
            self.mins.pop_front();
        }
        let base = self.mins.front().map_or(transit, |&(_, t)| t);
        self.base = Some(base);
        let d = transit - base;
        // The ring is filled in order, then overwritten from the start (no division per packet).
        if self.ring.len() < self.window {
            self.ring.push(d);
        } else {
            if let Some(v) = self.ring.get_mut(self.next_slot) {
                *v = d;
            }
            self.next_slot += 1;
            if self.next_slot >= self.window {
                self.next_slot = 0;
            }
        }

        match self.drift_mark {
            None => self.drift_mark = Some((arrival, base)),
            Some((a0, b0)) if arrival - a0 >= self.drift_period => {
                // A sender that runs fast makes the transit (and the base) fall.
                let ppm = (b0 - base) as f64 / (arrival - a0) as f64 * 1e6;
                self.drift_ppm = if self.drift_ppm == 0.0 {
                    ppm
                } else {
                    0.7 * self.drift_ppm + 0.3 * ppm
                };
                self.drift_mark = Some((arrival, base));
            }
            Some(_) => {}
        }
        d
    }

    fn quantile(&mut self, q: f64) -> i64 {
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.ring);
        if self.scratch.is_empty() {
            return 0;
        }
        let k = ((self.scratch.len() - 1) as f64 * q).round() as usize;
        let k = k.min(self.scratch.len() - 1);
        let (_, v, _) = self.scratch.select_nth_unstable(k);
        *v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> JitterConfig {
        JitterConfig::new(8000, Duration::from_millis(20))
    }

    #[test]
    fn config_validation() {
        assert!(JitterBuffer::new(cfg()).is_ok());
        let mut c = cfg();
        c.clock_rate = 0;
        assert_eq!(JitterBuffer::new(c).err(), Some(JitterConfigError::Frame));
        let mut c = cfg();
        c.min_delay = Duration::from_secs(1);
        assert_eq!(
            JitterBuffer::new(c).err(),
            Some(JitterConfigError::DelayRange)
        );
        let mut c = cfg();
        c.quantile = 0.0;
        assert_eq!(
            JitterBuffer::new(c).err(),
            Some(JitterConfigError::Quantile)
        );
        let mut c = cfg();
        c.capacity = 1;
        assert_eq!(JitterBuffer::new(c).err(), Some(JitterConfigError::Size));
    }

    #[test]
    fn silence_before_first_packet() {
        let mut jb = JitterBuffer::new(cfg()).unwrap();
        let t = Instant::now();
        assert_eq!(jb.pop(t), Playout::Silence { samples: 160 });
    }

    #[test]
    fn first_packet_plays_after_target_and_duplicates_drop() {
        let mut jb = JitterBuffer::new(cfg()).unwrap();
        let t0 = Instant::now();
        assert_eq!(
            jb.push(t0, SeqNo(1), RtpTimestamp(160), true, b"a"),
            Pushed::Queued
        );
        assert_eq!(
            jb.push(t0, SeqNo(1), RtpTimestamp(160), true, b"a"),
            Pushed::Duplicate
        );
        // Target 20 ms: playout starts once the delay reaches target - frame/4 = 15 ms.
        assert!(matches!(jb.pop(t0), Playout::Silence { .. }));
        assert!(matches!(
            jb.pop(t0 + Duration::from_millis(14)),
            Playout::Silence { .. }
        ));
        match jb.pop(t0 + Duration::from_millis(15)) {
            Playout::Frame(f) => {
                assert_eq!(f.payload, b"a");
                assert_eq!(f.seq, SeqNo(1));
                assert!(f.marker);
            }
            other => panic!("expected a frame, got {other:?}"),
        }
        // Its slot is played: a copy arriving now is dropped.
        assert_eq!(
            jb.push(
                t0 + Duration::from_millis(16),
                SeqNo(1),
                RtpTimestamp(160),
                false,
                b"a"
            ),
            Pushed::Duplicate
        );
    }

    /// Pushes frame `k` (seq 100 + k, ts 160 k) arriving at `t0 + 20 k ms + 30 ms`.
    fn push_k(jb: &mut JitterBuffer, t0: Instant, k: u32, ts_frames: u32, marker: bool) {
        let at = t0 + Duration::from_millis(u64::from(20 * k + 30));
        jb.push(
            at,
            SeqNo(100 + k as u16),
            RtpTimestamp(160 * ts_frames),
            marker,
            &k.to_be_bytes(),
        );
    }

    #[test]
    fn sender_silence_ends_in_silence_and_the_next_talkspurt_plays() {
        let mut jb = JitterBuffer::new(cfg()).unwrap();
        let t0 = Instant::now();
        let mut outputs = Vec::new();
        for j in 0..120u32 {
            // Frames 0-9, then (DTX) nothing until frame 60, which starts a talkspurt.
            if j < 10 {
                push_k(&mut jb, t0, j, j, j == 0);
            } else if j >= 60 {
                let k = j - 50;
                let at = t0 + Duration::from_millis(u64::from(20 * j + 30));
                jb.push(
                    at,
                    SeqNo(100 + k as u16),
                    RtpTimestamp(160 * j),
                    j == 60,
                    b"t2",
                );
            }
            let now = t0 + Duration::from_millis(u64::from(20 * j + 47));
            outputs.push(match jb.pop(now) {
                Playout::Frame(_) => 'F',
                Playout::Compress(..) => 'C',
                Playout::Conceal { .. } => 'X',
                Playout::Silence { .. } => '.',
            });
        }
        let s = jb.stats();
        let line: String = outputs.into_iter().collect();
        // Nothing says the talkspurt ended (the next packet comes a second later), so the
        // first missing frames are concealed, max_conceal_frames of them, then silence; the
        // next talkspurt (marker) plays in full.
        let expected = format!(
            "{}{}{}{}",
            "F".repeat(10),
            "X".repeat(5),
            ".".repeat(45),
            "F".repeat(60)
        );
        assert_eq!(line, expected);
        assert_eq!((s.played, s.concealed, s.late), (70, 5, 0));
    }

    #[test]
    fn a_missing_frame_is_concealed_with_the_next_one_offered_for_fec() {
        let mut jb = JitterBuffer::new(cfg()).unwrap();
        let t0 = Instant::now();
        let mut saw_conceal = false;
        for j in 0..10u32 {
            if j != 4 {
                push_k(&mut jb, t0, j, j, j == 0);
            }
            // Frame j-1 is due at each pop, frame j is buffered.
            match jb.pop(t0 + Duration::from_millis(u64::from(20 * j + 35))) {
                Playout::Conceal {
                    cause: ConcealCause::Missing,
                    next,
                    ..
                } => {
                    saw_conceal = true;
                    assert_eq!(next.map(|f| f.payload), Some(&5u32.to_be_bytes()[..]));
                }
                Playout::Frame(f) => assert_ne!(f.payload, 4u32.to_be_bytes()),
                _ => {}
            }
        }
        assert!(saw_conceal);
        assert_eq!(jb.stats().concealed, 1);
    }
}
