//! `POST /calls` with `"variables"` against a real voxline: string values are accepted (the
//! call is placed), anything else is a 400 that names the key, and a `variables` that is not
//! an object is a 400 too. (That the values land in the call's `AgentSpec::variables` is
//! tested in `api::tests`.)

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{VoxlineProcess, free_udp_port};

fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (code, out.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

#[test]
fn variables_must_be_strings() {
    let mut vox = VoxlineProcess::spawn("");
    let http = vox.http_addr();
    // Nobody listens there: the call is placed, then fails; only the 201 matters here.
    let target = format!("sip:bob@127.0.0.1:{}", free_udp_port());

    let body = format!(r#"{{"target":"{target}","variables":{{"name":"Ada","order":"42"}}}}"#);
    let (code, text) = post(http, "/calls", &body);
    assert_eq!(code, 201, "{text}");
    assert!(text.contains("\"id\""), "{text}");

    for (vars, key, kind) in [
        (r#"{"name":"Ada","count":5}"#, "count", "a number"),
        (r#"{"vip":true}"#, "vip", "a boolean"),
        (r#"{"list":["a"]}"#, "list", "an array"),
        (r#"{"nested":{"a":"b"}}"#, "nested", "an object"),
        (r#"{"gone":null}"#, "gone", "null"),
    ] {
        let body = format!(r#"{{"target":"{target}","variables":{vars}}}"#);
        let (code, text) = post(http, "/calls", &body);
        assert_eq!(code, 400, "{vars}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON error");
        assert_eq!(
            v["error"],
            format!("variables.{key} must be a string, got {kind}"),
            "{text}"
        );
    }

    let body = format!(r#"{{"target":"{target}","variables":"name=Ada"}}"#);
    let (code, text) = post(http, "/calls", &body);
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("invalid request body"), "{text}");
    vox.assert_running();
}
