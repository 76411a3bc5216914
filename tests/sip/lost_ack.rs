//! voxline answers with 200 and the ACK is lost (RFC 3261 §13.3.1.4, RFC 6026): the UAS core
//! retransmits the 2xx at T1, 2T1, … capped at T2 until the ACK arrives; if it never does,
//! after 64·T1 the stack sends BYE and reports `Ended { AckTimeout }`. A BYE requested before
//! the ACK waits for it (§15).

use crate::harness;

use harness::*;
use voxline::sip::{EndReason, SipEvent};

fn answered(d: &mut Driver, phone: Option<Phone>) -> (Inbound, Wire) {
    let mut c = match phone {
        Some(mut p) => inbound_invite_from(d, &mut p, &[]).into_inbound(p),
        None => inbound_invite(d, &[]),
    };
    d.cmd(|s, now| s.respond(now, c.call, 200, Some(sdp("sendrecv"))))
        .expect("answer");
    let ok = d.take_response(200);
    c.dialog.learn(&ok);
    assert!(d.take_events().is_empty());
    (c, ok)
}

#[test]
fn two_hundred_is_retransmitted_until_the_ack_arrives() {
    let mut d = Driver::new(config());
    let (mut c, ok) = answered(&mut d, None);
    d.advance(secs(8));
    assert_eq!(
        d.times_of(|m| m.status() == Some(200)),
        vec![ms(0), ms(500), ms(1500), ms(3500), ms(7500)]
    );
    let sent = d.take_sent();
    assert!(
        sent.iter().all(|s| s.msg == ok && s.peer == c.phone.peer),
        "same 200 to the caller"
    );
    let ack = c.dialog.ack_2xx(&mut c.phone, 1).build();
    d.deliver(c.phone.peer, &ack);
    assert_eq!(
        d.take_event(),
        SipEvent::Acked {
            call: c.call,
            body: None
        }
    );
    d.advance(secs(60));
    assert!(
        d.take_sent().is_empty(),
        "retransmissions stop at the ACK: {:?}",
        d.pending_lines()
    );
    // A retransmitted ACK is absorbed silently.
    d.deliver(c.phone.peer, &ack);
    assert!(d.take_events().is_empty());
    assert!(d.take_sent().is_empty());
    assert_eq!(d.stack.active_calls(), 1);
}

#[test]
fn ack_timeout_after_64_t1_sends_bye() {
    let mut d = Driver::new(config());
    let (c, ok) = answered(&mut d, None);
    d.advance(ms(31_999));
    let expected: Vec<_> = [
        0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500,
    ]
    .into_iter()
    .map(ms)
    .collect();
    assert_eq!(
        d.times_of(|m| m.status() == Some(200)),
        expected,
        "T1 doubling, capped at T2"
    );
    d.take_sent();
    assert!(d.take_events().is_empty());
    d.advance(ms(1));
    let bye = d.take_request("BYE");
    assert_eq!(
        d.take_event(),
        SipEvent::Ended {
            call: c.call,
            reason: EndReason::AckTimeout
        }
    );
    // The BYE belongs to the dialog: our tag in From, the caller's in To, its Contact as target.
    assert_eq!(bye.call_id(), ok.call_id());
    assert_eq!(bye.from_tag(), ok.to_tag());
    assert_eq!(bye.to_tag(), ok.from_tag());
    assert_eq!(bye.uri(), c.phone.uri());
    assert_eq!(bye.cseq().1, "BYE");
    d.deliver(c.phone.peer, Resp::to(&bye, 200, "OK", None).build());
    d.advance(secs(60));
    assert!(d.take_sent().is_empty());
    assert!(d.take_events().is_empty());
    assert_eq!(d.stack.active_calls(), 0);
    assert_eq!(d.stack.transaction_count(), (0, 0));
}

#[test]
fn custom_timers_scale_the_2xx_retransmission_and_give_up() {
    let mut d = Driver::new(config_with_timers(ms(100), ms(400)));
    let (c, _) = answered(&mut d, None);
    d.advance(ms(6399));
    assert_eq!(
        d.times_of(|m| m.status() == Some(200)),
        [
            0, 100, 300, 700, 1100, 1500, 1900, 2300, 2700, 3100, 3500, 3900, 4300, 4700, 5100,
            5500, 5900, 6300
        ]
        .into_iter()
        .map(ms)
        .collect::<Vec<_>>()
    );
    d.take_sent();
    d.advance(ms(1));
    d.take_request("BYE");
    assert_eq!(
        d.take_event(),
        SipEvent::Ended {
            call: c.call,
            reason: EndReason::AckTimeout
        }
    );
}

#[test]
fn over_tcp_the_2xx_is_sent_once_but_the_ack_still_times_out() {
    let mut d = Driver::new(config());
    let (c, _) = answered(&mut d, Some(Phone::at(tcp(PEER_ADDR))));
    d.advance(ms(31_999));
    assert_eq!(d.times_of(|m| m.status() == Some(200)), vec![ms(0)]);
    d.advance(ms(1));
    let sent = d.take_sent();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].msg.is("BYE"));
    assert_eq!(
        sent[0].peer,
        tcp(PEER_ADDR),
        "the BYE reuses the caller's TCP connection"
    );
    assert_eq!(
        d.take_event(),
        SipEvent::Ended {
            call: c.call,
            reason: EndReason::AckTimeout
        }
    );
}

#[test]
fn hangup_before_the_ack_waits_for_it() {
    let mut d = Driver::new(config());
    let (mut c, _) = answered(&mut d, None);
    d.advance(ms(600));
    d.take_sent();
    d.cmd(|s, now| s.hangup(now, c.call)).expect("hangup");
    assert!(d.take_sent().is_empty(), "no BYE before the ACK (§15)");
    assert!(d.take_events().is_empty());
    // The 2xx keeps going meanwhile.
    d.advance(ms(1000));
    assert_eq!(d.take_one().status(), Some(200));
    d.deliver(c.phone.peer, c.dialog.ack_2xx(&mut c.phone, 1).build());
    let bye = d.take_request("BYE");
    assert_eq!(bye.cseq().1, "BYE");
    assert_eq!(
        d.take_events(),
        vec![
            SipEvent::Acked {
                call: c.call,
                body: None
            },
            SipEvent::Ended {
                call: c.call,
                reason: EndReason::LocalBye
            }
        ]
    );
}

#[test]
fn hangup_before_an_ack_that_never_comes_sends_one_bye() {
    let mut d = Driver::new(config());
    let (c, _) = answered(&mut d, None);
    d.cmd(|s, now| s.hangup(now, c.call)).expect("hangup");
    d.advance(secs(32));
    let byes = d.times_of(|m| m.is("BYE"));
    assert_eq!(byes, vec![secs(32)]);
    assert_eq!(
        d.take_events(),
        vec![SipEvent::Ended {
            call: c.call,
            reason: EndReason::AckTimeout
        }]
    );
}

#[test]
fn ack_with_a_late_answer_body_is_passed_up() {
    let mut d = Driver::new(config());
    let (mut c, _) = answered(&mut d, None);
    let ack = c
        .dialog
        .ack_2xx(&mut c.phone, 1)
        .sdp(&sdp("sendrecv"))
        .build();
    d.deliver(c.phone.peer, ack);
    assert_eq!(
        d.take_event(),
        SipEvent::Acked {
            call: c.call,
            body: Some(sdp("sendrecv"))
        }
    );
}
