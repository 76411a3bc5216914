//! RFC 4733 telephone-event: the receiver reports each key press exactly once whatever the
//! network does to the packets (repeats, loss of start or end, reordering, long events in
//! segments, timestamp wrap), and the sender produces the §2.5 packet sequence.

use std::time::{Duration, Instant};

use voxline::media::dtmf::rfc4733::{
    Rfc4733Error, Rfc4733Packet, Rfc4733Receiver, Rfc4733ReceiverConfig, Rfc4733Sender,
    Rfc4733SenderConfig, TelephoneEvent,
};
use voxline::media::dtmf::{Digit, DtmfDigit, DtmfMethod};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn payload(event: u8, end: bool, duration: u16) -> [u8; 4] {
    TelephoneEvent {
        event,
        end,
        volume: 10,
        duration,
    }
    .to_bytes()
}

fn receiver() -> Rfc4733Receiver {
    Rfc4733Receiver::new(Rfc4733ReceiverConfig::default()).expect("config")
}

/// A test driver: a receiver, a virtual clock and everything it reported.
struct Rx {
    rx: Rfc4733Receiver,
    t0: Instant,
    now: Instant,
    got: Vec<DtmfDigit>,
}

impl Rx {
    fn new() -> Self {
        let t0 = Instant::now();
        Self {
            rx: receiver(),
            t0,
            now: t0,
            got: Vec::new(),
        }
    }

    /// Advances the clock to `t` ms, running due timeouts on the way.
    fn at(&mut self, t: u64) -> &mut Self {
        let target = self.t0 + ms(t);
        while let Some(deadline) = self.rx.poll_timeout() {
            if deadline > target {
                break;
            }
            self.now = self.now.max(deadline);
            match self.rx.handle_timeout(self.now) {
                Some(d) => self.got.push(d),
                None => break,
            }
        }
        self.now = target;
        self
    }

    /// Feeds a packet at the current time; returns what `handle` returned.
    fn pkt(&mut self, ts: u32, marker: bool, event: u8, end: bool, dur: u16) -> Option<DtmfDigit> {
        let r = self
            .rx
            .handle(self.now, ts, marker, &payload(event, end, dur))
            .expect("valid payload");
        self.got.extend(r);
        r
    }

    fn keys(&self) -> String {
        self.got.iter().map(|d| d.digit.as_char()).collect()
    }
}

#[test]
fn a_key_press_is_reported_once_on_the_first_end_packet() {
    let mut rx = Rx::new();
    let ts = 48_000;
    rx.at(0);
    assert!(rx.pkt(ts, true, 5, false, 160).is_none());
    for (i, d) in [320u16, 480, 640].into_iter().enumerate() {
        rx.at(20 * (i as u64 + 1));
        assert!(rx.pkt(ts, false, 5, false, d).is_none());
    }
    rx.at(80);
    let d = rx
        .pkt(ts, false, 5, true, 800)
        .expect("reported on the first end packet");
    assert_eq!(d.digit, Digit::D5);
    assert_eq!(d.method, DtmfMethod::Rfc4733);
    assert_eq!(d.duration_ms, 100);
    // The first packet already covered 20 ms.
    assert_eq!(rx.t0.checked_sub(ms(20)), Some(d.at));
    // The two repeats of the end packet, even late, report nothing.
    rx.at(100);
    assert!(rx.pkt(ts, false, 5, true, 800).is_none());
    rx.at(120);
    assert!(rx.pkt(ts, false, 5, true, 800).is_none());
    rx.at(2000);
    assert!(rx.pkt(ts, false, 5, true, 800).is_none());
    assert_eq!(rx.keys(), "5");
    assert_eq!(rx.rx.poll_timeout(), None);
}

#[test]
fn a_lost_start_is_harmless() {
    let mut rx = Rx::new();
    rx.at(40);
    rx.pkt(1000, false, 11, false, 480);
    rx.at(60);
    rx.pkt(1000, false, 11, false, 640);
    rx.at(80);
    let d = rx.pkt(1000, false, 11, true, 960).expect("reported");
    assert_eq!((d.digit, d.duration_ms), (Digit::Hash, 120));
    // First packet seen at 40 ms said 60 ms had passed: the press began at -20 ms.
    assert_eq!(rx.t0.checked_sub(ms(20)), Some(d.at));
    assert_eq!(rx.keys(), "#");
}

#[test]
fn a_lost_end_is_reported_after_the_timeout_and_only_once() {
    let mut rx = Rx::new();
    rx.at(0);
    rx.pkt(5000, true, 7, false, 160);
    rx.at(20);
    rx.pkt(5000, false, 7, false, 320);
    rx.at(40);
    rx.pkt(5000, false, 7, false, 480);
    // Default end timeout is 200 ms after the last packet (at 40 ms).
    assert_eq!(rx.rx.poll_timeout(), Some(rx.t0 + ms(240)));
    assert_eq!(rx.rx.handle_timeout(rx.t0 + ms(239)), None);
    rx.at(239);
    assert_eq!(rx.keys(), "");
    rx.at(240);
    assert_eq!(rx.keys(), "7");
    assert_eq!(rx.got[0].duration_ms, 60);
    // The end packets turn up late: nothing more.
    rx.at(300);
    assert!(rx.pkt(5000, false, 7, true, 800).is_none());
    assert!(rx.pkt(5000, false, 7, false, 640).is_none());
    assert_eq!(rx.keys(), "7");
    assert_eq!(rx.rx.poll_timeout(), None);
}

#[test]
fn a_lost_end_is_reported_when_the_next_event_starts() {
    let mut rx = Rx::new();
    rx.at(0);
    rx.pkt(100, true, 1, false, 160);
    rx.at(20);
    rx.pkt(100, false, 1, false, 320);
    // The end of "1" is lost; "2" starts 150 ms later (before the timeout).
    rx.at(170);
    let d = rx.pkt(1300, true, 2, false, 160).expect("1 reported now");
    assert_eq!((d.digit, d.duration_ms), (Digit::D1, 40));
    rx.at(190);
    assert!(rx.pkt(1300, false, 2, false, 320).is_none());
    rx.at(210);
    assert_eq!(
        rx.pkt(1300, false, 2, true, 480).map(|d| d.digit),
        Some(Digit::D2)
    );
    assert_eq!(rx.keys(), "12");
}

#[test]
fn two_presses_found_by_one_packet_are_both_reported() {
    let mut rx = Rx::new();
    rx.at(0);
    rx.pkt(100, true, 3, false, 160);
    // Everything else of "3" and all but the last end packet of "4" are lost.
    rx.at(150);
    let first = rx.pkt(1300, false, 4, true, 640).expect("3 reported");
    assert_eq!(first.digit, Digit::D3);
    // The second is due at once.
    assert_eq!(rx.rx.poll_timeout(), Some(rx.now));
    let second = rx.rx.handle_timeout(rx.now).expect("4 reported");
    assert_eq!((second.digit, second.duration_ms), (Digit::D4, 80));
    assert_eq!(rx.rx.handle_timeout(rx.now), None);
    assert_eq!(rx.rx.poll_timeout(), None);
}

#[test]
fn the_same_key_pressed_twice_is_two_presses() {
    let mut rx = Rx::new();
    for (i, ts) in [8000u32, 9600].into_iter().enumerate() {
        let base = i as u64 * 200;
        rx.at(base);
        rx.pkt(ts, true, 9, false, 160);
        rx.at(base + 20);
        rx.pkt(ts, false, 9, false, 320);
        for k in 0..3 {
            rx.at(base + 40 + 20 * k);
            rx.pkt(ts, false, 9, true, 480);
        }
    }
    assert_eq!(rx.keys(), "99");
}

#[test]
fn reordered_and_duplicated_packets_do_not_confuse_it() {
    let mut rx = Rx::new();
    rx.at(0);
    rx.pkt(777, false, 6, false, 320); // second packet overtook the first
    rx.pkt(777, true, 6, false, 160);
    rx.pkt(777, false, 6, false, 480);
    rx.pkt(777, false, 6, false, 480);
    let d = rx.pkt(777, false, 6, true, 640).expect("reported");
    assert_eq!(d.duration_ms, 80);
    rx.pkt(777, false, 6, false, 560); // a late update after the end
    rx.pkt(777, true, 6, false, 160); // a late start after the end
    assert_eq!(rx.keys(), "6");
    // A stale packet of an older event than the newest seen is ignored too.
    rx.at(500);
    rx.pkt(2000, true, 8, false, 160);
    assert!(rx.pkt(100, true, 1, true, 800).is_none());
    rx.at(520);
    rx.pkt(2000, false, 8, true, 320);
    assert_eq!(rx.keys(), "68");
}

#[test]
fn timestamps_wrap_around() {
    let mut rx = Rx::new();
    let first = u32::MAX - 100;
    rx.at(0);
    rx.pkt(first, true, 0, false, 160);
    rx.pkt(first, false, 0, true, 320);
    rx.at(100);
    let second = first.wrapping_add(1200); // wrapped past zero
    rx.pkt(second, true, 0, false, 160);
    rx.pkt(second, false, 0, true, 320);
    rx.at(200);
    rx.pkt(first, false, 0, true, 320); // old repeat from before the wrap
    assert_eq!(rx.keys(), "00");
}

#[test]
fn a_long_event_in_segments_is_one_press_with_the_full_duration() {
    let mut rx = Rx::new();
    let ts = 4_000_000_000u32; // and the segments cross the timestamp wrap
    let mut t = 0;
    // Segment 1: durations up to 0xFFFF (8.19 s at 8 kHz), every 50 ms.
    let mut d = 400u32;
    while d < 0xFFFF {
        rx.at(t);
        rx.pkt(ts, t == 0, 12, false, d as u16);
        d += 400;
        t += 50;
    }
    rx.at(t);
    rx.pkt(ts, false, 12, false, 0xFFFF);
    // Segment 2 starts at ts + 0xFFFF, without marker; its final packets say 4000 (0.5 s).
    let ts2 = ts.wrapping_add(0xFFFF);
    for (k, d) in [800u16, 1600, 2400, 3200].into_iter().enumerate() {
        rx.at(t + 50 * (k as u64 + 1));
        rx.pkt(ts2, false, 12, false, d);
    }
    assert_eq!(rx.keys(), "", "nothing before the end");
    rx.at(t + 250);
    rx.pkt(ts2, false, 12, true, 4000);
    rx.pkt(ts2, false, 12, true, 4000);
    assert_eq!(rx.keys(), "A");
    assert_eq!(rx.got[0].duration_ms, (0xFFFF + 4000) * 1000 / 8000);
}

#[test]
fn a_segment_boundary_is_recognised_even_if_its_final_packet_is_lost() {
    let mut rx = Rx::new();
    rx.at(0);
    rx.pkt(10, true, 13, false, 65_000);
    // The 0xFFFF packets are lost.
    rx.at(50);
    rx.pkt(10 + 0xFFFF, false, 13, false, 400);
    rx.at(100);
    rx.pkt(10 + 0xFFFF, false, 13, true, 800);
    assert_eq!(rx.keys(), "B");
    assert_eq!(rx.got[0].duration_ms, (0xFFFF + 800) * 1000 / 8000);
}

#[test]
fn non_dtmf_events_are_not_reported_but_end_the_previous_event() {
    let mut rx = Rx::new();
    rx.at(0);
    rx.pkt(100, true, 4, false, 160);
    rx.at(50);
    // Event 16 (flash) begins: "4" must have ended.
    let d = rx.pkt(900, true, 16, false, 160).expect("4 reported");
    assert_eq!(d.digit, Digit::D4);
    rx.pkt(900, false, 16, true, 800);
    rx.at(1000);
    assert_eq!(rx.keys(), "4");
}

#[test]
fn malformed_payloads_are_errors_and_change_nothing() {
    let mut rx = receiver();
    let t = Instant::now();
    assert_eq!(
        rx.handle(t, 1, true, &[]),
        Err(Rfc4733Error::BadLength { len: 0 })
    );
    assert_eq!(
        rx.handle(t, 1, true, &[5, 0x80, 0]),
        Err(Rfc4733Error::BadLength { len: 3 })
    );
    assert_eq!(
        rx.handle(t, 1, true, &[5, 0x80, 0, 160, 0, 0, 0, 0]),
        Err(Rfc4733Error::BadLength { len: 8 })
    );
    assert_eq!(rx.poll_timeout(), None);
    let d = rx
        .handle(t, 1, true, &payload(5, true, 800))
        .expect("valid")
        .expect("reported");
    assert_eq!(d.digit, Digit::D5);
}

#[test]
fn a_16_khz_clock_is_honoured() {
    let mut rx = Rfc4733Receiver::new(Rfc4733ReceiverConfig {
        clock_rate: 16_000,
        ..Rfc4733ReceiverConfig::default()
    })
    .expect("config");
    let t = Instant::now();
    let d = rx
        .handle(t, 1, true, &payload(1, true, 1600))
        .expect("valid")
        .expect("reported");
    assert_eq!(d.duration_ms, 100);
    assert_eq!(
        Rfc4733Receiver::new(Rfc4733ReceiverConfig {
            clock_rate: 0,
            ..Rfc4733ReceiverConfig::default()
        })
        .err(),
        Some(Rfc4733Error::ZeroClockRate)
    );
}

// ---- Sender ----

/// Runs `tx` to completion on its own deadlines; returns (due time in ms from `t0`, packet).
fn drain(tx: &mut Rfc4733Sender, t0: Instant) -> Vec<(u64, Rfc4733Packet)> {
    let mut out = Vec::new();
    while let Some(due) = tx.poll_timeout() {
        // Nothing is handed out early.
        if let Some(before) = due.checked_sub(Duration::from_micros(1))
            && before >= t0
        {
            assert_eq!(tx.poll(before), None);
        }
        while let Some(p) = tx.poll(due) {
            out.push((due.duration_since(t0).as_millis() as u64, p));
        }
    }
    assert!(tx.is_idle());
    out
}

fn describe(p: &Rfc4733Packet) -> (bool, bool, u16, u32) {
    let ev = TelephoneEvent::parse(&p.payload).expect("valid payload");
    (p.marker, ev.end, ev.duration, p.timestamp_offset)
}

#[test]
fn the_sender_produces_the_rfc4733_sequence() {
    let mut tx = Rfc4733Sender::new(Rfc4733SenderConfig::default()).expect("config");
    let t0 = Instant::now();
    assert_eq!(tx.send(t0, Digit::D8, ms(100)), Ok(t0));
    let packets = drain(&mut tx, t0);
    let got: Vec<_> = packets.iter().map(|(t, p)| (*t, describe(p))).collect();
    assert_eq!(
        got,
        vec![
            (0, (true, false, 160, 0)),
            (20, (false, false, 320, 0)),
            (40, (false, false, 480, 0)),
            (60, (false, false, 640, 0)),
            (80, (false, true, 800, 0)),
            (100, (false, true, 800, 0)),
            (120, (false, true, 800, 0)),
        ]
    );
    for (_, p) in &packets {
        assert_eq!(p.event_start, t0);
        let ev = TelephoneEvent::parse(&p.payload).expect("valid");
        assert_eq!((ev.event, ev.volume), (8, 10));
    }
}

#[test]
fn queued_key_presses_follow_each_other_with_a_gap() {
    let mut tx = Rfc4733Sender::new(Rfc4733SenderConfig::default()).expect("config");
    let t0 = Instant::now();
    tx.send(t0, Digit::D1, ms(100)).expect("send");
    let second = tx.send(t0 + ms(10), Digit::D2, ms(60)).expect("send");
    // After the last repeat of the first end packet (120 ms) + ptime, and after 100 + 60 ms.
    assert_eq!(second, t0 + ms(160));
    let packets = drain(&mut tx, t0);
    let starts: Vec<_> = packets
        .iter()
        .filter(|(_, p)| p.marker)
        .map(|(t, p)| (*t, p.payload[0]))
        .collect();
    assert_eq!(starts, vec![(0, 1), (160, 2)]);
    assert_eq!(packets.len(), 7 + 5);
    assert!(packets.iter().skip(7).all(|(_, p)| p.event_start == second));
    // Sent later, after the queue emptied and the gap passed: starts at once.
    let later = t0 + ms(5000);
    assert_eq!(tx.send(later, Digit::D3, ms(40)), Ok(later));
}

#[test]
fn a_long_key_press_is_sent_in_segments() {
    let mut tx = Rfc4733Sender::new(Rfc4733SenderConfig::default()).expect("config");
    let t0 = Instant::now();
    tx.send(t0, Digit::Star, ms(10_000)).expect("send");
    let packets: Vec<_> = drain(&mut tx, t0)
        .into_iter()
        .map(|(t, p)| (t, describe(&p)))
        .collect();
    assert_eq!(packets.iter().filter(|(_, d)| d.0).count(), 1, "one marker");
    let closing: Vec<_> = packets
        .iter()
        .filter(|(_, d)| d.2 == 0xFFFF && !d.1)
        .collect();
    assert_eq!(closing.len(), 3, "the segment's final packet three times");
    assert!(closing.iter().all(|(_, d)| d.3 == 0));
    let second: Vec<_> = packets.iter().filter(|(_, d)| d.3 == 0xFFFF).collect();
    assert!(
        second.iter().all(|(_, d)| !d.0),
        "no marker on a new segment"
    );
    let ends: Vec<_> = packets.iter().filter(|(_, d)| d.1).collect();
    assert_eq!(ends.len(), 3);
    // 80000 ticks in all: 65535 in the first segment, 14465 in the second.
    assert!(ends.iter().all(|(_, d)| d.2 == 14_465 && d.3 == 0xFFFF));
    // Durations grow within each segment.
    for seg in [0u32, 0xFFFF] {
        let d: Vec<u16> = packets
            .iter()
            .filter(|(_, d)| d.3 == seg)
            .map(|(_, d)| d.2)
            .collect();
        assert!(d.windows(2).all(|w| w[0] <= w[1]), "segment {seg}");
    }
}

/// Sends `digits` and feeds the packets to a receiver, dropping those `drop` selects.
fn round_trip(
    clock_rate: u32,
    digits: &[(Digit, u64)],
    drop: impl Fn(usize, &Rfc4733Packet) -> bool,
) -> Vec<DtmfDigit> {
    let mut tx = Rfc4733Sender::new(Rfc4733SenderConfig {
        clock_rate,
        ..Rfc4733SenderConfig::default()
    })
    .expect("config");
    let mut rx = Rfc4733Receiver::new(Rfc4733ReceiverConfig {
        clock_rate,
        ..Rfc4733ReceiverConfig::default()
    })
    .expect("config");
    let t0 = Instant::now();
    for (d, len) in digits {
        tx.send(t0, *d, ms(*len)).expect("send");
    }
    let rtp_base = 123_456u32;
    let mut got = Vec::new();
    for (i, (t, p)) in drain(&mut tx, t0).into_iter().enumerate() {
        let now = t0 + ms(t);
        while let Some(deadline) = rx.poll_timeout().filter(|d| *d <= now) {
            got.extend(rx.handle_timeout(deadline));
        }
        if drop(i, &p) {
            continue;
        }
        let start_ticks =
            (p.event_start.duration_since(t0).as_millis() as u64 * u64::from(clock_rate)) / 1000;
        let ts = rtp_base
            .wrapping_add(start_ticks as u32)
            .wrapping_add(p.timestamp_offset);
        got.extend(rx.handle(now, ts, p.marker, &p.payload).expect("valid"));
    }
    while let Some(deadline) = rx.poll_timeout() {
        got.extend(rx.handle_timeout(deadline));
    }
    got
}

fn keys(found: &[DtmfDigit]) -> String {
    found.iter().map(|d| d.digit.as_char()).collect()
}

#[test]
fn sender_to_receiver_round_trip_with_losses() {
    let digits = [
        (Digit::D1, 100),
        (Digit::D1, 100),
        (Digit::Hash, 60),
        (Digit::D, 9000),
        (Digit::D0, 40),
    ];
    for rate in [8000, 16_000] {
        let all = round_trip(rate, &digits, |_, _| false);
        assert_eq!(keys(&all), "11#D0", "{rate}");
        let durations: Vec<u32> = all.iter().map(|d| d.duration_ms).collect();
        assert_eq!(durations, vec![100, 100, 60, 9000, 40], "{rate}");
        // All start packets lost.
        let no_start = round_trip(rate, &digits, |_, p| p.marker);
        assert_eq!(keys(&no_start), "11#D0");
        // All end packets lost: found by the next event or by the timeout.
        let no_end = round_trip(rate, &digits, |_, p| p.payload[1] & 0x80 != 0);
        assert_eq!(keys(&no_end), "11#D0");
        // Two of three end packets lost, and every third packet.
        let lossy = round_trip(rate, &digits, |i, p| {
            (p.payload[1] & 0x80 != 0 && i % 3 != 0) || i % 3 == 1
        });
        assert_eq!(keys(&lossy), "11#D0");
    }
}

#[test]
fn sender_settings_are_checked() {
    let bad = |c: Rfc4733SenderConfig| Rfc4733Sender::new(c).err();
    let base = Rfc4733SenderConfig::default();
    assert_eq!(
        bad(Rfc4733SenderConfig {
            clock_rate: 0,
            ..base
        }),
        Some(Rfc4733Error::ZeroClockRate)
    );
    assert_eq!(
        bad(Rfc4733SenderConfig { volume: 64, ..base }),
        Some(Rfc4733Error::BadVolume(64))
    );
    assert_eq!(
        bad(Rfc4733SenderConfig {
            ptime: Duration::ZERO,
            ..base
        }),
        Some(Rfc4733Error::BadPtime(Duration::ZERO))
    );
    assert_eq!(
        bad(Rfc4733SenderConfig {
            inter_digit_gap: Duration::from_secs(11),
            ..base
        }),
        Some(Rfc4733Error::BadGap(Duration::from_secs(11)))
    );
    let mut tx = Rfc4733Sender::new(base).expect("config");
    assert_eq!(
        tx.send(Instant::now(), Digit::D1, Duration::from_secs(61)),
        Err(Rfc4733Error::DurationTooLong(Duration::from_secs(61)))
    );
    assert!(tx.is_idle());
}
