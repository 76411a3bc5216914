//! RTP `telephone-event` payloads (RFC 4733): parsing, a receiver and a sender.
//!
//! The RTP layer hands over the payload of each packet whose payload type is the negotiated
//! `telephone-event` one, with its RTP timestamp and marker bit; this module never sees the
//! RTP header itself, and never reads the clock.
//!
//! Receiver rules (RFC 4733 §2.5.2): an event is identified by its RTP timestamp. Each DTMF
//! event is reported exactly once, when its first end packet (E bit) arrives; the repeated end
//! packets and any late packet of a finished event are ignored. A lost start is harmless (the
//! first packet seen starts the event); a lost end is covered by a timeout
//! ([`Rfc4733Receiver::handle_timeout`]) or by the next event's first packet. A long event
//! whose 16-bit duration overflows is sent in segments (§2.5.1.3); the receiver joins them.
//!
//! Not handled: several events in one packet through RFC 2198 redundancy (§2.5.1.5; that
//! arrives with another payload type), and events other than the 16 DTMF keys, which are
//! tracked (so they end a previous event) but never reported.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Digit, DtmfDigit, DtmfMethod};

/// Size of one event in a `telephone-event` payload (RFC 4733 §2.3).
pub const PAYLOAD_LEN: usize = 4;

/// Largest duration the 16-bit duration field can carry, in timestamp units (RFC 4733
/// §2.3.5); a longer event is split into segments (§2.5.1.3).
pub const MAX_SEGMENT_DURATION: u16 = 0xFFFF;

/// Largest volume (power level, in -dBm0) the 6-bit volume field can carry (RFC 4733 §2.3.4).
pub const MAX_VOLUME: u8 = 63;

/// RTP clock rate of `telephone-event` when the SDP says nothing else (the
/// `audio/telephone-event` registration, RFC 4733 §7.1.1).
pub const DEFAULT_CLOCK_RATE: u32 = 8000;

/// How many times the sender sends the final packet of an event or segment (RFC 4733
/// §2.5.1.4).
pub const FINAL_PACKET_REPEATS: usize = 3;

/// Default [`Rfc4733ReceiverConfig::end_timeout`]: an event whose packets stop without an end
/// packet is reported this long after its last packet (RFC 4733 §2.5.2 leaves the value to
/// the receiver; senders typically update every 20 to 50 ms).
pub const DEFAULT_END_TIMEOUT: Duration = Duration::from_millis(200);

/// Default [`Rfc4733SenderConfig::ptime`]: one update per 20 ms audio packet (RFC 4733
/// §2.5.1 lets the sender pick the update interval; 20 ms matches the audio).
pub const DEFAULT_PTIME: Duration = Duration::from_millis(20);

/// Default [`Rfc4733SenderConfig::volume`]: -10 dBm0, a typical DTMF level (RFC 4733 §2.3.4).
pub const DEFAULT_VOLUME: u8 = 10;

/// Default [`Rfc4733SenderConfig::inter_digit_gap`]: the pause between queued key presses
/// (ITU-T Q.24 receivers need at least 40 ms).
pub const DEFAULT_INTER_DIGIT_GAP: Duration = Duration::from_millis(60);

/// Longest [`Rfc4733SenderConfig::inter_digit_gap`] accepted.
pub const MAX_INTER_DIGIT_GAP: Duration = Duration::from_secs(10);

/// Longest key press [`Rfc4733Sender::send`] accepts.
pub const MAX_SEND_DURATION: Duration = Duration::from_secs(60);

/// What can be wrong with a payload, or with a receiver or sender configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rfc4733Error {
    /// The payload is not exactly [`PAYLOAD_LEN`] bytes.
    #[error("telephone-event payload is {len} bytes, expected {PAYLOAD_LEN}")]
    BadLength {
        /// The payload length received.
        len: usize,
    },
    /// A clock rate of zero.
    #[error("telephone-event clock rate must be positive")]
    ZeroClockRate,
    /// A sender update interval shorter than one clock tick, or longer than one second.
    #[error("telephone-event update interval {0:?} is out of range (1 tick .. 1 s)")]
    BadPtime(Duration),
    /// A sender inter-digit gap longer than [`MAX_INTER_DIGIT_GAP`].
    #[error("inter-digit gap {0:?} is longer than {MAX_INTER_DIGIT_GAP:?}")]
    BadGap(Duration),
    /// A volume above [`MAX_VOLUME`].
    #[error("telephone-event volume {0} is above {MAX_VOLUME}")]
    BadVolume(u8),
    /// A key press longer than [`MAX_SEND_DURATION`] was asked for.
    #[error("key press of {0:?} is longer than the maximum of {MAX_SEND_DURATION:?}")]
    DurationTooLong(Duration),
}

/// One event of a `telephone-event` payload (RFC 4733 §2.3).
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// |     event     |E|R| volume    |          duration             |
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TelephoneEvent {
    /// Event code (§2.3.1; DTMF keys are 0-15, see [`Digit::from_event_code`]).
    pub event: u8,
    /// The E bit: this packet reports the end of the event (§2.3.2).
    pub end: bool,
    /// Power level in -dBm0, 0..=63 (§2.3.4).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units, from the packet's RTP timestamp (§2.3.5).
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses a payload of exactly [`PAYLOAD_LEN`] bytes. The R bit is ignored, as the
    /// receiver must (§2.3.3).
    pub fn parse(payload: &[u8]) -> Result<Self, Rfc4733Error> {
        let &[event, flags, d0, d1] = payload else {
            return Err(Rfc4733Error::BadLength { len: payload.len() });
        };
        Ok(Self {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// The payload bytes, R bit zero. A volume above [`MAX_VOLUME`] is written as 63.
    pub fn to_bytes(&self) -> [u8; PAYLOAD_LEN] {
        let flags = if self.end { 0x80 } else { 0 } | self.volume.min(MAX_VOLUME);
        let [d0, d1] = self.duration.to_be_bytes();
        [self.event, flags, d0, d1]
    }

    /// The DTMF key this event is, if it is one.
    pub fn digit(&self) -> Option<Digit> {
        Digit::from_event_code(self.event)
    }
}

/// Settings of an [`Rfc4733Receiver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc4733ReceiverConfig {
    /// RTP clock rate of the `telephone-event` payload type (from its `a=rtpmap`).
    pub clock_rate: u32,
    /// Report an event whose end packets never came this long after its last packet.
    pub end_timeout: Duration,
}

impl Default for Rfc4733ReceiverConfig {
    fn default() -> Self {
        Self {
            clock_rate: DEFAULT_CLOCK_RATE,
            end_timeout: DEFAULT_END_TIMEOUT,
        }
    }
}

/// Turns the `telephone-event` packets of one RTP stream into key presses, each reported
/// exactly once (see the module documentation for the rules).
///
/// Drive it with [`handle`](Self::handle) for every packet, and call
/// [`handle_timeout`](Self::handle_timeout) at [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct Rfc4733Receiver {
    config: Rfc4733ReceiverConfig,
    active: Option<ActiveEvent>,
    /// Newest RTP timestamp of any event seen; older timestamps are stale.
    newest_ts: Option<u32>,
    /// Key presses found but not yet returned, with when they were found.
    ready: VecDeque<(Instant, DtmfDigit)>,
}

impl Rfc4733Receiver {
    /// A receiver with these settings.
    pub fn new(config: Rfc4733ReceiverConfig) -> Result<Self, Rfc4733Error> {
        if config.clock_rate == 0 {
            return Err(Rfc4733Error::ZeroClockRate);
        }
        Ok(Self {
            config,
            active: None,
            newest_ts: None,
            ready: VecDeque::new(),
        })
    }

    /// Feeds one packet: its RTP timestamp, marker bit and payload, received at `now`.
    ///
    /// Returns the key press this packet completes, if any. In the rare case where one packet
    /// completes two (the previous event's end was lost *and* this packet is already an end
    /// packet of a new event), the second is returned by the next call to this method or to
    /// [`handle_timeout`](Self::handle_timeout), and [`poll_timeout`](Self::poll_timeout)
    /// returns a deadline that is already due.
    pub fn handle(
        &mut self,
        now: Instant,
        rtp_timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<Option<DtmfDigit>, Rfc4733Error> {
        let ev = TelephoneEvent::parse(payload)?;
        self.accept(now, rtp_timestamp, marker, ev);
        Ok(self.ready.pop_front().map(|(_, d)| d))
    }

    /// Reports an event whose end packets were lost, once `end_timeout` has passed since its
    /// last packet; also returns a key press left over by [`handle`](Self::handle).
    pub fn handle_timeout(&mut self, now: Instant) -> Option<DtmfDigit> {
        if let Some((_, d)) = self.ready.pop_front() {
            return Some(d);
        }
        let timed_out = self
            .active
            .as_ref()
            .and_then(|a| a.last_packet.checked_add(self.config.end_timeout))
            .is_some_and(|deadline| now >= deadline);
        if timed_out && let Some(a) = self.active.take() {
            return self.finish(a);
        }
        None
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next, if at all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some((at, _)) = self.ready.front() {
            return Some(*at);
        }
        self.active
            .as_ref()
            .and_then(|a| a.last_packet.checked_add(self.config.end_timeout))
    }

    /// A new RTP stream began (a new SSRC, or the same SSRC restarting its sequence numbers,
    /// RFC 3550 A.1): its timestamps have a new origin, so an event with a timestamp older
    /// than the previous stream's newest is a new event, not a stale one. An event still under
    /// way is kept: the next event (or the timeout) reports it as one whose end was lost.
    pub fn new_stream(&mut self) {
        self.newest_ts = None;
    }

    /// Forgets all state, e.g. when the RTP stream's SSRC changes.
    pub fn reset(&mut self) {
        self.active = None;
        self.newest_ts = None;
        self.ready.clear();
    }

    fn accept(&mut self, now: Instant, ts: u32, marker: bool, ev: TelephoneEvent) {
        if let Some(a) = self.active.as_mut()
            && a.ts == ts
        {
            if ev.event != a.event {
                return; // Conflicting packet for the same event: ignore it.
            }
            a.segment_duration = a.segment_duration.max(ev.duration);
            a.last_packet = now;
            if ev.end
                && let Some(a) = self.active.take()
            {
                self.push_finished(now, a);
            }
            return;
        }
        if let Some(newest) = self.newest_ts
            && !serial_newer(ts, newest)
        {
            return; // A finished event's repeat, or a late packet: already dealt with.
        }
        self.newest_ts = Some(ts);
        if let Some(a) = self.active.as_mut()
            && is_next_segment(a, ts, marker, &ev)
        {
            // §2.5.1.3: the previous segment lasted exactly 0xFFFF whether or not its final
            // packet arrived.
            a.earlier_segments += u64::from(MAX_SEGMENT_DURATION);
            a.ts = ts;
            a.segment_duration = ev.duration;
            a.last_packet = now;
            if ev.end
                && let Some(a) = self.active.take()
            {
                self.push_finished(now, a);
            }
            return;
        }
        if let Some(previous) = self.active.take() {
            // A new event began while the previous one had not ended: its end was lost.
            self.push_finished(now, previous);
        }
        let already = samples_to_duration(u64::from(ev.duration), self.config.clock_rate);
        let a = ActiveEvent {
            ts,
            event: ev.event,
            start_at: now.checked_sub(already).unwrap_or(now),
            last_packet: now,
            earlier_segments: 0,
            segment_duration: ev.duration,
        };
        if ev.end {
            self.push_finished(now, a);
        } else {
            self.active = Some(a);
        }
    }

    fn push_finished(&mut self, now: Instant, a: ActiveEvent) {
        if let Some(d) = self.finish(a) {
            self.ready.push_back((now, d));
        }
    }

    fn finish(&self, a: ActiveEvent) -> Option<DtmfDigit> {
        let digit = Digit::from_event_code(a.event)?;
        let samples = a.earlier_segments + u64::from(a.segment_duration);
        let ms = samples * 1000 / u64::from(self.config.clock_rate);
        Some(DtmfDigit {
            digit,
            method: DtmfMethod::Rfc4733,
            duration_ms: u32::try_from(ms).unwrap_or(u32::MAX),
            at: a.start_at,
        })
    }
}

/// Settings of an [`Rfc4733Sender`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc4733SenderConfig {
    /// RTP clock rate of the `telephone-event` payload type.
    pub clock_rate: u32,
    /// Interval between the packets of an event (RFC 4733 §2.5.1).
    pub ptime: Duration,
    /// Volume field, 0..=63 (-dBm0).
    pub volume: u8,
    /// Pause between queued key presses.
    pub inter_digit_gap: Duration,
}

impl Default for Rfc4733SenderConfig {
    fn default() -> Self {
        Self {
            clock_rate: DEFAULT_CLOCK_RATE,
            ptime: DEFAULT_PTIME,
            volume: DEFAULT_VOLUME,
            inter_digit_gap: DEFAULT_INTER_DIGIT_GAP,
        }
    }
}

/// One `telephone-event` packet to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc4733Packet {
    /// The RTP payload.
    pub payload: [u8; PAYLOAD_LEN],
    /// The RTP marker bit: set on the first packet of an event only (§2.5.1).
    pub marker: bool,
    /// When the event began: its RTP timestamp is the stream's timestamp at this instant.
    pub event_start: Instant,
    /// Add this to the RTP timestamp at `event_start`: 0, or for the segments of a long
    /// event `n * 0xFFFF` (§2.5.1.3).
    pub timestamp_offset: u32,
}

/// Produces the `telephone-event` packets of key presses (RFC 4733 §2.5.1).
///
/// For each key press: a first packet with the marker bit, an update every `ptime` with the
/// growing duration (each packet reports the duration up to the end of its interval), and the
/// final packet, with the E bit and the full duration, sent three times `ptime` apart
/// (§2.5.1.4), all with the same RTP timestamp. A press longer than 0xFFFF ticks is split into
/// segments (§2.5.1.3), each segment's last packet (duration 0xFFFF, no E bit) also sent three
/// times. Key presses sent while one is under way are queued, `inter_digit_gap` apart.
///
/// Sans-IO: [`poll`](Self::poll) returns each packet once it is due.
#[derive(Debug)]
pub struct Rfc4733Sender {
    config: Rfc4733SenderConfig,
    /// `ptime` in timestamp units.
    ptime_ticks: u64,
    queue: VecDeque<(Instant, Rfc4733Packet)>,
    /// Earliest start of the next queued key press.
    next_free: Option<Instant>,
}

impl Rfc4733Sender {
    /// A sender with these settings.
    pub fn new(config: Rfc4733SenderConfig) -> Result<Self, Rfc4733Error> {
        if config.clock_rate == 0 {
            return Err(Rfc4733Error::ZeroClockRate);
        }
        if config.volume > MAX_VOLUME {
            return Err(Rfc4733Error::BadVolume(config.volume));
        }
        if config.inter_digit_gap > MAX_INTER_DIGIT_GAP {
            return Err(Rfc4733Error::BadGap(config.inter_digit_gap));
        }
        let ptime_ticks = duration_to_samples(config.ptime, config.clock_rate);
        if ptime_ticks == 0 || config.ptime > Duration::from_secs(1) {
            return Err(Rfc4733Error::BadPtime(config.ptime));
        }
        Ok(Self {
            config,
            ptime_ticks,
            queue: VecDeque::new(),
            next_free: None,
        })
    }

    /// Queues a key press held for `duration` (at least one tick). It starts at `now`, or
    /// after the key presses already queued. Returns when it starts.
    pub fn send(
        &mut self,
        now: Instant,
        digit: Digit,
        duration: Duration,
    ) -> Result<Instant, Rfc4733Error> {
        if duration > MAX_SEND_DURATION {
            return Err(Rfc4733Error::DurationTooLong(duration));
        }
        let start = match self.next_free {
            Some(free) if free > now => free,
            _ => now,
        };
        let total = duration_to_samples(duration, self.config.clock_rate).max(1);
        let mut last_due = start;
        for (due, packet) in self.schedule(start, digit, total) {
            last_due = last_due.max(due);
            self.queue.push_back((due, packet));
        }
        self.queue.make_contiguous().sort_by_key(|(due, _)| *due);
        let after_end = start + duration + self.config.inter_digit_gap;
        self.next_free = Some(after_end.max(last_due + self.config.ptime));
        Ok(start)
    }

    /// The next packet due at `now`, if any; call until it returns `None`.
    pub fn poll(&mut self, now: Instant) -> Option<Rfc4733Packet> {
        match self.queue.front() {
            Some((due, _)) if *due <= now => self.queue.pop_front().map(|(_, p)| p),
            _ => None,
        }
    }

    /// When the next packet is due, if any is queued.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queue.front().map(|(due, _)| *due)
    }

    /// Whether nothing is left to send. While a key press is being sent the audio stream
    /// should be muted: the events replace the audio (RFC 4733 §2.5.1).
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// Drops everything still queued.
    pub fn clear(&mut self) {
        self.queue.clear();
        self.next_free = None;
    }

    /// All packets of one key press of `total` ticks starting at `start`, with due times.
    fn schedule(&self, start: Instant, digit: Digit, total: u64) -> Vec<(Instant, Rfc4733Packet)> {
        let ptime = self.ptime_ticks;
        let seg = u64::from(MAX_SEGMENT_DURATION);
        let updates = total.div_ceil(ptime);
        let mut out = Vec::new();
        let mut current_segment = 0u64;
        for k in 0..updates {
            let due = start + self.ticks_to_duration(k * ptime);
            let elapsed = ((k + 1) * ptime).min(total);
            let segment = (elapsed - 1) / seg;
            // Close the segments passed since the last packet (normally at most one).
            while current_segment < segment {
                let closing = self.packet(
                    start,
                    digit,
                    current_segment,
                    MAX_SEGMENT_DURATION,
                    false,
                    false,
                );
                for r in 0..FINAL_PACKET_REPEATS as u64 {
                    out.push((due + self.ticks_to_duration(r * ptime), closing));
                }
                current_segment += 1;
            }
            let in_segment = u16::try_from(elapsed - segment * seg).unwrap_or(u16::MAX);
            let end = k + 1 == updates;
            let p = self.packet(start, digit, segment, in_segment, end, k == 0);
            let repeats = if end { FINAL_PACKET_REPEATS as u64 } else { 1 };
            for r in 0..repeats {
                out.push((due + self.ticks_to_duration(r * ptime), p));
            }
        }
        out
    }

    fn packet(
        &self,
        start: Instant,
        digit: Digit,
        segment: u64,
        duration: u16,
        end: bool,
        marker: bool,
    ) -> Rfc4733Packet {
        let ev = TelephoneEvent {
            event: digit.event_code(),
            end,
            volume: self.config.volume,
            duration,
        };
        Rfc4733Packet {
            payload: ev.to_bytes(),
            marker,
            event_start: start,
            // RTP timestamps wrap (RFC 3550 §5.1): the truncation is the intended modulo.
            timestamp_offset: (segment * u64::from(MAX_SEGMENT_DURATION)) as u32,
        }
    }

    fn ticks_to_duration(&self, ticks: u64) -> Duration {
        samples_to_duration(ticks, self.config.clock_rate)
    }
}

/// The event being received.
#[derive(Debug, Clone, Copy)]
struct ActiveEvent {
    /// RTP timestamp of the current segment.
    ts: u32,
    event: u8,
    start_at: Instant,
    last_packet: Instant,
    /// Ticks in the segments before the current one.
    earlier_segments: u64,
    /// Largest duration seen in the current segment.
    segment_duration: u16,
}

/// Whether a packet with timestamp `ts` starts the next segment of the long event `a`
/// (RFC 4733 §2.5.1.3: same event, no marker, timestamp advanced by exactly 0xFFFF).
fn is_next_segment(a: &ActiveEvent, ts: u32, marker: bool, ev: &TelephoneEvent) -> bool {
    !marker && ev.event == a.event && ts.wrapping_sub(a.ts) == u32::from(MAX_SEGMENT_DURATION)
}

/// Whether RTP timestamp `a` is after `b`, modulo 2^32 (RFC 3550 §5.1 wrap-around).
fn serial_newer(a: u32, b: u32) -> bool {
    let diff = a.wrapping_sub(b);
    diff != 0 && diff < 0x8000_0000
}

fn samples_to_duration(samples: u64, clock_rate: u32) -> Duration {
    let rate = u64::from(clock_rate.max(1));
    Duration::from_secs(samples / rate)
        + Duration::from_nanos((samples % rate) * 1_000_000_000 / rate)
}

fn duration_to_samples(d: Duration, clock_rate: u32) -> u64 {
    let ticks = d.as_nanos() * u128::from(clock_rate) / 1_000_000_000;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_payload() {
        let ev = TelephoneEvent::parse(&[5, 0x8A, 0x03, 0x20]).unwrap();
        assert_eq!(
            ev,
            TelephoneEvent {
                event: 5,
                end: true,
                volume: 10,
                duration: 800
            }
        );
        assert_eq!(ev.digit(), Some(Digit::D5));
        assert_eq!(ev.to_bytes(), [5, 0x8A, 0x03, 0x20]);
        // R bit set: ignored.
        let ev = TelephoneEvent::parse(&[11, 0x40 | 7, 0, 0]).unwrap();
        assert_eq!(
            (ev.end, ev.volume, ev.digit()),
            (false, 7, Some(Digit::Hash))
        );
        assert_eq!(ev.to_bytes()[1], 7);
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3]),
            Err(Rfc4733Error::BadLength { len: 3 })
        );
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3, 4, 5]),
            Err(Rfc4733Error::BadLength { len: 5 })
        );
        assert_eq!(TelephoneEvent::parse(&[16, 0, 0, 0]).unwrap().digit(), None);
    }

    #[test]
    fn a_new_stream_may_start_its_events_at_older_timestamps() {
        let t0 = Instant::now();
        let mut rx = Rfc4733Receiver::new(Rfc4733ReceiverConfig::default()).unwrap();
        let end = |code: u8| TelephoneEvent {
            event: code,
            end: true,
            volume: 10,
            duration: 800,
        };
        let first = rx.handle(t0, 90_000, true, &end(1).to_bytes()).unwrap();
        assert_eq!(first.map(|d| d.digit), Some(Digit::D1));
        // Same stream, older timestamp: a stale packet.
        assert_eq!(
            rx.handle(t0, 10_000, true, &end(2).to_bytes()).unwrap(),
            None
        );
        // After the stream restarts, the older timestamp is a new key press.
        rx.new_stream();
        let second = rx.handle(t0, 10_000, true, &end(2).to_bytes()).unwrap();
        assert_eq!(second.map(|d| d.digit), Some(Digit::D2));
    }

    #[test]
    fn serial_comparison_wraps() {
        assert!(serial_newer(1, 0));
        assert!(serial_newer(5, u32::MAX - 5));
        assert!(!serial_newer(0, 0));
        assert!(!serial_newer(u32::MAX - 5, 5));
    }

    #[test]
    fn tick_conversions() {
        assert_eq!(duration_to_samples(Duration::from_millis(20), 8000), 160);
        assert_eq!(samples_to_duration(160, 8000), Duration::from_millis(20));
        assert_eq!(
            samples_to_duration(12_000, 8000),
            Duration::from_millis(1500)
        );
    }
}
