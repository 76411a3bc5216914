//! G.711 passthrough: bytes queued with `send_encoded` reach the wire untouched, the caller's
//! RTP payloads reach `MediaEvent::Frame::caller_encoded` untouched (including μ-law 0x7F,
//! which a decode/encode round trip turns into 0xFF), concealed ticks carry the encoding of
//! the concealed PCM, `flush` and the shared capacity cover both queues, `agent_ms_sent` is
//! exact, and other codecs refuse with a typed error.

use crate::media_stream_support;

use std::time::{Duration, Instant};

use media_stream_support::*;
use voxline::media::codec::g711::{alaw_decode, alaw_encode, ulaw_decode, ulaw_encode};
use voxline::media::rtp::RtpPacket;
use voxline::media::stream::{MediaError, MediaEvent, MediaOutput, MediaStream};
use voxline::sdp::Codec;

/// One G.711 law under test.
#[derive(Clone, Copy)]
struct LawCase {
    codec: Codec,
    decode: fn(u8) -> i16,
    encode: fn(i16) -> u8,
    silence: u8,
}

const PCMU: LawCase = LawCase {
    codec: Codec::Pcmu,
    decode: ulaw_decode,
    encode: ulaw_encode,
    silence: 0xFF,
};

const PCMA: LawCase = LawCase {
    codec: Codec::Pcma,
    decode: alaw_decode,
    encode: alaw_encode,
    silence: 0xD5,
};

/// Frame `k` of a byte pattern no decode/encode round trip preserves (0x7F, 0xFF, 0x00,
/// 0x80, 0xD5, 0x55), distinct per frame.
fn pattern(k: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..160).map(|i| ((k * 7 + i * 13) % 256) as u8).collect();
    v[0] = 0x7F;
    v[1] = 0xFF;
    v[2] = k as u8;
    v[3] = 0x7F;
    v[4] = 0x00;
    v[5] = 0x80;
    v[6] = 0xD5;
    v[7] = 0x55;
    v[159] = 0x7F;
    v
}

/// A lone stream sending to 192.0.2.1:4000.
fn lone(codec: Codec, t0: Instant) -> MediaStream {
    MediaStream::new(
        config(
            session(codec, addr("192.0.2.1:4000"), false, false),
            7,
            3,
            t0,
        ),
        t0,
    )
    .expect("stream")
}

/// One tick's outputs: (RTP packets, frame events as (caller, sent, caller_encoded)).
type Tick = (Vec<Vec<u8>>, Vec<(Vec<i16>, Vec<i16>, Option<Vec<u8>>)>);

fn run_to(s: &mut MediaStream, t: Instant) -> Tick {
    s.handle_timeout(t);
    let mut pkts = Vec::new();
    let mut frames = Vec::new();
    for o in drain(s) {
        match o {
            MediaOutput::Transmit {
                payload,
                rtcp: false,
                ..
            } => pkts.push(payload),
            MediaOutput::Event(MediaEvent::Frame {
                caller,
                sent,
                caller_encoded,
            }) => frames.push((caller, sent, caller_encoded)),
            _ => {}
        }
    }
    (pkts, frames)
}

/// Far end sends the pattern with `send_encoded` over the virtual network; the near end's
/// `caller_encoded` is the same bytes, frame by frame, and the far end's RTP payloads are too.
fn far_end_bytes_arrive_untouched(law: LawCase) {
    let t0 = Instant::now();
    let a = addr("10.0.0.1:4000");
    let b = addr("10.0.0.2:5000");
    let mut net = Net::new(t0, 1);
    let sa = MediaStream::new(config(session(law.codec, b, true, false), 1, 11, t0), t0)
        .expect("far end");
    let sb = MediaStream::new(config(session(law.codec, a, true, false), 2, 22, t0), t0)
        .expect("near end");
    let ia = net.add(Peer::new(sa, a, t0), Link::delay(ms(15)));
    let ib = net.add(Peer::new(sb, b, t0), Link::delay(ms(15)));

    let frames: Vec<Vec<u8>> = (0..50).map(pattern).collect();
    let all: Vec<u8> = frames.concat();
    net.peers[ia].stream.send_encoded(&all).expect("1 s fits");
    assert_eq!(net.peers[ia].stream.queued_audio(), Duration::from_secs(1));
    net.run_for(ms(1500));

    // On the wire: the exact bytes, one frame a packet, then silence.
    let sent: Vec<RtpPacket<'_>> = net.peers[ia]
        .sent
        .iter()
        .filter(|s| !s.rtcp)
        .map(|s| RtpPacket::parse(&s.payload).expect("rtp"))
        .collect();
    assert!(sent.len() >= 70, "{} packets", sent.len());
    for (k, f) in frames.iter().enumerate() {
        assert_eq!(sent[k].payload, &f[..], "far-end packet {k}");
        assert_eq!(sent[k].marker, k == 0, "marker of packet {k}");
    }
    assert!(sent[50].payload.iter().all(|&x| x == law.silence));
    assert!(!sent[50].marker);
    assert_eq!(net.peers[ia].stream.agent_ms_sent(), 1000);
    // The sent PCM of each frame event is the decoding of the bytes sent.
    for (k, f) in frames.iter().enumerate() {
        let expected: Vec<i16> = f.iter().map(|&x| (law.decode)(x)).collect();
        assert_eq!(net.peers[ia].frames[k].2, expected, "sent PCM {k}");
    }

    // Received: every frame carries one frame of bytes; the patterns arrive in order.
    let got = &net.peers[ib].caller_encoded;
    assert_eq!(got.len(), net.peers[ib].frames.len());
    assert!(
        got.iter()
            .all(|e| e.as_ref().is_some_and(|v| v.len() == 160))
    );
    let got: Vec<&Vec<u8>> = got.iter().flatten().collect();
    let first = got
        .iter()
        .position(|g| **g == frames[0])
        .expect("frame 0 received");
    assert!(first > 0, "the jitter buffer delays the first frame");
    // Before it: silence played, given as the encoding of silent PCM.
    for g in &got[..first] {
        assert!(g.iter().all(|&x| x == law.silence));
    }
    for (k, f) in frames.iter().enumerate() {
        assert_eq!(got[first + k], f, "near-end frame {k}");
        // The PCM path is unchanged: caller is the decoding of the same bytes.
        let pcm: Vec<i16> = f.iter().map(|&x| (law.decode)(x)).collect();
        assert_eq!(net.peers[ib].frames[first + k].1, pcm, "caller PCM {k}");
    }
    // After the agent audio: the far end's silence packets, as received.
    assert!(got[first + 50].iter().all(|&x| x == law.silence));
}

#[test]
fn pcmu_far_end_bytes_arrive_untouched() {
    far_end_bytes_arrive_untouched(PCMU);
}

#[test]
fn pcma_far_end_bytes_arrive_untouched() {
    far_end_bytes_arrive_untouched(PCMA);
}

/// RTP packets fed by hand with one missing: played ticks give the payload exactly, the
/// concealed tick gives the encoding of the concealed PCM.
fn concealed_tick_is_the_encoding_of_the_pcm(law: LawCase) {
    let t0 = Instant::now();
    let mut s = lone(law.codec, t0);
    let peer = addr("192.0.2.1:4000");
    let pt = codec_pt(law.codec);
    let mut got = Vec::new();
    for k in 0..30u16 {
        let at = t0 + ms(u64::from(k) * 20);
        if k != 10 {
            let p = pattern(usize::from(k));
            let pkt = rtp(pt, 1000 + k, 5000 + u32::from(k) * 160, 0xABCD, k == 0, &p);
            s.handle_rtp(at, peer, &pkt);
        }
        got.extend(run_to(&mut s, at).1);
    }
    got.extend(run_to(&mut s, t0 + ms(800)).1);
    let enc = |g: &(Vec<i16>, Vec<i16>, Option<Vec<u8>>)| g.2.clone().expect("G.711 bytes");
    let first = got
        .iter()
        .position(|g| enc(g) == pattern(0))
        .expect("frame 0 played");
    for k in 0..10 {
        assert_eq!(enc(&got[first + k]), pattern(k), "frame {k}");
    }
    let concealed = &got[first + 10];
    let expected: Vec<u8> = concealed.0.iter().map(|&x| (law.encode)(x)).collect();
    assert_eq!(enc(concealed), expected, "concealed tick");
    assert_ne!(enc(concealed), pattern(10));
    assert!(
        concealed.0.iter().any(|&x| x != 0),
        "PLC repeats the waveform"
    );
    for k in 11..30 {
        assert_eq!(enc(&got[first + k]), pattern(k), "frame {k}");
    }
    assert!(s.stats().concealment_ratio > 0.0);
}

#[test]
fn pcmu_concealed_tick_is_the_encoding_of_the_pcm() {
    concealed_tick_is_the_encoding_of_the_pcm(PCMU);
}

#[test]
fn pcma_concealed_tick_is_the_encoding_of_the_pcm() {
    concealed_tick_is_the_encoding_of_the_pcm(PCMA);
}

/// `send_encoded` bytes go out as they are, with the usual sequence numbers, timestamps and
/// talkspurt markers. Agent PCM queued after them is encoded and plays in queue order, right
/// after the bytes (sharing the packet where the bytes end mid-frame); the talkspurt's short
/// tail is padded with silence.
fn encoded_bytes_on_the_wire(law: LawCase) {
    let t0 = Instant::now();
    let mut s = lone(law.codec, t0);
    let bytes: Vec<u8> = [pattern(0), pattern(1), pattern(2)[..80].to_vec()].concat();
    s.send_encoded(&bytes).expect("fits");
    let pcm = tone(440.0, 6000.0, 8000, 0, 160);
    s.send_audio(&pcm).expect("fits");
    assert_eq!(s.queued_audio(), ms(70));

    let (pkts, frames) = run_to(&mut s, t0 + ms(80));
    assert_eq!(pkts.len(), 5);
    let p: Vec<RtpPacket<'_>> = pkts
        .iter()
        .map(|x| RtpPacket::parse(x).expect("rtp"))
        .collect();
    assert_eq!(p[0].payload, &bytes[..160]);
    assert_eq!(p[1].payload, &bytes[160..320]);
    // Then the PCM, encoded, in queue order.
    let encoded: Vec<u8> = pcm.iter().map(|&x| (law.encode)(x)).collect();
    let third: Vec<u8> = [&bytes[320..], &encoded[..80]].concat();
    assert_eq!(p[2].payload, &third[..]);
    let tail: Vec<u8> = encoded[80..]
        .iter()
        .copied()
        .chain(std::iter::repeat_n(law.silence, 80))
        .collect();
    assert_eq!(p[3].payload, &tail[..]);
    assert!(p[4].payload.iter().all(|&x| x == law.silence));
    assert_eq!(
        p.iter().map(|x| x.marker).collect::<Vec<_>>(),
        [true, false, false, false, false]
    );
    for w in p.windows(2) {
        assert_eq!(w[1].seq.get(), w[0].seq.get().wrapping_add(1));
        assert_eq!(w[1].timestamp.get(), w[0].timestamp.get().wrapping_add(160));
        assert_eq!(w[1].payload_type, w[0].payload_type);
    }
    assert_eq!(
        u16::from(p[0].payload_type.get()),
        u16::from(codec_pt(law.codec))
    );
    // Sent PCM: the decoding of the bytes sent (the tail's padding decodes to 0).
    for (k, f) in frames.iter().enumerate().take(4) {
        let expected: Vec<i16> = p[k].payload.iter().map(|&x| (law.decode)(x)).collect();
        assert_eq!(f.1, expected, "sent PCM {k}");
    }
    assert_eq!(s.agent_ms_sent(), 70);
    assert_eq!(s.queued_audio(), Duration::ZERO);
    assert_eq!(s.stats().bytes_sent, 5 * 160);

    // A new talkspurt gets the marker again.
    s.send_encoded(&pattern(3)).expect("fits");
    let (pkts, _) = run_to(&mut s, t0 + ms(100));
    let p = RtpPacket::parse(&pkts[0]).expect("rtp");
    assert!(p.marker);
    assert_eq!(p.payload, &pattern(3)[..]);
    assert_eq!(s.agent_ms_sent(), 90);
}

#[test]
fn pcmu_encoded_bytes_on_the_wire() {
    encoded_bytes_on_the_wire(PCMU);
}

#[test]
fn pcma_encoded_bytes_on_the_wire() {
    encoded_bytes_on_the_wire(PCMA);
}

#[test]
fn flush_clears_both_queues_and_capacity_is_shared() {
    let t0 = Instant::now();
    let mut s = lone(Codec::Pcmu, t0);
    let bytes: Vec<u8> = (0..50).flat_map(pattern).collect();
    s.send_encoded(&bytes).expect("1 s fits");
    s.send_audio(&vec![100; 8000]).expect("1 s more fits");
    assert_eq!(s.queued_audio(), Duration::from_secs(2));
    let full = Err(MediaError::Backpressure {
        queued: Duration::from_secs(2),
        capacity: Duration::from_secs(2),
    });
    assert_eq!(s.send_encoded(&[0x7F]), full);
    assert_eq!(s.send_audio(&[1]), full);
    assert_eq!(s.queued_audio(), Duration::from_secs(2), "nothing queued");

    let (pkts, _) = run_to(&mut s, t0 + ms(80));
    assert_eq!(pkts.len(), 5);
    for (k, x) in pkts.iter().enumerate() {
        assert_eq!(RtpPacket::parse(x).expect("rtp").payload, &pattern(k)[..]);
    }
    assert_eq!(s.agent_ms_sent(), 100);
    assert_eq!(s.queued_audio(), ms(1900));

    // Barge-in: both queues empty at once; the very next packet is silence.
    s.flush();
    assert_eq!(s.queued_audio(), Duration::ZERO);
    let (pkts, frames) = run_to(&mut s, t0 + ms(100));
    let p = RtpPacket::parse(&pkts[0]).expect("rtp");
    assert!(p.payload.iter().all(|&x| x == 0xFF));
    assert!(frames[0].1.iter().all(|&x| x == 0));
    assert_eq!(s.agent_ms_sent(), 100);
    assert_eq!(s.stats().agent_ms_sent, 100);

    // Partial frames count exactly: 8 bytes are one millisecond.
    s.send_encoded(&[0x7F; 84]).expect("fits");
    run_to(&mut s, t0 + ms(120));
    assert_eq!(s.agent_ms_sent(), 110);
    s.send_encoded(&[0x7F; 76]).expect("fits");
    run_to(&mut s, t0 + ms(140));
    assert_eq!(s.agent_ms_sent(), 120, "(800 + 84 + 76) / 8 ms");
}

#[test]
fn other_codecs_refuse_encoded_audio() {
    let t0 = Instant::now();
    for codec in [Codec::G722, Codec::Opus] {
        let mut s = lone(codec, t0);
        assert_eq!(
            s.send_encoded(&[0x7F; 160]),
            Err(MediaError::PassthroughUnsupported(codec))
        );
        assert_eq!(s.queued_audio(), Duration::ZERO);
        let (pkts, frames) = run_to(&mut s, t0);
        assert_eq!(pkts.len(), 1, "{codec:?} still sends");
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].2, None, "{codec:?} gives no caller bytes");
    }
}

#[test]
fn codec_change_keeps_queued_audio_in_the_new_law() {
    let t0 = Instant::now();
    let mut s = lone(Codec::Pcmu, t0);
    let bytes = pattern(0);
    s.send_encoded(&bytes).expect("fits");
    s.send_audio(&[5000; 160]).expect("fits");
    assert_eq!(s.queued_audio(), ms(40));
    let pcma = session(Codec::Pcma, addr("192.0.2.1:4000"), false, false);
    s.update(t0, pcma).expect("update");
    assert_eq!(s.queued_audio(), ms(40), "kept across PCMU -> PCMA");
    let (pkts, _) = run_to(&mut s, t0 + ms(20));
    assert_eq!(pkts.len(), 2);
    let first = RtpPacket::parse(&pkts[0]).expect("rtp");
    let second = RtpPacket::parse(&pkts[1]).expect("rtp");
    let want: Vec<u8> = bytes.iter().map(|&b| alaw_encode(ulaw_decode(b))).collect();
    assert_eq!(
        first.payload,
        &want[..],
        "the μ-law bytes, re-encoded as A-law"
    );
    assert!(second.payload.iter().all(|&b| b == alaw_encode(5000)));
    s.send_audio(&[5000; 160]).expect("fits");
    let g722 = session(Codec::G722, addr("192.0.2.1:4000"), false, false);
    s.update(t0 + ms(20), g722).expect("update");
    assert_eq!(
        s.queued_audio(),
        Duration::ZERO,
        "8000 Hz audio is dropped at 16000 Hz"
    );
    assert_eq!(
        s.send_encoded(&[0xD5; 160]),
        Err(MediaError::PassthroughUnsupported(Codec::G722))
    );
}
