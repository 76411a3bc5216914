//! The media cost of a browser's WebRTC Opus call, per 20 ms frame period, without the
//! system calls: a browser-like str0m peer (full ICE agent, DTLS client) and voxline's side
//! (`WebRtcPeer` + `MediaStream`, the echo agent answering each frame) exchange datagrams in
//! memory on a virtual clock, after ICE and DTLS are up.
//!
//! * `webrtc/opus_call_both_sides`: one period of the whole exchange: the browser writes an
//!   Opus packet, voxline decrypts it, plays it through the jitter buffer and decoder, the
//!   echo answers, voxline encodes and encrypts its packet, the browser decrypts it.
//! * `webrtc/browser_side_only`: the browser's share of that (writing, protecting, reading its
//!   packet), measured on the same exchange by running voxline's side outside the timer.
//!
//! voxline's share is the difference; `stream_tick/opus16k` (benches/stream.rs) is a plain
//! Opus call's tick for comparison.

// Benchmark setup fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};
use voxline::agent::{Echo, FrameFormat, LocalAgent};
use voxline::media::codec::encoder_for;
use voxline::media::rtcp::{NtpClock, NtpTime};
use voxline::media::rtp::Ssrc;
use voxline::media::stream::{MediaConfig, MediaEvent, MediaOutput, MediaStream};
use voxline::media::webrtc::{WebRtcOutput, WebRtcPeer};
use voxline::sdp::{Codec, CodecPrefs};

const FRAME: Duration = Duration::from_millis(20);

struct Pair {
    now: Instant,
    browser: Rtc,
    mid: Mid,
    peer: WebRtcPeer,
    stream: MediaStream,
    echo: Echo,
    to_voxline: VecDeque<Vec<u8>>,
    to_browser: VecDeque<Vec<u8>>,
    payloads: Vec<Vec<u8>>,
    pt: u8,
    k: u64,
    scratch: Vec<i16>,
    b_addr: SocketAddr,
    v_addr: SocketAddr,
}

impl Pair {
    fn new() -> Pair {
        let t0 = Instant::now();
        let b_addr: SocketAddr = "192.0.2.50:50000".parse().unwrap();
        let v_addr: SocketAddr = "192.0.2.10:40000".parse().unwrap();
        let mut browser = Rtc::builder()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .build(t0);
        browser.add_local_candidate(Candidate::host(b_addr, "udp").unwrap());
        let mut change = browser.sdp_api();
        let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = change.apply().unwrap();
        let prefs = CodecPrefs::new([Codec::Opus]).unwrap();
        let (peer, answer) =
            WebRtcPeer::accept_offer(t0, &offer.to_sdp_string(), v_addr, &prefs).unwrap();
        browser
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        let neg = peer.negotiated().clone();
        let cfg = MediaConfig::new(
            neg.clone(),
            Ssrc::new(1),
            "bench@voxline",
            NtpClock::new(t0, NtpTime::from_unix(Duration::from_secs(1_700_000_000))),
            7,
        );
        let stream = MediaStream::new(cfg, t0).unwrap();
        let rate = stream.sample_rate();
        let n = stream.frame_samples();
        let mut enc = encoder_for(&neg.codec, 20).unwrap();
        let payloads = (0..50)
            .map(|f| {
                let pcm: Vec<i16> = (f * n..(f + 1) * n)
                    .map(|i| {
                        (6000.0
                            * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / f64::from(rate))
                                .sin()) as i16
                    })
                    .collect();
                let mut out = Vec::new();
                enc.encode(&pcm, &mut out).unwrap();
                out
            })
            .collect();
        let format = FrameFormat::new(rate, FRAME).unwrap();
        let mut pair = Pair {
            now: t0,
            browser,
            mid,
            peer,
            stream,
            echo: Echo::new(format, Duration::ZERO),
            to_voxline: VecDeque::new(),
            to_browser: VecDeque::new(),
            payloads,
            pt: neg.codec.payload_type.get(),
            k: 0,
            scratch: Vec::new(),
            b_addr,
            v_addr,
        };
        // Bring ICE and DTLS up.
        for _ in 0..2000 {
            pair.now += Duration::from_millis(5);
            pair.browser_timeout();
            pair.voxline_timeout();
            pair.deliver();
            if pair.peer.is_connected() {
                break;
            }
        }
        assert!(pair.peer.is_connected(), "the session came up");
        pair
    }

    fn browser_drain(&mut self) {
        loop {
            match self.browser.poll_output().unwrap() {
                Output::Timeout(_) => return,
                Output::Transmit(t) => self.to_voxline.push_back(t.contents.to_vec()),
                Output::Event(Event::RtpPacket(p)) => {
                    black_box(p);
                }
                Output::Event(_) => {}
            }
        }
    }

    fn browser_timeout(&mut self) {
        self.browser.handle_input(Input::Timeout(self.now)).unwrap();
        self.browser_drain();
    }

    fn voxline_drain(&mut self) {
        loop {
            match self.peer.poll_output() {
                WebRtcOutput::Timeout(_) => break,
                WebRtcOutput::Transmit { payload, .. } => self.to_browser.push_back(payload),
                WebRtcOutput::Rtp(bytes) => {
                    let from = self.peer.media_source();
                    self.stream.handle_rtp(self.now, from, &bytes);
                }
                _ => {}
            }
        }
        loop {
            match self.stream.poll_output() {
                MediaOutput::Timeout(_) => break,
                MediaOutput::Transmit { payload, rtcp, .. } => {
                    if !rtcp {
                        self.peer.send_rtp(self.now, &payload);
                    }
                    self.stream.recycle_packet(payload);
                }
                MediaOutput::Event(MediaEvent::Frame { caller, sent, .. }) => {
                    self.scratch.clear();
                    self.echo.on_frame(&caller, &mut self.scratch);
                    let _ = self.stream.send_audio(&self.scratch);
                    self.stream.recycle_frame(caller, sent);
                }
                MediaOutput::Event(e) => {
                    black_box(e);
                }
            }
        }
        // What the stream's packets made the session send.
        while let WebRtcOutput::Transmit { payload, .. } = self.peer.poll_output() {
            self.to_browser.push_back(payload);
        }
    }

    fn voxline_timeout(&mut self) {
        self.peer.handle_timeout(self.now);
        self.stream.handle_timeout(self.now);
        self.voxline_drain();
    }

    /// Delivers what is in flight: to voxline (its side), then to the browser.
    fn deliver(&mut self) {
        self.deliver_to_voxline();
        self.deliver_to_browser();
    }

    fn deliver_to_voxline(&mut self) {
        while let Some(d) = self.to_voxline.pop_front() {
            self.peer.handle_datagram(self.now, self.b_addr, &d);
            self.voxline_drain();
        }
    }

    fn deliver_to_browser(&mut self) {
        while let Some(d) = self.to_browser.pop_front() {
            let r = Receive::new(Protocol::Udp, self.v_addr, self.b_addr, &d).unwrap();
            self.browser
                .handle_input(Input::Receive(self.now, r))
                .unwrap();
            self.browser_drain();
        }
    }

    /// The browser's part of a period: it writes its Opus packet.
    fn browser_write(&mut self) {
        let k = self.k;
        self.k += 1;
        let payload = self.payloads[(k % 50) as usize].clone();
        let mut api = self.browser.direct_api();
        let tx = api.stream_tx_by_mid(self.mid, None).unwrap();
        tx.write_rtp(RtpWrite::new(
            Pt::from(self.pt),
            SeqNo::from(k + 100),
            (k * 960) as u32,
            self.now,
            payload,
        ));
        self.browser_drain();
    }

    /// voxline's part of a period: the packet in, the tick, its packet out.
    fn voxline_period(&mut self) {
        self.deliver_to_voxline();
        self.voxline_timeout();
    }

    /// One 20 ms period of the whole exchange.
    fn period(&mut self) {
        self.now += FRAME;
        self.browser_write();
        self.voxline_period();
        self.deliver_to_browser();
        self.browser_timeout();
    }
}

fn bench(c: &mut Criterion) {
    let mut pair = Pair::new();
    for _ in 0..100 {
        pair.period();
    }
    let st = pair.stream.stats();
    assert!(st.packets_received >= 90, "{st:?}");
    assert!(st.agent_ms_sent > 1000, "the echo went out: {st:?}");
    c.bench_function("webrtc/opus_call_both_sides", |b| b.iter(|| pair.period()));
    c.bench_function("webrtc/browser_side_only", |b| {
        b.iter_custom(|iters| {
            let mut browser = Duration::ZERO;
            for _ in 0..iters {
                pair.now += FRAME;
                let t = Instant::now();
                pair.browser_write();
                browser += t.elapsed();
                pair.voxline_period();
                let t = Instant::now();
                pair.deliver_to_browser();
                pair.browser_timeout();
                browser += t.elapsed();
            }
            browser
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
