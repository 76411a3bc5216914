//! Shared helpers of the tests/media_stream_*.rs files: negotiated sessions, a virtual-clock
//! network of [`MediaStream`]s with seeded delay, jitter and loss, RTP packet building, tones
//! and measurements. No sockets, no real time.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use voxline::media::rtcp::{NtpClock, NtpTime};
use voxline::media::rtp::{RtpHeader, RtpTimestamp, SeqNo, Ssrc};
use voxline::media::stream::{MediaConfig, MediaEvent, MediaOutput, MediaStream};
use voxline::sdp::{Codec, Direction, NegotiatedCodec, NegotiatedMedia, PayloadType};

/// Payload type of telephone-event in these tests.
pub const TE_PT: u8 = 101;

/// Milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A socket address.
pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// A payload type.
pub fn pt(n: u8) -> PayloadType {
    PayloadType::new(n).expect("payload type")
}

/// The payload type these tests use for `codec`.
pub fn codec_pt(codec: Codec) -> u8 {
    match codec {
        Codec::Pcmu => 0,
        Codec::Pcma => 8,
        Codec::G722 => 9,
        Codec::Opus => 111,
        Codec::TelephoneEvent => TE_PT,
    }
}

/// A sendrecv session with `codec` at 20 ms towards `remote_rtp` (RTCP on port + 1 unless
/// `mux`), with telephone-event if `te`.
pub fn session(codec: Codec, remote_rtp: SocketAddr, te: bool, mux: bool) -> NegotiatedMedia {
    session_fmtp(codec, None, remote_rtp, te, mux)
}

/// [`session`] with an `a=fmtp` for the codec.
pub fn session_fmtp(
    codec: Codec,
    fmtp: Option<&str>,
    remote_rtp: SocketAddr,
    te: bool,
    mux: bool,
) -> NegotiatedMedia {
    NegotiatedMedia {
        remote_rtp,
        remote_rtcp: (!mux).then(|| SocketAddr::new(remote_rtp.ip(), remote_rtp.port() + 1)),
        codec: NegotiatedCodec {
            codec,
            payload_type: pt(codec_pt(codec)),
            clock_rate: codec.clock_rate(),
            channels: codec.channels(),
            fmtp: fmtp.map(str::to_owned),
        },
        telephone_event: te.then(|| pt(TE_PT)),
        ptime_ms: 20,
        direction: Direction::SendRecv,
        rtcp_mux: mux,
        remote_hold: false,
        srtp: None,
    }
}

/// The NTP clock all test streams share: 2024-ish wall time at `t0`.
pub fn ntp(t0: Instant) -> NtpClock {
    NtpClock::new(t0, NtpTime::from_unix(Duration::from_secs(1_700_000_000)))
}

/// A configuration with the defaults, our SSRC and seed.
pub fn config(neg: NegotiatedMedia, ssrc: u32, seed: u64, t0: Instant) -> MediaConfig {
    MediaConfig::new(
        neg,
        Ssrc::new(ssrc),
        format!("test-{ssrc}@voxline"),
        ntp(t0),
        seed,
    )
}

/// Builds one RTP packet.
pub fn rtp(pt_num: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let h = RtpHeader {
        marker,
        payload_type: pt(pt_num),
        seq: SeqNo::new(seq),
        timestamp: RtpTimestamp::new(ts),
        ssrc: Ssrc::new(ssrc),
    };
    let mut buf = vec![0u8; 12 + payload.len()];
    h.write_packet(payload, &mut buf).expect("write");
    buf
}

/// `n` samples of a sine of `freq` Hz and peak `amp` at `rate`, starting at sample `start`.
pub fn tone(freq: f64, amp: f64, rate: u32, start: usize, n: usize) -> Vec<i16> {
    (start..start + n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            (amp * (2.0 * std::f64::consts::PI * freq * t).sin()).round() as i16
        })
        .collect()
}

/// Root mean square.
pub fn rms(x: &[i16]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / x.len() as f64).sqrt()
}

/// Share of the power of `x` that is a sine of `freq` Hz (phase-independent): 1.0 for a
/// pure tone, near 0 for anything else.
pub fn tone_purity(x: &[i16], freq: f64, rate: u32) -> f64 {
    let (mut c, mut s, mut p) = (0.0, 0.0, 0.0);
    for (i, &v) in x.iter().enumerate() {
        let w = 2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate);
        let v = f64::from(v);
        c += v * w.cos();
        s += v * w.sin();
        p += v * v;
    }
    if p == 0.0 {
        return 0.0;
    }
    let n = x.len() as f64;
    // Power of the fitted sine: (a² + b²) / 2 with a = 2c/n, b = 2s/n.
    let fitted = 2.0 * (c * c + s * s) / (n * n);
    fitted / (p / n)
}

/// What a peer's stream produced, in order.
#[derive(Debug, Clone)]
pub struct Sent {
    /// When it was produced.
    pub at: Instant,
    /// Destination.
    pub to: SocketAddr,
    /// The datagram.
    pub payload: Vec<u8>,
    /// RTCP?
    pub rtcp: bool,
}

/// One endpoint on the simulated network.
pub struct Peer {
    /// The stream.
    pub stream: MediaStream,
    /// The address its RTP socket's packets come from, and where packets to it arrive.
    pub rtp_addr: SocketAddr,
    /// The same for its RTCP socket.
    pub rtcp_addr: SocketAddr,
    /// When its stream wants `handle_timeout`.
    pub timeout: Instant,
    /// Frame events: (tick time, caller, sent).
    pub frames: Vec<(Instant, Vec<i16>, Vec<i16>)>,
    /// The `caller_encoded` of each frame event, aligned with `frames`.
    pub caller_encoded: Vec<Option<Vec<u8>>>,
    /// Other events with their time.
    pub events: Vec<(Instant, MediaEvent)>,
    /// Everything it transmitted.
    pub sent: Vec<Sent>,
    /// Whether to keep frame events (long runs can turn it off).
    pub keep_frames: bool,
}

impl Peer {
    /// A peer whose sockets are `rtp_addr` and its port + 1.
    pub fn new(stream: MediaStream, rtp_addr: SocketAddr, t0: Instant) -> Self {
        Self {
            stream,
            rtp_addr,
            rtcp_addr: SocketAddr::new(rtp_addr.ip(), rtp_addr.port() + 1),
            timeout: t0,
            frames: Vec::new(),
            caller_encoded: Vec::new(),
            events: Vec::new(),
            sent: Vec::new(),
            keep_frames: true,
        }
    }

    /// Caller audio of all frames, concatenated.
    pub fn caller_audio(&self) -> Vec<i16> {
        self.frames
            .iter()
            .flat_map(|f| f.1.iter().copied())
            .collect()
    }

    /// The non-frame events, without times.
    pub fn event_list(&self) -> Vec<MediaEvent> {
        self.events.iter().map(|(_, e)| e.clone()).collect()
    }

    /// RTP packets transmitted (not RTCP).
    pub fn rtp_sent(&self) -> Vec<&Sent> {
        self.sent.iter().filter(|s| !s.rtcp).collect()
    }
}

/// Conditions on the packets one peer sends.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra delay, uniform in 0..jitter.
    pub jitter: Duration,
    /// Loss probability.
    pub loss: f64,
}

impl Link {
    /// A link with this delay and nothing else.
    pub fn delay(delay: Duration) -> Self {
        Self {
            delay,
            jitter: Duration::ZERO,
            loss: 0.0,
        }
    }
}

struct Flight {
    at: Instant,
    order: u64,
    from: SocketAddr,
    to: SocketAddr,
    payload: Vec<u8>,
}

/// A virtual-clock network of peers.
pub struct Net {
    /// Start of time.
    pub t0: Instant,
    /// Virtual now.
    pub now: Instant,
    /// The peers.
    pub peers: Vec<Peer>,
    /// `links[i]` applies to what peer `i` sends.
    pub links: Vec<Link>,
    /// Datagrams addressed to no peer.
    pub undeliverable: u64,
    flights: Vec<Flight>,
    order: u64,
    rng: StdRng,
}

impl Net {
    /// An empty network at `t0`.
    pub fn new(t0: Instant, seed: u64) -> Self {
        Self {
            t0,
            now: t0,
            peers: Vec::new(),
            links: Vec::new(),
            undeliverable: 0,
            flights: Vec::new(),
            order: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Adds a peer; returns its index.
    pub fn add(&mut self, peer: Peer, link: Link) -> usize {
        self.peers.push(peer);
        self.links.push(link);
        let i = self.peers.len() - 1;
        self.drain(i);
        i
    }

    /// Runs the network until `t` (absolute).
    pub fn run_until(&mut self, t: Instant) {
        loop {
            let next_timeout = self.peers.iter().map(|p| p.timeout).min();
            let next_flight = self.flights.iter().map(|f| f.at).min();
            let next = match (next_timeout, next_flight) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            if next > t {
                break;
            }
            self.now = self.now.max(next);
            self.deliver_due();
            for i in 0..self.peers.len() {
                if self.peers[i].timeout <= self.now {
                    let now = self.now;
                    self.peers[i].stream.handle_timeout(now);
                    self.drain(i);
                }
            }
        }
        self.now = self.now.max(t);
    }

    /// Runs for `d` more.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    /// Drains peer `i`'s outputs into the network and its records.
    pub fn drain(&mut self, i: usize) {
        loop {
            let out = self.peers[i].stream.poll_output();
            match out {
                MediaOutput::Timeout(t) => {
                    self.peers[i].timeout = t;
                    break;
                }
                MediaOutput::Event(MediaEvent::Frame {
                    caller,
                    sent,
                    caller_encoded,
                }) => {
                    if self.peers[i].keep_frames {
                        let now = self.now;
                        self.peers[i].frames.push((now, caller, sent));
                        self.peers[i].caller_encoded.push(caller_encoded);
                    }
                }
                MediaOutput::Event(e) => {
                    let now = self.now;
                    self.peers[i].events.push((now, e));
                }
                MediaOutput::Transmit { to, payload, rtcp } => {
                    let p = &self.peers[i];
                    let mux = p.stream.negotiated().rtcp_mux;
                    let from = if rtcp && !mux {
                        p.rtcp_addr
                    } else {
                        p.rtp_addr
                    };
                    self.peers[i].sent.push(Sent {
                        at: self.now,
                        to,
                        payload: payload.clone(),
                        rtcp,
                    });
                    let link = self.links[i];
                    if link.loss > 0.0 && self.rng.gen_bool(link.loss) {
                        continue;
                    }
                    let extra = if link.jitter.is_zero() {
                        Duration::ZERO
                    } else {
                        link.jitter.mul_f64(self.rng.gen_range(0.0..1.0))
                    };
                    self.order += 1;
                    self.flights.push(Flight {
                        at: self.now + link.delay + extra,
                        order: self.order,
                        from,
                        to,
                        payload,
                    });
                }
            }
        }
    }

    fn deliver_due(&mut self) {
        let now = self.now;
        let mut due: Vec<Flight> = Vec::new();
        let mut i = 0;
        while i < self.flights.len() {
            if self.flights[i].at <= now {
                due.push(self.flights.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|f| (f.at, f.order));
        for f in due {
            let target = self
                .peers
                .iter()
                .position(|p| p.rtp_addr == f.to || p.rtcp_addr == f.to);
            let Some(j) = target else {
                self.undeliverable += 1;
                continue;
            };
            if self.peers[j].rtp_addr == f.to {
                self.peers[j].stream.handle_rtp(now, f.from, &f.payload);
            } else {
                self.peers[j].stream.handle_rtcp(now, f.from, &f.payload);
            }
            self.drain(j);
        }
    }
}

/// Drives a lone stream: calls `handle_timeout` at each deadline up to `until`, and returns
/// every output in order.
pub fn drive(stream: &mut MediaStream, until: Instant) -> Vec<MediaOutput> {
    let mut out = Vec::new();
    loop {
        match stream.poll_output() {
            MediaOutput::Timeout(t) => {
                if t > until {
                    break;
                }
                stream.handle_timeout(t);
            }
            o => out.push(o),
        }
    }
    out
}

/// Drains a stream's outputs (without handling timeouts).
pub fn drain(stream: &mut MediaStream) -> Vec<MediaOutput> {
    let mut v = Vec::new();
    loop {
        match stream.poll_output() {
            MediaOutput::Timeout(_) => return v,
            o => v.push(o),
        }
    }
}

/// RTP datagrams (not RTCP) among outputs.
pub fn rtp_datagrams(outs: &[MediaOutput]) -> Vec<(SocketAddr, Vec<u8>)> {
    outs.iter()
        .filter_map(|o| match o {
            MediaOutput::Transmit {
                to,
                payload,
                rtcp: false,
            } => Some((*to, payload.clone())),
            _ => None,
        })
        .collect()
}

/// Non-frame events among outputs.
pub fn events(outs: &[MediaOutput]) -> Vec<MediaEvent> {
    outs.iter()
        .filter_map(|o| match o {
            MediaOutput::Event(MediaEvent::Frame { .. }) => None,
            MediaOutput::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// Frame events among outputs: (caller, sent).
pub fn frames(outs: &[MediaOutput]) -> Vec<(Vec<i16>, Vec<i16>)> {
    outs.iter()
        .filter_map(|o| match o {
            MediaOutput::Event(MediaEvent::Frame { caller, sent, .. }) => {
                Some((caller.clone(), sent.clone()))
            }
            _ => None,
        })
        .collect()
}
