//! Reliable provisional responses (RFC 3262): as UAS, a 180 to an INVITE that requires 100rel
//! carries `Require: 100rel` and `RSeq`, is retransmitted (T1 doubling) until the PRACK, and
//! the PRACK gets 200; no PRACK in 64·T1 rejects the INVITE with 5xx. As UAC, a reliable 183
//! gets a PRACK with `RAck`, and its retransmissions get no second PRACK.

use crate::harness;

use harness::*;
use voxline::sip::{EndReason, SipEvent};

const REQUIRE_100REL: [(&str, &str); 2] = [("Require", "100rel"), ("Supported", "100rel, timer")];

fn rseq(w: &Wire) -> u32 {
    w.h("RSeq").parse().expect("RSeq number")
}

#[test]
fn reliable_180_is_retransmitted_until_prack() {
    let mut d = Driver::new(config());
    let mut c = inbound_invite(&mut d, &REQUIRE_100REL);
    d.cmd(|s, now| s.respond(now, c.call, 180, None))
        .expect("ring");
    let ringing = d.take_response(180);
    assert!(
        ringing.headers("Require").iter().any(|r| r == "100rel"),
        "{ringing:?}"
    );
    let n = rseq(&ringing);
    assert!((1..(1u32 << 31)).contains(&n));
    assert!(
        ringing.to_tag().is_some(),
        "a reliable provisional creates the early dialog"
    );
    assert!(ringing.header("Contact").is_some());
    d.advance_to_offset(ms(4000));
    assert_eq!(
        d.times_of(|m| m.status() == Some(180)),
        vec![ms(0), ms(500), ms(1500), ms(3500)]
    );
    assert!(d.take_sent().iter().all(|s| s.msg == ringing));
    c.dialog.learn(&ringing);
    let prack = c
        .dialog
        .request(&mut c.phone, "PRACK")
        .h("RAck", format!("{n} 1 INVITE"))
        .build();
    d.deliver(c.phone.peer, &prack);
    let ok = d.take_one();
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.h("CSeq"), "2 PRACK");
    assert!(d.take_events().is_empty());
    d.advance_to_offset(secs(40));
    assert_eq!(
        d.times_of(|m| m.status() == Some(180)).len(),
        4,
        "no retransmission after the PRACK"
    );
    // The call goes on normally.
    d.cmd(|s, now| s.respond(now, c.call, 200, Some(sdp("sendrecv"))))
        .expect("answer");
    d.take_response(200);
}

#[test]
fn one_unacknowledged_reliable_provisional_at_a_time() {
    let mut d = Driver::new(config());
    let mut c = inbound_invite(&mut d, &REQUIRE_100REL);
    d.cmd(|s, now| s.respond(now, c.call, 180, None))
        .expect("ring");
    let ringing = d.take_response(180);
    d.cmd(|s, now| s.respond(now, c.call, 183, Some(sdp("sendrecv"))))
        .expect("accepted, held back");
    assert!(
        d.take_sent().is_empty(),
        "RFC 3262 §3: no second reliable 1xx before the PRACK"
    );
    c.dialog.learn(&ringing);
    let n = rseq(&ringing);
    let prack = c
        .dialog
        .request(&mut c.phone, "PRACK")
        .h("RAck", format!("{n} 1 INVITE"))
        .build();
    d.deliver(c.phone.peer, prack);
    d.take_response(200);
    d.cmd(|s, now| s.respond(now, c.call, 183, Some(sdp("sendrecv"))))
        .expect("progress");
    let progress = d.take_response(183);
    assert_eq!(rseq(&progress), n + 1, "RSeq increases by one");
}

#[test]
fn prack_with_unknown_rseq_gets_481() {
    let mut d = Driver::new(config());
    let mut c = inbound_invite(&mut d, &REQUIRE_100REL);
    d.cmd(|s, now| s.respond(now, c.call, 180, None))
        .expect("ring");
    let ringing = d.take_response(180);
    c.dialog.learn(&ringing);
    let wrong = rseq(&ringing) + 5;
    let prack = c
        .dialog
        .request(&mut c.phone, "PRACK")
        .h("RAck", format!("{wrong} 1 INVITE"))
        .build();
    d.deliver(c.phone.peer, prack);
    assert_eq!(d.take_one().status(), Some(481));
    d.advance(ms(500));
    assert_eq!(d.take_one(), ringing, "still waiting for the right PRACK");
}

#[test]
fn no_prack_in_64_t1_rejects_the_invite() {
    let mut d = Driver::new(config());
    let c = inbound_invite(&mut d, &REQUIRE_100REL);
    d.cmd(|s, now| s.respond(now, c.call, 180, None))
        .expect("ring");
    d.advance_to_offset(ms(31_999));
    // T1 doubling (like Timer A) for the whole 64·T1.
    assert_eq!(
        d.times_of(|m| m.status() == Some(180)),
        [0, 500, 1500, 3500, 7500, 15500, 31500]
            .into_iter()
            .map(ms)
            .collect::<Vec<_>>()
    );
    d.take_sent();
    d.advance(ms(1));
    let resp = d.take_one();
    assert_eq!(resp.status(), Some(504), "{resp:?}");
    assert_eq!(
        d.take_event(),
        SipEvent::Ended {
            call: c.call,
            reason: EndReason::Rejected(504)
        }
    );
}

#[test]
fn supported_without_require_gets_an_unreliable_provisional() {
    let mut d = Driver::new(config());
    let c = inbound_invite(&mut d, &[("Supported", "100rel")]);
    d.cmd(|s, now| s.respond(now, c.call, 180, None))
        .expect("ring");
    let ringing = d.take_response(180);
    assert!(ringing.header("RSeq").is_none());
    d.advance(secs(5));
    assert!(d.take_sent().is_empty(), "not retransmitted");
}

#[test]
fn uac_sends_prack_for_a_reliable_183_once() {
    let mut d = Driver::new(config());
    let phone = Phone::new();
    let call = d.cmd(|s, now| s.invite(now, outgoing(phone.peer)));
    let invite = d.take_request("INVITE");
    assert!(invite.h("Supported").contains("100rel"));
    let progress = phone
        .respond(&invite, 183, "Session Progress", Some("bob1"))
        .h("Require", "100rel")
        .h("RSeq", "7")
        .sdp(&sdp("sendrecv"))
        .build();
    d.deliver(phone.peer, &progress);
    let sent = d.take_sent();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let prack = &sent[0].msg;
    assert!(prack.is("PRACK"));
    assert_eq!(prack.h("RAck"), "7 1 INVITE");
    assert_eq!(prack.cseq(), (2, "PRACK".to_string()));
    assert_eq!(prack.to_tag().as_deref(), Some("bob1"));
    assert_eq!(
        prack.uri(),
        phone.uri(),
        "sent to the early dialog's remote target"
    );
    assert_eq!(sent[0].peer, phone.peer);
    assert_eq!(
        d.take_event(),
        SipEvent::Progress {
            call,
            status: 183,
            body: Some(sdp("sendrecv"))
        }
    );
    // The 183 is retransmitted (the PRACK crossed it): no second PRACK, no second Progress.
    d.advance(ms(300));
    d.deliver(phone.peer, &progress);
    assert!(d.take_sent().is_empty());
    assert!(
        d.take_events().is_empty(),
        "RFC 3262 §4: retransmissions are discarded"
    );
    d.deliver(phone.peer, Resp::to(prack, 200, "OK", None).build());
    // A new reliable provisional gets its own PRACK.
    let ringing = phone
        .respond(&invite, 180, "Ringing", Some("bob1"))
        .h("Require", "100rel")
        .h("RSeq", "8")
        .build();
    d.deliver(phone.peer, &ringing);
    let prack2 = d.take_request("PRACK");
    assert_eq!(prack2.h("RAck"), "8 1 INVITE");
    assert_eq!(prack2.cseq(), (3, "PRACK".to_string()));
    assert_eq!(
        d.take_event(),
        SipEvent::Progress {
            call,
            status: 180,
            body: None
        }
    );
    // The answer: ACK keeps the INVITE's CSeq, the next request goes on from the PRACKs.
    d.deliver(
        phone.peer,
        phone
            .respond(&invite, 200, "OK", Some("bob1"))
            .sdp(&sdp("sendrecv"))
            .build(),
    );
    assert_eq!(d.take_request("ACK").cseq(), (1, "ACK".to_string()));
    d.take_events();
    d.cmd(|s, now| s.hangup(now, call)).expect("hangup");
    assert_eq!(d.take_request("BYE").cseq(), (4, "BYE".to_string()));
}
