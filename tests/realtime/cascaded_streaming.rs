//! The reply is spoken while the LLM still writes: the LLM streams one word every 120 ms, the
//! first sentence goes to the TTS as soon as it is complete, and its audio reaches the caller
//! as RTP before the LLM's stream has finished.

use crate::cascaded_support::{CascadedE2e, agent_frames, question, say_and_listen};
use crate::realtime_e2e_support::is_agent_audio;

use std::time::Duration;

use voxline_mock_cascaded::{ChatMockConfig, ChatReply, ProvidersConfig};

const REPLY: &str = "Sure, I can help with that. Your balance is forty two dollars and ten cents, \
and your next payment is due on Friday the twelfth. Is there anything else I can do for you today?";

#[test]
fn the_first_sentence_plays_before_the_llm_finishes() {
    let cfg = ProvidersConfig {
        chat: ChatMockConfig {
            script: vec![ChatReply::Text(REPLY.into())],
            token_delay: Duration::from_millis(120),
            analysis: Vec::new(),
        },
        ..ProvidersConfig::default()
    };
    let h = CascadedE2e::start(cfg, "openai", "", "");
    let (mut sip, mut rtp, to) = h.call("1000");
    let q = question("What is my balance");
    let got = say_and_listen(&mut rtp, to, &q, 25, 25 + q.len() / 160 + 350);
    assert_eq!(sip.bye(), 200);
    let out = h.vox.output();
    assert!(h.mock.errors().is_empty(), "{:?}", h.mock.errors());
    let chat = &h.mock.chat_requests()[0];
    let finished = chat.finished.expect("the LLM stream finished").into_std();
    let tts = h.mock.tts_requests();
    assert_eq!(tts[0].text, "Sure, I can help with that.", "{out}");
    assert_eq!(tts[0].provider, "openai");
    assert!(
        tts[0].at.into_std() < finished,
        "the TTS started only after the LLM finished\n{out}"
    );
    let first_rtp = got
        .iter()
        .find(|p| is_agent_audio(p))
        .map(|p| p.at)
        .unwrap_or_else(|| panic!("no agent audio\n{out}"));
    assert!(
        first_rtp < finished,
        "the first audio reached the caller only after the LLM finished\n{out}"
    );
    // The whole reply was spoken, in order.
    let texts: Vec<&str> = tts.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(texts.join(" "), REPLY);
    assert!(agent_frames(&got) > 150, "{out}");
}
