//! The other direction of a backend chain: a cascaded agent whose LLM fails (HTTP 500) on the
//! caller's first turn hands the call to its realtime fallback, which gets the caller's
//! unanswered words as a conversation item and is asked to answer them at once; its reply
//! plays in the same call, and the record names the switch and the LLM's error.

use crate::cascaded_support::{ChainE2e, agent_frames, question, say_and_listen};
use crate::realtime_e2e_support::call;

use voxline::agent::chain::ANSWER_LAST;
use voxline_mock_cascaded::{ChatMockConfig, ChatReply, ProvidersConfig, SttMockConfig};
use voxline_mock_realtime::MockConfig;

#[test]
fn an_llm_error_hands_the_turn_to_the_realtime_fallback() {
    let h = ChainE2e::start(
        MockConfig::default(),
        ProvidersConfig {
            stt: SttMockConfig {
                utterances: vec!["what are your opening hours".into()],
                ..SttMockConfig::default()
            },
            chat: ChatMockConfig {
                script: vec![ChatReply::Status(500)],
                ..ChatMockConfig::default()
            },
            ..ProvidersConfig::default()
        },
        "cascaded",
        "transcription_model = \"\"\n",
        "backends = [\"realtime\"]\nswitch_prompt = \"\"\n",
    );
    let (realtime, providers, vox) = (&h.realtime, &h.providers, &h.vox);
    let (mut sip, mut rtp, to) = call(vox.sip_addr(), "1000");
    let q = question("What are your opening hours");
    let got = say_and_listen(&mut rtp, to, &q, 10, 10 + q.len() / 160 + 250);
    assert_eq!(sip.bye(), 200);
    let out = vox.output();
    assert_eq!(providers.chat_requests().len(), 1, "{out}");
    assert!(
        agent_frames(&got) > 20,
        "the realtime reply did not play\n{out}"
    );
    let items = realtime.received_of_type("conversation.item.create");
    assert!(
        items.iter().any(|i| i["item"]["role"] == "user"
            && i["item"]["content"][0]["text"] == "what are your opening hours"),
        "{items:?}"
    );
    let creates = realtime.received_of_type("response.create");
    assert!(
        creates
            .iter()
            .any(|c| c["response"]["instructions"] == ANSWER_LAST),
        "{creates:?}"
    );
    let r = crate::cascaded_support::finished_record(vox.work_dir())
        .unwrap_or_else(|| panic!("no record\n{out}"));
    assert_eq!(r.backend_switches.len(), 1, "{:?}", r.backend_switches);
    let s = &r.backend_switches[0];
    assert_eq!((s.from.as_str(), s.to.as_str()), ("cascaded", "realtime"));
    assert!(s.reason.contains("HTTP 500"), "{}", s.reason);
}
