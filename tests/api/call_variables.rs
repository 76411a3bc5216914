//! `POST /calls` with `"variables"` against a real voxline: string values are accepted (the
//! call is placed), anything else is a 400 that names the key, and a `variables` that is not
//! an object is a 400 too. (That the values land in the call's `AgentSpec::variables` is
//! tested in `api::tests`.)

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{VoxlineProcess, free_udp_port};

fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    common::http_request(addr, "POST", path, Some(body), Duration::from_secs(10)).expect("POST")
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
