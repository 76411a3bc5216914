//! A browser-style call end to end through a running voxline: SIP over WebSocket carries a
//! WebRTC offer (str0m as the browser's WebRTC stack: a full ICE agent, DTLS client,
//! `UDP/TLS/RTP/SAVPF`, BUNDLE, rtcp-mux) to the echo agent; voxline answers with ICE-lite and
//! DTLS-SRTP on the call's RTP port, and the tone the "browser" sends over real UDP comes back
//! to it, echoed through the same call path as a phone's (jitter buffer, codec, agent,
//! recording). The browser then hangs up with BYE.

use crate::common;
use crate::websocket::{HOST, header, recv_until, send, the_call_id, voxline};

use std::time::{Duration, Instant};

use common::{free_tcp_port, http_get};
use str0m::change::SdpAnswer;
use str0m::format::{Codec as RtcCodec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use voxline::media::codec::g711::{ulaw_decode, ulaw_encode};

fn invite(sdp: &str) -> String {
    format!(
        "INVITE sip:echo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS {HOST};branch=z9hG4bK-rtc1\r\n\
         Max-Forwards: 69\r\nTo: <sip:echo@127.0.0.1>\r\nFrom: <sip:web@example.com>;tag=rtc\r\n\
         Call-ID: webrtc-call-1\r\nCSeq: 1 INVITE\r\nContact: <sip:w1@{HOST};transport=ws;ob>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

fn in_dialog(method: &str, cseq: u32, to: &str) -> String {
    format!(
        "{method} sip:voxline@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS {HOST};branch=z9hG4bK-rtc{cseq}{method}\r\n\
         Max-Forwards: 69\r\nTo: {to}\r\nFrom: <sip:web@example.com>;tag=rtc\r\n\
         Call-ID: webrtc-call-1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The Goertzel power share of `freq` in `x` at 8 kHz (1.0 = a pure tone).
fn purity(x: &[i16], freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / 8000.0;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = f64::from(v) + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
    let energy: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    if energy == 0.0 {
        0.0
    } else {
        2.0 * power / (energy * x.len() as f64)
    }
}

#[tokio::test]
async fn a_webrtc_call_over_websocket_hears_its_echo() {
    let port = free_tcp_port();
    let mut vox = voxline(port);
    let (mut ws, _) = crate::websocket::connect(port, Some("sip"))
        .await
        .expect("handshake");

    // The browser: str0m with PCMU and telephone-event, on a real UDP socket.
    let udp = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
    let me = udp.local_addr().expect("addr");
    let t0 = Instant::now();
    let mut cfg = Rtc::builder().set_rtp_mode(true).clear_codecs();
    cfg = cfg.enable_pcmu(true, false);
    cfg.codec_config().add_config(
        Pt::from(101),
        None,
        RtcCodec::Tele,
        Frequency::EIGHT_KHZ,
        None,
        FormatParams {
            telephone_event_max: Some(16),
            ..Default::default()
        },
    );
    let mut rtc = cfg.build(t0);
    rtc.add_local_candidate(Candidate::host(me, "udp").expect("candidate"));
    let mut change = rtc.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, pending) = change.apply().expect("offer");

    send(&mut ws, invite(&offer.to_sdp_string())).await;
    let ok = recv_until(&mut ws, "SIP/2.0 200").await;
    let to = header(&ok, "To").expect("To").to_owned();
    let answer = ok
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    assert!(answer.contains("a=ice-lite"), "{answer}");
    assert!(answer.contains("UDP/TLS/RTP/SAVPF"), "{answer}");
    rtc.sdp_api()
        .accept_answer(
            pending,
            SdpAnswer::from_sdp_string(answer).expect("answer sdp"),
        )
        .expect("answer accepted");
    send(&mut ws, in_dialog("ACK", 1, &to)).await;

    // Run the browser for 3 s of media: a 440 Hz tone out, whatever comes back collected.
    let mut buf = vec![0u8; 2000];
    let mut heard: Vec<i16> = Vec::new();
    let mut connected = false;
    let mut sent = 0u32;
    let mut next_send: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut media_until: Option<Instant> = None;
    loop {
        let timeout = loop {
            match rtc.poll_output().expect("browser output") {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    udp.send_to(&t.contents, t.destination).await.expect("send");
                }
                Output::Event(Event::Connected) => {
                    connected = true;
                    next_send.get_or_insert(Instant::now());
                    media_until.get_or_insert(Instant::now() + Duration::from_secs(3));
                }
                Output::Event(Event::RtpPacket(p)) if *p.header.payload_type == 0 => {
                    heard.extend(p.payload.iter().map(|b| ulaw_decode(*b)));
                }
                Output::Event(_) => {}
            }
        };
        let now = Instant::now();
        if now > deadline || media_until.is_some_and(|t| now > t) {
            break;
        }
        let mut wake = timeout.min(now + Duration::from_millis(100));
        if let Some(t) = next_send {
            wake = wake.min(t);
        }
        let wait = wake.saturating_duration_since(now);
        tokio::select! {
            r = udp.recv_from(&mut buf) => {
                let (n, from) = r.expect("recv");
                let rx = Receive::new(Protocol::Udp, from, me, &buf[..n]).expect("datagram");
                rtc.handle_input(Input::Receive(Instant::now(), rx)).expect("input");
            }
            _ = tokio::time::sleep(wait) => {
                let now = Instant::now();
                if let Some(t) = next_send && t <= now {
                    let pcm: Vec<u8> = (0..160)
                        .map(|i| {
                            let n = f64::from(sent * 160 + i);
                            let v = 8000.0 * (2.0 * std::f64::consts::PI * 440.0 * n / 8000.0).sin();
                            ulaw_encode(v as i16)
                        })
                        .collect();
                    let mut api = rtc.direct_api();
                    let tx = api.stream_tx_by_mid(mid, None).expect("tx stream");
                    tx.write_rtp(RtpWrite::new(
                        Pt::from(0),
                        SeqNo::from(u64::from(sent) + 7),
                        sent * 160,
                        now,
                        pcm,
                    ));
                    sent += 1;
                    next_send = Some(t + Duration::from_millis(20));
                } else {
                    rtc.handle_input(Input::Timeout(now)).expect("timeout");
                }
            }
        }
    }
    assert!(connected, "ICE and DTLS did not come up\n{}", vox.output());
    // The echo: the browser's own tone, back through DTLS-SRTP.
    assert!(
        heard.len() >= 8000,
        "{} samples came back\n{}",
        heard.len(),
        vox.output()
    );
    let window = &heard[heard.len() / 2..heard.len() / 2 + 4000];
    let level =
        (window.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / window.len() as f64).sqrt();
    assert!(level > 2000.0, "echo level {level:.0}");
    assert!(purity(window, 440.0) > 0.8, "the echo is not the tone");

    // The call in the API: the same path as a phone's.
    let id = the_call_id(&vox);
    let (_, call) = http_get(
        vox.http_addr(),
        &format!("/calls/{id}"),
        Duration::from_secs(5),
    )
    .expect("call");
    assert!(call.contains("\"codec\":\"PCMU\""), "{call}");
    // A re-INVITE is refused; the session stays as it was.
    let reinvite = in_dialog("INVITE", 2, &to);
    send(&mut ws, reinvite.clone()).await;
    let refused = recv_until(&mut ws, "SIP/2.0 488").await;
    assert!(
        header(&refused, "CSeq").is_some_and(|c| c == "2 INVITE"),
        "{refused}"
    );
    send(
        &mut ws,
        reinvite
            .replacen("INVITE sip:", "ACK sip:", 1)
            .replace("CSeq: 2 INVITE", "CSeq: 2 ACK"),
    )
    .await;
    send(&mut ws, in_dialog("BYE", 3, &to)).await;
    let bye_ok = recv_until(&mut ws, "SIP/2.0 200").await;
    assert!(
        header(&bye_ok, "CSeq").is_some_and(|c| c.ends_with("BYE")),
        "{bye_ok}"
    );
    vox.assert_running();
}
