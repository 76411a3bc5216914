//! Overload (issue 9: a UDP flood grew RSS to 620–890 MiB and kept it): live server
//! transactions are bounded by `max_transactions`. Out-of-dialog requests other than INVITE
//! may fill half, so a flood of OPTIONS leaves room for calls; beyond the bound a new INVITE
//! gets a stateless 503 with Retry-After and the rest are dropped and counted. When the
//! transactions end (Timer J, 32 s) the state is released and requests are served again.
//! Virtual clock.

use crate::harness;

use std::time::Duration;

use harness::*;
use voxline::sip::StackConfig;
use voxline::sip::stack::OVERLOAD_RETRY_AFTER_S;

/// A new OPTIONS (its own branch and Call-ID) from `port`.
fn options(n: u32, port: u16) -> String {
    format!(
        "OPTIONS sip:voxline@{VOX_ADDR} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.50:{port};branch=z9hG4bK-o{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:flood@192.0.2.50>;tag=f{n}\r\n\
         To: <sip:voxline@{VOX_ADDR}>\r\nCall-ID: o{n}@192.0.2.50\r\nCSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

fn invite_text(phone: &mut Phone) -> String {
    let mut dialog = phone.call("sip:1000@192.0.2.1");
    dialog.invite(phone).h("Contact", phone.contact()).build()
}

#[test]
fn a_flood_is_bounded_leaves_room_for_calls_and_is_released() {
    let cfg = StackConfig {
        max_transactions: 64,
        ..config()
    };
    let mut d = Driver::new(cfg);
    let flood = udp("192.0.2.50:5060");
    for n in 0..100 {
        d.deliver(flood, options(n, 5060));
    }
    let answered = d.take_sent().len();
    // Half the room for out-of-dialog OPTIONS; the other 68 dropped without an answer.
    assert_eq!(answered, 32);
    assert_eq!(d.stack.transaction_count().0, 32);
    assert_eq!(d.stack.counters().dropped_overload, 68);
    // A retransmission of an admitted OPTIONS is still absorbed and answered again.
    d.deliver(flood, options(0, 5060));
    assert_eq!(d.take_sent().len(), 1);

    // Calls still get in, up to the bound.
    for k in 0..32 {
        let mut phone = Phone::at(udp(&format!("192.0.2.{}:5060", 100 + k)));
        d.deliver(phone.peer, invite_text(&mut phone));
        let sent = d.take_sent();
        assert_eq!(sent[0].msg.status(), Some(100), "call {k}");
    }
    assert_eq!(d.stack.transaction_count().0, 64);
    // Beyond it: a stateless 503 with Retry-After, no state, no event.
    d.take_events();
    let mut late = Phone::at(udp("192.0.2.200:5060"));
    d.deliver(late.peer, invite_text(&mut late));
    let sent = d.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].msg.start_line(), "SIP/2.0 503 Service Unavailable");
    assert_eq!(
        sent[0].msg.h("Retry-After"),
        OVERLOAD_RETRY_AFTER_S.to_string()
    );
    assert!(d.take_events().is_empty());
    assert_eq!(d.stack.transaction_count().0, 64);
    assert_eq!(d.stack.counters().dropped_overload, 69);

    // The OPTIONS transactions end after Timer J (64·T1), releasing their room: the 32
    // ringing calls' INVITE transactions remain, and a new call gets in.
    d.advance(Duration::from_secs(40));
    d.take_sent();
    assert_eq!(d.stack.transaction_count().0, 32);
    d.deliver(late.peer, invite_text(&mut late));
    assert_eq!(d.take_sent()[0].msg.status(), Some(100));
    assert_eq!(d.stack.counters().dropped_overload, 69);
}

#[test]
fn without_calls_every_flooded_transaction_ends_and_options_are_served_again() {
    let cfg = StackConfig {
        max_transactions: 64,
        ..config()
    };
    let mut d = Driver::new(cfg);
    let flood = udp("192.0.2.50:5060");
    for n in 0..1000 {
        d.deliver(flood, options(n, 5060));
    }
    assert_eq!(d.take_sent().len(), 32);
    d.advance(Duration::from_secs(40));
    assert_eq!(d.stack.transaction_count(), (0, 0));
    d.deliver(flood, options(5000, 5060));
    assert_eq!(d.take_sent().len(), 1);
}
