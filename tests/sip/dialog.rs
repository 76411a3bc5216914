//! Dialog behaviour (RFC 3261 §12–§15, RFC 3311, RFC 3515, RFC 2976): BYE both ways,
//! re-INVITE (hold), glare, unknown dialogs, CSeq ordering, INFO, OPTIONS, UPDATE, REFER with
//! NOTIFY sipfrags, route sets from Record-Route and remote target refresh.

use crate::harness;

use harness::*;
use voxline::sip::{Body, EndReason, SipEvent, StackError};

// ----- BYE -----

#[test]
fn bye_from_the_peer_ends_the_call() {
    let mut d = Driver::new(config());
    let mut c = established_inbound(&mut d, &[]);
    d.advance(secs(3));
    let bye = c.dialog.request(&mut c.phone, "BYE").build();
    d.deliver(c.phone.peer, &bye);
    let ok = d.take_one();
    assert_eq!(ok.start_line(), "SIP/2.0 200 OK");
    assert_eq!(ok.h("CSeq"), "2 BYE");
    assert_eq!(ok.to_tag(), param(&c.dialog.remote, "tag"));
    assert_eq!(
        d.take_event(),
        SipEvent::Ended {
            call: c.call,
            reason: EndReason::RemoteBye
        }
    );
    assert_eq!(d.stack.active_calls(), 0);
    // The dialog is gone for new requests.
    let info = c.dialog.request(&mut c.phone, "INFO").build();
    d.deliver(c.phone.peer, info);
    assert_eq!(d.take_one().status(), Some(481));
    assert!(d.take_events().is_empty());
    let r = d.cmd(|s, now| s.hangup(now, c.call));
    assert!(r.is_ok(), "hanging up an ended call is a no-op: {r:?}");
    assert!(d.take_sent().is_empty());
}

#[test]
fn our_bye_as_uas_carries_the_dialog_identifiers() {
    let mut d = Driver::new(config());
    let c = established_inbound(&mut d, &[]);
    let invite = c.dialog.invite.clone().expect("sent");
    d.cmd(|s, now| s.hangup(now, c.call)).expect("hangup");
    let sent = d.take_sent();
    assert_eq!(sent.len(), 1);
    let bye = &sent[0].msg;
    assert!(bye.is("BYE"));
    assert_eq!(sent[0].peer, c.phone.peer);
    assert_eq!(
        bye.uri(),
        c.phone.uri(),
        "Request-URI is the caller's Contact"
    );
    assert_eq!(bye.call_id(), invite.call_id());
    assert_eq!(bye.to_tag(), invite.from_tag(), "To is the caller's From");
    assert_eq!(
        bye.from_tag(),
        param(&c.dialog.remote, "tag"),
        "From carries our tag"
    );
    assert_eq!(bye.h("Max-Forwards"), "70");
    assert!(bye.branch().starts_with("z9hG4bK"));
    assert!(bye.header("Route").is_none());
    assert_eq!(
        d.take_event(),
        SipEvent::Ended {
            call: c.call,
            reason: EndReason::LocalBye
        }
    );
}

#[test]
fn our_bye_as_uac_uses_the_next_cseq_and_the_callee_contact() {
    let mut d = Driver::new(config());
    let o = established_outbound(&mut d, &[]);
    d.cmd(|s, now| s.hangup(now, o.call)).expect("hangup");
    let bye = d.take_request("BYE");
    assert_eq!(bye.cseq(), (2, "BYE".to_string()));
    assert_eq!(bye.uri(), o.phone.uri());
    assert_eq!(bye.to_tag(), param(&o.dialog.local, "tag"));
    assert_eq!(bye.from_tag(), o.invite.from_tag());
    assert_eq!(
        d.take_event(),
        SipEvent::Ended {
            call: o.call,
            reason: EndReason::LocalBye
        }
    );
}

#[test]
fn in_dialog_cseq_increases_by_one_per_request() {
    let mut d = Driver::new(config());
    let c = established_inbound(&mut d, &[]);
    let info = Body::new("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n");
    d.cmd(|s, now| s.send_info(now, c.call, info.clone()))
        .expect("info");
    let first = d.take_request("INFO");
    assert_eq!(first.body(), "Signal=5\r\nDuration=160\r\n");
    assert_eq!(first.h("Content-Type"), "application/dtmf-relay");
    d.cmd(|s, now| s.hangup(now, c.call)).expect("hangup");
    let bye = d.take_request("BYE");
    assert_eq!(bye.cseq().0, first.cseq().0 + 1);
}

// ----- re-INVITE -----

#[test]
fn reinvite_hold_is_passed_up_and_answered_with_respond_modify() {
    let mut d = Driver::new(config());
    let mut c = established_inbound(&mut d, &[]);
    let reinvite = c
        .dialog
        .request(&mut c.phone, "INVITE")
        .sdp(&sdp("sendonly"))
        .build();
    d.deliver(c.phone.peer, &reinvite);
    assert_eq!(d.take_one().status(), Some(100));
    assert_eq!(
        d.take_event(),
        SipEvent::Modify {
            call: c.call,
            body: Some(sdp("sendonly"))
        }
    );
    // While our answer is pending we cannot start our own offer.
    let r = d.cmd(|s, now| s.reinvite(now, c.call, sdp("sendrecv")));
    assert_eq!(r, Err(StackError::Pending(c.call)));
    d.cmd(|s, now| s.respond_modify(now, c.call, 200, Some(sdp("recvonly"))))
        .expect("accept hold");
    let ok = d.take_response(200);
    assert_eq!(ok.h("CSeq"), "2 INVITE");
    assert_eq!(
        ok.body(),
        String::from_utf8(sdp("recvonly").data).expect("utf8")
    );
    assert!(
        ok.header("Contact").is_some(),
        "a 2xx to a target refresh carries Contact"
    );
    // The 2xx is retransmitted until the ACK, like the initial one.
    d.advance(ms(500));
    assert_eq!(d.take_one(), ok);
    d.deliver(c.phone.peer, c.dialog.ack_2xx(&mut c.phone, 2).build());
    assert_eq!(
        d.take_event(),
        SipEvent::Acked {
            call: c.call,
            body: None
        }
    );
    d.advance(secs(10));
    assert!(d.take_sent().is_empty());
    assert_eq!(d.stack.active_calls(), 1);
}

#[test]
fn reinvite_rejected_keeps_the_call() {
    let mut d = Driver::new(config());
    let mut c = established_inbound(&mut d, &[]);
    let reinvite = c
        .dialog
        .request(&mut c.phone, "INVITE")
        .sdp(&sdp("sendonly"))
        .build();
    c.dialog.sent_invite(&reinvite);
    d.deliver(c.phone.peer, &reinvite);
    d.take_sent();
    d.take_events();
    d.cmd(|s, now| s.respond_modify(now, c.call, 488, None))
        .expect("reject");
    let resp = d.take_response(488);
    assert!(
        d.take_events().is_empty(),
        "a failed re-INVITE does not end the call"
    );
    d.deliver(c.phone.peer, c.dialog.ack_non_2xx(&resp));
    d.advance(secs(10));
    assert!(d.take_sent().is_empty());
    assert_eq!(d.stack.active_calls(), 1);
}

#[test]
fn reinvite_without_offer_gets_our_offer_and_the_answer_comes_in_the_ack() {
    let mut d = Driver::new(config());
    let mut c = established_inbound(&mut d, &[]);
    d.deliver(
        c.phone.peer,
        c.dialog.request(&mut c.phone, "INVITE").build(),
    );
    d.take_sent();
    assert_eq!(
        d.take_event(),
        SipEvent::Modify {
            call: c.call,
            body: None
        }
    );
    d.cmd(|s, now| s.respond_modify(now, c.call, 200, Some(sdp("sendrecv"))))
        .expect("offer");
    assert!(!d.take_response(200).body().is_empty());
    d.deliver(
        c.phone.peer,
        c.dialog
            .ack_2xx(&mut c.phone, 2)
            .sdp(&sdp("recvonly"))
            .build(),
    );
    assert_eq!(
        d.take_event(),
        SipEvent::Acked {
            call: c.call,
            body: Some(sdp("recvonly"))
        }
    );
}

#[test]
fn our_reinvite_gets_answered() {
    let mut d = Driver::new(config());
    let o = established_outbound(&mut d, &[]);
    d.cmd(|s, now| s.reinvite(now, o.call, sdp("sendonly")))
        .expect("hold");
    let reinvite = d.take_request("INVITE");
    assert_eq!(reinvite.cseq(), (2, "INVITE".to_string()));
    assert_eq!(reinvite.to_tag(), param(&o.dialog.local, "tag"));
    assert!(reinvite.body().contains("a=sendonly"));
    let r = d.cmd(|s, now| s.reinvite(now, o.call, sdp("sendrecv")));
    assert_eq!(r, Err(StackError::Pending(o.call)), "one offer at a time");
    d.deliver(
        o.phone.peer,
        Resp::to(&reinvite, 200, "OK", None)
            .h("Contact", o.phone.contact())
            .sdp(&sdp("recvonly"))
            .build(),
    );
    assert_eq!(d.take_request("ACK").cseq(), (2, "ACK".to_string()));
    assert_eq!(
        d.take_event(),
        SipEvent::ModifyResult {
            call: o.call,
            status: 200,
            body: Some(sdp("recvonly"))
        }
    );
}

#[test]
fn glare_gets_491_both_ways() {
    let mut d = Driver::new(config());
    let mut c = established_inbound(&mut d, &[]);
    d.cmd(|s, now| s.reinvite(now, c.call, sdp("sendonly")))
        .expect("our re-INVITE");
    let ours = d.take_request("INVITE");
    // The peer's re-INVITE crosses ours (§14.1).
    let theirs = c
        .dialog
        .request(&mut c.phone, "INVITE")
        .sdp(&sdp("sendonly"))
        .build();
    c.dialog.sent_invite(&theirs);
    d.deliver(c.phone.peer, &theirs);
    let codes: Vec<_> = d.take_sent().iter().map(|s| s.msg.status()).collect();
    assert_eq!(codes, vec![Some(100), Some(491)]);
    assert!(
        d.take_events().is_empty(),
        "no Modify for a request we refused"
    );
    // The peer refuses ours the same way.
    let pending = Resp::to(&ours, 491, "Request Pending", None).build();
    d.deliver(c.phone.peer, &pending);
    // §17.1.1.3: the ACK for a non-2xx to a re-INVITE: same Via, Request-URI and CSeq number.
    let ack = d.take_request("ACK");
    assert_eq!(ack.h("Via"), ours.h("Via"));
    assert_eq!(ack.uri(), ours.uri());
    assert_eq!(ack.cseq(), (ours.cseq().0, "ACK".to_string()));
    assert_eq!(ack.to_tag(), ours.to_tag());
    assert_eq!(
        d.take_event(),
        SipEvent::ModifyResult {
            call: c.call,
            status: 491,
            body: None
        }
    );
    // A retransmitted 491 gets the same ACK and no second ModifyResult.
    d.deliver(c.phone.peer, &pending);
    assert_eq!(d.take_one(), ack);
    assert!(d.take_events().is_empty());
    assert_eq!(d.stack.active_calls(), 1);
    // After the glare both sides may try again.
    d.cmd(|s, now| s.reinvite(now, c.call, sdp("sendonly")))
        .expect("retry");
    assert!(d.take_request("INVITE").cseq().0 > ours.cseq().0);
}

// ----- dialog matching and CSeq -----

#[test]
fn in_dialog_request_with_unknown_tag_gets_481() {
    let mut d = Driver::new(config());
    let mut c = established_inbound(&mut d, &[]);
    let mut stranger = c.dialog.clone();
    stranger.remote = "<sip:1000@192.0.2.1>;tag=nosuchtag".to_string();
    d.deliver(c.phone.peer, stranger.request(&mut c.phone, "BYE").build());
    let resp = d.take_one();
    assert_eq!(resp.status(), Some(481));
    assert!(d.take_events().is_empty());
    assert_eq!(d.stack.active_calls(), 1);
    // A BYE for no dialog at all (no To tag) is also 481.
    let mut other = c.phone.call("sip:1000@192.0.2.1");
    d.deliver(c.phone.peer, other.request(&mut c.phone, "BYE").build());
    assert_eq!(d.take_one().status(), Some(481));
}

#[test]
fn lower_cseq_than_the_previous_request_gets_500() {
    let mut d = Driver::new(config());
    let mut c = established_inbound(&mut d, &[]);
    c.dialog.local_seq = 9;
    d.deliver(c.phone.peer, c.dialog.request(&mut c.phone, "INFO").build()); // CSeq 10
    assert_eq!(d.take_one().status(), Some(200));
    d.take_events();
    c.dialog.local_seq = 4;
    d.deliver(c.phone.peer, c.dialog.request(&mut c.phone, "INFO").build()); // CSeq 5
    let resp = d.take_one();
    assert_eq!(resp.status(), Some(500));
    assert!(resp.reason().contains("CSeq"), "{}", resp.start_line());
    assert!(
        d.take_events().is_empty(),
        "the out-of-order INFO is not passed up"
    );
}

// ----- INFO, OPTIONS, UPDATE -----

#[test]
fn info_is_answered_and_passed_up() {
    let mut d = Driver::new(config());
    let mut c = established_inbound(&mut d, &[]);
    let info = c
        .dialog
        .request(&mut c.phone, "INFO")
        .body("application/dtmf-relay", "Signal=1\r\nDuration=100\r\n")
        .build();
    d.deliver(c.phone.peer, info);
    assert_eq!(d.take_one().status(), Some(200));
    assert_eq!(
        d.take_event(),
        SipEvent::Info {
            call: c.call,
            body: Some(Body::new(
                "application/dtmf-relay",
                "Signal=1\r\nDuration=100\r\n"
            ))
        }
    );
}

#[test]
fn options_in_dialog_gets_200_with_allow() {
    let mut d = Driver::new(config());
    let mut c = established_inbound(&mut d, &[]);
    d.deliver(
        c.phone.peer,
        c.dialog.request(&mut c.phone, "OPTIONS").build(),
    );
    let ok = d.take_one();
    assert_eq!(ok.status(), Some(200));
    assert!(
        ok.h("Allow").contains("INVITE") && ok.h("Allow").contains("BYE"),
        "{ok:?}"
    );
    assert!(d.take_events().is_empty());
}

#[test]
fn update_without_body_gets_200() {
    let mut d = Driver::new(config());
    let mut c = established_inbound(&mut d, &[]);
    d.deliver(
        c.phone.peer,
        c.dialog.request(&mut c.phone, "UPDATE").build(),
    );
    let ok = d.take_one();
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.h("CSeq"), "2 UPDATE");
    assert!(d.take_events().is_empty());
}

#[test]
fn update_with_offer_is_passed_up_and_answered() {
    let mut d = Driver::new(config());
    let mut c = established_inbound(&mut d, &[]);
    d.deliver(
        c.phone.peer,
        c.dialog
            .request(&mut c.phone, "UPDATE")
            .sdp(&sdp("sendonly"))
            .build(),
    );
    assert!(d.take_sent().is_empty(), "UPDATE waits for the TU's answer");
    assert_eq!(
        d.take_event(),
        SipEvent::Modify {
            call: c.call,
            body: Some(sdp("sendonly"))
        }
    );
    d.cmd(|s, now| s.respond_modify(now, c.call, 200, Some(sdp("recvonly"))))
        .expect("answer");
    let ok = d.take_one();
    assert_eq!(ok.status(), Some(200));
    assert!(ok.body().contains("a=recvonly"));
}

// ----- REFER -----

#[test]
fn refer_reports_202_then_notify_sipfrags() {
    let mut d = Driver::new(config());
    let mut c = established_inbound(&mut d, &[]);
    d.cmd(|s, now| s.refer(now, c.call, "sip:2000@192.0.2.50"))
        .expect("refer");
    let refer = d.take_request("REFER");
    assert_eq!(refer.h("Refer-To"), "<sip:2000@192.0.2.50>");
    assert!(refer.header("Referred-By").is_some());
    assert!(refer.header("Contact").is_some());
    d.deliver(
        c.phone.peer,
        Resp::to(&refer, 202, "Accepted", None).build(),
    );
    assert_eq!(
        d.take_event(),
        SipEvent::ReferProgress {
            call: c.call,
            status: 202,
            done: false
        }
    );
    let notify = |dialog: &mut PeerDialog, phone: &mut Phone, state: &str, frag: &str| {
        dialog
            .request(phone, "NOTIFY")
            .h("Event", "refer")
            .h("Subscription-State", state)
            .body("message/sipfrag;version=2.0", frag)
            .build()
    };
    d.deliver(
        c.phone.peer,
        notify(
            &mut c.dialog,
            &mut c.phone,
            "active;expires=60",
            "SIP/2.0 100 Trying\r\n",
        ),
    );
    assert_eq!(d.take_one().status(), Some(200));
    assert_eq!(
        d.take_event(),
        SipEvent::ReferProgress {
            call: c.call,
            status: 100,
            done: false
        }
    );
    d.deliver(
        c.phone.peer,
        notify(
            &mut c.dialog,
            &mut c.phone,
            "terminated;reason=noresource",
            "SIP/2.0 200 OK\r\n",
        ),
    );
    assert_eq!(d.take_one().status(), Some(200));
    assert_eq!(
        d.take_event(),
        SipEvent::ReferProgress {
            call: c.call,
            status: 200,
            done: true
        }
    );
    assert_eq!(d.stack.active_calls(), 1, "the transferor hangs up itself");
}

#[test]
fn refer_rejected_is_done() {
    let mut d = Driver::new(config());
    let c = established_inbound(&mut d, &[]);
    d.cmd(|s, now| s.refer(now, c.call, "sip:2000@192.0.2.50"))
        .expect("refer");
    let refer = d.take_request("REFER");
    d.deliver(c.phone.peer, Resp::to(&refer, 603, "Decline", None).build());
    assert_eq!(
        d.take_event(),
        SipEvent::ReferProgress {
            call: c.call,
            status: 603,
            done: true
        }
    );
}

#[test]
fn notify_for_another_event_gets_489() {
    let mut d = Driver::new(config());
    let mut c = established_inbound(&mut d, &[]);
    let n = c
        .dialog
        .request(&mut c.phone, "NOTIFY")
        .h("Event", "presence")
        .h("Subscription-State", "active")
        .build();
    d.deliver(c.phone.peer, n);
    assert_eq!(d.take_one().status(), Some(489));
    assert!(d.take_events().is_empty());
}

// ----- route set and remote target -----

#[test]
fn uas_route_set_comes_from_record_route_in_order() {
    let mut d = Driver::new(config());
    let rr = "<sip:198.51.100.1:5070;lr>, <sip:198.51.100.2;lr>";
    let c = established_inbound(&mut d, &[("Record-Route", rr)]);
    d.cmd(|s, now| s.hangup(now, c.call)).expect("hangup");
    let sent = d.take_sent();
    assert_eq!(sent.len(), 1);
    let bye = &sent[0].msg;
    assert_eq!(
        bye.headers("Route"),
        vec!["<sip:198.51.100.1:5070;lr>", "<sip:198.51.100.2;lr>"]
    );
    assert_eq!(
        bye.uri(),
        c.phone.uri(),
        "loose routing: the Request-URI stays the remote target"
    );
    assert_eq!(
        sent[0].peer,
        udp("198.51.100.1:5070"),
        "sent to the first route"
    );
}

#[test]
fn uas_2xx_echoes_record_route() {
    let mut d = Driver::new(config());
    let c = inbound_invite(&mut d, &[("Record-Route", "<sip:198.51.100.1:5070;lr>")]);
    d.cmd(|s, now| s.respond(now, c.call, 200, Some(sdp("sendrecv"))))
        .expect("answer");
    assert_eq!(
        d.take_response(200).headers("Record-Route"),
        vec!["<sip:198.51.100.1:5070;lr>"]
    );
}

#[test]
fn uac_route_set_is_record_route_reversed() {
    let mut d = Driver::new(config());
    let o = established_outbound(
        &mut d,
        &[
            ("Record-Route", "<sip:198.51.100.2;lr>"),
            ("Record-Route", "<sip:198.51.100.1:5070;lr>"),
        ],
    );
    d.cmd(|s, now| s.hangup(now, o.call)).expect("hangup");
    let sent = d.take_sent();
    let bye = &sent[0].msg;
    assert!(bye.is("BYE"));
    assert_eq!(
        bye.headers("Route"),
        vec!["<sip:198.51.100.1:5070;lr>", "<sip:198.51.100.2;lr>"]
    );
    assert_eq!(sent[0].peer, udp("198.51.100.1:5070"));
}

#[test]
fn reinvite_contact_refreshes_the_remote_target() {
    let mut d = Driver::new(config());
    let mut c = established_inbound(&mut d, &[]);
    let reinvite = c
        .dialog
        .request(&mut c.phone, "INVITE")
        .set("Contact", "<sip:alice@192.0.2.10:5070>")
        .sdp(&sdp("sendrecv"))
        .build();
    d.deliver(c.phone.peer, reinvite);
    d.take_sent();
    d.take_events();
    d.cmd(|s, now| s.respond_modify(now, c.call, 200, Some(sdp("sendrecv"))))
        .expect("ok");
    d.take_sent();
    d.deliver(c.phone.peer, c.dialog.ack_2xx(&mut c.phone, 2).build());
    d.take_events();
    d.cmd(|s, now| s.hangup(now, c.call)).expect("hangup");
    let sent = d.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].msg.uri(), "sip:alice@192.0.2.10:5070");
    assert_eq!(sent[0].peer, udp("192.0.2.10:5070"));
}

#[test]
fn uac_remote_target_is_the_200_contact() {
    let mut d = Driver::new(config());
    let mut phone = Phone::new();
    let call = d.cmd(|s, now| s.invite(now, outgoing(phone.peer)));
    let invite = d.take_request("INVITE");
    let tag = phone.tag();
    let ok = Resp::to(&invite, 200, "OK", Some(&tag))
        .h("Contact", "<sip:bob@192.0.2.10:5080>")
        .sdp(&sdp("sendrecv"));
    d.deliver(phone.peer, ok.build());
    let ack = d.take_request("ACK");
    assert_eq!(ack.uri(), "sip:bob@192.0.2.10:5080");
    d.take_events();
    d.cmd(|s, now| s.hangup(now, call)).expect("hangup");
    let sent = d.take_sent();
    assert_eq!(sent[0].msg.uri(), "sip:bob@192.0.2.10:5080");
    assert_eq!(sent[0].peer, udp("192.0.2.10:5080"));
}
