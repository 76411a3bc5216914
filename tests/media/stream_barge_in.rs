//! Outbound agent audio: the queue is bounded (backpressure queues nothing), `flush()` (barge-
//! in) makes the very next packet silence, and `agent_ms_sent` counts exactly the agent audio
//! put on the wire, partial frames included.

use crate::media_stream_support;

use std::time::{Duration, Instant};

use media_stream_support::*;
use voxline::media::codec::g711::{ulaw_decode, ulaw_encode};
use voxline::media::rtp::RtpPacket;
use voxline::media::stream::{MediaError, MediaEvent, MediaOutput, MediaStream};
use voxline::sdp::Codec;

/// Ticks up to `t`; returns (marker, payload, sent PCM) per tick.
fn tick(s: &mut MediaStream, t: Instant) -> Vec<(bool, Vec<u8>, Vec<i16>)> {
    s.handle_timeout(t);
    let mut pkts = Vec::new();
    let mut sent = Vec::new();
    for o in drain(s) {
        match o {
            MediaOutput::Transmit {
                payload,
                rtcp: false,
                ..
            } => {
                let p = RtpPacket::parse(&payload).expect("rtp");
                pkts.push((p.marker, p.payload.to_vec()));
            }
            MediaOutput::Event(MediaEvent::Frame { sent: pcm, .. }) => sent.push(pcm),
            _ => {}
        }
    }
    assert_eq!(pkts.len(), sent.len());
    pkts.into_iter()
        .zip(sent)
        .map(|((m, p), s)| (m, p, s))
        .collect()
}

/// `pcm` through a μ-law encoder and decoder.
fn g711(pcm: &[i16]) -> Vec<i16> {
    pcm.iter().map(|&x| ulaw_decode(ulaw_encode(x))).collect()
}

#[test]
fn flush_silences_the_next_packet_and_ms_are_exact() {
    let t0 = Instant::now();
    let mut s = MediaStream::new(
        config(
            session(Codec::Pcmu, addr("192.0.2.1:4000"), true, false),
            1,
            5,
            t0,
        ),
        t0,
    )
    .expect("stream");
    let speech = tone(300.0, 8000.0, 8000, 0, 16_000);
    s.send_audio(&speech).expect("2 s fit");
    assert_eq!(s.queued_audio(), Duration::from_secs(2));
    assert_eq!(
        s.send_audio(&[1]),
        Err(MediaError::Backpressure {
            queued: Duration::from_secs(2),
            capacity: Duration::from_secs(2)
        })
    );
    assert_eq!(s.queued_audio(), Duration::from_secs(2), "nothing queued");

    let ticks = tick(&mut s, t0 + ms(480));
    assert_eq!(ticks.len(), 25);
    assert!(ticks[0].0, "marker on the first packet");
    assert!(ticks[1..].iter().all(|t| !t.0));
    for (k, (_, payload, sent)) in ticks.iter().enumerate() {
        // What went out: on a G.711 call, the decoding of the bytes sent.
        assert_eq!(sent[..], g711(&speech[k * 160..(k + 1) * 160])[..]);
        let expected: Vec<u8> = sent.iter().map(|&x| ulaw_encode(x)).collect();
        assert_eq!(payload, &expected);
    }
    assert_eq!(s.agent_ms_sent(), 500);
    assert_eq!(s.queued_audio(), ms(1500));

    // Barge-in.
    s.flush();
    assert_eq!(s.queued_audio(), Duration::ZERO);
    let ticks = tick(&mut s, t0 + ms(500));
    assert_eq!(ticks.len(), 1);
    let (marker, payload, sent) = &ticks[0];
    assert!(!marker);
    assert!(sent.iter().all(|&x| x == 0), "Frame.sent is silence");
    assert!(
        payload.iter().all(|&b| b == ulaw_encode(0)),
        "the packet is silence"
    );
    assert_eq!(s.agent_ms_sent(), 500);

    // A new talkspurt of 30 ms: marker, then a half-filled frame.
    s.send_audio(&speech[..240]).expect("queue");
    let ticks = tick(&mut s, t0 + ms(560));
    assert_eq!(ticks.len(), 3);
    assert!(ticks[0].0, "marker on the talkspurt start");
    assert!(!ticks[1].0 && !ticks[2].0);
    assert_eq!(ticks[1].2[..80], g711(&speech[160..240])[..]);
    assert!(ticks[1].2[80..].iter().all(|&x| x == 0));
    assert!(ticks[2].2.iter().all(|&x| x == 0));
    assert_eq!(s.agent_ms_sent(), 530);

    // Partial milliseconds: 4 samples are 0.5 ms.
    s.send_audio(&speech[..4]).expect("queue");
    tick(&mut s, t0 + ms(580));
    assert_eq!(s.agent_ms_sent(), 530);
    let ticks = tick(&mut s, t0 + ms(600));
    assert!(!ticks[0].0 && ticks[0].2.iter().all(|&x| x == 0), "silence");
    s.send_audio(&speech[..4]).expect("queue");
    let ticks = tick(&mut s, t0 + ms(620));
    assert!(ticks[0].0, "each talkspurt starts with a marker");
    assert_eq!(s.agent_ms_sent(), 531);
    assert_eq!(s.stats().agent_ms_sent, 531);
}

#[test]
fn flush_before_any_tick_sends_silence() {
    let t0 = Instant::now();
    let mut s = MediaStream::new(
        config(
            session(Codec::Pcma, addr("192.0.2.1:4000"), false, false),
            1,
            5,
            t0,
        ),
        t0,
    )
    .expect("stream");
    s.send_audio(&tone(300.0, 8000.0, 8000, 0, 800))
        .expect("queue");
    s.flush();
    let ticks = tick(&mut s, t0 + ms(100));
    assert_eq!(ticks.len(), 6);
    assert!(ticks.iter().all(|t| t.2.iter().all(|&x| x == 0)));
    assert_eq!(s.agent_ms_sent(), 0);
}

#[test]
fn wideband_rates_count_ms_exactly() {
    for (codec, rate) in [(Codec::G722, 16_000u32), (Codec::Opus, 48_000)] {
        let t0 = Instant::now();
        let mut s = MediaStream::new(
            config(
                session(codec, addr("192.0.2.1:4000"), false, true),
                1,
                5,
                t0,
            ),
            t0,
        )
        .expect("stream");
        assert_eq!(s.sample_rate(), rate);
        let n = rate as usize * 2;
        s.send_audio(&tone(300.0, 8000.0, rate, 0, n)).expect("2 s");
        assert!(matches!(
            s.send_audio(&[0; 2]),
            Err(MediaError::Backpressure { .. })
        ));
        tick(&mut s, t0 + ms(180));
        assert_eq!(s.agent_ms_sent(), 200, "{codec:?}");
        s.flush();
        tick(&mut s, t0 + ms(400));
        assert_eq!(s.agent_ms_sent(), 200, "{codec:?}");
        // 1.5 ms of audio in a partial frame.
        s.send_audio(&vec![1000; rate as usize * 3 / 2000])
            .expect("queue");
        tick(&mut s, t0 + ms(420));
        assert_eq!(s.agent_ms_sent(), 201, "{codec:?}");
    }
}
