//! The web console in a real browser: headless Chromium (Debian's `chromium`, driven by
//! playwright-core, `tests/browser/console.mjs`) against a voxline with an API token, a
//! realtime agent on the local mock, and SIPp as the caller, playing sip-tester's recorded
//! speech (g711a.pcap) into the call twice (`uac_pcap_twice.xml`: the call lasts 21 s, so
//! the first turn's lines are written while it goes on). In the browser:
//!
//! * nothing of the console (its script, the API) answers before the login, and a wrong
//!   secret is refused;
//! * after the login, the live view shows the call as SIPp places it, with the caller's
//!   line and the agent's reply in its transcript as they are written; the call leaves the
//!   view when SIPp hangs up;
//! * the history finds the call, its record shows the transcript, and the page plays the
//!   stereo recording (Chromium fetches it with byte ranges);
//! * the agent editor saves new instructions as the agent's next version;
//! * after logging out, the API refuses the browser again.
//!
//! Needs `chromium`, `sipp` and `npm ci` in tests/browser (`.ci/run` installs them). It
//! lives in the API test binary, away from the realtime binary's media-timing tests: a
//! browser beside them on two cores starved one (a barge-in test's simulated echo path).

use crate::common::{Sipp, http_request_headers, scenario};
use crate::realtime_e2e_support::{KEY, KEY_ENV, RealtimeE2e};

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use voxline_mock_realtime::MockConfig;

/// What the mock agent answers each turn with.
const REPLY: &str = "Thank you for calling, how can I help?";

/// The API agent the page edits, and what it sets.
const EDITED: &str = "support";
const NEW_INSTRUCTIONS: &str = "You are the support line. Be brief with {{caller}}.";

/// The call: 7 s of speech, 5 s of silence, 7 s of speech, 2 s, then SIPp hangs up.
const CALL_LIMIT: Duration = Duration::from_secs(50);

/// A request with the API token: (status, JSON body).
fn api(h: &RealtimeE2e, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {KEY}");
    let (code, _, text) = http_request_headers(
        h.vox.http_addr(),
        method,
        path,
        &[("Authorization", &auth)],
        body,
        Duration::from_secs(5),
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (code, serde_json::from_str(&text).unwrap_or_default())
}

#[test]
fn the_console_shows_a_live_call_its_record_and_recording_and_edits_an_agent() {
    let root = crate::common::require_chromium();
    let mock = MockConfig {
        reply_text: REPLY.into(),
        // sip-tester's recording is quiet speech.
        vad_rms_threshold: 150.0,
        ..MockConfig::default()
    };
    // The API token is the mock's key: one secret in the environment serves both.
    let mut h = RealtimeE2e::start(
        mock,
        &format!("[http]\ntoken_env = \"{KEY_ENV}\"\n"),
        "",
        "",
    );
    let (code, created) = api(
        &h,
        "POST",
        "/agents",
        Some(&format!(
            r#"{{"name":"{EDITED}","kind":"realtime","instructions":"the first version",
                "realtime":{{"url":"{}","api_key_env":"{KEY_ENV}"}}}}"#,
            h.mock.url()
        )),
    );
    assert_eq!(code, 201, "{created}");

    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut node = Command::new("node")
        .arg(root.join("tests/browser/console.mjs"))
        .arg(format!("http://{}", h.vox.http_addr()))
        .arg(KEY)
        .arg(EDITED)
        .arg(NEW_INSTRUCTIONS)
        .arg(REPLY)
        .stdout(Stdio::piped())
        .stderr(log.reopen().expect("log file"))
        .spawn()
        .expect("node (apt-get install nodejs npm)");
    let (tx, rx) = mpsc::channel::<serde_json::Value>();
    let stdout = node.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v = serde_json::from_str(&line).unwrap_or(serde_json::json!({ "text": line }));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    let report = |what: &str| {
        let page = std::fs::read_to_string(log.path()).unwrap_or_default();
        format!("{what}\npage:\n{page}\nvoxline:\n{}", h.vox.output())
    };
    // Each line the script prints, in order, until `until` says so.
    let next = |until: &dyn Fn(&serde_json::Value) -> bool, limit: Duration| loop {
        match rx.recv_timeout(limit) {
            Ok(v) if v.get("error").is_some() => panic!("{}", report(&v.to_string())),
            Ok(v) if until(&v) => return v,
            Ok(_) => continue,
            Err(e) => panic!("{}", report(&format!("the page script said nothing ({e})"))),
        }
    };

    next(&|v| v["step"] == "live", Duration::from_secs(60));
    let sipp = Sipp::spawn(
        &[
            "-sf",
            &scenario("uac_pcap_twice.xml"),
            "-s",
            "1000",
            "-m",
            "1",
            &h.vox.sip_addr().to_string(),
        ],
        CALL_LIMIT,
    );
    let done = next(&|v| v.get("result").is_some(), Duration::from_secs(120));
    let run = sipp.wait();
    run.assert_success("a PCMA call that plays g711a.pcap twice");
    let _ = node.wait();
    let r = &done["result"];
    let all = || report(&format!("{r:#}"));

    // Before the login.
    assert_eq!(r["scriptBeforeLogin"], 401, "{}", all());
    assert_eq!(r["recordsBeforeLogin"], 401, "{}", all());
    assert_eq!(
        r["wrongSecretError"],
        "wrong token or password",
        "{}",
        all()
    );
    assert_eq!(r["pageErrors"], serde_json::json!([]), "{}", all());

    // The live view: the call, then its lines as they were written.
    let record_id = r["liveRecordId"].as_str().expect("record id").to_owned();
    let row: Vec<&str> = r["liveRow"]
        .as_array()
        .expect("row")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert_eq!(row[0], record_id, "{}", all());
    assert_eq!(row[1], "answered", "{}", all());
    assert_eq!(row[5], "ai", "{}", all());
    assert_eq!(row[7], "PCMA", "{}", all());
    assert!(r["hangupButton"].as_bool().unwrap_or(false), "{}", all());
    let has = |key: &str, role: &str, pred: &dyn Fn(&str) -> bool| {
        r[key].as_array().is_some_and(|ls| {
            ls.iter()
                .any(|l| l["role"] == role && l["text"].as_str().is_some_and(pred))
        })
    };
    assert!(
        has("liveLines", "caller", &|t| t.starts_with("caller said")),
        "{}",
        all()
    );
    assert!(has("liveLines", "agent", &|t| t == REPLY), "{}", all());

    // The record: found by the search, with the same lines, and a recording that plays.
    assert_eq!(
        r["historyRows"],
        serde_json::json!([record_id]),
        "{}",
        all()
    );
    assert_eq!(r["recordTitle"], format!("Call {record_id}"), "{}", all());
    assert!(
        has("recordLines", "caller", &|t| t.starts_with("caller said")),
        "{}",
        all()
    );
    assert!(has("recordLines", "agent", &|t| t == REPLY), "{}", all());
    let (code, rec) = api(&h, "GET", &format!("/calls/{record_id}"), None);
    assert_eq!(code, 200, "{rec}");
    let talk_s = (rec["ended_at"].as_f64().unwrap() - rec["answered_at"].as_f64().unwrap()) / 1e3;
    let played = &r["playback"];
    let duration = played["duration"].as_f64().unwrap_or(0.0);
    assert!(
        (duration - talk_s).abs() < 1.5,
        "the recording lasts {duration} s, the call {talk_s} s\n{}",
        all()
    );
    assert!(
        played["currentTime"].as_f64().unwrap_or(0.0) >= 1.0,
        "{}",
        all()
    );
    let statuses = r["recordingStatuses"].as_array().expect("statuses");
    assert!(
        statuses.iter().any(|s| s == 206),
        "Chromium's range requests: {statuses:?}\n{}",
        all()
    );

    // The agent editor wrote version 2 with the new instructions.
    assert_eq!(r["agentVersionBefore"], "version 1", "{}", all());
    assert_eq!(r["agentSavedVersion"], 2, "{}", all());
    assert_eq!(
        r["agentVersionRows"],
        serde_json::json!([2, 1]),
        "{}",
        all()
    );
    let (code, agent) = api(&h, "GET", &format!("/agents/{EDITED}"), None);
    assert_eq!(code, 200, "{agent}");
    assert_eq!(agent["version"], 2, "{agent}");
    assert_eq!(agent["definition"]["instructions"], NEW_INSTRUCTIONS);
    assert_eq!(agent["definition"]["kind"], "realtime");

    // Logged out: the browser's cookie no longer opens the API.
    assert_eq!(r["recordsAfterLogout"], 401, "{}", all());
    h.vox.assert_running();
}
