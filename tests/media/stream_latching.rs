//! Symmetric RTP: the SDP says 10.0.0.5:4000 but the peer is behind a NAT and its packets come
//! from 203.0.113.7:5555. The stream latches that address after two valid packets, RTCP
//! follows, packets from elsewhere are dropped once the window has closed, and `update()`
//! re-opens latching.

use crate::media_stream_support;

use std::net::SocketAddr;
use std::time::Instant;

use media_stream_support::*;
use voxline::media::stream::{MediaEvent, MediaStream};
use voxline::sdp::Codec;

const PEER_SSRC: u32 = 0x5eed;

fn sdp_addr() -> SocketAddr {
    addr("10.0.0.5:4000")
}

fn nat_addr() -> SocketAddr {
    addr("203.0.113.7:5555")
}

fn stream(t0: Instant) -> MediaStream {
    MediaStream::new(
        config(session(Codec::Pcmu, sdp_addr(), true, false), 1, 21, t0),
        t0,
    )
    .expect("stream")
}

/// One PCMU packet `k` of the peer (loud, so it shows in the caller audio).
fn packet(k: u16, ssrc: u32) -> Vec<u8> {
    rtp(
        0,
        100 + k,
        8000 + u32::from(k) * 160,
        ssrc,
        k == 0,
        &[0x10; 160],
    )
}

/// Ticks the stream at `t` and returns where its RTP went (one address, checked).
fn tick_destination(s: &mut MediaStream, t: Instant) -> SocketAddr {
    s.handle_timeout(t);
    let to: Vec<SocketAddr> = rtp_datagrams(&drain(s))
        .into_iter()
        .map(|(to, _)| to)
        .collect();
    assert!(!to.is_empty(), "a tick was due");
    assert!(to.iter().all(|a| *a == to[0]), "{to:?}");
    to[0]
}

#[test]
fn latches_the_nat_address_and_sends_there() {
    let t0 = Instant::now();
    let mut s = stream(t0);
    assert_eq!(tick_destination(&mut s, t0), sdp_addr());

    s.handle_rtp(t0 + ms(5), nat_addr(), &packet(0, PEER_SSRC));
    assert!(
        events(&drain(&mut s)).is_empty(),
        "one packet does not latch"
    );
    s.handle_rtp(t0 + ms(25), nat_addr(), &packet(1, PEER_SSRC));
    assert_eq!(
        events(&drain(&mut s)),
        vec![MediaEvent::Latched { addr: nat_addr() }]
    );
    assert_eq!(tick_destination(&mut s, t0 + ms(40)), nat_addr());
    let st = s.stats();
    assert_eq!(st.latched, Some(nat_addr()));
    assert_eq!(st.rtcp_peer, Some(addr("203.0.113.7:5556")));
    assert_eq!(
        st.packets_received, 2,
        "the packets before the latch were played too"
    );
}

#[test]
fn different_ssrcs_or_wrong_payload_types_do_not_latch() {
    let t0 = Instant::now();
    let mut s = stream(t0);
    // Two packets with different SSRCs.
    s.handle_rtp(t0, nat_addr(), &packet(0, 1));
    s.handle_rtp(t0 + ms(20), nat_addr(), &rtp(0, 7, 0, 2, false, &[0; 160]));
    // Non-negotiated payload type 18 (G.729), same SSRC twice.
    let other = addr("198.51.100.9:7000");
    s.handle_rtp(t0 + ms(30), other, &rtp(18, 1, 0, 9, false, &[0; 20]));
    s.handle_rtp(t0 + ms(40), other, &rtp(18, 2, 160, 9, false, &[0; 20]));
    // Garbage.
    s.handle_rtp(t0 + ms(50), other, b"hello");
    s.handle_rtp(t0 + ms(60), other, b"hello");
    let outs = drain(&mut s);
    assert!(
        !events(&outs)
            .iter()
            .any(|e| matches!(e, MediaEvent::Latched { .. })),
        "{:?}",
        events(&outs)
    );
    assert_eq!(s.stats().latched, None);
}

#[test]
fn hijack_after_the_window_is_dropped_and_counted() {
    let t0 = Instant::now();
    let mut s = stream(t0);
    s.handle_rtp(t0, nat_addr(), &packet(0, PEER_SSRC));
    s.handle_rtp(t0 + ms(20), nat_addr(), &packet(1, PEER_SSRC));
    let _ = drive(&mut s, t0 + ms(6000));
    let received = s.stats().packets_received;

    // 6 s in: the 5 s window is closed. An attacker sends valid packets with its own SSRC.
    let attacker = addr("198.51.100.66:7000");
    for k in 0..10u16 {
        s.handle_rtp(t0 + ms(6000 + u64::from(k)), attacker, &packet(k, 0xbad));
    }
    // And RTCP BYE from the attacker's host on our RTCP socket.
    let bye = [0x81, 203, 0, 1, 0, 0, 0x5e, 0xed];
    s.handle_rtcp(t0 + ms(6010), addr("198.51.100.66:7001"), &bye);
    let outs = drive(&mut s, t0 + ms(6100));
    let evs = events(&outs);
    assert!(
        !evs.iter().any(|e| matches!(
            e,
            MediaEvent::Latched { .. } | MediaEvent::SsrcChanged { .. } | MediaEvent::RemoteBye
        )),
        "{evs:?}"
    );
    assert!(rtp_datagrams(&outs).iter().all(|(to, _)| *to == nat_addr()));
    let st = s.stats();
    assert_eq!(st.dropped_foreign, 10);
    assert_eq!(st.rtcp_dropped_foreign, 1);
    assert_eq!(st.packets_received, received);
    assert_eq!(st.remote_ssrc, Some(PEER_SSRC));
    assert_eq!(st.latched, Some(nat_addr()));

    // The real peer still gets through.
    s.handle_rtp(t0 + ms(6120), nat_addr(), &packet(300, PEER_SSRC));
    assert_eq!(s.stats().packets_received, received + 1);
}

#[test]
fn without_any_latch_only_the_sdp_address_is_accepted_after_the_window() {
    let t0 = Instant::now();
    let mut s = stream(t0);
    let _ = drive(&mut s, t0 + ms(5000));
    s.handle_rtp(t0 + ms(5001), nat_addr(), &packet(0, PEER_SSRC));
    s.handle_rtp(t0 + ms(5021), nat_addr(), &packet(1, PEER_SSRC));
    assert_eq!(s.stats().dropped_foreign, 2);
    s.handle_rtp(t0 + ms(5041), sdp_addr(), &packet(2, PEER_SSRC));
    assert_eq!(s.stats().packets_received, 1);
}

#[test]
fn within_the_window_a_new_source_can_take_over_after_two_packets() {
    let t0 = Instant::now();
    let mut s = stream(t0);
    s.handle_rtp(t0, nat_addr(), &packet(0, PEER_SSRC));
    s.handle_rtp(t0 + ms(20), nat_addr(), &packet(1, PEER_SSRC));
    let moved = addr("203.0.113.7:6000");
    s.handle_rtp(t0 + ms(40), moved, &packet(2, PEER_SSRC));
    assert_eq!(s.stats().dropped_foreign, 1, "one packet is not enough");
    s.handle_rtp(t0 + ms(60), moved, &packet(3, PEER_SSRC));
    let evs = events(&drain(&mut s));
    assert_eq!(
        evs,
        vec![
            MediaEvent::Latched { addr: nat_addr() },
            MediaEvent::Latched { addr: moved }
        ]
    );
    assert_eq!(s.stats().packets_received, 3);
}

#[test]
fn update_reopens_latching() {
    let t0 = Instant::now();
    let mut s = stream(t0);
    s.handle_rtp(t0, nat_addr(), &packet(0, PEER_SSRC));
    s.handle_rtp(t0 + ms(20), nat_addr(), &packet(1, PEER_SSRC));
    let _ = drive(&mut s, t0 + ms(10_000));
    // The NAT rebinds; first without an update: dropped.
    let rebound = addr("203.0.113.7:6666");
    s.handle_rtp(t0 + ms(10_001), rebound, &packet(2, PEER_SSRC));
    s.handle_rtp(t0 + ms(10_002), rebound, &packet(3, PEER_SSRC));
    assert_eq!(s.stats().dropped_foreign, 2);

    // A re-INVITE with the same SDP address re-opens the window.
    let neg = s.negotiated().clone();
    s.update(t0 + ms(10_010), neg).expect("update");
    s.handle_rtp(t0 + ms(10_021), rebound, &packet(4, PEER_SSRC));
    s.handle_rtp(t0 + ms(10_041), rebound, &packet(5, PEER_SSRC));
    let outs = drain(&mut s);
    assert_eq!(events(&outs), vec![MediaEvent::Latched { addr: rebound }]);
    assert_eq!(tick_destination(&mut s, t0 + ms(10_060)), rebound);
    assert_eq!(s.stats().rtcp_peer, Some(addr("203.0.113.7:6667")));

    // A re-INVITE with a new SDP address forgets the latch: media goes to the new SDP address.
    let mut neg = s.negotiated().clone();
    neg.remote_rtp = addr("198.51.100.20:8000");
    neg.remote_rtcp = Some(addr("198.51.100.20:8001"));
    s.update(t0 + ms(10_070), neg).expect("update");
    assert_eq!(
        tick_destination(&mut s, t0 + ms(10_080)),
        addr("198.51.100.20:8000")
    );
    assert_eq!(s.stats().latched, None);
}

#[test]
fn nat_call_end_to_end() {
    // A is behind a NAT: its SDP says 10.0.0.5:4000 (unreachable), its packets come from
    // 203.0.113.7:5555. B only learns the real address by latching.
    let t0 = Instant::now();
    let b_addr = addr("192.0.2.20:50000");
    let a = MediaStream::new(
        config(session(Codec::Pcmu, b_addr, true, false), 0xa, 1, t0),
        t0,
    )
    .expect("A");
    let b = MediaStream::new(
        config(session(Codec::Pcmu, sdp_addr(), true, false), 0xb, 2, t0),
        t0,
    )
    .expect("B");
    let mut net = Net::new(t0, 3);
    let mut pa = Peer::new(a, nat_addr(), t0);
    pa.rtcp_addr = addr("203.0.113.7:5556");
    net.add(pa, Link::delay(ms(20)));
    net.add(Peer::new(b, b_addr, t0), Link::delay(ms(20)));
    net.peers[1]
        .stream
        .send_audio(&tone(1000.0, 8000.0, 8000, 0, 8000))
        .expect("queue");
    net.run_until(t0 + ms(1500));
    let b = &net.peers[1];
    assert!(
        b.event_list()
            .contains(&MediaEvent::Latched { addr: nat_addr() })
    );
    // B's first packets went to the SDP address and were lost; then A heard B.
    assert!(net.undeliverable >= 1);
    let heard = net.peers[0]
        .frames
        .iter()
        .filter(|(_, c, _)| rms(c) > 1000.0)
        .count();
    assert!(heard > 40, "A heard {heard} frames of B's tone");
}
