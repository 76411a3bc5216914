//! Tool round trip: the mock answers the caller's first turn with a function call; the
//! client reports `ToolCall` with parsed arguments; the call layer's `ToolResult` goes back
//! as a `function_call_output` item followed by `response.create`, and the agent speaks the
//! result. Bad JSON arguments are answered by the client itself with an error output.

use crate::realtime_support;

use realtime_support::*;
use serde_json::json;
use voxline::agent::backend::{AudioFormat, BackendControl, BackendEvent, Role};
use voxline::agent::realtime::connect;
use voxline_mock_realtime::{MockConfig, MockServer, ToolScript};

async fn tool_mock(arguments: &str) -> MockServer {
    MockServer::start(MockConfig {
        tool_call: Some(ToolScript {
            on_turn: 1,
            name: "get_weather".into(),
            arguments: arguments.into(),
        }),
        ..mock_config()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn tool_call_round_trip() {
    let mock = tool_mock(r#"{"city":"Paris"}"#).await;
    let mut c = ctx(AudioFormat::Pcmu8k);
    c.tools = vec![weather_tool()];
    let mut h = connect(config(&mock), c).await.unwrap();
    caller_turn(&h, 300).await;
    let (call, _) = wait_for(&mut h, "ToolCall", |e| {
        matches!(e, BackendEvent::ToolCall { .. })
    })
    .await;
    let BackendEvent::ToolCall {
        call_id,
        name,
        arguments,
    } = call
    else {
        unreachable!()
    };
    assert_eq!(name, "get_weather");
    assert_eq!(arguments, json!({"city": "Paris"}));
    // The function-call response ends before the result goes back.
    wait_for(&mut h, "ResponseDone", |e| *e == BackendEvent::ResponseDone).await;
    h.control
        .send(BackendControl::ToolResult {
            call_id: call_id.clone(),
            output: r#"{"temp_c":21}"#.into(),
        })
        .await
        .unwrap();
    let (fin, before) = wait_for(&mut h, "agent transcript", |e| {
        matches!(
            e,
            BackendEvent::TranscriptFinal {
                role: Role::Agent,
                ..
            }
        )
    })
    .await;
    let BackendEvent::TranscriptFinal { text, .. } = fin else {
        unreachable!()
    };
    assert_eq!(
        text,
        r#"Hello from the mock realtime server (tool result: {"temp_c":21})"#
    );
    assert!(before.contains(&BackendEvent::ResponseStarted));
    assert!(!audio_of(&before).is_empty());
    assert_eq!(
        mock.tool_outputs(),
        [(call_id.clone(), r#"{"temp_c":21}"#.to_owned())]
    );
    // The order on the wire: the output item, then response.create.
    let types: Vec<String> = mock
        .received_events()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .filter(|t| t != "input_audio_buffer.append")
        .collect();
    assert_eq!(
        types,
        [
            "session.update",
            "conversation.item.create",
            "response.create"
        ]
    );
    let item = &mock.items_created()[0];
    assert_eq!(
        *item,
        json!({"type": "function_call_output", "call_id": call_id, "output": "{\"temp_c\":21}"})
    );
    assert!(mock.errors_sent().is_empty(), "{:?}", mock.errors_sent());
}

#[tokio::test]
async fn bad_json_arguments_get_an_error_output() {
    let mock = tool_mock("{city: Paris").await;
    let mut c = ctx(AudioFormat::Pcmu8k);
    c.tools = vec![weather_tool()];
    let mut h = connect(config(&mock), c).await.unwrap();
    caller_turn(&h, 300).await;
    let (err, skipped) =
        wait_for(&mut h, "Error", |e| matches!(e, BackendEvent::Error { .. })).await;
    assert!(
        matches!(&err, BackendEvent::Error { fatal: false, message } if message.contains("get_weather")),
        "{err:?}"
    );
    assert!(
        !skipped
            .iter()
            .any(|e| matches!(e, BackendEvent::ToolCall { .. }))
    );
    // The client answered the call itself, then asked for a response once the call's
    // response was done; the mock speaks again.
    wait_for(&mut h, "agent transcript", |e| {
        matches!(
            e,
            BackendEvent::TranscriptFinal {
                role: Role::Agent,
                ..
            }
        )
    })
    .await;
    let outputs = mock.tool_outputs();
    assert_eq!(outputs.len(), 1);
    assert!(outputs[0].1.contains("not valid JSON"), "{outputs:?}");
    assert!(mock.errors_sent().is_empty(), "{:?}", mock.errors_sent());
}

#[tokio::test]
async fn result_for_an_unknown_call_is_reported_not_sent() {
    let mock = MockServer::start(mock_config()).await.unwrap();
    let mut h = connect(config(&mock), ctx(AudioFormat::Pcmu8k))
        .await
        .unwrap();
    h.control
        .send(BackendControl::ToolResult {
            call_id: "call_unknown".into(),
            output: "{}".into(),
        })
        .await
        .unwrap();
    let ev = next_event(&mut h).await;
    assert!(
        matches!(ev, BackendEvent::Error { fatal: false, .. }),
        "{ev:?}"
    );
    assert!(mock.received_of_type("conversation.item.create").is_empty());
}
