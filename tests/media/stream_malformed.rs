//! Bad input from the network never panics and never plays: garbage, short packets, wrong
//! version, wrong payload types, bad CSRC/extension/padding, bad telephone-event payloads and
//! bad RTCP all end up in counters, and the stream keeps working.

use crate::media_stream_support;

use std::time::Instant;

use media_stream_support::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use voxline::media::codec::g711::ulaw_encode;
use voxline::media::stream::{MediaEvent, MediaOutput, MediaStream};
use voxline::sdp::Codec;

fn stream(t0: Instant, mux: bool) -> MediaStream {
    MediaStream::new(
        config(
            session(Codec::Pcmu, addr("192.0.2.1:4000"), true, mux),
            1,
            31,
            t0,
        ),
        t0,
    )
    .expect("stream")
}

#[test]
fn crafted_bad_packets_are_counted() {
    let t0 = Instant::now();
    let mut s = stream(t0, false);
    let peer = addr("192.0.2.1:4000");
    let good = rtp(0, 10, 1600, 42, true, &[0xff; 160]);

    let mut version1 = good.clone();
    version1[0] = 0x40;
    let mut csrc_overrun = good[..12].to_vec();
    csrc_overrun[0] = 0x8f; // 15 CSRCs, none present
    let mut ext_overrun = good[..16].to_vec();
    ext_overrun[0] = 0x90;
    ext_overrun[12..16].copy_from_slice(&[0xbe, 0xde, 0xff, 0xff]);
    let mut bad_padding = good.clone();
    bad_padding[0] = 0xa0;
    *bad_padding.last_mut().unwrap() = 200;

    let malformed: [&[u8]; 7] = [
        &[],
        &[0x80],
        &good[..11],
        &version1,
        &csrc_overrun,
        &ext_overrun,
        &bad_padding,
    ];
    for d in malformed {
        s.handle_rtp(t0, peer, d);
    }
    // Not negotiated: G.729 (18), G.722 (9), and an RTCP-looking datagram without mux (its
    // second byte reads as marker + payload type 72).
    s.handle_rtp(t0, peer, &rtp(18, 1, 0, 42, false, &[0; 20]));
    s.handle_rtp(t0, peer, &rtp(9, 2, 0, 42, false, &[0; 160]));
    s.handle_rtp(t0, peer, &[0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0]);
    // telephone-event with a 3-byte payload.
    s.handle_rtp(t0, peer, &rtp(TE_PT, 3, 0, 42, true, &[1, 2, 3]));
    // RTCP garbage on the RTCP socket: wrong version, bad length, truncated SR.
    s.handle_rtcp(t0, addr("192.0.2.1:4001"), &[0x40, 200, 0, 0]);
    s.handle_rtcp(t0, addr("192.0.2.1:4001"), &[0x80, 201, 0, 9, 0, 0, 0, 1]);
    s.handle_rtcp(t0, addr("192.0.2.1:4001"), &[0x80, 200, 0, 1, 0, 0, 0, 1]);
    s.handle_rtcp(t0, addr("192.0.2.1:4001"), &[]);

    let st = s.stats();
    assert_eq!(st.dropped_malformed, 7);
    assert_eq!(st.dropped_unknown_pt, 3);
    assert_eq!(st.dtmf_errors, 1);
    assert_eq!(st.rtcp_malformed, 4);
    assert_eq!(st.rtcp_received, 0);
    assert_eq!(
        st.packets_received, 1,
        "only the bad telephone-event passed RTP checks"
    );
    let evs = events(&drain(&mut s));
    assert!(evs.is_empty() || evs.iter().all(|e| matches!(e, MediaEvent::Latched { .. })));

    // Still works: good audio plays.
    let loud: Vec<u8> = tone(700.0, 8000.0, 8000, 0, 160)
        .into_iter()
        .map(ulaw_encode)
        .collect();
    let mut loud_frames = 0;
    for k in 0..20u32 {
        let at = t0 + ms(u64::from(k) * 20);
        s.handle_rtp(at, peer, &rtp(0, 4 + k as u16, k * 160, 42, k == 0, &loud));
        for (caller, _) in frames(&drive(&mut s, at + ms(1))) {
            if rms(&caller) > 3000.0 {
                loud_frames += 1;
            }
        }
    }
    assert!(loud_frames >= 15, "{loud_frames}");
}

#[test]
fn random_garbage_never_panics() {
    for mux in [false, true] {
        let t0 = Instant::now();
        let mut s = stream(t0, mux);
        let mut rng = StdRng::seed_from_u64(99);
        let peer = addr("192.0.2.1:4000");
        for i in 0..20_000u32 {
            let len = rng.gen_range(0..300);
            let mut d: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            // Half of them look like version 2 RTP/RTCP, to get past the first check.
            if i % 2 == 0
                && let Some(b) = d.first_mut()
            {
                *b = 0x80 | (*b & 0x3f);
            }
            let at = t0 + ms(u64::from(i / 20));
            if i % 3 == 0 {
                s.handle_rtcp(at, addr("192.0.2.1:4001"), &d);
            } else {
                s.handle_rtp(at, peer, &d);
            }
            s.handle_info_dtmf(at, "application/dtmf-relay", &d);
            if i % 20 == 0 {
                for o in drive(&mut s, at) {
                    if let MediaOutput::Event(MediaEvent::Frame { caller, sent, .. }) = o {
                        assert_eq!(caller.len(), 160);
                        assert_eq!(sent.len(), 160);
                    }
                }
            }
        }
        let st = s.stats();
        assert!(
            st.dropped_malformed + st.dropped_unknown_pt > 10_000,
            "{st:?}"
        );
        assert!(st.rtcp_malformed > 1000, "{st:?}");
        assert_eq!(st.ticks, 50, "1 s of ticks");
    }
}
