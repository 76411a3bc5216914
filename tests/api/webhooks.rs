//! Webhooks from the durable outbox, checked by a receiver that verifies every request with
//! the Standard Webhooks reference library (PyPI `standardwebhooks`,
//! `tests/webhooks/receiver.py`):
//!
//! * the receiver is down while SIPp makes calls, then comes up: every event of every call
//!   arrives, exactly once per id, with a signature that verifies, and the deliveries API
//!   shows them delivered after failed attempts; a redelivery sends the same id again;
//! * voxline is killed (SIGKILL) while a slow receiver takes its deliveries, and started
//!   again on the same data directory: nothing is lost (a request the receiver got just
//!   before the kill may come again, with the same id and body).
//!
//! * an endpoint added through the API (`POST /webhooks/endpoints`) gets signed events with
//!   the secret voxline made for it, keeps them after a restart, and gets none once deleted.
//!
//! Needs `python3` with `standardwebhooks` (`.ci/run` installs it) and SIPp.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{LOOPBACK, VoxlineProcess, free_tcp_port, http_json, sipp};

/// A Standard Webhooks secret: `whsec_` and base64 of 32 bytes.
pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_ENV: &str = "VOXLINE_TEST_WEBHOOK_SECRET";

/// The receiver process; killed on drop.
pub(crate) struct Receiver {
    child: Child,
}

impl Receiver {
    pub(crate) fn start(port: u16, out: &Path, delay_ms: u32) -> Receiver {
        Receiver::start_with(port, SECRET, out, delay_ms)
    }

    fn start_with(port: u16, secret: &str, out: &Path, delay_ms: u32) -> Receiver {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhooks/receiver.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(secret)
            .arg(out)
            .arg(delay_ms.to_string())
            .stdin(Stdio::null())
            .spawn()
            .expect("python3 (apt-get install python3; pip install standardwebhooks)");
        // Listening once a TCP connect succeeds.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((LOOPBACK, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the receiver did not listen (pip install standardwebhooks)"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Receiver { child }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the receiver logged: one JSON object per request.
pub(crate) fn received(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn config(data: &Path, port: u16) -> String {
    format!(
        "data_dir = \"{}\"\n\
         [[webhook]]\n\
         name = \"crm\"\n\
         url = \"http://{LOOPBACK}:{port}/hook\"\n\
         secret_env = \"{SECRET_ENV}\"\n\
         events = [\"call.started\", \"call.answered\", \"call.ended\"]\n\
         backoff_initial_ms = 100\n\
         backoff_max_s = 1\n",
        data.display()
    )
}

fn spawn(data: &Path, port: u16) -> VoxlineProcess {
    VoxlineProcess::spawn_with_env(&config(data, port), &[(SECRET_ENV, SECRET)])
}

/// `calls` SIPp calls to the echo agent, each held `hold_ms`.
fn make_calls(vox: &VoxlineProcess, calls: u32, hold_ms: u32) {
    let target = vox.sip_addr().to_string();
    let (m, d) = (calls.to_string(), hold_ms.to_string());
    sipp(
        &["-sn", "uac", &target, "-m", &m, "-l", "2", "-d", &d],
        Duration::from_secs(60),
    )
    .assert_success("the calls");
}

fn deliveries(vox: &VoxlineProcess) -> Vec<serde_json::Value> {
    let (code, body) = http_json(
        vox.http_addr(),
        "GET",
        "/webhooks/deliveries?limit=1000",
        None,
        Duration::from_secs(5),
    );
    assert_eq!(code, 200, "{body}");
    body["deliveries"].as_array().cloned().unwrap_or_default()
}

/// Waits until `done` holds for the receiver's log, or panics with it.
fn wait_for(out: &Path, what: &str, done: impl Fn(&[serde_json::Value]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = received(out);
        if done(&got) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the receiver has {got:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_receiver_that_was_down_gets_every_event_once_signed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("received.jsonl");
    let port = free_tcp_port();
    let vox = spawn(&dir.path().join("data"), port);
    make_calls(&vox, 3, 200);

    // Down: attempts fail and are retried.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = deliveries(&vox);
        let retried = rows
            .iter()
            .filter(|r| r["attempts"].as_u64().unwrap_or(0) >= 2 && r["state"] == "pending")
            .count();
        if rows.len() == 9 && retried > 0 {
            // Every failed attempt says why (a refused connection).
            assert!(
                rows.iter()
                    .filter(|r| r["attempts"].as_u64().unwrap_or(0) > 0)
                    .all(|r| r["last_error"].is_string() && r["state"] == "pending"),
                "{rows:#?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no retried rows: {rows:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Up: everything arrives, once per id, verified by the reference library.
    let _receiver = Receiver::start(port, &out, 0);
    wait_for(&out, "9 events", |got| got.len() >= 9);
    std::thread::sleep(Duration::from_millis(500));
    let got = received(&out);
    assert_eq!(got.len(), 9, "exactly once per id: {got:#?}");
    assert!(got.iter().all(|g| g["verified"] == true), "{got:#?}");
    let ids: HashSet<&str> = got.iter().filter_map(|g| g["id"].as_str()).collect();
    assert_eq!(ids.len(), 9);
    let mut per_type: HashMap<&str, usize> = HashMap::new();
    for g in &got {
        *per_type
            .entry(g["type"].as_str().unwrap_or("?"))
            .or_default() += 1;
    }
    assert_eq!(
        per_type,
        HashMap::from([("call.started", 3), ("call.answered", 3), ("call.ended", 3)])
    );
    // call.ended carries the record.
    let ended: serde_json::Value = got
        .iter()
        .find(|g| g["type"] == "call.ended")
        .and_then(|g| serde_json::from_str(g["body"].as_str()?).ok())
        .expect("a call.ended body");
    assert_eq!(ended["data"]["agent"], "echo", "{ended:#}");
    assert!(ended["data"]["ended_at"].is_number(), "{ended:#}");

    let rows = deliveries(&vox);
    assert!(
        rows.iter()
            .all(|r| r["state"] == "delivered" && r["last_status"] == 204),
        "{rows:#?}"
    );

    // A redelivery sends the same id again.
    let id = rows[0]["id"].as_str().expect("id").to_owned();
    let (code, body) = http_json(
        vox.http_addr(),
        "POST",
        &format!("/webhooks/deliveries/{id}/redeliver"),
        None,
        Duration::from_secs(5),
    );
    assert_eq!(code, 200, "{body}");
    wait_for(&out, "the redelivery", |got| got.len() == 10);
    let again = received(&out);
    assert_eq!(again[9]["id"], id.as_str());
    assert_eq!(again[9]["verified"], true);
    let (code, _) = http_json(
        vox.http_addr(),
        "POST",
        "/webhooks/deliveries/msg_none/redeliver",
        None,
        Duration::from_secs(5),
    );
    assert_eq!(code, 404);
}

#[test]
fn kill_9_mid_delivery_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("received.jsonl");
    let data = dir.path().join("data");
    let port = free_tcp_port();
    // A slow receiver: each request takes 300 ms, so deliveries are in flight at the kill.
    let _receiver = Receiver::start(port, &out, 300);
    let vox = spawn(&data, port);
    make_calls(&vox, 4, 100);
    // The last records are written a moment after SIPp's last BYE.
    let deadline = Instant::now() + Duration::from_secs(10);
    let all: HashSet<String> = loop {
        let rows = deliveries(&vox);
        if rows.len() == 12 {
            break rows
                .iter()
                .filter_map(|r| r["id"].as_str().map(str::to_owned))
                .collect();
        }
        assert!(Instant::now() < deadline, "{rows:#?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Kill it while some are delivered and others not.
    wait_for(&out, "a first delivery", |got| !got.is_empty());
    drop(vox); // SIGKILL
    let before = received(&out).len();
    assert!(before < 12, "everything was delivered before the kill");

    let vox = spawn(&data, port);
    wait_for(&out, "every id", |got| {
        let ids: HashSet<&str> = got.iter().filter_map(|g| g["id"].as_str()).collect();
        all.iter().all(|id| ids.contains(id.as_str()))
    });
    let got = received(&out);
    assert!(got.iter().all(|g| g["verified"] == true), "{got:#?}");
    // A duplicate (a request answered as voxline died) carries the same body.
    let mut bodies: HashMap<&str, &str> = HashMap::new();
    for g in &got {
        let (id, body) = (
            g["id"].as_str().expect("id"),
            g["body"].as_str().expect("body"),
        );
        if let Some(first) = bodies.insert(id, body) {
            assert_eq!(first, body, "a redelivered id with another body");
        }
    }
    assert!(
        got.len() <= 13,
        "more than the one in flight came twice: {got:#?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !deliveries(&vox).iter().all(|r| r["state"] == "delivered") {
        assert!(Instant::now() < deadline, "{:#?}", deliveries(&vox));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_endpoint_added_through_the_api_gets_signed_events_until_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = dir.path().join("received.jsonl");
    let port = free_tcp_port();
    let config = format!("data_dir = \"{}\"\n", data.display());
    let vox = VoxlineProcess::spawn(&config);
    let http = vox.http_addr();
    let t = Duration::from_secs(5);
    let def = serde_json::json!({
        "name": "crm",
        "url": format!("http://{LOOPBACK}:{port}/hook"),
        "events": ["call.ended"],
        "backoff_initial_ms": 100,
        "backoff_max_s": 1
    })
    .to_string();
    // Mistakes name the field; a name is taken once.
    let (code, e) = http_json(
        http,
        "POST",
        "/webhooks/endpoints",
        Some(r#"{"name": "x", "url": "ftp://example.com"}"#),
        t,
    );
    assert_eq!(code, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("url"), "{e}");
    let (code, e) = http_json(
        http,
        "POST",
        "/webhooks/endpoints",
        Some(r#"{"name": "x", "url": "http://127.0.0.1:9/", "events": ["call.exploded"]}"#),
        t,
    );
    assert_eq!(code, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("events[0]"), "{e}");
    let (code, created) = http_json(http, "POST", "/webhooks/endpoints", Some(&def), t);
    assert_eq!(code, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    let (code, _) = http_json(http, "POST", "/webhooks/endpoints", Some(&def), t);
    assert_eq!(code, 409);
    let (_, list) = http_json(http, "GET", "/webhooks/endpoints", None, t);
    assert_eq!(list["endpoints"][0]["name"], "crm", "{list}");
    assert_eq!(list["endpoints"][0]["source"], "api", "{list}");
    assert!(
        !list.to_string().contains(&secret),
        "the secret is shown only once: {list}"
    );

    let _receiver = Receiver::start_with(port, &secret, &out, 0);
    make_calls(&vox, 2, 200);
    wait_for(&out, "two call.ended", |got| got.len() >= 2);

    // A restart keeps the endpoint.
    drop(vox);
    let vox = VoxlineProcess::spawn(&config);
    make_calls(&vox, 1, 200);
    wait_for(&out, "the third call.ended", |got| got.len() >= 3);
    let got = received(&out);
    assert!(got.iter().all(|g| g["verified"] == true), "{got:#?}");
    assert!(got.iter().all(|g| g["type"] == "call.ended"), "{got:#?}");

    // Deleted: no more events.
    let (code, _) = http_json(
        vox.http_addr(),
        "DELETE",
        "/webhooks/endpoints/crm",
        None,
        t,
    );
    assert_eq!(code, 200);
    let (code, _) = http_json(
        vox.http_addr(),
        "DELETE",
        "/webhooks/endpoints/crm",
        None,
        t,
    );
    assert_eq!(code, 404);
    make_calls(&vox, 1, 200);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(received(&out).len(), 3, "an event after the deletion");
    let pending: Vec<_> = deliveries(&vox)
        .into_iter()
        .filter(|d| d["state"] == "pending")
        .collect();
    assert!(pending.is_empty(), "{pending:#?}");
}
