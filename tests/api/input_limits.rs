//! Hostile API input on a real voxline process: a dial target with CR/LF (a header
//! injection into the INVITE) or other characters no SIP URI has is refused with 400 before
//! anything is dialled, and a body far over the limit is refused with 413 without being read
//! to its end. `[http]` connection limits and the idle timeout close what is over them.

use crate::common;

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

/// Whether the server closed `s`: a read returns end of file or a reset within `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}

/// `[http]` limits act: beyond `max_connections_per_source` a connection is closed at once
/// (the ones open keep working), one freed slot admits a new connection, and a connection
/// that sends nothing for `idle_timeout_s` is closed — before a request and after one.
#[test]
fn http_connections_are_limited_per_source_and_idle_ones_closed() {
    let vox = VoxlineProcess::spawn("[http]\nmax_connections_per_source = 3\nidle_timeout_s = 2\n");
    let addr = vox.http_addr();
    // Three held open (each sends half a request line, so none is idle-free either).
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    // Let the server accept them before the fourth arrives.
    for s in &mut held {
        s.write_all(b"GET /hea").expect("write");
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut fourth = TcpStream::connect(addr).expect("connect");
    assert!(
        closed_within(&mut fourth, Duration::from_secs(5)),
        "a fourth connection from one source was kept"
    );
    // The held connections still work: finish one request.
    held[0]
        .write_all(b"lth HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    held[0]
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 256];
    let n = held[0].read(&mut buf).expect("response");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // After that response, held[0] is an idle keep-alive connection: closed after the idle
    // timeout. The other two never completed their headers: closed too.
    for (k, s) in held.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(15)),
            "connection {k} was not closed when idle"
        );
    }
    // Their slots are free again: a new connection is served.
    let (code, _) = http_json(addr, "GET", "/health", None, Duration::from_secs(5));
    assert_eq!(code, 200);
}
