//! Two voxline nodes sharing one PostgreSQL store (Debian's, started by the test), seen
//! through their APIs:
//!
//! * a campaign created on node A is dialed by both nodes without dialing any target twice,
//!   and every webhook event (of both nodes' calls) reaches the receiver exactly once, signed
//!   (tests/webhooks/receiver.py, the Standard Webhooks reference library);
//! * an agent and a route created on node A answer a call placed to node B;
//! * the transcript of a realtime call on node B is read through node A's API (from B).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::postgres::PostgresServer;
use crate::common::{Sipp, VoxlineProcess, free_tcp_port, http_json, scenario};
use crate::webhooks::{Receiver, SECRET, received};

const TARGETS: usize = 30;

fn node(url: &str, id: &str, hook_port: u16) -> VoxlineProcess {
    VoxlineProcess::spawn_with_env(
        &format!(
            "[store]\nurl = \"{url}\"\n\n[cluster]\nnode_id = \"{id}\"\nheartbeat_s = 1\n\
             node_timeout_s = 3\n\n[[agent]]\nname = \"brief\"\nkind = \"hold\"\n\
             hangup_after_ms = 300\n\n[[webhook]]\nname = \"crm\"\n\
             url = \"http://127.0.0.1:{hook_port}/hook\"\nsecret_env = \"HOOK_SECRET\"\n\
             events = [\"call.ended\", \"campaign.target.done\"]\n\
             backoff_initial_ms = 100\nbackoff_max_s = 1\n"
        ),
        &[("HOOK_SECRET", SECRET)],
    )
}

#[test]
fn a_campaign_runs_across_two_nodes_and_their_webhooks_arrive_once() {
    let pg = PostgresServer::start();
    let url = pg.create_db("campaign");
    let dir = tempfile::tempdir().unwrap();
    let hook_port = free_tcp_port();
    let out = dir.path().join("received.jsonl");
    let _receiver = Receiver::start(hook_port, &out, 0);
    let uas = Sipp::spawn(
        &["-sf", &scenario("uas_answer_until_bye.xml")],
        Duration::from_secs(90),
    );
    let a = node(&url, "a", hook_port);
    let b = node(&url, "b", hook_port);
    let ts = Duration::from_secs(5);

    let targets: Vec<Value> = (0..TARGETS)
        .map(|i| json!({"number": format!("sip:t{i}@{}", uas.addr())}))
        .collect();
    let body = json!({
        "agent": "brief", "targets": targets, "max_concurrent": TARGETS, "calls_per_s": 8
    })
    .to_string();
    // The pace (8/s, a burst of 8) is what binds, not the concurrency: every slot goes to
    // whichever node's runner looks first, so both nodes dial. (With concurrency binding,
    // the node whose call just ended, woken by it, would mostly win the freed slot.)
    let (code, c) = http_json(a.http_addr(), "POST", "/campaigns", Some(&body), ts);
    assert_eq!(code, 201, "{c}");
    let id = c["id"].as_str().unwrap().to_owned();

    // Done, as node B sees it (the state is shared).
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let (_, c) = http_json(b.http_addr(), "GET", &format!("/campaigns/{id}"), None, ts);
        if c["state"] == "done" {
            break c;
        }
        assert!(Instant::now() < deadline, "campaign not done: {c:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(done["counts"]["done"], TARGETS, "{done:#}");
    for t in done["targets"].as_array().unwrap() {
        assert_eq!(t["attempts"], 1, "a target dialed more than once: {t:#}");
    }

    // The far end got exactly one INVITE (one Call-ID) per target.
    let mut per_target: HashMap<String, HashSet<String>> = HashMap::new();
    crate::campaigns::invites(&uas.messages(), &mut per_target);
    assert_eq!(per_target.len(), TARGETS, "{per_target:#?}");
    for (user, calls) in &per_target {
        assert_eq!(calls.len(), 1, "{user} was dialed {} times", calls.len());
    }

    // Both nodes dialed: the records say which node placed each call.
    let (_, records) = http_json(a.http_addr(), "GET", "/records?limit=100", None, ts);
    let records = records.as_array().cloned().unwrap_or_default();
    assert_eq!(records.len(), TARGETS, "{records:#?}");
    let by_node: HashSet<&str> = records.iter().filter_map(|r| r["node"].as_str()).collect();
    assert_eq!(
        by_node,
        HashSet::from(["a", "b"]),
        "the campaign did not run on both nodes"
    );

    // Every event once: a call.ended per call and a campaign.target.done per target, each
    // webhook-id delivered once (by whichever node claimed it), every signature valid.
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        let got = received(&out);
        if got.len() >= 2 * TARGETS {
            // Give a duplicate, if there were one, the time to arrive.
            std::thread::sleep(Duration::from_secs(2));
            break received(&out);
        }
        assert!(Instant::now() < deadline, "{} events: {got:#?}", got.len());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(got.iter().all(|e| e["verified"] == true), "{got:#?}");
    let ids: HashSet<&str> = got.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(
        ids.len(),
        got.len(),
        "an event was delivered twice: {got:#?}"
    );
    let count = |kind: &str| got.iter().filter(|e| e["type"] == kind).count();
    assert_eq!(count("call.ended"), TARGETS, "{got:#?}");
    assert_eq!(count("campaign.target.done"), TARGETS, "{got:#?}");
}

#[test]
fn an_agent_and_route_set_on_one_node_answer_calls_on_another() {
    let pg = PostgresServer::start();
    let url = pg.create_db("settings");
    let hook_port = free_tcp_port();
    let a = node(&url, "a", hook_port);
    let b = node(&url, "b", hook_port);
    let ts = Duration::from_secs(5);
    let agent = json!({"name": "greeter", "kind": "hold", "hangup_after_ms": 200}).to_string();
    let (code, body) = http_json(a.http_addr(), "POST", "/agents", Some(&agent), ts);
    assert_eq!(code, 201, "{body}");
    let route = json!({"agent": "greeter"}).to_string();
    let (code, body) = http_json(a.http_addr(), "PUT", "/routes/4711", Some(&route), ts);
    assert_eq!(code, 200, "{body}");

    // B learns of the change within a heartbeat or two; until then its calls to 4711 go to
    // the default route. Call B until one is answered by greeter.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // Whether this call was answered by greeter is read from the records below.
        let _ = crate::common::sipp(
            &[
                "-sn",
                "uac",
                "-s",
                "4711",
                &b.sip_addr().to_string(),
                "-m",
                "1",
                "-d",
                "100",
            ],
            Duration::from_secs(20),
        );
        let (_, records) = http_json(b.http_addr(), "GET", "/records?limit=100", None, ts);
        let agents: Vec<&str> = records
            .as_array()
            .map(|r| r.iter().filter_map(|r| r["agent"].as_str()).collect())
            .unwrap_or_default();
        if agents.contains(&"greeter") {
            let greeter = records
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["agent"] == "greeter")
                .unwrap();
            assert_eq!(greeter["node"], "b", "{greeter:#}");
            assert_eq!(greeter["agent_version"], 1, "{greeter:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node B never routed 4711 to the agent set on node A: {agents:?}\n{}",
            b.output()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_transcript_of_a_call_on_one_node_is_read_through_another() {
    use crate::realtime_e2e_support::{KEY, KEY_ENV, RealtimeE2e, config};
    const REPLY: &str = "Thank you for calling, how can I help?";
    let pg = PostgresServer::start();
    let url = pg.create_db("transcript");
    let cluster = |id: &str| {
        format!(
            "[store]\nurl = \"{url}\"\n[cluster]\nnode_id = \"{id}\"\nheartbeat_s = 1\n\
             node_timeout_s = 3\n"
        )
    };
    let mock = voxline_mock_realtime::MockConfig {
        reply_text: REPLY.into(),
        vad_rms_threshold: 150.0,
        ..voxline_mock_realtime::MockConfig::default()
    };
    let h = RealtimeE2e::start(mock, &cluster("a"), "", "");
    let b = VoxlineProcess::spawn_with_env(
        &config(&h.mock.url(), &cluster("b"), "", ""),
        &[(KEY_ENV, KEY)],
    );
    Sipp::spawn(
        &[
            "-sf",
            &scenario("uac_pcap_twice.xml"),
            "-s",
            "1000",
            "-m",
            "1",
            &b.sip_addr().to_string(),
        ],
        Duration::from_secs(50),
    )
    .wait()
    .assert_success("a realtime call on node B");
    let ts = Duration::from_secs(5);
    let deadline = Instant::now() + Duration::from_secs(10);
    let record = loop {
        let (_, records) = http_json(b.http_addr(), "GET", "/records?limit=5", None, ts);
        if let Some(r) = records.as_array().and_then(|r| r.first()).cloned() {
            break r;
        }
        assert!(Instant::now() < deadline, "no record on B: {records}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(record["node"], "b", "{record:#}");
    let id = record["id"].as_str().unwrap();
    let (code, view) = http_json(h.vox.http_addr(), "GET", &format!("/calls/{id}"), None, ts);
    assert_eq!(code, 200, "{view}");
    assert!(view.get("transcript_error").is_none(), "{view:#}");
    let lines = view["transcript"].as_array().cloned().unwrap_or_default();
    assert!(
        lines.iter().any(|l| l["text"].as_str() == Some(REPLY)),
        "the agent's reply is not in the transcript A serves: {view:#}"
    );
    // And it came from B, which wrote the file (A could open the path here only because
    // both nodes share this machine's disk).
    assert!(
        h.vox
            .output()
            .contains("transcript fetched from the call's node"),
        "{}",
        h.vox.output()
    );
}
