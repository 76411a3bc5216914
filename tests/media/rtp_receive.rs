//! RTP receive path: parsing through `RtpReceiver` with payload-type filtering, sequence
//! tracking (RFC 3550 A.1), SSRC changes, loss (A.3) and jitter (A.8), on a virtual clock.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use voxline::media::rtcp::NtpTime;
use voxline::media::rtp::{
    RtpDrop, RtpError, RtpHeader, RtpReceiver, RtpReceiverConfig, RtpTimestamp, SeqNo, Ssrc,
};
use voxline::sdp::PayloadType;

const PCMU: u8 = 0;
const EVENT: u8 = 101;

fn pt(n: u8) -> PayloadType {
    PayloadType::new(n).unwrap()
}

fn receiver() -> RtpReceiver {
    RtpReceiver::new(RtpReceiverConfig::new(
        8000,
        vec![pt(PCMU)],
        Some(pt(EVENT)),
    ))
}

fn packet(ssrc: u32, seq: u16, ts: u32, payload_type: u8, marker: bool) -> Vec<u8> {
    let mut buf = vec![0u8; 12 + 160];
    let n = RtpHeader {
        marker,
        payload_type: pt(payload_type),
        seq: SeqNo::new(seq),
        timestamp: RtpTimestamp::new(ts),
        ssrc: Ssrc::new(ssrc),
    }
    .write_packet(&[0xff; 160], &mut buf)
    .unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn in_order_stream_with_sequence_wrap() {
    let mut rx = receiver();
    let t0 = Instant::now();
    let mut ext = Vec::new();
    for k in 0..20u16 {
        let seq = 65_530u16.wrapping_add(k);
        let buf = packet(7, seq, u32::from(k) * 160, PCMU, k == 0);
        let r = rx
            .receive(t0 + Duration::from_millis(20 * u64::from(k)), &buf)
            .unwrap();
        assert_eq!(r.new_stream, k == 0);
        assert_eq!(r.packet.payload.len(), 160);
        ext.push(r.ext_seq);
    }
    assert_eq!(ext.first(), Some(&65_530));
    assert_eq!(ext.last(), Some(&(65_536 + 13)));
    assert!(ext.windows(2).all(|w| w[1] == w[0] + 1));
    let loss = rx.loss().unwrap();
    assert_eq!(loss.expected, 20);
    assert_eq!(loss.received, 20);
    assert_eq!(loss.cumulative_lost, 0);
    assert_eq!(rx.stats().markers, 1);
    assert_eq!(rx.ssrc(), Some(Ssrc::new(7)));
    // Constant transit: no jitter.
    assert_eq!(rx.jitter(), 0);
}

#[test]
fn duplicates_reordering_and_old_packets() {
    let mut rx = receiver();
    let t = Instant::now();
    for seq in [100u16, 101, 103, 102, 103, 104] {
        let _ = rx.receive(t, &packet(1, seq, u32::from(seq) * 160, PCMU, false));
    }
    let s = rx.stats();
    assert_eq!(s.accepted, 5);
    assert_eq!(s.duplicate, 1);
    assert_eq!(s.reordered, 1);
    assert_eq!(rx.loss().unwrap().cumulative_lost, 0);
    // Advance 300, then a packet 150 behind: beyond MAX_MISORDER.
    for seq in 105..=400u16 {
        rx.receive(t, &packet(1, seq, u32::from(seq) * 160, PCMU, false))
            .unwrap();
    }
    assert_eq!(
        rx.receive(t, &packet(1, 250, 250 * 160, PCMU, false)),
        Err(RtpDrop::Old)
    );
    // A reordered packet within the window is still a duplicate if seen.
    assert_eq!(
        rx.receive(t, &packet(1, 350, 350 * 160, PCMU, false)),
        Err(RtpDrop::Duplicate)
    );
    assert_eq!(
        rx.receive(t, &packet(1, 99, 99 * 160, PCMU, false)),
        Err(RtpDrop::Old)
    );
    assert_eq!(rx.stats().old, 2);

    // Just before the first packet of the stream: old, not counted as received.
    let mut rx = receiver();
    rx.receive(t, &packet(1, 0, 0, PCMU, false)).unwrap();
    assert_eq!(
        rx.receive(t, &packet(1, 65_535, 0, PCMU, false)),
        Err(RtpDrop::Old)
    );
    assert_eq!(rx.loss().unwrap().received, 1);
}

#[test]
fn drop_reasons_are_counted() {
    let mut rx = receiver();
    let t = Instant::now();
    rx.receive(t, &packet(1, 1, 0, PCMU, false)).unwrap();
    assert_eq!(
        rx.receive(t, &packet(1, 2, 0, 8, false)),
        Err(RtpDrop::UnknownPayloadType(pt(8)))
    );
    assert_eq!(
        rx.receive(t, &[0x80, 0, 0]),
        Err(RtpDrop::Malformed(RtpError::TooShort { len: 3 }))
    );
    let mut v1 = packet(1, 3, 0, PCMU, false);
    v1[0] = 0x40;
    assert_eq!(
        rx.receive(t, &v1),
        Err(RtpDrop::Malformed(RtpError::BadVersion(1)))
    );
    let mut bad_cc = packet(1, 3, 0, PCMU, false);
    bad_cc.truncate(20);
    bad_cc[0] = 0x8f; // 15 CSRCs in 8 bytes
    assert!(matches!(
        rx.receive(t, &bad_cc),
        Err(RtpDrop::Malformed(RtpError::CsrcTruncated {
            count: 15,
            ..
        }))
    ));
    // telephone-event is accepted.
    assert!(rx.receive(t, &packet(1, 3, 0, EVENT, true)).is_ok());
    let s = rx.stats();
    assert_eq!(
        (
            s.datagrams,
            s.accepted,
            s.unknown_pt,
            s.too_short,
            s.bad_version,
            s.malformed
        ),
        (6, 2, 1, 1, 1, 1)
    );
}

#[test]
fn garbage_never_panics_and_every_datagram_is_accounted_for() {
    let mut rng = StdRng::seed_from_u64(99);
    let mut rx = receiver();
    let t = Instant::now();
    let valid = packet(5, 10, 1600, PCMU, false);
    for i in 0..50_000u32 {
        let buf: Vec<u8> = if i % 2 == 0 {
            let len = rng.gen_range(0..80);
            (0..len).map(|_| rng.r#gen()).collect()
        } else {
            // A valid packet with a few random bytes changed and a random length.
            let mut b = valid.clone();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..b.len());
                b[at] = rng.r#gen();
            }
            b.truncate(rng.gen_range(0..=b.len()));
            b
        };
        let _ = rx.receive(t + Duration::from_micros(u64::from(i)), &buf);
    }
    let s = rx.stats();
    assert_eq!(s.datagrams, 50_000);
    assert_eq!(
        s.accepted
            + s.too_short
            + s.bad_version
            + s.malformed
            + s.unknown_pt
            + s.duplicate
            + s.old
            + s.jump
            + s.probation
            + s.implausible,
        s.datagrams
    );
    assert!(s.too_short > 0 && s.bad_version > 0 && s.malformed > 0 && s.unknown_pt > 0);
}

#[test]
fn ssrc_change_needs_probation_then_starts_a_new_stream() {
    let mut rx = receiver();
    let t = Instant::now();
    for seq in 0..50u16 {
        rx.receive(t, &packet(1, seq, u32::from(seq) * 160, PCMU, false))
            .unwrap();
    }
    // A stray packet from another source does not switch.
    assert_eq!(
        rx.receive(t, &packet(2, 9000, 0, PCMU, false)),
        Err(RtpDrop::Probation)
    );
    rx.receive(t, &packet(1, 50, 50 * 160, PCMU, false))
        .unwrap();
    // Non-consecutive packets of the new source do not either.
    assert_eq!(
        rx.receive(t, &packet(2, 7000, 0, PCMU, false)),
        Err(RtpDrop::Probation)
    );
    assert_eq!(
        rx.receive(t, &packet(2, 7005, 0, PCMU, false)),
        Err(RtpDrop::Probation)
    );
    assert_eq!(rx.ssrc(), Some(Ssrc::new(1)));
    // Two in order: switch on the second.
    let p = packet(2, 7006, 160, PCMU, true);
    let r = rx.receive(t, &p).unwrap();
    assert!(r.new_stream);
    assert_eq!(r.ext_seq, 7006);
    assert_eq!(rx.ssrc(), Some(Ssrc::new(2)));
    assert_eq!(rx.stats().ssrc_changes, 1);
    assert_eq!(rx.stats().probation, 3);
    let loss = rx.loss().unwrap();
    assert_eq!((loss.expected, loss.received), (1, 1));
    let p = packet(2, 7007, 320, PCMU, false);
    let r = rx.receive(t, &p).unwrap();
    assert!(!r.new_stream);
    // The old source's late packets are now the stranger.
    assert_eq!(
        rx.receive(t, &packet(1, 51, 0, PCMU, false)),
        Err(RtpDrop::Probation)
    );
}

#[test]
fn sequence_restart_of_the_same_source() {
    let mut rx = receiver();
    let t = Instant::now();
    for seq in 0..10u16 {
        rx.receive(t, &packet(1, seq, 0, PCMU, false)).unwrap();
    }
    assert_eq!(
        rx.receive(t, &packet(1, 20_000, 0, PCMU, false)),
        Err(RtpDrop::Jump)
    );
    let p = packet(1, 20_001, 0, PCMU, false);
    let r = rx.receive(t, &p).unwrap();
    assert!(r.new_stream);
    assert_eq!(rx.stats().restarts, 1);
    assert_eq!(rx.loss().unwrap().expected, 1);
    // A single jump followed by the old sequence is just dropped.
    assert_eq!(
        rx.receive(t, &packet(1, 50_000, 0, PCMU, false)),
        Err(RtpDrop::Jump)
    );
    assert!(
        !rx.receive(t, &packet(1, 20_002, 0, PCMU, false))
            .unwrap()
            .new_stream
    );
}

#[test]
fn loss_and_fraction_lost_per_interval() {
    let mut rx = receiver();
    let t = Instant::now();
    // 1000 packets, every 10th lost.
    for seq in 0..1000u16 {
        if seq % 10 != 5 {
            rx.receive(t, &packet(1, seq, 0, PCMU, false)).unwrap();
        }
    }
    let block = rx.report_block(t).unwrap();
    assert_eq!(block.ssrc, Ssrc::new(1));
    assert_eq!(block.cumulative_lost, 100);
    assert_eq!(block.ext_highest_seq, 999);
    // 100 of 1000 lost: floor(100 * 256 / 1000) = 25.
    assert_eq!(block.fraction_lost, 25);
    // Next interval without loss.
    for seq in 1000..1100u16 {
        rx.receive(t, &packet(1, seq, 0, PCMU, false)).unwrap();
    }
    let block = rx.report_block(t).unwrap();
    assert_eq!(block.fraction_lost, 0);
    assert_eq!(block.cumulative_lost, 100);
    // A late arrival of a lost packet (within MAX_MISORDER) reduces the cumulative loss.
    rx.receive(t, &packet(1, 1100, 0, PCMU, false)).unwrap();
    rx.receive(t, &packet(1, 1105, 0, PCMU, false)).unwrap();
    assert_eq!(rx.loss().unwrap().cumulative_lost, 104);
    let p = packet(1, 1102, 0, PCMU, false);
    let r = rx.receive(t, &p).unwrap();
    assert_eq!(r.ext_seq, 1102);
    assert_eq!(rx.loss().unwrap().cumulative_lost, 103);
    assert_eq!(rx.stats().reordered, 1);
}

#[test]
fn interarrival_jitter_follows_rfc3550_a8() {
    let mut rx = receiver();
    let t0 = Instant::now();
    // Transit alternates between +0 and +10 ms: |D| = 80 ticks every packet.
    for k in 0..1000u32 {
        let extra = if k % 2 == 0 { 0 } else { 10 };
        let now = t0 + Duration::from_millis(u64::from(20 * k + extra));
        rx.receive(now, &packet(1, k as u16, k * 160, PCMU, false))
            .unwrap();
    }
    let j = rx.jitter();
    assert!((78..=80).contains(&j), "jitter {j}");
    // The duration keeps the fraction of a timestamp unit that jitter() rounds away.
    let d = rx.jitter_duration();
    assert!(d >= Duration::from_micros(u64::from(j) * 125), "{d:?}");
    assert!(d < Duration::from_micros(u64::from(j + 1) * 125), "{d:?}");

    // telephone-event packets repeat their timestamp: they must not count.
    let mut rx = receiver();
    for k in 0..100u32 {
        let now = t0 + Duration::from_millis(u64::from(50 * k));
        rx.receive(now, &packet(1, k as u16, 8000, EVENT, k == 0))
            .unwrap();
    }
    assert_eq!(rx.jitter(), 0);
}

#[test]
fn report_block_carries_lsr_and_dlsr() {
    let mut rx = receiver();
    let t0 = Instant::now();
    rx.receive(t0, &packet(3, 1, 0, PCMU, false)).unwrap();
    assert_eq!(rx.report_block(t0).unwrap().lsr, 0);
    let ntp = NtpTime::new(0x0123_4567_89ab_cdef);
    rx.note_sender_report(t0, Ssrc::new(3), ntp);
    // An SR from some other source is ignored.
    rx.note_sender_report(t0, Ssrc::new(4), NtpTime::new(1 << 40));
    let block = rx.report_block(t0 + Duration::from_millis(1500)).unwrap();
    assert_eq!(block.lsr, 0x4567_89ab);
    assert_eq!(block.dlsr, 98_304); // 1.5 s in 1/65536 s
}
