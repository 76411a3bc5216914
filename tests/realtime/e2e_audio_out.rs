//! Backend → caller: the mock answers a caller turn with `audio/pcmu` deltas, and exactly
//! those bytes arrive at the caller as RTP payloads (PCMU, paced 20 ms frames, the first
//! with the marker bit), untouched by voxline.

use crate::realtime_e2e_support;

use std::time::Duration;

use realtime_e2e_support::{RealtimeE2e, agent_bytes, find, is_agent_audio, talk_until_answered};
use voxline_mock_realtime::MockConfig;

#[test]
fn the_backends_audio_reaches_the_caller_as_rtp_byte_for_byte() {
    let h = RealtimeE2e::start(MockConfig::default(), "", "", "");
    let (mut sip, mut rtp, to) = h.call("1000");
    // 600 ms of speech, then silence while the reply (1 s) plays.
    let packets = talk_until_answered(&mut rtp, to, 30, 120);
    let sent = h.mock.audio_sent_bytes();
    assert_eq!(sent.len(), 8000, "the mock's reply is 1 s of μ-law");
    let got = agent_bytes(&packets);
    assert!(
        find(&got, &sent).is_some(),
        "the reply did not arrive byte for byte: {} agent bytes received, {} sent",
        got.len(),
        sent.len()
    );
    let first = packets
        .iter()
        .position(is_agent_audio)
        .expect("agent audio");
    assert!(
        packets[first].marker,
        "talkspurt start without the marker bit"
    );
    assert!(
        packets.iter().all(|p| p.pt == 0),
        "voxline sent a payload type other than PCMU"
    );
    assert!(h.wait(Duration::from_secs(1), |m| m.connections() == 1));
    assert_eq!(sip.bye(), 200);
}
