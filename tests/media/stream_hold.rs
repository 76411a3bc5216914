//! Hold and resume by `update()`: while our direction does not send, no RTP goes out but the
//! receive side keeps ticking; on resume the first packet has the marker bit, the sequence
//! number continues and the timestamp has jumped by exactly the elapsed time.

use crate::media_stream_support;

use std::time::Instant;

use media_stream_support::*;
use voxline::media::dtmf::Digit;
use voxline::media::rtp::RtpPacket;
use voxline::media::stream::{MediaError, MediaStream};
use voxline::sdp::{Codec, Direction};

fn call(codec: Codec) -> Net {
    let t0 = Instant::now();
    let a_addr = addr("192.0.2.10:40000");
    let b_addr = addr("192.0.2.20:50000");
    let a =
        MediaStream::new(config(session(codec, b_addr, true, false), 0xa, 1, t0), t0).expect("A");
    let b =
        MediaStream::new(config(session(codec, a_addr, true, false), 0xb, 2, t0), t0).expect("B");
    let mut net = Net::new(t0, 5);
    net.add(Peer::new(a, a_addr, t0), Link::delay(ms(20)));
    net.add(Peer::new(b, b_addr, t0), Link::delay(ms(20)));
    net
}

fn hold_and_resume(codec: Codec, ticks_per_frame: u32) {
    let mut net = call(codec);
    let t0 = net.t0;
    net.run_until(t0 + ms(1010));
    let before = net.peers[0].rtp_sent().len();
    assert_eq!(before, 51);

    // A puts B on hold: our direction becomes recvonly.
    let mut neg = net.peers[0].stream.negotiated().clone();
    neg.direction = Direction::RecvOnly;
    net.peers[0]
        .stream
        .update(net.now, neg.clone())
        .expect("hold");
    assert_eq!(
        net.peers[0].stream.send_dtmf(net.now, Digit::D1, ms(100)),
        Err(MediaError::NotSending)
    );
    // Agent audio queued during hold waits.
    let rate = net.peers[0].stream.sample_rate();
    net.peers[0]
        .stream
        .send_audio(&tone(500.0, 6000.0, rate, 0, rate as usize / 10))
        .expect("queue");
    let frames_before = net.peers[0].frames.len();
    net.run_until(t0 + ms(3010));
    assert_eq!(net.peers[0].rtp_sent().len(), before, "no RTP on hold");
    assert!(
        net.peers[0]
            .sent
            .iter()
            .any(|s| s.rtcp && s.at > t0 + ms(1010)),
        "RTCP goes on during hold"
    );
    assert_eq!(net.peers[0].stream.agent_ms_sent(), 0);
    // The receive side kept ticking: 100 frames in 2 s, with B's audio (silence) decoded.
    assert_eq!(net.peers[0].frames.len() - frames_before, 100);
    assert!(net.peers[0].stream.stats().packets_received > 140);

    // Resume.
    neg.direction = Direction::SendRecv;
    net.peers[0].stream.update(net.now, neg).expect("resume");
    net.run_until(t0 + ms(3500));
    let sent = net.peers[0].rtp_sent();
    let last_before = RtpPacket::parse(&sent[before - 1].payload).expect("rtp");
    let first_after = RtpPacket::parse(&sent[before].payload).expect("rtp");
    let elapsed = sent[before].at - sent[before - 1].at;
    assert_eq!(elapsed, ms(2020), "ticks 50 -> 151");
    assert!(
        first_after.marker,
        "marker on the first packet after resume"
    );
    assert_eq!(first_after.seq.get(), last_before.seq.get().wrapping_add(1));
    let jump = first_after
        .timestamp
        .get()
        .wrapping_sub(last_before.timestamp.get());
    assert_eq!(
        jump,
        101 * ticks_per_frame,
        "timestamp advanced by the elapsed time"
    );
    // Then continuous again, and the queued agent audio went out first.
    let next = RtpPacket::parse(&sent[before + 1].payload).expect("rtp");
    assert!(!next.marker);
    assert_eq!(
        next.timestamp
            .get()
            .wrapping_sub(first_after.timestamp.get()),
        ticks_per_frame
    );
    assert_eq!(net.peers[0].stream.agent_ms_sent(), 100);
}

#[test]
fn pcmu_hold_resume() {
    hold_and_resume(Codec::Pcmu, 160);
}

#[test]
fn g722_hold_resume() {
    hold_and_resume(Codec::G722, 160);
}

#[test]
fn opus_hold_resume() {
    hold_and_resume(Codec::Opus, 960);
}

#[test]
fn inactive_and_rfc2543_hold_send_nothing() {
    let mut net = call(Codec::Pcma);
    let t0 = net.t0;
    let mut neg = net.peers[0].stream.negotiated().clone();
    neg.direction = Direction::Inactive;
    net.peers[0]
        .stream
        .update(t0, neg.clone())
        .expect("inactive");
    net.run_until(t0 + ms(500));
    assert!(net.peers[0].rtp_sent().is_empty());
    // The peer holds us RFC 2543 style: c=0.0.0.0, direction still "sends".
    neg.direction = Direction::SendRecv;
    neg.remote_rtp = addr("0.0.0.0:50000");
    neg.remote_hold = true;
    net.peers[0].stream.update(net.now, neg).expect("c=0");
    net.run_until(t0 + ms(1000));
    assert!(net.peers[0].rtp_sent().is_empty());
    assert!(!net.peers[0].stream.stats().sending);
}
