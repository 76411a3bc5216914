//! Packet loss: missing frames are concealed (the caller audio keeps its level), counted in
//! the stats, and with Opus recovered from the next packet's in-band FEC when it is already
//! buffered.

use crate::media_stream_support;

use std::time::{Duration, Instant};

use media_stream_support::*;
use voxline::media::stream::MediaStream;
use voxline::sdp::Codec;

fn lossy_call(codec: Codec, fmtp: Option<&str>) -> Net {
    let t0 = Instant::now();
    let a_addr = addr("192.0.2.10:40000");
    let b_addr = addr("192.0.2.20:50000");
    let a = MediaStream::new(
        config(session_fmtp(codec, fmtp, b_addr, false, true), 0xa, 1, t0),
        t0,
    )
    .expect("A");
    let b = MediaStream::new(
        config(session_fmtp(codec, fmtp, a_addr, false, true), 0xb, 2, t0),
        t0,
    )
    .expect("B");
    let rate = a.sample_rate();
    let mut net = Net::new(t0, 1234);
    net.add(
        Peer::new(a, a_addr, t0),
        Link {
            delay: ms(30),
            jitter: ms(15),
            loss: 0.1,
        },
    );
    net.add(Peer::new(b, b_addr, t0), Link::delay(ms(30)));
    // A talks for 4 s, fed in 1 s chunks as a TTS would.
    for k in 0..4usize {
        let chunk = tone(440.0, 8000.0, rate, k * rate as usize, rate as usize);
        net.peers[0].stream.send_audio(&chunk).expect("queue");
        net.run_until(t0 + Duration::from_secs(k as u64 + 1));
    }
    net
}

/// `block_range`: allowed level of each 100 ms block relative to the tone's RMS (libopus's
/// concealment of a pure tone swings by several dB; G.711's waveform repetition hardly does).
fn check(net: &Net, fec: bool, block_range: (f64, f64)) {
    let b = &net.peers[1];
    let st = b.stream.stats();
    let loss = st.packets_lost as f64 / st.packets_expected as f64;
    assert!((0.05..0.15).contains(&loss), "loss {loss}");
    assert!(st.concealment_ratio > 0.03, "{st:?}");
    if fec {
        // libopus only has LBRR data for some frames of this tone; the stream must use it
        // whenever the next packet is buffered.
        assert!(st.fec_recovered > 0, "FEC recovered {}", st.fec_recovered);
    } else {
        assert_eq!(st.fec_recovered, 0);
    }
    // The tone keeps its level through the losses, from 0.3 s to 3.5 s: overall, and in
    // every 100 ms block (no dropouts).
    let rate = b.stream.sample_rate() as usize;
    let audio = b.caller_audio();
    let expected = 8000.0 / 2f64.sqrt();
    let window = &audio[rate * 3 / 10..rate * 35 / 10];
    let overall = rms(window);
    assert!(
        (overall - expected).abs() < expected * 0.2,
        "overall level {overall:.0}"
    );
    for (i, block) in window.chunks(rate / 10).enumerate() {
        let level = rms(block);
        assert!(
            level > expected * block_range.0 && level < expected * block_range.1,
            "block {i}: level {level:.0}"
        );
    }
}

#[test]
fn pcmu_conceals_losses() {
    check(&lossy_call(Codec::Pcmu, None), false, (0.7, 1.1));
}

#[test]
fn opus_recovers_losses_from_fec() {
    check(
        &lossy_call(Codec::Opus, Some("maxplaybackrate=16000; useinbandfec=1")),
        true,
        (0.3, 1.6),
    );
}
