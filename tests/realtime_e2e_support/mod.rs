//! End-to-end harness for the realtime agent: a mock Realtime server in this process, a real
//! `voxline run` process whose agent points at it, and the hand-made SIP + RTP peer of
//! tests/media_peer as the caller (tests/realtime_e2e_*.rs).
//!
//! The caller "speaks" with a μ-law tone loud enough for the mock's energy VAD and "stops"
//! with μ-law silence; the mock answers each turn with its own tone, whose bytes it records,
//! so a test can compare what the mock sent with what arrived as RTP, byte for byte.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::time::Duration;

use voxline_mock_realtime::{MockConfig, MockServer};

use crate::common::VoxlineProcess;
use crate::media_peer::{FRAME, Rtp, RtpPeer, SipPeer, answer_rtp_addr, offer, pcmu_encode, tone};

/// The environment variable the test agent reads its key from.
pub const KEY_ENV: &str = "VOXLINE_E2E_REALTIME_KEY";
/// The key the mock expects.
pub const KEY: &str = "sk-e2e-mock";
/// The silence that ends a caller turn (`vad_silence_ms`), short to keep tests quick.
pub const VAD_SILENCE_MS: u64 = 300;
/// μ-law silence.
pub const ULAW_SILENCE: u8 = 0xFF;

/// A mock server (on its own runtime) and a voxline process using it.
pub struct RealtimeE2e {
    /// The runtime the mock runs on.
    pub rt: tokio::runtime::Runtime,
    /// The mock.
    pub mock: MockServer,
    /// voxline.
    pub vox: VoxlineProcess,
}

impl RealtimeE2e {
    /// Starts the mock with `mock_cfg` (its key is set to [`KEY`]) and voxline with one
    /// realtime agent `ai` routed from every number. `agent_extra` is TOML added inside the
    /// `[[agent]]` table (before its sub-tables), `tables_extra` after them (e.g.
    /// `[[agent.http_tool]]` tables), `top_extra` at the top of the file.
    pub fn start(
        mock_cfg: MockConfig,
        top_extra: &str,
        agent_extra: &str,
        tables_extra: &str,
    ) -> RealtimeE2e {
        RealtimeE2e::start_allowing(
            mock_cfg,
            &["127.0.0.0/8"],
            top_extra,
            agent_extra,
            tables_extra,
        )
    }

    /// [`RealtimeE2e::start`] with the agent's `allow_from` set to `allow`.
    pub fn start_allowing(
        mock_cfg: MockConfig,
        allow: &[&str],
        top_extra: &str,
        agent_extra: &str,
        tables_extra: &str,
    ) -> RealtimeE2e {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mock = rt
            .block_on(MockServer::start(MockConfig {
                api_key: KEY.to_owned(),
                ..mock_cfg
            }))
            .expect("mock server");
        let url = mock.url();
        let toml = config_allowing(&url, allow, top_extra, agent_extra, tables_extra);
        let vox = VoxlineProcess::spawn_with_env(&toml, &[(KEY_ENV, KEY)]);
        RealtimeE2e { rt, mock, vox }
    }

    /// Waits up to `limit` for `cond` on the mock.
    pub fn wait(&self, limit: Duration, cond: impl Fn(&MockServer) -> bool) -> bool {
        self.rt.block_on(self.mock.wait_until(limit, cond))
    }

    /// Calls voxline with PCMU (and telephone-event 101): the SIP dialog, our RTP endpoint and
    /// voxline's RTP address.
    pub fn call(&self, number: &str) -> (SipPeer, RtpPeer, std::net::SocketAddr) {
        call(self.vox.sip_addr(), number)
    }
}

/// Calls `number` at voxline's SIP address `vox` with PCMU (and telephone-event 101): the
/// SIP dialog, our RTP endpoint and voxline's RTP address.
pub fn call(vox: std::net::SocketAddr, number: &str) -> (SipPeer, RtpPeer, std::net::SocketAddr) {
    let rtp = RtpPeer::bind(0);
    let (sip, answer) = SipPeer::call(vox, number, &offer(rtp.port(), 0, "PCMU", "sendrecv", 1));
    let to = answer_rtp_addr(&answer);
    (sip, rtp, to)
}

/// The configuration: one realtime agent `ai` at `url`, routed from every number, callable
/// from loopback.
pub fn config(url: &str, top_extra: &str, agent_extra: &str, tables_extra: &str) -> String {
    config_allowing(url, &["127.0.0.0/8"], top_extra, agent_extra, tables_extra)
}

/// [`config`] with the agent's `allow_from` set to `allow`.
pub fn config_allowing(
    url: &str,
    allow: &[&str],
    top_extra: &str,
    agent_extra: &str,
    tables_extra: &str,
) -> String {
    let allow = allow
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"{top_extra}
[[route]]
number = "*"
agent = "ai"

[[agent]]
name = "ai"
kind = "realtime"
instructions = "You are a test agent. The caller is {{{{caller}}}}. Customer: {{{{var.customer}}}}."
allow_from = [{allow}]
{agent_extra}

[agent.realtime]
url = "{url}"
api_key_env = "{KEY_ENV}"
vad_silence_ms = {VAD_SILENCE_MS}
transcription_model = "whisper-1"
noise_reduction = "none"

{tables_extra}
"#
    )
}

/// One 20 ms frame of the caller "speaking": a 300 Hz μ-law tone at half scale (frame `k`
/// of a continuous tone).
pub fn speech_frame(k: usize) -> Vec<u8> {
    pcmu_encode(&tone(300.0, 16000.0, k * FRAME, FRAME))
}

/// One 20 ms frame of μ-law silence.
pub fn silence_frame() -> Vec<u8> {
    vec![ULAW_SILENCE; FRAME]
}

/// Whether a packet from voxline carries agent audio (PCMU and not all silence codes).
pub fn is_agent_audio(p: &Rtp) -> bool {
    p.pt == 0 && p.payload.iter().any(|&b| b != 0xFF && b != 0x7F)
}

/// The caller speaks for `speech` frames, then is silent for `silence` frames; returns every
/// packet voxline sent meanwhile.
pub fn talk(
    rtp: &mut RtpPeer,
    to: std::net::SocketAddr,
    speech: usize,
    silence: usize,
) -> Vec<Rtp> {
    rtp.stream(to, speech + silence, |k| {
        if k < speech {
            speech_frame(k)
        } else {
            silence_frame()
        }
    })
}

/// Like [`talk`], but the silence goes on until the agent's reply has come and gone: past
/// `silence` frames it continues while no agent audio has arrived yet, or while some arrived
/// in the last [`QUIET_FRAMES`], up to [`EXTRA_FRAMES`] more. A busy machine then makes the
/// test slower instead of failing it.
pub fn talk_until_answered(
    rtp: &mut RtpPeer,
    to: std::net::SocketAddr,
    speech: usize,
    silence: usize,
) -> Vec<Rtp> {
    let start = std::time::Instant::now();
    let mut got: Vec<Rtp> = Vec::new();
    let mut last_agent: Option<usize> = None;
    let mut k = 0;
    loop {
        let due = start + crate::media_peer::PTIME * k as u32;
        while let Some(left) = due.checked_duration_since(std::time::Instant::now()) {
            if left.is_zero() {
                break;
            }
            if let Some(p) = rtp.recv(left) {
                if is_agent_audio(&p) {
                    last_agent = Some(k);
                }
                got.push(p);
            }
        }
        if k >= speech + silence {
            let quiet = last_agent.is_some_and(|a| k >= a + QUIET_FRAMES);
            if quiet || k >= speech + silence + EXTRA_FRAMES {
                break;
            }
        }
        let payload = if k < speech {
            speech_frame(k)
        } else {
            silence_frame()
        };
        rtp.send(to, &payload, k == 0);
        k += 1;
    }
    got.extend(rtp.collect(Duration::from_millis(100)));
    got
}

/// How long [`talk_until_answered`] waits after the agent's last audio: 500 ms.
pub const QUIET_FRAMES: usize = 25;
/// How much longer than asked [`talk_until_answered`] may go on: 10 s.
pub const EXTRA_FRAMES: usize = 500;

/// The concatenated payloads of the packets that carry agent audio.
pub fn agent_bytes(packets: &[Rtp]) -> Vec<u8> {
    packets
        .iter()
        .filter(|p| is_agent_audio(p))
        .flat_map(|p| p.payload.iter().copied())
        .collect()
}

/// Where `needle` starts in `haystack`, if it occurs.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends `frames` 20 ms packets to `to` on an absolute clock; the payload of frame `k` is
/// `decide(k, received_so_far)`, so the caller can react to what it hears. Returns everything
/// received (and for 200 ms after).
pub fn converse(
    rtp: &mut RtpPeer,
    to: std::net::SocketAddr,
    frames: usize,
    mut decide: impl FnMut(usize, &[Rtp]) -> Vec<u8>,
) -> Vec<Rtp> {
    let start = std::time::Instant::now();
    let mut got = Vec::new();
    for k in 0..frames {
        let due = start + crate::media_peer::PTIME * k as u32;
        while let Some(left) = due.checked_duration_since(std::time::Instant::now()) {
            if left.is_zero() {
                break;
            }
            if let Some(p) = rtp.recv(left) {
                got.push(p);
            }
        }
        let payload = decide(k, &got);
        rtp.send(to, &payload, k == 0);
    }
    got.extend(rtp.collect(Duration::from_millis(200)));
    got
}

/// Sends a PCMU INVITE for `number` to `vox` from a fresh loopback socket (RTP port `rtp`)
/// and returns the socket and the final response (None if none came within `timeout`). The
/// response is not ACKed (for a non-2xx the transaction layer ACKs nothing of ours anyway).
pub fn raw_invite(
    vox: std::net::SocketAddr,
    number: &str,
    rtp: u16,
    timeout: Duration,
) -> (crate::common::RawUdp, Option<String>) {
    use crate::common::{RawUdp, unique};
    let udp = RawUdp::bind();
    let from = udp.local;
    let body = offer(rtp, 0, "PCMU", "sendrecv", 1);
    let req = format!(
        "INVITE sip:{number}@{vox} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:tester@{from}>;tag={tag}\r\n\
         To: <sip:{number}@{vox}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:tester@{from}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {len}\r\n\r\n{body}",
        branch = unique("z9hG4bK-rt"),
        tag = unique("t"),
        call_id = unique("rt-call-"),
        len = body.len(),
    );
    udp.send(vox, req.as_bytes());
    let resp = udp.final_response(vox, timeout);
    (udp, resp)
}

/// Speech for the echo tests: `text` in `voice` from espeak-ng (8 kHz, telephone band).
pub fn speech(voice: &str, text: &str) -> Vec<i16> {
    crate::signals::speak(voice, text)
        .expect("espeak-ng and sox (apt-get install -y espeak-ng sox)")
}

/// The agent's reply for the echo tests: about `seconds` of speech at the mock's 24 kHz.
pub fn spoken_reply(seconds: f32) -> Vec<i16> {
    let s = crate::signals::talk("en-us", 0, seconds, 300).expect("espeak-ng and sox");
    voxline::dsp::resample::resample_all(&s, 8000, voxline_mock_realtime::PCM_RATE)
        .expect("resample")
}

/// A caller on a line that echoes: every frame it sends carries the agent audio it received
/// `delay_frames` packets earlier, `erl_db` quieter (decoded, scaled, re-encoded: G.711 both
/// ways), plus what `own(k, got)` says (PCM, empty for nothing). Runs `frames` frames; returns
/// what it received.
pub fn echoing_caller(
    rtp: &mut RtpPeer,
    to: std::net::SocketAddr,
    frames: usize,
    delay_frames: usize,
    erl_db: f32,
    mut own: impl FnMut(usize, &[Rtp]) -> Vec<i16>,
) -> Vec<Rtp> {
    let gain = 10f32.powf(-erl_db / 20.0);
    converse(rtp, to, frames, |k, got| {
        let echo: Vec<f32> = match got.len().checked_sub(1 + delay_frames).map(|i| &got[i]) {
            Some(p) if p.pt == 0 && p.payload.len() == FRAME => p
                .payload
                .iter()
                .map(|b| f32::from(voxline::media::codec::g711::ulaw_decode(*b)) * gain)
                .collect(),
            _ => vec![0.0; FRAME],
        };
        let mine = own(k, got);
        let pcm: Vec<i16> = (0..FRAME)
            .map(|i| {
                let s = echo[i] + mine.get(i).map_or(0.0, |v| f32::from(*v));
                s.clamp(-32768.0, 32767.0) as i16
            })
            .collect();
        pcmu_encode(&pcm)
    })
}

/// Frame `k` (of `FRAME` samples) of `pcm` starting at frame `from`; empty outside it.
pub fn frame_of(pcm: &[i16], k: usize, from: usize) -> Vec<i16> {
    k.checked_sub(from)
        .and_then(|j| pcm.get(j * FRAME..(j + 1) * FRAME))
        .map(<[i16]>::to_vec)
        .unwrap_or_default()
}

/// The first reply's agent audio the caller got, in frames: from its first agent packet up to
/// the first gap of 10 packets (a later reply is not counted), and whether that gap came (the
/// reply stopped).
pub fn first_reply_frames(packets: &[Rtp]) -> (u64, bool) {
    let Some(first) = packets.iter().position(is_agent_audio) else {
        return (0, false);
    };
    let (mut heard, mut quiet) = (0u64, 0u32);
    for p in &packets[first..] {
        if is_agent_audio(p) {
            if quiet >= 10 {
                break;
            }
            heard += 1;
            quiet = 0;
        } else {
            quiet += 1;
        }
    }
    (heard, quiet >= 10)
}
