//! Caller audio reaches the backend untouched: PCMU bytes sent as `BackendControl::Audio`
//! arrive at the mock byte for byte (base64 in `input_audio_buffer.append`); a PCM16 call at
//! 16 kHz is resampled to the 24 kHz `audio/pcm` the API speaks.

use crate::realtime_support;

use bytes::Bytes;
use realtime_support::*;
use voxline::agent::backend::{AudioChunk, AudioFormat, BackendControl};
use voxline::agent::realtime::{RealtimeConfig, connect};
use voxline_mock_realtime::MockServer;

#[tokio::test]
async fn pcmu_bytes_arrive_byte_for_byte() {
    let mock = MockServer::start(mock_config()).await.unwrap();
    let cfg = RealtimeConfig {
        turn_detection: None,
        ..config(&mock)
    };
    let h = connect(cfg, ctx(AudioFormat::Pcmu8k)).await.unwrap();
    // Every byte value, in an order that is not the identity.
    let sent: Vec<u8> = (0..8000u32).map(|i| (i * 151 % 256) as u8).collect();
    for chunk in sent.chunks(160) {
        h.control
            .send(BackendControl::Audio(AudioChunk {
                format: AudioFormat::Pcmu8k,
                data: Bytes::copy_from_slice(chunk),
            }))
            .await
            .unwrap();
    }
    assert!(
        mock.wait_until(EVENT_WAIT, |m| m.audio_received_bytes().len() >= sent.len())
            .await
    );
    assert_eq!(mock.audio_received_bytes(), sent);
    assert_eq!(mock.received_of_type("input_audio_buffer.append").len(), 50);
    assert!(mock.errors_sent().is_empty(), "{:?}", mock.errors_sent());
}

#[tokio::test]
async fn audio_in_another_format_is_not_sent() {
    let mock = MockServer::start(mock_config()).await.unwrap();
    let h = connect(config(&mock), ctx(AudioFormat::Pcmu8k))
        .await
        .unwrap();
    h.control
        .send(BackendControl::Audio(AudioChunk {
            format: AudioFormat::Pcma8k,
            data: Bytes::from_static(&[0xd5; 160]),
        }))
        .await
        .unwrap();
    send_pcmu(&h, vec![vec![0x7f; 160]]).await;
    assert!(
        mock.wait_until(EVENT_WAIT, |m| !m.audio_received_bytes().is_empty())
            .await
    );
    assert_eq!(mock.audio_received_bytes(), vec![0x7f; 160]);
}

#[tokio::test]
async fn pcm16_at_16k_is_resampled_to_24k() {
    let mock = MockServer::start(mock_config()).await.unwrap();
    let cfg = RealtimeConfig {
        turn_detection: None,
        ..config(&mock)
    };
    let h = connect(cfg, ctx(AudioFormat::Pcm16 { rate: 16000 }))
        .await
        .unwrap();
    // One second at 16 kHz in 20 ms chunks.
    for _ in 0..50 {
        let frame: Vec<u8> = (0..320).flat_map(|i: i16| (i * 50).to_le_bytes()).collect();
        h.control
            .send(BackendControl::Audio(AudioChunk {
                format: AudioFormat::Pcm16 { rate: 16000 },
                data: Bytes::from(frame),
            }))
            .await
            .unwrap();
    }
    // 24 kHz PCM16 is 48 bytes per ms; the resampler holds back at most one 20 ms chunk
    // plus its filter delay.
    assert!(
        mock.wait_until(EVENT_WAIT, |m| m.audio_received_bytes().len() >= 900 * 48)
            .await,
        "got {} bytes",
        mock.audio_received_bytes().len()
    );
    let got = mock.audio_received_bytes().len();
    assert!(got <= 1000 * 48 && got % 2 == 0, "got {got} bytes");
    assert!(mock.errors_sent().is_empty(), "{:?}", mock.errors_sent());
}
