//! RTP timeout: with no valid RTP for `rtp_timeout` while the peer should be sending, one
//! `RtpTimeout` event; re-armed by traffic or `update()`; never while the peer holds us.

use crate::media_stream_support;

use std::time::{Duration, Instant};

use media_stream_support::*;
use voxline::media::stream::{MediaEvent, MediaStream};
use voxline::sdp::{Codec, Direction};

fn stream(t0: Instant, timeout: Option<Duration>) -> MediaStream {
    let mut cfg = config(
        session(Codec::Pcmu, addr("192.0.2.1:4000"), true, false),
        1,
        9,
        t0,
    );
    cfg.rtp_timeout = timeout;
    MediaStream::new(cfg, t0).expect("stream")
}

fn timeouts(evs: &[MediaEvent]) -> Vec<Duration> {
    evs.iter()
        .filter_map(|e| match e {
            MediaEvent::RtpTimeout { silent_for } => Some(*silent_for),
            _ => None,
        })
        .collect()
}

#[test]
fn fires_once_after_the_timeout_and_rearms_on_traffic() {
    let t0 = Instant::now();
    let mut s = stream(t0, Some(Duration::from_secs(3)));
    let outs = drive(&mut s, t0 + ms(2999));
    assert!(timeouts(&events(&outs)).is_empty());
    let outs = drive(&mut s, t0 + ms(10_000));
    assert_eq!(timeouts(&events(&outs)), vec![Duration::from_secs(3)]);

    // Traffic for a second re-arms it; another one 3 s after the last packet.
    let peer = addr("192.0.2.1:4000");
    let mut last = t0;
    for k in 0..50u16 {
        last = t0 + ms(10_000 + u64::from(k) * 20);
        s.handle_rtp(
            last,
            peer,
            &rtp(0, k, u32::from(k) * 160, 77, k == 0, &[0xff; 160]),
        );
        let outs = drive(&mut s, last);
        assert!(timeouts(&events(&outs)).is_empty());
    }
    let outs = drive(&mut s, t0 + ms(20_000));
    let got = timeouts(&events(&outs));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0], Duration::from_secs(3));
    assert!(last + Duration::from_secs(3) <= t0 + ms(20_000));

    // Garbage and foreign packets do not count as traffic.
    s.handle_rtp(t0 + ms(20_001), peer, b"garbage");
    let outs = drive(&mut s, t0 + ms(30_000));
    assert!(
        timeouts(&events(&outs)).is_empty(),
        "already fired, not re-armed"
    );
}

#[test]
fn update_rearms_it() {
    let t0 = Instant::now();
    let mut s = stream(t0, Some(Duration::from_secs(2)));
    assert_eq!(timeouts(&events(&drive(&mut s, t0 + ms(5000)))).len(), 1);
    let neg = s.negotiated().clone();
    s.update(t0 + ms(5000), neg).expect("update");
    let outs = drive(&mut s, t0 + ms(8000));
    assert_eq!(timeouts(&events(&outs)), vec![Duration::from_secs(2)]);
}

#[test]
fn not_while_the_peer_holds_us() {
    let t0 = Instant::now();
    let mut s = stream(t0, Some(Duration::from_secs(3)));
    // The peer sent a=sendonly... with remote_hold: it will not receive; our direction is
    // recvonly but it holds us, so it may well send nothing (or music on hold).
    let mut neg = s.negotiated().clone();
    neg.direction = Direction::RecvOnly;
    neg.remote_hold = true;
    s.update(t0, neg.clone()).expect("hold");
    assert!(timeouts(&events(&drive(&mut s, t0 + ms(20_000)))).is_empty());
    // a=inactive from the peer: we neither send nor receive.
    neg.direction = Direction::Inactive;
    s.update(t0 + ms(20_000), neg.clone()).expect("inactive");
    assert!(timeouts(&events(&drive(&mut s, t0 + ms(40_000)))).is_empty());
    // Resumed: the timer runs again from the update.
    neg.direction = Direction::SendRecv;
    neg.remote_hold = false;
    s.update(t0 + ms(40_000), neg).expect("resume");
    let outs = drive(&mut s, t0 + ms(50_000));
    assert_eq!(timeouts(&events(&outs)), vec![Duration::from_secs(3)]);
}

#[test]
fn never_without_a_timeout() {
    let t0 = Instant::now();
    let mut s = stream(t0, None);
    assert!(timeouts(&events(&drive(&mut s, t0 + ms(60_000)))).is_empty());
}
