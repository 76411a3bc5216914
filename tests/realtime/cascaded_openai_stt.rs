//! A cascaded call on the second STT and the TTS socket: the caller's μ-law goes to OpenAI's
//! transcription session untouched (`audio/pcmu`), its server VAD and voxline's VAD end the
//! turn, the reply is spoken over Deepgram's WebSocket, and when the caller talks over it the
//! socket gets `Clear`, the playout stops and the history keeps what was heard. One TTS socket
//! serves the whole call.

use crate::cascaded_support::{CascadedE2e, question};
use crate::media_peer::{FRAME, pcmu_encode};
use crate::realtime_e2e_support::{converse, frame_of, is_agent_audio};

use std::time::Duration;

use voxline_mock_cascaded::{
    ChatMockConfig, ChatReply, ProvidersConfig, SttMockConfig, TtsMockConfig,
};

const REPLY: &str = "Let me read you the whole list of our opening hours for every branch. \
The main office opens at eight in the morning and closes at six in the evening. \
The north branch opens at nine and closes at five. The south branch is closed on Mondays. \
The west branch opens at ten on weekdays and at eleven on Saturdays, and it closes at four.";

#[test]
fn openai_transcription_and_deepgrams_socket_carry_a_call_with_a_barge_in() {
    let cfg = ProvidersConfig {
        stt: SttMockConfig {
            utterances: vec![
                "tell me your hours".into(),
                "stop, just the main office".into(),
            ],
            ..SttMockConfig::default()
        },
        chat: ChatMockConfig {
            script: vec![ChatReply::Text(REPLY.into())],
            ..ChatMockConfig::default()
        },
        // Deepgram streams the audio a little faster than real time: it is still sending
        // the reply when the caller interrupts, so there is something to clear.
        tts: TtsMockConfig {
            chunk_delay: Duration::from_millis(15),
            ..TtsMockConfig::default()
        },
        ..ProvidersConfig::default()
    };
    let h = CascadedE2e::start_with_stt(cfg, "openai", "deepgram-ws");
    let (mut sip, mut rtp, to) = h.call("1000");
    let q1 = question("Tell me your opening hours");
    let q2 = question("Stop, just the main office please");
    let mut interrupt_at: Option<usize> = None;
    let got = converse(&mut rtp, to, 25 + q1.len() / FRAME + 550, |k, got| {
        let heard = got.iter().filter(|p| is_agent_audio(p)).count();
        // Five seconds into the reply (see cascaded_barge_in for why not earlier).
        if interrupt_at.is_none() && heard >= 250 {
            interrupt_at = Some(k);
        }
        let mut f = match interrupt_at {
            Some(at) => frame_of(&q2, k, at),
            None => frame_of(&q1, k, 25),
        };
        f.resize(FRAME, 0);
        pcmu_encode(&f)
    });
    assert_eq!(sip.bye(), 200);
    let out = h.vox.output();
    assert!(interrupt_at.is_some(), "the reply never played\n{out}");
    assert!(h.mock.errors().is_empty(), "{:?}\n{out}", h.mock.errors());

    // The STT: a transcription session in the call's own μ-law (the mock refuses anything
    // else), set up before the first audio.
    let queries = h.mock.stt_queries();
    assert!(queries[0].contains("intent=transcription"), "{queries:?}");
    let controls = h.mock.stt_controls();
    assert_eq!(controls[0], "session.update", "{controls:?}");
    assert!(controls.iter().any(|c| c == "input_audio_buffer.append"));

    // The TTS: one socket, Clear on the barge-in, and the playout stopped.
    assert_eq!(h.mock.tts_socket_connections(), 1);
    let msgs = h.mock.tts_socket_messages();
    assert!(msgs.iter().any(|m| m == "Clear"), "{msgs:?}");
    let total = got.iter().filter(|p| is_agent_audio(p)).count();
    assert!(
        total < 450,
        "the playout did not stop: {total} frames\n{out}"
    );

    // The LLM heard both turns, and the history holds the reply as heard.
    assert!(
        h.wait(Duration::from_secs(3), |m| m.chat_requests().len() >= 2),
        "no second LLM request\n{out}"
    );
    let first = &h.mock.chat_requests()[0].body;
    let last_user = first["messages"].as_array().unwrap().last().unwrap()["content"].clone();
    assert_eq!(last_user, "tell me your hours");
    let second = &h.mock.chat_requests()[1].body;
    let msgs = second["messages"].as_array().unwrap();
    let heard = msgs
        .iter()
        .find(|m| m["role"] == "assistant")
        .and_then(|m| m["content"].as_str())
        .expect("some of the reply was heard");
    assert!(
        heard.len() < REPLY.len() * 3 / 4 && REPLY.starts_with(heard),
        "the history holds {heard:?}\n{out}"
    );
    let last = msgs.last().unwrap()["content"].as_str().unwrap();
    assert!(last.starts_with("stop, just the main office"), "{last}");
}
