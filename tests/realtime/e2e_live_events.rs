//! `GET /events` while a realtime call runs: the stream shows the call in a `calls` event
//! and its transcript lines (the caller's and the agent's) in `transcript` events as they
//! are written, which is what the console's live view shows.

use crate::realtime_e2e_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use realtime_e2e_support::{RealtimeE2e, talk};
use voxline_mock_realtime::MockConfig;

/// The SSE events read until `done` says so or `limit` passes: (event, data) pairs.
fn read_events(
    stream: &mut TcpStream,
    limit: Duration,
    mut done: impl FnMut(&[(String, serde_json::Value)]) -> bool,
) -> Vec<(String, serde_json::Value)> {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let (mut text, mut events) = (String::new(), Vec::new());
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline && !done(&events) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => continue,
        }
        // Complete events end with a blank line; the chunked framing's lines are skipped.
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if let Ok(v) = serde_json::from_str(&data) {
                events.push((name, v));
            }
        }
    }
    events
}

#[test]
fn a_live_call_and_its_transcript_lines_stream_as_they_happen() {
    let mock = MockConfig {
        reply_text: "Hello caller, this is the agent".into(),
        ..MockConfig::default()
    };
    let h = RealtimeE2e::start(mock, "", "", "");
    let mut sse = TcpStream::connect(h.vox.http_addr()).unwrap();
    write!(
        sse,
        "GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    // The first `calls` event comes at once: no call yet.
    let first = read_events(&mut sse, Duration::from_secs(5), |e| !e.is_empty());
    assert_eq!(
        first.first().map(|e| e.0.as_str()),
        Some("calls"),
        "{first:?}"
    );
    assert_eq!(first[0].1, serde_json::json!([]));

    let (mut sip, mut rtp, to) = h.call("1000");
    talk(&mut rtp, to, 30, 90);
    let events = read_events(&mut sse, Duration::from_secs(10), |e| {
        e.iter().any(|(n, v)| {
            n == "transcript" && v["line"]["text"] == "Hello caller, this is the agent"
        })
    });
    let calls: Vec<&serde_json::Value> = events
        .iter()
        .filter(|(n, v)| n == "calls" && v.as_array().is_some_and(|a| !a.is_empty()))
        .map(|(_, v)| v)
        .collect();
    assert!(
        !calls.is_empty(),
        "no calls event with the call: {events:?}"
    );
    let call = &calls[calls.len() - 1][0];
    assert_eq!(call["agent"], "ai");
    assert_eq!(call["state"], "answered");
    let lines: Vec<(&str, &str)> = events
        .iter()
        .filter(|(n, _)| n == "transcript")
        .map(|(_, v)| {
            assert_eq!(v["call"], call["id"], "{v}");
            assert_eq!(v["record_id"], call["record_id"], "{v}");
            (
                v["line"]["role"].as_str().unwrap_or(""),
                v["line"]["text"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        lines
            .iter()
            .any(|(role, text)| *role == "caller" && text.starts_with("caller said")),
        "no caller line: {lines:?}"
    );
    assert!(
        lines.contains(&("agent", "Hello caller, this is the agent")),
        "{lines:?}"
    );
    assert_eq!(sip.bye(), 200);
    // After the end, the next `calls` event no longer has it.
    let after = read_events(&mut sse, Duration::from_secs(5), |e| {
        e.iter()
            .any(|(n, v)| n == "calls" && v.as_array().is_some_and(|a| a.is_empty()))
    });
    assert!(
        after
            .iter()
            .any(|(n, v)| n == "calls" && v.as_array().is_some_and(|a| a.is_empty())),
        "{after:?}"
    );
}
