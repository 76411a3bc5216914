//! Registration (RFC 3261 §10, digest per RFC 7616/8760) on a virtual clock: the digest
//! answer verifies with `voxline::sip::auth::verify` for MD5 and SHA-256, the binding is
//! refreshed before it expires, stale nonces are followed (but not forever), a wrong password
//! fails without looping, `received`/`rport` correct the Contact, 423 raises Expires and
//! unregister sends Expires: 0.

use crate::harness;

use harness::*;
use voxline::sip::auth::{DigestAlgorithm, DigestResponse, MAX_STALE_RETRIES, Qop, verify};
use voxline::sip::registration::RegistrationState;
use voxline::sip::{RegistrationId, SipEvent};

const PASSWORD: &str = "s3cret";
const MD5_CHALLENGE: &str =
    r#"Digest realm="pbx.example.com", nonce="n1", qop="auth", algorithm=MD5, opaque="op1""#;
const SHA_CHALLENGE: &str =
    r#"Digest realm="pbx.example.com", nonce="s1", qop="auth", algorithm=SHA-256"#;

fn registrar() -> voxline::sip::Peer {
    udp("198.51.100.5:5060")
}

fn start(d: &mut Driver, password: Option<&str>) -> (RegistrationId, Wire) {
    let id = d.cmd(|s, now| s.register(now, reg_config(registrar(), password.map(creds))));
    let sent = d.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].peer, registrar());
    (id, sent[0].msg.clone())
}

fn challenge(req: &Wire, www_authenticate: &str) -> String {
    Resp::to(req, 401, "Unauthorized", Some("regtag"))
        .h("WWW-Authenticate", www_authenticate)
        .build()
}

fn ok(req: &Wire, expires: u32) -> String {
    Resp::to(req, 200, "OK", Some("regtag"))
        .h("Contact", format!("{};expires={expires}", req.h("Contact")))
        .build()
}

fn state_events(d: &mut Driver) -> Vec<RegistrationState> {
    d.take_events()
        .into_iter()
        .map(|e| match e {
            SipEvent::Registration { state, .. } => state,
            e => panic!("unexpected {e:?}"),
        })
        .collect()
}

fn checked_digest(req: &Wire, header: &str) -> DigestResponse {
    let value = req.h(header);
    let resp = DigestResponse::parse(&value).expect("parses");
    assert!(
        verify(&resp, PASSWORD, "REGISTER", b""),
        "digest verifies: {value}"
    );
    assert!(!verify(&resp, "wrong", "REGISTER", b""));
    assert_eq!(resp.username, "1000");
    assert_eq!(resp.uri, "sip:pbx.example.com", "the Request-URI");
    resp
}

#[test]
fn first_register_has_no_credentials_and_the_right_headers() {
    let mut d = Driver::new(config());
    let (_, reg) = start(&mut d, Some(PASSWORD));
    assert_eq!(reg.start_line(), "REGISTER sip:pbx.example.com SIP/2.0");
    assert_eq!(reg.cseq(), (1, "REGISTER".to_string()));
    assert_eq!(reg.h("Expires"), "3600");
    assert_eq!(reg.h("Contact"), "<sip:1000@192.0.2.1:5060;transport=udp>");
    assert_eq!(uri_of(&reg.h("From")), "sip:1000@pbx.example.com");
    assert_eq!(uri_of(&reg.h("To")), "sip:1000@pbx.example.com");
    assert!(reg.from_tag().is_some());
    assert!(reg.header("Authorization").is_none());
}

#[test]
fn md5_qop_auth_challenge_is_answered_with_a_verifiable_digest() {
    let mut d = Driver::new(config());
    let (id, reg) = start(&mut d, Some(PASSWORD));
    d.deliver(registrar(), challenge(&reg, MD5_CHALLENGE));
    let reg2 = d.take_request("REGISTER");
    assert!(
        d.take_events().is_empty(),
        "a challenge is not a state change"
    );
    assert_eq!(
        reg2.cseq(),
        (2, "REGISTER".to_string()),
        "CSeq increments (§10.2.4)"
    );
    assert_eq!(reg2.call_id(), reg.call_id(), "same Call-ID");
    assert_eq!(reg2.from_tag(), reg.from_tag());
    assert_ne!(reg2.branch(), reg.branch(), "a new transaction");
    let digest = checked_digest(&reg2, "Authorization");
    assert_eq!(digest.algorithm, DigestAlgorithm::Md5);
    assert_eq!(digest.qop, Some(Qop::Auth));
    assert_eq!(digest.nc, Some(1));
    assert_eq!(digest.nonce, "n1");
    assert_eq!(digest.realm, "pbx.example.com");
    assert_eq!(digest.opaque.as_deref(), Some("op1"));
    d.deliver(registrar(), ok(&reg2, 120));
    assert_eq!(
        d.take_event(),
        SipEvent::Registration {
            id,
            state: RegistrationState::Registered { expires: 120 }
        }
    );
    assert_eq!(
        d.stack.registration_state(id),
        Some(&RegistrationState::Registered { expires: 120 })
    );
}

#[test]
fn sha256_is_answered_and_preferred_over_md5() {
    let mut d = Driver::new(config());
    let (_, reg) = start(&mut d, Some(PASSWORD));
    let both = Resp::to(&reg, 401, "Unauthorized", Some("regtag"))
        .h("WWW-Authenticate", MD5_CHALLENGE)
        .h("WWW-Authenticate", SHA_CHALLENGE)
        .build();
    d.deliver(registrar(), both);
    let reg2 = d.take_request("REGISTER");
    let digest = checked_digest(&reg2, "Authorization");
    assert_eq!(digest.algorithm, DigestAlgorithm::Sha256);
    assert_eq!(digest.nonce, "s1");
    assert_eq!(digest.response.len(), 64, "a SHA-256 hex digest");
}

#[test]
fn proxy_challenge_gets_proxy_authorization() {
    let mut d = Driver::new(config());
    let (_, reg) = start(&mut d, Some(PASSWORD));
    let c = Resp::to(&reg, 407, "Proxy Authentication Required", Some("regtag"))
        .h("Proxy-Authenticate", MD5_CHALLENGE)
        .build();
    d.deliver(registrar(), c);
    let reg2 = d.take_request("REGISTER");
    assert!(reg2.header("Authorization").is_none());
    checked_digest(&reg2, "Proxy-Authorization");
}

#[test]
fn binding_is_refreshed_before_it_expires() {
    let mut d = Driver::new(config());
    let (id, reg) = start(&mut d, Some(PASSWORD));
    d.deliver(registrar(), challenge(&reg, MD5_CHALLENGE));
    let reg2 = d.take_request("REGISTER");
    d.deliver(registrar(), ok(&reg2, 120));
    state_events(&mut d);
    // A short binding (≤ 4 × 30 s) is refreshed at half its lifetime.
    d.advance_to_offset(ms(59_999));
    assert!(d.take_sent().is_empty());
    d.advance(ms(1));
    let refresh = d.take_request("REGISTER");
    assert_eq!(refresh.cseq().0, 3);
    assert_eq!(refresh.call_id(), reg.call_id());
    let digest = checked_digest(&refresh, "Authorization");
    assert_eq!(
        digest.nc,
        Some(2),
        "the nonce is reused with the next nonce count"
    );
    // A long binding is refreshed 30 s before it ends.
    d.deliver(registrar(), ok(&refresh, 3600));
    assert_eq!(
        state_events(&mut d),
        vec![RegistrationState::Registered { expires: 3600 }]
    );
    let granted_at = d.elapsed();
    d.advance(secs(3570) - ms(1));
    assert!(d.take_sent().is_empty());
    d.advance(ms(1));
    let refresh2 = d.take_request("REGISTER");
    assert_eq!(d.elapsed() - granted_at, secs(3570));
    assert_eq!(refresh2.h("Expires"), "3600");
    assert_eq!(
        d.stack.registration_state(id),
        Some(&RegistrationState::Registering)
    );
}

#[test]
fn expires_param_of_our_contact_wins_over_the_expires_header() {
    let mut d = Driver::new(config());
    let (id, reg) = start(&mut d, None);
    let resp = Resp::to(&reg, 200, "OK", Some("regtag"))
        .h("Contact", "<sip:someone-else@192.0.2.99>;expires=999")
        .h("Contact", format!("{};expires=300", reg.h("Contact")))
        .h("Expires", "3600")
        .build();
    d.deliver(registrar(), resp);
    assert_eq!(
        d.take_event(),
        SipEvent::Registration {
            id,
            state: RegistrationState::Registered { expires: 300 }
        }
    );
}

#[test]
fn stale_nonce_is_answered_with_the_new_nonce() {
    let mut d = Driver::new(config());
    let (id, reg) = start(&mut d, Some(PASSWORD));
    d.deliver(registrar(), challenge(&reg, MD5_CHALLENGE));
    let reg2 = d.take_request("REGISTER");
    let stale = r#"Digest realm="pbx.example.com", nonce="n2", qop="auth", stale=true"#;
    d.deliver(registrar(), challenge(&reg2, stale));
    let reg3 = d.take_request("REGISTER");
    assert!(d.take_events().is_empty(), "stale is not a failure");
    let digest = checked_digest(&reg3, "Authorization");
    assert_eq!(digest.nonce, "n2");
    assert_eq!(digest.nc, Some(1), "a new nonce restarts the count");
    d.deliver(registrar(), ok(&reg3, 600));
    assert_eq!(
        d.take_event(),
        SipEvent::Registration {
            id,
            state: RegistrationState::Registered { expires: 600 }
        }
    );
}

#[test]
fn endless_stale_challenges_do_not_loop() {
    let mut d = Driver::new(config());
    let (id, mut req) = start(&mut d, Some(PASSWORD));
    d.deliver(registrar(), challenge(&req, MD5_CHALLENGE));
    req = d.take_request("REGISTER");
    let mut sent = 2;
    for n in 0..10 {
        let stale =
            format!(r#"Digest realm="pbx.example.com", nonce="st{n}", qop="auth", stale=true"#);
        d.deliver(registrar(), challenge(&req, &stale));
        let out = d.take_sent();
        if out.is_empty() {
            break;
        }
        sent += 1;
        req = out[0].msg.clone();
    }
    // The first REGISTER, the answer to the first challenge, then MAX_STALE_RETRIES stale ones.
    assert_eq!(
        sent,
        2 + MAX_STALE_RETRIES,
        "gave up after a few stale nonces"
    );
    match d.stack.registration_state(id) {
        Some(RegistrationState::Failed { status: 401, .. }) => {}
        s => panic!("expected Failed 401, got {s:?}"),
    }
}

#[test]
fn wrong_password_fails_without_looping() {
    let mut d = Driver::new(config());
    let (id, reg) = start(&mut d, Some(PASSWORD));
    d.deliver(registrar(), challenge(&reg, MD5_CHALLENGE));
    let reg2 = d.take_request("REGISTER");
    // The registrar rejects the credentials: a fresh challenge, not stale.
    d.deliver(
        registrar(),
        challenge(
            &reg2,
            r#"Digest realm="pbx.example.com", nonce="n9", qop="auth""#,
        ),
    );
    assert!(d.take_sent().is_empty(), "no third REGISTER right away");
    match d.take_event() {
        SipEvent::Registration {
            id: got,
            state: RegistrationState::Failed { status: 401, .. },
        } => {
            assert_eq!(got, id)
        }
        e => panic!("expected Failed 401, got {e:?}"),
    }
    // It is retried later (30 s), not in a loop.
    d.advance(secs(30) - ms(1));
    assert!(d.take_sent().is_empty());
    d.advance(ms(1));
    d.take_request("REGISTER");
}

#[test]
fn challenge_without_credentials_fails() {
    let mut d = Driver::new(config());
    let (id, reg) = start(&mut d, None);
    d.deliver(registrar(), challenge(&reg, MD5_CHALLENGE));
    assert!(d.take_sent().is_empty());
    assert!(matches!(
        d.take_event(),
        SipEvent::Registration { id: got, state: RegistrationState::Failed { status: 401, .. } } if got == id
    ));
}

#[test]
fn received_and_rport_correct_the_contact() {
    let mut d = Driver::new(config());
    let (id, reg) = start(&mut d, None);
    let via = format!(
        "{};received=203.0.113.7",
        reg.h("Via").replace(";rport", ";rport=40000")
    );
    d.deliver(
        registrar(),
        Resp::to(&reg, 200, "OK", Some("regtag"))
            .top_via(via)
            .h("Expires", "3600")
            .build(),
    );
    let reg2 = d.take_request("REGISTER");
    assert!(
        d.take_events().is_empty(),
        "not registered until the corrected Contact is accepted"
    );
    assert_eq!(
        reg2.h("Contact"),
        "<sip:1000@203.0.113.7:40000;transport=udp>"
    );
    assert_eq!(reg2.cseq().0, 2);
    assert_eq!(reg2.call_id(), reg.call_id());
    let via2 = format!(
        "{};received=203.0.113.7",
        reg2.h("Via").replace(";rport", ";rport=40000")
    );
    d.deliver(
        registrar(),
        Resp::to(&reg2, 200, "OK", Some("regtag"))
            .top_via(via2)
            .h("Expires", "3600")
            .build(),
    );
    assert_eq!(
        d.take_event(),
        SipEvent::Registration {
            id,
            state: RegistrationState::Registered { expires: 3600 }
        }
    );
    assert!(d.take_sent().is_empty());
}

#[test]
fn interval_too_brief_retries_with_min_expires() {
    let mut d = Driver::new(config());
    let (_, reg) = start(&mut d, None);
    let resp = Resp::to(&reg, 423, "Interval Too Brief", Some("regtag"))
        .h("Min-Expires", "7200")
        .build();
    d.deliver(registrar(), resp);
    let reg2 = d.take_request("REGISTER");
    assert_eq!(reg2.h("Expires"), "7200");
    assert!(d.take_events().is_empty());
}

#[test]
fn unregister_sends_expires_zero() {
    let mut d = Driver::new(config());
    let (id, reg) = start(&mut d, None);
    d.deliver(registrar(), ok(&reg, 3600));
    state_events(&mut d);
    d.advance(secs(100));
    d.cmd(|s, now| s.unregister(now, id)).expect("unregister");
    let unreg = d.take_request("REGISTER");
    assert_eq!(unreg.h("Expires"), "0");
    assert_eq!(unreg.h("Contact"), reg.h("Contact"));
    assert_eq!(unreg.call_id(), reg.call_id());
    assert_eq!(unreg.cseq().0, 2);
    d.deliver(
        registrar(),
        Resp::to(&unreg, 200, "OK", Some("regtag")).build(),
    );
    assert_eq!(
        d.take_event(),
        SipEvent::Registration {
            id,
            state: RegistrationState::Unregistered
        }
    );
    d.advance(secs(7200));
    assert!(d.take_sent().is_empty(), "no refresh after unregistering");
}

#[test]
fn refused_registration_is_retried_with_backoff() {
    let mut d = Driver::new(config());
    let (_, reg) = start(&mut d, None);
    d.deliver(
        registrar(),
        Resp::to(&reg, 403, "Forbidden", Some("regtag")).build(),
    );
    assert!(matches!(
        state_events(&mut d).as_slice(),
        [RegistrationState::Failed { status: 403, .. }]
    ));
    d.advance(secs(30));
    let r2 = d.take_request("REGISTER");
    d.deliver(
        registrar(),
        Resp::to(&r2, 403, "Forbidden", Some("regtag")).build(),
    );
    d.advance(secs(60) - ms(1));
    assert!(
        d.take_sent().is_empty(),
        "the second retry waits twice as long"
    );
    d.advance(ms(1));
    d.take_request("REGISTER");
}
