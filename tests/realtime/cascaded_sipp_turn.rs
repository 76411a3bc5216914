//! A full cascaded turn with SIPp as the caller: SIPp calls voxline with PCMA and plays
//! sip-tester's recorded speech (g711a.pcap, 30 ms packets). The agent runs on OpenAI's
//! transcription session (A-law goes up as it is: the mock refuses any other format than the
//! session's) and ElevenLabs' stream-input (PCM 16 kHz for an A-law call, converted by
//! voxline). Its turn reaches the LLM, the reply goes back to SIPp as RTP, and the record
//! holds the turn's latencies (stages and voice to voice) and a transcript with both sides.

use crate::cascaded_support::{CascadedE2e, finished_record};
use crate::common::{scenario, sipp};
use crate::media_peer::{CallSpy, wait_ended};

use std::time::Duration;

use voxline::records::read_transcript;
use voxline_mock_cascaded::{ProvidersConfig, SttMockConfig};

#[test]
fn sipp_speaks_to_a_cascaded_agent_on_openai_stt_and_elevenlabs_tts() {
    let cfg = ProvidersConfig {
        stt: SttMockConfig {
            // The recorded speech of g711a.pcap is quiet.
            rms_threshold: 150.0,
            utterances: vec!["I would like to check my order".into()],
            ..SttMockConfig::default()
        },
        ..ProvidersConfig::default()
    };
    let h = CascadedE2e::start_with_stt(cfg, "openai", "elevenlabs");
    let spy = CallSpy::start(h.vox.http_addr());
    let run = sipp(
        &[
            "-sf",
            &scenario("uac_pcap_echo.xml"),
            "-s",
            "1000",
            "-m",
            "1",
            &h.vox.sip_addr().to_string(),
        ],
        Duration::from_secs(25),
    );
    run.assert_success("a PCMA call that plays g711a.pcap");
    let id = spy.the_call(Duration::from_secs(1));
    let call = wait_ended(h.vox.http_addr(), id, Duration::from_secs(5));
    let out = h.vox.output();
    assert_eq!(call["codec"], "PCMA", "{call:#}");
    // The reply went back to SIPp as RTP (the recording talks on over it, and the agent
    // stops for it: how much played depends on where the recording's next words fall).
    let agent_ms = call["media"]["agent_ms_sent"].as_u64().unwrap_or(0);
    assert!(agent_ms > 0, "agent_ms_sent {agent_ms}\n{call:#}\n{out}");
    assert!(h.mock.errors().is_empty(), "{:?}\n{out}", h.mock.errors());

    assert!(
        h.mock.stt_audio_bytes() > 8 * 5000,
        "the STT got {} bytes\n{out}",
        h.mock.stt_audio_bytes()
    );
    let chats = h.mock.chat_requests();
    assert!(!chats.is_empty(), "no turn reached the LLM\n{out}");
    let first = chats[0].body["messages"].as_array().unwrap();
    assert_eq!(
        first.last().unwrap()["content"],
        "I would like to check my order"
    );
    let tts = h.mock.tts_requests();
    assert!(!tts.is_empty(), "nothing was spoken\n{out}");
    assert_eq!(tts[0].provider, "elevenlabs");
    let url = tts[0].params.as_str().unwrap();
    assert!(url.contains("output_format=pcm_16000"), "{url}");

    let r = finished_record(h.vox.work_dir()).unwrap_or_else(|| panic!("no record\n{out}"));
    let t = r
        .turn_latencies
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no turn latency: {r:?}\n{out}"));
    assert!(t.response_latency_ms().is_some(), "{t:?}");
    assert!(
        t.stt_final_ms.is_some() && t.llm_first_token_ms.is_some() && t.tts_first_byte_ms.is_some(),
        "{t:?}"
    );
    let transcript = read_transcript(h.vox.work_dir().join(r.transcript_path.clone().unwrap()))
        .expect("transcript");
    assert!(
        transcript
            .entries
            .iter()
            .any(|e| format!("{:?}", e.role) == "Caller"
                && e.text == "I would like to check my order"),
        "{:?}",
        transcript.entries
    );
    // The agent's line is what SIPp heard of the reply: all of it, or (the recording talks on
    // over it) the words that had started, possibly none.
    let reply = "You said: I would like to check my order. What else can I do?";
    for e in transcript
        .entries
        .iter()
        .filter(|e| format!("{:?}", e.role) == "Agent")
    {
        assert!(reply.starts_with(&e.text), "{:?}", transcript.entries);
    }
}
