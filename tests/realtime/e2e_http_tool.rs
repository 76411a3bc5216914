//! An HTTP tool end to end: the model calls `lookup_order` with `{"order":"42"}`; voxline
//! POSTs the arguments and the call context to the configured URL (a local HTTP server in
//! this test) and returns the response body to the model as the `function_call_output`,
//! then asks for a response.

use crate::realtime_e2e_support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use realtime_e2e_support::{RealtimeE2e, talk};
use voxline_mock_realtime::{MockConfig, ToolScript};

/// A one-shot HTTP server: answers every request with `body`, keeps the requests' bodies.
pub(crate) fn serve(body: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/tools/lookup",
        listener.local_addr().expect("addr")
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut s) = stream else { continue };
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read the head, then Content-Length bytes of body.
            let (head_end, len) = loop {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break (None, 0);
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break (Some(i + 4), len);
                }
            };
            let Some(start) = head_end else { continue };
            while buf.len() < start + len {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            seen2
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[start..]).into_owned());
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes());
        }
    });
    (url, seen)
}

#[test]
fn an_http_tool_result_goes_back_to_the_model() {
    let (url, seen) = serve(r#"{"status":"shipped","eta":"tomorrow"}"#);
    let mock = MockConfig {
        tool_call: Some(ToolScript {
            on_turn: 1,
            name: "lookup_order".into(),
            arguments: r#"{"order":"42"}"#.into(),
        }),
        ..MockConfig::default()
    };
    let tool = format!(
        r#"[[agent.http_tool]]
name = "lookup_order"
description = "Look up an order by its number."
url = "{url}"
timeout_ms = 3000
parameters = {{ type = "object", properties = {{ order = {{ type = "string" }} }}, required = ["order"] }}
"#
    );
    let h = RealtimeE2e::start(mock, "", "", &tool);
    let (mut sip, mut rtp, to) = h.call("5551234");
    talk(&mut rtp, to, 30, 60);
    assert!(
        h.wait(Duration::from_secs(5), |m| !m.tool_outputs().is_empty()),
        "no tool output reached the mock:\n{}",
        h.vox.output()
    );
    let (_, output) = h.mock.tool_outputs()[0].clone();
    assert_eq!(output, r#"{"status":"shipped","eta":"tomorrow"}"#);
    let posted = seen.lock().unwrap().clone();
    assert_eq!(posted.len(), 1, "requests: {posted:?}");
    let body: serde_json::Value = serde_json::from_str(&posted[0]).expect("JSON body");
    assert_eq!(body["tool"], "lookup_order");
    assert_eq!(body["arguments"]["order"], "42");
    assert_eq!(body["call"]["called"], "5551234");
    assert_eq!(body["call"]["direction"], "inbound");
    // The session declared the tool with its schema.
    let tools = &h.mock.sessions()[0]["tools"];
    assert!(
        tools.as_array().is_some_and(|t| t
            .iter()
            .any(|t| t["name"] == "lookup_order" && t["parameters"]["required"][0] == "order")),
        "tools: {tools}"
    );
    // After the output the model was asked to go on.
    assert!(h.wait(Duration::from_secs(3), |m| {
        !m.received_of_type("response.create").is_empty()
    }));
    assert_eq!(sip.bye(), 200);
}
