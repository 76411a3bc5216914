//! Mid-call drop: the mock cuts the connection; the client reconnects within its 1 s
//! budget, re-sends the same `session.update`, replays the conversation so far as text items
//! (caller as `input_text`, agent as `output_text`), reports `Reconnected`, and audio flows
//! again. Without reconnection, or when it fails, the client reports a fatal error and
//! `Closed`.

use crate::realtime_support;

use realtime_support::*;
use serde_json::json;
use voxline::agent::backend::{AudioFormat, BackendEvent, Role};
use voxline::agent::realtime::{RealtimeConfig, connect};
use voxline_mock_realtime::MockServer;

#[tokio::test]
async fn reconnects_resends_session_and_replays_history() {
    let mock = MockServer::start(mock_config()).await.unwrap();
    let cfg = RealtimeConfig {
        greeting: Some("Hello".into()),
        input_transcription: Some("gpt-4o-mini-transcribe".into()),
        ..config(&mock)
    };
    let mut h = connect(cfg, ctx(AudioFormat::Pcmu8k)).await.unwrap();
    // Greeting, then one caller turn answered by the agent.
    wait_for(&mut h, "greeting done", |e| {
        *e == BackendEvent::ResponseDone
    })
    .await;
    caller_turn(&h, 300).await;
    let (caller, _) = wait_for(&mut h, "caller transcript", |e| {
        matches!(
            e,
            BackendEvent::TranscriptFinal {
                role: Role::Caller,
                ..
            }
        )
    })
    .await;
    let BackendEvent::TranscriptFinal { text: said, .. } = caller else {
        unreachable!()
    };
    assert!(said.starts_with("caller said "), "{said}");
    wait_for(&mut h, "reply done", |e| *e == BackendEvent::ResponseDone).await;
    assert_eq!(mock.connections(), 1);

    mock.drop_connections();
    let (_, skipped) = wait_for(&mut h, "Reconnected", |e| *e == BackendEvent::Reconnected).await;
    // Reconnected rather than a fatal error: the client made it within its budget.
    assert!(
        !skipped
            .iter()
            .any(|e| matches!(e, BackendEvent::Error { .. } | BackendEvent::Closed)),
        "{skipped:?}"
    );
    assert_eq!(mock.connections(), 2);
    let sessions = mock.sessions();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0], sessions[1]);
    let greeting = "Hello from the mock realtime server";
    assert!(
        mock.wait_until(EVENT_WAIT, |m| m.items_created().len() == 3)
            .await,
        "{:?}",
        mock.items_created()
    );
    assert_eq!(
        mock.items_created(),
        [
            json!({"type": "message", "role": "assistant",
                   "content": [{"type": "output_text", "text": greeting}]}),
            json!({"type": "message", "role": "user",
                   "content": [{"type": "input_text", "text": said}]}),
            json!({"type": "message", "role": "assistant",
                   "content": [{"type": "output_text", "text": greeting}]}),
        ]
    );
    // No greeting again after the reconnect.
    assert_eq!(mock.received_of_type("response.create").len(), 1);

    // Audio continues on the new connection.
    let before = mock.audio_received_bytes().len();
    send_pcmu(&h, vec![vec![0x55; 160]; 5]).await;
    assert!(
        mock.wait_until(EVENT_WAIT, |m| m.audio_received_bytes().len()
            == before + 800)
            .await
    );
    assert_eq!(mock.audio_received_bytes()[before..], [0x55; 800][..]);
    // And the agent still answers.
    caller_turn(&h, 300).await;
    wait_for(&mut h, "agent audio", |e| {
        matches!(e, BackendEvent::Audio(_))
    })
    .await;
    assert!(mock.errors_sent().is_empty(), "{:?}", mock.errors_sent());
}

#[tokio::test]
async fn interrupted_agent_text_is_replayed_as_heard() {
    let mock = MockServer::start(mock_config()).await.unwrap();
    let cfg = RealtimeConfig {
        greeting: Some("Hello".into()),
        ..config(&mock)
    };
    let mut h = connect(cfg, ctx(AudioFormat::Pcmu8k)).await.unwrap();
    wait_for(&mut h, "greeting done", |e| {
        *e == BackendEvent::ResponseDone
    })
    .await;
    // The caller heard 40% of the 1 s greeting.
    h.control
        .send(voxline::agent::backend::BackendControl::Interrupt { played_ms: 400 })
        .await
        .unwrap();
    assert!(
        mock.wait_until(EVENT_WAIT, |m| !m.truncations().is_empty())
            .await
    );
    mock.drop_connections();
    wait_for(&mut h, "Reconnected", |e| *e == BackendEvent::Reconnected).await;
    assert!(
        mock.wait_until(EVENT_WAIT, |m| m.items_created().len() == 1)
            .await
    );
    // 40% of "Hello from the mock realtime server" (35 chars) is 14 chars, cut back to a
    // word: "Hello from the".
    assert_eq!(
        mock.items_created()[0]["content"][0]["text"],
        "Hello from the"
    );
}

#[tokio::test]
async fn without_reconnect_a_drop_is_fatal() {
    let mock = MockServer::start(mock_config()).await.unwrap();
    let cfg = RealtimeConfig {
        reconnect: false,
        ..config(&mock)
    };
    let mut h = connect(cfg, ctx(AudioFormat::Pcmu8k)).await.unwrap();
    mock.drop_connections();
    let ev = next_event(&mut h).await;
    assert!(
        matches!(ev, BackendEvent::Error { fatal: true, .. }),
        "{ev:?}"
    );
    assert_eq!(next_event(&mut h).await, BackendEvent::Closed);
    assert_eq!(h.events.recv().await, None);
    assert_eq!(mock.connections(), 1);
}

#[tokio::test]
async fn failed_reconnect_is_fatal() {
    let mock = MockServer::start(mock_config()).await.unwrap();
    let mut h = connect(config(&mock), ctx(AudioFormat::Pcmu8k))
        .await
        .unwrap();
    mock.set_accepting(false);
    mock.drop_connections();
    let ev = next_event(&mut h).await;
    let BackendEvent::Error {
        fatal: true,
        message,
    } = ev
    else {
        panic!("expected a fatal error, got {ev:?}")
    };
    assert!(message.contains("reconnecting failed"), "{message}");
    assert_eq!(next_event(&mut h).await, BackendEvent::Closed);
    assert_eq!(mock.connections(), 1);
}
