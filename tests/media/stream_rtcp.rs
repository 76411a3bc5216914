//! RTCP between two streams: SR/RR exchange gives an RTT of twice the one-way network delay,
//! loss is reported both locally and by the peer, the MOS lands in a sane range, an SR's RTP
//! timestamp matches the audio clock, a stream that stopped sending sends RR, and BYE is
//! reported.

use crate::media_stream_support;

use std::time::{Duration, Instant};

use media_stream_support::*;
use voxline::media::rtcp::{RtcpPacket, parse_compound};
use voxline::media::rtp::{RtpPacket, Ssrc};
use voxline::media::stream::{MediaEvent, MediaStream};
use voxline::sdp::{Codec, Direction};

fn call(mux: bool, loss_a_to_b: f64) -> Net {
    let t0 = Instant::now();
    let a_addr = addr("192.0.2.10:40000");
    let b_addr = addr("192.0.2.20:50000");
    let a = MediaStream::new(
        config(session(Codec::Pcmu, b_addr, true, mux), 0xa, 1, t0),
        t0,
    )
    .expect("A");
    let b = MediaStream::new(
        config(session(Codec::Pcmu, a_addr, true, mux), 0xb, 2, t0),
        t0,
    )
    .expect("B");
    let mut net = Net::new(t0, 21);
    net.add(
        Peer::new(a, a_addr, t0),
        Link {
            delay: ms(40),
            jitter: Duration::ZERO,
            loss: loss_a_to_b,
        },
    );
    net.add(Peer::new(b, b_addr, t0), Link::delay(ms(40)));
    for p in &mut net.peers {
        p.keep_frames = false;
    }
    net
}

#[test]
fn rtt_loss_and_mos() {
    let mut net = call(false, 0.05);
    let t0 = net.t0;
    net.run_until(t0 + Duration::from_secs(30));
    let a = net.peers[0].stream.stats();
    let b = net.peers[1].stream.stats();
    for s in [&a, &b] {
        let rtt = s.rtt_ms.expect("RTT measured");
        assert!((rtt - 80.0).abs() < 1.0, "RTT {rtt} ms, network 2 x 40 ms");
        assert!(s.rtcp_sent >= 4, "{}", s.rtcp_sent);
        assert!(s.rtcp_received >= 3, "{}", s.rtcp_received);
        assert_eq!(s.rtcp_malformed + s.rtcp_dropped_foreign, 0);
    }
    // B lost about 5 % of A's packets and says so; A learns it from B's reports.
    let loss = b.packets_lost as f64 / b.packets_expected as f64;
    assert!((0.03..0.07).contains(&loss), "loss {loss}");
    assert!(
        b.fraction_lost > 0.0 && b.fraction_lost < 0.15,
        "{}",
        b.fraction_lost
    );
    let reported = a.remote_packets_lost.expect("B reported on A's stream");
    assert!(
        reported > 0 && reported as u64 <= b.packets_lost,
        "{reported}"
    );
    assert!(a.remote_fraction_lost.is_some());
    assert_eq!(a.packets_lost, 0);
    assert_eq!(b.remote_packets_lost, Some(0));
    // E-model: no loss -> about 4.4; 5 % random loss with PLC -> about 3.9.
    assert!(a.mos > 4.3 && a.mos <= 4.5, "A MOS {}", a.mos);
    assert!(b.mos > 3.5 && b.mos < 4.2, "B MOS {}", b.mos);
    assert!(b.mos < a.mos);
    assert!(b.concealment_ratio > 0.01, "{}", b.concealment_ratio);
}

#[test]
fn rtt_with_rtcp_mux() {
    let mut net = call(true, 0.0);
    let t0 = net.t0;
    net.run_until(t0 + Duration::from_secs(20));
    for p in &net.peers {
        let s = p.stream.stats();
        let rtt = s.rtt_ms.expect("RTT measured");
        assert!((rtt - 80.0).abs() < 1.0, "RTT {rtt} ms");
        // RTCP went to the RTP address.
        assert!(
            p.sent
                .iter()
                .filter(|x| x.rtcp)
                .all(|x| x.to.port() % 10_000 == 0)
        );
        assert_eq!(s.dropped_unknown_pt, 0, "RTCP was not taken for RTP");
    }
}

#[test]
fn sender_report_matches_the_audio_clock() {
    let mut net = call(false, 0.0);
    let t0 = net.t0;
    net.run_until(t0 + Duration::from_secs(10));
    let b = &net.peers[1];
    let first_rtp = b.rtp_sent()[0];
    let ts0 = RtpPacket::parse(&first_rtp.payload)
        .expect("rtp")
        .timestamp
        .get();
    let report = b.sent.iter().find(|s| s.rtcp).expect("a report");
    assert_eq!(report.to, addr("192.0.2.10:40001"));
    let packets = parse_compound(&report.payload).expect("valid RTCP");
    let RtcpPacket::SenderReport {
        ssrc,
        info,
        reports,
    } = &packets[0]
    else {
        panic!("B sends audio, so it sends an SR: {packets:?}");
    };
    assert_eq!(*ssrc, Ssrc::new(0xb));
    let since = report.at - t0;
    let sent_before = b.rtp_sent().iter().filter(|s| s.at <= report.at).count();
    assert_eq!(info.packet_count as usize, sent_before);
    assert_eq!(info.octet_count as usize, sent_before * 160);
    assert_eq!(
        info.rtp_ts.get().wrapping_sub(ts0),
        (since.as_nanos() * 8000 / 1_000_000_000) as u32
    );
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].ssrc, Ssrc::new(0xa));
    match &packets[1] {
        RtcpPacket::SourceDescription(chunks) => {
            assert_eq!(chunks[0].cname, Some(&b"test-11@voxline"[..]));
        }
        p => panic!("SDES expected, got {p:?}"),
    }
}

#[test]
fn receiver_report_when_not_sending() {
    let mut net = call(false, 0.0);
    let t0 = net.t0;
    net.run_until(t0 + Duration::from_secs(2));
    let mut neg = net.peers[0].stream.negotiated().clone();
    neg.direction = Direction::RecvOnly;
    net.peers[0].stream.update(net.now, neg).expect("hold");
    net.run_until(t0 + Duration::from_secs(30));
    let late_reports: Vec<_> = net.peers[0]
        .sent
        .iter()
        .filter(|s| s.rtcp && s.at > t0 + Duration::from_secs(10))
        .collect();
    assert!(!late_reports.is_empty());
    for r in late_reports {
        assert!(matches!(
            parse_compound(&r.payload).expect("valid")[0],
            RtcpPacket::ReceiverReport { .. }
        ));
    }
}

#[test]
fn bye_is_reported_once() {
    let mut net = call(false, 0.0);
    let t0 = net.t0;
    net.run_until(t0 + Duration::from_secs(1));
    let now = net.now;
    net.peers[0].stream.close(now);
    net.peers[0].stream.close(now);
    net.drain(0);
    net.run_until(t0 + Duration::from_secs(2));
    let byes = net.peers[1]
        .event_list()
        .iter()
        .filter(|e| **e == MediaEvent::RemoteBye)
        .count();
    assert_eq!(byes, 1);
}
