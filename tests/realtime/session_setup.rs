//! Session setup: the mock (which rejects unknown and beta field names) accepts a GA
//! `session.update` whose audio formats follow the call (PCMU/PCMA passthrough, PCM16 as
//! `audio/pcm` at 24 kHz), with the instructions rendered and the tools listed.

use crate::realtime_support;

use realtime_support::*;
use serde_json::json;
use voxline::agent::backend::AudioFormat;
use voxline::agent::realtime::{NoiseReduction, RealtimeConfig, TurnDetection, connect};
use voxline_mock_realtime::MockServer;

async fn session_for(
    cfg: impl FnOnce(&MockServer) -> RealtimeConfig,
    format: AudioFormat,
) -> (MockServer, serde_json::Value) {
    let mock = MockServer::start(mock_config()).await.unwrap();
    let mut c = ctx(format);
    c.tools = vec![weather_tool()];
    let _h = connect(cfg(&mock), c).await.expect("connect");
    assert!(mock.errors_sent().is_empty(), "{:?}", mock.errors_sent());
    let sessions = mock.sessions();
    assert_eq!(sessions.len(), 1);
    (mock, sessions.into_iter().next().unwrap())
}

#[tokio::test]
async fn pcmu_call_gets_pcmu_both_ways_with_instructions_and_tools() {
    let (_mock, s) = session_for(
        |m| RealtimeConfig {
            instructions: "Hello {{var.name}}, you called {{called}} from {{caller}}.".into(),
            voice: Some("marin".into()),
            ..config(m)
        },
        AudioFormat::Pcmu8k,
    )
    .await;
    assert_eq!(s["type"], "realtime");
    assert_eq!(
        s["instructions"],
        "Hello Ada, you called 100 from +15551230000."
    );
    assert_eq!(s["output_modalities"], json!(["audio"]));
    assert_eq!(s["audio"]["input"]["format"], json!({"type": "audio/pcmu"}));
    assert_eq!(
        s["audio"]["output"]["format"],
        json!({"type": "audio/pcmu"})
    );
    assert_eq!(s["audio"]["output"]["voice"], "marin");
    assert_eq!(
        s["audio"]["input"]["turn_detection"],
        json!({"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 100,
               "silence_duration_ms": 200})
    );
    assert_eq!(s["audio"]["input"]["noise_reduction"], json!(null));
    assert_eq!(
        s["tools"],
        json!([{"type": "function", "name": "get_weather",
                "description": "Current weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"]}}])
    );
    assert_eq!(s["tool_choice"], "auto");
    // Nothing of the beta shape.
    for beta in [
        "modalities",
        "voice",
        "input_audio_format",
        "turn_detection",
        "temperature",
    ] {
        assert!(s.get(beta).is_none(), "beta field {beta} sent");
    }
}

#[tokio::test]
async fn pcma_call_gets_pcma() {
    let (_mock, s) = session_for(config, AudioFormat::Pcma8k).await;
    assert_eq!(s["audio"]["input"]["format"], json!({"type": "audio/pcma"}));
    assert_eq!(
        s["audio"]["output"]["format"],
        json!({"type": "audio/pcma"})
    );
}

#[tokio::test]
async fn pcm16_call_gets_pcm_24k() {
    for rate in [24000, 16000] {
        let (_mock, s) = session_for(config, AudioFormat::Pcm16 { rate }).await;
        let pcm = json!({"type": "audio/pcm", "rate": 24000});
        assert_eq!(s["audio"]["input"]["format"], pcm, "call rate {rate}");
        assert_eq!(s["audio"]["output"]["format"], pcm, "call rate {rate}");
    }
}

#[tokio::test]
async fn semantic_vad_transcription_noise_reduction() {
    let (_mock, s) = session_for(
        |m| RealtimeConfig {
            turn_detection: Some(TurnDetection::SemanticVad {
                eagerness: Some("high".into()),
                create_response: Some(true),
                interrupt_response: Some(false),
            }),
            input_transcription: Some("gpt-4o-transcribe".into()),
            noise_reduction: NoiseReduction::NearField,
            temperature: Some(0.7),
            ..config(m)
        },
        AudioFormat::Pcmu8k,
    )
    .await;
    let input = &s["audio"]["input"];
    assert_eq!(
        input["turn_detection"],
        json!({"type": "semantic_vad", "eagerness": "high", "create_response": true,
               "interrupt_response": false})
    );
    assert_eq!(
        input["transcription"],
        json!({"model": "gpt-4o-transcribe"})
    );
    assert_eq!(input["noise_reduction"], json!({"type": "near_field"}));
    assert!(s.get("temperature").is_none());
}

#[tokio::test]
async fn no_turn_detection_is_null() {
    let (_mock, s) = session_for(
        |m| RealtimeConfig {
            turn_detection: None,
            ..config(m)
        },
        AudioFormat::Pcmu8k,
    )
    .await;
    assert_eq!(s["audio"]["input"]["turn_detection"], json!(null));
}

#[tokio::test]
async fn greeting_asks_for_a_response_after_the_session() {
    let mock = MockServer::start(mock_config()).await.unwrap();
    let cfg = RealtimeConfig {
        greeting: Some("Welcome to {{called}}!".into()),
        ..config(&mock)
    };
    let _h = connect(cfg, ctx(AudioFormat::Pcmu8k)).await.unwrap();
    assert!(
        mock.wait_until(EVENT_WAIT, |m| !m
            .received_of_type("response.create")
            .is_empty())
            .await
    );
    let types: Vec<String> = mock
        .received_events()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["session.update", "response.create"]);
    let create = &mock.received_of_type("response.create")[0];
    let instructions = create["response"]["instructions"].as_str().unwrap();
    assert!(instructions.contains("Welcome to 100!"), "{instructions}");
    assert!(mock.errors_sent().is_empty(), "{:?}", mock.errors_sent());
}
