//! Frame ticks run on an absolute schedule: over 10 minutes of virtual time with late and
//! very late wake-ups, the number of packets is exactly elapsed / ptime (+ tick 0), sequence
//! numbers and timestamps are continuous, and a late `handle_timeout` catches up every missed
//! tick without drifting.

use crate::media_stream_support;

use std::time::{Duration, Instant};

use media_stream_support::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use voxline::media::rtp::RtpPacket;
use voxline::media::stream::{MediaEvent, MediaOutput, MediaStream};
use voxline::sdp::Codec;

/// Drains `stream` into `packets` (RTP) and `frames` (Frame events); returns its deadline.
fn collect(stream: &mut MediaStream, packets: &mut Vec<Vec<u8>>, frames: &mut u64) -> Instant {
    loop {
        match stream.poll_output() {
            MediaOutput::Timeout(t) => return t,
            MediaOutput::Transmit {
                payload,
                rtcp: false,
                ..
            } => packets.push(payload),
            MediaOutput::Event(MediaEvent::Frame { .. }) => *frames += 1,
            _ => {}
        }
    }
}

/// Drives `stream` until `end` waking up late by a seeded random amount; checks after every
/// wake-up that exactly the ticks due so far were processed. Returns the RTP packets.
fn run_late(stream: &mut MediaStream, t0: Instant, end: Instant, seed: u64) -> Vec<Vec<u8>> {
    let frame = stream.frame_duration();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut packets = Vec::new();
    let mut frames = 0u64;
    loop {
        let deadline = collect(stream, &mut packets, &mut frames);
        if deadline > end {
            break;
        }
        // Mostly a little late, sometimes very late (a stalled runtime).
        let late = match rng.gen_range(0..100) {
            0 => ms(rng.gen_range(100..400)),
            1..=10 => ms(rng.gen_range(5..40)),
            _ => Duration::from_micros(rng.gen_range(0..2000)),
        };
        let wake = (deadline + late).min(end);
        stream.handle_timeout(wake);
        let due = (wake - t0).as_nanos() / frame.as_nanos() + 1;
        let processed = stream.stats().ticks;
        assert_eq!(
            u128::from(processed),
            due,
            "ticks processed at {:?}",
            wake - t0
        );
    }
    assert_eq!(frames, packets.len() as u64, "one Frame event per packet");
    packets
}

fn check_continuity(packets: &[Vec<u8>], ticks_per_frame: u32) {
    let parsed: Vec<RtpPacket<'_>> = packets
        .iter()
        .map(|p| RtpPacket::parse(p).expect("valid RTP"))
        .collect();
    let first = parsed[0];
    assert!(first.marker, "the very first packet has the marker bit");
    for (k, p) in parsed.iter().enumerate() {
        assert_eq!(
            p.seq.get(),
            first.seq.get().wrapping_add(k as u16),
            "seq of packet {k}"
        );
        assert_eq!(
            p.timestamp.get(),
            first
                .timestamp
                .get()
                .wrapping_add((k as u32).wrapping_mul(ticks_per_frame)),
            "timestamp of packet {k}"
        );
        if k > 0 {
            assert!(!p.marker, "no marker in continuous silence (packet {k})");
        }
    }
}

#[test]
fn ten_minutes_of_late_wakeups_pcmu() {
    let t0 = Instant::now();
    let neg = session(Codec::Pcmu, addr("192.0.2.1:4000"), true, false);
    let mut s = MediaStream::new(config(neg, 1, 11, t0), t0).expect("stream");
    let end = t0 + Duration::from_secs(600);
    let packets = run_late(&mut s, t0, end, 3);
    assert_eq!(packets.len(), 600 * 50 + 1, "elapsed / ptime, plus tick 0");
    check_continuity(&packets, 160);
    let st = s.stats();
    assert!(
        st.late_ticks > 100,
        "the schedule had to catch up: {}",
        st.late_ticks
    );
    assert_eq!(st.packets_sent, packets.len() as u64);
}

#[test]
fn g722_and_opus_timestamps_use_their_rtp_clock() {
    for (codec, tpf) in [(Codec::G722, 160u32), (Codec::Opus, 960)] {
        let t0 = Instant::now();
        let neg = session(codec, addr("192.0.2.1:4000"), false, true);
        let mut s = MediaStream::new(config(neg, 2, 12, t0), t0).expect("stream");
        let end = t0 + Duration::from_secs(60);
        let packets = run_late(&mut s, t0, end, 4);
        assert_eq!(packets.len(), 60 * 50 + 1, "{codec:?}");
        check_continuity(&packets, tpf);
    }
}

#[test]
fn ptime_30_ticks_every_30_ms() {
    let t0 = Instant::now();
    let mut neg = session(Codec::Pcma, addr("192.0.2.1:4000"), false, false);
    neg.ptime_ms = 30;
    let mut s = MediaStream::new(config(neg, 3, 13, t0), t0).expect("stream");
    assert_eq!(s.frame_duration(), ms(30));
    assert_eq!(s.frame_samples(), 240);
    let packets = run_late(&mut s, t0, t0 + Duration::from_secs(30), 5);
    assert_eq!(packets.len(), 1001);
    check_continuity(&packets, 240);
    assert!(packets.iter().all(|p| p.len() == 12 + 240));
}

#[test]
fn one_very_late_call_sends_every_missed_packet() {
    let t0 = Instant::now();
    let neg = session(Codec::Pcmu, addr("192.0.2.1:4000"), false, false);
    let mut s = MediaStream::new(config(neg, 4, 14, t0), t0).expect("stream");
    assert!(matches!(s.poll_output(), MediaOutput::Timeout(t) if t == t0));
    // The runtime stalls for 1.005 s.
    s.handle_timeout(t0 + ms(1005));
    let outs = drain(&mut s);
    let rtp = rtp_datagrams(&outs);
    assert_eq!(rtp.len(), 51, "ticks 0..=50");
    assert_eq!(frames(&outs).len(), 51);
    // The next deadline is back on the grid, not 20 ms after the late wake-up.
    match s.poll_output() {
        MediaOutput::Timeout(t) => assert_eq!(t, t0 + ms(1020)),
        o => panic!("expected the next tick, got {o:?}"),
    }
    // An early call does nothing.
    s.handle_timeout(t0 + ms(1010));
    assert!(rtp_datagrams(&drain(&mut s)).is_empty());
}

/// Drives `stream` through seeded late wake-ups with a local agent that answers every
/// `Frame` event with one frame of audio (as the echo and play agents do), one frame queued
/// to start. `tick_by_tick`: the runtime's way since issue 9, `handle_next_tick` until it is
/// false with the agent fed after each tick; otherwise one `handle_timeout` per wake-up.
/// Returns how many packets after the first carried silence.
fn silent_packets_with_an_agent(tick_by_tick: bool, seed: u64) -> usize {
    let t0 = Instant::now();
    let neg = session(Codec::Pcmu, addr("192.0.2.1:4000"), false, false);
    let mut s = MediaStream::new(config(neg, 3, 13, t0), t0).expect("stream");
    let frame = vec![8000i16; 160];
    s.send_audio(&frame).expect("room");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    let end = t0 + Duration::from_secs(20);
    let pump = |s: &mut MediaStream, payloads: &mut Vec<Vec<u8>>| loop {
        match s.poll_output() {
            MediaOutput::Timeout(t) => return t,
            MediaOutput::Transmit {
                payload,
                rtcp: false,
                ..
            } => payloads.push(payload),
            MediaOutput::Event(MediaEvent::Frame { .. }) => {
                s.send_audio(&frame).expect("room");
            }
            _ => {}
        }
    };
    let mut deadline = pump(&mut s, &mut payloads);
    while deadline <= end {
        let late = match rng.gen_range(0..10) {
            0 => ms(rng.gen_range(30..100)),
            _ => Duration::from_micros(rng.gen_range(0..2000)),
        };
        let wake = deadline + late;
        if tick_by_tick {
            while s.handle_next_tick(wake) {
                pump(&mut s, &mut payloads);
            }
        }
        s.handle_timeout(wake);
        deadline = pump(&mut s, &mut payloads);
    }
    payloads
        .iter()
        .skip(1)
        .filter(|p| {
            let pkt = RtpPacket::parse(p).expect("RTP");
            pkt.payload.iter().all(|&b| b == 0xff || b == 0x7f)
        })
        .count()
}

/// A late wake-up must not send silence while the agent's audio is one step away: driven
/// tick by tick, an agent that answers each frame plays without a single gap through
/// 30–100 ms stalls; catching up all overdue ticks in one call (the runtime's way before)
/// sent silence for the overdue ticks of the first stalls (after which the agent's late
/// frames piled up into a backlog that hid later stalls, as added delay).
#[test]
fn late_wakeups_do_not_gap_a_local_agent_driven_tick_by_tick() {
    assert_eq!(silent_packets_with_an_agent(true, 7), 0);
    let old = silent_packets_with_an_agent(false, 7);
    assert!(old > 0, "the old way would have gapped too: {old}");
}
