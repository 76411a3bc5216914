//! A trunk's `codecs` act (they were parsed but ignored): the offer of an outbound call
//! through a trunk lists the trunk's codecs in its order, and the answer to a call from a
//! trunk's source picks by the trunk's preference; other calls keep `media.codecs`. The
//! stack and the call manager run on a virtual clock.

use std::net::SocketAddr;
use std::time::Instant;

use voxline::call::agent::AllowList;
use voxline::call::{AgentSpec, CallManager, CallTable, MediaPolicy, Routes, TrunkMedia};
use voxline::runtime::rtp::RtpPorts;
use voxline::sdp::{Codec, CodecPrefs};
use voxline::sip::{OutgoingCall, Output, Peer, SipStack, StackConfig, Transport};

fn peer(addr: &str) -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: addr.parse::<SocketAddr>().expect("address"),
    }
}

/// A manager whose trunk `carrier` (sources 192.0.2.0/24) wants G.722 then PCMA; the media
/// policy's default prefers PCMU.
fn manager(rtp_base: u16) -> CallManager {
    let mut routes = Routes::default();
    routes.push("*", AgentSpec::hold());
    CallManager::new(
        routes,
        MediaPolicy::default(),
        RtpPorts::new([127, 0, 0, 1].into(), rtp_base, rtp_base + 10),
        CallTable::default(),
    )
    .with_trunks(vec![TrunkMedia {
        name: "carrier".into(),
        sources: AllowList::new([([192, 0, 2, 0].into(), 24)]),
        codecs: CodecPrefs::new([Codec::G722, Codec::Pcma]).expect("codecs"),
    }])
}

fn drain(stack: &mut SipStack, calls: &mut CallManager, now: Instant) -> Vec<String> {
    let mut sent = Vec::new();
    loop {
        match stack.poll_output() {
            Output::Transmit(t) => sent.push(String::from_utf8_lossy(&t.payload).into_owned()),
            Output::Event(e) => calls.handle_event(now, stack, e),
            Output::Timeout(_) => return sent,
        }
    }
}

/// The payload types of the SDP's audio line.
fn audio_formats(msg: &str) -> Vec<String> {
    let m = msg
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .unwrap_or_else(|| panic!("no m=audio in {msg}"));
    m.split_whitespace().skip(2).map(str::to_string).collect()
}

fn spec() -> OutgoingCall {
    OutgoingCall {
        request_uri: "sip:bob@192.0.2.7".into(),
        from_uri: "sip:voxline@127.0.0.1".into(),
        from_display: None,
        to_uri: "sip:bob@192.0.2.7".into(),
        next_hop: peer("192.0.2.7:5060"),
        routes: Vec::new(),
        body: None,
        credentials: None,
        local_ip: Some([127, 0, 0, 1].into()),
        extra_headers: Vec::new(),
    }
}

#[test]
fn an_outbound_call_through_a_trunk_offers_its_codecs() {
    let now = Instant::now();
    let mut stack = SipStack::new(StackConfig::default(), 3, now);
    let mut calls = manager(47_100);
    calls
        .dial_via(
            now,
            &mut stack,
            spec(),
            Some("carrier"),
            AgentSpec::hold(),
            None,
            vec![],
        )
        .expect("dial");
    let invite = drain(&mut stack, &mut calls, now)
        .into_iter()
        .find(|m| m.starts_with("INVITE "))
        .expect("INVITE");
    let formats = audio_formats(&invite);
    // G.722 (9) and PCMA (8) in the trunk's order, then telephone-event.
    assert_eq!(&formats[..2], ["9", "8"], "{invite}");
    assert!(
        !formats.contains(&"0".to_string()),
        "PCMU offered: {invite}"
    );

    // Without a trunk: the media policy's codecs, PCMU first.
    let mut calls = manager(47_200);
    calls
        .dial(now, &mut stack, spec(), AgentSpec::hold(), None, vec![])
        .expect("dial");
    let invite = drain(&mut stack, &mut calls, now)
        .into_iter()
        .find(|m| m.starts_with("INVITE "))
        .expect("INVITE");
    assert_eq!(audio_formats(&invite)[0], "0", "{invite}");
}

/// An INVITE from `from` offering PCMU, PCMA and G.722 (in that order).
fn invite_from(from: &str, call_id: &str) -> String {
    let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n\
               m=audio 40000 RTP/AVP 0 8 9\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
               a=rtpmap:9 G722/8000\r\n";
    format!(
        "INVITE sip:agent@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@{from}>;tag=f{call_id}\r\nTo: <sip:agent@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{from}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// The codec of the 200's answer to an INVITE from `from`.
fn answered_codec(from: &str, call_id: &str, rtp_base: u16) -> String {
    let now = Instant::now();
    let mut stack = SipStack::new(StackConfig::default(), 5, now);
    let mut calls = manager(rtp_base);
    stack.handle_message(now, peer(from), invite_from(from, call_id).as_bytes());
    let ok = drain(&mut stack, &mut calls, now)
        .into_iter()
        .find(|m| m.starts_with("SIP/2.0 200"))
        .expect("200 OK");
    audio_formats(&ok)[0].clone()
}

#[tokio::test]
async fn an_inbound_call_from_a_trunk_is_answered_by_its_preference() {
    // From the trunk's network: G.722 (its first choice) though the caller put PCMU first.
    assert_eq!(answered_codec("192.0.2.5:5060", "trunk-call", 47_300), "9");
    // From elsewhere: the media policy's preference, PCMU.
    assert_eq!(
        answered_codec("198.51.100.5:5060", "other-call", 47_400),
        "0"
    );
}
