//! Agents as data through the API: create, change (a new version each time), read, delete;
//! voxline.toml's agents stay read-only beside them; a definition is checked like
//! voxline.toml's and a mistake names the key; the next call that names the agent (here
//! `POST /calls` to a SIPp UAS) uses its newest version, and its record says which.

use crate::common;

use std::time::{Duration, Instant};

use common::{Sipp, VoxlineProcess, http_json, scenario};

fn post(vox: &VoxlineProcess, path: &str, body: &str) -> (u16, serde_json::Value) {
    http_json(
        vox.http_addr(),
        "POST",
        path,
        Some(body),
        Duration::from_secs(5),
    )
}

fn req(
    vox: &VoxlineProcess,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    http_json(vox.http_addr(), method, path, body, Duration::from_secs(5))
}

const V1: &str = r#"{"name":"greeter","kind":"play","tone_hz":440,"tone_ms":300,"record":false}"#;
const V2: &str = r#"{"kind":"play","tone_hz":880,"tone_ms":300,"record":false}"#;

#[test]
fn agents_are_created_versioned_and_the_next_call_uses_the_newest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vox = VoxlineProcess::spawn(&format!(
        "data_dir = \"{}\"\n",
        dir.path().join("data").display()
    ));

    let (code, v1) = post(&vox, "/agents", V1);
    assert_eq!(code, 201, "{v1}");
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["definition"]["tone_hz"], 440);
    let (code, again) = post(&vox, "/agents", V1);
    assert_eq!(code, 409, "{again}");

    let (code, v2) = req(&vox, "PUT", "/agents/greeter", Some(V2));
    assert_eq!(code, 200, "{v2}");
    assert_eq!(v2["version"], 2);
    let (code, one) = req(&vox, "GET", "/agents/greeter", None);
    assert_eq!(code, 200, "{one}");
    assert_eq!(one["version"], 2);
    assert_eq!(one["versions"].as_array().map(Vec::len), Some(2));
    assert_eq!(one["versions"][0]["definition"]["tone_hz"], 440);

    let (code, all) = req(&vox, "GET", "/agents", None);
    assert_eq!(code, 200);
    let names: Vec<(&str, &str)> = all["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap_or(""),
                a["source"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(names.contains(&("echo", "config")), "{names:?}");
    assert!(names.contains(&("greeter", "api")), "{names:?}");

    // The next call uses version 2, and its record says so.
    let sipp = Sipp::spawn(
        &["-sf", &scenario("uas_answer_until_bye.xml"), "-m", "1"],
        Duration::from_secs(30),
    );
    let (code, call) = post(
        &vox,
        "/calls",
        &format!(
            r#"{{"target":"sip:4711@{}","agent":"greeter"}}"#,
            sipp.addr()
        ),
    );
    assert_eq!(code, 201, "{call}");
    let id = call["id"].as_u64().expect("id");
    let deadline = Instant::now() + Duration::from_secs(15);
    let record = loop {
        let (_, c) = req(&vox, "GET", &format!("/calls/{id}"), None);
        if c["state"] == "ended" {
            break c;
        }
        assert!(Instant::now() < deadline, "the call did not end: {c:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(record["agent"], "greeter", "{record:#}");
    assert_eq!(record["agent_version"], 2, "{record:#}");
    sipp.wait().assert_success("answered, then the agent's BYE");
    let record_id = record["record_id"].as_str().expect("record_id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, r) = req(&vox, "GET", &format!("/calls/{record_id}"), None);
        if code == 200 && r["agent_version"] == 2 && !r["ended_at"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "the stored record: {r:#}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Deleted: gone from the list and from calls; its versions stay for the records.
    let (code, del) = req(&vox, "DELETE", "/agents/greeter", None);
    assert_eq!(code, 200, "{del}");
    assert_eq!(del["version"], 3);
    let (code, _) = req(&vox, "GET", "/agents/greeter", None);
    assert_eq!(code, 404);
    let (code, refused) = post(
        &vox,
        "/calls",
        r#"{"target":"sip:4711@127.0.0.1:9","agent":"greeter"}"#,
    );
    assert_eq!(code, 400, "{refused}");
    // The name can come back, with the next version.
    let (code, back) = post(&vox, "/agents", V1);
    assert_eq!(code, 201, "{back}");
    assert_eq!(back["version"], 4);
}

#[test]
fn definitions_are_checked_and_config_agents_are_read_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vox = VoxlineProcess::spawn(&format!(
        "data_dir = \"{}\"\n",
        dir.path().join("data").display()
    ));
    let cases = [
        (
            r#"{"name":"bad","kind":"play","tone_hz":5}"#,
            400,
            "agent definition: tone_hz: must be between 20 and 20000 Hz (got 5)",
        ),
        (
            r#"{"name":"bad","kind":"juggle"}"#,
            400,
            "agent definition: agent: unknown variant `juggle`",
        ),
        (
            r#"{"name":"bad","kind":"echo","colour":"blue"}"#,
            400,
            "unknown field `colour`",
        ),
        (r#"{"kind":"echo"}"#, 400, "the agent needs a \"name\""),
        (r#"{"name":"echo","kind":"echo"}"#, 409, "read-only"),
        (r#"[1,2]"#, 400, "needs a \"name\""),
    ];
    for (body, want_code, want) in cases {
        let (code, resp) = post(&vox, "/agents", body);
        assert_eq!(code, want_code, "{body}: {resp}");
        let msg = resp["error"].as_str().unwrap_or("");
        assert!(msg.contains(want), "{body}: {msg}");
    }
    let (code, resp) = req(&vox, "PUT", "/agents/nobody", Some(r#"{"kind":"echo"}"#));
    assert_eq!(code, 404, "{resp}");
    let (code, resp) = req(&vox, "PUT", "/agents/hold", Some(r#"{"kind":"echo"}"#));
    assert_eq!(code, 409, "{resp}");
    let (code, resp) = req(&vox, "DELETE", "/agents/echo", None);
    assert_eq!(code, 409, "{resp}");
    let (code, resp) = post(&vox, "/agents", r#"{"name":"x","kind":"echo"}"#);
    assert_eq!(code, 201, "{resp}");
    let (code, resp) = req(
        &vox,
        "PUT",
        "/agents/x",
        Some(r#"{"name":"y","kind":"echo"}"#),
    );
    assert_eq!(code, 400, "{resp}");
}

/// The newest record's agent and version, once `n` records are finished.
fn newest_record(vox: &VoxlineProcess, n: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = req(vox, "GET", "/records?limit=50", None);
        let list = body
            .as_array()
            .or_else(|| body["records"].as_array())
            .cloned()
            .unwrap_or_default();
        if code == 200 && list.len() >= n {
            return list[0].clone();
        }
        assert!(Instant::now() < deadline, "{body:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn call_number(vox: &VoxlineProcess, number: &str) {
    let target = vox.sip_addr().to_string();
    common::sipp(
        &["-sn", "uac", &target, "-s", number, "-m", "1", "-d", "200"],
        Duration::from_secs(30),
    )
    .assert_success("a call");
}

#[test]
fn a_route_set_through_the_api_sends_inbound_calls_to_the_newest_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vox = VoxlineProcess::spawn(&format!(
        "data_dir = \"{}\"\n",
        dir.path().join("data").display()
    ));
    let (code, v) = post(
        &vox,
        "/agents",
        r#"{"name":"desk","kind":"echo","record":false}"#,
    );
    assert_eq!(code, 201, "{v}");
    let (code, route) = req(&vox, "PUT", "/routes/7000", Some(r#"{"agent":"desk"}"#));
    assert_eq!(code, 200, "{route}");
    call_number(&vox, "7000");
    let r = newest_record(&vox, 1);
    assert_eq!(
        (r["agent"].as_str(), r["agent_version"].as_u64()),
        (Some("desk"), Some(1)),
        "{r:#}"
    );

    // A new version applies to the next call, without a restart.
    let (code, _) = req(
        &vox,
        "PUT",
        "/agents/desk",
        Some(r#"{"kind":"echo","echo_delay_ms":40,"record":false}"#),
    );
    assert_eq!(code, 200);
    call_number(&vox, "7000");
    let r = newest_record(&vox, 2);
    assert_eq!(r["agent_version"], 2, "{r:#}");

    // Agents and routes are in the database: a restart keeps them.
    let config = std::fs::read_to_string(vox.config_path()).expect("config");
    let mut vox = vox;
    vox.terminate(Duration::from_secs(10));
    let vox = VoxlineProcess::spawn(&config);
    call_number(&vox, "7000");
    let r = newest_record(&vox, 3);
    assert_eq!(
        (r["agent"].as_str(), r["agent_version"].as_u64()),
        (Some("desk"), Some(2)),
        "{r:#}"
    );

    // Other numbers still go by voxline.toml's routes (the default: echo for every number).
    call_number(&vox, "7001");
    let r = newest_record(&vox, 4);
    assert_eq!(r["agent"], "echo", "{r:#}");

    let (code, list) = req(&vox, "GET", "/routes", None);
    assert_eq!(code, 200);
    assert_eq!(list["routes"][0]["number"], "7000", "{list}");
    // Removed: 7000 goes by voxline.toml's routes again.
    let (code, _) = req(&vox, "DELETE", "/routes/7000", None);
    assert_eq!(code, 200);
    call_number(&vox, "7000");
    let r = newest_record(&vox, 5);
    assert_eq!(r["agent"], "echo", "{r:#}");

    // Mistakes.
    let (code, e) = req(&vox, "PUT", "/routes/70*00", Some(r#"{"agent":"desk"}"#));
    assert_eq!(code, 400, "{e}");
    let (code, e) = req(&vox, "PUT", "/routes/7000", Some(r#"{"agent":"nobody"}"#));
    assert_eq!(code, 400, "{e}");
    let (code, e) = req(&vox, "DELETE", "/routes/7000", None);
    assert_eq!(code, 404, "{e}");
    // A route to a deleted agent is left out: the number goes by voxline.toml's routes.
    let (code, _) = req(&vox, "PUT", "/routes/7002", Some(r#"{"agent":"desk"}"#));
    assert_eq!(code, 200);
    let (code, _) = req(&vox, "DELETE", "/agents/desk", None);
    assert_eq!(code, 200);
    call_number(&vox, "7002");
    let r = newest_record(&vox, 6);
    assert_eq!(r["agent"], "echo", "{r:#}");
}
