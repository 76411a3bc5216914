//! The caller retransmits its INVITE after voxline's 200 (its 200 or our 100 was lost): the
//! retransmission is absorbed by the server transaction in Accepted (RFC 6026 §8.7) or, once
//! that is gone, by the dialog; it never becomes a second `IncomingCall`.

use crate::harness;

use harness::*;
use voxline::sip::SipEvent;

#[test]
fn invite_retransmitted_after_200_is_absorbed() {
    let mut d = Driver::new(config());
    let mut c = inbound_invite(&mut d, &[]);
    let invite = c.dialog.invite.clone().expect("sent");
    d.cmd(|s, now| s.respond(now, c.call, 200, Some(sdp("sendrecv"))))
        .expect("answer");
    let ok = d.take_response(200);
    c.dialog.learn(&ok);
    let absorbed = d.stack.counters().retransmissions_absorbed;
    // The caller did not get the 200 yet and retransmits at 100 ms and 300 ms.
    for at in [100, 300] {
        d.advance_to_offset(ms(at));
        d.deliver(c.phone.peer, &invite.text);
        assert!(
            d.take_sent().is_empty(),
            "absorbed in Accepted: the core's 2xx timer answers"
        );
        assert!(d.take_events().is_empty(), "no second IncomingCall");
    }
    assert_eq!(d.stack.counters().retransmissions_absorbed, absorbed + 2);
    // The 2xx retransmission schedule is not disturbed by the absorbed INVITEs.
    d.advance_to_offset(ms(1600));
    assert_eq!(
        d.times_of(|m| m.status() == Some(200)),
        vec![ms(0), ms(500), ms(1500)]
    );
    d.take_sent();
    d.deliver(c.phone.peer, c.dialog.ack_2xx(&mut c.phone, 1).build());
    assert!(matches!(d.take_event(), SipEvent::Acked { .. }));
    assert_eq!(d.stack.active_calls(), 1);
}

#[test]
fn late_invite_retransmission_after_timer_l_does_not_start_a_call() {
    let mut d = Driver::new(config());
    let c = established_inbound(&mut d, &[]);
    let invite = c.dialog.invite.clone().expect("sent");
    d.advance(secs(40)); // Timer L (64·T1) is over: the INVITE server transaction is gone
    assert_eq!(d.stack.transaction_count(), (0, 0));
    d.deliver(c.phone.peer, &invite.text);
    assert!(d.take_events().is_empty(), "no second IncomingCall");
    let sent = d.take_sent();
    assert!(
        sent.iter().all(|s| s.msg.status() == Some(100)),
        "at most a 100 Trying: {sent:#?}"
    );
    assert_eq!(d.stack.active_calls(), 1);
    assert_eq!(
        d.stack.transaction_count(),
        (0, 0),
        "the stray transaction is not kept"
    );
    d.advance(secs(40));
    assert!(
        d.take_sent().is_empty(),
        "no 200 or other response for the stale INVITE"
    );
}

#[test]
fn an_invite_reusing_call_id_and_from_tag_with_a_new_cseq_gets_482() {
    let mut d = Driver::new(config());
    let mut c = inbound_invite(&mut d, &[]);
    // A second out-of-dialog INVITE in the same Call-ID and From tag (no To tag).
    let text = c
        .dialog
        .request(&mut c.phone, "INVITE")
        .h("Contact", c.phone.contact())
        .build();
    d.deliver(c.phone.peer, &text);
    let codes: Vec<_> = d.take_sent().iter().map(|s| s.msg.status()).collect();
    assert_eq!(codes, vec![Some(100), Some(482)]);
    assert!(d.take_events().is_empty());
    assert_eq!(d.stack.active_calls(), 1);
}

#[test]
fn a_forked_copy_of_the_invite_with_another_branch_is_not_a_second_call() {
    // §8.2.2.2: same From tag, Call-ID and CSeq, another branch (a proxy forked it twice).
    let mut d = Driver::new(config());
    let mut c = inbound_invite(&mut d, &[]);
    let branch = c.phone.branch();
    let copy = c
        .dialog
        .request_with(&c.phone, "INVITE", 1, &branch)
        .h("Contact", c.phone.contact())
        .build();
    d.deliver(c.phone.peer, &copy);
    assert!(d.take_events().is_empty(), "no second IncomingCall");
    let sent = d.take_sent();
    assert!(
        sent.iter()
            .all(|s| matches!(s.msg.status(), Some(100 | 482))),
        "{sent:#?}"
    );
    assert_eq!(d.stack.active_calls(), 1);
    // The original call is unaffected.
    d.cmd(|s, now| s.respond(now, c.call, 200, Some(sdp("sendrecv"))))
        .expect("answer");
    assert_eq!(
        d.take_response(200).branch(),
        c.dialog.invite.as_ref().expect("sent").branch()
    );
}
