//! The mock itself: it rejects a `conversation.item.truncate` beyond the audio it sent for
//! the item (as the real server does), or for an unknown item or content index, and records
//! only the truncations it accepted. Driven by a raw WebSocket client.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use voxline_mock_realtime::{MockConfig, MockServer};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn open(mock: &MockServer) -> Ws {
    let mut req = format!("{}?model=gpt-realtime", mock.url())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", "Bearer sk-mock".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// Reads events until one of type `kind`; returns it and everything before it.
async fn until(ws: &mut Ws, kind: &str) -> (Value, Vec<Value>) {
    let mut before = Vec::new();
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap();
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        if v["type"] == kind {
            return (v, before);
        }
        before.push(v);
    }
}

#[tokio::test]
async fn truncate_is_checked_against_the_audio_sent() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let mut ws = open(&mock).await;
    until(&mut ws, "session.created").await;
    send(
        &mut ws,
        json!({"type": "session.update", "session": {"type": "realtime",
        "audio": {"output": {"format": {"type": "audio/pcmu"}}}}}),
    )
    .await;
    until(&mut ws, "session.updated").await;
    send(&mut ws, json!({"type": "response.create"})).await;
    let (done, before) = until(&mut ws, "response.done").await;
    assert_eq!(done["response"]["status"], "completed");
    let deltas: Vec<&Value> = before
        .iter()
        .filter(|e| e["type"] == "response.output_audio.delta")
        .collect();
    assert_eq!(deltas.len(), 25, "1 s in 40 ms deltas");
    let item = deltas[0]["item_id"].as_str().unwrap().to_owned();

    // Beyond the 1000 ms sent: rejected.
    send(
        &mut ws,
        json!({"type": "conversation.item.truncate", "event_id": "t1",
        "item_id": item, "content_index": 0, "audio_end_ms": 1001}),
    )
    .await;
    let (err, _) = until(&mut ws, "error").await;
    assert_eq!(err["error"]["param"], "audio_end_ms");
    assert_eq!(err["error"]["event_id"], "t1");
    // Unknown item, wrong content index, missing field: rejected.
    send(
        &mut ws,
        json!({"type": "conversation.item.truncate", "item_id": "item_nope",
        "content_index": 0, "audio_end_ms": 10}),
    )
    .await;
    assert_eq!(until(&mut ws, "error").await.0["error"]["param"], "item_id");
    send(
        &mut ws,
        json!({"type": "conversation.item.truncate", "item_id": item,
        "content_index": 1, "audio_end_ms": 10}),
    )
    .await;
    assert_eq!(
        until(&mut ws, "error").await.0["error"]["param"],
        "content_index"
    );
    send(
        &mut ws,
        json!({"type": "conversation.item.truncate", "item_id": item,
        "content_index": 0}),
    )
    .await;
    assert_eq!(
        until(&mut ws, "error").await.0["error"]["code"],
        "missing_required_parameter"
    );
    assert!(mock.truncations().is_empty());

    // Exactly what was sent: accepted.
    send(
        &mut ws,
        json!({"type": "conversation.item.truncate", "item_id": item,
        "content_index": 0, "audio_end_ms": 1000}),
    )
    .await;
    let (t, _) = until(&mut ws, "conversation.item.truncated").await;
    assert_eq!(t["audio_end_ms"], 1000);
    let accepted = mock.truncations();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].item_id, item);
    assert_eq!(accepted[0].audio_end_ms, 1000);
    assert_eq!(accepted[0].audio_sent_ms, 1000);
    assert_eq!(mock.errors_sent().len(), 4);
}
