//! The API key never shows: not in `Debug` of the config, the handle, errors or events, and
//! not in any log line (tracing at TRACE level, with the `log` records of the WebSocket
//! library bridged in) across a session, a reconnect and a rejected connect.

use crate::realtime_support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use realtime_support::*;
use voxline::agent::backend::{AudioFormat, BackendEvent};
use voxline::agent::realtime::{ApiKey, RealtimeConfig, connect};
use voxline_mock_realtime::MockServer;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn api_key_never_logged_or_printed() {
    let buf = Buf::default();
    let writer = buf.clone();
    // The only test in this binary: the global subscriber (which also bridges `log`) is
    // ours.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("first subscriber");

    let mock = MockServer::start(mock_config()).await.unwrap();
    let cfg = RealtimeConfig {
        greeting: Some("Hi".into()),
        ..config(&mock)
    };
    let mut printed = format!("{cfg:?}");
    let mut h = connect(cfg.clone(), ctx(AudioFormat::Pcmu8k))
        .await
        .unwrap();
    printed += &format!("{h:?}");
    let (_, events) = wait_for(&mut h, "ResponseDone", |e| *e == BackendEvent::ResponseDone).await;
    printed += &format!("{events:?}");
    mock.drop_connections();
    wait_for(&mut h, "Reconnected", |e| *e == BackendEvent::Reconnected).await;
    let wrong = RealtimeConfig {
        api_key: Some(ApiKey::new(format!("{KEY}-wrong"))),
        ..cfg
    };
    let err = connect(wrong, ctx(AudioFormat::Pcmu8k)).await.unwrap_err();
    printed += &format!("{err:?} {err}");

    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    // The capture works: the client's own lines and the WebSocket library's are there.
    assert!(logs.contains("realtime session ready"), "{logs}");
    assert!(logs.contains("realtime session re-established"), "{logs}");
    assert!(logs.lines().count() > 20, "{logs}");
    assert!(!logs.contains(KEY), "key in the logs:\n{logs}");
    assert!(!printed.contains(KEY), "key in Debug output:\n{printed}");
    assert!(printed.contains("ApiKey(***)"));
}
