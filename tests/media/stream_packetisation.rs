//! Far ends that do not send 20 ms packets: a `MediaStream` playing 20 ms frames receives
//! G.711 packets of 10, 30, 40 and 60 ms and of odd sizes, with jitter, and Opus packets of
//! 10 and 60 ms. The caller's G.711 bytes reach `caller_encoded` exactly and in order, the
//! caller's PCM is their decoding, nothing is dropped as late, and Opus playout equals a
//! reference decoder fed the same packets.

use crate::media_stream_support;

use std::time::Instant;

use media_stream_support::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use voxline::media::codec::g711::ulaw_decode;
use voxline::media::codec::{AudioDecoder, AudioEncoder, OpusDecoder, OpusEncoder};
use voxline::media::stream::{MediaEvent, MediaOutput, MediaStream};
use voxline::sdp::Codec;

/// The caller's byte stream: distinct, with the μ-law codes a decode/encode round trip would
/// change (0x7F).
fn caller_bytes(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| match i % 97 {
            0 => 0x7F,
            k => ((i * 31 + k) % 256) as u8,
        })
        .collect()
}

/// The frame events' `caller_encoded` bytes and `caller` PCM, concatenated.
fn run_to(s: &mut MediaStream, t: Instant, bytes: &mut Vec<u8>, pcm: &mut Vec<i16>) {
    s.handle_timeout(t);
    for o in drain(s) {
        if let MediaOutput::Event(MediaEvent::Frame {
            caller,
            caller_encoded,
            ..
        }) = o
        {
            assert_eq!(caller.len(), 160);
            let enc = caller_encoded.expect("G.711 bytes");
            assert_eq!(enc.len(), 160);
            bytes.extend_from_slice(&enc);
            pcm.extend_from_slice(&caller);
        }
    }
}

/// `got` equals `want`; else the first difference, briefly.
fn assert_same<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        let to = (i + 8).min(got.len());
        panic!(
            "{what}: first difference at {i}: got {:?}, want {:?}",
            &got[i..to],
            &want[i..to]
        );
    }
}

/// Sends `total` bytes in packets of `sizes` (cycled) with 0-`jitter_ms` of jitter; returns
/// the stream and what it played.
fn play(
    sizes: &[usize],
    total: usize,
    jitter_ms: u64,
    seed: u64,
) -> (MediaStream, Vec<u8>, Vec<i16>) {
    let t0 = Instant::now();
    let peer = addr("192.0.2.1:4000");
    let mut s = MediaStream::new(
        config(session(Codec::Pcmu, peer, false, false), 7, 3, t0),
        t0,
    )
    .expect("stream");
    let mut rng = StdRng::seed_from_u64(seed);
    let src = caller_bytes(total);
    // (arrival, seq, ts, range)
    let mut packets = Vec::new();
    let (mut at, mut seq, mut i) = (0usize, 0u16, 0usize);
    while at < total {
        let n = sizes[i % sizes.len()].min(total - at);
        // Sent once its last sample is captured, plus 20 ms and the jitter.
        let arrival = (at + n) as u64 / 8 + 20 + rng.gen_range(0..=jitter_ms);
        packets.push((arrival, seq, at, at..at + n));
        at += n;
        seq = seq.wrapping_add(1);
        i += 1;
    }
    packets.sort_by_key(|p| (p.0, p.1));
    let (mut bytes, mut pcm) = (Vec::new(), Vec::new());
    let end_ms = total as u64 / 8 + 400;
    let mut next = 0;
    for t in 0..=end_ms {
        let now = t0 + ms(t);
        while let Some((arrival, seq, ts, range)) = packets.get(next) {
            if *arrival > t {
                break;
            }
            let pkt = rtp(
                0,
                1000u16.wrapping_add(*seq),
                9000 + *ts as u32,
                0xABCD,
                *seq == 0,
                &src[range.clone()],
            );
            s.handle_rtp(now, peer, &pkt);
            next += 1;
        }
        run_to(&mut s, now, &mut bytes, &mut pcm);
    }
    (s, bytes, pcm)
}

/// The caller's bytes appear in `got` exactly, in order, once.
fn assert_exact(sizes: &[usize], jitter_ms: u64) {
    // 24 s: whole packets of every size but the odd ones.
    let total = 8000 * 24;
    let (s, got, pcm) = play(sizes, total, jitter_ms, 5);
    let src = caller_bytes(total);
    let first = got
        .windows(16)
        .position(|w| w == &src[..16])
        .expect("the caller's first bytes played");
    assert_same(
        &got[first..first + total],
        &src,
        &format!("{sizes:?}: caller bytes"),
    );
    let decoded: Vec<i16> = src.iter().map(|&b| ulaw_decode(b)).collect();
    assert_same(
        &pcm[first..first + total],
        &decoded,
        "PCM is their decoding",
    );
    let st = s.stats();
    assert_eq!(st.dropped_late, 0, "{sizes:?}: {st:?}");
    // Only the stream's end is concealed (5 frames, then silence).
    let concealed = st.concealment_ratio * (total / 160 + 5) as f64;
    assert!(concealed <= 5.01, "{sizes:?}: {concealed} frames concealed");
    assert!(
        st.jitter_buffer_current_ms <= st.jitter_buffer_target_ms + 20.0,
        "{st:?}"
    );
}

#[test]
fn pcmu_10ms_packets() {
    assert_exact(&[80], 0);
    assert_exact(&[80], 15);
}

#[test]
fn pcmu_30ms_packets() {
    assert_exact(&[240], 0);
    assert_exact(&[240], 15);
}

#[test]
fn pcmu_40ms_packets() {
    assert_exact(&[320], 10);
}

#[test]
fn pcmu_60ms_packets() {
    assert_exact(&[480], 10);
}

#[test]
fn pcmu_odd_and_changing_packet_sizes() {
    // 25 ms, 17.5 ms, 13 samples, 30 ms, 10 ms, in turn.
    assert_exact(&[200, 140, 13, 240, 80], 5);
}

/// Opus packets of `frame_ms` (one Opus frame each) into a stream negotiated at 20 ms: the
/// caller's PCM is what a decoder fed the same packets in order gives.
fn opus_matches_reference(frame_ms: u32) {
    let t0 = Instant::now();
    let peer = addr("192.0.2.1:4000");
    let mut s = MediaStream::new(
        config(session(Codec::Opus, peer, false, false), 7, 3, t0),
        t0,
    )
    .expect("stream");
    let rate = s.sample_rate();
    let frame = (rate / 1000 * frame_ms) as usize;
    let mut enc = OpusEncoder::new(rate, frame_ms).expect("encoder");
    let mut reference = OpusDecoder::new(rate).expect("decoder");
    let audio = tone(440.0, 8000.0, rate, 0, rate as usize * 4);
    let (mut expected, mut got) = (Vec::new(), Vec::new());
    let ticks = 48 * frame_ms;
    let packets = audio.len() / frame;
    let mut next = 0;
    for t in 0..=(4000 + 300) {
        let now = t0 + ms(u64::from(t));
        while next < packets && (next as u32 + 1) * frame_ms + 20 <= t {
            let mut payload = Vec::new();
            enc.encode(&audio[next * frame..(next + 1) * frame], &mut payload)
                .expect("encode");
            reference.decode(&payload, &mut expected).expect("decode");
            let pkt = rtp(
                111,
                next as u16,
                1000 + next as u32 * ticks,
                0x0505,
                next == 0,
                &payload,
            );
            s.handle_rtp(now, peer, &pkt);
            next += 1;
        }
        s.handle_timeout(now);
        for o in drain(&mut s) {
            if let MediaOutput::Event(MediaEvent::Frame { caller, .. }) = o {
                got.extend_from_slice(&caller);
            }
        }
    }
    let probe = &expected[frame * 2..frame * 2 + 64];
    let first = got
        .windows(64)
        .position(|w| w == probe)
        .expect("the reference decoding appears")
        - frame * 2;
    let n = expected.len() - frame;
    assert_same(&got[first..first + n], &expected[..n], "Opus PCM");
    let st = s.stats();
    assert_eq!(st.dropped_late, 0, "{st:?}");
    let concealed = st.concealment_ratio * (4000 / 20 + 5) as f64;
    assert!(concealed <= 5.5, "{concealed} frames concealed");
}

#[test]
fn opus_10ms_packets() {
    opus_matches_reference(10);
}

#[test]
fn opus_60ms_packets() {
    opus_matches_reference(60);
}
