//! Adaptive jitter buffer on the RTP timeline, sans-IO.
//!
//! The caller [`push`](JitterBuffer::push)es every RTP packet it accepted (payload, sequence
//! number, timestamp, marker, and how many RTP ticks of audio the payload holds) with its
//! arrival time, and calls [`pop`](JitterBuffer::pop) once per frame from its absolute-clock
//! pacer. Packets may be of any duration (10, 30 or 60 ms G.711, 2.5 ms Opus frames, a
//! packetisation that changes mid-call): the buffer works on the RTP timeline in ticks, not in
//! packets. Each `pop` covers exactly one frame of the timeline (two when compressing, none
//! when stretching) and says how to fill it as a [`Playout`]: a list of [`Segment`]s, each a
//! slice of one received packet, a span to conceal, or a span of silence, whose lengths add up
//! to the ticks covered. No codec work happens here; payloads are borrowed from the buffer
//! until the next call.
//!
//! # How the delay adapts
//!
//! For each packet the buffer computes its relative transit `r = arrival - timestamp` (in
//! RTP ticks); the smallest `r` over the last [`JitterConfig::window`] packets is the
//! *base*, the transit of the fastest packet. A packet's extra delay is `d = r - base`, plus
//! its *phase*: how far into a playout frame its first tick falls. A 30 ms packet that starts
//! 10 ms into a 20 ms frame must be there when that frame is played, 10 ms before its own
//! timestamp comes due, so it needs 10 ms more buffering than an aligned one. The *target
//! delay* is a high quantile ([`JitterConfig::quantile`]) of the recent `d + phase` plus half
//! a frame, clamped to `min_delay..=max_delay`: it grows at once when a packet needs more
//! (grow fast) and decays towards the quantile by [`SHRINK_RATE`] of the difference every
//! [`SHRINK_EVERY`] packets (shrink slowly).
//!
//! The *playout position* is the timeline tick the next frame starts at. At a talkspurt start
//! (after silence, or the first packet) it is the first packet's timestamp, taken when that
//! packet has waited the target delay. During speech the *current delay*
//! `now - position - base` is kept in the band `target - frame/4 ..= target + frame` by
//! one-frame corrections, at most every [`JitterConfig::adjust_interval`] frames: a
//! [`Adjust::Stretch`] (the frame is synthesised and the position stays: the caller
//! time-stretches or conceals) or an [`Adjust::Compress`] (two frames of the timeline in one
//! slot, once both are buffered: the caller time-compresses them or keeps the later one). Clock drift needs nothing else: a sender
//! clock that runs fast makes `r` fall, the base follows, and the excess shows as current delay
//! above the target, which is removed a frame at a time (and added back for a slow sender). The
//! drift is also estimated for the stats. A stretch happens only at a packet boundary (or with
//! the next packet not there yet), so that the concealment continues the audio actually
//! played. The delay added to a frame is thus at most the target plus one frame (plus, with
//! a drifting sender clock or a shrinking target, what they move in the few frames until the
//! next compression is allowed). A talkspurt starts within that band: the first packet plays
//! at the first frame after it has waited `target - frame/4`.
//!
//! A span of the timeline no packet covers is concealed, exactly that many ticks
//! ([`ConcealCause::Missing`]); after [`JitterConfig::max_conceal_frames`] frames of it in a
//! row the buffer plays silence until audio resumes, which then starts like a talkspurt. A gap
//! in timestamps with contiguous sequence numbers, or a marker bit, is the sender's own silence
//! (DTX) and gives silence, not concealment. Duplicates and packets whose span has already
//! been played are counted and dropped; a packet whose start was concealed because it came late
//! still plays its remaining ticks.

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
/// that restarted its timestamps): the receiver's plausibility bound, which lets such a
/// packet through once the next one in sequence confirms it.
pub const RESYNC_TRANSIT: Duration = crate::media::rtp::MAX_TRANSIT_JUMP;

/// Interval of arrival time between two clock-drift estimates.
pub const DRIFT_PERIOD: Duration = Duration::from_secs(20);

/// The longest packet accepted: RFC 3551 §4.2 asks receivers to take packets of up to 200 ms.
pub const MAX_PACKET: Duration = Duration::from_millis(200);

/// The shortest packet the default capacity is sized for: an Opus frame of 2.5 ms (RFC 6716
/// §2.1.4).
pub const MIN_PACKET: Duration = Duration::from_micros(2500);

/// Jitter-buffer settings.
#[derive(Debug, Clone, PartialEq)]
pub struct JitterConfig {
    /// RTP clock rate in Hz.
    pub clock_rate: u32,
    /// Frame duration: what each `pop` plays, and its period. Independent of the packet
    /// sizes the far end sends.
    pub frame: Duration,
    /// Lowest target delay (default 20 ms).
    pub min_delay: Duration,
    /// Highest target delay (default 200 ms).
    pub max_delay: Duration,
    /// Frames of consecutive concealment after which the buffer plays silence (default 5).
    pub max_conceal_frames: u32,
    /// Packets held at most; the oldest is dropped beyond (default: 1 s + max delay of
    /// [`MIN_PACKET`] packets). Independently, packets more than 1 s + max delay behind the
    /// newest one are dropped.
    pub capacity: usize,
    /// Packets in the delay statistics window (default 250: 5 s of 20 ms packets).
    pub window: usize,
    /// Quantile of the extra delay the target covers (default 0.98).
    pub quantile: f64,
    /// Least frames between two one-frame corrections (default 3).
    pub adjust_interval: u32,
}

impl JitterConfig {
    /// Defaults for a stream at `clock_rate` played in `frame`-long frames.
    pub fn new(clock_rate: u32, frame: Duration) -> Self {
        let max_delay = Duration::from_millis(200);
        Self {
            clock_rate,
            frame,
            min_delay: Duration::from_millis(20),
            max_delay,
            max_conceal_frames: 5,
            capacity: default_capacity(max_delay),
            window: 250,
            quantile: 0.98,
            adjust_interval: 3,
        }
    }
}

/// Packets of [`MIN_PACKET`] in 1 s + `max_delay`.
pub fn default_capacity(max_delay: Duration) -> usize {
    let span = (Duration::from_secs(1) + max_delay).as_nanos();
    usize::try_from(span / MIN_PACKET.as_nanos()).unwrap_or(usize::MAX)
}

/// A [`JitterConfig`] that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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

/// One received packet, borrowed from the buffer until the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The RTP payload.
    pub payload: &'a [u8],
    /// Its RTP timestamp.
    pub ts: RtpTimestamp,
    /// Its sequence number.
    pub seq: SeqNo,
    /// Its marker bit.
    pub marker: bool,
    /// The RTP ticks of audio it holds (given to [`JitterBuffer::push`]).
    pub duration: u32,
}

/// Why a [`Segment::Conceal`] asks for synthesised audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConcealCause {
    /// No packet covers this span (lost, or not there in time).
    Missing,
    /// Inserted on purpose to grow the delay: stretch the audio played so far by one frame.
    Stretch,
}

/// A correction of the delay made by one [`JitterBuffer::pop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adjust {
    /// One frame of the timeline in one frame slot.
    None,
    /// Two frames of the timeline in one slot: the caller time-compresses them or keeps
    /// the later one. The delay falls by one frame.
    Compress,
    /// One frame synthesised without consuming the timeline. The delay grows by one frame.
    Stretch,
}

/// A piece of one frame's playout, in RTP ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'a> {
    /// Ticks `offset .. offset + len` of a received packet. A packet may be spread over
    /// several frames: it appears in each with the part that frame plays.
    Audio {
        /// The packet.
        packet: Packet<'a>,
        /// The first tick played, from the packet's start.
        offset: u32,
        /// Ticks played.
        len: u32,
    },
    /// `len` ticks to synthesise (packet-loss concealment, or a stretch).
    Conceal {
        /// Ticks.
        len: u32,
        /// Why.
        cause: ConcealCause,
        /// The packet right after the missing span, if already buffered: a decoder with
        /// in-band FEC (Opus) can recover the span from it. It stays in the buffer.
        next: Option<Packet<'a>>,
    },
    /// `len` ticks of silence or comfort noise (before the stream starts, in the sender's
    /// silence, or after a long gap).
    Silence {
        /// Ticks.
        len: u32,
    },
}

/// What to play for one frame slot: see [`JitterBuffer::pop`].
#[derive(Debug, Clone, Copy)]
pub struct Playout<'a> {
    jb: &'a JitterBuffer,
}

impl<'a> Playout<'a> {
    /// The correction this frame makes.
    pub fn adjust(&self) -> Adjust {
        self.jb.adjust
    }

    /// The segments in timeline order. Their lengths add up to [`Self::ticks`].
    pub fn segments(&self) -> impl Iterator<Item = Segment<'a>> + 'a {
        let jb = self.jb;
        jb.segs.iter().map(move |s| jb.segment(*s))
    }

    /// The ticks the segments cover: one frame, two for [`Adjust::Compress`].
    pub fn ticks(&self) -> u32 {
        self.jb.segs.iter().map(|s| s.len()).sum()
    }
}

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Stored for playout.
    Queued,
    /// Already received: dropped.
    Duplicate,
    /// Its whole span was already played or concealed: dropped (it still counts for the
    /// delay estimate).
    Late,
    /// A duration of zero or above [`MAX_PACKET`]: dropped.
    Invalid,
}

/// Jitter-buffer statistics. Amounts of audio are in RTP ticks (samples of the RTP clock).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JitterStats {
    /// Current target delay.
    pub target_delay: Duration,
    /// Delay (from the fastest possible arrival) of the last frame played.
    pub current_delay: Duration,
    /// Sum of the delays of the frames that played audio (over `speech_frames`).
    pub played_delay_total: Duration,
    /// Calls to `pop`.
    pub frames: u64,
    /// Frames that played received or concealed audio (not silence, not stretch).
    pub speech_frames: u64,
    /// Ticks of received audio played (both frames of a compression count).
    pub played: u64,
    /// Ticks concealed because no packet covered them.
    pub concealed: u64,
    /// Ticks inserted to grow the delay ([`Adjust::Stretch`]).
    pub expanded: u64,
    /// Compressions.
    pub compressed: u64,
    /// Ticks of delay the compressions removed (a frame each).
    pub removed: u64,
    /// Ticks of silence.
    pub silence: u64,
    /// Packets queued.
    pub queued: u64,
    /// Packets dropped as late (on push or when found stale at pop).
    pub late: u64,
    /// Duplicate packets dropped.
    pub duplicate: u64,
    /// Packets dropped because the buffer was full.
    pub overflow: u64,
    /// Packets dropped for a duration of zero or above [`MAX_PACKET`].
    pub invalid: u64,
    /// Frames that concealed with nothing at all buffered.
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
    /// Concealed ticks / (played + concealed): the share of speech that had to be synthesised
    /// because its packet was missing (stretches and silence excluded).
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
    /// Ticks per frame.
    spf: i64,
    min_delay: i64,
    max_delay: i64,
    max_conceal: i64,
    max_packet: i64,
    /// Ticks between the oldest packet kept and the newest one's end.
    span: i64,
    resync_transit: i64,
    epoch: Option<Instant>,
    reference: Option<Reference>,
    seen: u64,
    /// Buffered packets in sequence order; the first `consumed` were played by the last
    /// `pop` and go at the next call.
    queue: VecDeque<Entry>,
    consumed: usize,
    /// Spent payload buffers for the next packets (a few; more after a burst are freed).
    pool: Spares<Vec<u8>, PAYLOAD_SPARES>,
    /// The last `pop`'s segments.
    segs: Vec<Seg>,
    adjust: Adjust,
    est: Estimator,
    target: i64,
    state: State,
    /// The timeline tick the next frame starts at (meaningful in speech; frames of the last
    /// talkspurt stay on its grid for the phase of new packets).
    pos: i64,
    /// The position the last talkspurt started at: frames start on its grid of `spf` ticks.
    grid: Option<i64>,
    /// The end of what has been played or concealed.
    played_until: Option<i64>,
    /// The sequence number of the last packet played from.
    last_seq: Option<i64>,
    /// Ticks concealed in a row.
    conceal_run: i64,
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
        if rate == 0 || spf < 1 || spf > i64::from(u32::MAX) / 4 {
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
            max_conceal: spf.saturating_mul(i64::from(cfg.max_conceal_frames)),
            max_packet: ticks(MAX_PACKET),
            span: ticks(Duration::from_secs(1)).saturating_add(max_delay),
            resync_transit: ticks(RESYNC_TRANSIT),
            epoch: None,
            reference: None,
            seen: 0,
            queue: VecDeque::new(),
            consumed: 0,
            pool: Spares::default(),
            segs: Vec::new(),
            adjust: Adjust::None,
            est: Estimator::new(cfg.window, ticks(DRIFT_PERIOD)),
            target: min_delay,
            state: State::Silence,
            pos: 0,
            grid: None,
            played_until: None,
            last_seq: None,
            conceal_run: 0,
            since_adjust: 0,
            stats: JitterStats::default(),
            delay_total_ticks: 0,
            cfg,
        })
    }

    /// Stores a packet that arrived at `now`, holding `duration` RTP ticks of audio.
    pub fn push(
        &mut self,
        now: Instant,
        seq: SeqNo,
        ts: RtpTimestamp,
        marker: bool,
        payload: &[u8],
        duration: u32,
    ) -> Pushed {
        self.release();
        let dur = i64::from(duration);
        if dur == 0 || dur > self.max_packet {
            self.stats.invalid += 1;
            return Pushed::Invalid;
        }
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

        let phase = self.grid.map_or(0, |g| (ext_ts - g).rem_euclid(self.spf));
        self.observe(arrival, arrival - ext_ts, phase);

        let late_seq = self.last_seq.is_some_and(|s| ext_seq <= s);
        let late_ts = self.played_until.is_some_and(|u| ext_ts + dur <= u);
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
        let newest_end = self
            .queue
            .back()
            .map_or(ext_ts + dur, |b| b.end().max(ext_ts + dur));
        while self.queue.len() >= self.cfg.capacity
            || self
                .queue
                .front()
                .is_some_and(|f| newest_end - f.ts > self.span)
        {
            let Some(old) = self.queue.pop_front() else {
                break;
            };
            self.pool.put(old.payload);
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
                dur,
                raw_seq: seq,
                raw_ts: ts,
                marker,
                payload: buf,
            },
        );
        self.stats.queued += 1;
        Pushed::Queued
    }

    /// What to play for the frame slot starting at `now`; call once per frame. The segments
    /// of the answer cover one frame of the timeline, two on [`Adjust::Compress`].
    pub fn pop(&mut self, now: Instant) -> Playout<'_> {
        self.release();
        self.segs.clear();
        self.adjust = Adjust::None;
        self.stats.frames += 1;
        self.since_adjust = self.since_adjust.saturating_add(1);
        let spf = self.spf;
        let (Some(epoch), Some(base)) = (self.epoch, self.est.base) else {
            self.silence(spf);
            return Playout { jb: self };
        };
        let arrival = self.ticks_since(epoch, now);
        let ideal = arrival - base - self.target;
        let slack = spf / LOW_SLACK_DIVISOR;
        self.drop_stale(ideal);

        if self.state == State::Silence {
            // Start the next talkspurt when its first packet has waited the target delay.
            match self.queue.front() {
                Some(f) if f.ts <= ideal + slack => {
                    self.pos = f.ts;
                    self.grid = Some(f.ts);
                    self.state = State::Speech;
                    self.conceal_run = 0;
                }
                _ => {
                    self.silence(spf);
                    return Playout { jb: self };
                }
            }
        } else {
            let err = ideal - self.pos;
            let may_adjust = self.since_adjust >= self.cfg.adjust_interval;
            // A whole frame, and only with two frames buffered: dropping less would cut
            // into audio that a late packet or the next correction may still need.
            let extra = (self.covered() - spf).min(spf);
            if may_adjust && err > spf && extra >= spf {
                self.adjust = Adjust::Compress;
                self.since_adjust = 0;
                self.stats.compressed += 1;
                self.stats.removed += extra.unsigned_abs();
                self.note_delay(arrival - self.pos - base);
                self.fill(spf + extra);
                return Playout { jb: self };
            }
            // Not in the middle of a packet: its decoding is already ahead of the position.
            let at_boundary = self.queue.front().is_none_or(|f| f.ts >= self.pos);
            if may_adjust && err < -slack && at_boundary {
                self.adjust = Adjust::Stretch;
                self.since_adjust = 0;
                self.stats.expanded += spf.unsigned_abs();
                self.segs.push(Seg::Conceal {
                    len: seg_len(spf),
                    cause: ConcealCause::Stretch,
                    next: None,
                });
                return Playout { jb: self };
            }
        }
        self.note_delay(arrival - self.pos - base);
        self.fill(spf);
        Playout { jb: self }
    }

    /// Starts a new stream (e.g. after an SSRC change): drops what is buffered, forgets the
    /// sequence and timestamp origin and the transit base, keeps the target delay and the
    /// jitter history. The next packet starts like a talkspurt.
    pub fn new_stream(&mut self) {
        self.release();
        while let Some(e) = self.queue.pop_front() {
            self.pool.put(e.payload);
            self.stats.flushed += 1;
        }
        self.segs.clear();
        self.reference = None;
        self.seen = 0;
        self.est.reset_base();
        self.state = State::Silence;
        self.grid = None;
        self.played_until = None;
        self.last_seq = None;
        self.conceal_run = 0;
        self.stats.resyncs += 1;
    }

    /// The statistics.
    pub fn stats(&self) -> JitterStats {
        let mut s = self.stats;
        s.target_delay = self.duration(self.target);
        s.played_delay_total = self.duration(i64::try_from(self.delay_total_ticks).unwrap_or(0));
        s.buffered = self.queue.len() - self.consumed;
        s.drift_ppm = self.est.drift_ppm;
        s
    }

    /// The configuration.
    pub fn config(&self) -> &JitterConfig {
        &self.cfg
    }

    /// Ticks per frame.
    pub fn frame_ticks(&self) -> u32 {
        seg_len(self.spf)
    }

    /// Frees the packets the last `pop` played in full.
    fn release(&mut self) {
        for _ in 0..self.consumed {
            if let Some(e) = self.queue.pop_front() {
                self.pool.put(e.payload);
            }
        }
        self.consumed = 0;
    }

    fn segment(&self, s: Seg) -> Segment<'_> {
        let packet = |i: usize| self.queue.get(i).map(Entry::packet);
        match s {
            Seg::Audio { idx, offset, len } => match packet(idx) {
                Some(packet) => Segment::Audio {
                    packet,
                    offset,
                    len,
                },
                // invariant: `fill` records indices of entries kept until the next call.
                None => Segment::Silence { len },
            },
            Seg::Conceal { len, cause, next } => Segment::Conceal {
                len,
                cause,
                next: next.and_then(packet),
            },
            Seg::Silence { len } => Segment::Silence { len },
        }
    }

    /// Plays `len` ticks of the timeline from the playout position: packets where they cover
    /// it, concealment or silence where they do not.
    fn fill(&mut self, len: i64) {
        let end = self.pos + len;
        let mut idx = 0;
        let mut underrun = false;
        while self.pos < end {
            let front = self
                .queue
                .get(idx)
                .map(|e| (e.ts, e.end(), e.seq, e.marker));
            match front {
                Some((_, e_end, _, _)) if e_end <= self.pos => {
                    // Overlapped by the packets before it.
                    idx += 1;
                    self.stats.late += 1;
                }
                Some((e_ts, e_end, e_seq, _)) if e_ts <= self.pos => {
                    let take = e_end.min(end) - self.pos;
                    self.segs.push(Seg::Audio {
                        idx,
                        offset: seg_len(self.pos - e_ts),
                        len: seg_len(take),
                    });
                    self.pos += take;
                    self.stats.played += take.unsigned_abs();
                    self.last_seq = Some(e_seq);
                    self.conceal_run = 0;
                    if self.pos >= e_end {
                        idx += 1;
                    }
                }
                next => {
                    let gap_end = next.map_or(end, |(t, ..)| t.min(end));
                    let dtx = next.is_some_and(|(_, _, seq, marker)| {
                        marker || self.last_seq.is_some_and(|s| seq == s + 1)
                    });
                    let allowed = self.max_conceal - self.conceal_run;
                    if dtx || allowed <= 0 {
                        // The sender's silence, or too long a loss: silence until a talkspurt.
                        self.state = State::Silence;
                        self.silence(end - self.pos);
                        break;
                    }
                    underrun |= next.is_none();
                    let gap = (gap_end - self.pos).min(allowed);
                    let next = next.filter(|(t, ..)| *t == self.pos + gap).map(|_| idx);
                    self.segs.push(Seg::Conceal {
                        len: seg_len(gap),
                        cause: ConcealCause::Missing,
                        next,
                    });
                    self.pos += gap;
                    self.conceal_run += gap;
                    self.stats.concealed += gap.unsigned_abs();
                }
            }
        }
        if underrun {
            self.stats.underruns += 1;
        }
        self.played_until = Some(self.played_until.map_or(self.pos, |u| u.max(self.pos)));
        self.consumed = idx;
    }

    fn silence(&mut self, len: i64) {
        self.segs.push(Seg::Silence { len: seg_len(len) });
        self.stats.silence += len.unsigned_abs();
    }

    fn note_delay(&mut self, delay: i64) {
        let delay = delay.max(0);
        self.stats.current_delay = self.duration(delay);
        self.delay_total_ticks += delay.unsigned_abs();
        self.stats.speech_frames += 1;
    }

    /// Ticks of audio buffered without a gap from the playout position (up to two frames).
    fn covered(&self) -> i64 {
        let mut cover = self.pos;
        for e in &self.queue {
            if e.end() <= cover {
                continue;
            }
            if e.ts > cover {
                break;
            }
            cover = e.end();
            if cover - self.pos >= 2 * self.spf {
                break;
            }
        }
        cover - self.pos
    }

    fn ticks_since(&self, epoch: Instant, now: Instant) -> i64 {
        let since = now.saturating_duration_since(epoch);
        i64::try_from(crate::media::ticks_in(
            since,
            u64::from(self.cfg.clock_rate),
        ))
        .unwrap_or(i64::MAX)
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

    fn observe(&mut self, arrival: i64, transit: i64, phase: i64) {
        let d = self.est.observe(arrival, transit, phase);
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

    /// Drops packets that can no longer be played: spans already played, sequence numbers
    /// behind the last one played, and (in silence) packets more than the maximum delay
    /// behind where playout should be, as after a long outage.
    fn drop_stale(&mut self, ideal: i64) {
        while let Some(f) = self.queue.front() {
            let played = self.played_until.is_some_and(|u| f.end() <= u)
                || self.last_seq.is_some_and(|s| f.seq < s);
            let outage = self.state == State::Silence && f.end() <= ideal - self.max_delay;
            if !(played || outage) {
                break;
            }
            if let Some(e) = self.queue.pop_front() {
                self.pool.put(e.payload);
            }
            self.stats.late += 1;
        }
    }
}

/// A tick count as a segment length (they are bounded by two frames, which `new` checks fit).
fn seg_len(ticks: i64) -> u32 {
    u32::try_from(ticks.max(0)).unwrap_or(u32::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Playing frames or concealing them.
    Speech,
    /// Before the first packet, in the sender's silence, or after a long gap.
    Silence,
}

/// A recorded segment; packets by their index in the queue, valid until the next call.
#[derive(Debug, Clone, Copy)]
enum Seg {
    Audio {
        idx: usize,
        offset: u32,
        len: u32,
    },
    Conceal {
        len: u32,
        cause: ConcealCause,
        next: Option<usize>,
    },
    Silence {
        len: u32,
    },
}

impl Seg {
    fn len(&self) -> u32 {
        match *self {
            Seg::Audio { len, .. } | Seg::Conceal { len, .. } | Seg::Silence { len } => len,
        }
    }
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
    dur: i64,
    raw_seq: SeqNo,
    raw_ts: RtpTimestamp,
    marker: bool,
    payload: Vec<u8>,
}

impl Entry {
    fn end(&self) -> i64 {
        self.ts + self.dur
    }

    fn packet(&self) -> Packet<'_> {
        Packet {
            payload: &self.payload,
            ts: self.raw_ts,
            seq: self.raw_seq,
            marker: self.marker,
            duration: seg_len(self.dur),
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
            mins: VecDeque::new(),
            base: None,
            ring: Vec::new(),
            next_slot: 0,
            scratch: Vec::new(),
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

    /// Records one transit; returns its extra delay over the base plus `phase`.
    fn observe(&mut self, arrival: i64, transit: i64, phase: i64) -> i64 {
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
        let d = transit - base + phase;
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

    /// One letter per segment: A audio, X concealed, S stretch, . silence.
    fn shape(p: &Playout<'_>) -> String {
        p.segments()
            .map(|s| match s {
                Segment::Audio { .. } => 'A',
                Segment::Conceal {
                    cause: ConcealCause::Missing,
                    ..
                } => 'X',
                Segment::Conceal { .. } => 'S',
                Segment::Silence { .. } => '.',
            })
            .collect()
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
        let p = jb.pop(t);
        assert_eq!(shape(&p), ".");
        assert_eq!(p.ticks(), 160);
    }

    #[test]
    fn zero_and_overlong_durations_are_refused() {
        let mut jb = JitterBuffer::new(cfg()).unwrap();
        let t = Instant::now();
        assert_eq!(
            jb.push(t, SeqNo(1), RtpTimestamp(0), false, b"", 0),
            Pushed::Invalid
        );
        assert_eq!(
            jb.push(t, SeqNo(1), RtpTimestamp(0), false, b"x", 1601),
            Pushed::Invalid
        );
        assert_eq!(jb.stats().invalid, 2);
    }

    #[test]
    fn first_packet_plays_after_target_and_duplicates_drop() {
        let mut jb = JitterBuffer::new(cfg()).unwrap();
        let t0 = Instant::now();
        assert_eq!(
            jb.push(t0, SeqNo(1), RtpTimestamp(160), true, b"a", 160),
            Pushed::Queued
        );
        assert_eq!(
            jb.push(t0, SeqNo(1), RtpTimestamp(160), true, b"a", 160),
            Pushed::Duplicate
        );
        // Target 20 ms: playout starts once the delay reaches target - frame/4 = 15 ms.
        assert_eq!(shape(&jb.pop(t0)), ".");
        assert_eq!(shape(&jb.pop(t0 + Duration::from_millis(14))), ".");
        let p = jb.pop(t0 + Duration::from_millis(15));
        let segs: Vec<_> = p.segments().collect();
        match segs.as_slice() {
            [
                Segment::Audio {
                    packet,
                    offset: 0,
                    len: 160,
                },
            ] => {
                assert_eq!(packet.payload, b"a");
                assert_eq!(packet.seq, SeqNo(1));
                assert!(packet.marker);
            }
            other => panic!("expected one whole packet, got {other:?}"),
        }
        // Its span is played: a copy arriving now is dropped.
        assert_eq!(
            jb.push(
                t0 + Duration::from_millis(16),
                SeqNo(1),
                RtpTimestamp(160),
                false,
                b"a",
                160
            ),
            Pushed::Duplicate
        );
    }

    /// The (sequence number, offset, length) of each segment; all must be audio.
    fn audio_spans(p: &Playout<'_>) -> Vec<(u16, u32, u32)> {
        p.segments()
            .map(|s| match s {
                Segment::Audio {
                    packet,
                    offset,
                    len,
                } => (packet.seq.0, offset, len),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_30ms_packet_is_spread_over_two_frames() {
        let mut jb = JitterBuffer::new(cfg()).unwrap();
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        jb.push(ms(0), SeqNo(1), RtpTimestamp(0), true, &[1; 240], 240);
        jb.push(ms(30), SeqNo(2), RtpTimestamp(240), false, &[2; 240], 240);
        // 25 ms: the first packet has waited the target.
        let p = jb.pop(ms(25));
        let got = audio_spans(&p);
        assert_eq!(got, vec![(1, 0, 160)]);
        let p = jb.pop(ms(45));
        let got = audio_spans(&p);
        assert_eq!(got, vec![(1, 160, 80), (2, 0, 80)]);
        assert_eq!(jb.stats().played, 320);
        assert_eq!(jb.stats().buffered, 1, "the second packet is half played");
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
            160,
        );
    }

    #[test]
    fn sender_silence_ends_in_silence_and_the_next_talkspurt_plays() {
        let mut jb = JitterBuffer::new(cfg()).unwrap();
        let t0 = Instant::now();
        let mut line = String::new();
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
                    160,
                );
            }
            let now = t0 + Duration::from_millis(u64::from(20 * j + 47));
            line.push_str(&shape(&jb.pop(now)));
        }
        let s = jb.stats();
        // Nothing says the talkspurt ended (the next packet comes a second later), so the
        // first missing frames are concealed, max_conceal_frames of them, then silence; the
        // next talkspurt (marker) plays in full.
        let expected = format!(
            "{}{}{}{}",
            "A".repeat(10),
            "X".repeat(5),
            ".".repeat(45),
            "A".repeat(60)
        );
        assert_eq!(line, expected);
        assert_eq!((s.played, s.concealed, s.late), (70 * 160, 5 * 160, 0));
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
            let p = jb.pop(t0 + Duration::from_millis(u64::from(20 * j + 35)));
            for s in p.segments() {
                match s {
                    Segment::Conceal {
                        cause: ConcealCause::Missing,
                        next,
                        len,
                    } => {
                        saw_conceal = true;
                        assert_eq!(len, 160);
                        assert_eq!(next.map(|f| f.payload), Some(&5u32.to_be_bytes()[..]));
                    }
                    Segment::Audio { packet, .. } => {
                        assert_ne!(packet.payload, 4u32.to_be_bytes())
                    }
                    _ => {}
                }
            }
        }
        assert!(saw_conceal);
        assert_eq!(jb.stats().concealed, 160);
    }

    #[test]
    fn a_late_packet_plays_its_remaining_ticks() {
        let mut jb = JitterBuffer::new(cfg()).unwrap();
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        // 40 ms packets; the second is 30 ms late.
        jb.push(ms(0), SeqNo(1), RtpTimestamp(0), true, &[1; 320], 320);
        assert_eq!(shape(&jb.pop(ms(15))), "A");
        assert_eq!(shape(&jb.pop(ms(35))), "A");
        // Ticks 320..480 are due and missing: concealed.
        let p = jb.pop(ms(55));
        assert_eq!(shape(&p), "X");
        assert_eq!(p.ticks(), 160);
        jb.push(ms(70), SeqNo(2), RtpTimestamp(320), false, &[2; 320], 320);
        let p = jb.pop(ms(75));
        match p.segments().collect::<Vec<_>>().as_slice() {
            [Segment::Audio { offset, len, .. }] => assert_eq!((*offset, *len), (160, 160)),
            other => panic!("{other:?}"),
        }
    }
}
