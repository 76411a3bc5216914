//! An outbound INVITE challenged by a proxy (407) or the callee (401): the challenge is ACKed
//! on the INVITE's branch (RFC 3261 §17.1.1.3) and a new INVITE goes out with the digest,
//! CSeq + 1, the same Call-ID and From tag (§22.2). Wrong credentials fail without looping,
//! and the dialog's CSeq continues from the authenticated INVITE.

use crate::harness;

use harness::*;
use voxline::sip::auth::{DigestResponse, verify};
use voxline::sip::stack::MAX_AUTH_ATTEMPTS;
use voxline::sip::{EndReason, OutgoingCall, SipEvent};

const PASSWORD: &str = "s3cret";
const CHALLENGE: &str =
    r#"Digest realm="sip.example.net", nonce="abc123", qop="auth", algorithm=MD5"#;

fn with_creds(peer: voxline::sip::Peer) -> OutgoingCall {
    OutgoingCall {
        credentials: Some(creds(PASSWORD)),
        ..outgoing(peer)
    }
}

fn proxy_challenge(invite: &Wire, value: &str) -> String {
    Resp::to(
        invite,
        407,
        "Proxy Authentication Required",
        Some("proxytag"),
    )
    .h("Proxy-Authenticate", value)
    .build()
}

#[test]
fn proxy_challenge_is_acked_and_the_invite_resent_with_proxy_authorization() {
    let mut d = Driver::new(config());
    let phone = Phone::new();
    let call = d.cmd(|s, now| s.invite(now, with_creds(phone.peer)));
    let invite = d.take_request("INVITE");
    assert!(invite.header("Proxy-Authorization").is_none());
    d.advance(ms(100));
    d.deliver(phone.peer, proxy_challenge(&invite, CHALLENGE));
    let sent = d.take_sent();
    let methods: Vec<_> = sent.iter().map(|s| s.msg.method().unwrap_or("?")).collect();
    assert_eq!(methods, vec!["ACK", "INVITE"]);
    // §17.1.1.3: the ACK has the INVITE's Via (branch), Request-URI, From, Call-ID and CSeq
    // number, and the response's To.
    let ack = &sent[0].msg;
    assert_eq!(ack.h("Via"), invite.h("Via"));
    assert_eq!(ack.uri(), invite.uri());
    assert_eq!(ack.h("From"), invite.h("From"));
    assert_eq!(ack.to_tag().as_deref(), Some("proxytag"));
    assert_eq!(ack.cseq(), (1, "ACK".to_string()));
    assert_eq!(sent[0].peer, phone.peer);
    // §22.2: the new INVITE.
    let invite2 = &sent[1].msg;
    assert_eq!(invite2.cseq(), (2, "INVITE".to_string()));
    assert_eq!(invite2.call_id(), invite.call_id());
    assert_eq!(invite2.h("From"), invite.h("From"), "same From tag");
    assert_eq!(invite2.to_tag(), None);
    assert_ne!(invite2.branch(), invite.branch());
    assert_eq!(invite2.body(), invite.body(), "same offer");
    let digest = DigestResponse::parse(&invite2.h("Proxy-Authorization")).expect("digest");
    assert!(verify(
        &digest,
        PASSWORD,
        "INVITE",
        invite2.body().as_bytes()
    ));
    assert_eq!(digest.uri, invite.uri());
    assert_eq!(digest.nonce, "abc123");
    assert!(
        d.take_events().is_empty(),
        "a challenge is not reported to the call layer"
    );
    // The retransmission timer restarted for the new INVITE only.
    d.advance(ms(500));
    assert_eq!(d.take_request("INVITE"), *invite2);
    // Answered: ACK with CSeq 2, and the next in-dialog request goes on from there.
    let ok = phone
        .respond(invite2, 200, "OK", Some("bob1"))
        .sdp(&sdp("sendrecv"))
        .build();
    d.deliver(phone.peer, ok);
    assert_eq!(d.take_request("ACK").cseq(), (2, "ACK".to_string()));
    assert!(matches!(d.take_event(), SipEvent::Answered { .. }));
    d.cmd(|s, now| s.hangup(now, call)).expect("hangup");
    let bye = d.take_request("BYE");
    assert_eq!(
        bye.cseq(),
        (3, "BYE".to_string()),
        "§12.1.2: local CSeq starts at the INVITE's (2)"
    );
}

#[test]
fn callee_challenge_gets_authorization() {
    let mut d = Driver::new(config());
    let phone = Phone::new();
    d.cmd(|s, now| s.invite(now, with_creds(phone.peer)));
    let invite = d.take_request("INVITE");
    let c = Resp::to(&invite, 401, "Unauthorized", Some("bob1"))
        .h("WWW-Authenticate", CHALLENGE)
        .build();
    d.deliver(phone.peer, c);
    let invite2 = d.take_request("INVITE");
    assert!(invite2.header("Proxy-Authorization").is_none());
    let digest = DigestResponse::parse(&invite2.h("Authorization")).expect("digest");
    assert!(verify(&digest, PASSWORD, "INVITE", b""));
}

#[test]
fn retransmitted_challenge_gets_the_ack_again_and_no_third_invite() {
    let mut d = Driver::new(config());
    let phone = Phone::new();
    d.cmd(|s, now| s.invite(now, with_creds(phone.peer)));
    let invite = d.take_request("INVITE");
    let challenge = proxy_challenge(&invite, CHALLENGE);
    d.deliver(phone.peer, &challenge);
    let ack = d.take_sent().remove(0).msg;
    d.deliver(phone.peer, &challenge);
    assert_eq!(d.take_one(), ack);
    assert!(d.take_events().is_empty());
}

#[test]
fn rejected_credentials_fail_the_call_without_looping() {
    let mut d = Driver::new(config());
    let phone = Phone::new();
    let call = d.cmd(|s, now| s.invite(now, with_creds(phone.peer)));
    let invite = d.take_request("INVITE");
    d.deliver(phone.peer, proxy_challenge(&invite, CHALLENGE));
    let invite2 = d.take_request("INVITE");
    let again = r#"Digest realm="sip.example.net", nonce="def456", qop="auth""#;
    d.deliver(phone.peer, proxy_challenge(&invite2, again));
    let ack = d.take_one();
    assert!(
        ack.is("ACK"),
        "the second 407 is ACKed, and nothing else is sent"
    );
    assert_eq!(ack.branch(), invite2.branch());
    assert_eq!(
        d.take_event(),
        SipEvent::Ended {
            call,
            reason: EndReason::Failed(407)
        }
    );
    d.advance(secs(60));
    assert_eq!(d.times_of(|m| m.is("INVITE")).len(), 2);
}

#[test]
fn endless_stale_challenges_fail_the_call() {
    let mut d = Driver::new(config());
    let phone = Phone::new();
    let call = d.cmd(|s, now| s.invite(now, with_creds(phone.peer)));
    let mut invite = d.take_request("INVITE");
    d.deliver(phone.peer, proxy_challenge(&invite, CHALLENGE));
    invite = d.take_request("INVITE");
    for n in 0..10 {
        let stale =
            format!(r#"Digest realm="sip.example.net", nonce="st{n}", qop="auth", stale=true"#);
        d.deliver(phone.peer, proxy_challenge(&invite, &stale));
        match d.take_sent().into_iter().find(|s| s.msg.is("INVITE")) {
            Some(s) => invite = s.msg,
            None => break,
        }
    }
    // The first INVITE plus at most MAX_AUTH_ATTEMPTS answers to challenges.
    assert_eq!(
        d.times_of(|m| m.is("INVITE")).len() as u32,
        1 + MAX_AUTH_ATTEMPTS
    );
    assert_eq!(
        d.take_event(),
        SipEvent::Ended {
            call,
            reason: EndReason::Failed(407)
        }
    );
}

#[test]
fn challenge_without_credentials_fails_the_call() {
    let mut d = Driver::new(config());
    let phone = Phone::new();
    let call = d.cmd(|s, now| s.invite(now, outgoing(phone.peer)));
    let invite = d.take_request("INVITE");
    d.deliver(phone.peer, proxy_challenge(&invite, CHALLENGE));
    assert!(d.take_one().is("ACK"));
    assert_eq!(
        d.take_event(),
        SipEvent::Ended {
            call,
            reason: EndReason::Failed(407)
        }
    );
}
