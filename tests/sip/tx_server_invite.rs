//! The server INVITE transaction on a virtual clock (RFC 3261 §17.2.1): 100 Trying at once,
//! request retransmissions answered with the last provisional, a non-2xx final response
//! retransmitted by Timer G (T1 doubling up to T2) until the ACK, Timer H giving up at 64·T1,
//! Timer I after the ACK, and no Timer G on TCP.

use crate::harness;

use harness::*;
use voxline::sip::{EndReason, LimitResponse, SipEvent, StackConfig};

#[test]
fn hundred_trying_goes_out_at_once_with_the_request_identifiers() {
    let mut d = Driver::new(config());
    let mut phone = Phone::new();
    let mut dialog = phone.call("sip:1000@192.0.2.1");
    let invite = dialog
        .invite(&mut phone)
        .h("Contact", phone.contact())
        .sdp(&sdp("sendrecv"))
        .build();
    dialog.sent_invite(&invite);
    d.deliver(phone.peer, &invite);
    let sent = d.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].at, ms(0));
    assert_eq!(sent[0].peer, phone.peer);
    let trying = &sent[0].msg;
    assert_eq!(trying.start_line(), "SIP/2.0 100 Trying");
    let inv = Wire { text: invite };
    assert_eq!(trying.call_id(), inv.call_id());
    assert_eq!(trying.h("CSeq"), "1 INVITE");
    assert_eq!(trying.h("From"), inv.h("From"));
    assert_eq!(trying.to_tag(), None, "100 Trying carries no To tag");
    // The Via comes back with received and rport filled in (RFC 3261 §18.2.1, RFC 3581).
    let via = trying.h("Via");
    assert!(via.contains(&format!("branch={}", inv.branch())), "{via}");
    assert!(via.contains("rport=5060"), "{via}");
    assert!(via.contains("received=192.0.2.10"), "{via}");
    assert!(matches!(d.take_event(), SipEvent::IncomingCall(_)));
}

#[test]
fn non_2xx_final_is_retransmitted_with_timer_g_until_the_ack() {
    let mut d = Driver::new(config());
    let c = inbound_invite(&mut d, &[]);
    d.advance(secs(1));
    d.cmd(|s, now| s.respond(now, c.call, 488, None))
        .expect("reject");
    assert_eq!(
        d.take_events(),
        vec![SipEvent::Ended {
            call: c.call,
            reason: EndReason::Rejected(488)
        }]
    );
    d.advance(secs(5)); // t = 6 s
    let times = d.times_of(|m| m.status() == Some(488));
    // Timer G: T1, 2T1, 4T1 after the first send at 1 s.
    assert_eq!(times, vec![ms(1000), ms(1500), ms(2500), ms(4500)]);
    let sent = d.take_sent();
    assert!(
        sent.iter().all(|s| s.msg == sent[0].msg),
        "identical retransmissions"
    );
    let resp = sent[0].msg.clone();
    assert!(resp.to_tag().is_some(), "a final response has a To tag");
    d.deliver(c.phone.peer, c.dialog.ack_non_2xx(&resp));
    assert!(d.take_sent().is_empty(), "an ACK gets no reply");
    d.advance(secs(40));
    assert!(
        d.take_sent().is_empty(),
        "no retransmission after the ACK: {:?}",
        d.pending_lines()
    );
    assert!(d.take_events().is_empty(), "no second Ended");
    // Timer I (T4 = 5 s) ended the transaction.
    assert_eq!(d.stack.transaction_count().0, 0);
}

#[test]
fn timer_i_lasts_t4_after_the_ack() {
    let mut d = Driver::new(config());
    let c = inbound_invite(&mut d, &[]);
    d.cmd(|s, now| s.respond(now, c.call, 488, None))
        .expect("reject");
    let resp = d.take_response(488);
    d.deliver(c.phone.peer, c.dialog.ack_non_2xx(&resp));
    // Confirmed: still absorbing ACKs until T4.
    d.advance(ms(4999));
    assert_eq!(d.stack.transaction_count().0, 1);
    d.deliver(c.phone.peer, c.dialog.ack_non_2xx(&resp));
    assert!(d.take_sent().is_empty());
    d.advance(ms(1));
    assert_eq!(d.stack.transaction_count().0, 0);
}

#[test]
fn without_ack_timer_g_caps_at_t2_and_timer_h_ends_at_64_t1() {
    let mut d = Driver::new(config());
    let c = inbound_invite(&mut d, &[]);
    d.cmd(|s, now| s.respond(now, c.call, 488, None))
        .expect("reject");
    d.advance(secs(60));
    let expected: Vec<_> = [
        0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500,
    ]
    .into_iter()
    .map(ms)
    .collect();
    assert_eq!(d.times_of(|m| m.status() == Some(488)), expected);
    let ended: Vec<_> = d
        .all_events
        .iter()
        .filter(|(_, e)| matches!(e, SipEvent::Ended { .. }))
        .collect();
    assert_eq!(
        ended.len(),
        1,
        "Timer H does not report the call twice: {:?}",
        d.all_events
    );
    assert_eq!(d.stack.transaction_count(), (0, 0));
}

#[test]
fn custom_timers_scale_timer_g_and_timer_h() {
    let mut d = Driver::new(config_with_timers(ms(100), ms(400)));
    let c = inbound_invite(&mut d, &[]);
    d.cmd(|s, now| s.respond(now, c.call, 603, None))
        .expect("reject");
    d.advance(ms(6399));
    assert_eq!(d.stack.transaction_count().0, 1);
    let expected: Vec<_> = [
        0, 100, 300, 700, 1100, 1500, 1900, 2300, 2700, 3100, 3500, 3900, 4300, 4700, 5100, 5500,
        5900, 6300,
    ]
    .into_iter()
    .map(ms)
    .collect();
    assert_eq!(d.times_of(|m| m.status() == Some(603)), expected);
    d.advance(ms(1));
    assert_eq!(d.stack.transaction_count().0, 0, "Timer H at 64·T1 = 6.4 s");
}

#[test]
fn busy_at_call_limit_is_retransmitted_until_ack() {
    let cfg = StackConfig {
        max_calls: 0,
        at_limit: LimitResponse::Busy,
        ..config_with_timers(ms(100), ms(400))
    };
    let mut d = Driver::new(cfg);
    let mut phone = Phone::new();
    let mut dialog = phone.call("sip:1000@192.0.2.1");
    let invite = dialog
        .invite(&mut phone)
        .h("Contact", phone.contact())
        .build();
    dialog.sent_invite(&invite);
    d.deliver(phone.peer, &invite);
    let sent = d.take_sent();
    let codes: Vec<_> = sent.iter().map(|s| s.msg.status()).collect();
    assert_eq!(codes, vec![Some(100), Some(486)]);
    assert!(d.take_events().is_empty(), "a refused call is not reported");
    assert_eq!(d.stack.counters().refused_at_limit, 1);
    d.advance(ms(1200));
    assert_eq!(
        d.times_of(|m| m.status() == Some(486)),
        vec![ms(0), ms(100), ms(300), ms(700), ms(1100)]
    );
    d.take_sent();
    d.deliver(phone.peer, dialog.ack_non_2xx(&sent[1].msg));
    d.advance(secs(10));
    assert!(d.take_sent().is_empty());
    assert_eq!(d.stack.transaction_count().0, 0);
}

#[test]
fn retransmitted_invite_in_proceeding_gets_the_last_provisional() {
    let mut d = Driver::new(config());
    let c = inbound_invite(&mut d, &[]);
    let invite = c.dialog.invite.clone().expect("sent");
    // Before any provisional of ours: the 100 again.
    d.advance(ms(500));
    d.deliver(c.phone.peer, &invite.text);
    assert_eq!(d.take_one().status(), Some(100));
    d.cmd(|s, now| s.respond(now, c.call, 180, None))
        .expect("ring");
    let ringing = d.take_response(180);
    // Unreliable provisionals are not retransmitted by any timer.
    d.advance(secs(10));
    assert!(d.take_sent().is_empty());
    // A retransmitted INVITE gets the 180 again, byte for byte.
    d.deliver(c.phone.peer, &invite.text);
    assert_eq!(d.take_one(), ringing);
    assert!(d.take_events().is_empty(), "no second IncomingCall");
    assert_eq!(d.stack.counters().retransmissions_absorbed, 2);
}

#[test]
fn retransmitted_invite_in_completed_gets_the_final_response_again() {
    let mut d = Driver::new(config());
    let c = inbound_invite(&mut d, &[]);
    let invite = c.dialog.invite.clone().expect("sent");
    d.cmd(|s, now| s.respond(now, c.call, 486, None))
        .expect("busy");
    let busy = d.take_response(486);
    d.advance(ms(200));
    d.deliver(c.phone.peer, &invite.text);
    assert_eq!(d.take_one(), busy);
    d.take_events();
    assert!(d.take_events().is_empty());
}

#[test]
fn over_tcp_no_timer_g_and_timer_i_is_zero() {
    let mut d = Driver::new(config());
    let mut phone = Phone::at(tcp(PEER_ADDR));
    let c = inbound_invite_from(&mut d, &mut phone, &[]);
    d.cmd(|s, now| s.respond(now, c.call, 488, None))
        .expect("reject");
    let resp = d.take_response(488);
    d.advance(secs(10));
    assert!(
        d.take_sent().is_empty(),
        "no Timer G on a reliable transport"
    );
    d.deliver(phone.peer, c.dialog.ack_non_2xx(&resp));
    d.advance(ms(0));
    assert_eq!(d.stack.transaction_count().0, 0, "Timer I is zero on TCP");
}

#[test]
fn over_tcp_timer_h_still_ends_the_transaction() {
    let mut d = Driver::new(config());
    let mut phone = Phone::at(tcp(PEER_ADDR));
    let c = inbound_invite_from(&mut d, &mut phone, &[]);
    d.cmd(|s, now| s.respond(now, c.call, 488, None))
        .expect("reject");
    d.advance(ms(31_999));
    assert_eq!(d.stack.transaction_count().0, 1);
    d.advance(ms(1));
    assert_eq!(d.stack.transaction_count().0, 0);
    assert_eq!(d.times_of(|m| m.status() == Some(488)), vec![ms(0)]);
}
