//! Audio end to end between two streams over a simulated network (30 ms delay, 0-10 ms
//! jitter): agent audio queued on A comes out of B's `Frame.caller` after the network and
//! jitter-buffer delay, and B's audio comes out of A's, for PCMU, PCMA, G.722 and Opus.

use crate::media_stream_support;

use std::time::{Duration, Instant};

use media_stream_support::*;
use voxline::media::stream::MediaStream;
use voxline::sdp::Codec;

const A_FREQ: f64 = 440.0;
const B_FREQ: f64 = 1000.0;
const AMP: f64 = 8000.0;
const TALK: Duration = Duration::from_millis(1500);

struct Outcome {
    net: Net,
    rate: u32,
}

fn call(codec: Codec, fmtp: Option<&str>) -> Outcome {
    let t0 = Instant::now();
    let a_addr = addr("192.0.2.10:40000");
    let b_addr = addr("192.0.2.20:50000");
    let a = MediaStream::new(
        config(session_fmtp(codec, fmtp, b_addr, true, false), 0xa, 1, t0),
        t0,
    )
    .expect("stream A");
    let b = MediaStream::new(
        config(session_fmtp(codec, fmtp, a_addr, true, false), 0xb, 2, t0),
        t0,
    )
    .expect("stream B");
    let rate = a.sample_rate();
    assert_eq!(b.sample_rate(), rate);
    let mut net = Net::new(t0, 7);
    let link = Link {
        delay: ms(30),
        jitter: ms(10),
        loss: 0.0,
    };
    let ia = net.add(Peer::new(a, a_addr, t0), link);
    let ib = net.add(Peer::new(b, b_addr, t0), link);
    let n = (f64::from(rate) * TALK.as_secs_f64()) as usize;
    net.peers[ia]
        .stream
        .send_audio(&tone(A_FREQ, AMP, rate, 0, n))
        .expect("queue A");
    net.peers[ib]
        .stream
        .send_audio(&tone(B_FREQ, AMP, rate, 0, n))
        .expect("queue B");
    net.run_until(t0 + ms(2500));
    Outcome { net, rate }
}

/// Checks that `rx` heard `freq` from `tx`: onset after the network delay, level and purity.
fn check_direction(o: &Outcome, tx: usize, rx: usize, freq: f64, level_tolerance: f64) {
    let t0 = o.net.t0;
    let sender = &o.net.peers[tx];
    let receiver = &o.net.peers[rx];
    assert_eq!(sender.stream.agent_ms_sent(), TALK.as_millis() as u64);

    let frame = receiver.stream.frame_samples();
    let onset = receiver
        .frames
        .iter()
        .find(|(_, caller, _)| rms(caller) > 1000.0)
        .map(|(at, _, _)| *at - t0)
        .expect("the tone arrives");
    assert!(
        onset >= ms(50) && onset <= ms(300),
        "onset {onset:?} should be network delay (30 ms) plus jitter-buffer delay (>= 20 ms)"
    );

    // One second of steady tone, from 200 ms after the onset.
    let audio = receiver.caller_audio();
    let start = ((onset + ms(200)).as_secs_f64() * f64::from(o.rate)) as usize;
    let window = &audio[start..start + o.rate as usize];
    let level = rms(window);
    let expected = AMP / 2f64.sqrt();
    assert!(
        (level - expected).abs() < expected * level_tolerance,
        "level {level:.0}, expected {expected:.0}"
    );
    // Purity per 50 ms block: robust to the phase jumps of jitter-buffer adjustments.
    let block = (o.rate / 20) as usize;
    let mut purities: Vec<f64> = window
        .chunks_exact(block)
        .map(|c| tone_purity(c, freq, o.rate))
        .collect();
    purities.sort_by(|a, b| a.total_cmp(b));
    let median = purities[purities.len() / 2];
    assert!(median > 0.9, "median tone purity {median:.3} at {freq} Hz");
    // Every frame is exactly one frame long.
    assert!(
        receiver
            .frames
            .iter()
            .all(|(_, c, s)| c.len() == frame && s.len() == frame)
    );
    // After the talkspurt the caller side goes quiet again.
    let tail = receiver.frames.last().expect("frames");
    assert!(rms(&tail.1) < 50.0, "silence after the tone");
}

fn check_call(codec: Codec, fmtp: Option<&str>, expected_rate: u32, level_tolerance: f64) {
    let o = call(codec, fmtp);
    assert_eq!(o.rate, expected_rate);
    check_direction(&o, 0, 1, A_FREQ, level_tolerance);
    check_direction(&o, 1, 0, B_FREQ, level_tolerance);
    for p in &o.net.peers {
        let s = p.stream.stats();
        // 2.5 s of 20 ms ticks, tick 0 at the start.
        assert_eq!(s.ticks, 126);
        assert_eq!(s.packets_sent, 126);
        assert!(s.packets_received >= 120, "{s:?}");
        assert_eq!(s.packets_lost, 0);
        assert_eq!(s.dropped_foreign, 0);
        assert_eq!(s.decode_errors, 0);
    }
}

#[test]
fn pcmu_both_ways() {
    check_call(Codec::Pcmu, None, 8000, 0.1);
}

#[test]
fn pcma_both_ways() {
    check_call(Codec::Pcma, None, 8000, 0.1);
}

#[test]
fn g722_both_ways() {
    check_call(Codec::G722, None, 16000, 0.15);
}

#[test]
fn opus_48k_both_ways() {
    check_call(Codec::Opus, None, 48000, 0.25);
}

#[test]
fn opus_16k_both_ways() {
    check_call(
        Codec::Opus,
        Some("maxplaybackrate=16000; useinbandfec=1"),
        16000,
        0.25,
    );
}

#[test]
fn g722_timestamps_advance_at_8k_while_pcm_is_16k() {
    let o = call(Codec::G722, None);
    let a = &o.net.peers[0];
    let ts: Vec<u32> = a
        .rtp_sent()
        .iter()
        .map(|s| u32::from_be_bytes(s.payload[4..8].try_into().unwrap()))
        .collect();
    assert_eq!(a.stream.frame_samples(), 320);
    assert!(ts.windows(2).all(|w| w[1].wrapping_sub(w[0]) == 160));
    // 160 octets of G.722 per 20 ms packet.
    assert!(a.rtp_sent().iter().all(|s| s.payload.len() == 12 + 160));
}
