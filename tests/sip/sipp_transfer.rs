//! Blind transfer through the HTTP API, against SIPp as the transferee (RFC 3515, RFC 5589 §6).
//!
//! A real voxline places a call (`POST /calls`) to SIPp, which answers; the test then asks
//! for a transfer with `POST /calls/{id}/transfer` and checks the HTTP answer:
//!
//! * `uas_refer_accept.xml`: REFER (the bare number `200` completed to
//!   `sip:200@127.0.0.1:PORT`) → 202, NOTIFY `100 Trying`, NOTIFY `200 OK` (terminated) →
//!   HTTP 200 `{"transferred":true,"status":200}`, and voxline's BYE follows at once; the
//!   call's SQLite record keeps the outcome (`transfer`).
//! * `uas_refer_notify_busy.xml`: the final NOTIFY says `486 Busy Here` → HTTP 502 with
//!   `"status":486`; the call stays up until the test hangs it up through the API.
//! * `uas_refer_decline.xml`: the REFER is answered 603 → HTTP 502 with `"status":603`; the
//!   call stays up likewise.

use crate::common;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::{Sipp, VoxlineProcess, scenario};
use serde_json::Value;

/// Longer than the transfer timeout (32 s), so a hung transfer shows as 504, not as a
/// client timeout.
const HTTP_TIMEOUT: Duration = Duration::from_secs(40);

fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    common::http_json(addr, method, path, body, HTTP_TIMEOUT)
}

/// Places a call to SIPp through the API and waits until it is answered; its id.
fn answered_call(vox: &VoxlineProcess, sipp: &Sipp) -> u64 {
    let http = vox.http_addr();
    let body = format!(r#"{{"target":"sip:transfer@{}"}}"#, sipp.addr());
    let (code, v) = request(http, "POST", "/calls", Some(&body));
    assert_eq!(code, 201, "{v}");
    let id = v["id"].as_u64().expect("id");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, v) = request(http, "GET", &format!("/calls/{id}"), None);
        assert_eq!(code, 200, "{v}");
        if v["state"] == "answered" {
            return id;
        }
        assert!(Instant::now() < deadline, "call not answered: {v}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn call_info(vox: &VoxlineProcess, id: u64) -> Value {
    let (code, v) = request(vox.http_addr(), "GET", &format!("/calls/{id}"), None);
    assert_eq!(code, 200, "{v}");
    v
}

#[test]
fn accepted_transfer_answers_200_and_voxline_hangs_up() {
    let sipp = Sipp::spawn(
        &["-sf", &scenario("uas_refer_accept.xml"), "-m", "1"],
        Duration::from_secs(30),
    );
    let mut vox = VoxlineProcess::spawn("");
    let id = answered_call(&vox, &sipp);
    let sipp_port = sipp.port();

    let (code, v) = request(
        vox.http_addr(),
        "POST",
        &format!("/calls/{id}/transfer"),
        Some(r#"{"target":"200"}"#),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v, serde_json::json!({"transferred": true, "status": 200}));

    let run = sipp.wait();
    run.assert_success("REFER, NOTIFY 100 and 200, then voxline's BYE");
    assert!(run.log.contains("BYE from voxline"), "{}", run.report());
    let info = call_info(&vox, id);
    assert_eq!(info["state"], "ended", "{info}");
    assert_eq!(info["end_reason"], "LocalBye", "{info}");
    let shown = format!("sip:200@127.0.0.1:{sipp_port} -> 200");
    assert_eq!(info["transfer"], shown.as_str(), "{info}");
    // The SQLite record keeps the outcome too (written by the records thread: wait for it).
    let record_id = info["record_id"].as_str().expect("record_id").to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let rec = loop {
        let (code, rec) = request(vox.http_addr(), "GET", &format!("/calls/{record_id}"), None);
        if code == 200 && rec["ended_at"].is_i64() {
            break rec;
        }
        assert!(
            Instant::now() < deadline,
            "no finished record: {code} {rec}"
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(rec["transfer"], shown.as_str(), "{rec}");
    vox.assert_running();
}

/// A transfer the far end refuses: HTTP 502 with the SIP status, the call stays up, and the
/// API can still hang it up.
fn refused_transfer_keeps_the_call(scenario_name: &str, target: &str, status: u16) {
    let sipp = Sipp::spawn(
        &["-sf", &scenario(scenario_name), "-m", "1"],
        Duration::from_secs(30),
    );
    let mut vox = VoxlineProcess::spawn("");
    let id = answered_call(&vox, &sipp);
    let http = vox.http_addr();

    let (code, v) = request(
        http,
        "POST",
        &format!("/calls/{id}/transfer"),
        Some(&format!(r#"{{"target":"{target}"}}"#)),
    );
    assert_eq!(code, 502, "{v}");
    assert_eq!(v["status"], status, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("rejected")),
        "{v}"
    );

    // Still up a while later: voxline did not hang up after the failure.
    thread::sleep(Duration::from_millis(500));
    let info = call_info(&vox, id);
    assert_eq!(info["state"], "answered", "{info}");
    assert_eq!(info["transfer"], format!("{target} -> {status}"), "{info}");

    let (code, v) = request(http, "POST", &format!("/calls/{id}/hangup"), None);
    assert_eq!(code, 200, "{v}");
    let run = sipp.wait();
    run.assert_success(&format!("{scenario_name}: refused transfer, then BYE"));
    vox.assert_running();
}

#[test]
fn busy_notify_gives_502_with_486_and_the_call_stays_up() {
    refused_transfer_keeps_the_call("uas_refer_notify_busy.xml", "sip:busy@example.com", 486);
}

#[test]
fn declined_refer_gives_502_with_603_and_the_call_stays_up() {
    refused_transfer_keeps_the_call("uas_refer_decline.xml", "sip:nobody@example.com", 603);
}

#[test]
fn transfer_requests_are_checked() {
    let sipp = Sipp::spawn(
        &["-sf", &scenario("uas_refer_decline.xml"), "-m", "1"],
        Duration::from_secs(30),
    );
    let mut vox = VoxlineProcess::spawn("");
    let http = vox.http_addr();
    let (code, v) = request(
        http,
        "POST",
        "/calls/999999/transfer",
        Some(r#"{"target":"sip:a@b"}"#),
    );
    assert_eq!(code, 404, "{v}");
    let (code, v) = request(http, "POST", "/calls/1/transfer", Some("{not json"));
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid request body")),
        "{v}"
    );

    let id = answered_call(&vox, &sipp);
    let (code, v) = request(
        http,
        "POST",
        &format!("/calls/{id}/transfer"),
        Some(r#"{"target":"http://example.com"}"#),
    );
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid transfer target")),
        "{v}"
    );
    // The refused request sent nothing: the scenario's REFER still comes from this one.
    let (code, v) = request(
        http,
        "POST",
        &format!("/calls/{id}/transfer"),
        Some(r#"{"target":"sip:nobody@example.com"}"#),
    );
    assert_eq!((code, v["status"].as_u64()), (502, Some(603)), "{v}");
    let (code, _) = request(http, "POST", &format!("/calls/{id}/hangup"), None);
    assert_eq!(code, 200);
    sipp.wait().assert_success("checked transfer requests");
    vox.assert_running();
}
