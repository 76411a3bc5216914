//! Shared helpers for the realtime client tests: a call context, a config pointing at the
//! mock, event waiting with a hang guard, and caller audio (speech and silence) in PCMU.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use voxline::agent::backend::{
    AudioChunk, AudioFormat, BackendControl, BackendEvent, BackendHandle, CallContext, ToolSpec,
};
use voxline::agent::realtime::{ApiKey, RealtimeConfig, TurnDetection};
use voxline_mock_realtime::{MockConfig, MockServer, tone, ulaw_encode};

/// The key the mock expects in these tests.
pub const KEY: &str = "sk-test-4f8e2a9c71d3b6e0";

/// Hang guard for waiting on one event.
pub const EVENT_WAIT: Duration = Duration::from_secs(5);

pub fn ctx(format: AudioFormat) -> CallContext {
    CallContext {
        caller: "+15551230000".into(),
        called: "100".into(),
        direction: "inbound".into(),
        variables: BTreeMap::from([("name".to_owned(), "Ada".to_owned())]),
        memory: String::new(),
        call_format: format,
        tools: vec![],
        history: Vec::new(),
    }
}

pub fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "get_weather".into(),
        description: "Current weather for a city".into(),
        parameters: serde_json::json!({
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"]
        }),
    }
}

pub fn mock_config() -> MockConfig {
    MockConfig {
        api_key: KEY.into(),
        ..MockConfig::default()
    }
}

/// A config for `mock`: short VAD silence so turns end quickly.
pub fn config(mock: &MockServer) -> RealtimeConfig {
    RealtimeConfig {
        url: mock.url(),
        api_key: Some(ApiKey::new(KEY)),
        instructions: "You answer calls for {{called}}.".into(),
        turn_detection: Some(TurnDetection::ServerVad {
            threshold: Some(0.5),
            prefix_padding_ms: Some(100),
            silence_duration_ms: Some(200),
            create_response: None,
            interrupt_response: None,
        }),
        connect_timeout: Duration::from_secs(2),
        ..RealtimeConfig::default()
    }
}

/// The next event, or a panic after [`EVENT_WAIT`].
pub async fn next_event(h: &mut BackendHandle) -> BackendEvent {
    match tokio::time::timeout(EVENT_WAIT, h.events.recv()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("event channel closed"),
        Err(_) => panic!("no backend event within {EVENT_WAIT:?}"),
    }
}

/// Reads events until one matches; returns it and the ones skipped.
pub async fn wait_for(
    h: &mut BackendHandle,
    what: &str,
    pred: impl Fn(&BackendEvent) -> bool,
) -> (BackendEvent, Vec<BackendEvent>) {
    let mut skipped = Vec::new();
    loop {
        let ev = match tokio::time::timeout(EVENT_WAIT, h.events.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => panic!("event channel closed waiting for {what}; saw {skipped:?}"),
            Err(_) => panic!("no {what} within {EVENT_WAIT:?}; saw {skipped:?}"),
        };
        if pred(&ev) {
            return (ev, skipped);
        }
        skipped.push(ev);
    }
}

/// Concatenated audio of the events.
pub fn audio_of(events: &[BackendEvent]) -> Vec<u8> {
    events
        .iter()
        .filter_map(|e| match e {
            BackendEvent::Audio(c) => Some(c.data.to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// `ms` of loud PCMU speech (a 300 Hz tone) in 20 ms chunks.
pub fn pcmu_speech(ms: u64) -> Vec<Vec<u8>> {
    let pcm = tone(300.0, 8000.0, ms, 8000);
    pcm.chunks(160)
        .map(|c| c.iter().map(|&s| ulaw_encode(s)).collect())
        .collect()
}

/// `ms` of PCMU silence in 20 ms chunks.
pub fn pcmu_silence(ms: u64) -> Vec<Vec<u8>> {
    (0..ms / 20).map(|_| vec![0xff; 160]).collect()
}

/// Sends PCMU chunks as caller audio.
pub async fn send_pcmu(h: &BackendHandle, chunks: Vec<Vec<u8>>) {
    for c in chunks {
        h.control
            .send(BackendControl::Audio(AudioChunk {
                format: AudioFormat::Pcmu8k,
                data: Bytes::from(c),
            }))
            .await
            .expect("backend alive");
    }
}

/// One caller turn: speech then enough silence to end it.
pub async fn caller_turn(h: &BackendHandle, speech_ms: u64) {
    send_pcmu(h, pcmu_speech(speech_ms)).await;
    send_pcmu(h, pcmu_silence(400)).await;
}
