//! Media load generator for `tools/media-bench.sh`: places N concurrent calls to a running
//! voxline with minimal SIP over UDP and streams 20 ms G.711 RTP on each (an 8 kHz tone), over
//! ordinary UDP sockets — one RTP and one RTCP socket per call, one thread, non-blocking
//! sockets, an absolute 1 ms clock with the calls spread over the 20 ms period. It reads and
//! counts what comes back. With `--rtp-only` it skips SIP and streams to consecutive ports
//! (the UDP reflector `voxline-udp-reflector`), to measure the operating system's own cost.
//!
//! SIPp's `play_pcap_audio` sends through one raw socket per playing call, and every UDP
//! packet delivered on the host is then offered to each of those raw sockets: a cost that grows
//! with the number of calls and that is charged to whoever sends the packet (voxline, for the
//! echoed audio). This tool uses no raw socket.
//!
//! ```text
//! voxline-rtp-load --target 127.0.0.1:5060 --calls 300 --rate 100 --seconds 20 [--codec pcmu]
//!     [--telephone-event no]   # offer no RFC 4733 events: voxline then runs its in-band detector
//!     [--srtp yes]             # offer RTP/SAVP with an SDES key and send SRTP (voxline needs
//!                              # [media] srtp = "optional" or "mandatory"); what comes back is
//!                              # counted, not authenticated
//! voxline-rtp-load --rtp-only 127.0.0.1:63100 --calls 300 --rate 100 --seconds 20
//! ```
//!
//! It prints `UP <n>` once every call is established (the bench script starts measuring then),
//! and a summary at the end. 127.0.0.1 only; at most 1000 calls; bounded in time.

use std::io::{IoSliceMut, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use voxline::media::codec::g711::{alaw_encode, ulaw_encode};
use voxline::media::srtp::{MasterKey, SrtpContext, SrtpSuite};

/// Most calls one run may place.
const MAX_CALLS: usize = 1000;
/// Longest streaming time after the ramp.
const MAX_SECONDS: u64 = 600;
/// One RTP packet per call every 20 ms.
const PTIME: Duration = Duration::from_millis(20);
/// Samples per packet at 8 kHz.
const SAMPLES: usize = 160;
/// RTP header length without CSRCs (RFC 3550 §5.1).
const RTP_HEADER: usize = 12;
/// Datagrams read per `recvmmsg`.
const BATCH: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// Not started yet.
    Idle,
    /// INVITE sent at this instant (retransmitted after 1 s, up to 3 times).
    Inviting { sent: Instant, tries: u8 },
    /// Established: streaming.
    Up,
    /// BYE sent.
    Closing,
    /// BYE answered.
    Done,
    /// Rejected or unanswered.
    Failed,
}

struct Call {
    call_id: String,
    to: String,
    state: State,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    remote: Option<SocketAddr>,
    seq: u16,
    ts: u32,
    ssrc: u32,
    sent: u64,
    received: u64,
    received_at_up: u64,
    /// With `--srtp yes`: the call's key and the context that protects what it sends.
    srtp: Option<(MasterKey, SrtpContext)>,
}

struct Options {
    target: Option<SocketAddr>,
    rtp_only: Option<SocketAddr>,
    calls: usize,
    rate: u32,
    seconds: u64,
    codec: Codec,
    rtp_base: u16,
    telephone_event: bool,
    srtp: bool,
}

fn main() -> anyhow::Result<()> {
    let o = options()?;
    let sip = UdpSocket::bind("127.0.0.1:0")?;
    sip.set_nonblocking(true)?;
    let local = sip.local_addr()?;
    let pid = std::process::id();
    let mut calls = Vec::with_capacity(o.calls);
    for i in 0..o.calls {
        // invariant: options() bounds calls to MAX_CALLS, so the ports stay below 65535.
        let port = o.rtp_base + 2 * i as u16;
        let rtp = UdpSocket::bind(("127.0.0.1", port)).with_context(|| format!("bind {port}"))?;
        let rtcp = UdpSocket::bind(("127.0.0.1", port + 1))
            .with_context(|| format!("bind {}", port + 1))?;
        rtp.set_nonblocking(true)?;
        rtcp.set_nonblocking(true)?;
        calls.push(Call {
            call_id: format!("rl-{i}-{pid}@127.0.0.1"),
            to: String::new(),
            state: State::Idle,
            rtp,
            rtcp,
            remote: o
                .rtp_only
                .map(|a| SocketAddr::new(a.ip(), a.port() + 2 * i as u16)),
            seq: rand_u16(i),
            ts: u32::from(rand_u16(i + 7)) << 8,
            ssrc: 0x5eed_0000 ^ i as u32,
            sent: 0,
            received: 0,
            received_at_up: 0,
            srtp: o.srtp.then(|| {
                // A load tool's keys: distinct per call, not secret.
                let key = MasterKey::new([i as u8; 16], [(i >> 8) as u8; 14]);
                let ctx = SrtpContext::new(SrtpSuite::AesCm128HmacSha1_80, &key);
                (key, ctx)
            }),
        });
    }
    let tone = tone(o.codec);
    let mut packet = [0u8; RTP_HEADER + SAMPLES];
    let mut srtp_packet: Vec<u8> = Vec::with_capacity(RTP_HEADER + SAMPLES + 16);
    let mut rx = Rx::new();
    let mut sip_buf = vec![0u8; 65535];
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(o.rate.max(1)));
    let mut started = 0usize;
    let mut all_up_at: Option<Instant> = None;
    let mut closing_at: Option<Instant> = None;
    let mut bye_sent = 0usize;
    let mut tick: u64 = 0;
    let deadline = start + interval * o.calls as u32 + Duration::from_secs(o.seconds + 30);
    loop {
        // Absolute 1 ms clock.
        let due = start + Duration::from_millis(tick);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let now = Instant::now();
        if now > deadline {
            eprintln!("rtp-load: time limit reached");
            break;
        }
        // Start calls on the rate's schedule.
        while started < calls.len() && start + interval * started as u32 <= now {
            let c = &mut calls[started];
            match o.target {
                Some(target) => {
                    send_invite(&sip, local, target, started, c, o.codec, o.telephone_event)?;
                    c.state = State::Inviting {
                        sent: now,
                        tries: 1,
                    };
                }
                None => c.state = State::Up,
            }
            started += 1;
        }
        // SIP.
        if let Some(target) = o.target {
            while let Ok((n, _)) = sip.recv_from(&mut sip_buf) {
                on_sip(&sip, local, target, &sip_buf[..n], &mut calls)?;
            }
            for (i, c) in calls.iter_mut().enumerate() {
                if let State::Inviting { sent, tries } = c.state
                    && now.duration_since(sent) > Duration::from_secs(1)
                {
                    if tries >= 4 {
                        c.state = State::Failed;
                    } else {
                        send_invite(&sip, local, target, i, c, o.codec, o.telephone_event)?;
                        c.state = State::Inviting {
                            sent: now,
                            tries: tries + 1,
                        };
                    }
                }
            }
        }
        // RTP for the calls in this millisecond's phase.
        let phase = (tick % 20) as usize;
        for c in calls.iter_mut().skip(phase).step_by(20) {
            if c.state != State::Up {
                continue;
            }
            if let Some(to) = c.remote {
                let k = (c.sent as usize * SAMPLES) % tone.len();
                packet[0] = 0x80;
                packet[1] = o.codec.payload_type() | if c.sent == 0 { 0x80 } else { 0 };
                packet[2..4].copy_from_slice(&c.seq.to_be_bytes());
                packet[4..8].copy_from_slice(&c.ts.to_be_bytes());
                packet[8..12].copy_from_slice(&c.ssrc.to_be_bytes());
                packet[RTP_HEADER..].copy_from_slice(&tone[k..k + SAMPLES]);
                let wire: &[u8] = match c.srtp.as_mut() {
                    Some((_, ctx)) => {
                        srtp_packet.clear();
                        srtp_packet.extend_from_slice(&packet);
                        ctx.protect_rtp(&mut srtp_packet).context("SRTP protect")?;
                        &srtp_packet
                    }
                    None => &packet,
                };
                if c.rtp.send_to(wire, to).is_ok() {
                    c.sent += 1;
                }
                c.seq = c.seq.wrapping_add(1);
                c.ts = c.ts.wrapping_add(SAMPLES as u32);
            }
            c.received += rx.drain(&c.rtp);
        }
        // RTCP from the far end: read now and then, only to keep the sockets clear.
        if tick.is_multiple_of(1000) {
            for c in &calls {
                rx.drain(&c.rtcp);
            }
        }
        // Progress.
        if all_up_at.is_none()
            && started == calls.len()
            && calls
                .iter()
                .all(|c| !matches!(c.state, State::Idle | State::Inviting { .. }))
        {
            let up = calls.iter().filter(|c| c.state == State::Up).count();
            println!("UP {up}");
            std::io::stdout().flush()?;
            all_up_at = Some(now);
            for c in &mut calls {
                c.received_at_up = c.received;
            }
        }
        if closing_at.is_none()
            && let Some(t) = all_up_at
            && now.duration_since(t) >= Duration::from_secs(o.seconds)
        {
            closing_at = Some(now);
            report(&calls, now.duration_since(t));
        }
        if let Some(t) = closing_at {
            // Hang up on the same rate's schedule.
            while bye_sent < calls.len() && t + interval * bye_sent as u32 <= now {
                let c = &mut calls[bye_sent];
                if c.state == State::Up {
                    match o.target {
                        Some(target) => {
                            send_bye(&sip, local, target, bye_sent, c)?;
                            c.state = State::Closing;
                        }
                        None => c.state = State::Done,
                    }
                }
                bye_sent += 1;
            }
            let open = calls.iter().any(|c| c.state == State::Closing);
            if bye_sent == calls.len()
                && (!open
                    || now.duration_since(t)
                        > interval * calls.len() as u32 * 2 + Duration::from_secs(5))
            {
                break;
            }
        }
        tick += 1;
        // Skip missed ticks instead of bursting (the summary would show the lost packets).
        let behind = Instant::now().saturating_duration_since(start).as_millis() as u64;
        if behind > tick + 20 {
            tick = behind;
        }
    }
    let done = calls.iter().filter(|c| c.state == State::Done).count();
    let failed = calls.iter().filter(|c| c.state == State::Failed).count();
    println!(
        "calls={} hung_up_cleanly={done} failed={failed}",
        calls.len()
    );
    if failed > 0 {
        bail!("{failed} calls failed");
    }
    Ok(())
}

/// Sent and received packets over the measured period (from `UP` to the first BYE).
fn report(calls: &[Call], period: Duration) {
    let up: Vec<&Call> = calls.iter().filter(|c| c.state == State::Up).collect();
    let expected = period.as_secs_f64() / PTIME.as_secs_f64();
    let got: Vec<u64> = up.iter().map(|c| c.received - c.received_at_up).collect();
    let total: u64 = got.iter().sum();
    let min = got.iter().min().copied().unwrap_or(0);
    let sent: u64 = up.iter().map(|c| c.sent).sum();
    println!(
        "streamed {:.1} s on {} calls: sent={sent} received={total} ({:.1}% of one packet per 20 ms per call; worst call {:.1}%)",
        period.as_secs_f64(),
        up.len(),
        100.0 * total as f64 / (expected * up.len().max(1) as f64),
        100.0 * min as f64 / expected,
    );
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        target: None,
        rtp_only: None,
        calls: 100,
        rate: 100,
        seconds: 20,
        codec: Codec::Pcma,
        rtp_base: 61000,
        telephone_event: true,
        srtp: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().context("missing value")?;
        match a.as_str() {
            "--target" => o.target = Some(v.parse()?),
            "--rtp-only" => o.rtp_only = Some(v.parse()?),
            "--calls" => o.calls = v.parse()?,
            "--rate" => o.rate = v.parse()?,
            "--seconds" => o.seconds = v.parse()?,
            "--rtp-base" => o.rtp_base = v.parse()?,
            "--telephone-event" => {
                o.telephone_event = match v.as_str() {
                    "yes" => true,
                    "no" => false,
                    _ => bail!("--telephone-event yes|no"),
                }
            }
            "--srtp" => {
                o.srtp = match v.as_str() {
                    "yes" => true,
                    "no" => false,
                    _ => bail!("--srtp yes|no"),
                }
            }
            "--codec" => {
                o.codec = match v.as_str() {
                    "pcma" => Codec::Pcma,
                    "pcmu" => Codec::Pcmu,
                    _ => bail!("--codec pcma|pcmu"),
                }
            }
            _ => bail!("unknown option {a}"),
        }
    }
    if o.target.is_some() == o.rtp_only.is_some() {
        bail!("give exactly one of --target and --rtp-only");
    }
    for a in o.target.iter().chain(o.rtp_only.iter()) {
        if a.ip() != IpAddr::from([127, 0, 0, 1]) {
            bail!("127.0.0.1 only");
        }
    }
    if o.calls == 0 || o.calls > MAX_CALLS {
        bail!("--calls 1..={MAX_CALLS}");
    }
    if o.seconds > MAX_SECONDS {
        bail!("--seconds at most {MAX_SECONDS}");
    }
    if usize::from(o.rtp_base) < 1024 || usize::from(o.rtp_base) + 2 * o.calls > 65535 {
        bail!("--rtp-base out of range");
    }
    Ok(o)
}

fn send_invite(
    sip: &UdpSocket,
    local: SocketAddr,
    target: SocketAddr,
    i: usize,
    c: &Call,
    codec: Codec,
    telephone_event: bool,
) -> anyhow::Result<()> {
    let port = c.rtp.local_addr()?.port();
    let (proto, crypto) = match &c.srtp {
        Some((key, _)) => (
            "RTP/SAVP",
            format!(
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
                key.to_base64()
            ),
        ),
        None => ("RTP/AVP", String::new()),
    };
    let body = format!(
        "v=0\r\no=- {i} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} {proto} {pt}{te_pt}\r\na=rtpmap:{pt} {name}/8000\r\n{te}a=ptime:20\r\na=sendrecv\r\n{crypto}",
        pt = codec.payload_type(),
        name = codec.name(),
        te_pt = if telephone_event { " 101" } else { "" },
        te = if telephone_event {
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
        } else {
            ""
        },
    );
    let msg = format!(
        "INVITE sip:bench@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-i{i};rport\r\nMax-Forwards: 70\r\nFrom: <sip:load@{local}>;tag=t{i}\r\nTo: <sip:bench@{target}>\r\nCall-ID: {}\r\nCSeq: 1 INVITE\r\nContact: <sip:load@{local}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        c.call_id,
        body.len()
    );
    sip.send_to(msg.as_bytes(), target)?;
    Ok(())
}

fn send_bye(
    sip: &UdpSocket,
    local: SocketAddr,
    target: SocketAddr,
    i: usize,
    c: &Call,
) -> anyhow::Result<()> {
    let msg = format!(
        "BYE sip:bench@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-b{i};rport\r\nMax-Forwards: 70\r\nFrom: <sip:load@{local}>;tag=t{i}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        c.to, c.call_id
    );
    sip.send_to(msg.as_bytes(), target)?;
    Ok(())
}

/// Handles one SIP message from voxline: answers to our INVITE and BYE, and any request
/// (answered 200 OK).
fn on_sip(
    sip: &UdpSocket,
    local: SocketAddr,
    target: SocketAddr,
    data: &[u8],
    calls: &mut [Call],
) -> anyhow::Result<()> {
    let text = String::from_utf8_lossy(data);
    let Some(call_id) = header(&text, "Call-ID", "i") else {
        return Ok(());
    };
    let index = call_id
        .strip_prefix("rl-")
        .and_then(|s| s.split('-').next())
        .and_then(|s| s.parse::<usize>().ok());
    let Some(c) = index.and_then(|i| calls.get_mut(i)) else {
        return Ok(());
    };
    let i = index.unwrap_or_default();
    let first = text.lines().next().unwrap_or_default();
    if let Some(status) = first.strip_prefix("SIP/2.0 ") {
        let code: u16 = status.get(..3).and_then(|s| s.parse().ok()).unwrap_or(0);
        let cseq = header(&text, "CSeq", "").unwrap_or_default();
        if cseq.ends_with("INVITE") {
            if (200..300).contains(&code) {
                c.to = header(&text, "To", "t").unwrap_or_default().to_string();
                let ack = format!(
                    "ACK sip:bench@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-a{i};rport\r\nMax-Forwards: 70\r\nFrom: <sip:load@{local}>;tag=t{i}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
                    c.to, c.call_id
                );
                sip.send_to(ack.as_bytes(), target)?;
                if matches!(c.state, State::Inviting { .. }) {
                    c.remote = sdp_audio(&text);
                    // SRTP offered: the answer must take it (tag 1, the only line offered).
                    let keyed = c.srtp.is_none()
                        || text.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:");
                    if !keyed {
                        eprintln!("rtp-load: call {i} answered without SRTP keys");
                    }
                    c.state = if c.remote.is_some() && keyed {
                        State::Up
                    } else {
                        State::Failed
                    };
                }
            } else if code >= 300 {
                let ack = format!(
                    "ACK sip:bench@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-i{i};rport\r\nMax-Forwards: 70\r\nFrom: <sip:load@{local}>;tag=t{i}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
                    header(&text, "To", "t").unwrap_or_default(),
                    c.call_id
                );
                sip.send_to(ack.as_bytes(), target)?;
                if matches!(c.state, State::Inviting { .. }) {
                    eprintln!("rtp-load: call {i} rejected: {first}");
                    c.state = State::Failed;
                }
            }
        } else if cseq.ends_with("BYE") && code >= 200 && c.state == State::Closing {
            c.state = State::Done;
        }
        return Ok(());
    }
    // A request from voxline (BYE, re-INVITE, OPTIONS...): 200 OK.
    let method = first.split(' ').next().unwrap_or_default();
    if method == "ACK" {
        return Ok(());
    }
    let mut resp = String::from("SIP/2.0 200 OK\r\n");
    for (name, short) in [
        ("Via", "v"),
        ("From", "f"),
        ("To", "t"),
        ("Call-ID", "i"),
        ("CSeq", ""),
    ] {
        for l in text.lines() {
            if line_is(l, name, short) {
                resp.push_str(l);
                resp.push_str("\r\n");
            }
        }
    }
    resp.push_str("Content-Length: 0\r\n\r\n");
    sip.send_to(resp.as_bytes(), target)?;
    if method == "BYE" && c.state == State::Up {
        eprintln!("rtp-load: voxline hung up call {i}");
        c.state = State::Failed;
    }
    Ok(())
}

fn line_is(line: &str, name: &str, short: &str) -> bool {
    line.split_once(':').is_some_and(|(h, _)| {
        let h = h.trim();
        h.eq_ignore_ascii_case(name) || (!short.is_empty() && h.eq_ignore_ascii_case(short))
    })
}

fn header<'a>(text: &'a str, name: &str, short: &str) -> Option<&'a str> {
    text.lines()
        .take_while(|l| !l.is_empty())
        .find(|l| line_is(l, name, short))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim())
}

/// The audio address of an SDP body (session-level or media-level `c=`, `m=audio` port).
fn sdp_audio(text: &str) -> Option<SocketAddr> {
    let body = text.split_once("\r\n\r\n")?.1;
    let mut ip: Option<IpAddr> = None;
    let mut port: Option<u16> = None;
    for l in body.lines() {
        if let Some(c) = l.strip_prefix("c=IN IP4 ") {
            ip = c.trim().parse().ok().or(ip);
        } else if let Some(m) = l.strip_prefix("m=audio ") {
            port = m.split(' ').next().and_then(|p| p.parse().ok());
        }
    }
    Some(SocketAddr::new(ip?, port?))
}

/// Reads every datagram queued on a non-blocking socket (one `recvmmsg` for the usual single
/// packet) and returns how many there were.
struct Rx {
    headers: MultiHeaders<SockaddrStorage>,
    bufs: [[u8; 2048]; BATCH],
}

impl Rx {
    fn new() -> Self {
        Rx {
            headers: MultiHeaders::preallocate(BATCH, None),
            bufs: [[0u8; 2048]; BATCH],
        }
    }

    fn drain(&mut self, sock: &UdpSocket) -> u64 {
        let mut total = 0;
        loop {
            let [b0, b1, b2, b3] = &mut self.bufs;
            let mut iovs = [
                [IoSliceMut::new(&mut b0[..])],
                [IoSliceMut::new(&mut b1[..])],
                [IoSliceMut::new(&mut b2[..])],
                [IoSliceMut::new(&mut b3[..])],
            ];
            let n = match recvmmsg(
                sock.as_raw_fd(),
                &mut self.headers,
                iovs.iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            ) {
                Ok(r) => r.count(),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => 0,
            };
            total += n as u64;
            if n < BATCH {
                return total;
            }
        }
    }
}

/// One second of a 440 Hz tone at -12 dBFS, G.711-encoded.
fn tone(codec: Codec) -> Vec<u8> {
    (0..8000)
        .map(|n| {
            let x = (2.0 * std::f64::consts::PI * 440.0 * f64::from(n) / 8000.0).sin();
            let s = (x * 8192.0) as i16;
            match codec {
                Codec::Pcmu => ulaw_encode(s),
                Codec::Pcma => alaw_encode(s),
            }
        })
        .collect()
}

fn rand_u16(i: usize) -> u16 {
    (i as u16)
        .wrapping_mul(40503)
        .wrapping_add(std::process::id() as u16)
}
