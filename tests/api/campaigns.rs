//! An outbound campaign of 50 targets against three SIPp UAS instances — one answers, one
//! answers 486 Busy, one rings and never answers — with voxline killed (SIGKILL) part way and
//! started again on the same database:
//!
//! - every target ends in the right state: the answering ones `done` on one attempt, the
//!   busy ones `failed` after 2 attempts (busy is retried), the ringing ones `failed` after
//!   one attempt (no_answer is not retried here), each hung up at the ring timeout;
//! - SIPp received exactly as many INVITEs per target as the store counted attempts (the
//!   restart dialled nobody twice beyond `max_attempts`);
//! - the campaign's `max_concurrent` and `calls_per_s` held, measured from the call
//!   records' start and end times;
//! - `campaign.target.done` went to the outbox once per target;
//! - pause, resume and cancel, and the API's errors;
//! - a trunk's `max_calls` and `max_calls_per_s` hold over a campaign that asks for more, and
//!   a target that found the trunk full loses no attempt.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{LOOPBACK, Sipp, VoxlineProcess, http_json, scenario};

const TARGETS: usize = 50;
const MAX_CONCURRENT: usize = 4;
const CALLS_PER_S: f64 = 8.0;

fn config(data: &Path) -> String {
    config_with(data, "")
}

fn config_with(data: &Path, extra: &str) -> String {
    format!(
        "data_dir = \"{}\"\n{extra}\n\
         [[agent]]\n\
         name = \"brief\"\n\
         kind = \"hold\"\n\
         hangup_after_ms = 300\n\
         [[webhook]]\n\
         name = \"crm\"\n\
         url = \"http://{LOOPBACK}:9/hook\"\n\
         secret_env = \"CAMPAIGN_TEST_SECRET\"\n\
         events = [\"campaign.target.done\"]\n",
        data.display()
    )
}

fn spawn(data: &Path) -> VoxlineProcess {
    VoxlineProcess::spawn_with_env(
        &config(data),
        &[(
            "CAMPAIGN_TEST_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )],
    )
}

/// Which UAS target `i` goes to: 0 answer, 1 busy, 2 ring.
fn kind(i: usize) -> usize {
    match i % 5 {
        0..=2 => 0,
        3 => 1,
        _ => 2,
    }
}

fn get(vox: &VoxlineProcess, path: &str) -> (u16, Value) {
    http_json(vox.http_addr(), "GET", path, None, Duration::from_secs(5))
}

/// Waits until the campaign's counts satisfy `cond`, at most `limit`.
fn wait_counts(
    vox: &VoxlineProcess,
    id: &str,
    limit: Duration,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (_, c) = get(vox, &format!("/campaigns/{id}?limit=1"));
        if cond(&c) || Instant::now() >= deadline {
            return c;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Distinct INVITE Call-IDs per target user (`t7`) in a SIPp message trace.
pub(crate) fn invites(
    messages: &str,
    into: &mut HashMap<String, std::collections::HashSet<String>>,
) {
    for block in messages.split("\n\n") {
        let Some(start) = block.find("INVITE sip:") else {
            continue;
        };
        let user = block[start + "INVITE sip:".len()..]
            .split('@')
            .next()
            .unwrap_or("")
            .to_owned();
        let call_id = block
            .lines()
            .find_map(|l| l.strip_prefix("Call-ID: "))
            .unwrap_or("")
            .trim()
            .to_owned();
        into.entry(user).or_default().insert(call_id);
    }
}

#[test]
fn fifty_targets_survive_a_restart_with_limits_and_retries() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let t = Duration::from_secs(120);
    let uas = [
        Sipp::spawn(&["-sf", &scenario("uas_answer_until_bye.xml")], t),
        Sipp::spawn(&["-sf", &scenario("uas_busy.xml")], t),
        Sipp::spawn(&["-sf", &scenario("uas_ring_no_answer.xml")], t),
    ];
    let targets: Vec<Value> = (0..TARGETS)
        .map(|i| {
            json!({
                "number": format!("sip:t{i}@{}", uas[kind(i)].addr()),
                "variables": {"n": i.to_string()}
            })
        })
        .collect();
    let body = json!({
        "name": "renewals",
        "agent": "brief",
        "targets": targets,
        "max_concurrent": MAX_CONCURRENT,
        "calls_per_s": CALLS_PER_S,
        "retry": {"on": ["busy"], "max_attempts": 2, "backoff_s": 1},
        "ring_timeout_s": 1
    })
    .to_string();

    let vox = spawn(&data);
    let http = vox.http_addr();
    let ts = Duration::from_secs(5);
    // The API's checks.
    let bad = json!({"agent": "nobody", "targets": [{"number": "sip:a@127.0.0.1"}]}).to_string();
    let (code, e) = http_json(http, "POST", "/campaigns", Some(&bad), ts);
    assert_eq!(code, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("agent"), "{e}");
    let bad = json!({"agent": "brief", "targets": [{"number": "12345"}]}).to_string();
    let (code, e) = http_json(http, "POST", "/campaigns", Some(&bad), ts);
    assert_eq!(code, 400, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("targets[0].number"),
        "{e}"
    );
    let bad = json!({"agent": "brief", "targets": [{"number": "sip:a@127.0.0.1"}],
        "window": {"start": "09:00", "end": "17:00", "timezone": "Mars/Olympus"}})
    .to_string();
    let (code, e) = http_json(http, "POST", "/campaigns", Some(&bad), ts);
    assert_eq!(code, 400, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("window.timezone"),
        "{e}"
    );

    let (code, c) = http_json(http, "POST", "/campaigns", Some(&body), ts);
    assert_eq!(code, 201, "{c}");
    let id = c["id"].as_str().unwrap().to_owned();
    assert_eq!(c["counts"]["pending"], TARGETS);

    // Pause: no new attempts start; resume.
    let (code, p) = http_json(http, "POST", &format!("/campaigns/{id}/pause"), None, ts);
    assert_eq!((code, p["state"].clone()), (200, json!("paused")), "{p}");
    let (code, p) = http_json(http, "POST", &format!("/campaigns/{id}/pause"), None, ts);
    assert_eq!(code, 409, "{p}");
    std::thread::sleep(Duration::from_millis(500));
    let (_, during) = get(&vox, &format!("/campaigns/{id}?limit=1"));
    let started = TARGETS as u64 - during["counts"]["pending"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let (_, later) = get(&vox, &format!("/campaigns/{id}?limit=1"));
    assert_eq!(
        TARGETS as u64 - later["counts"]["pending"].as_u64().unwrap(),
        started,
        "a paused campaign started calls: {later}"
    );
    let (code, _) = http_json(http, "POST", &format!("/campaigns/{id}/resume"), None, ts);
    assert_eq!(code, 200);

    // Kill voxline part way, start it again on the same database.
    let c = wait_counts(&vox, &id, Duration::from_secs(60), |c| {
        c["counts"]["done"].as_u64().unwrap_or(0) + c["counts"]["failed"].as_u64().unwrap_or(0)
            >= 15
    });
    assert!(
        c["counts"]["done"].as_u64().unwrap() > 0,
        "{c}\n{}",
        vox.output()
    );
    drop(vox); // SIGKILL
    let vox = spawn(&data);
    let c = wait_counts(&vox, &id, Duration::from_secs(90), |c| c["state"] == "done");
    assert_eq!(c["state"], "done", "{c}\n{}", vox.output());
    let (_, full) = get(&vox, &format!("/campaigns/{id}"));
    let targets = full["targets"].as_array().unwrap().clone();
    assert_eq!(targets.len(), TARGETS);

    // SIPp's side: INVITEs per target.
    let mut seen: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    for s in &uas {
        invites(&s.messages(), &mut seen);
    }
    let mut interrupted = 0;
    for t in &targets {
        let seq = t["seq"].as_u64().unwrap() as usize;
        let attempts = t["attempts"].as_u64().unwrap() as usize;
        let history: Vec<&str> = t["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["result"].as_str().unwrap())
            .collect();
        interrupted += history.iter().filter(|r| **r == "interrupted").count();
        let dialed = seen.get(&format!("t{seq}")).map_or(0, |s| s.len());
        assert!(attempts <= 2, "target {seq}: {t}");
        assert_eq!(history.len(), attempts, "target {seq}: {t}");
        // An attempt interrupted by the kill may not have reached SIPp yet.
        let interrupted_here = history.iter().filter(|r| **r == "interrupted").count();
        assert!(
            dialed <= attempts && dialed + interrupted_here >= attempts,
            "target {seq}: SIPp saw {dialed} INVITEs for {attempts} attempts: {t}"
        );
        let last = *history.last().unwrap();
        match kind(seq) {
            0 => {
                assert_eq!(
                    (t["state"].as_str(), last),
                    (Some("done"), "answered"),
                    "{t}"
                );
                assert!(t["history"].as_array().unwrap().last().unwrap()["record_id"].is_string());
            }
            1 => {
                assert_eq!(t["state"], "failed", "{t}");
                assert_eq!(last, "busy", "{t}");
                assert_eq!(attempts, 2, "busy is retried once: {t}");
            }
            _ => {
                assert_eq!(t["state"], "failed", "{t}");
                // An interrupted attempt is retried; no_answer is not.
                assert_eq!(last, "no_answer", "{t}");
                assert_eq!(attempts, 1 + interrupted_here, "{t}");
            }
        }
        assert_eq!(t["variables"]["n"], seq.to_string());
    }
    assert!(interrupted <= MAX_CONCURRENT, "{interrupted} interrupted");

    // The limits, from the call records.
    let reader = voxline::records::RecordReader::open(&data).unwrap();
    let records = reader.list(1000, 0).unwrap();
    let mut spans: Vec<(i64, i64)> = records
        .iter()
        .filter(|r| r.direction == voxline::records::Direction::Outbound && r.ended_at.is_some())
        .map(|r| (r.started_at.get(), r.ended_at.unwrap().get()))
        .collect();
    spans.sort();
    for (i, (start, _)) in spans.iter().enumerate() {
        let overlapping = spans[..i].iter().filter(|(_, end)| end > start).count() + 1;
        assert!(
            overlapping <= MAX_CONCURRENT,
            "{overlapping} calls at once at {start}"
        );
        // At most the bucket's burst plus the rate's share in any one second.
        let in_second = spans[i..]
            .iter()
            .take_while(|(s, _)| *s < start + 1000)
            .count();
        assert!(
            in_second as f64 <= CALLS_PER_S + 1.0,
            "{in_second} calls started within one second"
        );
    }

    // One campaign.target.done event per target.
    let outbox =
        voxline::records::outbox::Outbox::open(&voxline::records::StoreLocation::sqlite(&data))
            .unwrap();
    let events = outbox
        .list(None, 1000)
        .unwrap()
        .into_iter()
        .filter(|d| d.event == "campaign.target.done")
        .count();
    assert_eq!(events, TARGETS);

    // A finished campaign cannot be cancelled; an unknown one is 404.
    let (code, _) = http_json(
        vox.http_addr(),
        "POST",
        &format!("/campaigns/{id}/cancel"),
        None,
        ts,
    );
    assert_eq!(code, 409);
    let (code, _) = get(&vox, "/campaigns/cmp-0-0");
    assert_eq!(code, 404);
}

#[test]
fn cancel_stops_a_campaign_and_its_pending_targets() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let uas = Sipp::spawn(
        &["-sf", &scenario("uas_answer_until_bye.xml")],
        Duration::from_secs(60),
    );
    let vox = spawn(&data);
    let ts = Duration::from_secs(5);
    let targets: Vec<Value> = (0..20)
        .map(|i| json!({"number": format!("sip:c{i}@{}", uas.addr())}))
        .collect();
    let body = json!({"agent": "brief", "targets": targets, "calls_per_s": 2}).to_string();
    let (code, c) = http_json(vox.http_addr(), "POST", "/campaigns", Some(&body), ts);
    assert_eq!(code, 201, "{c}");
    let id = c["id"].as_str().unwrap().to_owned();
    wait_counts(&vox, &id, Duration::from_secs(20), |c| {
        c["counts"]["done"].as_u64().unwrap_or(0) >= 1
    });
    let (code, c) = http_json(
        vox.http_addr(),
        "POST",
        &format!("/campaigns/{id}/cancel"),
        None,
        ts,
    );
    assert_eq!((code, c["state"].clone()), (200, json!("cancelled")), "{c}");
    std::thread::sleep(Duration::from_secs(2));
    let (_, c) = get(&vox, &format!("/campaigns/{id}"));
    let counts = &c["counts"];
    assert_eq!(counts["pending"], 0, "{c}");
    assert_eq!(counts["dialing"], 0, "{c}");
    assert!(counts["cancelled"].as_u64().unwrap() >= 15, "{c}");
    assert_eq!(
        counts["done"].as_u64().unwrap() + counts["cancelled"].as_u64().unwrap(),
        20,
        "{c}"
    );
    let (_, list) = get(&vox, "/campaigns");
    assert_eq!(list["campaigns"][0]["id"], id.as_str());
}

/// Call records' (start, end) in ms, outbound, ended, sorted.
fn spans(data: &Path) -> Vec<(i64, i64)> {
    let reader = voxline::records::RecordReader::open(data).unwrap();
    let mut spans: Vec<(i64, i64)> = reader
        .list(1000, 0)
        .unwrap()
        .iter()
        .filter(|r| r.direction == voxline::records::Direction::Outbound && r.ended_at.is_some())
        .map(|r| (r.started_at.get(), r.ended_at.unwrap().get()))
        .collect();
    spans.sort();
    spans
}

#[test]
fn a_trunks_limits_hold_and_cost_no_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let uas = Sipp::spawn(
        &["-sf", &scenario("uas_answer_until_bye.xml")],
        Duration::from_secs(60),
    );
    let trunk = format!(
        "[[trunk]]\nname = \"pbx\"\nhost = \"127.0.0.1\"\nport = {}\nmax_calls = 2\nmax_calls_per_s = 4\n",
        uas.port()
    );
    let vox = VoxlineProcess::spawn_with_env(
        &config_with(&data, &trunk),
        &[(
            "CAMPAIGN_TEST_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )],
    );
    let targets: Vec<Value> = (0..12)
        .map(|i| json!({"number": format!("t{i}")}))
        .collect();
    let body = json!({"agent": "brief", "trunk": "pbx", "targets": targets,
        "max_concurrent": 6, "calls_per_s": 50, "retry": {"max_attempts": 1}})
    .to_string();
    let ts = Duration::from_secs(5);
    let (code, c) = http_json(vox.http_addr(), "POST", "/campaigns", Some(&body), ts);
    assert_eq!(code, 201, "{c}");
    let id = c["id"].as_str().unwrap().to_owned();
    let c = wait_counts(&vox, &id, Duration::from_secs(60), |c| c["state"] == "done");
    assert_eq!(c["counts"]["done"], 12, "{c}\n{}", vox.output());
    let (_, full) = get(&vox, &format!("/campaigns/{id}"));
    for t in full["targets"].as_array().unwrap() {
        assert_eq!(t["attempts"], 1, "a full trunk cost an attempt: {t}");
    }
    let spans = spans(&data);
    assert_eq!(spans.len(), 12);
    for (i, (start, _)) in spans.iter().enumerate() {
        let overlapping = spans[..i].iter().filter(|(_, end)| end > start).count() + 1;
        assert!(
            overlapping <= 2,
            "{overlapping} calls at once through the trunk"
        );
        // The bucket holds 4 and refills 4 a second: at most 8 starts in any second.
        let in_second = spans[i..]
            .iter()
            .take_while(|(s, _)| *s < start + 1000)
            .count();
        assert!(
            in_second <= 8,
            "{in_second} calls started within one second"
        );
    }
    // 12 starts with a bucket of 4 refilled at 4/s need at least (12 - 4) / 4 = 2 s.
    let first_to_last = spans[11].0 - spans[0].0;
    assert!(
        first_to_last >= 1_900,
        "12 calls started within {first_to_last} ms"
    );
    // SIPp saw the numbers at the trunk's address.
    let mut seen = HashMap::new();
    invites(&uas.messages(), &mut seen);
    assert_eq!(seen.len(), 12, "{:?}", seen.keys());
}

/// voxline stopped (SIGTERM) while a campaign's targets ring: it exits cleanly, and the
/// targets' attempts end as `interrupted` (a regression: the attempt polled its call's
/// outcome channel again after it had closed, and panicked).
#[test]
fn a_stop_while_targets_ring_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let uas = Sipp::spawn(
        &["-sf", &scenario("uas_ring_no_answer.xml")],
        Duration::from_secs(60),
    );
    let mut vox = spawn(&data);
    let ts = Duration::from_secs(5);
    let mut targets: Vec<Value> = (0..3)
        .map(|i| json!({"number": format!("sip:r{i}@{}", uas.addr())}))
        .collect();
    // And one where nothing answers at all (the INVITE is still being retransmitted).
    targets.push(json!({"number": format!("sip:void@{LOOPBACK}:9")}));
    let body = json!({
        "agent": "brief", "targets": targets, "calls_per_s": 10, "max_concurrent": 4,
        "ring_timeout_s": 120, "retry": {"max_attempts": 1}
    })
    .to_string();
    let (code, c) = http_json(vox.http_addr(), "POST", "/campaigns", Some(&body), ts);
    assert_eq!(code, 201, "{c}");
    let id = c["id"].as_str().unwrap().to_owned();
    let c = wait_counts(&vox, &id, Duration::from_secs(20), |c| {
        c["counts"]["dialing"].as_u64().unwrap_or(0) == 4
    });
    assert_eq!(c["counts"]["dialing"], 4, "{c}");
    // Let the INVITEs reach SIPp and ring.
    std::thread::sleep(Duration::from_millis(500));
    let status = vox.terminate(Duration::from_secs(20));
    let out = vox.output();
    assert!(status.success(), "{status}\n{out}");
    assert!(!out.contains("panicked"), "{out}");
    // At the next start they count as interrupted attempts (their only one: no retry).
    let vox = spawn(&data);
    let (_, c) = get(&vox, &format!("/campaigns/{id}"));
    for t in c["targets"].as_array().unwrap() {
        assert_eq!(t["attempts"], 1, "{c}");
        let result = &t["history"][0]["result"];
        if t["seq"] == 3 {
            // The silent target: interrupted, or failed if its INVITE timed out first.
            assert!(result == "interrupted" || result == "failed", "{c}");
        } else {
            assert_eq!(result, "interrupted", "{c}");
        }
    }
}
