//! CANCEL (RFC 3261 §9) and its races, both ways: the caller cancels before voxline answers
//! (200 to CANCEL, 487 to INVITE, `Ended { Cancelled }`), after it answered (200 to CANCEL and
//! nothing else), and voxline cancels its own INVITE — including the race where the callee's
//! 200 crosses the CANCEL (ACK, then BYE) and the case where no final response ever comes.

use crate::harness;

use harness::*;
use voxline::sip::{EndReason, SipEvent, StackError};

#[test]
fn cancel_before_answer_gets_200_and_the_invite_gets_487() {
    let mut d = Driver::new(config());
    let c = inbound_invite(&mut d, &[]);
    d.cmd(|s, now| s.respond(now, c.call, 180, None))
        .expect("ring");
    let ringing = d.take_response(180);
    d.advance(ms(300));
    d.deliver(c.phone.peer, c.dialog.cancel());
    let sent = d.take_sent();
    assert_eq!(sent.len(), 2, "{sent:#?}");
    let (ok, terminated) = (&sent[0].msg, &sent[1].msg);
    assert_eq!(ok.start_line(), "SIP/2.0 200 OK");
    assert_eq!(ok.h("CSeq"), "1 CANCEL");
    assert_eq!(terminated.start_line(), "SIP/2.0 487 Request Terminated");
    assert_eq!(terminated.h("CSeq"), "1 INVITE");
    assert_eq!(
        terminated.to_tag(),
        ringing.to_tag(),
        "the 487 is in the early dialog"
    );
    assert_eq!(ok.to_tag(), ringing.to_tag());
    assert_eq!(
        d.take_event(),
        SipEvent::Ended {
            call: c.call,
            reason: EndReason::Cancelled
        }
    );
    assert_eq!(d.stack.active_calls(), 0);
    // Too late to answer.
    let r = d.cmd(|s, now| s.respond(now, c.call, 200, Some(sdp("sendrecv"))));
    assert!(
        matches!(r, Err(StackError::BadState(_) | StackError::NoSuchCall(_))),
        "{r:?}"
    );
    assert!(d.take_sent().is_empty());
    // The 487 is retransmitted (Timer G) until its ACK.
    d.advance(ms(500));
    assert_eq!(d.take_one(), *terminated);
    d.deliver(c.phone.peer, c.dialog.ack_non_2xx(terminated));
    d.advance(secs(40));
    assert!(d.take_sent().is_empty(), "{:?}", d.pending_lines());
    assert!(d.take_events().is_empty());
    assert_eq!(d.stack.transaction_count(), (0, 0));
}

#[test]
fn retransmitted_cancel_gets_the_same_200() {
    let mut d = Driver::new(config());
    let c = inbound_invite(&mut d, &[]);
    d.deliver(c.phone.peer, c.dialog.cancel());
    let ok = d.take_sent().remove(0).msg;
    d.take_events();
    d.advance(ms(500)); // the 487 retransmission
    d.take_sent();
    d.deliver(c.phone.peer, c.dialog.cancel());
    assert_eq!(d.take_one(), ok);
    assert!(d.take_events().is_empty());
}

#[test]
fn cancel_after_200_leaves_the_call_up() {
    let mut d = Driver::new(config());
    let mut c = inbound_invite(&mut d, &[]);
    d.cmd(|s, now| s.respond(now, c.call, 200, Some(sdp("sendrecv"))))
        .expect("answer");
    let answer = d.take_response(200);
    c.dialog.learn(&answer);
    d.advance(ms(100));
    d.deliver(c.phone.peer, c.dialog.cancel());
    let ok = d.take_one();
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.h("CSeq"), "1 CANCEL");
    assert!(
        d.take_events().is_empty(),
        "no Ended: the call was answered"
    );
    d.deliver(c.phone.peer, c.dialog.ack_2xx(&mut c.phone, 1).build());
    assert!(matches!(d.take_event(), SipEvent::Acked { .. }));
    d.advance(secs(40));
    assert!(
        d.times_of(|m| m.status() == Some(487)).is_empty(),
        "never a 487"
    );
    assert_eq!(d.stack.active_calls(), 1);
}

#[test]
fn cancel_matching_no_transaction_gets_481() {
    let mut d = Driver::new(config());
    let mut phone = Phone::new();
    let mut dialog = phone.call("sip:1000@192.0.2.1");
    let invite = dialog.invite(&mut phone).build();
    dialog.sent_invite(&invite); // never delivered
    d.deliver(phone.peer, dialog.cancel());
    assert_eq!(d.take_one().status(), Some(481));
    assert!(d.take_events().is_empty());
}

/// voxline calls the phone, which rings; returns the INVITE.
fn ringing_outbound(d: &mut Driver, phone: &Phone) -> (voxline::sip::CallHandle, Wire) {
    let call = d.cmd(|s, now| s.invite(now, outgoing(phone.peer)));
    let invite = d.take_request("INVITE");
    d.deliver(
        phone.peer,
        phone.respond(&invite, 180, "Ringing", Some("bob1")).build(),
    );
    assert_eq!(
        d.take_event(),
        SipEvent::Progress {
            call,
            status: 180,
            body: None
        }
    );
    (call, invite)
}

#[test]
fn we_cancel_our_invite_and_ack_the_487() {
    let mut d = Driver::new(config());
    let phone = Phone::new();
    let (call, invite) = ringing_outbound(&mut d, &phone);
    d.advance(secs(5));
    d.cmd(|s, now| s.hangup(now, call)).expect("hangup");
    let cancel = d.take_request("CANCEL");
    // §9.1: same Request-URI, Call-ID, From, To (no tag), CSeq number, top Via.
    assert_eq!(cancel.uri(), invite.uri());
    assert_eq!(cancel.call_id(), invite.call_id());
    assert_eq!(cancel.h("From"), invite.h("From"));
    assert_eq!(cancel.h("To"), invite.h("To"));
    assert_eq!(cancel.h("Via"), invite.h("Via"));
    assert_eq!(cancel.cseq(), (1, "CANCEL".to_string()));
    assert!(
        d.take_events().is_empty(),
        "the call ends when the INVITE does"
    );
    d.deliver(
        phone.peer,
        Resp::to(&cancel, 200, "OK", Some("bob1")).build(),
    );
    let terminated = phone
        .respond(&invite, 487, "Request Terminated", Some("bob1"))
        .build();
    d.deliver(phone.peer, &terminated);
    let ack = d.take_request("ACK");
    assert_eq!(
        ack.branch(),
        invite.branch(),
        "ACK for a non-2xx: the INVITE's branch"
    );
    assert_eq!(ack.cseq(), (1, "ACK".to_string()));
    assert_eq!(ack.to_tag().as_deref(), Some("bob1"));
    assert_eq!(
        d.take_event(),
        SipEvent::Ended {
            call,
            reason: EndReason::Cancelled
        }
    );
    // A retransmitted 487 gets the ACK again, and nothing else.
    d.deliver(phone.peer, &terminated);
    assert_eq!(d.take_one(), ack);
    assert!(d.take_events().is_empty());
    d.advance(secs(40));
    assert_eq!(d.stack.transaction_count(), (0, 0));
    assert_eq!(d.stack.active_calls(), 0);
}

#[test]
fn hangup_before_any_provisional_defers_the_cancel() {
    let mut d = Driver::new(config());
    let phone = Phone::new();
    let call = d.cmd(|s, now| s.invite(now, outgoing(phone.peer)));
    let invite = d.take_request("INVITE");
    d.cmd(|s, now| s.hangup(now, call)).expect("hangup");
    assert!(
        d.take_sent().is_empty(),
        "§9.1: no CANCEL before a provisional response"
    );
    d.advance(ms(200));
    d.deliver(
        phone.peer,
        phone.respond(&invite, 100, "Trying", None).build(),
    );
    let cancel = d.take_request("CANCEL");
    assert_eq!(cancel.branch(), invite.branch());
    assert!(
        d.take_events().is_empty(),
        "no Progress for a call being cancelled"
    );
}

#[test]
fn when_the_200_crosses_our_cancel_we_ack_then_bye() {
    let mut d = Driver::new(config());
    let phone = Phone::new();
    let (call, invite) = ringing_outbound(&mut d, &phone);
    d.cmd(|s, now| s.hangup(now, call)).expect("hangup");
    let cancel = d.take_request("CANCEL");
    // The callee answered before it saw the CANCEL.
    let ok = phone
        .respond(&invite, 200, "OK", Some("bob1"))
        .sdp(&sdp("sendrecv"))
        .build();
    d.deliver(phone.peer, &ok);
    let sent = d.take_sent();
    let methods: Vec<_> = sent
        .iter()
        .map(|s| s.msg.method().unwrap_or("?").to_string())
        .collect();
    assert_eq!(
        methods,
        vec!["ACK", "BYE"],
        "§9.1 / §15: ACK the 2xx, then BYE"
    );
    let bye = &sent[1].msg;
    assert_eq!(bye.to_tag().as_deref(), Some("bob1"));
    assert_eq!(bye.cseq(), (2, "BYE".to_string()));
    assert_eq!(bye.uri(), phone.uri());
    assert_eq!(
        d.take_event(),
        SipEvent::Ended {
            call,
            reason: EndReason::Cancelled
        }
    );
    // Its CANCEL gets a 200 too (too late to matter), and the BYE gets its 200.
    d.deliver(
        phone.peer,
        Resp::to(&cancel, 200, "OK", Some("bob1")).build(),
    );
    d.deliver(phone.peer, Resp::to(bye, 200, "OK", None).build());
    assert!(d.take_sent().is_empty());
    assert!(d.take_events().is_empty(), "never Answered");
    d.advance(secs(40));
    assert!(d.take_sent().is_empty());
    assert_eq!(d.stack.transaction_count(), (0, 0));
}

#[test]
fn cancel_without_any_final_response_gives_up_after_64_t1() {
    let mut d = Driver::new(config());
    let phone = Phone::new();
    let (call, _) = ringing_outbound(&mut d, &phone);
    d.advance(secs(10));
    d.cmd(|s, now| s.hangup(now, call)).expect("hangup");
    let cancel = d.take_request("CANCEL");
    d.deliver(
        phone.peer,
        Resp::to(&cancel, 200, "OK", Some("bob1")).build(),
    );
    // The callee never sends 487. §9.1: after 64·T1 the INVITE transaction is abandoned.
    d.advance(ms(31_999));
    assert!(d.take_events().is_empty());
    d.advance(ms(1));
    assert_eq!(
        d.take_event(),
        SipEvent::Ended {
            call,
            reason: EndReason::Cancelled
        }
    );
    assert!(d.take_sent().is_empty(), "no ACK without a final response");
    assert_eq!(d.stack.active_calls(), 0);
}
