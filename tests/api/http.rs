//! The HTTP API of a real voxline process: JSON errors with fitting status codes, the bearer
//! token, and the call endpoints' input checks.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    match body {
        Some(b) => req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => req.push_str("Content-Length: 0\r\n\r\n"),
    }
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

#[test]
fn errors_are_json_with_fitting_codes() {
    let vox = VoxlineProcess::spawn("");
    let http = vox.http_addr();
    let (code, body) = request(http, "GET", "/health", None, None);
    assert_eq!(code, 200);
    assert!(body.contains("\"status\":\"ok\""), "{body}");

    let (code, body) = request(http, "GET", "/calls/abc", None, None);
    assert_eq!(code, 400);
    assert!(body.contains("\"error\""), "{body}");

    let (code, body) = request(http, "GET", "/calls/999999", None, None);
    assert_eq!(code, 404, "{body}");

    let (code, body) = request(
        http,
        "POST",
        "/calls/999999/dtmf",
        Some(r#"{"digits":"12"}"#),
        None,
    );
    assert_eq!(code, 404, "{body}");

    let (code, body) = request(
        http,
        "POST",
        "/calls/999999/dtmf",
        Some(r#"{"digits":"1x"}"#),
        None,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not a DTMF digit"), "{body}");

    let (code, body) = request(http, "POST", "/calls", Some("{not json"), None);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("invalid request body"), "{body}");

    let (code, body) = request(
        http,
        "POST",
        "/calls",
        Some(r#"{"target":"tel:123"}"#),
        None,
    );
    assert_eq!(code, 400, "{body}");

    let (code, body) = request(
        http,
        "POST",
        "/calls",
        Some(r#"{"target":"sip:a@127.0.0.1:9","agent":"nobody"}"#),
        None,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("unknown agent"), "{body}");

    // A trunk the request names wrongly is the client's error (it was a 502).
    let (code, body) = request(
        http,
        "POST",
        "/calls",
        Some(r#"{"target":"sip:a@127.0.0.1:9","trunk":"nowhere"}"#),
        None,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("no trunk named"), "{body}");

    let (code, _) = request(http, "GET", "/nowhere", None, None);
    assert_eq!(code, 404);
    let (code, body) = request(http, "GET", "/calls", None, None);
    assert_eq!((code, body.as_str()), (200, "[]"));
}

#[test]
fn bearer_token_guards_everything_but_health() {
    // token_env names a variable the test process (and so voxline) already has: PATH.
    let token = std::env::var("PATH").expect("PATH is set");
    let vox = VoxlineProcess::spawn("[http]\ntoken_env = \"PATH\"\n");
    let http = vox.http_addr();
    assert_eq!(request(http, "GET", "/health", None, None).0, 200);
    let (code, body) = request(http, "GET", "/calls", None, None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("missing bearer token"), "{body}");
    assert_eq!(request(http, "GET", "/calls", None, Some("wrong")).0, 401);
    assert_eq!(request(http, "GET", "/calls", None, Some(&token)).0, 200);
}
