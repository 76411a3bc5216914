//! Barge-in on a cascaded backend when its replies queue up: the greeting and a second reply
//! are both delivered (the TTS is much faster than real time) while the caller is still
//! hearing the greeting. The interrupt's position falls inside the greeting, so the greeting
//! is cut to what was heard and the second reply, never heard, is dropped from the history:
//! the next LLM request carries neither its text nor an empty assistant message (which the
//! API would refuse).

use crate::cascaded_support::backend_config;
use crate::realtime_support::{audio_of, ctx, wait_for};

use std::time::Duration;

use voxline::agent::backend::{AudioFormat, BackendControl, BackendEvent, Role};
use voxline::agent::cascaded::tts::{TtsConfig, TtsProvider};
use voxline::agent::cascaded::{ApiKey, CascadedConfig, connect};
use voxline_mock_cascaded::{ChatMockConfig, ChatReply, MockProviders, ProvidersConfig};

const KEY: &str = "queued-replies-key";
const GREETING: &str = "Hello, you are through to the billing line of the test company.";
const SECOND: &str = "I can also read your last three invoices to you if you like.";

fn config(mock: &MockProviders) -> CascadedConfig {
    let tts = TtsConfig {
        provider: TtsProvider::DeepgramRest,
        url: mock.deepgram_url(),
        model: String::new(),
        voice: "aura-2-thalia-en".into(),
        api_key: Some(ApiKey::new(KEY)),
        timeout: Duration::from_secs(5),
    };
    backend_config(mock, KEY, tts, GREETING)
}

#[tokio::test]
async fn a_barge_in_inside_the_greeting_drops_the_reply_queued_behind_it() {
    let mock = MockProviders::start(ProvidersConfig {
        api_key: KEY.into(),
        chat: ChatMockConfig {
            script: vec![
                ChatReply::Text(SECOND.into()),
                ChatReply::Text("Sure.".into()),
            ],
            ..ChatMockConfig::default()
        },
        ..ProvidersConfig::default()
    })
    .await
    .unwrap();
    let mut h = connect(config(&mock), ctx(AudioFormat::Pcmu8k))
        .await
        .unwrap();
    let (_, greeting) = wait_for(&mut h, "greeting done", |e| {
        *e == BackendEvent::ResponseDone
    })
    .await;
    h.control
        .send(BackendControl::Say {
            instructions: "Offer the invoices.".into(),
        })
        .await
        .unwrap();
    let (_, second) = wait_for(&mut h, "second reply done", |e| {
        *e == BackendEvent::ResponseDone
    })
    .await;
    // μ-law: 8 bytes per ms.
    let greeting_ms = audio_of(&greeting).len() as u64 / 8;
    assert!(greeting_ms > 1000 && !audio_of(&second).is_empty());

    // The caller is halfway through the greeting.
    h.control
        .send(BackendControl::Interrupt {
            played_ms: greeting_ms / 2,
        })
        .await
        .unwrap();
    let mut corrected = Vec::new();
    while corrected.len() < 2 {
        let (ev, _) = wait_for(&mut h, "corrections", |e| {
            matches!(e, BackendEvent::TranscriptCorrected { .. })
        })
        .await;
        if let BackendEvent::TranscriptCorrected { role, text, .. } = ev {
            assert_eq!(role, Role::Agent);
            corrected.push(text);
        }
    }
    assert!(
        !corrected[0].is_empty() && GREETING.starts_with(&corrected[0]) && corrected[0] != GREETING,
        "{corrected:?}"
    );
    assert_eq!(corrected[1], "", "the second reply was never heard");

    // The next round sees the greeting as heard and no trace of the second reply.
    h.control
        .send(BackendControl::Say {
            instructions: "Ask how you can help.".into(),
        })
        .await
        .unwrap();
    assert!(
        mock.wait_until(Duration::from_secs(5), |m| m.chat_requests().len() == 2)
            .await
    );
    let body = &mock.chat_requests()[1].body;
    let assistant: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .map(|m| m["content"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(assistant, vec![corrected[0].as_str()], "{body}");
    assert!(mock.errors().is_empty(), "{:?}", mock.errors());
}
