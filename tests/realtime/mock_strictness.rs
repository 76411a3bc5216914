//! The mock is strict where the real GA server is: it refuses bad credentials, beta clients
//! and a missing model at upgrade time, and answers beta or unknown fields, a missing
//! session type, a second concurrent response and a cancel with nothing active with `error`
//! events carrying the GA codes and parameter paths.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use voxline_mock_realtime::{MockConfig, MockServer};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn try_open(
    mock: &MockServer,
    query: &str,
    headers: &[(&'static str, &str)],
) -> Result<Ws, u16> {
    let mut req = format!("{}{query}", mock.url())
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(*k, v.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("unexpected {e}"),
    }
}

async fn open(mock: &MockServer) -> Ws {
    let mut ws = try_open(
        mock,
        "?model=gpt-realtime",
        &[("authorization", "Bearer sk-mock")],
    )
    .await
    .unwrap();
    assert_eq!(next(&mut ws).await["type"], "session.created");
    ws
}

async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

async fn error_for(ws: &mut Ws, ev: Value) -> Value {
    ws.send(Message::Text(ev.to_string().into())).await.unwrap();
    loop {
        let v = next(ws).await;
        if v["type"] == "error" {
            return v["error"].clone();
        }
    }
}

#[tokio::test]
async fn upgrade_checks() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let auth = ("authorization", "Bearer sk-mock");
    assert_eq!(try_open(&mock, "?model=m", &[]).await.err(), Some(401));
    assert_eq!(
        try_open(&mock, "?model=m", &[("authorization", "Bearer nope")])
            .await
            .err(),
        Some(401)
    );
    assert_eq!(try_open(&mock, "", &[auth]).await.err(), Some(400));
    assert_eq!(
        try_open(&mock, "?model=m", &[auth, ("openai-beta", "realtime=v1")])
            .await
            .err(),
        Some(400)
    );
    assert!(try_open(&mock, "?model=m", &[auth]).await.is_ok());
    assert_eq!(mock.connections(), 1);
}

#[tokio::test]
async fn beta_and_unknown_fields_are_rejected() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let mut ws = open(&mock).await;
    let cases = [
        (
            json!({"type": "realtime", "modalities": ["audio"]}),
            "session.modalities",
        ),
        (
            json!({"type": "realtime", "voice": "alloy"}),
            "session.voice",
        ),
        (
            json!({"type": "realtime", "input_audio_format": "g711_ulaw"}),
            "session.input_audio_format",
        ),
        (
            json!({"type": "realtime", "turn_detection": {"type": "server_vad"}}),
            "session.turn_detection",
        ),
        (
            json!({"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu", "rate": 8000}}}}),
            "session.audio.input.format.rate",
        ),
        (
            json!({"type": "realtime", "audio": {"output": {"format": "pcm16"}}}),
            "session.audio.output.format",
        ),
        (
            json!({"type": "realtime", "audio": {"input": {"noise_reduction": {"type": "studio"}}}}),
            "session.audio.input.noise_reduction.type",
        ),
    ];
    for (session, param) in cases {
        let err = error_for(
            &mut ws,
            json!({"type": "session.update", "session": session}),
        )
        .await;
        assert_eq!(err["param"], param, "{err}");
    }
    let err = error_for(
        &mut ws,
        json!({"type": "session.update", "session": {"instructions": "x"}}),
    )
    .await;
    assert_eq!(err["code"], "missing_required_parameter");
    let err = error_for(
        &mut ws,
        json!({"type": "response.create", "response": {"modalities": ["audio"]}}),
    )
    .await;
    assert_eq!(err["param"], "response.modalities");
    let err = error_for(
        &mut ws,
        json!({"type": "conversation.item.create", "item": {"type": "message",
        "role": "assistant", "content": [{"type": "text", "text": "x"}]}}),
    )
    .await;
    assert_eq!(err["param"], "item.content[0].type");
    let err = error_for(&mut ws, json!({"type": "response.cancel"})).await;
    assert_eq!(err["code"], "response_cancel_not_active");
    let err = error_for(&mut ws, json!({"type": "output_audio_buffer.clear"})).await;
    assert_eq!(err["param"], "type");
    assert!(mock.sessions().is_empty());
}

#[tokio::test]
async fn one_response_at_a_time() {
    let mock = MockServer::start(MockConfig {
        pace: true,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let mut ws = open(&mock).await;
    ws.send(Message::Text(
        json!({"type": "response.create"}).to_string().into(),
    ))
    .await
    .unwrap();
    let err = error_for(&mut ws, json!({"type": "response.create"})).await;
    assert_eq!(err["code"], "conversation_already_has_active_response");
}
