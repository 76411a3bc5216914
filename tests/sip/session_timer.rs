//! Session timers (RFC 4028) on a virtual clock: the 200 echoes the negotiated interval and
//! refresher; when the peer refreshes and stops, voxline sends BYE at
//! `interval − min(32 s, interval/3)`; when voxline refreshes it sends UPDATE (peer allows it)
//! or re-INVITE at half the interval; a too-small interval gets 422 with Min-SE.

use crate::harness;

use harness::*;
use voxline::sip::{EndReason, SipEvent, StackConfig};

const ALLOW_NO_UPDATE: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS";

#[test]
fn peer_refresher_that_never_refreshes_gets_bye_before_expiry() {
    let mut d = Driver::new(config());
    let mut c = inbound_invite(&mut d, &[("Session-Expires", "90;refresher=uac")]);
    d.cmd(|s, now| s.respond(now, c.call, 200, Some(sdp("sendrecv"))))
        .expect("answer");
    let ok = d.take_response(200);
    assert_eq!(
        ok.h("Session-Expires"),
        "90;refresher=uac",
        "echoed (RFC 4028 §9)"
    );
    assert!(
        ok.headers("Require").iter().any(|r| r.contains("timer")),
        "{ok:?}"
    );
    c.dialog.learn(&ok);
    d.deliver(c.phone.peer, c.dialog.ack_2xx(&mut c.phone, 1).build());
    d.take_events();
    // 90 − min(32, 90/3) = 60 s.
    d.advance_to_offset(ms(59_999));
    assert!(d.take_sent().is_empty());
    assert!(d.take_events().is_empty());
    d.advance(ms(1));
    let bye = d.take_request("BYE");
    assert_eq!(
        bye.to_tag(),
        c.dialog.invite.as_ref().and_then(|i| i.from_tag())
    );
    assert_eq!(
        d.take_event(),
        SipEvent::Ended {
            call: c.call,
            reason: EndReason::SessionExpired
        }
    );
}

#[test]
fn peer_refresh_by_reinvite_restarts_the_interval() {
    let mut d = Driver::new(config());
    let mut c = established_inbound(&mut d, &[("Session-Expires", "90;refresher=uac")]);
    d.advance_to_offset(secs(40));
    let refresh = c
        .dialog
        .request(&mut c.phone, "INVITE")
        .h("Session-Expires", "90;refresher=uac")
        .sdp(&sdp("sendrecv"))
        .build();
    d.deliver(c.phone.peer, refresh);
    d.take_sent();
    assert!(matches!(d.take_event(), SipEvent::Modify { .. }));
    d.cmd(|s, now| s.respond_modify(now, c.call, 200, Some(sdp("sendrecv"))))
        .expect("ok");
    let ok = d.take_response(200);
    assert_eq!(ok.h("Session-Expires"), "90;refresher=uac");
    d.deliver(c.phone.peer, c.dialog.ack_2xx(&mut c.phone, 2).build());
    d.take_events();
    d.advance_to_offset(ms(99_999));
    assert!(
        d.take_sent().is_empty(),
        "no BYE at 60 s: the refresh moved expiry to 100 s"
    );
    d.advance(ms(1));
    d.take_request("BYE");
    assert_eq!(
        d.take_event(),
        SipEvent::Ended {
            call: c.call,
            reason: EndReason::SessionExpired
        }
    );
}

#[test]
fn peer_refresh_by_update_restarts_the_interval() {
    let mut d = Driver::new(config());
    let mut c = established_inbound(&mut d, &[("Session-Expires", "90;refresher=uac")]);
    d.advance_to_offset(secs(50));
    let refresh = c
        .dialog
        .request(&mut c.phone, "UPDATE")
        .h("Session-Expires", "90;refresher=uac")
        .build();
    d.deliver(c.phone.peer, refresh);
    let ok = d.take_one();
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.h("Session-Expires"), "90;refresher=uac");
    assert!(
        d.take_events().is_empty(),
        "a body-less refresh is not a Modify"
    );
    d.advance_to_offset(ms(109_999));
    assert!(d.take_sent().is_empty());
    d.advance(ms(1));
    d.take_request("BYE");
    assert_eq!(
        d.take_event(),
        SipEvent::Ended {
            call: c.call,
            reason: EndReason::SessionExpired
        }
    );
}

#[test]
fn as_refresher_we_send_update_at_half_the_interval() {
    let mut d = Driver::new(config());
    let mut c = inbound_invite(&mut d, &[("Session-Expires", "90;refresher=uas")]);
    d.cmd(|s, now| s.respond(now, c.call, 200, Some(sdp("sendrecv"))))
        .expect("answer");
    let ok = d.take_response(200);
    assert_eq!(ok.h("Session-Expires"), "90;refresher=uas");
    c.dialog.learn(&ok);
    d.deliver(c.phone.peer, c.dialog.ack_2xx(&mut c.phone, 1).build());
    d.take_events();
    let mut updates = Vec::new();
    for _ in 0..2 {
        let t = d.elapsed() + secs(45);
        d.advance_to(d.at(t) - ms(1));
        assert!(d.take_sent().is_empty(), "nothing before interval/2");
        d.advance(ms(1));
        let update = d.take_request("UPDATE");
        // RFC 4028 §4: the refresher names a role in this transaction, where we are the UAC.
        assert_eq!(update.h("Session-Expires"), "90;refresher=uac");
        assert_eq!(update.body(), "", "a refresh UPDATE carries no offer");
        assert_eq!(update.uri(), c.phone.uri());
        updates.push((d.elapsed(), update.cseq().0));
        let ok = Resp::to(&update, 200, "OK", None)
            .h("Session-Expires", "90;refresher=uac")
            .build();
        d.deliver(c.phone.peer, ok);
    }
    assert_eq!(updates[0].0, secs(45));
    assert_eq!(updates[1].0, secs(90));
    assert_eq!(updates[1].1, updates[0].1 + 1);
    assert!(
        d.take_events().is_empty(),
        "refreshes are invisible to the call layer"
    );
    assert_eq!(d.stack.active_calls(), 1);
}

#[test]
fn as_refresher_without_peer_update_we_send_reinvite_with_the_same_sdp() {
    let mut d = Driver::new(config());
    let mut c = inbound_invite(
        &mut d,
        &[
            ("Session-Expires", "90;refresher=uas"),
            ("Allow", ALLOW_NO_UPDATE),
        ],
    );
    d.cmd(|s, now| s.respond(now, c.call, 200, Some(sdp("sendrecv"))))
        .expect("answer");
    let ok = d.take_response(200);
    c.dialog.learn(&ok);
    d.deliver(c.phone.peer, c.dialog.ack_2xx(&mut c.phone, 1).build());
    d.take_events();
    d.advance_to_offset(secs(45));
    let reinvite = d.take_request("INVITE");
    assert_eq!(reinvite.h("Session-Expires"), "90;refresher=uac");
    assert_eq!(
        reinvite.body(),
        ok.body(),
        "the refresh repeats our last SDP"
    );
    d.deliver(
        c.phone.peer,
        Resp::to(&reinvite, 200, "OK", None)
            .h("Contact", c.phone.contact())
            .sdp(&sdp("sendrecv"))
            .build(),
    );
    let ack = d.take_request("ACK");
    assert_eq!(ack.cseq(), (reinvite.cseq().0, "ACK".to_string()));
    d.take_events();
    d.advance_to_offset(secs(90) - ms(1));
    assert!(d.take_sent().is_empty());
    d.advance(ms(1));
    d.take_request("INVITE");
}

#[test]
fn refresh_rejected_with_481_ends_the_dialog() {
    let mut d = Driver::new(config());
    let mut c = inbound_invite(&mut d, &[("Session-Expires", "90;refresher=uas")]);
    d.cmd(|s, now| s.respond(now, c.call, 200, Some(sdp("sendrecv"))))
        .expect("answer");
    let ok = d.take_response(200);
    c.dialog.learn(&ok);
    d.deliver(c.phone.peer, c.dialog.ack_2xx(&mut c.phone, 1).build());
    d.take_events();
    d.advance_to_offset(secs(45));
    let update = d.take_request("UPDATE");
    d.deliver(
        c.phone.peer,
        Resp::to(&update, 481, "Call/Transaction Does Not Exist", None).build(),
    );
    d.take_request("BYE");
    assert_eq!(
        d.take_event(),
        SipEvent::Ended {
            call: c.call,
            reason: EndReason::DialogLost(481)
        }
    );
}

#[test]
fn session_expires_below_min_se_gets_422() {
    let mut d = Driver::new(config());
    let mut phone = Phone::new();
    let mut dialog = phone.call("sip:1000@192.0.2.1");
    let invite = dialog
        .invite(&mut phone)
        .h("Contact", phone.contact())
        .h("Session-Expires", "60")
        .build();
    dialog.sent_invite(&invite);
    d.deliver(phone.peer, &invite);
    let sent = d.take_sent();
    assert_eq!(sent.len(), 2);
    let too_small = &sent[1].msg;
    assert_eq!(too_small.status(), Some(422));
    assert_eq!(too_small.h("Min-SE"), "90");
    assert!(d.take_events().is_empty(), "not a call");
    d.deliver(phone.peer, dialog.ack_non_2xx(too_small));
    d.advance(secs(10));
    assert!(d.take_sent().is_empty());
    assert_eq!(d.stack.transaction_count().0, 0);
}

#[test]
fn configured_min_se_is_enforced() {
    let cfg = StackConfig {
        min_se: secs(600),
        ..config()
    };
    let mut d = Driver::new(cfg);
    let mut phone = Phone::new();
    let mut dialog = phone.call("sip:1000@192.0.2.1");
    let invite = dialog
        .invite(&mut phone)
        .h("Session-Expires", "300;refresher=uac")
        .build();
    d.deliver(phone.peer, &invite);
    let resp = d.take_response(422);
    assert_eq!(resp.h("Min-SE"), "600");
}

#[test]
fn without_peer_session_expires_we_refresh_our_own_interval() {
    let cfg = StackConfig {
        session_expires: Some(secs(120)),
        ..config()
    };
    let mut d = Driver::new(cfg);
    let mut c = inbound_invite(&mut d, &[]);
    d.cmd(|s, now| s.respond(now, c.call, 200, Some(sdp("sendrecv"))))
        .expect("answer");
    let ok = d.take_response(200);
    assert_eq!(ok.h("Session-Expires"), "120;refresher=uas");
    c.dialog.learn(&ok);
    d.deliver(c.phone.peer, c.dialog.ack_2xx(&mut c.phone, 1).build());
    d.take_events();
    d.advance_to_offset(secs(60));
    assert_eq!(
        d.take_request("UPDATE").h("Session-Expires"),
        "120;refresher=uac"
    );
}

#[test]
fn outbound_invite_offers_session_timer_and_the_uac_refreshes() {
    let mut d = Driver::new(config());
    let o = established_outbound(
        &mut d,
        &[
            ("Session-Expires", "120;refresher=uac"),
            ("Allow", "INVITE, ACK, BYE, CANCEL, UPDATE"),
        ],
    );
    assert_eq!(o.invite.h("Session-Expires"), "1800");
    assert_eq!(o.invite.h("Min-SE"), "90");
    assert!(o.invite.h("Supported").contains("timer"));
    d.advance(secs(60) - ms(1));
    assert!(d.take_sent().is_empty());
    d.advance(ms(1));
    let update = d.take_request("UPDATE");
    assert_eq!(update.h("Session-Expires"), "120;refresher=uac");
}

#[test]
fn outbound_call_where_the_uas_refreshes_expires_without_refresh() {
    let mut d = Driver::new(config());
    let o = established_outbound(&mut d, &[("Session-Expires", "120;refresher=uas")]);
    // 120 − min(32, 40) = 88 s.
    d.advance(secs(88) - ms(1));
    assert!(d.take_sent().is_empty());
    d.advance(ms(1));
    d.take_request("BYE");
    assert_eq!(
        d.take_event(),
        SipEvent::Ended {
            call: o.call,
            reason: EndReason::SessionExpired
        }
    );
}
