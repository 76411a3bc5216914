//! The `hang_up` tool end to end: the model answers the caller's turn with a `hang_up` call
//! and no audio. voxline returns the tool's output without asking for a reply, asks the agent
//! for a goodbye, lets that goodbye play out completely (every byte the mock sent arrives as
//! RTP), and only then sends BYE.

use crate::realtime_e2e_support;

use std::time::Duration;

use realtime_e2e_support::{RealtimeE2e, agent_bytes, find, talk};
use voxline_mock_realtime::{MockConfig, ToolScript};

#[test]
fn hang_up_sends_bye_after_the_goodbye_has_played() {
    let mock = MockConfig {
        tool_call: Some(ToolScript {
            on_turn: 1,
            name: "hang_up".into(),
            arguments: r#"{"reason":"caller said bye"}"#.into(),
        }),
        ..MockConfig::default()
    };
    let h = RealtimeE2e::start(mock, "", "", "");
    let (mut sip, mut rtp, to) = h.call("1000");
    // Speak, then listen for 3 s: the goodbye (1 s) plays and the BYE comes.
    let packets = talk(&mut rtp, to, 30, 150);
    let bye = sip.wait_request("BYE", Duration::from_secs(5));
    assert!(bye.is_some(), "no BYE from voxline:\n{}", h.vox.output());
    let outputs = h.mock.tool_outputs();
    assert_eq!(outputs.len(), 1, "tool outputs: {outputs:?}");
    assert!(outputs[0].1.contains("goodbye"), "output: {}", outputs[0].1);
    let creates = h.mock.received_of_type("response.create");
    assert!(
        creates.iter().any(|c| c["response"]["instructions"]
            .as_str()
            .is_some_and(|i| i.contains("goodbye"))),
        "no goodbye requested: {creates:?}"
    );
    let goodbye = h.mock.audio_sent_bytes();
    assert!(!goodbye.is_empty(), "the mock sent no goodbye audio");
    let heard = agent_bytes(&packets);
    assert!(
        find(&heard, &goodbye).is_some(),
        "the goodbye did not play out completely before BYE ({} of {} bytes heard)",
        heard.len(),
        goodbye.len()
    );
}
