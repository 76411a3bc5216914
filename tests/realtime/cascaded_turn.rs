//! A full cascaded turn through a running voxline: the caller's speech goes to the STT in
//! the call's own μ-law, voxline's VAD and the STT's final transcript end the turn, the
//! transcript reaches the LLM as the user's message, the reply is cut into sentences that the
//! TTS speaks in the call's format, and the audio reaches the caller as RTP. The call leaves a
//! record with the turn's latency (each stage's part too: STT final, LLM first token, TTS
//! first byte, also in `/metrics`) and a transcript with both sides.

use crate::cascaded_support::{CascadedE2e, agent_frames, question, say_and_listen};

use std::time::Duration;

use voxline::records::read_transcript;
use voxline_mock_cascaded::{ProvidersConfig, SttMockConfig};

#[test]
fn a_turn_goes_through_stt_llm_and_tts_and_is_recorded() {
    let cfg = ProvidersConfig {
        stt: SttMockConfig {
            utterances: vec!["what is my account balance".into()],
            ..SttMockConfig::default()
        },
        ..ProvidersConfig::default()
    };
    let h = CascadedE2e::start(cfg, "deepgram", "", "");
    let (mut sip, mut rtp, to) = h.call("1000");
    let q = question("What is my account balance please");
    let got = say_and_listen(&mut rtp, to, &q, 25, 25 + q.len() / 160 + 300);
    assert_eq!(sip.bye(), 200);

    let out = h.vox.output();
    assert!(h.mock.errors().is_empty(), "{:?}\n{out}", h.mock.errors());
    let queries = h.mock.stt_queries();
    assert!(
        queries[0].contains("encoding=mulaw") && queries[0].contains("sample_rate=8000"),
        "the STT did not get the call's own format: {queries:?}"
    );
    let chats = h.mock.chat_requests();
    assert_eq!(chats.len(), 1, "{out}");
    let msgs = chats[0].body["messages"].as_array().unwrap().clone();
    assert_eq!(msgs[0]["role"], "system");
    assert!(
        msgs[0]["content"]
            .as_str()
            .unwrap()
            .starts_with("You are a test agent. The caller is ")
    );
    assert_eq!(
        msgs.last().unwrap()["content"],
        "what is my account balance"
    );
    assert_eq!(chats[0].body["model"], "mock-model");
    let tts: Vec<String> = h
        .mock
        .tts_requests()
        .iter()
        .map(|t| t.text.clone())
        .collect();
    assert_eq!(
        tts,
        [
            "You said: what is my account balance.",
            "What else can I do?"
        ],
        "{out}"
    );
    let params = &h.mock.tts_requests()[0].params;
    assert_eq!(params["encoding"], "mulaw");
    assert_eq!(params["sample_rate"], "8000");
    // 40 ms of audio per character: 56 characters, 2.2 s, 112 frames, a fifth of them the
    // pauses between syllables.
    let frames = agent_frames(&got);
    assert!(
        frames >= 80,
        "only {frames} frames of the reply played\n{out}"
    );

    let record = crate::cascaded_support::finished_record(h.vox.work_dir());
    let r = record.unwrap_or_else(|| panic!("no finished record:\n{out}"));
    assert_eq!(r.agent, "bot");
    assert_eq!(r.turn_latencies.len(), 1, "turns: {:?}", r.turn_latencies);
    let t = r.turn_latencies[0];
    assert!(t.response_latency_ms().is_some());
    // The stages' figures: each provider's part of the turn.
    assert!(
        t.stt_final_ms.is_some() && t.llm_first_token_ms.is_some() && t.tts_first_byte_ms.is_some(),
        "{t:?}"
    );
    let (_, metrics) =
        crate::common::http_get(h.vox.http_addr(), "/metrics", Duration::from_secs(5)).unwrap();
    for name in [
        "voxline_turn_stt_final_seconds_count 1\n",
        "voxline_turn_llm_first_token_seconds_count 1\n",
        "voxline_turn_tts_first_byte_seconds_count 1\n",
    ] {
        assert!(metrics.contains(name), "{name}: {metrics}");
    }
    let path = r.transcript_path.clone().expect("a transcript path");
    let transcript = read_transcript(h.vox.work_dir().join(&path)).expect("transcript");
    let lines: Vec<(String, String)> = transcript
        .entries
        .iter()
        .map(|e| (format!("{:?}", e.role), e.text.clone()))
        .collect();
    assert!(
        lines.contains(&("Caller".into(), "what is my account balance".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&(
            "Agent".into(),
            "You said: what is my account balance. What else can I do?".into()
        )),
        "{lines:?}"
    );
}
