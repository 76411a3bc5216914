//! voxline calls; the callee's 200 (or voxline's ACK) is lost and the callee retransmits the
//! 200 (RFC 3261 §13.2.2.4, RFC 6026 Accepted state): every retransmission gets the same ACK
//! again, and the call layer hears `Answered` exactly once.

use crate::harness;

use harness::*;
use voxline::sip::SipEvent;

#[test]
fn every_retransmitted_200_is_acked_again_and_answered_once() {
    let mut d = Driver::new(config());
    let phone = Phone::new();
    let call = d.cmd(|s, now| s.invite(now, outgoing(phone.peer)));
    let invite = d.take_request("INVITE");
    d.deliver(
        phone.peer,
        phone.respond(&invite, 100, "Trying", None).build(),
    );
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
    d.advance(secs(2));
    let ok = phone
        .respond(&invite, 200, "OK", Some("bob1"))
        .sdp(&sdp("sendrecv"))
        .build();
    d.deliver(phone.peer, &ok);
    let sent = d.take_sent();
    assert_eq!(sent.len(), 1);
    let ack = sent[0].msg.clone();
    assert!(ack.is("ACK"));
    assert_eq!(sent[0].peer, phone.peer);
    // §13.2.2.4: CSeq number of the INVITE, a new branch, the dialog's To tag, the Contact as
    // Request-URI.
    assert_eq!(ack.cseq(), (1, "ACK".to_string()));
    assert_ne!(ack.branch(), invite.branch());
    assert!(ack.branch().starts_with("z9hG4bK"));
    assert_eq!(ack.to_tag().as_deref(), Some("bob1"));
    assert_eq!(ack.uri(), phone.uri());
    assert_eq!(ack.call_id(), invite.call_id());
    assert_eq!(
        d.take_event(),
        SipEvent::Answered {
            call,
            body: Some(sdp("sendrecv"))
        }
    );

    // The callee never saw the ACK and retransmits its 200 at T1, 2T1, 4T1.
    for at in [2500, 3500, 5500] {
        d.advance_to_offset(ms(at));
        d.deliver(phone.peer, &ok);
        let again = d.take_one();
        assert_eq!(again, ack, "the same ACK, byte for byte, at {at} ms");
    }
    assert!(d.take_events().is_empty(), "Answered only once");
    assert_eq!(d.stack.active_calls(), 1);
    d.advance(secs(5));
    assert!(
        d.take_sent().is_empty(),
        "the ACK is only resent when a 200 arrives"
    );
}

#[test]
fn lost_200_without_provisional_keeps_timer_a_running_until_the_200_gets_through() {
    let mut d = Driver::new(config());
    let phone = Phone::new();
    let call = d.cmd(|s, now| s.invite(now, outgoing(phone.peer)));
    let invite = d.take_request("INVITE");
    // The callee answers at once, but the 200 is lost; voxline retransmits the INVITE at T1.
    d.advance(ms(500));
    assert_eq!(d.take_request("INVITE"), invite);
    // The callee's own 2xx retransmission gets through at 600 ms.
    d.advance(ms(100));
    let ok = phone
        .respond(&invite, 200, "OK", Some("bob1"))
        .sdp(&sdp("sendrecv"))
        .build();
    d.deliver(phone.peer, &ok);
    assert!(d.take_one().is("ACK"));
    assert_eq!(
        d.take_event(),
        SipEvent::Answered {
            call,
            body: Some(sdp("sendrecv"))
        }
    );
    d.advance(secs(40));
    assert_eq!(
        d.times_of(|m| m.is("INVITE")),
        vec![ms(0), ms(500)],
        "Timer A stopped by the 200"
    );
    assert!(
        d.take_events().is_empty(),
        "no Timer B failure after the 200"
    );
}

#[test]
fn after_timer_m_a_late_200_is_a_stray() {
    let mut d = Driver::new(config());
    let phone = Phone::new();
    d.cmd(|s, now| s.invite(now, outgoing(phone.peer)));
    let invite = d.take_request("INVITE");
    let ok = phone.respond(&invite, 200, "OK", Some("bob1")).build();
    d.deliver(phone.peer, &ok);
    d.take_sent();
    d.take_events();
    d.advance(ms(31_999));
    assert_eq!(
        d.stack.transaction_count().1,
        1,
        "Accepted for 64·T1 (Timer M)"
    );
    d.advance(ms(1));
    assert_eq!(d.stack.transaction_count().1, 0);
    let before = d.stack.counters().stray_responses;
    d.deliver(phone.peer, &ok);
    assert!(d.take_sent().is_empty());
    assert!(d.take_events().is_empty());
    assert_eq!(d.stack.counters().stray_responses, before + 1);
}

#[test]
fn retransmitted_200_to_a_reinvite_is_acked_again() {
    let mut d = Driver::new(config());
    let mut o = established_outbound(&mut d, &[]);
    d.cmd(|s, now| s.reinvite(now, o.call, sdp("sendonly")))
        .expect("re-INVITE");
    let reinvite = d.take_request("INVITE");
    let ok = Resp::to(&reinvite, 200, "OK", None)
        .h("Contact", o.phone.contact())
        .sdp(&sdp("recvonly"))
        .build();
    d.deliver(o.phone.peer, &ok);
    let ack = d.take_request("ACK");
    assert_eq!(ack.cseq(), (reinvite.cseq().0, "ACK".to_string()));
    assert_eq!(
        d.take_event(),
        SipEvent::ModifyResult {
            call: o.call,
            status: 200,
            body: Some(sdp("recvonly"))
        }
    );
    d.advance(ms(500));
    d.deliver(o.phone.peer, &ok);
    assert_eq!(d.take_one(), ack);
    assert!(d.take_events().is_empty(), "one ModifyResult");
    let _ = &mut o;
}
