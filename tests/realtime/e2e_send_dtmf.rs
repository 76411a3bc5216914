//! The `send_dtmf` tool end to end: the model presses `1`, `2`, `#`; the caller receives
//! them as RFC 4733 telephone-event packets (payload type 101), in order, each with an end
//! packet, and the model gets `{"sent":"12#"}` back. Through a trunk with `dtmf = "inband"`
//! they arrive as tones in the audio instead.

use crate::media_peer;
use crate::realtime_e2e_support;

use std::time::Duration;

use realtime_e2e_support::{RealtimeE2e, talk};
use voxline_mock_realtime::{MockConfig, ToolScript};

/// A mock model that calls `send_dtmf` with "12#" on its first turn.
fn presses_12_hash() -> MockConfig {
    MockConfig {
        tool_call: Some(ToolScript {
            on_turn: 1,
            name: "send_dtmf".into(),
            arguments: r#"{"digits":"12#"}"#.into(),
        }),
        ..MockConfig::default()
    }
}

#[test]
fn send_dtmf_produces_rfc4733_events() {
    let mock = presses_12_hash();
    let h = RealtimeE2e::start(mock, "", "", "[agent.tools]\nsend_dtmf = true\n");
    let (mut sip, mut rtp, to) = h.call("1000");
    let packets = talk(&mut rtp, to, 30, 100);
    let mut events: Vec<(u8, bool)> = packets
        .iter()
        .filter(|p| p.pt == 101 && p.payload.len() >= 4)
        .map(|p| (p.payload[0], p.payload[1] & 0x80 != 0))
        .collect();
    assert!(!events.is_empty(), "no telephone-event packets");
    events.dedup();
    let ends: Vec<u8> = events
        .iter()
        .filter(|(_, end)| *end)
        .map(|(e, _)| *e)
        .collect();
    // RFC 4733 §3.2 event codes: 1, 2, # = 11.
    assert_eq!(ends, vec![1, 2, 11], "event sequence {events:?}");
    assert!(h.wait(Duration::from_secs(2), |m| !m.tool_outputs().is_empty()));
    assert_eq!(h.mock.tool_outputs()[0].1, r#"{"sent":"12#"}"#);
    assert_eq!(sip.bye(), 200);
}

/// A trunk with `dtmf = "inband"`: the call from its address is answered without
/// telephone-event, and the model's `1`, `2`, `#` reach the caller as Q.23 tones in the PCMU
/// audio, which a Q.24 receiver (voxline's in-band detector) reads back in order.
#[test]
fn a_trunk_with_inband_dtmf_gets_tones() {
    use voxline::media::dtmf::inband::{InbandConfig, InbandDetector};

    let mock = presses_12_hash();
    let trunk =
        "[[trunk]]\nname = \"pbx\"\nhost = \"127.0.0.1\"\nregister = false\ndtmf = \"inband\"\n";
    let h = RealtimeE2e::start(
        mock,
        "",
        "",
        &format!("[agent.tools]\nsend_dtmf = true\n{trunk}"),
    );
    let (mut sip, mut rtp, to) = h.call("1000");
    let packets = talk(&mut rtp, to, 30, 100);
    assert!(
        !packets.iter().any(|p| p.pt == 101),
        "telephone-event sent to an in-band trunk"
    );
    let mut detector = InbandDetector::new(InbandConfig::default()).expect("detector");
    let start = std::time::Instant::now();
    let mut digits = String::new();
    for (k, p) in packets.iter().filter(|p| p.pt == 0).enumerate() {
        let at = start + Duration::from_millis(20 * k as u64);
        for d in detector.process(at, &media_peer::pcmu_decode(&p.payload)) {
            digits.push(d.digit.as_char());
        }
    }
    if let Some(d) = detector.flush() {
        digits.push(d.digit.as_char());
    }
    assert_eq!(digits, "12#");
    assert!(h.wait(Duration::from_secs(2), |m| !m.tool_outputs().is_empty()));
    assert_eq!(h.mock.tool_outputs()[0].1, r#"{"sent":"12#"}"#);
    assert_eq!(sip.bye(), 200);
}
