//! Barge-in end to end: while the agent's 5 s reply plays, the caller speaks. voxline stops
//! the agent's RTP and tells the backend to truncate the reply to what the caller heard.
//! The mock checks that `audio_end_ms` never exceeds what it sent; here it must also cover
//! everything that really arrived as RTP at the caller (voxline cannot have played less than
//! the caller heard), cut the reply short, and the agent's RTP must stop. The exact position
//! against the playout is pinned on a virtual clock (`tests/realtime/barge_in.rs`).

use crate::media_peer;
use crate::realtime_e2e_support;

use std::time::Duration;

use media_peer::PTIME;
use realtime_e2e_support::{
    RealtimeE2e, converse, first_reply_frames, is_agent_audio, silence_frame, speech_frame,
};
use voxline_mock_realtime::{MockConfig, PCM_RATE, tone};

#[test]
fn barge_in_truncates_to_the_audio_the_caller_heard() {
    let mock = MockConfig {
        reply_pcm24k: tone(440.0, 8000.0, 5000, PCM_RATE),
        ..MockConfig::default()
    };
    let h = RealtimeE2e::start(mock, "", "", "");
    let (mut sip, mut rtp, to) = h.call("1000");
    // Speak 600 ms, then listen; once 1 s of the reply has arrived, speak again (400 ms).
    let mut barge_at: Option<usize> = None;
    let packets = converse(&mut rtp, to, 250, |k, got| {
        if k < 30 {
            return speech_frame(k);
        }
        let heard = got.iter().filter(|p| is_agent_audio(p)).count();
        if barge_at.is_none() && heard >= 50 {
            barge_at = Some(k);
        }
        match barge_at {
            Some(b) if k < b + 20 => speech_frame(k),
            _ => silence_frame(),
        }
    });
    assert!(barge_at.is_some(), "the reply never played for 1 s");
    assert!(
        h.wait(Duration::from_secs(3), |m| !m.truncations().is_empty()),
        "no truncate reached the mock; errors: {:?}",
        h.mock.errors_sent()
    );
    let t = h.mock.truncations()[0].clone();
    // The first reply's agent audio: from its first packet to the first gap of 200 ms (the
    // backend answers the barge-in turn with a second reply later, which is not counted).
    let (heard, stopped) = first_reply_frames(&packets);
    assert!(heard > 0, "no agent audio");
    assert!(stopped, "the reply never stopped");
    let heard_ms = heard * PTIME.as_millis() as u64;
    // Causal, not timed: every packet the caller got was played before the truncation
    // (one frame of slack for a partial last frame).
    assert!(
        heard_ms <= t.audio_end_ms + PTIME.as_millis() as u64,
        "truncated at {} ms, but the caller heard {heard_ms} ms",
        t.audio_end_ms
    );
    assert!(
        t.audio_end_ms < 5000 && t.audio_end_ms < t.audio_sent_ms,
        "truncation {t:?} should cut the reply short"
    );
    assert_eq!(sip.bye(), 200);
}
