//! Local turn-taking: with `turn_detection = "local"` the server's turn detection is off
//! (`null` in the session), and voxline's VAD ends the caller's turn: it commits the input
//! buffer and asks for a response, and the reply plays.

use crate::realtime_e2e_support;

use std::time::Duration;

use realtime_e2e_support::{RealtimeE2e, converse, frame_of, is_agent_audio, speech};
use voxline::media::codec::g711::ulaw_encode;
use voxline_mock_realtime::MockConfig;

#[test]
fn voxline_ends_the_callers_turn_and_the_reply_plays() {
    let h = RealtimeE2e::start(
        MockConfig::default(),
        "",
        "",
        "turn_detection = \"local\"\n",
    );
    let (mut sip, mut rtp, to) = h.call("1000");
    let question = speech("en-us", "Can you tell me my account balance please");
    let got = converse(&mut rtp, to, 300, |k, _| {
        let mut f = frame_of(&question, k, 10);
        f.resize(160, 0);
        f.iter().map(|s| ulaw_encode(*s)).collect()
    });
    assert_eq!(sip.bye(), 200);
    let session = &h.mock.sessions()[0];
    assert!(
        session["audio"]["input"]["turn_detection"].is_null(),
        "the server's turn detection is on: {session}"
    );
    assert!(
        h.wait(Duration::from_secs(2), |m| !m
            .received_of_type("input_audio_buffer.commit")
            .is_empty()),
        "no commit: {:?}",
        h.mock
            .received_events()
            .iter()
            .map(|e| e["type"].clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(h.mock.speech_starts(), 0, "the server's VAD ran");
    assert!(!h.mock.received_of_type("response.create").is_empty());
    assert!(
        h.mock.errors_sent().is_empty(),
        "{:?}",
        h.mock.errors_sent()
    );
    assert!(
        got.iter().filter(|p| is_agent_audio(p)).count() >= 20,
        "the reply did not play"
    );
}
