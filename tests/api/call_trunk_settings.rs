//! A trunk's settings act (they were parsed but ignored):
//!
//! * `codecs`: the offer of an outbound call through a trunk lists the trunk's codecs in its
//!   order, and the answer to a call from a trunk's source picks by the trunk's preference;
//!   other calls keep `media.codecs`.
//! * `prack`: `required` sends `Require: 100rel` and makes inbound 1xx reliable (421 for a
//!   caller without 100rel); `disabled` advertises no 100rel, sends no PRACK and refuses
//!   `Require: 100rel` with 420.
//! * `session_timers = false`: no `Session-Expires` asked for or granted, no `timer` tag.
//! * `srtp`: `mandatory` refuses a plain offer from the trunk with 488, offers RTP/SAVP with
//!   keys and ends a call whose answer has none; `optional` offers keys on RTP/AVP and takes
//!   a plain answer.
//! * `dtmf`: only `rfc4733` offers telephone-event; a key press without a method goes the
//!   trunk's way (INFO for `info`); an explicit RFC 4733 request without telephone-event is
//!   refused, the default falls back to tones.
//! * `max_calls`: an INVITE from the trunk beyond it gets 503 with Retry-After; a call from
//!   elsewhere is not counted against it.
//!
//! The stack and the call manager run on a virtual clock.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::sync::oneshot;
use voxline::call::agent::AllowList;
use voxline::call::{
    AgentSpec, CallCommand, CallManager, CallTable, DtmfError, DtmfSendMethod, MediaPolicy, Routes,
    TrunkPolicy,
};
use voxline::media::dtmf::Digit;
use voxline::runtime::CallHandler;
use voxline::runtime::rtp::RtpPorts;
use voxline::sdp::{Codec, CodecPrefs, SrtpMode};
use voxline::sip::{
    CallHandle, CallOptions, OutgoingCall, Output, Peer, Rel100, SipStack, StackConfig, Transport,
};

fn peer(addr: &str) -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: addr.parse::<SocketAddr>().expect("address"),
    }
}

/// The trunk `carrier` (sources 192.0.2.0/24): G.722 then PCMA, RFC 4733, default SIP
/// options.
fn carrier() -> TrunkPolicy {
    TrunkPolicy {
        name: "carrier".into(),
        sources: AllowList::new([([192, 0, 2, 0].into(), 24)]),
        codecs: CodecPrefs::new([Codec::G722, Codec::Pcma]).expect("codecs"),
        dtmf: DtmfSendMethod::Rfc4733,
        sip: CallOptions::default(),
        srtp: SrtpMode::Off,
        srtp_suites: Default::default(),
        max_calls: None,
        max_calls_per_s: None,
    }
}

/// A manager with trunk `trunk`; the media policy's default prefers PCMU.
fn manager_with(rtp_base: u16, trunk: TrunkPolicy) -> CallManager {
    let mut routes = Routes::default();
    routes.push("*", AgentSpec::hold());
    CallManager::new(
        routes,
        MediaPolicy::default(),
        RtpPorts::new([127, 0, 0, 1].into(), rtp_base, rtp_base + 10),
        CallTable::default(),
    )
    .with_trunks(vec![trunk])
}

/// A manager whose trunk `carrier` (sources 192.0.2.0/24) wants G.722 then PCMA.
fn manager(rtp_base: u16) -> CallManager {
    manager_with(rtp_base, carrier())
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
        options: None,
    }
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
}

#[test]
fn an_outbound_call_through_a_trunk_offers_its_codecs() {
    let (mut stack, _, _, invite) = dial_through(carrier(), 47_100);
    let now = Instant::now();
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

#[tokio::test]
async fn inbound_calls_beyond_the_trunks_max_calls_get_503() {
    let now = Instant::now();
    let mut stack = SipStack::new(StackConfig::default(), 9, now);
    let mut calls = manager_with(
        47_500,
        TrunkPolicy {
            max_calls: Some(1),
            ..carrier()
        },
    );
    let mut status = |from: &str, id: &str| {
        stack.handle_message(now, peer(from), invite_from(from, id).as_bytes());
        drain(&mut stack, &mut calls, now)
            .into_iter()
            .find(|m| m.starts_with("SIP/2.0 2") || m.starts_with("SIP/2.0 5"))
            .expect("a final response")
    };
    assert!(status("192.0.2.5:5060", "t1").starts_with("SIP/2.0 200"));
    let refused = status("192.0.2.6:5060", "t2");
    assert!(refused.starts_with("SIP/2.0 503"), "{refused}");
    assert_eq!(header(&refused, "Retry-After"), Some("5"), "{refused}");
    // Another source is not the trunk's: its calls do not count against it.
    assert!(status("198.51.100.5:5060", "t3").starts_with("SIP/2.0 200"));
}

/// The INVITE of an outbound call through `trunk`, with the stack and manager that sent it.
fn dial_through(trunk: TrunkPolicy, rtp_base: u16) -> (SipStack, CallManager, CallHandle, String) {
    let now = Instant::now();
    let mut stack = SipStack::new(StackConfig::default(), 7, now);
    let mut calls = manager_with(rtp_base, trunk);
    let call = calls
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
    (stack, calls, call, invite)
}

fn with_sip(session_timers: bool, rel100: Rel100) -> TrunkPolicy {
    TrunkPolicy {
        sip: CallOptions {
            session_timers,
            rel100,
        },
        ..carrier()
    }
}

/// A response from 192.0.2.7 to `req`, To-tagged, with extra header lines and an SDP body.
fn response(req: &str, status: &str, extra: &str, sdp: Option<&str>) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for l in req.lines().filter(|l| l.starts_with("Via: ")) {
        out.push_str(l);
        out.push_str("\r\n");
    }
    let body = sdp.unwrap_or("");
    out.push_str(&format!(
        "From: {}\r\nTo: {};tag=far\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:bob@192.0.2.7>\r\n{extra}",
        header(req, "From").expect("From"),
        header(req, "To").expect("To"),
        header(req, "Call-ID").expect("Call-ID"),
        header(req, "CSeq").expect("CSeq"),
    ));
    if sdp.is_some() {
        out.push_str("Content-Type: application/sdp\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out
}

#[test]
fn a_trunk_requiring_100rel_says_so_and_one_without_timers_asks_for_none() {
    let (_, _, _, invite) = dial_through(with_sip(false, Rel100::Required), 47_500);
    assert_eq!(header(&invite, "Require"), Some("100rel"), "{invite}");
    assert_eq!(header(&invite, "Supported"), Some("100rel"), "{invite}");
    assert_eq!(header(&invite, "Session-Expires"), None, "{invite}");

    // The default: 100rel and timers supported, a session interval asked for.
    let (_, _, _, invite) = dial_through(carrier(), 47_510);
    assert_eq!(header(&invite, "Require"), None, "{invite}");
    assert_eq!(
        header(&invite, "Supported"),
        Some("100rel, timer"),
        "{invite}"
    );
    assert_eq!(header(&invite, "Session-Expires"), Some("1800"), "{invite}");
}

#[test]
fn a_trunk_without_100rel_sends_no_prack() {
    let (mut stack, mut calls, _, invite) = dial_through(with_sip(true, Rel100::Disabled), 47_520);
    assert_eq!(header(&invite, "Supported"), Some("timer"), "{invite}");
    let now = Instant::now();
    let ringing = response(
        &invite,
        "180 Ringing",
        "Require: 100rel\r\nRSeq: 1\r\n",
        None,
    );
    stack.handle_message(now, peer("192.0.2.7:5060"), ringing.as_bytes());
    let sent = drain(&mut stack, &mut calls, now);
    assert!(!sent.iter().any(|m| m.starts_with("PRACK ")), "{sent:?}");

    // The same 180 on a call through a trunk that supports 100rel is PRACKed.
    let (mut stack, mut calls, _, invite) = dial_through(carrier(), 47_530);
    let ringing = response(
        &invite,
        "180 Ringing",
        "Require: 100rel\r\nRSeq: 1\r\n",
        None,
    );
    stack.handle_message(now, peer("192.0.2.7:5060"), ringing.as_bytes());
    let sent = drain(&mut stack, &mut calls, now);
    assert!(sent.iter().any(|m| m.starts_with("PRACK ")), "{sent:?}");
}

/// What voxline sends to an INVITE from `from` (with extra header lines) on a manager with
/// `trunk`.
fn answer_to(
    trunk: TrunkPolicy,
    from: &str,
    call_id: &str,
    extra: &str,
    rtp_base: u16,
) -> Vec<String> {
    let now = Instant::now();
    let mut stack = SipStack::new(StackConfig::default(), 5, now);
    let mut calls = manager_with(rtp_base, trunk);
    let invite =
        invite_from(from, call_id).replacen("Content-Type:", &format!("{extra}Content-Type:"), 1);
    stack.handle_message(now, peer(from), invite.as_bytes());
    drain(&mut stack, &mut calls, now)
}

fn starting<'a>(sent: &'a [String], prefix: &str) -> &'a str {
    sent.iter()
        .find(|m| m.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {sent:?}"))
}

#[tokio::test]
async fn inbound_100rel_follows_the_trunk() {
    let required = with_sip(true, Rel100::Required);
    // A caller that supports 100rel gets a reliable 180 from a trunk requiring it.
    let sent = answer_to(
        required.clone(),
        "192.0.2.5:5060",
        "r1",
        "Supported: 100rel\r\n",
        47_600,
    );
    let ringing = starting(&sent, "SIP/2.0 180");
    assert_eq!(header(ringing, "Require"), Some("100rel"), "{ringing}");
    assert!(header(ringing, "RSeq").is_some(), "{ringing}");
    // One that does not is refused with 421.
    let sent = answer_to(required.clone(), "192.0.2.5:5060", "r2", "", 47_610);
    let refused = starting(&sent, "SIP/2.0 421");
    assert_eq!(header(refused, "Require"), Some("100rel"), "{refused}");
    // A caller from elsewhere is not the trunk's: no 100rel asked, a plain 180.
    let sent = answer_to(
        required,
        "198.51.100.5:5060",
        "r3",
        "Supported: 100rel\r\n",
        47_620,
    );
    assert_eq!(header(starting(&sent, "SIP/2.0 180"), "Require"), None);

    // A trunk with 100rel disabled refuses `Require: 100rel` with 420.
    let disabled = with_sip(true, Rel100::Disabled);
    let sent = answer_to(
        disabled.clone(),
        "192.0.2.5:5060",
        "d1",
        "Require: 100rel\r\n",
        47_630,
    );
    let refused = starting(&sent, "SIP/2.0 420");
    assert_eq!(header(refused, "Unsupported"), Some("100rel"), "{refused}");
    // The default (supported) answers the same INVITE with a reliable 180.
    let sent = answer_to(
        carrier(),
        "192.0.2.5:5060",
        "d2",
        "Require: 100rel\r\n",
        47_640,
    );
    assert_eq!(
        header(starting(&sent, "SIP/2.0 180"), "Require"),
        Some("100rel")
    );
}

#[tokio::test]
async fn inbound_session_timers_follow_the_trunk() {
    let ask = "Supported: timer\r\nSession-Expires: 1800;refresher=uac\r\n";
    let off = with_sip(false, Rel100::Supported);
    let sent = answer_to(off, "192.0.2.5:5060", "s1", ask, 47_700);
    let ok = starting(&sent, "SIP/2.0 200");
    assert_eq!(header(ok, "Session-Expires"), None, "{ok}");
    assert_eq!(header(ok, "Supported"), Some("100rel"), "{ok}");
    // With timers on, the 200 grants the interval.
    let sent = answer_to(carrier(), "192.0.2.5:5060", "s2", ask, 47_710);
    let ok = starting(&sent, "SIP/2.0 200");
    assert_eq!(
        header(ok, "Session-Expires"),
        Some("1800;refresher=uac"),
        "{ok}"
    );
}

/// An answer from the far end, with or without telephone-event.
fn far_answer(telephone_event: bool) -> String {
    let mut sdp =
        String::from("v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n");
    if telephone_event {
        sdp.push_str("m=audio 40000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n");
    } else {
        sdp.push_str("m=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n");
    }
    sdp
}

/// An outbound call through `trunk`, answered (with telephone-event or not); then a
/// `SendDtmf` of "1#" with `method`: the reply and what voxline sent.
fn dtmf_on_answered(
    trunk: TrunkPolicy,
    telephone_event: bool,
    method: Option<DtmfSendMethod>,
    rtp_base: u16,
) -> (Result<(), DtmfError>, Vec<String>) {
    let (mut stack, mut calls, call, invite) = dial_through(trunk, rtp_base);
    let now = Instant::now();
    let ok = response(&invite, "200 OK", "", Some(&far_answer(telephone_event)));
    stack.handle_message(now, peer("192.0.2.7:5060"), ok.as_bytes());
    let sent = drain(&mut stack, &mut calls, now);
    assert!(sent.iter().any(|m| m.starts_with("ACK ")), "{sent:?}");
    let (reply, mut rx) = oneshot::channel();
    calls.handle_command(
        now,
        &mut stack,
        CallCommand::SendDtmf {
            call,
            digits: vec![Digit::D1, Digit::Hash],
            method,
            reply,
        },
    );
    let sent = drain(&mut stack, &mut calls, now);
    (rx.try_recv().expect("a reply at once"), sent)
}

#[tokio::test]
async fn dtmf_goes_the_trunks_way() {
    let info = TrunkPolicy {
        dtmf: DtmfSendMethod::Info,
        ..carrier()
    };
    // Not RFC 4733: no telephone-event in the offer.
    let (_, _, _, invite) = dial_through(info.clone(), 47_800);
    assert!(!invite.contains("telephone-event"), "{invite}");
    let (_, _, _, invite) = dial_through(carrier(), 47_810);
    assert!(invite.contains("telephone-event"), "{invite}");

    // No method asked for: the trunk's INFO, one request per key.
    let (reply, sent) = dtmf_on_answered(info, false, None, 47_820);
    assert_eq!(reply, Ok(()));
    let infos: Vec<&String> = sent.iter().filter(|m| m.starts_with("INFO ")).collect();
    assert_eq!(infos.len(), 2, "{sent:?}");
    assert!(
        infos[0].contains("Signal=1") && infos[1].contains("Signal=#"),
        "{infos:?}"
    );

    // RFC 4733 asked for explicitly, but the peer took no telephone-event: refused.
    let (reply, sent) = dtmf_on_answered(carrier(), false, Some(DtmfSendMethod::Rfc4733), 47_830);
    assert_eq!(reply, Err(DtmfError::NoTelephoneEvent));
    assert!(!sent.iter().any(|m| m.starts_with("INFO ")), "{sent:?}");
    // The default RFC 4733 without telephone-event goes to the media as tones instead (this
    // rig runs no media task, so the media path answers that it has none; the tones
    // themselves are checked end to end in tests/realtime/e2e_send_dtmf.rs).
    let (reply, sent) = dtmf_on_answered(carrier(), false, None, 47_840);
    assert_eq!(reply, Err(DtmfError::NoMedia));
    assert!(!sent.iter().any(|m| m.starts_with("INFO ")), "{sent:?}");
}

fn srtp_trunk(mode: SrtpMode) -> TrunkPolicy {
    TrunkPolicy {
        srtp: mode,
        ..carrier()
    }
}

#[tokio::test]
async fn srtp_follows_the_trunk() {
    // Mandatory: a plain offer from the trunk is refused with 488 and the reason.
    let sent = answer_to(
        srtp_trunk(SrtpMode::Mandatory),
        "192.0.2.5:5060",
        "m1",
        "",
        47_900,
    );
    let refused = starting(&sent, "SIP/2.0 488");
    assert!(refused.starts_with("SIP/2.0 488 Not Acceptable Here - SRTP required"));
    // The same offer from elsewhere follows `[media] srtp` (off): answered plain.
    let sent = answer_to(
        srtp_trunk(SrtpMode::Mandatory),
        "198.51.100.5:5060",
        "m2",
        "",
        47_910,
    );
    let ok = starting(&sent, "SIP/2.0 200");
    assert!(!ok.contains("a=crypto"), "{ok}");
    // Optional: plain is fine.
    let sent = answer_to(
        srtp_trunk(SrtpMode::Optional),
        "192.0.2.5:5060",
        "o1",
        "",
        47_920,
    );
    starting(&sent, "SIP/2.0 200");

    // Outbound: mandatory offers RTP/SAVP with keys, optional RTP/AVP with keys.
    let (_, _, _, invite) = dial_through(srtp_trunk(SrtpMode::Mandatory), 47_930);
    assert!(invite.contains(" RTP/SAVP 9 8 101\r\n"), "{invite}");
    assert!(
        invite.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
        "{invite}"
    );
    let (_, _, _, optional) = dial_through(srtp_trunk(SrtpMode::Optional), 47_940);
    assert!(optional.contains(" RTP/AVP 9 8 101\r\n"), "{optional}");
    assert!(optional.contains("a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:"));
    // Each call gets its own key.
    let key = |m: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"))
            .map(str::to_owned)
    };
    assert_ne!(key(&invite), key(&optional));
}

#[tokio::test]
async fn a_plain_answer_to_a_mandatory_srtp_offer_ends_the_call() {
    let (mut stack, mut calls, _, invite) = dial_through(srtp_trunk(SrtpMode::Mandatory), 47_950);
    let now = Instant::now();
    let ok = response(&invite, "200 OK", "", Some(&far_answer(false)));
    stack.handle_message(now, peer("192.0.2.7:5060"), ok.as_bytes());
    let sent = drain(&mut stack, &mut calls, now);
    assert!(sent.iter().any(|m| m.starts_with("ACK ")), "{sent:?}");
    assert!(sent.iter().any(|m| m.starts_with("BYE ")), "{sent:?}");

    // Optional: the same answer is a plain call, not ended.
    let (mut stack, mut calls, _, invite) = dial_through(srtp_trunk(SrtpMode::Optional), 47_960);
    let ok = response(&invite, "200 OK", "", Some(&far_answer(false)));
    stack.handle_message(now, peer("192.0.2.7:5060"), ok.as_bytes());
    let sent = drain(&mut stack, &mut calls, now);
    assert!(sent.iter().any(|m| m.starts_with("ACK ")), "{sent:?}");
    assert!(!sent.iter().any(|m| m.starts_with("BYE ")), "{sent:?}");
}
