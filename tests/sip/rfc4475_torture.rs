//! RFC 4475, the SIP torture test messages: all 49, bit for bit as the RFC's archive
//! (Appendix A) has them (tests/data/rfc4475/*.dat), each delivered over UDP to voxline's
//! sans-IO SIP stack acting as a user agent server, with the outcome the RFC describes for an
//! endpoint. Where the RFC allows a choice, the test pins voxline's (and says which).
//!
//! No invalid message may get a 2xx, or start a call.

use crate::harness;

use std::fs;
use std::path::Path;

use harness::*;
use voxline::sip::SipEvent;
use voxline::sip::message::{Limits, parse};

/// What the stack must do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A well-formed INVITE: 100 Trying, and the call goes up to the application.
    Call,
    /// Answered with exactly these responses (an INVITE's 100 Trying included).
    Answer(&'static [u16]),
    /// A well-formed response that matches no transaction: parsed, then dropped.
    StrayResponse,
    /// A malformed response: not parsed, dropped (responses are never answered).
    BadResponse,
}

use Outcome::*;

/// Every message of RFC 4475 §3 with its expected outcome.
const CASES: &[(&str, &str, Outcome)] = &[
    // 3.1.1 Valid messages.
    // Well-formed, but its To has a tag: an INVITE inside a dialog voxline does not know
    // gets 481 (RFC 3261 §12.2.2), after the 100 Trying.
    ("3.1.1.1", "wsinv", Answer(&[100, 481])),
    // An unknown method: endpoints answer 501 with Allow.
    ("3.1.1.2", "intmeth", Answer(&[501])),
    ("3.1.1.3", "esc01", Call),
    // REGISTER to a user agent that is no registrar: 405 with Allow, not 400.
    ("3.1.1.4", "escnull", Answer(&[405])),
    // RE%47IST%45R is an unknown method, not REGISTER.
    ("3.1.1.5", "esc02", Answer(&[501])),
    ("3.1.1.6", "lwsdisp", Answer(&[200])),
    ("3.1.1.7", "longreq", Call),
    // Over UDP, octets after Content-Length are discarded (RFC 3261 §18.3).
    ("3.1.1.8", "dblreq", Answer(&[405])),
    ("3.1.1.9", "semiuri", Answer(&[200])),
    ("3.1.1.10", "transports", Answer(&[200])),
    // MESSAGE is not supported: 405.
    ("3.1.1.11", "mpart01", Answer(&[405])),
    ("3.1.1.12", "unreason", StrayResponse),
    ("3.1.1.13", "noreason", StrayResponse),
    // 3.1.2 Invalid messages.
    ("3.1.2.1", "badinv01", Answer(&[400])),
    ("3.1.2.2", "clerr", Answer(&[400])),
    ("3.1.2.3", "ncl", Answer(&[400])),
    ("3.1.2.4", "scalar02", Answer(&[400])),
    ("3.1.2.5", "scalarlg", BadResponse),
    ("3.1.2.6", "quotbal", Answer(&[400])),
    ("3.1.2.7", "ltgtruri", Answer(&[400])),
    ("3.1.2.8", "lwsruri", Answer(&[400])),
    ("3.1.2.9", "lwsstart", Answer(&[400])),
    // The RFC allows either; voxline is liberal with trailing SP on the Request-Line.
    ("3.1.2.10", "trws", Answer(&[200])),
    ("3.1.2.11", "escruri", Answer(&[400])),
    // voxline does not use Date: it ignores the non-GMT zone, as the RFC allows.
    ("3.1.2.12", "baddate", Call),
    ("3.1.2.13", "regbadct", Answer(&[400])),
    ("3.1.2.14", "badaspec", Answer(&[400])),
    ("3.1.2.15", "baddn", Answer(&[400])),
    ("3.1.2.16", "badvers", Answer(&[505])),
    ("3.1.2.17", "mismatch01", Answer(&[400])),
    // The RFC prefers 501 to 400.
    ("3.1.2.18", "mismatch02", Answer(&[501])),
    ("3.1.2.19", "bigcode", BadResponse),
    // 3.2 Transaction layer: z9hG4bK without an identifier falls back to RFC 2543 matching.
    ("3.2.1", "badbranch", Answer(&[200])),
    // 3.3 Application layer.
    ("3.3.1", "insuf", Answer(&[400])),
    ("3.3.2", "unkscm", Answer(&[416])),
    ("3.3.3", "novelsc", Answer(&[416])),
    // Unknown schemes in To, From and Contact are fine; REGISTER itself is not supported.
    ("3.3.4", "unksm2", Answer(&[405])),
    ("3.3.5", "bext01", Answer(&[420])),
    ("3.3.6", "invut", Answer(&[100, 415])),
    // voxline is no registrar: 405, whatever the credentials.
    ("3.3.7", "regaut01", Answer(&[405])),
    ("3.3.8", "multi01", Answer(&[400])),
    ("3.3.9", "mcl01", Answer(&[400])),
    ("3.3.10", "bcast", StrayResponse),
    // Max-Forwards 0 matters to elements that forward; an endpoint answers.
    ("3.3.11", "zeromf", Answer(&[200])),
    ("3.3.12", "cparam01", Answer(&[405])),
    ("3.3.13", "cparam02", Answer(&[405])),
    ("3.3.14", "regescrt", Answer(&[405])),
    ("3.3.15", "sdp01", Answer(&[100, 406])),
    // 3.4 Backward compatibility: an RFC 2543 INVITE.
    ("3.4.1", "inv2543", Call),
];

fn message(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/rfc4475")
        .join(format!("{name}.dat"));
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Delivers one message to a fresh stack; returns what it sent and what it told the
/// application.
fn deliver(name: &str) -> (Vec<Sent>, Vec<SipEvent>) {
    let mut d = Driver::new(config());
    d.deliver(udp("192.0.2.200:5060"), message(name));
    (d.take_sent(), d.take_events())
}

#[test]
fn all_49_messages_are_covered() {
    assert_eq!(CASES.len(), 49);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc4475");
    let files = fs::read_dir(&dir).expect("tests/data/rfc4475").count();
    assert_eq!(files, 49);
}

#[test]
fn each_message_gets_the_outcome_rfc_4475_describes() {
    let mut failures = Vec::new();
    for &(section, name, outcome) in CASES {
        let (sent, events) = deliver(name);
        let codes: Vec<u16> = sent.iter().filter_map(|s| s.msg.status()).collect();
        let calls = events
            .iter()
            .filter(|e| matches!(e, SipEvent::IncomingCall(_)))
            .count();
        let ok = match outcome {
            Call => codes == [100] && calls == 1,
            Answer(want) => codes == want && calls == 0,
            StrayResponse => {
                sent.is_empty()
                    && events.is_empty()
                    && parse(&message(name), &Limits::default()).is_ok()
            }
            BadResponse => {
                sent.is_empty()
                    && events.is_empty()
                    && parse(&message(name), &Limits::default()).is_err()
            }
        };
        if !ok {
            failures.push(format!(
                "{section} {name}: want {outcome:?}, got responses {codes:?} and {calls} call(s)"
            ));
        }
        // Whatever the case, an invalid message never gets a 2xx.
        if !matches!(outcome, Call | StrayResponse)
            && !matches!(outcome, Answer(w) if w.contains(&200))
        {
            assert!(
                codes.iter().all(|c| !(200..300).contains(c)),
                "{section} {name}: a 2xx to an invalid message: {codes:?}"
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn answers_carry_what_the_rfc_asks_for() {
    // 501 and 405 list the methods voxline understands (RFC 3261 §8.2.1).
    for name in ["intmeth", "esc02", "escnull"] {
        let (sent, _) = deliver(name);
        let last = sent.last().expect("an answer");
        assert!(last.msg.header("Allow").is_some(), "{name}: no Allow");
    }
    // 420 lists the unsupported Require extensions (RFC 3261 §8.2.2.3); Proxy-Require is
    // for proxies.
    let (sent, _) = deliver("bext01");
    let unsupported = sent[0].msg.h("Unsupported");
    assert!(
        unsupported.contains("nothingSupportsThis")
            && unsupported.contains("nothingSupportsThisEither"),
        "{unsupported}"
    );
    assert!(
        !unsupported.contains("noProxiesSupportThis"),
        "{unsupported}"
    );
    // 415 says what voxline accepts (RFC 3261 §8.2.3), and so does 406.
    for name in ["invut", "sdp01"] {
        let (sent, _) = deliver(name);
        let last = sent.last().expect("an answer");
        assert_eq!(last.msg.h("Accept"), "application/sdp", "{name}");
    }
    // 505 for SIP/7.0 (RFC 3261 §8.2.2.3... §21.5.16).
    let (sent, _) = deliver("badvers");
    assert_eq!(sent[0].msg.status(), Some(505));
}
