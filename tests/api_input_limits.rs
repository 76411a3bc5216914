//! Hostile API input on a real voxline process: a dial target with CR/LF (a header
//! injection into the INVITE) or other characters no SIP URI has is refused with 400 before
//! anything is dialled, and a body far over the limit is refused with 413 without being read
//! to its end.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

#[test]
fn dial_targets_that_are_no_sip_uri_get_400() {
    let vox = VoxlineProcess::spawn("");
    for target in [
        "sip:alice@127.0.0.1\\r\\nX-Injected: yes",
        "sip:alice@127.0.0.1\\nRoute: <sip:evil>",
        "sip:alice@127.0.0.1 <sip:bob@x>",
        "sip:\\u0000@127.0.0.1",
        "sip:alice@",
        "tel:+14155550100",
    ] {
        let body = format!(r#"{{"target": "{target}"}}"#);
        let (code, json) = http_json(
            vox.http_addr(),
            "POST",
            "/calls",
            Some(&body),
            Duration::from_secs(5),
        );
        assert_eq!(code, 400, "{target}: {json}");
        assert!(
            json["error"].as_str().is_some_and(|e| e.contains("target")),
            "{json}"
        );
    }
    // Nothing was dialled.
    let (code, calls) = http_json(
        vox.http_addr(),
        "GET",
        "/calls",
        None,
        Duration::from_secs(5),
    );
    assert_eq!(code, 200);
    assert_eq!(calls, serde_json::json!([]));
}

#[test]
fn a_10_mb_body_gets_413_before_it_is_read() {
    let vox = VoxlineProcess::spawn("");
    let mut s = TcpStream::connect(vox.http_addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let len = 10 * 1024 * 1024;
    write!(
        s,
        "POST /calls HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\n\r\n{{\"target\": \""
    )
    .expect("write head");
    // 128 KiB of the 10 MiB: the answer must come without the rest.
    s.write_all(&vec![b'a'; 128 * 1024]).expect("write part");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no answer while the body was still owed: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
}
