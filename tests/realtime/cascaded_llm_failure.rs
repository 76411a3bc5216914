//! The other direction of a backend chain: a cascaded agent whose LLM fails (HTTP 500) on the
//! caller's first turn hands the call to its realtime fallback, which gets the caller's
//! unanswered words as a conversation item and is asked to answer them at once; its reply
//! plays in the same call, and the record names the switch and the LLM's error.

use crate::cascaded_support::{KEY, KEY_ENV, agent_frames, question, say_and_listen};
use crate::common::VoxlineProcess;
use crate::realtime_e2e_support::call;

use voxline::agent::chain::ANSWER_LAST;
use voxline_mock_cascaded::{
    ChatMockConfig, ChatReply, MockProviders, ProvidersConfig, SttMockConfig,
};
use voxline_mock_realtime::{MockConfig, MockServer};

#[test]
fn an_llm_error_hands_the_turn_to_the_realtime_fallback() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let realtime = rt
        .block_on(MockServer::start(MockConfig {
            api_key: KEY.into(),
            ..MockConfig::default()
        }))
        .unwrap();
    let providers = rt
        .block_on(MockProviders::start(ProvidersConfig {
            api_key: KEY.into(),
            stt: SttMockConfig {
                utterances: vec!["what are your opening hours".into()],
                ..SttMockConfig::default()
            },
            chat: ChatMockConfig {
                script: vec![ChatReply::Status(500)],
                ..ChatMockConfig::default()
            },
            ..ProvidersConfig::default()
        }))
        .unwrap();
    let toml = format!(
        r#"
[[route]]
number = "*"
agent = "bot"

[[agent]]
name = "bot"
kind = "cascaded"
instructions = "You are a test agent."
allow_from = ["127.0.0.0/8"]

[agent.stt]
url = "{stt}"
api_key_env = "{KEY_ENV}"

[agent.llm]
url = "{llm}"
api_key_env = "{KEY_ENV}"

[agent.tts]
provider = "deepgram"
url = "{tts}"
api_key_env = "{KEY_ENV}"

[agent.realtime]
url = "{rt_url}"
api_key_env = "{KEY_ENV}"
transcription_model = ""
noise_reduction = "none"

[agent.fallback]
backends = ["realtime"]
switch_prompt = ""
"#,
        rt_url = realtime.url(),
        stt = providers.stt_url(),
        llm = providers.openai_url(),
        tts = providers.deepgram_url(),
    );
    let vox = VoxlineProcess::spawn_with_env(&toml, &[(KEY_ENV, KEY)]);
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
