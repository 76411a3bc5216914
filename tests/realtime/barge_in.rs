//! Barge-in: the mock detects the caller's speech while the agent talks and sends
//! `speech_started`; the call layer answers `Interrupt { played_ms }`; the client cancels the
//! response (if still in progress) and truncates the assistant item being heard to exactly
//! what was heard of it, which the mock accepts only because it is within the audio sent for
//! that item. A reply queued behind the one being heard is deleted.

use crate::realtime_support;

use realtime_support::*;
use voxline::agent::backend::{AudioFormat, BackendControl, BackendEvent, BackendHandle};
use voxline::agent::realtime::{RealtimeConfig, TurnDetection, connect};
use voxline_mock_realtime::{MockConfig, MockServer, PCM_RATE, tone};

/// A mock that talks for 3 s in real time.
async fn talking_mock() -> MockServer {
    MockServer::start(MockConfig {
        pace: true,
        chunk_ms: 20,
        reply_pcm24k: tone(440.0, 8000.0, 3000, PCM_RATE),
        ..mock_config()
    })
    .await
    .unwrap()
}

/// Starts the greeting and waits until at least `ms` of it arrived; returns the events.
async fn listen_for(h: &mut BackendHandle, ms: usize) -> Vec<BackendEvent> {
    let mut events = Vec::new();
    while audio_of(&events).len() < ms * 8 {
        events.push(next_event(h).await);
    }
    events
}

fn cfg(mock: &MockServer, interrupt_response: Option<bool>) -> RealtimeConfig {
    RealtimeConfig {
        greeting: Some("Hello".into()),
        turn_detection: Some(TurnDetection::ServerVad {
            threshold: None,
            prefix_padding_ms: Some(0),
            silence_duration_ms: Some(300),
            create_response: Some(false),
            interrupt_response,
        }),
        ..config(mock)
    }
}

#[tokio::test]
async fn interrupt_cancels_and_truncates_to_what_was_heard() {
    let mock = talking_mock().await;
    // The server leaves the response running on speech: the client must cancel it.
    let mut h = connect(cfg(&mock, Some(false)), ctx(AudioFormat::Pcmu8k))
        .await
        .unwrap();
    listen_for(&mut h, 400).await;
    send_pcmu(&h, pcmu_speech(200)).await;
    let (started, _) = wait_for(&mut h, "SpeechStarted", |e| {
        matches!(e, BackendEvent::SpeechStarted { .. })
    })
    .await;
    // The caller sent nothing before the speech and the prefix padding is 0.
    assert_eq!(started, BackendEvent::SpeechStarted { audio_start_ms: 0 });
    h.control
        .send(BackendControl::Interrupt { played_ms: 250 })
        .await
        .unwrap();
    let (_, between) = wait_for(&mut h, "ResponseDone", |e| *e == BackendEvent::ResponseDone).await;
    assert!(
        !between
            .iter()
            .any(|e| matches!(e, BackendEvent::Error { .. })),
        "{between:?}"
    );
    assert!(
        mock.wait_until(EVENT_WAIT, |m| !m.truncations().is_empty())
            .await
    );
    let t = mock.truncations();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].audio_end_ms, 250);
    assert!(t[0].audio_sent_ms >= 400, "{t:?}");
    let cancels = mock.received_of_type("response.cancel");
    assert_eq!(cancels.len(), 1);
    assert!(
        cancels[0]["response_id"]
            .as_str()
            .unwrap()
            .starts_with("resp_")
    );
    let truncate = &mock.received_of_type("conversation.item.truncate")[0];
    assert_eq!(truncate["item_id"].as_str().unwrap(), t[0].item_id);
    assert_eq!(truncate["content_index"], 0);
    assert!(mock.errors_sent().is_empty(), "{:?}", mock.errors_sent());
}

#[tokio::test]
async fn server_cancelled_response_is_only_truncated() {
    let mock = talking_mock().await;
    // interrupt_response defaults to true: the server cancels by itself.
    let mut h = connect(cfg(&mock, None), ctx(AudioFormat::Pcmu8k))
        .await
        .unwrap();
    listen_for(&mut h, 300).await;
    send_pcmu(&h, pcmu_speech(200)).await;
    wait_for(&mut h, "SpeechStarted", |e| {
        matches!(e, BackendEvent::SpeechStarted { .. })
    })
    .await;
    wait_for(&mut h, "ResponseDone", |e| *e == BackendEvent::ResponseDone).await;
    h.control
        .send(BackendControl::Interrupt { played_ms: 180 })
        .await
        .unwrap();
    assert!(
        mock.wait_until(EVENT_WAIT, |m| !m.truncations().is_empty())
            .await
    );
    assert_eq!(mock.truncations()[0].audio_end_ms, 180);
    // The response was over: no cancel for a response that is not active.
    assert!(mock.received_of_type("response.cancel").is_empty());
    assert!(mock.errors_sent().is_empty(), "{:?}", mock.errors_sent());
}

#[tokio::test]
async fn played_ms_beyond_the_received_audio_is_clamped() {
    let mock = talking_mock().await;
    let mut h = connect(cfg(&mock, Some(false)), ctx(AudioFormat::Pcmu8k))
        .await
        .unwrap();
    let events = listen_for(&mut h, 300).await;
    h.control
        .send(BackendControl::Interrupt { played_ms: 60_000 })
        .await
        .unwrap();
    assert!(
        mock.wait_until(EVENT_WAIT, |m| !m.truncations().is_empty())
            .await
    );
    let t = &mock.truncations()[0];
    // What the client had received when it handled the interrupt: at least what the test
    // saw, never more than the mock sent (else the mock would have answered an error).
    assert!(
        t.audio_end_ms >= audio_of(&events).len() as u64 / 8,
        "{t:?}"
    );
    assert!(t.audio_end_ms <= t.audio_sent_ms, "{t:?}");
    assert!(t.audio_end_ms < 3000);
    assert!(mock.errors_sent().is_empty(), "{:?}", mock.errors_sent());
}

#[tokio::test]
async fn interrupt_with_nothing_playing_sends_nothing() {
    let mock = MockServer::start(mock_config()).await.unwrap();
    let h = connect(config(&mock), ctx(AudioFormat::Pcmu8k))
        .await
        .unwrap();
    h.control
        .send(BackendControl::Interrupt { played_ms: 100 })
        .await
        .unwrap();
    // A marker after it: once it arrives, the interrupt was handled.
    send_pcmu(&h, pcmu_silence(20)).await;
    assert!(
        mock.wait_until(EVENT_WAIT, |m| !m.audio_received_bytes().is_empty())
            .await
    );
    assert!(mock.received_of_type("response.cancel").is_empty());
    assert!(
        mock.received_of_type("conversation.item.truncate")
            .is_empty()
    );
}

/// A session on `mock` that has delivered two replies of 1 s (the greeting, then one asked
/// for), both sent at once; the first reply's length in ms.
async fn two_replies(mock: &MockServer) -> (BackendHandle, u64) {
    let cfg = RealtimeConfig {
        greeting: Some("Hello".into()),
        ..config(mock)
    };
    let mut h = connect(cfg, ctx(AudioFormat::Pcmu8k)).await.unwrap();
    let (_, first) = wait_for(&mut h, "first reply done", |e| {
        *e == BackendEvent::ResponseDone
    })
    .await;
    h.control
        .send(BackendControl::Say {
            instructions: "Go on.".into(),
        })
        .await
        .unwrap();
    let (_, second) = wait_for(&mut h, "second reply done", |e| {
        *e == BackendEvent::ResponseDone
    })
    .await;
    let first_ms = audio_of(&first).len() as u64 / 8;
    assert!(
        first_ms >= 900 && !audio_of(&second).is_empty(),
        "{first_ms}"
    );
    (h, first_ms)
}

#[tokio::test]
async fn a_reply_queued_behind_the_one_heard_is_deleted() {
    // The second reply is all delivered while the first still plays; the caller is 400 ms
    // into the first.
    let mock = MockServer::start(mock_config()).await.unwrap();
    let (h, _) = two_replies(&mock).await;
    h.control
        .send(BackendControl::Interrupt { played_ms: 400 })
        .await
        .unwrap();
    assert!(
        mock.wait_until(EVENT_WAIT, |m| !m.deletions().is_empty())
            .await
    );
    let t = mock.truncations();
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0].audio_end_ms, 400);
    let deleted = mock.deletions();
    assert_eq!(deleted.len(), 1);
    assert_ne!(deleted[0], t[0].item_id);
    assert!(mock.errors_sent().is_empty(), "{:?}", mock.errors_sent());

    // Into the second reply instead: the first was heard in full and stays as it is.
    let mock = MockServer::start(mock_config()).await.unwrap();
    let (h, first_ms) = two_replies(&mock).await;
    h.control
        .send(BackendControl::Interrupt {
            played_ms: first_ms + 300,
        })
        .await
        .unwrap();
    assert!(
        mock.wait_until(EVENT_WAIT, |m| !m.truncations().is_empty())
            .await
    );
    let t = mock.truncations();
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0].audio_end_ms, 300);
    assert!(mock.deletions().is_empty());
}
