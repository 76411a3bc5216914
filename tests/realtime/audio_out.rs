//! The model's audio comes back as `BackendEvent::Audio` in the call's format, byte for byte
//! what the mock sent (`response.output_audio.delta`), between `ResponseStarted` and
//! `ResponseDone`, with the agent's transcript.

use crate::realtime_support;

use realtime_support::*;
use voxline::agent::backend::{AudioFormat, BackendEvent, Role};
use voxline::agent::realtime::{RealtimeConfig, connect};
use voxline_mock_realtime::MockServer;

async fn greeting_audio(format: AudioFormat) {
    let mock = MockServer::start(mock_config()).await.unwrap();
    let cfg = RealtimeConfig {
        greeting: Some("Hi".into()),
        ..config(&mock)
    };
    let mut h = connect(cfg, ctx(format)).await.unwrap();
    assert_eq!(next_event(&mut h).await, BackendEvent::ResponseStarted);
    let (_, events) = wait_for(&mut h, "ResponseDone", |e| *e == BackendEvent::ResponseDone).await;
    for e in &events {
        if let BackendEvent::Audio(c) = e {
            assert_eq!(c.format, format);
        }
    }
    let audio = audio_of(&events);
    assert_eq!(audio, mock.audio_sent_bytes());
    // One second of reply audio in the wire format.
    let expected = match format {
        AudioFormat::Pcm16 { .. } => 48_000,
        _ => 8_000,
    };
    assert_eq!(audio.len(), expected);
    let finals: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            BackendEvent::TranscriptFinal { role, text, .. } => Some((*role, text.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        finals,
        [(
            Role::Agent,
            "Hello from the mock realtime server".to_owned()
        )]
    );
    let deltas: String = events
        .iter()
        .filter_map(|e| match e {
            BackendEvent::TranscriptDelta {
                role: Role::Agent,
                text,
            } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deltas, "Hello from the mock realtime server");
}

#[tokio::test]
async fn pcmu_audio_comes_back_as_pcmu() {
    greeting_audio(AudioFormat::Pcmu8k).await;
}

#[tokio::test]
async fn pcma_audio_comes_back_as_pcma() {
    greeting_audio(AudioFormat::Pcma8k).await;
}

#[tokio::test]
async fn pcm16_audio_comes_back_as_pcm16_24k() {
    greeting_audio(AudioFormat::Pcm16 { rate: 24000 }).await;
}

#[tokio::test]
async fn pcm16_call_at_16k_gets_16k_audio() {
    let mock = MockServer::start(mock_config()).await.unwrap();
    let cfg = RealtimeConfig {
        greeting: Some("Hi".into()),
        ..config(&mock)
    };
    let format = AudioFormat::Pcm16 { rate: 16000 };
    let mut h = connect(cfg, ctx(format)).await.unwrap();
    let (_, events) = wait_for(&mut h, "ResponseDone", |e| *e == BackendEvent::ResponseDone).await;
    let audio = audio_of(&events);
    // One second at 16 kHz: the resampler is flushed at response.output_audio.done.
    assert_eq!(audio.len(), 32_000);
    assert!(events.iter().all(|e| match e {
        BackendEvent::Audio(c) => c.format == format,
        _ => true,
    }));
}
