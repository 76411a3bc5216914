//! Client transaction timers on a virtual clock (RFC 3261 §17.1): INVITE Timer A doubles
//! without bound and Timer B gives up at 64·T1; non-INVITE Timer E doubles up to T2 (T2 at
//! once in Proceeding) and Timer F gives up at 64·T1; custom T1/T2 from `StackConfig::timers`
//! scale everything; a reliable transport never retransmits.

use crate::harness;

use harness::*;
use voxline::sip::registration::RegistrationState;
use voxline::sip::{EndReason, SipEvent};

/// Every INVITE transmit time, and the events with their times, after running for `run`.
fn run_unanswered_invite(
    cfg: voxline::sip::StackConfig,
    peer: voxline::sip::Peer,
    run: std::time::Duration,
) -> Driver {
    let mut d = Driver::new(cfg);
    let call = d.cmd(|s, now| s.invite(now, outgoing(peer)));
    d.advance(run);
    let ended: Vec<_> = d
        .all_events
        .iter()
        .filter(|(_, e)| matches!(e, SipEvent::Ended { .. }))
        .collect();
    assert_eq!(ended.len(), 1, "one Ended: {:?}", d.all_events);
    assert_eq!(
        ended[0].1,
        SipEvent::Ended {
            call,
            reason: EndReason::Failed(408)
        }
    );
    d
}

#[test]
fn invite_over_udp_retransmits_with_timer_a_and_times_out_with_timer_b() {
    let d = run_unanswered_invite(config(), udp(PEER_ADDR), secs(40));
    let t1 = ms(500);
    // Timer A: intervals T1, 2T1, 4T1, … ; seven transmissions in all before Timer B.
    assert_eq!(
        d.times_of(|m| m.is("INVITE")),
        t1_times(t1, &[0, 1, 3, 7, 15, 31, 63])
    );
    // Every retransmission is the same bytes, to the same peer.
    let first = &d.all_sent[0];
    assert!(
        d.all_sent
            .iter()
            .all(|s| s.msg == first.msg && s.peer == udp(PEER_ADDR))
    );
    // Nothing but the INVITE went out (no CANCEL, no ACK).
    assert_eq!(d.all_sent.len(), 7);
    // Timer B fires at exactly 64·T1 = 32 s.
    assert_eq!(d.all_events[0].0, secs(32));
    assert_eq!(d.stack.active_calls(), 0);
}

#[test]
fn custom_t1_scales_timer_a_and_timer_b() {
    let t1 = ms(100);
    let d = run_unanswered_invite(config_with_timers(t1, ms(400)), udp(PEER_ADDR), secs(10));
    // Timer A does not stop at T2 (only Timer E and G are capped).
    assert_eq!(
        d.times_of(|m| m.is("INVITE")),
        t1_times(t1, &[0, 1, 3, 7, 15, 31, 63])
    );
    assert_eq!(d.all_events[0].0, ms(6400));
}

#[test]
fn invite_over_tcp_is_never_retransmitted_but_timer_b_still_fires() {
    let d = run_unanswered_invite(config(), tcp(PEER_ADDR), secs(40));
    assert_eq!(d.times_of(|m| m.is("INVITE")), vec![ms(0)]);
    assert!(
        d.all_sent[0].msg.h("Via").starts_with("SIP/2.0/TCP "),
        "{:?}",
        d.all_sent[0].msg
    );
    assert_eq!(d.all_sent[0].peer, tcp(PEER_ADDR));
    assert_eq!(d.all_events[0].0, secs(32));
}

#[test]
fn provisional_response_stops_timer_a_and_timer_b() {
    // §17.1.1.2: in Proceeding the INVITE is not retransmitted and Timer B no longer
    // applies; a ringing call may ring longer than 64·T1 until the TU cancels it.
    let mut d = Driver::new(config());
    let phone = Phone::new();
    let call = d.cmd(|s, now| s.invite(now, outgoing(phone.peer)));
    let invite = d.take_request("INVITE");
    d.advance(ms(200));
    d.deliver(
        phone.peer,
        phone
            .respond(&invite, 180, "Ringing", Some("bobtag"))
            .build(),
    );
    assert_eq!(
        d.take_event(),
        SipEvent::Progress {
            call,
            status: 180,
            body: None
        }
    );
    d.advance(secs(120));
    assert_eq!(d.times_of(|m| m.is("INVITE")), vec![ms(0)]);
    assert!(
        d.take_events().is_empty(),
        "the call is still ringing after 120 s"
    );
    assert_eq!(d.stack.active_calls(), 1);
    // The TU gives up: CANCEL.
    d.cmd(|s, now| s.hangup(now, call)).expect("hangup");
    let cancel = d.take_request("CANCEL");
    assert_eq!(cancel.branch(), invite.branch());
}

#[test]
fn register_retransmits_with_timer_e_capped_at_t2_and_fails_with_timer_f() {
    let mut d = Driver::new(config());
    let id = d.cmd(|s, now| s.register(now, reg_config(udp(PEER_ADDR), None)));
    d.advance(secs(33));
    let expected: Vec<_> = [
        0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500,
    ]
    .into_iter()
    .map(ms)
    .collect();
    assert_eq!(d.times_of(|m| m.is("REGISTER")), expected);
    let first = d.all_sent[0].msg.clone();
    assert!(
        d.all_sent.iter().all(|s| s.msg == first),
        "identical retransmissions"
    );
    let regs: Vec<_> = d
        .all_events
        .iter()
        .filter(|(_, e)| matches!(e, SipEvent::Registration { .. }))
        .collect();
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0].0, secs(32), "Timer F = 64·T1");
    match &regs[0].1 {
        SipEvent::Registration {
            id: got,
            state: RegistrationState::Failed { status: 408, .. },
        } => {
            assert_eq!(*got, id)
        }
        e => panic!("expected Failed 408, got {e:?}"),
    }
    assert_eq!(d.stack.transaction_count(), (0, 0));
}

#[test]
fn custom_t1_t2_scale_timer_e_and_timer_f() {
    let mut d = Driver::new(config_with_timers(ms(100), ms(400)));
    d.cmd(|s, now| s.register(now, reg_config(udp(PEER_ADDR), None)));
    d.advance(ms(6500));
    let expected: Vec<_> = [
        0, 100, 300, 700, 1100, 1500, 1900, 2300, 2700, 3100, 3500, 3900, 4300, 4700, 5100, 5500,
        5900, 6300,
    ]
    .into_iter()
    .map(ms)
    .collect();
    assert_eq!(d.times_of(|m| m.is("REGISTER")), expected);
    assert_eq!(d.all_events.len(), 1);
    assert_eq!(d.all_events[0].0, ms(6400));
}

#[test]
fn provisional_moves_timer_e_to_t2() {
    let mut d = Driver::new(config());
    d.cmd(|s, now| s.register(now, reg_config(udp(PEER_ADDR), None)));
    let reg = d.take_request("REGISTER");
    d.advance(ms(200));
    d.deliver(udp(PEER_ADDR), Resp::to(&reg, 100, "Trying", None).build());
    assert!(
        d.take_events().is_empty(),
        "1xx to REGISTER is not reported"
    );
    d.advance(secs(33));
    // The retransmission already scheduled at T1 fires; from then on every T2 (§17.1.2.2).
    let expected: Vec<_> = [0, 500, 4500, 8500, 12500, 16500, 20500, 24500, 28500]
        .into_iter()
        .map(ms)
        .collect();
    assert_eq!(d.times_of(|m| m.is("REGISTER")), expected);
    // Timer F still applies in Proceeding.
    assert_eq!(d.all_events.len(), 1);
    assert_eq!(d.all_events[0].0, secs(32));
}

#[test]
fn register_over_tcp_is_sent_once() {
    let mut d = Driver::new(config());
    d.cmd(|s, now| s.register(now, reg_config(tcp(PEER_ADDR), None)));
    d.advance(secs(33));
    assert_eq!(d.times_of(|m| m.is("REGISTER")), vec![ms(0)]);
    assert_eq!(d.all_events.len(), 1);
    assert_eq!(d.all_events[0].0, secs(32));
}

#[test]
fn unanswered_bye_retransmits_with_timer_e_and_stops_at_timer_f() {
    let mut d = Driver::new(config());
    let c = established_inbound(&mut d, &[]);
    d.advance(secs(1));
    let start = d.elapsed();
    d.cmd(|s, now| s.hangup(now, c.call)).expect("hangup");
    assert_eq!(
        d.take_events(),
        vec![SipEvent::Ended {
            call: c.call,
            reason: EndReason::LocalBye
        }]
    );
    d.advance(secs(40));
    let got: Vec<_> = d
        .times_of(|m| m.is("BYE"))
        .into_iter()
        .map(|t| t - start)
        .collect();
    let expected: Vec<_> = [
        0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500,
    ]
    .into_iter()
    .map(ms)
    .collect();
    assert_eq!(got, expected);
    assert!(d.take_events().is_empty(), "no second Ended after Timer F");
    assert_eq!(d.stack.transaction_count(), (0, 0));
}

#[test]
fn answered_bye_stops_retransmissions() {
    let mut d = Driver::new(config());
    let mut c = established_inbound(&mut d, &[]);
    d.cmd(|s, now| s.hangup(now, c.call)).expect("hangup");
    let bye = d.take_request("BYE");
    d.take_events();
    d.advance(ms(700)); // one retransmission at 500 ms
    assert_eq!(d.take_request("BYE"), bye);
    d.deliver(c.phone.peer, Resp::to(&bye, 200, "OK", None).build());
    d.advance(secs(40));
    assert!(d.take_sent().is_empty(), "{:?}", d.pending_lines());
    assert!(d.take_events().is_empty());
    // A BYE answered over UDP lingers in Completed for T4 only; then all is gone.
    assert_eq!(d.stack.transaction_count(), (0, 0));
    let _ = &mut c;
}
