//! The streaming TTS sockets of a cascaded backend, against the strict mocks:
//!
//! * Deepgram Aura over WebSocket: one socket for the whole call, audio in the call's own
//!   format, `Flush` per piece, and on barge-in a `Clear` after which the cancelled reply's
//!   audio stops and the next reply speaks on the same socket.
//! * ElevenLabs stream-input: a socket per reply, μ-law asked for a μ-law call, and a
//!   barge-in trimmed through the character alignment: the mock's speech starts after
//!   300 ms of silence, which a proportional cut would get wrong.

use crate::cascaded_support::backend_config;
use crate::realtime_support::{audio_of, ctx, next_event, wait_for};

use std::time::Duration;

use voxline::agent::backend::{AudioFormat, BackendControl, BackendEvent};
use voxline::agent::cascaded::tts::{TtsConfig, TtsProvider};
use voxline::agent::cascaded::{ApiKey, connect};
use voxline_mock_cascaded::tts_ws::ELEVEN_LEAD_MS;
use voxline_mock_cascaded::{
    ChatMockConfig, ChatReply, MockProviders, ProvidersConfig, TtsMockConfig,
};

const KEY: &str = "tts-socket-key";
const GREETING: &str = "Hello, you are through to the billing line of the test company.";
const LONG: &str = "Your last invoice was sent on the third of March. It covers the line rental \
and the calls of February. The amount is forty two pounds and ten pence. It is due at the end \
of the month, and you can pay it by card or by bank transfer.";

fn tts(provider: TtsProvider, mock: &MockProviders, voice: &str, model: &str) -> TtsConfig {
    TtsConfig {
        provider,
        url: mock.tts_socket_url(),
        model: model.into(),
        voice: voice.into(),
        api_key: Some(ApiKey::new(KEY)),
        timeout: Duration::from_secs(5),
    }
}

async fn mock(chunk_delay: Duration) -> MockProviders {
    MockProviders::start(ProvidersConfig {
        api_key: KEY.into(),
        chat: ChatMockConfig {
            script: vec![
                ChatReply::Text(LONG.into()),
                ChatReply::Text("Of course.".into()),
            ],
            ..ChatMockConfig::default()
        },
        tts: TtsMockConfig {
            chunk_delay,
            ..TtsMockConfig::default()
        },
        ..ProvidersConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn deepgram_socket_speaks_the_call_format_and_clears_on_barge_in() {
    // Audio paced at 5 ms per 20 ms chunk: a reply takes a while to arrive.
    let mock = mock(Duration::from_millis(5)).await;
    let cfg = backend_config(
        &mock,
        KEY,
        tts(TtsProvider::DeepgramWs, &mock, "aura-2-thalia-en", ""),
        GREETING,
    );
    let mut h = connect(cfg, ctx(AudioFormat::Pcma8k)).await.unwrap();
    let (_, greeting) = wait_for(&mut h, "greeting done", |e| {
        *e == BackendEvent::ResponseDone
    })
    .await;
    // A-law straight from Deepgram: 40 ms per character.
    let bytes = audio_of(&greeting).len();
    assert!(
        greeting.iter().all(|e| match e {
            BackendEvent::Audio(c) => c.format == AudioFormat::Pcma8k,
            _ => true,
        }),
        "{greeting:?}"
    );
    assert_eq!(bytes, GREETING.chars().count() * 40 * 8);
    let q = &mock.tts_requests()[0];
    assert_eq!(q.provider, "deepgram-ws");
    let url = q.params.as_str().unwrap();
    assert!(
        url.contains("encoding=alaw") && url.contains("sample_rate=8000"),
        "{url}"
    );

    // The long reply; the caller interrupts once some of it has arrived.
    h.control
        .send(BackendControl::Say {
            instructions: "Read the invoice.".into(),
        })
        .await
        .unwrap();
    let mut got = 0usize;
    while got < 8000 {
        if let BackendEvent::Audio(c) = next_event(&mut h).await {
            got += c.data.len();
        }
    }
    let delivered = bytes + got;
    h.control
        .send(BackendControl::Interrupt {
            played_ms: (delivered / 8) as u64,
        })
        .await
        .unwrap();
    let (_, until_done) = wait_for(&mut h, "interrupted reply done", |e| {
        *e == BackendEvent::ResponseDone
    })
    .await;
    let long_ms = LONG.chars().count() * 40;
    let after = audio_of(&until_done).len();
    assert!(
        (got + after) / 8 < long_ms / 2,
        "the reply went on after the barge-in: {} of {long_ms} ms",
        (got + after) / 8
    );
    assert!(
        mock.wait_until(Duration::from_secs(2), |m| m
            .tts_socket_messages()
            .iter()
            .any(|t| t == "Clear"))
            .await,
        "{:?}",
        mock.tts_socket_messages()
    );

    // The next reply speaks in full on the same socket.
    h.control
        .send(BackendControl::Say {
            instructions: "Answer briefly.".into(),
        })
        .await
        .unwrap();
    let (_, next) = wait_for(&mut h, "next reply done", |e| {
        *e == BackendEvent::ResponseDone
    })
    .await;
    assert_eq!(audio_of(&next).len(), "Of course.".chars().count() * 40 * 8);
    assert_eq!(mock.tts_socket_connections(), 1);
    let msgs = mock.tts_socket_messages();
    assert!(
        msgs.iter().filter(|t| *t == "Flush").count() >= 3,
        "{msgs:?}"
    );
    assert!(mock.errors().is_empty(), "{:?}", mock.errors());
}

#[tokio::test]
async fn elevenlabs_alignment_trims_the_history_to_the_words_heard() {
    let mock = mock(Duration::ZERO).await;
    let cfg = backend_config(
        &mock,
        KEY,
        tts(
            TtsProvider::ElevenLabs,
            &mock,
            "voice-123",
            "eleven_flash_v2_5",
        ),
        GREETING,
    );
    let mut h = connect(cfg, ctx(AudioFormat::Pcmu8k)).await.unwrap();
    let (_, greeting) = wait_for(&mut h, "greeting done", |e| {
        *e == BackendEvent::ResponseDone
    })
    .await;
    let total_ms = (audio_of(&greeting).len() / 8) as u64;
    let chars = GREETING.chars().count() as u64;
    // The text goes with the trailing space stream-input asks for, and is spoken with it.
    assert_eq!(total_ms, ELEVEN_LEAD_MS + (chars + 1) * 40);
    let msgs = mock.tts_socket_messages();
    assert_eq!(msgs.first().map(String::as_str), Some(r#"{"text":" "}"#));
    assert!(
        msgs.iter().any(|m| m.contains(r#""flush":true"#)),
        "{msgs:?}"
    );
    assert_eq!(msgs.last().map(String::as_str), Some(r#"{"text":""}"#));
    let url = mock.tts_requests()[0].params.as_str().unwrap().to_owned();
    assert!(
        url.contains("/v1/text-to-speech/voice-123/stream-input")
            && url.contains("model_id=eleven_flash_v2_5")
            && url.contains("output_format=ulaw_8000"),
        "{url}"
    );

    // The caller heard the silence and 25 characters' worth of speech: "to" had started.
    let played = ELEVEN_LEAD_MS + 25 * 40 + 10;
    h.control
        .send(BackendControl::Interrupt { played_ms: played })
        .await
        .unwrap();
    let (ev, _) = wait_for(&mut h, "correction", |e| {
        matches!(e, BackendEvent::TranscriptCorrected { .. })
    })
    .await;
    let BackendEvent::TranscriptCorrected { text, .. } = ev else {
        unreachable!()
    };
    // Words whose first character had started by then, less the one being spoken.
    let starts: Vec<usize> = GREETING
        .char_indices()
        .filter(|(i, c)| !c.is_whitespace() && (*i == 0 || GREETING.as_bytes()[i - 1] == b' '))
        .map(|(i, _)| i)
        .collect();
    let cut = starts.iter().copied().filter(|s| *s <= 25).max().unwrap();
    assert_eq!(text, GREETING[..cut].trim_end());
    // A proportional cut (the heard share of all the audio, silence included) would have
    // kept the word being spoken too.
    let proportional = (played as f64 / total_ms as f64 * chars as f64) as usize;
    let word_end = GREETING[cut..]
        .find(' ')
        .map_or(GREETING.len(), |e| cut + e);
    assert!(proportional >= word_end, "the test cannot tell them apart");
    assert_eq!(mock.tts_socket_connections(), 1);
    assert!(mock.errors().is_empty(), "{:?}", mock.errors());
}

#[tokio::test]
async fn deepgram_replies_beyond_the_flush_budget_move_to_a_fresh_socket() {
    // Replies back to back, far more than Deepgram's 20 flushes a minute allow on one socket:
    // none waits for the minute to pass and none is refused (the mock warns and records an
    // error for a flush over the limit).
    let mock = MockProviders::start(ProvidersConfig {
        api_key: KEY.into(),
        ..ProvidersConfig::default()
    })
    .await
    .unwrap();
    let cfg = backend_config(
        &mock,
        KEY,
        tts(TtsProvider::DeepgramWs, &mock, "aura-2-thalia-en", ""),
        GREETING,
    );
    let mut h = connect(cfg, ctx(AudioFormat::Pcmu8k)).await.unwrap();
    wait_for(&mut h, "greeting done", |e| {
        *e == BackendEvent::ResponseDone
    })
    .await;
    for i in 0..16 {
        h.control
            .send(BackendControl::Say {
                instructions: format!("Reply {i}."),
            })
            .await
            .unwrap();
        let (_, reply) = wait_for(&mut h, "reply done", |e| *e == BackendEvent::ResponseDone).await;
        assert!(!audio_of(&reply).is_empty(), "reply {i} was silent");
    }
    assert!(mock.tts_socket_connections() >= 2);
    assert!(mock.errors().is_empty(), "{:?}", mock.errors());
}
