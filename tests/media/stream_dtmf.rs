//! DTMF through a stream: RFC 4733 from the far end's `send_dtmf` is reported once (and the
//! far end suppresses its audio while the event plays), SIP INFO bodies are reported, in-band
//! tones are detected only when telephone-event was not negotiated.

use crate::media_stream_support;

use std::time::Instant;

use media_stream_support::*;
use voxline::media::dtmf::{Digit, DtmfMethod};
use voxline::media::rtp::RtpPacket;
use voxline::media::stream::{MediaError, MediaEvent, MediaStream};
use voxline::sdp::Codec;

fn call(codec: Codec, te: bool) -> Net {
    let t0 = Instant::now();
    let a_addr = addr("192.0.2.10:40000");
    let b_addr = addr("192.0.2.20:50000");
    let a = MediaStream::new(config(session(codec, b_addr, te, false), 0xa, 1, t0), t0).expect("A");
    let b = MediaStream::new(config(session(codec, a_addr, te, false), 0xb, 2, t0), t0).expect("B");
    let mut net = Net::new(t0, 9);
    net.add(
        Peer::new(a, a_addr, t0),
        Link {
            delay: ms(25),
            jitter: ms(5),
            loss: 0.0,
        },
    );
    net.add(
        Peer::new(b, b_addr, t0),
        Link {
            delay: ms(25),
            jitter: ms(5),
            loss: 0.0,
        },
    );
    net
}

fn digits(p: &Peer) -> Vec<(Digit, DtmfMethod, u32)> {
    p.events
        .iter()
        .filter_map(|(_, e)| match e {
            MediaEvent::Dtmf(d) => Some((d.digit, d.method, d.duration_ms)),
            _ => None,
        })
        .collect()
}

#[test]
fn rfc4733_from_the_far_end_is_reported_once() {
    let mut net = call(Codec::Pcmu, true);
    let t0 = net.t0;
    net.run_until(t0 + ms(505));
    // B's agent is talking when it sends the key: audio is suppressed while it plays.
    net.peers[1]
        .stream
        .send_audio(&tone(600.0, 5000.0, 8000, 0, 8000))
        .expect("queue");
    net.peers[1]
        .stream
        .send_dtmf(net.now, Digit::D5, ms(100))
        .expect("dtmf");
    net.drain(1);
    net.run_until(t0 + ms(1500));
    assert_eq!(
        digits(&net.peers[0]),
        vec![(Digit::D5, DtmfMethod::Rfc4733, 100)]
    );

    let b = &net.peers[1];
    let pkts: Vec<RtpPacket<'_>> = b
        .rtp_sent()
        .iter()
        .map(|s| RtpPacket::parse(&s.payload).expect("rtp"))
        .collect();
    // Sequence numbers continuous over audio and events.
    assert!(pkts.windows(2).all(|w| w[1].seq == w[0].seq.next()));
    let first_te = pkts
        .iter()
        .position(|p| p.payload_type.get() == TE_PT)
        .expect("events sent");
    let last_te = pkts
        .iter()
        .rposition(|p| p.payload_type.get() == TE_PT)
        .expect("events sent");
    // 100 ms in 20 ms updates (5 packets, the last with E) plus 2 repeats of the end.
    assert_eq!(last_te - first_te + 1, 7);
    assert!(
        pkts[first_te..=last_te]
            .iter()
            .all(|p| p.payload_type.get() == TE_PT)
    );
    assert!(pkts[first_te].marker);
    assert!(pkts[first_te + 1..=last_te].iter().all(|p| !p.marker));
    // The event's timestamp is the audio clock at its start: the tick after 505 ms (tick 26).
    let ts0 = pkts[0].timestamp.get();
    let event_ts = pkts[first_te].timestamp.get();
    assert_eq!(event_ts.wrapping_sub(ts0), 26 * 160);
    assert!(
        pkts[first_te..=last_te]
            .iter()
            .all(|p| p.timestamp.get() == event_ts)
    );
    // Audio resumes with the marker bit and the timestamps of the elapsed time.
    let resume = &pkts[last_te + 1];
    assert_eq!(resume.payload_type.get(), 0);
    assert!(resume.marker);
    assert_eq!(
        resume.timestamp.get().wrapping_sub(ts0),
        (last_te as u32 + 1) * 160
    );
    // Agent audio was held back, not dropped: ticks 26..=75 are 50 ticks, 7 of them carried
    // events, so 43 frames of agent audio went out and 140 ms are still queued.
    assert_eq!(b.stream.agent_ms_sent(), 860);
    assert_eq!(b.stream.queued_audio(), ms(140));
    assert_eq!(b.stream.stats().dtmf_packets_sent, 7);
}

#[test]
fn a_sequence_of_keys_arrives_in_order() {
    let mut net = call(Codec::G722, true);
    let t0 = net.t0;
    net.run_until(t0 + ms(200));
    for c in "1#9*".chars() {
        let d = Digit::from_char(c).expect("digit");
        net.peers[1]
            .stream
            .send_dtmf(net.now, d, ms(80))
            .expect("dtmf");
    }
    assert!(net.peers[1].stream.dtmf_busy());
    net.drain(1);
    net.run_until(t0 + ms(2500));
    let got: Vec<Digit> = digits(&net.peers[0]).iter().map(|d| d.0).collect();
    assert_eq!(got, vec![Digit::D1, Digit::Hash, Digit::D9, Digit::Star]);
    assert!(!net.peers[1].stream.dtmf_busy());
}

#[test]
fn send_dtmf_needs_telephone_event() {
    let t0 = Instant::now();
    let mut s = MediaStream::new(
        config(
            session(Codec::Pcmu, addr("192.0.2.1:4000"), false, false),
            1,
            1,
            t0,
        ),
        t0,
    )
    .expect("stream");
    assert_eq!(
        s.send_dtmf(t0, Digit::D1, ms(100)),
        Err(MediaError::DtmfNotNegotiated)
    );
}

#[test]
fn sip_info_is_reported() {
    let t0 = Instant::now();
    let mut s = MediaStream::new(
        config(
            session(Codec::Pcmu, addr("192.0.2.1:4000"), true, false),
            1,
            1,
            t0,
        ),
        t0,
    )
    .expect("stream");
    s.handle_info_dtmf(
        t0 + ms(100),
        "application/dtmf-relay",
        b"Signal=7\r\nDuration=160\r\n",
    );
    s.handle_info_dtmf(t0 + ms(2000), "application/dtmf", b"#");
    s.handle_info_dtmf(t0 + ms(3000), "application/dtmf-relay", b"Signal=X\r\n");
    s.handle_info_dtmf(t0 + ms(3000), "text/plain", b"1");
    let evs = events(&drain(&mut s));
    let got: Vec<(Digit, DtmfMethod, u32)> = evs
        .iter()
        .filter_map(|e| match e {
            MediaEvent::Dtmf(d) => Some((d.digit, d.method, d.duration_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (Digit::D7, DtmfMethod::SipInfo, 160),
            (Digit::Hash, DtmfMethod::SipInfo, 250)
        ]
    );
    assert_eq!(s.stats().dtmf_errors, 2);
}

/// The far end's agent "plays" DTMF tones as audio: `keys` of 120 ms, 100 ms apart, at
/// -10 dBm0 per tone.
fn play_tones(net: &mut Net, keys: &str) {
    let rate = net.peers[1].stream.sample_rate();
    let amp = 22_301.3 * 10f64.powf(-10.0 / 20.0);
    let tone_n = rate as usize * 120 / 1000;
    let gap_n = rate as usize / 10;
    let mut pcm = Vec::new();
    for c in keys.chars() {
        let (lo, hi) = Digit::from_char(c).expect("digit").frequencies_hz();
        let a = tone(f64::from(lo), amp, rate, 0, tone_n);
        let b = tone(f64::from(hi), amp, rate, 0, tone_n);
        pcm.extend(a.iter().zip(&b).map(|(x, y)| x.saturating_add(*y)));
        pcm.extend(std::iter::repeat_n(0i16, gap_n));
    }
    net.peers[1].stream.send_audio(&pcm).expect("queue");
}

#[test]
fn inband_tones_are_detected_without_telephone_event() {
    for codec in [Codec::Pcmu, Codec::Pcma, Codec::G722] {
        let mut net = call(codec, false);
        let t0 = net.t0;
        net.run_until(t0 + ms(300));
        play_tones(&mut net, "70#");
        net.run_until(t0 + ms(1500));
        let got: Vec<(Digit, DtmfMethod)> =
            digits(&net.peers[0]).iter().map(|d| (d.0, d.1)).collect();
        assert_eq!(
            got,
            vec![
                (Digit::D7, DtmfMethod::InBand),
                (Digit::D0, DtmfMethod::InBand),
                (Digit::Hash, DtmfMethod::InBand)
            ],
            "{codec:?}"
        );
        // Measured tone length near 120 ms.
        for d in digits(&net.peers[0]) {
            assert!((90..=150).contains(&d.2), "{codec:?}: {} ms", d.2);
        }
    }
}

#[test]
fn inband_tones_are_ignored_with_telephone_event() {
    let mut net = call(Codec::Pcmu, true);
    let t0 = net.t0;
    net.run_until(t0 + ms(300));
    play_tones(&mut net, "70#");
    net.run_until(t0 + ms(1500));
    assert!(digits(&net.peers[0]).is_empty());
    // The tones did arrive as audio.
    let loud = net.peers[0]
        .frames
        .iter()
        .filter(|(_, c, _)| rms(c) > 3000.0)
        .count();
    assert!(loud >= 15, "{loud} loud frames");
}
