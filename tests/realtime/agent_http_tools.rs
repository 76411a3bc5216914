//! HTTP tools against a real local HTTP server (axum on 127.0.0.1): the body voxline posts,
//! a 2xx body as the output, error statuses, timeouts, oversize answers and refused
//! connections, all turned into outputs the model can read.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use voxline::call::tools::{
    HttpTool, MAX_OUTPUT_BYTES, TRUNCATION_NOTE, ToolCallContext, ToolError, http_client, run_http,
};

/// What the server saw: the JSON body and the `x-api-key` header of each request.
type Seen = Arc<Mutex<Vec<(Value, Option<String>)>>>;

async fn record(
    State(seen): State<Seen>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> (StatusCode, &'static str) {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    seen.lock().expect("lock").push((body, key));
    (StatusCode::OK, r#"{"status":"shipped","eta_days":2}"#)
}

async fn fail() -> (StatusCode, &'static str) {
    (StatusCode::INTERNAL_SERVER_ERROR, "database down")
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(2)).await;
    "too late"
}

async fn big() -> String {
    // 40 KiB of two-byte characters: the 16 KiB cut must land on a character boundary.
    "é".repeat(20 * 1024)
}

async fn empty() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn server() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/record", post(record))
        .route("/fail", post(fail))
        .route("/slow", post(slow))
        .route("/big", post(big))
        .route("/empty", post(empty))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (addr, seen)
}

fn tool(url: String, timeout: Duration) -> HttpTool {
    HttpTool {
        name: "lookup_order".to_owned(),
        description: "Look up an order's status.".to_owned(),
        parameters: json!({"type": "object", "properties": {"order": {"type": "string"}}}),
        url,
        timeout,
        headers: vec![("X-Api-Key".to_owned(), "k-123".to_owned())],
    }
}

fn call() -> ToolCallContext {
    ToolCallContext {
        id: "call-7".to_owned(),
        caller: "+15550001".to_owned(),
        called: "100".to_owned(),
        direction: "inbound".to_owned(),
        variables: BTreeMap::from([("customer".to_owned(), "ACME".to_owned())]),
    }
}

fn client() -> reqwest::Client {
    // No proxy: the test server is on loopback whatever the environment says.
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[tokio::test]
async fn posts_the_documented_body_and_returns_the_answer() {
    let (addr, seen) = server().await;
    let t = tool(format!("http://{addr}/record"), Duration::from_secs(5));
    // Arguments as a JSON string holding the object, as some models send them.
    let out = run_http(&client(), &t, &call(), &json!("{\"order\": \"A-17\"}"))
        .await
        .expect("2xx");
    assert_eq!(out, r#"{"status":"shipped","eta_days":2}"#);

    let seen = seen.lock().expect("lock");
    assert_eq!(seen.len(), 1);
    let (body, key) = &seen[0];
    assert_eq!(
        *body,
        json!({
            "tool": "lookup_order",
            "arguments": {"order": "A-17"},
            "call": {
                "id": "call-7",
                "caller": "+15550001",
                "called": "100",
                "direction": "inbound",
                "variables": {"customer": "ACME"}
            }
        })
    );
    assert_eq!(key.as_deref(), Some("k-123"));
}

#[tokio::test]
async fn the_default_client_works_too() {
    let (addr, _seen) = server().await;
    let t = tool(format!("http://{addr}/record"), Duration::from_secs(5));
    let out = run_http(
        &http_client().expect("client"),
        &t,
        &call(),
        &json!({"order": "A"}),
    )
    .await;
    // A proxy in the environment may get in the way of a loopback request; without one
    // the answer arrives.
    if std::env::var_os("HTTP_PROXY").is_none() && std::env::var_os("http_proxy").is_none() {
        assert_eq!(out.expect("2xx"), r#"{"status":"shipped","eta_days":2}"#);
    }
}

#[tokio::test]
async fn an_empty_2xx_body_still_gives_an_output() {
    let (addr, _seen) = server().await;
    let t = tool(format!("http://{addr}/empty"), Duration::from_secs(5));
    let out = run_http(&client(), &t, &call(), &json!({}))
        .await
        .expect("2xx");
    assert_eq!(out, r#"{"ok":true}"#);
}

#[tokio::test]
async fn a_500_becomes_an_error_output_with_the_status() {
    let (addr, _seen) = server().await;
    let t = tool(format!("http://{addr}/fail"), Duration::from_secs(5));
    let err = run_http(&client(), &t, &call(), &json!({}))
        .await
        .expect_err("500");
    assert_eq!(
        err,
        ToolError::Status {
            status: 500,
            body_excerpt: "database down".to_owned()
        }
    );
    let output: Value = serde_json::from_str(&err.to_output()).expect("json");
    let message = output["error"].as_str().expect("error string");
    assert!(message.contains("HTTP 500"), "{message}");
    assert!(message.contains("database down"), "{message}");
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let (addr, _seen) = server().await;
    let t = tool(format!("http://{addr}/slow"), Duration::from_millis(200));
    let err = run_http(&client(), &t, &call(), &json!({}))
        .await
        .expect_err("timeout");
    assert_eq!(err, ToolError::Timeout { after_ms: 200 });
    assert_eq!(
        err.to_output(),
        r#"{"error":"the tool did not answer within 200 ms"}"#
    );
}

#[tokio::test]
async fn an_oversize_answer_is_cut_at_16_kib() {
    let (addr, _seen) = server().await;
    let t = tool(format!("http://{addr}/big"), Duration::from_secs(5));
    let out = run_http(&client(), &t, &call(), &json!({}))
        .await
        .expect("2xx");
    assert!(out.len() <= MAX_OUTPUT_BYTES, "{} bytes", out.len());
    let kept = out.strip_suffix(TRUNCATION_NOTE).expect("truncation note");
    assert!(!kept.is_empty());
    assert!(kept.chars().all(|c| c == 'é'), "cut inside a character");
    // Only the note's room and at most one split character are lost.
    assert!(kept.len() + TRUNCATION_NOTE.len() + 1 >= MAX_OUTPUT_BYTES);
}

#[tokio::test]
async fn connection_refused_is_reported_without_secrets() {
    // A port that was just free: nothing listens there now.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);

    let t = tool(
        format!("http://alice:pa55word@127.0.0.1:{port}/hook?token=t0ken-secret"),
        Duration::from_secs(5),
    );
    let err = run_http(&client(), &t, &call(), &json!({}))
        .await
        .expect_err("refused");
    let ToolError::Http(message) = &err else {
        panic!("expected ToolError::Http, got {err:?}");
    };
    assert!(
        message.contains(&format!("http://127.0.0.1:{port}/hook")),
        "{message}"
    );
    assert!(message.to_lowercase().contains("refused"), "{message}");
    let output = err.to_output();
    for secret in ["pa55word", "alice", "t0ken-secret", "k-123"] {
        assert!(!output.contains(secret), "{secret} leaked: {output}");
    }
}
