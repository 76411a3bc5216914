//! One call's cost per 20 ms frame tick: receive one RTP packet, process the tick (jitter
//! buffer pop, decode, encode one frame of agent audio, build the packet, Frame event), and
//! drain the outputs. Virtual time; a steady stream from the peer.
//!
//! Variants: PCMU with telephone-event (no in-band detector), PCMU without it (the in-band
//! DTMF detector runs on every frame), PCMU over SDES-SRTP (the peer's packet protected, so
//! the figure includes unprotecting it and protecting ours), G.722, and Opus at 16 kHz; and
//! `pcmu_echo_1000_calls`:
//! one tick of one of 1000 PCMU calls in turn, each answered by the echo agent with the
//! buffers handed back as the media worker does, so that every call's state is as cold in the
//! caches as it is under load (the per-call figure of a load run, without the system calls).

// Benchmark setup fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use voxline::agent::{Echo, FrameFormat, LocalAgent};
use voxline::media::codec::encoder_for;
use voxline::media::rtcp::{NtpClock, NtpTime};
use voxline::media::rtp::{RtpHeader, RtpTimestamp, SeqNo, Ssrc};
use voxline::media::srtp::SrtpContext;
use voxline::media::stream::MediaEvent;
use voxline::media::stream::{MediaConfig, MediaOutput, MediaStream};
use voxline::sdp::{
    Codec, Direction, MasterKey, NegotiatedCodec, NegotiatedMedia, NegotiatedSrtp, PayloadType,
    SrtpSuite,
};

const FRAME: Duration = Duration::from_millis(20);

struct Call {
    stream: MediaStream,
    peer: SocketAddr,
    payloads: Vec<Vec<u8>>,
    pt: PayloadType,
    ticks_per_frame: u32,
    agent: Vec<i16>,
    t0: Instant,
    k: u64,
    packet: Vec<u8>,
    /// With SRTP: the peer's context, protecting what it sends.
    peer_srtp: Option<SrtpContext>,
}

impl Call {
    fn new(codec: Codec, fmtp: Option<&str>, te: bool) -> Self {
        Self::with_srtp(codec, fmtp, te, false)
    }

    fn with_srtp(codec: Codec, fmtp: Option<&str>, te: bool, srtp: bool) -> Self {
        let suite = SrtpSuite::AesCm128HmacSha1_80;
        let (ours, theirs) = (
            MasterKey::new([1; 16], [2; 14]),
            MasterKey::new([3; 16], [4; 14]),
        );
        let t0 = Instant::now();
        let peer: SocketAddr = "192.0.2.1:4000".parse().expect("addr");
        let pt = PayloadType::new(match codec {
            Codec::Pcmu => 0,
            Codec::G722 => 9,
            _ => 111,
        })
        .expect("pt");
        let negotiated = NegotiatedMedia {
            remote_rtp: peer,
            remote_rtcp: Some("192.0.2.1:4001".parse().expect("addr")),
            codec: NegotiatedCodec {
                codec,
                payload_type: pt,
                clock_rate: codec.clock_rate(),
                channels: codec.channels(),
                fmtp: fmtp.map(str::to_owned),
            },
            telephone_event: te.then(|| PayloadType::new(101).expect("pt")),
            ptime_ms: 20,
            direction: Direction::SendRecv,
            rtcp_mux: false,
            remote_hold: false,
            srtp: srtp.then(|| NegotiatedSrtp {
                suite,
                local: ours,
                remote: theirs.clone(),
            }),
        };
        // The peer's packets: 50 frames of a tone from the same codec.
        let mut enc = encoder_for(&negotiated.codec, 20).expect("encoder");
        let rate = enc.sample_rate();
        let n = enc.frame_samples();
        let tone = |i: usize| {
            (6000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / f64::from(rate)).sin())
                as i16
        };
        let payloads = (0..50)
            .map(|f| {
                let pcm: Vec<i16> = (f * n..(f + 1) * n).map(tone).collect();
                let mut out = Vec::new();
                enc.encode(&pcm, &mut out).expect("encode");
                out
            })
            .collect();
        let agent = (0..n).map(|i| tone(i) / 2).collect();
        let cfg = MediaConfig::new(
            negotiated,
            Ssrc::new(1),
            "bench@voxline",
            NtpClock::new(t0, NtpTime::from_unix(Duration::from_secs(1_700_000_000))),
            7,
        );
        let stream = MediaStream::new(cfg, t0).expect("stream");
        Self {
            ticks_per_frame: codec.clock_rate() / 50,
            stream,
            peer,
            payloads,
            pt,
            agent,
            t0,
            k: 0,
            packet: Vec::with_capacity(1500),
            peer_srtp: srtp.then(|| SrtpContext::new(suite, &theirs)),
        }
    }

    /// The next frame period's packet arrives (3 ms before its tick); returns the tick time.
    fn receive_next(&mut self) -> Instant {
        let k = self.k;
        self.k += 1;
        let now = self.t0 + FRAME * u32::try_from(k).expect("k");
        let payload = &self.payloads[(k % 50) as usize];
        let header = RtpHeader {
            marker: k == 0,
            payload_type: self.pt,
            seq: SeqNo::new(k as u16),
            timestamp: RtpTimestamp::new((k as u32).wrapping_mul(self.ticks_per_frame)),
            ssrc: Ssrc::new(0xfeed),
        };
        self.packet.resize(12 + payload.len(), 0);
        header
            .write_packet(payload, &mut self.packet)
            .expect("packet");
        if let Some(ctx) = self.peer_srtp.as_mut() {
            ctx.protect_rtp(&mut self.packet).expect("protect");
        }
        self.stream
            .handle_rtp(now - Duration::from_millis(3), self.peer, &self.packet);
        now
    }

    /// One frame period as the media worker runs it: a packet arrives, the tick runs, the
    /// caller's audio goes to the echo agent, whose output is queued, and every buffer is
    /// handed back.
    fn step_echo(&mut self, echo: &mut Echo, out: &mut Vec<i16>) -> usize {
        let now = self.receive_next();
        self.stream.handle_timeout(now);
        let mut bytes = 0;
        loop {
            match self.stream.poll_output() {
                MediaOutput::Timeout(_) => break,
                MediaOutput::Transmit { payload, .. } => {
                    bytes += payload.len();
                    self.stream.recycle_packet(payload);
                }
                MediaOutput::Event(MediaEvent::Frame {
                    caller,
                    sent,
                    caller_encoded,
                }) => {
                    out.clear();
                    echo.on_frame(&caller, out);
                    let _ = self.stream.send_audio(out);
                    self.stream.recycle_frame(caller, sent);
                    if let Some(b) = caller_encoded {
                        self.stream.recycle_caller_encoded(b);
                    }
                }
                MediaOutput::Event(e) => {
                    black_box(e);
                }
            }
        }
        bytes
    }

    /// One frame period: a packet arrives, the tick runs, outputs are drained.
    fn step(&mut self) -> usize {
        let now = self.receive_next();
        // The agent keeps one frame queued, as a streaming TTS would.
        if self.stream.queued_audio() < FRAME {
            let _ = self.stream.send_audio(&self.agent);
        }
        self.stream.handle_timeout(now);
        let mut bytes = 0;
        loop {
            match self.stream.poll_output() {
                MediaOutput::Timeout(_) => break,
                MediaOutput::Transmit { payload, .. } => bytes += payload.len(),
                MediaOutput::Event(e) => {
                    black_box(e);
                }
            }
        }
        bytes
    }
}

fn bench(c: &mut Criterion) {
    let variants: [(&str, Codec, Option<&str>, bool, bool); 6] = [
        ("stream_tick/pcmu", Codec::Pcmu, None, true, false),
        ("stream_tick/pcmu_srtp", Codec::Pcmu, None, true, true),
        (
            "stream_tick/pcmu_inband_dtmf",
            Codec::Pcmu,
            None,
            false,
            false,
        ),
        ("stream_tick/g722", Codec::G722, None, true, false),
        (
            "stream_tick/opus16k",
            Codec::Opus,
            Some("maxplaybackrate=16000"),
            true,
            false,
        ),
        (
            "stream_tick/opus24k",
            Codec::Opus,
            Some("maxplaybackrate=24000"),
            true,
            false,
        ),
    ];
    for (name, codec, fmtp, te, srtp) in variants {
        let mut call = Call::with_srtp(codec, fmtp, te, srtp);
        // Warm the jitter buffer and codecs past the start-up.
        for _ in 0..100 {
            call.step();
        }
        // What is measured is the real path: every packet played, agent audio sent.
        let st = call.stream.stats();
        assert_eq!(st.packets_received, 100, "{name}");
        assert_eq!(st.packets_sent, 100, "{name}");
        assert!(
            st.concealment_ratio == 0.0 && st.dropped_late == 0,
            "{name}: {st:?}"
        );
        assert!(st.agent_ms_sent >= 1900, "{name}: {st:?}");
        c.bench_function(name, |b| b.iter(|| black_box(call.step())));
    }
    // 1000 echo calls, one tick of the next call per iteration.
    const CALLS: usize = 1000;
    let format = FrameFormat::new(8000, FRAME).expect("format");
    let mut calls: Vec<(Call, Echo)> = (0..CALLS)
        .map(|_| {
            (
                Call::new(Codec::Pcmu, None, true),
                Echo::new(format, Duration::ZERO),
            )
        })
        .collect();
    let mut out = Vec::new();
    for _ in 0..100 {
        for (call, echo) in &mut calls {
            call.step_echo(echo, &mut out);
        }
    }
    for (call, _) in &calls {
        let st = call.stream.stats();
        assert_eq!(st.packets_received, 100);
        assert!(
            st.concealment_ratio == 0.0 && st.dropped_late == 0,
            "{st:?}"
        );
        assert!(st.agent_ms_sent >= 1900, "{st:?}");
    }
    let mut i = 0;
    c.bench_function("stream_tick/pcmu_echo_1000_calls", |b| {
        b.iter(|| {
            let (call, echo) = &mut calls[i];
            i = (i + 1) % CALLS;
            black_box(call.step_echo(echo, &mut out))
        })
    });
    // The same, but the caches are flushed (a write through more memory than the last-level
    // cache holds) before every group of GROUP calls, as the kernel's socket work and the other
    // calls do between one call's ticks under load; only the calls' steps are timed. This is
    // the figure that follows how many cache lines a call touches per tick.
    const GROUP: usize = 150;
    let mut sweep = vec![0u8; EVICT_BYTES];
    let mut group = c.benchmark_group("stream_tick");
    group.sample_size(20);
    group.bench_function("pcmu_echo_1000_calls_evicted", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                evict(&mut sweep);
                let n = left.min(GROUP as u64);
                let start = Instant::now();
                for _ in 0..n {
                    let (call, echo) = &mut calls[i];
                    i = (i + 1) % CALLS;
                    black_box(call.step_echo(echo, &mut out));
                }
                total += start.elapsed();
                left -= n;
            }
            total
        })
    });
    group.finish();
}

/// Bytes written to flush the caches: more than this machine's 32 MiB last-level cache.
const EVICT_BYTES: usize = 48 << 20;

/// Writes one byte per cache line through `buf`.
fn evict(buf: &mut [u8]) {
    for b in buf.iter_mut().step_by(64) {
        *b = b.wrapping_add(1);
    }
    black_box(&buf);
}

criterion_group!(benches, bench);
criterion_main!(benches);
