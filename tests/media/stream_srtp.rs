//! SRTP in the media stream: two streams with crossed SDES keys talk over a lossy, jittery
//! simulated network and hear each other through encryption, RTCP included; what goes on the
//! wire is not the plain RTP; a tampered, replayed or plain packet is dropped and counted and
//! cannot latch; a re-INVITE with a new key rekeys that direction only, and unchanged keys
//! keep the context (a replay stays a replay across the update).

use crate::media_stream_support;

use std::time::Instant;

use media_stream_support::*;
use voxline::media::srtp::SrtpContext;
use voxline::media::stream::MediaStream;
use voxline::sdp::{Codec, MasterKey, NegotiatedMedia, NegotiatedSrtp, SrtpSuite};

const AMP: f64 = 8000.0;

fn key(n: u8) -> MasterKey {
    MasterKey::new([n; 16], [n.wrapping_add(100); 14])
}

fn secure(
    mut neg: NegotiatedMedia,
    suite: SrtpSuite,
    local: MasterKey,
    remote: MasterKey,
) -> NegotiatedMedia {
    neg.srtp = Some(NegotiatedSrtp {
        suite,
        local,
        remote,
    });
    neg
}

fn talk(suite: SrtpSuite, mux: bool) {
    let t0 = Instant::now();
    let (a_addr, b_addr) = (addr("192.0.2.10:40000"), addr("192.0.2.20:50000"));
    let a_neg = secure(
        session(Codec::Pcmu, b_addr, true, mux),
        suite,
        key(1),
        key(2),
    );
    let b_neg = secure(
        session(Codec::Pcmu, a_addr, true, mux),
        suite,
        key(2),
        key(1),
    );
    let a = MediaStream::new(config(a_neg, 0xa, 1, t0), t0).expect("A");
    let b = MediaStream::new(config(b_neg, 0xb, 2, t0), t0).expect("B");
    let mut net = Net::new(t0, 11);
    let link = Link {
        delay: ms(30),
        jitter: ms(10),
        loss: 0.03,
    };
    let ia = net.add(Peer::new(a, a_addr, t0), link);
    let ib = net.add(Peer::new(b, b_addr, t0), link);
    let n = 8000 * 3 / 2;
    net.peers[ia]
        .stream
        .send_audio(&tone(440.0, AMP, 8000, 0, n))
        .expect("queue A");
    net.peers[ib]
        .stream
        .send_audio(&tone(1000.0, AMP, 8000, 0, n))
        .expect("queue B");
    // Long enough for RTCP reports (every 5 s on average) both ways.
    net.run_until(t0 + ms(12_000));

    for (rx, freq) in [(ib, 440.0), (ia, 1000.0)] {
        let p = &net.peers[rx];
        let audio = p.caller_audio();
        // 0.75 s from the middle of the tone.
        let window = &audio[4000..10000];
        assert!(rms(window) > 3000.0, "peer {rx} hears the tone");
        assert!(
            tone_purity(window, freq, 8000) > 0.8,
            "peer {rx}: {freq} Hz"
        );
        let s = p.stream.stats();
        assert!(s.srtp, "{s:?}");
        assert_eq!((s.srtp_auth_failed, s.srtp_replayed), (0, 0), "{s:?}");
        assert!(s.packets_received > 500, "{s:?}");
        assert!(s.rtcp_received >= 1, "SRTCP got through: {s:?}");
        assert_eq!(s.rtcp_malformed, 0);
        assert!(s.rtt_ms.is_some(), "report blocks were read: {s:?}");
    }
    // On the wire: RTP header in the clear, the payload encrypted, the tag after it.
    let tag = suite.rtp_tag_len();
    let sent = net.peers[ia].rtp_sent();
    let first = sent.first().expect("A sent");
    assert_eq!(first.payload.len(), 12 + 160 + tag);
    assert_eq!(first.payload[1] & 0x7f, 0, "PCMU, header in the clear");
    let silence = sent
        .iter()
        .filter(|s| {
            s.payload
                .get(12..172)
                .is_some_and(|p| p.iter().all(|b| *b == 0xff))
        })
        .count();
    assert_eq!(
        silence, 0,
        "μ-law silence (0xff) never shows through the cipher"
    );
}

#[test]
fn two_streams_hear_each_other_through_srtp_80() {
    talk(SrtpSuite::AesCm128HmacSha1_80, false);
}

#[test]
fn two_streams_hear_each_other_through_srtp_32_with_rtcp_mux() {
    talk(SrtpSuite::AesCm128HmacSha1_32, true);
}

#[test]
fn two_streams_hear_each_other_through_aes_gcm() {
    talk(SrtpSuite::AeadAes128Gcm, false);
}

/// A stream that receives with `key(1)` from 192.0.2.1:4000.
fn receiver(t0: Instant) -> MediaStream {
    let neg = secure(
        session(Codec::Pcmu, addr("192.0.2.1:4000"), true, false),
        SrtpSuite::AesCm128HmacSha1_80,
        key(2),
        key(1),
    );
    MediaStream::new(config(neg, 0xb, 3, t0), t0).expect("stream")
}

fn protected(ctx: &mut SrtpContext, seq: u16) -> Vec<u8> {
    let mut p = rtp(0, seq, u32::from(seq) * 160, 42, seq == 1, &[0x55; 160]);
    ctx.protect_rtp(&mut p).expect("protect");
    p
}

#[test]
fn tampered_replayed_and_plain_packets_are_dropped_and_counted() {
    let t0 = Instant::now();
    let mut s = receiver(t0);
    let peer = addr("192.0.2.1:4000");
    let mut sender = SrtpContext::new(SrtpSuite::AesCm128HmacSha1_80, &key(1));

    // Plain RTP, and SRTP under another key: neither authenticates, neither latches.
    s.handle_rtp(t0, peer, &rtp(0, 1, 160, 42, true, &[0x55; 160]));
    let mut stranger = SrtpContext::new(SrtpSuite::AesCm128HmacSha1_80, &key(9));
    s.handle_rtp(t0, peer, &protected(&mut stranger, 2));
    s.handle_rtp(t0, peer, &protected(&mut stranger, 3));
    let st = s.stats();
    assert_eq!((st.srtp_auth_failed, st.packets_received), (3, 0), "{st:?}");
    assert_eq!(st.latched, None, "forged packets cannot latch");

    // One bit flipped in the payload, then in the tag.
    let good = protected(&mut sender, 10);
    for at in [40, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        s.handle_rtp(t0, peer, &bad);
    }
    assert_eq!(s.stats().srtp_auth_failed, 5);
    // The real one passes, once; again it is a replay.
    s.handle_rtp(t0, peer, &good);
    s.handle_rtp(t0 + ms(1), peer, &good);
    let next = protected(&mut sender, 11);
    s.handle_rtp(t0 + ms(20), peer, &next);
    let st = s.stats();
    assert_eq!(st.srtp_replayed, 1, "{st:?}");
    assert_eq!(st.packets_received, 2, "{st:?}");
    assert_eq!(st.latched, Some(peer), "two authentic packets latch");
    // Truncated packets and garbage fail authentication; nothing panics.
    s.handle_rtp(t0 + ms(21), peer, &next[..15]);
    s.handle_rtp(t0 + ms(21), peer, &[]);
    s.handle_rtcp(
        t0 + ms(21),
        addr("192.0.2.1:4001"),
        &[0x80, 200, 0, 1, 1, 2, 3, 4],
    );
    let st = s.stats();
    assert_eq!(st.srtp_auth_failed, 8, "too short to carry a tag: {st:?}");
    assert_eq!((st.dropped_malformed, st.rtcp_malformed), (0, 0), "{st:?}");
}

#[test]
fn a_reinvite_with_new_keys_rekeys_and_unchanged_keys_carry_on() {
    let t0 = Instant::now();
    let mut s = receiver(t0);
    let peer = addr("192.0.2.1:4000");
    let mut sender = SrtpContext::new(SrtpSuite::AesCm128HmacSha1_80, &key(1));
    let p1 = protected(&mut sender, 1);
    s.handle_rtp(t0, peer, &p1);
    assert_eq!(s.stats().packets_received, 1);

    // The same session again (a refresh re-INVITE): the context carries on.
    let same = s.negotiated().clone();
    s.update(t0 + ms(10), same.clone()).expect("update");
    s.handle_rtp(t0 + ms(10), peer, &p1);
    assert_eq!(s.stats().srtp_replayed, 1, "the replay window survived");
    let our_tx_before = s.negotiated().srtp.clone();

    // The peer rekeys: its old key stops working, the new one works from the next packet.
    let mut rekeyed = same;
    if let Some(k) = rekeyed.srtp.as_mut() {
        k.remote = key(5);
    }
    s.update(t0 + ms(20), rekeyed).expect("update");
    s.handle_rtp(t0 + ms(20), peer, &protected(&mut sender, 2));
    assert_eq!(s.stats().srtp_auth_failed, 1);
    let mut new_sender = SrtpContext::new(SrtpSuite::AesCm128HmacSha1_80, &key(5));
    s.handle_rtp(t0 + ms(40), peer, &protected(&mut new_sender, 3));
    assert_eq!(s.stats().packets_received, 2);
    assert_eq!(
        s.negotiated().srtp.as_ref().map(|k| &k.local),
        our_tx_before.as_ref().map(|k| &k.local),
        "our own key is unchanged"
    );

    // Down to plain RTP (a re-INVITE without keys): plain packets are taken again.
    let mut plain = s.negotiated().clone();
    plain.srtp = None;
    s.update(t0 + ms(60), plain).expect("update");
    s.handle_rtp(t0 + ms(60), peer, &rtp(0, 4, 640, 42, false, &[0x55; 160]));
    let st = s.stats();
    assert!(!st.srtp);
    assert_eq!(st.packets_received, 3, "{st:?}");
}
