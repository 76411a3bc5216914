//! Blind transfer in the call layer (RFC 3515, RFC 5589 §6), sans-IO: `CallCommand::Transfer`
//! sends REFER with the target completed from the dialog; the 202 and a `100 Trying` sipfrag
//! leave it pending; the final NOTIFY settles it (2xx: voxline sends BYE; otherwise the call
//! stays up); a REFER answered 603 fails at once; a second transfer while one is pending, a
//! transfer of a ringing or unknown call and a bad target are refused; a call that ends during
//! the transfer settles it with `CallEnded`. The stack and the call manager run on a virtual
//! clock.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::sync::oneshot;
use voxline::call::{
    AgentSpec, CallCommand, CallManager, CallTable, MediaPolicy, Routes, TransferError,
    TransferOutcome,
};
use voxline::runtime::CallHandler;
use voxline::runtime::rtp::RtpPorts;
use voxline::sip::{CallHandle, OutgoingCall, Output, Peer, SipStack, StackConfig, Transport};

type Reply = oneshot::Receiver<Result<TransferOutcome, TransferError>>;

const FAR: u16 = 5072;

struct Rig {
    stack: SipStack,
    calls: CallManager,
    table: CallTable,
    now: Instant,
    /// The INVITE voxline sent (for dialog identifiers).
    invite: String,
    call: CallHandle,
    far_cseq: u32,
}

impl Rig {
    /// An outbound call to `sip:bob@pbx.example.com`, answered by the far end (not ACKed yet
    /// when `answer` is false).
    fn new(rtp_base: u16, answer: bool) -> Rig {
        let now = Instant::now();
        let table = CallTable::default();
        let mut rig = Rig {
            stack: SipStack::new(StackConfig::default(), 11, now),
            calls: CallManager::new(
                Routes::default(),
                MediaPolicy::default(),
                RtpPorts::new([127, 0, 0, 1].into(), rtp_base, rtp_base + 10),
                table.clone(),
            ),
            table,
            now,
            invite: String::new(),
            call: CallHandle::new(0),
            far_cseq: 1,
        };
        rig.call = rig
            .calls
            .dial(now, &mut rig.stack, spec(), AgentSpec::hold(), None, vec![])
            .expect("RTP port");
        let sent = rig.drain();
        rig.invite = sent
            .into_iter()
            .find(|m| m.starts_with("INVITE "))
            .expect("INVITE sent");
        if answer {
            let ok = response(&rig.invite, 200, "OK", Some(ANSWER));
            rig.feed(&ok);
            let sent = rig.drain();
            assert!(sent.iter().any(|m| m.starts_with("ACK ")), "{sent:?}");
        }
        rig
    }

    fn drain(&mut self) -> Vec<String> {
        let mut sent = Vec::new();
        loop {
            match self.stack.poll_output() {
                Output::Transmit(t) => sent.push(String::from_utf8_lossy(&t.payload).into_owned()),
                Output::Event(e) => self.calls.handle_event(self.now, &mut self.stack, e),
                Output::Timeout(_) => return sent,
            }
        }
    }

    fn feed(&mut self, msg: &str) {
        self.stack.handle_message(self.now, far(), msg.as_bytes());
    }

    /// Sends a transfer command; returns the reply receiver and what voxline sent.
    fn transfer(&mut self, call: CallHandle, target: &str) -> (Reply, Vec<String>) {
        let (reply, rx) = oneshot::channel();
        self.calls.handle_command(
            self.now,
            &mut self.stack,
            CallCommand::Transfer {
                call,
                target: target.into(),
                reply,
            },
        );
        (rx, self.drain())
    }

    /// The far end's NOTIFY for the REFER subscription, with a sipfrag.
    fn notify(&mut self, sipfrag: &str, state: &str) -> Vec<String> {
        self.far_cseq += 1;
        let contact = uri_of(header(&self.invite, "Contact"));
        let body = format!("{sipfrag}\r\n");
        let msg = format!(
            "NOTIFY {contact} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{FAR};branch=z9hG4bKnotify{n}\r\n\
             From: {to};tag=far\r\n\
             To: {from}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {n} NOTIFY\r\n\
             Contact: <sip:bob@127.0.0.1:{FAR}>\r\n\
             Event: refer\r\n\
             Subscription-State: {state}\r\n\
             Max-Forwards: 70\r\n\
             Content-Type: message/sipfrag;version=2.0\r\n\
             Content-Length: {len}\r\n\r\n{body}",
            n = self.far_cseq,
            to = header(&self.invite, "To"),
            from = header(&self.invite, "From"),
            cid = header(&self.invite, "Call-ID"),
            len = body.len(),
        );
        self.feed(&msg);
        self.drain()
    }

    fn info_transfer(&self) -> Option<String> {
        self.table.get(self.call.get()).and_then(|i| i.transfer)
    }

    fn state(&self) -> String {
        self.table
            .get(self.call.get())
            .map(|i| i.state.to_string())
            .unwrap_or_default()
    }
}

fn far() -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: SocketAddr::from(([127, 0, 0, 1], FAR)),
    }
}

fn spec() -> OutgoingCall {
    OutgoingCall {
        request_uri: "sip:bob@pbx.example.com".into(),
        from_uri: "sip:voxline@127.0.0.1".into(),
        from_display: None,
        to_uri: "sip:bob@pbx.example.com".into(),
        next_hop: far(),
        routes: Vec::new(),
        body: None,
        credentials: None,
        local_ip: Some([127, 0, 0, 1].into()),
        extra_headers: Vec::new(),
        options: None,
    }
}

const ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .unwrap_or_else(|| panic!("no {name} in {msg}"))
}

fn uri_of(v: &str) -> &str {
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) => &v[a + 1..b],
        _ => v,
    }
}

/// A response to `req` from the far end (To tag `far`), with an SDP body if given.
fn response(req: &str, code: u16, reason: &str, sdp: Option<&str>) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for l in req.lines().filter(|l| l.starts_with("Via: ")) {
        out.push_str(l);
        out.push_str("\r\n");
    }
    let to = header(req, "To");
    let to = if to.contains(";tag=") {
        to.to_string()
    } else {
        format!("{to};tag=far")
    };
    out.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:bob@127.0.0.1:{FAR}>\r\n",
        header(req, "From"),
        header(req, "Call-ID"),
        header(req, "CSeq"),
    ));
    match sdp {
        Some(b) => out.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => out.push_str("Content-Length: 0\r\n\r\n"),
    }
    out
}

fn only<'a>(sent: &'a [String], method: &str) -> &'a str {
    let found: Vec<&String> = sent.iter().filter(|m| m.starts_with(method)).collect();
    assert_eq!(found.len(), 1, "expected one {method}: {sent:?}");
    found[0]
}

#[test]
fn a_2xx_notify_completes_the_transfer_and_voxline_hangs_up() {
    let mut rig = Rig::new(31100, true);
    let (mut rx, sent) = rig.transfer(rig.call, "200");
    let refer = only(&sent, "REFER ").to_string();
    // A bare number is completed with the host of the remote URI (To of an outbound call).
    assert_eq!(header(&refer, "Refer-To"), "<sip:200@pbx.example.com>");
    assert!(header(&refer, "Referred-By").contains("sip:voxline@127.0.0.1"));
    assert_eq!(header(&refer, "Call-ID"), header(&rig.invite, "Call-ID"));
    assert_eq!(
        rig.info_transfer().as_deref(),
        Some("sip:200@pbx.example.com -> pending")
    );

    // A second transfer while this one is pending is refused, without a REFER.
    let (mut rx2, sent2) = rig.transfer(rig.call, "sip:300@pbx.example.com");
    assert_eq!(rx2.try_recv(), Ok(Err(TransferError::AlreadyTransferring)));
    assert!(sent2.is_empty(), "{sent2:?}");

    rig.feed(&response(&refer, 202, "Accepted", None));
    assert!(rig.drain().is_empty());
    assert!(rx.try_recv().is_err(), "202 is not the outcome");

    let sent = rig.notify("SIP/2.0 100 Trying", "active;expires=60");
    assert!(only(&sent, "SIP/2.0 200").contains("NOTIFY"), "{sent:?}");
    assert!(!sent.iter().any(|m| m.starts_with("BYE ")), "{sent:?}");
    assert!(rx.try_recv().is_err(), "100 Trying is not the outcome");

    let sent = rig.notify("SIP/2.0 200 OK", "terminated;reason=noresource");
    assert!(only(&sent, "SIP/2.0 200").contains("NOTIFY"), "{sent:?}");
    let bye = only(&sent, "BYE ");
    assert_eq!(header(bye, "Call-ID"), header(&rig.invite, "Call-ID"));
    assert_eq!(rx.try_recv(), Ok(Ok(TransferOutcome { status: 200 })));
    assert_eq!(
        rig.info_transfer().as_deref(),
        Some("sip:200@pbx.example.com -> 200")
    );
    assert_eq!(rig.state(), "ended");
}

#[test]
fn a_failed_notify_keeps_the_call_up() {
    let mut rig = Rig::new(31120, true);
    let (mut rx, sent) = rig.transfer(rig.call, "sip:bob2@example.org;user=phone");
    let refer = only(&sent, "REFER ").to_string();
    assert_eq!(
        header(&refer, "Refer-To"),
        "<sip:bob2@example.org;user=phone>"
    );
    rig.feed(&response(&refer, 202, "Accepted", None));
    rig.drain();
    let sent = rig.notify("SIP/2.0 486 Busy Here", "terminated;reason=noresource");
    assert!(!sent.iter().any(|m| m.starts_with("BYE ")), "{sent:?}");
    assert_eq!(
        rx.try_recv(),
        Ok(Err(TransferError::Rejected { status: 486 }))
    );
    assert_eq!(rig.state(), "answered");
    assert_eq!(
        rig.info_transfer().as_deref(),
        Some("sip:bob2@example.org;user=phone -> 486")
    );

    // The call is still usable: a new transfer may go.
    let (_rx, sent) = rig.transfer(rig.call, "tel:+14155550100");
    assert_eq!(
        header(only(&sent, "REFER "), "Refer-To"),
        "<tel:+14155550100>"
    );
}

#[test]
fn a_refer_answered_603_fails_at_once() {
    let mut rig = Rig::new(31140, true);
    let (mut rx, sent) = rig.transfer(rig.call, "sip:carol@example.com");
    let refer = only(&sent, "REFER ").to_string();
    rig.feed(&response(&refer, 603, "Decline", None));
    let sent = rig.drain();
    assert!(!sent.iter().any(|m| m.starts_with("BYE ")), "{sent:?}");
    assert_eq!(
        rx.try_recv(),
        Ok(Err(TransferError::Rejected { status: 603 }))
    );
    assert_eq!(rig.state(), "answered");
}

#[test]
fn the_call_ending_settles_a_pending_transfer() {
    let mut rig = Rig::new(31160, true);
    let (mut rx, sent) = rig.transfer(rig.call, "sip:carol@example.com");
    let refer = only(&sent, "REFER ").to_string();
    rig.feed(&response(&refer, 202, "Accepted", None));
    rig.drain();
    // The far end hangs up before any final NOTIFY.
    rig.far_cseq += 1;
    let bye = format!(
        "BYE {} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{FAR};branch=z9hG4bKbye1\r\nFrom: {};tag=far\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        uri_of(header(&rig.invite, "Contact")),
        header(&rig.invite, "To"),
        header(&rig.invite, "From"),
        header(&rig.invite, "Call-ID"),
        rig.far_cseq,
    );
    rig.feed(&bye);
    rig.drain();
    assert_eq!(rx.try_recv(), Ok(Err(TransferError::CallEnded)));
    assert_eq!(
        rig.info_transfer().as_deref(),
        Some("sip:carol@example.com -> call ended")
    );
}

#[test]
fn refusals_come_at_once_without_a_refer() {
    // Not answered yet: the INVITE is out, no 200.
    let mut rig = Rig::new(31180, false);
    let (mut rx, sent) = rig.transfer(rig.call, "sip:carol@example.com");
    assert_eq!(rx.try_recv(), Ok(Err(TransferError::NotAnswered)));
    assert!(!sent.iter().any(|m| m.starts_with("REFER ")), "{sent:?}");

    let mut rig = Rig::new(31200, true);
    let (mut rx, sent) = rig.transfer(CallHandle::new(9999), "sip:carol@example.com");
    assert_eq!(rx.try_recv(), Ok(Err(TransferError::NoSuchCall)));
    assert!(sent.is_empty());
    for bad in ["http://example.com", "sip:bob@h\r\nX: y", "tel:12"] {
        let (mut rx, sent) = rig.transfer(rig.call, bad);
        match rx.try_recv() {
            Ok(Err(TransferError::InvalidTarget(_))) => {}
            other => panic!("{bad:?}: {other:?}"),
        }
        assert!(sent.is_empty(), "{sent:?}");
    }
    assert_eq!(rig.info_transfer(), None);
}
