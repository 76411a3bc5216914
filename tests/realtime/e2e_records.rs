//! Every realtime call leaves a record and a transcript: after a turn and the caller's BYE,
//! the SQLite record holds the codec, the end, the turn's latency figures and the transcript
//! path, and the JSONL transcript holds the caller's and the agent's lines, timestamped. The
//! turn is counted in `GET /metrics` too.

use crate::common;
use crate::realtime_e2e_support;

use std::time::Duration;

use realtime_e2e_support::{RealtimeE2e, talk};
use voxline::records::{RecordReader, read_transcript};
use voxline_mock_realtime::MockConfig;

#[test]
fn the_call_record_and_transcript_are_written() {
    let mock = MockConfig {
        reply_text: "Hello caller, this is the agent".into(),
        ..MockConfig::default()
    };
    let h = RealtimeE2e::start(mock, "", "", "");
    let (mut sip, mut rtp, to) = h.call("1000");
    talk(&mut rtp, to, 30, 90);
    assert_eq!(sip.bye(), 200);
    let data = h.vox.work_dir().join("data");
    let reader = RecordReader::open(&data).expect("records");
    let mut record = None;
    for _ in 0..50 {
        record = reader
            .list(10, 0)
            .expect("list")
            .into_iter()
            .find(|r| r.ended_at.is_some());
        if record.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = record.unwrap_or_else(|| panic!("no finished record:\n{}", h.vox.output()));
    assert_eq!(r.agent, "ai");
    assert_eq!(r.codec.as_deref(), Some("PCMU"));
    assert!(r.answered_at.is_some());
    assert_eq!(r.turn_latencies.len(), 1, "turns: {:?}", r.turn_latencies);
    let t = r.turn_latencies[0];
    let response = t.response_latency_ms().expect("the reply went out");
    assert!(
        t.first_backend_audio_ms.is_some() && response >= t.backend_latency_ms().unwrap_or(0),
        "turn {t:?}"
    );
    let path = r.transcript_path.clone().expect("a transcript path");
    // A relative data directory is relative to voxline's working directory.
    let transcript = read_transcript(h.vox.work_dir().join(&path)).expect("transcript");
    let lines: Vec<(String, String)> = transcript
        .entries
        .iter()
        .map(|e| (format!("{:?}", e.role), e.text.clone()))
        .collect();
    assert!(
        lines
            .iter()
            .any(|(role, text)| role == "Caller" && text.starts_with("caller said")),
        "no caller line: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|(role, text)| role == "Agent" && text == "Hello caller, this is the agent"),
        "no agent line: {lines:?}"
    );
    let (code, metrics) =
        common::http_get(h.vox.http_addr(), "/metrics", Duration::from_secs(5)).expect("metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("voxline_turn_response_latency_seconds_count 1\n")
            && metrics.contains("voxline_calls_answered_total 1\n"),
        "{metrics}"
    );
}
