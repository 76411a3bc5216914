//! RFC 3263 §4.3 failover in the call layer: an outbound call whose first target answers 503
//! (or times out) is placed again to the next resolved target; the call that finally answers
//! is reported once. Sans-IO: the stack and the call manager run on a virtual clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use voxline::call::{AgentSpec, CallManager, CallTable, MediaPolicy, Routes};
use voxline::runtime::rtp::RtpPorts;
use voxline::sip::{OutgoingCall, Output, Peer, SipStack, StackConfig, Transport};

struct Rig {
    stack: SipStack,
    calls: CallManager,
    table: CallTable,
    now: Instant,
}

impl Rig {
    fn new() -> Self {
        let now = Instant::now();
        let table = CallTable::default();
        Rig {
            stack: SipStack::new(StackConfig::default(), 7, now),
            calls: CallManager::new(
                Routes::default(),
                MediaPolicy::default(),
                RtpPorts::new([127, 0, 0, 1].into(), 30000, 30010),
                table.clone(),
            ),
            table,
            now,
        }
    }

    /// Drains the stack, feeding events to the call manager; returns what was sent.
    fn drain(&mut self) -> Vec<(Peer, String)> {
        let mut sent = Vec::new();
        loop {
            match self.stack.poll_output() {
                Output::Transmit(t) => {
                    sent.push((t.peer, String::from_utf8_lossy(&t.payload).into_owned()))
                }
                Output::Event(e) => self.calls.handle_event(self.now, &mut self.stack, e),
                Output::Timeout(_) => return sent,
            }
        }
    }

    fn advance(&mut self, d: Duration) -> Vec<(Peer, String)> {
        let end = self.now + d;
        let mut sent = Vec::new();
        loop {
            let next = match self.stack.poll_output() {
                Output::Timeout(t) => t,
                _ => self.now,
            };
            if next > end {
                self.now = end;
                return sent;
            }
            self.now = next.max(self.now);
            self.stack.handle_timeout(self.now);
            sent.extend(self.drain());
        }
    }
}

fn peer(port: u16) -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .unwrap_or_else(|| panic!("no {name} in {msg}"))
}

fn response(req: &str, code: u16, reason: &str, to_tag: &str, body: &str) -> Vec<u8> {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for l in req.lines().filter(|l| l.starts_with("Via: ")) {
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str(&format!("From: {}\r\n", header(req, "From")));
    out.push_str(&format!("To: {};tag={to_tag}\r\n", header(req, "To")));
    out.push_str(&format!(
        "Call-ID: {}\r\nCSeq: {}\r\n",
        header(req, "Call-ID"),
        header(req, "CSeq")
    ));
    out.push_str("Contact: <sip:callee@127.0.0.1:5072>\r\n");
    if body.is_empty() {
        out.push_str("Content-Length: 0\r\n\r\n");
    } else {
        out.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    out.into_bytes()
}

const ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

fn spec(next_hop: Peer) -> OutgoingCall {
    OutgoingCall {
        request_uri: "sip:bob@example.com".into(),
        from_uri: "sip:voxline@127.0.0.1".into(),
        from_display: None,
        to_uri: "sip:bob@example.com".into(),
        next_hop,
        routes: Vec::new(),
        body: None,
        credentials: None,
        local_ip: Some([127, 0, 0, 1].into()),
        extra_headers: Vec::new(),
        options: None,
    }
}

#[test]
fn a_503_fails_over_to_the_next_target() {
    let mut rig = Rig::new();
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let now = rig.now;
    let first = rig
        .calls
        .dial(
            now,
            &mut rig.stack,
            spec(peer(5071)),
            AgentSpec::hold(),
            Some(tx),
            vec![peer(5072)],
        )
        .expect("port");
    let sent = rig.drain();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, peer(5071));
    let invite1 = sent[0].1.clone();
    assert!(
        invite1.starts_with("INVITE sip:bob@example.com SIP/2.0"),
        "{invite1}"
    );
    assert!(
        invite1.contains("m=audio"),
        "the offer travels in the INVITE"
    );

    rig.stack.handle_message(
        now,
        peer(5071),
        &response(&invite1, 503, "Service Unavailable", "a", ""),
    );
    let sent = rig.drain();
    let to_first: Vec<&str> = sent
        .iter()
        .filter(|(p, _)| *p == peer(5071))
        .map(|(_, m)| m.as_str())
        .collect();
    let to_second: Vec<&str> = sent
        .iter()
        .filter(|(p, _)| *p == peer(5072))
        .map(|(_, m)| m.as_str())
        .collect();
    assert_eq!(to_first.len(), 1, "{sent:?}");
    assert!(to_first[0].starts_with("ACK "), "the 503 is ACKed");
    assert_eq!(
        to_second.len(),
        1,
        "a new INVITE goes to the next target: {sent:?}"
    );
    let invite2 = to_second[0].to_string();
    assert!(invite2.starts_with("INVITE "));
    assert_ne!(
        header(&invite2, "Call-ID"),
        header(&invite1, "Call-ID"),
        "a new call, not a retransmission"
    );
    assert!(
        rx.try_recv().is_err(),
        "the caller is not told anything yet"
    );

    rig.stack
        .handle_message(now, peer(5072), &response(&invite2, 200, "OK", "b", ANSWER));
    let sent = rig.drain();
    assert!(
        sent.iter()
            .any(|(p, m)| *p == peer(5072) && m.starts_with("ACK ")),
        "{sent:?}"
    );
    let table = rig.table.all();
    let answered: Vec<_> = table.iter().filter(|c| c.state == "answered").collect();
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0].codec.as_deref(), Some("PCMU"));
    assert_ne!(answered[0].id, first.get());
}

#[test]
fn a_timeout_fails_over_and_the_last_failure_is_reported() {
    let mut rig = Rig::new();
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let now = rig.now;
    rig.calls
        .dial(
            now,
            &mut rig.stack,
            spec(peer(5081)),
            AgentSpec::hold(),
            Some(tx),
            vec![peer(5082)],
        )
        .expect("port");
    let first = rig.drain();
    assert_eq!(first[0].0, peer(5081));
    // Nobody answers: Timer B (64·T1 = 32 s) ends the first attempt; the second one is tried.
    let sent = rig.advance(Duration::from_secs(33));
    assert!(
        sent.iter()
            .any(|(p, m)| *p == peer(5082) && m.starts_with("INVITE ")),
        "{sent:?}"
    );
    assert!(rx.try_recv().is_err());
    // The second target times out as well: now the caller hears about it, with 408.
    rig.advance(Duration::from_secs(33));
    let result = rx.try_recv().expect("reported");
    assert!(!result.answered);
    assert_eq!(result.reason, voxline::sip::EndReason::Failed(408));
}
