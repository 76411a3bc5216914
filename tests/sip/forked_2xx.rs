//! voxline's INVITE forks and two callees answer: the first 2xx makes the dialog; the second,
//! from another To tag, is ACKed and immediately ended with BYE (RFC 3261 §13.2.2.4). The call
//! layer hears `Answered` once.

use crate::harness;

use harness::*;
use voxline::sip::SipEvent;

#[test]
fn second_fork_is_acked_and_byed() {
    let mut d = Driver::new(config());
    let phone = Phone::new();
    let call = d.cmd(|s, now| s.invite(now, outgoing(phone.peer)));
    let invite = d.take_request("INVITE");
    let first = phone
        .respond(&invite, 200, "OK", Some("fork1"))
        .sdp(&sdp("sendrecv"))
        .build();
    d.deliver(phone.peer, &first);
    let ack1 = d.take_request("ACK");
    assert_eq!(ack1.to_tag().as_deref(), Some("fork1"));
    assert!(matches!(d.take_event(), SipEvent::Answered { call: c, .. } if c == call));

    let second = phone
        .respond(&invite, 200, "OK", Some("fork2"))
        .sdp(&sdp("sendrecv"))
        .build();
    d.deliver(phone.peer, &second);
    let sent = d.take_sent();
    let methods: Vec<&str> = sent.iter().filter_map(|s| s.msg.method()).collect();
    assert_eq!(methods, vec!["ACK", "BYE"], "{sent:?}");
    for s in &sent {
        assert_eq!(s.msg.to_tag().as_deref(), Some("fork2"));
        assert_eq!(s.msg.call_id(), invite.call_id());
    }
    assert_eq!(sent[1].msg.cseq().0, invite.cseq().0 + 1);
    // The kept dialog is untouched: no further events for the call layer.
    assert!(d.take_events().is_empty());
}
