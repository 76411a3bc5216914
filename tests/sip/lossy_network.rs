//! Two voxline stacks call each other over a seeded lossy, delaying (reordering) network on
//! one virtual clock. On a clean network nothing is ever retransmitted; with 20 % loss every
//! seed still sets up the call exactly once, refreshes the session (RFC 4028) and tears it
//! down; with 75 % loss outcomes vary, but each side reports each call exactly once and
//! nothing leaks.

use crate::harness;

use harness::*;
use voxline::sip::{CallHandle, EndReason, SipEvent};

const A: &str = "10.0.0.1:5060";
const B: &str = "10.0.0.2:5060";

/// The callee's behaviour: ring, then answer at once.
fn callee(side: Side, node: &mut Driver, e: SipEvent) {
    if side == Side::B
        && let SipEvent::IncomingCall(inc) = e
    {
        node.cmd(|s, now| s.respond(now, inc.call, 180, None))
            .expect("ring");
        node.cmd(|s, now| s.respond(now, inc.call, 200, Some(sdp("sendrecv"))))
            .expect("answer");
    }
}

/// Places a call from A to B, lets it last `talk`, hangs up, and lets everything settle.
fn run_call(seed: u64, loss: f64, talk: std::time::Duration) -> (Sim, CallHandle) {
    run_call_on(LossyNet::new(seed, loss, ms(5), ms(80)), seed, talk)
}

fn run_call_on(net: LossyNet, seed: u64, talk: std::time::Duration) -> (Sim, CallHandle) {
    let mut sim = Sim::new(addr(A), addr(B), net, seed);
    let call = sim.a.cmd(|s, now| s.invite(now, outgoing(udp(B))));
    let end = sim.now() + talk;
    sim.run_until(end, callee);
    let _ = sim.a.cmd(|s, now| s.hangup(now, call));
    let end = sim.now() + secs(300);
    sim.run_until(end, callee);
    (sim, call)
}

fn events(d: &Driver) -> Vec<SipEvent> {
    d.all_events.iter().map(|(_, e)| e.clone()).collect()
}

fn assert_settled(sim: &Sim, seed: u64) {
    assert_eq!(
        sim.a.stack.transaction_count(),
        (0, 0),
        "seed {seed}: A leaked transactions"
    );
    assert_eq!(
        sim.b.stack.transaction_count(),
        (0, 0),
        "seed {seed}: B leaked transactions"
    );
    assert_eq!(sim.a.stack.active_calls(), 0, "seed {seed}");
    assert_eq!(sim.b.stack.active_calls(), 0, "seed {seed}");
}

#[test]
fn clean_network_needs_no_retransmission() {
    // A fixed delay: no loss and no reordering (with jitter the 200 may overtake the 180).
    let (sim, call) = run_call_on(LossyNet::new(7, 0.0, ms(20), ms(20)), 7, secs(10));
    let a_sent: Vec<_> = sim
        .a
        .all_sent
        .iter()
        .map(|s| s.msg.start_line().to_string())
        .collect();
    let b_sent: Vec<_> = sim
        .b
        .all_sent
        .iter()
        .map(|s| s.msg.start_line().to_string())
        .collect();
    assert_eq!(a_sent.len(), 3, "INVITE, ACK, BYE: {a_sent:#?}");
    assert!(
        a_sent[0].starts_with("INVITE ")
            && a_sent[1].starts_with("ACK ")
            && a_sent[2].starts_with("BYE ")
    );
    assert_eq!(
        b_sent,
        vec![
            "SIP/2.0 100 Trying",
            "SIP/2.0 180 Ringing",
            "SIP/2.0 200 OK",
            "SIP/2.0 200 OK"
        ],
        "the 200 to INVITE goes once, then the 200 to BYE"
    );
    let a = events(&sim.a);
    assert_eq!(a.len(), 3, "{a:#?}");
    assert!(
        matches!(a[0], SipEvent::Progress { status: 180, .. }),
        "{a:#?}"
    );
    assert!(matches!(a[1], SipEvent::Answered { call: c, body: Some(_) } if c == call));
    assert_eq!(
        a[2],
        SipEvent::Ended {
            call,
            reason: EndReason::LocalBye
        }
    );
    let b = events(&sim.b);
    assert_eq!(b.len(), 3, "{b:#?}");
    assert!(matches!(b[0], SipEvent::IncomingCall(_)));
    assert!(matches!(b[1], SipEvent::Acked { .. }));
    assert!(matches!(
        b[2],
        SipEvent::Ended {
            reason: EndReason::RemoteBye,
            ..
        }
    ));
    assert_settled(&sim, 7);
    assert_eq!(sim.net.dropped, 0);
}

#[test]
fn twenty_percent_loss_still_sets_up_refreshes_and_tears_down_every_call() {
    let mut dropped = 0;
    for seed in 0..12 {
        // 2000 s: the caller refreshes the 1800 s session at 900 s and 1800 s.
        let (sim, call) = run_call(seed, 0.2, secs(2000));
        dropped += sim.net.dropped;
        let a = events(&sim.a);
        let answered = a
            .iter()
            .filter(|e| matches!(e, SipEvent::Answered { .. }))
            .count();
        assert_eq!(answered, 1, "seed {seed}: A answered once: {a:#?}");
        let ended: Vec<_> = a
            .iter()
            .filter(|e| matches!(e, SipEvent::Ended { .. }))
            .collect();
        assert_eq!(
            ended,
            vec![&SipEvent::Ended {
                call,
                reason: EndReason::LocalBye
            }],
            "seed {seed}"
        );
        let b = events(&sim.b);
        let count = |p: fn(&SipEvent) -> bool| b.iter().filter(|e| p(e)).count();
        assert_eq!(
            count(|e| matches!(e, SipEvent::IncomingCall(_))),
            1,
            "seed {seed}: {b:#?}"
        );
        assert_eq!(
            count(|e| matches!(e, SipEvent::Acked { .. })),
            1,
            "seed {seed}: {b:#?}"
        );
        let b_ended: Vec<_> = b
            .iter()
            .filter(|e| matches!(e, SipEvent::Ended { .. }))
            .collect();
        assert_eq!(b_ended.len(), 1, "seed {seed}");
        assert!(
            matches!(
                b_ended[0],
                SipEvent::Ended {
                    reason: EndReason::RemoteBye,
                    ..
                }
            ),
            "seed {seed}: the session was refreshed, so B never expired it: {b_ended:?}"
        );
        let updates = sim.a.times_of(|m| m.is("UPDATE"));
        assert!(
            updates.iter().any(|t| *t >= secs(900) && *t < secs(933)),
            "seed {seed}: {updates:?}"
        );
        assert!(
            updates.iter().any(|t| *t >= secs(1800)),
            "seed {seed}: {updates:?}"
        );
        assert_settled(&sim, seed);
    }
    assert!(dropped > 20, "the network really lost packets ({dropped})");
}

#[test]
fn heavy_loss_reports_each_call_once_and_leaks_nothing() {
    let mut outcomes = [0; 2];
    for seed in 100..124 {
        let (sim, call) = run_call(seed, 0.75, secs(20));
        let a = events(&sim.a);
        let a_answered = a
            .iter()
            .filter(|e| matches!(e, SipEvent::Answered { .. }))
            .count();
        let a_ended: Vec<_> = a
            .iter()
            .filter(|e| matches!(e, SipEvent::Ended { .. }))
            .collect();
        assert!(a_answered <= 1, "seed {seed}: {a:#?}");
        assert_eq!(a_ended.len(), 1, "seed {seed}: {a:#?}");
        if a_answered == 1 {
            assert_eq!(
                a_ended[0],
                &SipEvent::Ended {
                    call,
                    reason: EndReason::LocalBye
                },
                "seed {seed}"
            );
        } else {
            // No response at all (Timer B), or still ringing when A hung up (CANCEL).
            assert!(
                matches!(
                    a_ended[0],
                    SipEvent::Ended {
                        reason: EndReason::Failed(408) | EndReason::Cancelled,
                        ..
                    }
                ),
                "seed {seed}: {a_ended:?}"
            );
        }
        let b = events(&sim.b);
        let incoming = b
            .iter()
            .filter(|e| matches!(e, SipEvent::IncomingCall(_)))
            .count();
        let b_ended = b
            .iter()
            .filter(|e| matches!(e, SipEvent::Ended { .. }))
            .count();
        let acked = b
            .iter()
            .filter(|e| matches!(e, SipEvent::Acked { .. }))
            .count();
        assert!(
            incoming <= 1,
            "seed {seed}: one INVITE, at most one call: {b:#?}"
        );
        assert_eq!(
            b_ended, incoming,
            "seed {seed}: every call B saw ends once: {b:#?}"
        );
        assert!(acked <= 1, "seed {seed}");
        if a_answered == 1 {
            assert_eq!(incoming, 1, "seed {seed}");
        }
        assert_settled(&sim, seed);
        outcomes[a_answered] += 1;
    }
    assert!(
        outcomes[0] > 0 && outcomes[1] > 0,
        "both outcomes were exercised: {outcomes:?}"
    );
}
