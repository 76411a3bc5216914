//! A hand-made SIP + RTP peer for the end-to-end media tests (tests/media_e2e_*.rs).
//!
//! * [`SipPeer`]: one call to voxline over UDP (INVITE / ACK, re-INVITE, INFO, BYE), that
//!   answers voxline's own BYE with 200.
//! * [`RtpPeer`]: a plain `std` UDP socket that sends G.711 RTP with its own SSRC, sequence
//!   numbers and timestamps, and collects what voxline sends back.
//! * Audio helpers: tone generation, G.711 through voxline's own codecs, and a Goertzel
//!   detector to tell which frequency a piece of audio holds.
//! * [`CallSpy`]: polls `GET /calls` in the background so a test learns the id of the call
//!   it placed (the call leaves that list when it ends; `GET /calls/{id}` keeps it).
//!
//! Everything is on 127.0.0.1 and bounded by timeouts.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::{BTreeSet, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use voxline::media::codec::{
    AudioDecoder, AudioEncoder, PcmaDecoder, PcmaEncoder, PcmuDecoder, PcmuEncoder,
};
use voxline::media::rtp::RtpPacket;

use crate::common::{LOOPBACK, RawUdp, header, http_get, status_code, unique, uri_of};

/// G.711 sample rate and RTP clock.
pub const RATE: u32 = 8000;
/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME: usize = 160;
/// The frame period.
pub const PTIME: Duration = Duration::from_millis(20);
/// How long a SIP transaction may take on loopback before the test gives up.
const SIP_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// SDP
// ---------------------------------------------------------------------------------------

/// An audio offer on 127.0.0.1:`port`: payload type `pt` (`name`/8000), telephone-event
/// 101, `a=ptime:20`, the direction attribute `direction` and o= version `version`.
pub fn offer(port: u16, pt: u8, name: &str, direction: &str, version: u32) -> String {
    format!(
        "v=0\r\n\
         o=peer 4242 {version} IN IP4 {LOOPBACK}\r\n\
         s=-\r\n\
         c=IN IP4 {LOOPBACK}\r\n\
         t=0 0\r\n\
         m=audio {port} RTP/AVP {pt} 101\r\n\
         a=rtpmap:{pt} {name}/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-16\r\n\
         a=ptime:20\r\n\
         a={direction}\r\n"
    )
}

/// The RTP address of an SDP answer (`c=` and the audio `m=` port).
pub fn answer_rtp_addr(sdp: &str) -> SocketAddr {
    let ip = sdp
        .lines()
        .find_map(|l| l.trim().strip_prefix("c=IN IP4 "))
        .unwrap_or_else(|| panic!("no c=IN IP4 line in the answer:\n{sdp}"))
        .trim();
    let port = sdp
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no m=audio port in the answer:\n{sdp}"));
    format!("{ip}:{port}").parse().expect("answer address")
}

/// The direction attribute of an SDP (sendrecv if none).
pub fn direction(sdp: &str) -> &'static str {
    for d in ["sendonly", "recvonly", "inactive", "sendrecv"] {
        if sdp.lines().any(|l| l.trim() == format!("a={d}")) {
            return d;
        }
    }
    "sendrecv"
}

// ---------------------------------------------------------------------------------------
// SIP
// ---------------------------------------------------------------------------------------

/// One dialog with voxline, placed by us over UDP.
pub struct SipPeer {
    raw: RawUdp,
    vox: SocketAddr,
    call_id: String,
    from_tag: String,
    to_uri: String,
    to_tag: String,
    target: String,
    cseq: u32,
    /// Requests voxline sent us (already answered with 200), oldest first.
    requests: VecDeque<String>,
}

impl SipPeer {
    /// INVITE `sip:number@vox` with `sdp`, wait for the 200, ACK it. Returns the peer and
    /// the 200's SDP answer. Panics unless the call is answered within a few seconds.
    pub fn call(vox: SocketAddr, number: &str, sdp: &str) -> (SipPeer, String) {
        let raw = RawUdp::bind();
        let mut peer = SipPeer {
            raw,
            vox,
            call_id: unique("e2e-call-"),
            from_tag: unique("ft"),
            to_uri: format!("sip:{number}@{vox}"),
            to_tag: String::new(),
            target: format!("sip:{number}@{vox}"),
            cseq: 0,
            requests: VecDeque::new(),
        };
        let ok = peer.invite(sdp);
        peer.to_tag = tag_of(header(&ok, "To", Some("t")).unwrap_or_default())
            .unwrap_or_else(|| panic!("no To tag in the 200:\n{ok}"))
            .to_string();
        if let Some(contact) = header(&ok, "Contact", Some("m")) {
            peer.target = uri_of(contact).to_string();
        }
        peer.ack();
        let answer = body(&ok).to_string();
        (peer, answer)
    }

    /// The SIP Call-ID of this call.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Send a re-INVITE with `sdp`, ACK its 200, return the SDP answer.
    pub fn reinvite(&mut self, sdp: &str) -> String {
        let ok = self.invite(sdp);
        self.ack();
        body(&ok).to_string()
    }

    /// Send INFO with `content_type` and `body`; the final status code.
    pub fn info(&mut self, content_type: &str, body: &str) -> u16 {
        self.cseq += 1;
        let req = self.request("INFO", self.cseq, Some((content_type, body)));
        let resp = self.transaction(&req, "INFO");
        status_code(&resp).unwrap_or(0)
    }

    /// Send BYE; the final status code.
    pub fn bye(&mut self) -> u16 {
        self.cseq += 1;
        let req = self.request("BYE", self.cseq, None);
        let resp = self.transaction(&req, "BYE");
        status_code(&resp).unwrap_or(0)
    }

    /// Wait up to `timeout` for a request `method` from voxline (answered with 200 as it
    /// arrives); the request, or None.
    pub fn wait_request(&mut self, method: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.requests.iter().position(|r| is_request(r, method)) {
                return self.requests.remove(i);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if left.is_zero() {
                return None;
            }
            let msg = self.raw.recv_from(self.vox, left)?;
            self.take(msg);
        }
    }

    /// INVITE (initial or re-) with `sdp`: the 200, after the 1xx. Panics otherwise.
    fn invite(&mut self, sdp: &str) -> String {
        self.cseq += 1;
        let req = self.request("INVITE", self.cseq, Some(("application/sdp", sdp)));
        let resp = self.transaction(&req, "INVITE");
        assert_eq!(
            status_code(&resp),
            Some(200),
            "INVITE not answered with 200:\n{resp}"
        );
        resp
    }

    fn ack(&self) {
        let req = self.request("ACK", self.cseq, None);
        self.raw.send(self.vox, req.as_bytes());
    }

    /// Send `req` (retransmitting every 500 ms, RFC 3261 T1) until a final response with our
    /// CSeq method arrives; that response.
    fn transaction(&mut self, req: &str, method: &str) -> String {
        let deadline = Instant::now() + SIP_TIMEOUT;
        let cseq = format!("{} {method}", self.cseq);
        let mut next_send = Instant::now();
        let mut provisional = false;
        loop {
            let now = Instant::now();
            assert!(
                now < deadline,
                "no final response to {method} within {SIP_TIMEOUT:?}"
            );
            if now >= next_send && !provisional {
                self.raw.send(self.vox, req.as_bytes());
                next_send = now + Duration::from_millis(500);
            }
            let wait = if provisional {
                deadline - now
            } else {
                next_send
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(1))
            };
            let Some(msg) = self.raw.recv_from(self.vox, wait) else {
                continue;
            };
            match status_code(&msg) {
                Some(code) if header(&msg, "CSeq", None) == Some(cseq.as_str()) => {
                    if code >= 200 {
                        return msg;
                    }
                    provisional = true;
                }
                Some(_) => {} // a stray retransmission of an earlier response
                None => self.take(msg),
            }
        }
    }

    /// A request from voxline: answer 200 and keep it (ACKs are only kept).
    fn take(&mut self, msg: String) {
        if status_code(&msg).is_some() {
            return;
        }
        if !is_request(&msg, "ACK") {
            let ok = response_200(&msg);
            self.raw.send(self.vox, ok.as_bytes());
        }
        self.requests.push_back(msg);
    }

    fn request(&self, method: &str, cseq: u32, body: Option<(&str, &str)>) -> String {
        let local = self.raw.local;
        let uri = if method == "INVITE" && self.to_tag.is_empty() {
            &self.to_uri
        } else {
            &self.target
        };
        let to_tag = if self.to_tag.is_empty() {
            String::new()
        } else {
            format!(";tag={}", self.to_tag)
        };
        let (ctype, body) = match body {
            Some((t, b)) => (format!("Content-Type: {t}\r\n"), b),
            None => (String::new(), ""),
        };
        format!(
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:peer@{local}>;tag={from_tag}\r\n\
             To: <{to}>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:peer@{local}>\r\n\
             {ctype}\
             Content-Length: {len}\r\n\r\n{body}",
            branch = unique("z9hG4bK-e2e"),
            from_tag = self.from_tag,
            to = self.to_uri,
            call_id = self.call_id,
            len = body.len(),
        )
    }
}

/// The 200 OK to a request: its Via, From, To, Call-ID and CSeq copied.
pub fn response_200(req: &str) -> String {
    let head = req.split("\r\n\r\n").next().unwrap_or("");
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for line in head.lines().skip(1) {
        let name = line.split(':').next().unwrap_or("").trim();
        if ["via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

fn is_request(msg: &str, method: &str) -> bool {
    msg.split_whitespace().next() == Some(method)
}

fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

fn tag_of(value: &str) -> Option<&str> {
    value
        .split(';')
        .skip(1)
        .find_map(|p| p.trim().strip_prefix("tag="))
}

// ---------------------------------------------------------------------------------------
// RTP
// ---------------------------------------------------------------------------------------

/// One RTP packet received.
#[derive(Debug, Clone)]
pub struct Rtp {
    /// When it arrived.
    pub at: Instant,
    /// Marker bit.
    pub marker: bool,
    /// Payload type.
    pub pt: u8,
    /// Sequence number.
    pub seq: u16,
    /// Timestamp.
    pub ts: u32,
    /// SSRC.
    pub ssrc: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

/// Our RTP endpoint: sends a stream, receives voxline's.
pub struct RtpPeer {
    sock: UdpSocket,
    /// Current SSRC.
    pub ssrc: u32,
    /// Next sequence number.
    pub seq: u16,
    /// Next timestamp.
    pub ts: u32,
    /// Payload type sent.
    pub pt: u8,
}

impl RtpPeer {
    /// A socket on 127.0.0.1 sending payload type `pt`.
    pub fn bind(pt: u8) -> RtpPeer {
        let sock = UdpSocket::bind((LOOPBACK, 0)).expect("bind RTP socket");
        RtpPeer {
            sock,
            ssrc: 0x1234_5678,
            seq: 1000,
            ts: 160_000,
            pt,
        }
    }

    /// Our RTP port.
    pub fn port(&self) -> u16 {
        self.sock.local_addr().expect("local_addr").port()
    }

    /// Switch to a new SSRC with a new sequence and timestamp origin.
    pub fn new_source(&mut self, ssrc: u32, seq: u16, ts: u32) {
        self.ssrc = ssrc;
        self.seq = seq;
        self.ts = ts;
    }

    /// Send one packet carrying `payload` (one G.711 byte per sample) to `to`, then advance
    /// the sequence number and the timestamp.
    pub fn send(&mut self, to: SocketAddr, payload: &[u8], marker: bool) {
        let mut pkt = Vec::with_capacity(12 + payload.len());
        pkt.push(0x80);
        pkt.push((u8::from(marker) << 7) | self.pt);
        pkt.extend_from_slice(&self.seq.to_be_bytes());
        pkt.extend_from_slice(&self.ts.to_be_bytes());
        pkt.extend_from_slice(&self.ssrc.to_be_bytes());
        pkt.extend_from_slice(payload);
        self.sock.send_to(&pkt, to).expect("send RTP");
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(payload.len() as u32);
    }

    /// The next RTP packet (RTCP is skipped) within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Rtp> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            if left.is_zero() {
                return None;
            }
            self.sock.set_read_timeout(Some(left)).expect("timeout");
            let n = match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => n,
                // A signal to this test process (another test's child exiting): a socket
                // with a receive timeout is not restarted (signal(7)).
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(e) => panic!("RTP recv: {e}"),
            };
            // RTCP (RFC 5761 §4): second byte 192..=223.
            if n >= 2 && (192..=223).contains(&buf[1]) {
                continue;
            }
            if let Ok(p) = RtpPacket::parse(&buf[..n]) {
                return Some(Rtp {
                    at: Instant::now(),
                    marker: p.marker,
                    pt: p.payload_type.get(),
                    seq: p.seq.get(),
                    ts: p.timestamp.get(),
                    ssrc: p.ssrc.get(),
                    payload: p.payload.to_vec(),
                });
            }
        }
    }

    /// Everything already waiting in the socket (read until 2 ms pass without a packet).
    pub fn drain(&self) -> Vec<Rtp> {
        let mut out = Vec::new();
        while let Some(p) = self.recv(Duration::from_millis(2)) {
            out.push(p);
        }
        out
    }

    /// Everything received for `dur`.
    pub fn collect(&self, dur: Duration) -> Vec<Rtp> {
        let deadline = Instant::now() + dur;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.recv(left) {
                Some(p) => out.push(p),
                None => break,
            }
        }
        out
    }

    /// Send `frames` packets to `to` paced every 20 ms on an absolute clock, the payload of
    /// frame k being `payload(k)`, the first with the marker bit; returns everything
    /// received meanwhile (and for 100 ms after).
    pub fn stream(
        &mut self,
        to: SocketAddr,
        frames: usize,
        mut payload: impl FnMut(usize) -> Vec<u8>,
    ) -> Vec<Rtp> {
        let start = Instant::now();
        let mut got = Vec::new();
        for k in 0..frames {
            let due = start + PTIME * k as u32;
            while let Some(left) = due.checked_duration_since(Instant::now()) {
                if left.is_zero() {
                    break;
                }
                if let Some(p) = self.recv(left) {
                    got.push(p);
                }
            }
            let pl = payload(k);
            self.send(to, &pl, k == 0);
        }
        got.extend(self.collect(Duration::from_millis(100)));
        got
    }
}

// ---------------------------------------------------------------------------------------
// Audio
// ---------------------------------------------------------------------------------------

/// `n` samples of a sine at `hz`, peak `amplitude`, starting at sample index `start` (so
/// consecutive frames are continuous).
pub fn tone(hz: f64, amplitude: f64, start: usize, n: usize) -> Vec<i16> {
    (start..start + n)
        .map(|i| {
            let t = i as f64 / f64::from(RATE);
            (amplitude * (2.0 * std::f64::consts::PI * hz * t).sin()).round() as i16
        })
        .collect()
}

/// PCM to μ-law with voxline's encoder.
pub fn pcmu_encode(pcm: &[i16]) -> Vec<u8> {
    let mut out = Vec::new();
    PcmuEncoder::new(20).encode(pcm, &mut out).expect("encode");
    out
}

/// μ-law to PCM with voxline's decoder.
pub fn pcmu_decode(payload: &[u8]) -> Vec<i16> {
    let mut out = Vec::new();
    PcmuDecoder::new()
        .decode(payload, &mut out)
        .expect("decode");
    out
}

/// PCM to A-law with voxline's encoder.
pub fn pcma_encode(pcm: &[i16]) -> Vec<u8> {
    let mut out = Vec::new();
    PcmaEncoder::new(20).encode(pcm, &mut out).expect("encode");
    out
}

/// A-law to PCM with voxline's decoder.
pub fn pcma_decode(payload: &[u8]) -> Vec<i16> {
    let mut out = Vec::new();
    PcmaDecoder::new()
        .decode(payload, &mut out)
        .expect("decode");
    out
}

/// One frame (20 ms) of a μ-law `hz` tone at peak `amplitude`, frame index `k`.
pub fn pcmu_tone_frame(hz: f64, amplitude: f64, k: usize) -> Vec<u8> {
    pcmu_encode(&tone(hz, amplitude, k * FRAME, FRAME))
}

/// Goertzel power of `hz` in `samples` (8 kHz), normalised by the length squared: a full
/// scale sine of amplitude A gives about A²/4.
pub fn goertzel(samples: &[i16], hz: f64) -> f64 {
    let n = samples.len();
    if n == 0 {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(RATE);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    power / (n as f64 * n as f64)
}

/// RMS of `samples`.
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt()
}

/// Whether `samples` hold a tone at `hz`: RMS at least `min_rms`, and the Goertzel power at
/// `hz` at least 20 times (13 dB) the power at each of `hz`·0.7 and `hz`·1.3, and at least
/// 60 % of what a pure sine of that RMS would give.
pub fn is_tone(samples: &[i16], hz: f64, min_rms: f64) -> bool {
    let r = rms(samples);
    if r < min_rms {
        return false;
    }
    let p = goertzel(samples, hz);
    let pure = r * r / 2.0; // A²/4 with A = r·√2
    p >= 0.6 * pure
        && p >= 20.0 * goertzel(samples, hz * 0.7)
        && p >= 20.0 * goertzel(samples, hz * 1.3)
}

// ---------------------------------------------------------------------------------------
// HTTP API
// ---------------------------------------------------------------------------------------

/// `GET path` as JSON; panics unless 200.
pub fn api_json(http: SocketAddr, path: &str) -> serde_json::Value {
    let (code, body) =
        http_get(http, path, Duration::from_secs(2)).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(code, 200, "GET {path} -> {code}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: bad JSON ({e}): {body}"))
}

/// `GET /calls/{id}`.
pub fn api_call(http: SocketAddr, id: u64) -> serde_json::Value {
    api_json(http, &format!("/calls/{id}"))
}

/// Wait up to `timeout` for call `id` to reach `state == "ended"` and for its media task's
/// final statistics and recording to be in; the call's JSON (whatever it is at the deadline).
pub fn wait_ended(http: SocketAddr, id: u64, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let call = api_call(http, id);
        if call["state"] == "ended" || Instant::now() >= deadline {
            // The media task writes its last statistics just after the call ends.
            thread::sleep(Duration::from_millis(300));
            return api_call(http, id);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `GET /calls` every 20 ms in a background thread and remembers every call id (and
/// SIP Call-ID) it saw.
pub struct CallSpy {
    seen: Arc<Mutex<BTreeSet<(u64, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl CallSpy {
    /// Start polling voxline's API at `http`.
    pub fn start(http: SocketAddr) -> CallSpy {
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((200, body)) = http_get(http, "/calls", Duration::from_secs(1))
                        && let Ok(serde_json::Value::Array(calls)) = serde_json::from_str(&body)
                    {
                        let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                        for c in calls {
                            if let Some(id) = c["id"].as_u64() {
                                s.insert((id, c["call_id"].as_str().unwrap_or("").to_string()));
                            }
                        }
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            })
        };
        CallSpy {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Every (id, Call-ID) seen so far.
    pub fn seen(&self) -> Vec<(u64, String)> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Wait up to `timeout` until exactly one call was seen; its id. Panics otherwise.
    pub fn the_call(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.seen();
            if seen.len() == 1 {
                return seen[0].0;
            }
            assert!(seen.len() <= 1, "more than one call seen: {seen:?}");
            assert!(
                Instant::now() < deadline,
                "no call showed up in GET /calls within {timeout:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait up to `timeout` for the call with SIP Call-ID `call_id`; its id.
    pub fn id_of(&self, call_id: &str, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((id, _)) = self.seen().into_iter().find(|(_, c)| c == call_id) {
                return id;
            }
            assert!(
                Instant::now() < deadline,
                "call {call_id} did not show up in GET /calls within {timeout:?}: {:?}",
                self.seen()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for CallSpy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
