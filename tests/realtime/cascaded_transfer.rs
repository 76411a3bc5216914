//! A cascaded agent's `transfer_call` through SIPp: the HTTP API places a call with the
//! cascaded agent to SIPp, which answers with PCMA and talks (g711a.pcap). The STT hears it in
//! A-law (`encoding=alaw`), the LLM answers the turn with `transfer_call("sales")`; voxline
//! sends REFER to the allow-listed URI, SIPp accepts (202, NOTIFY 100, NOTIFY 200) and voxline
//! hangs up its leg.

use crate::cascaded_support::CascadedE2e;
use crate::common::{Sipp, http_request, scenario};

use std::time::Duration;

use serde_json::json;
use voxline_mock_cascaded::{ChatMockConfig, ChatReply, ProvidersConfig, SttMockConfig};

#[test]
fn transfer_call_from_a_cascaded_agent_reaches_sipp() {
    let sipp = Sipp::spawn(
        &["-sf", &scenario("uas_realtime_transfer.xml"), "-m", "1"],
        Duration::from_secs(40),
    );
    let cfg = ProvidersConfig {
        stt: SttMockConfig {
            // The recorded speech of g711a.pcap is quiet.
            rms_threshold: 150.0,
            utterances: vec!["I want to talk to sales".into()],
            ..SttMockConfig::default()
        },
        chat: ChatMockConfig {
            script: vec![ChatReply::Tools(vec![(
                "transfer_call".into(),
                json!({"target": "sales"}),
            )])],
            ..ChatMockConfig::default()
        },
        ..ProvidersConfig::default()
    };
    let h = CascadedE2e::start(
        cfg,
        "deepgram",
        "",
        "[[agent.tools.transfer_target]]\nname = \"sales\"\nuri = \"sip:sales@127.0.0.1:5999\"\n",
    );
    let body = format!(
        r#"{{"target":"sip:customer@{}","agent":"bot"}}"#,
        sipp.addr()
    );
    let (code, resp) = http_request(
        h.vox.http_addr(),
        "POST",
        "/calls",
        Some(&body),
        Duration::from_secs(5),
    )
    .expect("POST /calls");
    assert_eq!(code, 201, "{resp}");
    let run = sipp.wait();
    if !run.success() {
        eprintln!(
            "STT audio {} bytes, sent {:?}, chats {}\n{}",
            h.mock.stt_audio_bytes(),
            h.mock.stt_sent(),
            h.mock.chat_requests().len(),
            h.vox.output()
        );
    }
    run.assert_success("REFER to sales, NOTIFY 100 and 200, then voxline's BYE");
    assert!(h.mock.errors().is_empty(), "{:?}", h.mock.errors());
    assert!(
        h.mock.stt_queries()[0].contains("encoding=alaw"),
        "{:?}",
        h.mock.stt_queries()
    );
    let first = &h.mock.chat_requests()[0].body;
    assert!(
        first["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["function"]["name"] == "transfer_call"),
        "{first}"
    );
}
