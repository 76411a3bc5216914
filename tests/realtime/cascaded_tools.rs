//! Tools on a cascaded agent: the LLM calls two HTTP tools in parallel, their calls streamed
//! as interleaved deltas with the arguments cut into pieces; voxline reassembles both, runs
//! them through the same tool code as the realtime backend, and sends the next LLM request
//! with the assistant's tool calls and both results in order (the mock refuses a history
//! whose tool messages do not answer the calls), whose reply then plays.

use crate::cascaded_support::{CascadedE2e, agent_frames, question, say_and_listen};
use crate::e2e_http_tool::serve;

use std::time::Duration;

use serde_json::json;
use voxline_mock_cascaded::{ChatMockConfig, ChatReply, ProvidersConfig};

#[test]
fn parallel_tool_calls_round_trip() {
    let (url, seen) = serve(r#"{"status":"shipped"}"#);
    let cfg = ProvidersConfig {
        chat: ChatMockConfig {
            script: vec![
                ChatReply::Tools(vec![
                    ("lookup_order".into(), json!({"order": "42"})),
                    ("lookup_order".into(), json!({"order": "7"})),
                ]),
                ChatReply::Text("Both orders have shipped.".into()),
            ],
            ..ChatMockConfig::default()
        },
        ..ProvidersConfig::default()
    };
    let tool = format!(
        r#"[[agent.http_tool]]
name = "lookup_order"
description = "Look up an order by its number."
url = "{url}"
parameters = {{ type = "object", properties = {{ order = {{ type = "string" }} }}, required = ["order"] }}
"#
    );
    let h = CascadedE2e::start(cfg, "deepgram", "", &tool);
    let (mut sip, mut rtp, to) = h.call("5551234");
    let q = question("Where are my orders");
    let got = say_and_listen(&mut rtp, to, &q, 25, 25 + q.len() / 160 + 250);
    assert_eq!(sip.bye(), 200);
    let out = h.vox.output();
    assert!(h.mock.errors().is_empty(), "{:?}\n{out}", h.mock.errors());
    let posted = seen.lock().unwrap().clone();
    let mut orders: Vec<String> = posted
        .iter()
        .map(|b| {
            serde_json::from_str::<serde_json::Value>(b).unwrap()["arguments"]["order"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    orders.sort();
    assert_eq!(orders, ["42", "7"], "{out}");
    assert!(
        h.wait(Duration::from_secs(3), |m| m.chat_requests().len() >= 2),
        "{out}"
    );
    let first = &h.mock.chat_requests()[0].body;
    assert!(
        first["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["function"]["name"] == "lookup_order")
    );
    let msgs = h.mock.chat_requests()[1].body["messages"]
        .as_array()
        .unwrap()
        .clone();
    let n = msgs.len();
    let call_msg = &msgs[n - 3];
    assert_eq!(call_msg["role"], "assistant");
    assert_eq!(call_msg["tool_calls"][0]["id"], "call_mock_0");
    assert_eq!(
        call_msg["tool_calls"][0]["function"]["arguments"],
        r#"{"order":"42"}"#
    );
    assert_eq!(
        call_msg["tool_calls"][1]["function"]["arguments"],
        r#"{"order":"7"}"#
    );
    for m in &msgs[n - 2..] {
        assert_eq!(m["role"], "tool");
        assert_eq!(m["content"], r#"{"status":"shipped"}"#);
    }
    let tts: Vec<String> = h
        .mock
        .tts_requests()
        .iter()
        .map(|t| t.text.clone())
        .collect();
    assert_eq!(tts, ["Both orders have shipped."]);
    assert!(agent_frames(&got) > 30, "{out}");
}
