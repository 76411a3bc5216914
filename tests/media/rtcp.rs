//! RTCP: compound build/parse round trips, robustness to garbage, RTT from LSR/DLSR between
//! two simulated endpoints, and the seeded report scheduler.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use voxline::media::rtcp::{
    CompoundReport, NtpClock, NtpTime, PT_APP, ReportBlock, RtcpError, RtcpPacket, RtcpScheduler,
    SdesChunk, SenderInfo, is_rtcp, parse_compound, write_bye,
};
use voxline::media::rtp::{RtpHeader, RtpReceiver, RtpReceiverConfig, RtpTimestamp, SeqNo, Ssrc};
use voxline::sdp::PayloadType;

fn block(ssrc: u32, lost: i32) -> ReportBlock {
    ReportBlock {
        ssrc: Ssrc::new(ssrc),
        fraction_lost: 12,
        cumulative_lost: lost,
        ext_highest_seq: 0x0001_0005,
        jitter: 77,
        lsr: 0xaabb_ccdd,
        dlsr: 65_536,
    }
}

#[test]
fn receiver_report_with_cname_round_trips() {
    let blocks = [block(9, 300), block(10, -5)];
    let report = CompoundReport {
        ssrc: Ssrc::new(0x1234_5678),
        sender: None,
        blocks: &blocks,
        cname: "voxline@192.0.2.1",
    };
    let mut buf = [0u8; 256];
    let n = report.write(&mut buf).unwrap();
    assert_eq!(n, report.len());
    assert_eq!(n % 4, 0);
    assert!(is_rtcp(&buf[..n]));
    let packets = parse_compound(&buf[..n]).unwrap();
    assert_eq!(
        packets,
        vec![
            RtcpPacket::ReceiverReport {
                ssrc: Ssrc::new(0x1234_5678),
                reports: blocks.to_vec(),
            },
            RtcpPacket::SourceDescription(vec![SdesChunk {
                ssrc: Ssrc::new(0x1234_5678),
                cname: Some(b"voxline@192.0.2.1"),
            }]),
        ]
    );
    // A buffer one byte short is refused, not overrun.
    assert_eq!(
        report.write(&mut buf[..n - 1]),
        Err(RtcpError::BufferTooSmall {
            needed: n,
            available: n - 1
        })
    );
}

#[test]
fn sender_report_sdes_and_bye_compound_round_trips() {
    let info = SenderInfo {
        ntp: NtpTime::new(0xe000_0000_8000_0000),
        rtp_ts: RtpTimestamp::new(160_000),
        packet_count: 1000,
        octet_count: 160_000,
    };
    let blocks = [block(2, 0)];
    let report = CompoundReport {
        ssrc: Ssrc::new(1),
        sender: Some(info),
        blocks: &blocks,
        cname: "a",
    };
    let mut buf = [0u8; 256];
    let n = report.write(&mut buf).unwrap();
    let m = write_bye(&mut buf[n..], Ssrc::new(1), Some("call ended")).unwrap();
    let packets = parse_compound(&buf[..n + m]).unwrap();
    assert_eq!(packets.len(), 3);
    assert_eq!(
        packets[0],
        RtcpPacket::SenderReport {
            ssrc: Ssrc::new(1),
            info,
            reports: blocks.to_vec()
        }
    );
    assert_eq!(
        packets[2],
        RtcpPacket::Bye {
            ssrcs: vec![Ssrc::new(1)],
            reason: Some(b"call ended"),
        }
    );
    // BYE without a reason.
    let m = write_bye(&mut buf, Ssrc::new(4), None).unwrap();
    assert_eq!(m, 8);
    assert_eq!(
        parse_compound(&buf[..m]).unwrap(),
        vec![RtcpPacket::Bye {
            ssrcs: vec![Ssrc::new(4)],
            reason: None
        }]
    );
}

#[test]
fn hand_made_compound_with_padding_and_unknown_types() {
    // RR with no blocks, then an APP packet, then a padded SDES with two chunks (the second
    // with a NOTE item before its CNAME).
    let mut b = vec![0x80, 201, 0, 1, 0, 0, 0, 5];
    b.extend_from_slice(&[0x80 | 1, PT_APP, 0, 2, 0, 0, 0, 5, b'n', b'a', b'm', b'e']);
    let sdes_body: Vec<u8> = [
        &[0, 0, 0, 5, 1, 2, b'h', b'i', 0, 0, 0, 0][..],
        &[0, 0, 0, 6, 7, 1, b'x', 1, 1, b'y', 0, 0][..],
    ]
    .concat();
    let pad = 4;
    let words = (4 + sdes_body.len() + pad) / 4 - 1;
    b.extend_from_slice(&[0xa0 | 2, 202, 0, words as u8]);
    b.extend_from_slice(&sdes_body);
    b.extend_from_slice(&[0, 0, 0, pad as u8]);
    let packets = parse_compound(&b).unwrap();
    assert_eq!(
        packets,
        vec![
            RtcpPacket::ReceiverReport {
                ssrc: Ssrc::new(5),
                reports: vec![]
            },
            RtcpPacket::Other {
                packet_type: PT_APP,
                count: 1,
                body: &[0, 0, 0, 5, b'n', b'a', b'm', b'e']
            },
            RtcpPacket::SourceDescription(vec![
                SdesChunk {
                    ssrc: Ssrc::new(5),
                    cname: Some(b"hi")
                },
                SdesChunk {
                    ssrc: Ssrc::new(6),
                    cname: Some(b"y")
                },
            ]),
        ]
    );
}

#[test]
fn malformed_compounds_are_errors() {
    assert_eq!(parse_compound(&[]), Err(RtcpError::Empty));
    assert_eq!(
        parse_compound(&[0x80, 201]),
        Err(RtcpError::Truncated { packet_type: 0 })
    );
    assert_eq!(
        parse_compound(&[0x40, 201, 0, 1, 0, 0, 0, 1]),
        Err(RtcpError::BadVersion(1))
    );
    assert_eq!(
        parse_compound(&[0x80, 201, 0, 5, 0, 0, 0, 1]),
        Err(RtcpError::BadLength)
    );
    // Padding bit on a packet that is not last.
    assert_eq!(
        parse_compound(&[0xa0, 201, 0, 1, 0, 0, 0, 1, 0x80, 201, 0, 1, 0, 0, 0, 2]),
        Err(RtcpError::BadPadding)
    );
    // RR claiming one report block without room for it.
    assert_eq!(
        parse_compound(&[0x81, 201, 0, 1, 0, 0, 0, 1]),
        Err(RtcpError::Truncated { packet_type: 201 })
    );
    // SR too short for its sender info.
    assert_eq!(
        parse_compound(&[0x80, 200, 0, 1, 0, 0, 0, 1]),
        Err(RtcpError::Truncated { packet_type: 200 })
    );
    // BYE reason longer than the packet.
    assert_eq!(
        parse_compound(&[0x81, 203, 0, 2, 0, 0, 0, 1, 9, b'a', 0, 0]),
        Err(RtcpError::Truncated { packet_type: 203 })
    );
    // Too many report blocks to build.
    let blocks = vec![block(1, 0); 32];
    let report = CompoundReport {
        ssrc: Ssrc::new(1),
        sender: None,
        blocks: &blocks,
        cname: "x",
    };
    assert_eq!(report.write(&mut [0u8; 2048]), Err(RtcpError::TooLarge));
}

#[test]
fn garbage_and_truncations_never_panic() {
    let mut rng = StdRng::seed_from_u64(7);
    let blocks = [block(1, 1), block(2, 2)];
    let mut valid = [0u8; 256];
    let n = CompoundReport {
        ssrc: Ssrc::new(3),
        sender: Some(SenderInfo {
            ntp: NtpTime::new(1),
            rtp_ts: RtpTimestamp::new(2),
            packet_count: 3,
            octet_count: 4,
        }),
        blocks: &blocks,
        cname: "cname",
    }
    .write(&mut valid)
    .unwrap();
    let valid = &valid[..n];
    // Every truncation of a valid compound is an error, never a panic.
    for len in 0..n {
        if len % 4 != 0 || len == 0 {
            assert!(parse_compound(&valid[..len]).is_err(), "length {len}");
        } else {
            let _ = parse_compound(&valid[..len]);
        }
    }
    let mut ok = 0;
    for i in 0..50_000 {
        let buf: Vec<u8> = if i % 2 == 0 {
            let len = rng.gen_range(0..120);
            let mut b: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            if let Some(first) = b.first_mut() {
                *first = 0x80 | (*first & 0x3f);
            }
            b
        } else {
            let mut b = valid.to_vec();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..b.len());
                b[at] = rng.r#gen();
            }
            b
        };
        if parse_compound(&buf).is_ok() {
            ok += 1;
        }
    }
    // Some mutations still parse (they hit counters or text), most do not.
    assert!(ok > 0 && ok < 50_000, "parsed {ok}");
}

#[test]
fn rtt_between_two_endpoints_from_lsr_and_dlsr() {
    // A sends an SR at t0; it reaches B after 50 ms; B answers 200 ms later with an RR whose
    // block carries LSR/DLSR; it reaches A after another 50 ms. RTT = 100 ms.
    let t0 = Instant::now();
    let clock_a = NtpClock::new(t0, NtpTime::from_unix(Duration::from_secs(1_700_000_000)));
    // B's wall clock is 3 s off: it does not matter, only A's clock is used for the RTT.
    let clock_b = NtpClock::new(t0, NtpTime::from_unix(Duration::from_secs(1_700_000_003)));
    let ssrc_a = Ssrc::new(0xa);
    let mut sr = [0u8; 128];
    let n = CompoundReport {
        ssrc: ssrc_a,
        sender: Some(SenderInfo {
            ntp: clock_a.ntp(t0),
            rtp_ts: RtpTimestamp::new(0),
            packet_count: 1,
            octet_count: 160,
        }),
        blocks: &[],
        cname: "a",
    }
    .write(&mut sr)
    .unwrap();

    // B has received RTP from A, then the SR.
    let pcmu = PayloadType::new(0).unwrap();
    let mut rx_b = RtpReceiver::new(RtpReceiverConfig::new(8000, vec![pcmu], None));
    let mut rtp = [0u8; 32];
    let len = RtpHeader {
        marker: false,
        payload_type: pcmu,
        seq: SeqNo::new(1),
        timestamp: RtpTimestamp::new(0),
        ssrc: ssrc_a,
    }
    .write_packet(&[0; 4], &mut rtp)
    .unwrap();
    rx_b.receive(t0, &rtp[..len]).unwrap();
    let at_b = t0 + Duration::from_millis(50);
    for p in parse_compound(&sr[..n]).unwrap() {
        if let RtcpPacket::SenderReport { ssrc, info, .. } = p {
            rx_b.note_sender_report(at_b, ssrc, info.ntp);
        }
    }
    let reply_at = at_b + Duration::from_millis(200);
    let block = rx_b.report_block(reply_at).unwrap();
    let mut rr = [0u8; 128];
    let m = CompoundReport {
        ssrc: Ssrc::new(0xb),
        sender: Some(SenderInfo {
            ntp: clock_b.ntp(reply_at),
            rtp_ts: RtpTimestamp::new(0),
            packet_count: 0,
            octet_count: 0,
        }),
        blocks: &[block],
        cname: "b",
    }
    .write(&mut rr)
    .unwrap();

    let at_a = reply_at + Duration::from_millis(50);
    let parsed = parse_compound(&rr[..m]).unwrap();
    let RtcpPacket::SenderReport { reports, .. } = &parsed[0] else {
        panic!("expected an SR, got {parsed:?}");
    };
    let rtt = clock_a.round_trip_time(at_a, &reports[0]).unwrap();
    let err = rtt.as_secs_f64() - 0.100;
    assert!(err.abs() < 0.0001, "rtt {rtt:?}");
}

#[test]
fn scheduler_is_randomised_around_five_seconds_and_seeded() {
    let t0 = Instant::now();
    let mut s = RtcpScheduler::new(t0, 1);
    let first = s.next_due() - t0;
    assert!(
        first >= Duration::from_millis(1250) && first < Duration::from_millis(3750),
        "first report after {first:?}"
    );
    assert!(!s.poll(t0 + first - Duration::from_millis(1)));
    let mut now = s.next_due();
    let mut total = Duration::ZERO;
    let mut intervals = Vec::new();
    for _ in 0..1000 {
        assert!(s.poll(now));
        let gap = s.next_due() - now;
        assert!(
            gap >= Duration::from_millis(2500) && gap < Duration::from_millis(7500),
            "interval {gap:?}"
        );
        total += gap;
        intervals.push(gap);
        now = s.next_due();
    }
    let mean = total.as_secs_f64() / 1000.0;
    assert!((mean - 5.0).abs() < 0.15, "mean interval {mean}");
    // Randomised, not constant.
    let spread = intervals.iter().max().unwrap().as_secs_f64()
        - intervals.iter().min().unwrap().as_secs_f64();
    assert!(spread > 4.0, "spread {spread}");
    // Same seed, same schedule; another seed, another one.
    let again = RtcpScheduler::new(t0, 1);
    assert_eq!(again.next_due(), RtcpScheduler::new(t0, 1).next_due());
    assert_ne!(
        RtcpScheduler::new(t0, 1).next_due(),
        RtcpScheduler::new(t0, 2).next_due()
    );
}
