//! Limits and refusals: the call limit (486, or 503 with Retry-After), malformed requests
//! (400 with a reason phrase), garbage (dropped and counted), unknown methods (501), known but
//! unsupported ones (405 with Allow), unsupported extensions (420 with Unsupported), oversized
//! messages (513), Max-Forwards: 0 (483) and OPTIONS out of dialog (200 with Allow).

use crate::harness;

use harness::*;
use voxline::sip::message::Limits;
use voxline::sip::{EndReason, LimitResponse, SipEvent, StackConfig};

/// A complete INVITE text from the phone, with `edit` applied to the request builder.
fn invite_text(phone: &mut Phone, edit: impl FnOnce(Req) -> Req) -> String {
    let mut dialog = phone.call("sip:1000@192.0.2.1");
    let req = dialog.invite(phone).h("Contact", phone.contact());
    edit(req).build()
}

fn codes(d: &mut Driver) -> Vec<Option<u16>> {
    d.take_sent().iter().map(|s| s.msg.status()).collect()
}

#[test]
fn beyond_max_calls_gets_503_with_retry_after_until_a_call_ends() {
    let cfg = StackConfig {
        max_calls: 1,
        at_limit: LimitResponse::Unavailable { retry_after_s: 30 },
        ..config()
    };
    let mut d = Driver::new(cfg);
    let mut first = established_inbound(&mut d, &[]);
    let mut phone = Phone::at(udp("192.0.2.11:5060"));
    d.deliver(phone.peer, invite_text(&mut phone, |r| r));
    let sent = d.take_sent();
    assert_eq!(sent.len(), 2);
    let refused = &sent[1].msg;
    assert_eq!(refused.start_line(), "SIP/2.0 503 Service Unavailable");
    assert_eq!(refused.h("Retry-After"), "30");
    assert!(d.take_events().is_empty());
    assert_eq!(d.stack.counters().refused_at_limit, 1);
    // The first call ends; the next one is accepted.
    d.deliver(
        first.phone.peer,
        first.dialog.request(&mut first.phone, "BYE").build(),
    );
    d.take_sent();
    assert_eq!(
        d.take_event(),
        SipEvent::Ended {
            call: first.call,
            reason: EndReason::RemoteBye
        }
    );
    d.deliver(phone.peer, invite_text(&mut phone, |r| r));
    assert_eq!(codes(&mut d), vec![Some(100)]);
    assert!(matches!(d.take_event(), SipEvent::IncomingCall(_)));
}

#[test]
fn beyond_max_calls_gets_486_when_configured_busy() {
    let cfg = StackConfig {
        max_calls: 1,
        at_limit: LimitResponse::Busy,
        ..config()
    };
    let mut d = Driver::new(cfg);
    let _first = inbound_invite(&mut d, &[]); // ringing counts too
    let mut phone = Phone::at(udp("192.0.2.11:5060"));
    d.deliver(phone.peer, invite_text(&mut phone, |r| r));
    assert_eq!(codes(&mut d), vec![Some(100), Some(486)]);
    assert_eq!(d.stack.active_calls(), 1);
}

#[test]
fn request_missing_cseq_gets_400_with_reason() {
    let mut d = Driver::new(config());
    let mut phone = Phone::new();
    let text = invite_text(&mut phone, |r| r.without("CSeq"));
    d.deliver(phone.peer, &text);
    let sent = d.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].peer, phone.peer);
    let resp = &sent[0].msg;
    assert_eq!(resp.start_line(), "SIP/2.0 400 Bad Request - missing CSeq");
    assert_eq!(resp.call_id(), Wire { text }.call_id());
    assert!(d.take_events().is_empty());
    assert_eq!(d.stack.counters().rejected_malformed, 1);
    assert_eq!(d.stack.counters().dropped_malformed, 0);
}

#[test]
fn body_shorter_than_content_length_gets_400() {
    let mut d = Driver::new(config());
    let mut phone = Phone::new();
    let text = invite_text(&mut phone, |r| r.sdp(&sdp("sendrecv")));
    let cut = text.replace("Content-Length: ", "Content-Length: 9");
    d.deliver(phone.peer, cut);
    let resp = d.take_one();
    assert_eq!(resp.status(), Some(400));
    assert_eq!(
        resp.reason(),
        "Bad Request - body shorter than Content-Length"
    );
}

#[test]
fn cseq_method_mismatch_gets_400() {
    let mut d = Driver::new(config());
    let mut phone = Phone::new();
    d.deliver(
        phone.peer,
        invite_text(&mut phone, |r| r.set("CSeq", "1 BYE")),
    );
    let resp = d.take_one();
    assert_eq!(resp.status(), Some(400));
    assert!(resp.reason().contains("CSeq"), "{}", resp.start_line());
}

#[test]
fn garbage_is_dropped_and_counted() {
    let mut d = Driver::new(config());
    let phone = Phone::new();
    for junk in [
        &b"\x00\x01\x02\xff"[..],
        b"hello world\r\n\r\n",
        b"",
        b"SIP/2.0 200 OK\r\n\r\n",
        b"INVITE\r\n\r\n",
    ] {
        d.deliver(phone.peer, junk);
    }
    assert!(d.take_sent().is_empty());
    assert!(d.take_events().is_empty());
    let c = d.stack.counters();
    assert_eq!(c.dropped_malformed, 5);
    assert_eq!(c.rejected_malformed, 0);
    assert_eq!(c.messages_in, 0);
}

#[test]
fn malformed_ack_is_dropped_without_reply() {
    let mut d = Driver::new(config());
    let mut c = established_inbound(&mut d, &[]);
    let ack = c.dialog.ack_2xx(&mut c.phone, 1).without("CSeq").build();
    d.deliver(c.phone.peer, ack);
    assert!(d.take_sent().is_empty(), "never answer an ACK");
    assert_eq!(d.stack.counters().dropped_malformed, 1);
}

#[test]
fn stray_response_is_counted() {
    let mut d = Driver::new(config());
    let mut phone = Phone::new();
    let req = Wire {
        text: invite_text(&mut phone, |r| r),
    };
    d.deliver(phone.peer, Resp::to(&req, 200, "OK", Some("x")).build());
    assert!(d.take_sent().is_empty());
    assert_eq!(d.stack.counters().stray_responses, 1);
}

#[test]
fn unknown_method_gets_501() {
    let mut d = Driver::new(config());
    let mut phone = Phone::new();
    let mut dialog = phone.call("sip:1000@192.0.2.1");
    let text = dialog.request(&mut phone, "FROB").build();
    d.deliver(phone.peer, text);
    let resp = d.take_one();
    assert_eq!(resp.start_line(), "SIP/2.0 501 Not Implemented");
    assert!(resp.h("CSeq").ends_with("FROB"));
    assert!(d.take_events().is_empty());
}

#[test]
fn known_but_unsupported_method_gets_405_with_allow() {
    let mut d = Driver::new(config());
    let mut phone = Phone::new();
    let mut dialog = phone.call("sip:1000@192.0.2.1");
    d.deliver(
        phone.peer,
        dialog
            .request(&mut phone, "MESSAGE")
            .body("text/plain", "hi")
            .build(),
    );
    let resp = d.take_one();
    assert_eq!(resp.status(), Some(405));
    assert!(resp.h("Allow").contains("INVITE"));
}

#[test]
fn required_unknown_extension_gets_420_with_unsupported() {
    let mut d = Driver::new(config());
    let mut phone = Phone::new();
    d.deliver(
        phone.peer,
        invite_text(&mut phone, |r| r.h("Require", "100rel, foo")),
    );
    let sent = d.take_sent();
    assert_eq!(sent.len(), 2);
    let resp = &sent[1].msg;
    assert_eq!(resp.start_line(), "SIP/2.0 420 Bad Extension");
    assert_eq!(
        resp.h("Unsupported"),
        "foo",
        "only the unknown tag is listed"
    );
    assert!(d.take_events().is_empty());
    assert_eq!(d.stack.active_calls(), 0);
}

#[test]
fn max_forwards_zero_gets_483() {
    let mut d = Driver::new(config());
    let mut phone = Phone::new();
    d.deliver(
        phone.peer,
        invite_text(&mut phone, |r| r.set("Max-Forwards", "0")),
    );
    assert_eq!(codes(&mut d), vec![Some(100), Some(483)]);
    assert!(d.take_events().is_empty());
}

#[test]
fn oversized_request_gets_513() {
    let cfg = StackConfig {
        limits: Limits {
            max_message_bytes: 1500,
            max_headers: 128,
        },
        ..config()
    };
    let mut d = Driver::new(cfg);
    let mut phone = Phone::new();
    let big = "x".repeat(2000);
    d.deliver(
        phone.peer,
        invite_text(&mut phone, |r| r.body("text/plain", &big)),
    );
    let resp = d.take_one();
    assert_eq!(resp.status(), Some(513));
    assert_eq!(d.stack.counters().rejected_malformed, 1);
}

#[test]
fn options_out_of_dialog_gets_200_with_allow() {
    let mut d = Driver::new(config());
    let mut phone = Phone::new();
    let mut dialog = phone.call("sip:1000@192.0.2.1");
    d.deliver(phone.peer, dialog.request(&mut phone, "OPTIONS").build());
    let resp = d.take_one();
    assert_eq!(resp.start_line(), "SIP/2.0 200 OK");
    let allow = resp.h("Allow");
    for m in [
        "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE", "PRACK", "REFER", "NOTIFY", "INFO",
    ] {
        assert!(allow.contains(m), "{m} in {allow}");
    }
    assert_eq!(resp.h("Accept"), "application/sdp");
    assert!(resp.to_tag().is_some());
    assert!(d.take_events().is_empty());
    assert_eq!(d.stack.active_calls(), 0);
    d.advance(secs(40));
    assert_eq!(
        d.stack.transaction_count(),
        (0, 0),
        "Timer J ended the OPTIONS transaction"
    );
}
