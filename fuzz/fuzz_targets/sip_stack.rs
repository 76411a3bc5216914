//! The sans-IO SIP stack fed any bytes over UDP and TCP: parsing, transaction matching, the
//! UAS checks and every answer it builds; then its timers, an hour on.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use voxline::sip::{Output, Peer, SipStack, StackConfig, Transport};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let local = "127.0.0.1:5060".parse().expect("address");
    let config = StackConfig {
        listen: vec![(Transport::Udp, local), (Transport::Tcp, local)],
        ..StackConfig::default()
    };
    let mut stack = SipStack::new(config, 1, now);
    let transport = if data.first().is_some_and(|b| b & 1 == 1) {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let peer = Peer {
        transport,
        addr: "192.0.2.9:5060".parse().expect("address"),
    };
    // The message, then again (a retransmission), each followed by draining the outputs.
    for _ in 0..2 {
        stack.handle_message(now, peer, data);
        while !matches!(stack.poll_output(), Output::Timeout(_)) {}
    }
    let later = now + Duration::from_secs(3600);
    stack.handle_timeout(later);
    while !matches!(stack.poll_output(), Output::Timeout(_)) {}
});
