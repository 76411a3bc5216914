//! Local barge-in on an echoing line: 5 s into the agent's reply the caller really speaks
//! over it (the echo goes on). voxline's VAD, after echo cancellation, decides exactly one
//! barge-in; the agent's RTP stops and the backend is told to truncate the reply to what
//! the caller heard.

use crate::media_peer;
use crate::realtime_e2e_support;

use std::time::Duration;

use media_peer::PTIME;
use realtime_e2e_support::{
    RealtimeE2e, echoing_caller, first_reply_frames, frame_of, is_agent_audio, speech, spoken_reply,
};
use voxline_mock_realtime::MockConfig;

#[test]
fn the_caller_talking_over_the_reply_is_one_barge_in_truncated_to_what_was_heard() {
    let mock = MockConfig {
        reply_pcm24k: spoken_reply(10.0),
        ..MockConfig::default()
    };
    let h = RealtimeE2e::start(mock, "", "", "");
    let (mut sip, mut rtp, to) = h.call("1000");
    let question = speech("en-gb+f3", "Hello, I have a question about my bill please.");
    let interruption = speech("en-us+m3", "Wait, wait, that is not what I asked for.");
    let mut barge_at: Option<usize> = None;
    let packets = echoing_caller(&mut rtp, to, 650, 10, 6.0, |k, got| {
        if k < 200 {
            return frame_of(&question, k, 10);
        }
        let heard = got.iter().filter(|p| is_agent_audio(p)).count();
        if barge_at.is_none() && heard >= 250 {
            barge_at = Some(k);
        }
        barge_at.map_or(Vec::new(), |b| frame_of(&interruption, k, b))
    });
    assert!(barge_at.is_some(), "the reply never played for 5 s");
    let dsp = crate::e2e_echo_line::call_dsp(&h);
    assert_eq!(dsp["local_barge_ins"], 1, "{dsp}");
    assert_eq!(sip.bye(), 200);
    assert!(
        h.wait(Duration::from_secs(2), |m| !m.truncations().is_empty()),
        "no truncate reached the mock; errors: {:?}",
        h.mock.errors_sent()
    );
    let log = h.vox.output();
    let barge_ins: Vec<&str> = log.lines().filter(|l| l.contains("barge-in")).collect();
    assert_eq!(barge_ins.len(), 1, "{barge_ins:#?}");
    assert!(barge_ins[0].contains("local=true"), "{}", barge_ins[0]);
    let t = h.mock.truncations()[0].clone();
    assert_eq!(h.mock.truncations().len(), 1);
    // What the caller heard of the first reply: its agent packets up to the first gap.
    let (heard, _) = first_reply_frames(&packets);
    assert!(heard > 0, "no agent audio");
    let heard_ms = heard * PTIME.as_millis() as u64;
    assert!(
        heard_ms <= t.audio_end_ms + PTIME.as_millis() as u64,
        "truncated at {} ms, but the caller heard {heard_ms} ms",
        t.audio_end_ms
    );
    // At least the 5 s before the interruption, and the reply was cut short.
    assert!(t.audio_end_ms >= 4800, "{t:?}");
    assert!(t.audio_end_ms < t.audio_sent_ms, "{t:?}");
    // The call's record counts the barge-in (for GET /analytics).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let record = loop {
        let (code, records) = crate::common::http_json(
            h.vox.http_addr(),
            "GET",
            "/records?limit=1",
            None,
            Duration::from_secs(5),
        );
        assert_eq!(code, 200, "{records}");
        if records[0].is_object() || std::time::Instant::now() >= deadline {
            break records[0].clone();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(record["barge_ins"], 1, "{record}");
}
