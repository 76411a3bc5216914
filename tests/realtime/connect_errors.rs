//! Connection failures are typed `BackendError`s: HTTP 401/403 at upgrade →
//! `Unauthorized`, 429 → `RateLimited` (with Retry-After), a refused port → `Connect`, a
//! server that never answers → `Timeout`, a rejected session → `SessionRejected`, no key →
//! `Config`. Each comes back well within its bound.

use crate::realtime_support;

use std::time::Duration;

use realtime_support::*;
use voxline::agent::backend::{AudioFormat, BackendError};
use voxline::agent::realtime::{ApiKey, RealtimeConfig, connect};
use voxline_mock_realtime::{MockConfig, MockServer};

/// Hang guard: every failure here must come back sooner.
const BOUND: Duration = Duration::from_secs(5);

async fn connect_err(cfg: RealtimeConfig) -> BackendError {
    match tokio::time::timeout(BOUND, connect(cfg, ctx(AudioFormat::Pcmu8k))).await {
        Err(_) => panic!("connect did not return within {BOUND:?}"),
        Ok(Ok(_)) => panic!("connect succeeded"),
        Ok(Err(e)) => e,
    }
}

#[tokio::test]
async fn wrong_key_is_unauthorized() {
    let mock = MockServer::start(mock_config()).await.unwrap();
    let cfg = RealtimeConfig {
        api_key: Some(ApiKey::new("sk-wrong")),
        ..config(&mock)
    };
    let e = connect_err(cfg).await;
    assert!(
        matches!(e, BackendError::Unauthorized { status: 401 }),
        "{e:?}"
    );
    assert_eq!(mock.connections(), 0);
}

#[tokio::test]
async fn forbidden_is_unauthorized() {
    let mock = MockServer::start(MockConfig {
        reject_status: Some(403),
        ..mock_config()
    })
    .await
    .unwrap();
    let e = connect_err(config(&mock)).await;
    assert!(
        matches!(e, BackendError::Unauthorized { status: 403 }),
        "{e:?}"
    );
}

#[tokio::test]
async fn too_many_requests_is_rate_limited() {
    let mock = MockServer::start(MockConfig {
        reject_status: Some(429),
        ..mock_config()
    })
    .await
    .unwrap();
    let e = connect_err(config(&mock)).await;
    assert!(
        matches!(
            e,
            BackendError::RateLimited {
                retry_after_s: Some(7)
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn other_status_is_http() {
    let mock = MockServer::start(MockConfig {
        reject_status: Some(503),
        ..mock_config()
    })
    .await
    .unwrap();
    let e = connect_err(config(&mock)).await;
    assert!(matches!(e, BackendError::Http { status: 503 }), "{e:?}");
}

#[tokio::test]
async fn azure_sends_api_key_header() {
    let mock = MockServer::start(MockConfig {
        azure: true,
        ..mock_config()
    })
    .await
    .unwrap();
    // A Bearer header is not what an Azure endpoint takes.
    let e = connect_err(config(&mock)).await;
    assert!(
        matches!(e, BackendError::Unauthorized { status: 401 }),
        "{e:?}"
    );
    let cfg = RealtimeConfig {
        azure: true,
        ..config(&mock)
    };
    connect(cfg, ctx(AudioFormat::Pcmu8k))
        .await
        .expect("azure connect");
}

#[tokio::test]
async fn refused_port_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let cfg = RealtimeConfig {
        url: format!("ws://127.0.0.1:{port}/v1/realtime"),
        api_key: Some(ApiKey::new(KEY)),
        ..RealtimeConfig::default()
    };
    let e = connect_err(cfg).await;
    let BackendError::Connect { host, .. } = &e else {
        panic!("expected Connect, got {e:?}")
    };
    assert_eq!(*host, format!("127.0.0.1:{port}"));
}

#[tokio::test]
async fn silent_server_times_out() {
    // Accepts TCP and never answers the upgrade.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let cfg = RealtimeConfig {
        url: format!("ws://{addr}/v1/realtime"),
        api_key: Some(ApiKey::new(KEY)),
        connect_timeout: Duration::from_millis(300),
        ..RealtimeConfig::default()
    };
    let e = connect_err(cfg).await;
    assert!(
        matches!(e, BackendError::Timeout { after_ms: 300, .. }),
        "{e:?}"
    );
    hold.abort();
}

#[tokio::test]
async fn rejected_session_is_reported() {
    let mock = MockServer::start(mock_config()).await.unwrap();
    let mut c = ctx(AudioFormat::Pcmu8k);
    let mut tool = weather_tool();
    tool.name = String::new();
    c.tools = vec![tool];
    let e = match tokio::time::timeout(BOUND, connect(config(&mock), c))
        .await
        .unwrap()
    {
        Err(e) => e,
        Ok(_) => panic!("session with an unnamed tool accepted"),
    };
    let BackendError::SessionRejected(msg) = &e else {
        panic!("expected SessionRejected, got {e:?}")
    };
    assert!(msg.contains("session.tools[0].name"), "{msg}");
}

#[tokio::test]
async fn missing_key_is_a_config_error() {
    let e = connect_err(RealtimeConfig::default()).await;
    let BackendError::Config(msg) = &e else {
        panic!("expected Config, got {e:?}")
    };
    assert!(msg.contains("OPENAI_API_KEY"), "{msg}");
}
