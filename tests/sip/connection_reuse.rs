//! Connection reuse over TLS: in-dialog requests go back over the connection the dialog came
//! over, and to the Contact once it has closed (RFC 3261 §18.1.1); voxline's Via asks for
//! reuse (RFC 5923 `alias`) on the connections it opens; a TLS client's `alias` is honoured
//! for the address its connection proves, so a new request for the client's advertised
//! address goes over the connection it opened, until that connection closes. An alias for
//! another host is not honoured (voxline does not authenticate TLS clients by certificate).

use crate::harness;

use harness::*;
use voxline::sip::{Peer, SipEvent, Transport};

/// The client's connection: its host, from an ephemeral port.
const CONNECTION: &str = "198.51.100.7:40312";
/// The address it listens on and advertises.
const ADVERTISED: &str = "198.51.100.7:5061";

fn tls(s: &str) -> Peer {
    Peer {
        transport: Transport::Tls,
        addr: addr(s),
    }
}

/// An inbound call over the TLS connection [`CONNECTION`] whose INVITE's Via is `via_sent_by`
/// with `params`, Contact [`ADVERTISED`]; answered and ACKed. Returns the driver and handle.
fn call_over_tls(via_sent_by: &str, params: &str) -> (Driver, voxline::sip::CallHandle) {
    let mut d = Driver::new(config());
    let mut phone = Phone::at(tls(CONNECTION));
    let via = format!("SIP/2.0/TLS {via_sent_by};branch=z9hG4bK-reuse1;rport{params}");
    let contact = format!("<sip:alice@{ADVERTISED};transport=tls>");
    let parts = inbound_invite_from(&mut d, &mut phone, &[("Via", &via), ("Contact", &contact)]);
    let mut c = parts.into_inbound(phone);
    d.cmd(|s, now| s.respond(now, c.call, 200, Some(sdp("sendrecv"))))
        .expect("answer");
    let ok = d.take_response(200);
    assert_eq!(
        d.take_sent().len(),
        0,
        "nothing else is sent before the ACK"
    );
    c.dialog.learn(&ok);
    let ack = c.dialog.ack_2xx(&mut c.phone, 1).build();
    d.deliver(c.phone.peer, ack);
    assert!(matches!(d.take_event(), SipEvent::Acked { .. }));
    (d, c.call)
}

/// Where voxline's BYE for `call` goes.
fn bye_goes_to(d: &mut Driver, call: voxline::sip::CallHandle) -> Peer {
    d.cmd(|s, now| s.hangup(now, call)).expect("hangup");
    let sent = d.take_sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].msg.is("BYE"));
    assert_eq!(
        sent[0].msg.uri(),
        format!("sip:alice@{ADVERTISED};transport=tls"),
        "the Request-URI stays the Contact"
    );
    sent[0].peer
}

/// Where voxline's new INVITE (out of any dialog) to [`ADVERTISED`] goes.
fn new_invite_goes_to(d: &mut Driver) -> Peer {
    d.cmd(|s, now| s.invite(now, outgoing(tls(ADVERTISED))));
    let sent = d.take_sent();
    assert!(sent[0].msg.is("INVITE"), "{sent:?}");
    sent[0].peer
}

#[test]
fn in_dialog_requests_reuse_the_connection_the_dialog_came_over() {
    // With or without alias: the dialog's own connection (RFC 3261 §18.1.1 reuse).
    for params in ["", ";alias"] {
        let (mut d, call) = call_over_tls(ADVERTISED, params);
        assert_eq!(bye_goes_to(&mut d, call), tls(CONNECTION), "{params}");
    }
}

#[test]
fn when_the_connection_closes_in_dialog_requests_go_to_the_contact() {
    let (mut d, call) = call_over_tls(ADVERTISED, "");
    d.cmd(|s, now| s.handle_transport_error(now, tls(CONNECTION)));
    assert_eq!(bye_goes_to(&mut d, call), tls(ADVERTISED));
}

#[test]
fn an_alias_sends_new_requests_for_the_advertised_address_over_the_clients_connection() {
    let (mut d, _call) = call_over_tls(ADVERTISED, ";alias");
    assert_eq!(new_invite_goes_to(&mut d), tls(CONNECTION));
}

#[test]
fn without_alias_new_requests_open_a_connection_to_the_advertised_address() {
    let (mut d, _call) = call_over_tls(ADVERTISED, "");
    assert_eq!(new_invite_goes_to(&mut d), tls(ADVERTISED));
}

#[test]
fn an_alias_for_another_host_is_not_honoured() {
    // The sent-by claims another host than the connection comes from: taking it would let
    // any TLS client receive requests meant for that host.
    let (mut d, _call) = call_over_tls("203.0.113.9:5061", ";alias");
    d.cmd(|s, now| s.invite(now, outgoing(tls("203.0.113.9:5061"))));
    let sent = d.take_sent();
    assert_eq!(sent[0].peer, tls("203.0.113.9:5061"));
}

#[test]
fn the_alias_ends_with_its_connection() {
    let (mut d, call) = call_over_tls(ADVERTISED, ";alias");
    d.cmd(|s, now| s.handle_transport_error(now, tls(CONNECTION)));
    assert_eq!(new_invite_goes_to(&mut d), tls(ADVERTISED));
    assert_eq!(bye_goes_to(&mut d, call), tls(ADVERTISED));
}

#[test]
fn voxlines_via_asks_for_reuse_over_tls_only() {
    let mut d = Driver::new(config());
    for (peer, alias) in [(tls(ADVERTISED), true), (udp(PEER_ADDR), false)] {
        d.cmd(|s, now| s.invite(now, outgoing(peer)));
        let sent = d.take_sent();
        let invite = &sent[0].msg;
        assert!(invite.is("INVITE"));
        let via = invite.h("Via");
        assert_eq!(via.contains(";alias"), alias, "{via}");
        assert_eq!(
            via.starts_with("SIP/2.0/TLS "),
            peer.transport == Transport::Tls,
            "{via}"
        );
    }
}
