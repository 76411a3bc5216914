//! Unit tests of the realtime client.

use super::*;
use crate::agent::ws::UpgradeResponse;
use std::collections::BTreeMap;

fn ctx() -> CallContext {
    CallContext {
        caller: "+15551230000".into(),
        called: "100".into(),
        direction: "inbound".into(),
        variables: BTreeMap::from([("lang".to_owned(), "fr".to_owned())]),
        memory: String::new(),
        call_format: AudioFormat::Pcmu8k,
        tools: vec![],
        history: Vec::new(),
    }
}

#[test]
fn templates() {
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let s = render_instructions(
        "From {{caller}} to {{ called }} ({{direction}}) at {{time}} in {{var.lang}}{{var.none}}; {{other}} {{open",
        &ctx(),
        now,
    );
    assert_eq!(
        s,
        "From +15551230000 to 100 (inbound) at 2023-11-14 22:13:20 UTC in fr; {{other}} {{open"
    );
    assert_eq!(format_utc(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
    assert_eq!(
        format_utc(UNIX_EPOCH + Duration::from_secs(951_782_400)),
        "2000-02-29 00:00:00 UTC"
    );
}

#[test]
fn api_key_is_redacted() {
    let cfg = RealtimeConfig {
        api_key: Some(ApiKey::new("sk-secret-123")),
        ..RealtimeConfig::default()
    };
    let dbg = format!("{cfg:?}");
    assert!(!dbg.contains("sk-secret-123"), "{dbg}");
    assert!(dbg.contains("ApiKey(***)"));
}

#[test]
fn target_url() {
    let t = target(&RealtimeConfig::default()).unwrap();
    assert_eq!(t.host, "api.openai.com:443");
    assert_eq!(t.host_header, "api.openai.com");
    assert_eq!(t.path_and_query, "/v1/realtime?model=gpt-realtime");
    assert!(t.tls);
    let t = target(&RealtimeConfig {
        url: "ws://[::1]:8765/v1/realtime".into(),
        model: "m x".into(),
        ..RealtimeConfig::default()
    })
    .unwrap();
    assert_eq!((t.connect_host.as_str(), t.port), ("::1", 8765));
    assert_eq!(t.host_header, "[::1]:8765");
    assert_eq!(t.path_and_query, "/v1/realtime?model=m+x");
    let t = target(&RealtimeConfig {
        url:
            "wss://x.openai.azure.com/openai/realtime?api-version=2025-04-01-preview&deployment=rt"
                .into(),
        azure: true,
        ..RealtimeConfig::default()
    })
    .unwrap();
    assert!(!t.path_and_query.contains("model="));
    assert_eq!(t.host, "x.openai.azure.com:443");
    assert!(matches!(
        target(&RealtimeConfig {
            url: "https://api.openai.com/v1/realtime".into(),
            ..RealtimeConfig::default()
        }),
        Err(BackendError::Config(_))
    ));
}

#[test]
fn upgrade_response() {
    let r = UpgradeResponse::parse(
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 12\r\nX: a:b\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("12"));
    assert_eq!(r.header("x"), Some("a:b"));
    assert!(UpgradeResponse::parse("SSH-2.0-OpenSSH\r\n\r\n").is_err());
}

#[test]
fn wire_formats() {
    assert_eq!(
        wire_format(AudioFormat::Pcma8k).unwrap(),
        AudioFormat::Pcma8k
    );
    assert_eq!(
        wire_format(AudioFormat::Pcm16 { rate: 16000 }).unwrap(),
        AudioFormat::Pcm16 { rate: 24000 }
    );
    assert!(wire_format(AudioFormat::Pcm16 { rate: 0 }).is_err());
}
