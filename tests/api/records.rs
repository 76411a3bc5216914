//! Finished calls over HTTP, from the SQLite records: `GET /calls/{record_id}` and
//! `GET /records`, against a real voxline.
//!
//! * A SIPp call to voxline ends; its record (answered_at, ended_at, end_reason) is served by
//!   `GET /calls/{record_id}` and listed by `GET /records`, and the live entry
//!   (`GET /calls/{id}`) names the same `record_id`.
//! * Records written before voxline started (through the records API, in the data directory
//!   voxline then opens) come with their JSONL transcript, or with `"transcript": []` and a
//!   `"transcript_error"` when the file is missing; `GET /records` pages newest first over
//!   finished (and crash-cut) calls; bad ids and queries get JSON errors.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::{VoxlineProcess, scenario, sipp};
use serde_json::Value;
use voxline::records::{
    CallRecord, Direction, RecordStore, Role, TranscriptEntry, TranscriptWriter, UnixMs,
};

fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    common::http_json(addr, "GET", path, None, Duration::from_secs(10))
}

fn config(data: &Path) -> String {
    format!("data_dir = \"{}\"\n", data.display())
}

#[test]
fn a_finished_call_is_served_from_the_records() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut vox = VoxlineProcess::spawn(&config(data.path()));
    let http = vox.http_addr();
    let run = sipp(
        &[
            "-sf",
            &scenario("uac_inbound_call.xml"),
            "-s",
            "1000",
            "-m",
            "1",
            &vox.sip_addr().to_string(),
        ],
        Duration::from_secs(15),
    );
    run.assert_success("inbound call");

    // The writer thread commits the final record shortly after the BYE.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let (code, v) = get(http, "/records");
        assert_eq!(code, 200, "{v}");
        if v.as_array().is_some_and(|a| a.len() == 1) {
            break v;
        }
        assert!(Instant::now() < deadline, "no finished record: {v}");
        thread::sleep(Duration::from_millis(50));
    };
    let record_id = listed[0]["id"].as_str().expect("record id").to_string();
    let handle = record_id
        .rsplit_once('-')
        .map(|(_, n)| n.to_string())
        .expect("PREFIX-N");

    let (code, live) = get(http, &format!("/calls/{handle}"));
    assert_eq!(code, 200, "{live}");
    assert_eq!(live["record_id"], record_id.as_str(), "{live}");
    assert_eq!(live["state"], "ended", "{live}");

    let (code, rec) = get(http, &format!("/calls/{record_id}"));
    assert_eq!(code, 200, "{rec}");
    assert_eq!(rec["id"], record_id.as_str());
    assert_eq!(rec["direction"], "inbound");
    assert_eq!(rec["call_id"], live["call_id"]);
    let started = rec["started_at"].as_i64().expect("started_at");
    let answered = rec["answered_at"].as_i64().expect("answered_at");
    let ended = rec["ended_at"].as_i64().expect("ended_at");
    assert!(started <= answered && answered <= ended, "{rec}");
    assert_eq!(rec["end_reason"], "RemoteBye");
    assert_eq!(rec["unfinished"], false);
    assert_eq!(rec["transcript"], serde_json::json!([]), "{rec}");
    assert!(rec.get("transcript_error").is_none(), "{rec}");
    vox.assert_running();
}

fn record(id: &str, started_ms: i64, transcript: Option<&Path>) -> CallRecord {
    let mut r = CallRecord::started(
        id,
        format!("cid-{id}"),
        "sip:alice@example.com",
        "sip:1000@voxline",
        Direction::Inbound,
        "support",
        UnixMs::new(started_ms),
    );
    r.answered_at = Some(UnixMs::new(started_ms + 1_000));
    r.ended_at = Some(UnixMs::new(started_ms + 61_000));
    r.end_reason = Some("RemoteBye".into());
    r.transcript_path = transcript.map(|p| p.to_string_lossy().into_owned());
    r
}

fn entry(t_ms: u64, role: Role, text: &str) -> TranscriptEntry {
    TranscriptEntry {
        t_ms,
        at: UnixMs::new(1_700_000_001_000 + t_ms as i64),
        role,
        text: text.into(),
        is_final: true,
        item_id: None,
        corrects: false,
    }
}

#[test]
fn stored_records_come_with_their_transcripts_and_page_newest_first() {
    let data = tempfile::tempdir().expect("tempdir");
    let transcript = data.path().join("transcripts").join("a.jsonl");
    let mut w = TranscriptWriter::create(&transcript).expect("transcript");
    w.append(&entry(1_520, Role::Caller, "Hello?"))
        .expect("append");
    w.append(&entry(2_210, Role::Agent, "Hi, this is Ada."))
        .expect("append");
    w.close().expect("close");
    let missing = data.path().join("transcripts").join("gone.jsonl");
    {
        let mut store = RecordStore::open(data.path()).expect("store");
        let a = record("1700000000-1", 1_700_000_000_000, Some(&transcript));
        let b = record("1700000000-2", 1_700_000_100_000, Some(&missing));
        let c = record("1700000000-3", 1_700_000_200_000, None);
        for r in [&a, &b, &c] {
            store.insert_started(r).expect("insert");
            store.finish(r).expect("finish");
        }
        // A call in progress when "voxline" stopped: marked unfinished at the next open.
        let mut d = record("1700000000-4", 1_700_000_300_000, None);
        d.ended_at = None;
        d.end_reason = None;
        store.insert_started(&d).expect("insert");
    }
    let mut vox = VoxlineProcess::spawn(&config(data.path()));
    let http = vox.http_addr();

    let (code, a) = get(http, "/calls/1700000000-1");
    assert_eq!(code, 200, "{a}");
    assert_eq!(a["answered_at"], 1_700_000_001_000i64);
    assert_eq!(a["ended_at"], 1_700_000_061_000i64);
    assert_eq!(a["end_reason"], "RemoteBye");
    assert_eq!(a["agent"], "support");
    let t = a["transcript"].as_array().expect("transcript array");
    assert_eq!(t.len(), 2, "{a}");
    assert_eq!(
        (&t[0]["role"], &t[0]["text"], &t[0]["t_ms"]),
        (
            &Value::from("caller"),
            &Value::from("Hello?"),
            &Value::from(1_520)
        )
    );
    assert_eq!(
        (&t[1]["role"], &t[1]["text"]),
        (&Value::from("agent"), &Value::from("Hi, this is Ada."))
    );
    assert!(a.get("transcript_error").is_none(), "{a}");

    let (code, b) = get(http, "/calls/1700000000-2");
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["transcript"], serde_json::json!([]));
    let err = b["transcript_error"].as_str().expect("transcript_error");
    assert!(err.contains("gone.jsonl"), "{err}");

    let (code, c) = get(http, "/calls/1700000000-3");
    assert_eq!(code, 200, "{c}");
    assert_eq!(c["transcript"], serde_json::json!([]));
    assert!(c.get("transcript_error").is_none(), "{c}");

    let (code, v) = get(http, "/calls/1700000000-99");
    assert_eq!(code, 404, "{v}");
    assert!(v["error"].is_string(), "{v}");
    let (code, v) = get(http, "/calls/not-a-record");
    assert_eq!(code, 400, "{v}");

    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|r| r["id"].as_str().expect("id").to_string())
            .collect()
    };
    let (code, all) = get(http, "/records");
    assert_eq!(code, 200, "{all}");
    assert_eq!(
        ids(&all),
        [
            "1700000000-4",
            "1700000000-3",
            "1700000000-2",
            "1700000000-1"
        ]
    );
    assert_eq!(all[0]["unfinished"], true);
    assert!(
        all[0].get("transcript").is_none(),
        "listings carry no transcripts"
    );
    let (code, page) = get(http, "/records?limit=2&offset=1");
    assert_eq!(code, 200, "{page}");
    assert_eq!(ids(&page), ["1700000000-3", "1700000000-2"]);
    let (code, page) = get(http, "/records?offset=10");
    assert_eq!((code, ids(&page).len()), (200, 0));
    for bad in [
        "/records?limit=0",
        "/records?limit=501",
        "/records?limit=x",
        "/records?foo=1",
    ] {
        let (code, v) = get(http, bad);
        assert_eq!(code, 400, "{bad}: {v}");
        assert!(v["error"].is_string(), "{v}");
    }
    vox.assert_running();
}
