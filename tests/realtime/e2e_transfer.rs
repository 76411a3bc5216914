//! The `transfer_call` tool end to end, on an outbound call: the HTTP API places a call with
//! the realtime agent to SIPp, which answers with PCMA and talks (g711a.pcap). The model
//! answers the caller's first turn with `transfer_call("sales")`; voxline sends REFER to the
//! allow-listed URI, SIPp accepts (202, NOTIFY 100, NOTIFY 200), voxline hangs up its leg,
//! and the model is told the transfer succeeded.

use crate::common;
use crate::realtime_e2e_support;

use std::time::Duration;

use common::{Sipp, http_request, scenario};
use realtime_e2e_support::RealtimeE2e;
use voxline_mock_realtime::{MockConfig, ToolScript};

#[test]
fn transfer_call_sends_refer_and_reports_the_notify_result() {
    let sipp = Sipp::spawn(
        &["-sf", &scenario("uas_realtime_transfer.xml"), "-m", "1"],
        Duration::from_secs(40),
    );
    let mock = MockConfig {
        tool_call: Some(ToolScript {
            on_turn: 1,
            name: "transfer_call".into(),
            arguments: r#"{"target":"sales"}"#.into(),
        }),
        // The recorded speech of g711a.pcap is quiet.
        vad_rms_threshold: 150.0,
        ..MockConfig::default()
    };
    let h = RealtimeE2e::start(
        mock,
        "",
        "",
        "[[agent.tools.transfer_target]]\nname = \"sales\"\nuri = \"sip:sales@127.0.0.1:5999\"\n",
    );
    let body = format!(
        r#"{{"target":"sip:customer@{}","agent":"ai"}}"#,
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
        let got = h.mock.audio_received_bytes();
        let loud = got.iter().filter(|&&b| b != 0xD5 && b != 0x55).count();
        eprintln!(
            "mock: {} bytes of caller audio ({loud} not A-law silence), events received: {:?}",
            got.len(),
            h.mock
                .received_events()
                .iter()
                .map(|e| e["type"].as_str().unwrap_or("").to_owned())
                .filter(|t| t != "input_audio_buffer.append")
                .collect::<Vec<_>>()
        );
    }
    run.assert_success("REFER to sales, NOTIFY 100 and 200, then voxline's BYE");
    assert!(
        h.wait(Duration::from_secs(3), |m| !m.tool_outputs().is_empty()),
        "the model was not told the outcome:\n{}",
        h.vox.output()
    );
    let (_, output) = h.mock.tool_outputs()[0].clone();
    let v: serde_json::Value = serde_json::from_str(&output).expect("JSON output");
    assert_eq!(v["transferred"], true, "{output}");
    assert_eq!(v["status"], 200, "{output}");
    // PCMA end to end: the session was set up for audio/pcma.
    assert_eq!(
        h.mock.sessions()[0]["audio"]["input"]["format"]["type"],
        "audio/pcma"
    );
}
