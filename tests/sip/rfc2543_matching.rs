//! Requests from RFC 2543 implementations, whose Via has no `z9hG4bK` branch, are still
//! matched to their transactions (RFC 3261 §17.2.3 fallback): retransmissions are absorbed,
//! the ACK for a non-2xx stops Timer G, CANCEL finds its INVITE and the ACK for a 2xx finds
//! its dialog.

use crate::harness;

use harness::*;
use voxline::sip::{EndReason, SipEvent};

/// A Via with no branch, or with a pre-RFC 3261 one.
fn old_via(branch: Option<&str>) -> String {
    match branch {
        Some(b) => format!("SIP/2.0/UDP {PEER_ADDR};branch={b}"),
        None => format!("SIP/2.0/UDP {PEER_ADDR}"),
    }
}

fn old_invite(d: &mut Driver, branch: Option<&str>) -> Inbound {
    let mut phone = Phone::new();
    let mut dialog = phone.call("sip:1000@192.0.2.1");
    let text = dialog
        .invite(&mut phone)
        .set("Via", old_via(branch))
        .h("Contact", phone.contact())
        .sdp(&sdp("sendrecv"))
        .build();
    dialog.sent_invite(&text);
    d.deliver(phone.peer, &text);
    let trying = d.take_one();
    assert_eq!(trying.status(), Some(100));
    assert!(
        trying.h("Via").starts_with(&old_via(branch)),
        "Via echoed: {trying:?}"
    );
    let call = match d.take_event() {
        SipEvent::IncomingCall(c) => c.call,
        e => panic!("expected IncomingCall, got {e:?}"),
    };
    Inbound {
        phone,
        dialog,
        call,
    }
}

#[test]
fn invite_without_branch_retransmission_is_absorbed_and_ack_stops_timer_g() {
    for branch in [None, Some("1a2b3c")] {
        let mut d = Driver::new(config());
        let c = old_invite(&mut d, branch);
        let invite = c.dialog.invite.clone().expect("sent");
        d.advance(ms(400));
        d.deliver(c.phone.peer, &invite.text);
        assert_eq!(
            d.take_one().status(),
            Some(100),
            "retransmission answered with the 100"
        );
        assert!(
            d.take_events().is_empty(),
            "no second IncomingCall ({branch:?})"
        );
        d.cmd(|s, now| s.respond(now, c.call, 486, None))
            .expect("busy");
        let busy = d.take_response(486);
        d.take_events();
        d.advance(ms(500));
        assert_eq!(d.take_one(), busy, "Timer G");
        d.deliver(c.phone.peer, c.dialog.ack_non_2xx(&busy));
        d.advance(secs(40));
        assert!(
            d.take_sent().is_empty(),
            "the branchless ACK matched ({branch:?}): {:?}",
            d.pending_lines()
        );
        assert_eq!(d.stack.transaction_count(), (0, 0));
    }
}

#[test]
fn cancel_without_branch_finds_its_invite() {
    let mut d = Driver::new(config());
    let c = old_invite(&mut d, None);
    d.deliver(c.phone.peer, c.dialog.cancel());
    let codes: Vec<_> = d.take_sent().iter().map(|s| s.msg.status()).collect();
    assert_eq!(codes, vec![Some(200), Some(487)]);
    assert_eq!(
        d.take_event(),
        SipEvent::Ended {
            call: c.call,
            reason: EndReason::Cancelled
        }
    );
}

#[test]
fn ack_for_2xx_and_bye_without_branch_are_matched() {
    let mut d = Driver::new(config());
    let mut c = old_invite(&mut d, None);
    d.cmd(|s, now| s.respond(now, c.call, 200, Some(sdp("sendrecv"))))
        .expect("answer");
    let ok = d.take_response(200);
    c.dialog.learn(&ok);
    let ack = c
        .dialog
        .ack_2xx(&mut c.phone, 1)
        .set("Via", old_via(None))
        .build();
    d.deliver(c.phone.peer, ack);
    assert_eq!(
        d.take_event(),
        SipEvent::Acked {
            call: c.call,
            body: None
        }
    );
    d.advance(secs(2));
    assert!(d.take_sent().is_empty(), "the 2xx stopped");
    let bye = c
        .dialog
        .request(&mut c.phone, "BYE")
        .set("Via", old_via(None))
        .build();
    d.deliver(c.phone.peer, &bye);
    let ok = d.take_one();
    assert_eq!(ok.status(), Some(200));
    assert_eq!(
        d.take_event(),
        SipEvent::Ended {
            call: c.call,
            reason: EndReason::RemoteBye
        }
    );
    // The retransmitted BYE gets the same 200 from its transaction.
    d.advance(ms(500));
    d.deliver(c.phone.peer, &bye);
    assert_eq!(d.take_one(), ok);
    assert!(d.take_events().is_empty());
}
